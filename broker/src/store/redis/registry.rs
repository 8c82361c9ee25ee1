//! [`OnlineRegistry`]: the cluster-wide view of which node holds which terminal session, kept in
//! Redis so msgbus nodes can route to the right comet.
//!
//! The router's in-memory registry holds the live session handles on one node; this registry
//! only records `terminal -> {node id: session epoch}`. Layout (`P` = key prefix):
//! * `P online:<terminal>`: hash node id -> epoch (a terminal may be online on several nodes
//!   at once, e.g. during a reconnect).
//! * `P node:<id>:sessions`: set of terminals the node registered.
//! * `P node:<id>:alive`: the node's heartbeat key, set with a TTL by [`OnlineRegistry::heartbeat`].
//! * `P nodes`: every node that registered or heartbeated.
//!
//! * `P comets` and `P cstream:<id>`: the node's delivery-notice stream
//!   ([`super::comet_stream`]), removed with the node's entries by a sweep.
//!
//! A node calls `register` at login and `unregister` at logout or session timeout (with the
//! epoch, so a late logout of an old session never removes a newer one). Any node may call
//! [`OnlineRegistry::sweep_dead_nodes`] periodically: nodes whose heartbeat key expired lose all
//! their entries in one atomic script. A node that finds its heartbeat key gone (a long pause,
//! heartbeat returns `false`) must register its sessions again. TTLs run on Redis's clock.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::conn::RedisConn;
use crate::store::StoreError;
use crate::terminal::{Address, AddressKey};

/// ARGV: prefix, terminal, node, epoch. Removes the entry only if it holds that epoch.
const UNREGISTER: &str = r#"
local p = ARGV[1]
local k = p .. 'online:' .. ARGV[2]
if redis.call('HGET', k, ARGV[3]) ~= ARGV[4] then return 0 end
redis.call('HDEL', k, ARGV[3])
redis.call('SREM', p .. 'node:' .. ARGV[3] .. ':sessions', ARGV[2])
return 1
"#;

/// ARGV: prefix, node, ttl ms. Returns 1 when the heartbeat key still existed.
const HEARTBEAT: &str = r#"
local p = ARGV[1]
local k = p .. 'node:' .. ARGV[2] .. ':alive'
local existed = redis.call('EXISTS', k)
redis.call('SET', k, '1', 'PX', ARGV[3])
redis.call('SADD', p .. 'nodes', ARGV[2])
return existed
"#;

