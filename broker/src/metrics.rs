//! The metrics facade: one [`Metrics`] value (cheap to clone) owned by the running broker and
//! passed to the router, the API and the comet, which record through its typed methods.
//!
//! It owns its own Prometheus recorder instead of installing a global one, so several brokers can
//! run in one process (integration tests) and nothing depends on global state. `/metrics` renders
//! it with [`Metrics::render`]. Parts with their own pre-registered handles (discovery) register
//! on [`Metrics::recorder`].
//!
//! Every broker has `broker_store_data_loss_total` (0 unless the Redis store noticed lost data).
//!
//! Cluster mode adds (`peer` is the other node's id):
//! * `broker_link_up{peer}` (gauge): connected links to that node now; with
//!   `broker_link_transitions_total{peer,state="up"|"down"}`;
//! * `broker_link_frames_sent_total{peer,frame}` and
//!   `broker_link_frames_dropped_total{peer,reason="queue_full"|"no_link"}`;
//! * `broker_presence_writes_total{op}` and `broker_presence_errors_total{op}` for the online
//!   registry (`op` = `register`, `unregister`, `heartbeat`, `sweep`);
//! * `broker_cluster_commands_total{result}`: HTTP commands for devices on other nodes;
//! * `broker_link_auth_failures_total{reason}`: link connections closed unauthenticated or on
//!   a sealed frame that does not open (reasons in [`LINK_AUTH_REASONS`], all registered at 0
//!   when a node's links start);
//! * on a comet, `broker_delivery_stream_gaps_total{reason}` (reasons in
//!   [`DELIVERY_GAP_REASONS`]) and `broker_delivery_stream_missed_total`: its delivery-notice
//!   stream had a gap and its sessions re-read the store ([`crate::cluster::delivery`]);
//! * [`upload_path`]: on a comet the RabbitMQ publisher and its spool
//!   (`broker_rabbitmq_*`, `broker_upload_spool_backlog`,
//!   `broker_upload_spool_oldest_age_seconds`), and on every node its Redis health
//!   (`broker_redis_*`).
//!
//! Every family has `# HELP` and `# TYPE` lines: [`catalog`] names each family with its type
//! and help text, and [`Metrics::new`] registers every series whose labels are known at start
//! at 0 (so it exists before anything happened), plus `broker_build_info`. [`process`] adds
//! the standard `process_*` families (memory, CPU, file descriptors) at each render.
//! docs/operations.md explains each family.

pub mod catalog;
mod hot;
pub mod latency;
pub mod process;
pub mod upload_path;

use std::sync::Arc;
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::terminal::Transport;

pub use latency::Op;

static METADATA: Metadata<'static> = Metadata::new("broker", Level::INFO, Some(module_path!()));

/// Why a comet's delivery stream had a gap: `trimmed` (notices trimmed before it read them),
/// `lost` (the stream was deleted or lost with Redis's data), `swept` (the comet was declared
/// dead and left out of kind-wide notices).
pub const DELIVERY_GAP_REASONS: [&str; 3] = ["trimmed", "lost", "swept"];

/// The `reason` labels of `broker_link_auth_failures_total`: handshake `timeout`, connection
/// `closed` mid-handshake, `malformed` handshake (garbage, an unsealed frame), `bad_proof`
/// (wrong cluster key), `wrong_peer` (role or node id), `bad_frame` (a sealed frame that does
/// not open after the handshake).
pub const LINK_AUTH_REASONS: [&str; 6] = [
    "timeout",
    "closed",
    "malformed",
    "bad_proof",
    "wrong_peer",
    "bad_frame",
];

