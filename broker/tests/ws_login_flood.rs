//! Login floods from many source addresses against the device WebSocket listener, over real
//! sockets (flooding clients bound to 127.1.x.y and 127.2.0.y, so each address is its own
//! client and the per-address limits do not stop them), while legitimate devices log in from
//! 127.0.0.1:
//!
//! * **holders** (`HOLDERS` addresses, `PER_HOLDER` connections each) open connections and
//!   never speak, and reconnect as soon as the broker closes one: together they offer more
//!   connections than `limits.max_connections`;
//! * **spammers** (`SPAMMERS` addresses) loop over upgrade, HELLO, CHALLENGE and a LOGIN sealed
//!   with the wrong key, as fast as the broker answers.
//!
//! A second test is the opposite case, a storm of prompt clients (`STORM` devices connecting
//! at once, as after a broker restart) that the broker is behind on, against a pending-handshake
//! cap far below their number: every one logs in at its first attempt and none is closed for
//! room, since each sent its upgrade at once and waits on the broker, not the other way round.
//!
//! Pass criterion of the flood, stated here and checked below: while the flood runs, at least 95% of
//! `LEGIT` devices logging in one after the other from 127.0.0.1 are in within
//! `LEGIT_WITHIN` (3 s) each, retrying at once after a refused or closed attempt as devices
//! do; and the
//! flood was real (holders were closed as pending handshakes, under
//! `broker_limit_rejections_total{limit="max_pending_handshakes"}`, and the spammers' LOGINs
//! were checked and refused).

mod comet_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use broker::terminal::{Address, IdProfile};
use comet_support::*;
use shared_protocol::handshake::{ClientEvent, ClientHandshake};
use shared_protocol::limits::MAX_PACKET;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;

const MAX_CONNECTIONS: u32 = 300;
const PENDING_HANDSHAKES: u32 = 200;
const HOLDERS: u32 = 100;
const PER_HOLDER: u32 = 4;
const SPAMMERS: u32 = 16;
const LEGIT: usize = 40;
const LEGIT_WITHIN: Duration = Duration::from_secs(3);
/// Devices of the login storm, all connecting at once.
const STORM: u32 = 300;
/// The pending-handshake cap during the storm: far below `STORM`.
const STORM_PENDING: u32 = 16;

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

