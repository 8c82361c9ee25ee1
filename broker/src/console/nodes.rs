//! The console's node table: which broker processes make up this deployment and how loaded
//! each is.
//!
//! A standalone broker is one node, whose load is its own session count. A cluster node lists
//! every comet and msgbus in its discovery view (the same view `GET /v1/nodes/lookup` answers
//! from), with the load each node publishes there and a flag for the node serving the page.
//! Turning a view into rows is a pure function ([`rows`]); the handler in `super` only reads
//! the view.

use serde::Serialize;
use tokio::sync::watch;

use crate::discovery::NodeView;

/// Where a cluster node's console reads the other nodes from.
#[derive(Clone, Debug)]
pub struct ClusterNodes {
    /// This node's id in discovery.
    pub me: String,
    /// The discovery view this node follows.
    pub view: watch::Receiver<NodeView>,
}

/// One node as the console lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// Node id (`standalone` for a standalone broker).
    pub id: String,
    /// `standalone`, `comet` or `msgbus`.
    pub role: &'static str,
    /// Sessions held (as last published in discovery for cluster nodes).
    pub load: u32,
    /// Whether this is the node serving the console.
    pub this_node: bool,
    /// Public endpoints (device UDP, device WebSocket, app WebSocket), as published.
    pub endpoints: Vec<String>,
}

/// The node table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeTable {
    /// `false` when discovery is unreachable and the rows are its last known view.
    pub healthy: bool,
    /// Nodes sorted by role, then id.
    pub nodes: Vec<NodeRow>,
}

/// The table of a standalone broker holding `sessions` sessions.
pub fn standalone(sessions: usize) -> NodeTable {
    NodeTable {
        healthy: true,
        nodes: vec![NodeRow {
            id: "standalone".into(),
            role: "standalone",
            load: u32::try_from(sessions).unwrap_or(u32::MAX),
            this_node: true,
            endpoints: Vec::new(),
        }],
    }
}

/// The table of cluster node `me` seeing `view`. A node that has not registered yet (or whose
/// registration discovery lost) still lists itself, with `load` from its own `sessions`.
pub fn rows(view: &NodeView, me: &str, sessions: usize) -> NodeTable {
    let mut nodes: Vec<NodeRow> = view
        .nodes
        .iter()
        .map(|n| NodeRow {
            id: n.id.clone(),
            role: n.role.as_str(),
            load: n.load,
            this_node: n.id == me,
            endpoints: [&n.addr.udp, &n.addr.ws, &n.addr.app_ws]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
        })
        .collect();
    if !nodes.iter().any(|n| n.this_node) {
        nodes.push(NodeRow {
            id: me.to_string(),
            role: "unregistered",
            load: u32::try_from(sessions).unwrap_or(u32::MAX),
            this_node: true,
            endpoints: Vec::new(),
        });
    }
    NodeTable {
        healthy: view.healthy,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{NodeAddr, NodeInfo, Role};

    fn node(id: &str, role: Role, load: u32) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            role,
            addr: NodeAddr {
                udp: Some(format!("{id}.example:9000")),
                ws: None,
                app_ws: None,
                link: Some("10.0.0.1:7000".into()),
            },
            load,
        }
    }

    #[test]
    fn a_cluster_view_lists_every_node_and_marks_this_one() {
        let view = NodeView {
            nodes: vec![
                node("comet-a", Role::Comet, 12),
                node("comet-b", Role::Comet, 3),
                node("bus-1", Role::Msgbus, 0),
            ],
            healthy: true,
        };
        let t = rows(&view, "comet-b", 99);
        assert!(t.healthy);
        let ids: Vec<_> = t
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.role, n.load))
            .collect();
        assert_eq!(
            ids,
            [
                ("comet-a", "comet", 12),
                ("comet-b", "comet", 3),
                ("bus-1", "msgbus", 0)
            ]
        );
        let mine: Vec<_> = t.nodes.iter().filter(|n| n.this_node).collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].id, "comet-b");
        // The internal link address is never shown; public endpoints are.
        assert_eq!(t.nodes[0].endpoints, ["comet-a.example:9000"]);
    }

    #[test]
    fn a_node_missing_from_a_stale_view_still_lists_itself() {
        let view = NodeView {
            nodes: vec![node("comet-a", Role::Comet, 1)],
            healthy: false,
        };
        let t = rows(&view, "bus-9", 0);
        assert!(!t.healthy);
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.nodes[1].id, "bus-9");
        assert_eq!(t.nodes[1].role, "unregistered");
        assert!(t.nodes[1].this_node);
    }

    #[test]
    fn a_standalone_broker_is_one_node_loaded_with_its_sessions() {
        let t = standalone(7);
        assert_eq!(t.nodes.len(), 1);
        assert_eq!(t.nodes[0].load, 7);
        assert_eq!(t.nodes[0].role, "standalone");
    }
}
