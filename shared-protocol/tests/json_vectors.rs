//! Checks the published app-transport vectors `docs/vectors/json.json` (messages, section 7.2)
//! and `docs/vectors/token.json` (tokens, section 7.3).
//!
//! * `json.json`, `app_to_broker` / `broker_to_app`: each case gives the message's `text` and its
//!   decoded value (`message`, payload as hex). The test builds the value from `message`, encodes
//!   it and compares the text (canonical form, member order as in the spec), then decodes the
//!   text and compares the value. `accepted`: texts a receiver must accept although they are not
//!   canonical (missing optional members, negative ids, unknown members, other member order),
//!   with the canonical text they mean. `invalid`: texts a receiver must refuse, with the error
//!   variant of this crate and the section 9 code it maps to.
//! * `token.json`: a secret; `valid` tokens with their header and claims JSON, the expected token
//!   string, the decoded address and the identity check per ID profile; `invalid` tokens with the
//!   time they are checked at, the error and its code. Valid tokens are recomputed with a plain
//!   HMAC over `b64url(header) "." b64url(claims)`, independent of [`json::mint`].
//!
//! To regenerate after a deliberate, versioned change:
//! `PLUGCLOUD_WRITE_VECTORS=1 cargo test -p shared-protocol --all-features --test json_vectors -- --ignored`
//! (case inputs are in `message_cases`, `accepted_cases`, `invalid_cases`, `token_doc`; review
//! the diff).
#![cfg(feature = "json")]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use shared_protocol::codes::Code;
use shared_protocol::ids::{Address, IdProfile};
use shared_protocol::json::{
    self, AckMsg, Auth, Claims, ClientMessage, Deliver, ErrorMsg, Goodbye, Kick, OkMsg, Pong,
    Presence, Reject, SendMsg, ServerMessage, Welcome,
};
use shared_protocol::limits::{MAX_JSON_MESSAGE, MAX_PAYLOAD, MAX_TEXT, MAX_TOKEN};

const JSON_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors/json.json");
const TOKEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors/token.json");

/// Either direction's message, so one case list can hold both.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    App(ClientMessage),
    Broker(ServerMessage),
}

impl Msg {
    fn encode(&self) -> String {
        match self {
            Msg::App(m) => m.encode(),
            Msg::Broker(m) => m.encode(),
        }
        .expect("vector message encodes")
    }

    fn direction(&self) -> &'static str {
        match self {
            Msg::App(_) => "app_to_broker",
            Msg::Broker(_) => "broker_to_app",
        }
    }
}

fn decode(direction: &str, text: &str) -> Result<Msg, json::JsonError> {
    match direction {
        "app_to_broker" => ClientMessage::decode(text.as_bytes()).map(Msg::App),
        "broker_to_app" => ServerMessage::decode(text.as_bytes()).map(Msg::Broker),
        other => panic!("unknown direction {other}"),
    }
}

// ---- value <-> language-neutral description ----

fn addr_value(a: &Address) -> Value {
    json!({"kind": a.kind.as_str(), "id": a.id})
}

fn addr_of(v: &Value) -> Address {
    let id = u32::try_from(v["id"].as_u64().expect("id")).expect("id bits");
    match v["kind"].as_str().expect("kind") {
        "device" => Address::device(id),
        "phone" => Address::phone(id),
        other => panic!("bad kind {other}"),
    }
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .to_owned()
}

fn code(v: &Value, key: &str) -> Code {
    Code(u16::try_from(n(v, key)).expect("code"))
}

fn payload(v: &Value) -> Vec<u8> {
    hex::decode(s(v, "payload_hex")).expect("payload hex")
}

