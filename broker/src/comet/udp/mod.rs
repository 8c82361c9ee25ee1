//! The UDP endpoint: one socket, one receive task, and `N` session shards (one task each, `N` =
//! the machine's parallelism).
//!
//! * The **receive task** ([`serve`]) only reads datagrams and routes them, so it never does the
//!   per-session work (AEAD, reliability, router calls) that would fill one core:
//!   - oversized and unknown packets are dropped and counted;
//!   - a HELLO is handed to one of `N` handshake workers (round robin, each behind a bounded
//!     inbox of [`HELLO_INBOX`]), which answers it statelessly (a CHALLENGE never larger than
//!     the HELLO, or a REJECT): no state for unauthenticated peers, and the cookie HMAC is
//!     not computed on the receive task. When the workers are behind, the HELLO is dropped
//!     and counted (`hello_busy`), so a HELLO flood costs the receive task one queue attempt
//!     per datagram and never delays DATA or LOGIN packets;
//!   - a LOGIN gets a fresh session id and goes to the shard that id names
//!     ([`ShardMap::shard_of`]);
//!   - a DATA packet goes to the shard its header's `session_id` names. Routing by session id,
//!     not by address, is what lets a session follow a NAT rebinding (section 3 of the spec):
//!     the packet from the new address still reaches the shard that owns the session.
//! * Each **shard** (`shard`) owns its sessions outright (no locks): their links, timers and
//!   outbound queues. Shards share the socket for sending (`try_send_to` on a shared socket is
//!   safe from any task).
//! * A shard's inbox is bounded; when a shard cannot keep up, the receive task drops the
//!   datagram (counted as `shard_busy`) rather than wait, like the kernel would drop it. The
//!   reliability layer resends what mattered.
//!
//! Per-session memory: see [`shard::UdpSession`] (its `session_size` test prints the figure).

mod outbox;
mod shard;

pub use shard::UdpSession;

use std::net::SocketAddr;
use std::sync::Arc;

use shared_protocol::handshake::{HelloError, HelloReply};
use shared_protocol::keys::PeerAddr;
use shared_protocol::limits::{MAX_PACKET, PROTOCOL_VERSION};
use shared_protocol::packet::PacketType;
use shared_protocol::session::peek_session_id;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::router::Transport;

use super::Context;

const T: Transport = Transport::Udp;

/// Datagrams queued per shard before the receive task drops new ones for it.
const SHARD_INBOX: usize = 1024;

/// HELLOs queued per handshake worker before the receive task drops new ones.
pub const HELLO_INBOX: usize = 256;

/// Which shard owns a session id: `session_id % count`. Session ids are handed out in sequence,
/// so logins spread evenly over the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardMap {
    count: u32,
}

impl ShardMap {
    /// A map over `count` shards (at least 1).
    pub fn new(count: usize) -> ShardMap {
        ShardMap {
            count: u32::try_from(count.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// The shard owning session id `sid`.
    pub fn shard_of(&self, sid: u32) -> usize {
        (sid % self.count) as usize
    }

    /// The next id after `sid` owned by the same shard, skipping 0 (used when `sid` is taken).
    pub fn next_in_shard(&self, sid: u32) -> u32 {
        let mut next = sid.wrapping_add(self.count);
        while next == 0 || self.shard_of(next) != self.shard_of(sid) {
            // Wrapped past u32::MAX: step to the first id of this shard again.
            next = next.wrapping_add(1);
        }
        next
    }
}

/// A datagram handed to a shard.
#[derive(Debug)]
pub(super) enum Inbound {
    /// A LOGIN, with the session id the new session gets if it is accepted.
    Login {
        /// The proposed session id (owned by the receiving shard).
        sid: u32,
        /// The packet.
        packet: Vec<u8>,
        /// Its source.
        from: SocketAddr,
    },
    /// A DATA packet for session `sid`.
    Data {
        /// The header's session id.
        sid: u32,
        /// The packet.
        packet: Vec<u8>,
        /// Its source.
        from: SocketAddr,
    },
}

/// Serves device UDP until shutdown: starts the shards, then receives and routes datagrams.
pub async fn serve(ctx: Arc<Context>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let map = ShardMap::new(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut shards = JoinSet::new();
    let mut inboxes = Vec::with_capacity(map.count());
    for index in 0..map.count() {
        let (tx, rx) = mpsc::channel(SHARD_INBOX);
        inboxes.push(tx);
        shards.spawn(shard::run(ctx.clone(), socket.clone(), map, rx));
        tracing::debug!(shard = index, "udp shard started");
    }
    let mut hello_inboxes = Vec::with_capacity(map.count());
    for _ in 0..map.count() {
        let (tx, rx) = mpsc::channel(HELLO_INBOX);
        hello_inboxes.push(tx);
        shards.spawn(hello_worker(ctx.clone(), socket.clone(), rx));
    }
    let mut receiver = Receiver {
        ctx: ctx.clone(),
        map,
        inboxes,
        hello_inboxes,
        next_hello: 0,
    };
    let mut buf = vec![0u8; MAX_PACKET + 1];
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => receiver.on_datagram(&buf[..n], from),
                Err(e) => tracing::debug!(error = %e, "udp recv error"),
            },
        }
    }
    // The shards see the same cancellation and end their sessions with a Kick (SHUTDOWN); the
    // handshake workers end when their inboxes close.
    drop(receiver);
    while shards.join_next().await.is_some() {}
}

/// The receive task's routing state.
struct Receiver {
    ctx: Arc<Context>,
    map: ShardMap,
    inboxes: Vec<mpsc::Sender<Inbound>>,
    /// The handshake workers' inboxes, used in turn.
    hello_inboxes: Vec<mpsc::Sender<(Vec<u8>, SocketAddr)>>,
    next_hello: usize,
}

impl Receiver {
    fn on_datagram(&mut self, packet: &[u8], from: SocketAddr) {
        let m = self.ctx.router.metrics();
        m.udp_datagram(true);
        if packet.len() > self.ctx.settings.max_device_packet {
            m.udp_dropped("too_large");
            m.limit_hit("max_device_frame_bytes");
            return;
        }
        let version_ok = packet.first() == Some(&PROTOCOL_VERSION);
        match packet.get(1).copied() {
            Some(t) if t == PacketType::Hello as u8 => self.on_hello(packet, from),
            Some(t) if t == PacketType::Login as u8 && version_ok => {
                let sid = self.ctx.session_id();
                let packet = packet.to_vec();
                self.route(sid, Inbound::Login { sid, packet, from });
            }
            Some(t) if t == PacketType::Data as u8 && version_ok => {
                let Ok(sid) = peek_session_id(packet) else {
                    m.udp_dropped("malformed");
                    return;
                };
                let packet = packet.to_vec();
                self.route(sid, Inbound::Data { sid, packet, from });
            }
            _ => m.udp_dropped("malformed"),
        }
    }

