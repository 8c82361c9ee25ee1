//! The login handshake (docs/protocol.md sections 2.1 and 3).
//!
//! ```text
//! device (ClientHandshake)                     broker (Acceptor, stateless)
//!   HELLO {address, client_nonce} + padding ->   on_hello: cookie = HMAC(secret, ts, peer, ...)
//!                                           <-   CHALLENGE {timestamp_ms, cookie}
//!   LOGIN {..., since_id, proof}            ->   on_login: checks in the order of section 3
//!                                           <-   DATA(counter 0, b2d key) { Welcome }
//!   established: SecureSession (Device)          Accepted: SecureSession (Broker)
//! ```
//!
//! * [`client`]: the device side, a small state machine with caller-driven timeouts.
//! * [`server`]: the broker side; it keeps no state between HELLO and LOGIN (the cookie carries
//!   it) and asks the caller for the terminal's key and last login time only after the cookie and
//!   its age have been checked.
//! * [`reject_packet`]: the REJECT a broker sends for a [`Code`].

pub mod client;
pub mod server;

pub use client::{ClientError, ClientEvent, ClientHandshake, Established, WelcomeInfo};
pub use server::{
    Accepted, Acceptor, HelloError, HelloReply, LoginError, TerminalRecord, WelcomeParams,
};

use crate::codes::Code;
use crate::limits::PROTOCOL_VERSION;
use crate::packet::{EncodeError, Reject};

/// Encodes a REJECT for `code` (with this crate's version as `max_version`) into `out`.
pub fn reject_packet(
    code: Code,
    retry_after_ms: u32,
    out: &mut [u8],
) -> Result<&mut [u8], EncodeError> {
    Reject {
        code,
        max_version: PROTOCOL_VERSION,
        retry_after_ms,
    }
    .encode(out)
}
