//! The login handshake (docs/protocol.md sections 2.1 and 3).
//!
//! ```text
//! device (ClientHandshake)                     broker (Acceptor, stateless)
//!   HELLO {address, client_nonce} + padding ->   on_hello: cookie = HMAC(secret, ts, peer, ...)
//!                                           <-   CHALLENGE {timestamp_ms, cookie}
//!   LOGIN {..., since_id, proof}            ->   on_login: checks in the order of section 3
//!                                           <-   WELCOME {session_id, broker_nonce}
//!                                                  + sealed(counter 0, b2d key) { Welcome }
//!   established: SecureSession (Device)          Accepted: SecureSession (Broker)
//! ```
//!
//! * [`client`]: the device side, a small state machine with caller-driven timeouts.
//! * [`server`]: the broker side; it keeps no state between HELLO and LOGIN (the cookie carries
//!   it) and asks the caller for the terminal's key and last login time only after the cookie and
//!   its age have been checked.
//! * [`reject_packet`]: the REJECT a broker sends for a [`Code`]; [`reject_answer`] the same,
//!   unless it would be longer than the packet it answers (anti-amplification).
//! * [`retry_after_capped`]: how long a device honours an (unauthenticated) REJECT's wait.

pub mod client;
pub mod server;

pub use client::{Carrier, ClientError, ClientEvent, ClientHandshake, Established, WelcomeInfo};
pub use server::{
    Accepted, Acceptor, HelloError, HelloReply, LoginError, SessionGrant, TerminalRecord,
    WelcomeParams,
};

use crate::codes::Code;
use crate::limits::{PROTOCOL_VERSION, REJECT_RETRY_AFTER_CAP_MS};
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

/// Encodes the REJECT answering a received packet of `answered_len` bytes, or `None` when the
/// REJECT would be longer than that packet: a broker never answers with more bytes than it
/// received (docs/protocol.md section 2), it drops such a packet instead.
pub fn reject_answer(
    answered_len: usize,
    code: Code,
    retry_after_ms: u32,
    out: &mut [u8],
) -> Option<&[u8]> {
    match reject_packet(code, retry_after_ms, out) {
        Ok(p) if p.len() <= answered_len => Some(p),
        _ => None,
    }
}

/// The wait in milliseconds a device honours for a REJECT's `retry_after_ms`: at most
/// [`REJECT_RETRY_AFTER_CAP_MS`], because a REJECT is unauthenticated and a forged one must not
/// keep a device offline for long.
pub const fn retry_after_capped(retry_after_ms: u32) -> u32 {
    if retry_after_ms < REJECT_RETRY_AFTER_CAP_MS {
        retry_after_ms
    } else {
        REJECT_RETRY_AFTER_CAP_MS
    }
}
