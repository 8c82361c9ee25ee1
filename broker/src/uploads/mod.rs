//! Cluster mode's RabbitMQ side: device uploads out ([`RabbitUploadSink`]) and backend pushes in
//! ([`PushConsumer`]).
//!
//! * [`config`]: the `[rabbitmq]` settings (exchanges, queues, routing, timeouts).
//! * [`nodes`]: the healthy AMQP URLs as a `watch` channel (from rmqkeeper's
//!   [`crate::keeper::RabbitView`] or a static list) and connecting to one of them.
//! * [`publisher`]: an upload is acknowledged to the device only after a publisher confirm, or
//!   after it is durable in a spool that a forwarder publishes from later, in order.
//! * [`push`]: consumes backend pushes (JSON, see `docs/storage.md`) from every healthy node and
//!   acks each only after the callback (the router's push) succeeded; poison messages go to a
//!   dead-letter exchange, transient failures are requeued with back-off.
//!
//! RabbitMQ nodes are independent (not clustered): the publisher uses one node at a time and
//! fails over; a consumer of uploads must read the queue on every node and drop duplicates by the
//! `dedup_key` header.

pub mod config;
pub mod nodes;
pub mod publisher;
pub mod push;

pub use config::RabbitConfig;
pub use nodes::{NodeList, static_nodes, urls_from_rabbit_view};
pub use publisher::{Delivered, RabbitUploadSink, SinkStats, Upload, UploadSink, UploadSinkError};
pub use push::{
    BackendPush, PUSH_REJECT_REASONS, PUSH_RESULTS, PushConsumer, PushDecodeError, PushFailure,
    REJECT_DETAIL_HEADER, REJECT_REASON_HEADER, decode_push,
};
