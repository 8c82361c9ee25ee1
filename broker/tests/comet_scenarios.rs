//! End-to-end scenarios that need a real device on each transport:
//! the heartbeat timeout (a silent device is kicked, goes offline in the API, and its bound phone
//! hears so), the device-to-HTTP request (a `Request` frame is forwarded to a real HTTP backend
//! and its answer comes back as a `Response`), and a payload over `limits.max_payload_bytes`
//! (an `Error TOO_LARGE` about that frame, and the session goes on). Each runs over UDP and
//! over the device WebSocket, against a broker on 127.0.0.1 port 0. Also push in every
//! addressing mode to devices (UDP and WebSocket) and phones (JSON) at once, and a push whose
//! TTL ran out before its device logged in.

use crate::comet_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::terminal::{Address, IdProfile};
use comet_support::*;
use futures_util::SinkExt;
use serde_json::json;
use shared_protocol::codes::Code;
use shared_protocol::frame::Body;

/// Which device transport a scenario runs over.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Udp,
    Ws,
}

async fn wire(b: &TestBroker, t: Transport) -> Wire {
    match t {
        Transport::Udp => Wire::udp(b.udp()).await,
        Transport::Ws => Wire::ws(&b.device_ws()).await,
    }
}

async fn online(b: &TestBroker, device: u32) -> bool {
    let (status, body) = b.get(&format!("/v1/terminals/device/{device}")).await;
    assert_eq!(status, 200, "{body}");
    body["online"].as_bool().expect("online is a bool")
}

#[tokio::test]
async fn a_silent_device_is_kicked_goes_offline_and_its_phone_hears_it() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.timeouts.heartbeat_secs = 1;
        c.timeouts.session_secs = 2;
    })
    .await;
    for (device, t) in [(61, Transport::Udp), (62, Transport::Ws)] {
        b.bind(5, device).await;
        let (mut phone, welcome) = App::login(&b.app_ws(), Address::phone(5), 0).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let mut dev = login(wire(&b, t).await, device, 0).await.unwrap();
        let came =
            json!({"type": "presence", "who": {"kind": "device", "id": device}, "online": true});
        assert_eq!(phone.recv(WAIT).await.unwrap(), came, "{t:?}");
        assert!(online(&b, device).await, "{t:?}: online after login");

        // The device says nothing at all from here on; the phone pings to stay online and
        // waits for the device's offline presence.
        let gone =
            json!({"type": "presence", "who": {"kind": "device", "id": device}, "online": false});
        let started = tokio::time::Instant::now();
        let phone_side = async {
            let deadline = started + Duration::from_secs(8);
            loop {
                phone.send(json!({"type": "ping"})).await;
                match phone.recv(Duration::from_millis(400)).await {
                    Some(m) if m == gone => return Some(started.elapsed()),
                    Some(m) => assert_eq!(m["type"], "pong", "{t:?}: unexpected {m}"),
                    None => {}
                }
                if tokio::time::Instant::now() > deadline {
                    return None;
                }
            }
        };
        let device_side = async {
            let kick = dev.next_event(Duration::from_secs(8)).await;
            (kick, started.elapsed())
        };
        let (offline_after, (kick, kicked_after)) = tokio::join!(phone_side, device_side);
        assert_eq!(
            kick,
            Some(Got::Kick {
                reason: Code::HEARTBEAT_TIMEOUT
            }),
            "{t:?}"
        );
        assert!(
            kicked_after >= Duration::from_millis(1500),
            "{t:?}: kicked after only {kicked_after:?} (session_secs = 2)"
        );
        let offline_after = offline_after.expect("the phone heard the device go offline");
        assert!(offline_after >= Duration::from_millis(1500), "{t:?}");
        if let Transport::Ws = t {
            assert_eq!(
                dev.wire.close_code(WAIT).await,
                Some(4000 + Code::HEARTBEAT_TIMEOUT.0),
                "WebSocket closes with 4000 + the code"
            );
        }
        assert!(
            !online(&b, device).await,
            "{t:?}: offline after the timeout"
        );
        phone.send(json!({"type": "goodbye"})).await;
    }
    b.stop().await;
}