/// The decoded value as written in the vector file: the message's members, with `payload`
/// replaced by `payload_hex` (the decoded bytes in hex).
fn describe(m: &Msg) -> Value {
    match m {
        Msg::App(ClientMessage::Auth(a)) => {
            json!({"type": "auth", "token": a.token, "since_id": a.since_id})
        }
        Msg::App(ClientMessage::Ping) => json!({"type": "ping"}),
        Msg::App(ClientMessage::Send(x)) => json!({
            "type": "send", "to": addr_value(&x.to), "payload_hex": hex::encode(&x.payload), "ref": x.reference
        }),
        Msg::App(ClientMessage::Ack(a)) => json!({"type": "ack", "msg_id": a.msg_id}),
        Msg::App(ClientMessage::Goodbye(g)) | Msg::Broker(ServerMessage::Goodbye(g)) => {
            json!({"type": "goodbye", "reason": g.reason.0})
        }
        Msg::Broker(ServerMessage::Welcome(w)) => json!({
            "type": "welcome", "address": addr_value(&w.address), "heartbeat_secs": w.heartbeat_secs,
            "session_timeout_secs": w.session_timeout_secs, "max_payload": w.max_payload,
            "server_time_ms": w.server_time_ms
        }),
        Msg::Broker(ServerMessage::Reject(r)) => {
            json!({"type": "reject", "code": r.code.0, "reason": r.reason})
        }
        Msg::Broker(ServerMessage::Pong(p)) => {
            json!({"type": "pong", "server_time_ms": p.server_time_ms})
        }
        Msg::Broker(ServerMessage::Deliver(d)) => json!({
            "type": "deliver", "msg_id": d.msg_id, "from": d.from.as_ref().map(addr_value),
            "payload_hex": hex::encode(&d.payload)
        }),
        Msg::Broker(ServerMessage::Ok(o)) => json!({"type": "ok", "ref": o.reference}),
        Msg::Broker(ServerMessage::Error(e)) => {
            json!({"type": "error", "code": e.code.0, "ref": e.reference, "message": e.message})
        }
        Msg::Broker(ServerMessage::Presence(p)) => {
            json!({"type": "presence", "who": addr_value(&p.who), "online": p.online})
        }
        Msg::Broker(ServerMessage::Kick(k)) => json!({"type": "kick", "reason": k.reason.0}),
    }
}

/// Builds the value from its description (the inverse of [`describe`]).
fn build(direction: &str, v: &Value) -> Msg {
    let t = s(v, "type");
    if direction == "app_to_broker" {
        Msg::App(match t.as_str() {
            "auth" => ClientMessage::Auth(Auth {
                token: s(v, "token"),
                since_id: n(v, "since_id"),
            }),
            "ping" => ClientMessage::Ping,
            "send" => ClientMessage::Send(SendMsg {
                to: addr_of(&v["to"]),
                payload: payload(v),
                reference: u32::try_from(n(v, "ref")).expect("ref"),
            }),
            "ack" => ClientMessage::Ack(AckMsg {
                msg_id: n(v, "msg_id"),
            }),
            "goodbye" => ClientMessage::Goodbye(Goodbye {
                reason: code(v, "reason"),
            }),
            other => panic!("unknown app message {other}"),
        })
    } else {
        Msg::Broker(match t.as_str() {
            "welcome" => ServerMessage::Welcome(Welcome {
                address: addr_of(&v["address"]),
                heartbeat_secs: u16::try_from(n(v, "heartbeat_secs")).unwrap(),
                session_timeout_secs: u16::try_from(n(v, "session_timeout_secs")).unwrap(),
                max_payload: u16::try_from(n(v, "max_payload")).unwrap(),
                server_time_ms: n(v, "server_time_ms"),
            }),
            "reject" => ServerMessage::Reject(Reject {
                code: code(v, "code"),
                reason: s(v, "reason"),
            }),
            "pong" => ServerMessage::Pong(Pong {
                server_time_ms: n(v, "server_time_ms"),
            }),
            "deliver" => ServerMessage::Deliver(Deliver {
                msg_id: n(v, "msg_id"),
                from: (!v["from"].is_null()).then(|| addr_of(&v["from"])),
                payload: payload(v),
            }),
            "ok" => ServerMessage::Ok(OkMsg {
                reference: u32::try_from(n(v, "ref")).unwrap(),
            }),
            "error" => ServerMessage::Error(ErrorMsg {
                code: code(v, "code"),
                reference: v["ref"].as_u64().map(|r| u32::try_from(r).unwrap()),
                message: s(v, "message"),
            }),
            "presence" => ServerMessage::Presence(Presence {
                who: addr_of(&v["who"]),
                online: v["online"].as_bool().expect("online"),
            }),
            "kick" => ServerMessage::Kick(Kick {
                reason: code(v, "reason"),
            }),
            "goodbye" => ServerMessage::Goodbye(Goodbye {
                reason: code(v, "reason"),
            }),
            other => panic!("unknown broker message {other}"),
        })
    }
}

