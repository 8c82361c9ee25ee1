//! JSON messages of the app transport (docs/protocol.md section 7).
//!
//! Every message is one JSON object with a string `type`. Decoding is two passes over the bytes:
//! first only `type` is read (so an unknown type is reported as such), then the message's own
//! struct; unknown fields are ignored (forward compatibility). After parsing, [`ClientMessage`]
//! and [`ServerMessage`] check the limits of section 8; `encode` checks the same limits, so a
//! message that encodes always decodes.

use std::borrow::Cow;
use std::fmt;
use std::string::{String, ToString};
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::codes::Code;
use crate::ids::Address;
use crate::limits::{MAX_JSON_MESSAGE, MAX_MSG_ID, MAX_PAYLOAD, MAX_TEXT, MAX_TOKEN};

/// `auth` (app -> broker, first message): authenticate with a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// HS256 token (see [`crate::json::token`]).
    pub token: String,
    /// Highest `msg_id` the app already has; messages above it are delivered (0 or absent: all
    /// stored messages).
    #[serde(default)]
    pub since_id: u64,
}

/// `send` (app -> broker): a message to another terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMsg {
    /// Destination.
    pub to: Address,
    /// Application bytes (base64 in JSON).
    #[serde(with = "super::b64")]
    pub payload: Vec<u8>,
    /// App-chosen correlation number, echoed in `ok` or `error`.
    #[serde(rename = "ref")]
    pub reference: u32,
}

/// `ack` (app -> broker): the app has processed a `deliver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMsg {
    /// The delivered message's id.
    pub msg_id: u64,
}

/// `goodbye` (either direction): the sender ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why; `NORMAL` (0) when absent.
    #[serde(default = "normal")]
    pub reason: Code,
}

fn normal() -> Code {
    Code::NORMAL
}

/// `welcome` (broker -> app): authentication succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The authenticated terminal (from the token).
    pub address: Address,
    /// Send `ping` after this many seconds without sending anything.
    pub heartbeat_secs: u16,
    /// The broker closes the connection after this many seconds without a message.
    pub session_timeout_secs: u16,
    /// Largest decoded payload the broker accepts.
    pub max_payload: u16,
    /// Broker clock, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
}

/// `reject` (broker -> app): authentication failed; the broker closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Why (section 9).
    pub code: Code,
    /// Human-readable text, informative only.
    pub reason: String,
}

/// `pong` (broker -> app): answer to `ping`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Broker clock, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
}

/// `deliver` (broker -> app): a message for the app; answer with `ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// Strictly increasing per terminal, at most 2^53 - 1.
    pub msg_id: u64,
    /// Sender, or `null` for the back end.
    #[serde(default)]
    pub from: Option<Address>,
    /// Application bytes (base64 in JSON).
    #[serde(with = "super::b64")]
    pub payload: Vec<u8>,
}

/// `ok` (broker -> app): the `send` with this `ref` was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkMsg {
    /// The `send`'s `ref`.
    #[serde(rename = "ref")]
    pub reference: u32,
}

/// `error` (broker -> app): a message failed; the session goes on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// What went wrong (section 9).
    pub code: Code,
    /// The failed `send`'s `ref`, or `null` when the error is not about a `send`.
    #[serde(rename = "ref", default)]
    pub reference: Option<u32>,
    /// Human-readable text, informative only.
    pub message: String,
}

/// `presence` (broker -> app): a followed terminal came online or went offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The terminal.
    pub who: Address,
    /// Online now?
    pub online: bool,
}

/// `kick` (broker -> app): the broker ends the session and closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kick {
    /// Why (section 9).
    pub reason: Code,
}

/// A message from an app to the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// `{"type":"auth",...}`
    Auth(Auth),
    /// `{"type":"ping"}`
    Ping,
    /// `{"type":"send",...}`
    Send(SendMsg),
    /// `{"type":"ack",...}`
    Ack(AckMsg),
    /// `{"type":"goodbye",...}`
    Goodbye(Goodbye),
}

/// A message from the broker to an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// `{"type":"welcome",...}`
    Welcome(Welcome),
    /// `{"type":"reject",...}`
    Reject(Reject),
    /// `{"type":"pong",...}`
    Pong(Pong),
    /// `{"type":"deliver",...}`
    Deliver(Deliver),
    /// `{"type":"ok",...}`
    Ok(OkMsg),
    /// `{"type":"error",...}`
    Error(ErrorMsg),
    /// `{"type":"presence",...}`
    Presence(Presence),
    /// `{"type":"kick",...}`
    Kick(Kick),
    /// `{"type":"goodbye",...}`
    Goodbye(Goodbye),
}

