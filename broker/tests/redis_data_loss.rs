//! Message ids across Redis data loss, and the loss being noticed (feature `services-tests`; run:
//! `cargo test -p broker --features services-tests --test redis_data_loss`).
//!
//! Tests that flush or restart Redis start their own `redis-server` (no persistence, as the dev
//! services run it) on a free port and stop it by PID; the others use the shared Redis of
//! `cargo xtask services up` under their own key prefix and delete their keys at the end.
#![cfg(feature = "services-tests")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use broker::config::EvictionPolicy;
use broker::metrics::Metrics;
use broker::store::embedded::OfflineLimits;
use broker::store::redis::{RedisConfig, RedisConn, RedisStore};
use broker::store::{
    Bindings, MAX_MSG_ID, NewMessage, OfflineStore, Recipients, StoreError, conformance,
};
use broker::terminal::Address;
use bytes::Bytes;

mod services_env;

const LIMITS: OfflineLimits = OfflineLimits {
    max_per_terminal: 100,
    eviction: EvictionPolicy::DropOldest,
};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn msg() -> NewMessage {
    NewMessage {
        from: None,
        payload: Bytes::from_static(b"m"),
        expires_at_ms: u64::MAX,
    }
}

async fn connect(url: &str, name: &str) -> Arc<RedisConn> {
    let cfg = RedisConfig {
        url: url.to_string(),
        key_prefix: format!("test:{name}:{}:{}:", std::process::id(), now_ms()),
        ..RedisConfig::default()
    };
    Arc::new(RedisConn::connect(&cfg).await.expect("connect to Redis"))
}

async fn delete_prefix(conn: &RedisConn) {
    let mut c = conn.get().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", conn.prefix()))
        .query_async(&mut c)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

/// `broker_store_data_loss_total` as rendered.
fn loss_metric(m: &Metrics) -> u64 {
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix("broker_store_data_loss_total "))
        .expect("broker_store_data_loss_total is rendered")
        .trim()
        .parse()
        .unwrap()
}

async fn append_to(store: &RedisStore, t: Address, now: u64) -> Result<u64, StoreError> {
    store
        .append(Recipients::List(vec![t]), msg(), now)
        .await
        .map(|a| a.msg_id)
}

/// The append reported lost data (and stored nothing).
#[track_caller]
fn assert_lost(r: Result<u64, StoreError>) {
    assert!(matches!(r, Err(StoreError::DataLost(_))), "{r:?}");
}

