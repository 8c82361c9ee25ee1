//! Devices over UDP against an in-process broker: login, push delivery and ack, NAT rebinding,
//! HTTP-to-device commands (success, offline, timeout, with loss), malformed datagrams.

use crate::comet_support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::terminal::IdProfile;
use comet_support::*;
use serde_json::json;
use shared_protocol::codes::Code;
use shared_protocol::frame::Body;

#[tokio::test]
async fn udp_login_push_delivered_and_acked() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::udp(b.udp()).await, 7, 0)
        .await
        .expect("login accepted");
    assert_eq!(dev.welcome.heartbeat_secs, 30);
    assert_eq!(dev.welcome.max_payload, 1024);
    let (_, status) = b.get("/v1/terminals/device/7").await;
    assert_eq!(status["sessions"][0]["transport"], "udp", "{status}");

    let (s, r) = b
        .post(
            "/v1/push",
            json!({"target": {"terminal": {"kind": "device", "id": 7}}, "text": "on"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let msg_id = r["msg_id"].as_u64().unwrap();
    let got = dev.next_event(WAIT).await.expect("deliver");
    assert_eq!(
        got,
        Got::Deliver {
            msg_id,
            from: None,
            payload: b"on".to_vec()
        }
    );
    // The transport ack (sent by `next`) removes it from the store.
    let mut stored = json!(null);
    for _ in 0..50 {
        stored = b.get("/v1/terminals/device/7/messages").await.1;
        if stored["messages"].as_array().is_some_and(|m| m.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stored["messages"],
        json!([]),
        "acked message forgotten: {stored}"
    );
    // Ping gets a Pong.
    dev.send(Body::Ping).await;
    assert_eq!(dev.next(WAIT).await.unwrap().2, Got::Pong);
    b.stop().await;
}

#[tokio::test]
async fn unacked_push_is_retransmitted_then_replayed_after_relogin() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::udp(b.udp()).await, 8, 0).await.unwrap();
    dev.auto_ack = false;
    let (_, r) = b
        .post(
            "/v1/push",
            json!({"target": {"terminal": {"kind": "device", "id": 8}}, "text": "a"}),
        )
        .await;
    let id = r["msg_id"].as_u64().unwrap();
    // Without an ack the broker resends the same frame (same seq) after the RTO.
    let first = dev.wire.recv(WAIT).await.unwrap();
    let again = dev
        .wire
        .recv(Duration::from_secs(2))
        .await
        .expect("retransmission");
    let (mut a, mut c) = (first, again);
    let f1 = dev.session.open_frame(&mut a).unwrap();
    let f2 = dev.session.open_frame(&mut c).unwrap();
    assert_eq!((f1.seq, f1.body), (f2.seq, f2.body));
    // A new login (since 0) replays it.
    drop(dev);
    let mut dev = login(Wire::udp(b.udp()).await, 8, 0).await.unwrap();
    let got = dev.next_event(WAIT).await.unwrap();
    assert!(
        matches!(got, Got::Deliver { msg_id, .. } if msg_id == id),
        "{got:?}"
    );
    b.stop().await;
}

#[tokio::test]
async fn nat_rebinding_moves_the_session() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::udp(b.udp()).await, 21, 0).await.unwrap();
    // Each shard reads its own socket of the port's group and the kernel picks one by the
    // peer's address, so a moved session's packets often reach a shard that does not own it,
    // which forwards them. Eight moves: on two or more shards, all eight land on the owner's
    // socket once in 256 runs at most.
    for _ in 0..8 {
        dev.wire = Wire::udp(b.udp()).await;
        dev.send(Body::Ping).await;
        assert_eq!(
            dev.next(WAIT).await.unwrap().2,
            Got::Pong,
            "answered after a move"
        );
    }
    // Same session, same keys, from a new socket (a NAT rebinding).
    let moved = comet_support::Wire::udp(b.udp()).await;
    let new_addr = match &moved {
        Wire::Udp { socket, .. } => socket.local_addr().unwrap(),
        Wire::Ws(_) => unreachable!(),
    };
    let old = std::mem::replace(&mut dev.wire, moved);
    dev.send(Body::Ping).await;
    assert_eq!(
        dev.next(WAIT).await.unwrap().2,
        Got::Pong,
        "answered at the new address"
    );
    let (_, status) = b.get("/v1/terminals/device/21").await;
    assert_eq!(
        status["sessions"][0]["peer"],
        new_addr.to_string(),
        "{status}"
    );
    // Deliveries follow it; the old address gets nothing.
    b.post(
        "/v1/push",
        json!({"target": {"terminal": {"kind": "device", "id": 21}}, "text": "x"}),
    )
    .await;
    assert!(matches!(
        dev.next_event(WAIT).await,
        Some(Got::Deliver { .. })
    ));
    let mut old = old;
    assert!(old.recv(Duration::from_millis(300)).await.is_none());
    // A replayed packet from a third address does not move it.
    let p = dev.seal(Body::Ping);
    dev.wire.send(&p).await;
    assert_eq!(dev.next(WAIT).await.unwrap().2, Got::Pong);
    old.send(&p).await;
    assert!(
        old.recv(Duration::from_millis(300)).await.is_none(),
        "replay ignored"
    );
    let (_, status) = b.get("/v1/terminals/device/21").await;
    assert_eq!(status["sessions"][0]["peer"], new_addr.to_string());
    b.stop().await;
}

