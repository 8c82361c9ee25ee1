//! What the client prints: one line per event, human-readable text or a JSON object per line
//! (`--json`). Payloads are shown as text when they are printable UTF-8; JSON lines always carry
//! `payload` (base64) and `text` when the bytes are UTF-8.

use base64::Engine;
use serde_json::{Value, json};
use shared_protocol::codes::Code;
use shared_protocol::ids::Address;

/// Something worth a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Logged in.
    Connected {
        /// Who we are.
        address: Address,
        /// Where (`udp 127.0.0.1:8083`, `ws://...`).
        via: String,
        /// Heartbeat interval from the welcome.
        heartbeat_secs: u16,
    },
    /// A message arrived.
    Deliver {
        /// Its id.
        msg_id: u64,
        /// Sender (`None`: the back end).
        from: Option<Address>,
        /// Bytes.
        payload: Vec<u8>,
    },
    /// A command arrived (device).
    Command {
        /// Its id.
        cmd_id: u32,
        /// Name.
        name: String,
        /// Arguments.
        payload: Vec<u8>,
    },
    /// A command was answered (device).
    Answered {
        /// Its id.
        cmd_id: u32,
        /// Status sent.
        status: u16,
        /// Bytes sent.
        payload: Vec<u8>,
    },
    /// An upload is durable (device).
    UploadAck {
        /// The upload's id.
        upload_id: u32,
    },
    /// A request was answered (device).
    Response {
        /// The request's id.
        req_id: u32,
        /// Status.
        status: u16,
        /// Bytes.
        payload: Vec<u8>,
    },
    /// A followed terminal came online or went offline.
    Presence {
        /// Which.
        who: Address,
        /// Online now?
        online: bool,
    },
    /// The broker accepted a `send` (phone: `ok` for `ref`).
    Ok {
        /// The send's reference.
        reference: u32,
    },
    /// The broker reported an error about a message.
    Error {
        /// Code.
        code: Code,
        /// Device: the frame's seq; phone: the send's ref (0/none when not about one).
        about: Option<u32>,
        /// Text, if any.
        message: String,
    },
    /// A frame was sent (echo of a stdin command).
    Sent {
        /// What (`send`, `upload`, ...).
        what: &'static str,
        /// Its id (seq, upload id, request id or ref).
        id: u32,
    },
    /// The broker ended the session.
    Kick {
        /// Why.
        reason: Code,
    },
    /// The session ended normally.
    Goodbye {
        /// Why.
        reason: Code,
    },
    /// The session ended in a way the broker or the network says to come back from: the client
    /// logs in again after a pause (not with `--exit-on-kick`).
    Reconnecting {
        /// Why the session ended.
        why: String,
        /// Pause before the next attempt, ms.
        after_ms: u64,
    },
}

fn text(p: &[u8]) -> Option<&str> {
    std::str::from_utf8(p)
        .ok()
        .filter(|s| !s.chars().any(|c| c.is_control() && c != '\t'))
}

fn shown(p: &[u8]) -> String {
    match text(p) {
        Some(s) => s.to_string(),
        None => format!(
            "b64:{}",
            base64::engine::general_purpose::STANDARD.encode(p)
        ),
    }
}

fn from(a: Option<Address>) -> String {
    a.map_or_else(|| "backend".to_string(), |a| a.to_string())
}

impl Event {
    /// The human-readable line.
    pub fn text_line(&self) -> String {
        match self {
            Event::Connected {
                address,
                via,
                heartbeat_secs,
            } => format!("connected as {address} via {via} (heartbeat {heartbeat_secs}s)"),
            Event::Deliver {
                msg_id,
                from: f,
                payload,
            } => format!("deliver #{msg_id} from {}: {}", from(*f), shown(payload)),
            Event::Command {
                cmd_id,
                name,
                payload,
            } => format!("command #{cmd_id} {name}: {}", shown(payload)),
            Event::Answered {
                cmd_id,
                status,
                payload,
            } => format!("answered #{cmd_id} status {status}: {}", shown(payload)),
            Event::UploadAck { upload_id } => format!("upload #{upload_id} durable"),
            Event::Response {
                req_id,
                status,
                payload,
            } => format!("response #{req_id} status {status}: {}", shown(payload)),
            Event::Presence { who, online } => {
                format!(
                    "presence {who} {}",
                    if *online { "online" } else { "offline" }
                )
            }
            Event::Ok { reference } => format!("ok ref {reference}"),
            Event::Error {
                code,
                about,
                message,
            } => {
                let about = about.map(|a| format!(" (about {a})")).unwrap_or_default();
                let msg = if message.is_empty() {
                    code.description().to_string()
                } else {
                    message.clone()
                };
                format!("error {code}{about}: {msg}")
            }
            Event::Sent { what, id } => format!("sent {what} #{id}"),
            Event::Kick { reason } => format!("kicked: {reason} ({})", reason.description()),
            Event::Goodbye { reason } => format!("goodbye: {reason}"),
            Event::Reconnecting { why, after_ms } => {
                format!("reconnecting in {after_ms} ms: {why}")
            }
        }
    }

