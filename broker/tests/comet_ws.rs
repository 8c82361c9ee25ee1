//! Devices over WebSocket (binary packets): login, upload acknowledged only once durable, ID
//! profiles (plug kick / signed multi-session), handshake timeout, oversized messages.

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
async fn ws_upload_is_acked_only_once_readable_through_the_api() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::ws(&b.device_ws()).await, 12, 0)
        .await
        .expect("login");
    let (_, status) = b.get("/v1/terminals/device/12").await;
    assert_eq!(status["sessions"][0]["transport"], "device_ws", "{status}");
    dev.send(Body::Upload {
        upload_id: 5,
        topic: "energy",
        payload: b"wh=12",
    })
    .await;
    assert_eq!(
        dev.next_event(WAIT).await,
        Some(Got::UploadAck { upload_id: 5 })
    );
    // By the time the UploadAck arrived, the upload is durable and readable.
    let (s, page) = b.get("/v1/uploads?after=0").await;
    assert_eq!(s, 200);
    assert_eq!(page["uploads"][0]["topic"], "energy", "{page}");
    assert_eq!(page["uploads"][0]["payload"], B64.encode("wh=12"));
    // A resend with the same id (after a lost UploadAck) is acked again and not stored twice.
    dev.send(Body::Upload {
        upload_id: 5,
        topic: "energy",
        payload: b"wh=12",
    })
    .await;
    assert_eq!(
        dev.next_event(WAIT).await,
        Some(Got::UploadAck { upload_id: 5 })
    );
    let (_, page) = b.get("/v1/uploads?after=0").await;
    assert_eq!(page["uploads"].as_array().unwrap().len(), 1, "{page}");
    // Goodbye closes normally and the device goes offline.
    dev.send(Body::Goodbye {
        reason: Code::NORMAL,
    })
    .await;
    assert_eq!(dev.wire.close_code(WAIT).await, Some(1000));
    b.stop().await;
}

#[tokio::test]
async fn plug_profile_second_login_kicks_the_first() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut first = login(Wire::ws(&b.device_ws()).await, 13, 0).await.unwrap();
    let mut second = login(Wire::udp(b.udp()).await, 13, 0).await.unwrap();
    assert_eq!(
        first.next_event(WAIT).await,
        Some(Got::Kick {
            reason: Code::REPLACED
        })
    );
    assert_eq!(first.wire.close_code(WAIT).await, Some(4064));
    b.post(
        "/v1/push",
        json!({"target": {"terminal": {"kind": "device", "id": 13}}, "text": "n"}),
    )
    .await;
    assert!(matches!(
        second.next_event(WAIT).await,
        Some(Got::Deliver { .. })
    ));
    let (_, status) = b.get("/v1/terminals/device/13").await;
    assert_eq!(status["sessions"].as_array().unwrap().len(), 1, "{status}");
    b.stop().await;
}

#[tokio::test]
async fn signed_profile_sessions_all_receive() {
    let b = TestBroker::start(IdProfile::Signed).await;
    let mut a = login(Wire::ws(&b.device_ws()).await, 14, 0).await.unwrap();
    let mut c = login(Wire::udp(b.udp()).await, 14, 0).await.unwrap();
    let (s, r) = b
        .post(
            "/v1/push",
            json!({"target": {"terminal": {"kind": "device", "id": 14}}, "text": "both"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    for dev in [&mut a, &mut c] {
        match dev.next_event(WAIT).await {
            Some(Got::Deliver { payload, .. }) => assert_eq!(payload, b"both"),
            other => panic!("{other:?}"),
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn handshake_timeout_closes_an_idle_websocket() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| c.timeouts.handshake_secs = 1).await;
    let mut idle = Wire::ws(&b.device_ws()).await;
    let started = std::time::Instant::now();
    assert_eq!(
        idle.close_code(Duration::from_secs(5)).await,
        Some(4000 + Code::TIMEOUT.0)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(b.counted("reason=\"handshake_timeout\""));
    b.stop().await;
}

#[tokio::test]
async fn oversized_and_garbage_messages_close_only_their_connection() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::ws(&b.device_ws()).await, 15, 0).await.unwrap();
    // Garbage binary messages are ignored; the session lives on.
    let v = shared_protocol::limits::PROTOCOL_VERSION;
    for junk in [vec![], vec![v, 0x10, 1, 2], vec![0xFF; 100]] {
        dev.wire.send(&junk).await;
    }
    dev.send(Body::Ping).await;
    assert_eq!(dev.next(WAIT).await.unwrap().2, Got::Pong);
    // A message above the 1200-byte limit closes with 1009.
    let mut big = Wire::ws(&b.device_ws()).await;
    big.send(&[0u8; 1500]).await;
    assert_eq!(big.close_code(WAIT).await, Some(1009));
    assert!(b.counted("limit=\"max_device_frame_bytes\""));
    dev.send(Body::Ping).await;
    assert_eq!(dev.next(WAIT).await.unwrap().2, Got::Pong);
    b.stop().await;
}

#[tokio::test]
async fn connection_and_login_rate_limits() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.max_connections_per_ip = 2;
        c.limits.login_attempts_per_ip_per_sec = 2;
    })
    .await;
    let _a = Wire::ws(&b.device_ws()).await;
    let _b = Wire::ws(&b.device_ws()).await;
    let mut third = Wire::ws(&b.device_ws()).await;
    assert_eq!(
        third.close_code(WAIT).await,
        Some(4000 + Code::RATE_LIMITED.0)
    );
    assert!(b.counted("limit=\"max_connections_per_ip\""));
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two logins per second pass, the third is refused with RATE_LIMITED.
    let mut results = Vec::new();
    for id in [61, 62, 63] {
        results.push(
            login(Wire::udp(b.udp()).await, id, 0)
                .await
                .err()
                .map(|r| r.code),
        );
    }
    assert_eq!(results, vec![None, None, Some(Code::RATE_LIMITED)]);
    assert!(
        b.metrics()
            .contains("limit=\"login_attempts_per_ip_per_sec\"")
    );
    b.stop().await;
}

