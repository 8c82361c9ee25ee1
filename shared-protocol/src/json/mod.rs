//! The app transport (docs/protocol.md section 7): JSON text messages over WebSocket, and the
//! HS256 tokens apps authenticate with. Feature `json` (needs `std`).
//!
//! * [`messages`]: [`ClientMessage`] (app -> broker) and [`ServerMessage`] (broker -> app), each
//!   with `encode` to a JSON string and `decode` from bytes. Decoding checks the message size
//!   ([`MAX_JSON_MESSAGE`](crate::limits::MAX_JSON_MESSAGE)), the `type` tag, every field, the
//!   payload and text limits and `msg_id <= 2^53 - 1`, and returns a typed [`JsonError`].
//! * [`token`]: `mint` and `verify` of JWT-compatible HS256 tokens carrying a terminal address
//!   and an expiry.
//!
//! Payloads are standard base64 (RFC 4648 section 4, with padding); addresses are
//! `{"kind":"device","id":42}` as on the binary wire (see [`crate::ids`]); codes are the numbers of
//! [`crate::codes`].

mod b64;
pub mod messages;
pub mod token;

pub use messages::{
    AckMsg, Auth, ClientMessage, Deliver, ErrorMsg, Goodbye, JsonError, Kick, OkMsg, Pong,
    Presence, Reject, SendMsg, ServerMessage, Welcome,
};
pub use token::{Claims, TokenError, claimed_address, mint, verify};