/// What the test backend received: (path, device header, body).
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A small HTTP backend on 127.0.0.1:0: answers 201 with the body reversed, after 3 s for a
/// path ending in `/slow`; every request is recorded.
async fn backend() -> (SocketAddr, Seen) {
    async fn handle(
        State(seen): State<Seen>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, Vec<u8>) {
        let device = headers
            .get("x-plugcloud-device")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        seen.lock()
            .unwrap()
            .push((uri.path().to_owned(), device, body.to_vec()));
        if uri.path().ends_with("/slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let mut reply = body.to_vec();
        reply.reverse();
        (StatusCode::CREATED, reply)
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test]
async fn a_device_request_reaches_the_http_backend_and_its_answer_comes_back() {
    let (addr, seen) = backend().await;
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.backend.device_request_url = format!("http://{addr}/api");
        c.backend.timeout_ms = 1000;
    })
    .await;
    for (device, t) in [(71, Transport::Udp), (72, Transport::Ws)] {
        let mut dev = login(wire(&b, t).await, device, 0).await.unwrap();
        dev.send(Body::Request {
            req_id: 9,
            path: "/echo/state",
            payload: b"abc",
        })
        .await;
        assert_eq!(
            dev.next_event(WAIT).await,
            Some(Got::Response {
                req_id: 9,
                status: 201,
                payload: b"cba".to_vec()
            }),
            "{t:?}"
        );
        let last = seen.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            last,
            (
                "/api/echo/state".to_owned(),
                Address::device(device).to_string(),
                b"abc".to_vec()
            ),
            "{t:?}"
        );
        // A backend slower than backend.timeout_ms: 504 to the device, nothing else breaks.
        dev.send(Body::Request {
            req_id: 10,
            path: "/slow",
            payload: b"",
        })
        .await;
        assert_eq!(
            dev.next_event(WAIT).await,
            Some(Got::Response {
                req_id: 10,
                status: 504,
                payload: Vec::new()
            }),
            "{t:?}"
        );
        // A path trying to leave the backend's prefix, in any spelling the URL parser or the
        // backend would turn into another path, is refused before any HTTP call.
        let calls = seen.lock().unwrap().len();
        for (req_id, path) in [
            "/../admin",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/..\\admin",
            "/x?admin=1",
            "/x#admin",
            "//admin",
            "/./admin",
        ]
        .into_iter()
        .enumerate()
        {
            let req_id = 11 + req_id as u32;
            dev.send(Body::Request {
                req_id,
                path,
                payload: b"",
            })
            .await;
            assert_eq!(
                dev.next_event(WAIT).await,
                Some(Got::Response {
                    req_id,
                    status: 400,
                    payload: Vec::new()
                }),
                "{t:?} {path:?}"
            );
        }
        assert_eq!(seen.lock().unwrap().len(), calls, "{t:?}: no call made");
    }
    b.stop().await;
}

