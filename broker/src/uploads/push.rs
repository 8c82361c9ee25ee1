//! [`PushConsumer`]: backend pushes from RabbitMQ into the router.
//!
//! Backend services publish JSON messages (the HTTP push body, see `docs/storage.md`) to the
//! durable `push_exchange`; msgbus consumes the durable `push_queue` (bound with `#`) on every
//! healthy node (nodes are independent, a backend may publish to any). Each message is decoded
//! ([`decode_push`]) and handed to the callback; it is acked only after the callback returned
//! `Ok`.
//!
//! Failures are split by [`PushFailure`]:
//! * transient (the store is down): the message is nacked with requeue after a pause that doubles
//!   with each consecutive transient failure on that node, from 100 ms up to `push_retry_max_ms`;
//! * permanent (the body does not decode, or the router refuses the push itself: too large, bad
//!   TTL, an invalid address such as id 0, an unknown group): a poison message that would never
//!   succeed. It is republished to the dead-letter exchange `push_dead_letter_exchange` (a
//!   durable fanout the consumer declares, with the durable queue `push_dead_letter_queue` bound
//!   to it) with the reason in the `x-push-rejected-reason` header and the error text in
//!   `x-push-rejected-detail`, and acked once that publish is confirmed. It is logged once,
//!   counted in `broker_push_rejected_total{reason}` ([`PUSH_REJECT_REASONS`]), and consuming
//!   goes on. With an empty `push_dead_letter_exchange` it is rejected without requeue (dropped,
//!   still counted and logged).
//!
//! Every message's outcome is counted in `broker_pushes_consumed_total{result}` (`acked`,
//! `requeued`, `dead_lettered`); all series are registered at 0 when the consumer starts.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Confirmation, ExchangeKind};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::RabbitConfig;
use super::nodes::{NodeList, connect, redact};
use super::publisher::declare_bound;
use crate::metrics::Metrics;
use crate::router::{PushError, Target};
use crate::store::StoreError;
use crate::terminal::Address;

/// The `reason` labels of `broker_push_rejected_total` (and values of the
/// `x-push-rejected-reason` header): `decode` (not the documented JSON), `too_large`, `bad_ttl`,
/// `bad_address`, `unknown_group`, `bad_group` (an invalid group name), `not_bound` (the
/// router's refusals).
pub const PUSH_REJECT_REASONS: [&str; 7] = [
    "decode",
    "too_large",
    "bad_ttl",
    "bad_address",
    "unknown_group",
    "bad_group",
    "not_bound",
];

/// The `result` labels of `broker_pushes_consumed_total`.
pub const PUSH_RESULTS: [&str; 3] = ["acked", "requeued", "dead_lettered"];

/// Header naming why a push was dead-lettered (one of [`PUSH_REJECT_REASONS`]).
pub const REJECT_REASON_HEADER: &str = "x-push-rejected-reason";

/// Header carrying the error text of a dead-lettered push.
pub const REJECT_DETAIL_HEADER: &str = "x-push-rejected-detail";

/// Why the consumer's callback did not handle a push; decides dead-letter versus requeue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushFailure {
    /// The push can never succeed (a poison message): dead-lettered, not requeued.
    #[error("{reason}: {detail}")]
    Permanent {
        /// One of [`PUSH_REJECT_REASONS`].
        reason: &'static str,
        /// The error text.
        detail: String,
    },
    /// It may succeed later (the store is unavailable): requeued after a back-off.
    #[error("{0}")]
    Transient(String),
}

impl From<PushError> for PushFailure {
    fn from(e: PushError) -> Self {
        let reason = match &e {
            PushError::TooLarge(_) => "too_large",
            PushError::BadTtl(_) => "bad_ttl",
            PushError::Address(..) => "bad_address",
            PushError::UnknownGroup(_) => "unknown_group",
            PushError::NotBound { .. } => "not_bound",
            PushError::Store(StoreError::InvalidGroupName) => "bad_group",
            PushError::Store(_) => return PushFailure::Transient(e.to_string()),
        };
        PushFailure::Permanent {
            reason,
            detail: e.to_string(),
        }
    }
}

/// A decoded backend push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendPush {
    /// Who it is for.
    pub target: Target,
    /// The payload.
    pub payload: Bytes,
    /// Time to live (the router's default when `None`).
    pub ttl: Option<Duration>,
}