#[tokio::test]
async fn a_moved_session_is_counted_under_its_new_address() {
    // One connection per address (`RATE_LIMITED` beyond it): a session that moves to another address frees its old
    // address's slot and takes one at the new address, and gives that back when it ends.
    let b = TestBroker::start_with(IdProfile::Plug, |c| c.limits.max_connections_per_ip = 1).await;
    let mut dev = login(Wire::udp_from("127.0.0.2", b.udp()).await, 31, 0)
        .await
        .unwrap();
    let refused = login(Wire::udp_from("127.0.0.2", b.udp()).await, 32, 0).await;
    assert_eq!(refused.err().map(|r| r.code), Some(Code::RATE_LIMITED));
    dev.wire = Wire::udp_from("127.0.0.3", b.udp()).await;
    dev.send(Body::Ping).await;
    assert_eq!(
        dev.next(WAIT).await.unwrap().2,
        Got::Pong,
        "answered after the move"
    );
    let mut at_old = login(Wire::udp_from("127.0.0.2", b.udp()).await, 32, 0)
        .await
        .expect("the old address's slot is free");
    let refused = login(Wire::udp_from("127.0.0.3", b.udp()).await, 33, 0).await;
    assert_eq!(
        refused.err().map(|r| r.code),
        Some(Code::RATE_LIMITED),
        "the new address counts the moved session"
    );
    dev.send(Body::Goodbye {
        reason: Code::NORMAL,
    })
    .await;
    let mut at_new = udp_login_once_admitted("127.0.0.3", b.udp(), 33, Code::RATE_LIMITED)
        .await
        .expect("the ended session gave its slot back at its new address");
    for s in [&mut at_old, &mut at_new] {
        s.send(Body::Ping).await;
        assert_eq!(s.next(WAIT).await.unwrap().2, Got::Pong);
    }
    b.stop().await;
}

#[tokio::test]
async fn a_withheld_older_packet_released_elsewhere_does_not_move_the_session() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::udp(b.udp()).await, 22, 0).await.unwrap();
    let home = match &dev.wire {
        Wire::Udp { socket, .. } => socket.local_addr().unwrap(),
        Wire::Ws(_) => unreachable!(),
    };
    // An on-path attacker withholds the device's next packet (an older counter) ...
    let withheld = dev.seal(Body::Ping);
    // ... while the device goes on with a newer one from its own address.
    dev.send(Body::Ping).await;
    assert_eq!(dev.next(WAIT).await.unwrap().2, Got::Pong);
    // Released later from another address: authentic and new in the replay window, but older.
    let mut elsewhere = Wire::udp(b.udp()).await;
    elsewhere.send(&withheld).await;
    let pong = elsewhere.recv(Duration::from_millis(300)).await;
    assert!(pong.is_none(), "nothing is sent to the attacker's address");
    let (_, status) = b.get("/v1/terminals/device/22").await;
    assert_eq!(
        status["sessions"][0]["peer"],
        home.to_string(),
        "the session stays at the device's address: {status}"
    );
    // The Pong for the withheld Ping went home, and deliveries still do.
    assert_eq!(dev.next(WAIT).await.unwrap().2, Got::Pong);
    b.post(
        "/v1/push",
        json!({"target": {"terminal": {"kind": "device", "id": 22}}, "text": "y"}),
    )
    .await;
    assert!(matches!(
        dev.next_event(WAIT).await,
        Some(Got::Deliver { .. })
    ));
    b.stop().await;
}

