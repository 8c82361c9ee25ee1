//! `broker client --lookup URL` in a cluster, and the rolling restart of docs/operations.md
//! walked through on the real services (feature `services-tests`; run:
//! `cargo test -p broker --features services-tests --test cluster_client_lookup -- --nocapture`
//! to see the figures).
//!
//! Two comets run as `broker comet --config F` child processes (signalled only by their own
//! PIDs) and a msgbus in process, on 127.0.0.1 port 0 over the shared Redis, ZooKeeper and
//! RabbitMQ of `cargo xtask services up`, under names unique to the run. Every client is a
//! `broker client device --ws --lookup http://<msgbus>` child process printing JSON lines.
//!
//! 1. **A comet dies.** A client for a device the lookup places on comet A connects to A, and
//!    so does a `broker client phone --lookup` placed on A. A is killed (SIGKILL). Both are
//!    online on comet B within [`MOVE_WITHIN`] (A is still listed until its ZooKeeper session
//!    expires: the clients pass to the next comet the lookup names), and a push reaches each
//!    there.
//! 2. **Rolling restart.** A is started again; once it is back in the lookup, a new client for
//!    a device placed on A connects to A (it takes new terminals). A is drained (SIGTERM, as
//!    `systemctl stop` does): it exits 0, and its client, kicked with SHUTDOWN, is online on
//!    B within [`MOVE_WITHIN`] and gets a push there. A is started again (the "upgrade") and
//!    rejoins: a third new client placed on A connects to A and gets a push.
//! 3. **The same over UDP**, where no connection drops: a `broker client device --lookup`
//!    (UDP, its default `--probe-after-ms` of 2 s) placed on A is online on B within
//!    [`UDP_MOVE_WITHIN`] after A is killed (its probe Ping draws A's ICMP "port unreachable")
//!    and after A is drained (SIGTERM, SHUTDOWN kick), and gets a push there each time. A
//!    control client on A with the probe off (`--probe-after-ms 0`) has not noticed A's death
//!    within that bound.
#![cfg(feature = "services-tests")]

mod cluster_support;
mod comet_support;
// The client child processes; it carries its own copy of `http_support`, as `comet_support` does.
#[allow(clippy::duplicate_mod)]
mod proc_support;
mod services_env;

use std::path::Path;
use std::time::{Duration, Instant};

use broker::cluster::ClusterNode;
use broker::roles::start_msgbus;
use cluster_support::{CometProc, Run, lookup_of, push_text, wait_linked};
use proc_support::Proc;
use serde_json::{Value, json};

/// The comets' ZooKeeper session timeout (the development server's minimum).
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// How soon after its comet died or was drained a client must be online on the other one.
const MOVE_WITHIN: Duration = Duration::from_secs(10);
/// How soon after its comet was killed or drained a UDP client must be online on the other
/// one: the probe's quiet spell (2 s) and the longest first reconnect pause (0.5 s), with room.
const UDP_MOVE_WITHIN: Duration = Duration::from_secs(5);
/// How long a restarted comet may take to be back in the lookup.
const BACK_WITHIN: Duration = Duration::from_secs(30);

/// The lookup answer for device `id`: (comet id, device WebSocket URL), primary first.
async fn lookup(bus: &ClusterNode, id: u32) -> Vec<(String, String)> {
    lookup_of(bus, "device", id, "ws").await
}

