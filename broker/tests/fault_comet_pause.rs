//! Fault: a comet frozen with SIGSTOP for longer than its ZooKeeper session, then resumed with
//! SIGCONT (feature `services-tests`; run:
//! `cargo test -p broker --features services-tests --test fault_comet_pause -- --nocapture`).
//!
//! Two comets run as `broker comet` child processes (signalled only by their own PIDs) and a
//! msgbus runs in process, all on 127.0.0.1 port 0 over the shared Redis, ZooKeeper and RabbitMQ
//! of `cargo xtask services up`, under names unique to the run. The session timeout is
//! [`SESSION_TIMEOUT`], the smallest the development ZooKeeper grants (2 x tickTime).
//!
//! Pass criteria (docs/operations.md, "A comet that stops answering"):
//! * within [`SESSION_TIMEOUT`] + [`GRACE`] of the SIGSTOP the frozen comet is gone from the
//!   msgbus's discovery view and from every lookup answer, and the online registry no longer
//!   names it for its device;
//! * a push made then is stored, not routed to the frozen comet: the device, logging in to the
//!   other comet as its SDK would after the lookup, gets it once;
//! * after SIGCONT the comet registers again (it is back in the msgbus's view within
//!   [`BACK_WITHIN`]), its old session of the device is ended (`REPLACED`) instead of serving on
//!   the registration it lost, that old session gets none of the pushes made afterwards, and the
//!   registry names only the comet the device moved to;
//! * the resumed comet serves again: a new device logs in to it and gets a push routed to it.
#![cfg(feature = "services-tests")]

mod cluster_support;
mod comet_support;
mod services_env;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker::cluster::ClusterNode;
use broker::discovery::Role;
use broker::roles::start_msgbus;
use cluster_support::*;
use comet_support::*;
use serde_json::json;
use shared_protocol::codes::Code;

/// The comets' ZooKeeper session timeout (the development server's minimum).
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// Slack on top of the session timeout for ZooKeeper's expiry tick and the watch event.
const GRACE: Duration = Duration::from_secs(4);
/// How long after SIGCONT the comet must be registered again.
const BACK_WITHIN: Duration = Duration::from_secs(15);
/// The device on the comet that is frozen.
const MOVER: u32 = 21;
/// A device that logs in to the comet after it resumed.
const NEWCOMER: u32 = 22;

