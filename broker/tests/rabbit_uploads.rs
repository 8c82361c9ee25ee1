//! The RabbitMQ upload sink and push consumer against the two real RabbitMQ nodes from
//! `cargo xtask services up` (feature `services-tests`; run: `cargo test -p broker --features
//! services-tests --test rabbit_uploads -- --nocapture` to see the measured rates).
//!
//! Each test declares its own exchange and queues (unique names) and deletes them at the end.
//! The failover test stops node 1's app with `rabbitmqctl` and starts it again (also on panic).
#![cfg(feature = "services-tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::metrics::Metrics;
use broker::router::Target;
use broker::store::UploadSpool;
use broker::store::embedded::{EmbeddedStore, OfflineLimits};
use broker::terminal::Address;
use broker::uploads::{
    Delivered, PushConsumer, PushFailure, REJECT_REASON_HEADER, RabbitConfig, RabbitUploadSink,
    Upload, UploadSink, static_nodes,
};
use bytes::Bytes;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

mod rabbit_support;
mod services_env;

use rabbit_support::{
    delete_topology, header_str, header_true, headers, message_id, publish_when_routed, wait_until,
};

/// The service environment this test needs (see `services_env`).
fn services() -> BTreeMap<String, String> {
    services_env::require(&["RABBITMQ_1_AMQP_URL", "RABBITMQ_2_AMQP_URL"])
}

fn urls() -> (String, String) {
    let s = services();
    (
        s["RABBITMQ_1_AMQP_URL"].clone(),
        s["RABBITMQ_2_AMQP_URL"].clone(),
    )
}

fn config(name: &str) -> RabbitConfig {
    static N: AtomicU64 = AtomicU64::new(0);
    let id = format!(
        "test.{name}.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    RabbitConfig {
        confirm_timeout_ms: 3000,
        connect_timeout_ms: 2000,
        retry_interval_ms: 200,
        ..rabbit_support::topology(&id)
    }
}

fn spool(dir: &std::path::Path) -> Arc<dyn UploadSpool> {
    EmbeddedStore::open(
        dir,
        OfflineLimits {
            max_per_terminal: 10,
            eviction: broker::config::EvictionPolicy::DropOldest,
        },
    )
    .unwrap()
}

/// Upload `n`: one of seven devices, in one of five boots (upload epochs), upload id `n`.
fn upload(n: u32) -> Upload {
    Upload {
        device: Address::device(1000 + n % 7),
        upload_epoch: 0x8000_0000_0000_0000 | u64::from(n % 5),
        upload_id: n,
        topic: if n.is_multiple_of(2) {
            "power"
        } else {
            "state"
        }
        .into(),
        payload: Bytes::from(format!("payload-{n}")),
        received_at_ms: 1_700_000_000_000 + u64::from(n),
    }
}

/// One message read back from a queue.
#[derive(Debug)]
struct Got {
    key: String,
    /// The `upload_epoch` header.
    epoch: String,
    /// The AMQP message id.
    message_id: String,
    routing_key: String,
    data: Vec<u8>,
    from_spool: bool,
    persistent: bool,
}

