//! The comet-facing session types: what a transport registers for each live login
//! ([`SessionHandle`]), the events the router sends it ([`Outbound`]) and the receiving end the
//! transport drains ([`Session`]).
//!
//! Each session has one bounded outbound queue (capacity `limits.outbound_queue`). When it is full
//! the configured [`QueueFullPolicy`] applies and is counted in `broker_queue_drops_total`: the new
//! event is dropped, the oldest is dropped, or the session is kicked with
//! [`KickReason::QueueFull`]. Dropped deliveries are not lost: they stay in the offline store
//! until acknowledged. Nor are they overtaken: a terminal takes the highest id it has seen as
//! covering everything below (its since-id), so after a Deliver was dropped the session re-reads
//! the store above the last id it yielded ([`Session::next`]) and yields from that read first
//! (queued Delivers it covers are skipped), so the dropped one comes before any later one. A kick bypasses the queue (it is always
//! seen, before any queued event), so a stuck consumer can always be told to go.
//!
//! The queue is a `VecDeque` behind a `std::sync::Mutex` held only for a push or pop (never across
//! `.await`). The single consumer's waker and a "woken" flag live behind the same lock (16 B
//! less a session than a `tokio::sync::Notify` beside it): a wake sets the flag and wakes the
//! waker, and [`Session::next`] waits until the flag is set. The `VecDeque` is boxed and exists
//! only while events are queued: an idle session keeps a null pointer.
//!
//! A consumer that serves many sessions from one task (a UDP shard) does not await each
//! session: it gives each session's handle a token and a shared [`ReadyList`]
//! ([`SessionHandle::wake_into`]), drains the sessions whose tokens show up there with
//! [`Session::try_next`], and hands a session to a task for [`Session::read_store`] only when a
//! store read is due ([`Session::needs_store_read`]). Such a session is never awaited with
//! [`Session::next`]: the list takes the waker's place (one field holds either).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shared_protocol::codes::Code;
use tokio::sync::Notify;

use crate::store::StoredMessage;
use crate::terminal::QueueFullPolicy;
use crate::terminal::{Address, Kind};

use super::Router;

pub use crate::terminal::Transport;

/// Why the broker ends a session. The comet maps it to the protocol's Kick/Goodbye code
/// (docs/protocol.md section 9) or a WebSocket close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickReason {
    /// A newer login for the same terminal replaced this session (`plug` profile).
    Replaced,
    /// The outbound queue overflowed under policy `disconnect`; reconnect and replay.
    QueueFull,
    /// The broker is shutting down; reconnect later.
    Shutdown,
    /// An operator or the API ended the session.
    Admin,
}

/// An event for one session; the comet turns it into a wire frame (binary `Body` or JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// A message to deliver (Body::Deliver). The terminal acknowledges it; the comet then calls
    /// [`Router::ack`]. Ids are strictly increasing per terminal.
    Deliver {
        /// Server-issued id (at most 2^53 - 1).
        msg_id: u64,
        /// Sending terminal; `None` for a push from the backend.
        from: Option<Address>,
        /// Opaque payload (shared between recipients, cheap to clone).
        payload: Bytes,
    },
    /// An HTTP-to-device command (Body::Command); answer with [`Router::complete_command`].
    Command {
        /// Id to echo in the CommandResult.
        cmd_id: u32,
        /// Command name.
        name: String,
        /// Opaque payload.
        payload: Bytes,
    },
    /// The backend's answer to a device Request (Body::Response), from
    /// [`Router::spawn_device_request`].
    Response {
        /// The device's request id.
        req_id: u32,
        /// HTTP-like status.
        status: u16,
        /// Response body.
        payload: Bytes,
    },
    /// An upload is durable (Body::UploadAck), from [`Router::spawn_upload`].
    UploadAck {
        /// The device's upload id.
        upload_id: u32,
    },
    /// A device frame was refused (Body::Error about the frame's `seq`), from the comet's
    /// per-session frame worker after a failed Send or Upload; queued like every event so it
    /// comes after the events before it.
    Error {
        /// Why.
        code: Code,
        /// The device frame's seq.
        about_seq: u32,
    },
    /// A bound terminal went online or offline (Body::Presence).
    Presence {
        /// The terminal whose state changed.
        who: Address,
        /// Its new state.
        online: bool,
    },
    /// The session must end (Body::Kick, then close). Always the last event a session yields.
    Kick {
        /// Why.
        reason: KickReason,
    },
}

