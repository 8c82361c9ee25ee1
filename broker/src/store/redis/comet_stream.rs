//! Delivery notices: Redis as the one sequencer of every message a comet offers to its sessions.
//!
//! The append script (`super::offline`) issues a message's id and, in the same atomic script,
//! appends a *delivery notice* to the stream of every comet that should offer it live
//! (`NOTIFY_COMETS`): for a list of terminals, each comet the online registry
//! (`P online:<terminal>`) names for a recipient, with just that comet's recipients; for a
//! kind-wide push, every comet in `P comets`, once (the comet fans out to its own sessions).
//! Redis runs scripts one at a time, so a comet's stream holds its notices in `msg_id` order,
//! whichever node stored them. A comet reads its own stream in order ([`CometStream::read`]) on a
//! dedicated connection and offers each notice to its local sessions.
//!
//! Layout (`P` = key prefix, `<node>` = the comet's node id):
//! * `P cstream:<node>`: the stream; entry fields `n` (the notice's number in this stream: 1, 2,
//!   3, ...), `id` (msg id), `from` (packed address or empty), `payload`, `to` (`k:all`,
//!   `k:device`, `k:phone`, or the recipients' packed keys joined by `,`). Trimmed to the newest
//!   `cluster.stream_maxlen` entries at every append (exact `MAXLEN`).
//! * `P cstream:<node>:n`: the last notice number issued for that stream.
//! * `P comets`: the comets that read a stream (added by [`CometStream::open`] and on every idle
//!   read, removed by the dead-node sweep together with the stream).
//!
//! Gaps: the reader knows the number of the last notice it read. A notice numbered further on
//! means notices were trimmed before it read them ([`Batch::missed`]); a number at or below it,
//! or a counter below it, means the stream was deleted or lost with Redis's data
//! ([`Batch::restarted`]); being found missing from `P comets` means kind-wide notices may have
//! passed this comet by ([`Batch::rejoined`]). In every case the messages themselves are still
//! in the terminals' inboxes: the caller lets its sessions re-read the store.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::Script;

use super::conn::RedisConn;
use crate::store::StoreError;
use crate::terminal::{Address, Kind, from_key};

/// Lua helper prepended to the append script: `notify_comets(p, id, from, payload, maxlen,
/// label, targets, known)` appends one notice per comet (see module docs). `label` is the `to`
/// field of a kind-wide notice; `known` is true for a kind-wide push (`targets` are then not
/// looked up). `maxlen` 0 appends nothing (a store not used by a cluster).
pub(super) const NOTIFY_COMETS: &str = r#"
local function notify_comets(p, id, from, payload, maxlen, label, targets, known)
  if tonumber(maxlen) == 0 then return end
  local per = {}
  local order = {}
  if known then
    for _, node in ipairs(redis.call('SMEMBERS', p .. 'comets')) do
      per[node] = label
      order[#order + 1] = node
    end
  else
    local lists = {}
    for _, t in ipairs(targets) do
      for _, node in ipairs(redis.call('HKEYS', p .. 'online:' .. t)) do
        if not lists[node] then
          lists[node] = {}
          order[#order + 1] = node
        end
        local l = lists[node]
        l[#l + 1] = t
      end
    end
    for node, l in pairs(lists) do per[node] = table.concat(l, ',') end
  end
  for _, node in ipairs(order) do
    local sk = p .. 'cstream:' .. node
    local n = redis.call('INCR', sk .. ':n')
    redis.call('XADD', sk, 'MAXLEN', maxlen, '*', 'n', n, 'id', id, 'from', from,
      'payload', payload, 'to', per[node])
  end
end
"#;

/// ARGV: prefix, node. Adds the node to `P comets`; returns {last entry id or '0-0', counter}.
const OPEN: &str = r#"
local p = ARGV[1]
local sk = p .. 'cstream:' .. ARGV[2]
redis.call('SADD', p .. 'comets', ARGV[2])
local last = redis.call('XREVRANGE', sk, '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {id, redis.call('GET', sk .. ':n') or '0'}
"#;

/// ARGV: prefix, node. Returns {1 when the node was missing from `P comets`, counter}.
const IDLE: &str = r#"
local p = ARGV[1]
local added = redis.call('SADD', p .. 'comets', ARGV[2])
return {added, redis.call('GET', p .. 'cstream:' .. ARGV[2] .. ':n') or '0'}
"#;

/// Who a notice is for on the reading comet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoticeDest {
    /// These terminals (the recipients this comet held when the message was stored).
    Terminals(Vec<Address>),
    /// Every local session of this kind (`None`: every kind).
    Kind(Option<Kind>),
}

/// One delivery notice: a stored message to offer to local sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryNotice {
    /// The message id.
    pub msg_id: u64,
    /// Sending terminal (`None`: the backend).
    pub from: Option<Address>,
    /// The payload.
    pub payload: Bytes,
    /// Its recipients on this comet.
    pub to: NoticeDest,
}

/// Where a reader stands in its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPos {
    /// The stream entry id read last (`0-0`: from the start).
    pub entry: String,
    /// The notice number read last (0: none).
    pub number: u64,
}

/// What one [`CometStream::read`] returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Notices in stream order (`msg_id` increasing).
    pub notices: Vec<DeliveryNotice>,
    /// Notices trimmed (or unreadable) before this reader got them.
    pub missed: u64,
    /// The stream was deleted or lost (its numbering started again): an unknown number missed.
    pub restarted: bool,
    /// This comet was missing from `P comets` (swept as dead): kind-wide notices may have
    /// skipped it.
    pub rejoined: bool,
}

