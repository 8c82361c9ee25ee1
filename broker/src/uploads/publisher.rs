//! [`RabbitUploadSink`]: device uploads to RabbitMQ with publisher confirms, and a durable spool
//! while no node takes them.
//!
//! [`UploadSink::publish`] returns `Ok` only when the upload is safe: confirmed by a RabbitMQ node
//! ([`Delivered::Confirmed`]) or committed to the spool ([`Delivered::Spooled`]); the device's
//! UploadAck waits for it. Path of one upload:
//! 1. While the spool has a backlog, new uploads join it (keeps order across an outage).
//! 2. Otherwise publish on the current node's confirm-mode channel: persistent message
//!    (delivery mode 2) to the durable topic exchange, routing key `<prefix>.<topic>`, headers
//!    `device_id`, `upload_epoch` (16 lower-case hex digits), `upload_id`, `topic`,
//!    `received_at_ms` and `dedup_key` (`<device id>:<upload epoch hex>:<upload id>`, also the
//!    message id; see [`crate::store::upload_dedup_key`]).
//!    A connection or channel error or a confirm timeout drops that node and tries the next
//!    healthy one once (header `x-republished: true`, see [`PublishCopy`]); a nack or a second
//!    failure goes to the spool.
//! 3. The forwarder task publishes the spool in cursor order (header `x-redelivered-from-spool:
//!    true`), a batch at a time, and persists its cursor (consumer [`SPOOL_CONSUMER`]) only up to
//!    the last contiguously confirmed record.
//!
//! Metrics ([`crate::metrics::upload_path`]): every node switch counts in
//! `broker_rabbitmq_failovers_total`, `broker_rabbitmq_node_in_use{node}` is 1 for the node in
//! use, `broker_rabbitmq_confirms_pending` counts publishes awaiting their confirm, and
//! `broker_upload_spool_backlog` / `broker_upload_spool_oldest_age_seconds` are set after every
//! spooled upload and every forwarder pass (at least every `retry_interval_ms` while a backlog
//! waits, or each `confirm_timeout_ms` while a node takes connections but not messages).
//!
//! An upload whose confirm was lost may be published more than once (direct, retried on the next
//! node, from the spool); every copy after the first carries `x-republished` or
//! `x-redelivered-from-spool`, and consumers drop duplicates by `dedup_key`. The spool given
//! here must be dedicated to this sink (e.g. its own [`crate::store::embedded::EmbeddedStore`]):
//! every record in it gets published.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::RabbitConfig;
use super::nodes::{NodeList, connect, node_label, redact, rotation};
use crate::metrics::Metrics;
use crate::store::{StoreError, UploadSpool, upload_dedup_key};
use crate::terminal::Address;

/// Name of the forwarder's cursor in the spool.
pub const SPOOL_CONSUMER: &str = "rabbitmq";

/// One device upload to hand to RabbitMQ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The uploading device.
    pub device: Address,
    /// The upload epoch of the device's boot that sent it.
    pub upload_epoch: u64,
    /// The device's upload id.
    pub upload_id: u32,
    /// Upload topic (the routing key's last part).
    pub topic: String,
    /// Opaque payload (the message body).
    pub payload: Bytes,
    /// Unix ms when the broker received it.
    pub received_at_ms: u64,
}

impl Upload {
    /// The consumer-side duplicate key ([`upload_dedup_key`]).
    pub fn dedup_key(&self) -> String {
        upload_dedup_key(self.device, self.upload_epoch, self.upload_id)
    }
}

/// Where an upload was made safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// A RabbitMQ node confirmed it.
    Confirmed,
    /// It is durable in the spool; the forwarder publishes it later.
    Spooled,
}

/// Why an upload was not made safe (the device must not get its ack).
#[derive(Debug, thiserror::Error)]
pub enum UploadSinkError {
    /// No node confirmed and the spool failed too.
    #[error("upload spool: {0}")]
    Spool(#[from] StoreError),
}

/// Anything device uploads can be handed to (RabbitMQ here; tests may fake it).
#[async_trait]
pub trait UploadSink: Send + Sync + 'static {
    /// Returns once `upload` is confirmed or durably spooled.
    async fn publish(&self, upload: Upload) -> Result<Delivered, UploadSinkError>;
}

