//! The one table of `u16` codes (docs/protocol.md section 9).
//!
//! The same numbers appear in REJECT packets, `Error` frames, `Kick` and `Goodbye` reasons and the
//! JSON transport's `reject`, `error`, `kick` and `goodbye` messages. A [`Code`] is a plain `u16`
//! newtype so that a code this version does not know still decodes (forward compatibility): it has
//! no name, its [`Code::class`] comes from its range, and a receiver handles it by its class.
//!
//! Ranges (one byte on the wire for every code below 128):
//!
//! | range       | class                         |
//! |-------------|-------------------------------|
//! | 0           | normal end                    |
//! | 1..=15      | malformed or unsupported input |
//! | 16..=31     | identity and authentication   |
//! | 32..=47     | load, limits and availability |
//! | 48..=63     | routing and delivery          |
//! | 64..=79     | why a session ended           |
//! | 80..=126    | reserved                      |
//! | 127         | internal error                |
//! | 128..=65535 | reserved for deployments / future versions |

use core::fmt;

use serde::{Deserialize, Serialize};

/// A protocol code: error, rejection, kick or goodbye reason. Unknown values are kept as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Code(pub u16);

/// The broad family a code belongs to, derived from its numeric range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Class {
    /// 0: not an error (a normal close).
    Normal,
    /// 1..=15: the peer sent something malformed, too large or of an unsupported version.
    Malformed,
    /// 16..=31: identity or authentication failure.
    Auth,
    /// 32..=47: load shedding, limits and temporary unavailability (retry later).
    Load,
    /// 48..=63: routing and delivery outcomes.
    Delivery,
    /// 64..=79: why a session was ended by the broker.
    SessionEnd,
    /// 127: a bug or failure inside the sender.
    Internal,
    /// Any other value: reserved; treat like [`Class::Internal`].
    Reserved,
}

