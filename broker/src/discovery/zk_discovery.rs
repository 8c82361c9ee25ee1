//! [`ZkDiscovery`]: this node as an ephemeral znode `<root>/<role>/<id>` holding its
//! [`NodeInfo`] JSON, and a live view of every node under `<root>`.
//!
//! One background task owns the ZooKeeper client. Per session it: creates the role directories,
//! sets a persistent recursive watch on `<root>` (before listing, so nothing is missed), registers
//! this node, lists everything into the [`ViewState`], then applies watch events one by one and
//! writes this node's load every `load_update`. On `Disconnected` the view is kept and flagged
//! stale (log line + `broker_discovery_healthy 0`); on reconnection it is re-listed (events during
//! a disconnection can be lost). When the session dies (expired or closed) the task drops the
//! client, builds a new session and registers again. When ZooKeeper cannot be reached at all it
//! retries with backoff and keeps serving the last view. Shutdown deletes the znode and closes the
//! session so other nodes see this one go at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zookeeper_client::{AddWatchMode, Client, Error as ZkError, EventType, SessionState};

use super::metrics::DiscoveryMetrics;
use super::view::ViewState;
use super::zk::{self, Backoff, ZkSettings};
use super::{Discovery, DiscoveryError, NodeInfo, NodeView, Role, valid_node_id, validate_root};

/// How to run a [`ZkDiscovery`].
#[derive(Clone)]
pub struct ZkOptions {
    /// ZooKeeper connect string and session timeout.
    pub zk: ZkSettings,
    /// Znode root (e.g. `/broker`).
    pub root: String,
    /// This node, registered under `<root>/<role>/<id>`; `None` only watches.
    pub me: Option<NodeInfo>,
    /// How often this node's load is written.
    pub load_update: Duration,
    /// Where metrics go.
    pub metrics: DiscoveryMetrics,
}

impl ZkOptions {
    /// Options from the `[discovery]` section.
    pub fn from_config(
        cfg: &super::DiscoveryConfig,
        me: Option<NodeInfo>,
        metrics: DiscoveryMetrics,
    ) -> ZkOptions {
        ZkOptions {
            zk: cfg.zk_settings(),
            root: cfg.root.clone(),
            me,
            load_update: cfg.load_update(),
            metrics,
        }
    }
}

/// The registration side of a running [`ZkDiscovery`] (for logs, health endpoints and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZkStatus {
    /// The current session id, while one is established.
    pub session: Option<i64>,
    /// Whether this node's znode exists in the current session.
    pub registered: bool,
    /// Sessions established so far (1 + re-creations after expiry).
    pub sessions: u64,
}

