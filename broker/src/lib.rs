//! The broker: connects smart plugs (devices) and phone apps to the cloud.
//!
//! How the pieces fit (each module's docs say more):
//! * [`config`]: the TOML configuration, loaded once in `main` and passed down.
//! * [`secrets`]: keys and tokens, generated into the data dir when not configured.
//! * [`private_files`]: the data dir's files are kept mode 0600; warns on a world-readable dir.
//! * [`store`]: durable state behind small traits (offline messages, upload spool, bindings,
//!   groups) with an embedded redb implementation.
//! * [`router`]: the msgbus core: online registry, per-session bounded queues, push/send/ack,
//!   replay, commands, uploads, device requests. The transports plug into it.
//! * [`api`]: the HTTP API (axum) under `/v1`, plus `/healthz`, `/readyz`, `/metrics`.
//! * [`metrics`]: the Prometheus metrics facade every part records through.
//! * [`logging`]: the binary's log filter, with caps that keep frame dumps out of the logs.
//! * [`self_wake`]: polls a task's future again when it woke itself, so tokio does not wake a
//!   second worker for it (the HTTP API's connections).
//! * `discovery`, `keeper`: cluster-mode node discovery and the `rmqkeeper` role.
//! * [`cluster`]: the `comet` and `msgbus` roles (Redis stores and online registry, ZooKeeper
//!   registration, msgbus links, RabbitMQ uploads and pushes) on top of [`start_with`].
//! * `comet` (transports: device WebSocket/UDP, app WebSocket): started by [`start`] beside the API.
//! * [`provisioning`]: `broker device-key --record`, the device provisioning record writer.
//! * [`client`]: `broker client device|phone`, a command-line terminal for trying and scripting.
//! * [`cluster_status`]: `broker cluster status`, one view of every node and service of a cluster.
//! * [`load`]: `broker load`, the load generator (simulated devices; rates, latencies, memory).
//!
//! [`start`] brings a broker up on the configured addresses (port 0 allowed) and returns a
//! [`Running`] handle with the bound addresses; [`run`] is `start` + wait for `shutdown` + drain.

