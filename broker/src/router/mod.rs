//! The msgbus core, in process: who is online where ([`registry`]), the per-session queues the
//! comet drains ([`session`]), and the message flows between terminals, the stores and the
//! backend.
//!
//! # Interface for the comet (transports)
//! 1. After a transport authenticates a terminal it calls [`Router::login`] with the address,
//!    transport, peer and the since-id the terminal reported. It gets a [`Session`]: under the
//!    `plug` profile an older session of the same terminal receives `Outbound::Kick { Replaced }`;
//!    under `signed` all sessions stay and all receive. Stored messages after since-id are
//!    replayed first by [`Session::next`], in order, then live events.
//! 2. The comet loops on [`Session::next`] (or batches with [`Session::try_next`]) and turns each
//!    [`Outbound`] into a wire frame; after `Outbound::Kick` it sends the kick and closes.
//! 3. Frames from the terminal map to router calls: a transport-level ack of a Deliver ->
//!    [`Router::ack`]; Send -> [`Router::send`]; Upload -> [`Router::upload`], acknowledged with
//!    `Outbound::UploadAck` (through [`Router::report`]) once durable. A comet awaits a session's
//!    Sends and Uploads one at a time in the order the terminal sent them (the device endpoints'
//!    per-session frame worker), so they take effect in that order;
//!    CommandResult -> [`Router::complete_command`]; Request -> [`Router::spawn_device_request`]
//!    (answer arrives as `Outbound::Response`).
//! 4. When the connection ends (close, heartbeat timeout, error) the comet drops the `Session`
//!    (or awaits [`Session::close`]); bound phones get an offline Presence.
//!
//! Watchers (the web console) follow logins, logouts, refused logins and deliveries as they
//! happen through [`Router::live`] ([`live`]).
//!
//! Delivery is at least once: a push or send is committed to the offline store first, then
//! offered to online sessions; the terminal's ack removes it, and every id below it (deliveries
//! are in id order, so the terminal has them; an ack may be lost in a crash, which only causes a
//! redelivery the terminal drops). At login the since-id the terminal
//! reports acknowledges every stored id up to it, and everything stored above it is replayed in
//! order, so no stored message is ever left neither delivered nor removed.
//!
//! Order: per terminal, message ids are unique and strictly increasing, and each session is
//! offered them in that order: issuing the id and handing the message to the offer is one step
//! per terminal ([`order`]; concurrent broadcasts are stored as one batch under every stripe
//! and queued in id order, `batch`), and the offer is first in, first out (`fanout`: a broadcast is
//! offered by a fan-out task after the push answered; a push to named terminals is offered in
//! the push call unless broadcasts are still queued, then behind them). A session yields its replay (in id order) before live events
//! and skips a live Deliver the replay already covered.

mod backend_path;
mod batch;
pub mod capped_body;
mod fanout;
pub mod live;
pub mod order;
pub mod registry;
mod runner_queue;
pub mod session;
mod webhook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Op};
use crate::store::{
    Appended, NewMessage, NewUpload, Recipients, SpoolAppended, StoreError, Stores,
};
use crate::terminal::QueueFullPolicy;
use crate::terminal::{Address, IdError, IdProfile, Kind};

pub use registry::OnlineCounts;
use session::QueueLimits;
pub use session::{Enqueued, KickReason, Outbound, ReadyList, Session, SessionHandle, Transport};

/// Router settings (the broker builds them from its configuration: `Config::router_settings`).
#[derive(Clone, Debug)]
pub struct RouterSettings {
    /// ID profile.
    pub profile: IdProfile,
    /// Outbound queue capacity per session.
    pub outbound_queue: usize,
    /// Full-queue policy.
    pub queue_full_policy: QueueFullPolicy,
    /// Default TTL of stored messages.
    pub default_ttl: Duration,
    /// Largest TTL a push may ask for.
    pub max_ttl: Duration,
    /// Largest payload accepted.
    pub max_payload: usize,
    /// Largest replay at login (the per-terminal cap).
    pub max_replay: usize,
    /// Offline purge interval.
    pub purge_interval: Duration,
    /// Base URL for device requests (empty: off).
    pub backend_url: String,
    /// Device request timeout.
    pub backend_timeout: Duration,
    /// Upload webhook (empty: off).
    pub webhook_url: String,
    /// Webhook call timeout.
    pub webhook_timeout: Duration,
    /// Offer a stored message to this node's live sessions right after storing it (standalone).
    /// A cluster comet turns it off: it offers every message from its delivery-notice stream
    /// instead, the one order all nodes' messages share ([`Router::deliver_local`]).
    pub offer_on_store: bool,
}

/// What a comet passes to [`Router::login`].
#[derive(Clone, Copy, Debug)]
pub struct Login {
    /// The authenticated terminal.
    pub address: Address,
    /// Its transport.
    pub transport: Transport,
    /// Its socket address.
    pub peer: SocketAddr,
    /// Highest message id the terminal already has (0: none): stored ids up to it are
    /// acknowledged at login, and the replay is everything stored above it, in order.
    pub since_id: u64,
    /// The device's upload epoch from its LOGIN (drawn once per boot, never 0); 0 for a
    /// terminal that cannot upload (a phone on the JSON transport). Every upload of the session
    /// is stored under it (docs/storage.md).
    pub upload_epoch: u64,
}

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The address is invalid under the ID profile.
    #[error("invalid address: {0}")]
    Address(#[from] IdError),
    /// The store failed (the session was not registered).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Addressing of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One terminal.
    Terminal(Address),
    /// A list of terminals.
    List(Vec<Address>),
    /// A named group.
    Group(String),
    /// Every known device.
    AllDevices,
    /// Every known phone.
    AllPhones,
    /// Every known terminal.
    Everyone,
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Terminal(_) => "unicast",
            Target::List(_) => "multicast",
            Target::Group(_) => "group",
            Target::AllDevices => "all_devices",
            Target::AllPhones => "all_phones",
            Target::Everyone => "everyone",
        }
    }
}