/// Answers commands on a UDP device; `drop_first` skips the first Command datagram (loss).
async fn answer_commands(mut dev: Device, drop_first: bool) -> Device {
    let mut dropped = !drop_first;
    loop {
        let Some(mut p) = dev.wire.recv(WAIT).await else {
            return dev;
        };
        if !dropped {
            dropped = true;
            continue;
        }
        let Ok(frame) = dev.session.open_frame(&mut p) else {
            continue;
        };
        let (seq, body) = (frame.seq, frame.body);
        dev.recv.on_receive(seq, 0);
        if let Body::Command {
            cmd_id,
            name,
            payload,
        } = body
        {
            let answer = format!("{name}:{}", String::from_utf8_lossy(payload));
            let p = dev.seal(Body::CommandResult {
                cmd_id,
                status: 0,
                payload: answer.as_bytes(),
            });
            dev.wire.send(&p).await;
            return dev;
        }
    }
}

#[tokio::test]
async fn http_command_round_trip_over_udp_with_loss_offline_and_timeout() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let (s, e) = b
        .post(
            "/v1/devices/31/commands",
            json!({"name": "relay", "text": "on"}),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (404, Some("not_online")), "{e}");

    let dev = login(Wire::udp(b.udp()).await, 31, 0).await.unwrap();
    let device = tokio::spawn(answer_commands(dev, true));
    let (s, r) = b
        .post(
            "/v1/devices/31/commands",
            json!({"name": "relay", "text": "on", "timeout_ms": 5000}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r, json!({"status": 0, "payload": B64.encode("relay:on")}));
    let mut dev = device.await.unwrap();

    // A device that never answers: 504.
    dev.auto_ack = true;
    let (s, e) = b
        .post(
            "/v1/devices/31/commands",
            json!({"name": "relay", "timeout_ms": 300}),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (504, Some("timeout")), "{e}");
    assert!(matches!(
        dev.next_event(WAIT).await,
        Some(Got::Command { .. })
    ));
    b.stop().await;
}

#[tokio::test]
async fn malformed_datagrams_change_nothing() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::udp(b.udp()).await, 41, 0).await.unwrap();
    let sid = dev.welcome.session_id.to_le_bytes();
    const V: u8 = shared_protocol::limits::PROTOCOL_VERSION;
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![V],
        vec![9, 1, 0, 0],
        vec![V, 0x01, 0, 7],    // short HELLO: dropped (no amplification)
        vec![V, 0x03, 1, 2, 3], // broken LOGIN: REJECT MALFORMED, 5 bytes like the LOGIN
        vec![V, 0x10, 0, 0, 0, 0, 0, 0], // truncated DATA
        [vec![V, 0x77], vec![0; 40]].concat(), // unknown type
        vec![0xAB; 1500],       // oversized
    ];
    let mut forged = vec![
        V, 0x10, sid[0], sid[1], sid[2], sid[3], 9, 0, 0, 0, 0, 0, 0, 0,
    ];
    forged.extend([0u8; 40]);
    junk.push(forged);
    for i in 0..200u32 {
        let n = (i * 37 % 300) as usize;
        junk.push((0..n).map(|k| (k as u32 * 7 + i) as u8).collect());
    }
    let probe = Wire::udp(b.udp()).await;
    let Wire::Udp { socket, broker } = &probe else {
        unreachable!()
    };
    for j in &junk {
        socket.send_to(j, broker).await.unwrap();
    }
    let mut buf = [0u8; 2048];
    let answer = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
    if let Ok(Ok((n, _))) = answer {
        // Only REJECTs for recognisable handshake packets may come back, never more bytes.
        assert!(n <= 16, "unexpected {n}-byte answer");
    }
    // The session is unharmed and the broker serves.
    dev.send(Body::Ping).await;
    assert_eq!(dev.next(WAIT).await.unwrap().2, Got::Pong);
    assert!(b.counted("broker_udp_dropped_total"), "{}", b.metrics());
    b.stop().await;
}

