//! No payload, token or key reaches a log line at any level: the real `broker` binary runs with
//! `RUST_LOG=trace` (every crate, every level) through a full scenario -- device logins over UDP
//! and WebSocket, a push, an app login with a minted token and an app message, a device message
//! to the app, an upload, a command and its result, a device request forwarded to an HTTP back
//! end and its answer, plus a wrong API token and a garbled app token -- and its whole stdout and
//! stderr must not contain any of them, as text, base64, hex or `Debug` byte lists. Listens on
//! 127.0.0.1 only; signals only the PID it started.

use crate::banner_support;
use crate::comet_support;

use std::time::Duration;

use banner_support::{broker_command, start_command, write_config};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::terminal::Address;
use comet_support::http_support::ApiClient;
use comet_support::{API_TOKEN, App, Got, MASTER, TOKEN_SECRET, WAIT, Wire, app_token, login};
use serde_json::json;
use shared_protocol::frame::Body;
use shared_protocol::keys::{MasterKey, derive_device_key};

/// Explicit key of the WebSocket device (configured in `device_keys`, not derived).
const WS_DEVICE_KEY: [u8; 32] = [
    0xd1, 0x3e, 0x77, 0x5a, 0x90, 0x0c, 0x4b, 0xe2, 0x18, 0x6f, 0xa3, 0x51, 0xc7, 0x2d, 0x84, 0x39,
    0xfe, 0x06, 0x9b, 0x63, 0x2a, 0xd8, 0x41, 0xb5, 0x7c, 0x13, 0xe9, 0x50, 0x8f, 0x26, 0xca, 0x94,
];
/// Configured cookie secret.
const COOKIE_SECRET: [u8; 32] = [
    0x5e, 0xc4, 0x0b, 0x92, 0x37, 0xaf, 0x61, 0xd8, 0x2c, 0x7e, 0xb3, 0x09, 0xf5, 0x48, 0x9a, 0x1d,
    0x66, 0xe0, 0x33, 0x8b, 0xc1, 0x54, 0x0f, 0xa7, 0x7b, 0x29, 0xde, 0x82, 0x15, 0xbc, 0x4a, 0xf3,
];

const UDP_DEVICE: u32 = 42;
const WS_DEVICE: u32 = 77;
const PHONE: u32 = 5;

