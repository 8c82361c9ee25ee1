//! One order per terminal across the cluster (docs/protocol.md section 4, "Order";
//! docs/deployment.md, "Delivery order"), on the real services from `cargo xtask services up`
//! (feature `services-tests`): messages to one terminal from different sources -- two msgbus
//! nodes storing pushes, and a device on another comet sending -- reach each session in
//! strictly increasing `msg_id` order, and merged they are exactly what was acknowledged.
//!
//! Two comets and two msgbus nodes run in process on 127.0.0.1 port 0.
//! Run: `cargo test -p broker --features services-tests --test cluster_order -- --nocapture`.
//! Every test uses its own Redis key prefix and znode root, deleted at the end.
#![cfg(feature = "services-tests")]

mod cluster_support;
mod comet_support;
mod services_env;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::cluster::ClusterNode;
use broker::config::Config;
use broker::terminal::Address;
use cluster_support::*;
use comet_support::*;
use serde_json::json;
use shared_protocol::codes::Code;
use shared_protocol::frame::Body;

/// Pushes per msgbus node.
const PUSHES: usize = 40;
/// Sends from the device on the other comet.
const SENDS: usize = 20;
/// The device that receives the pushes (on comet A; moves to B in the second test).
const DEV: u32 = 60;
/// The device on comet B that sends to the phone.
const SENDER: u32 = 61;
/// The phone (on comet A) that receives the pushes and the sends.
const PHONE: u32 = 7;

/// Comets `comet-a`, `comet-b` and msgbus nodes `msgbus-1`, `msgbus-2` over this run's names.
struct Cluster {
    run: Run,
    a: ClusterNode,
    b: ClusterNode,
    buses: [ClusterNode; 2],
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(tweak: impl Fn(&mut Config)) -> Cluster {
        let n = Nodes::start(&["comet-a", "comet-b"], &["msgbus-1", "msgbus-2"], tweak).await;
        let [a, b]: [ClusterNode; 2] = n.comets.try_into().ok().expect("two comets");
        Cluster {
            run: n.run,
            a,
            b,
            buses: n.buses.try_into().ok().expect("two msgbus nodes"),
            _dirs: n.dirs,
        }
    }

    async fn stop(self) {
        let [bus1, bus2] = self.buses;
        stop_all(&self.run, [self.a, self.b, bus1, bus2]).await;
    }

    /// Pushes `text` to the device and the phone through msgbus `bus`; the id when answered 200.
    async fn push(&self, bus: usize, text: &str) -> Option<u64> {
        let to = json!({"list": [
            {"kind": "device", "id": DEV},
            {"kind": "phone", "id": PHONE},
        ]});
        push_text(&self.buses[bus], to, text).await
    }

    /// The comets the online registry names for `who` (asked through msgbus 1).
    async fn nodes_of(&self, who: &str, id: u32) -> Vec<String> {
        registered_nodes(&self.buses[0], who, id).await
    }
}

/// What one session saw: (msg_id, payload) in arrival order.
type Seen = Arc<Mutex<Vec<(u64, String)>>>;

/// Collects a device session's Delivers until `quiet` passes without one, or until its Kick.
fn collect_device(
    mut dev: Device,
    quiet: Duration,
    seen: Seen,
) -> tokio::task::JoinHandle<Option<Code>> {
    tokio::spawn(async move {
        loop {
            match dev.next_event(quiet).await {
                Some(Got::Deliver {
                    msg_id, payload, ..
                }) => seen
                    .lock()
                    .unwrap()
                    .push((msg_id, String::from_utf8(payload).unwrap())),
                Some(Got::Kick { reason }) => return Some(reason),
                Some(_) => {}
                None => return None,
            }
        }
    })
}