/// Why a push message was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PushDecodeError {
    /// Not the documented JSON shape.
    #[error("push JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `payload` is not base64.
    #[error("push payload is not base64")]
    Base64,
    /// Neither or both of `payload` and `text`, or an empty target list.
    #[error("push: {0}")]
    Invalid(&'static str),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum WireTarget {
    Terminal(Address),
    List(Vec<Address>),
    Group(String),
    AllDevices,
    AllPhones,
    Everyone,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePush {
    target: WireTarget,
    payload: Option<String>,
    text: Option<String>,
    ttl_secs: Option<u64>,
}

/// Decodes one push message body.
pub fn decode_push(body: &[u8]) -> Result<BackendPush, PushDecodeError> {
    let w: WirePush = serde_json::from_slice(body)?;
    let target = match w.target {
        WireTarget::Terminal(a) => Target::Terminal(a),
        WireTarget::List(l) if l.is_empty() => return Err(PushDecodeError::Invalid("empty list")),
        WireTarget::List(l) => Target::List(l),
        WireTarget::Group(g) => Target::Group(g),
        WireTarget::AllDevices => Target::AllDevices,
        WireTarget::AllPhones => Target::AllPhones,
        WireTarget::Everyone => Target::Everyone,
    };
    let payload = match (w.payload, w.text) {
        (Some(b64), None) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| PushDecodeError::Base64)?,
        ),
        (None, Some(t)) => Bytes::from(t),
        _ => return Err(PushDecodeError::Invalid("exactly one of payload and text")),
    };
    Ok(BackendPush {
        target,
        payload,
        ttl: w.ttl_secs.map(Duration::from_secs),
    })
}

/// Counters of a consumer.
struct Counters {
    acked: AtomicU64,
    requeued: AtomicU64,
    rejected: AtomicU64,
    metrics: Metrics,
}

impl Counters {
    fn new(metrics: Metrics) -> Counters {
        metrics.push_consumer_registered(&PUSH_RESULTS, &PUSH_REJECT_REASONS);
        Counters {
            acked: AtomicU64::new(0),
            requeued: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            metrics,
        }
    }
}

/// Consumes backend pushes from every healthy node (see module docs). Dropping it stops it.
pub struct PushConsumer {
    cancel: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl PushConsumer {
    /// Starts consuming; `handle` is called once per message and must return `Ok` only when the
    /// push was routed or stored. Registers its metrics series on `metrics` at 0.
    pub fn start<F, Fut>(
        cfg: RabbitConfig,
        nodes: NodeList,
        metrics: Metrics,
        handle: F,
    ) -> PushConsumer
    where
        F: Fn(BackendPush) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), PushFailure>> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::new(metrics));
        let handle = Arc::new(handle);
        let task = tokio::spawn(supervise(
            cfg,
            nodes,
            handle,
            counters.clone(),
            cancel.clone(),
        ));
        PushConsumer {
            cancel,
            task: std::sync::Mutex::new(Some(task)),
            counters,
        }
    }

    /// (acked, requeued, rejected) so far; `rejected` counts dead-lettered (or, without a
    /// dead-letter exchange, dropped) poison messages.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.counters;
        (
            c.acked.load(Ordering::Relaxed),
            c.requeued.load(Ordering::Relaxed),
            c.rejected.load(Ordering::Relaxed),
        )
    }

    /// Stops every node's consumer.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Keeps one consumer task per healthy URL.
