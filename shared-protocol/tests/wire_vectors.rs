//! Checks the published test vectors `docs/vectors/frames.json` and `docs/vectors/packets.json`.
//!
//! Each valid case gives field values and the expected bytes: the test builds the value from the
//! fields, encodes it and compares the bytes (so any change of the encoding fails here), and
//! decodes the bytes and compares the value. Each invalid case gives bytes a receiver must refuse
//! and the error this crate reports.
//!
//! To regenerate the files after a deliberate, versioned format change:
//! `PLUGCLOUD_WRITE_VECTORS=1 cargo test -p shared-protocol --test wire_vectors -- --ignored`
//! (the case inputs are in `frame_cases` / `packet_cases` below; review the diff).

use serde_json::{Value, json};
use shared_protocol::codes::Code;
use shared_protocol::frame::{Ack, Body, Frame};
use shared_protocol::ids::{Address, Kind};
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::packet::{Challenge, DataHeader, Hello, Login, Packet, Reject, WelcomeHeader};

const FRAMES: &str = include_str!("../../docs/vectors/frames.json");
const PACKETS: &str = include_str!("../../docs/vectors/packets.json");
const FRAMES_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors/frames.json");
const PACKETS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors/packets.json");

/// Owned storage a borrowed `Frame` can point into.
struct Store {
    bytes: Vec<Vec<u8>>,
    strings: Vec<String>,
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn address(v: &Value) -> Address {
    let kind = match v["kind"].as_str().expect("kind") {
        "device" => Kind::Device,
        "phone" => Kind::Phone,
        other => panic!("bad kind {other}"),
    };
    Address {
        kind,
        id: u32::try_from(u64_of(v, "id")).expect("id fits u32"),
    }
}

fn store_of(body: &Value) -> Store {
    let mut store = Store {
        bytes: Vec::new(),
        strings: Vec::new(),
    };
    if let Some(p) = body.get("payload") {
        store.bytes.push(unhex(p));
    }
    for key in ["topic", "name", "path"] {
        if let Some(s) = body.get(key) {
            store
                .strings
                .push(s.as_str().expect("string field").to_owned());
        }
    }
    store
}

fn frame<'a>(v: &Value, store: &'a Store) -> Frame<'a> {
    let b = &v["body"];
    let n16 = |k: &str| u16::try_from(u64_of(b, k)).expect("u16");
    let n32 = |k: &str| u32::try_from(u64_of(b, k)).expect("u32");
    let payload = || store.bytes[0].as_slice();
    let text = || store.strings[0].as_str();
    let body = match b["type"].as_str().expect("body type") {
        "Welcome" => Body::Welcome {
            session_id: n32("session_id"),
            heartbeat_secs: n16("heartbeat_secs"),
            session_timeout_secs: n16("session_timeout_secs"),
            max_payload: n16("max_payload"),
            server_time_ms: u64_of(b, "server_time_ms"),
        },
        "Ping" => Body::Ping,
        "Pong" => Body::Pong {
            server_time_ms: u64_of(b, "server_time_ms"),
        },
        "AckOnly" => Body::AckOnly,
        "Deliver" => Body::Deliver {
            msg_id: u64_of(b, "msg_id"),
            from: if b["from"].is_null() {
                None
            } else {
                Some(address(&b["from"]))
            },
            payload: payload(),
        },
        "Send" => Body::Send {
            to: address(&b["to"]),
            payload: payload(),
        },
        "Upload" => Body::Upload {
            upload_id: n32("upload_id"),
            topic: text(),
            payload: payload(),
        },
        "UploadAck" => Body::UploadAck {
            upload_id: n32("upload_id"),
        },
        "Command" => Body::Command {
            cmd_id: n32("cmd_id"),
            name: text(),
            payload: payload(),
        },
        "CommandResult" => Body::CommandResult {
            cmd_id: n32("cmd_id"),
            status: n16("status"),
            payload: payload(),
        },
        "Request" => Body::Request {
            req_id: n32("req_id"),
            path: text(),
            payload: payload(),
        },
        "Response" => Body::Response {
            req_id: n32("req_id"),
            status: n16("status"),
            payload: payload(),
        },
        "Presence" => Body::Presence {
            who: address(&b["who"]),
            online: b["online"].as_bool().expect("online"),
        },
        "Kick" => Body::Kick {
            reason: Code(n16("reason")),
        },
        "Goodbye" => Body::Goodbye {
            reason: Code(n16("reason")),
        },
        "Error" => Body::Error {
            code: Code(n16("code")),
            about_seq: n32("about_seq"),
        },
        other => panic!("unknown body {other}"),
    };
    Frame {
        seq: u32::try_from(u64_of(v, "seq")).expect("seq"),
        ack: Ack {
            next: u32::try_from(u64_of(&v["ack"], "next")).expect("next"),
            mask: u32::try_from(u64_of(&v["ack"], "mask")).expect("mask"),
        },
        body,
    }
}

