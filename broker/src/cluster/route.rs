//! [`MsgbusRoute`]: msgbus's routing of stored messages to the comets that hold their recipients.
//!
//! A message for a list of terminals goes to each comet the Redis online registry names for any
//! of them, once per comet with just that comet's recipients. A broadcast (`Dest::Kind`) goes
//! once to every comet with a link; each comet fans out to its own sessions. The comet that
//! stored a message (`origin`) already delivered it locally and is skipped.
//!
//! Order: messages are routed one at a time, in the order they were handed over, by one task
//! ([`MsgbusRoute::start`]); the router hands a terminal's messages over in `msg_id` order and a
//! link is FIFO, so each comet receives a terminal's messages from this msgbus in `msg_id`
//! order. The hand-over queue is bounded (`cluster.link_queue`): a message that finds it full
//! is not routed live, counted in `broker_link_frames_dropped_total{peer="route",
//! reason="queue_full"}`, and reaches its recipients by replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::frame::{Dest, LinkMessage};
use super::hooks::StoredSink;
use super::link::LinkManager;
use crate::metrics::Metrics;
use crate::store::StoreError;
use crate::store::redis::OnlineRegistry;
use crate::terminal::Address;

/// Routes stored messages from msgbus to comets (see module docs).
pub struct MsgbusRoute {
    links: Arc<LinkManager>,
    registry: Arc<OnlineRegistry>,
    queue: mpsc::Sender<(Option<String>, LinkMessage)>,
    metrics: Metrics,
}

impl MsgbusRoute {
    /// Routing over `links` with lookups in `registry`, by one task (until `cancel`) taking
    /// at most `queue` messages waiting.
    pub fn start(
        links: Arc<LinkManager>,
        registry: Arc<OnlineRegistry>,
        queue: usize,
        metrics: Metrics,
        cancel: CancellationToken,
    ) -> (Arc<MsgbusRoute>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(Option<String>, LinkMessage)>(queue.max(1));
        let me = Arc::new(MsgbusRoute {
            links,
            registry,
            queue: tx,
            metrics,
        });
        let worker = me.clone();
        let task = tokio::spawn(async move {
            loop {
                let (origin, msg) = tokio::select! {
                    _ = cancel.cancelled() => break,
                    m = rx.recv() => match m { Some(m) => m, None => break },
                };
                let id = msg.msg_id;
                if let Err(e) = worker.route(origin.as_deref(), msg).await {
                    tracing::warn!(msg_id = id, error = %e, "routing lookup failed: message left to replay");
                }
            }
        });
        (me, task)
    }

    /// Sends `msg` to the comets holding its recipients, except `origin`. Returns the comets
    /// it was queued to.
    pub async fn route(
        &self,
        origin: Option<&str>,
        msg: LinkMessage,
    ) -> Result<Vec<String>, StoreError> {
        let mut sent = Vec::new();
        match &msg.dest {
            Dest::Kind(_) => {
                for comet in self.links.comets() {
                    if Some(comet.as_str()) != origin && self.links.deliver(&comet, msg.clone()) {
                        sent.push(comet);
                    }
                }
            }
            Dest::List(list) => {
                let mut per: BTreeMap<String, Vec<Address>> = BTreeMap::new();
                for a in list {
                    for (node, _epoch) in self.registry.lookup(*a).await? {
                        if Some(node.as_str()) != origin {
                            per.entry(node).or_default().push(*a);
                        }
                    }
                }
                for (node, addrs) in per {
                    let m = LinkMessage {
                        dest: Dest::List(addrs),
                        ..msg.clone()
                    };
                    if self.links.deliver(&node, m) {
                        sent.push(node);
                    } else {
                        tracing::debug!(comet = %node, msg_id = msg.msg_id, "no link to the comet: left to replay");
                    }
                }
            }
        }
        Ok(sent)
    }

    /// Queues `msg` (stored by comet `origin`, or here: `None`) for the routing task, behind
    /// every message queued before it.
    pub fn enqueue(&self, origin: Option<String>, msg: LinkMessage) {
        if let Err(e) = self.queue.try_send((origin, msg)) {
            let (_, msg) = e.into_inner();
            self.metrics.link_frame_dropped("route", "queue_full");
            tracing::warn!(
                msg_id = msg.msg_id,
                "routing queue full: message left to replay"
            );
        }
    }
}

impl StoredSink for MsgbusRoute {
    fn stored(&self, msg: LinkMessage) {
        self.enqueue(None, msg);
    }
}