pub mod api;
pub mod cli_output;
pub mod client;
pub mod cluster;
pub mod cluster_status;
pub mod comet;
pub mod config;
pub mod console;
pub mod discovery;
pub mod keeper;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod private_files;
pub mod provisioning;
pub mod roles;
pub mod router;
pub mod secret;
pub mod secrets;
pub mod self_wake;
pub mod shutdown_signal;
pub mod store;
pub mod terminal;
pub mod uploads;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::router::{KickReason, Router, RouterSettings};
use crate::secrets::{SECRETS_FILE, Secrets};
use crate::store::embedded::{EmbeddedStore, OfflineLimits};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Secrets could not be read or generated.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    /// The store could not be opened.
    #[error("opening the store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// The store error.
        source: store::StoreError,
    },
    /// The `[tls]` certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] comet::tls::TlsError),
    /// The OS random generator failed, so the comet's login cookies cannot be keyed.
    #[error("the OS random generator failed (needed for login cookies): {0}")]
    Random(#[from] rand::rand_core::OsError),
    /// A listening socket could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which endpoint.
        what: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A started broker.
pub struct Running {
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// Where the comet endpoints listen (device WebSocket, app WebSocket, UDP).
    pub comet: comet::Bound,
    /// The router (tests and embedders may drive it directly).
    pub router: Router,
    /// The secrets in use (tests use the API token and token secret).
    pub secrets: Secrets,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Open terminal connections (one per WebSocket connection or UDP session); a connection
    /// task lets go of its slot only after its last frame (kick, close) is written.
    conns: std::sync::Arc<comet::limits::ConnLimiter>,
    drain: Duration,
}

impl Running {
    /// Drains and stops: stop accepting, kick every session with `Shutdown` (they reconnect
    /// later), and wait up to `timeouts.shutdown_drain_secs` for the tasks and for every
    /// connection to have sent its kick and close (connection tasks are not in `tasks`: without
    /// this wait the process could exit before they write them).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let kicked = self.router.kick_all(KickReason::Shutdown);
        tracing::info!(sessions = kicked, "shutting down");
        let conns = self.conns;
        let all = async move {
            futures_join(self.tasks).await;
            while conns.open() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(self.drain, all).await.is_err() {
            tracing::warn!("drain deadline passed; exiting with tasks still running");
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// What a role plugs into the common start path ([`start_with`]): the stores the router uses,
/// extra HTTP routes (merged without the bearer layer; they authenticate themselves if needed),
/// the metrics (shared with the role's own parts) and the API's cluster view.
pub struct StartParts {
    /// The router's stores.
    pub stores: store::Stores,
    /// Routes merged into the HTTP API as they are (e.g. the node lookup route).
    pub extra_routes: axum::Router,
    /// The metrics the router, API and comet record to (and `/metrics` renders).
    pub metrics: Metrics,
    /// Cluster mode: commands and online status for terminals on other nodes.
    pub cluster_api: Option<std::sync::Arc<dyn api::ClusterApi>>,
    /// Cluster mode: the discovery view the console's node table lists.
    pub cluster_nodes: Option<console::nodes::ClusterNodes>,
    /// Offer a stored message to local sessions at once ([`router::RouterSettings`]); a cluster
    /// comet offers from its delivery-notice stream instead.
    pub offer_on_store: bool,
}

/// Starts a broker from `config` and returns once every socket is bound.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let dir = config.storage.data_dir.clone();
    create_data_dir(&dir)?;
    let limits = OfflineLimits {
        max_per_terminal: u64::from(config.offline.max_per_terminal),
        eviction: config.offline.eviction,
    };
    let retention = config.upload.spool_retention();
    let tuning = config.storage.store_tuning();
    let store = EmbeddedStore::open_tuned(&dir, limits, retention, tuning).map_err(|source| {
        StartError::Store {
            dir: dir.clone(),
            source,
        }
    })?;
    let parts = StartParts {
        stores: store.stores(),
        extra_routes: axum::Router::new(),
        metrics: Metrics::new(),
        cluster_api: None,
        cluster_nodes: None,
        offer_on_store: true,
    };
    start_with(config, parts).await
}

fn create_data_dir(dir: &std::path::Path) -> Result<(), StartError> {
    std::fs::create_dir_all(dir).map_err(|e| StartError::Store {
        dir: dir.to_path_buf(),
        source: store::StoreError::Backend(e.to_string()),
    })
}

/// [`start`] with the stores and extra routes chosen by the caller (the cluster roles).
pub async fn start_with(config: &Config, parts: StartParts) -> Result<Running, StartError> {
    let dir = config.storage.data_dir.clone();
    create_data_dir(&dir)?;
    if let Some(warning) = private_files::data_dir_warning(&dir) {
        tracing::warn!("{warning}");
    }
    // Before anything is spawned: a bad `[tls]` leaves nothing running.
    let tls = comet::tls::load(&config.tls)?;
    let (secrets, generated) = Secrets::resolve(&config.security, &dir)?;
    if !config.security.cookie_secret.is_empty() {
        tracing::warn!(
            "security.cookie_secret is ignored: each node draws its own handshake cookie secret at \
             start and never shares it (docs/configuration.md); remove the key"
        );
    }
    if !generated.is_empty() {
        tracing::info!(
            file = %dir.join(SECRETS_FILE).display(),
            keys = ?generated,
            "generated secrets not set in the config (kept for later starts; the API token is in that file)"
        );
    }
    let settings = RouterSettings {
        offer_on_store: parts.offer_on_store,
        ..config.router_settings()
    };
    let router = Router::new(settings, parts.stores, parts.metrics);
    let shutdown = CancellationToken::new();
    let mut tasks = router.spawn_background(shutdown.clone());

    let bind = |what, addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let http_listener = bind("the HTTP API", config.listen.http).await?;
    let http = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            what: "the HTTP API",
            addr: config.listen.http,
            source,
        })?;
    // The comet: device WebSocket, UDP and app WebSocket endpoints (src/comet).
    let ws_echo = config.conformance.ws_echo().map_err(|(key, reason)| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{key}: {reason}"))
    });
    let l = &config.listen;
    let listeners = async { comet::Listeners::bind(l.device_ws, l.app_ws, l.udp, ws_echo?).await }
        .await
        .map_err(|source| StartError::Bind {
            what: "the comet (device_ws, app_ws, udp)",
            addr: config.listen.device_ws,
            source,
        })?;
    let comet_addrs = listeners.local_addrs().map_err(|source| StartError::Bind {
        what: "the comet (device_ws, app_ws, udp)",
        addr: config.listen.device_ws,
        source,
    })?;
    let ws = if tls.is_some() { "wss" } else { "ws" };
    let api_tls = tls.clone().filter(|_| config.tls.api);
    let comet_ctx = comet::Context::new(
        config.comet_settings(),
        &secrets,
        router.clone(),
        shutdown.clone(),
        tls,
    )?;
    let conns = comet_ctx.conns.clone();
    tasks.extend(comet::spawn(comet_ctx, listeners));
    tracing::info!(
        device_ws = %comet_addrs.device_ws,
        app_ws = %comet_addrs.app_ws,
        udp = %comet_addrs.udp,
        "comet listening: devices on {ws}://{} and udp {}, apps on {ws}://{} (JSON, token in the first message)",
        comet_addrs.device_ws,
        comet_addrs.udp,
        comet_addrs.app_ws
    );

    let app = api::app(
        api::ApiState::new(
            router.clone(),
            secrets.api_token.clone(),
            config.api_settings(),
        )
        .with_cluster(parts.cluster_api)
        .with_cluster_nodes(parts.cluster_nodes)
        .with_shutdown(shutdown.clone()),
    )
    .merge(parts.extra_routes);
    let https = api_tls.is_some();
    // Validated with the rest of the configuration at load.
    let api_proxy = config
        .proxy_protocol
        .load()
        .ok()
        .flatten()
        .and_then(|p| p.on(comet::proxy::Listener::Http).cloned());
    tasks.push(tokio::spawn(api::listener::serve(
        http_listener,
        api_tls,
        api_proxy,
        app,
        api::listener::ApiLimits::new(&config.api),
        router.metrics().clone(),
        shutdown.clone(),
    )));
    let scheme = if https { "https" } else { "http" };
    // Where the token really is: the config when it sets one (as every cluster node's does),
    // else the file the broker generated it into.
    let token_at = if config.security.api_token.is_empty() {
        format!("api_token in {}", dir.join(SECRETS_FILE).display())
    } else {
        "security.api_token of the config".to_string()
    };
    tracing::info!(
        http = %http,
        data_dir = %dir.display(),
        profile = %config.identity.profile,
        "broker listening: HTTP API on {scheme}://{http}/v1 (bearer token: {token_at})"
    );
    Ok(Running {
        http,
        comet: comet_addrs,
        router,
        secrets,
        shutdown,
        tasks,
        conns,
        drain: Duration::from_secs(config.timeouts.shutdown_drain_secs),
    })
}

/// Runs a broker until `shutdown` completes, then drains (see [`Running::stop`]).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let running = start(&config).await?;
    shutdown.await;
    running.stop().await;
    Ok(())
}