/// Result of a push or send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PushOutcome {
    /// The message id.
    pub msg_id: u64,
    /// Terminals it is stored for (until acked or expired).
    pub stored_for: u64,
    /// Online sessions it is offered to: for a push to named terminals, those it was queued to
    /// (or, while a broadcast is still being offered, those it will be offered to after it);
    /// for a kind-wide push, the sessions of that kind online when it was stored (the offer runs
    /// after the answer, off the push call).
    pub delivered_online: u64,
    /// Older messages evicted by per-terminal caps.
    pub evicted: u64,
    /// Terminals whose full inbox refused it.
    pub rejected: u64,
}

/// Why a push or send failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The payload exceeds `limits.max_payload_bytes`.
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// An address is invalid under the ID profile.
    #[error("invalid address {0}: {1}")]
    Address(Address, IdError),
    /// No such group.
    #[error("no group named `{0}`")]
    UnknownGroup(String),
    /// The TTL exceeds `offline.max_ttl_secs` or is zero.
    #[error("ttl must be within 1..={0} seconds")]
    BadTtl(u64),
    /// Terminal-to-terminal send between terminals that are not bound (or of the same kind).
    #[error("{from} may not send to {to}: not bound")]
    NotBound {
        /// Sender.
        from: Address,
        /// Recipient.
        to: Address,
    },
    /// The store failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A device's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    /// The device's status code.
    pub status: u16,
    /// Result payload.
    pub payload: Bytes,
}

/// Why a command got no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The device has no session.
    #[error("device not online")]
    NotOnline,
    /// No result within the timeout.
    #[error("timed out")]
    Timeout,
    /// The session's queue refused the command (drop-newest policy) or it was kicked for overflow.
    #[error("session overloaded")]
    Overloaded,
    /// The session ended before the result came.
    #[error("device disconnected")]
    Disconnected,
    /// The payload exceeds the limit or the target is not a device.
    #[error("invalid command: {0}")]
    Invalid(String),
}

/// The backend's answer to a device request (always produced; failures map to status codes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceResponse {
    /// HTTP status from the backend, or 400 bad path, 502 backend unreachable or answer too large,
    /// 503 no backend configured, 504 backend timeout.
    pub status: u16,
    /// Response body (at most `limits.max_payload_bytes`).
    pub payload: Bytes,
}

/// Why an upload was not made durable.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The payload exceeds the limit, or the topic is longer than 255 bytes.
    #[error("upload too large")]
    TooLarge,
    /// The store failed; the device must retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One session's public status.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SessionInfo {
    /// Session id.
    pub session_id: u64,
    /// Transport.
    pub transport: Transport,
    /// Peer socket address.
    pub peer: SocketAddr,
    /// Login time, Unix ms.
    pub since_ms: u64,
    /// Events waiting in its queue.
    pub queued: usize,
}

/// Deliveries queued and queue drops per transport, counted over a batch of offers and recorded
/// in the metrics once ([`OfferCounts::record`]).
#[derive(Default)]
struct OfferCounts {
    /// Deliveries queued, per [`Transport::ALL`] index.
    delivered: [u64; Transport::ALL.len()],
    /// Queue drops, per [`Transport::ALL`] index and policy (drop-oldest, drop-newest,
    /// disconnect).
    drops: [[u64; 3]; Transport::ALL.len()],
}

impl OfferCounts {
    const POLICIES: [QueueFullPolicy; 3] = [
        QueueFullPolicy::DropOldest,
        QueueFullPolicy::DropNewest,
        QueueFullPolicy::Disconnect,
    ];

    /// Counts one offer's outcome on `t`.
    fn add(&mut self, t: Transport, r: Enqueued, is_deliver: bool) {
        let at = Transport::ALL.iter().position(|x| *x == t).unwrap_or(0);
        let policy = match r {
            Enqueued::Queued | Enqueued::Closed => None,
            Enqueued::DroppedOldest => Some(0),
            Enqueued::DroppedNewest => Some(1),
            Enqueued::Kicked => Some(2),
        };
        if is_deliver && matches!(r, Enqueued::Queued | Enqueued::DroppedOldest) {
            self.delivered[at] += 1;
        }
        if let Some(p) = policy {
            self.drops[at][p] += 1;
        }
    }

    /// Adds the counts to the metrics (nothing for a zero count).
    fn record(&self, m: &Metrics) {
        for (at, t) in Transport::ALL.into_iter().enumerate() {
            if self.delivered[at] > 0 {
                m.delivered(t, self.delivered[at]);
            }
            for (p, policy) in Self::POLICIES.into_iter().enumerate() {
                for _ in 0..self.drops[at][p] {
                    m.queue_drop(t, policy.as_str());
                }
            }
        }
    }
}

type PendingTx = oneshot::Sender<Result<CommandResult, CommandError>>;

struct Inner {
    settings: RouterSettings,
    registry: registry::Registry,
    order: order::OrderLocks,
    batches: batch::Batches,
    fanout: fanout::FanOut,
    stores: Stores,
    metrics: Metrics,
    session_ids: session::SessionIds,
    next_cmd: AtomicU32,
    /// Pending commands: cmd id -> (session id, device, completion). One mutex: commands are
    /// low-rate and each critical section is a single map operation, never held across `.await`.
    pending: Mutex<HashMap<u32, (u64, Address, PendingTx)>>,
    http: reqwest::Client,
    upload_notify: Notify,
    live: live::LiveFeed,
}

/// The router (cheap to clone; all clones share state).
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

