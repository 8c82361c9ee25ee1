//! The cluster roles a broker process runs (comet and msgbus), assembled from the whole
//! configuration: the composition root of cluster mode, as [`crate::start`] is of the
//! standalone broker. It sits above every other module, the configuration included, so the
//! layers below take only the settings built for them ([`crate::cluster`] holds the parts:
//! links, delivery, presence; this module wires them to discovery, Redis and RabbitMQ).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    ClusterConfig, ClusterError, ClusterNode, claims, commands, delivery, hooks, link, link_auth,
    presence, redis_health, uploads,
};
use crate::config::Config;
use crate::discovery::config::DiscoveryMode;
use crate::discovery::metrics::DiscoveryMetrics;
use crate::discovery::zk_discovery::ZkOptions;
use crate::discovery::{Discovery, NodeInfo, NodeView, Role, StaticDiscovery, ZkDiscovery};
use crate::keeper::RabbitView;
use crate::metrics::Metrics;
use crate::store::Stores;
use crate::store::embedded::{EmbeddedStore, OfflineLimits};
use crate::store::redis::{OnlineRegistry, RedisConn, RedisStore};
use crate::uploads::{
    NodeList, PushConsumer, RabbitUploadSink, static_nodes, urls_from_rabbit_view,
};
use crate::{Running, StartParts};

struct Common {
    store: Arc<RedisStore>,
    registry: Arc<OnlineRegistry>,
    conn: Arc<RedisConn>,
    node_id: String,
    links: link::LinkSettings,
    cancel: CancellationToken,
    metrics: Metrics,
}

/// The secrets every cluster node must hold, checked before anything starts: the cluster key
/// (links) and, when the node uses ZooKeeper, the digest credentials of its znodes.
fn required_secrets(config: &Config) -> Result<link_auth::LinkKey, ClusterError> {
    let Some(key) = config.cluster.parsed_link_key() else {
        return Err(ClusterError::Config(
            "cluster.link_key".into(),
            "required by the cluster roles: 64 hex digits, the same on every node (generate \
             with `openssl rand -hex 32`; or set BROKER__CLUSTER__LINK_KEY)"
                .into(),
        ));
    };
    let uses_zk =
        config.discovery.mode == DiscoveryMode::Zookeeper || !config.cluster.rabbit_root.is_empty();
    if uses_zk && config.discovery.zk_settings().auth.is_none() {
        return Err(ClusterError::Config(
            "discovery.zk_auth".into(),
            "required when a cluster role uses ZooKeeper (discovery.mode = \"zookeeper\" or \
             cluster.rabbit_root set): user:password, the same on every node (or set \
             BROKER__DISCOVERY__ZK_AUTH)"
                .into(),
        ));
    }
    Ok(key)
}

async fn common(config: &Config) -> Result<Common, ClusterError> {
    if config.discovery.mode == DiscoveryMode::None {
        return Err(ClusterError::Config(
            "discovery.mode".into(),
            "cluster roles need `static` or `zookeeper`".into(),
        ));
    }
    let node_id = config.discovery.node_id.clone();
    if !crate::discovery::valid_node_id(&node_id) {
        return Err(ClusterError::Config(
            "discovery.node_id".into(),
            "must be set for a cluster role".into(),
        ));
    }
    let key = required_secrets(config)?;
    let conn = Arc::new(RedisConn::connect(&config.redis).await?);
    let limits = OfflineLimits {
        max_per_terminal: u64::from(config.offline.max_per_terminal),
        eviction: config.offline.eviction,
    };
    let metrics = Metrics::new();
    let store = RedisStore::for_cluster(
        conn.clone(),
        limits,
        metrics.store_data_loss(),
        config.cluster.stream_maxlen,
    );
    // Learn the run marker now, so a Redis data loss before the first push is noticed too.
    store.check_marker().await?;
    Ok(Common {
        store,
        registry: Arc::new(OnlineRegistry::new(conn.clone())),
        conn,
        node_id,
        links: link::LinkSettings {
            key,
            queue: config.cluster.link_queue,
            max_inflight: config.cluster.max_inflight_commands,
            handshake_timeout: link::HANDSHAKE_TIMEOUT,
        },
        cancel: CancellationToken::new(),
        metrics,
    })
}

fn start_discovery(
    config: &Config,
    me: NodeInfo,
    metrics: &Metrics,
) -> Result<Arc<dyn Discovery>, ClusterError> {
    let d: Arc<dyn Discovery> = match config.discovery.mode {
        DiscoveryMode::Zookeeper => Arc::new(ZkDiscovery::start(ZkOptions::from_config(
            &config.discovery,
            Some(me),
            DiscoveryMetrics::new(metrics.recorder()),
        ))?),
        _ => Arc::new(StaticDiscovery::new(config.discovery.static_nodes.clone())?),
    };
    Ok(d)
}

