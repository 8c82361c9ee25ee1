//! [`RedisStore`]: [`OfflineStore`], [`Bindings`] and [`Groups`] on Redis, with the embedded
//! store's semantics (checked by the shared conformance suite).
//!
//! Offline layout (`P` = key prefix, ids and terminal keys in decimal; the scripts and the model
//! of pending deliveries, inbox plus broadcasts above a per-terminal floor, are in
//! [`offline_lua`](super::offline_lua)):
//! * `P msgid`: the last id issued; the next is `max(last + 1, floor)`, the floor being the
//!   clock's and this broker's high-water mark (see [`crate::store::msg_id`] and [`data_loss`]);
//!   refused past [`MAX_MSG_ID`].
//! * `P epoch`: the run marker that reveals lost data ([`data_loss`]).
//! * `P msg:<id>`: hash `exp`, `from` (packed address or empty), `payload`, `refs` (inbox
//!   references; the last to go deletes it) and, for a broadcast, `bc` (its class).
//! * `P exp`: sorted set id by expiry (purging); `P inbox:<terminal>`: sorted set of ids scored by
//!   id; `P refs`: total inbox references (stats add the broadcasts pending per terminal).
//! * `P bc:<class>`: broadcast ids of a class (0: every kind, else kind + 1);
//!   `P floors:<kind + 1>`: the terminals seen at login, scored by their broadcast floor;
//!   `P ibn:<kind + 1>`: inbox sizes; `P skip:<terminal>`, `P skipn`, `P bcskip:<id>`:
//!   broadcasts a full inbox refused (`reject-new`).
//!
//! Round trips: every call is one script; a login ([`OfflineStore::login`]) is one script for
//! remember, the since-id's acknowledgement and the replay; an ack is one script that moves the
//! terminal's floor and removes the inbox references it covers.
//!
//! Expired messages are never replayed (`since` checks `exp` against the injected `now_ms`) and
//! are deleted by `purge_expired`; inbox references to deleted bodies are dropped lazily (on
//! read, ack and eviction), as in the embedded store.
//!
//! [`data_loss`]: super::data_loss

use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;

use super::comet_stream::{NOTIFY_COMETS, kind_label};
use super::conn::RedisConn;
use super::data_loss::{CHECK_EPOCH, DataLossWatch};
use super::offline_lua::{
    ACK_THROUGH, APPEND, CHECK_MARKER, GROUP_LIST, HELPERS, LOGIN, PURGE, REMEMBER, SINCE, STATS,
};
use crate::store::embedded::OfflineLimits;
use crate::store::{
    Appended, Bindings, Groups, MAX_MSG_ID, NewMessage, OfflineStats, OfflineStore, Recipients,
    StoreError, StoredMessage, valid_group_name,
};
use crate::terminal::EvictionPolicy;
use crate::terminal::{Address, AddressKey, Kind, from_key};

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
    login: Script,
    remember: Script,
    check_marker: Script,
    ack_through: Script,
    purge: Script,
    stats: Script,
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
        let checked = |body: &str| Script::new(&format!("{HELPERS}{CHECK_EPOCH}{body}"));
        Arc::new(RedisStore {
            watch: DataLossWatch::new(data_loss, conn.prefix()),
            conn,
            limits,
            stream_maxlen,
            append: Script::new(&format!("{HELPERS}{CHECK_EPOCH}{NOTIFY_COMETS}{APPEND}")),
            since: checked(SINCE),
            login: checked(LOGIN),
            remember: checked(REMEMBER),
            check_marker: Script::new(&format!("{CHECK_EPOCH}{CHECK_MARKER}")),
            ack_through: checked(ACK_THROUGH),
            purge: Script::new(PURGE),
            stats: Script::new(STATS),
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

/// The broadcast class of a kind-wide push (0: every kind, else the kind's number plus one).
fn broadcast_class(kind: Option<Kind>) -> u8 {
    kind.map_or(0, |k| k.as_u8() + 1)
}

impl RedisStore {
    /// Runs a replay script ([`SINCE`] or [`LOGIN`], same arguments and reply).
    async fn replay(
        &self,
        script: &Script,
        terminal: Address,
        since_id: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let limit = limit.min(1 << 30);
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<Vec<u8>>> = script
            .arg(self.conn.prefix())
            .arg(self.watch.known())
            .arg(DataLossWatch::fresh())
            .arg(terminal.to_key())
            .arg(since_id.min(MAX_MSG_ID))
            .arg(limit)
            .arg(now_ms)
            .arg(BATCH.min(limit.saturating_mul(2)).max(1))
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
        // A loss a login noticed first is still reported to the next pusher.
        self.watch.take_unreported()?;
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
                // Kind classes as strings: a `Vec<u8>` argument would go as one byte string.
                let reached: Vec<String> = match kind {
                    Some(k) => vec![broadcast_class(Some(k)).to_string()],
                    None => [Kind::Device, Kind::Phone]
                        .map(|k| broadcast_class(Some(k)).to_string())
                        .to_vec(),
                };
                inv.arg("known")
                    .arg(self.stream_maxlen)
                    .arg(kind_label(kind))
                    .arg(broadcast_class(kind))
                    .arg(reached);
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
        if status == "lost" || status == "behind" {
            // The script stored nothing when it found the loss: the pusher hears of it now.
            return self
                .watch
                .take_unreported()
                .and(Err(StoreError::DataLost("redis lost data")));
        }
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
        self.replay(&self.since, terminal, since_id, limit, now_ms)
            .await
    }

    async fn login(
        &self,
        terminal: Address,
        since_id: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.replay(&self.login, terminal, since_id, limit, now_ms)
            .await
    }

    async fn ack(&self, terminal: Address, msg_id: u64) -> Result<bool, StoreError> {
        Ok(self.ack_through(terminal, msg_id).await? > 0)
    }

    async fn ack_through(&self, terminal: Address, through_id: u64) -> Result<u64, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<u64> = self
            .ack_through
            .arg(self.conn.prefix())
            .arg(terminal.to_key())
            .arg(through_id.min(MAX_MSG_ID))
            .invoke_async(&mut c)
            .await;
        self.conn.check(r).await
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
        let mut call = self.stats.prepare_invoke();
        call.arg(self.conn.prefix());
        for kind in [Kind::Device, Kind::Phone] {
            call.arg(kind as u8 + 1);
        }
        let r: redis::RedisResult<(u64, i64)> = call.invoke_async(&mut c).await;
        let (messages, pending) = self.conn.check(r).await?;
        Ok(OfflineStats {
            messages,
            references: u64::try_from(pending).map_err(|_| corrupt("pending deliveries"))?,
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