/// Collects (and acknowledges) the phone's delivers until `quiet` passes without a message.
fn collect_phone(mut app: App, quiet: Duration, seen: Seen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(v) = app.recv_skip_presence(quiet).await {
            if v["type"] != "deliver" {
                eprintln!("phone got {v}");
            }
            if v["type"] == "deliver" {
                app.send(json!({"type": "ack", "msg_id": v["msg_id"]}))
                    .await;
                let p = B64.decode(v["payload"].as_str().unwrap()).unwrap();
                seen.lock()
                    .unwrap()
                    .push((v["msg_id"].as_u64().unwrap(), String::from_utf8(p).unwrap()));
            }
        }
    })
}

/// Device [`SENDER`] sends [`SENDS`] messages to the phone, 5 ms apart, reading what comes
/// back; returns the Errors it got (none expected).
fn sender(mut dev: Device) -> tokio::task::JoinHandle<Vec<Got>> {
    tokio::spawn(async move {
        let mut errors = Vec::new();
        for i in 0..SENDS {
            let text = format!("s{i}");
            dev.send(Body::Send {
                to: Address::phone(PHONE),
                payload: text.as_bytes(),
            })
            .await;
            while let Some(g) = dev.next_event(Duration::from_millis(5)).await {
                if matches!(g, Got::Error { .. }) {
                    errors.push(g);
                }
            }
        }
        while let Some(g) = dev.next_event(Duration::from_millis(500)).await {
            if matches!(g, Got::Error { .. }) {
                errors.push(g);
            }
        }
        errors
    })
}

