//! rmqkeeper (`broker rmqkeeper`): keeps one RabbitMQ node registered in ZooKeeper while it is
//! healthy, and [`RabbitView`], the reader publishers use to find healthy nodes.
//!
//! How the pieces fit: [`config`] is the `[rmqkeeper]` section of the config file every role
//! shares; [`args`] merges the flags over it into a validated [`KeeperConfig`] (errors name the
//! flag or the key, exit code 2); [`health`] asks the management API (aliveness, alarms, port
//! listener); [`machine`] decides register/unregister and which transitions to log; [`run`] is
//! the loop that ties them to a ZooKeeper session ([`crate::discovery::zk`]): every interval it
//! checks health, then makes `<root>/<node-name>` (ephemeral, data [`RabbitNode`] JSON) exist
//! exactly while the node is healthy. A dead session (expired or closed) is replaced at once and
//! the znode created again. Every transition is one log line, and is recorded in [`status`]'s
//! metrics and state, served on `rmqkeeper.listen` as `/metrics` and `/healthz`.

pub mod args;
pub mod config;
pub mod health;
pub mod machine;
pub mod status;
pub mod view;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use zookeeper_client::Client;

pub use args::{EXIT_CONFIG, KeeperArgs, KeeperConfig, KeeperConfigError, KeeperSources};
pub use view::{RabbitNode, RabbitNodes, RabbitView};

use crate::discovery::zk;
use crate::shutdown_signal::ShutdownSignal;
use health::{Health, Management};
use machine::{Action, HealthTracker, decide};

/// Why the keeper stopped.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// The HTTP client could not be built.
    #[error("rmqkeeper: HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The health and metrics listener could not be bound.
    #[error("rmqkeeper: cannot listen on {addr} (rmqkeeper.listen / --listen): {source}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Entry point for `broker rmqkeeper` (tracing must already be initialised): merges the flags
