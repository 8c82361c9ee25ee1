//! [`DeliveryFollower`]: a comet offers every stored message to its sessions from its own
//! delivery-notice stream in Redis, so all messages to one terminal, whichever node stored them,
//! reach it in `msg_id` order.
//!
//! The append script issues a message's id and appends a notice to the stream of each comet
//! holding a recipient in one atomic step ([`crate::store::redis::comet_stream`]); this task
//! reads the comet's stream in order on a dedicated Redis connection and hands each notice to
//! [`Router::deliver_local`]. The comet's router does not offer what it stores itself
//! (`offer_on_store` off), so there is one path and one order.
//!
//! When the reader may have missed notices (trimmed past its position, the stream lost with
//! Redis's data, or this comet swept as dead), it counts the gap in
//! `broker_delivery_stream_gaps_total{reason}` (trimmed notices also in
//! `broker_delivery_stream_missed_total`) and, before offering anything newer, asks every local
//! session to re-read its inbox from the store ([`Router::resync_sessions`]): the messages are
//! stored, so nothing is lost, and no session yields a newer id before the missed ones.
//!
//! [`FollowerHold`] pauses reading (notices wait in the stream, and are trimmed past the
//! stream's length, as when the comet falls behind).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::router::Router;
use crate::store::redis::{Batch, CometStream, NoticeDest, RedisConfig, RedisConn, StreamPos};

/// Notices per read.
const COUNT: usize = 512;
/// Pause after a failed read.
const RETRY: Duration = Duration::from_millis(200);

/// Pauses a [`DeliveryFollower`] while held (see module docs).
#[derive(Clone)]
pub struct FollowerHold {
    tx: Arc<watch::Sender<bool>>,
}

impl FollowerHold {
    /// Stops reading after the current read until [`FollowerHold::release`].
    pub fn hold(&self) {
        self.tx.send_replace(true);
    }

    /// Reads again.
    pub fn release(&self) {
        self.tx.send_replace(false);
    }
}

/// Reads one comet's delivery-notice stream and offers the notices locally (see module docs).
pub struct DeliveryFollower {
    stream: CometStream,
    pos: StreamPos,
    router: Router,
    metrics: Metrics,
    held: watch::Receiver<bool>,
    /// How long one read waits for notices before checking the stream's counter.
    block: Duration,
}

impl DeliveryFollower {
    /// A follower of `stream` from `pos` (from [`CometStream::open`], taken before the comet
    /// accepted logins) offering to `router`'s sessions, each read waiting up to `block`; with
    /// its hold.
    pub fn new(
        stream: CometStream,
        pos: StreamPos,
        router: Router,
        metrics: Metrics,
        block: Duration,
    ) -> (DeliveryFollower, FollowerHold) {
        metrics.delivery_stream_registered();
        let (tx, held) = watch::channel(false);
        (
            DeliveryFollower {
                stream,
                pos,
                router,
                metrics,
                held,
                block,
            },
            FollowerHold { tx: Arc::new(tx) },
        )
    }

    /// Runs until `cancel`.
    pub fn spawn(mut self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    open = released(&mut self.held) => if !open { break },
                }
                let read = tokio::select! {
                    _ = cancel.cancelled() => break,
                    r = self.stream.read(&mut self.pos, self.block, COUNT) => r,
                };
                match read {
                    Ok(batch) => self.apply(batch),
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery stream read failed; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        })
    }

    /// Offers one batch: after a gap, every session re-reads the store first.
    fn apply(&self, batch: Batch) {
        if batch.gap() {
            let reason = if batch.restarted {
                "lost"
            } else if batch.rejoined {
                "swept"
            } else {
                "trimmed"
            };
            self.metrics.delivery_stream_gap(reason, batch.missed);
            let sessions = self.router.resync_sessions();
            tracing::warn!(
                reason,
                missed = batch.missed,
                sessions,
                "delivery stream gap: sessions re-read their stored messages"
            );
        }
        for n in batch.notices {
            match n.to {
                NoticeDest::Terminals(list) => self
                    .router
                    .deliver_local(&list, None, n.msg_id, n.from, n.payload),
                NoticeDest::Kind(k) => {
                    self.router
                        .deliver_local(&[], Some(k), n.msg_id, n.from, n.payload)
                }
            };
        }
    }
}

/// Waits until the follower is not held; false when the hold is gone.
async fn released(held: &mut watch::Receiver<bool>) -> bool {
    held.wait_for(|h| !*h).await.is_ok()
}

/// Opens `node`'s stream on a Redis connection of its own (reads block) at the stream's end;
/// also returns how long a read may block (half the response timeout, at most 500 ms).
pub async fn open(
    redis: &RedisConfig,
    node: &str,
) -> Result<(CometStream, StreamPos, Duration), super::ClusterError> {
    let conn = Arc::new(RedisConn::connect(redis).await?);
    let (stream, pos) = CometStream::open(conn, node).await?;
    let block = Duration::from_millis((redis.response_timeout_ms / 2).clamp(10, 500));
    Ok((stream, pos, block))
}
