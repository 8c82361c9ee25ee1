//! `limits.ws_write_timeout_ms` over real sockets: an app that logs in and then never reads
//! while pushes flood it is dropped once a write has waited that long (counted as
//! `broker_limit_rejections_total{limit="ws_write_timeout_ms"}`), and another app's deliveries
//! keep arriving.

use crate::comet_support;

use std::time::{Duration, Instant};

use broker::router::Target;
use broker::terminal::{Address, IdProfile};
use bytes::Bytes;
use comet_support::*;
use futures_util::StreamExt;
use tokio::net::TcpSocket;

const STALLED: &str = "broker_limit_rejections_total{limit=\"ws_write_timeout_ms\"} 1";

#[tokio::test]
async fn an_app_that_stops_reading_is_dropped_and_others_are_still_served() {
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.limits.ws_write_timeout_ms = 300;
        // Keep the session when its queue fills: only the write timeout may end it.
        c.limits.queue_full_policy = broker::config::QueueFullPolicy::DropNewest;
    })
    .await;
    let (mut reader, welcome) = App::login(&b.app_ws(), Address::phone(22), 0).await;
    assert_eq!(welcome["type"], "welcome");

    // The stalled app: a small receive buffer, so the broker's writes block quickly.
    let addr = b
        .app_ws()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(b.app_ws(), tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    let mut stalled = App { ws };
    stalled
        .send(serde_json::json!({
            "type": "auth",
            "token": app_token(Address::phone(21), 3600),
            "since_id": 0
        }))
        .await;
    assert_eq!(stalled.recv(WAIT).await.unwrap()["type"], "welcome");

    // Flood it without reading until the broker gives up on a write (about 2,000 pushes and
    // 10 s here: each push is committed to the store first, and the kernel buffers a lot).
    let payload = Bytes::from(vec![b'x'; 1000]);
    let started = Instant::now();
    let mut pushes = 0;
    while !b.metrics().contains(STALLED) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no write timed out after {pushes} pushes"
        );
        b.running
            .router
            .push(
                Target::Terminal(Address::phone(21)),
                None,
                payload.clone(),
                None,
            )
            .await
            .unwrap();
        pushes += 1;
        if pushes % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The other app still gets its pushes.
    let sent = b
        .running
        .router
        .push(
            Target::Terminal(Address::phone(22)),
            None,
            Bytes::from_static(b"hi"),
            None,
        )
        .await
        .unwrap();
    let got = reader.recv_skip_presence(WAIT).await.unwrap();
    assert_eq!(got["type"], "deliver", "{got}");
    assert_eq!(got["msg_id"], sent.msg_id, "{got}");

    // The stalled connection was closed: reading now drains what was buffered, then ends.
    let closed = loop {
        match tokio::time::timeout(WAIT, stalled.ws.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(None) | Ok(Some(Err(_))) => break true,
            Err(_) => break false,
        }
    };
    assert!(
        closed,
        "the stalled connection is still open after {pushes} pushes"
    );
    b.stop().await;
}