/// What happened to an event offered to a session's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued.
    Queued,
    /// Queued after dropping the oldest queued event (policy `drop-oldest`).
    DroppedOldest,
    /// Not queued (policy `drop-newest`).
    DroppedNewest,
    /// Not queued; the session is being kicked (policy `disconnect`).
    Kicked,
    /// Not queued; the session is already closed or kicked.
    Closed,
}

/// A session's queued events: one null pointer while empty (an idle session's case), not an
/// empty `VecDeque`'s 32 B; the buffer is given back once the consumer has taken everything.
#[derive(Default)]
struct Events(
    #[allow(
        clippy::box_collection,
        reason = "idle, it is one null pointer, not an empty collection"
    )]
    Option<Box<VecDeque<Outbound>>>,
);

impl Events {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    fn push_back(&mut self, ev: Outbound) {
        self.0.get_or_insert_with(Box::default).push_back(ev);
    }

    /// The oldest event; the buffer goes with the last one.
    fn pop_front(&mut self) -> Option<Outbound> {
        let q = self.0.as_mut()?;
        let ev = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        ev
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

/// A socket address in 23 bytes rather than `SocketAddr`'s 32 (kept once per session): the
/// IP's 16 bytes (an IPv4 one in the first four), the IPv6 scope id, the port and the family,
/// all as bytes so that the queue's other fields pack around them. It converts back to the
/// address it was made from without its IPv6 flow label (received datagrams and accepted
/// connections carry none unless a socket asks for it, and a reply needs none);
/// `shared_protocol`'s `PeerAddr` (the cookie's form) would not do, as it drops the scope id
/// that replies to a link-local IPv6 peer need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackedAddr {
    ip: [u8; 16],
    scope_id: [u8; 4],
    port: [u8; 2],
    v6: bool,
}

impl From<SocketAddr> for PackedAddr {
    fn from(a: SocketAddr) -> PackedAddr {
        match a {
            SocketAddr::V4(v4) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&v4.ip().octets());
                PackedAddr {
                    ip,
                    scope_id: [0; 4],
                    port: v4.port().to_le_bytes(),
                    v6: false,
                }
            }
            SocketAddr::V6(v6) => PackedAddr {
                ip: v6.ip().octets(),
                scope_id: v6.scope_id().to_le_bytes(),
                port: v6.port().to_le_bytes(),
                v6: true,
            },
        }
    }
}

impl From<PackedAddr> for SocketAddr {
    fn from(p: PackedAddr) -> SocketAddr {
        let port = u16::from_le_bytes(p.port);
        if p.v6 {
            let ip = Ipv6Addr::from(p.ip);
            let scope_id = u32::from_le_bytes(p.scope_id);
            SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope_id))
        } else {
            let ip = Ipv4Addr::new(p.ip[0], p.ip[1], p.ip[2], p.ip[3]);
            SocketAddr::V4(SocketAddrV4::new(ip, port))
        }
    }
}

/// The queue's state bits in one byte: the kick (none, or its reason), whether the session
/// ended, whether a wake is unseen, and whether the store must be re-read before more is
/// yielded (a Deliver was dropped, or a read that began has not completed). A kick stays
/// recorded once made: the session yields it once ([`Session::try_next`]) and it tells a
/// replaced session from one that ended otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags(u8);

impl Flags {
    /// The kick reason's bits (0: not kicked).
    const KICK: u8 = 0b0000_0111;
    /// The session ended (closed, dropped, or its kick was yielded).
    const CLOSED: u8 = 0b0000_1000;
    /// Woken since [`Session::next`] last looked.
    const WOKEN: u8 = 0b0001_0000;
    /// A Deliver was dropped by the full-queue policy (or missed outside the queue) since the
    /// session's last store read began.
    const DROPPED: u8 = 0b0010_0000;
    /// A store read began and has not completed (a cancelled read leaves it set, so the
    /// session reads again).
    const READING: u8 = 0b0100_0000;

    fn kick(self) -> Option<KickReason> {
        match self.0 & Self::KICK {
            1 => Some(KickReason::Replaced),
            2 => Some(KickReason::QueueFull),
            3 => Some(KickReason::Shutdown),
            4 => Some(KickReason::Admin),
            _ => None,
        }
    }

    fn set_kick(&mut self, reason: KickReason) {
        let bits = match reason {
            KickReason::Replaced => 1,
            KickReason::QueueFull => 2,
            KickReason::Shutdown => 3,
            KickReason::Admin => 4,
        };
        self.0 = (self.0 & !Self::KICK) | bits;
    }