#[tokio::test]
async fn a_payload_over_the_limit_gets_too_large_and_the_session_goes_on() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.max_payload_bytes = 64;
    })
    .await;
    b.bind(6, 81).await;
    for (device, t) in [(81, Transport::Udp), (82, Transport::Ws)] {
        let mut dev = login(wire(&b, t).await, device, 0).await.unwrap();
        let big = [7u8; 65];
        dev.send(Body::Upload {
            upload_id: 1,
            topic: "t",
            payload: &big,
        })
        .await;
        match dev.next_event(WAIT).await {
            Some(Got::Error { code, .. }) => assert_eq!(code, Code::TOO_LARGE, "{t:?}"),
            other => panic!("{t:?}: expected Error TOO_LARGE, got {other:?}"),
        }
        // The same session still works: an upload at the limit is acknowledged.
        dev.send(Body::Upload {
            upload_id: 2,
            topic: "t",
            payload: &big[..64],
        })
        .await;
        assert_eq!(
            dev.next_event(WAIT).await,
            Some(Got::UploadAck { upload_id: 2 }),
            "{t:?}"
        );
    }
    let (status, page) = b.get("/v1/uploads?after=0").await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<u64> = page["uploads"]
        .as_array()
        .expect("uploads")
        .iter()
        .map(|u| u["upload_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 2], "only the uploads within the limit were stored");
    assert!(
        b.metrics()
            .contains("broker_limit_rejections_total{limit=\"max_payload_bytes\"} 2"),
        "both refusals counted"
    );
    b.stop().await;
}

/// A logged-in terminal of the push test: a device (UDP or WebSocket) or a phone (JSON).
enum Term {
    Device(Box<Device>),
    Phone(Box<App>),
}

impl Term {
    /// The payload of the next delivery within `wait` (acknowledged), or `None`.
    async fn delivery(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self {
            Term::Device(d) => match d.next_event(wait).await? {
                Got::Deliver { payload, .. } => Some(payload),
                other => panic!("expected a delivery, got {other:?}"),
            },
            Term::Phone(p) => {
                let m = p.recv_skip_presence(wait).await?;
                assert_eq!(m["type"], "deliver", "{m}");
                p.send(json!({"type": "ack", "msg_id": m["msg_id"]})).await;
                Some(B64.decode(m["payload"].as_str().unwrap()).unwrap())
            }
        }
    }
}

#[tokio::test]
async fn push_reaches_exactly_the_addressed_terminals_in_every_mode() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let (d1, d2, d3) = (91u32, 92u32, 93u32);
    let (p1, p2) = (15u32, 16u32);
    let mut terms: Vec<(Address, Term)> = vec![
        (
            Address::device(d1),
            Term::Device(Box::new(
                login(Wire::udp(b.udp()).await, d1, 0).await.unwrap(),
            )),
        ),
        (
            Address::device(d2),
            Term::Device(Box::new(
                login(Wire::ws(&b.device_ws()).await, d2, 0).await.unwrap(),
            )),
        ),
        (
            Address::device(d3),
            Term::Device(Box::new(
                login(Wire::udp(b.udp()).await, d3, 0).await.unwrap(),
            )),
        ),
    ];
    for p in [p1, p2] {
        let (app, welcome) = App::login(&b.app_ws(), Address::phone(p), 0).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        terms.push((Address::phone(p), Term::Phone(Box::new(app))));
    }
    let (s, g) = b
        .api(
            reqwest::Method::PUT,
            "/v1/groups/porch",
            Some(json!({"members": [{"kind": "device", "id": d3}, {"kind": "phone", "id": p2}]})),
        )
        .await;
    assert!((200..300).contains(&s), "{s} {g}");

    let dev = |id: u32| json!({"kind": "device", "id": id});
    let phone = |id: u32| json!({"kind": "phone", "id": id});
    let all: Vec<Address> = terms.iter().map(|(a, _)| *a).collect();
    let cases: Vec<(serde_json::Value, Vec<Address>)> = vec![
        (json!({"terminal": dev(d2)}), vec![Address::device(d2)]),
        (
            json!({"list": [dev(d1), phone(p1)]}),
            vec![Address::device(d1), Address::phone(p1)],
        ),
        (
            json!({"group": "porch"}),
            vec![Address::device(d3), Address::phone(p2)],
        ),
        (json!("all_devices"), all[..3].to_vec()),
        (json!("all_phones"), all[3..].to_vec()),
        (json!("everyone"), all.clone()),
    ];
    for (i, (target, expected)) in cases.into_iter().enumerate() {
        let text = format!("push {i}");
        let (s, out) = b
            .post("/v1/push", json!({"target": target, "text": text}))
            .await;
        assert_eq!(s, 200, "{target}: {out}");
        for (address, term) in &mut terms {
            let wait = if expected.contains(address) {
                WAIT
            } else {
                Duration::from_millis(300)
            };
            let got = term.delivery(wait).await;
            if expected.contains(address) {
                assert_eq!(
                    got,
                    Some(text.clone().into_bytes()),
                    "{target} -> {address}"
                );
            } else {
                assert_eq!(got, None, "{target} must not reach {address}");
            }
        }
    }

    // TTL: of two pushes stored for an offline device, the one whose TTL ran out is not
    // delivered when the device logs in; the other is.
    let offline = 94u32;
    for (text, ttl) in [("short", 1), ("long", 3600)] {
        let (s, out) = b
            .post(
                "/v1/push",
                json!({"target": {"terminal": dev(offline)}, "text": text, "ttl_secs": ttl}),
            )
            .await;
        assert_eq!(s, 200, "{out}");
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut late = login(Wire::udp(b.udp()).await, offline, 0).await.unwrap();
    match late.next_event(WAIT).await {
        Some(Got::Deliver { payload, .. }) => assert_eq!(payload, b"long"),
        other => panic!("expected the unexpired push, got {other:?}"),
    }
    assert_eq!(late.next_event(Duration::from_millis(500)).await, None);
    b.stop().await;
}

#[tokio::test]
async fn total_connection_limit_and_oversized_app_message_each_get_their_code() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.max_connections = 2;
        c.limits.max_app_message_bytes = 512;
    })
    .await;
    // Two sessions fill the broker (UDP and WebSocket count alike).
    let mut first = login(Wire::udp(b.udp()).await, 51, 0).await.unwrap();
    let (mut phone, welcome) = App::login(&b.app_ws(), Address::phone(9), 0).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // The third is refused: SERVER_BUSY on a WebSocket close and in a UDP REJECT.
    let mut ws = Wire::ws(&b.device_ws()).await;
    assert_eq!(ws.close_code(WAIT).await, Some(4000 + Code::SERVER_BUSY.0));
    let refused = login(Wire::udp(b.udp()).await, 52, 0).await.err();
    assert_eq!(refused.map(|r| r.code), Some(Code::SERVER_BUSY));
    assert!(b.counted("limit=\"max_connections\""));
    // The admitted ones keep working.
    first.send(Body::Ping).await;
    assert_eq!(first.next(WAIT).await.unwrap().2, Got::Pong);

    // A UDP session that ends gives its slot back: once the first device said Goodbye, the
    // device refused above gets in (retried while the Goodbye is on its way).
    first
        .send(Body::Goodbye {
            reason: Code::NORMAL,
        })
        .await;
    let mut second = udp_login_once_admitted("127.0.0.1", b.udp(), 52, Code::SERVER_BUSY)
        .await
        .expect("the ended session's slot came back");
    second.send(Body::Ping).await;
    assert_eq!(second.next(WAIT).await.unwrap().2, Got::Pong);

    // An app message over max_app_message_bytes: error TOO_LARGE, then close 1009; only that
    // connection is affected.
    let big = format!(
        "{{\"type\":\"send\",\"to\":{{\"kind\":\"device\",\"id\":51}},\"payload\":\"{}\",\"ref\":1}}",
        "A".repeat(600)
    );
    phone
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Text(big.into()))
        .await
        .unwrap();
    let e = phone.recv(WAIT).await.expect("an error before the close");
    assert_eq!(
        (e["type"].as_str(), e["code"].as_u64()),
        (Some("error"), Some(u64::from(Code::TOO_LARGE.0))),
        "{e}"
    );
    assert!(b.counted("limit=\"max_app_message_bytes\""));
    second.send(Body::Ping).await;
    assert_eq!(second.next(WAIT).await.unwrap().2, Got::Pong);
    b.stop().await;
}

