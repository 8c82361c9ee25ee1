//! The UDP endpoint: one socket, one receive task, and `N` session shards (one task each, `N` =
//! the machine's parallelism).
//!
//! * **Batches** ([`batch`]): the socket is read and written up to [`batch::BATCH`] datagrams
//!   per system call (`recvmmsg`, `sendmmsg`), with the receive and send buffers of `[udp]`
//!   ([`UdpConfig`]); datagrams the kernel drops because the receive buffer is full are counted
//!   (`broker_udp_kernel_drops_total`).
//! * The **receive task** ([`serve`]) only reads datagrams and routes them, so it never does the
//!   per-session work (AEAD, reliability, router calls) that would fill one core. The LOGIN and
//!   DATA packets of one read are handed to each shard as one [`ShardBatch`] (one channel
//!   message per shard per read, not per datagram):
//!   - oversized and unknown packets are dropped and counted;
//!   - a HELLO is handed to one of `N` handshake workers (round robin, each behind a bounded
//!     inbox of [`HELLO_INBOX`]), which answers it statelessly (a CHALLENGE never larger than
//!     the HELLO, or a REJECT): no state for unauthenticated peers, and the cookie HMAC is
//!     not computed on the receive task. When the workers are behind, the HELLO is dropped
//!     and counted (`hello_busy`), so a HELLO flood costs the receive task one queue attempt
//!     per datagram and never delays DATA or LOGIN packets;
//!   - a LOGIN goes to the next shard in turn, whose session table gives the new session its
//!     id (`table`: the id names the shard, the slot and the slot's generation);
//!   - a DATA packet goes to the shard its header's `session_id` names. Routing by session id,
//!     not by address, is what lets a session follow a NAT rebinding (section 3 of the spec):
//!     the packet from the new address still reaches the shard that owns the session.
//! * Each **shard** (`shard`) owns its sessions outright (no locks): their links, timers and
//!   outbound queues. Shards share the socket for sending (sending on a shared socket is safe
//!   from any task): each collects the datagrams one turn of its loop produces (the answers to
//!   a whole batch, say) and hands them to the kernel together at the end of the turn.
//! * A shard's inbox is bounded ([`SHARD_INBOX`] batches); when a shard cannot keep up, the
//!   receive task drops the batch (each datagram counted as `shard_busy`) rather than wait,
//!   like the kernel would drop it. The reliability layer resends what mattered.
//!
//! Per-session memory: see [`shard::UdpSession`] (its `session_size` test prints the figure).

pub mod batch;
mod config;
mod kick_copies;
mod outbox;
mod shard;
mod table;
mod timers;

pub use config::UdpConfig;
pub use kick_copies::{SHUTDOWN_KICK_COPIES, SHUTDOWN_KICK_SPACING_MS};
pub use shard::UdpSession;

use std::net::SocketAddr;
use std::sync::Arc;

use batch::{BATCH, RecvBatch, SendBatch};

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

/// Batches (each up to [`BATCH`] datagrams) queued per shard before the receive task drops new
/// ones for it.
pub const SHARD_INBOX: usize = 256;

/// HELLOs queued per handshake worker before the receive task drops new ones.
pub const HELLO_INBOX: usize = 256;

/// Which shard owns a session id: `session_id % count`. Each shard's session table hands out
/// only ids it owns (`table`), and logins go to the shards in turn, so they spread evenly.
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
}

/// What a datagram handed to a shard is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A LOGIN; `sid` is 0 (the receiving shard's table gives the session its id).
    Login,
    /// A DATA packet; `sid` is its header's session id.
    Data,
}

/// One datagram of a [`ShardBatch`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Item {
    /// LOGIN or DATA.
    pub kind: Kind,
    /// The session id (see [`Kind`]).
    pub sid: u32,
    /// Its source.
    pub from: SocketAddr,
    /// Where its bytes end in [`ShardBatch::bytes`] (they start where the previous ones end).
    pub end: usize,
}

