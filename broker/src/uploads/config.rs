//! [`RabbitConfig`]: the `[rabbitmq]` section (a serde struct with a default for every key).

use serde::{Deserialize, Serialize};

/// RabbitMQ settings for uploads and backend pushes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitConfig {
    /// Static AMQP URLs (with credentials) used when no rmqkeeper view is configured.
    pub urls: Vec<String>,
    /// User added to the credential-less URLs that rmqkeepers register.
    pub user: String,
    /// Password for `user`.
    pub password: String,
    /// Durable topic exchange uploads are published to.
    pub upload_exchange: String,
    /// Durable queue bound to it (declared so nothing published is dropped unrouted).
    pub upload_queue: String,
    /// Routing key prefix: an upload with topic `power` goes out as `<prefix>.power`.
    pub upload_routing_prefix: String,
    /// How long a publish waits for its confirm before trying the next node or the spool, ms.
    pub confirm_timeout_ms: u64,
    /// Connection (TCP + AMQP handshake) timeout per node, ms.
    pub connect_timeout_ms: u64,
    /// How often the spool forwarder retries while no node is healthy, ms.
    pub retry_interval_ms: u64,
    /// Uploads the forwarder publishes per batch before waiting for their confirms.
    pub forward_batch: usize,
    /// Durable exchange backend services publish pushes to (empty: no push consumer).
    pub push_exchange: String,
    /// Durable queue msgbus consumes pushes from (bound to `push_exchange` with `#`).
    pub push_queue: String,
    /// Unacknowledged pushes in flight per node.
    pub push_prefetch: u16,
    /// Durable fanout exchange poison pushes are republished to, with the reason as a header
    /// (empty: rejected without requeue, dropped).
    pub push_dead_letter_exchange: String,
    /// Durable queue bound to `push_dead_letter_exchange` (declared by the consumer).
    pub push_dead_letter_queue: String,
    /// Longest pause before requeueing a push that failed transiently, ms (the pause starts at
    /// 100 ms and doubles with each consecutive failure).
    pub push_retry_max_ms: u64,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        RabbitConfig {
            urls: Vec::new(),
            user: "guest".into(),
            password: "guest".into(),
            upload_exchange: "uploads".into(),
            upload_queue: "uploads".into(),
            upload_routing_prefix: "upload".into(),
            confirm_timeout_ms: 5000,
            connect_timeout_ms: 3000,
            retry_interval_ms: 1000,
            forward_batch: 64,
            push_exchange: "pushes".into(),
            push_queue: "msgbus.pushes".into(),
            push_prefetch: 32,
            push_dead_letter_exchange: "pushes.dead".into(),
            push_dead_letter_queue: "msgbus.pushes.dead".into(),
            push_retry_max_ms: 5000,
        }
    }
}
