//! The catalogue of metric families: name, type and help text of every family the broker
//! exports, and the label values each family is registered with at start so that it exists at
//! 0 before anything happened (a dashboard's `rate()` and an alert's `absent()` then work on a
//! fresh broker).
//!
//! [`super::Metrics::new`] describes every family here (the `# HELP` line) and registers the
//! [`zero_series`]; the recording methods of [`super::Metrics`] use the same names. Families
//! marked [`Scope::Cluster`] exist only on cluster nodes and are registered by the cluster code
//! when it starts (their `peer` labels are not known before).

use crate::terminal::QueueFullPolicy;
use crate::terminal::Transport;

/// The Prometheus type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Latency buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Where a family exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every broker, standalone or cluster node: registered at start.
    Always,
    /// Cluster nodes only: registered by the cluster code.
    Cluster,
    /// `broker rmqkeeper` only: its own `/metrics` ([`KEEPER_FAMILIES`]).
    Keeper,
}

/// One metric family.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Where it exists.
    pub scope: Scope,
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn f(name: &'static str, kind: Kind, scope: Scope, help: &'static str) -> Family {
    Family {
        name,
        kind,
        scope,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};
use Scope::{Always, Cluster};

/// Every family `broker rmqkeeper` exports on its own `/metrics` (`crate::keeper::status`),
/// all registered when it starts, beside the `process_*` families.
pub const KEEPER_FAMILIES: &[Family] = &[
    f(
        "rmqkeeper_build_info",
        Gauge,
        Scope::Keeper,
        "Always 1; labels carry the keeper's version.",
    ),
    f(
        "rmqkeeper_rabbit_healthy",
        Gauge,
        Scope::Keeper,
        "1 while the guarded RabbitMQ node passed its last health check (aliveness, alarms, port listener), else 0.",
    ),
    f(
        "rmqkeeper_registered",
        Gauge,
        Scope::Keeper,
        "1 while the node's znode exists in the keeper's ZooKeeper session (publishers may use the node), else 0.",
    ),
    f(
        "rmqkeeper_zk_connected",
        Gauge,
        Scope::Keeper,
        "1 while the keeper holds a ZooKeeper session, else 0.",
    ),
    f(
        "rmqkeeper_checks_total",
        Counter,
        Scope::Keeper,
        "Health checks run, by result: healthy, or the check that failed first (aliveness, alarms, port-listener).",
    ),
    f(
        "rmqkeeper_registrations_total",
        Counter,
        Scope::Keeper,
        "Registration changes: to=registered (znode created) or to=unregistered (removed while the node is unhealthy).",
    ),
    f(
        "rmqkeeper_zk_sessions_total",
        Counter,
        Scope::Keeper,
        "ZooKeeper sessions established (one at start, one more per lost session re-created).",
    ),
];

/// Every family the broker's recorder exports (the `process_*` families are rendered by
/// [`super::process`] and listed in [`super::process::FAMILIES`]).
pub const FAMILIES: &[Family] = &[
    f(
        "broker_build_info",
        Gauge,
        Always,
        "Always 1; labels carry the broker's version, target and build profile.",
    ),
    f(
        "broker_connections_total",
        Counter,
        Always,
        "Connections accepted, by transport.",
    ),
    f(
        "broker_ws_protocol_errors_total",
        Counter,
        Always,
        "WebSocket connections closed with 1002 or 1007 for breaking RFC 6455 framing (compressed frames without a negotiated extension, bad opcodes, fragmented control frames, invalid UTF-8), by transport.",
    ),
    f(
        "broker_advisory_errors_dropped_total",
        Counter,
        Always,
        "Advisory Error frames about a device's frames (a malformed or unexpected frame, a payload over the limit, a bad address) not sent because the session's send window was full (device WebSocket) or 16 already waited (UDP), by transport. Refusals for load are never dropped: they wait in the session's outbound queue.",
    ),
    f(
        "broker_proxy_refusals_total",
        Counter,
        Always,
        "Connections closed for their PROXY protocol header (reason: untrusted peer, malformed, missing).",
    ),
    f(
        "broker_store_writer_queue",
        Gauge,
        Always,
        "Write requests waiting for the embedded store's writer (bounded by storage.writer_queue).",
    ),
    f(
        "broker_store_writer_waits_total",
        Counter,
        Always,
        "Writes that found the embedded store writer's queue full and waited for a slot.",
    ),
    f(
        "broker_connections",
        Gauge,
        Always,
        "Connections open now, by transport.",
    ),
    f(
        "broker_logins_total",
        Counter,
        Always,
        "Logins accepted, by transport.",
    ),
    f(
        "broker_sessions",
        Gauge,
        Always,
        "Logged-in sessions now, by transport.",
    ),
    f(
        "broker_login_failures_total",
        Counter,
        Always,
        "Logins refused, by transport and reason.",
    ),
    f(
        "broker_challenge_clock_saturated_total",
        Counter,
        Always,
        "CHALLENGEs stamped by a challenge-clock slot already a second ahead of the wall clock (a HELLO flood naming the terminals of one slot).",
    ),
    f(
        "broker_deliveries_total",
        Counter,
        Always,
        "Messages queued to sessions, by transport.",
    ),
    f(
        "broker_device_resends_total",
        Counter,
        Always,
        "Reliable frames a device session sent again because no acknowledgement came in time, by transport (udp; device_ws stays 0: a WebSocket session never resends within the session).",
    ),
    f(
        "broker_console_events_lost_total",
        Counter,
        Always,
        "Live events a console event stream lost because it fell behind the router's feed.",
    ),
    f(
        "broker_store_data_loss_total",
        Counter,
        Always,
        "Times the store noticed it had lost data (cluster: Redis restarted without persistence or failed over to a replica that missed writes).",
    ),
    f(
        "broker_pushes_consumed_total",
        Counter,
        Cluster,
        "Backend pushes consumed from RabbitMQ, by result (acked, requeued, dead_lettered).",
    ),
    f(
        "broker_push_rejected_total",
        Counter,
        Cluster,
        "Poison backend pushes dead-lettered (or dropped), by reason.",
    ),
    f(
        "broker_upload_spool_records",
        Gauge,
        Always,
        "Records in the upload spool now.",
    ),
    f(
        "broker_upload_spool_bytes",
        Gauge,
        Always,
        "Bytes of stored records in the upload spool now.",
    ),
    f(
        "broker_upload_spool_trimmed_total",
        Counter,
        Always,
        "Spool records deleted after every consumer had them.",
    ),
    f(
        "broker_upload_spool_dropped_total",
        Counter,
        Always,
        "Spool records dropped by a retention cap before every consumer had them, by reason (age, size).",
    ),
    f(
        "broker_queue_drops_total",
        Counter,
        Always,
        "Outbound messages dropped (or sessions kicked) on a full queue, by transport and queue_full_policy.",
    ),
    f(
        "broker_udp_datagrams_total",
        Counter,
        Always,
        "UDP datagrams received (direction=in) and sent (direction=out).",
    ),
    f(
        "broker_udp_dropped_total",
        Counter,
        Always,
        "UDP datagrams dropped unprocessed, by reason.",
    ),
    f(
        "broker_udp_kernel_drops_total",
        Counter,
        Always,
        "UDP datagrams the kernel dropped before the broker read them (receive buffer full), as SO_RXQ_OVFL reports.",
    ),
    f(
        "broker_udp_socket_buffer_bytes",
        Gauge,
        Always,
        "Size the kernel gave the device UDP socket's buffers (direction=receive|send), as it reports them (twice the usable size).",
    ),
    f(
        "broker_limit_rejections_total",
        Counter,
        Always,
        "Requests, connections or messages refused by a configured limit (label: the config key).",
    ),
    f(
        "broker_latency_seconds",
        Histogram,
        Always,
        "Latency of broker operations, by op (push, upload, command, device_request, login, replay).",
    ),
    f(
        "broker_offline_messages",
        Gauge,
        Always,
        "Messages in the offline store.",
    ),
    f(
        "broker_offline_references",
        Gauge,
        Always,
        "Per-terminal references to offline messages.",
    ),
    f(
        "broker_offline_evicted_total",
        Counter,
        Always,
        "Offline messages evicted by the per-terminal cap.",
    ),
    f(
        "broker_offline_rejected_total",
        Counter,
        Always,
        "Offline messages refused by the store's caps.",
    ),
    f(
        "broker_pushes_total",
        Counter,
        Always,
        "Pushes from the API, by addressing mode (target).",
    ),
    f(
        "broker_sends_total",
        Counter,
        Always,
        "Terminal-to-terminal sends, by result.",
    ),
    f(
        "broker_uploads_total",
        Counter,
        Always,
        "Device uploads, by result.",
    ),
    f(
        "broker_commands_total",
        Counter,
        Always,
        "Commands from the API to devices on this node, by result.",
    ),
    f(
        "broker_device_requests_total",
        Counter,
        Always,
        "Device requests forwarded to the backend, by result.",
    ),
    f(
        "broker_webhook_total",
        Counter,
        Always,
        "Webhook delivery attempts, by result.",
    ),
    f(
        "broker_link_up",
        Gauge,
        Cluster,
        "Connected links to the peer node now.",
    ),
    f(
        "broker_link_transitions_total",
        Counter,
        Cluster,
        "Link state changes, by peer and state (up, down).",
    ),
    f(
        "broker_link_frames_sent_total",
        Counter,
        Cluster,
        "Frames written to a peer node, by frame kind.",
    ),
    f(
        "broker_link_frames_dropped_total",
        Counter,
        Cluster,
        "Frames for a peer node dropped, by reason (queue_full, no_link).",
    ),
    f(
        "broker_delivery_stream_gaps_total",
        Counter,
        Cluster,
        "Times a comet's delivery-notice stream had a gap and its sessions re-read the store, by reason (trimmed, lost, swept).",
    ),
    f(
        "broker_delivery_stream_missed_total",
        Counter,
        Cluster,
        "Delivery notices trimmed from a comet's stream before it read them (the messages are replayed from the store).",
    ),
    f(
        "broker_link_auth_failures_total",
        Counter,
        Cluster,
        "Node-link connections closed unauthenticated, by reason.",
    ),
    f(
        "broker_presence_writes_total",
        Counter,
        Cluster,
        "Online-registry writes, by op.",
    ),
    f(
        "broker_presence_errors_total",
        Counter,
        Cluster,
        "Online-registry writes that failed, by op.",
    ),
    f(
        "broker_cluster_replacements_total",
        Counter,
        Cluster,
        "Decisions about a session replaced by a login on another comet (plug profile), by where the notice came from and result.",
    ),
    f(
        "broker_cluster_commands_total",
        Counter,
        Cluster,
        "API commands for devices on other nodes, by result.",
    ),
    f(
        "broker_rabbitmq_failovers_total",
        Counter,
        Cluster,
        "Times a comet's upload publisher left its RabbitMQ node (connection or channel error, lost confirm, or the node left the healthy set).",
    ),
    f(
        "broker_rabbitmq_node_in_use",
        Gauge,
        Cluster,
        "1 for the RabbitMQ node (host:port) the upload publisher is connected to now, 0 for nodes it used or knew before.",
    ),
    f(
        "broker_rabbitmq_confirms_pending",
        Gauge,
        Cluster,
        "Upload publishes waiting for their RabbitMQ publisher confirm now (direct and from the spool).",
    ),
    f(
        "broker_upload_spool_backlog",
        Gauge,
        Cluster,
        "Uploads in the comet's durable spool not yet confirmed by RabbitMQ (acknowledged to devices, waiting to be forwarded).",
    ),
    f(
        "broker_upload_spool_oldest_age_seconds",
        Gauge,
        Cluster,
        "Age of the oldest upload waiting in the comet's spool, seconds (0 when none waits).",
    ),
    f(
        "broker_redis_up",
        Gauge,
        Cluster,
        "1 while the node's last Redis health probe (PING) was answered, else 0.",
    ),
    f(
        "broker_redis_errors_total",
        Counter,
        Cluster,
        "Redis health probes that failed, by kind: io, timeout, response, other.",
    ),
    f(
        "broker_redis_last_error_timestamp_seconds",
        Gauge,
        Cluster,
        "When the node's last Redis health probe failed, seconds since the Unix epoch (0: never).",
    ),
    f(
        "broker_discovery_healthy",
        Gauge,
        Cluster,
        "1 while the discovery view is current, 0 while ZooKeeper is unreachable.",
    ),
    f(
        "broker_discovery_nodes",
        Gauge,
        Cluster,
        "Live nodes in the discovery view, by role.",
    ),
    f(
        "broker_discovery_sessions_total",
        Counter,
        Cluster,
        "ZooKeeper sessions established.",
    ),
    f(
        "broker_discovery_expired_total",
        Counter,
        Cluster,
        "ZooKeeper sessions lost.",
    ),
    f(
        "broker_discovery_rejected_total",
        Counter,
        Cluster,
        "Discovery znodes ignored for bad data.",
    ),
];

/// Reasons of `broker_login_failures_total`, on every transport.
pub const LOGIN_FAILURE_REASONS: &[&str] = &[
    "auth_failed",
    "bad_cookie",
    "bad_token",
    "bad_upgrade",
    "cookie_expired",
    "dropped",
    "duplicate",
    "handshake_timeout",
    "hello_rejected",
    "internal",
    "invalid_id",
    "kind_mismatch",
    "kind_not_allowed",
    "malformed",
    "max_connections",
    "max_connections_per_ip",
    "rate_limited",
    "replay",
    "token_expired",
    "too_large",
    "unavailable",
    "unexpected",
    "unknown_terminal",
];

/// Reasons of `broker_udp_dropped_total`.
pub const UDP_DROP_REASONS: &[&str] = &[
    "auth_failed",
    "error_backlog",
    "hello_busy",
    "malformed",
    "reject_too_long",
    "replayed",
    "send_failed",
    "shard_busy",
    "too_large",
    "undecodable",
    "unknown_session",
    "unsendable",
];

/// Config keys of `broker_limit_rejections_total{limit}`.
pub const LIMITS: &[&str] = &[
    "api.body_timeout_ms",
    "api.header_read_timeout_ms",
    "api.max_body_bytes",
    "api.max_connections",
    "login_attempts_per_ip_per_sec",
    "max_app_message_bytes",
    "max_connections",
    "max_connections_per_ip",
    "max_device_frame_bytes",
    "max_inflight_commands",
    "max_payload_bytes",
    "max_pending_handshakes",
    "max_pending_refusals",
    "ws_write_timeout_ms",
];

/// One series registered at 0 at start: family name and labels.
pub type Series = (&'static str, Vec<(&'static str, &'static str)>);

fn one(name: &'static str, label: &'static str, values: &[&'static str]) -> Vec<Series> {
    values.iter().map(|v| (name, vec![(label, *v)])).collect()
}

/// The counter and gauge series registered at 0 when a broker starts (the latency histograms
/// exist empty from the start too: [`super::latency`]).
pub fn zero_series() -> Vec<Series> {
    let transports: Vec<&'static str> = Transport::ALL.iter().map(|t| t.as_str()).collect();
    let policies = [
        QueueFullPolicy::DropNewest,
        QueueFullPolicy::DropOldest,
        QueueFullPolicy::Disconnect,
    ];
    let mut s = Vec::new();
    for name in [
        "broker_connections_total",
        "broker_connections",
        "broker_logins_total",
        "broker_sessions",
        "broker_deliveries_total",
    ] {
        s.extend(one(name, "transport", &transports));
    }
    for t in &transports {
        for r in LOGIN_FAILURE_REASONS {
            s.push((
                "broker_login_failures_total",
                vec![("transport", *t), ("reason", *r)],
            ));
        }
        for p in policies {
            s.push((
                "broker_queue_drops_total",
                vec![("transport", *t), ("policy", p.as_str())],
            ));
        }
    }
    s.extend(one(
        "broker_device_resends_total",
        "transport",
        &[Transport::Udp.as_str(), Transport::DeviceWs.as_str()],
    ));
    s.extend(one(
        "broker_udp_datagrams_total",
        "direction",
        &["in", "out"],
    ));
    s.extend(one("broker_udp_dropped_total", "reason", UDP_DROP_REASONS));
    s.push(("broker_udp_kernel_drops_total", vec![]));
    s.push(("broker_challenge_clock_saturated_total", vec![]));
    s.extend(one(
        "broker_udp_socket_buffer_bytes",
        "direction",
        &["receive", "send"],
    ));
    s.extend(one("broker_limit_rejections_total", "limit", LIMITS));
    s.extend(one(
        "broker_proxy_refusals_total",
        "reason",
        &["untrusted", "malformed", "missing"],
    ));
    s.extend(one(
        "broker_ws_protocol_errors_total",
        "transport",
        &[Transport::DeviceWs.as_str(), Transport::AppWs.as_str()],
    ));
    s.extend(one(
        "broker_advisory_errors_dropped_total",
        "transport",
        &[Transport::DeviceWs.as_str(), Transport::Udp.as_str()],
    ));
    s.push(("broker_console_events_lost_total", vec![]));
    for name in [
        "broker_store_writer_queue",
        "broker_store_writer_waits_total",
        "broker_offline_messages",
        "broker_offline_references",
        "broker_offline_evicted_total",
        "broker_offline_rejected_total",
    ] {
        s.push((name, vec![]));
    }
    s.extend(one(
        "broker_pushes_total",
        "target",
        &[
            "unicast",
            "multicast",
            "group",
            "all_devices",
            "all_phones",
            "everyone",
        ],
    ));
    s.extend(one(
        "broker_sends_total",
        "result",
        &["ok", "not_bound", "invalid_address", "error", "queue_full"],
    ));
    s.extend(one(
        "broker_uploads_total",
        "result",
        &[
            "stored",
            "duplicate",
            "error",
            "too_large",
            "queue_full",
            "after_refused",
        ],
    ));
    s.extend(one(
        "broker_commands_total",
        "result",
        &[
            "ok",
            "not_online",
            "timeout",
            "disconnected",
            "overloaded",
            "error",
            "cancelled",
        ],
    ));
    s.extend(one(
        "broker_device_requests_total",
        "result",
        &[
            "ok",
            "backend_error",
            "backend_timeout",
            "bad_path",
            "not_configured",
            "too_large",
        ],
    ));
    s.extend(one("broker_webhook_total", "result", &["ok", "error"]));
    s
}

/// The kind of family `name`, if it is catalogued.
pub fn kind_of(name: &str) -> Option<Kind> {
    FAMILIES.iter().find(|f| f.name == name).map(|f| f.kind)
}