/// Holds an idle connection from `source`, reconnecting whenever the broker closes it.
async fn hold(source: Ipv4Addr, to: SocketAddr, closed: Arc<AtomicU64>) {
    loop {
        let Ok(mut tcp) = connect_from(source, to).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut buf = [0u8; 256];
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
        closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One forged login from `source`: HELLO, then a LOGIN sealed with another device's key.
async fn forged_login(source: Ipv4Addr, url: &str, to: SocketAddr, id: u32) -> Option<()> {
    let tcp = connect_from(source, to).await.ok()?;
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
        .await
        .ok()?;
    let mut wire = Wire::Ws(Box::new(ws));
    let mut hs = ClientHandshake::new(Address::device(id), device_key(id + 1), 0, 1);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(broker::router::now_ms(), rand::random(), &mut out)
        .ok()?
        .to_vec();
    wire.send(&hello).await;
    loop {
        let mut p = wire.recv(Duration::from_secs(5)).await?;
        match hs.on_packet(&mut p, &mut out).ok()? {
            ClientEvent::Send(login) => {
                let login = login.to_vec();
                wire.send(&login).await;
            }
            ClientEvent::Ignored => {}
            ClientEvent::Established(_) | ClientEvent::Rejected(_) => return Some(()),
        }
    }
}

/// A legitimate login of device `id` over a new device WebSocket from 127.0.0.1; `Err` says
/// how it failed.
async fn legit_login(url: &str, id: u32) -> Result<(), String> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let mut wire = Wire::Ws(Box::new(ws));
    let mut hs = ClientHandshake::new(Address::device(id), device_key(id), 0, 1);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(broker::router::now_ms(), rand::random(), &mut out)
        .unwrap()
        .to_vec();
    wire.send(&hello).await;
    loop {
        let Some(mut p) = wire.recv(LEGIT_WITHIN).await else {
            return Err(format!(
                "closed: {:?}",
                wire.close_code(Duration::ZERO).await
            ));
        };
        match hs
            .on_packet(&mut p, &mut out)
            .map_err(|e| format!("{e:?}"))?
        {
            ClientEvent::Send(login) => {
                let login = login.to_vec();
                wire.send(&login).await;
            }
            ClientEvent::Ignored => {}
            ClientEvent::Established(_) => return Ok(()),
            ClientEvent::Rejected(r) => return Err(format!("rejected: {r:?}")),
        }
    }
}

/// Loops [`forged_login`] from `source`, counting the attempts.
async fn spam(source: Ipv4Addr, url: String, to: SocketAddr, attempts: Arc<AtomicU64>) {
    for id in 10_000u32.. {
        let _ = forged_login(source, &url, to, id).await;
        attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the tasks `spawn` starts on a new thread with a runtime of its own; the returned
/// function stops them and waits for the thread.
fn on_own_thread(
    spawn: impl FnOnce(&mut tokio::task::JoinSet<()>) + Send + 'static,
) -> impl FnOnce() + Send + 'static {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            spawn(&mut tasks);
            let _ = stopped.await;
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        })
    });
    move || {
        let _ = stop.send(());
        thread.join().unwrap();
    }
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_logins_get_through_a_login_flood_from_many_addresses() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.max_connections = MAX_CONNECTIONS;
        c.limits.max_pending_handshakes = PENDING_HANDSHAKES;
        c.limits.max_connections_per_ip = PER_HOLDER;
    })
    .await;
    let url = b.device_ws();
    let to: SocketAddr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .unwrap();

    let closed = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    // The flood runs on threads and runtimes of its own, as attackers run on machines of
    // their own: its tasks do not queue ahead of the broker's or the legitimate client's.
    let holders = on_own_thread({
        let closed = closed.clone();
        move |flood| {
            for a in 0..HOLDERS {
                let source = Ipv4Addr::new(127, 1, (a / 250) as u8, (a % 250 + 1) as u8);
                for _ in 0..PER_HOLDER {
                    flood.spawn(hold(source, to, closed.clone()));
                }
            }
        }
    });
    let spammers = on_own_thread({
        let (attempts, url) = (attempts.clone(), url.clone());
        move |flood| {
            for a in 0..SPAMMERS {
                let source = Ipv4Addr::new(127, 2, 0, (a + 1) as u8);
                flood.spawn(spam(source, url.clone(), to, attempts.clone()));
            }
        }
    });
    // Let the flood fill the broker before the first legitimate login.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Each legitimate device retries at once after a refused or closed attempt, as devices
    // do, until it is in or LEGIT_WITHIN has passed.
    let mut took = Vec::new();
    let mut failed = Vec::new();
    let mut retries = 0u32;
    for i in 0..LEGIT as u32 {
        let started = Instant::now();
        let mut last = String::from("no attempt");
        while started.elapsed() < LEGIT_WITHIN {
            let left = LEGIT_WITHIN.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, legit_login(&url, 500 + i)).await {
                Ok(Ok(())) => {
                    took.push(started.elapsed());
                    last.clear();
                    break;
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = "timed out".to_owned(),
            }
            retries += 1;
        }
        if !last.is_empty() {
            failed.push(format!("device {i}: {last}"));
        }
    }
    let m = b.metrics();
    tokio::task::spawn_blocking(holders).await.unwrap();
    tokio::task::spawn_blocking(spammers).await.unwrap();

    took.sort();
    let pct = |p: usize| took.get((took.len() * p / 100).min(took.len().saturating_sub(1)));
    let evicted = counter(
        &m,
        "broker_limit_rejections_total{limit=\"max_pending_handshakes\"}",
    );
    let refused_total = counter(
        &m,
        "broker_limit_rejections_total{limit=\"max_connections\"}",
    );
    let bad_logins: u64 = m
        .lines()
        .filter(|l| l.starts_with("broker_login_failures_total{transport=\"device_ws\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    println!(
        "legitimate logins: {} of {LEGIT} devices in within {LEGIT_WITHIN:?} after {retries} \
         retries in all, p50 {:?}, p99 {:?}; flood: {} holder \
         connections closed, {evicted} evicted as pending handshakes, {refused_total} refused \
         at max_connections, {} forged logins tried, {bad_logins} device_ws login failures",
        took.len(),
        pct(50),
        pct(99),
        closed.load(Ordering::Relaxed),
        attempts.load(Ordering::Relaxed),
    );
    assert!(
        took.len() * 100 >= LEGIT * 95,
        "at least 95% of legitimate devices log in within {LEGIT_WITHIN:?}: {failed:?}"
    );
    assert!(evicted > 0, "the holders filled the pending handshakes");
    assert!(bad_logins > 0, "the forged logins were checked and refused");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_the_broker_is_behind_on_loses_no_prompt_client() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.max_connections = STORM * 2;
        c.limits.max_pending_handshakes = STORM_PENDING;
        c.limits.max_connections_per_ip = STORM * 2;
        c.limits.login_attempts_per_ip_per_sec = STORM * 10;
    })
    .await;
    let url = b.device_ws();
    // The broker falls behind: both of its runtime's workers are held (this test's body runs on
    // a thread of its own) while every device connects and sends its upgrade request, so when
    // the workers are let go the broker has STORM connections, far more than the cap, whose
    // requests wait unread in their sockets.
    let (held, release) = (
        Arc::new(std::sync::Barrier::new(3)),
        Arc::new(std::sync::Barrier::new(3)),
    );
    for _ in 0..2 {
        let (held, release) = (held.clone(), release.clone());
        tokio::spawn(async move {
            held.wait();
            release.wait();
        });
    }
    held.wait();
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let storm = on_own_thread(move |devices| {
        for i in 0..STORM {
            let (url, done_tx) = (url.clone(), done_tx.clone());
            devices.spawn(async move {
                let _ = done_tx.send(legit_login(&url, 1_000 + i).await);
            });
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    release.wait();
    let mut failed = Vec::new();
    for _ in 0..STORM {
        let result = tokio::time::timeout(Duration::from_secs(60), done.recv())
            .await
            .expect("every login ends within a minute")
            .expect("the storm's thread reports every login");
        if let Err(e) = result {
            failed.push(e);
        }
    }
    tokio::task::spawn_blocking(storm).await.unwrap();
    let m = b.metrics();
    let evicted = counter(
        &m,
        "broker_limit_rejections_total{limit=\"max_pending_handshakes\"}",
    );
    println!(
        "login storm: {} of {STORM} in at the first attempt, {evicted} closed as pending \
         handshakes (cap {STORM_PENDING})",
        STORM as usize - failed.len()
    );
    assert!(
        failed.is_empty(),
        "every prompt device logs in ({} failed): {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(evicted, 0, "no prompt client is closed for room");
    b.stop().await;
}
