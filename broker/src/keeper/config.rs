//! The `[rmqkeeper]` section of the configuration file every role shares (one field of
//! [`crate::config::Config`]). The keeper reads ZooKeeper's address and credentials from
//! `[discovery]` (`zk_servers`, `zk_auth`) and its default znode root from `cluster.rabbit_root`,
//! like the comet and msgbus nodes, so one file describes the whole cluster. Flags and
//! `RMQKEEPER_*` variables override each key ([`super::args`] merges and validates them).

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// `[rmqkeeper]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeeperSection {
    /// AMQP URL of the guarded node as publishers dial it (`amqp://host:port/vhost`); empty:
    /// give `--amqp-url`.
    pub amqp_url: String,
    /// Management API base URL (`http://host:15672`); empty: give `--mgmt-url`.
    pub mgmt_url: String,
    /// Management API user (empty: the one in `mgmt_url`).
    pub mgmt_user: String,
    /// Management API password (a secret; empty: the one in `mgmt_url`).
    pub mgmt_password: Secret,
    /// Virtual host whose aliveness is checked.
    pub vhost: String,
    /// Znode root the node registers under; empty: `cluster.rabbit_root`.
    pub root: String,
    /// Health check interval, milliseconds.
    pub check_interval_ms: u64,
    /// ZooKeeper session timeout, milliseconds; 0: `discovery.session_timeout_ms`.
    pub session_timeout_ms: u64,
    /// Znode name; empty: the node name the management API reports (`rabbit@host`).
    pub node_name: String,
    /// Where `/healthz` and `/metrics` are served (`host:port` with a numeric IP, no token: keep
    /// it on a private address), e.g. `127.0.0.1:9102`; empty (the default, so several keepers
    /// can share a machine): not served.
    pub listen: String,
}

impl Default for KeeperSection {
    fn default() -> Self {
        KeeperSection {
            amqp_url: String::new(),
            mgmt_url: String::new(),
            mgmt_user: String::new(),
            mgmt_password: Secret::default(),
            vhost: "/".into(),
            root: String::new(),
            check_interval_ms: 5000,
            session_timeout_ms: 0,
            node_name: String::new(),
            listen: String::new(),
        }
    }
}