#[tokio::test]
async fn wrong_device_key_gets_auth_failed_reject() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.security
            .device_keys
            .insert("55".into(), broker::config::Secret::new("11".repeat(32)));
    })
    .await;
    // Device 55 has an explicit key; the test device derives from the master: AUTH_FAILED.
    let r = login(Wire::udp(b.udp()).await, 55, 0)
        .await
        .err()
        .expect("rejected");
    assert_eq!(r.code, Code::AUTH_FAILED);
    assert!(b.counted("reason=\"auth_failed\""));
    b.stop().await;
}

/// The value of the unlabelled or labelled series `series` (its whole name and labels).
fn metric(b: &TestBroker, series: &str) -> f64 {
    b.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not exported:\n{}", b.metrics()))
}

#[tokio::test]
async fn socket_buffers_follow_the_config_and_a_burst_of_pings_is_answered_in_full() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.udp.receive_buffer_bytes = 256 * 1024;
        c.udp.send_buffer_bytes = 128 * 1024;
    })
    .await;
    // What the kernel gave, as it reports it: twice the size asked for, unless an unprivileged
    // broker was capped at the system maximum.
    let max = |f: &str| -> f64 { std::fs::read_to_string(f).unwrap().trim().parse().unwrap() };
    // Set by the endpoint's task when it starts, just after the broker is up.
    let mut receive = 0.0;
    for _ in 0..100 {
        receive = metric(&b, "broker_udp_socket_buffer_bytes{direction=\"receive\"}");
        if receive > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let send = metric(&b, "broker_udp_socket_buffer_bytes{direction=\"send\"}");
    assert!(
        receive >= 2.0 * (256.0 * 1024.0f64).min(max("/proc/sys/net/core/rmem_max")),
        "{receive}"
    );
    assert!(
        send >= 2.0 * (128.0 * 1024.0f64).min(max("/proc/sys/net/core/wmem_max")),
        "{send}"
    );

    // A burst of Pings read and answered in batches: every one gets its Pong.
    let mut dev = login(Wire::udp(b.udp()).await, 51, 0).await.unwrap();
    let out_before = metric(&b, "broker_udp_datagrams_total{direction=\"out\"}");
    for _ in 0..50 {
        dev.send(Body::Ping).await;
    }
    for i in 0..50 {
        let got = dev.next(WAIT).await.unwrap_or_else(|| panic!("pong {i}"));
        assert_eq!(got.2, Got::Pong, "{i}");
    }
    let out = metric(&b, "broker_udp_datagrams_total{direction=\"out\"}") - out_before;
    assert!(out >= 50.0, "{out} datagrams counted out");
    b.stop().await;
}