/// An HTTP back end on 127.0.0.1:0 answering 201 with the request body reversed.
async fn reversing_backend() -> std::net::SocketAddr {
    async fn handle(body: axum::body::Bytes) -> (axum::http::StatusCode, Vec<u8>) {
        let mut reply = body.to_vec();
        reply.reverse();
        (axum::http::StatusCode::CREATED, reply)
    }
    let app = axum::Router::new().fallback(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Every way a secret or payload could show up in a log line.
fn forms(name: &str, bytes: &[u8]) -> Vec<(String, String)> {
    let debug_list = format!("{bytes:?}");
    let mut out = vec![
        (format!("{name} (hex)"), hex::encode(bytes)),
        (format!("{name} (HEX)"), hex::encode_upper(bytes)),
        (format!("{name} (base64)"), B64.encode(bytes)),
        // `Debug` of a byte slice/array: `[1, 2, 3, ...]`; the first 12 numbers are enough.
        (
            format!("{name} (Debug bytes)"),
            debug_list
                .trim_start_matches('[')
                .split(", ")
                .take(12)
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    if let Ok(text) = std::str::from_utf8(bytes) {
        out.push((format!("{name} (text)"), text.to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_payload_token_or_key() {
    let run = format!("{:08x}", rand::random::<u32>());
    let push_text = format!("PUSHPAYLOAD{run}push");
    let app_text = format!("APPPAYLOAD{run}app");
    let device_text = format!("DEVICEPAYLOAD{run}dev");
    let upload_text = format!("UPLOADPAYLOAD{run}upl");
    let command_text = format!("COMMANDPAYLOAD{run}cmd");
    let result_text = format!("RESULTPAYLOAD{run}res");
    let request_text = format!("REQUESTPAYLOAD{run}req");
    let response_text: String = request_text.chars().rev().collect();
    let wrong_api_token = format!("wrong-api-token-{run}");

    let backend = reversing_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "cookie_secret = \"{}\"\ndevice_keys = {{ \"{WS_DEVICE}\" = \"{}\" }}\n\
             [backend]\ndevice_request_url = \"http://{backend}/api\"\n",
            hex::encode(COOKIE_SECRET),
            hex::encode(WS_DEVICE_KEY)
        ),
    );
    let mut cmd = broker_command();
    cmd.arg("--config").arg(&config).env("RUST_LOG", "trace");
    let mut b = start_command(cmd);
    let api = ApiClient::new(b.http.clone(), API_TOKEN);

    let (s, body) = api
        .put(&format!("/v1/bindings/{PHONE}/{UDP_DEVICE}"), None)
        .await;
    assert!((200..300).contains(&s), "bind: {s} {body}");
    let (s, _) = ApiClient::new(b.http.clone(), wrong_api_token.as_str())
        .put(&format!("/v1/bindings/{PHONE}/{UDP_DEVICE}"), None)
        .await;
    assert_eq!(s, 401, "a wrong API token is refused");

    // Devices over UDP (derived key) and WebSocket (explicit key).
    let mut udp_dev = login(Wire::udp(b.udp).await, UDP_DEVICE, 0)
        .await
        .expect("UDP login");
    let ws_wire = Wire::ws(&b.device_ws).await;
    let mut ws_dev = {
        // `login` derives the key from MASTER; this device has an explicit one.
        use shared_protocol::handshake::{ClientEvent, ClientHandshake};
        use shared_protocol::keys::DeviceKey;
        use shared_protocol::limits::MAX_PACKET;
        let mut wire = ws_wire;
        let mut hs =
            ClientHandshake::new(Address::device(WS_DEVICE), DeviceKey(WS_DEVICE_KEY), 0, 1);
        let mut out = [0u8; MAX_PACKET];
        let hello = hs
            .start(broker::router::now_ms(), rand::random(), &mut out)
            .unwrap()
            .to_vec();
        wire.send(&hello).await;
        loop {
            let mut p = wire.recv(WAIT).await.expect("handshake answer");
            match hs.on_packet(&mut p, &mut out).unwrap() {
                ClientEvent::Send(l) => {
                    let l = l.to_vec();
                    wire.send(&l).await;
                }
                ClientEvent::Established(e) => {
                    break comet_support::Device::established(wire, e.session, e.welcome);
                }
                ClientEvent::Rejected(r) => panic!("WebSocket login rejected: {r:?}"),
                ClientEvent::Ignored => {}
            }
        }
    };

    // A push from the back end.
    let (s, body) = api
        .post(
            "/v1/push",
            json!({"target": {"terminal": {"kind": "device", "id": UDP_DEVICE}}, "text": push_text}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    match udp_dev.next_event(WAIT).await {
        Some(Got::Deliver { payload, .. }) => assert_eq!(payload, push_text.as_bytes()),
        other => panic!("expected the push, got {other:?}"),
    }

    // The phone: a garbled token is refused, the minted one logs in and sends.
    let minted = app_token(Address::phone(PHONE), 3600);
    let sig_at = minted.rfind('.').unwrap() + 1;
    let garbled = format!(
        "{}{}{}",
        &minted[..sig_at],
        if &minted[sig_at..=sig_at] == "A" {
            "B"
        } else {
            "A"
        },
        &minted[sig_at + 1..]
    );
    let mut bad = App::connect(&b.app_ws).await;
    bad.send(json!({"type": "auth", "token": garbled, "since_id": 0}))
        .await;
    let r = bad.recv(WAIT).await.expect("an answer to a garbled token");
    assert_eq!(r["type"], "reject", "{r}");
    let mut app = App::connect(&b.app_ws).await;
    app.send(json!({"type": "auth", "token": minted, "since_id": 0}))
        .await;
    let welcome = app.recv(WAIT).await.expect("auth answer");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    app.send(
        json!({"type": "send", "to": {"kind": "device", "id": UDP_DEVICE},
        "payload": B64.encode(&app_text), "ref": 1}),
    )
    .await;
    assert_eq!(
        app.recv_skip_presence(WAIT).await,
        Some(json!({"type": "ok", "ref": 1}))
    );
    match udp_dev.next_event(WAIT).await {
        Some(Got::Deliver { payload, .. }) => assert_eq!(payload, app_text.as_bytes()),
        other => panic!("expected the app message, got {other:?}"),
    }
    // The device answers the phone.
    udp_dev
        .send(Body::Send {
            to: Address::phone(PHONE),
            payload: device_text.as_bytes(),
        })
        .await;
    let d = app.recv_skip_presence(WAIT).await.expect("device message");
    assert_eq!(d["payload"], B64.encode(&device_text), "{d}");
    app.send(json!({"type": "ack", "msg_id": d["msg_id"]}))
        .await;

    // An upload over WebSocket.
    ws_dev
        .send(Body::Upload {
            upload_id: 1,
            topic: "meter",
            payload: upload_text.as_bytes(),
        })
        .await;
    assert_eq!(
        ws_dev.next_event(WAIT).await,
        Some(Got::UploadAck { upload_id: 1 })
    );

    // A device request to the back end and its answer.
    ws_dev
        .send(Body::Request {
            req_id: 3,
            path: "/state",
            payload: request_text.as_bytes(),
        })
        .await;
    assert_eq!(
        ws_dev.next_event(WAIT).await,
        Some(Got::Response {
            req_id: 3,
            status: 201,
            payload: response_text.clone().into_bytes()
        })
    );

    // A command and its result.
    let http = b.http.clone();
    let command_body = json!({"name": "relay", "text": command_text, "timeout_ms": 5000});
    let call = tokio::spawn(async move {
        ApiClient::new(http, API_TOKEN)
            .post(&format!("/v1/devices/{UDP_DEVICE}/commands"), command_body)
            .await
    });
    match udp_dev.next_event(WAIT).await {
        Some(Got::Command {
            cmd_id, payload, ..
        }) => {
            assert_eq!(payload, command_text.as_bytes());
            udp_dev
                .send(Body::CommandResult {
                    cmd_id,
                    status: 0,
                    payload: result_text.as_bytes(),
                })
                .await;
        }
        other => panic!("expected the command, got {other:?}"),
    }
    let (s, r) = call.await.unwrap();
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["payload"], B64.encode(&result_text), "{r}");

    // Stop it and read everything it wrote.
    b.sigterm();
    b.proc.wait_exit(Duration::from_secs(20));
    let lines = b.proc.drain_until_closed(Duration::from_secs(10)).to_vec();
    // The filter really was `trace`: the broker's own trace/debug lines are there.
    assert!(
        lines.iter().any(|l| l.contains("TRACE")),
        "no TRACE line; RUST_LOG=trace not in effect?"
    );

    let mut needles = Vec::new();
    for (name, text) in [
        ("push payload", &push_text),
        ("app payload", &app_text),
        ("device payload", &device_text),
        ("upload payload", &upload_text),
        ("command payload", &command_text),
        ("command result", &result_text),
        ("device request", &request_text),
        ("back-end answer", &response_text),
        ("API token", &API_TOKEN.to_string()),
        ("wrong API token", &wrong_api_token),
        ("minted app token", &minted),
        ("garbled app token", &garbled),
    ] {
        needles.extend(forms(name, text.as_bytes()));
    }
    // A JWT-like token's signature on its own is also a secret.
    needles.push(("app token signature".into(), minted[sig_at..].to_string()));
    for (name, key) in [
        ("fleet master key", MASTER),
        ("token secret", TOKEN_SECRET),
        ("cookie secret", COOKIE_SECRET),
        (
            "UDP device key",
            derive_device_key(&MasterKey(MASTER), UDP_DEVICE).0,
        ),
        ("WebSocket device key", WS_DEVICE_KEY),
    ] {
        needles.extend(forms(name, &key));
    }
    let mut leaks = Vec::new();
    for (name, needle) in &needles {
        for line in lines.iter().filter(|l| l.contains(needle.as_str())) {
            leaks.push(format!("{name}: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaking log lines (of {}):\n{}",
        leaks.len(),
        lines.len(),
        leaks.join("\n")
    );
}
