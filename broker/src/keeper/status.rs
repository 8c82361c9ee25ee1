//! What a running rmqkeeper tells its operator: Prometheus metrics ([`KeeperMetrics`], the
//! families in [`crate::metrics::catalog::KEEPER_FAMILIES`] plus `process_*`) and its state
//! ([`KeeperState`]), both updated by the keeper loop through [`Telemetry`] and served over HTTP
//! by [`serve`]:
//!
//! * `GET /healthz`: the state as JSON; 200 while the keeper holds a ZooKeeper session (it can
//!   do its job, whatever the RabbitMQ node's health), 503 otherwise. An unhealthy RabbitMQ
//!   node is reported in the body (`rabbit_healthy: false`, `rabbit_problem`) and in
//!   `rmqkeeper_rabbit_healthy`, not as a failing keeper: removing it is the keeper's job.
//! * `GET /metrics`: the Prometheus text exposition.
//!
//! Neither needs a token: the listener (`rmqkeeper.listen` or `--listen`, off unless set)
//! belongs on a private address, like the node exporters scraped next to it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use crate::metrics::catalog::{KEEPER_FAMILIES, Kind};
use crate::metrics::process;

static METADATA: Metadata<'static> = Metadata::new("rmqkeeper", Level::INFO, Some(module_path!()));

/// The `result` labels of `rmqkeeper_checks_total`: `healthy`, or the check that failed.
pub const CHECK_RESULTS: [&str; 4] = ["healthy", "aliveness", "alarms", "port-listener"];

/// The keeper's state as `/healthz` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeeperState {
    /// Whether the keeper holds a ZooKeeper session.
    pub zookeeper: bool,
    /// Whether the node's znode exists in that session.
    pub registered: bool,
    /// The last health check's verdict (`None` before the first check).
    pub rabbit_healthy: Option<bool>,
    /// The failing check and why, while unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbit_problem: Option<String>,
    /// The znode name, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The keeper's own Prometheus recorder (not a global one).
#[derive(Clone)]
pub struct KeeperMetrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Default for KeeperMetrics {
    fn default() -> Self {
        KeeperMetrics::new()
    }
}

impl KeeperMetrics {
    /// Every family described and every series registered at 0 (`rmqkeeper_build_info` at 1).
    pub fn new() -> KeeperMetrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        for family in KEEPER_FAMILIES {
            let (name, help) = (family.name.into(), family.help.into());
            match family.kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        let m = KeeperMetrics {
            recorder: Arc::new(recorder),
            handle,
        };
        m.gauge(
            "rmqkeeper_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1.0);
        for name in [
            "rmqkeeper_rabbit_healthy",
            "rmqkeeper_registered",
            "rmqkeeper_zk_connected",
        ] {
            m.gauge(name, &[]).set(0.0);
        }
        for result in CHECK_RESULTS {
            m.counter("rmqkeeper_checks_total", &[("result", result)])
                .increment(0);
        }
        for to in ["registered", "unregistered"] {
            m.counter("rmqkeeper_registrations_total", &[("to", to)])
                .increment(0);
        }
        m.counter("rmqkeeper_zk_sessions_total", &[]).increment(0);
        m
    }

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
        Key::from_parts(name, labels)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> metrics::Gauge {
        self.recorder
            .register_gauge(&Self::key(name, labels), &METADATA)
    }

    fn counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> metrics::Counter {
        self.recorder
            .register_counter(&Self::key(name, labels), &METADATA)
    }

    /// The Prometheus text exposition: the keeper's families, then `process_*`.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        if let Some(sample) = process::Sample::read() {
            sample.render(&mut text);
        }
        text
    }
}

/// Where the keeper loop records what happens: metrics and the `/healthz` state together.
pub struct Telemetry {
    metrics: KeeperMetrics,
    state: watch::Sender<KeeperState>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    /// Fresh metrics and an empty state (no session, nothing checked).
    pub fn new() -> Telemetry {
        Telemetry {
            metrics: KeeperMetrics::new(),
            state: watch::channel(KeeperState::default()).0,
        }
    }

    /// The metrics (for [`serve`]).
    pub fn metrics(&self) -> &KeeperMetrics {
        &self.metrics
    }

    /// A receiver of the state (for [`serve`] and tests).
    pub fn state(&self) -> watch::Receiver<KeeperState> {
        self.state.subscribe()
    }

    /// A health check ran with result `health`.
    pub fn checked(&self, health: &Health) {
        let result = match health {
            Health::Healthy => "healthy",
            Health::Unhealthy { check, .. } => CHECK_RESULTS
                .into_iter()
                .find(|r| r == check)
                .unwrap_or("aliveness"),
        };
        self.metrics
            .counter("rmqkeeper_checks_total", &[("result", result)])
            .increment(1);
        self.metrics
            .gauge("rmqkeeper_rabbit_healthy", &[])
            .set(if health.is_healthy() { 1.0 } else { 0.0 });
        self.state.send_modify(|s| {
            s.rabbit_healthy = Some(health.is_healthy());
            s.rabbit_problem = match health {
                Health::Healthy => None,
                Health::Unhealthy { check, reason } => Some(format!("{check}: {reason}")),
            };
        });
    }