#[tokio::test]
async fn every_datagram_is_either_read_or_counted_as_dropped_by_the_kernel() {
    use broker::comet::udp::batch::SendBatch;
    // The smallest receive buffer allowed: a burst overflows it.
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.udp.receive_buffer_bytes = 4096;
    })
    .await;
    let in_before = metric(&b, "broker_udp_datagrams_total{direction=\"in\"}");
    let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    const V: u8 = shared_protocol::limits::PROTOCOL_VERSION;
    // Unknown packet types: read, counted and dropped as malformed, never answered.
    let junk = [vec![V, 0x77], vec![0; 998]].concat();
    let sent = 5000u64;
    // Sent with sendmmsg, many datagrams per call: far faster than the broker reads.
    let mut out = SendBatch::default();
    let mut taken = 0u64;
    while taken < sent {
        for _ in taken..sent.min(taken + 256) {
            out.push(&junk, b.udp());
        }
        probe.writable().await.unwrap();
        taken += out.flush(&probe).sent;
    }
    // The kernel tells its drop count on the next datagram queued: one more after a pause.
    tokio::time::sleep(Duration::from_millis(300)).await;
    probe.send_to(&junk, b.udp()).await.unwrap();
    let mut read = 0.0;
    let mut dropped = 0.0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        read = metric(&b, "broker_udp_datagrams_total{direction=\"in\"}") - in_before;
        dropped = metric(&b, "broker_udp_kernel_drops_total");
        if read + dropped >= (sent + 1) as f64 {
            break;
        }
    }
    assert!(
        dropped > 0.0,
        "a 5,000-datagram burst overflowed an 8 KiB buffer"
    );
    assert_eq!(
        read + dropped,
        (sent + 1) as f64,
        "read {read}, dropped {dropped}"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_session_whose_queue_overflowed_gets_every_message_in_order_after_a_store_read() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.outbound_queue = 2;
        c.limits.queue_full_policy = broker::config::QueueFullPolicy::DropNewest;
    })
    .await;
    let mut dev = login(Wire::udp(b.udp()).await, 12, 0).await.unwrap();
    // Unacknowledged, the session's send window (16 frames) fills, then its router queue (2),
    // and the router drops the rest of the pushes from the queue (they stay stored).
    dev.auto_ack = false;
    let mut pushed = Vec::new();
    for i in 0..30 {
        let (s, r) = b
            .post(
                "/v1/push",
                json!({"target": {"terminal": {"kind": "device", "id": 12}}, "text": format!("m{i}")}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        pushed.push(r["msg_id"].as_u64().unwrap());
    }
    let metrics = b.metrics();
    let drops: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("broker_queue_drops_total{") && l.contains(r#"transport="udp""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(drops > 0.0, "the queue overflowed: {metrics}");
    // Acknowledging again, the device gets every message once, in order: the dropped ones
    // come from the store read the shard runs for the session.
    dev.auto_ack = true;
    let last = *pushed.last().unwrap();
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        match dev.next_event(WAIT).await {
            Some(Got::Deliver { msg_id, .. }) => got.push(msg_id),
            other => panic!("expected a Deliver, got {other:?} after {got:?}"),
        }
    }
    assert_eq!(got, pushed, "every message once, in order");
    b.stop().await;
}

/// At shutdown a UDP session's Kick `SHUTDOWN` goes out three times, 100 ms apart, each in a
/// DATA packet with a fresh counter (docs/protocol.md section 6, "Shutdown"): a device whose
/// first copy is lost (this one drops it) still learns of the shutdown at once, not at its
/// liveness timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_loses_the_first_shutdown_kick_still_gets_one() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::udp(b.udp()).await, 71, 0)
        .await
        .expect("login accepted");
    let stop = tokio::spawn(b.stop());
    let mut kicks = Vec::new();
    let started = std::time::Instant::now();
    while let Some(mut p) = dev.wire.recv(Duration::from_secs(2)).await {
        // Opening goes through the session's replay window: a repeated counter fails here.
        let Ok(frame) = dev.session.open_frame(&mut p) else {
            continue;
        };
        if let Body::Kick { reason } = frame.body {
            kicks.push((reason, started.elapsed()));
        }
    }
    stop.await.unwrap();
    let Some(((first, _), later)) = kicks.split_first() else {
        panic!("no Kick at all");
    };
    // The first copy is the one this device loses.
    assert_eq!(*first, Code::SHUTDOWN);
    let (reason, at) = later.first().expect("a Kick after the lost first copy");
    assert_eq!(*reason, Code::SHUTDOWN);
    assert!(
        *at < Duration::from_secs(1),
        "the second copy came {at:?} after the stop"
    );
    assert_eq!(
        kicks.len() as u64,
        broker::comet::udp::SHUTDOWN_KICK_COPIES,
        "{kicks:?}"
    );
    // Spaced out (a burst would be lost to the same moment of trouble), by about 100 ms.
    let gap = kicks[2].1 - kicks[0].1;
    assert!(gap >= Duration::from_millis(150), "copies {kicks:?}");
}

/// A CommandResult closes an exchange the broker began: nothing else is likely to go to the
/// device soon, so the broker acknowledges it in an AckOnly at once rather than after
/// `ACK_DELAY` (docs/protocol.md section 5).
#[tokio::test]
async fn a_command_result_is_acknowledged_at_once_over_udp() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::udp(b.udp()).await, 34, 0).await.unwrap();
    assert_command_results_acknowledged_at_once(&b, &mut dev, 34).await;
    b.stop().await;
}