/// A `redis-server` of the test's own, without persistence, killed (by PID) on drop.
struct OwnRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    async fn start_on(port: u16) -> OwnRedis {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (package redis-server)");
        let r = OwnRedis {
            child,
            port,
            _dir: dir,
        };
        r.wait_ready().await;
        r
    }

    async fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        OwnRedis::start_on(port).await
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis on {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn cli(&self, args: &[&str]) {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn ids_never_go_back_across_reopen_and_clock_steps() {
    let url = services_env::require(&["REDIS_URL"])["REDIS_URL"].clone();
    let conn = connect(&url, "ids-reopen").await;
    conformance::ids_never_go_back(|| {
        let store: Arc<dyn OfflineStore> = RedisStore::new(conn.clone(), LIMITS);
        std::future::ready(store)
    })
    .await;
    delete_prefix(&conn).await;
}

#[tokio::test]
async fn flushall_is_noticed_once_per_broker_and_no_id_is_handed_out_twice() {
    services_env::require(&["REDIS_URL"]);
    let redis = OwnRedis::start().await;
    let conn = connect(&redis.url(), "flush").await;
    let metrics = Metrics::new();
    assert_eq!(loss_metric(&metrics), 0, "registered at 0");
    let store = RedisStore::with_data_loss_counter(conn.clone(), LIMITS, metrics.store_data_loss());
    // A second broker on the same Redis that learned the marker before the loss.
    let other = RedisStore::new(conn.clone(), LIMITS);
    let (d, p) = (Address::device(1), Address::phone(1));
    store.remember(d).await.unwrap();
    other.remember(p).await.unwrap();
    store.bind(p, d).await.unwrap();
    let t0 = now_ms();
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(append_to(&store, d, t0).await.unwrap());
    }
    assert_eq!(store.since(d, 0, 10, t0).await.unwrap().len(), 5);

    redis.cli(&["FLUSHALL"]);
    // Worst case: the clock also went back an hour, so only the broker's own high-water mark
    // keeps the id above the earlier ones.
    // The append that notices the loss stores nothing and says so (the push API answers 503
    // `store_data_lost`); the retry is stored.
    assert_lost(append_to(&store, d, t0 - 3_600_000).await);
    let after = append_to(&store, d, t0 - 3_600_000).await.unwrap();
    assert!(after > *before.last().unwrap(), "{after} after {before:?}");
    assert_eq!((store.data_losses(), loss_metric(&metrics)), (1, 1));
    // The loss is what docs/storage.md says: earlier messages and bindings are gone.
    let left: Vec<u64> = store
        .since(d, 0, 10, t0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(left, vec![after]);
    assert!(!store.is_bound(p, d).await.unwrap());
    // Later calls see the re-created marker: no second count.
    let next = append_to(&store, d, t0).await.unwrap();
    assert!(next > after);
    store.remember(d).await.unwrap();
    assert_eq!((store.data_losses(), loss_metric(&metrics)), (1, 1));
    // The other broker notices it on its next call (the marker changed), once.
    assert_eq!(other.data_losses(), 0);
    assert_lost(append_to(&other, p, t0).await);
    let from_other = append_to(&other, p, t0).await.unwrap();
    assert!(from_other > next);
    other.since(p, 0, 10, t0).await.unwrap();
    assert_eq!(other.data_losses(), 1);
    assert_eq!(store.data_losses(), 1);
}

#[tokio::test]
async fn restart_without_persistence_is_noticed_and_ids_stay_above() {
    services_env::require(&["REDIS_URL"]);
    let redis = OwnRedis::start().await;
    let port = redis.port;
    let conn = connect(&redis.url(), "restart").await;
    let store = RedisStore::new(conn.clone(), LIMITS);
    let d = Address::device(2);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(append_to(&store, d, now_ms()).await.unwrap());
    }
    drop(redis);
    let _redis = OwnRedis::start_on(port).await;
    // A broker started after the loss finds no marker and no counter, so it cannot tell; the
    // clock floor alone puts its ids above those issued before. The connection comes back by
    // itself; the call that meets the dropped one may fail (callers may retry).
    let fresh = RedisStore::new(conn.clone(), LIMITS);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match append_to(&fresh, d, now_ms()).await {
            Ok(id) => break id,
            Err(StoreError::Backend(e)) if Instant::now() < deadline => {
                eprintln!("retrying after: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("append after the restart: {e}"),
        }
    };
    assert!(first > *ids.last().unwrap(), "{first} after {ids:?}");
    assert_eq!(fresh.data_losses(), 0);
    // The broker that ran before notices at a login (the marker it knew is gone); its next
    // push reports the loss instead of being answered as if nothing happened, the retry goes on
    // above.
    store.login(d, 0, 10, now_ms()).await.unwrap();
    assert_eq!(store.data_losses(), 1);
    assert_lost(append_to(&store, d, now_ms()).await);
    let after = append_to(&store, d, now_ms()).await.unwrap();
    assert!(after > first);
    assert_eq!(store.data_losses(), 1);
    assert_eq!(
        store.since(d, 0, 10, now_ms()).await.unwrap().len(),
        2,
        "what was stored before the restart is gone"
    );
}

#[tokio::test]
async fn a_counter_behind_the_broker_is_a_loss_too() {
    // A failover to a replica that missed the last writes keeps the marker but not the counter.
    let url = services_env::require(&["REDIS_URL"])["REDIS_URL"].clone();
    let conn = connect(&url, "behind").await;
    let store = RedisStore::new(conn.clone(), LIMITS);
    let d = Address::device(4);
    let t0 = now_ms();
    let a = append_to(&store, d, t0).await.unwrap();
    let b = append_to(&store, d, t0).await.unwrap();
    let mut c = conn.get().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}msgid", conn.prefix()))
        .arg(a - 1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_lost(append_to(&store, d, t0 - 60_000).await);
    let after = append_to(&store, d, t0 - 60_000).await.unwrap();
    assert!(after > b, "{after} after {b}");
    assert_eq!(store.data_losses(), 1);
    append_to(&store, d, t0).await.unwrap();
    assert_eq!(store.data_losses(), 1, "counted once");
    assert!(after <= MAX_MSG_ID);
    delete_prefix(&conn).await;
}