    fn closed(self) -> bool {
        self.0 & Self::CLOSED != 0
    }

    fn set_closed(&mut self) {
        self.0 |= Self::CLOSED;
    }

    /// Closed or kicked: the queue takes nothing more.
    fn ended(self) -> bool {
        self.closed() || self.kick().is_some()
    }

    fn set_woken(&mut self) {
        self.0 |= Self::WOKEN;
    }

    fn set_dropped(&mut self) {
        self.0 |= Self::DROPPED;
    }

    /// Whether the session yields nothing until it has re-read the store.
    fn store_read_due(self) -> bool {
        self.0 & (Self::DROPPED | Self::READING) != 0
    }

    /// A store read begins: drops from now on call for another.
    fn begin_read(&mut self) {
        self.0 = (self.0 & !Self::DROPPED) | Self::READING;
    }

    fn end_read(&mut self) {
        self.0 &= !Self::READING;
    }

    /// Whether a wake was unseen; it is seen now.
    fn take_woken(&mut self) -> bool {
        let woken = self.0 & Self::WOKEN != 0;
        self.0 &= !Self::WOKEN;
        woken
    }
}

/// The outbound queue's capacity and what happens when it is full (`limits.outbound_queue`,
/// `limits.queue_full_policy`): the same for every session, so the router passes them with
/// each offer rather than each session keeping a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// Events a session's queue holds.
    pub(crate) cap: u32,
    /// What a full queue does with one more.
    pub(crate) policy: QueueFullPolicy,
}

struct QueueState {
    buf: Events,
    /// The peer's current address (behind the queue's lock: one lock less per session).
    peer: PackedAddr,
    /// Kicked (and why), ended, woken. Kicked with [`KickReason::Replaced`]: the terminal lives
    /// on in a newer session (maybe on another node), so this one ending is no offline Presence.
    /// Among them whether a Deliver was dropped: later live Delivers must not overtake it, so
    /// the [`Session`] yields nothing more until it has re-read the store.
    flags: Flags,
    /// The session's token in a many-session consumer's [`ReadyList`] ([`Consumer::List`]).
    token: u32,
    /// How the consumer is woken.
    consumer: Consumer,
}

/// How a session's consumer is woken: one field, since a session is drained either by a task
/// of its own awaiting [`Session::next`] or by a many-session consumer through its
/// [`ReadyList`], never both (16 B, where a waker and a list pointer side by side took 24).
enum Consumer {
    /// The waker of the task waiting in [`Session::next`] ([`Waker::noop`] while none waits).
    Task(Waker),
    /// The list the session's token is pushed to ([`SessionHandle::wake_into`]).
    List(Arc<ReadyList>),
}

/// Where sessions served by one task report that they have something to yield: the task
/// drains the tokens ([`ReadyList::take`]) after [`ReadyList::wait`] returns. A token may show up
/// more than once and after its session ended; draining an idle session is harmless.
#[derive(Debug, Default)]
pub struct ReadyList {
    tokens: Mutex<Vec<u32>>,
    notify: Notify,
}

impl ReadyList {
    /// An empty list.
    pub fn new() -> ReadyList {
        ReadyList::default()
    }

    fn push(&self, token: u32) {
        lock(&self.tokens).push(token);
        self.notify.notify_one();
    }

    /// Waits until a token was pushed since the last wait returned (at once if one was).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Moves the tokens pushed so far into `into` (cleared first), oldest first.
    pub fn take(&self, into: &mut Vec<u32>) {
        into.clear();
        std::mem::swap(&mut *lock(&self.tokens), into);
    }
}

/// Kept once per live session, so laid out small (docs/performance.md, "Memory per session").
/// (88 B: with the `Arc`'s counts and the allocator's header, one 112 B block.) The terminal's
/// address is kept as its two parts so that the transport fits beside them; the login time is
/// read from the id ([`SessionIds`]).
pub(crate) struct SessionInner {
    id: u64,
    terminal_id: u32,
    kind: Kind,
    transport: Transport,
    upload_epoch: u64,
    state: Mutex<QueueState>,
}

/// Low bits of a session id below its login time's milliseconds: 1,024 ids a millisecond
/// before the ids run ahead of the clock.
const SESSION_ID_SEQ_BITS: u32 = 10;

