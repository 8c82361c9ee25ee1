//! The `[cluster]` config section (one field of [`crate::config::Config`]): what the `comet` and
//! `msgbus` roles need beyond `[discovery]`, `[redis]` and `[rabbitmq]`. Validation names the
//! offending key as `cluster.<key>`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::link_auth::LinkKey;
use crate::secret::Secret;

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// comet: where msgbus nodes connect their links (advertised as `discovery.advertise_link`,
    /// or this address when that is empty).
    pub link_listen: SocketAddr,
    /// How often a node refreshes its heartbeat key in Redis, milliseconds.
    pub heartbeat_ms: u64,
    /// Lifetime of the heartbeat key, milliseconds: a node silent this long is declared dead and
    /// its online-registry entries are swept.
    pub node_ttl_ms: u64,
    /// How often every node sweeps dead nodes' entries from the online registry, milliseconds.
    pub sweep_interval_ms: u64,
    /// comet: how often local logouts are reconciled into the online registry, milliseconds.
    pub reconcile_ms: u64,
    /// Frames queued per link before new ones are dropped (the message stays stored in Redis
    /// and is replayed at the terminal's next login).
    pub link_queue: usize,
    /// First reconnect delay of a msgbus link, milliseconds (doubles up to `reconnect_max_ms`).
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay, milliseconds.
    pub reconnect_max_ms: u64,
    /// Znode root the rmqkeepers register healthy RabbitMQ nodes under; empty = use the static
    /// `rabbitmq.urls` instead.
    pub rabbit_root: String,
    /// The cluster key, 64 hex digits (a secret, the same on every node): links authenticate
    /// with it and seal every frame under keys derived from it (docs/deployment.md, "Node
    /// links"). Required by the cluster roles.
    pub link_key: Secret,
    /// Commands from one link running at once; above it a command is answered `Overloaded` at
    /// once and counted in `broker_limit_rejections_total{limit="max_inflight_commands"}`.
    pub max_inflight_commands: usize,
    /// Entries kept in each comet's delivery-notice stream in Redis (docs/deployment.md,
    /// "Delivery order"): a comet that falls further behind counts the gap and its sessions
    /// re-read the store. At least 1.
    pub stream_maxlen: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            link_listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            heartbeat_ms: 1000,
            node_ttl_ms: 5000,
            sweep_interval_ms: 2000,
            reconcile_ms: 500,
            link_queue: 4096,
            reconnect_min_ms: 100,
            reconnect_max_ms: 5000,
            rabbit_root: "/rabbitmq".into(),
            link_key: Secret::default(),
            max_inflight_commands: 256,
            stream_maxlen: 100_000,
        }
    }
}

fn err<T>(key: &str, reason: impl Into<String>) -> Result<T, (String, String)> {
    Err((format!("cluster.{key}"), reason.into()))
}

impl ClusterConfig {
    /// Checks the section; returns the offending key (`cluster.…`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (key, v) in [
            ("heartbeat_ms", self.heartbeat_ms),
            ("sweep_interval_ms", self.sweep_interval_ms),
            ("reconcile_ms", self.reconcile_ms),
            ("reconnect_min_ms", self.reconnect_min_ms),
            ("stream_maxlen", self.stream_maxlen),
        ] {
            if v == 0 {
                return err(key, "must be greater than 0");
            }
        }
        if self.node_ttl_ms < 2 * self.heartbeat_ms {
            return err("node_ttl_ms", "must be at least twice cluster.heartbeat_ms");
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return err("reconnect_max_ms", "must be >= cluster.reconnect_min_ms");
        }
        if self.link_queue == 0 {
            return err("link_queue", "must be greater than 0");
        }
        if self.max_inflight_commands == 0 {
            return err("max_inflight_commands", "must be greater than 0");
        }
        if !self.link_key.is_empty() && self.parsed_link_key().is_none() {
            return err("link_key", "must be 64 hex digits (32 bytes) or empty");
        }
        if !self.rabbit_root.is_empty()
            && crate::discovery::validate_root(&self.rabbit_root).is_err()
        {
            return err(
                "rabbit_root",
                "must be empty or an absolute znode path like /rabbitmq",
            );
        }
        Ok(())
    }

    /// The cluster key, `None` when unset or malformed.
    pub fn parsed_link_key(&self) -> Option<LinkKey> {
        LinkKey::from_hex(self.link_key.expose())
    }

    /// Heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// Heartbeat key TTL.
    pub fn node_ttl(&self) -> Duration {
        Duration::from_millis(self.node_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        assert_eq!(ClusterConfig::default().validate(), Ok(()));
        let c = ClusterConfig {
            node_ttl_ms: 1000,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "cluster.node_ttl_ms");
        let c = ClusterConfig {
            rabbit_root: "rabbit".into(),
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "cluster.rabbit_root");
        let c = ClusterConfig {
            link_queue: 0,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "cluster.link_queue");
        let c = ClusterConfig {
            link_key: Secret::new("abc"),
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "cluster.link_key");
        let c = ClusterConfig {
            link_key: Secret::new("0f".repeat(32)),
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
        assert!(c.parsed_link_key().is_some());
        let c = ClusterConfig {
            max_inflight_commands: 0,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "cluster.max_inflight_commands");
    }
}