/// The LOGIN and DATA packets of one read for one shard, their bytes back to back (two
/// allocations per shard per read, not one per datagram).
#[derive(Debug, Default)]
pub(super) struct ShardBatch {
    /// The packets' bytes.
    pub bytes: Vec<u8>,
    /// The packets, in arrival order.
    pub items: Vec<Item>,
}

impl ShardBatch {
    fn push(&mut self, kind: Kind, sid: u32, packet: &[u8], from: SocketAddr) {
        self.bytes.extend_from_slice(packet);
        self.items.push(Item {
            kind,
            sid,
            from,
            end: self.bytes.len(),
        });
    }
}

/// Hands `out`'s datagrams to the kernel, counting them and those it could not take.
pub(super) fn flush_out(ctx: &Context, socket: &UdpSocket, out: &mut SendBatch) {
    if out.is_empty() {
        return;
    }
    let f = out.flush(socket);
    let m = ctx.router.metrics();
    m.udp_datagrams(false, f.sent + f.failed);
    if f.failed > 0 {
        m.udp_dropped_n("send_failed", f.failed);
    }
}

/// Applies `[udp]`'s buffer sizes to `socket`, logging and metering what the kernel gave.
fn apply_buffers(ctx: &Context, socket: &UdpSocket) {
    let cfg = ctx.settings.udp;
    match batch::apply_buffers(socket, cfg.receive_buffer_bytes, cfg.send_buffer_bytes) {
        Ok(given) => {
            let m = ctx.router.metrics();
            m.udp_socket_buffer("receive", given.receive);
            m.udp_socket_buffer("send", given.send);
            // Linux reports twice the size it gave; less than asked means it capped it.
            let capped = given.receive < cfg.receive_buffer_bytes.saturating_mul(2)
                || given.send < cfg.send_buffer_bytes.saturating_mul(2);
            if capped {
                tracing::warn!(
                    receive_asked = cfg.receive_buffer_bytes,
                    receive_given = given.receive,
                    send_asked = cfg.send_buffer_bytes,
                    send_given = given.send,
                    "udp socket buffers capped by the kernel: raise net.core.rmem_max / \
                     net.core.wmem_max or run with CAP_NET_ADMIN"
                );
            } else {
                tracing::info!(
                    receive = given.receive,
                    send = given.send,
                    "udp socket buffers (as the kernel reports them)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "udp socket buffers not set; kernel defaults kept"),
    }
}

/// Serves device UDP until shutdown: starts the shards, then receives and routes datagrams.
pub async fn serve(ctx: Arc<Context>, socket: UdpSocket) {
    apply_buffers(&ctx, &socket);
    let socket = Arc::new(socket);
    let map = ShardMap::new(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut shards = JoinSet::new();
    let mut inboxes = Vec::with_capacity(map.count());
    for index in 0..map.count() {
        let (tx, rx) = mpsc::channel(SHARD_INBOX);
        inboxes.push(tx);
        shards.spawn(shard::run(ctx.clone(), socket.clone(), map, index, rx));
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
        pending: (0..map.count()).map(|_| ShardBatch::default()).collect(),
        inboxes,
        hello_inboxes,
        next_hello: 0,
        next_login: 0,
    };
    // One byte more than the largest packet, so a longer datagram shows as too large.
    let mut rx = RecvBatch::new(MAX_PACKET + 1);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = socket.readable() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "udp socket error");
                    continue;
                }
                match rx.recv(&socket) {
                    Ok(got) => receiver.on_batch(&rx, got),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => tracing::debug!(error = %e, "udp recv error"),
                }
            }
        }
    }
    // The shards see the same cancellation and end their sessions with a Kick (SHUTDOWN, sent
    // three times 100 ms apart: `kick_copies`); the handshake workers end when their inboxes
    // close.
    drop(receiver);
    while shards.join_next().await.is_some() {}
}

