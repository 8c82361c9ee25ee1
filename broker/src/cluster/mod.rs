//! Cluster mode: the `comet` and `msgbus` roles (docs/deployment.md).
//!
//! Both roles reuse the standalone start path ([`crate::start_with`]) with other parts plugged
//! in; the router itself knows nothing of the cluster.
//!
//! * **comet** ([`crate::roles::start_comet`]): terminal endpoints + router over the shared Redis stores
//!   ([`crate::store::redis`]). Logins are registered in the Redis online registry
//!   ([`presence`], heartbeat and dead-node sweep) with a per-terminal session generation
//!   ([`claims`]); in the `plug` profile a login replaces the terminal's session on any other
//!   comet, which kicks it when it is older ([`generations`]); the node registers in discovery (role
//!   comet, advertised endpoints + link address) and serves `GET /v1/nodes/lookup`. msgbus
//!   nodes connect to its link listener ([`link::CometLinks`]). The comet offers stored
//!   messages to its sessions only from its delivery-notice stream in Redis ([`delivery`]): the
//!   script that issues a message's id notifies every comet holding a recipient, so each comet
//!   sees one order whichever node stored the message.
//!   Device uploads go straight to RabbitMQ ([`uploads::SinkSpool`] over
//!   [`crate::uploads::RabbitUploadSink`], nodes from the rmqkeepers' view): the device's ack
//!   waits for the publisher confirm or the durable local spool.
//! * **msgbus** ([`crate::roles::start_msgbus`]): the HTTP API for the backend over the same Redis stores
//!   (a push it stores reaches the comets through their delivery-notice streams); links to every
//!   live comet ([`link::LinkManager`]) for commands and replace notices; backend pushes are
//!   also consumed from RabbitMQ ([`crate::uploads::PushConsumer`]).
//!
//! Both roles give the HTTP API a [`commands::ClusterCommands`]: a device command sent to any
//! node's API reaches the device on whichever comet holds it (over the links), and terminal
//! status answers from the cluster-wide online registry.
//!
//! [`frame`] is the link wire format, sealed by [`link_auth`] (authenticated handshake over the
//! cluster key `cluster.link_key`, which both roles refuse to start without); [`config`] the
//! `[cluster]` section. Links, presence and
//! discovery record to the node's [`Metrics`](crate::metrics::Metrics) (served at `/metrics`), and
//! [`redis_health`] probes the node's Redis connection for it.

pub mod claims;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod frame;
pub mod generations;
pub mod hooks;
pub mod link;
pub mod link_auth;
pub mod presence;
pub mod redis_health;
pub mod uploads;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::ClusterConfig;

use crate::discovery::{Discovery, DiscoveryError, NodeView, Role};
use crate::keeper::RabbitView;
use crate::store::StoreError;
use crate::store::redis::RedisConnError;
use crate::uploads::{PushConsumer, RabbitUploadSink};
use crate::{Running, StartError};

/// Why a cluster role could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A configuration key is wrong for this role.
    #[error("key `{0}`: {1}")]
    Config(String, String),
    /// Redis could not be reached.
    #[error(transparent)]
    Redis(#[from] RedisConnError),
    /// Discovery could not start.
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    /// A store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The link listener could not be bound.
    #[error("cannot listen for msgbus links on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The common start path failed.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A running comet or msgbus node.
pub struct ClusterNode {
    /// The role.
    pub role: Role,
    /// The node id.
    pub node_id: String,
    /// The common part (HTTP API, comet endpoints, router).
    pub running: Running,
    /// comet: where the link listener is bound.
    pub link: Option<SocketAddr>,
    /// comet: its msgbus links.
    pub comet_links: Option<Arc<link::CometLinks>>,
    /// msgbus: its comet links.
    pub links: Option<Arc<link::LinkManager>>,
    /// comet: the RabbitMQ upload sink.
    pub sink: Option<Arc<RabbitUploadSink>>,
    /// msgbus: the backend push consumer.
    pub push: Option<PushConsumer>,
    /// comet: pauses its delivery-notice reader ([`delivery::FollowerHold`]).
    pub delivery_hold: Option<delivery::FollowerHold>,
    /// The discovery view this node follows.
    pub view: watch::Receiver<NodeView>,
    pub(crate) discovery: Arc<dyn Discovery>,
    pub(crate) rabbit_view: Option<RabbitView>,
    pub(crate) _static_rabbit: Option<watch::Sender<Vec<String>>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl ClusterNode {
    /// Stops: deregisters from discovery first (lookups stop pointing here), then drains like
    /// the standalone broker, then stops the cluster tasks and RabbitMQ clients.
    pub async fn stop(self) {
        self.discovery.shutdown().await;
        self.running.stop().await;
        self.cancel.cancel();
        if let Some(p) = &self.push {
            p.shutdown().await;
        }
        if let Some(s) = &self.sink {
            s.shutdown().await;
        }
        if let Some(v) = &self.rabbit_view {
            v.shutdown().await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