fn encode_frame(v: &Value) -> String {
    let store = store_of(&v["body"]);
    let f = frame(v, &store);
    let mut buf = [0u8; MAX_PACKET];
    hex::encode(f.encode(&mut buf).expect("vector frame encodes"))
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    unhex(v).try_into().expect("array length")
}

fn packet(v: &Value, sealed: &mut Vec<u8>) -> Packet<'static> {
    let addr = || Address {
        kind: Kind::from_u8(u8::try_from(u64_of(v, "kind")).expect("kind")).expect("kind"),
        id: u32::try_from(u64_of(v, "id")).expect("id"),
    };
    match v["type"].as_str().expect("packet type") {
        "HELLO" => Packet::Hello(Hello {
            address: addr(),
            client_nonce: arr(&v["client_nonce"]),
        }),
        "CHALLENGE" => Packet::Challenge(Challenge {
            timestamp_ms: u64_of(v, "timestamp_ms"),
            cookie: arr(&v["cookie"]),
        }),
        "LOGIN" => Packet::Login(Login {
            address: addr(),
            client_nonce: arr(&v["client_nonce"]),
            timestamp_ms: u64_of(v, "timestamp_ms"),
            cookie: arr(&v["cookie"]),
            since_id: u64_of(v, "since_id"),
            upload_epoch: u64_of(v, "upload_epoch"),
            proof: arr(&v["proof"]),
        }),
        "REJECT" => Packet::Reject(Reject {
            code: Code(u16::try_from(u64_of(v, "code")).expect("code")),
            max_version: u8::try_from(u64_of(v, "max_version")).expect("version"),
            retry_after_ms: u32::try_from(u64_of(v, "retry_after_ms")).expect("retry"),
        }),
        "WELCOME" => {
            *sealed = unhex(&v["sealed"]);
            let sealed: &'static [u8] = Box::leak(sealed.clone().into_boxed_slice());
            Packet::Welcome {
                header: WelcomeHeader {
                    session_id: u32::try_from(u64_of(v, "session_id")).expect("sid"),
                    broker_nonce: arr(&v["broker_nonce"]),
                },
                sealed,
            }
        }
        "DATA" => {
            *sealed = unhex(&v["sealed"]);
            // Leak-free 'static: the sealed bytes are compared through `encode` only.
            let sealed: &'static [u8] = Box::leak(sealed.clone().into_boxed_slice());
            Packet::Data {
                header: DataHeader {
                    session_id: u32::try_from(u64_of(v, "session_id")).expect("sid"),
                    counter: u64_of(v, "counter"),
                },
                sealed,
            }
        }
        other => panic!("unknown packet {other}"),
    }
}

fn encode_packet(v: &Value) -> String {
    let mut sealed = Vec::new();
    let p = packet(v, &mut sealed);
    let mut buf = [0u8; MAX_PACKET];
    hex::encode(p.encode(&mut buf).expect("vector packet encodes"))
}

fn check_header(doc: &Value) {
    assert_eq!(
        doc["version"], 3,
        "vector file version (the protocol version)"
    );
    assert!(doc["description"].as_str().is_some_and(|d| !d.is_empty()));
}