/// Why a JSON message could not be decoded or encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// The message is larger than [`MAX_JSON_MESSAGE`] bytes.
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not valid JSON (or not UTF-8).
    NotJson(String),
    /// Valid JSON, but not an object with a string `type`.
    MissingType,
    /// A `type` this side does not know.
    UnknownType(String),
    /// A field is missing or has the wrong type or value (including bad base64).
    Invalid {
        /// The message's `type`.
        message_type: &'static str,
        /// What serde said.
        detail: String,
    },
    /// A decoded payload longer than [`MAX_PAYLOAD`].
    PayloadTooLarge {
        /// Its length.
        len: usize,
    },
    /// A text field longer than its limit ([`MAX_TOKEN`] for `token`, [`MAX_TEXT`] otherwise).
    TextTooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A `msg_id` or `since_id` above 2^53 - 1.
    MsgIdOutOfRange(u64),
}

impl JsonError {
    /// The code the broker answers with (`error` message, or `reject` before `auth`).
    pub fn code(&self) -> Code {
        match self {
            JsonError::TooLarge { .. }
            | JsonError::PayloadTooLarge { .. }
            | JsonError::TextTooLong { .. } => Code::TOO_LARGE,
            _ => Code::MALFORMED,
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::TooLarge { len } => {
                write!(f, "message is {len} bytes, limit {MAX_JSON_MESSAGE}")
            }
            JsonError::NotJson(e) => write!(f, "not JSON: {e}"),
            JsonError::MissingType => f.write_str("not an object with a string \"type\""),
            JsonError::UnknownType(t) => write!(f, "unknown message type {t:?}"),
            JsonError::Invalid {
                message_type,
                detail,
            } => write!(f, "invalid {message_type}: {detail}"),
            JsonError::PayloadTooLarge { len } => {
                write!(f, "payload is {len} bytes, limit {MAX_PAYLOAD}")
            }
            JsonError::TextTooLong { field, len } => write!(f, "{field} is {len} bytes, too long"),
            JsonError::MsgIdOutOfRange(v) => write!(f, "message id {v} above 2^53 - 1"),
        }
    }
}

impl std::error::Error for JsonError {}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// Checks the size, reads `type`; returns it.
fn message_type(bytes: &[u8]) -> Result<Cow<'_, str>, JsonError> {
    if bytes.len() > MAX_JSON_MESSAGE {
        return Err(JsonError::TooLarge { len: bytes.len() });
    }
    match serde_json::from_slice::<Envelope<'_>>(bytes) {
        Ok(env) => Ok(env.kind),
        Err(e) if e.is_data() => Err(JsonError::MissingType),
        Err(e) => Err(JsonError::NotJson(e.to_string())),
    }
}

fn body<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    message_type: &'static str,
) -> Result<T, JsonError> {
    serde_json::from_slice(bytes).map_err(|e| JsonError::Invalid {
        message_type,
        detail: e.to_string(),
    })
}

fn check_payload(payload: &[u8]) -> Result<(), JsonError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(JsonError::PayloadTooLarge { len: payload.len() });
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), JsonError> {
    if text.len() > max {
        return Err(JsonError::TextTooLong {
            field,
            len: text.len(),
        });
    }
    Ok(())
}

fn check_msg_id(id: u64) -> Result<(), JsonError> {
    if id > MAX_MSG_ID {
        return Err(JsonError::MsgIdOutOfRange(id));
    }
    Ok(())
}

fn finish<T: Serialize>(message: &T) -> Result<String, JsonError> {
    let text = serde_json::to_string(message).map_err(|e| JsonError::Invalid {
        message_type: "encode",
        detail: e.to_string(),
    })?;
    if text.len() > MAX_JSON_MESSAGE {
        return Err(JsonError::TooLarge { len: text.len() });
    }
    Ok(text)
}

