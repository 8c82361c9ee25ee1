//! The later copies of a UDP session's shutdown Kick (docs/protocol.md section 6, "Shutdown").
//!
//! A Kick is an unreliable frame: one lost datagram and the device notices the restart only at
//! its liveness timeout, while its readings pile up. So when a shard ends a session with Kick
//! `SHUTDOWN` it sends the Kick at once and seals [`SHUTDOWN_KICK_COPIES`] - 1 more copies,
//! each in its own DATA packet with a fresh counter (the device's replay window takes each as
//! new; the first that arrives ends the session there and the rest find no session). The
//! copies are kept here, already sealed, since the session itself is gone, and the shard sends
//! each when it falls due, [`SHUTDOWN_KICK_SPACING_MS`] apart: from its loop while it runs, and
//! after its loop ends (see `shard::run`) until none is left.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use super::batch::SendBatch;

/// How many times a session's shutdown Kick is sent (the first one included).
pub const SHUTDOWN_KICK_COPIES: u64 = 3;
/// Time between two copies of a shutdown Kick, ms.
pub const SHUTDOWN_KICK_SPACING_MS: u64 = 100;

/// One sealed Kick copy: when it is due (monotonic ms), where it goes, its bytes.
type KickCopy = (u64, SocketAddr, Box<[u8]>);

/// Sealed Kick copies waiting for their time, earliest first.
#[derive(Default)]
pub(super) struct KickCopies {
    waiting: BinaryHeap<Reverse<KickCopy>>,
}

impl KickCopies {
    /// Keeps `packet` (a sealed Kick) to be sent to `peer` at `due_ms` (monotonic).
    pub(super) fn push(&mut self, due_ms: u64, peer: SocketAddr, packet: &[u8]) {
        self.waiting.push(Reverse((due_ms, peer, packet.into())));
    }

    /// When the next copy falls due, if any is left.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.waiting.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Moves every copy due at `now_ms` into `out`.
    pub(super) fn take_due(&mut self, now_ms: u64, out: &mut SendBatch) {
        while self.next_due().is_some_and(|due| due <= now_ms) {
            if let Some(Reverse((_, peer, packet))) = self.waiting.pop() {
                out.push(&packet, peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_leave_in_due_order_and_only_when_due() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut k = KickCopies::default();
        k.push(200, a, b"a2");
        k.push(100, a, b"a1");
        k.push(150, b, b"b1");
        assert_eq!(k.next_due(), Some(100));
        let mut out = SendBatch::default();
        k.take_due(99, &mut out);
        assert!(out.is_empty());
        k.take_due(150, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(k.next_due(), Some(200));
        k.take_due(1_000, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(k.next_due(), None, "none left");
    }
}
