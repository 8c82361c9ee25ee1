//! Node-to-node links: framed TCP ([`super::frame`]) between msgbus and comet nodes.
//!
//! msgbus dials every live comet it sees in discovery ([`LinkManager`], one task per comet with
//! a bounded queue that survives reconnects, exponential backoff); comets listen
//! ([`CometLinks`]). Both sides open with `Hello`. Over a link:
//! * comet -> msgbus `Stored`: a send stored on the comet, for the other comets;
//! * msgbus -> comet `Deliver`: a stored message for the comet's local sessions.
//!
//! Queues are bounded: when one is full the frame is dropped and counted. Nothing is lost by
//! that: every message is in the shared offline store and replayed at the next login.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Dest, Frame, LinkMessage};
use super::hooks::StoredSink;
use crate::discovery::{NodeView, Role};
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

/// Writes queued frames (and pings when idle) until the queue closes or a write fails.
async fn write_frames(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Frame>,
    stop: &CancellationToken,
) -> Result<(), String> {
    loop {
        let f = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            f = rx.recv() => match f { Some(f) => f, None => return Ok(()) },
            _ = tokio::time::sleep(PING_EVERY) => Frame::Ping,
        };
        let bytes = frame::encode(&f).map_err(|e| e.to_string())?;
        wr.write_all(&bytes).await.map_err(|e| e.to_string())?;
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

/// The comet side: accepts msgbus links, delivers their `Deliver` frames locally, and sends
/// `Stored` frames to one connected msgbus (round robin).
pub struct CometLinks {
    node: String,
    links: Mutex<BTreeMap<u64, (String, mpsc::Sender<Frame>)>>,
    next: AtomicU64,
    rr: AtomicUsize,
    queue: usize,
    dropped: AtomicU64,
}

impl CometLinks {
    /// Links of comet `node`, `queue` frames per link.
    pub fn new(node: String, queue: usize) -> Arc<CometLinks> {
        Arc::new(CometLinks {
            node,
            links: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            rr: AtomicUsize::new(0),
            queue,
            dropped: AtomicU64::new(0),
        })
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
        let writer = tokio::spawn(async move {
            let r = write_frames(&mut wr, &mut rx, &writer_stop).await;
            writer_stop.cancel();
            r
        });
        let me = self.clone();
        let reader = read_frames(rd, |f| match f {
            Frame::Hello { node, role } => {
                tracing::info!(%peer, msgbus = %node, ?role, "msgbus link up");
                me.links().insert(id, (node, tx.clone()));
            }
            Frame::Deliver { msg } => {
                deliver_local(&router, msg);
            }
            Frame::Stored { .. } | Frame::Ping => {}
        });
        let r = tokio::select! {
            r = reader => r,
            _ = stop.cancelled() => Ok(()),
        };
        stop.cancel();
        self.links().remove(&id);
        let _ = writer.await;
        tracing::info!(%peer, result = ?r, "msgbus link down");
    }
}

impl StoredSink for CometLinks {
    fn stored(&self, msg: LinkMessage) {
        let links: Vec<mpsc::Sender<Frame>> =
            self.links().values().map(|(_, t)| t.clone()).collect();
        if links.is_empty() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                msg_id = msg.msg_id,
                "no msgbus link: other nodes get this message at their next replay"
            );
            return;
        }
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        let mut f = Frame::Stored { msg };
        for i in 0..links.len() {
            match links[(start + i) % links.len()].try_send(f) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(back))
                | Err(mpsc::error::TrySendError::Closed(back)) => f = back,
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
}

impl LinkManager {
    /// A manager for msgbus `node`.
    pub fn new(node: String, queue: usize, backoff: (Duration, Duration)) -> Arc<LinkManager> {
        Arc::new(LinkManager {
            node,
            peers: Mutex::new(BTreeMap::new()),
            up: Mutex::new(BTreeMap::new()),
            queue,
            backoff,
            dropped: AtomicU64::new(0),
        })
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
        let ok = tx.is_some_and(|tx| tx.try_send(Frame::Deliver { msg }).is_ok());
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
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
                        tracing::info!(%comet, %addr, "link to comet up");
                        let stop = cancel.child_token();
                        let origin = comet.clone();
                        let on = on_stored.clone();
                        let reader = read_frames(rd, move |f| {
                            if let Frame::Stored { msg } = f {
                                on(origin.clone(), msg);
                            }
                        });
                        let r = tokio::select! {
                            r = reader => r,
                            r = write_frames(&mut wr, &mut rx, &stop) => r,
                        };
                        stop.cancel();
                        self.up().insert(comet.clone(), false);
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