/// Polls `probe` every 100 ms until it answers `Some`; panics naming `what` after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return (v, t.elapsed());
        }
        assert!(t.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A device id, above `after`, that the lookup places on `comet` first (both comets listed),
/// and that comet's device WebSocket URL.
async fn device_on(bus: &ClusterNode, comet: &str, after: u32) -> (u32, String) {
    terminal_on(bus, "device", "ws", comet, after).await
}

/// A `kind` id above `after` placed on `comet` first, and that comet's endpoint `field`.
async fn terminal_on(
    bus: &ClusterNode,
    kind: &str,
    field: &str,
    comet: &str,
    after: u32,
) -> (u32, String) {
    for id in after + 1..after + 500 {
        let nodes = lookup_of(bus, kind, id, field).await;
        if nodes.len() == 2 && nodes[0].0 == comet {
            return (id, nodes[0].1.clone());
        }
    }
    panic!("no {kind} id after {after} placed on {comet}");
}

/// Starts `broker client device --id <id> --ws --lookup <bus> --json` with `config` (the
/// comets' file: it holds the fleet master key the device key is derived from).
fn client(config: &Path, bus: &ClusterNode, id: u32) -> Proc {
    let lookup = format!("http://{}", bus.running.http);
    let id = id.to_string();
    Proc::spawn(
        config,
        &[
            "client", "device", "--id", &id, "--ws", "--lookup", &lookup, "--json",
        ],
    )
}

/// Starts `broker client device --id <id> --lookup <bus> --json` (UDP) with `config`, and
/// `extra` flags.
fn udp_client(config: &Path, bus: &ClusterNode, id: u32, extra: &[&str]) -> Proc {
    let lookup = format!("http://{}", bus.running.http);
    let id = id.to_string();
    let mut args = vec![
        "client", "device", "--id", &id, "--lookup", &lookup, "--json",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(config, &args)
}

/// Starts `broker client phone --id <id> --lookup <bus> --json` with `config` (its token is
/// minted with the file's token secret).
fn phone_client(config: &Path, bus: &ClusterNode, id: u32) -> Proc {
    let lookup = format!("http://{}", bus.running.http);
    let id = id.to_string();
    Proc::spawn(
        config,
        &[
            "client", "phone", "--id", &id, "--lookup", &lookup, "--json",
        ],
    )
}

/// The next JSON line of `p` whose `event` is `event` (blocking this worker thread only).
fn next_event(p: &mut Proc, event: &str) -> Value {
    let needle = format!("\"event\":\"{event}\"");
    let line = tokio::task::block_in_place(|| p.expect(&needle));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Pushes `text` to device `id` through `bus` and waits for the client to print it.
async fn push_reaches(bus: &ClusterNode, p: &mut Proc, id: u32, text: &str) {
    push_to(bus, p, "device", id, text).await;
}

/// Pushes `text` to terminal `kind`/`id` through `bus` and waits for the client to print it.
async fn push_to(bus: &ClusterNode, p: &mut Proc, kind: &str, id: u32, text: &str) {
    let msg_id = push_text(bus, json!({"terminal": {"kind": kind, "id": id}}), text)
        .await
        .expect("push answered 200");
    let got = next_event(p, "deliver");
    assert_eq!(got["msg_id"].as_u64(), Some(msg_id), "{got}");
    assert_eq!(got["text"].as_str(), Some(text), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_follow_the_lookup_when_a_comet_dies_or_is_drained_and_it_rejoins() {
    let run = Run::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a_dir, b_dir) = (dirs[0].path(), dirs[1].path());
    let mut comet_a = CometProc::spawn(&run, a_dir, "comet-a", SESSION_TIMEOUT);
    let _comet_b = CometProc::spawn(&run, b_dir, "comet-b", SESSION_TIMEOUT);
    let bus = start_msgbus(&run.node_config(dirs[2].path(), "msgbus-1"))
        .await
        .unwrap();
    wait_linked(&[&bus], 2, Duration::from_secs(30)).await;
    let config = a_dir.join("comet.toml");

    // 1. A dies: the client moves to B through the lookup.
    let (first, a_ws) = device_on(&bus, "comet-a", 0).await;
    let b_ws = lookup(&bus, first).await[1].1.clone();
    let mut c1 = client(&config, &bus, first);
    let on = next_event(&mut c1, "connected");
    assert_eq!(on["via"].as_str(), Some(a_ws.as_str()), "{on}");
    push_reaches(&bus, &mut c1, first, "on a").await;
    // A phone placed on A too, over the app WebSocket.
    let (phone, a_app) = terminal_on(&bus, "phone", "app_ws", "comet-a", 0).await;
    let b_app = lookup_of(&bus, "phone", phone, "app_ws").await[1].1.clone();
    let mut p1 = phone_client(&config, &bus, phone);
    let on = next_event(&mut p1, "connected");
    assert_eq!(on["via"].as_str(), Some(a_app.as_str()), "{on}");
    comet_a.child.kill().unwrap();
    comet_a.child.wait().unwrap();
    let killed = Instant::now();
    let on = next_event(&mut c1, "connected");
    let moved_after_kill = killed.elapsed();
    assert_eq!(on["via"].as_str(), Some(b_ws.as_str()), "{on}");
    assert!(
        moved_after_kill < MOVE_WITHIN,
        "online on B {moved_after_kill:?} after the kill"
    );
    push_reaches(&bus, &mut c1, first, "on b after the kill").await;
    let on = next_event(&mut p1, "connected");
    let phone_moved = killed.elapsed();
    assert_eq!(on["via"].as_str(), Some(b_app.as_str()), "{on}");
    assert!(
        phone_moved < MOVE_WITHIN,
        "phone on B {phone_moved:?} after the kill"
    );
    push_to(&bus, &mut p1, "phone", phone, "phone on b").await;

    // 2. Rolling restart: A comes back and takes new terminals...
    let ((), gone) = eventually("A out of the lookup", SESSION_TIMEOUT * 4, || async {
        (lookup(&bus, first).await.len() == 1).then_some(())
    })
    .await;
    let mut comet_a = CometProc::spawn(&run, a_dir, "comet-a", SESSION_TIMEOUT);
    let ((), back) = eventually("A back in the lookup", BACK_WITHIN, || async {
        (lookup(&bus, first).await.len() == 2).then_some(())
    })
    .await;
    wait_linked(&[&bus], 2, Duration::from_secs(30)).await;
    let (second, a_ws) = device_on(&bus, "comet-a", first).await;
    let mut c2 = client(&config, &bus, second);
    let on = next_event(&mut c2, "connected");
    assert_eq!(on["via"].as_str(), Some(a_ws.as_str()), "{on}");
    push_reaches(&bus, &mut c2, second, "new on a").await;

    // ... is drained (SIGTERM) and its terminal moves to B ...
    comet_a.signal("TERM");
    let drained = Instant::now();
    let kicked = next_event(&mut c2, "reconnecting");
    assert!(
        kicked["why"]
            .as_str()
            .unwrap_or_default()
            .contains("SHUTDOWN"),
        "{kicked}"
    );
    let on = next_event(&mut c2, "connected");
    let moved_after_drain = drained.elapsed();
    assert_eq!(on["via"].as_str(), Some(b_ws.as_str()), "{on}");
    assert!(moved_after_drain < MOVE_WITHIN, "{moved_after_drain:?}");
    push_reaches(&bus, &mut c2, second, "on b after the drain").await;
    let status = tokio::task::block_in_place(|| comet_a.child.wait().unwrap());
    assert!(status.success(), "a drained comet exits 0: {status}");

    // ... is upgraded (started again) and rejoins: new terminals land on it.
    let _comet_a = CometProc::spawn(&run, a_dir, "comet-a", SESSION_TIMEOUT);
    let ((), rejoined) = eventually("A back after the drain", BACK_WITHIN, || async {
        (lookup(&bus, first).await.len() == 2).then_some(())
    })
    .await;
    wait_linked(&[&bus], 2, Duration::from_secs(30)).await;
    let (third, a_ws) = device_on(&bus, "comet-a", second).await;
    let mut c3 = client(&config, &bus, third);
    let on = next_event(&mut c3, "connected");
    assert_eq!(on["via"].as_str(), Some(a_ws.as_str()), "{on}");
    push_reaches(&bus, &mut c3, third, "new on a after the upgrade").await;

    eprintln!(
        "client online on B {moved_after_kill:?} (phone {phone_moved:?}) after A's SIGKILL; A out of the lookup \
         {gone:?} later; restarted A back in the lookup in {back:?}; client online on B \
         {moved_after_drain:?} after A's SIGTERM; A rejoined {rejoined:?} after its restart"
    );
    drop((c1, p1, c2, c3));
    bus.stop().await;
    run.clean_redis().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_udp_client_moves_through_the_lookup_within_5_s_when_its_comet_is_killed_or_drained() {
    let run = Run::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a_dir, b_dir) = (dirs[0].path(), dirs[1].path());
    let mut comet_a = CometProc::spawn(&run, a_dir, "comet-a", SESSION_TIMEOUT);
    let _comet_b = CometProc::spawn(&run, b_dir, "comet-b", SESSION_TIMEOUT);
    let bus = start_msgbus(&run.node_config(dirs[2].path(), "msgbus-1"))
        .await
        .unwrap();
    wait_linked(&[&bus], 2, Duration::from_secs(30)).await;
    let config = a_dir.join("comet.toml");
    let udp_of = |nodes: &[(String, String)], i: usize| format!("udp {}", nodes[i].1);

    // Killed: the device is idle (nothing to send) when A dies; its probe finds out.
    let (first, _) = terminal_on(&bus, "device", "udp", "comet-a", 0).await;
    let nodes = lookup_of(&bus, "device", first, "udp").await;
    let mut c1 = udp_client(&config, &bus, first, &[]);
    let on = next_event(&mut c1, "connected");
    assert_eq!(on["via"].as_str(), Some(udp_of(&nodes, 0).as_str()), "{on}");
    push_reaches(&bus, &mut c1, first, "on a").await;
    // The control: a client on A without the probe (`--probe-after-ms 0`) notices only at its
    // next heartbeat, 30 s after its login, so it must still be silent when c1 has moved.
    let (control, _) = terminal_on(&bus, "device", "udp", "comet-a", first).await;
    let mut c0 = udp_client(&config, &bus, control, &["--probe-after-ms", "0"]);
    let on = next_event(&mut c0, "connected");
    assert_eq!(on["via"].as_str(), Some(udp_of(&nodes, 0).as_str()), "{on}");
    // Idle: the delivery's acknowledgement (50 ms later) is out, nothing else is due to A.
    tokio::time::sleep(Duration::from_secs(1)).await;
    comet_a.child.kill().unwrap();
    comet_a.child.wait().unwrap();
    let killed = Instant::now();
    let why = next_event(&mut c1, "reconnecting");
    let noticed_kill = killed.elapsed();
    let why = why["why"].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains(&udp_of(&nodes, 0)) && why.contains("unreachable"),
        "the move names the dead comet and why: {why}"
    );
    let on = next_event(&mut c1, "connected");
    let moved_after_kill = killed.elapsed();
    assert_eq!(on["via"].as_str(), Some(udp_of(&nodes, 1).as_str()), "{on}");
    assert!(
        moved_after_kill < UDP_MOVE_WITHIN,
        "UDP client online on B {moved_after_kill:?} after the kill"
    );
    push_reaches(&bus, &mut c1, first, "on b after the kill").await;
    let left = UDP_MOVE_WITHIN.saturating_sub(killed.elapsed());
    let control_moved = tokio::task::block_in_place(|| c0.first_within("reconnecting", left));
    assert_eq!(
        control_moved, None,
        "without the probe the client cannot notice within {UDP_MOVE_WITHIN:?}"
    );
    drop(c0);

    // Drained: A comes back, a new UDP client lands on it, A gets SIGTERM.
    eventually("A out of the lookup", SESSION_TIMEOUT * 4, || async {
        (lookup(&bus, first).await.len() == 1).then_some(())
    })
    .await;
    let comet_a = CometProc::spawn(&run, a_dir, "comet-a", SESSION_TIMEOUT);
    eventually("A back in the lookup", BACK_WITHIN, || async {
        (lookup(&bus, first).await.len() == 2).then_some(())
    })
    .await;
    wait_linked(&[&bus], 2, Duration::from_secs(30)).await;
    let (second, _) = terminal_on(&bus, "device", "udp", "comet-a", control).await;
    let nodes = lookup_of(&bus, "device", second, "udp").await;
    let mut c2 = udp_client(&config, &bus, second, &[]);
    let on = next_event(&mut c2, "connected");
    assert_eq!(on["via"].as_str(), Some(udp_of(&nodes, 0).as_str()), "{on}");
    push_reaches(&bus, &mut c2, second, "new on a").await;
    comet_a.signal("TERM");
    let drained = Instant::now();
    let why = next_event(&mut c2, "reconnecting");
    let why = why["why"].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains(&udp_of(&nodes, 0)) && why.contains("SHUTDOWN"),
        "{why}"
    );
    let on = next_event(&mut c2, "connected");
    let moved_after_drain = drained.elapsed();
    assert_eq!(on["via"].as_str(), Some(udp_of(&nodes, 1).as_str()), "{on}");
    assert!(
        moved_after_drain < UDP_MOVE_WITHIN,
        "UDP client online on B {moved_after_drain:?} after the drain"
    );
    push_reaches(&bus, &mut c2, second, "on b after the drain").await;

    eprintln!(
        "UDP client: noticed A's SIGKILL after {noticed_kill:?}, online on B {moved_after_kill:?} \
         after it; online on B {moved_after_drain:?} after A's SIGTERM"
    );
    drop((c1, c2, comet_a));
    bus.stop().await;
    run.clean_redis().await;
}
