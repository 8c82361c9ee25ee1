//! [`SessionClaims`]: the Redis side of "one session per terminal, cluster-wide" (`plug`
//! profile): every login takes a new per-terminal **session generation** and, in the same atomic
//! script, takes the terminal's entry in the online registry away from every other node.
//!
//! Keys (`P` = key prefix; the `online:` / `node:` keys are the layout of
//! [`crate::store::redis::OnlineRegistry`], written here with the same meaning):
//! * `P session_gen:<terminal>`: the last generation handed out (expires after
//!   [`GEN_KEY_TTL_MS`]; see below why losing it is harmless).
//! * `P online:<terminal>`: node id -> generation of the session that node holds.
//! * `P node:<id>:kicks`: the node's replacement mailbox, entries `<terminal>:<generation>`
//!   (at most [`MAILBOX_MAX`], oldest trimmed; gone [`MAILBOX_TTL_MS`] after the last notice),
//!   read and emptied by [`SessionClaims::take_kicks`].
//!
//! A claim ([`SessionClaims::claim`]) gets generation `max(last + 1, Redis time in µs)`: strictly
//! increasing per terminal while the key lives, and still increasing after it expired or Redis
//! lost its data (a restart without persistence), because Redis's clock moved on. With
//! `single` (the `plug` profile) every other node's entry is removed, and the claim returns
//! those nodes: the caller tells each of them over the node links to kick its session older
//! than the new generation ([`super::presence`]), and the script also drops the same notice in
//! each node's mailbox, which every comet drains at its heartbeat, so a notice lost with a link
//! still arrives. Without `single` (the `signed` profile) nothing is replaced.
//!
//! A comet whose heartbeat expired was swept (its entries removed, so later claims elsewhere did
//! not notify it); it registers its sessions again with [`SessionClaims::restore`], which refuses
//! a session whose generation is no longer the terminal's newest: that session is kicked.

use std::sync::Arc;

use redis::Script;

use crate::store::StoreError;
use crate::store::redis::RedisConn;
use crate::terminal::{Address, AddressKey, from_key};

/// How long a terminal's last generation is kept after its last login (7 days).
pub const GEN_KEY_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Most notices one node's mailbox keeps (the oldest go first).
pub const MAILBOX_MAX: u64 = 10_000;

/// A mailbox nobody drained for this long is deleted (its node is gone, or was cut off long
/// enough to be swept, and then [`SessionClaims::restore`] decides instead): 1 hour.
pub const MAILBOX_TTL_MS: u64 = 3600 * 1000;

/// ARGV: prefix, terminal, node, single ('1'/'0'), gen key TTL ms, mailbox max, mailbox TTL ms.
/// Returns {generation, replaced node, its generation, ...}.
const CLAIM: &str = r#"
local p, t, node = ARGV[1], ARGV[2], ARGV[3]
local gk = p .. 'session_gen:' .. t
local now = redis.call('TIME')
local g = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('GET', gk) or '0')
if last >= g then g = last + 1 end
local gs = string.format('%.0f', g)
redis.call('SET', gk, gs, 'PX', ARGV[5])
local k = p .. 'online:' .. t
local out = {gs}
if ARGV[4] == '1' then
  local all = redis.call('HGETALL', k)
  for i = 1, #all, 2 do
    local other = all[i]
    if other ~= node then
      redis.call('HDEL', k, other)
      redis.call('SREM', p .. 'node:' .. other .. ':sessions', t)
      local mk = p .. 'node:' .. other .. ':kicks'
      redis.call('RPUSH', mk, t .. ':' .. gs)
      redis.call('LTRIM', mk, -tonumber(ARGV[6]), -1)
      redis.call('PEXPIRE', mk, ARGV[7])
      out[#out + 1] = other
      out[#out + 1] = all[i + 1]
    end
  end
end
redis.call('HSET', k, node, gs)
redis.call('SADD', p .. 'node:' .. node .. ':sessions', t)
redis.call('SADD', p .. 'nodes', node)
return out
"#;

/// ARGV: prefix, terminal, node, generation. Registers the entry again only if no newer
/// generation was handed out (or the generation key expired). Returns 1 when registered.
const RESTORE: &str = r#"
local p, t, node = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('GET', p .. 'session_gen:' .. t)
if cur and cur ~= ARGV[4] then return 0 end
redis.call('HSET', p .. 'online:' .. t, node, ARGV[4])
redis.call('SADD', p .. 'node:' .. node .. ':sessions', t)
redis.call('SADD', p .. 'nodes', node)
return 1
"#;

/// ARGV: prefix, node. Returns and empties the node's mailbox.
const TAKE_KICKS: &str = r#"
local mk = ARGV[1] .. 'node:' .. ARGV[2] .. ':kicks'
local all = redis.call('LRANGE', mk, 0, -1)
redis.call('DEL', mk)
return all
"#;

/// What a claim did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The new session's generation.
    pub generation: u64,
    /// The other nodes whose entry it replaced, with the generation each held (`single` only).
    pub replaced: Vec<(String, u64)>,
}

/// A replacement notice: `node`'s sessions of `terminal` older than `generation` must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The terminal.
    pub terminal: Address,
    /// The generation of the session that replaced them.
    pub generation: u64,
}

