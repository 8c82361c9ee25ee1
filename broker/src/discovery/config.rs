//! The `[discovery]` config section (one field of [`crate::config::Config`]): how cluster nodes
//! find each other and what this node advertises. Validation names the offending key the way the
//! rest of the config does (`discovery.<key>`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::zk::{ZkAuth, ZkSettings};
use super::{NodeAddr, NodeInfo, Role, valid_node_id, validate_root};
use crate::secret::Secret;

/// Where the node list comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoveryMode {
    /// Standalone broker: no cluster discovery.
    #[default]
    None,
    /// The fixed list in `discovery.static_nodes`.
    Static,
    /// Ephemeral znodes in ZooKeeper (`discovery.zk_servers`, `discovery.root`).
    Zookeeper,
}

/// `[discovery]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `none`, `static` or `zookeeper`.
    pub mode: DiscoveryMode,
    /// ZooKeeper connect string (`host:port,host:port`).
    pub zk_servers: String,
    /// Znode root; nodes register under `<root>/<role>/<node_id>`.
    pub root: String,
    /// ZooKeeper digest credentials `user:password` (a secret): added to every session, and the
    /// only identity allowed to read or change the znodes this node creates. Required by the
    /// cluster roles whenever they use ZooKeeper (`mode = "zookeeper"` or `cluster.rabbit_root`).
    pub zk_auth: Secret,
    /// ZooKeeper session timeout asked for, milliseconds (the server clamps it to 2..20 ticks).
    pub session_timeout_ms: u64,
    /// How often this node's load is written to its znode, seconds.
    pub load_update_secs: u64,
    /// This node's id: unique in the cluster, `[A-Za-z0-9._-]`, 1..=64 characters.
    pub node_id: String,
    /// Device UDP endpoint advertised to terminals (`host:port`); empty = the `listen.udp` address.
    pub advertise_udp: String,
    /// Device WebSocket URL advertised; empty = `ws://<listen.device_ws>/`.
    pub advertise_ws: String,
    /// App WebSocket URL advertised; empty = `ws://<listen.app_ws>/`.
    pub advertise_app_ws: String,
    /// msgbus link address advertised to other nodes (`host:port`); empty = none.
    pub advertise_link: String,
    /// How many comets `GET /v1/nodes/lookup` returns (primary first, then fallbacks).
    pub lookup_max: u32,
    /// The node list for `mode = "static"`: `{ id, role, addr = { udp, ws, app_ws, link } }`.
    pub static_nodes: Vec<NodeInfo>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            mode: DiscoveryMode::None,
            zk_servers: "127.0.0.1:2181".into(),
            root: "/broker".into(),
            zk_auth: Secret::default(),
            session_timeout_ms: 10000,
            load_update_secs: 10,
            node_id: String::new(),
            advertise_udp: String::new(),
            advertise_ws: String::new(),
            advertise_app_ws: String::new(),
            advertise_link: String::new(),
            lookup_max: 3,
            static_nodes: Vec::new(),
        }
    }
}

fn err<T>(key: &str, reason: impl Into<String>) -> Result<T, (String, String)> {
    Err((format!("discovery.{key}"), reason.into()))
}