/// The lookup answer for device `id`: (comet id, UDP endpoint), primary first.
async fn lookup(bus: &ClusterNode, id: u32) -> Vec<(String, String)> {
    let (s, v) = api(
        bus,
        reqwest::Method::GET,
        &format!("/v1/nodes/lookup?kind=device&id={id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "lookup: {v}");
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["udp"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The comets the online registry names for device `id`.
async fn registered(bus: &ClusterNode, id: u32) -> Vec<String> {
    registered_nodes(bus, "device", id).await
}

async fn push(bus: &ClusterNode, id: u32, text: &str) -> u64 {
    push_text(bus, json!({"terminal": {"kind": "device", "id": id}}), text)
        .await
        .expect("push answered 200")
}

fn in_view(bus: &ClusterNode, comet: &str) -> bool {
    bus.view.borrow().get(Role::Comet, comet).is_some()
}

/// Polls `probe` every 100 ms until it is true; panics naming `what` after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !probe().await {
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.elapsed()
}

/// Payloads delivered to `dev` within `wait`.
async fn payloads(dev: &mut Device, wait: Duration) -> Vec<Vec<u8>> {
    device_delivers(dev, wait)
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_comet_frozen_past_its_zookeeper_session_gets_no_routes_and_re_registers_on_resume() {
    let run = Run::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut comets = BTreeMap::new();
    for (i, name) in ["comet-x", "comet-y"].into_iter().enumerate() {
        comets.insert(
            name,
            CometProc::spawn(&run, dirs[i].path(), name, SESSION_TIMEOUT),
        );
    }
    let cfg = run.node_config(dirs[2].path(), "msgbus-1");
    let bus = start_msgbus(&cfg).await.unwrap();
    wait_linked(&[&bus], 2, Duration::from_secs(30)).await;

    // The device logs in to the comet lookup names first; that comet is the one frozen.
    let nodes = lookup(&bus, MOVER).await;
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let (frozen, frozen_udp) = nodes[0].clone();
    let (other, other_udp) = nodes[1].clone();
    let mut old = login(Wire::udp(frozen_udp.parse().unwrap()).await, MOVER, 0)
        .await
        .expect("login on the comet to be frozen");
    let first = push(&bus, MOVER, "before").await;
    assert_eq!(
        payloads(&mut old, Duration::from_millis(800)).await,
        vec![b"before".to_vec()]
    );
    assert_eq!(registered(&bus, MOVER).await, vec![frozen.clone()]);

    // SIGSTOP: nothing may route to it once its session is gone.
    comets[frozen.as_str()].signal("STOP");
    let stopped = Instant::now();
    let gone = eventually(
        "the frozen comet left the msgbus's view",
        SESSION_TIMEOUT + GRACE,
        || std::future::ready(!in_view(&bus, &frozen)),
    )
    .await;
    let not_registered = eventually(
        "the registry stopped naming the frozen comet",
        SESSION_TIMEOUT + GRACE,
        || async { registered(&bus, MOVER).await.is_empty() },
    )
    .await;
    let now = lookup(&bus, MOVER).await;
    assert_eq!(now.len(), 1, "lookup while frozen: {now:?}");
    assert_eq!(now[0].0, other, "lookup names only the live comet");
    let meanwhile = push(&bus, MOVER, "meanwhile").await;
    assert!(meanwhile > first);
    eprintln!(
        "{frozen} frozen: out of the view after {gone:?}, out of the registry after \
         {not_registered:?} more"
    );

    // The device, cut off from the frozen comet, follows the lookup to the other one.
    let mut moved = login(Wire::udp(other_udp.parse().unwrap()).await, MOVER, first)
        .await
        .expect("login on the live comet");
    assert_eq!(
        payloads(&mut moved, Duration::from_millis(1500)).await,
        vec![b"meanwhile".to_vec()],
        "the push made while frozen is delivered once, on the live comet"
    );
    let frozen_for = stopped.elapsed();

    // SIGCONT: back in discovery, and its old session of the device ends instead of serving.
    comets[frozen.as_str()].signal("CONT");
    let resumed = Instant::now();
    eventually("the resumed comet registered again", BACK_WITHIN, || {
        std::future::ready(in_view(&bus, &frozen))
    })
    .await;
    let back = resumed.elapsed();
    let mut kicked = None;
    let mut stale_delivers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(g) = old
        .next_event(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        match g {
            Got::Kick { reason } => {
                kicked = Some(reason);
                break;
            }
            Got::Deliver { payload, .. } => stale_delivers.push(payload),
            _ => {}
        }
    }
    assert_eq!(
        kicked,
        Some(Code::REPLACED),
        "the resumed comet ends the session whose registration it lost"
    );
    assert!(
        stale_delivers.is_empty(),
        "the old session got deliveries: {stale_delivers:?}"
    );
    let after = push(&bus, MOVER, "after").await;
    assert!(after > meanwhile);
    assert_eq!(
        payloads(&mut moved, Duration::from_millis(1000)).await,
        vec![b"after".to_vec()]
    );
    assert_eq!(registered(&bus, MOVER).await, vec![other.clone()]);

    // The resumed comet serves again: a new device on it gets a push routed there.
    let frozen_addr = bus
        .view
        .borrow()
        .get(Role::Comet, &frozen)
        .and_then(|n| n.addr.udp.clone())
        .expect("the resumed comet's UDP endpoint");
    let mut newcomer = login(Wire::udp(frozen_addr.parse().unwrap()).await, NEWCOMER, 0)
        .await
        .expect("login on the resumed comet");
    eventually(
        "the registry names the resumed comet",
        Duration::from_secs(5),
        || async { registered(&bus, NEWCOMER).await == vec![frozen.clone()] },
    )
    .await;
    push(&bus, NEWCOMER, "welcome back").await;
    assert_eq!(
        payloads(&mut newcomer, Duration::from_millis(1000)).await,
        vec![b"welcome back".to_vec()]
    );
    eprintln!(
        "frozen for {frozen_for:?}; registered again {back:?} after SIGCONT; old session \
         ended REPLACED"
    );

    bus.stop().await;
    drop(comets);
    cleanup_rabbit(&run.env["RABBITMQ_1_AMQP_URL"], &cfg).await;
    run.clean_redis().await;
}