/// Hands out session ids that also say when each session logged in: the login time in Unix
/// milliseconds shifted left by [`SESSION_ID_SEQ_BITS`], plus a sequence within the
/// millisecond, and always above the id handed out before (so unique and increasing within the
/// process, even when the wall clock steps back). Ids stay below 2^53 (exact in JSON numbers)
/// until the year 2248.
#[derive(Debug, Default)]
pub(crate) struct SessionIds {
    last: std::sync::atomic::AtomicU64,
}

impl SessionIds {
    /// A new id for a login at `now_ms` (Unix milliseconds).
    pub(crate) fn next(&self, now_ms: u64) -> u64 {
        use std::sync::atomic::Ordering;
        let floor = now_ms << SESSION_ID_SEQ_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let id = floor.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return id,
                Err(seen) => last = seen,
            }
        }
    }
}

/// A live session as the router sees it: identity plus the sending end of its outbound queue.
/// Cheap to clone. Created by [`Router::login`]; the comet gets it from [`Session::handle`].
#[derive(Clone)]
pub struct SessionHandle {
    inner: Arc<SessionInner>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.inner.id)
            .field("address", &self.address())
            .field("transport", &self.inner.transport)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these short locks leaves consistent data; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionHandle {
    pub(crate) fn new(
        id: u64,
        address: Address,
        transport: Transport,
        upload_epoch: u64,
        peer: SocketAddr,
    ) -> SessionHandle {
        SessionHandle {
            inner: Arc::new(SessionInner {
                id,
                terminal_id: address.id,
                kind: address.kind,
                transport,
                upload_epoch,
                state: Mutex::new(QueueState {
                    buf: Events::default(),
                    peer: PackedAddr::from(peer),
                    flags: Flags::default(),
                    token: 0,
                    consumer: Consumer::Task(Waker::noop().clone()),
                }),
            }),
        }
    }

    /// Unique id of this session within the broker process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The terminal logged in on this session.
    pub fn address(&self) -> Address {
        Address {
            kind: self.inner.kind,
            id: self.inner.terminal_id,
        }
    }

    /// The transport it arrived on.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// The upload epoch the terminal sent at login (0 for a terminal that does not upload):
    /// stored with each of this session's uploads, part of their de-duplication key.
    pub fn upload_epoch(&self) -> u64 {
        self.inner.upload_epoch
    }

    /// The peer's current socket address.
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::from(lock(&self.inner.state).peer)
    }

    /// Whether `addr` is the peer's current address, as the handle keeps it (its IPv6 flow
    /// label aside).
    pub fn peer_is(&self, addr: SocketAddr) -> bool {
        lock(&self.inner.state).peer == PackedAddr::from(addr)
    }

    /// Records a new peer address (UDP NAT rebinding, docs/protocol.md section 3).
    pub fn set_peer(&self, peer: SocketAddr) {
        lock(&self.inner.state).peer = PackedAddr::from(peer);
    }

    /// When the session logged in (read from its id, see [`SessionIds`]).
    pub fn since(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.inner.id >> SESSION_ID_SEQ_BITS)
    }

    /// Events currently queued.
    pub fn queued(&self) -> usize {
        lock(&self.inner.state).buf.len()
    }

    /// Offers an event, applying the queue-full policy of `limits`. Kicks go through
    /// [`SessionHandle::kick`].
    pub(crate) fn offer(&self, ev: Outbound, limits: QueueLimits) -> Enqueued {
        let mut st = lock(&self.inner.state);
        let (outcome, wake) = self.offer_locked(&mut st, ev, limits);
        if wake {
            self.wake(st);
        }
        outcome
    }

    /// Offers several messages as Delivers, in the given (increasing id) order, under one lock,
    /// and wakes the consumer once, so it finds them all queued (one wake-up and, on a WebSocket,
    /// one write for the lot). Each gets exactly what [`SessionHandle::offer`] would have given
    /// it, reported through `outcome(msg_id, from, result)`.
    pub(crate) fn offer_delivers<'a>(
        &self,
        limits: QueueLimits,
        messages: impl IntoIterator<Item = (u64, Option<Address>, &'a Bytes)>,
        mut outcome: impl FnMut(u64, Option<Address>, Enqueued),
    ) {
        let mut st = lock(&self.inner.state);
        let mut wake = false;
        for (msg_id, from, payload) in messages {
            let ev = Outbound::Deliver {
                msg_id,
                from,
                payload: payload.clone(),
            };
            let (r, w) = self.offer_locked(&mut st, ev, limits);
            wake |= w;
            outcome(msg_id, from, r);
        }
        if wake {
            self.wake(st);
        }
    }

    /// [`SessionHandle::offer`] with the queue already locked; also says whether the consumer
    /// must be woken.
    fn offer_locked(
        &self,
        st: &mut QueueState,
        ev: Outbound,
        limits: QueueLimits,
    ) -> (Enqueued, bool) {
        if st.flags.ended() {
            return (Enqueued::Closed, false);
        }
        if st.buf.len() < limits.cap as usize {
            st.buf.push_back(ev);
            return (Enqueued::Queued, true);
        }
        match limits.policy {
            QueueFullPolicy::DropNewest => {
                let is_deliver = matches!(ev, Outbound::Deliver { .. });
                if is_deliver {
                    st.flags.set_dropped();
                }
                (Enqueued::DroppedNewest, is_deliver)
            }
            QueueFullPolicy::DropOldest => {
                if matches!(st.buf.pop_front(), Some(Outbound::Deliver { .. })) {
                    st.flags.set_dropped();
                }
                st.buf.push_back(ev);
                (Enqueued::DroppedOldest, true)
            }
            QueueFullPolicy::Disconnect => {
                st.flags.set_kick(KickReason::QueueFull);
                st.buf.clear();
                (Enqueued::Kicked, true)
            }
        }
    }

    /// Deliveries may have been missed (outside this session's queue): like a dropped Deliver,
    /// the [`Session`] re-reads the store above the last id it yielded before yielding more.
    pub(crate) fn request_resync(&self) {
        let mut st = lock(&self.inner.state);
        st.flags.set_dropped();
        self.wake(st);
    }

    /// Ends the session: its [`Session`] yields `Outbound::Kick { reason }` next, then `None`.
    /// Returns false if it was already closed or kicked.
    pub fn kick(&self, reason: KickReason) -> bool {
        let mut st = lock(&self.inner.state);
        if st.flags.ended() {
            return false;
        }
        st.flags.set_kick(reason);
        st.buf.clear();
        self.wake(st);
        true
    }

    /// Whether the session was kicked because a newer login replaced it.
    pub fn was_replaced(&self) -> bool {
        lock(&self.inner.state).flags.kick() == Some(KickReason::Replaced)
    }

    pub(crate) fn same(&self, other: &SessionHandle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// From now on, whenever this session gets something to yield, `token` is pushed to
    /// `list`. Events queued before the call push nothing: the consumer drains the session once
    /// after setting it. The list takes the place of [`Session::next`]'s waker: the consumer
    /// drains with [`Session::try_next`] and reads the store with [`Session::read_store`], and
    /// never awaits [`Session::next`]. Returns false (and changes nothing) when a list was
    /// already set.
    pub fn wake_into(&self, list: Arc<ReadyList>, token: u32) -> bool {
        let mut st = lock(&self.inner.state);
        if matches!(st.consumer, Consumer::List(_)) {
            return false;
        }
        st.consumer = Consumer::List(list);
        st.token = token;
        true
    }

    /// Wakes the session's consumer: pushes its token to its [`ReadyList`] (before `st`, the
    /// queue's lock, is released; the list's lock is only ever taken inside it, never the other
    /// way round), or wakes the task in [`Session::next`] once the lock is released.
    fn wake(&self, mut st: MutexGuard<'_, QueueState>) {
        st.flags.set_woken();
        let token = st.token;
        let waiter = match &mut st.consumer {
            Consumer::List(list) => {
                list.push(token);
                return;
            }
            Consumer::Task(waker) => std::mem::replace(waker, Waker::noop().clone()),
        };
        drop(st);
        waiter.wake();
    }

    /// Marks the queue closed once its [`Session`] ends (closed or dropped) and forgets the
    /// consumer's waker: handles outlive the session briefly (fan-out, pending commands) and
    /// must not keep its task alive through it.
    fn mark_closed(&self) {
        let mut st = lock(&self.inner.state);
        st.flags.set_closed();
        if let Consumer::Task(waker) = &mut st.consumer {
            *waker = Waker::noop().clone();
        }
    }

    /// Waits until the session was woken since this last returned (at once if it was). Only
    /// for a session drained by a task of its own (see [`SessionHandle::wake_into`]).
    fn woken(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            let mut st = lock(&self.inner.state);
            if st.flags.take_woken() {
                return Poll::Ready(());
            }
            match &mut st.consumer {
                Consumer::Task(waker) => waker.clone_from(cx.waker()),
                Consumer::List(_) => {
                    // Its consumer never waits here; rather than hang, look again.
                    debug_assert!(false, "Session::next awaited on a session woken by a list");
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
    }
}

/// The comet's end of a logged-in session. Drain it with [`Session::next`] (or
/// [`Session::try_next`] to batch) and write each event to the wire. Dropping it (or calling
/// [`Session::close`]) logs the session out: the registry forgets it, pending commands on it
/// fail, and bound phones get an offline Presence when it was the terminal's last session.
pub struct Session {
    handle: SessionHandle,
    /// `None` (one null pointer) once yielded, as in an idle session.
    #[allow(
        clippy::box_collection,
        reason = "idle, it is one null pointer, not an empty collection"
    )]
    replay: Option<Box<VecDeque<StoredMessage>>>,
    /// The highest Deliver id yielded (0: none yet); a resync reads the store above it. Queued
    /// Delivers are taken only once the replay is empty, so every id a store read returned is
    /// at or below this by then: a live Deliver at or below it is a duplicate (or would come
    /// after a higher id, which the terminal takes as covering it) and is skipped.
    last_yielded: u64,
    /// Whether the session ended (its Kick was yielded, or it was closed) is the queue's
    /// `CLOSED` flag, which only the session sets: 32 B, as a UDP shard keeps one per slot.
    router: Router,
}

