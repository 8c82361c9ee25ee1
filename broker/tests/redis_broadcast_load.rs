//! A broadcast to 100,000 known terminals on the Redis store: how long the push takes, how long
//! other writes stall behind it (Redis runs one script at a time), and what it costs in Redis
//! memory (feature `services-tests`; ignored by default, it takes about a minute; run:
//! `cargo test -p broker --features services-tests --test redis_broadcast_load -- --ignored --nocapture`).
//!
//! The test starts a `redis-server` of its own (no persistence, free port, stopped by its PID),
//! so other users of the shared Redis neither disturb nor are disturbed by the figures. The
//! figures are in docs/performance.md ("Broadcast on the Redis store").
#![cfg(feature = "services-tests")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker::config::EvictionPolicy;
use broker::store::embedded::OfflineLimits;
use broker::store::redis::{RedisConfig, RedisConn, RedisStore};
use broker::store::{NewMessage, OfflineStore, Recipients};
use broker::terminal::{Address, Kind};
use bytes::Bytes;

/// Known devices the broadcast goes to.
const TERMINALS: u32 = 100_000;
/// Broadcasts timed.
const BROADCASTS: usize = 3;

/// A `redis-server` of the test's own, killed (by PID) on drop.
struct OwnRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (package redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
        {
            assert!(Instant::now() < deadline, "redis on {port} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnRedis {
            child,
            port,
            _dir: dir,
        }
    }

    async fn conn(&self) -> Arc<RedisConn> {
        let cfg = RedisConfig {
            url: format!("redis://127.0.0.1:{}/", self.port),
            key_prefix: "bench:".into(),
            response_timeout_ms: 60_000,
            ..RedisConfig::default()
        };
        Arc::new(RedisConn::connect(&cfg).await.expect("connect"))
    }

    fn used_memory(&self) -> u64 {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "info", "memory"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory")
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn msg(payload: &'static [u8]) -> NewMessage {
    NewMessage {
        from: None,
        payload: Bytes::from_static(payload),
        expires_at_ms: u64::MAX,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load measurement, about a minute; run by hand (module docs)"]
async fn broadcast_to_100k_known_terminals() {
    let redis = OwnRedis::start();
    let limits = OfflineLimits {
        max_per_terminal: 100,
        eviction: EvictionPolicy::DropOldest,
    };
    let store = RedisStore::new(redis.conn().await, limits);
    // Remember the terminals, 256 logins in flight at a time.
    let started = Instant::now();
    for chunk in (1..=TERMINALS).collect::<Vec<_>>().chunks(256) {
        let mut set = tokio::task::JoinSet::new();
        for id in chunk {
            let s = store.clone();
            let id = *id;
            set.spawn(async move { s.remember(Address::device(id)).await.unwrap() });
        }
        set.join_all().await;
    }
    eprintln!(
        "remembered {TERMINALS} terminals in {:?}",
        started.elapsed()
    );

    // Another writer on its own connection: unicast pushes, each timed.
    let other = RedisStore::new(redis.conn().await, limits);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                other
                    .append(
                        Recipients::List(vec![Address::device(TERMINALS + 1)]),
                        msg(b"u"),
                        0,
                    )
                    .await
                    .unwrap();
                lat.push((t, t.elapsed()));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            lat
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mem_before = redis.used_memory();
    let payload = [b'x'; 64];
    let mut took = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..BROADCASTS {
        let t = Instant::now();
        let a = store
            .append(
                Recipients::Known(Some(Kind::Device)),
                NewMessage {
                    from: None,
                    payload: Bytes::copy_from_slice(&payload),
                    expires_at_ms: u64::MAX,
                },
                0,
            )
            .await
            .unwrap();
        took.push(t.elapsed());
        assert_eq!(
            (a.stored_for, a.evicted, a.rejected),
            (u64::from(TERMINALS), 0, 0)
        );
        ids.push(a.msg_id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mem_after = redis.used_memory();
    stop.store(true, Ordering::Relaxed);
    let lat = writer.await.unwrap();
    let stall = lat.iter().map(|(_, l)| *l).max().unwrap();
    let mut sorted: Vec<Duration> = lat.iter().map(|(_, l)| *l).collect();
    sorted.sort();
    let median = sorted[sorted.len() / 2];

    // One terminal's view: the three broadcasts, then its acknowledgement and an empty login.
    let t = Address::device(TERMINALS / 2);
    let got: Vec<u64> = store
        .since(t, 0, 10, 0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(got, ids);
    let at = Instant::now();
    assert_eq!(
        store.ack_through(t, *ids.last().unwrap()).await.unwrap(),
        BROADCASTS as u64
    );
    let ack = at.elapsed();
    let at = Instant::now();
    store.remember(t).await.unwrap();
    assert!(store.since(t, got[2], 10, 0).await.unwrap().is_empty());
    let login = at.elapsed();

    // Every terminal but that one full: under a cap of BROADCASTS, the next broadcast evicts the
    // oldest pending broadcast of each, one by one (the slow path).
    let full = RedisStore::new(
        redis.conn().await,
        OfflineLimits {
            max_per_terminal: BROADCASTS as u64,
            eviction: EvictionPolicy::DropOldest,
        },
    );
    let at = Instant::now();
    let a = full
        .append(Recipients::Known(Some(Kind::Device)), msg(b"over"), 0)
        .await
        .unwrap();
    let full_took = at.elapsed();
    assert_eq!(
        (a.stored_for, a.evicted),
        (u64::from(TERMINALS), u64::from(TERMINALS) - 1)
    );
    eprintln!(
        "broadcast to {TERMINALS} devices of which {} are full (drop-oldest): {full_took:?}",
        TERMINALS - 1
    );
    eprintln!(
        "broadcast to {TERMINALS} known devices on Redis: push took {took:?}; other writes: \
         {} timed, median {median:?}, longest {stall:?}; Redis memory +{} bytes for {BROADCASTS} \
         broadcasts ({} per broadcast per terminal); ack of {BROADCASTS} broadcasts {ack:?}, \
         empty login {login:?}",
        lat.len(),
        mem_after.saturating_sub(mem_before),
        mem_after.saturating_sub(mem_before) / (BROADCASTS as u64 * u64::from(TERMINALS)),
    );
}

/// Redis commands run so far, inner commands of scripts included, and script calls (round
/// trips of the store), without the `INFO` calls that read them.
fn commands(redis: &OwnRedis) -> (u64, u64) {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "info", "commandstats"])
        .output()
        .unwrap();
    let (mut all, mut scripts) = (0, 0);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, rest)) = l.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        let calls: u64 = rest
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if name != "info" {
            all += calls;
        }
        if name == "eval" || name == "evalsha" {
            scripts += calls;
        }
    }
    (all, scripts)
}

/// What a store call cost: (Redis commands, script calls).
async fn cost<F: std::future::Future>(redis: &OwnRedis, f: F) -> (F::Output, (u64, u64)) {
    let before = commands(redis);
    let out = f.await;
    let after = commands(redis);
    (out, (after.0 - before.0, after.1 - before.1))
}

/// The delivery core's costs on Redis, counted in Redis commands: a broadcast adds a constant
/// number of keys whatever the number of terminals; an acknowledgement is one script whose work
/// does not grow with the broadcasts it covers; a login is one script, with or without
/// anything pending.
#[tokio::test]
async fn a_broadcast_is_one_record_and_acks_and_logins_are_one_script() {
    let redis = OwnRedis::start();
    let limits = OfflineLimits {
        max_per_terminal: 1000,
        eviction: EvictionPolicy::DropOldest,
    };
    let store = RedisStore::new(redis.conn().await, limits);
    let raw = redis.conn().await;
    let keys = async || -> u64 {
        let mut c = raw.get().await;
        redis::cmd("DBSIZE").query_async(&mut c).await.unwrap()
    };
    for id in 1..=500 {
        store.remember(Address::device(id)).await.unwrap();
    }
    let to_devices = || Recipients::Known(Some(Kind::Device));
    store.append(to_devices(), msg(b"first"), 0).await.unwrap();
    let before = keys().await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        let a = store.append(to_devices(), msg(b"b"), 0).await.unwrap();
        assert_eq!(a.stored_for, 500);
        ids.push(a.msg_id);
    }
    // 50 bodies, nothing per terminal.
    assert_eq!(keys().await - before, 50, "one key per broadcast");

    // Redis learns each script at its first use (one more round trip, once): not counted.
    let unknown = Address::device(9999);
    store.ack(unknown, 1).await.unwrap();
    store.login(unknown, 0, 1, 0).await.unwrap();

    // Acknowledging 5 broadcasts and acknowledging 45 cost the same: one script, same work.
    let (d1, d2) = (Address::device(1), Address::device(2));
    let (n, five) = cost(&redis, store.ack_through(d1, ids[4])).await;
    assert_eq!(n.unwrap(), 6, "the first broadcast and five more");
    let (n, many) = cost(&redis, store.ack_through(d2, ids[44])).await;
    assert_eq!(n.unwrap(), 46);
    assert_eq!(five.1, 1, "one round trip");
    assert_eq!(five, many, "no work per broadcast covered");
    let (n, again) = cost(&redis, store.ack(d2, ids[44])).await;
    assert!(!n.unwrap(), "nothing left to cover");
    assert_eq!(again.1, 1);
    assert!(
        again.0 < five.0,
        "a repeated ack writes nothing: {again:?} vs {five:?}"
    );

    // A login is one script: with 5 to replay, and with nothing pending.
    let d3 = Address::device(3);
    let (replay, pending) = cost(&redis, store.login(d3, ids[44], 10, 0)).await;
    assert_eq!(
        replay.unwrap().iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        ids[45..].to_vec()
    );
    assert_eq!(pending.1, 1, "a login with a replay is one round trip");
    let last = *ids.last().unwrap();
    store.ack(d3, last).await.unwrap();
    let (replay, empty) = cost(&redis, store.login(d3, last, 10, 0)).await;
    assert!(replay.unwrap().is_empty());
    assert_eq!(empty.1, 1, "an empty login is one round trip ({empty:?})");
    eprintln!(
        "redis commands (script calls): ack of 5 broadcasts {five:?}, of 45 {many:?}, repeated \
         {again:?}; login with nothing pending {empty:?}, with 5 {pending:?}"
    );
}