macro_rules! code_table {
    ($( $(#[doc = $doc:literal])* $name:ident = $value:literal, $text:literal, $retry:literal; )*) => {
        impl Code {
            $( $(#[doc = $doc])* pub const $name: Code = Code($value); )*

            /// Every code this version knows, in table order.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];

            /// The code's name as written in the spec (`"AUTH_FAILED"`), or `None` if unknown.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// A one-line English description, for logs and JSON `reason`/`message` texts.
            pub const fn description(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "unknown code",
                }
            }

            /// Whether the same request may succeed later without changing it (after a back-off).
            /// Unknown codes are treated as retryable only in the load class.
            pub const fn is_retryable(self) -> bool {
                match self.0 {
                    $($value => $retry,)*
                    _ => matches!(self.class(), Class::Load),
                }
            }

            /// Looks a code up by its spec name (`"AUTH_FAILED"`).
            pub fn from_name(name: &str) -> Option<Code> {
                match name {
                    $(stringify!($name) => Some(Code::$name),)*
                    _ => None,
                }
            }
        }
    };
}

code_table! {
    /// Normal end of a session (Goodbye without error).
    NORMAL = 0, "normal close", false;
    /// Undecodable packet, frame or JSON message, or a field value out of its range.
    MALFORMED = 1, "malformed message", false;
    /// The packet's protocol version is not spoken by the receiver.
    UNSUPPORTED_VERSION = 2, "unsupported protocol version", false;
    /// A packet, frame, payload, string or JSON message exceeds its limit (section 8).
    TOO_LARGE = 3, "message too large", false;
    /// The terminal id is 0 (invalid in every profile).
    INVALID_ID = 4, "invalid terminal id", false;
    /// The kind does not match the id's sign (`signed` profile).
    KIND_MISMATCH = 5, "kind does not match id", false;
    /// This kind of terminal may not use this transport (phones on the binary transport).
    KIND_NOT_ALLOWED = 6, "kind not allowed on this transport", false;
    /// The operation is not valid in the session's current state (e.g. a second auth).
    UNEXPECTED = 7, "unexpected message in this state", false;
    /// No key is known for this terminal.
    UNKNOWN_TERMINAL = 16, "unknown terminal", false;
    /// The login proof did not verify.
    AUTH_FAILED = 17, "authentication failed", false;
    /// The LOGIN's cookie does not match its source address, time and HELLO fields, or another
    /// node (or the same node before a restart) made it.
    BAD_COOKIE = 18, "bad cookie", true;
    /// The LOGIN's challenge is older than the challenge lifetime.
    COOKIE_EXPIRED = 19, "challenge expired", true;
    /// The LOGIN's timestamp is not newer than the last accepted login's.
    REPLAY = 20, "replayed login", true;
    /// The JSON token's `exp` is in the past.
    TOKEN_EXPIRED = 21, "token expired", false;
    /// The JSON token is malformed, has a bad signature or a wrong algorithm.
    BAD_TOKEN = 22, "bad token", false;
    /// The terminal may not do this (e.g. send to a terminal it is not bound to).
    NOT_AUTHORIZED = 23, "not authorized", false;
    /// Too many requests or logins from this terminal or address.
    RATE_LIMITED = 32, "rate limited", true;
    /// The broker is at its session capacity.
    SERVER_BUSY = 33, "server busy", true;
    /// A queue (offline messages, uploads, in-flight window) is full.
    QUEUE_FULL = 34, "queue full", true;
    /// A back-end the operation needs (store, queue, peer node) is unavailable.
    UNAVAILABLE = 35, "service unavailable", true;
    /// The operation did not complete in time (e.g. a command to a device).
    TIMEOUT = 36, "timed out", true;
    /// The target terminal is offline and the message was not stored.
    TARGET_OFFLINE = 48, "target offline", true;
    /// The session was replaced by a newer login of the same terminal (`plug` profile).
    REPLACED = 64, "replaced by a newer session", false;
    /// No authenticated packet for the session timeout.
    HEARTBEAT_TIMEOUT = 65, "heartbeat timeout", true;
    /// An operator ended the session.
    ADMIN_KICK = 66, "kicked by an administrator", false;
    /// The broker (or node) is shutting down; reconnect with back-off.
    SHUTDOWN = 67, "server shutting down", true;
    /// The session's counter space or lifetime is used up; log in again.
    REKEY = 68, "session must log in again", true;
    /// A bug or unexpected failure inside the sender.
    INTERNAL = 127, "internal error", true;
}

impl Code {
    /// The code's class, from its numeric range (works for unknown codes too).
    pub const fn class(self) -> Class {
        match self.0 {
            0 => Class::Normal,
            1..=15 => Class::Malformed,
            16..=31 => Class::Auth,
            32..=47 => Class::Load,
            48..=63 => Class::Delivery,
            64..=79 => Class::SessionEnd,
            127 => Class::Internal,
            _ => Class::Reserved,
        }
    }

    /// Whether this version of the protocol defines the code.
    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl From<u16> for Code {
    fn from(value: u16) -> Self {
        Code(value)
    }
}

impl From<Code> for u16 {
    fn from(code: Code) -> Self {
        code.0
    }
}

/// Formats as the name (`AUTH_FAILED`), or `CODE_<n>` for unknown codes.
impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "CODE_{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for (i, a) in Code::ALL.iter().enumerate() {
            let name = a.name().expect("known code has a name");
            assert_eq!(Code::from_name(name), Some(*a));
            for b in &Code::ALL[i + 1..] {
                assert_ne!(a.0, b.0, "{name} reuses a value");
            }
        }
    }

    #[test]
    fn every_known_code_has_a_class_other_than_reserved() {
        for code in Code::ALL {
            assert_ne!(code.class(), Class::Reserved, "{code}");
        }
    }

    #[test]
    fn unknown_codes_survive_and_get_a_class() {
        let c = Code(40);
        assert!(!c.is_known());
        assert_eq!(c.class(), Class::Load);
        assert!(c.is_retryable());
        assert!(!Code(9999).is_retryable());
        assert_eq!(c.description(), "unknown code");
        let mut buf = [0u8; 8];
        let bytes = postcard::to_slice(&Code(9999), &mut buf).unwrap();
        let back: Code = postcard::from_bytes(bytes).unwrap();
        assert_eq!(back, Code(9999));
    }

    #[test]
    fn codes_below_128_take_one_byte() {
        let mut buf = [0u8; 8];
        for code in Code::ALL {
            assert_eq!(postcard::to_slice(code, &mut buf).unwrap().len(), 1);
        }
    }
}