/// The broker's metrics (see module docs).
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// The catalogued series' handles, for the hot paths ([`hot`]).
    hot: Arc<hot::Hot>,
    /// `broker_latency_seconds`, kept outside the exporter ([`latency`]).
    latency: Arc<latency::LatencyHistograms>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh, empty set of metrics.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let hot = register_catalog(&recorder);
        let metrics = Metrics {
            recorder: Arc::new(recorder),
            handle,
            hot: Arc::new(hot),
            latency: Arc::new(latency::LatencyHistograms::new()),
        };
        // Exists at 0 from the start, so an alert on it needs no special case.
        metrics.store_data_loss().increment(0);
        metrics
    }

    /// The handle of `broker_store_data_loss_total`: times the store noticed it lost data
    /// (cluster mode: Redis restarted without persistence or failed over to a replica that missed
    /// writes). Given to the Redis store, which cannot depend on this module.
    pub fn store_data_loss(&self) -> metrics::Counter {
        self.recorder
            .register_counter(&Key::from_name("broker_store_data_loss_total"), &METADATA)
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)], n: u64) {
        if let Some(counter) = self.hot.counter(name, labels) {
            counter.increment(n);
            return;
        }
        let labels = labels_of(labels);
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
            .increment(n);
    }

    fn gauge_add(&self, name: &'static str, labels: &[(&'static str, &'static str)], d: f64) {
        let labels = labels_of(labels);
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
            .increment(d);
    }

    fn counter_owned(&self, name: &'static str, labels: Vec<Label>, n: u64) {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
            .increment(n);
    }

    fn gauge_set(&self, name: &'static str, v: f64) {
        self.recorder
            .register_gauge(&Key::from_name(name), &METADATA)
            .set(v);
    }

    /// A console event stream fell behind the router's live feed and lost `n` events.
    pub fn console_events_lost(&self, n: u64) {
        self.counter("broker_console_events_lost_total", &[], n);
    }

    /// A connection was accepted (comet).
    pub fn connection_opened(&self, t: Transport) {
        self.counter("broker_connections_total", &[("transport", t.as_str())], 1);
        self.gauge_add("broker_connections", &[("transport", t.as_str())], 1.0);
    }

    /// A connection closed (comet); pair with [`Metrics::connection_opened`].
    pub fn connection_closed(&self, t: Transport) {
        self.gauge_add("broker_connections", &[("transport", t.as_str())], -1.0);
    }

    /// A login succeeded (router, when a session registers).
    pub fn login_ok(&self, t: Transport) {
        self.counter("broker_logins_total", &[("transport", t.as_str())], 1);
        self.gauge_add("broker_sessions", &[("transport", t.as_str())], 1.0);
    }

    /// A session ended (router).
    pub fn session_closed(&self, t: Transport) {
        self.gauge_add("broker_sessions", &[("transport", t.as_str())], -1.0);
    }

    /// A login failed; `reason` is a short snake_case code (e.g. `bad_cookie`, `auth_failed`).
    pub fn login_failed(&self, t: Transport, reason: &'static str) {
        self.counter(
            "broker_login_failures_total",
            &[("transport", t.as_str()), ("reason", reason)],
            1,
        );
    }

    /// `n` deliveries were queued to sessions of transport `t`.
    pub fn delivered(&self, t: Transport, n: u64) {
        self.counter("broker_deliveries_total", &[("transport", t.as_str())], n);
    }

    /// A device session of transport `t` sent a reliable frame again because its wait ran out
    /// (UDP only: a WebSocket session never resends within the session).
    pub fn device_resend(&self, t: Transport) {
        self.counter(
            "broker_device_resends_total",
            &[("transport", t.as_str())],
            1,
        );
    }

    /// An outbound event was dropped (or the session kicked) because its queue was full.
    pub fn queue_drop(&self, t: Transport, policy: &'static str) {
        self.counter(
            "broker_queue_drops_total",
            &[("transport", t.as_str()), ("policy", policy)],
            1,
        );
    }

    /// A CHALLENGE was stamped by a saturated challenge-clock slot (comet; see
    /// `comet::challenge_clock`).
    pub fn challenge_clock_saturated(&self) {
        self.counter("broker_challenge_clock_saturated_total", &[], 1);
    }

    /// A UDP datagram was received (`inbound = true`) or sent (comet).
    pub fn udp_datagram(&self, inbound: bool) {
        let dir = if inbound { "in" } else { "out" };
        self.counter("broker_udp_datagrams_total", &[("direction", dir)], 1);
    }

    /// A UDP datagram was dropped unprocessed; `reason` e.g. `too_large`, `malformed`, `unknown_session`.
    pub fn udp_dropped(&self, reason: &'static str) {
        self.counter("broker_udp_dropped_total", &[("reason", reason)], 1);
    }

    /// `n` UDP datagrams were received (`inbound = true`) or sent in one batch (comet).
    pub fn udp_datagrams(&self, inbound: bool, n: u64) {
        let dir = if inbound { "in" } else { "out" };
        self.counter("broker_udp_datagrams_total", &[("direction", dir)], n);
    }

    /// `n` UDP datagrams were dropped unprocessed for `reason` (see [`Metrics::udp_dropped`]).
    pub fn udp_dropped_n(&self, reason: &'static str, n: u64) {
        self.counter("broker_udp_dropped_total", &[("reason", reason)], n);
    }

    /// The kernel dropped `n` datagrams for the device UDP socket (its receive buffer was full).
    pub fn udp_kernel_drops(&self, n: u64) {
        self.counter("broker_udp_kernel_drops_total", &[], n);
    }

    /// The kernel gave the device UDP socket's `direction` (`receive` or `send`) buffer `bytes`.
    pub fn udp_socket_buffer(&self, direction: &'static str, bytes: usize) {
        let labels = labels_of(&[("direction", direction)]);
        self.recorder
            .register_gauge(
                &Key::from_parts("broker_udp_socket_buffer_bytes", labels),
                &METADATA,
            )
            .set(bytes as f64);
    }

    /// A WebSocket client on transport `t` broke the framing rules and was closed with 1002 or
    /// 1007 (`comet::ws`).
    pub fn ws_protocol_error(&self, t: Transport) {
        self.counter(
            "broker_ws_protocol_errors_total",
            &[("transport", t.as_str())],
            1,
        );
    }

    /// An advisory `Error` about a device frame on transport `t` was not sent: the session's
    /// send window was full (device WebSocket) or too many waited for it (UDP, also counted as
    /// `broker_udp_dropped_total{reason="error_backlog"}`). Refusals for load are never dropped
    /// so: they wait in the session's outbound queue (`comet::device`).
    pub fn advisory_error_dropped(&self, t: Transport) {
        self.counter(
            "broker_advisory_errors_dropped_total",
            &[("transport", t.as_str())],
            1,
        );
    }

    /// A connection's PROXY protocol header was refused (`comet::proxy`); `reason` is
    /// `untrusted`, `malformed` or `missing`.
    pub fn proxy_refused(&self, reason: &'static str) {
        self.counter("broker_proxy_refusals_total", &[("reason", reason)], 1);
    }

    /// A limit refused something; `limit` names the config key (e.g. `max_connections_per_ip`).
    pub fn limit_hit(&self, limit: &'static str) {
        self.counter("broker_limit_rejections_total", &[("limit", limit)], 1);
    }

    /// Registers at 0 the refusal counters of the per-session work limits (`limits`: their
    /// config keys) and the `rate_limited` / `queue_full` results of sends, uploads and device
    /// requests, so they are exported before the first refusal.
    pub fn work_limits_registered(&self, limits: &[&'static str]) {
        for limit in limits {
            self.counter("broker_limit_rejections_total", &[("limit", limit)], 0);
        }
        for result in ["rate_limited", "queue_full"] {
            self.counter("broker_sends_total", &[("result", result)], 0);
            self.counter("broker_uploads_total", &[("result", result)], 0);
            self.counter("broker_device_requests_total", &[("result", result)], 0);
        }
    }

    /// Records the latency of `op`.
    pub fn latency(&self, op: Op, d: Duration) {
        self.latency.record(op, d);
    }

    /// Latency samples recorded for `op` so far.
    pub fn latency_count(&self, op: Op) -> u64 {
        self.latency.count(op)
    }

    /// Sets the offline store size gauges.
    pub fn offline_size(&self, messages: u64, references: u64) {
        self.gauge_set("broker_offline_messages", messages as f64);
        self.gauge_set("broker_offline_references", references as f64);
    }

    /// Counts offline-store cap effects of one append.
    pub fn offline_capped(&self, evicted: u64, rejected: u64) {
        if evicted > 0 {
            self.counter("broker_offline_evicted_total", &[], evicted);
        }
        if rejected > 0 {
            self.counter("broker_offline_rejected_total", &[], rejected);
        }
    }

    /// Counts a push by addressing mode.
    pub fn push(&self, target: &'static str) {
        self.counter("broker_pushes_total", &[("target", target)], 1);
    }

    /// Counts a terminal-to-terminal send; `result` is `ok`, `not_bound`, `invalid_address`,
    /// `error`, `queue_full` or `rate_limited`.
    pub fn send(&self, result: &'static str) {
        self.counter("broker_sends_total", &[("result", result)], 1);
    }

    /// Counts an upload; `result` is `stored`, `duplicate`, `error`, `queue_full`,
    /// `rate_limited` or `after_refused` (held back behind a refused one, `comet::worker`).
    pub fn upload(&self, result: &'static str) {
        self.counter("broker_uploads_total", &[("result", result)], 1);
    }

    /// Counts a command; `result` is `ok`, `not_online`, `timeout`, `disconnected`,
    /// `overloaded`, `error` or `cancelled` (the caller gave up before the result).
    pub fn command(&self, result: &'static str) {
        self.counter("broker_commands_total", &[("result", result)], 1);
    }

    /// Counts a device request; `result` is `ok`, `backend_error`, `not_configured`, `bad_path`,
    /// `too_large`, `queue_full` (too many in flight) or `rate_limited`.
    pub fn device_request(&self, result: &'static str) {
        self.counter("broker_device_requests_total", &[("result", result)], 1);
    }

    /// Counts a webhook delivery attempt; `result` is `ok` or `error`.
    pub fn webhook(&self, result: &'static str) {
        self.counter("broker_webhook_total", &[("result", result)], 1);
    }

    /// The recorder, for parts that pre-register their own handles (e.g. discovery metrics).
    pub fn recorder(&self) -> &dyn Recorder {
        self.recorder.as_ref()
    }

    /// A link to node `peer` came up (`up = true`) or went down.
    pub fn link_state(&self, peer: &str, up: bool) {
        let d = if up { 1.0 } else { -1.0 };
        self.recorder
            .register_gauge(
                &Key::from_parts("broker_link_up", vec![Label::new("peer", peer.to_string())]),
                &METADATA,
            )
            .increment(d);
        let state = if up { "up" } else { "down" };
        self.counter_owned(
            "broker_link_transitions_total",
            vec![
                Label::new("peer", peer.to_string()),
                Label::new("state", state),
            ],
            1,
        );
    }

    /// A frame of kind `frame` (e.g. `deliver`, `stored`, `command`) was written to `peer`.
    pub fn link_frame_sent(&self, peer: &str, frame: &'static str) {
        self.counter_owned(
            "broker_link_frames_sent_total",
            vec![
                Label::new("peer", peer.to_string()),
                Label::new("frame", frame),
            ],
            1,
        );
    }

    /// A frame for `peer` was dropped; `reason` is `queue_full` or `no_link`.
    pub fn link_frame_dropped(&self, peer: &str, reason: &'static str) {
        self.counter_owned(
            "broker_link_frames_dropped_total",
            vec![
                Label::new("peer", peer.to_string()),
                Label::new("reason", reason),
            ],
            1,
        );
    }

    /// Registers the delivery-stream series at 0 (a comet's [`crate::cluster::delivery`]).
    pub fn delivery_stream_registered(&self) {
        for reason in DELIVERY_GAP_REASONS {
            self.counter(
                "broker_delivery_stream_gaps_total",
                &[("reason", reason)],
                0,
            );
        }
        self.counter("broker_delivery_stream_missed_total", &[], 0);
    }

    /// A comet's delivery stream had a gap (`reason` in [`DELIVERY_GAP_REASONS`]); `missed`
    /// notices were trimmed before it read them.
    pub fn delivery_stream_gap(&self, reason: &'static str, missed: u64) {
        self.counter(
            "broker_delivery_stream_gaps_total",
            &[("reason", reason)],
            1,
        );
        self.counter("broker_delivery_stream_missed_total", &[], missed);
    }

    /// Registers every `broker_link_auth_failures_total{reason}` series at 0.
    pub fn link_auth_registered(&self) {
        for reason in LINK_AUTH_REASONS {
            self.counter("broker_link_auth_failures_total", &[("reason", reason)], 0);
        }
    }

    /// A link connection was closed for `reason` (one of [`LINK_AUTH_REASONS`]).
    pub fn link_auth_failure(&self, reason: &'static str) {
        self.counter("broker_link_auth_failures_total", &[("reason", reason)], 1);
    }

    /// An online-registry write `op` (`register`, `unregister`, `heartbeat`, `sweep`) was made;
    /// `ok = false` also counts it as an error.
    pub fn presence_write(&self, op: &'static str, ok: bool) {
        self.counter("broker_presence_writes_total", &[("op", op)], 1);
        if !ok {
            self.counter("broker_presence_errors_total", &[("op", op)], 1);
        }
    }

    /// Counts an HTTP command for a device on another node; `result` as in
    /// [`Metrics::command`], plus `unreachable` and `store_error`.
    pub fn cluster_command(&self, result: &'static str) {
        self.counter("broker_cluster_commands_total", &[("result", result)], 1);
    }

    /// Counts a decision about one of this comet's sessions replaced by a login on another
    /// comet (`plug` profile): `via` is where the notice came from (`link`, `mailbox`,
    /// `login` for a notice deferred until a local login's claim finished, or `restore` when
    /// this comet was swept as dead and a login elsewhere took the terminal), `result` is
    /// `kicked`, `kept` (the local session is newer, or gone) or `deferred`.
    pub fn cluster_replacement(&self, via: &'static str, result: &'static str) {
        self.counter(
            "broker_cluster_replacements_total",
            &[("via", via), ("result", result)],
            1,
        );
    }

    /// The Prometheus text exposition: the recorder's families, the latency histograms, then
    /// the `process_*` families.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        self.latency.render(latency_help(), &mut text);
        if let Some(sample) = process::Sample::read() {
            sample.render(&mut text);
        }
        text
    }
}

