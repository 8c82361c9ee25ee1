//! Sizes and timeouts every peer can rely on (docs/protocol.md section 8).
//!
//! Codecs in [`crate::packet`], [`crate::frame`] and `json` enforce the size limits on both encode
//! and decode; the timeouts are used by the handshake, session and reliability state machines.
//! Compile-time assertions at the end check that the largest possible frame fits in one packet.

/// Protocol version spoken by this crate (byte 0 of every packet).
pub const PROTOCOL_VERSION: u8 = 3;

/// Largest packet (UDP datagram / WebSocket binary message), in bytes.
pub const MAX_PACKET: usize = 1200;
/// Packet header: version and type bytes.
pub const PACKET_HEADER_LEN: usize = 2;
/// Smallest HELLO packet (header included); shorter HELLOs are dropped (anti-amplification).
pub const HELLO_MIN_LEN: usize = 128;
/// DATA packet header: version, type, session_id (4), counter (8).
pub const DATA_HEADER_LEN: usize = 14;
/// WELCOME packet header: version, type, session_id (4), broker_nonce (16).
pub const WELCOME_HEADER_LEN: usize = 22;
/// Length of the broker's per-login random nonce (an input of the session keys).
pub const BROKER_NONCE_LEN: usize = 16;
/// Ceiling a device applies to a REJECT's `retry_after_ms` (REJECTs are unauthenticated, so a
/// forged one must not keep a device offline longer than this): it waits
/// `min(retry_after_ms, REJECT_RETRY_AFTER_CAP_MS)`.
pub const REJECT_RETRY_AFTER_CAP_MS: u32 = 300_000;
/// ChaCha20-Poly1305 authentication tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a DATA packet adds around the encoded frame.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Largest encoded frame (postcard bytes inside one DATA packet).
pub const MAX_FRAME: usize = MAX_PACKET - DATA_OVERHEAD;
/// Smallest encoded frame: `seq` 0, `ack` 0/0, a body without fields (4 bytes).
pub const MIN_FRAME: usize = 4;
/// A sender never uses a DATA counter at or above this value (2^48); it logs in again instead.
pub const COUNTER_LIMIT: u64 = 1 << 48;

/// Largest application payload (Deliver, Send, Upload, Command, CommandResult, Request, Response,
/// and the decoded bytes of a JSON `payload`).
pub const MAX_PAYLOAD: usize = 1024;
/// Longest Upload `topic`, in UTF-8 bytes.
pub const MAX_TOPIC: usize = 64;
/// Longest Request `path`, in UTF-8 bytes.
pub const MAX_PATH: usize = 64;
/// Longest Command `name`, in UTF-8 bytes.
pub const MAX_NAME: usize = 32;
/// Largest message id (2^53 - 1, exactly representable as a JSON/IEEE-754 number).
pub const MAX_MSG_ID: u64 = (1 << 53) - 1;

/// Reliable frames a sender may have unacknowledged per direction.
pub const MAX_IN_FLIGHT: u32 = 16;
/// A receiver accepts reliable frames up to this many sequence numbers ahead of `ack.next`.
pub const RECEIVE_WINDOW: u32 = 32;
/// A receiver acknowledges a reliable frame within this delay.
pub const ACK_DELAY_MS: u64 = 50;
/// First retransmission timeout.
pub const RTO_INITIAL_MS: u64 = 500;
/// Retransmission timeout ceiling (doubling stops here).
pub const RTO_MAX_MS: u64 = 8_000;
/// Transmissions of one frame (first one included) before the session is declared dead.
pub const MAX_TRANSMISSIONS: u32 = 8;

/// How long a CHALLENGE's timestamp is accepted in a LOGIN.
pub const CHALLENGE_LIFETIME_MS: u64 = 30_000;
/// How far a broker's challenge clock may stamp a CHALLENGE ahead of its wall clock (to give
/// one terminal a new timestamp for every HELLO, docs/protocol.md section 3.2 step 2).
pub const CHALLENGE_CLOCK_MAX_LEAD_MS: u64 = 1_000;
/// Time allowed from connection (or first HELLO) to a completed login (WELCOME / JSON welcome).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Default `heartbeat_secs` announced in WELCOME.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 30;
/// Default `session_timeout_secs` announced in WELCOME.
pub const DEFAULT_SESSION_TIMEOUT_SECS: u16 = 90;

/// Largest JSON transport message (one WebSocket text message), in bytes.
pub const MAX_JSON_MESSAGE: usize = 4096;
/// Longest token in a JSON `auth` message, in bytes.
pub const MAX_TOKEN: usize = 1024;
/// Longest human-readable text (`reason`, `message`) in a JSON message, in bytes.
pub const MAX_TEXT: usize = 256;

// The largest frame (Upload/Request with a full topic/path and payload) must fit in MAX_FRAME:
// seq (5) + ack (5 + 5) + variant (1) + id (5) + str (2 + 64) + payload (2 + 1024).
const _: () = assert!(5 + 10 + 1 + 5 + 2 + MAX_TOPIC + 2 + MAX_PAYLOAD <= MAX_FRAME);
const _: () = assert!(5 + 10 + 1 + 5 + 2 + MAX_PATH + 2 + MAX_PAYLOAD <= MAX_FRAME);
// Deliver: msg_id (8 bytes up to 2^53) + Some(Address) (1 + 1 + 5) + payload.
const _: () = assert!(5 + 10 + 1 + 8 + 7 + 2 + MAX_PAYLOAD <= MAX_FRAME);
// A JSON `send` with the largest payload (base64: 4/3) fits in one JSON message.
const _: () = assert!(MAX_PAYLOAD.div_ceil(3) * 4 + 256 <= MAX_JSON_MESSAGE);
// A CHALLENGE (2 + u64 varint 10 + 32) is smaller than a HELLO: no amplification.
const _: () = assert!(PACKET_HEADER_LEN + 10 + 32 < HELLO_MIN_LEN);
// The WELCOME header is the DATA header with the 8-byte counter replaced by the broker nonce.
const _: () = assert!(WELCOME_HEADER_LEN == PACKET_HEADER_LEN + 4 + BROKER_NONCE_LEN);