impl DiscoveryConfig {
    /// Checks the section; returns the offending key (`discovery.…`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if validate_root(&self.root).is_err() {
            return err(
                "root",
                "must be an absolute znode path like /broker (no trailing /, no empty segments)",
            );
        }
        if !self.zk_auth.is_empty() && ZkAuth::parse(self.zk_auth.expose()).is_none() {
            return err("zk_auth", "must be user:password (both non-empty) or empty");
        }
        if !(1000..=600_000).contains(&self.session_timeout_ms) {
            return err("session_timeout_ms", "must be within 1000..=600000");
        }
        if self.load_update_secs == 0 {
            return err("load_update_secs", "must be greater than 0");
        }
        if self.lookup_max == 0 {
            return err("lookup_max", "must be greater than 0");
        }
        if !self.node_id.is_empty() && !valid_node_id(&self.node_id) {
            return err(
                "node_id",
                "must be 1..=64 characters of A-Z a-z 0-9 . _ - (or empty outside cluster mode)",
            );
        }
        for (key, v) in [
            ("advertise_ws", &self.advertise_ws),
            ("advertise_app_ws", &self.advertise_app_ws),
        ] {
            if !v.is_empty() && !v.starts_with("ws://") && !v.starts_with("wss://") {
                return err(key, "must be empty or a ws:// or wss:// URL");
            }
        }
        for (key, v) in [
            ("advertise_udp", &self.advertise_udp),
            ("advertise_link", &self.advertise_link),
        ] {
            if !v.is_empty() && !looks_like_host_port(v) {
                return err(key, "must be empty or host:port");
            }
        }
        match self.mode {
            DiscoveryMode::None => {}
            DiscoveryMode::Zookeeper => {
                if self.zk_servers.trim().is_empty() {
                    return err("zk_servers", "must not be empty in zookeeper mode");
                }
                if self.node_id.is_empty() {
                    return err("node_id", "must be set in zookeeper mode");
                }
            }
            DiscoveryMode::Static => {
                if self.static_nodes.is_empty() {
                    return err("static_nodes", "must list at least one node in static mode");
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (i, n) in self.static_nodes.iter().enumerate() {
            if !valid_node_id(&n.id) {
                return err(
                    &format!("static_nodes[{i}].id"),
                    "must be 1..=64 characters of A-Z a-z 0-9 . _ -",
                );
            }
            if !seen.insert((n.role, n.id.as_str())) {
                return err(
                    &format!("static_nodes[{i}].id"),
                    format!("duplicate {} `{}`", n.role.as_str(), n.id),
                );
            }
        }
        Ok(())
    }

    /// The ZooKeeper session timeout.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }

    /// How to connect to ZooKeeper: servers, session timeout and the `zk_auth` credentials.
    pub fn zk_settings(&self) -> ZkSettings {
        ZkSettings {
            servers: self.zk_servers.clone(),
            session_timeout: self.session_timeout(),
            auth: ZkAuth::parse(self.zk_auth.expose()),
        }
    }

    /// The load update period.
    pub fn load_update(&self) -> Duration {
        Duration::from_secs(self.load_update_secs)
    }

    /// What this node advertises: the `advertise_*` keys, or for a comet its listening [`Endpoints`]
    /// (`udp`, `device_ws`, `app_ws`) where those are empty. Fails when a listen address is a
    /// wildcard (0.0.0.0 / ::) and no advertised address replaces it: nobody could dial it.
    pub fn self_info(&self, role: Role, listen: &Endpoints) -> Result<NodeInfo, (String, String)> {
        if !valid_node_id(&self.node_id) {
            return err(
                "node_id",
                "must be set (1..=64 characters of A-Z a-z 0-9 . _ -)",
            );
        }
        let pick = |key: &str, set: &str, from: SocketAddr, url: bool| {
            if !set.is_empty() {
                return Ok(Some(set.to_string()));
            }
            if from.ip().is_unspecified() {
                return err(
                    key,
                    format!("must be set: the listen address {from} is not dialable"),
                );
            }
            Ok(Some(if url {
                format!("ws://{from}/")
            } else {
                from.to_string()
            }))
        };
        let addr = match role {
            Role::Comet => NodeAddr {
                udp: pick("advertise_udp", &self.advertise_udp, listen.udp, false)?,
                ws: pick("advertise_ws", &self.advertise_ws, listen.device_ws, true)?,
                app_ws: pick(
                    "advertise_app_ws",
                    &self.advertise_app_ws,
                    listen.app_ws,
                    true,
                )?,
                link: non_empty(&self.advertise_link),
            },
            Role::Msgbus => NodeAddr {
                link: non_empty(&self.advertise_link),
                ..NodeAddr::default()
            },
        };
        Ok(NodeInfo {
            id: self.node_id.clone(),
            role,
            addr,
            load: 0,
        })
    }
}

/// The terminal-facing addresses a comet listens on, which it advertises unless the
/// `advertise_*` keys say otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Device UDP.
    pub udp: SocketAddr,
    /// Device WebSocket.
    pub device_ws: SocketAddr,
    /// App WebSocket.
    pub app_ws: SocketAddr,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn looks_like_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(c: &DiscoveryConfig) -> String {
        c.validate().unwrap_err().0
    }

    #[test]
    fn defaults_are_valid_and_standalone() {
        let c = DiscoveryConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.mode, DiscoveryMode::None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = DiscoveryConfig {
            root: "broker".into(),
            ..DiscoveryConfig::default()
        };
        assert_eq!(key_of(&c), "discovery.root");
        c.root = "/broker".into();
        c.mode = DiscoveryMode::Zookeeper;
        assert_eq!(key_of(&c), "discovery.node_id");
        c.node_id = "a/b".into();
        assert_eq!(key_of(&c), "discovery.node_id");
        c.node_id = "comet-a".into();
        assert_eq!(c.validate(), Ok(()));
        c.session_timeout_ms = 10;
        assert_eq!(key_of(&c), "discovery.session_timeout_ms");
        c.session_timeout_ms = 4000;
        c.advertise_ws = "http://x/".into();
        assert_eq!(key_of(&c), "discovery.advertise_ws");
        c.advertise_ws = String::new();
        c.advertise_udp = "nohost".into();
        assert_eq!(key_of(&c), "discovery.advertise_udp");
        c.advertise_udp = "plug.example:8083".into();
        c.mode = DiscoveryMode::Static;
        assert_eq!(key_of(&c), "discovery.static_nodes");
        let n = NodeInfo {
            id: "a".into(),
            role: Role::Comet,
            addr: NodeAddr::default(),
            load: 0,
        };
        c.static_nodes = vec![n.clone(), n];
        let (key, reason) = c.validate().unwrap_err();
        assert_eq!(key, "discovery.static_nodes[1].id");
        assert_eq!(reason, "duplicate comet `a`");
    }

    #[test]
    fn static_nodes_parse_from_toml() {
        let c: DiscoveryConfig = toml::from_str(
            r#"
            mode = "static"
            static_nodes = [
              { id = "a", role = "comet", addr = { udp = "10.0.0.1:8083", ws = "ws://10.0.0.1:8081/" } },
              { id = "m", role = "msgbus", addr = { link = "10.0.0.9:7000" } },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.static_nodes[0].addr.udp.as_deref(), Some("10.0.0.1:8083"));
        assert_eq!(c.static_nodes[1].role, Role::Msgbus);
    }

    #[test]
    fn self_info_uses_advertised_or_listen_addresses() {
        let mut c = DiscoveryConfig {
            node_id: "c1".into(),
            ..DiscoveryConfig::default()
        };
        let mut listen = Endpoints {
            udp: ([127, 0, 0, 1], 8083).into(),
            device_ws: ([127, 0, 0, 1], 8081).into(),
            app_ws: ([127, 0, 0, 1], 8082).into(),
        };
        let me = c.self_info(Role::Comet, &listen).unwrap();
        assert_eq!(me.addr.udp.as_deref(), Some("127.0.0.1:8083"));
        assert_eq!(me.addr.ws.as_deref(), Some("ws://127.0.0.1:8081/"));
        assert_eq!(me.addr.app_ws.as_deref(), Some("ws://127.0.0.1:8082/"));
        listen.udp = "0.0.0.0:8083".parse().unwrap();
        assert_eq!(
            c.self_info(Role::Comet, &listen).unwrap_err().0,
            "discovery.advertise_udp"
        );
        c.advertise_udp = "plug.example:8083".into();
        let me = c.self_info(Role::Comet, &listen).unwrap();
        assert_eq!(me.addr.udp.as_deref(), Some("plug.example:8083"));
        c.advertise_link = "10.0.0.2:7000".into();
        let bus = c.self_info(Role::Msgbus, &listen).unwrap();
        assert_eq!(bus.addr.link.as_deref(), Some("10.0.0.2:7000"));
        assert_eq!(bus.addr.udp, None);
    }
}