    fn route(&self, sid: u32, inbound: Inbound) {
        let inbox = &self.inboxes[self.map.shard_of(sid)];
        if inbox.try_send(inbound).is_err() {
            self.ctx.router.metrics().udp_dropped("shard_busy");
        }
    }

    /// Hands a HELLO to the next handshake worker; dropped and counted when it is behind.
    fn on_hello(&mut self, packet: &[u8], from: SocketAddr) {
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

/// A handshake worker: answers the HELLOs in `inbox` until the receive task ends.
async fn hello_worker(
    ctx: Arc<Context>,
    socket: Arc<UdpSocket>,
    mut inbox: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
) {
    while let Some((packet, from)) = inbox.recv().await {
        answer_hello(&ctx, &socket, &packet, from);
    }
}

/// Answers one HELLO statelessly: a CHALLENGE (never longer than the HELLO) or a REJECT.
fn answer_hello(ctx: &Context, socket: &UdpSocket, packet: &[u8], from: SocketAddr) {
    let mut out = [0u8; MAX_PACKET];
    let now = crate::router::now_ms();
    let m = ctx.router.metrics();
    match ctx
        .logins
        .acceptor()
        .on_hello(&PeerAddr::from(from), packet, now, &mut out)
    {
        Ok(HelloReply::Challenge(p)) => {
            debug_assert!(p.len() <= packet.len(), "no amplification");
            shard::send(ctx, socket, p, from);
        }
        Ok(HelloReply::Reject { packet: p, .. }) => {
            ctx.login_refused(T, from, None, "hello_rejected");
            shard::send(ctx, socket, p, from);
        }
        Err(HelloError::Dropped(_) | HelloError::BufferTooSmall) => {
            m.udp_dropped("malformed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_evenly_over_the_shards() {
        let map = ShardMap::new(4);
        let mut counts = [0usize; 4];
        for sid in 1000..1400u32 {
            counts[map.shard_of(sid)] += 1;
        }
        assert_eq!(counts, [100; 4]);
    }

    #[test]
    fn the_next_id_in_a_shard_stays_in_that_shard_and_skips_zero() {
        let map = ShardMap::new(3);
        for sid in [1, 2, 3, 7, u32::MAX - 2, u32::MAX - 1, u32::MAX] {
            let next = map.next_in_shard(sid);
            assert_ne!(next, 0);
            assert_ne!(next, sid);
            assert_eq!(map.shard_of(next), map.shard_of(sid), "{sid} -> {next}");
        }
        // One shard: every id is its own, and 0 is still skipped on wrap-around.
        let one = ShardMap::new(1);
        assert_eq!(one.next_in_shard(u32::MAX), 1);
        assert_eq!(ShardMap::new(0).count(), 1);
    }
}
