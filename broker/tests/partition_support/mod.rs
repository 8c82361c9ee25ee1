//! What the two RabbitMQ partition tests share (`fault_rabbit_partition`, a blackhole in a TCP
//! relay, and `fault_rabbit_netem`, packets dropped on a veth link into a network namespace):
//! the uploads, the run (uploads in flight, the cut, the heal, the drain) and the pass
//! criteria. Each test brings only its way of cutting and healing the path to the node.
//!
//! Pass criteria, checked by [`check`]:
//! * zero confirmed uploads lost: every upload `publish` answered for (`Confirmed` or
//!   `Spooled`) is in the queue afterwards;
//! * the partition was felt: some uploads were spooled while it lasted, and the publisher kept
//!   answering (no publish failed);
//! * the spool drains after the partition heals (no backlog, the forwarder's count reached
//!   every spooled upload);
//! * duplicates are marked: every copy of an upload carries the same `dedup_key` and message
//!   id, and at most one copy lacks both the `x-redelivered-from-spool` and the `x-republished`
//!   header (docs/storage.md);
//! * nothing else is in the queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::metrics::Metrics;
use broker::store::UploadSpool;
use broker::store::embedded::{EmbeddedStore, OfflineLimits};
use broker::terminal::Address;
use broker::uploads::{
    Delivered, RabbitConfig, RabbitUploadSink, SinkStats, Upload, UploadSink, static_nodes,
};
use bytes::Bytes;
use tokio::runtime::Handle;

use crate::rabbit_support::{
    delete_topology, header_str, header_true, headers, message_id, wait_until,
};

/// How long the partition lasts: longer than the confirm timeout below, so publishes in flight
/// when it starts time out and spool.
pub const PARTITION: Duration = Duration::from_secs(8);

/// The test's own exchanges and queues, and timeouts short enough for an 8 s partition.
pub fn config(test: &str) -> RabbitConfig {
    let id = format!("test.{test}.{}", std::process::id());
    RabbitConfig {
        confirm_timeout_ms: 2000,
        connect_timeout_ms: 2000,
        retry_interval_ms: 200,
        ..crate::rabbit_support::topology(&id)
    }
}

fn upload(n: u32) -> Upload {
    Upload {
        device: Address::device(2000 + n % 11),
        upload_epoch: 0x4000_0000_0000_0000 | u64::from(n % 3),
        upload_id: n,
        topic: "power".into(),
        payload: Bytes::from(format!("reading-{n}")),
        received_at_ms: 1_700_000_000_000 + u64::from(n),
    }
}

/// One message read back: its `dedup_key`, AMQP message id and whether it is marked as a
/// possible duplicate (`x-redelivered-from-spool` or `x-republished`).
struct Got {
    key: String,
    message_id: String,
    marked: bool,
}

/// Reads (and acks) everything in `queue` on `url`.
async fn drain_queue(url: &str, queue: &str) -> Vec<Got> {
    crate::rabbit_support::drain_queue(url, queue, |d| {
        let h = headers(d);
        Got {
            key: header_str(&h, "dedup_key").unwrap_or_default(),
            message_id: message_id(d),
            marked: ["x-redelivered-from-spool", "x-republished"]
                .iter()
                .any(|k| header_true(&h, k)),
        }
    })
    .await
}

/// What a run left to check.
pub struct Outcome {
    answered: Vec<(u32, Delivered)>,
    stats: SinkStats,
    spool_head: u64,
    drained_in: Duration,
}