/// Copies the discovery view into the lookup route's relay until `cancel`.
fn spawn_relay(
    mut from: watch::Receiver<NodeView>,
    to: watch::Sender<NodeView>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let v = from.borrow_and_update().clone();
            to.send_replace(v);
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = from.changed() => if r.is_err() { break },
            }
        }
    })
}

/// The node's Redis health probe ([`redis_health`]), bounded by `redis.response_timeout_ms`.
fn spawn_redis_health(config: &Config, c: &Common) -> JoinHandle<()> {
    redis_health::spawn(
        c.conn.clone(),
        c.metrics.clone(),
        redis_health::PROBE_EVERY,
        Duration::from_millis(config.redis.response_timeout_ms),
        c.cancel.clone(),
    )
}

/// The node list, plus what keeps it alive: the keepers' view or the static list's sender.
type RabbitNodesParts = (
    NodeList,
    Option<RabbitView>,
    Option<watch::Sender<Vec<String>>>,
);

/// The healthy RabbitMQ nodes: from the rmqkeepers' znodes, or the static `rabbitmq.urls`.
fn rabbit_nodes(
    config: &Config,
    cancel: &CancellationToken,
) -> Result<RabbitNodesParts, ClusterError> {
    let r = &config.rabbitmq;
    if config.cluster.rabbit_root.is_empty() {
        let (tx, rx) = static_nodes(r.urls.clone());
        return Ok((rx, None, Some(tx)));
    }
    let view = RabbitView::start(config.discovery.zk_settings(), &config.cluster.rabbit_root)?;
    let nodes = urls_from_rabbit_view(&view, r.user.clone(), r.password.clone(), cancel.clone());
    Ok((nodes, Some(view), None))
}

fn intervals(c: &ClusterConfig) -> presence::Intervals {
    presence::Intervals {
        heartbeat: c.heartbeat(),
        ttl: c.node_ttl(),
        sweep: Duration::from_millis(c.sweep_interval_ms),
        reconcile: Duration::from_millis(c.reconcile_ms),
    }
}

fn self_info(
    config: &Config,
    role: Role,
    running: &Running,
    link: Option<SocketAddr>,
) -> Result<NodeInfo, ClusterError> {
    let listen = crate::discovery::Endpoints {
        udp: running.comet.udp,
        device_ws: running.comet.device_ws,
        app_ws: running.comet.app_ws,
    };
    let mut me = config
        .discovery
        .self_info(role, &listen)
        .map_err(|(k, r)| ClusterError::Config(k, r))?;
    if me.addr.link.is_none()
        && let Some(l) = link
    {
        me.addr.link = Some(l.to_string());
    }
    Ok(me)
}

/// The start path both roles share: [`crate::start_with`] over `stores`, with the cluster
/// command API and the node lookup route (`GET /v1/nodes/lookup`) merged into the HTTP API.
/// The lookup route answers from the returned sender's view, which [`spawn_relay`] keeps in
/// step with discovery once the node has registered; the console's node table (node `me`)
/// reads the same view.
async fn start_node(
    config: &Config,
    me: &str,
    stores: Stores,
    metrics: &Metrics,
    cluster_api: Arc<commands::ClusterCommands>,
    offer_on_store: bool,
) -> Result<(Running, watch::Sender<NodeView>), ClusterError> {
    let (view_tx, view_rx) = watch::channel(NodeView::default());
    let cluster_nodes = crate::console::nodes::ClusterNodes {
        me: me.to_string(),
        view: view_rx.clone(),
    };
    let lookup = crate::discovery::route::lookup_router(
        view_rx,
        config.discovery.lookup_max as usize,
        config.identity.profile,
    );
    let running = crate::start_with(
        config,
        StartParts {
            stores,
            extra_routes: lookup,
            metrics: metrics.clone(),
            cluster_api: Some(cluster_api),
            cluster_nodes: Some(cluster_nodes),
            offer_on_store,
        },
    )
    .await?;
    Ok((running, view_tx))
}

