//! Sans-IO view merge: turns ZooKeeper listings, watch events and connection changes into the
//! [`NodeView`] that [`super::ZkDiscovery`] publishes. No I/O and no clock: the caller feeds
//! results in, reads [`ViewState::snapshot`] out.
//!
//! Rules: a znode counts only if its path is `<root>/<role>/<id>` with a known role and a valid
//! id, and its data is a [`NodeInfo`] whose role and id match the path (anything else is rejected
//! and reported, never trusted). A full listing replaces everything; single events upsert or
//! remove one node. Losing the connection keeps every node and clears `healthy`.

use std::collections::BTreeMap;

use super::{NodeInfo, NodeView, Role, valid_node_id};

/// Why a znode was not taken into the view.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The data is not a node description.
    #[error("{path}: data is not a node description: {reason}")]
    BadData {
        /// The znode.
        path: String,
        /// The JSON error.
        reason: String,
    },
    /// The data's role or id differs from the path's.
    #[error("{path}: data says {role}/{id}, path disagrees")]
    Mismatch {
        /// The znode.
        path: String,
        /// Role in the data.
        role: &'static str,
        /// Id in the data.
        id: String,
    },
}

/// The merge state (see module docs).
#[derive(Clone, Debug)]
pub struct ViewState {
    root: String,
    nodes: BTreeMap<(Role, String), NodeInfo>,
    healthy: bool,
}

impl ViewState {
    /// An empty, not-yet-healthy view for nodes under `root` (e.g. `/broker`).
    pub fn new(root: &str) -> ViewState {
        ViewState {
            root: root.to_string(),
            nodes: BTreeMap::new(),
            healthy: false,
        }
    }

    /// `(role, id)` for a node znode path under the root, `None` for any other path.
    pub fn parse_path(&self, path: &str) -> Option<(Role, String)> {
        let rest = path.strip_prefix(&self.root)?.strip_prefix('/')?;
        let (role, id) = rest.split_once('/')?;
        let role = Role::parse(role)?;
        valid_node_id(id).then(|| (role, id.to_string()))
    }