/// over the config file's `sources` (exit 2 with a message naming the flag or key), then runs until SIGINT/SIGTERM
/// (exit 0).
pub async fn cli(args: KeeperArgs, sources: args::KeeperSources<'_>) -> ExitCode {
    let cfg = match args.resolve(sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Listening before anything is bound: a SIGTERM right after start-up stops cleanly.
    let signal = match ShutdownSignal::listen() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rmqkeeper: cannot listen for SIGINT/SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(cfg, signal.into_token()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

struct Session {
    client: Client,
    states: zookeeper_client::StateWatcher,
    registered: bool,
}

/// Runs the keeper until `cancel`; on cancel deletes the znode and closes the session.
pub async fn run(cfg: KeeperConfig, cancel: CancellationToken) -> Result<(), KeeperError> {
    let mgmt = Management::new(&cfg)?;
    let telemetry = status::Telemetry::new();
    if let Some(addr) = cfg.listen {
        let bound = status::serve(addr, &telemetry, cancel.child_token())
            .await
            .map_err(|source| KeeperError::Listen { addr, source })?;
        info!("rmqkeeper: health on http://{bound}/healthz, metrics on http://{bound}/metrics");
    }
    let mut node_name = cfg.node_name.clone();
    let mut tracker = HealthTracker::default();
    let mut session: Option<Session> = None;
    let mut zk_down_logged = false;
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(amqp = %cfg.amqp_url, mgmt = %cfg.mgmt_url, vhost = %cfg.vhost, zk = %cfg.zk.servers, root = %cfg.root, interval_ms = cfg.interval.as_millis() as u64, "rmqkeeper: started");
    loop {
        // Wait for the next tick, or react at once to a dead session.
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
            state = async {
                match session.as_mut() {
                    Some(s) => s.states.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if !zk::is_dead(state) {
                    continue;
                }
                if let Some(s) = session.take() {
                    telemetry.session_lost();
                    warn!(session = %s.client.session_id(), ?state, registered = s.registered, "rmqkeeper: ZooKeeper session lost; creating a new one");
                }
            }
        }

        let health = mgmt.check().await;
        telemetry.checked(&health);
        let name = match &node_name {
            Some(n) => n.clone(),
            None if health.is_healthy() => match mgmt.node_name().await {
                Ok(n) if args::usable_node_name(&n) => {
                    node_name = Some(n.clone());
                    n
                }
                Ok(n) => {
                    error!(name = %n, "rmqkeeper: the node name is not a usable znode name; pass --node-name");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "rmqkeeper: cannot read the node name yet");
                    continue;
                }
            },
            None => {
                if let Some(line) = tracker.observe(&health) {
                    warn!("rmqkeeper: {} {line}", cfg.amqp_url);
                }
                continue;
            }
        };
        telemetry.node(&name);
        let path = format!("{}/{}", cfg.root, name);
        if let Some(line) = tracker.observe(&health) {
            if health.is_healthy() {
                info!("rmqkeeper: {name} {line}");
            } else {
                warn!("rmqkeeper: {name} {line}");
            }
        }

        if session.is_none() {
            match zk::connect(&cfg.zk).await {
                Ok(client) => {
                    info!(session = %client.session_id(), "rmqkeeper: ZooKeeper session established");
                    telemetry.session_established();
                    zk_down_logged = false;
                    let states = client.state_watcher();
                    session = Some(Session {
                        client,
                        states,
                        registered: false,
                    });
                }
                Err(e) => {
                    if !zk_down_logged {
                        warn!(servers = %cfg.zk.servers, error = %e, "rmqkeeper: cannot reach ZooKeeper; retrying every interval");
                        zk_down_logged = true;
                    }
                    continue;
                }
            }
        }
        let Some(s) = session.as_mut() else { continue };
        if let Err(e) = reconcile(s, &cfg, &name, &path, &health, &telemetry).await {
            if zk::is_session_error(&e) || zk::is_dead(s.client.state()) {
                warn!(session = %s.client.session_id(), error = %e, "rmqkeeper: ZooKeeper session lost; creating a new one");
                telemetry.session_lost();
                session = None;
                tick.reset_immediately();
            } else {
                warn!(%path, error = %e, "rmqkeeper: ZooKeeper operation failed; retrying next interval");
            }
        }
    }
    if let (Some(s), Some(name)) = (session, node_name) {
        let path = format!("{}/{}", cfg.root, name);
        if s.registered {
            match zk::delete_own(&s.client, &path).await {
                Ok(_) => info!(%path, "rmqkeeper: stopping; removed"),
                Err(e) => {
                    warn!(%path, error = %e, "rmqkeeper: stopping; removal failed, the znode goes with the session")
                }
            }
        }
    }
    telemetry.session_lost();
    info!("rmqkeeper: stopped");
    Ok(())
}

async fn reconcile(
    s: &mut Session,
    cfg: &KeeperConfig,
    name: &str,
    path: &str,
    health: &Health,
    telemetry: &status::Telemetry,
) -> Result<(), zookeeper_client::Error> {
    // Someone may have deleted the znode (or it belongs to an old session): check while healthy.
    if s.registered && health.is_healthy() {
        let ours = matches!(
            s.client.check_stat(path).await?,
            Some(stat) if stat.ephemeral_owner == s.client.session_id().0
        );
        if !ours {
            warn!(%path, "rmqkeeper: znode disappeared; registering again");
            s.registered = false;
            telemetry.registration_lost();
        }
    }
    match decide(health.is_healthy(), s.registered) {
        Action::Register => {
            let data = RabbitNode {
                amqp_url: cfg.amqp_url.to_string(),
                mgmt_url: cfg.mgmt_url.to_string(),
                node: name.to_string(),
            };
            let data = serde_json::to_vec(&data).unwrap_or_default();
            match zk::ensure_ephemeral(&s.client, &cfg.zk, path, &data).await? {
                zk::Ensured::Replaced(owner) => {
                    info!(%path, old_session = format_args!("{owner:#x}"), "rmqkeeper: registered (replaced a znode of an older session)")
                }
                _ => info!(%path, "rmqkeeper: registered"),
            }
            s.registered = true;
            telemetry.registration(true);
        }
        Action::Unregister => {
            zk::delete_own(&s.client, path).await?;
            s.registered = false;
            telemetry.registration(false);
            info!(%path, "rmqkeeper: removed (unhealthy)");
        }
        Action::Nothing => {}
    }
    Ok(())
}
