//! [`DeviceApi`]: what an application may ask of the client, whoever drives it.
//!
//! The sans-IO [`crate::client::DeviceClient`] implements it directly (host tests), and so does
//! the async [`crate::net::DeviceHandle`] (on boards), so application logic such as
//! [`crate::plug`] is written once and tested without a network.

use shared_protocol::ids::Address;

use crate::queue::{FullPolicy, UploadError, UploadId};
use crate::stats::Stats;

/// Why an outgoing reliable message (command result, request, send) was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OutboxError {
    /// The outbox holds `OUTBOX` unacknowledged messages: retry after some are acknowledged.
    Full,
    /// The payload is longer than the client's `P`.
    PayloadTooLarge,
    /// The request path is longer than `MAX_PATH` bytes.
    PathTooLong,
}

impl core::fmt::Display for OutboxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OutboxError::Full => "outbox full",
            OutboxError::PayloadTooLarge => "payload too large",
            OutboxError::PathTooLong => "request path too long",
        })
    }
}

/// The application's side of the device client.
pub trait DeviceApi {
    /// Queues an upload (at-least-once; survives disconnects) and returns its id; when the
    /// queue is full, `when_full` decides whether the new upload is refused or the oldest queued
    /// one dropped for it ([`crate::queue`], counted in [`Stats`]).
    fn upload_with(
        &mut self,
        topic: &str,
        payload: &[u8],
        when_full: FullPolicy,
    ) -> Result<UploadId, UploadError>;
    /// Queues an upload as [`upload_with`](Self::upload_with) does, refusing it when the queue is
    /// full ([`FullPolicy::KeepOldest`]: what was accepted is a promise).
    fn upload(&mut self, topic: &str, payload: &[u8]) -> Result<UploadId, UploadError> {
        self.upload_with(topic, payload, FullPolicy::KeepOldest)
    }
    /// Answers a command.
    fn command_result(
        &mut self,
        cmd_id: u32,
        status: u16,
        payload: &[u8],
    ) -> Result<(), OutboxError>;
    /// Sends a request to the back end; the answer arrives as `Event::Response` with this id.
    fn request(&mut self, path: &str, payload: &[u8]) -> Result<u32, OutboxError>;
    /// Sends a message to another terminal.
    fn send(&mut self, to: Address, payload: &[u8]) -> Result<(), OutboxError>;
    /// Connection statistics.
    fn stats(&self) -> Stats;
    /// Whether a session is up.
    fn is_online(&self) -> bool;
}
