//! The Redis store and online registry against the real Redis from `cargo xtask services up`
//! (feature `services-tests`; run: `cargo test -p broker --features services-tests --test
//! redis_store`). The offline store, bindings and groups run broker-core's conformance suites,
//! the same ones the embedded store passes. Every test uses its own key prefix and deletes its
//! keys at the end. The Sentinel test starts its own `redis-server` and sentinel on free ports.
#![cfg(feature = "services-tests")]

mod port_support;

use port_support::free_port;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use broker::config::EvictionPolicy;
use broker::store::embedded::OfflineLimits;
use broker::store::redis::{OnlineRegistry, RedisConfig, RedisConn, RedisStore, SweepReport};
use broker::store::{MAX_MSG_ID, NewMessage, OfflineStore, Recipients, StoreError, conformance};
use broker::terminal::Address;
use bytes::Bytes;

mod services_env;

/// The service environment this test needs (see `services_env`).
fn services() -> BTreeMap<String, String> {
    services_env::require(&["REDIS_URL"])
}

fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "test:{name}:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn connect(name: &str) -> Arc<RedisConn> {
    let cfg = RedisConfig {
        url: services()["REDIS_URL"].clone(),
        key_prefix: unique_prefix(name),
        ..RedisConfig::default()
    };
    Arc::new(RedisConn::connect(&cfg).await.expect("connect to Redis"))
}

async fn keys(conn: &RedisConn) -> Vec<String> {
    let mut c = conn.get().await;
    let mut out: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", conn.prefix()))
        .query_async(&mut c)
        .await
        .unwrap();
    out.sort();
    out
}

async fn cleanup(conn: &RedisConn) {
    let ks = keys(conn).await;
    if !ks.is_empty() {
        let mut c = conn.get().await;
        let _: () = redis::cmd("DEL").arg(ks).query_async(&mut c).await.unwrap();
    }
}

fn limits(cap: u64, eviction: EvictionPolicy) -> OfflineLimits {
    OfflineLimits {
        max_per_terminal: cap,
        eviction,
    }
}

#[tokio::test]
async fn offline_conformance_drop_oldest() {
    let conn = connect("drop").await;
    let store = RedisStore::new(conn.clone(), limits(3, EvictionPolicy::DropOldest));
    conformance::offline_store(store, 3, EvictionPolicy::DropOldest).await;
    cleanup(&conn).await;
}

#[tokio::test]
async fn offline_conformance_reject_new() {
    let conn = connect("reject").await;
    let store = RedisStore::new(conn.clone(), limits(3, EvictionPolicy::RejectNew));
    conformance::offline_store(store, 3, EvictionPolicy::RejectNew).await;
    cleanup(&conn).await;
}

#[tokio::test]
async fn bindings_and_groups_conformance() {
    let conn = connect("relations").await;
    let store = RedisStore::new(conn.clone(), limits(10, EvictionPolicy::DropOldest));
    conformance::bindings(store.clone()).await;
    conformance::groups(store).await;
    cleanup(&conn).await;
}

fn msg(payload: &'static [u8]) -> NewMessage {
    NewMessage {
        from: None,
        payload: Bytes::from_static(payload),
        expires_at_ms: 10_000,
    }
}

#[tokio::test]
async fn broadcast_is_one_hash_and_one_class_entry_and_binary_safe() {
    let conn = connect("layout").await;
    let p = conn.prefix().to_string();
    let store = RedisStore::new(conn.clone(), limits(10, EvictionPolicy::DropOldest));
    let terminals: Vec<Address> = (1..=50).map(Address::device).collect();
    for t in &terminals {
        store.remember(*t).await.unwrap();
    }
    let before = keys(&conn).await;
    let payload: &'static [u8] = b"\x00\xff\r\n{bin}\x00";
    let a = store
        .append(Recipients::Known(None), msg(payload), 0)
        .await
        .unwrap();
    assert_eq!(a.stored_for, 50);
    // One body, one entry in the class list (`bc:0`: every kind) and the expiry index, and the
    // id counter (the first message): nothing per terminal.
    let ks = keys(&conn).await;
    let added: Vec<&String> = ks.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(
        added,
        vec![
            &format!("{p}bc:0"),
            &format!("{p}exp"),
            &format!("{p}msg:{}", a.msg_id),
            &format!("{p}msgid"),
        ],
        "keys added by the first broadcast"
    );
    assert!(!ks.iter().any(|k| k.starts_with(&format!("{p}inbox:"))));
    let got = store.since(terminals[49], 0, 10, 0).await.unwrap();
    assert_eq!(got[0].payload, Bytes::from_static(payload));
    assert_eq!(got[0].from, None);
    // Every terminal's ack moves its own floor; the body stays for the others until it expires.
    for t in &terminals {
        assert!(store.ack(*t, a.msg_id).await.unwrap());
        assert!(store.since(*t, 0, 10, 0).await.unwrap().is_empty());
    }
    assert!(ks.contains(&format!("{p}msg:{}", a.msg_id)));
    assert_eq!(store.purge_expired(10_000).await.unwrap(), 1);
    assert!(
        !keys(&conn)
            .await
            .iter()
            .any(|k| k.starts_with(&format!("{p}msg:")) || k.starts_with(&format!("{p}bc:")))
    );
    cleanup(&conn).await;
}

