//! [`StaticDiscovery`]: a fixed node list from config. Always healthy; load is not shared.

use std::collections::BTreeSet;

use tokio::sync::watch;

use super::{Discovery, DiscoveryError, NodeInfo, NodeView, valid_node_id};

/// A [`Discovery`] over a fixed list (config `discovery.static_nodes`).
pub struct StaticDiscovery {
    tx: watch::Sender<NodeView>,
}

impl StaticDiscovery {
    /// A static view of `nodes` (sorted by role and id); rejects bad or duplicate ids.
    pub fn new(mut nodes: Vec<NodeInfo>) -> Result<StaticDiscovery, DiscoveryError> {
        let mut seen = BTreeSet::new();
        for n in &nodes {
            if !valid_node_id(&n.id) {
                return Err(DiscoveryError::InvalidNodeId(n.id.clone()));
            }
            if !seen.insert((n.role, n.id.clone())) {
                return Err(DiscoveryError::StaticList(format!(
                    "duplicate {} `{}`",
                    n.role.as_str(),
                    n.id
                )));
            }
        }
        nodes.sort_by(|a, b| (a.role, &a.id).cmp(&(b.role, &b.id)));
        let (tx, _) = watch::channel(NodeView {
            nodes,
            healthy: true,
        });
        Ok(StaticDiscovery { tx })
    }
}

#[async_trait::async_trait]
impl Discovery for StaticDiscovery {
    fn view(&self) -> watch::Receiver<NodeView> {
        self.tx.subscribe()
    }

    fn set_load(&self, _load: u32) {}

    async fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{NodeAddr, Role};

    fn n(role: Role, id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            role,
            addr: NodeAddr::default(),
            load: 0,
        }
    }

    #[test]
    fn serves_the_sorted_list_as_healthy() {
        let d = StaticDiscovery::new(vec![
            n(Role::Msgbus, "m"),
            n(Role::Comet, "b"),
            n(Role::Comet, "a"),
        ])
        .unwrap();
        let v = d.view().borrow().clone();
        assert!(v.healthy);
        let ids: Vec<&str> = v.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "m"]);
        assert!(matches!(
            StaticDiscovery::new(vec![n(Role::Comet, "a"), n(Role::Comet, "a")]),
            Err(DiscoveryError::StaticList(_))
        ));
        assert!(matches!(
            StaticDiscovery::new(vec![n(Role::Comet, "a b")]),
            Err(DiscoveryError::InvalidNodeId(_))
        ));
        // Same id under two roles is fine.
        assert!(StaticDiscovery::new(vec![n(Role::Comet, "a"), n(Role::Msgbus, "a")]).is_ok());
    }
}
