//! A WebSocket echo endpoint for conformance tests only: it runs the comet's WebSocket stack
//! (the same [`super::ws::config`], TLS and upgrade as the device and app listeners, and the
//! same close codes for oversized messages and framing violations) and sends every text or
//! binary message back, so the Autobahn test cases can be run against that stack
//! (`broker/tests/ws_autobahn.rs`).
//!
//! It is off unless `[conformance] ws_echo_listen` names a loopback address; the config check
//! refuses any other address, and the broker logs a warning at start when it is on. It answers
//! no protocol, holds no session and counts against no limit; it is not meant to be reachable
//! from outside the machine.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};

use super::Context;
use super::ws;

/// Largest message the echo endpoint takes: the Autobahn cases send up to 16 MiB.
pub const MAX_ECHO_MESSAGE: usize = 16 * 1024 * 1024;

/// `[conformance]`: test-only endpoints, all off by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConformanceConfig {
    /// Loopback address of a WebSocket echo endpoint for the Autobahn conformance cases
    /// (`127.0.0.1:0` picks a port); empty: off. Never set it in production.
    pub ws_echo_listen: String,
}

impl ConformanceConfig {
    /// The echo endpoint's address, `None` when off; `Err` names the key when the value is not
    /// a loopback socket address.
    pub fn ws_echo(&self) -> Result<Option<SocketAddr>, (String, String)> {
        if self.ws_echo_listen.is_empty() {
            return Ok(None);
        }
        let key = "conformance.ws_echo_listen".to_owned();
        match self.ws_echo_listen.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => Ok(Some(addr)),
            Ok(_) => Err((key, "must be a loopback address (test use only)".to_owned())),
            Err(_) => Err((key, "must be empty or a socket address".to_owned())),
        }
    }
}

/// Accepts echo connections until shutdown.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener) {
    ws::serve_with(ctx, listener, "ws_echo", connection).await;
}

async fn connection(ctx: Arc<Context>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let upgrade = super::tls::upgrade(ctx.tls.as_ref(), stream, ws::config(MAX_ECHO_MESSAGE));
    let Ok(Ok(mut socket)) = tokio::time::timeout(ctx.settings.handshake, upgrade).await else {
        return;
    };
    loop {
        let msg = tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                ws::close(&mut socket, 1001, "shutdown").await;
                return;
            }
            msg = socket.next() => msg,
        };
        match msg {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                if socket.send(m).await.is_err() {
                    return;
                }
            }
            // Pings are answered and close frames acknowledged by the WebSocket library.
            Some(Ok(_)) => {}
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                ws::close(&mut socket, 1009, "message too big").await;
                return;
            }
            Some(Err(e)) => {
                if let Some(code) = ws::violation_close_code(&e) {
                    ws::close(&mut socket, code, "protocol error").await;
                }
                tracing::debug!(%peer, error = %e, "ws echo connection ended");
                return;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_only_on_loopback() {
        assert_eq!(ConformanceConfig::default().ws_echo(), Ok(None));
        let on = |s: &str| {
            ConformanceConfig {
                ws_echo_listen: s.to_owned(),
            }
            .ws_echo()
        };
        assert_eq!(on("127.0.0.1:0"), Ok(Some("127.0.0.1:0".parse().unwrap())));
        assert!(on("[::1]:9001").unwrap().is_some());
        let e = on("0.0.0.0:9001").unwrap_err();
        assert_eq!(e.0, "conformance.ws_echo_listen");
        assert!(e.1.contains("loopback"), "{}", e.1);
        assert_eq!(on("nonsense").unwrap_err().0, "conformance.ws_echo_listen");
    }
}
