//! The probes behind `broker cluster status`, one per service, each bounded by a timeout and
//! reporting failure as a [`Check`] instead of an error: ZooKeeper (the registered comet and
//! msgbus nodes, and the RabbitMQ nodes the rmqkeepers registered), Redis (reachability, each
//! node's heartbeat and terminal count in the online registry) and RabbitMQ (an AMQP connection
//! with the cluster's credentials). Nothing is written anywhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use super::report::{Check, NodeStatus, RabbitStatus};
use crate::discovery::view::ViewState;
use crate::discovery::zk;
use crate::discovery::{DiscoveryConfig, NodeInfo, Role};
use crate::keeper::RabbitNode;
use crate::keeper::view::parse_listing;
use crate::store::redis::{OnlineRegistry, RedisConfig, RedisConn};
use crate::uploads::RabbitConfig;
use crate::uploads::nodes;

/// What ZooKeeper holds.
#[derive(Debug)]
pub struct ZkFindings {
    /// Whether ZooKeeper answered.
    pub check: Check,
    /// Comet and msgbus nodes, sorted by role, then id.
    pub nodes: Vec<NodeInfo>,
    /// Znodes that are not node or RabbitMQ descriptions, with the reason.
    pub rejected: Vec<String>,
    /// RabbitMQ nodes registered under `rabbit_root` (when one was given).
    pub rabbit: Vec<RabbitNode>,
}

/// Reads every node under `cfg.root` and, when `rabbit_root` is given, the RabbitMQ nodes under
/// it, in one short session.
pub async fn zookeeper(
    cfg: &DiscoveryConfig,
    rabbit_root: Option<&str>,
    timeout: Duration,
) -> ZkFindings {
    let target = cfg.zk_servers.clone();
    let read = async {
        let mut settings = cfg.zk_settings();
        settings.session_timeout = settings.session_timeout.min(timeout);
        let client = zk::connect(&settings).await?;
        let mut entries = Vec::new();
        for role in Role::ALL {
            let dir = format!("{}/{}", cfg.root, role.as_str());
            for (name, data) in zk::children_with_data(&client, &dir).await? {
                entries.push((format!("{dir}/{name}"), data));
            }
        }
        let rabbit = match rabbit_root {
            Some(root) => zk::children_with_data(&client, root).await?,
            None => Vec::new(),
        };
        Ok::<_, zookeeper_client::Error>((entries, rabbit))
    };
    let (entries, rabbit) = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return failed_zk(target, e.to_string()),
        Err(_) => return failed_zk(target, format!("no answer within {timeout:?}")),
    };
    let mut state = ViewState::new(&cfg.root);
    let mut rejected: Vec<String> = state
        .replace_all(entries.iter().map(|(p, d)| (p.as_str(), d.as_slice())))
        .iter()
        .map(ToString::to_string)
        .collect();
    let (rabbit, bad) = parse_listing(rabbit);
    let root = rabbit_root.unwrap_or_default();
    rejected.extend(
        bad.into_iter()
            .map(|(name, why)| format!("{root}/{name}: {why}")),
    );
    ZkFindings {
        check: Check::ok(target),
        nodes: state.snapshot().nodes,
        rejected,
        rabbit,
    }
}

fn failed_zk(target: String, error: String) -> ZkFindings {
    ZkFindings {
        check: Check::failed(target, error),
        nodes: Vec::new(),
        rejected: Vec::new(),
        rabbit: Vec::new(),
    }
}

/// Where `cfg` points, without credentials.
pub fn redis_target(cfg: &RedisConfig) -> String {
    if cfg.sentinels.is_empty() {
        crate::config::redact_url_password(&cfg.url)
    } else {
        let sentinels: Vec<String> = cfg
            .sentinels
            .iter()
            .map(|s| crate::config::redact_url_password(s))
            .collect();
        format!("master {} via {}", cfg.master_name, sentinels.join(","))
    }
}

/// Connects to Redis, pings it, and fills each node's heartbeat and terminal count from the
/// online registry. On failure every node's Redis fields stay `None`.
pub async fn redis(cfg: &RedisConfig, nodes: &mut [NodeStatus], timeout: Duration) -> Check {
    let target = redis_target(cfg);
    let read = async {
        let conn = Arc::new(RedisConn::connect(cfg).await.map_err(|e| e.to_string())?);
        let mut c = conn.get().await;
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
        conn.check(pong).await.map_err(|e| e.to_string())?;
        let registry = OnlineRegistry::new(conn);
        let terminals = registry
            .terminals_by_node()
            .await
            .map_err(|e| e.to_string())?;
        let mut alive = BTreeMap::new();
        for n in nodes.iter() {
            let a = registry.is_alive(&n.id).await.map_err(|e| e.to_string())?;
            alive.insert(n.id.clone(), a);
        }
        Ok::<_, String>((terminals, alive))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok((terminals, alive))) => {
            for n in nodes.iter_mut() {
                n.redis_heartbeat = alive.get(&n.id).copied();
                n.terminals = Some(terminals.get(&n.id).copied().unwrap_or(0));
            }
            Check::ok(target)
        }
        Ok(Err(e)) => Check::failed(target, e),
        Err(_) => Check::failed(target, format!("no answer within {timeout:?}")),
    }
}

/// `host:port` of an AMQP URL, or the URL without credentials when it does not parse.
fn amqp_name(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) if u.host_str().is_some() => {
            format!(
                "{}:{}",
                u.host_str().unwrap_or_default(),
                u.port().unwrap_or(5672)
            )
        }
        _ => nodes::redact(url),
    }
}

/// Opens (and closes) one AMQP connection to each node with the cluster's credentials: the
/// registered nodes when `registered` is `Some`, else the static `rabbitmq.urls`.
pub async fn rabbitmq(
    cfg: &RabbitConfig,
    registered: Option<&[RabbitNode]>,
    timeout: Duration,
) -> Vec<RabbitStatus> {
    let targets: Vec<(String, String, String)> = match registered {
        Some(nodes) => nodes
            .iter()
            .map(|n| {
                let url = n
                    .amqp_url_with_credentials(&cfg.user, &cfg.password)
                    .unwrap_or_else(|| n.amqp_url.clone());
                (n.node.clone(), n.amqp_url.clone(), url)
            })
            .collect(),
        None => cfg
            .urls
            .iter()
            .map(|u| (amqp_name(u), nodes::redact(u), u.clone()))
            .collect(),
    };
    let mut out = Vec::with_capacity(targets.len());
    for (name, shown, url) in targets {
        let amqp = match nodes::connect(&url, timeout, "broker cluster status").await {
            Ok(conn) => {
                let _ = conn.close(200, "status probe done".into()).await;
                Check::ok(shown)
            }
            Err(e) => Check::failed(shown, e),
        };
        out.push(RabbitStatus { name, amqp });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_show_credentials() {
        let mut cfg = RedisConfig {
            url: "redis://:hunter2@10.0.0.7:6379/0".into(),
            ..RedisConfig::default()
        };
        assert!(!redis_target(&cfg).contains("hunter2"));
        cfg.sentinels = vec!["redis://s1:26379".into(), "redis://s2:26379".into()];
        cfg.master_name = "main".into();
        assert_eq!(
            redis_target(&cfg),
            "master main via redis://s1:26379,redis://s2:26379"
        );
        assert_eq!(amqp_name("amqp://u:secret@mq1:5673/%2f"), "mq1:5673");
        assert_eq!(amqp_name("amqp://mq2/%2f"), "mq2:5672");
    }
}
