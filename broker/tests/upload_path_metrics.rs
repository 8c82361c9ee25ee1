//! The upload path's metrics on a comet's RabbitMQ publisher ([`RabbitUploadSink`]), against
//! the real RabbitMQ nodes 1 and 2 from `cargo xtask services up` (feature `services-tests`;
//! run: `cargo test -p broker --features services-tests --test upload_path_metrics`). Each node
//! is reached through a relay of this test's own that can cut it off ([`Blackhole`]); the
//! shared services are never stopped or reconfigured.
//!
//! 1. Both relays open: uploads are confirmed on node 1; `broker_rabbitmq_node_in_use` is 1 for
//!    node 1 and 0 for node 2, no failover, empty spool.
//! 2. Node 1 cut off: the next upload waits for its confirm (`broker_rabbitmq_confirms_pending`
//!    is 1 meanwhile), times out, and is confirmed on node 2: one failover counted, the node
//!    gauge moved to node 2.
//! 3. Node 2 cut off too: uploads are spooled; `broker_upload_spool_backlog` counts them and
//!    `broker_upload_spool_oldest_age_seconds` grows while they wait.
//! 4. Both healed: the forwarder publishes the spool, and both gauges fall to 0.
#![cfg(feature = "services-tests")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
use rabbit_support::{delete_topology, wait_until};

/// How long after a cut the relays have surely stopped moving bytes.
const CUT_SETTLES: Duration = Duration::from_millis(200);

fn config() -> RabbitConfig {
    let id = format!("test.upload-metrics.{}", std::process::id());
    RabbitConfig {
        confirm_timeout_ms: 1500,
        connect_timeout_ms: 1000,
        retry_interval_ms: 200,
        ..rabbit_support::topology(&id)
    }
}

fn upload(n: u32) -> Upload {
    Upload {
        device: Address::device(3000 + n),
        upload_epoch: 0x5000_0000_0000_0000,
        upload_id: n,
        topic: "power".into(),
        payload: Bytes::from(format!("reading-{n}")),
        received_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    }
}

/// The value of `series` (name with its label text, as rendered) in `m`'s exposition.
fn value(m: &Metrics, series: &str) -> f64 {
    let text = m.render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn in_use(m: &Metrics, hole: &Blackhole) -> f64 {
    value(
        m,
        &format!("broker_rabbitmq_node_in_use{{node=\"{}\"}}", hole.addr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_node_in_use_confirms_pending_and_spool_backlog_move() {
    let env = services_env::require(&["RABBITMQ_1_AMQP_URL", "RABBITMQ_2_AMQP_URL"]);
    let urls = [&env["RABBITMQ_1_AMQP_URL"], &env["RABBITMQ_2_AMQP_URL"]];
    let mut holes = Vec::new();
    let mut relayed = Vec::new();
    for url in urls {
        let node = host_port(url);
        let hole = Blackhole::start(node.clone()).await;
        relayed.push(url.replacen(&node, &hole.addr.to_string(), 1));
        holes.push(hole);
    }
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
    let metrics = Metrics::new();
    let (_tx, nodes) = static_nodes(relayed);
    let sink = RabbitUploadSink::start(cfg.clone(), nodes, spool.clone(), metrics.clone())
        .await
        .unwrap();
    let m = &metrics;

    // 1. Registered at 0, then node 1 in use.
    assert_eq!(in_use(m, &holes[1]), 0.0);
    assert_eq!(value(m, "broker_rabbitmq_failovers_total"), 0.0);
    for n in 1..=3 {
        assert_eq!(sink.publish(upload(n)).await.unwrap(), Delivered::Confirmed);
    }
    assert_eq!(in_use(m, &holes[0]), 1.0);
    assert_eq!(in_use(m, &holes[1]), 0.0);
    assert_eq!(value(m, "broker_rabbitmq_failovers_total"), 0.0);
    assert_eq!(value(m, "broker_rabbitmq_confirms_pending"), 0.0);
    assert_eq!(value(m, "broker_upload_spool_backlog"), 0.0);

    // 2. Node 1 cut off: the publish waits, then fails over to node 2.
    holes[0].set(true);
    // The relay notices within 50 ms (bytes already read when it is cut still go out).
    tokio::time::sleep(CUT_SETTLES).await;
    let waiting = {
        let sink = sink.clone();
        tokio::spawn(async move { sink.publish(upload(4)).await.unwrap() })
    };
    wait_until("a confirm pending", Duration::from_secs(5), || {
        value(m, "broker_rabbitmq_confirms_pending") == 1.0
    })
    .await;
    assert_eq!(waiting.await.unwrap(), Delivered::Confirmed);
    assert_eq!(value(m, "broker_rabbitmq_failovers_total"), 1.0);
    assert_eq!(in_use(m, &holes[0]), 0.0);
    assert_eq!(in_use(m, &holes[1]), 1.0);
    assert_eq!(value(m, "broker_rabbitmq_confirms_pending"), 0.0);

    // 3. Node 2 cut off too: uploads are spooled and wait, getting older.
    holes[1].set(true);
    tokio::time::sleep(CUT_SETTLES).await;
    for n in 5..=9 {
        assert_eq!(sink.publish(upload(n)).await.unwrap(), Delivered::Spooled);
    }
    assert_eq!(value(m, "broker_upload_spool_backlog"), 5.0);
    assert!(value(m, "broker_rabbitmq_failovers_total") >= 2.0);
    let age = value(m, "broker_upload_spool_oldest_age_seconds");
    wait_until(
        "the oldest spooled upload to age",
        Duration::from_secs(10),
        || value(m, "broker_upload_spool_oldest_age_seconds") >= age + 1.0,
    )
    .await;
    assert_eq!(value(m, "broker_upload_spool_backlog"), 5.0);

    // 4. Healed: the spool drains and the gauges fall.
    holes[0].set(false);
    holes[1].set(false);
    wait_until("the spool drained", Duration::from_secs(30), || {
        !sink.has_backlog()
            && value(m, "broker_upload_spool_backlog") == 0.0
            && value(m, "broker_upload_spool_oldest_age_seconds") == 0.0
    })
    .await;
    assert_eq!(sink.stats().forwarded, 5);
    assert_eq!(value(m, "broker_rabbitmq_confirms_pending"), 0.0);
    let used: f64 = holes.iter().map(|h| in_use(m, h)).sum();
    assert_eq!(used, 1.0, "one node in use after the heal");
    sink.shutdown().await;
    for url in urls {
        delete_topology(url, &cfg).await;
    }
}
