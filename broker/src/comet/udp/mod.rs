//! The UDP endpoint: `N` session shards (one task each, `N` = the machine's parallelism), each
//! reading, answering and sending on its own socket, and `N` handshake workers.
//!
//! * **Sockets** ([`sockets`]): the shards' sockets share the `[listen] udp` address as one
//!   `SO_REUSEPORT` group. The kernel gives each peer's datagrams to one member (a hash of the
//!   addresses), and a LOGIN stays with the shard that read it, so a session's packets reach
//!   its owner with no hop between tasks. Each socket has the receive and send buffers of
//!   `[udp]` ([`UdpConfig`]).
//! * **Batches** ([`batch`]): each socket is read and written up to [`batch::BATCH`] datagrams
//!   per system call (`recvmmsg`, `sendmmsg`); consecutive answers of one length to one peer
//!   leave as one segmented message (`UDP_SEGMENT`); datagrams the kernel drops because a
//!   receive buffer is full are counted (`broker_udp_kernel_drops_total`).
//! * **Routing** (`dispatch`): what a shard reads is kept (its LOGINs, DATA for its
//!   sessions), handed to a handshake worker (HELLOs, answered statelessly off the shards),
//!   forwarded to the owning shard (DATA from a peer whose address changed: routing by session
//!   id, not address, is what lets a session follow a NAT rebinding, section 3 of the spec), or
//!   dropped and counted (oversized, unknown, or for a shard whose inbox is full).
//! * Each **shard** (`shard`) owns its sessions outright (no locks): their links, timers and
//!   outbound queues. It collects the datagrams one turn of its loop produces (the answers to
//!   a whole read, say) and hands them to the kernel together at the end of the turn.
//! * A shard's inbox of forwarded packets is bounded ([`SHARD_INBOX`] batches); when the owner
//!   cannot keep up, the forwarding shard drops the batch (each datagram counted as
//!   `shard_busy`) rather than wait, like the kernel would drop it. The reliability layer
//!   resends what mattered.
//!
//! Per-session memory: see [`shard::UdpSession`] (its `session_size` test prints the figure).

pub mod batch;
mod config;
mod dispatch;
mod kick_copies;
mod outbox;
mod shard;
pub mod sockets;
mod table;
mod timers;

pub use config::UdpConfig;
pub use kick_copies::{SHUTDOWN_KICK_COPIES, SHUTDOWN_KICK_SPACING_MS};
pub use shard::UdpSession;

use std::net::SocketAddr;
use std::sync::Arc;

use batch::{BATCH, SendBatch};
use dispatch::{Dispatch, Hello};

use shared_protocol::handshake::{HelloError, HelloReply};
use shared_protocol::keys::PeerAddr;
use shared_protocol::limits::MAX_PACKET;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::router::Transport;

use super::Context;

const T: Transport = Transport::Udp;

/// Forwarded batches (each up to [`BATCH`] datagrams) queued per shard before the other shards
/// drop new ones for it.
pub const SHARD_INBOX: usize = 256;

/// HELLOs queued per handshake worker before the shards drop new ones.
pub const HELLO_INBOX: usize = 256;

/// Which shard owns a session id: `session_id % count`. Each shard's session table hands out
/// only ids it owns (`table`); a LOGIN stays with the shard whose socket the kernel gave it
/// (`sockets`), so sessions spread as the kernel spreads peers.
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

/// One DATA packet of a [`ShardBatch`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Item {
    /// Its header's session id.
    pub sid: u32,
    /// Its source.
    pub from: SocketAddr,
    /// Where its bytes end in [`ShardBatch::bytes`] (they start where the previous ones end).
    pub end: usize,
}

/// The DATA packets of one read that another shard owns, forwarded to it together, their bytes
/// back to back (two allocations per shard per read, not one per datagram).
#[derive(Debug, Default)]
pub(super) struct ShardBatch {
    /// The packets' bytes.
    pub bytes: Vec<u8>,
    /// The packets, in arrival order.
    pub items: Vec<Item>,
}

impl ShardBatch {
    fn push(&mut self, sid: u32, packet: &[u8], from: SocketAddr) {
        self.bytes.extend_from_slice(packet);
        self.items.push(Item {
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

/// Applies `[udp]`'s buffer sizes to `socket`; when `report`, logs and meters what the kernel
/// gave (the shards' sockets get the same, so one of them reports).
fn apply_buffers(ctx: &Context, socket: &UdpSocket, report: bool) {
    let cfg = ctx.settings.udp;
    match batch::apply_buffers(socket, cfg.receive_buffer_bytes, cfg.send_buffer_bytes) {
        Ok(_) if !report => {}
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

/// Serves device UDP until shutdown: one shard per core, each on its own socket of the group
/// `first` starts (`sockets`), and the handshake workers.
pub async fn serve(ctx: Arc<Context>, first: UdpSocket) {
    let map = ShardMap::new(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (sockets, shared) = sockets::shard_sockets(first, map.count());
    if let Some(e) = &shared {
        tracing::warn!(
            error = %e,
            shards = map.count(),
            "udp: one socket for every shard (it could not be shared by address); \
             shard 0 reads it and forwards the other shards' packets"
        );
    }
    // The shards that read a socket of their own: all, or only shard 0 of a shared one.
    let readers = if shared.is_some() { 1 } else { map.count() };
    for (i, socket) in sockets[..readers].iter().enumerate() {
        apply_buffers(&ctx, socket, i == 0);
    }
    let (inboxes, inbox_rxs): (Vec<_>, Vec<_>) =
        (0..map.count()).map(|_| mpsc::channel(SHARD_INBOX)).unzip();
    let mut tasks = JoinSet::new();
    let mut hello_inboxes = Vec::with_capacity(map.count());
    for _ in 0..map.count() {
        let (tx, rx) = mpsc::channel(HELLO_INBOX);
        hello_inboxes.push(tx);
        tasks.spawn(hello_worker(ctx.clone(), sockets[0].clone(), rx));
    }
    for (index, inbox) in inbox_rxs.into_iter().enumerate() {
        let dispatch = Dispatch::new(
            ctx.clone(),
            map,
            index,
            inboxes.clone(),
            hello_inboxes.clone(),
        );
        let reads = index < readers;
        tasks.spawn(shard::run(
            ctx.clone(),
            shard::Io {
                socket: sockets[index].clone(),
                reads,
                inbox,
                dispatch,
            },
            map,
            index,
        ));
        tracing::debug!(shard = index, reads, "udp shard started");
    }
    // The shards see the shutdown and end their sessions with a Kick (SHUTDOWN, sent three
    // times 100 ms apart: `kick_copies`); the handshake workers end when the shards, which
    // hold their inboxes, are gone.
    drop((inboxes, hello_inboxes));
    while tasks.join_next().await.is_some() {}
}

/// A handshake worker: answers the HELLOs in `inbox` until the shards are gone.
async fn hello_worker(ctx: Arc<Context>, socket: Arc<UdpSocket>, mut inbox: mpsc::Receiver<Hello>) {
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