    fn decode(&self, path: &str, data: &[u8]) -> Result<Option<NodeInfo>, Rejected> {
        let Some((role, id)) = self.parse_path(path) else {
            return Ok(None);
        };
        let info: NodeInfo = serde_json::from_slice(data).map_err(|e| Rejected::BadData {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        if info.role != role || info.id != id {
            return Err(Rejected::Mismatch {
                path: path.to_string(),
                role: info.role.as_str(),
                id: info.id,
            });
        }
        Ok(Some(info))
    }

    /// Replaces the whole view with a fresh listing of `(path, data)` and marks it healthy.
    /// Returns the rejected entries (they are left out).
    pub fn replace_all<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        let mut nodes = BTreeMap::new();
        for (path, data) in entries {
            match self.decode(path, data) {
                Ok(Some(info)) => {
                    nodes.insert((info.role, info.id.clone()), info);
                }
                Ok(None) => {}
                Err(r) => rejected.push(r),
            }
        }
        self.nodes = nodes;
        self.healthy = true;
        rejected
    }

    /// A node znode was created or its data changed. Returns whether the view changed.
    /// A rejected update removes any earlier entry at that path (it can no longer be trusted).
    pub fn upsert(&mut self, path: &str, data: &[u8]) -> Result<bool, Rejected> {
        match self.decode(path, data) {
            Ok(Some(info)) => {
                let key = (info.role, info.id.clone());
                Ok(self.nodes.insert(key, info.clone()).as_ref() != Some(&info))
            }
            Ok(None) => Ok(false),
            Err(r) => {
                self.remove(path);
                Err(r)
            }
        }
    }

    /// A node znode was deleted. Returns whether the view changed.
    pub fn remove(&mut self, path: &str) -> bool {
        match self.parse_path(path) {
            Some(key) => self.nodes.remove(&key).is_some(),
            None => false,
        }
    }

    /// The source became unreachable (`false`: keep serving the last view, flagged stale) or
    /// current again (`true`; normally set by [`ViewState::replace_all`]).
    pub fn set_healthy(&mut self, healthy: bool) -> bool {
        let changed = self.healthy != healthy;
        self.healthy = healthy;
        changed
    }

    /// Whether the view is current.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// The view to publish.
    pub fn snapshot(&self) -> NodeView {
        NodeView {
            nodes: self.nodes.values().cloned().collect(),
            healthy: self.healthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::NodeAddr;

    fn node(role: Role, id: &str, load: u32) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            role,
            addr: NodeAddr {
                udp: Some(format!("{id}:1")),
                ..NodeAddr::default()
            },
            load,
        }
    }

    fn data(n: &NodeInfo) -> Vec<u8> {
        serde_json::to_vec(n).unwrap()
    }

    #[test]
    fn paths_are_parsed_under_the_root_only() {
        let v = ViewState::new("/broker");
        assert_eq!(
            v.parse_path("/broker/comet/a"),
            Some((Role::Comet, "a".into()))
        );
        assert_eq!(
            v.parse_path("/broker/msgbus/m-1"),
            Some((Role::Msgbus, "m-1".into()))
        );
        for p in [
            "/broker",
            "/broker/comet",
            "/brokerx/comet/a",
            "/broker/gateway/a",
            "/broker/comet/a/b",
            "/other/comet/a",
        ] {
            assert_eq!(v.parse_path(p), None, "{p}");
        }
    }

    #[test]
    fn full_listing_replaces_and_rejects_bad_entries() {
        let mut v = ViewState::new("/r");
        assert!(!v.healthy());
        let (a, b) = (node(Role::Comet, "a", 1), node(Role::Msgbus, "b", 2));
        let (da, db) = (data(&a), data(&b));
        let wrong = data(&node(Role::Comet, "z", 0));
        let rejected = v.replace_all([
            ("/r/comet/a", da.as_slice()),
            ("/r/msgbus/b", db.as_slice()),
            ("/r/comet/y", wrong.as_slice()),
            ("/r/comet/x", b"not json".as_slice()),
            ("/r/comet", b"".as_slice()),
        ]);
        assert_eq!(rejected.len(), 2);
        assert!(matches!(rejected[0], Rejected::Mismatch { ref id, .. } if id == "z"));
        assert!(matches!(rejected[1], Rejected::BadData { ref path, .. } if path == "/r/comet/x"));
        let snap = v.snapshot();
        assert!(snap.healthy);
        assert_eq!(snap.nodes, vec![a.clone(), b]);

        // A second listing without b drops it.
        v.replace_all([("/r/comet/a", da.as_slice())]);
        assert_eq!(v.snapshot().nodes, vec![a]);
    }

    #[test]
    fn events_upsert_and_remove() {
        let mut v = ViewState::new("/r");
        v.replace_all([]);
        let a = node(Role::Comet, "a", 1);
        assert_eq!(v.upsert("/r/comet/a", &data(&a)), Ok(true));
        assert_eq!(v.upsert("/r/comet/a", &data(&a)), Ok(false), "same data");
        let a2 = node(Role::Comet, "a", 9);
        assert_eq!(v.upsert("/r/comet/a", &data(&a2)), Ok(true), "load update");
        assert_eq!(v.snapshot().nodes, vec![a2]);
        assert!(v.upsert("/r/comet/a", b"{").is_err());
        assert!(v.snapshot().nodes.is_empty(), "bad update evicts");
        assert_eq!(
            v.upsert("/r/comet", b"x"),
            Ok(false),
            "directory events ignored"
        );
        v.upsert("/r/comet/a", &data(&a)).unwrap();
        assert!(v.remove("/r/comet/a"));
        assert!(!v.remove("/r/comet/a"));
    }

    #[test]
    fn losing_the_source_keeps_the_last_view_flagged_stale() {
        let mut v = ViewState::new("/r");
        let a = node(Role::Comet, "a", 1);
        let da = data(&a);
        v.replace_all([("/r/comet/a", da.as_slice())]);
        assert!(v.set_healthy(false));
        assert!(!v.set_healthy(false), "no change reported twice");
        let snap = v.snapshot();
        assert!(snap.is_stale());
        assert_eq!(snap.nodes, vec![a]);
        v.replace_all([]);
        assert!(v.snapshot().healthy);
        assert!(v.snapshot().nodes.is_empty());
    }
}