#[tokio::test]
async fn ids_stop_at_2_pow_53_minus_1() {
    let conn = connect("ids").await;
    let store = RedisStore::new(conn.clone(), limits(10, EvictionPolicy::DropOldest));
    let mut c = conn.get().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}msgid", conn.prefix()))
        .arg(MAX_MSG_ID - 2)
        .query_async(&mut c)
        .await
        .unwrap();
    let t = Address::phone(1);
    let a = store
        .append(Recipients::List(vec![t]), msg(b"a"), 0)
        .await
        .unwrap();
    let b = store
        .append(Recipients::List(vec![t]), msg(b"b"), 0)
        .await
        .unwrap();
    assert_eq!((a.msg_id, b.msg_id), (MAX_MSG_ID - 1, MAX_MSG_ID));
    let ids: Vec<u64> = store
        .since(t, MAX_MSG_ID - 2, 10, 0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(ids, vec![MAX_MSG_ID - 1, MAX_MSG_ID], "exact above 2^52");
    assert!(matches!(
        store.append(Recipients::List(vec![t]), msg(b"c"), 0).await,
        Err(StoreError::IdsExhausted)
    ));
    assert!(store.ack(t, MAX_MSG_ID).await.unwrap());
    cleanup(&conn).await;
}

#[tokio::test]
async fn since_skips_expired_beyond_one_batch() {
    // More expired references than one script batch sit before the live one.
    let conn = connect("batch").await;
    let store = RedisStore::new(conn.clone(), limits(2000, EvictionPolicy::DropOldest));
    let t = Address::device(3);
    for _ in 0..600 {
        let m = NewMessage {
            expires_at_ms: 5,
            ..msg(b"old")
        };
        store.append(Recipients::List(vec![t]), m, 0).await.unwrap();
    }
    let live = store
        .append(Recipients::List(vec![t]), msg(b"live"), 0)
        .await
        .unwrap();
    let got = store.since(t, 0, 1, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].msg_id, live.msg_id);
    assert_eq!(store.purge_expired(10).await.unwrap(), 600);
    // The next read drops the 600 dangling references.
    assert_eq!(store.since(t, 0, 10, 10).await.unwrap().len(), 1);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.messages, stats.references), (1, 1));
    cleanup(&conn).await;
}

