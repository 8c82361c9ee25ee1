//! SIGTERM drain of the real `broker` binary with terminals connected: a device over UDP, a device over WebSocket and a phone over the app WebSocket are
//! each told to reconnect later (Kick / JSON kick `SHUTDOWN`, WebSocket close 4067), new
//! connections are refused once the signal arrived, what was acknowledged before it (uploads
//! with an UploadAck, a delivery the phone never acknowledged) is served after a restart, and
//! the process exits 0 within `timeouts.shutdown_drain_secs` even when an HTTP request holds the
//! drain open. Listens on 127.0.0.1 port 0 only; signals only the PID it started.

use crate::banner_support;
use crate::comet_support;

use std::io::Write;
use std::time::{Duration, Instant};

use banner_support::{Started, all_uploads, start, write_config};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::terminal::Address;
use comet_support::{App, Got, WAIT, Wire, login};
use futures_util::StreamExt;
use serde_json::json;
use shared_protocol::codes::Code;
use shared_protocol::frame::Body;
use shared_protocol::handshake::ClientHandshake;
use shared_protocol::limits::MAX_PACKET;
use tokio_tungstenite::tungstenite::Message;

/// `timeouts.shutdown_drain_secs` in this test.
const DRAIN_SECS: u64 = 3;

/// The WebSocket close code after a JSON kick, or `None` when the stream ended without one.
async fn app_close_code(app: &mut App) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, app.ws.next()).await.ok()?? {
            Ok(Message::Close(Some(f))) => return Some(f.code.into()),
            Ok(Message::Close(None)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// A new device login over UDP gets no CHALLENGE (and so cannot log in).
async fn udp_hello_is_unanswered(b: &Started) -> bool {
    let mut wire = Wire::udp(b.udp).await;
    let mut hs = ClientHandshake::new(Address::device(99), comet_support::device_key(99), 0, 1);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(broker::router::now_ms(), rand::random(), &mut out)
        .unwrap()
        .to_vec();
    wire.send(&hello).await;
    wire.recv(Duration::from_millis(800)).await.is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_kicks_every_terminal_refuses_new_ones_keeps_acked_work_and_exits_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[timeouts]\nshutdown_drain_secs = {DRAIN_SECS}\n"),
    );
    let mut b = start(&config);

    // Three terminals, each doing work the broker acknowledged.
    let mut udp_dev = login(Wire::udp(b.udp).await, 21, 0)
        .await
        .expect("udp login");
    let mut ws_dev = login(Wire::ws(&b.device_ws).await, 22, 0)
        .await
        .expect("ws login");
    let (mut phone, welcome) = App::login(&b.app_ws, Address::phone(7), 0).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    for (dev, id) in [(&mut udp_dev, 1), (&mut ws_dev, 2)] {
        dev.send(Body::Upload {
            upload_id: id,
            topic: "energy",
            payload: format!("wh={id}").as_bytes(),
        })
        .await;
        assert_eq!(
            dev.next_event(WAIT).await,
            Some(Got::UploadAck { upload_id: id })
        );
    }
    let (s, pushed) = b
        .post(
            "/v1/push",
            json!({"target": {"terminal": {"kind": "phone", "id": 7}}, "text": "unacked"}),
        )
        .await;
    assert_eq!(s, 200, "{pushed}");
    let delivered = phone.recv_skip_presence(WAIT).await.unwrap();
    assert_eq!(delivered["type"], "deliver", "{delivered}");
    assert_eq!(delivered["msg_id"], pushed["msg_id"]);
    // (The phone never sends `ack` for it.)

    // An HTTP request whose body never completes: in flight when the signal comes.
    let http_addr = b.http.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&http_addr).unwrap();
    write!(
        slow,
        "POST /v1/push HTTP/1.1\r\nHost: {http_addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"target\":",
        comet_support::API_TOKEN
    )
    .unwrap();
    slow.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    b.sigterm();

    // Every connected terminal is told to come back later.
    assert_eq!(
        udp_dev.next_event(WAIT).await,
        Some(Got::Kick {
            reason: Code::SHUTDOWN
        }),
        "UDP device"
    );
    assert_eq!(
        ws_dev.next_event(WAIT).await,
        Some(Got::Kick {
            reason: Code::SHUTDOWN
        }),
        "WS device"
    );
    assert_eq!(ws_dev.wire.close_code(WAIT).await, Some(4067));
    let kick = phone.recv_skip_presence(WAIT).await.unwrap();
    assert_eq!(kick, json!({"type": "kick", "reason": 67}));
    assert_eq!(app_close_code(&mut phone).await, Some(4067));

    // While it drains, nothing new gets in.
    assert!(b.alive(), "the in-flight request keeps the drain going");
    for (what, addr) in [
        ("device WebSocket", b.device_ws.clone()),
        ("app WebSocket", b.app_ws.clone()),
    ] {
        let r = tokio_tungstenite::connect_async(&addr).await;
        assert!(r.is_err(), "{what} accepted a connection while draining");
    }
    assert!(
        std::net::TcpStream::connect(&http_addr).is_err(),
        "HTTP API accepted a connection while draining"
    );
    assert!(
        udp_hello_is_unanswered(&b).await,
        "UDP answered a HELLO while draining"
    );
    assert!(b.alive(), "the refusals above were seen during the drain");

    // Exit 0, within the drain deadline (the stuck request is given up on).
    let (code, exited) = b.wait_exit(Duration::from_secs(DRAIN_SECS + 5));
    let took = exited - signalled;
    assert_eq!(code, 0, "exit code after SIGTERM");
    assert!(
        took <= Duration::from_secs(DRAIN_SECS) + Duration::from_millis(1500),
        "exited {took:?} after SIGTERM; drain deadline {DRAIN_SECS} s"
    );
    assert!(
        took >= Duration::from_secs(DRAIN_SECS) - Duration::from_millis(500),
        "exited {took:?} after SIGTERM: the in-flight request was not waited for"
    );
    eprintln!("exit {took:?} after SIGTERM (drain deadline {DRAIN_SECS} s)");
    drop(slow);

    // Restarted on the same data: the acknowledged uploads and the unacknowledged delivery.
    let b = start(&config);
    let uploads = all_uploads(&b).await;
    let got: Vec<_> = uploads
        .iter()
        .map(|u| {
            (
                u["device"].clone(),
                u["upload_id"].as_u64().unwrap(),
                u["payload"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!({"kind": "device", "id": 21}), 1, B64.encode("wh=1")),
            (json!({"kind": "device", "id": 22}), 2, B64.encode("wh=2")),
        ]
    );
    let (mut phone, welcome) = App::login(&b.app_ws, Address::phone(7), 0).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let again = phone.recv_skip_presence(WAIT).await.unwrap();
    assert_eq!(
        (&again["type"], &again["msg_id"], &again["payload"]),
        (
            &json!("deliver"),
            &pushed["msg_id"],
            &json!(B64.encode("unacked"))
        )
    );
}

/// The same three terminals when nothing holds the drain: the kicks still reach them before the
/// process exits (well before the deadline). Connections that never log in (a bare TCP
/// connection, and WebSockets that upgraded but sent nothing) do not hold the exit up until
/// their handshake timeout (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nothing_in_flight_still_kicks_everyone_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[timeouts]\nshutdown_drain_secs = 10\nhandshake_secs = 30\n",
    );
    let mut b = start(&config);
    let _bare_tcp = tokio::net::TcpStream::connect(
        b.device_ws
            .trim_start_matches("ws://")
            .trim_end_matches('/'),
    )
    .await
    .expect("tcp connect");
    let (_silent_device, _) = tokio_tungstenite::connect_async(b.device_ws.as_str())
        .await
        .expect("device websocket upgrade");
    let (_silent_app, _) = tokio_tungstenite::connect_async(b.app_ws.as_str())
        .await
        .expect("app websocket upgrade");
    let mut udp_dev = login(Wire::udp(b.udp).await, 31, 0)
        .await
        .expect("udp login");
    let mut ws_dev = login(Wire::ws(&b.device_ws).await, 32, 0)
        .await
        .expect("ws login");
    let (mut phone, welcome) = App::login(&b.app_ws, Address::phone(8), 0).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    let signalled = Instant::now();
    b.sigterm();
    let shutdown = Some(Got::Kick {
        reason: Code::SHUTDOWN,
    });
    assert_eq!(udp_dev.next_event(WAIT).await, shutdown, "UDP device");
    assert_eq!(ws_dev.next_event(WAIT).await, shutdown, "WS device");
    assert_eq!(ws_dev.wire.close_code(WAIT).await, Some(4067));
    let kick = phone.recv_skip_presence(WAIT).await.unwrap();
    assert_eq!(kick, json!({"type": "kick", "reason": 67}));
    assert_eq!(app_close_code(&mut phone).await, Some(4067));
    let (code, exited) = b.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 0);
    let took = exited - signalled;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    eprintln!("exit {took:?} after SIGTERM with nothing in flight");
}