/// `t` as Unix milliseconds (0 before 1970).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Router {
    /// A router over `stores`, recording into `metrics`.
    pub fn new(settings: RouterSettings, stores: Stores, metrics: Metrics) -> Router {
        Router {
            inner: Arc::new(Inner {
                settings,
                registry: registry::Registry::default(),
                order: order::OrderLocks::default(),
                batches: batch::Batches::default(),
                fanout: fanout::FanOut::default(),
                stores,
                metrics,
                session_ids: session::SessionIds::default(),
                next_cmd: AtomicU32::new(1),
                pending: Mutex::new(HashMap::new()),
                http: reqwest::Client::new(),
                upload_notify: Notify::new(),
                live: live::LiveFeed::default(),
            }),
        }
    }

    /// Starts the background tasks (offline purge and store-size gauges; the upload webhook
    /// forwarder when configured); they stop when `shutdown` is cancelled.
    pub fn spawn_background(
        &self,
        shutdown: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let r = self.clone();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(r.inner.settings.purge_interval);
            loop {
                tokio::select! {
                    _ = sd.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match r.inner.stores.offline.purge_expired(now_ms()).await {
                    Ok(n) if n > 0 => tracing::debug!(purged = n, "offline store purge"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "offline store purge failed"),
                }
                r.refresh_store_gauges().await;
            }
        }));
        if !self.inner.settings.webhook_url.is_empty() {
            tasks.push(tokio::spawn(webhook::run(self.clone(), shutdown)));
        }
        tasks
    }

    /// The settings in use.
    pub fn settings(&self) -> &RouterSettings {
        &self.inner.settings
    }

    /// The stores (the HTTP API reads uploads, bindings and groups directly).
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// The metrics facade.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Online counts.
    pub fn online_counts(&self) -> OnlineCounts {
        self.inner.registry.counts()
    }

    /// A terminal's live sessions, oldest first.
    pub fn status(&self, address: Address) -> Vec<SessionInfo> {
        self.inner
            .registry
            .get(address)
            .iter()
            .map(|h| SessionInfo {
                session_id: h.id(),
                transport: h.transport(),
                peer: h.peer(),
                since_ms: h
                    .since()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                queued: h.queued(),
            })
            .collect()
    }

    /// Updates the offline-store and upload-spool size gauges (and the spool's retention totals).
    pub async fn refresh_store_gauges(&self) {
        if let Ok(s) = self.inner.stores.offline.stats().await {
            self.inner.metrics.offline_size(s.messages, s.references);
            self.inner
                .metrics
                .store_writer(s.writer_queued, s.writer_waits);
        }
        if let Ok(s) = self.inner.stores.uploads.spool_stats().await {
            self.inner.metrics.upload_spool(
                s.records,
                s.bytes,
                s.trimmed,
                [s.dropped_age, s.dropped_size],
            );
        }
    }

    /// The live feed of session events (logins, logouts, refused logins, deliveries).
    pub fn live(&self) -> &live::LiveFeed {
        &self.inner.live
    }

    /// Registers an authenticated session (see the module docs). Kicks replaced sessions
    /// (`plug`), records the terminal for kind-wide pushes, loads the replay after `since_id`,
    /// and tells bound phones a device came online.
    pub async fn login(&self, login: Login) -> Result<Session, LoginError> {
        let started = Instant::now();
        let s = &self.inner.settings;
        s.profile.validate(login.address)?;
        let id = self.inner.session_ids.next(now_ms());
        let handle = SessionHandle::new(
            id,
            login.address,
            login.transport,
            login.upload_epoch,
            login.peer,
        );
        // Register before reading the replay: a message stored meanwhile is then either in the
        // replay or queued live (the Session skips the duplicate), never missed.
        let ins = self
            .inner
            .registry
            .insert(handle.clone(), s.profile.allows_concurrent_sessions());
        for old in &ins.replaced {
            old.kick(KickReason::Replaced);
            self.fail_pending_of(old.id());
            self.inner.metrics.session_closed(old.transport());
        }
        let stores = &self.inner.stores;
        // Remembers the terminal, acknowledges everything up to its since-id (so no stored id
        // is left behind, never replayed yet filling the inbox) and reads the replay.
        let replay = stores
            .offline
            .login(login.address, login.since_id, s.max_replay, now_ms())
            .await;
        let replay = match replay {
            Ok(r) => r,
            Err(e) => {
                self.inner.registry.remove(&handle);
                return Err(e.into());
            }
        };
        self.inner.metrics.login_ok(login.transport);
        self.inner.metrics.latency(Op::Replay, started.elapsed());
        tracing::info!(
            terminal = %login.address,
            transport = login.transport.as_str(),
            peer = %login.peer,
            session = id,
            replaced = ins.replaced.len(),
            replay = replay.len(),
            "login"
        );
        self.inner.live.publish(|| {
            live::LiveEvent::Online(live::SessionView::new(
                login.address,
                login.transport,
                login.peer,
                unix_ms(handle.since()),
            ))
        });
        if ins.came_online {
            self.presence(login.address, true).await;
        }
        Ok(Session::new(handle, replay, self.clone()))
    }

    /// Removes a session; `Some(address)` when its terminal just went offline.
    pub(crate) fn unregister(&self, h: &SessionHandle) -> Option<Address> {
        let removed = self.inner.registry.remove(h);
        self.fail_pending_of(h.id());
        if removed.is_some() {
            self.inner.metrics.session_closed(h.transport());
            // The comet logs the lifecycle line (with the reason) at info; this one is detail.
            tracing::debug!(terminal = %h.address(), transport = h.transport().as_str(), session = h.id(), "logout");
            self.inner.live.publish(|| {
                live::LiveEvent::Offline(live::SessionView::new(
                    h.address(),
                    h.transport(),
                    h.peer(),
                    unix_ms(h.since()),
                ))
            });
        }
        // A session replaced by a newer login (on another node: a local replacement is no
        // longer registered here) is no offline Presence: the terminal is still online.
        removed.and_then(|offline| (offline && !h.was_replaced()).then_some(h.address()))
    }

    /// Sends Presence for a device to the sessions of its bound phones.
    pub(crate) async fn presence(&self, who: Address, online: bool) {
        if who.kind != Kind::Device {
            return;
        }
        let phones = match self.inner.stores.bindings.phones_of(who).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, terminal = %who, "presence: bindings lookup failed");
                return;
            }
        };
        for p in phones {
            for h in self.inner.registry.get(p) {
                self.offer(&h, Outbound::Presence { who, online });
            }
        }
    }

    /// Queues an event the comet produced for one of its sessions (an upload's ack, a refusal),
    /// under the same queue-full policy and counting as every event.
    pub fn report(&self, h: &SessionHandle, ev: Outbound) -> Enqueued {
        self.offer(h, ev)
    }

    /// Offers an event to a session, counting drops.
    fn offer(&self, h: &SessionHandle, ev: Outbound) -> Enqueued {
        let mut counts = OfferCounts::default();
        let r = self.offer_counted(h, ev, &mut counts);
        counts.record(&self.inner.metrics);
        r
    }

    /// Offers a message to every one of `sessions`; returns how many queued it. The metrics
    /// are recorded once for the whole batch, not once per session.
    fn offer_all(
        &self,
        sessions: &[SessionHandle],
        msg_id: u64,
        from: Option<Address>,
        payload: &Bytes,
    ) -> u64 {
        let mut counts = OfferCounts::default();
        let mut queued = 0;
        for h in sessions {
            let ev = Outbound::Deliver {
                msg_id,
                from,
                payload: payload.clone(),
            };
            if matches!(
                self.offer_counted(h, ev, &mut counts),
                Enqueued::Queued | Enqueued::DroppedOldest
            ) {
                queued += 1;
            }
        }
        counts.record(&self.inner.metrics);
        queued
    }

    /// Every session's queue capacity and full-queue policy (`[limits]`).
    fn queue_limits(&self) -> QueueLimits {
        let s = &self.inner.settings;
        QueueLimits {
            cap: u32::try_from(s.outbound_queue).unwrap_or(u32::MAX),
            policy: s.queue_full_policy,
        }
    }

    /// [`Router::offer`], adding to `counts` instead of recording the metrics.
    fn offer_counted(&self, h: &SessionHandle, ev: Outbound, counts: &mut OfferCounts) -> Enqueued {
        let delivered = match &ev {
            Outbound::Deliver { msg_id, from, .. } => Some((*msg_id, *from)),
            _ => None,
        };
        let r = h.offer(ev, self.queue_limits());
        match delivered {
            Some((msg_id, from)) => self.count_deliver(h, msg_id, from, r, counts),
            None => {
                counts.add(h.transport(), r, false);
                self.log_kick(h, r);
            }
        }
        r
    }

    /// Counts (and shows to watchers) the outcome `r` of offering Deliver `msg_id` to `h`.
    fn count_deliver(
        &self,
        h: &SessionHandle,
        msg_id: u64,
        from: Option<Address>,
        r: Enqueued,
        counts: &mut OfferCounts,
    ) {
        if matches!(r, Enqueued::Queued | Enqueued::DroppedOldest) {
            self.inner.live.publish(|| live::LiveEvent::Delivered {
                terminal: h.address().to_string(),
                transport: h.transport().as_str(),
                msg_id,
                from: from.map(|a| a.to_string()),
            });
        }
        counts.add(h.transport(), r, true);
        self.log_kick(h, r);
    }

    /// Logs a session kicked by the full-queue policy.
    fn log_kick(&self, h: &SessionHandle, r: Enqueued) {
        if r == Enqueued::Kicked {
            tracing::info!(terminal = %h.address(), session = h.id(), "kicked: outbound queue full");
        }
    }

    /// Offers a stored message to its sessions (see [`fanout`]): at once when it names its
    /// terminals and no broadcast is waiting, otherwise through the fan-out queue. The caller
    /// holds the message's order stripes. Returns [`PushOutcome::delivered_online`].
    fn offer_stored(&self, job: fanout::Job) -> u64 {
        let mut st = self.inner.fanout.lock();
        let (online, start) = self.offer_locked(&mut st, job);
        drop(st);
        if start {
            tokio::spawn(Router::drain_fanout(Arc::downgrade(&self.inner)));
        }
        online
    }

    /// [`Router::offer_stored`] for several messages, in the given (id) order, under one lock
    /// of the fan-out queue, so the drain finds them queued together.
    fn offer_stored_all(&self, jobs: Vec<fanout::Job>) {
        let mut st = self.inner.fanout.lock();
        let mut start = false;
        for job in jobs {
            start |= self.offer_locked(&mut st, job).1;
        }
        drop(st);
        if start {
            tokio::spawn(Router::drain_fanout(Arc::downgrade(&self.inner)));
        }
    }

    /// Offers `job` at once or queues it, with the fan-out queue locked as `st`; returns the
    /// sessions it reaches and whether the drain task must be spawned.
    fn offer_locked(&self, st: &mut fanout::State, job: fanout::Job) -> (u64, bool) {
        if let (true, fanout::Targets::Sessions(sessions)) = (st.idle(), &job.targets) {
            // Under the queue lock, so no drain can start in between and be overtaken.
            return (
                self.offer_all(sessions, job.msg_id, job.from, &job.payload),
                false,
            );
        }
        let online = match &job.targets {
            fanout::Targets::Kind(kind) => self.inner.registry.session_count(*kind),
            fanout::Targets::Sessions(sessions) => sessions.len() as u64,
        };
        (online, st.enqueue(job))
    }

    /// The batch runner (see [`batch`]): stores and offers the waiting kind-wide pushes one
    /// batch at a time until none is waiting. Like the drain task it holds the router only
    /// while it works on a batch.
    async fn run_batches(router: Weak<Inner>) {
        let mut waiting = Vec::new();
        loop {
            let Some(inner) = router.upgrade() else {
                return;
            };
            let r = Router { inner };
            let ordered = r.inner.order.lock(None).await;
            if !r.inner.batches.lock().take(&mut waiting) {
                return;
            }
            let appends = waiting.iter().map(|p| {
                let msg = NewMessage {
                    from: p.from,
                    payload: p.payload.clone(),
                    expires_at_ms: p.expires_at_ms,
                };
                r.inner
                    .stores
                    .offline
                    .append(Recipients::Known(p.kind), msg, now_ms())
            });
            let results = futures_util::future::join_all(appends).await;
            // From here to the release of the stripes nothing awaits: the answers go out and
            // the offers are queued as one step, and a push that follows an answer waits for
            // the stripes, so it is queued behind them.
            let offer = r.inner.settings.offer_on_store;
            let order = batch::in_id_order(&results);
            let jobs: Vec<fanout::Job> = order
                .iter()
                .filter(|_| offer)
                .map(|&i| fanout::Job {
                    targets: fanout::Targets::Kind(waiting[i].kind),
                    msg_id: results[i].as_ref().map_or(0, |a| a.msg_id),
                    from: waiting[i].from,
                    payload: waiting[i].payload.clone(),
                })
                .collect();
            for (p, result) in waiting.drain(..).zip(results) {
                let online = if offer {
                    r.inner.registry.session_count(p.kind)
                } else {
                    0
                };
                // The caller may have gone away; its message is stored and offered anyway.
                let _ = p.reply.send(result.map(|a| (a, online)));
            }
            r.offer_stored_all(jobs);
            drop(ordered);
        }
    }

    /// The drain task: offers the queued jobs in order until the queue is empty. It holds the
    /// router only while it offers (a weak reference across its yields), so a router dropped
    /// meanwhile (a shutdown) is not kept alive; its messages are in the store.
    async fn drain_fanout(router: Weak<Inner>) {
        let mut jobs = Vec::new();
        let mut chunk = Vec::new();
        loop {
            let Some(inner) = router.upgrade() else {
                return;
            };
            if !inner.fanout.lock().take(&mut jobs) {
                return;
            }
            drop(inner);
            let mut rest = jobs.as_slice();
            while !rest.is_empty() {
                let (run, after) = rest.split_at(fanout::run_len(rest));
                let kind = match &run[0].targets {
                    fanout::Targets::Kind(kind) => *kind,
                    fanout::Targets::Sessions(sessions) => {
                        let Some(inner) = router.upgrade() else {
                            return;
                        };
                        let j = &run[0];
                        Router { inner }.offer_all(sessions, j.msg_id, j.from, &j.payload);
                        rest = after;
                        continue;
                    }
                };
                for shard in 0..registry::SHARDS {
                    let Some(inner) = router.upgrade() else {
                        return;
                    };
                    inner.registry.shard_sessions(shard, kind, &mut chunk);
                    Router { inner }.offer_run(&chunk, run);
                    chunk.clear();
                    tokio::task::yield_now().await;
                }
                rest = after;
            }
            jobs.clear();
        }
    }

    /// Offers every message of `run` (kind-wide jobs, in id order) to each of `sessions`, all
    /// of a session's at once, recording the metrics once.
    fn offer_run(&self, sessions: &[SessionHandle], run: &[fanout::Job]) {
        let mut counts = OfferCounts::default();
        let limits = self.queue_limits();
        for h in sessions {
            h.offer_delivers(
                limits,
                run.iter().map(|j| (j.msg_id, j.from, &j.payload)),
                |msg_id, from, r| self.count_deliver(h, msg_id, from, r, &mut counts),
            );
        }
        counts.record(&self.inner.metrics);
    }

    fn expiry(&self, ttl: Option<Duration>) -> Result<u64, PushError> {
        let s = &self.inner.settings;
        let ttl = ttl.unwrap_or(s.default_ttl);
        if ttl.is_zero() || ttl > s.max_ttl {
            return Err(PushError::BadTtl(s.max_ttl.as_secs()));
        }
        Ok(now_ms().saturating_add(ttl.as_millis() as u64))
    }

    /// Pushes `payload` from the backend (or `from` a terminal) to `target`: stored durably
    /// first, then queued to online sessions. `ttl` defaults to `offline.ttl_secs`.
    pub async fn push(
        &self,
        target: Target,
        from: Option<Address>,
        payload: Bytes,
        ttl: Option<Duration>,
    ) -> Result<PushOutcome, PushError> {
        let started = Instant::now();
        if payload.len() > self.inner.settings.max_payload {
            self.inner.metrics.limit_hit("max_payload_bytes");
            return Err(PushError::TooLarge(payload.len()));
        }
        let expires_at_ms = self.expiry(ttl)?;
        let label = target.label();
        let profile = self.inner.settings.profile;
        let check = |a: Address| profile.validate(a).map_err(|e| PushError::Address(a, e));
        let (recipients, kind_wide) = match target {
            Target::Terminal(a) => {
                check(a)?;
                (vec![a], None)
            }
            Target::List(list) => {
                for a in &list {
                    check(*a)?;
                }
                (list, None)
            }
            Target::Group(name) => {
                let members = self.inner.stores.groups.members(&name).await?;
                (members.ok_or(PushError::UnknownGroup(name))?, None)
            }
            Target::AllDevices => (Vec::new(), Some(Some(Kind::Device))),
            Target::AllPhones => (Vec::new(), Some(Some(Kind::Phone))),
            Target::Everyone => (Vec::new(), Some(None)),
        };
        let (appended, delivered_online) = match kind_wide {
            Some(kind) => {
                self.push_kind_wide(kind, from, payload, expires_at_ms)
                    .await?
            }
            None => {
                self.push_listed(recipients, from, payload, expires_at_ms)
                    .await?
            }
        };
        self.inner
            .metrics
            .offline_capped(appended.evicted, appended.rejected);
        self.inner.metrics.push(label);
        self.inner.metrics.latency(Op::Push, started.elapsed());
        Ok(PushOutcome {
            msg_id: appended.msg_id,
            stored_for: appended.stored_for,
            delivered_online,
            evicted: appended.evicted,
            rejected: appended.rejected,
        })
    }

    /// Stores and offers a push to named terminals, holding their order stripes across both.
    async fn push_listed(
        &self,
        recipients: Vec<Address>,
        from: Option<Address>,
        payload: Bytes,
        expires_at_ms: u64,
    ) -> Result<(Appended, u64), PushError> {
        let msg = NewMessage {
            from,
            payload: payload.clone(),
            expires_at_ms,
        };
        // Issuing the id and offering it is one step per recipient (see [`order`]), so each
        // session is offered its terminal's ids in increasing order.
        let _ordered = self.inner.order.lock(Some(recipients.as_slice())).await;
        let appended: Appended = self
            .inner
            .stores
            .offline
            .append(Recipients::List(recipients.clone()), msg, now_ms())
            .await?;
        if !self.inner.settings.offer_on_store {
            return Ok((appended, 0));
        }
        let mut r = recipients;
        r.sort_unstable();
        r.dedup();
        let sessions = r
            .into_iter()
            .flat_map(|a| self.inner.registry.get(a))
            .collect();
        let online = self.offer_stored(fanout::Job {
            targets: fanout::Targets::Sessions(sessions),
            msg_id: appended.msg_id,
            from,
            payload,
        });
        Ok((appended, online))
    }

    /// Stores and offers a kind-wide push through the batch runner (see [`batch`]).
    async fn push_kind_wide(
        &self,
        kind: Option<Kind>,
        from: Option<Address>,
        payload: Bytes,
        expires_at_ms: u64,
    ) -> Result<(Appended, u64), PushError> {
        let (reply, answer) = oneshot::channel();
        let start = self.inner.batches.lock().enqueue(batch::Pending {
            kind,
            from,
            payload,
            expires_at_ms,
            reply,
        });
        if start {
            tokio::spawn(Router::run_batches(Arc::downgrade(&self.inner)));
        }
        match answer.await {
            Ok(outcome) => Ok(outcome?),
            Err(_) => Err(PushError::Store(StoreError::Backend(
                "the broker is shutting down".into(),
            ))),
        }
    }

    /// Terminal-to-terminal send (Body::Send): allowed only between a phone and a device bound to
    /// each other. Stored and delivered like a unicast push with `from` set.
    pub async fn send(
        &self,
        from: Address,
        to: Address,
        payload: Bytes,
    ) -> Result<PushOutcome, PushError> {
        // docs/protocol.md section 4, "Which error wins": size, then the address, then the
        // binding, then the store.
        if payload.len() > self.inner.settings.max_payload {
            self.inner.metrics.limit_hit("max_payload_bytes");
            self.inner.metrics.send("error");
            return Err(PushError::TooLarge(payload.len()));
        }
        if let Err(e) = self.inner.settings.profile.validate(to) {
            self.inner.metrics.send("invalid_address");
            return Err(PushError::Address(to, e));
        }
        let (phone, device) = match (from.kind, to.kind) {
            (Kind::Phone, Kind::Device) => (from, to),
            (Kind::Device, Kind::Phone) => (to, from),
            _ => {
                self.inner.metrics.send("not_bound");
                return Err(PushError::NotBound { from, to });
            }
        };
        if !self.inner.stores.bindings.is_bound(phone, device).await? {
            self.inner.metrics.send("not_bound");
            return Err(PushError::NotBound { from, to });
        }
        let r = self
            .push(Target::Terminal(to), Some(from), payload, None)
            .await;
        self.inner
            .metrics
            .send(if r.is_ok() { "ok" } else { "error" });
        r
    }

    /// The terminal acknowledged `msg_id`: the store forgets it, and may forget every id below it,
    /// for this terminal (see [`crate::store::OfflineStore::ack`]). `Ok(false)` when nothing was
    /// left to forget (already acked, expired or evicted).
    pub async fn ack(&self, terminal: Address, msg_id: u64) -> Result<bool, StoreError> {
        self.inner.stores.offline.ack(terminal, msg_id).await
    }

    /// Sends a command to a device's newest session and waits for its CommandResult.
    pub async fn command(
        &self,
        device: Address,
        name: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<CommandResult, CommandError> {
        let started = Instant::now();
        if device.kind != Kind::Device {
            return Err(CommandError::Invalid("commands go to devices".into()));
        }
        // The wire's limit (docs/protocol.md section 4): a longer name could never be sent, so
        // the caller gets 400 now instead of a 504 later.
        if name.len() > shared_protocol::limits::MAX_NAME {
            return Err(CommandError::Invalid(format!(
                "command name is {} bytes, at most {} allowed",
                name.len(),
                shared_protocol::limits::MAX_NAME
            )));
        }
        if payload.len() > self.inner.settings.max_payload {
            return Err(CommandError::Invalid("payload too large".into()));
        }
        let Some(h) = self.inner.registry.get(device).pop() else {
            self.inner.metrics.command("not_online");
            return Err(CommandError::NotOnline);
        };
        let mut cmd_id = self.inner.next_cmd.fetch_add(1, Ordering::Relaxed);
        if cmd_id == 0 {
            cmd_id = self.inner.next_cmd.fetch_add(1, Ordering::Relaxed);
        }
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(cmd_id, (h.id(), device, tx));
        let mut entry = PendingEntry {
            router: self,
            cmd_id,
            ended: false,
        };
        let result = match self.offer(
            &h,
            Outbound::Command {
                cmd_id,
                name,
                payload,
            },
        ) {
            Enqueued::Queued | Enqueued::DroppedOldest => {
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(CommandError::Disconnected),
                    Err(_) => Err(CommandError::Timeout),
                }
            }
            Enqueued::Closed => Err(CommandError::Disconnected),
            Enqueued::DroppedNewest | Enqueued::Kicked => Err(CommandError::Overloaded),
        };
        entry.ended = true;
        drop(entry);
        let label = match &result {
            Ok(_) => "ok",
            Err(CommandError::Timeout) => "timeout",
            Err(CommandError::Disconnected) => "disconnected",
            Err(CommandError::Overloaded) => "overloaded",
            Err(_) => "error",
        };
        self.inner.metrics.command(label);
        self.inner.metrics.latency(Op::Command, started.elapsed());
        result
    }

    /// Commands waiting for their device's answer (what [`PendingEntry`] leaves behind: none
    /// once every call has ended).
    #[cfg(test)]
    fn pending_commands(&self) -> usize {
        self.lock_pending().len()
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (u64, Address, PendingTx)>> {
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail_pending_of(&self, session_id: u64) {
        let mut p = self.lock_pending();
        let ids: Vec<u32> = p
            .iter()
            .filter(|(_, v)| v.0 == session_id)
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            if let Some((_, _, tx)) = p.remove(&id) {
                let _ = tx.send(Err(CommandError::Disconnected));
            }
        }
    }

    /// A device answered command `cmd_id` (Body::CommandResult). Returns false when no such
    /// command is pending for this device (late, duplicate or forged): the comet ignores it.
    pub fn complete_command(
        &self,
        device: Address,
        cmd_id: u32,
        status: u16,
        payload: Bytes,
    ) -> bool {
        let mut p = self.lock_pending();
        match p.get(&cmd_id) {
            Some((_, d, _)) if *d == device => {}
            _ => return false,
        }
        let (_, _, tx) = p.remove(&cmd_id).expect("checked above");
        drop(p);
        tx.send(Ok(CommandResult { status, payload })).is_ok()
    }

    /// Makes a device upload, sent in the device's boot `upload_epoch`, durable in the spool
    /// (deduplicating an identical resend of that epoch); acknowledge it to the device only
    /// after `Ok`.
    pub async fn upload(
        &self,
        device: Address,
        upload_epoch: u64,
        upload_id: u32,
        topic: &str,
        payload: Bytes,
    ) -> Result<SpoolAppended, UploadError> {
        let started = Instant::now();
        if payload.len() > self.inner.settings.max_payload || topic.len() > 255 {
            self.inner.metrics.upload("too_large");
            return Err(UploadError::TooLarge);
        }
        let r = self
            .inner
            .stores
            .uploads
            .append(device, upload_epoch, upload_id, topic, payload, now_ms())
            .await;
        match &r {
            Ok(a) => {
                self.inner
                    .metrics
                    .upload(if a.duplicate { "duplicate" } else { "stored" });
                self.inner.upload_notify.notify_one();
            }
            Err(e) => {
                self.inner.metrics.upload("error");
                tracing::warn!(terminal = %device, error = %e, "upload not stored");
            }
        }
        self.inner.metrics.latency(Op::Upload, started.elapsed());
        Ok(r?)
    }

    /// Several uploads of one device session (`upload_epoch` as in [`Router::upload`]), made
    /// durable in this order (see [`crate::store::UploadSpool::append_many`]); one result per
    /// upload, in order. An upload over the limits is refused alone; the others go on.
    pub async fn upload_many(
        &self,
        device: Address,
        upload_epoch: u64,
        uploads: Vec<NewUpload>,
    ) -> Vec<Result<SpoolAppended, UploadError>> {
        let started = Instant::now();
        let max = self.inner.settings.max_payload;
        let fits = |u: &NewUpload| u.payload.len() <= max && u.topic.len() <= 255;
        let flags: Vec<bool> = uploads.iter().map(fits).collect();
        let valid: Vec<NewUpload> = uploads.into_iter().filter(fits).collect();
        let mut stored = self
            .inner
            .stores
            .uploads
            .append_many(device, upload_epoch, valid, now_ms())
            .await
            .into_iter();
        let mut out = Vec::with_capacity(flags.len());
        let mut any_stored = false;
        for ok in flags {
            if !ok {
                self.inner.metrics.upload("too_large");
                out.push(Err(UploadError::TooLarge));
                continue;
            }
            let r = stored.next().unwrap_or_else(|| {
                Err(StoreError::Backend("spool returned too few results".into()))
            });
            match &r {
                Ok(a) => {
                    any_stored = true;
                    self.inner
                        .metrics
                        .upload(if a.duplicate { "duplicate" } else { "stored" });
                }
                Err(e) => {
                    self.inner.metrics.upload("error");
                    tracing::warn!(terminal = %device, error = %e, "upload not stored");
                }
            }
            out.push(r.map_err(UploadError::from));
        }
        if any_stored {
            self.inner.upload_notify.notify_one();
        }
        self.inner.metrics.latency(Op::Upload, started.elapsed());
        out
    }

    /// [`Router::upload`] in a task: `Outbound::UploadAck` is queued to `session` once durable
    /// (nothing on failure: the device resends). Not ordered with the session's other uploads;
    /// the device endpoints use their ordered per-session frame worker instead.
    pub fn spawn_upload(
        &self,
        session: &SessionHandle,
        upload_id: u32,
        topic: String,
        payload: Bytes,
    ) {
        let r = self.clone();
        let h = session.clone();
        tokio::spawn(async move {
            if r.upload(h.address(), h.upload_epoch(), upload_id, &topic, payload)
                .await
                .is_ok()
            {
                r.offer(&h, Outbound::UploadAck { upload_id });
            }
        });
    }

    /// Forwards a device Request to `backend.device_request_url` + `path` as an HTTP POST
    /// (body = payload, header `x-plugcloud-device: device:ID`) and returns the answer.
    /// A path that could leave the base URL (see `backend_path`) gets 400 without any
    /// HTTP call, counted as `bad_path`.
    pub async fn device_request(
        &self,
        device: Address,
        path: &str,
        payload: Bytes,
    ) -> DeviceResponse {
        let started = Instant::now();
        let (resp, label) = self.forward(device, path, payload).await;
        self.inner.metrics.device_request(label);
        self.inner
            .metrics
            .latency(Op::DeviceRequest, started.elapsed());
        resp
    }

    async fn forward(
        &self,
        device: Address,
        path: &str,
        payload: Bytes,
    ) -> (DeviceResponse, &'static str) {
        let s = &self.inner.settings;
        let fail = |status: u16, label| {
            (
                DeviceResponse {
                    status,
                    payload: Bytes::new(),
                },
                label,
            )
        };
        if s.backend_url.is_empty() {
            return fail(503, "not_configured");
        }
        let url = match backend_path::backend_url(&s.backend_url, path) {
            Ok(url) => url,
            Err(why) => {
                tracing::debug!(terminal = %device, reason = %why, "device request path refused");
                return fail(400, "bad_path");
            }
        };
        let req = self
            .inner
            .http
            .post(url)
            .header("x-plugcloud-device", device.to_string())
            .header("content-type", "application/octet-stream")
            .timeout(s.backend_timeout)
            .body(payload);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return fail(504, "backend_timeout"),
            Err(_) => return fail(502, "backend_error"),
        };
        let status = resp.status().as_u16();
        // Capped while streaming: a huge or endless body is cut off at the payload limit.
        match capped_body::read_capped(resp, s.max_payload).await {
            Ok(b) => (DeviceResponse { status, payload: b }, "ok"),
            Err(capped_body::CappedBodyError::TooLarge) => fail(502, "too_large"),
            Err(capped_body::CappedBodyError::Timeout) => fail(504, "backend_timeout"),
            Err(capped_body::CappedBodyError::Failed) => fail(502, "backend_error"),
        }
    }

    /// [`Router::device_request`] in a task: the answer is queued to `session` as
    /// `Outbound::Response { req_id, .. }`. `slot` (the session's bound on Requests in flight)
    /// is held until then.
    pub fn spawn_device_request(
        &self,
        session: &SessionHandle,
        req_id: u32,
        path: String,
        payload: Bytes,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let r = self.clone();
        let h = session.clone();
        tokio::spawn(async move {
            // The session's Request slot is given back once the answer is queued.
            let _slot = slot;
            let resp = r.device_request(h.address(), &path, payload).await;
            r.offer(
                &h,
                Outbound::Response {
                    req_id,
                    status: resp.status,
                    payload: resp.payload,
                },
            );
        });
    }

    /// Kicks every session with `reason` (shutdown drain); returns how many.
    pub fn kick_all(&self, reason: KickReason) -> usize {
        self.inner
            .registry
            .all(None)
            .iter()
            .filter(|h| h.kick(reason))
            .count()
    }

    /// Kicks one terminal's sessions.
    pub fn kick(&self, terminal: Address, reason: KickReason) -> usize {
        self.inner
            .registry
            .get(terminal)
            .iter()
            .filter(|h| h.kick(reason))
            .count()
    }

    /// Offers an already stored message to this node's live sessions, without storing it again
    /// (cluster mode: a message another node stored in the shared offline store). `kind_wide`
    /// `Some(k)` targets every local session of kind `k` (`None` = every kind) and ignores
    /// `recipients`. Returns how many sessions it was queued to.
    pub fn deliver_local(
        &self,
        recipients: &[Address],
        kind_wide: Option<Option<Kind>>,
        msg_id: u64,
        from: Option<Address>,
        payload: Bytes,
    ) -> u64 {
        let sessions = match kind_wide {
            Some(kind) => self.inner.registry.all(kind),
            None => recipients
                .iter()
                .flat_map(|a| self.inner.registry.get(*a))
                .collect(),
        };
        self.offer_all(&sessions, msg_id, from, &payload)
    }

    /// Makes every live session on this node re-read its terminal's stored messages above the
    /// last id it yielded before yielding anything newer (cluster mode: the comet may have
    /// missed delivery notices). Returns how many sessions were asked.
    pub fn resync_sessions(&self) -> usize {
        let all = self.inner.registry.all(None);
        for h in &all {
            h.request_resync();
        }
        all.len()
    }

    /// Every terminal with at least one live session on this node (cluster mode reconciles the
    /// shared online registry with it).
    pub fn online_terminals(&self) -> Vec<Address> {
        let mut v: Vec<Address> = self
            .inner
            .registry
            .all(None)
            .iter()
            .map(|h| h.address())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub(crate) fn upload_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.upload_notify.notified()
    }
}

/// A command's entry in the pending table for as long as [`Router::command`] runs, removed
/// however the call ends. A caller that gives up drops the call's future (the HTTP API does
/// when its client disconnects); without this the entry would stay until the device answered
/// or its session ended, and a device that never answers would collect them. Such a call is
/// counted as `cancelled` in `broker_commands_total`.
struct PendingEntry<'a> {
    router: &'a Router,
    cmd_id: u32,
    /// The call reached its result (counted under that result, not as cancelled).
    ended: bool,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        self.router.lock_pending().remove(&self.cmd_id);
        if !self.ended {
            self.router.inner.metrics.command("cancelled");
        }
    }
}

#[cfg(test)]
mod tests;