#[tokio::test]
async fn a_full_offline_inbox_evicts_or_rejects_as_configured_and_counts_it() {
    use broker::config::EvictionPolicy;
    for (policy, kept, counter) in [
        (
            EvictionPolicy::DropOldest,
            ["two", "three"],
            "broker_offline_evicted_total",
        ),
        (
            EvictionPolicy::RejectNew,
            ["one", "two"],
            "broker_offline_rejected_total",
        ),
    ] {
        let b = TestBroker::start_with(IdProfile::Plug, |c| {
            c.offline.max_per_terminal = 2;
            c.offline.eviction = policy;
        })
        .await;
        let mut outcomes = Vec::new();
        for text in ["one", "two", "three"] {
            let (s, out) = b
                .post(
                    "/v1/push",
                    json!({"target": {"terminal": {"kind": "device", "id": 44}}, "text": text}),
                )
                .await;
            assert_eq!(s, 200, "{policy:?}: {out}");
            outcomes.push((out["evicted"].as_u64(), out["rejected"].as_u64()));
        }
        let third = outcomes[2];
        match policy {
            EvictionPolicy::DropOldest => assert_eq!(third.0, Some(1), "{outcomes:?}"),
            EvictionPolicy::RejectNew => assert_eq!(third.1, Some(1), "{outcomes:?}"),
        }
        let sample = b
            .metrics()
            .lines()
            .find(|l| l.starts_with(counter))
            .map(str::to_owned);
        assert_eq!(
            sample.as_deref().and_then(|l| l.rsplit(' ').next()),
            Some("1"),
            "{policy:?}: {sample:?}"
        );
        let mut dev = login(Wire::udp(b.udp()).await, 44, 0).await.unwrap();
        let mut got = Vec::new();
        while let Some(Got::Deliver { payload, .. }) =
            dev.next_event(Duration::from_millis(700)).await
        {
            got.push(String::from_utf8(payload).unwrap());
        }
        assert_eq!(got, kept, "{policy:?}");
        b.stop().await;
    }
}
