//! Node-to-node links: framed TCP ([`super::frame`]) between msgbus and comet nodes.
//!
//! msgbus dials every live comet it sees in discovery ([`LinkManager`], one task per comet with
//! a bounded queue that survives reconnects, exponential backoff); comets listen
//! ([`CometLinks`]). Both sides open with `Hello`. Over a link:
//! * comet -> msgbus `Stored`: a send stored on the comet, for the other comets;
//! * msgbus -> comet `Deliver`: a stored message for the comet's local sessions;
//! * `Command` / `CommandResult` ([`super::commands`]): an HTTP command for a device on another
//!   comet. A comet sends it to one msgbus, which forwards it to the target comet and relays
//!   the result back; a msgbus's own API sends it to the target comet directly. A comet runs
//!   every `Command` it receives on its router and answers on the same link.
//!
//! Queues are bounded: when one is full the frame is dropped and counted. Nothing is lost by
//! that: every message is in the shared offline store and replayed at the next login (a dropped
//! command fails to its HTTP caller). Metrics per peer node: link up/down, frames sent, frames
//! dropped ([`crate::metrics`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::commands::{self, Forward, MAX_FORWARDED_TIMEOUT, Pending};
use super::frame::{self, CommandOutcome, CommandRequest, Dest, Frame, LinkMessage};
use super::hooks::StoredSink;
use crate::discovery::{NodeView, Role};
use crate::metrics::Metrics;
use crate::router::Router;

/// Keepalive period on an idle link.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Reads frames from `rd`, calling `on_frame` for each; returns on EOF or error.
async fn read_frames(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut on_frame: impl FnMut(Frame),
) -> Result<(), String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        while let Some((f, used)) = frame::decode(&buf).map_err(|e| e.to_string())? {
            buf.drain(..used);
            on_frame(f);
        }
        let n = rd.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes queued frames (and pings when idle) until the queue closes or a write fails; counts
/// each frame written for `peer` (the other node's id once known).
async fn write_frames(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Frame>,
    stop: &CancellationToken,
    peer: &OnceLock<String>,
    metrics: &Metrics,
) -> Result<(), String> {
    loop {
        let f = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            f = rx.recv() => match f { Some(f) => f, None => return Ok(()) },
            _ = tokio::time::sleep(PING_EVERY) => Frame::Ping,
        };
        let bytes = frame::encode(&f).map_err(|e| e.to_string())?;
        wr.write_all(&bytes).await.map_err(|e| e.to_string())?;
        metrics.link_frame_sent(peer.get().map_or("unknown", String::as_str), f.name());
    }
}

async fn send_hello(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    node: &str,
    role: Role,
) -> Result<(), String> {
    let hello = frame::encode(&Frame::Hello {
        node: node.to_string(),
        role,
    })
    .map_err(|e| e.to_string())?;
    wr.write_all(&hello).await.map_err(|e| e.to_string())
}

/// Delivers a `Deliver` frame's message to the local router's sessions.
fn deliver_local(router: &Router, msg: LinkMessage) -> u64 {
    let payload = Bytes::from(msg.payload);
    match msg.dest {
        Dest::List(list) => router.deliver_local(&list, None, msg.msg_id, msg.from, payload),
        Dest::Kind(k) => router.deliver_local(&[], Some(k), msg.msg_id, msg.from, payload),
    }
}

/// The comet side: accepts msgbus links, delivers their `Deliver` frames locally, runs their
/// `Command` frames, and sends `Stored` and `Command` frames to one connected msgbus (round
/// robin).
pub struct CometLinks {
    node: String,
    links: Mutex<BTreeMap<u64, (String, mpsc::Sender<Frame>)>>,
    next: AtomicU64,
    rr: AtomicUsize,
    queue: usize,
    dropped: AtomicU64,
    pending: Pending<u64>,
    metrics: Metrics,
}

