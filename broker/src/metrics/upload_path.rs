//! The upload path's families on a comet: the RabbitMQ publisher (node switches, the node in
//! use, confirms awaited) and its durable spool (uploads waiting to be forwarded and the age of
//! the oldest), recorded by [`crate::uploads::RabbitUploadSink`]; and the health of the node's
//! Redis connection, recorded by the cluster's Redis probe. Each is registered at 0 when its
//! recorder starts ([`Metrics::upload_sink_registered`], [`Metrics::redis_health_registered`]).

use std::time::Duration;

use metrics::{Key, Label, Recorder};

use super::{METADATA, Metrics};

/// The `kind` labels of `broker_redis_errors_total`: `io` (connection refused, reset or
/// closed), `timeout` (no answer within `redis.response_timeout_ms`), `response` (Redis
/// answered with an error, e.g. LOADING or READONLY), `other`.
pub const REDIS_ERROR_KINDS: [&str; 4] = ["io", "timeout", "response", "other"];

impl Metrics {
    /// Registers the publisher and spool series at 0, with `broker_rabbitmq_node_in_use` at 0
    /// for each of the `nodes` known at start (`host:port` labels).
    pub fn upload_sink_registered(&self, nodes: &[String]) {
        self.counter("broker_rabbitmq_failovers_total", &[], 0);
        self.gauge_set("broker_rabbitmq_confirms_pending", 0.0);
        self.gauge_set("broker_upload_spool_backlog", 0.0);
        self.gauge_set("broker_upload_spool_oldest_age_seconds", 0.0);
        for node in nodes {
            self.rabbit_node_in_use(node, false);
        }
    }

    /// The publisher left its node (an error, a lost confirm, or the node left the healthy set).
    pub fn rabbit_failover(&self) {
        self.counter("broker_rabbitmq_failovers_total", &[], 1);
    }

    /// Sets `broker_rabbitmq_node_in_use{node}`: 1 while the publisher is connected to `node`
    /// (`host:port`), 0 after it left.
    pub fn rabbit_node_in_use(&self, node: &str, in_use: bool) {
        let key = Key::from_parts(
            "broker_rabbitmq_node_in_use",
            vec![Label::new("node", node.to_string())],
        );
        self.recorder
            .register_gauge(&key, &METADATA)
            .set(if in_use { 1.0 } else { 0.0 });
    }

    /// Sets `broker_rabbitmq_confirms_pending`: publishes waiting for their confirm now.
    pub fn rabbit_confirms_pending(&self, n: u64) {
        self.gauge_set("broker_rabbitmq_confirms_pending", n as f64);
    }

    /// Sets the spool's backlog: `records` uploads spooled and not yet confirmed by RabbitMQ,
    /// the oldest of them received `oldest_age` ago (zero when there is none).
    pub fn upload_spool_backlog(&self, records: u64, oldest_age: Duration) {
        self.gauge_set("broker_upload_spool_backlog", records as f64);
        self.gauge_set(
            "broker_upload_spool_oldest_age_seconds",
            oldest_age.as_secs_f64(),
        );
    }

    /// Registers `broker_redis_up` (0 until the first answer), every
    /// `broker_redis_errors_total{kind}` and `broker_redis_last_error_timestamp_seconds` at 0.
    pub fn redis_health_registered(&self) {
        self.gauge_set("broker_redis_up", 0.0);
        for kind in REDIS_ERROR_KINDS {
            self.counter("broker_redis_errors_total", &[("kind", kind)], 0);
        }
        self.gauge_set("broker_redis_last_error_timestamp_seconds", 0.0);
    }

    /// A Redis health probe answered.
    pub fn redis_ok(&self) {
        self.gauge_set("broker_redis_up", 1.0);
    }

    /// A Redis health probe failed with an error of `kind` (one of [`REDIS_ERROR_KINDS`]) at
    /// `unix_seconds`.
    pub fn redis_failed(&self, kind: &'static str, unix_seconds: f64) {
        self.gauge_set("broker_redis_up", 0.0);
        self.counter("broker_redis_errors_total", &[("kind", kind)], 1);
        self.gauge_set("broker_redis_last_error_timestamp_seconds", unix_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn upload_path_series_exist_at_zero_and_move() {
        let m = Metrics::new();
        m.upload_sink_registered(&["127.0.0.1:17001".into(), "127.0.0.1:17002".into()]);
        m.redis_health_registered();
        let text = m.render();
        for series in [
            "broker_rabbitmq_failovers_total",
            "broker_rabbitmq_confirms_pending",
            "broker_upload_spool_backlog",
            "broker_upload_spool_oldest_age_seconds",
            "broker_rabbitmq_node_in_use{node=\"127.0.0.1:17002\"}",
            "broker_redis_up",
            "broker_redis_errors_total{kind=\"timeout\"}",
            "broker_redis_last_error_timestamp_seconds",
        ] {
            assert_eq!(value(&text, series), Some(0.0), "{series}\n{text}");
        }
        m.rabbit_node_in_use("127.0.0.1:17001", true);
        m.rabbit_failover();
        m.rabbit_confirms_pending(3);
        m.upload_spool_backlog(12, Duration::from_millis(2500));
        m.redis_failed("io", 1_700_000_000.0);
        let text = m.render();
        for (series, want) in [
            ("broker_rabbitmq_node_in_use{node=\"127.0.0.1:17001\"}", 1.0),
            ("broker_rabbitmq_failovers_total", 1.0),
            ("broker_rabbitmq_confirms_pending", 3.0),
            ("broker_upload_spool_backlog", 12.0),
            ("broker_upload_spool_oldest_age_seconds", 2.5),
            ("broker_redis_up", 0.0),
            ("broker_redis_errors_total{kind=\"io\"}", 1.0),
            ("broker_redis_last_error_timestamp_seconds", 1_700_000_000.0),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
        }
        m.redis_ok();
        assert_eq!(value(&m.render(), "broker_redis_up"), Some(1.0));
    }
}
