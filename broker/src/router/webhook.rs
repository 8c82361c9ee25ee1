//! The upload webhook forwarder: reads the spool from a persisted cursor (consumer `webhook`) and
//! POSTs each record as JSON to `upload.webhook_url`, in order, at least once. The cursor advances
//! (durably) only after a 2xx answer; failures back off from 1 s to 30 s and retry the same record.
//! Only the answer's status is used: its body is never read (the connection is dropped with
//! it), so a back end answering with a huge or endless body costs nothing.

use std::time::Duration;

use base64::Engine;
use tokio_util::sync::CancellationToken;

use super::Router;
use crate::store::UploadRecord;

/// Consumer name of the forwarder's cursor in the spool.
pub const CONSUMER: &str = "webhook";

/// The JSON body sent for one upload.
pub fn body(r: &UploadRecord) -> serde_json::Value {
    serde_json::json!({
        "cursor": r.cursor,
        "device": r.device,
        "upload_epoch": format!("{:016x}", r.upload_epoch),
        "upload_id": r.upload_id,
        "dedup_key": r.dedup_key(),
        "topic": r.topic,
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&r.payload),
        "received_at_ms": r.received_at_ms,
    })
}

pub(super) async fn run(router: Router, shutdown: CancellationToken) {
    let url = router.settings().webhook_url.clone();
    let timeout = router.settings().webhook_timeout;
    let spool = router.stores().uploads.clone();
    let mut backoff = Duration::from_secs(1);
    tracing::info!(
        target_origin = %log_safe_origin(&url),
        "upload webhook forwarder started"
    );
    loop {
        let notified = router.upload_notified();
        let cursor = match spool.consumer_cursor(CONSUMER).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: cannot read cursor");
                0
            }
        };
        let batch = spool.read(cursor, 100).await.unwrap_or_default();
        let lost = crate::store::retention_gap(cursor, batch.first());
        if lost > 0 {
            tracing::warn!(
                after = cursor,
                lost,
                "webhook: uploads dropped by spool retention before they were delivered"
            );
        }
        if batch.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        }
        for rec in batch {
            let sent = router
                .inner
                .http
                .post(&url)
                .timeout(timeout)
                .json(&body(&rec))
                .send()
                .await
                .map(|r| r.status().is_success());
            if matches!(sent, Ok(true)) {
                router.metrics().webhook("ok");
                backoff = Duration::from_secs(1);
                if let Err(e) = spool.set_consumer_cursor(CONSUMER, rec.cursor).await {
                    tracing::warn!(error = %e, "webhook: cannot save cursor");
                }
            } else {
                router.metrics().webhook("error");
                tracing::warn!(
                    cursor = rec.cursor,
                    "webhook call failed; retrying in {backoff:?}"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                break;
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
    }
}

/// The scheme, host and port of `url` only: the path and query may carry a token, and a URL's
/// user-info a password, so neither is ever logged.
fn log_safe_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(unparsable url)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::log_safe_origin;

    #[test]
    fn the_logged_origin_drops_credentials_path_and_query() {
        assert_eq!(
            log_safe_origin("https://user:pw@hooks.example:8443/in/SECRET?token=SECRET"),
            "https://hooks.example:8443"
        );
        assert_eq!(log_safe_origin("not a url"), "(unparsable url)");
    }
}