impl ClientMessage {
    /// The `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Auth(_) => "auth",
            ClientMessage::Ping => "ping",
            ClientMessage::Send(_) => "send",
            ClientMessage::Ack(_) => "ack",
            ClientMessage::Goodbye(_) => "goodbye",
        }
    }

    /// Checks the section 8 limits.
    pub fn check(&self) -> Result<(), JsonError> {
        match self {
            ClientMessage::Auth(a) => {
                check_text("token", &a.token, MAX_TOKEN)?;
                check_msg_id(a.since_id)
            }
            ClientMessage::Send(s) => check_payload(&s.payload),
            ClientMessage::Ack(a) => check_msg_id(a.msg_id),
            ClientMessage::Ping | ClientMessage::Goodbye(_) => Ok(()),
        }
    }

    /// Encodes as one JSON text (checked against the limits).
    pub fn encode(&self) -> Result<String, JsonError> {
        self.check()?;
        finish(self)
    }

    /// Decodes one message (a WebSocket text message's bytes).
    pub fn decode(bytes: &[u8]) -> Result<ClientMessage, JsonError> {
        let message = match &*message_type(bytes)? {
            "auth" => ClientMessage::Auth(body(bytes, "auth")?),
            "ping" => ClientMessage::Ping,
            "send" => ClientMessage::Send(body(bytes, "send")?),
            "ack" => ClientMessage::Ack(body(bytes, "ack")?),
            "goodbye" => ClientMessage::Goodbye(body(bytes, "goodbye")?),
            other => return Err(JsonError::UnknownType(truncated(other))),
        };
        message.check()?;
        Ok(message)
    }
}

impl ServerMessage {
    /// The `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMessage::Welcome(_) => "welcome",
            ServerMessage::Reject(_) => "reject",
            ServerMessage::Pong(_) => "pong",
            ServerMessage::Deliver(_) => "deliver",
            ServerMessage::Ok(_) => "ok",
            ServerMessage::Error(_) => "error",
            ServerMessage::Presence(_) => "presence",
            ServerMessage::Kick(_) => "kick",
            ServerMessage::Goodbye(_) => "goodbye",
        }
    }

    /// Checks the section 8 limits.
    pub fn check(&self) -> Result<(), JsonError> {
        match self {
            ServerMessage::Reject(r) => check_text("reason", &r.reason, MAX_TEXT),
            ServerMessage::Deliver(d) => {
                check_msg_id(d.msg_id)?;
                check_payload(&d.payload)
            }
            ServerMessage::Error(e) => check_text("message", &e.message, MAX_TEXT),
            _ => Ok(()),
        }
    }

    /// Encodes as one JSON text (checked against the limits).
    pub fn encode(&self) -> Result<String, JsonError> {
        self.check()?;
        finish(self)
    }

    /// Decodes one message. Apps SHOULD ignore [`JsonError::UnknownType`] (newer brokers may send
    /// new types).
    pub fn decode(bytes: &[u8]) -> Result<ServerMessage, JsonError> {
        let message = match &*message_type(bytes)? {
            "welcome" => ServerMessage::Welcome(body(bytes, "welcome")?),
            "reject" => ServerMessage::Reject(body(bytes, "reject")?),
            "pong" => ServerMessage::Pong(body(bytes, "pong")?),
            "deliver" => ServerMessage::Deliver(body(bytes, "deliver")?),
            "ok" => ServerMessage::Ok(body(bytes, "ok")?),
            "error" => ServerMessage::Error(body(bytes, "error")?),
            "presence" => ServerMessage::Presence(body(bytes, "presence")?),
            "kick" => ServerMessage::Kick(body(bytes, "kick")?),
            "goodbye" => ServerMessage::Goodbye(body(bytes, "goodbye")?),
            other => return Err(JsonError::UnknownType(truncated(other))),
        };
        message.check()?;
        Ok(message)
    }
}

/// At most 32 bytes of an unknown type name (it goes into logs and error texts).
fn truncated(name: &str) -> String {
    let mut end = name.len().min(32);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    String::from(&name[..end])
}

#[cfg(test)]
mod tests {

    use std::vec;

    use super::*;

    #[test]
    fn send_shape() {
        let m = ClientMessage::Send(SendMsg {
            to: Address::device(42),
            payload: b"on".to_vec(),
            reference: 7,
        });
        let text = m.encode().unwrap();
        assert_eq!(
            text,
            r#"{"type":"send","to":{"kind":"device","id":42},"payload":"b24=","ref":7}"#
        );
        assert_eq!(ClientMessage::decode(text.as_bytes()), Ok(m));
    }