/// The error's variant name (`Invalid`, `TooLarge`...), from its Debug form.
fn variant<E: std::fmt::Debug>(e: &E) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

// ---- the cases ----

const EXAMPLE_SECRET: &[u8; 32] = b"plugcloud-example-token-secret-1";
const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const EXP: u64 = NOW + 3600;

fn example_token() -> String {
    json::mint(
        EXAMPLE_SECRET,
        &Claims {
            address: Address::phone(7),
            exp: EXP,
        },
    )
}

fn message_cases() -> Vec<(&'static str, Msg)> {
    use ClientMessage as C;
    use ServerMessage as S;
    let device42 = Address::device(42);
    vec![
        (
            "auth",
            Msg::App(C::Auth(Auth {
                token: "eyJ...".into(),
                since_id: 300,
            })),
        ),
        (
            "auth_example_token",
            Msg::App(C::Auth(Auth {
                token: example_token(),
                since_id: 0,
            })),
        ),
        ("ping", Msg::App(C::Ping)),
        (
            "send",
            Msg::App(C::Send(SendMsg {
                to: device42,
                payload: b"on".to_vec(),
                reference: 7,
            })),
        ),
        (
            "send_empty_payload_max_ref",
            Msg::App(C::Send(SendMsg {
                to: Address::phone(u32::MAX),
                payload: Vec::new(),
                reference: u32::MAX,
            })),
        ),
        ("ack", Msg::App(C::Ack(AckMsg { msg_id: 301 }))),
        (
            "ack_max_msg_id",
            Msg::App(C::Ack(AckMsg {
                msg_id: (1 << 53) - 1,
            })),
        ),
        (
            "goodbye",
            Msg::App(C::Goodbye(Goodbye {
                reason: Code::NORMAL,
            })),
        ),
        (
            "welcome",
            Msg::Broker(S::Welcome(Welcome {
                address: Address::phone(7),
                heartbeat_secs: 30,
                session_timeout_secs: 90,
                max_payload: 1024,
                server_time_ms: 1_767_225_600_000,
            })),
        ),
        (
            "reject",
            Msg::Broker(S::Reject(Reject {
                code: Code::TOKEN_EXPIRED,
                reason: "token expired".into(),
            })),
        ),
        (
            "pong",
            Msg::Broker(S::Pong(Pong {
                server_time_ms: 1_767_225_600_123,
            })),
        ),
        (
            "deliver",
            Msg::Broker(S::Deliver(Deliver {
                msg_id: 301,
                from: Some(device42),
                payload: br#"{"w":12}"#.to_vec(),
            })),
        ),
        (
            "deliver_from_backend",
            Msg::Broker(S::Deliver(Deliver {
                msg_id: 302,
                from: None,
                payload: vec![0x00, 0xff, 0x10],
            })),
        ),
        ("ok", Msg::Broker(S::Ok(OkMsg { reference: 7 }))),
        (
            "error",
            Msg::Broker(S::Error(ErrorMsg {
                code: Code::TARGET_OFFLINE,
                reference: Some(7),
                message: "target offline".into(),
            })),
        ),
        (
            "error_not_about_a_send",
            Msg::Broker(S::Error(ErrorMsg {
                code: Code::MALFORMED,
                reference: None,
                message: "malformed message".into(),
            })),
        ),
        (
            "presence",
            Msg::Broker(S::Presence(Presence {
                who: device42,
                online: false,
            })),
        ),
        (
            "kick",
            Msg::Broker(S::Kick(Kick {
                reason: Code::REPLACED,
            })),
        ),
        (
            "kick_unknown_code",
            Msg::Broker(S::Kick(Kick { reason: Code(999) })),
        ),
        (
            "goodbye_shutdown",
            Msg::Broker(S::Goodbye(Goodbye {
                reason: Code::SHUTDOWN,
            })),
        ),
    ]
}