impl CometLinks {
    /// Links of comet `node`, `queue` frames per link, recording to `metrics`.
    pub fn new(node: String, queue: usize, metrics: Metrics) -> Arc<CometLinks> {
        Arc::new(CometLinks {
            node,
            links: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            rr: AtomicUsize::new(0),
            queue,
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

    /// Accepts links on `listener` until `cancel`.
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        router: Router,
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
                let (router, cancel) = (router.clone(), cancel.clone());
                tokio::spawn(async move { me.one_link(stream, peer, router, cancel).await });
            }
        })
    }

    async fn one_link(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        router: Router,
        cancel: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        if let Err(e) = send_hello(&mut wr, &self.node, Role::Comet).await {
            tracing::debug!(%peer, error = %e, "link hello failed");
            return;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(self.queue);
        let stop = cancel.child_token();
        let writer_stop = stop.clone();
        let name = Arc::new(OnceLock::<String>::new());
        let (wname, metrics) = (name.clone(), self.metrics.clone());
        let writer = tokio::spawn(async move {
            let r = write_frames(&mut wr, &mut rx, &writer_stop, &wname, &metrics).await;
            writer_stop.cancel();
            r
        });
        let me = self.clone();
        let reader = read_frames(rd, |f| match f {
            Frame::Hello { node, role } => {
                if name.set(node.clone()).is_ok() {
                    tracing::info!(%peer, msgbus = %node, ?role, "msgbus link up");
                    me.metrics.link_state(&node, true);
                    me.links().insert(id, (node, tx.clone()));
                }
            }
            Frame::Deliver { msg } => {
                deliver_local(&router, msg);
            }
            Frame::Command { req } => {
                let (router, tx) = (router.clone(), tx.clone());
                tokio::spawn(async move {
                    let id = req.id;
                    let outcome = commands::run_locally(&router, req).await;
                    // The link may be gone meanwhile: the requester then fails by itself.
                    let _ = tx.send(Frame::CommandResult { id, outcome }).await;
                });
            }
            Frame::CommandResult { id, outcome } => {
                me.pending.complete(id, outcome);
            }
            Frame::Stored { .. } | Frame::Ping => {}
        });
        let r = tokio::select! {
            r = reader => r,
            _ = stop.cancelled() => Ok(()),
        };
        stop.cancel();
        self.links().remove(&id);
        if let Some(n) = name.get() {
            self.metrics.link_state(n, false);
        }
        self.pending.fail_via(
            &id,
            &CommandOutcome::Unreachable("the msgbus link went down".into()),
        );
        let _ = writer.await;
        tracing::info!(%peer, result = ?r, "msgbus link down");
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

impl StoredSink for CometLinks {
    fn stored(&self, msg: LinkMessage) {
        let links = self.rotation();
        if links.is_empty() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.link_frame_dropped("none", "no_link");
            tracing::warn!(
                msg_id = msg.msg_id,
                "no msgbus link: other nodes get this message at their next replay"
            );
            return;
        }
        let mut f = Frame::Stored { msg };
        for (_, msgbus, tx) in links {
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
        tracing::warn!("every msgbus link queue is full: message left to replay");
    }
}

/// What msgbus does with a `Stored` frame from comet `origin`.
pub type OnStored = Arc<dyn Fn(String, LinkMessage) + Send + Sync>;

struct Peer {
    addr: String,
    tx: mpsc::Sender<Frame>,
    cancel: CancellationToken,
}

/// The msgbus side: one link per live comet in the discovery view (see module docs).
pub struct LinkManager {
    node: String,
    peers: Mutex<BTreeMap<String, Peer>>,
    up: Mutex<BTreeMap<String, bool>>,
    queue: usize,
    backoff: (Duration, Duration),
    dropped: AtomicU64,
    pending: Pending<String>,
    metrics: Metrics,
}

impl LinkManager {
    /// A manager for msgbus `node`, recording to `metrics`.
    pub fn new(
        node: String,
        queue: usize,
        backoff: (Duration, Duration),
        metrics: Metrics,
    ) -> Arc<LinkManager> {
        Arc::new(LinkManager {
            node,
            peers: Mutex::new(BTreeMap::new()),
            up: Mutex::new(BTreeMap::new()),
            queue,
            backoff,
            dropped: AtomicU64::new(0),
            pending: Pending::default(),
            metrics,
        })
    }

    fn is_up(&self, comet: &str) -> bool {
        self.up().get(comet).copied().unwrap_or(false)
    }

    /// Relays a comet's `Command` to its target comet and the outcome back to `origin`.
    fn relay_command(self: &Arc<Self>, origin: String, req: CommandRequest) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = req.id;
            let timeout = Duration::from_millis(req.timeout_ms).min(MAX_FORWARDED_TIMEOUT);
            let outcome = me.forward(req, timeout).await;
            let tx = me.peers().get(&origin).map(|p| p.tx.clone());
            let sent = match tx {
                Some(tx) => tx.send(Frame::CommandResult { id, outcome }).await.is_ok(),
                None => false,
            };
            if !sent {
                me.metrics.link_frame_dropped(&origin, "no_link");
            }
        });
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn up(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.up.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Comets with a link task (live in the view).
    pub fn comets(&self) -> Vec<String> {
        self.peers().keys().cloned().collect()
    }

    /// Comets whose link is connected now.
    pub fn connected(&self) -> Vec<String> {
        self.up()
            .iter()
            .filter(|(_, up)| **up)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Frames dropped on full queues.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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
            let (tx, rx) = mpsc::channel(self.queue);
            let c = cancel.child_token();
            peers.insert(
                id.clone(),
                Peer {
                    addr: addr.clone(),
                    tx,
                    cancel: c.clone(),
                },
            );
            let me = self.clone();
            let (id, addr, on_stored) = (id.clone(), addr.clone(), on_stored.clone());
            tokio::spawn(async move { me.run_peer(id, addr, rx, on_stored, c).await });
        }
    }

    async fn run_peer(
        self: Arc<Self>,
        comet: String,
        addr: String,
        mut rx: mpsc::Receiver<Frame>,
        on_stored: OnStored,
        cancel: CancellationToken,
    ) {
        let (min, max) = self.backoff;
        let mut delay = min;
        while !cancel.is_cancelled() {
            let conn = tokio::select! {
                _ = cancel.cancelled() => break,
                c = TcpStream::connect(&addr) => c,
            };
            match conn {
                Ok(stream) => {
                    delay = min;
                    let _ = stream.set_nodelay(true);
                    let (rd, mut wr) = stream.into_split();
                    if send_hello(&mut wr, &self.node, Role::Msgbus).await.is_ok() {
                        self.up().insert(comet.clone(), true);
                        self.metrics.link_state(&comet, true);
                        tracing::info!(%comet, %addr, "link to comet up");
                        let stop = cancel.child_token();
                        let origin = comet.clone();
                        let on = on_stored.clone();
                        let me = self.clone();
                        let reader = read_frames(rd, move |f| match f {
                            Frame::Stored { msg } => on(origin.clone(), msg),
                            Frame::Command { req } => me.relay_command(origin.clone(), req),
                            Frame::CommandResult { id, outcome } => {
                                me.pending.complete(id, outcome);
                            }
                            Frame::Hello { .. } | Frame::Deliver { .. } | Frame::Ping => {}
                        });
                        let name = OnceLock::from(comet.clone());
                        let r = tokio::select! {
                            r = reader => r,
                            r = write_frames(&mut wr, &mut rx, &stop, &name, &self.metrics) => r,
                        };
                        stop.cancel();
                        self.up().insert(comet.clone(), false);
                        self.metrics.link_state(&comet, false);
                        self.pending.fail_via(
                            &comet,
                            &CommandOutcome::Unreachable(format!("the link to {comet} went down")),
                        );
                        tracing::info!(%comet, result = ?r, "link to comet down");
                    }
                }
                Err(e) => tracing::debug!(%comet, %addr, error = %e, "link connect failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(max);
        }
        self.up().remove(&comet);
    }
}

#[async_trait]
impl Forward for LinkManager {
    /// Sends the request to comet `req.to` over its link (which must be up).
    async fn forward(&self, mut req: CommandRequest, timeout: Duration) -> CommandOutcome {
        let tx = self.peers().get(&req.to).map(|p| p.tx.clone());
        let Some(tx) = tx.filter(|_| self.is_up(&req.to)) else {
            self.metrics.link_frame_dropped(&req.to, "no_link");
            return CommandOutcome::Unreachable(format!("no link to comet {}", req.to));
        };
        let to = req.to.clone();
        let (id, rx) = self.pending.register(to.clone());
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
    use super::*;
    use crate::config::Config;
    use crate::discovery::{NodeAddr, NodeInfo};
    use crate::router::RouterSettings;
    use crate::store::embedded::{EmbeddedStore, OfflineLimits};
    use crate::terminal::Address;

    fn has(text: &str, series: &str, v: u64) -> bool {
        text.lines().any(|l| l == format!("{series} {v}"))
    }

    fn msg() -> LinkMessage {
        LinkMessage {
            msg_id: 1,
            from: None,
            payload: b"x".to_vec(),
            dest: Dest::List(vec![Address::device(1)]),
        }
    }

    #[tokio::test]
    async fn without_links_frames_are_dropped_counted_and_commands_unreachable() {
        let m = Metrics::new();
        let bus = LinkManager::new(
            "msgbus-1".into(),
            4,
            (Duration::from_millis(10), Duration::from_millis(10)),
            m.clone(),
        );
        assert!(!bus.deliver("comet-x", msg()));
        let req = CommandRequest {
            id: 0,
            to: "comet-x".into(),
            device: Address::device(1),
            name: "relay".into(),
            payload: vec![],
            timeout_ms: 1000,
        };
        let o = bus.forward(req.clone(), Duration::from_secs(1)).await;
        assert!(matches!(o, CommandOutcome::Unreachable(_)), "{o:?}");
        let comet = CometLinks::new("comet-a".into(), 4, m.clone());
        comet.stored(msg());
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
    }

    #[tokio::test]
    async fn a_loopback_link_carries_commands_both_ways_and_counts_up_down_and_frames() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(
            dir.path(),
            OfflineLimits {
                max_per_terminal: 10,
                eviction: Default::default(),
            },
        )
        .unwrap();
        let (cm, bm) = (Metrics::new(), Metrics::new());
        let router = Router::new(
            RouterSettings::from_config(&Config::default()),
            store.stores(),
            cm.clone(),
        );
        let comet = CometLinks::new("comet-a".into(), 8, cm.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let serve = comet.serve(listener, router, cancel.clone());
        let bus = LinkManager::new(
            "msgbus-1".into(),
            8,
            (Duration::from_millis(10), Duration::from_millis(50)),
            bm.clone(),
        );
        let (view_tx, view_rx) = watch::channel(NodeView {
            nodes: vec![NodeInfo {
                id: "comet-a".into(),
                role: Role::Comet,
                addr: NodeAddr {
                    link: Some(addr.to_string()),
                    ..NodeAddr::default()
                },
                load: 0,
            }],
            healthy: true,
        });
        let follow = bus.follow(view_rx, Arc::new(|_, _| {}), cancel.clone());
        let t = std::time::Instant::now();
        while bus.connected().is_empty() || comet.connected().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(5), "link never came up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // msgbus -> comet: the comet runs it (the device has no session there) and answers.
        let req = CommandRequest {
            id: 0,
            to: "comet-a".into(),
            device: Address::device(9),
            name: "relay".into(),
            payload: b"on".to_vec(),
            timeout_ms: 1000,
        };
        let o = bus.forward(req.clone(), Duration::from_secs(2)).await;
        assert_eq!(o, CommandOutcome::NotOnline);
        // comet -> msgbus -> comet (the same one here): relayed both ways.
        let o = comet.forward(req, Duration::from_secs(2)).await;
        assert_eq!(o, CommandOutcome::NotOnline);
        let (bt, ct) = (bm.render(), cm.render());
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
                &bt,
                r#"broker_link_frames_sent_total{peer="comet-a",frame="command_result"}"#,
                1
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
        // The comet leaves the view: the link goes down on both sides.
        view_tx.send_replace(NodeView {
            nodes: vec![],
            healthy: true,
        });
        let t = std::time::Instant::now();
        while !comet.connected().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(5), "link never went down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (bt, ct) = (bm.render(), cm.render());
        assert!(has(&bt, r#"broker_link_up{peer="comet-a"}"#, 0), "{bt}");
        assert!(has(&ct, r#"broker_link_up{peer="msgbus-1"}"#, 0), "{ct}");
        assert!(
            has(
                &ct,
                r#"broker_link_transitions_total{peer="msgbus-1",state="down"}"#,
                1
            ),
            "{ct}"
        );
        cancel.cancel();
        let _ = serve.await;
        let _ = follow.await;
    }
}