#[tokio::test]
async fn registry_register_lookup_unregister_and_dead_node_sweep() {
    let conn = connect("registry").await;
    let reg = OnlineRegistry::new(conn.clone());
    let (d1, d2, p1) = (Address::device(1), Address::device(2), Address::phone(1));
    assert!(
        reg.heartbeat("comet-a", Duration::from_secs(30))
            .await
            .is_ok()
    );
    assert!(
        !reg.heartbeat("comet-b", Duration::from_millis(300))
            .await
            .unwrap(),
        "first heartbeat: key was absent"
    );
    assert!(
        reg.heartbeat("comet-b", Duration::from_millis(300))
            .await
            .unwrap()
    );
    reg.register(d1, "comet-a", 7).await.unwrap();
    reg.register(d1, "comet-b", 3).await.unwrap();
    reg.register(d2, "comet-b", 4).await.unwrap();
    reg.register(p1, "comet-a", 1).await.unwrap();
    assert_eq!(
        reg.lookup(d1).await.unwrap(),
        vec![("comet-a".to_string(), 7), ("comet-b".to_string(), 3)]
    );
    // A re-login on the same node replaces the epoch; a late logout of the old one is ignored.
    reg.register(p1, "comet-a", 2).await.unwrap();
    assert!(!reg.unregister(p1, "comet-a", 1).await.unwrap());
    assert_eq!(
        reg.lookup(p1).await.unwrap(),
        vec![("comet-a".to_string(), 2)]
    );
    assert!(reg.unregister(p1, "comet-a", 2).await.unwrap());
    assert!(reg.lookup(p1).await.unwrap().is_empty());

    // comet-b stops heartbeating: a sweep while alive removes nothing, after expiry its entries go.
    assert_eq!(
        reg.sweep_dead_nodes().await.unwrap(),
        SweepReport::default()
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = reg.sweep_dead_nodes().await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            nodes: vec!["comet-b".into()],
            entries: 2
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        reg.lookup(d1).await.unwrap(),
        vec![("comet-a".to_string(), 7)]
    );
    assert!(reg.lookup(d2).await.unwrap().is_empty());
    assert_eq!(
        reg.sweep_dead_nodes().await.unwrap(),
        SweepReport::default()
    );
    // comet-b comes back: its heartbeat says it was gone, so it re-registers.
    assert!(
        !reg.heartbeat("comet-b", Duration::from_secs(30))
            .await
            .unwrap()
    );
    // Clean shutdown of comet-a clears its entries at once.
    let cleared = reg.clear_node("comet-a").await.unwrap();
    assert_eq!(cleared.entries, 1);
    assert!(reg.lookup(d1).await.unwrap().is_empty());
    reg.clear_node("comet-b").await.unwrap();
    assert!(
        keys(&conn).await.is_empty(),
        "no leftovers: {:?}",
        keys(&conn).await
    );
}

/// A child process killed (by PID) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "redis on {port} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sentinel_mode_runs_the_conformance_suite() {
    services();
    let dir = tempfile::tempdir().unwrap();
    let (rport, sport) = (free_port(), free_port());
    let _redis = Proc(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &rport.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (package redis-server)"),
    );
    wait_ping(rport).await;
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "bind 127.0.0.1\nport {sport}\ndir {}\nsentinel monitor mymaster 127.0.0.1 {rport} 1\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let _sentinel = Proc(
        Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ping(sport).await;
    let cfg = RedisConfig {
        url: String::new(),
        sentinels: vec![format!("redis://127.0.0.1:{sport}/")],
        master_name: "mymaster".into(),
        key_prefix: unique_prefix("sentinel"),
        ..RedisConfig::default()
    };
    let conn = Arc::new(RedisConn::connect(&cfg).await.expect("master via sentinel"));
    let store = RedisStore::new(conn.clone(), limits(3, EvictionPolicy::DropOldest));
    conformance::offline_store(store.clone(), 3, EvictionPolicy::DropOldest).await;
    conformance::groups(store).await;
    // The data really went to the monitored master.
    let mut direct = redis::Client::open(format!("redis://127.0.0.1:{rport}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n: u64 = redis::cmd("DBSIZE").query_async(&mut direct).await.unwrap();
    assert!(n > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_since_ack_rates() {
    let conn = connect("rates").await;
    let store = RedisStore::new(conn.clone(), limits(10_000, EvictionPolicy::DropOldest));
    let t = Address::device(9);
    let n = 2000u64;
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            store
                .append(Recipients::List(vec![t]), msg(b"rate"), 0)
                .await
                .unwrap()
                .msg_id,
        );
    }
    let append = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let got = store.since(t, 0, 10_000, 0).await.unwrap();
    let since = started.elapsed();
    assert_eq!(got.iter().map(|m| m.msg_id).collect::<Vec<_>>(), ids);
    let started = Instant::now();
    for id in &ids {
        assert!(store.ack(t, *id).await.unwrap());
    }
    let ack = n as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "redis store (sequential, one connection): append {append:.0}/s, ack {ack:.0}/s, since of {n} in {since:?}"
    );
    assert_eq!(store.stats().await.unwrap(), Default::default());
    cleanup(&conn).await;
}

