//! Reliability: per-direction sequence numbers, acknowledgements, retransmission with exponential
//! backoff and jitter, and duplicate suppression (docs/protocol.md section 5).

use serde::{Deserialize, Serialize};

/// Acknowledgement carried in every frame: all reliable frames below `next` were received, and bit
/// `i` of `mask` says frame `next + 1 + i` was received too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack {
    /// Every reliable frame with a sequence number below this one was received.
    pub next: u32,
    /// Selective acknowledgements above `next`: bit `i` covers sequence `next + 1 + i`.
    pub mask: u32,
}
