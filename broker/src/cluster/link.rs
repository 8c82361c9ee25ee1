//! Node-to-node links: authenticated, sealed TCP between msgbus and comet nodes.
//!
//! msgbus dials every live comet it sees in discovery ([`LinkManager`], one task per comet with
//! a bounded queue that survives reconnects, exponential backoff); comets listen
//! ([`CometLinks`]). A comet that leaves the view and comes back (as one may while ZooKeeper
//! restarts) gets a new task; each task keeps its own up flag and pending requests, so
//! the old one winding down never marks the new link down nor fails what was sent on it.
//!
//! Every connection first runs the [`super::link_auth`] handshake over the cluster key (msgbus
//! initiates and expects the comet discovery named; the comet expects a msgbus), bounded by
//! [`LinkSettings::handshake_timeout`]. Until it succeeds nothing read is
//! acted on; a failure (timeout, garbage, an unsealed frame, a wrong key, a wrong role or node)
//! closes the connection, is counted in `broker_link_auth_failures_total{reason}` and logged once
//! at warn with the peer address. After it, every frame ([`super::frame`]) is sealed under the
//! direction's key; one that does not open closes the link (counted as `reason="bad_frame"`).
//! Over a link:
//! * `Stored` (comet -> msgbus) and `Deliver` (msgbus -> comet) carried stored messages before
//!   comets read them from their delivery-notice streams ([`super::delivery`]); they stay in
//!   the wire format, and a node that receives one ignores it and counts it in
//!   `broker_link_frames_dropped_total{reason="superseded"}`;
//! * `Command` / `CommandResult` ([`super::commands`]): an HTTP command for a device on another
//!   comet. A comet sends it to one msgbus, which forwards it to the target comet and relays
//!   the result back; a msgbus's own API sends it to the target comet directly. A comet runs
//!   every `Command` it receives on its router and answers on the same link.
//! * `Replace` ([`super::presence`]): a login on one comet replaced a terminal's session on
//!   comet `to`; sent like a `Command` (comet -> one msgbus -> comet `to`), never answered.
//!
//! Queues are bounded: when one is full the frame is dropped and counted. Nothing is lost by
//! that: every message is in the shared offline store and replayed at the next login (a dropped
//! command fails to its HTTP caller). Commands received on one link run at most
//! [`LinkSettings::max_inflight`] at once; more are answered `Overloaded` at once and counted in
//! `broker_limit_rejections_total{limit="max_inflight_commands"}`. Metrics per peer node: link
//! up/down, frames sent, frames dropped ([`crate::metrics`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::claims::Notice;
use super::commands::{self, Forward, MAX_FORWARDED_TIMEOUT, Pending};
use super::frame::{self, CommandOutcome, CommandRequest, Frame, LinkMessage};
use super::link_auth::{
    AuthError, Established, Expect, Identity, Initiator, LinkKey, NONCE_LEN, Opener, Responder,
    SealError, Sealer, split_handshake,
};
use super::presence::{Presence, ReplaceSink};
use crate::discovery::{NodeView, Role};
use crate::metrics::Metrics;
use crate::router::Router;

/// Keepalive period on an idle link.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Longest a link handshake may take by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What both link sides need besides their node id.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// The cluster key.
    pub key: LinkKey,
    /// Frames queued per link.
    pub queue: usize,
    /// Commands from one link running at once.
    pub max_inflight: usize,
    /// Longest the handshake may take before the connection is closed.
    pub handshake_timeout: Duration,
}

/// Why a connection closed before it was authenticated.
#[derive(Debug, thiserror::Error)]
enum HandshakeFailure {
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The connection closed or failed mid-handshake.
    #[error("connection closed during the handshake: {0}")]
    Closed(String),
    /// The peer is not authenticated.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl HandshakeFailure {
    fn reason(&self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed(_) => "closed",
            HandshakeFailure::Auth(e) => e.reason(),
        }
    }
}

