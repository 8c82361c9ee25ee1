//! Fault: the cluster's Redis crashes (SIGKILL) and comes back while backend clients keep
//! pushing (feature `services-tests`; run:
//! `cargo test -p broker --features services-tests --test fault_redis_restart -- --nocapture`).
//!
//! A msgbus and a comet run in process on 127.0.0.1 port 0 over a `redis-server` of the test's
//! own (free port, own directory, stopped by its PID), with ZooKeeper and RabbitMQ from
//! `cargo xtask services up` under names unique to the run. Three pushers post to one offline
//! device through the msgbus for the whole run; Redis is killed after the first answers, kept
//! down for [`OUTAGE`], and started again on the same port and directory. Afterwards the device
//! logs in to the comet and the test compares what it is delivered with what was answered 200.
//!
//! Pass criteria (what docs/operations.md, "When Redis goes away", promises):
//! * during the outage every push is refused with 503 and `{"error": "store_unavailable"}`,
//!   answered within the Redis timeouts (no push hangs, none is answered 200);
//! * with `appendonly yes` + `appendfsync always`: every push answered 200, before, across or
//!   after the crash, is delivered exactly once, in `msg_id` order, and no data loss is counted;
//! * without persistence: the pushes answered 200 before the crash are gone (Redis lost them),
//!   the loss is counted once in `broker_store_data_loss_total`, the push that finds it out (or
//!   the few in flight with it) is answered 503 `{"error": "store_data_lost"}` instead of 200, and
//!   every push answered 200 after the restart is delivered exactly once with an id above all
//!   earlier ones;
//! * each node's Redis health probe follows the outage: `broker_redis_up` is 1 before the crash,
//!   0 with failed probes counted in `broker_redis_errors_total` and
//!   `broker_redis_last_error_timestamp_seconds` set by the end of it, and 1 again after the
//!   restart.
#![cfg(feature = "services-tests")]

mod port_support;

use port_support::free_port;
mod cluster_support;
mod comet_support;
mod services_env;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker::metrics::upload_path::REDIS_ERROR_KINDS;
use broker::roles::{start_comet, start_msgbus};
use cluster_support::*;
use comet_support::*;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The device every push goes to (offline until the end).
const TARGET: u32 = 4711;
/// Concurrent pushers.
const PUSHERS: usize = 3;
/// Pause between two pushes of one pusher.
const PACE: Duration = Duration::from_millis(40);
/// How long Redis stays down.
const OUTAGE: Duration = Duration::from_secs(2);
/// Pushes answered 200 wanted after the restart before the pushers stop.
const AFTER_RESTART: usize = 20;
/// The broker's Redis timeouts in this test (connect and response).
const REDIS_TIMEOUT_MS: u64 = 500;

/// Whether the test's Redis keeps an append-only file fsynced on every write.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Persistence {
    AppendFsyncAlways,
    None,
}

/// A `redis-server` of the test's own on a fixed port and directory; killed (SIGKILL, by its
/// PID) by [`OwnRedis::crash`] and on drop.
struct OwnRedis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persistence: Persistence,
}

impl OwnRedis {
    async fn start(persistence: Persistence) -> OwnRedis {
        let mut r = OwnRedis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            persistence,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path());
        match self.persistence {
            Persistence::AppendFsyncAlways => cmd
                .args(["--appendonly", "yes"])
                .args(["--appendfsync", "always"]),
            Persistence::None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (package redis-server)");
        self.child = Some(child);
        wait_ping(self.port, self.dir.path()).await;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: no shutdown save, no goodbye to clients.
    fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.crash();
    }
}