/// Counters of a sink (for metrics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Uploads confirmed on the direct path.
    pub confirmed: u64,
    /// Uploads written to the spool.
    pub spooled: u64,
    /// Spooled uploads the forwarder got confirmed.
    pub forwarded: u64,
    /// Node switches after an error or the node leaving the healthy set.
    pub failovers: u64,
}

#[derive(Clone)]
struct Link {
    url: String,
    channel: Channel,
    // Kept alive with the channel; closed when the link is dropped for a failover.
    conn: Arc<Connection>,
}

#[derive(Debug)]
enum PubError {
    /// No node could be reached.
    NoNode,
    /// The link failed (connection, channel, timeout): try another node.
    Link(String),
    /// The broker refused the message (nack).
    Nack,
}

struct Inner {
    cfg: RabbitConfig,
    nodes: NodeList,
    spool: Arc<dyn UploadSpool>,
    link: Mutex<Option<Link>>,
    last_url: std::sync::Mutex<Option<String>>,
    backlog: AtomicBool,
    wake: Notify,
    confirmed: AtomicU64,
    spooled: AtomicU64,
    forwarded: AtomicU64,
    failovers: AtomicU64,
    confirms_pending: AtomicU64,
    metrics: Metrics,
}

/// The RabbitMQ upload sink (see module docs). Dropping it stops the forwarder.
pub struct RabbitUploadSink {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    forwarder: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RabbitUploadSink {
    /// Starts the sink and its spool forwarder on the current runtime. `nodes` is the healthy
    /// node list; `spool` is this sink's own durable spool (a backlog from an earlier run is
    /// forwarded first). Its figures are recorded on `metrics` (see module docs), registered
    /// at 0 here.
    pub async fn start(
        cfg: RabbitConfig,
        nodes: NodeList,
        spool: Arc<dyn UploadSpool>,
        metrics: Metrics,
    ) -> Result<Arc<RabbitUploadSink>, StoreError> {
        let backlog = spool.head().await? > spool.consumer_cursor(SPOOL_CONSUMER).await?;
        let known: Vec<String> = nodes.borrow().iter().map(|u| node_label(u)).collect();
        metrics.upload_sink_registered(&known);
        let inner = Arc::new(Inner {
            cfg,
            nodes,
            spool,
            link: Mutex::new(None),
            last_url: std::sync::Mutex::new(None),
            backlog: AtomicBool::new(backlog),
            wake: Notify::new(),
            confirmed: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            confirms_pending: AtomicU64::new(0),
            metrics,
        });
        inner.report_backlog().await;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(forward(inner.clone(), cancel.clone()));
        Ok(Arc::new(RabbitUploadSink {
            inner,
            cancel,
            forwarder: std::sync::Mutex::new(Some(task)),
        }))
    }

    /// Counters so far.
    pub fn stats(&self) -> SinkStats {
        let i = &self.inner;
        SinkStats {
            confirmed: i.confirmed.load(Ordering::Relaxed),
            spooled: i.spooled.load(Ordering::Relaxed),
            forwarded: i.forwarded.load(Ordering::Relaxed),
            failovers: i.failovers.load(Ordering::Relaxed),
        }
    }

    /// Whether spooled uploads are still waiting to be forwarded.
    pub fn has_backlog(&self) -> bool {
        self.inner.backlog.load(Ordering::SeqCst)
    }

    /// The AMQP URL in use now (with credentials), if connected.
    pub async fn current_node(&self) -> Option<String> {
        self.inner.link.lock().await.as_ref().map(|l| l.url.clone())
    }

    /// Stops the forwarder and closes the connection.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.forwarder.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Some(link) = self.inner.link.lock().await.take() {
            let _ = link.conn.close(200, "shutdown".into()).await;
        }
    }
}