/// The catalogued `# HELP` text of `broker_latency_seconds`.
fn latency_help() -> &'static str {
    catalog::FAMILIES
        .iter()
        .find(|f| f.name == latency::FAMILY)
        .map_or("", |f| f.help)
}

impl Metrics {
    /// The figures the web console draws, from one rendering of the recorder: the sum of
    /// every series of each family by family name, and `broker_login_failures_total` by
    /// (transport, reason).
    pub fn console_figures(&self) -> ConsoleFigures {
        let text = self.handle.render();
        ConsoleFigures {
            sums: family_sums(&text),
            login_failures: login_failures(&text),
        }
    }

    /// The sum of every series of each family, by family name.
    pub fn family_sums(&self) -> std::collections::BTreeMap<String, f64> {
        family_sums(&self.handle.render())
    }

    /// `broker_login_failures_total` by (transport, reason).
    pub fn login_failures(&self) -> std::collections::BTreeMap<(String, String), f64> {
        login_failures(&self.handle.render())
    }
}

/// See [`Metrics::console_figures`].
#[derive(Clone, Debug, Default)]
pub struct ConsoleFigures {
    /// Per-family sums.
    pub sums: std::collections::BTreeMap<String, f64>,
    /// `broker_login_failures_total` by (transport, reason).
    pub login_failures: std::collections::BTreeMap<(String, String), f64>,
}