async fn wait_ping(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pong = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
            .unwrap_or(false);
        if pong {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on {port} (dir {}) did not start",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one push got, and when.
#[derive(Debug)]
struct Answer {
    sent: Instant,
    done: Instant,
    status: u16,
    body: Value,
}

impl Answer {
    fn msg_id(&self) -> Option<u64> {
        (self.status == 200).then(|| self.body["msg_id"].as_u64().expect("msg_id"))
    }
}

/// Pushes to [`TARGET`] through `http` until `stop`; every answer goes to `log`.
async fn pusher(http: String, n: usize, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Answer>>>) {
    let client = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let body = json!({
            "target": {"terminal": {"kind": "device", "id": TARGET}},
            "text": format!("p{n}-{i}"),
        });
        let sent = Instant::now();
        let r = client
            .post(format!("{http}/v1/push"))
            .bearer_auth(API_TOKEN)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await
            .expect("the msgbus API answers even while Redis is down");
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        log.lock().await.push(Answer {
            sent,
            done: Instant::now(),
            status,
            body,
        });
        tokio::time::sleep(PACE).await;
    }
}

/// Every Deliver the device gets until it is quiet for `quiet` (acked by the test device).
async fn drain(dev: &mut Device, quiet: Duration) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Some(g) = dev.next_event(quiet).await {
        if let Got::Deliver { msg_id, .. } = g {
            ids.push(msg_id);
        }
    }
    ids
}

async fn count_ok_since(log: &Mutex<Vec<Answer>>, since: Instant) -> usize {
    log.lock()
        .await
        .iter()
        .filter(|a| a.sent >= since && a.status == 200)
        .count()
}