/// ZooKeeper-backed [`Discovery`] (see module docs).
pub struct ZkDiscovery {
    view: watch::Receiver<NodeView>,
    status: watch::Receiver<ZkStatus>,
    load: watch::Sender<u32>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ZkDiscovery {
    /// Validates the options and starts the background task (on the current tokio runtime).
    /// Returns at once: the view is empty and not healthy until the first listing.
    pub fn start(opts: ZkOptions) -> Result<ZkDiscovery, DiscoveryError> {
        validate_root(&opts.root)?;
        if let Some(me) = &opts.me
            && !valid_node_id(&me.id)
        {
            return Err(DiscoveryError::InvalidNodeId(me.id.clone()));
        }
        let (view_tx, view) = watch::channel(NodeView::default());
        let (status_tx, status) = watch::channel(ZkStatus::default());
        let (load, load_rx) = watch::channel(opts.me.as_ref().map_or(0, |m| m.load));
        let cancel = CancellationToken::new();
        let worker = Worker {
            state: ViewState::new(&opts.root),
            opts,
            view_tx,
            status_tx,
            load_rx,
            written_load: None,
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(worker.run());
        Ok(ZkDiscovery {
            view,
            status,
            load,
            cancel,
            task: Mutex::new(Some(task)),
        })
    }

    /// The registration status (session id, registered, sessions established).
    pub fn status(&self) -> watch::Receiver<ZkStatus> {
        self.status.clone()
    }
}

#[async_trait::async_trait]
impl Discovery for ZkDiscovery {
    fn view(&self) -> watch::Receiver<NodeView> {
        self.view.clone()
    }

    fn set_load(&self, load: u32) {
        self.load.send_replace(load);
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for ZkDiscovery {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One unit of work in a session.
enum Step {
    State(SessionState),
    Event(zookeeper_client::WatchedEvent),
    Tick,
}

/// How one session ended.
enum SessionEnd {
    Cancelled,
    Lost(SessionState),
    Failed(ZkError),
}

struct Worker {
    opts: ZkOptions,
    state: ViewState,
    view_tx: watch::Sender<NodeView>,
    status_tx: watch::Sender<ZkStatus>,
    load_rx: watch::Receiver<u32>,
    /// The load last written to this node's znode in the current session.
    written_load: Option<u32>,
    cancel: CancellationToken,
}

fn own_path(root: &str, me: &NodeInfo) -> String {
    format!("{root}/{}/{}", me.role.as_str(), me.id)
}

impl Worker {
    fn publish(&self) {
        let snap = self.state.snapshot();
        self.opts.metrics.view(&snap);
        self.view_tx.send_if_modified(|v| {
            if *v == snap {
                false
            } else {
                *v = snap;
                true
            }
        });
    }

    fn go_stale(&mut self, why: &str) {
        if self.state.set_healthy(false) {
            warn!(
                root = %self.opts.root,
                nodes = self.state.snapshot().nodes.len(),
                "discovery: ZooKeeper {why}; serving the last known view (stale)"
            );
        }
        self.publish();
    }

    async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut failures = 0u32;
        loop {
            let connected = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = zk::connect(&self.opts.zk) => r,
            };
            let client = match connected {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        warn!(servers = %self.opts.zk.servers, error = %e, "discovery: cannot reach ZooKeeper; retrying");
                    } else {
                        debug!(servers = %self.opts.zk.servers, error = %e, failures, "discovery: ZooKeeper still unreachable");
                    }
                    self.go_stale("unreachable");
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            failures = 0;
            backoff.reset();
            self.opts.metrics.session_started();
            self.status_tx.send_modify(|s| {
                s.session = Some(client.session_id().0);
                s.registered = false;
                s.sessions += 1;
            });
            info!(session = %client.session_id(), timeout_ms = client.session_timeout().as_millis() as u64, "discovery: ZooKeeper session established");
            let end = self.session(&client).await;
            self.status_tx.send_modify(|s| {
                s.session = None;
                s.registered = false;
            });
            match end {
                SessionEnd::Cancelled => {
                    if let Some(me) = &self.opts.me {
                        let path = own_path(&self.opts.root, me);
                        match zk::delete_own(&client, &path).await {
                            Ok(_) => info!(%path, "discovery: deregistered"),
                            Err(e) => {
                                warn!(%path, error = %e, "discovery: deregistration failed; the znode goes with the session")
                            }
                        }
                    }
                    drop(client);
                    return;
                }
                SessionEnd::Lost(state) => {
                    self.opts.metrics.session_lost();
                    warn!(session = %client.session_id(), ?state, "discovery: ZooKeeper session lost; creating a new one and registering again");
                    self.go_stale("session lost");
                }
                SessionEnd::Failed(e) => {
                    warn!(error = %e, "discovery: ZooKeeper operation failed; reconnecting");
                    self.go_stale("failing");
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn full_sync(&mut self, client: &Client) -> Result<(), ZkError> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        for role in Role::ALL {
            let dir = format!("{}/{}", self.opts.root, role.as_str());
            let children = match client.list_children(&dir).await {
                Ok(c) => c,
                Err(ZkError::NoNode) => continue,
                Err(e) => return Err(e),
            };
            for child in children {
                let path = format!("{dir}/{child}");
                match client.get_data(&path).await {
                    Ok((data, _)) => entries.push((path, data)),
                    Err(ZkError::NoNode) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let rejected = self
            .state
            .replace_all(entries.iter().map(|(p, d)| (p.as_str(), d.as_slice())));
        for r in &rejected {
            warn!("discovery: ignoring znode: {r}");
        }
        self.opts.metrics.rejected(rejected.len() as u64);
        if self.state.set_healthy(true) {
            info!(
                nodes = self.state.snapshot().nodes.len(),
                "discovery: view is current"
            );
        }
        self.publish();
        Ok(())
    }

    async fn register(&mut self, client: &Client) -> Result<(), ZkError> {
        let Some(me) = &self.opts.me else {
            return Ok(());
        };
        let mut me = me.clone();
        me.load = *self.load_rx.borrow();
        let path = own_path(&self.opts.root, &me);
        let data = serde_json::to_vec(&me).unwrap_or_default();
        self.written_load = None;
        let how = zk::ensure_ephemeral(client, &self.opts.zk, &path, &data).await?;
        match how {
            zk::Ensured::Replaced(owner) => {
                warn!(%path, old_session = format_args!("{owner:#x}"), "discovery: replaced a znode left by another session")
            }
            zk::Ensured::Created | zk::Ensured::Updated => info!(%path, "discovery: registered"),
        }
        self.written_load = Some(me.load);
        self.status_tx.send_modify(|s| s.registered = true);
        Ok(())
    }

    async fn write_load(&mut self, client: &Client) -> Result<(), ZkError> {
        let Some(me) = &self.opts.me else {
            return Ok(());
        };
        let load = *self.load_rx.borrow();
        if self.written_load == Some(load) {
            return Ok(());
        }
        let mut me = me.clone();
        me.load = load;
        let path = own_path(&self.opts.root, &me);
        let data = serde_json::to_vec(&me).unwrap_or_default();
        match client.set_data(&path, &data, None).await {
            Ok(_) => {
                self.written_load = Some(load);
                Ok(())
            }
            Err(ZkError::NoNode) => self.register(client).await,
            Err(e) => Err(e),
        }
    }

    async fn apply_event(
        &mut self,
        client: &Client,
        event_type: EventType,
        path: &str,
    ) -> Result<(), ZkError> {
        match event_type {
            EventType::NodeCreated | EventType::NodeDataChanged => {
                match client.get_data(path).await {
                    Ok((data, _)) => match self.state.upsert(path, &data) {
                        Ok(_) => {}
                        Err(r) => {
                            warn!("discovery: ignoring znode: {r}");
                            self.opts.metrics.rejected(1);
                        }
                    },
                    Err(ZkError::NoNode) => {
                        self.state.remove(path);
                    }
                    Err(e) => return Err(e),
                }
            }
            EventType::NodeDeleted => {
                self.state.remove(path);
                if let Some(me) = &self.opts.me
                    && path == own_path(&self.opts.root, me)
                {
                    warn!(%path, "discovery: own znode was deleted by someone else; registering again");
                    self.status_tx.send_modify(|s| s.registered = false);
                    self.register(client).await?;
                }
            }
            EventType::Session | EventType::NodeChildrenChanged => {}
        }
        self.publish();
        Ok(())
    }

    async fn session(&mut self, client: &Client) -> SessionEnd {
        let mut states = client.state_watcher();
        let setup = async {
            for role in Role::ALL {
                zk::mkdir_p(
                    client,
                    &self.opts.zk,
                    &format!("{}/{}", self.opts.root, role.as_str()),
                )
                .await?;
            }
            let watcher = client
                .watch(&self.opts.root, AddWatchMode::PersistentRecursive)
                .await?;
            self.register(client).await?;
            self.full_sync(client).await?;
            Ok::<_, ZkError>(watcher)
        };
        let mut watcher = match setup.await {
            Ok(w) => w,
            Err(e) => return self.classify(client, e),
        };
        let mut tick = tokio::time::interval(self.opts.load_update);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // Each step's ZooKeeper calls can block while disconnected (the client holds them until
        // it reconnects), so every step races the state watcher: a state change interrupts it and
        // is handled next. Interrupted work is not lost: reconnection re-lists everything.
        let mut next: Option<Step> = None;
        loop {
            let step = match next.take() {
                Some(s) => s,
                None => tokio::select! {
                    _ = self.cancel.cancelled() => return SessionEnd::Cancelled,
                    state = states.changed() => Step::State(state),
                    event = watcher.changed() => Step::Event(event),
                    _ = tick.tick() => Step::Tick,
                },
            };
            match &step {
                Step::State(SessionState::Disconnected) => {
                    self.go_stale("connection lost");
                    continue;
                }
                Step::State(state) if zk::is_dead(*state) => return SessionEnd::Lost(*state),
                Step::Event(ev) if ev.event_type == EventType::Session => {
                    if zk::is_dead(ev.session_state) {
                        return SessionEnd::Lost(ev.session_state);
                    }
                    continue;
                }
                _ => {}
            }
            let cancel = self.cancel.clone();
            let result = tokio::select! {
                _ = cancel.cancelled() => return SessionEnd::Cancelled,
                state = states.changed() => {
                    next = Some(Step::State(state));
                    Ok(())
                }
                r = self.run_step(client, step) => r,
            };
            if let Err(e) = result {
                match e {
                    // The state watcher reports the disconnection; keep going.
                    ZkError::ConnectionLoss | ZkError::Timeout => {}
                    e => return self.classify(client, e),
                }
            }
        }
    }

    async fn run_step(&mut self, client: &Client, step: Step) -> Result<(), ZkError> {
        match step {
            Step::State(_) => {
                // SyncConnected / ConnectedReadOnly (possibly coalesced with a Disconnected).
                info!("discovery: ZooKeeper connection (re)established; re-listing");
                self.full_sync(client).await
            }
            Step::Event(ev) => self.apply_event(client, ev.event_type, &ev.path).await,
            Step::Tick => self.write_load(client).await,
        }
    }

    fn classify(&self, client: &Client, e: ZkError) -> SessionEnd {
        if zk::is_session_error(&e) || zk::is_dead(client.state()) {
            SessionEnd::Lost(client.state())
        } else {
            SessionEnd::Failed(e)
        }
    }
}
