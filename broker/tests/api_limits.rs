//! The `[api]` limits of the HTTP API listener over real sockets on 127.0.0.1 against an
//! in-process broker: a client that stalls inside its header is disconnected after
//! `api.header_read_timeout_ms`, one connection over `api.max_connections` is closed while the
//! others are served, and bodies over `api.max_body_bytes` or slower than
//! `api.body_timeout_ms` get 413 / 408. Every refusal shows in
//! `broker_limit_rejections_total`.

use std::time::{Duration, Instant};

use broker::config::{Config, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "test-api-token-0123456789";

fn config(dir: &std::path::Path, api: impl FnOnce(&mut broker::config::ApiConfig)) -> Config {
    let mut c = Config::default();
    let any = "127.0.0.1:0".parse().unwrap();
    c.listen.http = any;
    c.listen.device_ws = any;
    c.listen.app_ws = any;
    c.listen.udp = any;
    c.storage.data_dir = dir.to_path_buf();
    c.security.api_token = Secret::new(TOKEN);
    api(&mut c.api);
    c
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) from `s`; `None` when the
/// server closes the connection (or resets it) first.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return Some((status, body));
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `GET /healthz` on a kept-alive connection and returns the answer.
async fn healthz(s: &mut TcpStream) -> Option<(u16, String)> {
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .ok()?;
    tokio::time::timeout(Duration::from_secs(5), read_response(s))
        .await
        .expect("an answer or a close within 5 s")
}

/// The broker's `/metrics` text.
async fn metrics(running: &broker::Running) -> String {
    reqwest::Client::new()
        .get(format!("http://{}/metrics", running.http))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn rejections(limit: &str) -> String {
    format!("broker_limit_rejections_total{{limit=\"{limit}\"}}")
}

#[tokio::test]
async fn a_client_stalling_in_its_header_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path(), |a| a.header_read_timeout_ms = 400))
        .await
        .unwrap();
    let mut slow = TcpStream::connect(running.http).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    // The header never ends: the server must close within the timeout (plus slack).
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the stalled connection is closed within 5 s");
    assert!(
        matches!(read, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"),
        "closed, got {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "not before the timeout: {waited:?}"
    );
    // A keep-alive connection that goes idle is closed the same way.
    let mut idle = TcpStream::connect(running.http).await.unwrap();
    assert_eq!(healthz(&mut idle).await.unwrap().0, 200);
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");
    // Prompt clients are served as before.
    let mut ok = TcpStream::connect(running.http).await.unwrap();
    assert_eq!(healthz(&mut ok).await, Some((200, "ok".into())));
    // Both closes are counted (hyper does not tell a stalled header from an idle wait).
    let text = metrics(&running).await;
    assert!(
        text.contains(&format!("{} 2", rejections("api.header_read_timeout_ms"))),
        "{text}"
    );
}

#[tokio::test]
async fn one_connection_over_the_cap_is_closed_and_the_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path(), |a| a.max_connections = 3))
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(running.http).await.unwrap();
        assert_eq!(healthz(&mut s).await, Some((200, "ok".into())));
        held.push(s);
    }
    let mut extra = TcpStream::connect(running.http).await.unwrap();
    assert_eq!(
        healthz(&mut extra).await,
        None,
        "the fourth is closed unanswered"
    );
    for s in &mut held {
        assert_eq!(
            healthz(s).await,
            Some((200, "ok".into())),
            "the others go on"
        );
    }
    // A closed connection gives its slot back.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        match reqwest::Client::new()
            .get(format!("http://{}/metrics", running.http))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) => break r.text().await.unwrap(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("no slot came back: {e}"),
        }
    };
    assert!(
        !text.contains(&format!("{} 0\n", rejections("api.max_connections"))),
        "{text}"
    );
}

#[tokio::test]
async fn bodies_over_the_size_limit_get_413_and_slow_bodies_408() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path(), |a| {
        a.max_body_bytes = 1000;
        a.body_timeout_ms = 400;
    }))
    .await
    .unwrap();
    let url = format!("http://{}/v1/push", running.http);
    let c = reqwest::Client::new();
    // Announced by content-length.
    // A valid push padded with JSON whitespace: only its size is wrong.
    let small = r#"{"target": {"terminal": {"kind": "device", "id": 7}}, "text": "hi"}"#;
    let big = format!("{small}{}", " ".repeat(2000));
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_large");
    // Chunked, no length announced: refused once the limit is crossed.
    let mut s = TcpStream::connect(running.http).await.unwrap();
    let head = format!(
        "POST /v1/push HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for part in big.as_bytes().chunks(500) {
        let mut c = format!("{:x}\r\n", part.len()).into_bytes();
        c.extend_from_slice(part);
        c.extend_from_slice(b"\r\n");
        s.write_all(&c).await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let (status, body) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 413, "{body}");
    // The same push under the limit is served.
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A body that stalls half-way: 408 after body_timeout_ms.
    let mut s = TcpStream::connect(running.http).await.unwrap();
    let head = format!(
        "POST /v1/push HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"to\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 408, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(350));
    let text = metrics(&running).await;
    for (limit, n) in [("api.max_body_bytes", 2), ("api.body_timeout_ms", 1)] {
        assert!(
            text.contains(&format!("{} {n}", rejections(limit))),
            "{limit}: {text}"
        );
    }
}