/// The whole scenario for one Redis persistence setting; see the module docs for the criteria.
async fn pushes_across_a_redis_crash(persistence: Persistence) {
    let run = Run::new();
    let mut redis = OwnRedis::start(persistence).await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfg = |i: usize, node: &str| {
        let mut c = run.node_config(dirs[i].path(), node);
        c.redis.url = redis.url();
        c.redis.connect_timeout_ms = REDIS_TIMEOUT_MS;
        c.redis.response_timeout_ms = REDIS_TIMEOUT_MS;
        c.offline.max_per_terminal = 100_000;
        c
    };
    let comet_cfg = cfg(0, "comet-a");
    let comet = start_comet(&comet_cfg).await.unwrap();
    let bus = start_msgbus(&cfg(1, "msgbus-1")).await.unwrap();
    let http = format!("http://{}", bus.running.http);

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|n| tokio::spawn(pusher(http.clone(), n, stop.clone(), log.clone())))
        .collect();
    while count_ok_since(&log, started).await < 10 {
        assert!(
            started.elapsed() < WAIT * 4,
            "no pushes answered 200 before the crash"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for node in [&comet, &bus] {
        wait_redis_up(node, 1.0, "before the crash").await;
    }
    redis.crash();
    let down = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    for node in [&comet, &bus] {
        let text = scrape(node).await;
        assert_eq!(
            sample(&text, "broker_redis_up"),
            Some(0.0),
            "during the outage"
        );
        let errors: f64 = REDIS_ERROR_KINDS
            .iter()
            .filter_map(|k| sample(&text, &format!("broker_redis_errors_total{{kind=\"{k}\"}}")))
            .sum();
        assert!(errors >= 1.0, "failed probes counted: {errors}");
        let last = sample(&text, "broker_redis_last_error_timestamp_seconds").unwrap();
        assert!(last > 1.7e9, "last error time set: {last}");
    }
    let restarting = Instant::now();
    redis.spawn().await;
    while count_ok_since(&log, restarting).await < AFTER_RESTART {
        assert!(
            restarting.elapsed() < Duration::from_secs(30),
            "pushes not answered 200 again within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in [&comet, &bus] {
        wait_redis_up(node, 1.0, "after the restart").await;
    }
    stop.store(true, Ordering::SeqCst);
    for p in pushers {
        p.await.unwrap();
    }
    let log = std::mem::take(&mut *log.lock().await);

    // During the outage (sent after the kill, answered before the restart began): 503
    // store_unavailable, within a few Redis timeouts.
    let outage: Vec<&Answer> = log
        .iter()
        .filter(|a| a.sent >= down && a.done < restarting)
        .collect();
    assert!(!outage.is_empty(), "no push was tried during the outage");
    for a in &outage {
        assert_eq!(
            (a.status, a.body["error"].as_str()),
            (503, Some("store_unavailable")),
            "during the outage: {a:?}"
        );
        let took = a.done - a.sent;
        assert!(
            took < Duration::from_millis(REDIS_TIMEOUT_MS * 6),
            "a refusal took {took:?}"
        );
    }
    let other: Vec<&Answer> = log
        .iter()
        .filter(|a| a.status != 200 && a.status != 503)
        .collect();
    assert!(other.is_empty(), "answers other than 200/503: {other:?}");
    // After the restart, the first answers that are not `store_unavailable` (the connection
    // coming back) say whether Redis lost what it had acknowledged: one of the first few (the
    // pushes in flight together) must.
    let mut after_restart: Vec<&Answer> = log
        .iter()
        .filter(|a| a.done >= restarting)
        .filter(|a| a.body["error"].as_str() != Some("store_unavailable"))
        .collect();
    after_restart.sort_by_key(|a| a.done);
    let data_lost = log
        .iter()
        .filter(|a| a.body["error"].as_str() == Some("store_data_lost"))
        .count();
    match persistence {
        Persistence::AppendFsyncAlways => assert_eq!(data_lost, 0, "nothing was lost"),
        Persistence::None => {
            let first: Vec<_> = after_restart
                .iter()
                .take(PUSHERS)
                .map(|a| (a.status, a.body["error"].as_str()))
                .collect();
            assert!(
                first.contains(&(503, Some("store_data_lost"))),
                "the first pushes after the loss report it: {first:?}"
            );
            // One per loss, plus at most the pushes in flight with it.
            assert!(
                (1..=PUSHERS).contains(&data_lost),
                "{data_lost} store_data_lost answers"
            );
        }
    }
    let before: Vec<u64> = log
        .iter()
        .filter(|a| a.done < down)
        .filter_map(Answer::msg_id)
        .collect();
    let after: Vec<u64> = log
        .iter()
        .filter(|a| a.sent >= restarting)
        .filter_map(Answer::msg_id)
        .collect();
    let acked: BTreeSet<u64> = log.iter().filter_map(Answer::msg_id).collect();
    eprintln!(
        "{persistence:?}: {} pushes, {} answered 200 ({} before the crash, {} after the restart); \
         {} refused during the outage, slowest refusal {:?}; {data_lost} store_data_lost; \
         first error body: {}",
        log.len(),
        acked.len(),
        before.len(),
        after.len(),
        outage.len(),
        outage.iter().map(|a| a.done - a.sent).max().unwrap(),
        outage[0].body
    );

    // The device logs in to the comet and gets everything stored for it.
    let mut dev = login(Wire::udp(comet.running.comet.udp).await, TARGET, 0)
        .await
        .expect("device login after the restart");
    let delivered = drain(&mut dev, Duration::from_secs(3)).await;
    assert!(strictly_increasing(&delivered), "delivered: {delivered:?}");
    let got: BTreeSet<u64> = delivered.iter().copied().collect();
    let losses = sample(&scrape(&bus).await, "broker_store_data_loss_total");
    match persistence {
        Persistence::AppendFsyncAlways => {
            let lost: Vec<&u64> = acked.difference(&got).collect();
            assert!(lost.is_empty(), "answered 200 but not delivered: {lost:?}");
            assert_eq!(losses, Some(0.0), "no data loss with appendfsync always");
        }
        Persistence::None => {
            let lost_after: Vec<&u64> = after.iter().filter(|id| !got.contains(id)).collect();
            assert!(
                lost_after.is_empty(),
                "answered 200 after the restart but not delivered: {lost_after:?}"
            );
            assert!(
                before.iter().all(|id| !got.contains(id)),
                "Redis without persistence kept pushes from before the crash?"
            );
            let highest_before = before.iter().max().unwrap();
            assert!(after.iter().all(|id| id > highest_before), "ids went back");
            assert_eq!(losses, Some(1.0), "the loss is counted once");
        }
    }
    eprintln!("{persistence:?}: {} delivered after login", delivered.len());

    bus.stop().await;
    comet.stop().await;
    cleanup_rabbit(&run.env["RABBITMQ_1_AMQP_URL"], &comet_cfg).await;
    drop(redis);
}

/// Waits (5 s at most) for `node`'s `broker_redis_up` to read `want`.
async fn wait_redis_up(node: &broker::cluster::ClusterNode, want: f64, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let up = sample(&scrape(node).await, "broker_redis_up");
        if up == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: broker_redis_up {up:?} {when}, want {want}",
            node.node_id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_with_appendfsync_always_loses_no_acknowledged_push() {
    pushes_across_a_redis_crash(Persistence::AppendFsyncAlways).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_without_persistence_refuses_during_the_outage_and_counts_the_loss() {
    pushes_across_a_redis_crash(Persistence::None).await;
}