    /// The JSON line.
    pub fn json(&self) -> Value {
        let b64 = |p: &[u8]| base64::engine::general_purpose::STANDARD.encode(p);
        let with_payload = |mut v: Value, p: &[u8]| {
            v["payload"] = json!(b64(p));
            if let Ok(s) = std::str::from_utf8(p) {
                v["text"] = json!(s);
            }
            v
        };
        match self {
            Event::Connected {
                address,
                via,
                heartbeat_secs,
            } => json!({"event": "connected", "address": address, "via": via,
                        "heartbeat_secs": heartbeat_secs}),
            Event::Deliver {
                msg_id,
                from,
                payload,
            } => with_payload(
                json!({"event": "deliver", "msg_id": msg_id, "from": from}),
                payload,
            ),
            Event::Command {
                cmd_id,
                name,
                payload,
            } => with_payload(
                json!({"event": "command", "cmd_id": cmd_id, "name": name}),
                payload,
            ),
            Event::Answered {
                cmd_id,
                status,
                payload,
            } => with_payload(
                json!({"event": "answered", "cmd_id": cmd_id, "status": status}),
                payload,
            ),
            Event::UploadAck { upload_id } => {
                json!({"event": "upload_ack", "upload_id": upload_id})
            }
            Event::Response {
                req_id,
                status,
                payload,
            } => with_payload(
                json!({"event": "response", "req_id": req_id, "status": status}),
                payload,
            ),
            Event::Presence { who, online } => {
                json!({"event": "presence", "who": who, "online": online})
            }
            Event::Ok { reference } => json!({"event": "ok", "ref": reference}),
            Event::Error {
                code,
                about,
                message,
            } => json!({"event": "error", "code": code.0, "name": code.to_string(),
                        "about": about, "message": message}),
            Event::Sent { what, id } => json!({"event": "sent", "what": what, "id": id}),
            Event::Kick { reason } => {
                json!({"event": "kick", "code": reason.0, "name": reason.to_string()})
            }
            Event::Goodbye { reason } => {
                json!({"event": "goodbye", "code": reason.0, "name": reason.to_string()})
            }
            Event::Reconnecting { why, after_ms } => {
                json!({"event": "reconnecting", "why": why, "after_ms": after_ms})
            }
        }
    }
}

/// Prints events to stdout, flushing each line (so pipes and tests see them at once).
#[derive(Clone, Copy, Debug)]
pub struct Printer {
    /// JSON lines instead of text.
    pub json: bool,
}

impl Printer {
    /// Prints one event.
    pub fn print(&self, e: &Event) {
        use std::io::Write;
        let line = if self.json {
            e.json().to_string()
        } else {
            e.text_line()
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_both_formats() {
        let d = Event::Deliver {
            msg_id: 5,
            from: None,
            payload: b"hello".to_vec(),
        };
        assert_eq!(d.text_line(), "deliver #5 from backend: hello");
        assert_eq!(
            d.json(),
            json!({"event":"deliver","msg_id":5,"from":null,"payload":"aGVsbG8=","text":"hello"})
        );
        let bin = Event::Command {
            cmd_id: 1,
            name: "relay".into(),
            payload: vec![0, 0xff],
        };
        assert_eq!(bin.text_line(), "command #1 relay: b64:AP8=");
        assert!(bin.json().get("text").is_none());
        let k = Event::Kick {
            reason: Code::REPLACED,
        };
        assert!(
            k.text_line().starts_with("kicked: REPLACED"),
            "{}",
            k.text_line()
        );
        assert_eq!(k.json()["name"], "REPLACED");
    }
}