/// Session generations and replacement mailboxes in Redis (see module docs).
pub struct SessionClaims {
    conn: Arc<RedisConn>,
    claim: Script,
    restore: Script,
    take: Script,
}

impl SessionClaims {
    /// Claims over `conn`.
    pub fn new(conn: Arc<RedisConn>) -> SessionClaims {
        SessionClaims {
            conn,
            claim: Script::new(CLAIM),
            restore: Script::new(RESTORE),
            take: Script::new(TAKE_KICKS),
        }
    }

    /// Registers a login of `terminal` on `node` with a new generation; with `single`, takes the
    /// terminal away from every other node (see module docs).
    pub async fn claim(
        &self,
        terminal: Address,
        node: &str,
        single: bool,
    ) -> Result<Claim, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<String>> = self
            .claim
            .arg(self.conn.prefix())
            .arg(terminal.to_key())
            .arg(node)
            .arg(if single { "1" } else { "0" })
            .arg(GEN_KEY_TTL_MS)
            .arg(MAILBOX_MAX)
            .arg(MAILBOX_TTL_MS)
            .invoke_async(&mut c)
            .await;
        parse_claim(&self.conn.check(r).await?)
    }

    /// Registers `terminal`'s session `generation` on `node` again (after this node was swept as
    /// dead), unless a newer generation was handed out meanwhile: `Ok(false)` then, and the
    /// session must go (a login elsewhere replaced it while this node was cut off).
    pub async fn restore(
        &self,
        terminal: Address,
        node: &str,
        generation: u64,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<u8> = self
            .restore
            .arg(self.conn.prefix())
            .arg(terminal.to_key())
            .arg(node)
            .arg(generation.to_string())
            .invoke_async(&mut c)
            .await;
        Ok(self.conn.check(r).await? == 1)
    }

    /// Takes every notice waiting in `node`'s mailbox (malformed entries are skipped).
    pub async fn take_kicks(&self, node: &str) -> Result<Vec<Notice>, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<String>> = self
            .take
            .arg(self.conn.prefix())
            .arg(node)
            .invoke_async(&mut c)
            .await;
        Ok(self
            .conn
            .check(r)
            .await?
            .iter()
            .filter_map(|e| parse_notice(e))
            .collect())
    }
}

fn parse_gen(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("redis session generation `{s}`")))
}

/// The claim script's reply: the generation, then (node, generation) pairs.
fn parse_claim(reply: &[String]) -> Result<Claim, StoreError> {
    let (first, rest) = reply
        .split_first()
        .ok_or_else(|| StoreError::Corrupt("empty redis claim reply".into()))?;
    if rest.len() % 2 != 0 {
        return Err(StoreError::Corrupt("odd redis claim reply".into()));
    }
    let replaced = rest
        .chunks(2)
        .map(|p| Ok((p[0].clone(), parse_gen(&p[1])?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Claim {
        generation: parse_gen(first)?,
        replaced,
    })
}

/// A mailbox entry `<terminal key>:<generation>`.
fn parse_notice(entry: &str) -> Option<Notice> {
    let (t, g) = entry.rsplit_once(':')?;
    Some(Notice {
        terminal: from_key(t.parse().ok()?)?,
        generation: g.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_replies_and_mailbox_entries_parse_and_garbage_is_refused() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_claim(&s(&["17", "comet-a", "12", "comet-c", "3"])).unwrap(),
            Claim {
                generation: 17,
                replaced: vec![("comet-a".into(), 12), ("comet-c".into(), 3)],
            }
        );
        assert_eq!(parse_claim(&s(&["5"])).unwrap().replaced, vec![]);
        for bad in [
            &[][..],
            &["x"][..],
            &["5", "comet-a"][..],
            &["5", "a", "-1"][..],
        ] {
            assert!(parse_claim(&s(bad)).is_err(), "{bad:?}");
        }
        let d = Address::device(42);
        let entry = format!("{}:{}", d.to_key(), 99);
        assert_eq!(
            parse_notice(&entry),
            Some(Notice {
                terminal: d,
                generation: 99
            })
        );
        for bad in ["", "x:1", "12", "5:x"] {
            assert_eq!(parse_notice(bad), None, "{bad}");
        }
    }
}
