//! [`PushConsumer`]: backend pushes from RabbitMQ into the router.
//!
//! Backend services publish JSON messages (the HTTP push body, see `docs/storage.md`) to the
//! durable `push_exchange`; msgbus consumes the durable `push_queue` (bound with `#`) on every
//! healthy node (nodes are independent, a backend may publish to any). Each message is decoded
//! ([`decode_push`]) and handed to the callback; it is acked only after the callback returned
//! `Ok`. A callback error nacks it with requeue (redelivered later); a message that does not
//! decode is rejected without requeue (it would never succeed) and logged.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::RabbitConfig;
use super::nodes::{NodeList, connect, redact};
use crate::router::Target;
use crate::terminal::Address;

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
#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    requeued: AtomicU64,
    rejected: AtomicU64,
}

/// Consumes backend pushes from every healthy node (see module docs). Dropping it stops it.
pub struct PushConsumer {
    cancel: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl PushConsumer {
    /// Starts consuming; `handle` is called once per message and must return `Ok` only when the
    /// push was routed or stored.
    pub fn start<F, Fut, E>(cfg: RabbitConfig, nodes: NodeList, handle: F) -> PushConsumer
    where
        F: Fn(BackendPush) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let counters = Arc::new(Counters::default());
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

    /// (acked, requeued, rejected) so far.
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
async fn supervise<F, Fut, E>(
    cfg: RabbitConfig,
    mut nodes: NodeList,
    handle: Arc<F>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) where
    F: Fn(BackendPush) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
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

async fn consume_node<F, Fut, E>(
    cfg: RabbitConfig,
    url: String,
    handle: Arc<F>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) where
    F: Fn(BackendPush) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
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

async fn consume_once<F, Fut, E>(
    cfg: &RabbitConfig,
    url: &str,
    handle: &F,
    counters: &Counters,
    cancel: &CancellationToken,
) -> Result<(), String>
where
    F: Fn(BackendPush) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let conn = connect(
        url,
        Duration::from_millis(cfg.connect_timeout_ms),
        "broker-pushes",
    )
    .await?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
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
        let r = match decode_push(&delivery.data) {
            Err(e) => {
                warn!(error = %e, "push consumer: rejecting undecodable message");
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: false,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
            Ok(push) => match handle(push).await {
                Ok(()) => {
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                    delivery.acker.ack(BasicAckOptions::default()).await
                }
                Err(e) => {
                    warn!(error = %e, "push consumer: push failed; requeueing");
                    counters.requeued.fetch_add(1, Ordering::Relaxed);
                    // Small pause so a persistent failure does not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                }
            },
        };
        r.map_err(|e| e.to_string())?;
    }
}

/// Declares the durable push exchange (topic) and queue, bound with `#`.
pub async fn declare_pushes(ch: &Channel, cfg: &RabbitConfig) -> Result<(), lapin::Error> {
    ch.exchange_declare(
        cfg.push_exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        cfg.push_queue.as_str().into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        cfg.push_queue.as_str().into(),
        cfg.push_exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
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
}