impl Drop for RabbitUploadSink {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl UploadSink for RabbitUploadSink {
    async fn publish(&self, upload: Upload) -> Result<Delivered, UploadSinkError> {
        let i = &self.inner;
        if !i.backlog.load(Ordering::SeqCst) {
            for attempt in 0..2 {
                // The second try follows a failure whose message may have reached a node anyway.
                let copy = if attempt == 0 {
                    PublishCopy::First
                } else {
                    PublishCopy::AfterLostConfirm
                };
                match i.publish_confirmed(&upload, copy).await {
                    Ok(()) => {
                        i.confirmed.fetch_add(1, Ordering::Relaxed);
                        return Ok(Delivered::Confirmed);
                    }
                    Err(PubError::Link(e)) if attempt == 0 => {
                        debug!(error = %e, "upload publish failed; trying the next node");
                    }
                    Err(e) => {
                        debug!(error = ?e, "upload not confirmed; spooling");
                        break;
                    }
                }
            }
        }
        i.spool
            .append(
                upload.device,
                upload.upload_epoch,
                upload.upload_id,
                &upload.topic,
                upload.payload.clone(),
                upload.received_at_ms,
            )
            .await?;
        i.spooled.fetch_add(1, Ordering::Relaxed);
        i.backlog.store(true, Ordering::SeqCst);
        i.report_backlog().await;
        i.wake.notify_one();
        Ok(Delivered::Spooled)
    }
}

impl Inner {
    /// The current link, or a new one to the next healthy node. Drops the link when its node
    /// left the healthy set or its channel is no longer open.
    async fn link(&self) -> Result<Link, PubError> {
        let urls = self.nodes.borrow().clone();
        let mut guard = self.link.lock().await;
        if let Some(l) = guard.as_ref() {
            if l.channel.status().connected() && urls.contains(&l.url) {
                return Ok(l.clone());
            }
            info!(node = %redact(&l.url), "upload publisher: leaving node (closed or no longer healthy)");
            self.leave(&mut guard);
        }
        let last = self.last_url.lock().ok().and_then(|l| l.clone());
        for url in rotation(&urls, last.as_deref()) {
            match self.open(&url).await {
                Ok(link) => {
                    info!(node = %redact(&url), "upload publisher: connected");
                    self.metrics.rabbit_node_in_use(&node_label(&url), true);
                    if let Ok(mut l) = self.last_url.lock() {
                        *l = Some(url);
                    }
                    *guard = Some(link.clone());
                    return Ok(link);
                }
                Err(e) => {
                    warn!(node = %redact(&url), error = %e, "upload publisher: node unusable");
                    if let Ok(mut l) = self.last_url.lock() {
                        *l = Some(url);
                    }
                }
            }
        }
        Err(PubError::NoNode)
    }

    /// Forgets `url`'s link after an error so the next call moves on.
    async fn drop_link(&self, url: &str) {
        let mut guard = self.link.lock().await;
        if guard.as_ref().is_some_and(|l| l.url == url) {
            self.leave(&mut guard);
        }
    }

    /// Closes the current link (in the background) and counts the node switch.
    fn leave(&self, link: &mut Option<Link>) {
        let Some(old) = link.take() else { return };
        self.failovers.fetch_add(1, Ordering::Relaxed);
        self.metrics.rabbit_failover();
        self.metrics
            .rabbit_node_in_use(&node_label(&old.url), false);
        tokio::spawn(async move {
            let _ = old.conn.close(200, "failover".into()).await;
        });
    }

    /// Counts `n` publishes as waiting for their confirm until the returned guard lets them go
    /// (also when the waiting future is dropped).
    fn awaiting_confirms(&self, n: u64) -> Awaiting<'_> {
        let now = self.confirms_pending.fetch_add(n, Ordering::Relaxed) + n;
        self.metrics.rabbit_confirms_pending(now);
        Awaiting {
            inner: self,
            left: n,
        }
    }

    /// Sets the backlog gauges from the spool: the uploads after the forwarder's cursor and the
    /// age of the first of them. A spool read error leaves them as they were.
    async fn report_backlog(&self) {
        let spool = &self.spool;
        let waiting = async {
            let cursor = spool.consumer_cursor(SPOOL_CONSUMER).await?;
            let first = spool.read(cursor, 1).await?;
            // Read after the first record: the spool only grows, so the head is not below it.
            let head = spool.head().await?;
            Ok::<_, StoreError>(first.first().map(|r| {
                let age_ms = unix_ms().saturating_sub(r.received_at_ms);
                let records = (head + 1).saturating_sub(r.cursor);
                (records, Duration::from_millis(age_ms))
            }))
        };
        match waiting.await {
            Ok(Some((records, age))) => self.metrics.upload_spool_backlog(records, age),
            Ok(None) => self.metrics.upload_spool_backlog(0, Duration::ZERO),
            Err(e) => debug!(error = %e, "upload spool: backlog not measured"),
        }
    }

