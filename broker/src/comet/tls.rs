//! Optional TLS (wss) for the device and app WebSocket listeners, with rustls (ring provider), and
//! with `api = true` for the HTTP API too (served by `crate::api::listener`).
//!
//! * [`TlsConfig`] is the `[tls]` config section (`enabled`, `cert_file`, `key_file`, PEM);
//!   [`TlsConfig::validate`] loads the files once so a bad path or PEM fails start-up (and
//!   `broker config check`) naming the key.
//! * [`load`] builds the [`Acceptor`] that `broker::start` hands to the comet [`Context`]
//!   (`None` when TLS is off).
//! * [`upgrade`] is what each WebSocket connection task runs on its accepted TCP stream: the TLS
//!   handshake when an acceptor is set, then the WebSocket upgrade, both inside the connection's
//!   handshake deadline. The result is a [`Ws`] over [`Stream`], plain or TLS, so the endpoints'
//!   session code is the same either way.
//!
//! The UDP endpoint is unaffected: its packets are already sealed by the protocol's own session.
//!
//! [`Context`]: super::Context

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::ws::Ws;

/// The TLS acceptor shared by the WebSocket listeners.
pub type Acceptor = tokio_rustls::TlsAcceptor;

/// `[tls]`: serve the device and app WebSocket endpoints over TLS (`wss://`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve `wss://` instead of `ws://` on `listen.device_ws` and `listen.app_ws`.
    pub enabled: bool,
    /// Certificate chain, PEM (leaf first).
    pub cert_file: String,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Also serve the HTTP API (`listen.http`) as `https://` with the same certificate.
    pub api: bool,
}

impl TlsConfig {
    /// Checks the section: when enabled, both files must exist and parse and the key must match
    /// the certificate. Returns the offending key (`tls.cert_file`...) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        load(self)
            .map(|_| ())
            .map_err(|e| (e.key.to_string(), e.reason))
    }
}

/// Why the TLS configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[error("key `{key}`: {reason}")]
pub struct TlsError {
    /// The config key concerned (`tls.cert_file` or `tls.key_file`).
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> TlsError {
    TlsError {
        key,
        reason: reason.into(),
    }
}

/// The rustls provider used everywhere in the broker (ring: no aws-lc build).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE in the PEM file",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", path.display()))
}

/// Builds the acceptor from `[tls]`; `Ok(None)` when TLS is disabled.
pub fn load(cfg: &TlsConfig) -> Result<Option<Acceptor>, TlsError> {
    if !cfg.enabled {
        if cfg.api {
            return Err(bad(
                "tls.api",
                "needs tls.enabled = true (the API uses the [tls] certificate)",
            ));
        }
        return Ok(None);
    }
    if cfg.cert_file.is_empty() {
        return Err(bad("tls.cert_file", "must be set when tls.enabled = true"));
    }
    if cfg.key_file.is_empty() {
        return Err(bad("tls.key_file", "must be set when tls.enabled = true"));
    }
    let certs = read_certs(Path::new(&cfg.cert_file)).map_err(|r| bad("tls.cert_file", r))?;
    let key = read_key(Path::new(&cfg.key_file)).map_err(|r| bad("tls.key_file", r))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls.cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("tls.key_file", format!("does not fit tls.cert_file: {e}")))?;
    Ok(Some(Acceptor::from(Arc::new(config))))
}

/// A connection: plain TCP or TLS over TCP (server side here, client side in `broker client`).
// The TLS variant is boxed: its state is large and most deployments run plain behind a proxy.
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS handshake (when `tls` is set), then the server WebSocket upgrade with `config`; the
/// socket's reads then stop at frame ends ([`super::frame_reads`]) until [`super::ws::compact`].
/// A TLS failure is reported as a WebSocket I/O error.
pub async fn upgrade(
    tls: Option<&Acceptor>,
    tcp: TcpStream,
    config: WebSocketConfig,
) -> Result<Ws, WsError> {
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => Stream::Tls(Box::new(acceptor.accept(tcp).await?.into())),
    };
    let mut ws = super::ws_stream::accept(
        super::frame_reads::Bounded::new(stream),
        refuse_large_heads,
        config,
    )
    .await?;
    // From the first frame on, reads stop at frame ends until the login is done
    // ([`super::ws::compact`]).
    ws.get_mut().start_bounding();
    Ok(ws)
}

/// Largest upgrade request head accepted (request target plus header names and values); a
/// larger one is answered `431 Request Header Fields Too Large` and not upgraded. Heads over
/// 64 KiB or with more than 124 headers never parse (the WebSocket library stops reading
/// there) and the connection is closed without an answer.
pub const MAX_UPGRADE_HEAD_BYTES: usize = 8 * 1024;

/// The upgrade callback: refuses a request head over [`MAX_UPGRADE_HEAD_BYTES`] with 431.
/// The response offers no extension, so `permessage-deflate` is never negotiated.
#[allow(clippy::result_large_err)] // the callback type is the WebSocket library's
fn refuse_large_heads(
    request: &tokio_tungstenite::tungstenite::handshake::server::Request,
    response: tokio_tungstenite::tungstenite::handshake::server::Response,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::server::Response,
    tokio_tungstenite::tungstenite::handshake::server::ErrorResponse,
> {
    let head: usize = request.uri().to_string().len()
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum::<usize>();
    if head > MAX_UPGRADE_HEAD_BYTES {
        let mut refusal = tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(
            Some("request header fields too large".to_owned()),
        );
        *refusal.status_mut() =
            tokio_tungstenite::tungstenite::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        return Err(refusal);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_needs_no_files_and_enabled_names_the_key() {
        assert!(load(&TlsConfig::default()).unwrap().is_none());
        let e = TlsConfig {
            api: true,
            ..TlsConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.0, "tls.api",
            "an HTTPS API without TLS is a configuration error"
        );
        let e = TlsConfig {
            enabled: true,
            ..TlsConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.0, "tls.cert_file");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem").display().to_string();
        let Err(e) = load(&TlsConfig {
            enabled: true,
            cert_file: missing.clone(),
            key_file: missing.clone(),
            ..TlsConfig::default()
        }) else {
            panic!("a missing certificate must fail");
        };
        assert_eq!(e.key, "tls.cert_file");
        assert!(e.to_string().contains("cannot read"), "{e}");
        let not_pem = dir.path().join("cert.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let Err(e) = load(&TlsConfig {
            enabled: true,
            cert_file: not_pem.display().to_string(),
            key_file: missing,
            ..TlsConfig::default()
        }) else {
            panic!("a file without a certificate must fail");
        };
        assert_eq!(e.key, "tls.cert_file");
        assert!(e.reason.contains("no CERTIFICATE"), "{e}");
    }
}
