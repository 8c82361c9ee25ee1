//! [`MsgbusRoute`]: msgbus's routing of stored messages to the comets that hold their recipients.
//!
//! A message for a list of terminals goes to each comet the Redis online registry names for any
//! of them, once per comet with just that comet's recipients. A broadcast (`Dest::Kind`) goes
//! once to every comet with a link; each comet fans out to its own sessions. The comet that
//! stored a message (`origin`) already delivered it locally and is skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::frame::{Dest, LinkMessage};
use super::hooks::StoredSink;
use super::link::LinkManager;
use crate::store::StoreError;
use crate::store::redis::OnlineRegistry;
use crate::terminal::Address;

/// Routes stored messages from msgbus to comets (see module docs).
pub struct MsgbusRoute {
    links: Arc<LinkManager>,
    registry: Arc<OnlineRegistry>,
}

impl MsgbusRoute {
    /// Routing over `links` with lookups in `registry`.
    pub fn new(links: Arc<LinkManager>, registry: Arc<OnlineRegistry>) -> Arc<MsgbusRoute> {
        Arc::new(MsgbusRoute { links, registry })
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

    /// [`MsgbusRoute::route`] in a task, logging failures.
    pub fn spawn_route(self: &Arc<Self>, origin: Option<String>, msg: LinkMessage) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = msg.msg_id;
            if let Err(e) = me.route(origin.as_deref(), msg).await {
                tracing::warn!(msg_id = id, error = %e, "routing lookup failed: message left to replay");
            }
        });
    }
}

impl StoredSink for MsgbusRoute {
    fn stored(&self, msg: LinkMessage) {
        let me = MsgbusRoute {
            links: self.links.clone(),
            registry: self.registry.clone(),
        };
        Arc::new(me).spawn_route(None, msg);
    }
}
