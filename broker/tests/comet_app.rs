//! Apps over the JSON WebSocket transport, speaking raw JSON as a browser app would: token auth
//! in the first message, send to a bound device (which receives it over UDP), refusal when not
//! bound, ordered offline replay after since_id, and auth failures.

use crate::comet_support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::terminal::{Address, IdProfile};
use comet_support::*;
use serde_json::json;

#[tokio::test]
async fn phone_sends_to_its_bound_device_and_sees_presence() {
    let b = TestBroker::start(IdProfile::Plug).await;
    b.bind(3, 42).await;
    let (mut app, welcome) = App::login(&b.app_ws(), Address::phone(3), 0).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["address"], json!({"kind": "phone", "id": 3}));
    let mut dev = login(Wire::udp(b.udp()).await, 42, 0).await.unwrap();
    let presence = app.recv(WAIT).await.unwrap();
    assert_eq!(
        presence,
        json!({"type": "presence", "who": {"kind": "device", "id": 42}, "online": true})
    );
    app.send(json!({"type": "send", "to": {"kind": "device", "id": 42}, "payload": B64.encode("on"), "ref": 7}))
        .await;
    assert_eq!(
        app.recv(WAIT).await.unwrap(),
        json!({"type": "ok", "ref": 7})
    );
    match dev.next_event(WAIT).await {
        Some(Got::Deliver { from, payload, .. }) => {
            assert_eq!((from, payload), (Some(Address::phone(3)), b"on".to_vec()));
        }
        other => panic!("{other:?}"),
    }
    // The device answers; the phone receives it and acks.
    dev.send(shared_protocol::frame::Body::Send {
        to: Address::phone(3),
        payload: b"done",
    })
    .await;
    let d = app.recv(WAIT).await.unwrap();
    assert_eq!(d["type"], "deliver", "{d}");
    assert_eq!(d["from"], json!({"kind": "device", "id": 42}));
    assert_eq!(d["payload"], B64.encode("done"));
    app.send(json!({"type": "ack", "msg_id": d["msg_id"]}))
        .await;
    app.send(json!({"type": "ping"})).await;
    assert_eq!(app.recv(WAIT).await.unwrap()["type"], "pong");
    // Unbound device: NOT_AUTHORIZED with the ref; the session goes on.
    app.send(json!({"type": "send", "to": {"kind": "device", "id": 43}, "payload": "", "ref": 8}))
        .await;
    let e = app.recv(WAIT).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_u64(), e["ref"].as_u64()),
        (Some("error"), Some(23), Some(8))
    );
    // Device 0: INVALID_ID (4), not NOT_AUTHORIZED: the address is checked before the binding.
    app.send(json!({"type": "send", "to": {"kind": "device", "id": 0}, "payload": "", "ref": 9}))
        .await;
    let e = app.recv(WAIT).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_u64(), e["ref"].as_u64()),
        (Some("error"), Some(4), Some(9)),
        "{e}"
    );
    // Malformed JSON: error MALFORMED, ref null, session goes on.
    app.ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "{nope".into(),
        ))
        .await
        .unwrap();
    let e = app.recv(WAIT).await.unwrap();
    assert_eq!((e["code"].as_u64(), &e["ref"]), (Some(1), &json!(null)));
    // Device going offline is announced.
    dev.send(shared_protocol::frame::Body::Goodbye {
        reason: shared_protocol::codes::Code::NORMAL,
    })
    .await;
    let p = app.recv(WAIT).await.unwrap();
    assert_eq!(
        p,
        json!({"type": "presence", "who": {"kind": "device", "id": 42}, "online": false})
    );
    app.send(json!({"type": "goodbye"})).await;
    b.stop().await;
}

use futures_util::SinkExt;

#[tokio::test]
async fn offline_messages_replay_in_order_after_since_id() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let (s, r) = b
            .post(
                "/v1/push",
                json!({"target": {"terminal": {"kind": "phone", "id": 5}}, "text": text}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        ids.push(r["msg_id"].as_u64().unwrap());
    }
    let (mut app, welcome) = App::login(&b.app_ws(), Address::phone(5), ids[0]).await;
    assert_eq!(welcome["type"], "welcome");
    for (id, text) in ids[1..].iter().zip(["two", "three"]) {
        let d = app.recv(WAIT).await.unwrap();
        assert_eq!(
            (d["msg_id"].as_u64(), d["payload"].as_str()),
            (Some(*id), Some(B64.encode(text).as_str()))
        );
        assert_eq!(d["from"], json!(null));
    }
    assert!(
        app.recv(Duration::from_millis(200)).await.is_none(),
        "nothing more"
    );
    b.stop().await;
}

#[tokio::test]
async fn auth_must_come_first_and_tokens_are_checked() {
    let b = TestBroker::start_with(IdProfile::Signed, |c| c.timeouts.handshake_secs = 1).await;
    // Not auth first: reject UNEXPECTED, then close.
    let mut app = App::connect(&b.app_ws()).await;
    app.send(json!({"type": "ping"})).await;
    let r = app.recv(WAIT).await.unwrap();
    assert_eq!(
        (r["type"].as_str(), r["code"].as_u64()),
        (Some("reject"), Some(7))
    );
    // Expired token: TOKEN_EXPIRED.
    let mut app = App::connect(&b.app_ws()).await;
    let token = app_token(Address::phone(-4i32 as u32), -10);
    app.send(json!({"type": "auth", "token": token})).await;
    assert_eq!(app.recv(WAIT).await.unwrap()["code"], 21);
    // Forged signature: BAD_TOKEN.
    let mut app = App::connect(&b.app_ws()).await;
    let forged = shared_protocol::json::mint(
        &[0u8; 32],
        &shared_protocol::json::Claims {
            address: Address::phone(-4i32 as u32),
            exp: u64::MAX / 2,
        },
    );
    app.send(json!({"type": "auth", "token": forged})).await;
    assert_eq!(app.recv(WAIT).await.unwrap()["code"], 22);
    // Signed profile: a positive phone id is KIND_MISMATCH.
    let (_, r) = App::login(&b.app_ws(), Address::phone(4), 0).await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_u64()),
        (Some("reject"), Some(5))
    );
    // Silence: closed after the handshake timeout.
    let mut idle = App::connect(&b.app_ws()).await;
    let r = idle.recv(Duration::from_secs(3)).await.unwrap();
    assert_eq!(r["code"], 36, "{r}");
    // A valid signed phone logs in twice (multi-session) and both get a push.
    let (mut p1, w1) = App::login(&b.app_ws(), Address::phone(-4i32 as u32), 0).await;
    let (mut p2, w2) = App::login(&b.app_ws(), Address::phone(-4i32 as u32), 0).await;
    assert_eq!(
        (w1["type"].as_str(), w2["type"].as_str()),
        (Some("welcome"), Some("welcome"))
    );
    let (s, _) = b
        .post(
            "/v1/push",
            json!({"target": {"terminal": {"kind": "phone", "id": -4}}, "text": "hi"}),
        )
        .await;
    assert_eq!(s, 200);
    for p in [&mut p1, &mut p2] {
        assert_eq!(p.recv(WAIT).await.unwrap()["type"], "deliver");
    }
    // A send to a device with a phone's sign: KIND_MISMATCH (5), not NOT_AUTHORIZED.
    p1.send(json!({"type": "send", "to": {"kind": "device", "id": -9}, "payload": "", "ref": 3}))
        .await;
    let e = p1.recv(WAIT).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_u64(), e["ref"].as_u64()),
        (Some("error"), Some(5), Some(3)),
        "{e}"
    );
    b.stop().await;
}