    async fn open(&self, url: &str) -> Result<Link, String> {
        let timeout = Duration::from_millis(self.cfg.connect_timeout_ms);
        let conn = connect(url, timeout, "broker-uploads").await?;
        let setup = async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            declare_uploads(&ch, &self.cfg).await?;
            Ok::<_, lapin::Error>(ch)
        };
        match tokio::time::timeout(timeout, setup).await {
            Ok(Ok(channel)) => Ok(Link {
                url: url.to_string(),
                channel,
                conn: Arc::new(conn),
            }),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("channel setup timed out".into()),
        }
    }

    async fn publish_confirmed(&self, up: &Upload, copy: PublishCopy) -> Result<(), PubError> {
        let link = self.link().await?;
        let timeout = Duration::from_millis(self.cfg.confirm_timeout_ms);
        let awaiting = self.awaiting_confirms(1);
        let r = tokio::time::timeout(timeout, async {
            let confirm = send(&link.channel, &self.cfg, up, copy).await?;
            confirm.await
        })
        .await;
        drop(awaiting);
        match r {
            Ok(Ok(Confirmation::Ack(_))) => Ok(()),
            Ok(Ok(_)) => Err(PubError::Nack),
            Ok(Err(e)) => {
                self.drop_link(&link.url).await;
                Err(PubError::Link(e.to_string()))
            }
            Err(_) => {
                self.drop_link(&link.url).await;
                Err(PubError::Link("confirm timed out".into()))
            }
        }
    }
}

/// Publishes counted in `broker_rabbitmq_confirms_pending` until answered or dropped.
struct Awaiting<'a> {
    inner: &'a Inner,
    left: u64,
}

impl Awaiting<'_> {
    /// `n` of them got their answer (or gave up waiting).
    fn answered(&mut self, n: u64) {
        let n = n.min(self.left);
        self.left -= n;
        let now = self.inner.confirms_pending.fetch_sub(n, Ordering::Relaxed) - n;
        self.inner.metrics.rabbit_confirms_pending(now);
    }
}

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        self.answered(self.left);
    }
}

/// Declares the durable upload exchange and queue and binds them (`<prefix>.#`).
pub async fn declare_uploads(ch: &Channel, cfg: &RabbitConfig) -> Result<(), lapin::Error> {
    let binding = format!("{}.#", cfg.upload_routing_prefix);
    declare_bound(
        ch,
        &cfg.upload_exchange,
        ExchangeKind::Topic,
        &cfg.upload_queue,
        &binding,
    )
    .await
}

