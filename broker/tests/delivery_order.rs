//! Delivery order over real sockets: message ids reach every terminal in strictly increasing
//! order (a device acknowledges and discards every id at or below the highest it has seen, so an
//! id arriving late would be lost), and the frames of one device session are applied in the
//! order the device sent them (Sends get ids in that order, Uploads reach the spool in that
//! order). Devices over UDP and over the device WebSocket, phones over JSON; broker on 127.0.0.1.

use crate::comet_support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::terminal::{Address, IdProfile};
use comet_support::*;
use serde_json::json;
use shared_protocol::frame::Body;

/// The `msg_id`s of the next `n` Delivers a device receives (it acknowledges each frame).
async fn device_ids(dev: &mut Device, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        match dev.next_event(WAIT).await {
            Some(Got::Deliver { msg_id, .. }) => ids.push(msg_id),
            Some(Got::Presence { .. }) => {}
            other => panic!("expected a Deliver, got {other:?} after {ids:?}"),
        }
    }
    ids
}

/// The upload ids of the next `n` UploadAcks a device receives (presence events skipped).
async fn upload_acks(dev: &mut Device, n: usize) -> Vec<u32> {
    let mut acked = Vec::new();
    while acked.len() < n {
        match dev.next_event(WAIT).await {
            Some(Got::UploadAck { upload_id }) => acked.push(upload_id),
            Some(Got::Presence { .. }) => {}
            other => panic!("expected UploadAck, got {other:?}"),
        }
    }
    acked
}

/// `device`'s upload ids in the spool after cursor `seen`, in spool order; moves `seen` past
/// the page read.
async fn spool_upload_ids(b: &TestBroker, seen: &mut usize, device: u32) -> Vec<u32> {
    let (status, page) = b.get(&format!("/v1/uploads?after={seen}")).await;
    assert_eq!(status, 200, "{page}");
    let uploads = page["uploads"].as_array().unwrap();
    *seen += uploads.len();
    uploads
        .iter()
        .filter(|u| u["device"]["id"] == device)
        .map(|u| u["upload_id"].as_u64().unwrap() as u32)
        .collect()
}

/// The `(msg_id, payload)` of the next `n` `deliver`s a phone receives (it acks each).
async fn phone_delivers(app: &mut App, n: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = app
            .recv_skip_presence(WAIT)
            .await
            .unwrap_or_else(|| panic!("no deliver after {out:?}"));
        assert_eq!(m["type"], "deliver", "{m}");
        app.send(json!({"type": "ack", "msg_id": m["msg_id"]}))
            .await;
        let payload = B64.decode(m["payload"].as_str().unwrap()).unwrap();
        out.push((m["msg_id"].as_u64().unwrap(), payload));
    }
    out
}

