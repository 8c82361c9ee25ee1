//! The embassy side (feature `embassy`): transports over embassy-net sockets, the async
//! [`Runner`] that drives the sans-IO [`DeviceClient`](crate::client::DeviceClient), and the
//! application's [`DeviceHandle`].
//!
//! Shaped like embassy-net's `new(...) -> (Stack, Runner)`: the caller provides static memory
//! ([`ClientResources`], [`RunnerBuffers`]), [`new`] splits it into a handle (cheap to copy, used
//! by application tasks) and a runner (run forever in its own task). The client core sits in a
//! blocking mutex that both sides lock only briefly, never across an `.await`; the runner is
//! woken by a signal when the application queued something, and the application by another
//! when events arrived.
//!
//! ```text
//!  app task(s) ── DeviceHandle ──┐                 ┌── Runner::run (one task)
//!                                ▼                 ▼
//!                 Mutex<RefCell<DeviceClient>>  select(transport.recv, Timer::at(poll_timeout),
//!                                                      app signal) -> handle_* / poll_transmit
//!                                                   │
//!                                        Transport: UdpTransport | WsTransport | DualTransport,
//!                                          or opened per endpoint kind by SharedSockets
//! ```

mod handle;
mod liveness;
mod lookup;
mod runner;
mod shared;
mod transport;
mod udp;
mod ws;

#[cfg(test)]
mod tests;

pub use handle::{ClientResources, DeviceHandle, run_plug};
pub use liveness::{LIVENESS_GRACE_MS, Liveness, MAX_PROMISE_MS};
pub use lookup::{HttpLookup, LOOKUP_TCP_RX, LookupBuffers};
pub use runner::{Runner, RunnerBuffers, new};
pub use shared::{SharedSockets, SharedTransport, SocketMemory};
pub use transport::{DualTransport, SocketKind, Sockets, Transport, TransportError};
pub use udp::{UDP_QUEUE, UdpBuffers, UdpTransport};
pub use ws::{
    WS_CLOSE_TIMEOUT_MS, WS_FRAME_OVERHEAD, WS_SEND_TIMEOUT_MS, WS_TCP_BUF, WsBuffers, WsStream,
    WsTransport,
};

/// The current time on embassy's clock, as the core's [`Instant`](crate::time::Instant).
pub fn now() -> crate::time::Instant {
    crate::time::Instant::from_millis(embassy_time::Instant::now().as_millis())
}
