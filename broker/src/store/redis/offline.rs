//! [`RedisStore`]: [`OfflineStore`], [`Bindings`] and [`Groups`] on Redis, with the embedded
//! store's semantics (checked by the shared conformance suite).
//!
//! Offline layout (`P` = key prefix, ids and terminal keys in decimal):
//! * `P msgid`: the last id issued; the next is `max(last + 1, floor)`, the floor being the
//!   clock's and this broker's high-water mark (see [`crate::store::msg_id`] and [`data_loss`]);
//!   refused past [`MAX_MSG_ID`].
//! * `P epoch`: the run marker that reveals lost data ([`data_loss`]).
//! * `P msg:<id>`: hash `exp`, `from` (packed address or empty), `payload`, `refs`: a message is
//!   stored once however many terminals it is for; the last reference to go deletes it.
//! * `P exp`: sorted set id by expiry (purging); `P inbox:<terminal>`: sorted set of ids scored by
//!   id (gopush style); `P refs`: total references (stats); `P known`: terminals seen at login,
//!   scored by packed key so a kind is one score range.
//!
//! Expired messages are never replayed (`since` checks `exp` against the injected `now_ms`) and
//! are deleted by `purge_expired`; references to deleted messages are dropped lazily (on read,
//! ack and eviction), as in the embedded store. Ids go through Lua as strings: Lua numbers print
//! with 14 significant digits, ids reach 16.
//!
//! [`data_loss`]: super::data_loss

use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;

use super::comet_stream::{NOTIFY_COMETS, kind_label};
use super::conn::RedisConn;
use super::data_loss::{CHECK_EPOCH, DataLossWatch};
use crate::config::EvictionPolicy;
use crate::store::embedded::OfflineLimits;
use crate::store::{
    Appended, Bindings, Groups, MAX_MSG_ID, NewMessage, OfflineStats, OfflineStore, Recipients,
    StoreError, StoredMessage, valid_group_name,
};
use crate::terminal::{Address, AddressKey, Kind, from_key};

/// Shared Lua helper: drop one reference to message `mid` (deleting it with the last one).
const RELEASE: &str = r#"
local function release(p, mid)
  local mk = p .. 'msg:' .. mid
  if redis.call('EXISTS', mk) == 1 and redis.call('HINCRBY', mk, 'refs', -1) <= 0 then
    redis.call('DEL', mk)
    redis.call('ZREM', p .. 'exp', mid)
  end
end
"#;

/// ARGV: prefix, known epoch, fresh epoch, cap, reject (0/1), max id, id floor, this broker's
/// high-water id, expires, from, payload, mode (`list`/`known`), comet stream length (0: no
/// delivery notices), kind-wide notice label, then terminal keys (list) or the min and max packed
/// key (known). Returns {id, stored, evicted, rejected, epoch status, epoch}. The delivery notices
/// for the comets go out in the same script (`notify_comets`, [`super::comet_stream`]).
const APPEND: &str = r#"
local p = ARGV[1]
local e = check_epoch(p, ARGV[2], ARGV[3])
local cap = tonumber(ARGV[4])
local reject = ARGV[5] == '1'
local cur = tonumber(redis.call('GET', p .. 'msgid') or '0')
if cur < tonumber(ARGV[8]) and e[1] ~= 'lost' then e[1] = 'behind' end
if cur >= tonumber(ARGV[6]) then return redis.error_reply('IDS_EXHAUSTED') end
local nid = cur + 1
if tonumber(ARGV[7]) > nid then nid = tonumber(ARGV[7]) end
local id = string.format("%d", nid)
redis.call('SET', p .. 'msgid', id)
local targets = {}
local known = ARGV[12] == 'known'
if known then
  targets = redis.call('ZRANGEBYSCORE', p .. 'known', ARGV[15], ARGV[16])
else
  for i = 15, #ARGV do targets[#targets + 1] = ARGV[i] end
end
local stored, evicted, rejected = 0, 0, 0
for _, t in ipairs(targets) do
  local ib = p .. 'inbox:' .. t
  local n = redis.call('ZCARD', ib)
  local skip = false
  if n >= cap then
    if reject then
      rejected = rejected + 1
      skip = true
    else
      local old = redis.call('ZPOPMIN', ib, n - cap + 1)
      for i = 1, #old, 2 do
        redis.call('DECR', p .. 'refs')
        release(p, old[i])
        evicted = evicted + 1
      end
    end
  end
  if not skip then
    redis.call('ZADD', ib, id, id)
    redis.call('INCR', p .. 'refs')
    stored = stored + 1
  end
