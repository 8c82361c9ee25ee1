//! Discovery metrics, registered once on a `metrics` recorder the caller hands in (the broker's
//! own Prometheus recorder; no global recorder is installed), or no-ops.
//!
//! - `broker_discovery_healthy` (gauge): 1 while the view is current, 0 while ZooKeeper is
//!   unreachable and the last known view is served.
//! - `broker_discovery_nodes{role}` (gauge): live nodes per role in the view.
//! - `broker_discovery_sessions_total` (counter): ZooKeeper sessions established (1 + re-creations).
//! - `broker_discovery_expired_total` (counter): sessions lost (expired or closed by the server).
//! - `broker_discovery_rejected_total` (counter): znodes ignored for bad data.

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder};

use super::{NodeView, Role};

static METADATA: Metadata<'static> = Metadata::new("broker", Level::INFO, Some(module_path!()));

/// Pre-registered discovery metrics (cheap to clone).
#[derive(Clone)]
pub struct DiscoveryMetrics {
    healthy: Gauge,
    nodes: [Gauge; Role::ALL.len()],
    sessions: Counter,
    expired: Counter,
    rejected: Counter,
}

impl Default for DiscoveryMetrics {
    fn default() -> Self {
        DiscoveryMetrics::noop()
    }
}

impl DiscoveryMetrics {
    /// Metrics that record nothing.
    pub fn noop() -> DiscoveryMetrics {
        DiscoveryMetrics {
            healthy: Gauge::noop(),
            nodes: [Gauge::noop(), Gauge::noop()],
            sessions: Counter::noop(),
            expired: Counter::noop(),
            rejected: Counter::noop(),
        }
    }

    /// Registers the metrics on `recorder`.
    pub fn new(recorder: &dyn Recorder) -> DiscoveryMetrics {
        let gauge = |name: &'static str, labels: Vec<Label>| {
            recorder.register_gauge(&Key::from_parts(name, labels), &METADATA)
        };
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_name(name), &METADATA);
        DiscoveryMetrics {
            healthy: gauge("broker_discovery_healthy", vec![]),
            nodes: Role::ALL.map(|r| {
                gauge(
                    "broker_discovery_nodes",
                    vec![Label::new("role", r.as_str())],
                )
            }),
            sessions: counter("broker_discovery_sessions_total"),
            expired: counter("broker_discovery_expired_total"),
            rejected: counter("broker_discovery_rejected_total"),
        }
    }

    /// Records a published view.
    pub fn view(&self, view: &NodeView) {
        self.healthy.set(if view.healthy { 1.0 } else { 0.0 });
        for (i, role) in Role::ALL.into_iter().enumerate() {
            self.nodes[i].set(view.with_role(role).count() as f64);
        }
    }

    /// A session was established.
    pub fn session_started(&self) {
        self.sessions.increment(1);
    }

    /// A session was lost.
    pub fn session_lost(&self) {
        self.expired.increment(1);
    }

    /// `n` znodes were ignored for bad data.
    pub fn rejected(&self, n: u64) {
        self.rejected.increment(n);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::discovery::{NodeAddr, NodeInfo};

    #[test]
    fn records_view_health_and_counts() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let m = DiscoveryMetrics::new(&recorder);
        let node = NodeInfo {
            id: "a".into(),
            role: Role::Comet,
            addr: NodeAddr::default(),
            load: 0,
        };
        m.view(&NodeView {
            nodes: vec![node],
            healthy: false,
        });
        m.session_started();
        m.session_lost();
        let text = handle.render();
        assert!(text.contains("broker_discovery_healthy 0"), "{text}");
        assert!(
            text.contains("broker_discovery_nodes{role=\"comet\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("broker_discovery_nodes{role=\"msgbus\"} 0"),
            "{text}"
        );
        assert!(text.contains("broker_discovery_sessions_total 1"), "{text}");
        assert!(text.contains("broker_discovery_expired_total 1"), "{text}");
    }
}