/// The receive task's routing state.
struct Receiver {
    ctx: Arc<Context>,
    map: ShardMap,
    /// Each shard's part of the read being routed.
    pending: Vec<ShardBatch>,
    inboxes: Vec<mpsc::Sender<ShardBatch>>,
    /// The handshake workers' inboxes, used in turn.
    hello_inboxes: Vec<mpsc::Sender<(Vec<u8>, SocketAddr)>>,
    next_hello: usize,
    /// The shard the next LOGIN goes to (modulo the shard count): logins go round the shards.
    next_login: usize,
}

impl Receiver {
    /// Routes the datagrams of one read, then hands each shard its part in one message.
    fn on_batch(&mut self, rx: &RecvBatch, got: batch::Received) {
        let m = self.ctx.router.metrics();
        m.udp_datagrams(true, got.count as u64);
        if got.kernel_drops > 0 {
            m.udp_kernel_drops(got.kernel_drops);
        }
        for (packet, from) in rx.datagrams() {
            self.on_datagram(packet, from);
        }
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

    fn on_datagram(&mut self, packet: &[u8], from: SocketAddr) {
        let m = self.ctx.router.metrics();
        if packet.len() > self.ctx.settings.max_device_packet {
            m.udp_dropped("too_large");
            m.limit_hit("max_device_frame_bytes");
            return;
        }
        let version_ok = packet.first() == Some(&PROTOCOL_VERSION);
        match packet.get(1).copied() {
            Some(t) if t == PacketType::Hello as u8 => self.on_hello(packet, from),
            Some(t) if t == PacketType::Login as u8 && version_ok => {
                let shard = self.next_login % self.map.count();
                self.next_login = self.next_login.wrapping_add(1);
                self.pending[shard].push(Kind::Login, 0, packet, from);
            }
            Some(t) if t == PacketType::Data as u8 && version_ok => {
                let Ok(sid) = peek_session_id(packet) else {
                    m.udp_dropped("malformed");
                    return;
                };
                self.route(Kind::Data, sid, packet, from);
            }
            _ => m.udp_dropped("malformed"),
        }
    }

    /// Adds a packet to the part of this read for the shard owning `sid`.
    fn route(&mut self, kind: Kind, sid: u32, packet: &[u8], from: SocketAddr) {
        self.pending[self.map.shard_of(sid)].push(kind, sid, packet, from);
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
    let mut out = SendBatch::default();
    while let Some((packet, from)) = inbox.recv().await {
        answer_hello(&ctx, &mut out, &packet, from);
        // The HELLOs already waiting are answered in the same batch of sends.
        while out.len() < BATCH {
            let Ok((packet, from)) = inbox.try_recv() else {
                break;
            };
            answer_hello(&ctx, &mut out, &packet, from);
        }
        flush_out(&ctx, &socket, &mut out);
    }
}

/// Answers one HELLO statelessly: a CHALLENGE (never longer than the HELLO) or a REJECT,
/// queued in `out`.
fn answer_hello(ctx: &Context, out_q: &mut SendBatch, packet: &[u8], from: SocketAddr) {
    let mut out = [0u8; MAX_PACKET];
    let now = crate::router::now_ms();
    let m = ctx.router.metrics();
    let answer = ctx
        .logins
        .on_hello(&PeerAddr::from(from), packet, now, &mut out);
    if answer.clock_saturated {
        m.challenge_clock_saturated();
    }
    match answer.reply {
        Ok(HelloReply::Challenge(p)) => {
            debug_assert!(p.len() <= packet.len(), "no amplification");
            out_q.push(p, from);
        }
        Ok(HelloReply::Reject { packet: p, .. }) => {
            ctx.login_refused(T, from, None, "hello_rejected");
            out_q.push(p, from);
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
    fn a_map_has_at_least_one_shard() {
        assert_eq!(ShardMap::new(0).count(), 1);
        assert_eq!(ShardMap::new(1).shard_of(u32::MAX), 0);
    }
}