/// Why an authenticated link's reader stopped.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// A sealed frame did not open (tampered, replayed, reordered, oversized).
    #[error("sealed frame refused: {0}")]
    Sealed(#[from] SealError),
    /// An authentic frame did not decode (a peer bug).
    #[error("frame: {0}")]
    Frame(#[from] frame::FrameError),
    /// The socket failed.
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts and logs (once, at warn) a connection closed before or by a failed authentication.
fn auth_failed(
    metrics: &Metrics,
    peer: &str,
    reason: &'static str,
    detail: &dyn std::fmt::Display,
) {
    metrics.link_auth_failure(reason);
    tracing::warn!(%peer, reason, error = %detail, "node link refused: connection closed");
}

/// Reads the next handshake message body into a vector, buffering extra bytes in `buf`.
async fn read_handshake_msg<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, HandshakeFailure> {
    let mut chunk = [0u8; 512];
    loop {
        if let Some((body, used)) = split_handshake(buf)? {
            let body = body.to_vec();
            buf.drain(..used);
            return Ok(body);
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| HandshakeFailure::Closed(e.to_string()))?;
        if n == 0 {
            return Err(HandshakeFailure::Closed("end of stream".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Result<(), HandshakeFailure> {
    s.write_all(bytes)
        .await
        .map_err(|e| HandshakeFailure::Closed(e.to_string()))
}

/// The comet's side of the handshake; bytes read past it stay in `buf`.
async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: LinkKey,
    me: Identity,
    buf: &mut Vec<u8>,
) -> Result<Established, HandshakeFailure> {
    let expect = Expect {
        role: Role::Msgbus,
        node: None,
    };
    let responder = Responder::new(key, me, expect, rand::random::<[u8; NONCE_LEN]>());
    let hello = read_handshake_msg(s, buf).await?;
    let (reply, wait) = responder.on_hello(&hello)?;
    write_all(s, &reply).await?;
    let finish = read_handshake_msg(s, buf).await?;
    Ok(wait.on_finish(&finish)?)
}

/// The msgbus's side of the handshake with comet `comet`; bytes read past it stay in `buf`.
async fn dial_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: LinkKey,
    me: Identity,
    comet: &str,
    buf: &mut Vec<u8>,
) -> Result<Established, HandshakeFailure> {
    let expect = Expect {
        role: Role::Comet,
        node: Some(comet.to_string()),
    };
    let (initiator, hello) = Initiator::start(key, me, expect, rand::random::<[u8; NONCE_LEN]>());
    write_all(s, &hello).await?;
    let reply = read_handshake_msg(s, buf).await?;
    let (finish, established) = initiator.on_reply(&reply)?;
    write_all(s, &finish).await?;
    Ok(established)
}

/// Runs `handshake` within `timeout`.
async fn bounded<F>(timeout: Duration, handshake: F) -> Result<Established, HandshakeFailure>
where
    F: std::future::Future<Output = Result<Established, HandshakeFailure>>,
{
    match tokio::time::timeout(timeout, handshake).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeFailure::Timeout),
    }
}

/// Opens sealed frames from `rd` (starting with the bytes already in `buf`), calling
/// `on_frame` for each; returns on EOF or the first error.
async fn read_frames(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut buf: Vec<u8>,
    mut opener: Opener,
    mut on_frame: impl FnMut(Frame),
) -> Result<(), ReadError> {
    let mut chunk = [0u8; 8192];
    loop {
        while let Some((plain, used)) = opener.open(&buf)? {
            buf.drain(..used);
            on_frame(frame::decode_body(&plain)?);
        }
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Seals and writes queued frames (and pings when idle) until the queue closes or a write
/// fails; a long list is split first ([`frame::split_for_wire`]). Counts each frame written
/// for `peer`.
async fn write_frames(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Frame>,
    mut sealer: Sealer,
    stop: &CancellationToken,
    peer: &str,
    metrics: &Metrics,
) -> Result<(), String> {
    loop {
        let f = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            f = rx.recv() => match f { Some(f) => f, None => return Ok(()) },
            _ = tokio::time::sleep(PING_EVERY) => Frame::Ping,
        };
        for part in frame::split_for_wire(f) {
            let body = frame::encode_body(&part).map_err(|e| e.to_string())?;
            let sealed = sealer.seal(&body).map_err(|e| e.to_string())?;
            wr.write_all(&sealed).await.map_err(|e| e.to_string())?;
            metrics.link_frame_sent(peer, part.name());
        }
    }
}

/// Runs `req` from a link under its in-flight bound: a task holding a permit, or at once an
/// `Overloaded` answer when every permit is taken (counted). `run` produces the outcome.
fn bounded_command<F>(
    inflight: &Arc<Semaphore>,
    metrics: &Metrics,
    req: CommandRequest,
    tx: &mpsc::Sender<Frame>,
    run: impl FnOnce(CommandRequest) -> F,
) where
    F: std::future::Future<Output = CommandOutcome> + Send + 'static,
{
    let id = req.id;
    let Ok(permit) = inflight.clone().try_acquire_owned() else {
        metrics.limit_hit("max_inflight_commands");
        let _ = tx.try_send(Frame::CommandResult {
            id,
            outcome: CommandOutcome::Overloaded,
        });
        return;
    };
    let fut = run(req);
    let tx = tx.clone();
    tokio::spawn(async move {
        let outcome = fut.await;
        drop(permit);
        // The link may be gone meanwhile: the requester then fails by itself.
        let _ = tx.send(Frame::CommandResult { id, outcome }).await;
    });
}

/// The comet side: accepts msgbus links, runs their `Command` frames, and sends `Command` and
/// `Replace` frames to one connected msgbus (round robin).
pub struct CometLinks {
    node: String,
    links: Mutex<BTreeMap<u64, (String, mpsc::Sender<Frame>)>>,
    next: AtomicU64,
    rr: AtomicUsize,
    settings: LinkSettings,
    dropped: AtomicU64,
    pending: Pending<u64>,
    metrics: Metrics,
}

impl CometLinks {
    /// Links of comet `node` with `settings`, recording to `metrics` (the link auth failure
    /// counters are registered at once, so they exist at 0).
    pub fn new(node: String, settings: LinkSettings, metrics: Metrics) -> Arc<CometLinks> {
        metrics.link_auth_registered();
        Arc::new(CometLinks {
            node,
            links: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            rr: AtomicUsize::new(0),
            settings,
            dropped: AtomicU64::new(0),
            pending: Pending::default(),
            metrics,
        })
    }

    /// The connected links in round-robin order starting at the next turn.
    fn rotation(&self) -> Vec<(u64, String, mpsc::Sender<Frame>)> {
        let mut links: Vec<(u64, String, mpsc::Sender<Frame>)> = self
            .links()
            .iter()
            .map(|(id, (n, t))| (*id, n.clone(), t.clone()))
            .collect();
        if !links.is_empty() {
            let start = self.rr.fetch_add(1, Ordering::Relaxed) % links.len();
            links.rotate_left(start);
        }
        links
    }

    fn links(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (String, mpsc::Sender<Frame>)>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connected msgbus nodes.
    pub fn connected(&self) -> Vec<String> {
        self.links().values().map(|(n, _)| n.clone()).collect()
    }

    /// Frames dropped because no link was connected or its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Accepts links on `listener` until `cancel`; `Replace` frames go to `presence` (ignored
    /// without one).
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        router: Router,
        presence: Option<Arc<Presence>>,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "link accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let me = me.clone();
                let (router, presence, cancel) = (router.clone(), presence.clone(), cancel.clone());
                tokio::spawn(
                    async move { me.one_link(stream, peer, router, presence, cancel).await },
                );
            }
        })
    }

    async fn one_link(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        router: Router,
        presence: Option<Arc<Presence>>,
        cancel: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let me = Identity {
            node: self.node.clone(),
            role: Role::Comet,
        };
        let mut buf = Vec::new();
        let handshake = bounded(
            self.settings.handshake_timeout,
            accept_handshake(&mut stream, self.settings.key.clone(), me, &mut buf),
        );
        let established = tokio::select! {
            _ = cancel.cancelled() => return,
            r = handshake => r,
        };
        let Established {
            peer: who,
            sealer,
            opener,
        } = match established {
            Ok(e) => e,
            Err(e) => return auth_failed(&self.metrics, &peer.to_string(), e.reason(), &e),
        };
        let node = who.node;
        let (rd, mut wr) = stream.into_split();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(self.settings.queue);
        tracing::info!(%peer, msgbus = %node, "msgbus link up (authenticated)");
        self.metrics.link_state(&node, true);
        self.links().insert(id, (node.clone(), tx.clone()));
        let stop = cancel.child_token();
        let writer_stop = stop.clone();
        let (wname, metrics) = (node.clone(), self.metrics.clone());
        let writer = tokio::spawn(async move {
            let r = write_frames(&mut wr, &mut rx, sealer, &writer_stop, &wname, &metrics).await;
            writer_stop.cancel();
            r
        });
        let inflight = Arc::new(Semaphore::new(self.settings.max_inflight));
        let me = self.clone();
        let reader = read_frames(rd, buf, opener, |f| match f {
            Frame::Deliver { msg } => {
                // Stored messages reach this comet through its delivery-notice stream (in
                // order); a msgbus of an older version still routing them is ignored.
                me.metrics.link_frame_dropped(&node, "superseded");
                tracing::debug!(msgbus = %node, msg_id = msg.msg_id, "link Deliver ignored: delivery notices carry stored messages");
            }
            Frame::Command { req } => {
                let router = router.clone();
                bounded_command(&inflight, &me.metrics, req, &tx, move |req| async move {
                    commands::run_locally(&router, req).await
                });
            }
            Frame::CommandResult { id, outcome } => {
                me.pending.complete(id, outcome);
            }
            Frame::Replace {
                to,
                terminal,
                generation,
            } => match &presence {
                Some(p) if to == me.node => {
                    p.on_notice(
                        Notice {
                            terminal,
                            generation,
                        },
                        "link",
                    );
                }
                _ => tracing::debug!(%to, %terminal, "replace notice not for this comet: ignored"),
            },
            Frame::Hello { .. } | Frame::Stored { .. } | Frame::Ping => {}
        });
        let r = tokio::select! {
            r = reader => r,
            _ = stop.cancelled() => Ok(()),
        };
        if let Err(ReadError::Sealed(e)) = &r {
            auth_failed(&self.metrics, &peer.to_string(), "bad_frame", e);
        }
        stop.cancel();
        self.links().remove(&id);
        self.metrics.link_state(&node, false);
        self.pending.fail_via(
            &id,
            &CommandOutcome::Unreachable("the msgbus link went down".into()),
        );
        let _ = writer.await;
        tracing::info!(%peer, msgbus = %node, result = ?r, "msgbus link down");
    }
}

#[async_trait]
impl Forward for CometLinks {
    /// Sends the request to one connected msgbus, which forwards it to comet `req.to`.
    async fn forward(&self, mut req: CommandRequest, timeout: Duration) -> CommandOutcome {
        for (link, msgbus, tx) in self.rotation() {
            let (id, rx) = self.pending.register(link);
            req.id = id;
            // Commands are rare: a clone per attempt keeps the request for the next link.
            if tx.try_send(Frame::Command { req: req.clone() }).is_ok() {
                return self.pending.wait(id, rx, timeout).await;
            }
            self.pending.forget(id);
            self.metrics.link_frame_dropped(&msgbus, "queue_full");
        }
        CommandOutcome::Unreachable(format!(
            "no msgbus link can take the command for comet {}",
            req.to
        ))
    }
}

impl ReplaceSink for CometLinks {
    /// Sends the notice to one connected msgbus (round robin), which forwards it to comet `to`.
    /// Without a link or room in any queue it is dropped and counted: the notice also waits in
    /// `to`'s Redis mailbox.
    fn replace(&self, to: &str, notice: Notice) {
        let mut f = Frame::Replace {
            to: to.to_string(),
            terminal: notice.terminal,
            generation: notice.generation,
        };
        for (_, msgbus, tx) in self.rotation() {
            match tx.try_send(f) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(back))
                | Err(mpsc::error::TrySendError::Closed(back)) => {
                    self.metrics.link_frame_dropped(&msgbus, "queue_full");
                    f = back
                }
            }
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics.link_frame_dropped("none", "no_link");
        tracing::debug!(comet = %to, terminal = %notice.terminal, "replace notice left to the mailbox");
    }
}