/// ARGV: prefix, only node ('' = every node whose heartbeat expired). Returns {entries, node*}.
const SWEEP: &str = r#"
local p = ARGV[1]
local removed, entries = {}, 0
local nodes = redis.call('SMEMBERS', p .. 'nodes')
if ARGV[2] ~= '' then nodes = {ARGV[2]} end
for _, node in ipairs(nodes) do
  if ARGV[2] ~= '' or redis.call('EXISTS', p .. 'node:' .. node .. ':alive') == 0 then
    local sk = p .. 'node:' .. node .. ':sessions'
    for _, t in ipairs(redis.call('SMEMBERS', sk)) do
      entries = entries + redis.call('HDEL', p .. 'online:' .. t, node)
    end
    redis.call('DEL', sk, p .. 'node:' .. node .. ':alive')
    redis.call('SREM', p .. 'nodes', node)
    redis.call('SREM', p .. 'comets', node)
    redis.call('DEL', p .. 'cstream:' .. node, p .. 'cstream:' .. node .. ':n')
    removed[#removed + 1] = node
  end
end
table.insert(removed, 1, entries)
return removed
"#;

/// ARGV: prefix. Returns {node, terminals, node, terminals, ...} for every registered node.
const TERMINALS_BY_NODE: &str = r#"
local p = ARGV[1]
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  out[#out + 1] = node
  out[#out + 1] = redis.call('SCARD', p .. 'node:' .. node .. ':sessions')
end
return out
"#;

/// What a sweep removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Nodes declared dead (sorted).
    pub nodes: Vec<String>,
    /// Terminal entries removed.
    pub entries: u64,
}

/// The cluster-wide online registry (see module docs).
pub struct OnlineRegistry {
    conn: Arc<RedisConn>,
    unregister: Script,
    heartbeat: Script,
    sweep: Script,
}

impl OnlineRegistry {
    /// A registry on `conn`.
    pub fn new(conn: Arc<RedisConn>) -> OnlineRegistry {
        OnlineRegistry {
            conn,
            unregister: Script::new(UNREGISTER),
            heartbeat: Script::new(HEARTBEAT),
            sweep: Script::new(SWEEP),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.conn.prefix())
    }

    /// Records that `terminal` has session `epoch` on `node` (replacing an older epoch there).
    pub async fn register(
        &self,
        terminal: Address,
        node: &str,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let t = terminal.to_key();
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .hset(self.key(&format!("online:{t}")), node, epoch.to_string())
            .ignore()
            .sadd(self.key(&format!("node:{node}:sessions")), t)
            .ignore()
            .sadd(self.key("nodes"), node)
            .ignore()
            .query_async(&mut c)
            .await;
        self.conn.check(r).await
    }

    /// Removes `terminal`'s entry on `node` if it still holds `epoch` (logout or timeout);
    /// `Ok(false)` when there was none or a newer session replaced it.
    pub async fn unregister(
        &self,
        terminal: Address,
        node: &str,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<u8> = self
            .unregister
            .arg(self.conn.prefix())
            .arg(terminal.to_key())
            .arg(node)
            .arg(epoch.to_string())
            .invoke_async(&mut c)
            .await;
        Ok(self.conn.check(r).await? == 1)
    }

    /// The nodes holding `terminal` with their session epochs, sorted by node id.
    pub async fn lookup(&self, terminal: Address) -> Result<Vec<(String, u64)>, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<(String, String)>> = redis::cmd("HGETALL")
            .arg(self.key(&format!("online:{}", terminal.to_key())))
            .query_async(&mut c)
            .await;
        let mut out = self
            .conn
            .check(r)
            .await?
            .into_iter()
            .map(|(node, epoch)| {
                epoch
                    .parse()
                    .map(|e| (node, e))
                    .map_err(|_| StoreError::Corrupt("redis session epoch".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort();
        Ok(out)
    }

    /// How many terminals each registered node holds (`P node:<id>:sessions` of every node in
    /// `P nodes`), by node id. Read in one script, so the counts are one consistent instant.
    pub async fn terminals_by_node(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<(String, u64)>> = Script::new(TERMINALS_BY_NODE)
            .arg(self.conn.prefix())
            .invoke_async(&mut c)
            .await;
        Ok(self.conn.check(r).await?.into_iter().collect())
    }

    /// Refreshes `node`'s heartbeat key for `ttl`; `Ok(false)` when it had expired (the node
    /// may have been swept: register its sessions again).
    pub async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<u8> = self
            .heartbeat
            .arg(self.conn.prefix())
            .arg(node)
            .arg(ms)
            .invoke_async(&mut c)
            .await;
        Ok(self.conn.check(r).await? == 1)
    }

    /// Whether `node`'s heartbeat key exists now (a read; nothing is refreshed). `false` means
    /// the node has not heartbeated for `cluster.node_ttl_ms`: the next sweep removes its entries.
    pub async fn is_alive(&self, node: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(self.key(&format!("node:{node}:alive")))
            .query_async(&mut c)
            .await;
        self.conn.check(r).await
    }

    /// Removes every entry of nodes whose heartbeat key expired.
    pub async fn sweep_dead_nodes(&self) -> Result<SweepReport, StoreError> {
        self.run_sweep("").await
    }

    /// Removes every entry of `node` at once (clean shutdown of that node).
    pub async fn clear_node(&self, node: &str) -> Result<SweepReport, StoreError> {
        self.run_sweep(node).await
    }

    async fn run_sweep(&self, only: &str) -> Result<SweepReport, StoreError> {
        let mut c = self.conn.get().await;
        let r: redis::RedisResult<Vec<redis::Value>> = self
            .sweep
            .arg(self.conn.prefix())
            .arg(only)
            .invoke_async(&mut c)
            .await;
        let reply = self.conn.check(r).await?;
        let bad = || StoreError::Corrupt("redis sweep reply".into());
        let (first, rest) = reply.split_first().ok_or_else(bad)?;
        let entries = redis::from_redis_value_ref::<u64>(first).map_err(|_| bad())?;
        let mut nodes = rest
            .iter()
            .map(|v| redis::from_redis_value_ref::<String>(v).map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        nodes.sort();
        Ok(SweepReport { nodes, entries })
    }
}
