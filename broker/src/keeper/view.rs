//! [`RabbitView`]: the healthy RabbitMQ nodes as rmqkeepers registered them, live.
//!
//! For the upload publisher (msgbus): start one with the ZooKeeper settings and the keepers'
//! root, read [`RabbitView::watch`] (or [`RabbitView::amqp_urls`]) and fail over when the node in
//! use leaves the set. The published `amqp_url` carries no credentials: add the publisher's own
//! with [`RabbitNode::amqp_url_with_credentials`]. While ZooKeeper is unreachable the last known
//! set is kept with `healthy: false`. One task, one session; a dead session is re-created.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use zookeeper_client::{AddWatchMode, Client, Error as ZkError, EventType};

use crate::discovery::zk::{self, Backoff, ZkSettings};
use crate::discovery::{DiscoveryError, validate_root};

/// What an rmqkeeper writes into `<root>/<node-name>`:
/// `{"amqp_url":"amqp://10.0.0.5:5672/%2f","mgmt_url":"http://10.0.0.5:15672/","node":"rabbit@mq1"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RabbitNode {
    /// AMQP URL without credentials.
    pub amqp_url: String,
    /// Management API base URL without credentials.
    pub mgmt_url: String,
    /// RabbitMQ node name (also the znode name).
    pub node: String,
}

impl RabbitNode {
    /// The AMQP URL with `user` and `password` filled in (percent-encoded as needed).
    pub fn amqp_url_with_credentials(&self, user: &str, password: &str) -> Option<String> {
        let mut u = Url::parse(&self.amqp_url).ok()?;
        u.set_username(user).ok()?;
        u.set_password(Some(password)).ok()?;
        Some(u.to_string())
    }
}

/// The set of healthy RabbitMQ nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RabbitNodes {
    /// Registered nodes, sorted by node name.
    pub nodes: Vec<RabbitNode>,
    /// `false` while ZooKeeper is unreachable and this is the last known set.
    pub healthy: bool,
}