/// The value of the labelled series `series` (its whole name and labels).
fn metric(b: &TestBroker, series: &str) -> f64 {
    b.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not exported:\n{}", b.metrics()))
}

/// Every Deliver frame (by `seq`) that reaches `dev` within `wait`, duplicates included.
async fn deliver_frames(dev: &mut Device, wait: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut seqs = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(mut p) = dev.wire.recv(left).await else {
            return seqs;
        };
        if let Ok(f) = dev.session.open_frame(&mut p)
            && matches!(f.body, Body::Deliver { .. })
        {
            dev.recv.on_receive(f.seq, 0);
            seqs.push(f.seq);
        }
    }
}

/// Over WebSocket the broker never sends a Deliver twice within a session (docs/protocol.md
/// section 5, "Reliable transport"): a device that acknowledges 2.5 s late (five times
/// `RTO_INITIAL`) receives each Deliver once, and the late ack retires them. Over UDP the same
/// device receives resends, counted in `broker_device_resends_total{transport="udp"}`.
#[tokio::test]
async fn a_late_ack_over_websocket_gets_no_duplicate_deliver() {
    let b = TestBroker::start(IdProfile::Plug).await;
    for (id, ws) in [(31u32, true), (32, false)] {
        let wire = if ws {
            Wire::ws(&b.device_ws()).await
        } else {
            Wire::udp(b.udp()).await
        };
        let mut dev = login(wire, id, 0).await.unwrap();
        dev.auto_ack = false;
        for text in ["a", "b", "c"] {
            b.post(
                "/v1/push",
                json!({"target": {"terminal": {"kind": "device", "id": id}}, "text": text}),
            )
            .await;
        }
        let frames = deliver_frames(&mut dev, Duration::from_millis(2_500)).await;
        if ws {
            assert_eq!(frames, [1, 2, 3], "each Deliver once over WebSocket");
        } else {
            assert!(frames.len() > 3, "UDP resends: {frames:?}");
        }
        // The late acknowledgement retires them: nothing more comes.
        dev.ack().await;
        let after = deliver_frames(&mut dev, Duration::from_millis(1_500)).await;
        if ws {
            assert!(after.is_empty(), "after the ack: {after:?}");
        }
    }
    assert_eq!(
        metric(&b, "broker_device_resends_total{transport=\"device_ws\"}"),
        0.0
    );
    assert!(metric(&b, "broker_device_resends_total{transport=\"udp\"}") >= 1.0);
    b.stop().await;
}

/// A CommandResult closes an exchange the broker began: nothing else is likely to go to the
/// device soon, so the broker acknowledges it in an AckOnly at once rather than after
/// `ACK_DELAY` (docs/protocol.md section 5).
#[tokio::test]
async fn a_command_result_is_acknowledged_at_once_over_websocket() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut dev = login(Wire::ws(&b.device_ws()).await, 36, 0).await.unwrap();
    assert_command_results_acknowledged_at_once(&b, &mut dev, 36).await;
    b.stop().await;
}