/// Runs the publisher (an embedded spool and a [`RabbitUploadSink`] to `node_url`, with 16
/// uploads in flight) on `publisher_rt`, calls `cut` once 300 uploads were answered, `heal`
/// [`PARTITION`] later, and waits for 200 more answers and the spool to drain.
pub async fn run(
    publisher_rt: &Handle,
    node_url: String,
    cfg: &RabbitConfig,
    cut: impl FnOnce(),
    heal: impl FnOnce(),
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let spool: Arc<dyn UploadSpool> = EmbeddedStore::open(
        dir.path(),
        OfflineLimits {
            max_per_terminal: 10,
            eviction: broker::config::EvictionPolicy::DropOldest,
        },
    )
    .unwrap();
    let sink = {
        let (cfg, spool) = (cfg.clone(), spool.clone());
        publisher_rt
            .spawn(async move {
                let (_tx, nodes) = static_nodes(vec![node_url]);
                RabbitUploadSink::start(cfg, nodes, spool, Metrics::new())
                    .await
                    .unwrap()
            })
            .await
            .unwrap()
    };

    // 16 uploads in flight until told to stop; each answer is recorded (a failed publish
    // panics the task, failing the test at the join).
    let answered: Arc<Mutex<Vec<(u32, Delivered)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (sink, answered, stop) = (sink.clone(), answered.clone(), stop.clone());
        publisher_rt.spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for n in 1..=1_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (sink, answered) = (sink.clone(), answered.clone());
                tasks.spawn(async move {
                    let d = sink.publish(upload(n)).await.expect("publish answered");
                    answered.lock().unwrap().push((n, d));
                });
                if tasks.len() >= 16 {
                    tasks.join_next().await.unwrap().unwrap();
                }
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        })
    };
    let count = || answered.lock().unwrap().len();
    wait_until(
        "300 uploads before the partition",
        Duration::from_secs(60),
        || count() >= 300,
    )
    .await;

    cut();
    let cut_at = Instant::now();
    let before = sink.stats();
    wait_until(
        "uploads spooled during the partition",
        PARTITION * 4,
        || sink.stats().spooled > before.spooled + 20,
    )
    .await;
    tokio::time::sleep(PARTITION.saturating_sub(cut_at.elapsed())).await;
    let during = count();
    heal();
    let healed = Instant::now();

    wait_until(
        "200 uploads after the partition",
        Duration::from_secs(60),
        || count() >= during + 200,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    wait_until("the spool drained", Duration::from_secs(60), || {
        let s = sink.stats();
        !sink.has_backlog() && s.forwarded >= s.spooled
    })
    .await;
    let drained_in = healed.elapsed();
    let stats = sink.stats();
    publisher_rt
        .spawn(async move { sink.shutdown().await })
        .await
        .unwrap();
    let spool_head = spool.head().await.unwrap();
    let answered = answered.lock().unwrap().clone();
    Outcome {
        answered,
        stats,
        spool_head,
        drained_in,
    }
}

/// Reads the queue back from `url` (the node itself, not through the cut path), removes the
/// test's topology and asserts the criteria in the module docs.
pub async fn check(url: &str, cfg: &RabbitConfig, o: Outcome) {
    let got = drain_queue(url, &cfg.upload_queue).await;
    delete_topology(url, cfg).await;
    let spooled = o
        .answered
        .iter()
        .filter(|(_, d)| *d == Delivered::Spooled)
        .count();
    let mut copies: BTreeMap<&str, Vec<&Got>> = BTreeMap::new();
    for g in &got {
        copies.entry(g.key.as_str()).or_default().push(g);
    }
    let duplicates = got.len() - copies.len();
    eprintln!(
        "partition {:?}: {} uploads answered ({spooled} spooled), {} in the queue, \
         {duplicates} duplicates, spool drained {:?} after the heal; {:?}",
        PARTITION,
        o.answered.len(),
        got.len(),
        o.drained_in,
        o.stats
    );

    assert!(spooled > 0, "the partition made the publisher spool");
    assert!(
        o.stats.forwarded >= o.stats.spooled,
        "the spool drained: {:?}",
        o.stats
    );
    assert_eq!(
        o.spool_head, o.stats.spooled,
        "every spooled upload is in the spool"
    );
    let expected: BTreeSet<String> = o
        .answered
        .iter()
        .map(|(n, _)| upload(*n).dedup_key())
        .collect();
    for (n, d) in &o.answered {
        assert!(
            copies.contains_key(upload(*n).dedup_key().as_str()),
            "upload {n} ({d:?}) lost"
        );
    }
    for (key, c) in &copies {
        assert!(expected.contains(*key), "unexpected message {key}");
        assert!(
            c.iter().all(|g| g.message_id == *key),
            "{key}: message id is the key"
        );
        let unmarked = c.iter().filter(|g| !g.marked).count();
        assert!(
            unmarked <= 1,
            "{key}: {unmarked} of {} copies not marked as a possible duplicate",
            c.len()
        );
    }
}