impl Batch {
    /// Whether the reader may have missed notices (its sessions must re-read the store).
    pub fn gap(&self) -> bool {
        self.missed > 0 || self.restarted || self.rejoined
    }
}

/// One comet's reading end of its delivery-notice stream (see module docs).
pub struct CometStream {
    conn: Arc<RedisConn>,
    node: String,
    key: String,
    open: Script,
    idle: Script,
}

impl CometStream {
    /// Joins `P comets` as `node` on `conn` (give it a connection of its own: reads block) and
    /// returns the reader with the stream's current end: notices appended before this call are
    /// not read (a starting comet's sessions replay from the store at login).
    pub async fn open(
        conn: Arc<RedisConn>,
        node: &str,
    ) -> Result<(CometStream, StreamPos), StoreError> {
        let key = format!("{}cstream:{node}", conn.prefix());
        let me = CometStream {
            conn,
            node: node.to_string(),
            key,
            open: Script::new(OPEN),
            idle: Script::new(IDLE),
        };
        let mut c = me.conn.get().await;
        let r: redis::RedisResult<(String, String)> = me
            .open
            .arg(me.conn.prefix())
            .arg(&me.node)
            .invoke_async(&mut c)
            .await;
        let (entry, n) = me.conn.check(r).await?;
        let number = n.parse().map_err(|_| corrupt("stream counter"))?;
        Ok((me, StreamPos { entry, number }))
    }

    /// Waits up to `block` for notices after `pos` (at most `count`), advancing `pos` past
    /// what it returns. With nothing new it re-joins `P comets` and checks the stream's counter,
    /// so a deleted stream or a sweep is noticed within one `block`; a stream found deleted and
    /// created again is read from its start in the same call (its first entries may have ids
    /// at or below the old position, when they were added in the same millisecond).
    pub async fn read(
        &self,
        pos: &mut StreamPos,
        block: Duration,
        count: usize,
    ) -> Result<Batch, StoreError> {
        let mut entries = self.entries_after(pos, Some(block), count).await?;
        let mut batch = Batch::default();
        if entries.is_empty() {
            batch = self.idle(pos).await?;
            if !batch.restarted {
                return Ok(batch);
            }
            entries = self.entries_after(pos, None, count).await?;
        }
        take(entries, pos, &mut batch);
        Ok(batch)
    }

    /// Up to `count` entries after `pos.entry`, waiting up to `block` for the first (`None`:
    /// not at all).
    async fn entries_after(
        &self,
        pos: &StreamPos,
        block: Option<Duration>,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut c = self.conn.get().await;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count.max(1));
        if let Some(block) = block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        let r: redis::RedisResult<redis::Value> = cmd
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&pos.entry)
            .query_async(&mut c)
            .await;
        xread_entries(self.conn.check(r).await?).ok_or_else(|| corrupt("XREAD reply"))
    }

    async fn idle(&self, pos: &mut StreamPos) -> Result<Batch, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<(u8, String)> = self
            .idle
            .arg(self.conn.prefix())
            .arg(&self.node)
            .invoke_async(&mut c)
            .await;
        let (added, n) = self.conn.check(r).await?;
        let counter: u64 = n.parse().map_err(|_| corrupt("stream counter"))?;
        let mut batch = Batch {
            rejoined: added == 1,
            ..Batch::default()
        };
        if counter < pos.number {
            // Deleted (or lost) and maybe re-created: read the new stream from its start.
            batch.restarted = true;
            *pos = StreamPos {
                entry: "0-0".into(),
                number: 0,
            };
        }
        Ok(batch)
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis {what}"))
}

/// Adds `entries` to `batch` in order, advancing `pos` past each: a number not above the last
/// one read means the stream started again, a jump counts the notices trimmed between.
fn take(entries: Vec<Entry>, pos: &mut StreamPos, batch: &mut Batch) {
    for (entry_id, fields) in entries {
        pos.entry = entry_id;
        let Some((number, notice)) = parse_entry(fields) else {
            // Unreadable: counted as missed, its message is replayed from the store.
            batch.missed += 1;
            continue;
        };
        if number <= pos.number {
            batch.restarted = true;
        } else {
            batch.missed += number - pos.number - 1;
        }
        pos.number = number;
        batch.notices.push(notice);
    }
}

