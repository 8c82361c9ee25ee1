//! What a shard does with each datagram it reads from its socket, before any session work:
//! keep it, hand it to a handshake worker or to the shard that owns it, or drop it (counted).
//!
//! * oversized and unknown packets are dropped and counted;
//! * a HELLO goes to one of the handshake workers (in turn, each behind a bounded inbox of
//!   [`super::HELLO_INBOX`]), which answers it statelessly (a CHALLENGE never larger than the
//!   HELLO, or a REJECT): no state for unauthenticated peers, and the cookie HMAC is not
//!   computed on a shard. When the workers are behind, the HELLO is dropped and counted
//!   (`hello_busy`), so a HELLO flood costs a shard one queue attempt per datagram and never
//!   delays DATA or LOGIN packets;
//! * a LOGIN stays with the shard that read it, whose session table gives the new session its
//!   id (`table`: the id names the shard, the slot and the slot's generation);
//! * a DATA packet stays when its header's `session_id` names this shard; otherwise it goes to
//!   the owner with the other packets of the same read for it, as one channel message per
//!   shard per read ([`ShardBatch`]). Routing by session id, not by address, is what lets a
//!   session follow a NAT rebinding (section 3 of the spec). When the owner's inbox is full,
//!   the batch is dropped and each datagram counted (`shard_busy`), as the kernel drops what a
//!   full buffer cannot take; the reliability layer resends what mattered.

use std::net::SocketAddr;
use std::sync::Arc;

use shared_protocol::limits::PROTOCOL_VERSION;
use shared_protocol::packet::PacketType;
use shared_protocol::session::peek_session_id;
use tokio::sync::mpsc;

use super::super::Context;
use super::batch::Received;
use super::{ShardBatch, ShardMap};

/// A HELLO for a handshake worker: its bytes and source.
pub(super) type Hello = (Vec<u8>, SocketAddr);

/// A datagram the reading shard handles itself ([`Dispatch::route`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mine {
    /// A LOGIN: the session will get a slot of this shard's table.
    Login,
    /// A DATA packet for the session with this id, one of this shard's.
    Data(u32),
}

/// One shard's routing state for the datagrams it reads.
pub(super) struct Dispatch {
    ctx: Arc<Context>,
    map: ShardMap,
    /// The shard this routes for.
    index: usize,
    /// Each other shard's part of the read being routed (this shard's entry stays empty).
    pending: Vec<ShardBatch>,
    /// Every shard's inbox, by index.
    inboxes: Vec<mpsc::Sender<ShardBatch>>,
    /// The handshake workers' inboxes, used in turn.
    hello_inboxes: Vec<mpsc::Sender<Hello>>,
    next_hello: usize,
}

impl Dispatch {
    /// Routing for shard `index` of `map`, with every shard's inbox and the workers' inboxes.
    pub fn new(
        ctx: Arc<Context>,
        map: ShardMap,
        index: usize,
        inboxes: Vec<mpsc::Sender<ShardBatch>>,
        hello_inboxes: Vec<mpsc::Sender<Hello>>,
    ) -> Dispatch {
        Dispatch {
            ctx,
            map,
            index,
            pending: (0..map.count()).map(|_| ShardBatch::default()).collect(),
            inboxes,
            hello_inboxes,
            next_hello: 0,
        }
    }

    /// Counts one read (its datagrams and the kernel's drops since the last one).
    pub fn count_read(&self, got: Received) {
        let m = self.ctx.router.metrics();
        m.udp_datagrams(true, got.count as u64);
        if got.kernel_drops > 0 {
            m.udp_kernel_drops(got.kernel_drops);
        }
    }

    /// Routes one datagram: `Some` when this shard handles it; `None` when it went elsewhere or
    /// was dropped.
    pub fn route(&mut self, packet: &[u8], from: SocketAddr) -> Option<Mine> {
        let m = self.ctx.router.metrics();
        if packet.len() > self.ctx.settings.max_device_packet {
            m.udp_dropped("too_large");
            m.limit_hit("max_device_frame_bytes");
            return None;
        }
        let version_ok = packet.first() == Some(&PROTOCOL_VERSION);
        match packet.get(1).copied() {
            Some(t) if t == PacketType::Hello as u8 => {
                self.hand_to_handshake_worker(packet, from);
                None
            }
            Some(t) if t == PacketType::Login as u8 && version_ok => Some(Mine::Login),
            Some(t) if t == PacketType::Data as u8 && version_ok => {
                let Ok(sid) = peek_session_id(packet) else {
                    m.udp_dropped("malformed");
                    return None;
                };
                let owner = self.map.shard_of(sid);
                if owner == self.index {
                    return Some(Mine::Data(sid));
                }
                self.pending[owner].push(sid, packet, from);
                None
            }
            _ => {
                m.udp_dropped("malformed");
                None
            }
        }
    }

    /// Hands each other shard its part of the read, in one message each.
    pub fn forward(&mut self) {
        for (shard, pending) in self.pending.iter_mut().enumerate() {
            if pending.items.is_empty() {
                continue;
            }
            let batch = std::mem::take(pending);
            let n = batch.items.len() as u64;
            if self.inboxes[shard].try_send(batch).is_err() {
                self.ctx.router.metrics().udp_dropped_n("shard_busy", n);
            }
        }
    }

    /// Hands a HELLO to the next handshake worker; dropped and counted when it is behind.
    fn hand_to_handshake_worker(&mut self, packet: &[u8], from: SocketAddr) {
        let i = self.next_hello % self.hello_inboxes.len();
        self.next_hello = self.next_hello.wrapping_add(1);
        if self.hello_inboxes[i]
            .try_send((packet.to_vec(), from))
            .is_err()
        {
            self.ctx.router.metrics().udp_dropped("hello_busy");
        }
    }
}