impl Session {
    pub(crate) fn new(
        handle: SessionHandle,
        replay: Vec<StoredMessage>,
        router: Router,
    ) -> Session {
        Session {
            handle,
            replay: boxed_replay(replay),
            last_yielded: 0,
            router,
        }
    }

    /// The session's handle (identity, peer address).
    pub fn handle(&self) -> &SessionHandle {
        &self.handle
    }

    /// Stored messages still to replay before live events.
    pub fn replay_pending(&self) -> usize {
        self.replay.as_ref().map_or(0, |r| r.len())
    }

    /// The next event without waiting: a kick first, then the replay of stored messages
    /// (after the since-id given at login, in order), then queued events. A live Deliver
    /// already covered by the replay is skipped, so each message id is yielded once, in
    /// increasing order. After the full-queue policy dropped a Deliver this yields nothing until
    /// [`Session::next`] has re-read the store (the dropped message must not be overtaken).
    pub fn try_next(&mut self) -> Option<Outbound> {
        let mut st = lock(&self.handle.inner.state);
        if st.flags.closed() {
            return None;
        }
        // The kick stays recorded (it tells a replaced session); `CLOSED` yields it once.
        if let Some(reason) = st.flags.kick() {
            st.flags.set_closed();
            st.buf.clear();
            self.replay = None;
            return Some(Outbound::Kick { reason });
        }
        if st.flags.store_read_due() {
            return None;
        }
        if let Some(m) = self.replay.as_mut().and_then(|r| r.pop_front()) {
            if self.replay.as_ref().is_some_and(|r| r.is_empty()) {
                // The store read's buffer is not kept for the session's idle life.
                self.replay = None;
            }
            self.last_yielded = self.last_yielded.max(m.msg_id);
            return Some(Outbound::Deliver {
                msg_id: m.msg_id,
                from: m.from,
                payload: m.payload,
            });
        }
        while let Some(ev) = st.buf.pop_front() {
            if let Outbound::Deliver { msg_id, .. } = &ev {
                if *msg_id <= self.last_yielded {
                    continue;
                }
                self.last_yielded = *msg_id;
            }
            return Some(ev);
        }
        None
    }