/// Delivery notices (`comet_stream`): the append script notifies each comet holding a
/// recipient, in id order, with that comet's recipients; a broadcast once per comet; a reader
/// learns of trimmed notices, a lost stream and a sweep.
#[tokio::test]
async fn delivery_notices_follow_the_online_registry_in_id_order_and_gaps_are_reported() {
    use broker::store::redis::{CometStream, NoticeDest};
    const MAXLEN: u64 = 3;
    let conn = connect("notices").await;
    let store = RedisStore::for_cluster(
        conn.clone(),
        limits(100, EvictionPolicy::DropOldest),
        metrics::Counter::noop(),
        MAXLEN,
    );
    let registry = OnlineRegistry::new(conn.clone());
    let (dev, phone) = (Address::device(1), Address::phone(2));
    store.remember(dev).await.unwrap();
    store.remember(phone).await.unwrap();
    registry.register(dev, "c1", 1).await.unwrap();
    registry.register(phone, "c2", 1).await.unwrap();
    let block = Duration::from_millis(50);
    let (s1, mut p1) = CometStream::open(conn.clone(), "c1").await.unwrap();
    let (s2, mut p2) = CometStream::open(conn.clone(), "c2").await.unwrap();

    let both = Recipients::List(vec![dev, phone]);
    let a = store.append(both, msg(b"a"), 1_000).await.unwrap().msg_id;
    let b = store
        .append(Recipients::Known(None), msg(b"b"), 1_000)
        .await
        .unwrap()
        .msg_id;
    let r1 = s1.read(&mut p1, block, 100).await.unwrap();
    let r2 = s2.read(&mut p2, block, 100).await.unwrap();
    assert!(!r1.gap() && !r2.gap(), "{r1:?} {r2:?}");
    let seen = |r: &broker::store::redis::Batch| {
        r.notices
            .iter()
            .map(|n| (n.msg_id, n.to.clone(), n.payload.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        seen(&r1),
        vec![
            (
                a,
                NoticeDest::Terminals(vec![dev]),
                Bytes::from_static(b"a")
            ),
            (b, NoticeDest::Kind(None), Bytes::from_static(b"b")),
        ]
    );
    assert_eq!(
        seen(&r2),
        vec![
            (
                a,
                NoticeDest::Terminals(vec![phone]),
                Bytes::from_static(b"a")
            ),
            (b, NoticeDest::Kind(None), Bytes::from_static(b"b")),
        ]
    );
    // Nothing new: an idle read returns nothing and no gap.
    let idle = s1.read(&mut p1, block, 100).await.unwrap();
    assert!(idle.notices.is_empty() && !idle.gap(), "{idle:?}");

    // Five more for the device: the stream keeps MAXLEN, the reader learns 2 were trimmed, and
    // the store still has all five.
    let mut ids = Vec::new();
    for _ in 0..5 {
        let m = store.append(Recipients::List(vec![dev]), msg(b"x"), 1_000);
        ids.push(m.await.unwrap().msg_id);
    }
    let r = s1.read(&mut p1, block, 100).await.unwrap();
    assert_eq!(r.missed, 2, "{r:?}");
    assert!(!r.restarted && !r.rejoined);
    let got: Vec<u64> = r.notices.iter().map(|n| n.msg_id).collect();
    assert_eq!(got, ids[2..].to_vec(), "the newest {MAXLEN}, in order");
    let stored = store.since(dev, a, 100, 1_000).await.unwrap();
    assert_eq!(stored.len(), 6, "b and the five are stored");

    // The stream is lost (deleted with its counter): the next notice restarts the numbering.
    let mut c = conn.get().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{}cstream:c1", conn.prefix()))
        .arg(format!("{}cstream:c1:n", conn.prefix()))
        .query_async(&mut c)
        .await
        .unwrap();
    let next = store.append(Recipients::List(vec![dev]), msg(b"y"), 1_000);
    let next = next.await.unwrap().msg_id;
    let r = s1.read(&mut p1, block, 100).await.unwrap();
    assert!(r.restarted, "{r:?}");
    assert_eq!(
        r.notices.iter().map(|n| n.msg_id).collect::<Vec<_>>(),
        vec![next]
    );

    // The sweep removes c2 and its stream: its next idle read rejoins and reports the loss.
    registry.clear_node("c2").await.unwrap();
    let r = s2.read(&mut p2, block, 100).await.unwrap();
    assert!(r.rejoined && r.restarted && r.gap(), "{r:?}");
    cleanup(&conn).await;
}