    /// The znode name became known.
    pub fn node(&self, name: &str) {
        self.state.send_if_modified(|s| {
            let changed = s.node.as_deref() != Some(name);
            s.node = Some(name.to_string());
            changed
        });
    }

    /// A ZooKeeper session was established.
    pub fn session_established(&self) {
        self.metrics
            .counter("rmqkeeper_zk_sessions_total", &[])
            .increment(1);
        self.metrics.gauge("rmqkeeper_zk_connected", &[]).set(1.0);
        self.state.send_modify(|s| s.zookeeper = true);
    }

    /// The session is gone (lost, or closed at shutdown): nothing is registered any more.
    pub fn session_lost(&self) {
        self.metrics.gauge("rmqkeeper_zk_connected", &[]).set(0.0);
        self.metrics.gauge("rmqkeeper_registered", &[]).set(0.0);
        self.state.send_modify(|s| {
            s.zookeeper = false;
            s.registered = false;
        });
    }

    /// The znode was created (`true`) or removed (`false`) by the keeper.
    pub fn registration(&self, registered: bool) {
        let to = if registered {
            "registered"
        } else {
            "unregistered"
        };
        self.metrics
            .counter("rmqkeeper_registrations_total", &[("to", to)])
            .increment(1);
        self.metrics
            .gauge("rmqkeeper_registered", &[])
            .set(if registered { 1.0 } else { 0.0 });
        self.state.send_modify(|s| s.registered = registered);
    }

    /// The znode was found missing (deleted by someone else); it will be created again.
    pub fn registration_lost(&self) {
        self.metrics.gauge("rmqkeeper_registered", &[]).set(0.0);
        self.state.send_modify(|s| s.registered = false);
    }
}

#[derive(Clone)]
struct Served {
    metrics: KeeperMetrics,
    state: watch::Receiver<KeeperState>,
}

async fn healthz(State(s): State<Served>) -> impl IntoResponse {
    let state = s.state.borrow().clone();
    let code = if state.zookeeper {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(state))
}

async fn metrics_text(State(s): State<Served>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// Binds `listen` and serves `/healthz` and `/metrics` until `cancel`; returns the bound
/// address (port 0 picks one).
pub async fn serve(
    listen: SocketAddr,
    telemetry: &Telemetry,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(Served {
            metrics: telemetry.metrics.clone(),
            state: telemetry.state(),
        });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "rmqkeeper: health and metrics listener stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    #[test]
    fn every_family_exists_at_start_with_help_and_type() {
        let text = KeeperMetrics::new().render();
        for f in KEEPER_FAMILIES {
            assert!(
                text.contains(&format!("# HELP {} ", f.name)),
                "{}: {text}",
                f.name
            );
            assert!(
                text.contains(&format!("# TYPE {} {}", f.name, f.kind.as_str())),
                "{}",
                f.name
            );
        }
        assert_eq!(sample(&text, "rmqkeeper_registered"), Some(0.0));
        assert_eq!(
            sample(&text, r#"rmqkeeper_checks_total{result="port-listener"}"#),
            Some(0.0)
        );
    }

    #[test]
    fn telemetry_follows_checks_sessions_and_registrations() {
        let t = Telemetry::new();
        let state = t.state();
        t.session_established();
        t.checked(&Health::Healthy);
        t.registration(true);
        assert_eq!(
            *state.borrow(),
            KeeperState {
                zookeeper: true,
                registered: true,
                rabbit_healthy: Some(true),
                rabbit_problem: None,
                node: None,
            }
        );
        t.checked(&Health::Unhealthy {
            check: "alarms",
            reason: "HTTP 503: memory alarm".into(),
        });
        t.registration(false);
        t.session_lost();
        let s = state.borrow().clone();
        assert!(!s.zookeeper && !s.registered);
        assert_eq!(
            s.rabbit_problem.as_deref(),
            Some("alarms: HTTP 503: memory alarm")
        );
        let text = t.metrics().render();
        assert_eq!(
            sample(&text, r#"rmqkeeper_checks_total{result="alarms"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"rmqkeeper_checks_total{result="healthy"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"rmqkeeper_registrations_total{to="unregistered"}"#),
            Some(1.0)
        );
        assert_eq!(sample(&text, "rmqkeeper_zk_sessions_total"), Some(1.0));
        assert_eq!(sample(&text, "rmqkeeper_rabbit_healthy"), Some(0.0));
        assert_eq!(sample(&text, "rmqkeeper_zk_connected"), Some(0.0));
    }
}