/// Sans-IO: a children listing of `<root>` (name, data) to the node set; bad data is skipped and
/// returned as `(name, error)`.
pub fn parse_listing(
    entries: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> (Vec<RabbitNode>, Vec<(String, String)>) {
    let mut nodes = BTreeMap::new();
    let mut bad = Vec::new();
    for (name, data) in entries {
        match serde_json::from_slice::<RabbitNode>(&data) {
            Ok(n) if n.node == name => {
                nodes.insert(name, n);
            }
            Ok(n) => bad.push((name, format!("data names node `{}`", n.node))),
            Err(e) => bad.push((name, e.to_string())),
        }
    }
    (nodes.into_values().collect(), bad)
}

/// A live reader of the rmqkeepers' registrations (see module docs).
pub struct RabbitView {
    rx: watch::Receiver<RabbitNodes>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl RabbitView {
    /// Starts watching `root` (e.g. `/rabbitmq`) on the current tokio runtime. The set is empty
    /// and not healthy until the first listing.
    pub fn start(zk: ZkSettings, root: &str) -> Result<RabbitView, DiscoveryError> {
        validate_root(root)?;
        let (tx, rx) = watch::channel(RabbitNodes::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(zk, root.to_string(), tx, cancel.clone()));
        Ok(RabbitView {
            rx,
            cancel,
            task: Mutex::new(Some(task)),
        })
    }

    /// A receiver of the set; changes when a node registers or leaves, or health flips.
    pub fn watch(&self) -> watch::Receiver<RabbitNodes> {
        self.rx.clone()
    }

    /// The AMQP URLs (without credentials) of the nodes registered now.
    pub fn amqp_urls(&self) -> Vec<String> {
        self.rx
            .borrow()
            .nodes
            .iter()
            .map(|n| n.amqp_url.clone())
            .collect()
    }

    /// Stops watching and closes the session.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for RabbitView {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn set_stale(tx: &watch::Sender<RabbitNodes>, why: &str) {
    tx.send_if_modified(|v| {
        if v.healthy {
            warn!(
                nodes = v.nodes.len(),
                "rabbit view: ZooKeeper {why}; keeping the last known nodes"
            );
            v.healthy = false;
            true
        } else {
            false
        }
    });
}

async fn list(client: &Client, root: &str, tx: &watch::Sender<RabbitNodes>) -> Result<(), ZkError> {
    let (nodes, bad) = parse_listing(zk::children_with_data(client, root).await?);
    for (name, why) in bad {
        warn!(znode = %format!("{root}/{name}"), "rabbit view: ignoring znode: {why}");
    }
    let next = RabbitNodes {
        nodes,
        healthy: true,
    };
    tx.send_if_modified(|v| {
        if *v == next {
            false
        } else {
            let names: Vec<&str> = next.nodes.iter().map(|n| n.node.as_str()).collect();
            info!(nodes = ?names, "rabbit view: healthy RabbitMQ nodes");
            *v = next;
            true
        }
    });
    Ok(())
}

async fn session(
    client: &Client,
    settings: &ZkSettings,
    root: &str,
    tx: &watch::Sender<RabbitNodes>,
    cancel: &CancellationToken,
) -> Result<(), ZkError> {
    zk::mkdir_p(client, settings, root).await?;
    let mut states = client.state_watcher();
    // Persistent (not recursive) watch on the root: children and data changes of the root only;
    // registrations never change data, so re-listing on each event is enough.
    let mut watcher = client.watch(root, AddWatchMode::Persistent).await?;
    list(client, root, tx).await?;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            state = states.changed() => {
                if zk::is_dead(state) {
                    return Err(ZkError::SessionExpired);
                }
                match state {
                    zookeeper_client::SessionState::Disconnected => set_stale(tx, "connection lost"),
                    _ => list(client, root, tx).await?,
                }
            }
            event = watcher.changed() => {
                if event.event_type == EventType::Session {
                    if zk::is_dead(event.session_state) {
                        return Err(ZkError::SessionExpired);
                    }
                } else {
                    list(client, root, tx).await?;
                }
            }
        }
    }
}

async fn run(
    zk: ZkSettings,
    root: String,
    tx: watch::Sender<RabbitNodes>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            r = zk::connect(&zk) => r,
        };
        match connected {
            Ok(client) => {
                backoff.reset();
                match session(&client, &zk, &root, &tx, &cancel).await {
                    Ok(()) => return,
                    Err(e) => {
                        warn!(error = %e, "rabbit view: ZooKeeper session ended; reconnecting");
                        set_stale(&tx, "session ended");
                    }
                }
            }
            Err(e) => {
                warn!(servers = %zk.servers, error = %e, "rabbit view: cannot reach ZooKeeper");
                set_stale(&tx, "unreachable");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(node: &str, port: u16) -> Vec<u8> {
        serde_json::to_vec(&RabbitNode {
            amqp_url: format!("amqp://127.0.0.1:{port}/%2f"),
            mgmt_url: "http://127.0.0.1:1/".into(),
            node: node.into(),
        })
        .unwrap()
    }

    #[test]
    fn listing_is_sorted_and_rejects_bad_entries() {
        let (nodes, bad) = parse_listing([
            ("rabbit2@h".to_string(), data("rabbit2@h", 2)),
            ("rabbit1@h".to_string(), data("rabbit1@h", 1)),
            ("x".to_string(), data("rabbit9@h", 9)),
            ("y".to_string(), b"{".to_vec()),
        ]);
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["rabbit1@h", "rabbit2@h"]);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].0, "x");
    }

    #[test]
    fn credentials_are_added_encoded() {
        let n: RabbitNode = serde_json::from_slice(&data("r", 5672)).unwrap();
        assert_eq!(
            n.amqp_url_with_credentials("guest", "p@ss/w").unwrap(),
            "amqp://guest:p%40ss%2Fw@127.0.0.1:5672/%2f"
        );
    }
}