/// Declares a durable exchange of `kind` and a durable queue, and binds the queue to it with
/// `binding_key` (every exchange/queue pair the broker uses is declared this way).
pub async fn declare_bound(
    ch: &Channel,
    exchange: &str,
    kind: ExchangeKind,
    queue: &str,
    binding_key: &str,
) -> Result<(), lapin::Error> {
    ch.exchange_declare(
        exchange.into(),
        kind,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        binding_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// Which publish of an upload a message is, so a copy that may duplicate an earlier one says so
/// in a header (consumers still drop duplicates by `dedup_key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishCopy {
    /// The first publish, on the direct path: no extra header.
    First,
    /// The direct retry on the next node after a publish whose confirm never came (its message
    /// may have reached the first node anyway): header `x-republished: true`.
    AfterLostConfirm,
    /// Published by the spool forwarder: header `x-redelivered-from-spool: true`.
    FromSpool,
}

/// The AMQP properties of an upload message (see module docs for the headers).
pub fn properties(up: &Upload, copy: PublishCopy) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert("device_id".into(), AMQPValue::LongUInt(up.device.id));
    // As text: AMQP's 64-bit integers are signed, and JSON consumers lose bits above 2^53.
    h.insert(
        "upload_epoch".into(),
        AMQPValue::LongString(LongString::from(format!("{:016x}", up.upload_epoch))),
    );
    h.insert("upload_id".into(), AMQPValue::LongUInt(up.upload_id));
    h.insert(
        "topic".into(),
        AMQPValue::LongString(LongString::from(up.topic.as_str())),
    );
    h.insert(
        "received_at_ms".into(),
        AMQPValue::LongLongInt(i64::try_from(up.received_at_ms).unwrap_or(i64::MAX)),
    );
    h.insert(
        "dedup_key".into(),
        AMQPValue::LongString(LongString::from(up.dedup_key())),
    );
    match copy {
        PublishCopy::First => {}
        PublishCopy::AfterLostConfirm => {
            h.insert("x-republished".into(), AMQPValue::Boolean(true));
        }
        PublishCopy::FromSpool => {
            h.insert("x-redelivered-from-spool".into(), AMQPValue::Boolean(true));
        }
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/octet-stream".into())
        .with_message_id(ShortString::from(up.dedup_key()))
        .with_timestamp(up.received_at_ms / 1000)
        .with_headers(h)
}

async fn send(
    ch: &Channel,
    cfg: &RabbitConfig,
    up: &Upload,
    copy: PublishCopy,
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    ch.basic_publish(
        cfg.upload_exchange.as_str().into(),
        format!("{}.{}", cfg.upload_routing_prefix, up.topic).into(),
        BasicPublishOptions::default(),
        &up.payload,
        properties(up, copy),
    )
    .await
}

/// Now, Unix ms (the clock uploads are stamped with).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The spool forwarder: publishes spooled uploads in order, advancing the cursor after confirms.
async fn forward(inner: Arc<Inner>, cancel: CancellationToken) {
    let retry = Duration::from_millis(inner.cfg.retry_interval_ms);
    loop {
        match drain(&inner).await {
            Ok(true) => {}
            Ok(false) => debug!("upload spool: backlog remains; retrying later"),
            Err(e) => warn!(error = %e, "upload spool: read failed"),
        }
        inner.report_backlog().await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Publishes the spool from the persisted cursor; `Ok(true)` when it is empty afterwards.
async fn drain(inner: &Inner) -> Result<bool, StoreError> {
    let batch = inner.cfg.forward_batch.max(1);
    let timeout = Duration::from_millis(inner.cfg.confirm_timeout_ms);
    loop {
        let cursor = inner.spool.consumer_cursor(SPOOL_CONSUMER).await?;
        let records = inner.spool.read(cursor, batch).await?;
        let lost = crate::store::retention_gap(cursor, records.first());
        if lost > 0 {
            warn!(
                after = cursor,
                lost,
                "spool forwarder: uploads dropped by spool retention before they were published"
            );
        }
        if records.is_empty() {
            inner.backlog.store(false, Ordering::SeqCst);
            // An upload spooled between the read and the flag still has its wake-up pending.
            if inner.spool.head().await? > cursor {
                inner.backlog.store(true, Ordering::SeqCst);
                continue;
            }
            return Ok(true);
        }
        let link = match inner.link().await {
            Ok(l) => l,
            Err(_) => return Ok(false),
        };
        // Publish the whole batch, then collect confirms in order.
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let up = Upload {
                device: r.device,
                upload_epoch: r.upload_epoch,
                upload_id: r.upload_id,
                topic: r.topic.clone(),
                payload: r.payload.clone(),
                received_at_ms: r.received_at_ms,
            };
            match send(&link.channel, &inner.cfg, &up, PublishCopy::FromSpool).await {
                Ok(c) => pending.push((r.cursor, c)),
                Err(_) => break,
            }
        }
        let mut done = cursor;
        let mut failed = pending.len() < records.len();
        let mut awaiting = inner.awaiting_confirms(pending.len() as u64);
        for (c, confirm) in pending {
            let answer = tokio::time::timeout(timeout, confirm).await;
            awaiting.answered(1);
            match answer {
                Ok(Ok(Confirmation::Ack(_))) if !failed => {
                    done = c;
                    inner.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                _ => failed = true,
            }
        }
        if done > cursor {
            inner
                .spool
                .set_consumer_cursor(SPOOL_CONSUMER, done)
                .await?;
            inner.report_backlog().await;
        }
        if failed {
            inner.drop_link(&link.url).await;
            return Ok(false);
        }
    }
}