    /// Waits for the next event (see [`Session::try_next`]); `None` after the Kick was yielded.
    pub async fn next(&mut self) -> Option<Outbound> {
        loop {
            // An ended session has no read due and yields nothing, so it returns below.
            if self.resync_due() {
                self.resync().await;
            }
            if let Some(ev) = self.try_next() {
                return Some(ev);
            }
            if self.finished() {
                return None;
            }
            self.handle.woken().await;
        }
    }

    /// Re-reads the store when a dropped Deliver calls for it ([`Session::needs_store_read`]);
    /// what it read is then yielded by [`Session::try_next`]. Does not wait for events: the
    /// store read of a session drained through a [`ReadyList`].
    pub async fn read_store(&mut self) {
        if self.resync_due() {
            self.resync().await;
        }
    }

    /// Whether [`Session::try_next`] yields nothing until the store was re-read
    /// ([`Session::next`] or [`Session::read_store`]; a Deliver was dropped by the full-queue
    /// policy; see [`Session::try_next`]).
    pub fn needs_store_read(&self) -> bool {
        self.resync_due()
    }

    /// Whether the session ended: its Kick was yielded.
    fn finished(&self) -> bool {
        lock(&self.handle.inner.state).flags.closed()
    }

    /// Whether a Deliver was dropped since the last store read began (or a read did not
    /// complete), in a session neither ended nor kicked.
    fn resync_due(&self) -> bool {
        let flags = lock(&self.handle.inner.state).flags;
        flags.store_read_due() && !flags.ended()
    }