/// Starts a comet node (see module docs).
pub async fn start_comet(config: &Config) -> Result<ClusterNode, ClusterError> {
    let c = common(config).await?;
    let presence = Arc::new(presence::Presence::new(
        c.registry.clone(),
        claims::SessionClaims::new(c.conn.clone()),
        c.node_id.clone(),
        !config.identity.profile.allows_concurrent_sessions(),
        c.metrics.clone(),
    ));
    let comet_links = link::CometLinks::new(c.node_id.clone(), c.links.clone(), c.metrics.clone());
    let cluster_api = commands::ClusterCommands::new(
        c.node_id.clone(),
        c.registry.clone(),
        comet_links.clone(),
        c.metrics.clone(),
    );
    let (nodes, rabbit_view, static_rabbit) = rabbit_nodes(config, &c.cancel)?;
    let limits = OfflineLimits {
        max_per_terminal: u64::from(config.offline.max_per_terminal),
        eviction: config.offline.eviction,
    };
    let local = EmbeddedStore::open_tuned(
        &config.storage.data_dir.join("upload-spool"),
        limits,
        config.upload.spool_retention(),
        config.storage.store_tuning(),
    )?
    .stores()
    .uploads;
    let sink = RabbitUploadSink::start(
        config.rabbitmq.clone(),
        nodes,
        local.clone(),
        c.metrics.clone(),
    )
    .await?;
    let stores = Stores {
        offline: Arc::new(hooks::ClusterOffline::new(
            c.store.clone(),
            Some(presence.clone()),
        )),
        uploads: Arc::new(uploads::SinkSpool::new(sink.clone(), local)),
        bindings: c.store.clone(),
        groups: c.store.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.cluster.link_listen)
        .await
        .map_err(|source| ClusterError::Bind {
            addr: config.cluster.link_listen,
            source,
        })?;
    let link_addr = listener.local_addr().map_err(|source| ClusterError::Bind {
        addr: config.cluster.link_listen,
        source,
    })?;
    // The stream's end is taken before the comet accepts logins: a login's replay then covers
    // every message notified before it, the stream every one after it.
    let (stream, pos, block) = delivery::open(&config.redis, &c.node_id).await?;
    let (running, view_tx) =
        start_node(config, &c.node_id, stores, &c.metrics, cluster_api, false).await?;
    let (follower, delivery_hold) = delivery::DeliveryFollower::new(
        stream,
        pos,
        running.router.clone(),
        c.metrics.clone(),
        block,
    );
    let me = self_info(config, Role::Comet, &running, Some(link_addr))?;
    let discovery = start_discovery(config, me, &c.metrics)?;
    let view = discovery.view();
    let mut tasks = vec![
        spawn_relay(view.clone(), view_tx, c.cancel.clone()),
        spawn_redis_health(config, &c),
        follower.spawn(c.cancel.clone()),
    ];
    presence.attach(running.router.clone(), comet_links.clone());
    tasks.push(comet_links.serve(
        listener,
        running.router.clone(),
        Some(presence.clone()),
        c.cancel.clone(),
    ));
    let d = discovery.clone();
    tasks.extend(presence::spawn_loops(
        presence,
        c.registry.clone(),
        Some(running.router.clone()),
        intervals(&config.cluster),
        move |n| d.set_load(u32::try_from(n).unwrap_or(u32::MAX)),
        c.cancel.clone(),
    ));
    tracing::info!(node = %c.node_id, link = %link_addr, "comet node up");
    Ok(ClusterNode {
        role: Role::Comet,
        node_id: c.node_id,
        running,
        link: Some(link_addr),
        comet_links: Some(comet_links),
        links: None,
        sink: Some(sink),
        push: None,
        delivery_hold: Some(delivery_hold),
        view,
        discovery,
        rabbit_view,
        _static_rabbit: static_rabbit,
        cancel: c.cancel,
        tasks,
    })
}