/// A stream entry: its id and its fields.
type Entry = (String, Vec<(String, Vec<u8>)>);

fn bulk(v: &redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

/// The entries of an XREAD reply for one stream (nil: none); `None` when malformed.
fn xread_entries(reply: redis::Value) -> Option<Vec<Entry>> {
    let streams = match reply {
        redis::Value::Nil => return Some(Vec::new()),
        redis::Value::Array(a) => a
            .into_iter()
            .map(|s| match s {
                redis::Value::Array(kv) if kv.len() == 2 => kv.into_iter().nth(1),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        redis::Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        _ => return None,
    };
    let mut out = Vec::new();
    for s in streams {
        let redis::Value::Array(entries) = s else {
            return None;
        };
        for e in entries {
            let redis::Value::Array(parts) = e else {
                return None;
            };
            let [id, redis::Value::Array(flat)] = parts.as_slice() else {
                return None;
            };
            let id = String::from_utf8(bulk(id)?).ok()?;
            let fields = flat
                .chunks(2)
                .map(|kv| match kv {
                    [k, v] => Some((String::from_utf8(bulk(k)?).ok()?, bulk(v)?)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            out.push((id, fields));
        }
    }
    Some(out)
}

fn text<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// One stream entry's fields as a notice with its number; `None` when malformed.
fn parse_entry(fields: Vec<(String, Vec<u8>)>) -> Option<(u64, DeliveryNotice)> {
    let (mut number, mut msg_id, mut from, mut payload, mut to) = (None, None, None, None, None);
    for (k, v) in fields {
        match k.as_str() {
            "n" => number = text::<u64>(&v),
            "id" => msg_id = text::<u64>(&v),
            "from" => {
                from = Some(if v.is_empty() {
                    None
                } else {
                    Some(from_key(text::<u64>(&v)?)?)
                })
            }
            "payload" => payload = Some(Bytes::from(v)),
            "to" => to = Some(parse_dest(std::str::from_utf8(&v).ok()?)?),
            _ => {}
        }
    }
    Some((
        number?,
        DeliveryNotice {
            msg_id: msg_id?,
            from: from?,
            payload: payload?,
            to: to?,
        },
    ))
}

/// The `to` label of a kind-wide notice (see module docs).
pub(super) fn kind_label(kind: Option<Kind>) -> &'static str {
    match kind {
        None => "k:all",
        Some(Kind::Device) => "k:device",
        Some(Kind::Phone) => "k:phone",
    }
}

fn parse_dest(s: &str) -> Option<NoticeDest> {
    match s {
        "k:all" => Some(NoticeDest::Kind(None)),
        "k:device" => Some(NoticeDest::Kind(Some(Kind::Device))),
        "k:phone" => Some(NoticeDest::Kind(Some(Kind::Phone))),
        list => list
            .split(',')
            .map(|t| from_key(t.parse().ok()?))
            .collect::<Option<Vec<_>>>()
            .map(NoticeDest::Terminals),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::AddressKey;

    fn fields(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn entries_parse_and_malformed_ones_are_refused() {
        let d = Address::device(7).to_key().to_string();
        let p = Address::phone(3).to_key().to_string();
        let to = format!("{d},{p}");
        let (n, notice) = parse_entry(fields(&[
            ("n", b"4"),
            ("id", b"1800000000000001"),
            ("from", p.as_bytes()),
            ("payload", b"hi"),
            ("to", to.as_bytes()),
        ]))
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(notice.msg_id, 1_800_000_000_000_001);
        assert_eq!(notice.from, Some(Address::phone(3)));
        assert_eq!(
            notice.to,
            NoticeDest::Terminals(vec![Address::device(7), Address::phone(3)])
        );
        let (_, all) = parse_entry(fields(&[
            ("n", b"5"),
            ("id", b"9"),
            ("from", b""),
            ("payload", b""),
            ("to", kind_label(Some(Kind::Phone)).as_bytes()),
        ]))
        .unwrap();
        assert_eq!(all.to, NoticeDest::Kind(Some(Kind::Phone)));
        assert_eq!(all.from, None);
        for bad in [
            fields(&[
                ("id", b"9"),
                ("from", b""),
                ("payload", b""),
                ("to", b"k:all"),
            ]),
            fields(&[
                ("n", b"x"),
                ("id", b"9"),
                ("from", b""),
                ("payload", b""),
                ("to", b"k:all"),
            ]),
            fields(&[
                ("n", b"1"),
                ("id", b"9"),
                ("from", b""),
                ("payload", b""),
                ("to", b"1,zz"),
            ]),
        ] {
            assert_eq!(parse_entry(bad), None);
        }
    }
}