/// (name, direction, accepted text, canonical text it means).
fn accepted_cases() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        (
            "auth_without_since_id",
            "app_to_broker",
            r#"{"type":"auth","token":"eyJ..."}"#,
            r#"{"type":"auth","token":"eyJ...","since_id":0}"#,
        ),
        (
            "goodbye_without_reason",
            "app_to_broker",
            r#"{"type":"goodbye"}"#,
            r#"{"type":"goodbye","reason":0}"#,
        ),
        (
            "send_signed_negative_id",
            "app_to_broker",
            r#"{"type":"send","to":{"kind":"phone","id":-7},"payload":"","ref":1}"#,
            r#"{"type":"send","to":{"kind":"phone","id":4294967289},"payload":"","ref":1}"#,
        ),
        (
            "send_other_order_unknown_member",
            "app_to_broker",
            r#"{"ref":7,"payload":"b24=","future":[1,2],"to":{"id":42,"kind":"device"},"type":"send"}"#,
            r#"{"type":"send","to":{"kind":"device","id":42},"payload":"b24=","ref":7}"#,
        ),
        (
            "ack_with_whitespace",
            "app_to_broker",
            " { \"type\" : \"ack\" ,\n \"msg_id\" : 301 } ",
            r#"{"type":"ack","msg_id":301}"#,
        ),
        (
            "deliver_without_from",
            "broker_to_app",
            r#"{"type":"deliver","msg_id":5,"payload":"AA=="}"#,
            r#"{"type":"deliver","msg_id":5,"from":null,"payload":"AA=="}"#,
        ),
        (
            "error_without_ref",
            "broker_to_app",
            r#"{"type":"error","code":1,"message":"x"}"#,
            r#"{"type":"error","code":1,"ref":null,"message":"x"}"#,
        ),
        (
            "welcome_with_unknown_member",
            "broker_to_app",
            r#"{"type":"welcome","address":{"kind":"phone","id":7},"heartbeat_secs":30,"session_timeout_secs":90,"max_payload":1024,"server_time_ms":1,"node":"b2"}"#,
            r#"{"type":"welcome","address":{"kind":"phone","id":7},"heartbeat_secs":30,"session_timeout_secs":90,"max_payload":1024,"server_time_ms":1}"#,
        ),
    ]
}

