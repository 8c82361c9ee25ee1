//! Parsing of the client's stdin commands (one per line), sans-IO.
//!
//! Device: `send <kind:id> <text>`, `upload <topic> <text>`, `request <path> <text>`,
//! `result <cmd_id> <status> [text]`, `ping`, `quit`. Phone: `send <kind:id> <text>`,
//! `ack [msg_id]`, `ping`, `quit`. Texts run to the end of the line and are sent as UTF-8 bytes;
//! a text starting with `b64:` is standard base64 instead. Empty lines and lines starting with `#`
//! are ignored (scripts may carry comments).

use base64::Engine;
use shared_protocol::ids::Address;

/// One parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing to do (empty line or comment).
    Nothing,
    /// Send a message to another terminal.
    Send {
        /// Destination.
        to: Address,
        /// Bytes.
        payload: Vec<u8>,
    },
    /// Device: upload data to the back end.
    Upload {
        /// Routing topic.
        topic: String,
        /// Bytes.
        payload: Vec<u8>,
    },
    /// Device: a request to the back end.
    Request {
        /// Resource path.
        path: String,
        /// Bytes.
        payload: Vec<u8>,
    },
    /// Device: answer a command by hand.
    Result {
        /// The command's id.
        cmd_id: u32,
        /// Application status.
        status: u16,
        /// Bytes.
        payload: Vec<u8>,
    },
    /// Phone: acknowledge one delivery, or every unacknowledged one.
    Ack(Option<u64>),
    /// Send a heartbeat now.
    Ping,
    /// Say goodbye and exit.
    Quit,
}

/// Why a line is not a command (the text is printed to stderr; the client goes on).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, InputError> {
    Err(InputError(msg.into()))
}

/// Splits off the first whitespace-separated word.
fn word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// A payload text: UTF-8 as is, or `b64:<standard base64>`.
pub fn payload(text: &str) -> Result<Vec<u8>, InputError> {
    match text.strip_prefix("b64:") {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .or_else(|e| err(format!("bad base64 payload: {e}"))),
        None => Ok(text.as_bytes().to_vec()),
    }
}

fn address(s: &str) -> Result<Address, InputError> {
    s.parse()
        .or_else(|e| err(format!("`{s}`: {e} (e.g. device:42 or phone:7)")))
}

fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, InputError> {
    s.parse()
        .or_else(|_| err(format!("`{s}` is not a valid {what}")))
}

/// Which commands a role accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `broker client device`.
    Device,
    /// `broker client phone`.
    Phone,
}

/// Parses one line for `role`.
pub fn parse(line: &str, role: Role) -> Result<Input, InputError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Input::Nothing);
    }
    let (cmd, rest) = word(line);
    match (cmd, role) {
        ("send", _) => {
            let (to, text) = word(rest);
            if to.is_empty() {
                return err("usage: send <device:ID|phone:ID> <text>");
            }
            Ok(Input::Send {
                to: address(to)?,
                payload: payload(text)?,
            })
        }
        ("upload", Role::Device) => {
            let (topic, text) = word(rest);
            if topic.is_empty() {
                return err("usage: upload <topic> <text>");
            }
            Ok(Input::Upload {
                topic: topic.to_string(),
                payload: payload(text)?,
            })
        }
        ("request", Role::Device) => {
            let (path, text) = word(rest);
            if path.is_empty() {
                return err("usage: request <path> <text>");
            }
            Ok(Input::Request {
                path: path.to_string(),
                payload: payload(text)?,
            })
        }
        ("result", Role::Device) => {
            let (id, rest) = word(rest);
            let (status, text) = word(rest);
            if id.is_empty() || status.is_empty() {
                return err("usage: result <cmd_id> <status> [text]");
            }
            Ok(Input::Result {
                cmd_id: number(id, "command id")?,
                status: number(status, "status (0..=65535)")?,
                payload: payload(text)?,
            })
        }
        ("ack", Role::Phone) => match rest {
            "" => Ok(Input::Ack(None)),
            id => Ok(Input::Ack(Some(number(id, "msg_id")?))),
        },
        ("ping", _) => Ok(Input::Ping),
        ("quit" | "exit", _) => Ok(Input::Quit),
        ("help", Role::Device) => err(
            "commands: send <kind:id> <text> | upload <topic> <text> | request <path> <text> | \
             result <cmd_id> <status> [text] | ping | quit",
        ),
        ("help", Role::Phone) => {
            err("commands: send <kind:id> <text> | ack [msg_id] | ping | quit")
        }
        (other, _) => err(format!("unknown command `{other}` (try `help`)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_commands() {
        assert_eq!(
            parse("send device:42 hello world", Role::Device),
            Ok(Input::Send {
                to: Address::device(42),
                payload: b"hello world".to_vec()
            })
        );
        assert_eq!(
            parse("  upload power {\"w\":3}", Role::Device),
            Ok(Input::Upload {
                topic: "power".into(),
                payload: br#"{"w":3}"#.to_vec()
            })
        );
        assert_eq!(
            parse("result 7 2 b64:AAE=", Role::Device),
            Ok(Input::Result {
                cmd_id: 7,
                status: 2,
                payload: vec![0, 1]
            })
        );
        assert_eq!(
            parse("request /time", Role::Device),
            Ok(Input::Request {
                path: "/time".into(),
                payload: vec![]
            })
        );
        assert_eq!(parse("# comment", Role::Device), Ok(Input::Nothing));
        assert_eq!(parse("quit", Role::Device), Ok(Input::Quit));
        assert!(parse("ack 3", Role::Device).is_err());
    }

    #[test]
    fn phone_commands_and_errors() {
        assert_eq!(parse("ack", Role::Phone), Ok(Input::Ack(None)));
        assert_eq!(parse("ack 12", Role::Phone), Ok(Input::Ack(Some(12))));
        assert_eq!(
            parse("send phone:-7 hi", Role::Phone),
            Ok(Input::Send {
                to: Address::phone(-7i32 as u32),
                payload: b"hi".to_vec()
            })
        );
        assert!(parse("upload x y", Role::Phone).is_err());
        let e = parse("send plug:1 x", Role::Phone).unwrap_err();
        assert!(e.0.contains("kind must be device or phone"), "{e}");
        assert!(parse("send", Role::Phone).is_err());
        assert!(parse("ack many", Role::Phone).is_err());
        assert!(parse("send device:1 b64:!!", Role::Phone).is_err());
        assert!(
            parse("frobnicate", Role::Phone)
                .unwrap_err()
                .0
                .contains("unknown")
        );
    }
}