async fn supervise<F, Fut>(
    cfg: RabbitConfig,
    mut nodes: NodeList,
    handle: Arc<F>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) where
    F: Fn(BackendPush) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), PushFailure>> + Send + 'static,
{
    let mut running: BTreeMap<String, (CancellationToken, JoinHandle<()>)> = BTreeMap::new();
    loop {
        let urls = nodes.borrow_and_update().clone();
        running.retain(|url, (c, _)| {
            let keep = urls.contains(url);
            if !keep {
                c.cancel();
            }
            keep
        });
        for url in urls {
            if let std::collections::btree_map::Entry::Vacant(slot) = running.entry(url) {
                let c = cancel.child_token();
                let t = tokio::spawn(consume_node(
                    cfg.clone(),
                    slot.key().clone(),
                    handle.clone(),
                    counters.clone(),
                    c.clone(),
                ));
                slot.insert((c, t));
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = nodes.changed() => if r.is_err() { break },
        }
    }
    for (_, (c, t)) in running {
        c.cancel();
        let _ = t.await;
    }
}

async fn consume_node<F, Fut>(
    cfg: RabbitConfig,
    url: String,
    handle: Arc<F>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) where
    F: Fn(BackendPush) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), PushFailure>> + Send + 'static,
{
    let retry = Duration::from_millis(cfg.retry_interval_ms);
    while !cancel.is_cancelled() {
        match consume_once(&cfg, &url, &*handle, &counters, &cancel).await {
            Ok(()) => {}
            Err(e) => warn!(node = %redact(&url), error = %e, "push consumer: node failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

async fn consume_once<F, Fut>(
    cfg: &RabbitConfig,
    url: &str,
    handle: &F,
    counters: &Counters,
    cancel: &CancellationToken,
) -> Result<(), String>
where
    F: Fn(BackendPush) -> Fut,
    Fut: Future<Output = Result<(), PushFailure>>,
{
    let conn = connect(
        url,
        Duration::from_millis(cfg.connect_timeout_ms),
        "broker-pushes",
    )
    .await?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    declare_pushes(&ch, cfg).await.map_err(|e| e.to_string())?;
    ch.basic_qos(cfg.push_prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut consumer = ch
        .basic_consume(
            cfg.push_queue.as_str().into(),
            "msgbus".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    info!(node = %redact(url), queue = %cfg.push_queue, "push consumer: consuming");
    let mut transient_streak: u32 = 0;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = conn.close(200, "shutdown".into()).await;
                return Ok(());
            }
            n = consumer.next() => n,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("consumer cancelled".into()),
        };
        let outcome = match decode_push(&delivery.data) {
            Err(e) => Err(PushFailure::Permanent {
                reason: "decode",
                detail: e.to_string(),
            }),
            Ok(push) => handle(push).await,
        };
        match outcome {
            Ok(()) => {
                transient_streak = 0;
                counters.acked.fetch_add(1, Ordering::Relaxed);
                counters.metrics.push_consumed("acked");
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Err(PushFailure::Permanent { reason, detail }) => {
                transient_streak = 0;
                warn!(reason, error = %detail, dead_letter = %cfg.push_dead_letter_exchange,
                    "push consumer: poison message rejected");
                dead_letter(&ch, cfg, &delivery, reason, &detail).await?;
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                counters.metrics.push_consumed("dead_lettered");
                counters.metrics.push_rejected(reason);
            }
            Err(PushFailure::Transient(e)) => {
                let pause = transient_pause(transient_streak, cfg.push_retry_max_ms);
                transient_streak = transient_streak.saturating_add(1);
                warn!(error = %e, pause_ms = pause.as_millis() as u64,
                    "push consumer: push failed; requeueing");
                counters.requeued.fetch_add(1, Ordering::Relaxed);
                counters.metrics.push_consumed("requeued");
                tokio::time::sleep(pause).await;
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}

/// The pause before requeueing after `streak` consecutive transient failures: 100 ms doubling,
/// at most `max_ms`.
fn transient_pause(streak: u32, max_ms: u64) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << streak.min(32));
    Duration::from_millis(ms.min(max_ms))
}

/// Moves a poison message out of the push queue: republished (confirmed) to the dead-letter
/// exchange with the reason headers, then acked; without a dead-letter exchange, rejected
/// without requeue. An error leaves it unacknowledged (redelivered after reconnecting).
async fn dead_letter(
    ch: &Channel,
    cfg: &RabbitConfig,
    delivery: &Delivery,
    reason: &'static str,
    detail: &str,
) -> Result<(), String> {
    if cfg.push_dead_letter_exchange.is_empty() {
        return delivery
            .acker
            .nack(BasicNackOptions {
                requeue: false,
                ..BasicNackOptions::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        REJECT_REASON_HEADER.into(),
        AMQPValue::LongString(LongString::from(reason)),
    );
    headers.insert(
        REJECT_DETAIL_HEADER.into(),
        AMQPValue::LongString(LongString::from(detail)),
    );
    let properties = delivery
        .properties
        .clone()
        .with_delivery_mode(2)
        .with_headers(headers);
    let timeout = Duration::from_millis(cfg.confirm_timeout_ms);
    let confirmed = tokio::time::timeout(timeout, async {
        ch.basic_publish(
            cfg.push_dead_letter_exchange.as_str().into(),
            delivery.routing_key.clone(),
            BasicPublishOptions::default(),
            &delivery.data,
            properties,
        )
        .await?
        .await
    })
    .await;
    match confirmed {
        Ok(Ok(Confirmation::Ack(_))) => {}
        Ok(Ok(_)) => return Err("dead-letter publish was not confirmed".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("dead-letter confirm timed out".into()),
    }
    delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Declares the durable push exchange (topic) and queue, bound with `#`, and, when configured,
/// the durable dead-letter exchange (fanout) with its durable queue.
pub async fn declare_pushes(ch: &Channel, cfg: &RabbitConfig) -> Result<(), lapin::Error> {
    if !cfg.push_dead_letter_exchange.is_empty() {
        declare_bound(
            ch,
            &cfg.push_dead_letter_exchange,
            ExchangeKind::Fanout,
            &cfg.push_dead_letter_queue,
            "",
        )
        .await?;
    }
    declare_bound(
        ch,
        &cfg.push_exchange,
        ExchangeKind::Topic,
        &cfg.push_queue,
        "#",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_shapes() {
        let p = decode_push(
            br#"{"target":{"terminal":{"kind":"device","id":7}},"text":"on","ttl_secs":60}"#,
        )
        .unwrap();
        assert_eq!(p.target, Target::Terminal(Address::device(7)));
        assert_eq!(p.payload, Bytes::from_static(b"on"));
        assert_eq!(p.ttl, Some(Duration::from_secs(60)));
        let p = decode_push(br#"{"target":"all_devices","payload":"AAE="}"#).unwrap();
        assert_eq!(
            (p.target, p.payload, p.ttl),
            (Target::AllDevices, Bytes::from_static(&[0, 1]), None)
        );
        let p = decode_push(br#"{"target":{"group":"kitchen"},"text":"x"}"#).unwrap();
        assert_eq!(p.target, Target::Group("kitchen".into()));
    }

    #[test]
    fn rejects_bad_messages() {
        assert!(matches!(
            decode_push(b"\xff"),
            Err(PushDecodeError::Json(_))
        ));
        assert!(matches!(
            decode_push(br#"{"target":"everyone"}"#),
            Err(PushDecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode_push(br#"{"target":"everyone","payload":"!!","text":"x"}"#),
            Err(PushDecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode_push(br#"{"target":"everyone","payload":"!!"}"#),
            Err(PushDecodeError::Base64)
        ));
        assert!(matches!(
            decode_push(br#"{"target":{"list":[]},"text":"x"}"#),
            Err(PushDecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode_push(br#"{"target":"everyone","text":"x","extra":1}"#),
            Err(PushDecodeError::Json(_))
        ));
    }

    #[test]
    fn router_refusals_are_permanent_and_store_failures_transient() {
        let f = PushFailure::from(PushError::TooLarge(2000));
        assert!(matches!(
            f,
            PushFailure::Permanent {
                reason: "too_large",
                ..
            }
        ));
        let f = PushFailure::from(PushError::BadTtl(60));
        assert!(matches!(
            f,
            PushFailure::Permanent {
                reason: "bad_ttl",
                ..
            }
        ));
        let f = PushFailure::from(PushError::UnknownGroup("g".into()));
        assert!(matches!(
            f,
            PushFailure::Permanent {
                reason: "unknown_group",
                ..
            }
        ));
        let f = PushFailure::from(PushError::Store(StoreError::Backend("down".into())));
        assert!(matches!(f, PushFailure::Transient(_)));
    }

    #[test]
    fn transient_pause_doubles_up_to_the_cap() {
        let ms = |n| transient_pause(n, 5000).as_millis();
        assert_eq!((ms(0), ms(1), ms(2), ms(5)), (100, 200, 400, 3200));
        assert_eq!((ms(6), ms(40), ms(u32::MAX)), (5000, 5000, 5000));
    }
}