    /// Re-reads the terminal's stored messages above the last id yielded into the replay, so
    /// a Deliver the full-queue policy dropped comes before every later one; queued Delivers the
    /// read covers are then skipped as duplicates. A drop during the read calls for another.
    /// Cancellation safe: the read stays due and nothing else changes until it is back. A store
    /// failure ends the session (Kick `QueueFull`): the terminal logs in again and gets the
    /// replay then.
    async fn resync(&mut self) {
        lock(&self.handle.inner.state).flags.begin_read();
        let router = self.router.clone();
        let s = router.settings();
        match router
            .stores()
            .offline
            .since(
                self.handle.address(),
                self.last_yielded,
                s.max_replay,
                super::now_ms(),
            )
            .await
        {
            Ok(msgs) => {
                self.replay = boxed_replay(msgs);
                lock(&self.handle.inner.state).flags.end_read();
            }
            Err(e) => {
                tracing::warn!(terminal = %self.handle.address(), error = %e, "session resync failed");
                self.handle.kick(KickReason::QueueFull);
            }
        }
    }

    /// Logs out now (same as dropping, but waits for the offline Presence fan-out).
    pub async fn close(self) {
        self.handle.mark_closed();
        let router = self.router.clone();
        if let Some(offline) = router.unregister(&self.handle) {
            router.presence(offline, false).await;
        }
    }
}

/// A store read's messages as [`Session`] keeps them: `None` when there are none.
#[allow(
    clippy::box_collection,
    reason = "idle, it is one null pointer, not an empty collection"
)]
fn boxed_replay(msgs: Vec<StoredMessage>) -> Option<Box<VecDeque<StoredMessage>>> {
    (!msgs.is_empty()).then(|| Box::new(msgs.into()))
}