/// What msgbus does with a `Stored` frame from comet `origin`.
pub type OnStored = Arc<dyn Fn(String, LinkMessage) + Send + Sync>;

/// One comet's link task, as the view last named it.
struct Peer {
    addr: String,
    tx: mpsc::Sender<Frame>,
    cancel: CancellationToken,
    state: Arc<PeerState>,
}

/// Whether one link task's connection is up. Each task owns its own: when a comet leaves the
/// view and comes back, the old task winding down never marks the new task's link down.
struct PeerState {
    /// Names this task's requests in [`LinkManager::pending`].
    id: u64,
    up: AtomicBool,
}

/// The msgbus side: one link per live comet in the discovery view (see module docs).
pub struct LinkManager {
    node: String,
    peers: Mutex<BTreeMap<String, Peer>>,
    next_peer: AtomicU64,
    settings: LinkSettings,
    backoff: (Duration, Duration),
    dropped: AtomicU64,
    pending: Pending<u64>,
    metrics: Metrics,
}

impl LinkManager {
    /// A manager for msgbus `node` with `settings`, reconnecting with `backoff` (min, max),
    /// recording to `metrics` (the link auth failure counters are registered at once).
    pub fn new(
        node: String,
        settings: LinkSettings,
        backoff: (Duration, Duration),
        metrics: Metrics,
    ) -> Arc<LinkManager> {
        metrics.link_auth_registered();
        Arc::new(LinkManager {
            node,
            peers: Mutex::new(BTreeMap::new()),
            next_peer: AtomicU64::new(1),
            settings,
            backoff,
            dropped: AtomicU64::new(0),
            pending: Pending::default(),
            metrics,
        })
    }

