//! What the client reports to the application ([`Event`]) and why a session ended
//! ([`DisconnectReason`]).
//!
//! Events own copies of their payloads (`heapless` buffers of `P` bytes) so the application can
//! keep them after the receive buffer is reused. Payloads longer than `P` are refused before the
//! frame is acknowledged, so the broker retries or fails the operation instead of the device
//! silently truncating it.

use heapless::{String, Vec};
use shared_protocol::codes::Code;
use shared_protocol::ids::Address;
use shared_protocol::limits::MAX_NAME;

use crate::queue::UploadId;

/// Why the client left the Online or Handshaking state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DisconnectReason {
    /// No WELCOME within the handshake timeout.
    HandshakeTimeout,
    /// The broker answered REJECT (advisory: unauthenticated). `code` says why (AUTH_FAILED for a
    /// key mismatch, UNKNOWN_TERMINAL, SERVER_BUSY, ...).
    Rejected {
        /// The REJECT's code.
        code: Code,
        /// The broker's requested minimum wait, in milliseconds (0: none).
        retry_after_ms: u32,
    },
    /// Nothing authenticated arrived for the session timeout.
    SessionTimeout,
    /// A reliable frame was sent `MAX_TRANSMISSIONS` times without acknowledgement.
    RetransmitLimit,
    /// The broker sent Kick.
    Kicked {
        /// The Kick's reason.
        reason: Code,
    },
    /// The broker sent Goodbye.
    Goodbye {
        /// The Goodbye's reason.
        reason: Code,
    },
    /// The transport failed (TCP connect refused, connection closed, socket error).
    TransportFailed,
    /// The session's send counter is used up; the client logs in again.
    Rekey,
    /// The application asked to disconnect.
    Closed,
    /// Nothing to dial: the node lookup failed and no static endpoint is configured.
    NoEndpoint,
}

/// Something the application should know or do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<const P: usize> {
    /// Logged in: a session is up.
    Connected {
        /// The broker's session id.
        session_id: u32,
    },
    /// The session (or a login attempt) ended; the client backs off and reconnects by itself.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// The broker asks the device to run a command; answer with `command_result(cmd_id, ...)`.
    Command {
        /// Echo this in the result.
        cmd_id: u32,
        /// Command name (e.g. `relay.set`).
        name: String<MAX_NAME>,
        /// Arguments.
        payload: Vec<u8, P>,
    },
    /// A message for the device (from a terminal or the back end).
    Deliver {
        /// Strictly increasing per device; the client reports the highest one at login.
        msg_id: u64,
        /// Sender terminal, or `None` for the back end.
        from: Option<Address>,
        /// Application bytes.
        payload: Vec<u8, P>,
    },
    /// The answer to one of the device's requests.
    Response {
        /// The id `request` returned.
        req_id: u32,
        /// Application status.
        status: u16,
        /// Response bytes.
        payload: Vec<u8, P>,
    },
    /// The broker stored an upload durably; it left the queue.
    UploadAcked {
        /// The id `upload` returned.
        id: UploadId,
    },
    /// A terminal this device follows came online or went offline.
    Presence {
        /// The terminal.
        who: Address,
        /// Online now?
        online: bool,
    },
    /// The broker reports that one of the device's frames failed.
    BrokerError {
        /// What went wrong.
        code: Code,
        /// The device frame concerned (0: not about one frame).
        about_seq: u32,
    },
}