fn family_sums(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut sums = std::collections::BTreeMap::new();
    for (name, _, value) in samples(text) {
        *sums.entry(name.to_string()).or_insert(0.0) += value;
    }
    sums
}

fn login_failures(text: &str) -> std::collections::BTreeMap<(String, String), f64> {
    let mut out = std::collections::BTreeMap::new();
    for (name, labels, value) in samples(text) {
        if name != "broker_login_failures_total" {
            continue;
        }
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        out.insert((label("transport"), label("reason")), value);
    }
    out
}

/// The sample lines of an exposition text: name, label text (without braces) and value. Label
/// values here are the broker's own fixed words (no commas or quotes in them).
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            match series.split_once('{') {
                Some((name, labels)) => Some((name, labels.trim_end_matches('}'), value)),
                None => Some((series, "", value)),
            }
        })
}

/// Describes every catalogued family in `recorder` and registers the series known at start at
/// 0; returns their handles.
fn register_catalog(recorder: &PrometheusRecorder) -> hot::Hot {
    let mut hot = hot::Hot::default();
    for family in catalog::FAMILIES {
        let help = family.help.into();
        let name = family.name.into();
        match family.kind {
            catalog::Kind::Counter => recorder.describe_counter(name, None, help),
            catalog::Kind::Gauge => recorder.describe_gauge(name, None, help),
            // Rendered by `latency`, with its help text, not by the exporter.
            catalog::Kind::Histogram => {}
        }
    }
    for (name, labels) in catalog::zero_series() {
        let key = Key::from_parts(name, labels_of(&labels));
        match catalog::kind_of(name) {
            Some(catalog::Kind::Gauge) => recorder.register_gauge(&key, &METADATA).increment(0.0),
            _ => {
                let counter = recorder.register_counter(&key, &METADATA);
                counter.increment(0);
                hot.keep_counter(name, &labels, &counter);
            }
        }
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let build = [
        ("version", env!("CARGO_PKG_VERSION")),
        ("os", std::env::consts::OS),
        ("arch", std::env::consts::ARCH),
        ("profile", profile),
    ];
    recorder
        .register_gauge(
            &Key::from_parts("broker_build_info", labels_of(&build)),
            &METADATA,
        )
        .set(1.0);
    hot
}

fn labels_of(labels: &[(&'static str, &'static str)]) -> Vec<Label> {
    labels.iter().map(|(k, v)| Label::new(*k, *v)).collect()
}

/// Backend pushes consumed from RabbitMQ (`crate::uploads::PushConsumer`).
impl Metrics {
    /// Registers at 0 every `broker_pushes_consumed_total{result}` and
    /// `broker_push_rejected_total{reason}` series.
    pub fn push_consumer_registered(&self, results: &[&'static str], reasons: &[&'static str]) {
        for result in results {
            self.counter("broker_pushes_consumed_total", &[("result", result)], 0);
        }
        for reason in reasons {
            self.counter("broker_push_rejected_total", &[("reason", reason)], 0);
        }
    }

    /// A consumed push ended as `result` (`acked`, `requeued`, `dead_lettered`).
    pub fn push_consumed(&self, result: &'static str) {
        self.counter("broker_pushes_consumed_total", &[("result", result)], 1);
    }

    /// A poison push was dead-lettered (or dropped) for `reason`.
    pub fn push_rejected(&self, reason: &'static str) {
        self.counter("broker_push_rejected_total", &[("reason", reason)], 1);
    }
}

/// The upload spool's size and retention (refreshed with the store gauges).
impl Metrics {
    /// Sets `broker_store_writer_queue` (write requests waiting for the embedded store's
    /// writer now) and `broker_store_writer_waits_total` (writes that found that queue full
    /// and waited; kept by the store).
    pub fn store_writer(&self, queued: u64, waits: u64) {
        self.gauge_set("broker_store_writer_queue", queued as f64);
        self.recorder
            .register_counter(
                &Key::from_name("broker_store_writer_waits_total"),
                &METADATA,
            )
            .absolute(waits);
    }

    /// Sets `broker_upload_spool_records` and `broker_upload_spool_bytes`, and the totals
    /// `broker_upload_spool_trimmed_total` (consumed by every consumer) and
    /// `broker_upload_spool_dropped_total{reason="age"|"size"}` (dropped unconsumed by a cap).
    /// The totals are kept by the store, so they survive restarts.
    pub fn upload_spool(&self, records: u64, bytes: u64, trimmed: u64, dropped: [u64; 2]) {
        self.gauge_set("broker_upload_spool_records", records as f64);
        self.gauge_set("broker_upload_spool_bytes", bytes as f64);
        self.recorder
            .register_counter(
                &Key::from_name("broker_upload_spool_trimmed_total"),
                &METADATA,
            )
            .absolute(trimmed);
        for (reason, n) in [("age", dropped[0]), ("size", dropped[1])] {
            let key = Key::from_parts(
                "broker_upload_spool_dropped_total",
                vec![Label::new("reason", reason)],
            );
            self.recorder.register_counter(&key, &METADATA).absolute(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails, showing the whole exposition, unless `text` contains `line`.
    fn assert_renders(text: &str, line: &str) {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }

    #[test]
    fn renders_labelled_counters_and_histograms() {
        let m = Metrics::new();
        m.connection_opened(Transport::Udp);
        m.login_failed(Transport::DeviceWs, "auth_failed");
        m.queue_drop(Transport::AppWs, "drop-newest");
        m.latency(Op::Push, Duration::from_millis(3));
        let text = m.render();
        assert_renders(&text, "broker_connections_total{transport=\"udp\"} 1");
        assert_renders(
            &text,
            "broker_login_failures_total{transport=\"device_ws\",reason=\"auth_failed\"} 1",
        );
        assert_renders(
            &text,
            "broker_queue_drops_total{transport=\"app_ws\",policy=\"drop-newest\"} 1",
        );
        assert_renders(
            &text,
            "broker_latency_seconds_bucket{op=\"push\",le=\"0.005\"} 1",
        );
        let sums = m.family_sums();
        assert_eq!(sums["broker_connections_total"], 1.0);
        assert_eq!(sums["broker_logins_total"], 0.0);
        let failures = m.login_failures();
        assert_eq!(
            failures[&("device_ws".to_string(), "auth_failed".to_string())],
            1.0
        );
        // Separate instances do not share state.
        assert!(
            Metrics::new()
                .render()
                .contains("broker_connections_total{transport=\"udp\"} 0\n")
        );
    }

    #[test]
    fn catalogued_series_are_recorded_through_kept_handles_and_rendered() {
        let m = Metrics::new();
        assert!(
            m.hot
                .counter("broker_commands_total", &[("result", "ok")])
                .is_some()
        );
        // Two labels, or a value outside the catalogue: the registry, not a kept handle.
        assert!(
            m.hot
                .counter("broker_commands_total", &[("result", "no_such_result")])
                .is_none()
        );
        m.command("ok");
        m.command("ok");
        m.command("no_such_result");
        m.latency(Op::Command, Duration::from_micros(150));
        let text = m.render();
        assert_renders(&text, "broker_commands_total{result=\"ok\"} 2\n");
        assert_renders(
            &text,
            "broker_commands_total{result=\"no_such_result\"} 1\n",
        );
        assert_renders(
            &text,
            "broker_latency_seconds_bucket{op=\"command\",le=\"0.00025\"} 1\n",
        );
    }
}
