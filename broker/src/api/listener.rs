//! The HTTP API's accept loop, over plain TCP or TLS (`[tls] api = true`), with the `[api]`
//! limits that keep slow or greedy clients from exhausting the file descriptors the comet
//! listeners share:
//!
//! * at most `api.max_connections` connections at once: one more is closed right after accept;
//! * a request header must arrive within `api.header_read_timeout_ms` (hyper's header timeout,
//!   driven by a tokio timer), which also ends idle keep-alive connections;
//! * a request body must arrive within `api.body_timeout_ms` (408) and be at most
//!   `api.max_body_bytes` (413): `buffer_body` reads it whole before any handler runs.
//!
//! Each refusal is counted as `broker_limit_rejections_total{limit="api.<key>"}`. With
//! `"http"` in `proxy_protocol.listeners`, an admitted connection's client address is read
//! from its PROXY protocol header first ([`crate::comet::proxy`]; within
//! [`PROXY_HEADER_WAIT`]; a refused header closes the connection, counted in
//! `broker_proxy_refusals_total{reason}`), and the log lines name that address. TLS
//! connections then complete a rustls handshake within [`HANDSHAKE_TIMEOUT`]. On shutdown the
//! listening socket is closed, every open connection finishes its current request and closes
//! (like `axum::serve`'s graceful shutdown), and [`serve`] returns once they are all gone.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ApiError;
use crate::comet::proxy::Proxy;
use crate::comet::tls::Acceptor;
use crate::metrics::Metrics;
use crate::self_wake::RepollOnSelfWake;

/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a trusted balancer may take to send its PROXY header (it sends it at once), and a
/// direct client its first byte before it is looked at for one (then it is served as usual,
/// under the header read timeout).
pub const PROXY_HEADER_WAIT: Duration = Duration::from_secs(1);

/// The `[api]` limits, as the listener uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// `api.max_connections`.
    pub max_connections: u32,
    /// `api.header_read_timeout_ms`.
    pub header_read_timeout: Duration,
    /// `api.body_timeout_ms`.
    pub body_timeout: Duration,
    /// `api.max_body_bytes`.
    pub max_body_bytes: usize,
}

impl ApiLimits {
    /// The limits of the `[api]` section (validated when the config was loaded).
    pub fn new(c: &ApiConfig) -> ApiLimits {
        ApiLimits {
            max_connections: c.max_connections,
            header_read_timeout: Duration::from_millis(c.header_read_timeout_ms),
            body_timeout: Duration::from_millis(c.body_timeout_ms),
            max_body_bytes: c.max_body_bytes as usize,
        }
    }
}

/// `[api]`: limits of the HTTP API listener (`listen.http`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// API connections open at once; one more is closed at accept.
    pub max_connections: u32,
    /// Time a client has to send a request's whole header (also the keep-alive idle limit).
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's whole body, from the end of its header.
    pub body_timeout_ms: u64,
    /// Largest request body, bytes (413 above it).
    pub max_body_bytes: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_connections: 1024,
            header_read_timeout_ms: 10000,
            body_timeout_ms: 30000,
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set, reading PROXY headers when `proxy`
/// is set) with `limits` until `shutdown` is cancelled, then waits for the open connections
/// to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Acceptor>,
    proxy: Option<Proxy>,
    app: axum::Router,
    limits: ApiLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let app = with_body_limits(app, limits, metrics.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    loop {
        let (mut tcp, tcp_peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // An answer is one small write the caller waits for: send it at once, not after the
        // previous segment's acknowledgement (Nagle), which a delayed ACK can hold back.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.limit_hit("api.max_connections");
            tracing::debug!(peer = %tcp_peer, "HTTP API: connection refused, api.max_connections reached");
            drop(tcp);
            continue;
        };
        let tls = tls.clone();
        let app = app.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        let proxy = proxy.clone();
        // Every request with a body wakes its connection's task from within (hyper's body
        // channel); see `self_wake`.
        tokio::spawn(RepollOnSelfWake::new(async move {
            let _slot = slot;
            let peer = match proxy {
                None => tcp_peer,
                Some(proxy) => {
                    let by = tokio::time::Instant::now() + PROXY_HEADER_WAIT;
                    match proxy.client_address(&mut tcp, tcp_peer, by).await {
                        Ok(client) => client,
                        Err(refusal) => {
                            metrics.proxy_refused(refusal.as_str());
                            tracing::debug!(peer = %tcp_peer, reason = refusal.as_str(), "HTTP API: PROXY header refused");
                            return;
                        }
                    }
                }
            };
            let Some(acceptor) = tls else {
                return serve_connection(tcp, app, limits, &metrics, &shutdown, peer).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(io)) => serve_connection(io, app, limits, &metrics, &shutdown, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS API: TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "HTTPS API: TLS handshake timed out"),
            }
        }));
    }
    // New connections are refused from now on (closing the socket, not just not accepting).
    drop(listener);
    // Every connection holds a slot until it is closed: having them all back means none is left.
    let _all = slots.acquire_many(limits.max_connections).await;
}

/// HTTP/1.1 with keep-alive on one accepted connection, under the header timeout.
async fn serve_connection<IO>(
    io: IO,
    app: axum::Router,
    limits: ApiLimits,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    peer: std::net::SocketAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            metrics.limit_hit("api.header_read_timeout_ms");
            tracing::debug!(%peer, "HTTP API: header not received in time, connection closed");
        }
        Err(e) => tracing::debug!(%peer, error = %e, "HTTP API connection ended with an error"),
    }
}

/// `app` with every request body read whole (within the body timeout and size limit) before
/// it reaches a handler; extractors get the same size limit.
fn with_body_limits(app: axum::Router, limits: ApiLimits, metrics: Metrics) -> axum::Router {
    app.layer(axum::middleware::from_fn_with_state(
        (limits, metrics),
        buffer_body,
    ))
    .layer(DefaultBodyLimit::max(limits.max_body_bytes))
}

/// Reads the request body into memory: 413 when it is (or announces to be) over
/// `api.max_body_bytes`, 408 when it is not complete within `api.body_timeout_ms`.
async fn buffer_body(
    State((limits, metrics)): State<(ApiLimits, Metrics)>,
    req: Request,
    next: Next,
) -> Response {
    let too_large = |metrics: &Metrics| {
        metrics.limit_hit("api.max_body_bytes");
        ApiError::TooLarge(format!(
            "the request body is over {} bytes",
            limits.max_body_bytes
        ))
        .into_response()
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large(&metrics);
    }
    let (parts, body) = req.into_parts();
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| Some(e.to_string()))?;
            if buf.len() + chunk.len() > limits.max_body_bytes {
                return Err(None::<String>);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(buf)) => next.run(Request::from_parts(parts, Body::from(buf))).await,
        Ok(Err(None)) => too_large(&metrics),
        Ok(Err(Some(e))) => ApiError::BadRequest(format!("the request body: {e}")).into_response(),
        Err(_) => {
            metrics.limit_hit("api.body_timeout_ms");
            ApiError::RequestTimeout.into_response()
        }
    }
}
