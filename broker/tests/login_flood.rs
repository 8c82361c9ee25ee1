//! Spoofed-source handshake floods against a victim's address, over real UDP sockets on
//! 127.0.0.x: an attacker sending HELLOs and LOGINs "from" the victim's IP (other ports of
//! 127.0.0.7; a LOGIN whose cookie was issued to another address, as a forger would have) must
//! not use up that address's login allowance. Pass criterion: the victim logs in from
//! 127.0.0.7 while the flood runs, and the flood was processed (its LOGINs counted as
//! `bad_cookie`), with `limits.login_attempts_per_ip_per_sec` set low (3).

mod comet_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker::terminal::{Address, IdProfile};
use comet_support::*;
use shared_protocol::handshake::{ClientEvent, ClientHandshake};
use shared_protocol::limits::MAX_PACKET;
use tokio::net::UdpSocket;

const VICTIM_IP: &str = "127.0.0.7";

/// A HELLO and a LOGIN for device `id` whose cookie was issued to a socket on 127.0.0.9.
async fn login_packets_from_elsewhere(broker: SocketAddr, id: u32) -> (Vec<u8>, Vec<u8>) {
    let socket = UdpSocket::bind("127.0.0.9:0").await.unwrap();
    let mut hs = ClientHandshake::new(Address::device(id), device_key(id), 0, 1);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(broker::router::now_ms(), rand::random(), &mut out)
        .unwrap()
        .to_vec();
    socket.send_to(&hello, broker).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    match hs.on_packet(&mut buf[..n], &mut out).unwrap() {
        ClientEvent::Send(login) => (hello, login.to_vec()),
        _ => panic!("expected a CHALLENGE"),
    }
}

/// Sends `hello` and `login` in turn from 16 sockets on the victim's IP until `until`.
async fn spoof(broker: SocketAddr, hello: Vec<u8>, login: Vec<u8>, until: Instant) -> u64 {
    let mut sockets = Vec::new();
    for _ in 0..16 {
        sockets.push(UdpSocket::bind((VICTIM_IP, 0)).await.unwrap());
    }
    let mut sent = 0u64;
    while Instant::now() < until {
        for s in &sockets {
            let _ = s.send_to(&hello, broker).await;
            let _ = s.send_to(&login, broker).await;
            sent += 2;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sent
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_handshakes_for_the_victims_address_do_not_lock_it_out() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.login_attempts_per_ip_per_sec = 3;
    })
    .await;
    let (hello, forged_login) = login_packets_from_elsewhere(b.udp(), 7).await;
    let until = Instant::now() + Duration::from_secs(3);
    let flood = tokio::spawn(spoof(b.udp(), hello, forged_login, until));
    // Let the flood run before the victim tries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let victim_wire = Wire::Udp {
        socket: UdpSocket::bind((VICTIM_IP, 0)).await.unwrap(),
        broker: b.udp(),
    };
    let victim = login(victim_wire, 7, 0).await;
    let took = t.elapsed();
    let sent = flood.await.unwrap();
    let m = b.metrics();
    let bad_cookie = counter(
        &m,
        "broker_login_failures_total{transport=\"udp\",reason=\"bad_cookie\"}",
    );
    let hello_busy = counter(&m, "broker_udp_dropped_total{reason=\"hello_busy\"}");
    println!(
        "flood: {sent} spoofed datagrams; {bad_cookie} LOGINs refused as bad_cookie, \
         {hello_busy} HELLOs dropped as busy; the victim's login took {took:?}"
    );
    let victim = victim.unwrap_or_else(|r| panic!("victim refused: {r:?}"));
    assert_eq!(victim.welcome.max_payload, 1024);
    assert!(
        bad_cookie > 100,
        "the forged LOGINs were checked ({bad_cookie})"
    );
    assert_eq!(
        counter(
            &m,
            "broker_limit_rejections_total{limit=\"login_attempts_per_ip_per_sec\"}"
        ),
        0,
        "no attempt from the victim's address was charged: {m}"
    );
    b.stop().await;
}