#[test]
fn frame_vectors() {
    let doc: Value = serde_json::from_str(FRAMES).expect("frames.json is JSON");
    check_header(&doc);
    let cases = doc["valid"].as_array().expect("valid cases");
    let mut seen = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let expected = case["hex"].as_str().expect("hex");
        assert_eq!(encode_frame(&case["frame"]), expected, "encoding of {name}");
        let bytes = hex::decode(expected).expect("hex");
        let store = store_of(&case["frame"]["body"]);
        assert_eq!(
            Frame::decode(&bytes),
            Ok(frame(&case["frame"], &store)),
            "decoding of {name}"
        );
        seen.insert(Frame::decode(&bytes).unwrap().body.index());
    }
    assert_eq!(seen.len(), 16, "every body variant has a vector");
    for case in doc["invalid"].as_array().expect("invalid cases") {
        let name = case["name"].as_str().expect("name");
        let bytes = unhex(&case["hex"]);
        let err = Frame::decode(&bytes).expect_err(name);
        assert_eq!(
            format!("{err:?}"),
            case["error"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(err.code().0 as u64, u64_of(case, "code"), "{name}");
    }
}

#[test]
fn packet_vectors() {
    let doc: Value = serde_json::from_str(PACKETS).expect("packets.json is JSON");
    check_header(&doc);
    for case in doc["valid"].as_array().expect("valid cases") {
        let name = case["name"].as_str().expect("name");
        let expected = case["hex"].as_str().expect("hex");
        assert_eq!(
            encode_packet(&case["packet"]),
            expected,
            "encoding of {name}"
        );
        let bytes = hex::decode(expected).expect("hex");
        let mut sealed = Vec::new();
        assert_eq!(
            Packet::decode(&bytes),
            Ok(packet(&case["packet"], &mut sealed)),
            "decoding of {name}"
        );
    }
    for case in doc["invalid"].as_array().expect("invalid cases") {
        let name = case["name"].as_str().expect("name");
        let bytes = unhex(&case["hex"]);
        let err = Packet::decode(&bytes).expect_err(name);
        assert_eq!(
            format!("{err:?}"),
            case["error"].as_str().unwrap(),
            "{name}"
        );
        let expected = case["broker_answer"].as_u64().map(|c| Code(c as u16));
        assert!(
            case.get("broker_answer").is_some(),
            "{name}: broker_answer missing"
        );
        assert_eq!(
            broker_answer(&bytes),
            expected,
            "{name}: what a broker answers"
        );
    }
}

/// What the broker's handshake answers when it receives `bytes`: the code of its REJECT (never
/// longer than `bytes`), or `None` when it drops them.
fn broker_answer(bytes: &[u8]) -> Option<Code> {
    use shared_protocol::handshake::{Acceptor, HelloReply, SessionGrant, WelcomeParams};
    use shared_protocol::ids::IdProfile;
    use shared_protocol::keys::{CookieSecret, PeerAddr};
    let acceptor = Acceptor::new(IdProfile::Plug, CookieSecret([9; 32]));
    let peer = PeerAddr::V4([192, 0, 2, 1], 4000);
    let mut out = [0u8; MAX_PACKET];
    let answer = match bytes.get(1) {
        Some(0x01) => match acceptor.on_hello(&peer, bytes, 0, &mut out) {
            Ok(HelloReply::Reject { code, packet }) => Some((code, packet.len())),
            Ok(HelloReply::Challenge(_)) => panic!("an invalid HELLO was challenged"),
            Err(_) => None,
        },
        Some(0x03) => {
            let grant = SessionGrant {
                session_id: 1,
                broker_nonce: [0; 16],
            };
            let params = WelcomeParams {
                heartbeat_secs: 30,
                session_timeout_secs: 90,
                max_payload: 1024,
                server_time_ms: 0,
            };
            let err = acceptor
                .on_login(&peer, bytes, 0, |_| None, grant, &params, &mut out)
                .expect_err("an invalid LOGIN was accepted");
            err.code().map(|c| {
                let mut reject = [0u8; 16];
                let n = shared_protocol::handshake::reject_packet(c, 0, &mut reject)
                    .expect("REJECT fits")
                    .len();
                (c, n)
            })
        }
        // A broker answers nothing but HELLO and LOGIN before a session exists.
        _ => None,
    };
    answer.map(|(code, len)| {
        assert!(
            len <= bytes.len(),
            "a {len}-byte REJECT for {} bytes",
            bytes.len()
        );
        code
    })
}

fn frame_cases() -> Vec<(&'static str, Value)> {
    let ack = json!({"next": 3, "mask": 5});
    // A receiver's `next` starts at 1 (section 5): the acknowledgement of a fresh session.
    let start = json!({"next": 1, "mask": 0});
    let f = |seq: u32, ack: &Value, body: Value| json!({"seq": seq, "ack": ack, "body": body});
    vec![
        (
            "welcome",
            f(
                0,
                &start,
                json!({"type": "Welcome", "session_id": 0x1234_5678u32, "heartbeat_secs": 30, "session_timeout_secs": 90, "max_payload": 1024, "server_time_ms": 1_767_225_600_000u64}),
            ),
        ),
        ("ping", f(0, &ack, json!({"type": "Ping"}))),
        ("ping_session_start", f(0, &start, json!({"type": "Ping"}))),
        (
            "pong",
            f(
                0,
                &ack,
                json!({"type": "Pong", "server_time_ms": 1_767_225_600_123u64}),
            ),
        ),
        (
            "ack_only",
            f(
                0,
                &json!({"next": 300, "mask": 0x8000_0001u32}),
                json!({"type": "AckOnly"}),
            ),
        ),
        (
            "deliver_from_phone",
            f(
                5,
                &json!({"next": 3, "mask": 1}),
                json!({"type": "Deliver", "msg_id": 300, "from": {"kind": "phone", "id": 7}, "payload": "6f6e"}),
            ),
        ),
        (
            "deliver_from_backend_max_id",
            f(
                1,
                &start,
                json!({"type": "Deliver", "msg_id": (1u64 << 53) - 1, "from": null, "payload": ""}),
            ),
        ),
        (
            "send",
            f(
                2,
                &ack,
                json!({"type": "Send", "to": {"kind": "device", "id": 4_294_967_295u32}, "payload": "00ff10"}),
            ),
        ),
        (
            "upload",
            f(
                3,
                &ack,
                json!({"type": "Upload", "upload_id": 1, "topic": "power/w", "payload": "7b2277223a31327d"}),
            ),
        ),
        (
            "upload_ack",
            f(9, &ack, json!({"type": "UploadAck", "upload_id": 1})),
        ),
        (
            "command",
            f(
                128,
                &ack,
                json!({"type": "Command", "cmd_id": 77, "name": "relay", "payload": "01"}),
            ),
        ),
        (
            "command_result",
            f(
                4,
                &ack,
                json!({"type": "CommandResult", "cmd_id": 77, "status": 0, "payload": ""}),
            ),
        ),
        (
            "request",
            f(
                5,
                &ack,
                json!({"type": "Request", "req_id": 2, "path": "time/now", "payload": ""}),
            ),
        ),
        (
            "response",
            f(
                6,
                &ack,
                json!({"type": "Response", "req_id": 2, "status": 200, "payload": "0102"}),
            ),
        ),
        (
            "presence",
            f(
                7,
                &ack,
                json!({"type": "Presence", "who": {"kind": "phone", "id": 0xFFFF_FFF9u32}, "online": true}),
            ),
        ),
        (
            "kick_replaced",
            f(0, &ack, json!({"type": "Kick", "reason": Code::REPLACED.0})),
        ),
        (
            "goodbye_normal",
            f(
                0,
                &start,
                json!({"type": "Goodbye", "reason": Code::NORMAL.0}),
            ),
        ),
        (
            "error_target_offline",
            f(
                8,
                &ack,
                json!({"type": "Error", "code": Code::TARGET_OFFLINE.0, "about_seq": 2}),
            ),
        ),
    ]
}

fn frame_invalid() -> Vec<(&'static str, &'static str, &'static str, Code)> {
    vec![
        ("empty", "", "Truncated", Code::MALFORMED),
        (
            "trailing_byte_after_ping",
            "0000000100",
            "TrailingBytes",
            Code::MALFORMED,
        ),
        (
            "unknown_body_16",
            "00000010",
            "UnknownBody(16)",
            Code::MALFORMED,
        ),
        (
            "ping_with_seq_1",
            "01000001",
            "Limit(SeqMismatch)",
            Code::MALFORMED,
        ),
        (
            "upload_ack_with_seq_0",
            "0000000701",
            "Limit(SeqMismatch)",
            Code::MALFORMED,
        ),
        (
            "presence_bool_2",
            "0100000c000102",
            "Malformed",
            Code::MALFORMED,
        ),
        (
            "deliver_option_tag_2",
            "01000004010200",
            "Malformed",
            Code::MALFORMED,
        ),
        (
            "overlong_u32_varint",
            "ffffffff7f000001",
            "Malformed",
            Code::MALFORMED,
        ),
        (
            "topic_not_utf8",
            "010000060101ff00",
            "BadUtf8",
            Code::MALFORMED,
        ),
        (
            "deliver_msg_id_2_pow_53",
            "0100000480808080808080100000",
            "Limit(MsgIdOutOfRange)",
            Code::MALFORMED,
        ),
        (
            "send_payload_length_1025_truncated",
            "010000050001810800",
            "Truncated",
            Code::MALFORMED,
        ),
    ]
}

fn packet_cases() -> Vec<(&'static str, Value)> {
    let nonce = "000102030405060708090a0b0c0d0e0f";
    let cookie = "c0".repeat(32);
    let proof = "a5".repeat(32);
    vec![
        (
            "hello",
            json!({"type": "HELLO", "kind": 0, "id": 42, "client_nonce": nonce}),
        ),
        (
            "challenge",
            json!({"type": "CHALLENGE", "timestamp_ms": 1_767_225_600_000u64, "cookie": cookie}),
        ),
        (
            "login",
            json!({"type": "LOGIN", "kind": 0, "id": 42, "client_nonce": nonce, "timestamp_ms": 1_767_225_600_000u64, "cookie": cookie, "since_id": 300, "upload_epoch": 0x0123_4567_89ab_cdefu64, "proof": proof}),
        ),
        (
            "reject_unsupported_version",
            json!({"type": "REJECT", "code": Code::UNSUPPORTED_VERSION.0, "max_version": 3, "retry_after_ms": 0}),
        ),
        (
            "reject_busy",
            json!({"type": "REJECT", "code": Code::SERVER_BUSY.0, "max_version": 3, "retry_after_ms": 5000}),
        ),
        (
            "welcome",
            json!({"type": "WELCOME", "session_id": 0x1234_5678u32, "broker_nonce": "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf", "sealed": "00".repeat(20)}),
        ),
        (
            "data",
            json!({"type": "DATA", "session_id": 0x1234_5678u32, "counter": 1, "sealed": "00".repeat(20)}),
        ),
    ]
}

/// Version 2's `login` vector (since_id 300, no upload_epoch).
const V2_LOGIN_HEX: &str = "0203002a000102030405060708090a0b0c0d0e0f80d0eab6b733c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0ac02a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

/// Invalid packets: name, hex, the reference decoder's error, and what a broker answers when it
/// receives the bytes (`None`: nothing, the packet is dropped silently; section 2 and 3.2).
fn packet_invalid() -> Vec<(&'static str, String, &'static str, Option<Code>)> {
    let short_hello = format!("0301002a{}", "00".repeat(16 + 107));
    let dirty_hello = format!("0301002a{}01", "00".repeat(16 + 107));
    vec![
        ("too_short", "03".into(), "Truncated", None),
        (
            "version_1_hello",
            "0101".into(),
            "UnsupportedVersion { version: 1, packet_type: 1 }",
            // A REJECT (5 bytes) would be longer than these 2: no answer (anti-amplification).
            None,
        ),
        ("unknown_type", "0306".into(), "UnknownType(6)", None),
        ("hello_127_bytes", short_hello, "HelloTooShort", None),
        ("hello_nonzero_padding", dirty_hello, "BadPadding", None),
        (
            "hello_unknown_kind",
            format!("030102{}", "00".repeat(125)),
            "Malformed",
            None,
        ),
        (
            "reject_trailing_byte",
            "030421030000".into(),
            "TrailingBytes",
            None,
        ),
        (
            "data_session_0",
            format!("031000000000{}", "00".repeat(8 + 20)),
            "InvalidSessionId",
            None,
        ),
        (
            "data_counter_2_pow_48",
            format!("0310010000000000000000000100{}", "00".repeat(20)),
            "CounterOutOfRange",
            None,
        ),
        (
            "data_too_short",
            format!("0310010000000000000000000000{}", "00".repeat(19)),
            "Truncated",
            None,
        ),
        (
            "welcome_session_0",
            format!("030500000000{}", "00".repeat(16 + 20)),
            "InvalidSessionId",
            None,
        ),
        (
            "welcome_too_short",
            format!("030501000000{}", "00".repeat(16 + 19)),
            "Truncated",
            None,
        ),
        (
            "version_1_hello_padded",
            format!("0101002a{}", "00".repeat(124)),
            "UnsupportedVersion { version: 1, packet_type: 1 }",
            Some(Code::UNSUPPORTED_VERSION),
        ),
        (
            "login_truncated",
            format!("0303002a{}", "00".repeat(16)),
            "Truncated",
            Some(Code::MALFORMED),
        ),
        (
            "login_truncated_4_bytes",
            "0303002a".into(),
            "Truncated",
            // MALFORMED's REJECT is 5 bytes: longer than the packet, so no answer.
            None,
        ),
        (
            // Version 2's LOGIN vector, byte for byte: a version-3 broker drops it unanswered.
            "version_2_login",
            V2_LOGIN_HEX.into(),
            "UnsupportedVersion { version: 2, packet_type: 3 }",
            None,
        ),
        (
            "version_2_hello_padded",
            format!("0201002a{}", "00".repeat(124)),
            "UnsupportedVersion { version: 2, packet_type: 1 }",
            Some(Code::UNSUPPORTED_VERSION),
        ),
        (
            // The login vector with upload_epoch 0 (the varint byte before the proof).
            "login_upload_epoch_0",
            format!(
                "0303002a000102030405060708090a0b0c0d0e0f80d0eab6b733{}ac0200{}",
                "c0".repeat(32),
                "a5".repeat(32)
            ),
            "OutOfRange",
            Some(Code::MALFORMED),
        ),
    ]
}

/// Rewrites the vector files from the case inputs above (see the module docs).
#[test]
#[ignore = "writes docs/vectors; run deliberately"]
fn write_vectors() {
    if std::env::var_os("PLUGCLOUD_WRITE_VECTORS").is_none() {
        return;
    }
    let valid: Vec<Value> = frame_cases()
        .into_iter()
        .map(|(name, frame)| json!({"name": name, "frame": frame, "hex": encode_frame(&frame)}))
        .collect();
    let invalid: Vec<Value> = frame_invalid()
        .into_iter()
        .map(|(name, hex, error, code)| json!({"name": name, "hex": hex, "error": error, "code": code.0}))
        .collect();
    let doc = json!({
        "version": 3,
        "description": "Plugcloud protocol v3 frame vectors (docs/protocol.md section 4). `valid`: a frame's fields and its postcard encoding (hex); an implementation must produce exactly these bytes and decode them to these fields. Payloads are hex, strings UTF-8, codes numbers. `invalid`: bytes a receiver must refuse; `error` is the reference implementation's error and `code` the code of section 9 it maps to.",
        "valid": valid,
        "invalid": invalid,
    });
    std::fs::write(
        FRAMES_PATH,
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();

    let valid: Vec<Value> = packet_cases()
        .into_iter()
        .map(|(name, p)| json!({"name": name, "packet": p, "hex": encode_packet(&p)}))
        .collect();
    let invalid: Vec<Value> = packet_invalid()
        .into_iter()
        .map(|(name, hex, error, answer)| {
            json!({"name": name, "hex": hex, "error": error, "broker_answer": answer.map(|c| c.0)})
        })
        .collect();
    let doc = json!({
        "version": 3,
        "description": "Plugcloud protocol v3 packet vectors (docs/protocol.md section 2): whole packets including the version and type bytes. `valid`: fields and encoding (hex); byte strings are hex. HELLO is shown padded to 128 bytes. WELCOME's and DATA's `sealed` is opaque here (ciphertext and tag; section 3 vectors cover sealing). `invalid`: bytes a receiver must refuse, with the reference implementation's error and `broker_answer`: the section 9 code of the REJECT a broker sends when it receives them, or null when it drops them without an answer.",
        "valid": valid,
        "invalid": invalid,
    });
    std::fs::write(
        PACKETS_PATH,
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();
}