fn strictly_increasing(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_reach_every_terminal_in_msg_id_order() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let (udp_dev, ws_dev, phone) = (71u32, 72u32, 7u32);
    let mut udp = login(Wire::udp(b.udp()).await, udp_dev, 0).await.unwrap();
    let mut ws = login(Wire::ws(&b.device_ws()).await, ws_dev, 0)
        .await
        .unwrap();
    let (mut app, welcome) = App::login(&b.app_ws(), Address::phone(phone), 0).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    const N: usize = 20;
    // A few rounds: one round of concurrent pushes may happen to come out in order.
    for round in 0..3 {
        let target = json!({"list": [
            {"kind": "device", "id": udp_dev},
            {"kind": "device", "id": ws_dev},
            {"kind": "phone", "id": phone},
        ]});
        let pushes = (0..N).map(|i| {
            let body = json!({"target": target.clone(), "text": format!("p{i}")});
            let b = &b;
            async move { b.post("/v1/push", body).await }
        });
        let mut answered: Vec<u64> = Vec::new();
        for (s, out) in futures_util::future::join_all(pushes).await {
            assert_eq!(s, 200, "{out}");
            answered.push(out["msg_id"].as_u64().unwrap());
        }
        answered.sort_unstable();

        let seen_udp = device_ids(&mut udp, N).await;
        let seen_ws = device_ids(&mut ws, N).await;
        let seen_phone: Vec<u64> = phone_delivers(&mut app, N)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for (who, seen) in [("udp", &seen_udp), ("ws", &seen_ws), ("phone", &seen_phone)] {
            assert!(
                strictly_increasing(seen),
                "round {round}: {who} saw {seen:?}"
            );
            assert_eq!(
                seen, &answered,
                "round {round}: {who} saw every pushed id once"
            );
        }
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn back_to_back_sends_and_uploads_keep_the_device_order() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let phone = 8u32;
    let mut spool_seen = 0usize;
    for (device, on_udp) in [(81u32, true), (82u32, false)] {
        b.bind(phone, device).await;
        let (mut app, welcome) = App::login(&b.app_ws(), Address::phone(phone), 0).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let wire = if on_udp {
            Wire::udp(b.udp()).await
        } else {
            Wire::ws(&b.device_ws()).await
        };
        let mut dev = login(wire, device, 0).await.unwrap();

        // Five Sends in a row, without waiting for anything in between.
        let texts: Vec<String> = (0..5).map(|i| format!("o{i}")).collect();
        for t in &texts {
            dev.send(Body::Send {
                to: Address::phone(phone),
                payload: t.as_bytes(),
            })
            .await;
        }
        let got = phone_delivers(&mut app, 5).await;
        let payloads: Vec<String> = got
            .iter()
            .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
            .collect();
        assert_eq!(payloads, texts, "device {device}: phone order");
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert!(strictly_increasing(&ids), "device {device}: ids {ids:?}");

        // Five Uploads in a row: the spool holds them in the same order.
        let upload_ids: Vec<u32> = (1000..1005).collect();
        for id in &upload_ids {
            dev.send(Body::Upload {
                upload_id: *id,
                topic: "t",
                payload: b"x",
            })
            .await;
        }
        let acked = upload_acks(&mut dev, upload_ids.len()).await;
        let in_spool = spool_upload_ids(&b, &mut spool_seen, device).await;
        assert_eq!(in_spool, upload_ids, "device {device}: spool order");
        assert_eq!(acked, upload_ids, "device {device}: UploadAck order");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_phone_gets_a_devices_sends_in_order_at_login() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let phone = 9u32;
    for (device, on_udp) in [(91u32, true), (92u32, false)] {
        b.bind(phone, device).await;
        let wire = if on_udp {
            Wire::udp(b.udp()).await
        } else {
            Wire::ws(&b.device_ws()).await
        };
        let mut dev = login(wire, device, 0).await.unwrap();
        let texts: Vec<String> = (0..3).map(|i| format!("{device}m{i}")).collect();
        for t in &texts {
            dev.send(Body::Send {
                to: Address::phone(phone),
                payload: t.as_bytes(),
            })
            .await;
        }
        // Let the broker store all three (the device gets no answer to a successful Send).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (mut app, welcome) = App::login(&b.app_ws(), Address::phone(phone), 0).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let got = phone_delivers(&mut app, 3).await;
        let payloads: Vec<String> = got
            .iter()
            .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
            .collect();
        assert_eq!(payloads, texts, "device {device}: replay order");
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert!(strictly_increasing(&ids), "ids {ids:?}");
        drop(app);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_udp_window_full_of_errors_delays_a_deliver_without_dropping_it() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| c.limits.max_payload_bytes = 64).await;
    let device = 61u32;
    let mut dev = login(Wire::udp(b.udp()).await, device, 0).await.unwrap();
    dev.auto_ack = false;
    // Sixteen refused frames: their Error answers fill the broker's send window, unacknowledged.
    let big = [7u8; 65];
    for i in 0..16u32 {
        dev.send(Body::Upload {
            upload_id: i,
            topic: "t",
            payload: &big,
        })
        .await;
    }
    let mut errors = 0;
    while errors < 16 {
        match dev.next_event(WAIT).await {
            Some(Got::Error { .. }) => errors += 1,
            other => panic!("expected Error, got {other:?}"),
        }
    }
    // A push now finds the window full: it must wait, not vanish.
    let (s, out) = b
        .post(
            "/v1/push",
            json!({"target": {"terminal": {"kind": "device", "id": device}}, "text": "late"}),
        )
        .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["delivered_online"], 1, "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The device acknowledges the Errors: the Deliver follows.
    dev.auto_ack = true;
    dev.ack().await;
    match dev.next_event(WAIT).await {
        Some(Got::Deliver {
            payload, msg_id, ..
        }) => {
            assert_eq!(payload, b"late");
            assert_eq!(Some(msg_id), out["msg_id"].as_u64());
        }
        other => panic!("expected the Deliver, got {other:?}"),
    }
    b.stop().await;
}

/// Reliable frames reordered on the way (seq 3, 5, 2, 4, 1): the broker holds the early ones and
/// carries the Uploads out in `seq` order (docs/protocol.md section 5), on UDP and WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_that_arrive_out_of_order_are_stored_in_seq_order() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut spool_seen = 0usize;
    for (device, on_udp) in [(91u32, true), (92u32, false)] {
        let wire = if on_udp {
            Wire::udp(b.udp()).await
        } else {
            Wire::ws(&b.device_ws()).await
        };
        let mut dev = login(wire, device, 0).await.unwrap();
        let upload_ids: Vec<u32> = (2000..2005).collect();
        let sealed: Vec<Vec<u8>> = upload_ids
            .iter()
            .map(|id| {
                dev.seal(Body::Upload {
                    upload_id: *id,
                    topic: "t",
                    payload: b"x",
                })
            })
            .collect();
        for i in [2usize, 4, 1, 3, 0] {
            dev.wire.send(&sealed[i]).await;
        }
        let acked = upload_acks(&mut dev, upload_ids.len()).await;
        let in_spool = spool_upload_ids(&b, &mut spool_seen, device).await;
        assert_eq!(in_spool, upload_ids, "device {device}: spool order");
        assert_eq!(acked, upload_ids, "device {device}: UploadAck order");
    }
    b.stop().await;
}

/// Two Delivers; the device never gets the first and holds the second, acknowledging it only
/// selectively, then its session ends. Held is not delivered: neither message may count as
/// acknowledged, and the next login replays both, in order (docs/protocol.md sections 4 and 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deliver_acknowledged_only_selectively_is_replayed_after_the_session_ends() {
    use shared_protocol::frame::Frame;
    use shared_protocol::reliability::Ack;
    let b = TestBroker::start(IdProfile::Plug).await;
    let device = 95u32;
    let mut dev = login(Wire::udp(b.udp()).await, device, 0).await.unwrap();
    let mut ids = Vec::new();
    for text in ["first", "second"] {
        let body = json!({"target": {"terminal": {"kind": "device", "id": device}}, "text": text});
        let (status, out) = b.post("/v1/push", body).await;
        assert_eq!(status, 200, "{out}");
        ids.push(out["msg_id"].as_u64().unwrap());
    }
    // Read both Deliver frames raw, acknowledging nothing yet.
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        let mut p = dev.wire.recv(WAIT).await.expect("a Deliver");
        let frame = dev.session.open_frame(&mut p).unwrap();
        if let Body::Deliver { .. } = frame.body {
            seqs.push(frame.seq);
        }
    }
    assert_eq!(seqs, vec![1, 2]);
    // Frame 1 "lost", frame 2 held: ack { next: 1, mask: 0b1 }.
    let held = Frame::unreliable(Ack { next: 1, mask: 1 }, Body::AckOnly);
    let mut out = [0u8; shared_protocol::limits::MAX_PACKET];
    let n = dev.session.seal_frame(&held, &mut out).unwrap();
    dev.wire.send(&out[..n]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The session ends (the device says Goodbye) before frame 1 is resent.
    let bye = Frame::unreliable(
        Ack { next: 1, mask: 1 },
        Body::Goodbye {
            reason: shared_protocol::codes::Code::SHUTDOWN,
        },
    );
    let n = dev.session.seal_frame(&bye, &mut out).unwrap();
    dev.wire.send(&out[..n]).await;
    drop(dev);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new login with since_id 0 gets both, in order.
    let mut dev = login(Wire::udp(b.udp()).await, device, 0).await.unwrap();
    assert_eq!(device_ids(&mut dev, 2).await, ids);
    b.stop().await;
}