/// Starts a msgbus node (see module docs).
pub async fn start_msgbus(config: &Config) -> Result<ClusterNode, ClusterError> {
    let c = common(config).await?;
    let links = link::LinkManager::new(
        c.node_id.clone(),
        c.links.clone(),
        (
            Duration::from_millis(config.cluster.reconnect_min_ms),
            Duration::from_millis(config.cluster.reconnect_max_ms),
        ),
        c.metrics.clone(),
    );
    let cluster_api = commands::ClusterCommands::new(
        c.node_id.clone(),
        c.registry.clone(),
        links.clone(),
        c.metrics.clone(),
    );
    let limits = OfflineLimits {
        max_per_terminal: u64::from(config.offline.max_per_terminal),
        eviction: config.offline.eviction,
    };
    let local = EmbeddedStore::open_tuned(
        &config.storage.data_dir,
        limits,
        config.upload.spool_retention(),
        config.storage.store_tuning(),
    )?;
    let stores = Stores {
        offline: Arc::new(hooks::ClusterOffline::new(c.store.clone(), None)),
        uploads: local.stores().uploads,
        bindings: c.store.clone(),
        groups: c.store.clone(),
    };
    // Terminals belong on comets; one that logs in on a msgbus anyway (not in the online
    // registry, no delivery notices) keeps getting this node's own pushes live, as before.
    let (running, view_tx) =
        start_node(config, &c.node_id, stores, &c.metrics, cluster_api, true).await?;
    let me = self_info(config, Role::Msgbus, &running, None)?;
    let discovery = start_discovery(config, me, &c.metrics)?;
    let view = discovery.view();
    let mut tasks = vec![
        spawn_relay(view.clone(), view_tx, c.cancel.clone()),
        spawn_redis_health(config, &c),
    ];
    let m = c.metrics.clone();
    // A comet of an older version still hands over what it stored: the delivery notices
    // already carry it, so it is ignored (and counted).
    tasks.push(links.follow(
        view.clone(),
        Arc::new(move |origin, msg| {
            m.link_frame_dropped(&origin, "superseded");
            tracing::debug!(comet = %origin, msg_id = msg.msg_id, "link Stored ignored: delivery notices carry stored messages");
        }),
        c.cancel.clone(),
    ));
    let presence = Arc::new(presence::Presence::new(
        c.registry.clone(),
        claims::SessionClaims::new(c.conn.clone()),
        c.node_id.clone(),
        !config.identity.profile.allows_concurrent_sessions(),
        c.metrics.clone(),
    ));
    tasks.extend(presence::spawn_loops(
        presence,
        c.registry.clone(),
        None,
        intervals(&config.cluster),
        |_| {},
        c.cancel.clone(),
    ));
    let (nodes, rabbit_view, static_rabbit) = rabbit_nodes(config, &c.cancel)?;
    let push = if config.rabbitmq.push_exchange.is_empty() {
        None
    } else {
        let router = running.router.clone();
        Some(PushConsumer::start(
            config.rabbitmq.clone(),
            nodes,
            c.metrics.clone(),
            move |p: crate::uploads::BackendPush| {
                let router = router.clone();
                async move {
                    router
                        .push(p.target, None, p.payload, p.ttl)
                        .await
                        .map(|_| ())
                        .map_err(crate::uploads::PushFailure::from)
                }
            },
        ))
    };
    tracing::info!(node = %c.node_id, "msgbus node up");
    Ok(ClusterNode {
        role: Role::Msgbus,
        node_id: c.node_id,
        running,
        link: None,
        comet_links: None,
        links: Some(links),
        sink: None,
        push,
        delivery_hold: None,
        view,
        discovery,
        rabbit_view,
        _static_rabbit: static_rabbit,
        cancel: c.cancel,
        tasks,
    })
}

/// Runs `role` until `shutdown` completes, then stops it (see [`ClusterNode::stop`]).
pub async fn run(
    role: Role,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ClusterError> {
    let node = match role {
        Role::Comet => start_comet(&config).await?,
        Role::Msgbus => start_msgbus(&config).await?,
    };
    shutdown.await;
    node.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_config(env: &[(&str, &str)], toml: &str) -> Config {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>();
        Config::from_str_with_env("c.toml", toml, env).unwrap()
    }

    fn refused_key(c: &Config) -> Option<String> {
        match required_secrets(c) {
            Ok(_) => None,
            Err(ClusterError::Config(key, _)) => Some(key),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn cluster_roles_refuse_to_start_without_their_secrets_and_name_the_key() {
        let zk = "[discovery]\nmode = \"zookeeper\"\nnode_id = \"c1\"\n";
        let c = cluster_config(&[], zk);
        assert_eq!(refused_key(&c).as_deref(), Some("cluster.link_key"));
        let key = "ab".repeat(32);
        let c = cluster_config(&[("BROKER__CLUSTER__LINK_KEY", &key)], zk);
        assert_eq!(refused_key(&c).as_deref(), Some("discovery.zk_auth"));
        let c = cluster_config(
            &[
                ("BROKER__CLUSTER__LINK_KEY", &key),
                ("BROKER__DISCOVERY__ZK_AUTH", "plugcloud:pw"),
            ],
            zk,
        );
        assert_eq!(refused_key(&c), None);
        assert!(!format!("{c:?}").contains("plugcloud:pw"), "redacted");
        assert!(!format!("{c:?}").contains(&key), "redacted");
        // Static discovery and static RabbitMQ URLs: no ZooKeeper, so no zk_auth needed.
        let mut c = cluster_config(&[("BROKER__CLUSTER__LINK_KEY", &key)], zk);
        c.discovery.mode = DiscoveryMode::Static;
        c.cluster.rabbit_root = String::new();
        assert_eq!(refused_key(&c), None);
        // The rmqkeepers' view alone uses ZooKeeper too.
        c.cluster.rabbit_root = "/rabbitmq".into();
        assert_eq!(refused_key(&c).as_deref(), Some("discovery.zk_auth"));
    }
}
