//! Device SDK for smart plugs: `no_std`, no allocation, board-agnostic.
//!
//! Boards (see `boards/`) bring the network interface, a clock and randomness; this crate brings
//! everything between the socket and the application: login with the device key, the secure
//! session and reliability of `shared-protocol`, heartbeats, reconnects, failover and the
//! at-least-once upload queue, plus the smart-plug application itself.
//!
//! # How the pieces fit
//!
//! ```text
//!  board main ──> DeviceConfig (id, key, endpoints: build-time env or flash)
//!      │
//!      ├─ client::DeviceClient  sans-IO core: Backoff -> Handshaking -> Online -> Backoff ...
//!      │     uses backoff (full jitter), queue (uploads), stats, rng (injected), time (injected),
//!      │     divide (u64 by u32 without the compiler's 64-bit division routine: less flash)
//!      │
//!      ├─ net (feature `embassy`): Runner drives the core over a Transport
//!      │     (UdpTransport | WsTransport | DualTransport on embassy-net sockets);
//!      │     DeviceHandle is the application's side (api::DeviceApi + next_event)
//!      │
//!      └─ plug: Plug<Relay, Meter> reacts to events and timers through api::DeviceApi
//! ```
//!
//! * **Sans-IO core.** [`client::DeviceClient`] never touches a socket or a clock: the driver
//!   calls `handle_datagram`, `handle_timeout`, `transport_failed`, and drains `poll_transmit`,
//!   `poll_event`, sleeping until `poll_timeout`. Randomness comes from a caller-provided
//!   [`rng::Rng`]. Host tests run it against an in-memory broker on a fake clock.
//! * **Reconnects.** Every failure (REJECT, handshake timeout, session timeout, retransmission
//!   limit, Kick, Goodbye, transport error) draws a full-jitter delay `U(0, min(cap, base·2^n))`
//!   and rotates to the next broker endpoint. A login resets the backoff.
//! * **Delivery.** Uploads wait in a bounded [`queue::UploadQueue`] (capacity `Q`) until the
//!   broker's `UploadAck`, across disconnects; when full the newest upload is refused
//!   ([`queue::UploadError::QueueFull`], counted in [`stats::Stats::uploads_rejected`]). Command
//!   results, requests and sends wait in a small outbox until their frame is acknowledged.
//!   Received Delivers advance the since-id reported at the next login.
//! * **Embassy shape.** Caller-provided static memory, `new(...) -> (DeviceHandle, Runner)`,
//!   every buffer a const generic (`Q`, `P`, `E`, `O`: the application's choice) or a
//!   documented constant (below).
//! * **Logging.** Feature `log` (default, host) or `defmt` (targets); with both, `log` wins.
//!   Malformed network input is an error value, never a panic.
//!
//! # Memory (constants)
//!
//! | constant | value | what |
//! |---|---|---|
//! | [`config::PACKET_BUF`] | 1200 | one packet (tx, rx buffers of the runner) |
//! | [`client::SEND_WINDOW`] | 4 | reliable frames in flight (5 bytes stored each) |
//! | `O` (const generic, default [`client::OUTBOX`] = 2) | application's choice | command results / requests / sends held (`P` bytes each) |
//! | `E` (const generic, default [`client::EVENT_QUEUE`] = 4) | application's choice, ≥ 2 | events held for the application (`P` bytes each); half for events from frames |
//! | [`client::HANDSHAKE_BUF`] | 160 | a pending HELLO or LOGIN |
//! | `Q` (const generic) | board's choice | uploads held (`P + 64` bytes each) |
//! | `P` (const generic) | ≤ 1024 | largest payload; the plug needs ≥ [`plug::REPORT_MAX`] (384) |
//!
//! docs/firmware.md has a board `main` example and the plug's commands.
#![no_std]

#[cfg(test)]
extern crate std;

pub(crate) mod fmt;

pub mod api;
pub mod backoff;
pub mod client;
pub mod config;
pub mod divide;
pub mod lookup;
#[cfg(feature = "embassy")]
pub mod net;
pub mod plug;
pub mod queue;
pub mod rng;
pub mod stats;
pub mod time;

pub use api::DeviceApi;
pub use client::{ConnectionState, DeviceClient, DisconnectReason, Event, Target};
pub use config::{ClientConfig, DeviceConfig, Endpoint, TransportKind};