end
if stored > 0 then
  redis.call('HSET', p .. 'msg:' .. id, 'exp', ARGV[9], 'from', ARGV[10], 'payload', ARGV[11],
    'refs', stored)
  redis.call('ZADD', p .. 'exp', ARGV[9], id)
end
notify_comets(p, id, ARGV[10], ARGV[11], ARGV[13], ARGV[14], targets, known)
return {id, stored, evicted, rejected, e[1], e[2]}
"#;

/// ARGV: prefix, known epoch, fresh epoch, terminal, since id, limit, now, batch. Returns
/// {epoch status, epoch} then flat {id, exp, from, payload}*.
const SINCE: &str = r#"
local p = ARGV[1]
local e = check_epoch(p, ARGV[2], ARGV[3])
local ib = p .. 'inbox:' .. ARGV[4]
local limit = tonumber(ARGV[6])
local now = tonumber(ARGV[7])
local out, count, start = {e[1], e[2]}, 0, '(' .. ARGV[5]
while count < limit do
  local ids = redis.call('ZRANGEBYSCORE', ib, start, '+inf', 'LIMIT', 0, ARGV[8])
  if #ids == 0 then break end
  for _, mid in ipairs(ids) do
    if count >= limit then break end
    local m = redis.call('HMGET', p .. 'msg:' .. mid, 'exp', 'from', 'payload')
    if not m[1] then
      redis.call('ZREM', ib, mid)
      redis.call('DECR', p .. 'refs')
    elseif tonumber(m[1]) > now then
      out[#out + 1] = mid
      out[#out + 1] = m[1]
      out[#out + 1] = m[2]
      out[#out + 1] = m[3]
      count = count + 1
    end
  end
  start = '(' .. ids[#ids]
end
return out
"#;

/// ARGV: prefix, known epoch, fresh epoch. Returns {epoch status, epoch}.
const CHECK_MARKER: &str = r#"
return check_epoch(ARGV[1], ARGV[2], ARGV[3])
"#;

/// ARGV: prefix, known epoch, fresh epoch, packed terminal key. Returns {epoch status, epoch}.
const REMEMBER: &str = r#"
local e = check_epoch(ARGV[1], ARGV[2], ARGV[3])
redis.call('ZADD', ARGV[1] .. 'known', ARGV[4], ARGV[4])
return e
"#;

/// ARGV: prefix, terminal, id. Returns 1 when the reference existed.
const ACK: &str = r#"
local p = ARGV[1]
if redis.call('ZREM', p .. 'inbox:' .. ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('DECR', p .. 'refs')
release(p, ARGV[3])
return 1
"#;

/// ARGV: prefix, terminal, through id, batch. Removes up to `batch` references with id at most
/// `through id`; returns how many.
const ACK_THROUGH: &str = r#"
local p = ARGV[1]
local ib = p .. 'inbox:' .. ARGV[2]
local ids = redis.call('ZRANGEBYSCORE', ib, '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
for _, mid in ipairs(ids) do
  redis.call('ZREM', ib, mid)
  redis.call('DECR', p .. 'refs')
  release(p, mid)
end
return #ids
"#;

/// ARGV: prefix, now, batch. Returns how many messages were deleted.
const PURGE: &str = r#"
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, mid in ipairs(ids) do
  redis.call('DEL', p .. 'msg:' .. mid)
  redis.call('ZREM', p .. 'exp', mid)
end
return #ids
"#;

/// ARGV: prefix. Returns flat {name, count}* ordered by name.
const GROUP_LIST: &str = r#"
local p = ARGV[1]
local out = {}
for _, name in ipairs(redis.call('ZRANGE', p .. 'groups', 0, -1)) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('ZCARD', p .. 'group:' .. name)
end
return out
"#;

/// Rows per script step when scanning inboxes or purging.
const BATCH: usize = 512;

/// The Redis-backed offline store, bindings and groups (see module docs).
pub struct RedisStore {
    conn: Arc<RedisConn>,
    limits: OfflineLimits,
    /// Length of each comet's delivery-notice stream; 0: no notices (not a cluster).
    stream_maxlen: u64,
    watch: DataLossWatch,
    append: Script,
    since: Script,
    remember: Script,
    check_marker: Script,
    ack: Script,
    ack_through: Script,
    purge: Script,
    group_list: Script,
}

impl RedisStore {
    /// A store on `conn` with the offline cap and eviction policy of `limits`; data losses it
    /// notices are logged and counted in [`RedisStore::data_losses`] only (a broker uses
    /// [`RedisStore::with_data_loss_counter`]).
    pub fn new(conn: Arc<RedisConn>, limits: OfflineLimits) -> Arc<RedisStore> {
        RedisStore::with_data_loss_counter(conn, limits, metrics::Counter::noop())
    }

    /// Like [`RedisStore::new`], also counting each data loss it notices in `data_loss` (the
    /// broker passes its `broker_store_data_loss_total`).
    pub fn with_data_loss_counter(
        conn: Arc<RedisConn>,
        limits: OfflineLimits,
        data_loss: metrics::Counter,
    ) -> Arc<RedisStore> {
        RedisStore::for_cluster(conn, limits, data_loss, 0)
    }

    /// Like [`RedisStore::with_data_loss_counter`], also appending a delivery notice for every
    /// comet that holds a recipient to that comet's stream, trimmed to `stream_maxlen` entries
    /// (see [`super::comet_stream`]; 0 appends none).
    pub fn for_cluster(
        conn: Arc<RedisConn>,
        limits: OfflineLimits,
        data_loss: metrics::Counter,
        stream_maxlen: u64,
    ) -> Arc<RedisStore> {
        let with_release = |body: &str| Script::new(&format!("{RELEASE}{CHECK_EPOCH}{body}"));
        let checked = |body: &str| Script::new(&format!("{CHECK_EPOCH}{body}"));
        Arc::new(RedisStore {
            watch: DataLossWatch::new(data_loss, conn.prefix()),
            conn,
            limits,
            stream_maxlen,
            append: Script::new(&format!("{RELEASE}{CHECK_EPOCH}{NOTIFY_COMETS}{APPEND}")),
            since: checked(SINCE),
            remember: checked(REMEMBER),
            check_marker: checked(CHECK_MARKER),
            ack: with_release(ACK),
            ack_through: with_release(ACK_THROUGH),
            purge: Script::new(PURGE),
            group_list: Script::new(GROUP_LIST),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.conn.prefix())
    }

    /// Learns the run marker (writing it if Redis has none), noticing a loss like the other
    /// checked calls. A broker calls it at start, so a loss before its first offline-store call
    /// is noticed too.
    pub async fn check_marker(&self) -> Result<(), StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(String, String)> = self
            .check_marker
            .arg(self.conn.prefix())
            .arg(self.watch.known())
            .arg(DataLossWatch::fresh())
            .invoke_async(&mut c)
            .await;
        let (status, epoch) = self.conn.check(r).await?;
        self.watch.observe(&status, &epoch)
    }

    /// How many times this store noticed that Redis lost data (see `super::data_loss`).
    pub fn data_losses(&self) -> u64 {
        self.watch.losses()
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis {what}"))
}

fn parse_u64(b: &[u8], what: &str) -> Result<u64, StoreError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(what))
}

fn address(key: u64) -> Result<Address, StoreError> {
    from_key(key).ok_or_else(|| corrupt("terminal key"))
}

fn kind_bounds(kind: Option<Kind>) -> (u64, u64) {
    match kind {
        None => (0, u64::MAX >> 1),
        Some(k) => {
            let base = Address { kind: k, id: 0 }.to_key();
            (base, base | u64::from(u32::MAX))
        }
    }
}

#[async_trait]
impl OfflineStore for RedisStore {
    async fn remember(&self, terminal: Address) -> Result<(), StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(String, String)> = self
            .remember
            .arg(self.conn.prefix())
            .arg(self.watch.known())
            .arg(DataLossWatch::fresh())
            .arg(terminal.to_key())
            .invoke_async(&mut c)
            .await;
        let (status, epoch) = self.conn.check(r).await?;
        self.watch.observe(&status, &epoch)
    }

    async fn append(
        &self,
        recipients: Recipients,
        msg: NewMessage,
        now_ms: u64,
    ) -> Result<Appended, StoreError> {
        let mut inv = self.append.prepare_invoke();
        inv.arg(self.conn.prefix())
            .arg(self.watch.known())
            .arg(DataLossWatch::fresh())
            .arg(self.limits.max_per_terminal)
            .arg(u8::from(self.limits.eviction == EvictionPolicy::RejectNew))
            .arg(MAX_MSG_ID)
            .arg(self.watch.floor(now_ms))
            .arg(self.watch.high_water())
            .arg(msg.expires_at_ms)
            .arg(msg.from.map_or(String::new(), |a| a.to_key().to_string()))
            .arg(msg.payload.as_ref());
        match recipients {
            Recipients::List(list) => {
                let mut keys: Vec<u64> = list.iter().map(|a| a.to_key()).collect();
                keys.sort_unstable();
                keys.dedup();
                inv.arg("list")
                    .arg(self.stream_maxlen)
                    .arg(kind_label(None))
                    .arg(keys);
            }
            Recipients::Known(kind) => {
                let (lo, hi) = kind_bounds(kind);
                inv.arg("known")
                    .arg(self.stream_maxlen)
                    .arg(kind_label(kind))
                    .arg(lo)
                    .arg(hi);
            }
        }
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(String, u64, u64, u64, String, String)> =
            inv.invoke_async(&mut c).await;
        if let Err(e) = &r
            && e.to_string().contains("IDS_EXHAUSTED")
        {
            return Err(StoreError::IdsExhausted);
        }
        let (id, stored_for, evicted, rejected, status, epoch) = self.conn.check(r).await?;
        let msg_id = parse_u64(id.as_bytes(), "message id")?;
        self.watch.saw_id(msg_id);
        self.watch.observe(&status, &epoch)?;
        Ok(Appended {
            msg_id,
            stored_for,
            evicted,
            rejected,
        })
    }

    async fn since(
        &self,
        terminal: Address,
        since_id: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(1 << 30);
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<Vec<u8>>> = self
            .since
            .arg(self.conn.prefix())
            .arg(self.watch.known())
            .arg(DataLossWatch::fresh())
            .arg(terminal.to_key())
            .arg(since_id)
            .arg(limit)
            .arg(now_ms)
            .arg(BATCH.min(limit.saturating_mul(2)))
            .invoke_async(&mut c)
            .await;
        let flat = self.conn.check(r).await?;
        let [status, epoch, rows @ ..] = flat.as_slice() else {
            return Err(corrupt("since reply"));
        };
        self.watch.observe(
            std::str::from_utf8(status).map_err(|_| corrupt("epoch status"))?,
            std::str::from_utf8(epoch).map_err(|_| corrupt("epoch"))?,
        )?;
        let out = super::replies::since_reply(rows)?;
        if let Some(last) = out.last() {
            self.watch.saw_id(last.msg_id);
        }
        Ok(out)
    }

    async fn ack(&self, terminal: Address, msg_id: u64) -> Result<bool, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<u8> = self
            .ack
            .arg(self.conn.prefix())
            .arg(terminal.to_key())
            .arg(msg_id)
            .invoke_async(&mut c)
            .await;
        Ok(self.conn.check(r).await? == 1)
    }

    async fn ack_through(&self, terminal: Address, through_id: u64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut c = self.conn.get().await;
            let r: redis::RedisResult<u64> = self
                .ack_through
                .arg(self.conn.prefix())
                .arg(terminal.to_key())
                .arg(through_id)
                .arg(BATCH)
                .invoke_async(&mut c)
                .await;
            let n = self.conn.check(r).await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut c = self.conn.get().await;
            let r: redis::RedisResult<u64> = self
                .purge
                .arg(self.conn.prefix())
                .arg(now_ms)
                .arg(BATCH)
                .invoke_async(&mut c)
                .await;
            let n = self.conn.check(r).await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn stats(&self) -> Result<OfflineStats, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(u64, Option<i64>)> = redis::pipe()
            .zcard(self.key("exp"))
            .get(self.key("refs"))
            .query_async(&mut c)
            .await;
        let (messages, refs) = self.conn.check(r).await?;
        Ok(OfflineStats {
            messages,
            references: u64::try_from(refs.unwrap_or(0)).map_err(|_| corrupt("refs counter"))?,
            ..OfflineStats::default()
        })
    }
}

// ---- bindings: `P bind:pd:<phone>` and `P bind:dp:<device>`, sorted sets scored by packed key ----

impl RedisStore {
    async fn sorted_addresses(&self, key: String) -> Result<Vec<Address>, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<u64>> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await;
        self.conn.check(r).await?.into_iter().map(address).collect()
    }
}

#[async_trait]
impl Bindings for RedisStore {
    async fn bind(&self, phone: Address, device: Address) -> Result<bool, StoreError> {
        let (p, d) = (phone.to_key(), device.to_key());
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(u64, u64)> = redis::pipe()
            .atomic()
            .zadd(self.key(&format!("bind:pd:{p}")), d, d)
            .zadd(self.key(&format!("bind:dp:{d}")), p, p)
            .query_async(&mut c)
            .await;
        Ok(self.conn.check(r).await?.0 == 1)
    }

    async fn unbind(&self, phone: Address, device: Address) -> Result<bool, StoreError> {
        let (p, d) = (phone.to_key(), device.to_key());
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(u64, u64)> = redis::pipe()
            .atomic()
            .zrem(self.key(&format!("bind:pd:{p}")), d)
            .zrem(self.key(&format!("bind:dp:{d}")), p)
            .query_async(&mut c)
            .await;
        Ok(self.conn.check(r).await?.0 == 1)
    }

    async fn is_bound(&self, phone: Address, device: Address) -> Result<bool, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Option<String>> = redis::cmd("ZSCORE")
            .arg(self.key(&format!("bind:pd:{}", phone.to_key())))
            .arg(device.to_key())
            .query_async(&mut c)
            .await;
        Ok(self.conn.check(r).await?.is_some())
    }

    async fn devices_of(&self, phone: Address) -> Result<Vec<Address>, StoreError> {
        self.sorted_addresses(self.key(&format!("bind:pd:{}", phone.to_key())))
            .await
    }

    async fn phones_of(&self, device: Address) -> Result<Vec<Address>, StoreError> {
        self.sorted_addresses(self.key(&format!("bind:dp:{}", device.to_key())))
            .await
    }
}

// ---- groups: `P groups` (names, score 0: ordered by name) and `P group:<name>` (members) ----

fn check_name(name: &str) -> Result<(), StoreError> {
    if valid_group_name(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidGroupName)
    }
}

fn member_args(members: &[Address]) -> Vec<(u64, u64)> {
    members.iter().map(|a| (a.to_key(), a.to_key())).collect()
}

#[async_trait]
impl Groups for RedisStore {
    async fn set(&self, name: &str, members: &[Address]) -> Result<(), StoreError> {
        check_name(name)?;
        let key = self.key(&format!("group:{name}"));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .zadd(self.key("groups"), name, 0)
            .ignore();
        if !members.is_empty() {
            pipe.zadd_multiple(&key, &member_args(members)).ignore();
        }
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<()> = pipe.query_async(&mut c).await;
        self.conn.check(r).await
    }

    async fn update(
        &self,
        name: &str,
        add: &[Address],
        remove: &[Address],
    ) -> Result<u64, StoreError> {
        check_name(name)?;
        let key = self.key(&format!("group:{name}"));
        let mut pipe = redis::pipe();
        pipe.atomic().zadd(self.key("groups"), name, 0).ignore();
        if !add.is_empty() {
            pipe.zadd_multiple(&key, &member_args(add)).ignore();
        }
        if !remove.is_empty() {
            let keys: Vec<u64> = remove.iter().map(|a| a.to_key()).collect();
            pipe.zrem(&key, keys).ignore();
        }
        pipe.zcard(&key);
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(u64,)> = pipe.query_async(&mut c).await;
        Ok(self.conn.check(r).await?.0)
    }

    async fn members(&self, name: &str) -> Result<Option<Vec<Address>>, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(Option<String>, Vec<u64>)> = redis::pipe()
            .atomic()
            .zscore(self.key("groups"), name)
            .zrange(self.key(&format!("group:{name}")), 0, -1)
            .query_async(&mut c)
            .await;
        match self.conn.check(r).await? {
            (None, _) => Ok(None),
            (Some(_), keys) => Ok(Some(
                keys.into_iter().map(address).collect::<Result<_, _>>()?,
            )),
        }
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(u64,)> = redis::pipe()
            .atomic()
            .zrem(self.key("groups"), name)
            .del(self.key(&format!("group:{name}")))
            .ignore()
            .query_async(&mut c)
            .await;
        Ok(self.conn.check(r).await?.0 == 1)
    }

    async fn list(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<redis::Value>> = self
            .group_list
            .arg(self.conn.prefix())
            .invoke_async(&mut c)
            .await;
        let flat = self.conn.check(r).await?;
        flat.chunks(2)
            .map(|row| match row {
                [name, count] => Ok((
                    redis::from_redis_value_ref::<String>(name)
                        .map_err(|_| corrupt("group name"))?,
                    redis::from_redis_value_ref::<u64>(count)
                        .map_err(|_| corrupt("group count"))?,
                )),
                _ => Err(corrupt("group list reply")),
            })
            .collect()
    }
}
