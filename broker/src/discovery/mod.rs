//! Cluster discovery: which comet and msgbus nodes are alive, and where terminals should connect.
//!
//! How the pieces fit:
//! - [`NodeInfo`] is what a node publishes about itself (JSON in its znode); [`NodeView`] is the
//!   set of live nodes a process currently believes in, plus whether that belief is fresh.
//! - [`Discovery`] is the abstraction the rest of the broker uses: a `watch` channel of the view,
//!   a way to publish this node's load, and a clean shutdown. Two implementations:
//!   [`StaticDiscovery`] (a node list from config, no ZooKeeper) and [`ZkDiscovery`] (ephemeral
//!   znodes under `<root>/<role>/<id>`, watched, re-registered after session expiry).
//! - [`view`] holds the sans-IO merge logic ZkDiscovery feeds with ZooKeeper results;
//!   [`zk`] holds the session handling shared with the rmqkeeper ([`crate::keeper`]).
//! - [`lookup`] is node lookup for terminals (rendezvous hashing over live comets) and
//!   [`route`] its HTTP endpoint `GET /v1/nodes/lookup`.
//! - [`config`] is the `[discovery]` config section; [`metrics`] the gauges and counters.

pub mod config;
pub mod lookup;
pub mod metrics;
pub mod route;
pub mod static_list;
pub mod view;
pub mod zk;
pub mod zk_discovery;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use config::{DiscoveryConfig, Endpoints};
pub use static_list::StaticDiscovery;
pub use zk_discovery::ZkDiscovery;

/// A cluster role that registers in discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds terminal connections (UDP, device WebSocket, app WebSocket).
    Comet,
    /// Routes between comets and to/from RabbitMQ.
    Msgbus,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 2] = [Role::Comet, Role::Msgbus];

    /// The role's name: the znode directory and metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Comet => "comet",
            Role::Msgbus => "msgbus",
        }
    }

    /// Parses a role name (`comet`, `msgbus`).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Where a node can be reached. All fields are public endpoints as clients should dial them
/// (`host:port` for UDP and the link, `ws://host:port/path` for WebSockets); absent = not served.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeAddr {
    /// Device UDP endpoint (`host:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<String>,
    /// Device WebSocket URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws: Option<String>,
    /// App WebSocket URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_ws: Option<String>,
    /// Node-to-node (msgbus link) address, `host:port`; internal, never returned by lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// What one node publishes about itself: the JSON data of its znode,
/// `{"id":"comet-a","role":"comet","addr":{"udp":"...","ws":"...","app_ws":"..."},"load":12}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// Unique node id (also the znode name): `[A-Za-z0-9._-]`, 1..=64 characters.
    pub id: String,
    /// The node's role.
    pub role: Role,
    /// Its endpoints.
    pub addr: NodeAddr,
    /// Its current load (sessions held); updated periodically.
    #[serde(default)]
    pub load: u32,
}

/// Whether `id` is a valid node id (safe as a znode name and a metric value).
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != "."
        && id != ".."
}

/// The set of live nodes as this process sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Live nodes, sorted by (role, id).
    pub nodes: Vec<NodeInfo>,
    /// `true` while the view is known to be current (static list, or a live ZooKeeper session
    /// with watches set); `false` when the source is unreachable and this is the last known view.
    pub healthy: bool,
}

impl NodeView {
    /// Whether this is a last-known view served while the source is unreachable.
    pub fn is_stale(&self) -> bool {
        !self.healthy
    }

    /// The nodes with `role`, in id order.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    /// The node with `role` and `id`, if live.
    pub fn get(&self, role: Role, id: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.role == role && n.id == id)
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// This node's own description is unusable.
    #[error("invalid node id `{0}`: use 1..=64 characters of A-Z a-z 0-9 . _ -")]
    InvalidNodeId(String),
    /// A node in the static list is unusable or duplicated.
    #[error("static node list: {0}")]
    StaticList(String),
    /// The znode root is not an absolute ZooKeeper path.
    #[error("invalid znode root `{0}`: must start with `/`, not end with `/`, no empty segments")]
    InvalidRoot(String),
}

/// The discovery abstraction (see module docs). Cheap to share behind an `Arc`.
#[async_trait::async_trait]
pub trait Discovery: Send + Sync {
    /// A receiver of the live view; it changes whenever a node comes, goes, updates its load,
    /// or the view's health flips.
    fn view(&self) -> watch::Receiver<NodeView>;

    /// Publishes this node's current load (no-op for a static list). Cheap: the value is written
    /// to ZooKeeper on the next load-update tick.
    fn set_load(&self, load: u32);

    /// Deregisters this node (closes its session, so its znode goes at once) and stops watching.
    async fn shutdown(&self);
}

/// Checks a znode root: absolute, no trailing `/`, no empty segments.
pub fn validate_root(root: &str) -> Result<(), DiscoveryError> {
    let ok = root.starts_with('/')
        && root.len() > 1
        && !root.ends_with('/')
        && root[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(DiscoveryError::InvalidRoot(root.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_json_round_trip_and_shape() {
        let n = NodeInfo {
            id: "comet-a".into(),
            role: Role::Comet,
            addr: NodeAddr {
                udp: Some("10.0.0.1:8083".into()),
                ws: Some("ws://10.0.0.1:8081/".into()),
                app_ws: None,
                link: None,
            },
            load: 3,
        };
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(
            json,
            r#"{"id":"comet-a","role":"comet","addr":{"udp":"10.0.0.1:8083","ws":"ws://10.0.0.1:8081/"},"load":3}"#
        );
        assert_eq!(serde_json::from_str::<NodeInfo>(&json).unwrap(), n);
        assert!(
            serde_json::from_str::<NodeInfo>(r#"{"id":"x","role":"gateway","addr":{}}"#).is_err()
        );
    }

    #[test]
    fn node_ids_and_roots_are_checked() {
        assert!(valid_node_id("comet-a.1_b"));
        for bad in ["", "a/b", "..", "é", &"x".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad}");
        }
        assert!(validate_root("/broker").is_ok());
        assert!(validate_root("/a/b").is_ok());
        for bad in ["", "/", "broker", "/a/", "/a//b", "/a/../b"] {
            assert!(validate_root(bad).is_err(), "{bad}");
        }
        assert_eq!(Role::parse("msgbus"), Some(Role::Msgbus));
        assert_eq!(Role::parse("x"), None);
    }
}
