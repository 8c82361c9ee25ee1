//! RabbitMQ partitioned from the upload publisher (the msgbus side, [`RabbitUploadSink`]) while
//! uploads flow, against the real RabbitMQ node 1 from `cargo xtask services up` (feature
//! `services-tests`; run: `cargo test -p broker --features services-tests --test
//! fault_rabbit_partition -- --nocapture` to see the figures).
//!
//! The partition is a blackhole in a TCP relay that this test puts between the publisher and
//! node 1 ([`Blackhole`], in `rabbit_support`). The shared services are never stopped or
//! reconfigured.
//!
//! Pass criteria, checked below:
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
#![cfg(feature = "services-tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::metrics::Metrics;
use broker::store::UploadSpool;
use broker::store::embedded::{EmbeddedStore, OfflineLimits};
use broker::terminal::Address;
use broker::uploads::{
    Delivered, RabbitConfig, RabbitUploadSink, Upload, UploadSink, static_nodes,
};
use bytes::Bytes;

mod rabbit_support;
mod services_env;

use rabbit_support::blackhole::{Blackhole, host_port};
use rabbit_support::{delete_topology, header_str, header_true, headers, message_id, wait_until};

/// How long the partition lasts: longer than the confirm timeout below, so publishes in flight
/// when it starts time out and spool.
const PARTITION: Duration = Duration::from_secs(8);

fn node1_url() -> String {
    services_env::require(&["RABBITMQ_1_AMQP_URL"])["RABBITMQ_1_AMQP_URL"].clone()
}

fn config() -> RabbitConfig {
    let id = format!("test.partition.{}", std::process::id());
    RabbitConfig {
        upload_exchange: format!("{id}.uploads"),
        upload_queue: format!("{id}.uploads"),
        push_exchange: format!("{id}.pushes"),
        push_queue: format!("{id}.pushes"),
        push_dead_letter_exchange: format!("{id}.pushes.dead"),
        push_dead_letter_queue: format!("{id}.pushes.dead"),
        confirm_timeout_ms: 2000,
        connect_timeout_ms: 2000,
        retry_interval_ms: 200,
        ..RabbitConfig::default()
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
    rabbit_support::drain_queue(url, queue, |d| {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_rabbitmq_loses_no_confirmed_upload_and_the_spool_drains() {
    let url = node1_url();
    let node = host_port(&url);
    let hole = Blackhole::start(node.clone()).await;
    let relayed = url.replacen(&node, &hole.addr.to_string(), 1);
    let cfg = config();
    let dir = tempfile::tempdir().unwrap();
    let spool: Arc<dyn UploadSpool> = EmbeddedStore::open(
        dir.path(),
        OfflineLimits {
            max_per_terminal: 10,
            eviction: broker::config::EvictionPolicy::DropOldest,
        },
    )
    .unwrap();
    let (_tx, nodes) = static_nodes(vec![relayed]);
    let sink = RabbitUploadSink::start(cfg.clone(), nodes, spool.clone(), Metrics::new())
        .await
        .unwrap();

    // 16 uploads in flight until told to stop; each answer is recorded (a failed publish
    // panics the task, failing the test at the join).
    let answered: Arc<Mutex<Vec<(u32, Delivered)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (sink, answered, stop) = (sink.clone(), answered.clone(), stop.clone());
        tokio::spawn(async move {
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

    hole.set(true);
    let cut = Instant::now();
    let before = sink.stats();
    wait_until(
        "uploads spooled during the partition",
        PARTITION * 4,
        || sink.stats().spooled > before.spooled + 20,
    )
    .await;
    let remaining = PARTITION.saturating_sub(cut.elapsed());
    tokio::time::sleep(remaining).await;
    let during = count();
    hole.set(false);
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
    sink.shutdown().await;

    let got = drain_queue(&url, &cfg.upload_queue).await;
    delete_topology(&url, &cfg).await;
    let answered = answered.lock().unwrap().clone();
    let spooled = answered
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
         {duplicates} duplicates, spool drained {drained_in:?} after the heal; {stats:?}",
        PARTITION,
        answered.len(),
        got.len()
    );

    assert!(spooled > 0, "the partition made the publisher spool");
    assert!(
        stats.forwarded >= stats.spooled,
        "the spool drained: {stats:?}"
    );
    assert_eq!(
        spool.head().await.unwrap(),
        stats.spooled,
        "every spooled upload is in the spool"
    );
    let expected: BTreeSet<String> = answered
        .iter()
        .map(|(n, _)| upload(*n).dedup_key())
        .collect();
    for (n, d) in &answered {
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