impl Drop for Session {
    fn drop(&mut self) {
        self.handle.mark_closed();
        if let Some(offline) = self.router.unregister(&self.handle) {
            let router = self.router.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { router.presence(offline, false).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> SessionHandle {
        SessionHandle::new(
            1,
            Address::device(1),
            Transport::Udp,
            1,
            "127.0.0.1:4000".parse().unwrap(),
        )
    }

    const LIMITS: QueueLimits = QueueLimits {
        cap: 4,
        policy: QueueFullPolicy::DropNewest,
    };

    fn taken(list: &ReadyList) -> Vec<u32> {
        let mut ids = Vec::new();
        list.take(&mut ids);
        ids
    }

    #[tokio::test]
    async fn a_session_reports_to_its_ready_list_whenever_it_gets_something() {
        let list = Arc::new(ReadyList::new());
        let h = handle();
        assert_eq!(
            h.offer(Outbound::UploadAck { upload_id: 1 }, LIMITS),
            Enqueued::Queued
        );
        assert!(h.wake_into(list.clone(), 7));
        assert!(
            taken(&list).is_empty(),
            "events queued before are not reported"
        );

        h.offer(Outbound::UploadAck { upload_id: 2 }, LIMITS);
        h.request_resync();
        assert!(h.kick(KickReason::Admin));
        assert_eq!(taken(&list), [7, 7, 7], "an event, a resync and a kick");
        tokio::time::timeout(std::time::Duration::from_secs(1), list.wait())
            .await
            .expect("the consumer is woken");

        let other = Arc::new(ReadyList::new());
        assert!(!h.wake_into(other, 8), "set once");
        assert!(!h.kick(KickReason::Admin));
        assert!(taken(&list).is_empty(), "nothing happened");
    }

    #[test]
    fn a_drop_during_a_store_read_calls_for_another_and_an_unfinished_read_stays_due() {
        let mut f = Flags::default();
        assert!(!f.store_read_due());
        f.set_dropped();
        assert!(f.store_read_due());
        f.begin_read();
        assert!(
            f.store_read_due(),
            "nothing is yielded while the read is out"
        );
        f.end_read();
        assert!(
            !f.store_read_due(),
            "a completed read covers the drop before it"
        );
        f.set_dropped();
        f.begin_read();
        f.set_dropped();
        f.end_read();
        assert!(
            f.store_read_due(),
            "a drop during the read calls for another"
        );
        f.begin_read();
        // Cancelled here: no end_read.
        assert!(f.store_read_due(), "an abandoned read is read again");
    }

    #[test]
    fn a_session_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Session>(), 32);
    }

    #[test]
    fn session_inner_size() {
        // Every live session holds one of these (behind its handle's `Arc`); printed for
        // docs/performance.md ("Memory per session"), bounded so growth shows.
        let size = std::mem::size_of::<SessionInner>();
        println!(
            "SessionInner: {size} bytes: queue state {}",
            std::mem::size_of::<Mutex<QueueState>>(),
        );
        assert!(size <= 88, "SessionInner grew to {size} bytes");
        // With the `Arc`'s two counts and glibc's 8 B header: one 112 B chunk.
        assert!(size + 16 + 8 <= 112);
    }

    #[test]
    fn session_ids_increase_and_carry_the_login_time() {
        let ids = SessionIds::default();
        let now = 1_700_000_000_123;
        let a = ids.next(now);
        let b = ids.next(now);
        assert!(b > a, "unique and increasing within a millisecond");
        assert_eq!(a >> SESSION_ID_SEQ_BITS, now);
        // A clock that steps back still gets a larger id; a later login its own time.
        let c = ids.next(now - 5_000);
        assert!(c > b);
        let d = ids.next(now + 7);
        assert_eq!(d >> SESSION_ID_SEQ_BITS, now + 7);
        let h = SessionHandle::new(
            d,
            Address::device(1),
            Transport::Udp,
            0,
            "127.0.0.1:1".parse().unwrap(),
        );
        assert_eq!(h.since(), UNIX_EPOCH + Duration::from_millis(now + 7));
        // Below 2^53 (exact as a JSON number) through the year 2248.
        let year_2248_ms = 8_790_000_000_000u64;
        assert!((year_2248_ms << SESSION_ID_SEQ_BITS) < 1 << 53);
    }

    #[test]
    fn a_packed_address_converts_back_to_the_address_it_was_made_from_without_its_flow_label() {
        let addrs: [SocketAddr; 5] = [
            "127.0.0.1:4000".parse().unwrap(),
            "0.0.0.0:0".parse().unwrap(),
            "255.255.255.255:65535".parse().unwrap(),
            "[::ffff:10.0.0.1]:5683".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1:2:3:4".parse().unwrap(), 9, 0, 7)),
        ];
        for a in addrs {
            assert_eq!(SocketAddr::from(PackedAddr::from(a)), a, "{a}");
        }
        let labelled = SocketAddrV6::new("fe80::1:2:3:4".parse().unwrap(), 9, 0xabcde, 7);
        assert_eq!(
            SocketAddr::from(PackedAddr::from(SocketAddr::V6(labelled))),
            addrs[4],
            "the flow label is not kept"
        );
        assert_ne!(
            PackedAddr::from(addrs[3]),
            PackedAddr::from("10.0.0.1:5683".parse::<SocketAddr>().unwrap()),
            "an IPv4-mapped IPv6 address keeps its family"
        );
        assert_eq!(std::mem::size_of::<PackedAddr>(), 23);
    }

    #[test]
    fn offering_several_delivers_applies_the_policy_to_each_and_wakes_once() {
        let list = Arc::new(ReadyList::new());
        let h = handle();
        assert!(h.wake_into(list.clone(), 3));
        let payload = Bytes::from_static(b"x");
        let mut outcomes = Vec::new();
        // Capacity 4, drop-newest: four are queued, the fifth and sixth dropped (and counted).
        h.offer_delivers(
            LIMITS,
            (1..=6).map(|id| (id, None, &payload)),
            |id, _, r| outcomes.push((id, r)),
        );
        use Enqueued::{DroppedNewest as Dn, Queued as Q};
        assert_eq!(outcomes, [(1, Q), (2, Q), (3, Q), (4, Q), (5, Dn), (6, Dn)]);
        assert_eq!(taken(&list), [3], "one wake-up for the lot");
        assert_eq!(h.queued(), 4);
        assert!(
            lock(&h.inner.state).flags.store_read_due(),
            "the drops call for a store read"
        );
    }
}