    #[test]
    fn ping_and_defaults() {
        assert_eq!(
            ClientMessage::decode(br#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(ClientMessage::Ping.encode().unwrap(), r#"{"type":"ping"}"#);
        assert_eq!(
            ClientMessage::decode(br#"{"type":"goodbye"}"#),
            Ok(ClientMessage::Goodbye(Goodbye {
                reason: Code::NORMAL
            }))
        );
        assert_eq!(
            ClientMessage::decode(br#"{"type":"auth","token":"t","extra":[1]}"#),
            Ok(ClientMessage::Auth(Auth {
                token: "t".to_string(),
                since_id: 0
            }))
        );
    }

    #[test]
    fn signed_ids_are_accepted_in_json() {
        let m = ClientMessage::decode(
            br#"{"type":"send","to":{"kind":"phone","id":-7},"payload":"","ref":1}"#,
        )
        .unwrap();
        let ClientMessage::Send(s) = m else {
            panic!("not a send")
        };
        assert_eq!(s.to, Address::phone(-7i32 as u32));
        assert!(
            ClientMessage::decode(
                br#"{"type":"send","to":{"kind":"phone","id":4294967296},"payload":"","ref":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn typed_errors() {
        assert!(matches!(
            ClientMessage::decode(b"{"),
            Err(JsonError::NotJson(_))
        ));
        assert_eq!(ClientMessage::decode(b"[1]"), Err(JsonError::MissingType));
        assert_eq!(
            ClientMessage::decode(br#"{"type":1}"#),
            Err(JsonError::MissingType)
        );
        assert_eq!(
            ClientMessage::decode(br#"{"type":"deliver"}"#),
            Err(JsonError::UnknownType("deliver".to_string()))
        );
        assert!(matches!(
            ClientMessage::decode(br#"{"type":"ack"}"#),
            Err(JsonError::Invalid {
                message_type: "ack",
                ..
            })
        ));
        assert!(matches!(
            ClientMessage::decode(
                br#"{"type":"send","to":{"kind":"device","id":1},"payload":"!!","ref":1}"#
            ),
            Err(JsonError::Invalid {
                message_type: "send",
                ..
            })
        ));
        assert_eq!(
            ClientMessage::decode(br#"{"type":"ack","msg_id":9007199254740992}"#),
            Err(JsonError::MsgIdOutOfRange(1 << 53))
        );
        assert!(ClientMessage::decode(br#"{"type":"ack","msg_id":9007199254740991}"#).is_ok());
        let big = vec![b' '; MAX_JSON_MESSAGE + 1];
        assert_eq!(
            ClientMessage::decode(&big),
            Err(JsonError::TooLarge {
                len: MAX_JSON_MESSAGE + 1
            })
        );
        assert_eq!(JsonError::TooLarge { len: 0 }.code(), Code::TOO_LARGE);
    }

    #[test]
    fn payload_limit_both_ways() {
        let m = ServerMessage::Deliver(Deliver {
            msg_id: 1,
            from: None,
            payload: vec![0; MAX_PAYLOAD + 1],
        });
        assert_eq!(
            m.encode(),
            Err(JsonError::PayloadTooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
        let ok = ServerMessage::Deliver(Deliver {
            msg_id: 1,
            from: None,
            payload: vec![0xFF; MAX_PAYLOAD],
        });
        let text = ok.encode().unwrap();
        assert!(text.contains(r#""from":null"#));
        assert_eq!(ServerMessage::decode(text.as_bytes()), Ok(ok));
    }

    #[test]
    fn server_shapes() {
        let e = ServerMessage::Error(ErrorMsg {
            code: Code::TARGET_OFFLINE,
            reference: Some(7),
            message: "target offline".to_string(),
        });
        assert_eq!(
            e.encode().unwrap(),
            r#"{"type":"error","code":48,"ref":7,"message":"target offline"}"#
        );
        assert_eq!(
            ServerMessage::Kick(Kick {
                reason: Code::REPLACED
            })
            .encode()
            .unwrap(),
            r#"{"type":"kick","reason":64}"#
        );
        assert_eq!(
            ServerMessage::decode(br#"{"type":"kick","reason":999}"#),
            Ok(ServerMessage::Kick(Kick { reason: Code(999) }))
        );
    }
}
