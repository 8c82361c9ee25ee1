//! Connection statistics, reported by the plug's `status` command.

/// Counters since boot. All saturate instead of wrapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Logins the broker accepted (WELCOME received).
    pub logins: u32,
    /// Connection attempts after the first (each HELLO sent after a failure or disconnect).
    pub reconnects: u32,
    /// Logins that failed (REJECT, handshake timeout, transport failure).
    pub login_failures: u32,
    /// Reliable frames sent again because no acknowledgement came in time.
    pub retransmits: u32,
    /// Uploads the broker acknowledged (UploadAck).
    pub uploads_acked: u32,
    /// Uploads refused because the upload queue was full (`FullPolicy::KeepOldest`).
    pub uploads_rejected: u32,
    /// Queued uploads dropped to make room for a newer one (`FullPolicy::KeepNewest`).
    pub uploads_evicted: u32,
    /// Uploads marked to go again: in a new session after a reconnect, or in the same session
    /// after the broker refused them (or one sent before them) for load (a retryable `Error`
    /// about a frame). One whose UploadAck arrives before it went again is still counted.
    pub uploads_resent: u32,
    /// Packets handed to the transport.
    pub tx_packets: u32,
    /// Packets received from the transport (before any check).
    pub rx_packets: u32,
    /// Received packets dropped as malformed, unauthenticated, replayed or unexpected.
    pub rx_dropped: u32,
    /// Heartbeats (Ping) sent.
    pub pings: u32,
    /// Node lookups that returned endpoints.
    pub lookups: u32,
    /// Node lookups that failed (the static endpoint list was used instead).
    pub lookup_failures: u32,
    /// `Connected` / `Disconnected` events dropped because the application left the event
    /// queue full (its `E` is too small for how rarely it drains it).
    pub events_dropped: u32,
    /// Delivers the client took again and did not pass on, because it had already taken them:
    /// a resent frame it had already received (its acknowledgement was lost) or, after a
    /// reconnect, a `msg_id` at or below the highest one taken. Repeats the application never
    /// sees; the broker is working as specified when this grows under loss.
    pub deliveries_suppressed: u32,
}

/// Adds one to a counter, saturating.
pub(crate) fn bump(counter: &mut u32) {
    *counter = counter.saturating_add(1);
}

/// Adds `n` to a saturating counter.
pub(crate) fn add(counter: &mut u32, n: u32) {
    *counter = counter.saturating_add(n);
}