    /// The queue and state of comet `comet`'s link when it is up now.
    fn up_link(&self, comet: &str) -> Option<(mpsc::Sender<Frame>, Arc<PeerState>)> {
        self.peers()
            .get(comet)
            .filter(|p| p.state.up.load(Ordering::Acquire))
            .map(|p| (p.tx.clone(), p.state.clone()))
    }

    /// Marks the link of task `state` up or down; the `broker_link_up` gauge (links to
    /// `comet` now) counts each change once.
    fn set_up(&self, comet: &str, state: &PeerState, up: bool) {
        if state.up.swap(up, Ordering::AcqRel) != up {
            self.metrics.link_state(comet, up);
        }
    }

    /// Relays a comet's `Command` (from the link `tx` answers on) to its target comet and the
    /// outcome back, under the link's in-flight bound.
    fn relay_command(
        self: &Arc<Self>,
        inflight: &Arc<Semaphore>,
        tx: &mpsc::Sender<Frame>,
        req: CommandRequest,
    ) {
        let me = self.clone();
        bounded_command(inflight, &self.metrics, req, tx, move |req| async move {
            let timeout = Duration::from_millis(req.timeout_ms).min(MAX_FORWARDED_TIMEOUT);
            me.forward(req, timeout).await
        });
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Comets with a link task (live in the view).
    pub fn comets(&self) -> Vec<String> {
        self.peers().keys().cloned().collect()
    }

    /// Comets whose link is connected now.
    pub fn connected(&self) -> Vec<String> {
        self.peers()
            .iter()
            .filter(|(_, p)| p.state.up.load(Ordering::Acquire))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Frames dropped on full queues.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forwards a comet's `Replace` frame to comet `to` (dropped and counted when there is no
    /// link or no room: the notice also waits in that comet's Redis mailbox).
    fn forward_replace(&self, f: Frame) {
        let Frame::Replace { to, .. } = &f else {
            return;
        };
        let to = to.clone();
        let tx = self.peers().get(&to).map(|p| p.tx.clone());
        let reason = match tx {
            None => "no_link",
            Some(tx) => match tx.try_send(f) {
                Ok(()) => return,
                Err(_) => "queue_full",
            },
        };
        self.metrics.link_frame_dropped(&to, reason);
    }

    /// Queues `msg` for comet `node`; false when unknown or its queue is full.
    pub fn deliver(&self, node: &str, msg: LinkMessage) -> bool {
        let tx = self.peers().get(node).map(|p| p.tx.clone());
        let reason = match tx {
            None => "no_link",
            Some(tx) => match tx.try_send(Frame::Deliver { msg }) {
                Ok(()) => return true,
                Err(_) => "queue_full",
            },
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.metrics.link_frame_dropped(node, reason);
        false
    }

    /// Follows `view`: starts a link task per comet with a link address, stops those that left.
    pub fn follow(
        self: &Arc<Self>,
        mut view: watch::Receiver<NodeView>,
        on_stored: OnStored,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let comets: BTreeMap<String, String> = view
                    .borrow_and_update()
                    .with_role(Role::Comet)
                    .filter_map(|n| n.addr.link.clone().map(|l| (n.id.clone(), l)))
                    .collect();
                me.sync(&comets, &on_stored, &cancel);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = view.changed() => if r.is_err() { break },
                }
            }
            for (_, p) in std::mem::take(&mut *me.peers()) {
                p.cancel.cancel();
            }
        })
    }

    fn sync(
        self: &Arc<Self>,
        comets: &BTreeMap<String, String>,
        on_stored: &OnStored,
        cancel: &CancellationToken,
    ) {
        let mut peers = self.peers();
        peers.retain(|id, p| {
            let keep = comets.get(id) == Some(&p.addr);
            if !keep {
                tracing::info!(comet = %id, "comet left the view: closing its link");
                p.cancel.cancel();
            }
            keep
        });
        for (id, addr) in comets {
            if peers.contains_key(id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(self.settings.queue);
            let c = cancel.child_token();
            let state = Arc::new(PeerState {
                id: self.next_peer.fetch_add(1, Ordering::Relaxed),
                up: AtomicBool::new(false),
            });
            peers.insert(
                id.clone(),
                Peer {
                    addr: addr.clone(),
                    tx: tx.clone(),
                    cancel: c.clone(),
                    state: state.clone(),
                },
            );
            let me = self.clone();
            let (id, addr, on_stored) = (id.clone(), addr.clone(), on_stored.clone());
            let task = PeerTask {
                comet: id,
                addr,
                tx,
                state,
            };
            tokio::spawn(async move { me.run_peer(task, rx, on_stored, c).await });
        }
    }

    async fn run_peer(
        self: Arc<Self>,
        task: PeerTask,
        mut rx: mpsc::Receiver<Frame>,
        on_stored: OnStored,
        cancel: CancellationToken,
    ) {
        let (min, max) = self.backoff;
        let mut delay = min;
        while !cancel.is_cancelled() {
            let conn = tokio::select! {
                _ = cancel.cancelled() => break,
                c = TcpStream::connect(&task.addr) => c,
            };
            match conn {
                Ok(stream) => {
                    // Back off from scratch only after an authenticated link: a comet with
                    // another key is retried at the slow pace.
                    if self
                        .one_link(stream, &task, &mut rx, &on_stored, &cancel)
                        .await
                    {
                        delay = min;
                    }
                }
                Err(e) => {
                    tracing::debug!(comet = %task.comet, addr = %task.addr, error = %e, "link connect failed")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(max);
        }
    }
}

/// What one link task needs to know about its comet.
struct PeerTask {
    comet: String,
    addr: String,
    /// The task's own queue: commands a comet relays through this msgbus answer on it.
    tx: mpsc::Sender<Frame>,
    state: Arc<PeerState>,
}

impl LinkManager {
    /// One connection to comet `comet` at `addr`: handshake, then frames until it fails.
    /// Returns whether the handshake succeeded.
    async fn one_link(
        self: &Arc<Self>,
        mut stream: TcpStream,
        task: &PeerTask,
        rx: &mut mpsc::Receiver<Frame>,
        on_stored: &OnStored,
        cancel: &CancellationToken,
    ) -> bool {
        let (comet, addr) = (task.comet.as_str(), task.addr.as_str());
        let _ = stream.set_nodelay(true);
        let me = Identity {
            node: self.node.clone(),
            role: Role::Msgbus,
        };
        let mut buf = Vec::new();
        let handshake = bounded(
            self.settings.handshake_timeout,
            dial_handshake(&mut stream, self.settings.key.clone(), me, comet, &mut buf),
        );
        let established = tokio::select! {
            _ = cancel.cancelled() => return false,
            r = handshake => r,
        };
        let Established { sealer, opener, .. } = match established {
            Ok(e) => e,
            Err(e) => {
                auth_failed(&self.metrics, addr, e.reason(), &e);
                return false;
            }
        };
        let (rd, mut wr) = stream.into_split();
        self.set_up(comet, &task.state, true);
        tracing::info!(%comet, %addr, "link to comet up (authenticated)");
        let stop = cancel.child_token();
        let tx = &task.tx;
        let inflight = Arc::new(Semaphore::new(self.settings.max_inflight));
        let me = self.clone();
        let reader = read_frames(rd, buf, opener, |f| match f {
            Frame::Stored { msg } => on_stored(comet.to_string(), msg),
            Frame::Command { req } => me.relay_command(&inflight, tx, req),
            Frame::CommandResult { id, outcome } => {
                me.pending.complete(id, outcome);
            }
            Frame::Replace {
                to,
                terminal,
                generation,
            } => me.forward_replace(Frame::Replace {
                to,
                terminal,
                generation,
            }),
            Frame::Hello { .. } | Frame::Deliver { .. } | Frame::Ping => {}
        });
        let r = tokio::select! {
            r = reader => {
                if let Err(ReadError::Sealed(e)) = &r {
                    auth_failed(&self.metrics, addr, "bad_frame", e);
                }
                r.map_err(|e| e.to_string())
            }
            r = write_frames(&mut wr, rx, sealer, &stop, comet, &self.metrics) => r,
        };
        stop.cancel();
        self.set_up(comet, &task.state, false);
        self.pending.fail_via(
            &task.state.id,
            &CommandOutcome::Unreachable(format!("the link to {comet} went down")),
        );
        tracing::info!(%comet, result = ?r, "link to comet down");
        true
    }
}

#[async_trait]
impl Forward for LinkManager {
    /// Sends the request to comet `req.to` over its link (which must be up).
    async fn forward(&self, mut req: CommandRequest, timeout: Duration) -> CommandOutcome {
        let Some((tx, state)) = self.up_link(&req.to) else {
            self.metrics.link_frame_dropped(&req.to, "no_link");
            return CommandOutcome::Unreachable(format!("no link to comet {}", req.to));
        };
        let to = req.to.clone();
        let (id, rx) = self.pending.register(state.id);
        req.id = id;
        if tx.try_send(Frame::Command { req }).is_err() {
            self.pending.forget(id);
            self.metrics.link_frame_dropped(&to, "queue_full");
            return CommandOutcome::Unreachable(format!("the link queue to comet {to} is full"));
        }
        self.pending.wait(id, rx, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::Dest;
    use super::*;
    use crate::config::Config;
    use crate::discovery::{NodeAddr, NodeInfo};
    use crate::router::{Login, Outbound, Session, Transport};
    use crate::store::embedded::{EmbeddedStore, OfflineLimits};
    use crate::terminal::Address;

    const DEVICE: Address = Address::device(9);

    fn has(text: &str, series: &str, v: u64) -> bool {
        text.lines().any(|l| l == format!("{series} {v}"))
    }

    fn auth_failures(text: &str, reason: &str) -> u64 {
        let series = format!(r#"broker_link_auth_failures_total{{reason="{reason}"}} "#);
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.parse().unwrap())
    }

    fn settings(key: u8) -> LinkSettings {
        LinkSettings {
            key: LinkKey::new([key; 32]),
            queue: 8,
            max_inflight: 1,
            handshake_timeout: Duration::from_millis(500),
        }
    }

    fn msg() -> LinkMessage {
        LinkMessage {
            msg_id: 1,
            from: None,
            payload: b"x".to_vec(),
            dest: Dest::List(vec![Address::device(1)]),
        }
    }

    fn command(timeout_ms: u64) -> CommandRequest {
        CommandRequest {
            id: 0,
            to: "comet-a".into(),
            device: DEVICE,
            name: "relay".into(),
            payload: b"on".to_vec(),
            timeout_ms,
        }
    }

    /// A comet "comet-a" with cluster key `key` serving links, and a router with device
    /// [`DEVICE`] logged in (its session is returned).
    struct Comet {
        links: Arc<CometLinks>,
        addr: SocketAddr,
        metrics: Metrics,
        session: Session,
        cancel: CancellationToken,
        serve: JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    async fn comet(key: u8) -> Comet {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(
            dir.path(),
            OfflineLimits {
                max_per_terminal: 10,
                eviction: Default::default(),
            },
        )
        .unwrap();
        let metrics = Metrics::new();
        let router = Router::new(
            Config::default().router_settings(),
            store.stores(),
            metrics.clone(),
        );
        let session = router
            .login(Login {
                address: DEVICE,
                transport: Transport::Udp,
                peer: "127.0.0.1:4000".parse().unwrap(),
                since_id: 0,
                upload_epoch: 1,
            })
            .await
            .unwrap();
        let links = CometLinks::new("comet-a".into(), settings(key), metrics.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let serve = links.serve(listener, router, None, cancel.clone());
        Comet {
            links,
            addr,
            metrics,
            session,
            cancel,
            serve,
            _dir: dir,
        }
    }

    /// A msgbus "msgbus-1" with cluster key `key` following a view that holds `comet`.
    fn msgbus(
        key: u8,
        comet: &Comet,
    ) -> (
        Arc<LinkManager>,
        Metrics,
        watch::Sender<NodeView>,
        JoinHandle<()>,
    ) {
        let m = Metrics::new();
        let bus = LinkManager::new(
            "msgbus-1".into(),
            settings(key),
            (Duration::from_millis(10), Duration::from_millis(50)),
            m.clone(),
        );
        let (view_tx, view_rx) = watch::channel(NodeView {
            nodes: vec![NodeInfo {
                id: "comet-a".into(),
                role: Role::Comet,
                addr: NodeAddr {
                    link: Some(comet.addr.to_string()),
                    ..NodeAddr::default()
                },
                load: 0,
            }],
            healthy: true,
        });
        let follow = bus.follow(view_rx, Arc::new(|_, _| {}), comet.cancel.clone());
        (bus, m, view_tx, follow)
    }

    /// The next event of `s` within `wait`, if any.
    async fn next_event(s: &mut Session, wait: Duration) -> Option<Outbound> {
        tokio::time::timeout(wait, s.next()).await.ok().flatten()
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let t = std::time::Instant::now();
        while !cond() {
            assert!(t.elapsed() < Duration::from_secs(5), "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn without_links_frames_are_dropped_counted_and_commands_unreachable() {
        let m = Metrics::new();
        let bus = LinkManager::new(
            "msgbus-1".into(),
            settings(1),
            (Duration::from_millis(10), Duration::from_millis(10)),
            m.clone(),
        );
        assert!(!bus.deliver("comet-x", msg()));
        let req = CommandRequest {
            to: "comet-x".into(),
            ..command(1000)
        };
        let o = bus.forward(req.clone(), Duration::from_secs(1)).await;
        assert!(matches!(o, CommandOutcome::Unreachable(_)), "{o:?}");
        let comet = CometLinks::new("comet-a".into(), settings(1), m.clone());
        comet.replace(
            "comet-b",
            Notice {
                terminal: Address::device(1),
                generation: 2,
            },
        );
        let o = comet.forward(req, Duration::from_secs(1)).await;
        assert!(matches!(o, CommandOutcome::Unreachable(_)), "{o:?}");
        let text = m.render();
        assert!(
            has(
                &text,
                r#"broker_link_frames_dropped_total{peer="comet-x",reason="no_link"}"#,
                2
            ),
            "{text}"
        );
        assert!(
            has(
                &text,
                r#"broker_link_frames_dropped_total{peer="none",reason="no_link"}"#,
                1
            ),
            "{text}"
        );
        assert_eq!((bus.dropped(), comet.dropped()), (1, 1));
        // Every auth failure reason exists at 0 before anything happened.
        for reason in crate::metrics::LINK_AUTH_REASONS {
            let series = format!(r#"broker_link_auth_failures_total{{reason="{reason}"}}"#);
            assert!(has(&text, &series, 0), "{series}: {text}");
        }
    }

    #[tokio::test]
    async fn an_authenticated_loopback_link_carries_commands_both_ways_and_counts_frames() {
        let mut c = comet(7).await;
        let (bus, bm, view_tx, follow) = msgbus(7, &c);
        until("link up", || {
            !bus.connected().is_empty() && !c.links.connected().is_empty()
        })
        .await;
        // msgbus -> comet: the comet runs it on its router; the device sees the command.
        let b = bus.clone();
        let fwd =
            tokio::spawn(async move { b.forward(command(300), Duration::from_secs(2)).await });
        match next_event(&mut c.session, Duration::from_secs(2)).await {
            Some(Outbound::Command { name, payload, .. }) => {
                assert_eq!((name.as_str(), &payload[..]), ("relay", &b"on"[..]));
            }
            other => panic!("the device got no command: {other:?}"),
        }
        assert_eq!(fwd.await.unwrap(), CommandOutcome::Timeout);
        // comet -> msgbus -> comet (the same one here): relayed both ways.
        let req = CommandRequest {
            device: Address::device(77),
            ..command(1000)
        };
        let o = c.links.forward(req, Duration::from_secs(2)).await;
        assert_eq!(o, CommandOutcome::NotOnline);
        let (bt, ct) = (bm.render(), c.metrics.render());
        assert!(has(&bt, r#"broker_link_up{peer="comet-a"}"#, 1), "{bt}");
        assert!(has(&ct, r#"broker_link_up{peer="msgbus-1"}"#, 1), "{ct}");
        assert!(
            has(
                &bt,
                r#"broker_link_frames_sent_total{peer="comet-a",frame="command"}"#,
                2
            ),
            "{bt}"
        );
        assert!(
            has(
                &ct,
                r#"broker_link_frames_sent_total{peer="msgbus-1",frame="command_result"}"#,
                2
            ),
            "{ct}"
        );
        for reason in crate::metrics::LINK_AUTH_REASONS {
            assert_eq!(auth_failures(&bt, reason) + auth_failures(&ct, reason), 0);
        }
        // The comet leaves the view: the link goes down on both sides.
        view_tx.send_replace(NodeView {
            nodes: vec![],
            healthy: true,
        });
        until("link down", || c.links.connected().is_empty()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ct = c.metrics.render();
        assert!(has(&ct, r#"broker_link_up{peer="msgbus-1"}"#, 0), "{ct}");
        c.cancel.cancel();
        let _ = c.serve.await;
        let _ = follow.await;
    }

    #[tokio::test]
    async fn a_comet_back_in_the_view_keeps_its_new_link_when_the_old_one_winds_down_late() {
        let mut c = comet(7).await;
        let (bus, bm, _view_tx, follow) = msgbus(7, &c);
        until("link up", || !bus.connected().is_empty()).await;
        let old = bus.peers()["comet-a"].state.clone();
        // The comet leaves the view and comes back before the old task has wound down.
        let on_stored: OnStored = Arc::new(|_, _| {});
        bus.sync(&BTreeMap::new(), &on_stored, &c.cancel);
        let back = BTreeMap::from([("comet-a".to_string(), c.addr.to_string())]);
        bus.sync(&back, &on_stored, &c.cancel);
        until("the new link up", || {
            bus.up_link("comet-a")
                .is_some_and(|(_, state)| state.id != old.id)
        })
        .await;
        // The old task marks its own link down last.
        bus.set_up("comet-a", &old, false);
        assert_eq!(bus.connected(), vec!["comet-a".to_string()]);
        let bt = bm.render();
        assert!(has(&bt, r#"broker_link_up{peer="comet-a"}"#, 1), "{bt}");
        let b = bus.clone();
        let fwd =
            tokio::spawn(async move { b.forward(command(300), Duration::from_secs(2)).await });
        match next_event(&mut c.session, Duration::from_secs(2)).await {
            Some(Outbound::Command { name, .. }) => assert_eq!(name, "relay"),
            other => panic!("the device got no command over the new link: {other:?}"),
        }
        assert_eq!(fwd.await.unwrap(), CommandOutcome::Timeout);
        c.cancel.cancel();
        let _ = c.serve.await;
        let _ = follow.await;
    }

    #[tokio::test]
    async fn an_unauthenticated_old_style_command_is_not_acted_on_and_is_counted() {
        let mut c = comet(7).await;
        let mut s = TcpStream::connect(c.addr).await.unwrap();
        let old = frame::encode(&Frame::Command { req: command(1000) }).unwrap();
        s.write_all(&old).await.unwrap();
        // The comet closes the connection without a byte in answer.
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got))
            .await
            .expect("the comet closes the connection");
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(
            next_event(&mut c.session, Duration::from_millis(300)).await,
            None
        );
        until("counted", || {
            auth_failures(&c.metrics.render(), "malformed") == 1
        })
        .await;
        assert!(c.links.connected().is_empty());
        // A connection that says nothing is closed at the handshake deadline.
        let mut quiet = TcpStream::connect(c.addr).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), quiet.read_to_end(&mut got))
            .await
            .expect("closed at the deadline");
        until("timeout counted", || {
            auth_failures(&c.metrics.render(), "timeout") == 1
        })
        .await;
        c.cancel.cancel();
    }

    #[tokio::test]
    async fn a_link_with_the_wrong_cluster_key_is_refused_on_both_sides() {
        let mut c = comet(7).await;
        let (bus, bm, _view, _follow) = msgbus(8, &c);
        until("refused and counted", || {
            auth_failures(&bm.render(), "bad_proof") >= 1
                && auth_failures(&c.metrics.render(), "closed") >= 1
        })
        .await;
        assert!(bus.connected().is_empty() && c.links.connected().is_empty());
        let o = bus.forward(command(300), Duration::from_millis(300)).await;
        assert!(matches!(o, CommandOutcome::Unreachable(_)), "{o:?}");
        assert_eq!(
            next_event(&mut c.session, Duration::from_millis(200)).await,
            None
        );
        c.cancel.cancel();
    }

    #[tokio::test]
    async fn commands_above_the_inflight_bound_are_answered_overloaded_and_counted() {
        let mut c = comet(7).await;
        let (bus, _bm, _view, _follow) = msgbus(7, &c);
        until("link up", || !c.links.connected().is_empty()).await;
        // The device never answers: the first command holds the only permit.
        let b = bus.clone();
        let first =
            tokio::spawn(async move { b.forward(command(1000), Duration::from_secs(2)).await });
        assert!(matches!(
            next_event(&mut c.session, Duration::from_secs(2)).await,
            Some(Outbound::Command { .. })
        ));
        let o = bus.forward(command(1000), Duration::from_secs(2)).await;
        assert_eq!(o, CommandOutcome::Overloaded);
        let ct = c.metrics.render();
        assert!(
            has(
                &ct,
                r#"broker_limit_rejections_total{limit="max_inflight_commands"}"#,
                1
            ),
            "{ct}"
        );
        assert_eq!(first.await.unwrap(), CommandOutcome::Timeout);
        // The permit is back: the next command reaches the device again.
        let b = bus.clone();
        let third =
            tokio::spawn(async move { b.forward(command(200), Duration::from_secs(2)).await });
        assert!(matches!(
            next_event(&mut c.session, Duration::from_secs(2)).await,
            Some(Outbound::Command { .. })
        ));
        let _ = third.await;
        c.cancel.cancel();
    }
}
