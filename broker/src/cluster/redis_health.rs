//! The node's Redis health, for operators: a probe task PINGs Redis through the node's own
//! connection ([`RedisConn`], so Sentinel fail-overs are followed as by the stores) every
//! [`PROBE_EVERY`] and records the answer on the node's metrics (`broker_redis_up`,
//! `broker_redis_errors_total{kind}`, `broker_redis_last_error_timestamp_seconds`; see
//! [`crate::metrics::upload_path`]). The first failure after an answer, and the first answer
//! after a failure, are logged with the error's text.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::RedisError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::redis::RedisConn;

/// How often a node probes Redis.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The `kind` label of a failed probe (see [`crate::metrics::upload_path::REDIS_ERROR_KINDS`]).
pub fn error_kind(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        "io"
    } else if e.code().is_some() {
        "response"
    } else {
        "other"
    }
}

/// Probes every `every` until `cancel`; a probe that takes longer than `timeout` counts as a
/// `timeout` failure. Registers the series at 0 first.
pub fn spawn(
    conn: Arc<RedisConn>,
    metrics: Metrics,
    every: Duration,
    timeout: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    metrics.redis_health_registered();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let failure = match tokio::time::timeout(timeout, ping(&conn)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some((error_kind(&e), e.to_string())),
                Err(_) => Some(("timeout", format!("no answer within {timeout:?}"))),
            };
            match failure {
                None => {
                    metrics.redis_ok();
                    if was_up == Some(false) {
                        tracing::info!("redis: answering again");
                    }
                    was_up = Some(true);
                }
                Some((kind, error)) => {
                    metrics.redis_failed(kind, unix_seconds());
                    if was_up != Some(false) {
                        tracing::warn!(kind, %error, "redis: health probe failed");
                    }
                    was_up = Some(false);
                }
            }
        }
    })
}

async fn ping(conn: &RedisConn) -> Result<(), RedisError> {
    let mut c = conn.get().await;
    let r: Result<String, RedisError> = redis::cmd("PING").query_async(&mut c).await;
    match r {
        Ok(_) => Ok(()),
        Err(e) => {
            // Lets a Sentinel-backed connection re-resolve the master, as a store call would.
            let _ = conn.check::<()>(Err(e.clone())).await;
            Err(e)
        }
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_into_their_kinds() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(error_kind(&refused), "io");
        let timed_out = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(error_kind(&timed_out), "timeout");
    }
}