/// (name, direction, text, error variant, code).
fn invalid_cases() -> Vec<(&'static str, &'static str, String, &'static str, Code)> {
    let app = "app_to_broker";
    let broker = "broker_to_app";
    let big_payload = STANDARD.encode(vec![0u8; MAX_PAYLOAD + 1]);
    let long_token = "t".repeat(MAX_TOKEN + 1);
    let long_text = "r".repeat(MAX_TEXT + 1);
    let mut huge = String::from(r#"{"type":"ping","pad":""#);
    huge.push_str(&"x".repeat(MAX_JSON_MESSAGE + 1 - huge.len() - 2));
    huge.push_str("\"}");
    assert_eq!(huge.len(), MAX_JSON_MESSAGE + 1);
    vec![
        ("not_json", app, "{".into(), "NotJson", Code::MALFORMED),
        ("array", app, "[1]".into(), "MissingType", Code::MALFORMED),
        (
            "string",
            app,
            r#""ping""#.into(),
            "MissingType",
            Code::MALFORMED,
        ),
        (
            "type_not_string",
            app,
            r#"{"type":1}"#.into(),
            "MissingType",
            Code::MALFORMED,
        ),
        (
            "no_type",
            app,
            r#"{"msg_id":1}"#.into(),
            "MissingType",
            Code::MALFORMED,
        ),
        (
            "unknown_type",
            app,
            r#"{"type":"subscribe"}"#.into(),
            "UnknownType",
            Code::MALFORMED,
        ),
        (
            "server_type_from_app",
            app,
            r#"{"type":"deliver","msg_id":1,"from":null,"payload":""}"#.into(),
            "UnknownType",
            Code::MALFORMED,
        ),
        (
            "ack_missing_msg_id",
            app,
            r#"{"type":"ack"}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "ack_msg_id_fraction",
            app,
            r#"{"type":"ack","msg_id":1.5}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "ack_msg_id_exponent",
            app,
            r#"{"type":"ack","msg_id":1e3}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "ack_msg_id_2_pow_53",
            app,
            r#"{"type":"ack","msg_id":9007199254740992}"#.into(),
            "MsgIdOutOfRange",
            Code::MALFORMED,
        ),
        (
            "auth_since_id_2_pow_53",
            app,
            r#"{"type":"auth","token":"t","since_id":9007199254740992}"#.into(),
            "MsgIdOutOfRange",
            Code::MALFORMED,
        ),
        (
            "send_payload_not_base64",
            app,
            r#"{"type":"send","to":{"kind":"device","id":1},"payload":"!!","ref":1}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "send_payload_unpadded",
            app,
            r#"{"type":"send","to":{"kind":"device","id":1},"payload":"b24","ref":1}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "send_payload_base64url",
            app,
            r#"{"type":"send","to":{"kind":"device","id":1},"payload":"-_8=","ref":1}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "send_id_2_pow_32",
            app,
            r#"{"type":"send","to":{"kind":"device","id":4294967296},"payload":"","ref":1}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "send_id_below_i32",
            app,
            r#"{"type":"send","to":{"kind":"phone","id":-2147483649},"payload":"","ref":1}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "send_unknown_kind",
            app,
            r#"{"type":"send","to":{"kind":"robot","id":1},"payload":"","ref":1}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "send_ref_negative",
            app,
            r#"{"type":"send","to":{"kind":"device","id":1},"payload":"","ref":-1}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "send_missing_ref",
            app,
            r#"{"type":"send","to":{"kind":"device","id":1},"payload":""}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "send_payload_1025_bytes",
            app,
            format!(
                r#"{{"type":"send","to":{{"kind":"device","id":1}},"payload":"{big_payload}","ref":1}}"#
            ),
            "PayloadTooLarge",
            Code::TOO_LARGE,
        ),
        (
            "auth_token_1025_bytes",
            app,
            format!(r#"{{"type":"auth","token":"{long_token}"}}"#),
            "TextTooLong",
            Code::TOO_LARGE,
        ),
        ("message_4097_bytes", app, huge, "TooLarge", Code::TOO_LARGE),
        (
            "goodbye_reason_65536",
            app,
            r#"{"type":"goodbye","reason":65536}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "presence_online_not_bool",
            broker,
            r#"{"type":"presence","who":{"kind":"device","id":42},"online":1}"#.into(),
            "Invalid",
            Code::MALFORMED,
        ),
        (
            "reject_reason_257_bytes",
            broker,
            format!(r#"{{"type":"reject","code":22,"reason":"{long_text}"}}"#),
            "TextTooLong",
            Code::TOO_LARGE,
        ),
        (
            "deliver_msg_id_2_pow_53",
            broker,
            r#"{"type":"deliver","msg_id":9007199254740992,"from":null,"payload":""}"#.into(),
            "MsgIdOutOfRange",
            Code::MALFORMED,
        ),
        (
            "unknown_server_type",
            broker,
            r#"{"type":"stats","sessions":3}"#.into(),
            "UnknownType",
            Code::MALFORMED,
        ),
    ]
}

fn json_doc() -> Value {
    let mut app = Vec::new();
    let mut broker = Vec::new();
    for (name, m) in message_cases() {
        let case = json!({"name": name, "text": m.encode(), "message": describe(&m)});
        match m {
            Msg::App(_) => app.push(case),
            Msg::Broker(_) => broker.push(case),
        }
    }
    let accepted: Vec<Value> = accepted_cases()
        .into_iter()
        .map(|(name, dir, text, canonical)| {
            json!({"name": name, "direction": dir, "text": text, "canonical": canonical})
        })
        .collect();
    let invalid: Vec<Value> = invalid_cases()
        .into_iter()
        .map(|(name, dir, text, error, code)| {
            json!({"name": name, "direction": dir, "text": text, "error": error, "code": code.0})
        })
        .collect();
    json!({
        "version": 1,
        "description": "Plugcloud protocol v1 JSON transport vectors (docs/protocol.md section 7.2). `app_to_broker` / `broker_to_app`: a message's canonical `text` (as a broker writes it: members in the order of the spec's table) and its decoded value `message`, in which `payload_hex` is the hex of the bytes the base64 `payload` decodes to; an implementation must decode `text` to `message` and may compare its own encoding to `text`. `accepted`: texts a receiver must accept that are not canonical, with the canonical text they mean. `invalid`: texts a receiver must refuse; `error` is the reference implementation's error and `code` the section 9 code the broker answers with.",
        "app_to_broker": app,
        "broker_to_app": broker,
        "accepted": accepted,
        "invalid": invalid,
    })
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(secret: &[u8], input: &str) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// A token signed by hand from header and claims texts (how any JWT library does it).
fn sign(secret: &[u8], header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes())
    );
    let sig = b64url(&hs256(secret, &input));
    format!("{input}.{sig}")
}

const CANONICAL_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn identity_codes(a: Address) -> Value {
    let code = |p: IdProfile| p.validate(a).map_or_else(|e| e.code().0, |_| 0);
    json!({"plug": code(IdProfile::Plug), "signed": code(IdProfile::Signed)})
}

fn token_doc() -> Value {
    let secret = EXAMPLE_SECRET;
    // (name, header, claims, minted by json::mint?)
    let valid: Vec<(&str, String, String, bool)> = vec![
        (
            "phone_7",
            CANONICAL_HEADER.into(),
            format!(r#"{{"id":7,"kind":"phone","exp":{EXP}}}"#),
            true,
        ),
        (
            "device_42",
            CANONICAL_HEADER.into(),
            format!(r#"{{"id":42,"kind":"device","exp":{EXP}}}"#),
            true,
        ),
        (
            "signed_phone_negative_id_foreign_library",
            r#"{"typ":"JWT","alg":"HS256"}"#.into(),
            format!(r#"{{"exp":{EXP},"iat":{NOW},"kind":"phone","id":-7}}"#),
            false,
        ),
        (
            "device_max_id_header_without_typ",
            r#"{"alg":"HS256"}"#.into(),
            format!(r#"{{"id":4294967295,"kind":"device","exp":{EXP}}}"#),
            false,
        ),
        (
            "id_0_is_verified_then_refused_by_the_profile",
            CANONICAL_HEADER.into(),
            format!(r#"{{"id":0,"kind":"device","exp":{EXP}}}"#),
            true,
        ),
    ];
    let valid: Vec<Value> = valid
        .into_iter()
        .map(|(name, header, claims, minted)| {
            let token = sign(secret, &header, &claims);
            let c = json::verify(secret, &token, NOW).expect("valid vector token");
            if minted {
                assert_eq!(json::mint(secret, &c), token, "{name}");
            }
            json!({
                "name": name, "header": header, "claims": claims, "token": token, "now": NOW,
                "minted_form": minted, "address": addr_value(&c.address), "exp": c.exp,
                "identity_code": identity_codes(c.address),
            })
        })
        .collect();

    let phone7 = sign(
        secret,
        CANONICAL_HEADER,
        &format!(r#"{{"id":7,"kind":"phone","exp":{EXP}}}"#),
    );
    let (signing_input, _) = phone7.rsplit_once('.').unwrap();
    let h = b64url(CANONICAL_HEADER.as_bytes());
    let claims_b64 = |c: &str| b64url(c.as_bytes());
    let invalid: Vec<(&str, String, u64)> = vec![
        ("expired_at_exp", phone7.clone(), EXP),
        ("expired_after_exp", phone7.clone(), EXP + 1),
        (
            "other_secret",
            sign(
                b"another-secret-another-secret-00",
                CANONICAL_HEADER,
                &format!(r#"{{"id":7,"kind":"phone","exp":{EXP}}}"#),
            ),
            NOW,
        ),
        (
            "claims_swapped_for_a_device",
            format!(
                "{h}.{}.{}",
                claims_b64(&format!(r#"{{"id":7,"kind":"device","exp":{EXP}}}"#)),
                phone7.rsplit_once('.').unwrap().1
            ),
            NOW,
        ),
        (
            "alg_none",
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"none","typ":"JWT"}"#),
                claims_b64(&format!(r#"{{"id":7,"kind":"phone","exp":{EXP}}}"#))
            ),
            NOW,
        ),
        (
            "alg_hs512",
            sign(
                secret,
                r#"{"alg":"HS512","typ":"JWT"}"#,
                &format!(r#"{{"id":7,"kind":"phone","exp":{EXP}}}"#),
            ),
            NOW,
        ),
        ("two_parts", signing_input.to_owned(), NOW),
        ("four_parts", format!("{phone7}.x"), NOW),
        ("padded_signature", format!("{phone7}="), NOW),
        ("not_base64url", "!!.!!.!!".into(), NOW),
        (
            "header_not_json",
            sign(
                secret,
                "HS256",
                &format!(r#"{{"id":7,"kind":"phone","exp":{EXP}}}"#),
            ),
            NOW,
        ),
        (
            "claims_without_exp",
            sign(secret, CANONICAL_HEADER, r#"{"id":7,"kind":"phone"}"#),
            NOW,
        ),
        (
            "claims_exp_as_string",
            sign(
                secret,
                CANONICAL_HEADER,
                r#"{"id":7,"kind":"phone","exp":"1767229200"}"#,
            ),
            NOW,
        ),
        (
            "claims_unknown_kind",
            sign(
                secret,
                CANONICAL_HEADER,
                &format!(r#"{{"id":7,"kind":"robot","exp":{EXP}}}"#),
            ),
            NOW,
        ),
        (
            "claims_id_2_pow_32",
            sign(
                secret,
                CANONICAL_HEADER,
                &format!(r#"{{"id":4294967296,"kind":"device","exp":{EXP}}}"#),
            ),
            NOW,
        ),
        (
            "token_1025_bytes",
            sign(
                secret,
                CANONICAL_HEADER,
                &format!(
                    r#"{{"id":7,"kind":"phone","exp":{EXP},"pad":"{}"}}"#,
                    "x".repeat(680)
                ),
            ),
            NOW,
        ),
    ];
    let invalid: Vec<Value> = invalid
        .into_iter()
        .map(|(name, token, now)| {
            let err = json::verify(secret, &token, now).expect_err(name);
            json!({"name": name, "token": token, "now": now, "error": variant(&err), "code": err.code().0})
        })
        .collect();
    json!({
        "version": 1,
        "description": "Plugcloud protocol v1 app tokens (docs/protocol.md section 7.3): compact JWS, HS256. `secret_hex` is the HMAC key (here the 32 ASCII bytes of `secret_text`). `valid`: `header` and `claims` are the exact JSON texts that were base64url-encoded (no padding); `token` = b64url(header) \".\" b64url(claims) \".\" b64url(HMAC-SHA256(secret, the first two parts joined by \".\")); verified at `now` (Unix seconds) it yields `address` and `exp`; `minted_form` says the reference implementation's mint produces exactly this token; `identity_code` is the section 9 code the identity check of section 1 gives per ID profile (0 = accepted). `invalid`: tokens a broker must refuse at `now`, with the reference implementation's error and the code it answers `reject` with.",
        "secret_text": std::str::from_utf8(secret).unwrap(),
        "secret_hex": hex::encode(secret),
        "valid": valid,
        "invalid": invalid,
    })
}

// ---- checks ----

fn load(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn json_message_vectors() {
    let doc = load(JSON_PATH);
    assert_eq!(doc["version"], 1);
    let mut types = std::collections::BTreeSet::new();
    for dir in ["app_to_broker", "broker_to_app"] {
        for case in doc[dir].as_array().expect("cases") {
            let name = s(case, "name");
            let text = s(case, "text");
            let value = build(dir, &case["message"]);
            assert_eq!(value.direction(), dir, "{name}");
            assert_eq!(value.encode(), text, "encoding of {name}");
            assert_eq!(decode(dir, &text), Ok(value.clone()), "decoding of {name}");
            assert_eq!(describe(&value), case["message"], "description of {name}");
            types.insert((dir, s(&case["message"], "type")));
        }
    }
    // Every message shape of section 7.2 has a vector: 5 app types, 9 broker types.
    assert_eq!(
        types.iter().filter(|(d, _)| *d == "app_to_broker").count(),
        5
    );
    assert_eq!(
        types.iter().filter(|(d, _)| *d == "broker_to_app").count(),
        9
    );
    for case in doc["accepted"].as_array().expect("accepted") {
        let name = s(case, "name");
        let dir = s(case, "direction");
        let got = decode(&dir, &s(case, "text")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.encode(), s(case, "canonical"), "{name}");
        assert_eq!(decode(&dir, &s(case, "canonical")), Ok(got), "{name}");
    }
    let invalid = doc["invalid"].as_array().expect("invalid");
    assert!(invalid.len() >= 20);
    for case in invalid {
        let name = s(case, "name");
        let err = decode(&s(case, "direction"), &s(case, "text")).expect_err(&name);
        assert_eq!(variant(&err), s(case, "error"), "{name}: {err}");
        assert_eq!(u64::from(err.code().0), n(case, "code"), "{name}");
    }
}

#[test]
fn token_vectors() {
    let doc = load(TOKEN_PATH);
    assert_eq!(doc["version"], 1);
    let secret = hex::decode(s(&doc, "secret_hex")).unwrap();
    assert_eq!(secret, s(&doc, "secret_text").as_bytes());
    let valid = doc["valid"].as_array().expect("valid");
    assert!(valid.len() >= 4);
    for case in valid {
        let name = s(case, "name");
        let token = s(case, "token");
        // The token is exactly the JWS of the given header and claims texts.
        assert_eq!(
            sign(&secret, &s(case, "header"), &s(case, "claims")),
            token,
            "{name}"
        );
        let claims = json::verify(&secret, &token, n(case, "now")).expect(&name);
        let address = addr_of(&case["address"]);
        assert_eq!(claims.address, address, "{name}");
        assert_eq!(claims.exp, n(case, "exp"), "{name}");
        if case["minted_form"] == true {
            assert_eq!(json::mint(&secret, &claims), token, "{name}");
        }
        for (profile, key) in [(IdProfile::Plug, "plug"), (IdProfile::Signed, "signed")] {
            let got = profile.validate(address).map_or_else(|e| e.code().0, |_| 0);
            assert_eq!(
                u64::from(got),
                n(&case["identity_code"], key),
                "{name} {key}"
            );
        }
    }
    let invalid = doc["invalid"].as_array().expect("invalid");
    assert!(invalid.len() >= 10);
    for case in invalid {
        let name = s(case, "name");
        let err = json::verify(&secret, &s(case, "token"), n(case, "now")).expect_err(&name);
        assert_eq!(variant(&err), s(case, "error"), "{name}");
        assert_eq!(u64::from(err.code().0), n(case, "code"), "{name}");
    }
}

/// The stored files are what the case lists above produce (catches a stale file after a case
/// was added or the encoder changed).
#[test]
fn stored_files_match_the_cases() {
    assert_eq!(load(JSON_PATH), json_doc(), "json.json is stale");
    assert_eq!(load(TOKEN_PATH), token_doc(), "token.json is stale");
}

/// Rewrites the vector files from the case lists (see the module docs).
#[test]
#[ignore = "writes docs/vectors; run deliberately"]
fn write_vectors() {
    if std::env::var_os("PLUGCLOUD_WRITE_VECTORS").is_none() {
        return;
    }
    for (path, doc) in [(JSON_PATH, json_doc()), (TOKEN_PATH, token_doc())] {
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
}