/// Serialises this file's tests: one of them stops a RabbitMQ node (`stop_app`), which resets
/// the connections of any test running beside it on that node.
static RABBIT_NODES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads (and acks) everything in `queue` on `url`.
async fn drain_queue(url: &str, queue: &str) -> Vec<Got> {
    rabbit_support::drain_queue(url, queue, |d| {
        let h = headers(d);
        Got {
            key: header_str(&h, "dedup_key").unwrap_or_default(),
            epoch: header_str(&h, "upload_epoch").unwrap_or_default(),
            message_id: message_id(d),
            routing_key: d.routing_key.to_string(),
            data: d.data.clone(),
            from_spool: header_true(&h, "x-redelivered-from-spool"),
            persistent: *d.properties.delivery_mode() == Some(2),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_uploads_are_consumed_exactly_with_headers_and_routing() {
    let _serial = RABBIT_NODES.lock().await;
    let (url1, _) = urls();
    let cfg = config("exact");
    let dir = tempfile::tempdir().unwrap();
    let (_tx, nodes) = static_nodes(vec![url1.clone()]);
    let sink = RabbitUploadSink::start(cfg.clone(), nodes, spool(dir.path()), Metrics::new())
        .await
        .unwrap();

    // Sequential: each publish waits for its own confirm.
    let n_seq = 200u32;
    let t = Instant::now();
    for n in 0..n_seq {
        assert_eq!(sink.publish(upload(n)).await.unwrap(), Delivered::Confirmed);
    }
    let seq_rate = f64::from(n_seq) / t.elapsed().as_secs_f64();
    // Concurrent: 64 uploads in flight, confirms pipelined on one channel.
    let n_conc = 2000u32;
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    for n in n_seq..n_seq + n_conc {
        let (sink, permit) = (sink.clone(), sem.clone().acquire_owned().await.unwrap());
        tasks.spawn(async move {
            let r = sink.publish(upload(n)).await.unwrap();
            drop(permit);
            r
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), Delivered::Confirmed);
    }
    let conc_rate = f64::from(n_conc) / t.elapsed().as_secs_f64();
    eprintln!(
        "publish-with-confirm: sequential {seq_rate:.0}/s, 64 in flight {conc_rate:.0}/s (debug build)"
    );
    let total = n_seq + n_conc;
    assert_eq!(sink.stats().confirmed, u64::from(total));
    assert_eq!(sink.stats().spooled, 0);

    let got = drain_queue(&url1, &cfg.upload_queue).await;
    assert_eq!(got.len(), total as usize, "exactly the published messages");
    let keys: BTreeSet<String> = got.iter().map(|g| g.key.clone()).collect();
    let expect: BTreeSet<String> = (0..total).map(|n| upload(n).dedup_key()).collect();
    assert_eq!(keys, expect);
    for g in &got {
        let n: u32 = g.key.split(':').nth(2).unwrap().parse().unwrap();
        let u = upload(n);
        assert_eq!(g.epoch, format!("{:016x}", u.upload_epoch));
        assert_eq!(g.message_id, g.key);
        assert_eq!(g.data, u.payload.to_vec());
        assert_eq!(g.routing_key, format!("upload.{}", u.topic));
        assert!(g.persistent && !g.from_spool);
    }
    sink.shutdown().await;
    delete_topology(&url1, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_spool_while_no_node_is_healthy_then_drain_in_order() {
    let _serial = RABBIT_NODES.lock().await;
    let (url1, _) = urls();
    let cfg = config("spool");
    let dir = tempfile::tempdir().unwrap();
    let spool = spool(dir.path());
    // A node that refuses connections (nothing listens there).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("amqp://guest:guest@{}/%2f", l.local_addr().unwrap())
    };
    let (tx, nodes) = static_nodes(vec![dead.clone()]);
    let sink = RabbitUploadSink::start(cfg.clone(), nodes, spool.clone(), Metrics::new())
        .await
        .unwrap();
    for n in 0..50 {
        assert_eq!(sink.publish(upload(n)).await.unwrap(), Delivered::Spooled);
    }
    // Nothing healthy at all: still spooled.
    tx.send(vec![]).unwrap();
    for n in 50..60 {
        assert_eq!(sink.publish(upload(n)).await.unwrap(), Delivered::Spooled);
    }
    assert!(sink.has_backlog());
    assert_eq!(spool.head().await.unwrap(), 60);

    // A node comes back: the forwarder drains in order; new uploads queue behind the backlog.
    let t = Instant::now();
    tx.send(vec![dead, url1.clone()]).unwrap();
    wait_until("drain", Duration::from_secs(30), || {
        sink.stats().forwarded == 60 && !sink.has_backlog()
    })
    .await;
    eprintln!("spool drain: 60 uploads in {:?}", t.elapsed());
    assert_eq!(
        spool
            .consumer_cursor(broker::uploads::publisher::SPOOL_CONSUMER)
            .await
            .unwrap(),
        60,
        "cursor persisted after confirms"
    );
    assert_eq!(
        sink.publish(upload(60)).await.unwrap(),
        Delivered::Confirmed
    );

    let got = drain_queue(&url1, &cfg.upload_queue).await;
    let order: Vec<String> = got.iter().map(|g| g.key.clone()).collect();
    let expect: Vec<String> = (0..61).map(|n| upload(n).dedup_key()).collect();
    assert_eq!(
        order, expect,
        "spool published in order, then the direct one"
    );
    assert!(got[..60].iter().all(|g| g.from_spool && g.persistent));
    // The spool kept each upload's epoch: the forwarded headers carry it.
    for (n, g) in got.iter().enumerate() {
        assert_eq!(g.epoch, format!("{:016x}", upload(n as u32).upload_epoch));
    }
    assert!(!got[60].from_spool);
    sink.shutdown().await;
    delete_topology(&url1, &cfg).await;
}

/// A device that restarts reuses its upload ids; its new boot's epoch keeps the keys apart: the
/// queue holds every genuine reading under its own `dedup_key`
/// (`<device id>:<epoch hex>:<upload id>`), with the epoch also in the `upload_epoch` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_two_boots_with_the_same_ids_get_distinct_dedup_keys() {
    let _serial = RABBIT_NODES.lock().await;
    let (url1, _) = urls();
    let cfg = config("epochs");
    let dir = tempfile::tempdir().unwrap();
    let (_tx, nodes) = static_nodes(vec![url1.clone()]);
    let sink = RabbitUploadSink::start(cfg.clone(), nodes, spool(dir.path()), Metrics::new())
        .await
        .unwrap();
    let device = Address::device(4242);
    let boots = [0x0000_0000_0000_0001_u64, 0xdead_beef_0000_0002];
    for epoch in boots {
        for id in 1..=3u32 {
            let up = Upload {
                device,
                upload_epoch: epoch,
                upload_id: id,
                topic: "power".into(),
                payload: Bytes::from(format!("{epoch:x}/{id}")),
                received_at_ms: 1_700_000_000_000,
            };
            assert_eq!(sink.publish(up).await.unwrap(), Delivered::Confirmed);
        }
    }
    let got = drain_queue(&url1, &cfg.upload_queue).await;
    let keys: Vec<&str> = got.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "4242:0000000000000001:1",
            "4242:0000000000000001:2",
            "4242:0000000000000001:3",
            "4242:deadbeef00000002:1",
            "4242:deadbeef00000002:2",
            "4242:deadbeef00000002:3",
        ]
    );
    let epochs: Vec<&str> = got.iter().map(|g| g.epoch.as_str()).collect();
    assert_eq!(
        epochs,
        [
            "0000000000000001",
            "0000000000000001",
            "0000000000000001",
            "deadbeef00000002",
            "deadbeef00000002",
            "deadbeef00000002",
        ]
    );
    assert!(got.iter().all(|g| g.message_id == g.key));
    sink.shutdown().await;
    delete_topology(&url1, &cfg).await;
}

/// Starts node 1's app again when dropped (also when the test panics).
struct StartAppOnDrop(String);

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.0, "start_app"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_app_mid_stream_fails_over_without_losing_confirmed_uploads() {
    let _serial = RABBIT_NODES.lock().await;
    let (url1, url2) = urls();
    let node1 = services()["RABBITMQ_1_NODE"].clone();
    let cfg = config("failover");
    let dir = tempfile::tempdir().unwrap();
    let (_tx, nodes) = static_nodes(vec![url1.clone(), url2.clone()]);
    let sink = RabbitUploadSink::start(cfg.clone(), nodes, spool(dir.path()), Metrics::new())
        .await
        .unwrap();
    // Declare the topology on node 2 up front so it is there when the publisher switches.
    assert_eq!(sink.publish(upload(0)).await.unwrap(), Delivered::Confirmed);
    assert_eq!(sink.current_node().await.as_deref(), Some(url1.as_str()));

    let acked: Arc<Mutex<Vec<(u32, Delivered)>>> = Arc::default();
    // The publisher runs until the test has seen the failover and 200 uploads after it, so the
    // stop lands mid-stream however fast this machine publishes.
    let stop_publishing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (sink, acked, stop) = (sink.clone(), acked.clone(), stop_publishing.clone());
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for n in 1..=1_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (sink, acked) = (sink.clone(), acked.clone());
                tasks.spawn(async move {
                    let d = sink.publish(upload(n)).await.unwrap();
                    acked.lock().unwrap().push((n, d));
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
    wait_until(
        "500 uploads before the stop",
        Duration::from_secs(30),
        || acked.lock().unwrap().len() >= 500,
    )
    .await;
    let _restart = StartAppOnDrop(node1.clone());
    let t = Instant::now();
    let out = Command::new("rabbitmqctl")
        .args(["-n", &node1, "stop_app"])
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "stop_app: {out:?}");
    eprintln!("stop_app took {:?}", t.elapsed());
    wait_until("the publisher fails over", Duration::from_secs(60), || {
        sink.stats().failovers >= 1
    })
    .await;
    let at_failover = acked.lock().unwrap().len();
    wait_until(
        "200 uploads after the failover",
        Duration::from_secs(60),
        || acked.lock().unwrap().len() >= at_failover + 200,
    )
    .await;
    stop_publishing.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    let stats = sink.stats();
    eprintln!("failover run: {stats:?}");
    assert!(stats.failovers >= 1, "the publisher left node 1");
    assert_eq!(sink.current_node().await.as_deref(), Some(url2.as_str()));
    wait_until("spool drained", Duration::from_secs(30), || {
        !sink.has_backlog()
    })
    .await;
    drop(_restart);
    let restarted = Instant::now();
    // Node 1 is back: read both nodes' queues (node 1's durable queue kept its messages).
    let mut got = Vec::new();
    loop {
        match Connection::connect(&url1, ConnectionProperties::default()).await {
            Ok(c) => {
                let _ = c.close(200, "probe".into()).await;
                break;
            }
            Err(_) if restarted.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("node 1 did not come back: {e}"),
        }
    }
    got.extend(drain_queue(&url1, &cfg.upload_queue).await);
    let on1 = got.len();
    got.extend(drain_queue(&url2, &cfg.upload_queue).await);
    let keys: BTreeSet<String> = got.iter().map(|g| g.key.clone()).collect();
    let duplicates = got.len() - keys.len();
    eprintln!(
        "after failover: {on1} on node 1, {} on node 2, {duplicates} duplicates dropped by key",
        got.len() - on1
    );
    let acked = acked.lock().unwrap().clone();
    let published = acked.len();
    assert!(
        published >= 700,
        "500 before and 200 after the stop: {published}"
    );
    for (n, _) in &acked {
        assert!(keys.contains(&upload(*n).dedup_key()), "upload {n} lost");
    }
    assert!(keys.contains(&upload(0).dedup_key()));
    assert_eq!(keys.len(), published + 1, "nothing unexpected");
    sink.shutdown().await;
    delete_topology(&url1, &cfg).await;
    delete_topology(&url2, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_consumer_acks_after_callback_and_requeues_on_error() {
    let _serial = RABBIT_NODES.lock().await;
    let (url1, url2) = urls();
    let cfg = config("push");
    let seen: Arc<Mutex<Vec<Target>>> = Arc::default();
    let failures = Arc::new(AtomicU64::new(0));
    let (_tx, nodes) = static_nodes(vec![url1.clone(), url2.clone()]);
    let consumer = {
        let (seen, failures) = (seen.clone(), failures.clone());
        PushConsumer::start(cfg.clone(), nodes, Metrics::new(), move |p| {
            let (seen, failures) = (seen.clone(), failures.clone());
            async move {
                // The first delivery of the group push fails once: it must come back.
                if p.target == Target::Group("kitchen".into())
                    && failures.fetch_add(1, Ordering::SeqCst) == 0
                {
                    return Err(PushFailure::Transient("router busy".into()));
                }
                seen.lock().unwrap().push(p.target);
                Ok(())
            }
        })
    };
    // Published as a backend would, once the consumers' queues are bound on both nodes.
    let bodies: [(&String, &'static [u8]); 4] = [
        (
            &url1,
            br#"{"target":{"terminal":{"kind":"device","id":7}},"text":"on"}"#,
        ),
        (
            &url2,
            br#"{"target":{"group":"kitchen"},"payload":"AAE=","ttl_secs":30}"#,
        ),
        (&url2, br#"{"target":"all_phones","text":"hi"}"#),
        (&url1, b"not json"),
    ];
    for (url, body) in bodies {
        publish_push(url, &cfg, body).await;
    }
    // Three handled and the poison one rejected; on a timeout the message says what arrived
    // and how the consumer counted it (acked, requeued, rejected).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(seen.lock().unwrap().len() == 3 && consumer.counts().2 == 1) {
        assert!(
            Instant::now() < deadline,
            "three pushes handled and one rejected within 30 s: seen {:?}, counts {:?}, \
             transient failures {}",
            seen.lock().unwrap(),
            consumer.counts(),
            failures.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut targets: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|t| format!("{t:?}"))
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            "AllPhones".to_string(),
            "Group(\"kitchen\")".into(),
            format!("{:?}", Target::Terminal(Address::device(7))),
        ]
    );
    assert_eq!(consumer.counts(), (3, 1, 1), "(acked, requeued, rejected)");
    consumer.shutdown().await;
    // Nothing left unacknowledged on either node.
    for url in [&url1, &url2] {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                cfg.push_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(q.message_count(), 0);
        let _ = conn.close(200, "done".into()).await;
        delete_topology(url, &cfg).await;
    }
}

/// Publishes `body` to the push exchange on `url` as a backend would, once the consumer has
/// bound the push queue there (retries until then, up to 20 s).
async fn publish_push(url: &str, cfg: &RabbitConfig, body: &[u8]) {
    publish_when_routed(
        url,
        &cfg.push_exchange,
        "backend",
        body,
        Duration::from_secs(20),
    )
    .await;
}

/// Poison pushes (undecodable, or refused by the router as permanent) are dead-lettered once
/// with their reason and counted; the valid pushes around them are all delivered; nothing is
/// left in the push queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_pushes_go_to_the_dead_letter_queue_and_valid_ones_flow() {
    let _serial = RABBIT_NODES.lock().await;
    let (url1, _) = urls();
    let cfg = config("poison");
    let metrics = Metrics::new();
    let seen: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let (_tx, nodes) = static_nodes(vec![url1.clone()]);
    let consumer = {
        let seen = seen.clone();
        PushConsumer::start(cfg.clone(), nodes, metrics.clone(), move |p| {
            let seen = seen.clone();
            async move {
                // Stands in for the router: id 0 is an invalid address (a permanent refusal).
                if p.target == Target::Terminal(Address::device(0)) {
                    return Err(PushFailure::Permanent {
                        reason: "bad_address",
                        detail: "device id 0".into(),
                    });
                }
                seen.lock().unwrap().push(p.payload);
                Ok(())
            }
        })
    };
    // The series exist before the first poison message.
    assert!(
        metrics
            .render()
            .contains("broker_push_rejected_total{reason=\"decode\"} 0"),
        "{}",
        metrics.render()
    );
    let garbage: [&[u8]; 4] = [
        b"not json",
        b"\xff\xfe",
        br#"{"target":"everyone","payload":"!!"}"#,
        br#"{"target":{"terminal":{"kind":"device","id":0}},"text":"zero"}"#,
    ];
    let valid = 20usize;
    for i in 0..valid {
        let body =
            format!(r#"{{"target":{{"terminal":{{"kind":"device","id":7}}}},"text":"v{i}"}}"#);
        publish_push(&url1, &cfg, body.as_bytes()).await;
        if i % 5 == 0 {
            publish_push(&url1, &cfg, garbage[i / 5]).await;
        }
    }
    wait_until(
        "valid pushes delivered, poison rejected",
        // Generous: this may run right after a test restarted node 1, which then takes a while to
        // serve its queues again.
        Duration::from_secs(60),
        || seen.lock().unwrap().len() == valid && consumer.counts().2 == garbage.len() as u64,
    )
    .await;
    let got: BTreeSet<Bytes> = seen.lock().unwrap().iter().cloned().collect();
    let want: BTreeSet<Bytes> = (0..valid).map(|i| Bytes::from(format!("v{i}"))).collect();
    assert_eq!(got, want, "every valid push delivered once");
    assert_eq!(
        consumer.counts(),
        (valid as u64, 0, garbage.len() as u64),
        "(acked, requeued, rejected)"
    );
    let text = metrics.render();
    for line in [
        "broker_pushes_consumed_total{result=\"dead_lettered\"} 4",
        "broker_pushes_consumed_total{result=\"acked\"} 20",
        "broker_push_rejected_total{reason=\"decode\"} 3",
        "broker_push_rejected_total{reason=\"bad_address\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    consumer.shutdown().await;

    // The dead-letter queue holds exactly the poison bodies, each with its reason.
    let conn = Connection::connect(&url1, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut dead: Vec<(Vec<u8>, Option<String>)> = Vec::new();
    while let Some(m) = ch
        .basic_get(
            cfg.push_dead_letter_queue.as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .unwrap()
    {
        let d = m.delivery;
        let h = d.properties.headers().clone().unwrap_or_default();
        dead.push((d.data.clone(), header_str(&h, REJECT_REASON_HEADER)));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    dead.sort();
    let mut want: Vec<(Vec<u8>, Option<String>)> = garbage
        .iter()
        .map(|g| {
            let reason = if g.starts_with(br#"{"target":{"terminal"#) {
                "bad_address"
            } else {
                "decode"
            };
            (g.to_vec(), Some(reason.to_string()))
        })
        .collect();
    want.sort();
    assert_eq!(dead, want);
    let q = ch
        .queue_declare(
            cfg.push_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0, "nothing left in the push queue");
    let _ = conn.close(200, "done".into()).await;
    delete_topology(&url1, &cfg).await;
}
