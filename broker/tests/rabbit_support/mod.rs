//! What the RabbitMQ upload tests share (`rabbit_uploads`, `fault_rabbit_partition`,
//! `upload_path_metrics`): reading a queue back, removing a test's exchanges and queues,
//! waiting for a condition with a deadline, publishing as a backend once a queue is bound
//! ([`publish_when_routed`]), and a relay that can cut a node off ([`blackhole`]).
#![allow(dead_code)] // Each test binary uses its own part.

pub mod blackhole;

use std::time::{Duration, Instant};

use broker::uploads::RabbitConfig;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Reads (and acks) everything in `queue` on `url`, each message as `read` makes it.
pub async fn drain_queue<T>(
    url: &str,
    queue: &str,
    mut read: impl FnMut(&Delivery) -> T,
) -> Vec<T> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        out.push(read(&m.delivery));
        m.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

/// A test's own exchanges and queues, all named after `id` (so runs never share them), with the
/// rest of the settings at their defaults; each test sets its own timeouts on top.
pub fn topology(id: &str) -> RabbitConfig {
    RabbitConfig {
        upload_exchange: format!("{id}.uploads"),
        upload_queue: format!("{id}.uploads"),
        push_exchange: format!("{id}.pushes"),
        push_queue: format!("{id}.pushes"),
        push_dead_letter_exchange: format!("{id}.pushes.dead"),
        push_dead_letter_queue: format!("{id}.pushes.dead"),
        ..RabbitConfig::default()
    }
}

/// A message's headers (empty when it has none).
pub fn headers(d: &Delivery) -> FieldTable {
    d.properties.headers().clone().unwrap_or_default()
}

/// A string header's value.
pub fn header_str(h: &FieldTable, k: &str) -> Option<String> {
    match h.inner().get(k)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Whether a boolean header is set to true.
pub fn header_true(h: &FieldTable, k: &str) -> bool {
    matches!(h.inner().get(k), Some(AMQPValue::Boolean(true)))
}

/// The AMQP message id (empty when unset).
pub fn message_id(d: &Delivery) -> String {
    d.properties
        .message_id()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default()
}

/// Deletes the queues and exchanges `cfg` names on the node at `url` (a node that cannot be
/// reached is left alone).
pub async fn delete_topology(url: &str, cfg: &RabbitConfig) {
    let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await else {
        return;
    };
    let ch = conn.create_channel().await.unwrap();
    for q in [
        &cfg.upload_queue,
        &cfg.push_queue,
        &cfg.push_dead_letter_queue,
    ] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for e in [
        &cfg.upload_exchange,
        &cfg.push_exchange,
        &cfg.push_dead_letter_exchange,
    ] {
        let _ = ch
            .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `body` (persistent) to `exchange` on `url` with `routing_key`, as a backend would,
/// once some queue is bound to take it: the publish is mandatory and confirmed, and a message
/// the node returns as unroutable (the consumer has not declared or bound its queue yet) is
/// published again every 50 ms, up to `timeout`.
///
/// A passive queue declare is not enough: a consumer declares its queue before it binds it, and
/// a message published in between is dropped by the node.
pub async fn publish_when_routed(
    url: &str,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    loop {
        // A publish to an exchange that does not exist yet closes the channel: a new one each try.
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                mandatory,
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await;
        let routed = match confirm {
            Ok(confirm) => match confirm.await {
                Ok(confirmation) => confirmation.is_ack() && confirmation.take_message().is_none(),
                Err(_) => false,
            },
            Err(_) => false,
        };
        if routed {
            let _ = conn.close(200, "done".into()).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing bound to take a message from {exchange} on {url} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
