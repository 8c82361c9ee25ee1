//! Serving the HTTP API over TLS (`[tls] api = true`): the same axum app as the plain listener,
//! on connections that first complete a rustls handshake with the `[tls]` certificate.
//!
//! `axum::serve` only takes plain listeners, so this is the accept loop for the TLS case: each
//! connection gets its own task (TLS handshake within [`HANDSHAKE_TIMEOUT`], then HTTP/1.1 with
//! keep-alive through hyper). On shutdown the loop stops accepting and every open connection is
//! told to finish its current request and close, like `axum::serve`'s graceful shutdown.

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::comet::tls::Acceptor;

/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` over TLS until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    acceptor: Acceptor,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTPS API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTPS API: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "HTTPS API: TLS handshake timed out");
                    return;
                }
            };
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTPS API connection ended with an error");
            }
        });
    }
}