/// Both msgbus nodes push [`PUSHES`] each, concurrently; returns the payloads answered 200.
async fn push_from_both(c: &Arc<Cluster>) -> BTreeSet<String> {
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let tasks: Vec<_> = (0..2)
        .map(|bus| {
            let (c, acked) = (c.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0..PUSHES {
                    let text = format!("b{}-{i}", bus + 1);
                    if c.push(bus, &text).await.is_some() {
                        acked.lock().unwrap().insert(text);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    acked.lock().unwrap().clone()
}

/// Asserts one session's ids are strictly increasing; returns them.
fn check_session(name: &str, seen: &[(u64, String)]) -> Vec<u64> {
    let ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
    let steps_down = ids.windows(2).filter(|w| w[0] >= w[1]).count();
    assert!(
        strictly_increasing(&ids),
        "{name}: {steps_down} steps not increasing: {ids:?}"
    );
    ids
}

/// Merges sessions' deliveries by msg_id (a redelivery to a new session counts once) and
/// asserts the merge is in order and carries exactly `expected` payloads, each once.
fn check_merged(name: &str, sessions: &[&[(u64, String)]], expected: &BTreeSet<String>) {
    let mut by_id: BTreeMap<u64, String> = BTreeMap::new();
    let mut merged = Vec::new();
    for s in sessions {
        for (id, p) in s.iter() {
            if let Some(old) = by_id.insert(*id, p.clone()) {
                assert_eq!(&old, p, "{name}: id {id} carried two payloads");
            } else {
                merged.push(*id);
            }
        }
    }
    assert!(strictly_increasing(&merged), "{name} merged: {merged:?}");
    let payloads: Vec<&String> = by_id.values().collect();
    let distinct: BTreeSet<String> = payloads.iter().map(|p| (*p).clone()).collect();
    assert_eq!(
        distinct.len(),
        payloads.len(),
        "{name}: a payload under two ids"
    );
    assert_eq!(&distinct, expected, "{name}: exactly what was acknowledged");
}

async fn setup(c: &Cluster) -> (Device, App, Device) {
    let (s, v) = api(
        &c.buses[0],
        reqwest::Method::PUT,
        &format!("/v1/bindings/{PHONE}/{SENDER}"),
        None,
    )
    .await;
    assert!((200..300).contains(&s), "{s} {v}");
    let dev = login(Wire::udp(c.a.running.comet.udp).await, DEV, 0)
        .await
        .unwrap();
    let (phone, welcome) = App::login(
        &format!("ws://{}/", c.a.running.comet.app_ws),
        Address::phone(PHONE),
        0,
    )
    .await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let sender = login(Wire::udp(c.b.running.comet.udp).await, SENDER, 0)
        .await
        .unwrap();
    let t = Instant::now();
    while c.nodes_of("device", DEV).await != ["comet-a"]
        || c.nodes_of("phone", PHONE).await != ["comet-a"]
        || c.nodes_of("device", SENDER).await != ["comet-b"]
    {
        assert!(t.elapsed() < Duration::from_secs(10), "online registry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (dev, phone, sender)
}

fn sends() -> BTreeSet<String> {
    (0..SENDS).map(|i| format!("s{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_msgbus_nodes_and_a_send_from_another_comet_reach_each_terminal_in_id_order() {
    let c = Arc::new(Cluster::start(|_| {}).await);
    let (dev, phone, sending) = setup(&c).await;
    let (seen_dev, seen_phone): (Seen, Seen) = Default::default();
    let quiet = Duration::from_secs(3);
    let dev_task = collect_device(dev, quiet, seen_dev.clone());
    let phone_task = collect_phone(phone, quiet, seen_phone.clone());
    let send_task = sender(sending);
    let acked = push_from_both(&c).await;
    let errors = send_task.await.unwrap();
    assert_eq!(dev_task.await.unwrap(), None, "the device was never kicked");
    phone_task.await.unwrap();
    assert!(errors.is_empty(), "every Send was stored: {errors:?}");

    let seen_dev = seen_dev.lock().unwrap().clone();
    let seen_phone = seen_phone.lock().unwrap().clone();
    eprintln!(
        "{} pushes answered 200; device saw {}, phone {}",
        acked.len(),
        seen_dev.len(),
        seen_phone.len()
    );
    assert_eq!(acked.len(), 2 * PUSHES, "every push answered 200");
    check_session("device", &seen_dev);
    check_session("phone", &seen_phone);
    check_merged("device", &[&seen_dev], &acked);
    let mut to_phone = acked.clone();
    to_phone.extend(sends());
    check_merged("phone", &[&seen_phone], &to_phone);
    match Arc::try_unwrap(c) {
        Ok(c) => c.stop().await,
        Err(_) => panic!("cluster still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_while_the_device_moves_between_comets() {
    const MOVE_AFTER: usize = 20;
    let c = Arc::new(Cluster::start(|_| {}).await);
    let (dev, phone, sending) = setup(&c).await;
    let (seen_a, seen_b, seen_phone): (Seen, Seen, Seen) = Default::default();
    let quiet = Duration::from_secs(3);
    let a_task = collect_device(dev, Duration::from_secs(20), seen_a.clone());
    let phone_task = collect_phone(phone, quiet, seen_phone.clone());
    let send_task = sender(sending);
    let pushes = {
        let c = c.clone();
        tokio::spawn(async move { push_from_both(&c).await })
    };
    // Mid-stream the device moves to comet B, reporting the highest id it has.
    wait_until(
        "comet A's session saw the first pushes",
        Duration::from_secs(20),
        || seen_a.lock().unwrap().len() >= MOVE_AFTER,
    )
    .await;
    let since = seen_a.lock().unwrap().last().unwrap().0;
    let on_b = login(Wire::udp(c.b.running.comet.udp).await, DEV, since)
        .await
        .unwrap();
    let b_task = collect_device(on_b, quiet, seen_b.clone());
    let acked = pushes.await.unwrap();
    let errors = send_task.await.unwrap();
    assert_eq!(a_task.await.unwrap(), Some(Code::REPLACED));
    assert_eq!(b_task.await.unwrap(), None, "comet B's session stays");
    phone_task.await.unwrap();
    assert!(errors.is_empty(), "every Send was stored: {errors:?}");

    let (seen_a, seen_b) = (
        seen_a.lock().unwrap().clone(),
        seen_b.lock().unwrap().clone(),
    );
    let seen_phone = seen_phone.lock().unwrap().clone();
    eprintln!(
        "{} pushes answered 200; since-id {since}; comet A's session saw {}, comet B's {}, phone {}",
        acked.len(),
        seen_a.len(),
        seen_b.len(),
        seen_phone.len()
    );
    assert_eq!(acked.len(), 2 * PUSHES, "every push answered 200");
    check_session("device on A", &seen_a);
    let on_b = check_session("device on B", &seen_b);
    assert!(
        on_b.first().is_some_and(|f| *f > since),
        "comet B starts after the since-id {since}: {on_b:?}"
    );
    check_merged("device", &[&seen_a, &seen_b], &acked);
    let mut to_phone = acked.clone();
    to_phone.extend(sends());
    check_merged("phone", &[&seen_phone], &to_phone);
    match Arc::try_unwrap(c) {
        Ok(c) => c.stop().await,
        Err(_) => panic!("cluster still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_comet_whose_stream_was_trimmed_past_its_position_replays_and_loses_nothing() {
    const MAXLEN: u64 = 5;
    const BURST: usize = 30;
    let c = Arc::new(Cluster::start(|cfg| cfg.cluster.stream_maxlen = MAXLEN).await);
    let (dev, phone, _sending) = setup(&c).await;
    let (seen_dev, seen_phone): (Seen, Seen) = Default::default();
    let quiet = Duration::from_secs(3);
    // Comet A stops reading its stream (as if it fell behind); the read in flight ends
    // within its block time.
    let hold = c.a.delivery_hold.clone().unwrap();
    hold.hold();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let dev_task = collect_device(dev, Duration::from_secs(10), seen_dev.clone());
    let phone_task = collect_phone(phone, Duration::from_secs(10), seen_phone.clone());
    let mut acked = BTreeSet::new();
    for i in 0..BURST {
        let text = format!("b1-{i}");
        assert!(c.push(0, &text).await.is_some(), "push {i} answered 200");
        acked.insert(text);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        seen_dev.lock().unwrap().is_empty() && seen_phone.lock().unwrap().is_empty(),
        "nothing is offered while comet A does not read"
    );
    let m = scrape(&c.a).await;
    assert_eq!(sample(&m, "broker_delivery_stream_missed_total"), Some(0.0));
    // It reads again: only the newest MAXLEN notices are left; the gap is counted and the
    // sessions re-read their inboxes first.
    hold.release();
    let t = Instant::now();
    while seen_dev.lock().unwrap().len() < BURST || seen_phone.lock().unwrap().len() < BURST {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "device {} and phone {} of {BURST}",
            seen_dev.lock().unwrap().len(),
            seen_phone.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(quiet).await;
    let m = scrape(&c.a).await;
    let gaps = sample(&m, r#"broker_delivery_stream_gaps_total{reason="trimmed"}"#);
    let missed = sample(&m, "broker_delivery_stream_missed_total");
    eprintln!("comet A: gaps {gaps:?}, notices missed {missed:?}");
    assert_eq!(gaps, Some(1.0), "one gap");
    assert_eq!(
        missed,
        Some((BURST as u64 - MAXLEN) as f64),
        "notices trimmed"
    );
    let (seen_dev, seen_phone) = (
        seen_dev.lock().unwrap().clone(),
        seen_phone.lock().unwrap().clone(),
    );
    check_session("device", &seen_dev);
    check_session("phone", &seen_phone);
    check_merged("device", &[&seen_dev], &acked);
    check_merged("phone", &[&seen_phone], &acked);
    assert_eq!(seen_dev.len(), BURST, "each message once: {seen_dev:?}");
    drop((dev_task, phone_task));
    match Arc::try_unwrap(c) {
        Ok(c) => c.stop().await,
        Err(_) => panic!("cluster still shared"),
    }
}
