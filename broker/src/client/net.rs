//! The client's connections: [`open`] gives TCP or TLS over TCP (rustls, ring), which the
//! node lookup's HTTP request runs over and which carries the WebSocket: `ws://` over TCP or
//! `wss://` over rustls, as a
//! [`WebSocketStream`] over the comet's [`Stream`] (which holds either). For `wss://` the client
//! trusts the certificates of `--ca-file` (a CA or a self-signed server certificate), else the
//! public web roots. [`next_message`] reads the next data message and turns a close, a failure
//! or the end of the stream into [`ClientError::Closed`], for the device and phone clients alike.

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::ClientError;
use crate::comet::tls::{Stream, provider, read_certs};

/// A client WebSocket, plain or TLS.
pub type ClientWs = WebSocketStream<Stream>;

/// The WebSocket library's read buffer on a client connection (see [`connect`]).
const CLIENT_READ_BUFFER: usize = 4096;

/// The rustls client configuration trusting `ca_file` or the public web roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Opens a TCP connection to `host:port` (an IPv6 host may keep its brackets) and, when `tls`
/// is `Some(ca_file)`, a TLS session over it trusting `ca_file` or else the public web roots,
/// for the server name `host`; `url` names the destination in errors. Used for the WebSockets
/// and the node lookup alike.
pub async fn open(
    url: &str,
    host: &str,
    port: u16,
    tls: Option<Option<&Path>>,
) -> Result<Stream, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {url}: {e} (is the broker running?)"))?;
    let _ = tcp.set_nodelay(true);
    let Some(ca_file) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let config = client_config(ca_file)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` is not a TLS server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {url} failed: {e}"))?;
    Ok(Stream::Tls(Box::new(s.into())))
}

/// Connects to `url` (`ws://` or `wss://`) and completes the WebSocket handshake.
pub async fn connect(
    url: &str,
    ca_file: Option<&Path>,
    max_message: usize,
) -> Result<ClientWs, String> {
    let request = url
        .into_client_request()
        .map_err(|e| format!("`{url}`: {e}"))?;
    let uri = request.uri().clone();
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(format!("`{url}`: the URL must start with ws:// or wss://")),
    };
    let host = uri.host().ok_or_else(|| format!("`{url}`: no host"))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = open(url, host, port, tls.then_some(ca_file)).await?;
    // tungstenite zeroes its whole read buffer's free room before every read (128 KiB by
    // default): 4 KiB holds a burst of packets and costs a small part of that.
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("WebSocket handshake with {url} failed: {e}"))?;
    Ok(ws)
}

/// The next data message (text or binary) from the broker; pings, pongs and raw frames are
/// skipped. A close frame (its code and reason in the message), a socket error or the end of
/// the stream is [`ClientError::Closed`]. Cancel-safe: nothing is held between messages, so it
/// can stand in a `select!` loop.
pub async fn next_message(ws: &mut ClientWs) -> Result<Message, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(Message::Close(f))) => {
                let why = f.map_or_else(String::new, |f| {
                    format!("code {} {}", u16::from(f.code), f.reason)
                });
                return Err(ClientError::Closed(format!("the broker closed ({why})")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ClientError::Closed(e.to_string())),
            None => return Err(ClientError::Closed("connection closed".into())),
        }
    }
}
