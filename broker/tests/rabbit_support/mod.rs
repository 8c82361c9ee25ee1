//! What the RabbitMQ upload tests share (`rabbit_uploads`, `fault_rabbit_partition`): removing
//! a test's exchanges and queues, and waiting for a condition with a deadline.
#![allow(dead_code)] // Each test binary uses its own part.

use std::time::{Duration, Instant};

use broker::uploads::RabbitConfig;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

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
