//! Node lookup: which broker nodes to dial, asked from the broker's HTTP API
//! (`GET /v1/nodes/lookup?kind=device&id=N`, docs/discovery.md), sans-IO.
//!
//! ```text
//!  DeviceClient (policy: when to ask, what to dial)        net::HttpLookup (embassy, the I/O)
//!     lookup_request() ─────────── LookupRequest ──────────> write_request -> TCP -> response
//!     lookup_done(Ok(bytes) | Err) <───────────────────────── bytes (≤ LOOKUP_RESPONSE_MAX)
//!        └─ parse_response: http (status, headers, body) -> json (nodes[].udp / .ws, stale)
//!              -> LookupNodes (owned endpoints, ≤ LOOKUP_ENDPOINTS)
//! ```
//!
//! Everything is bounded: the request is built in a caller buffer ([`REQUEST_MAX`]), the
//! response must fit [`LOOKUP_RESPONSE_MAX`] bytes, at most [`LOOKUP_ENDPOINTS`] endpoints are
//! kept (nodes beyond are ignored), host and path strings are at most [`HOST_MAX`] /
//! [`PATH_MAX`] bytes. Anything malformed, oversized or unexpected is a [`LookupError`], never a
//! panic. Only IP-literal addresses are usable (the SDK has no DNS resolver) and only `ws://`
//! URLs (no TLS): other entries are skipped, and an answer with no usable entry is
//! [`LookupError::NoUsableNode`].

mod http;
mod json;

use core::net::SocketAddr;

use heapless::{String, Vec};

use crate::config::{Endpoint, TransportKind};

/// The API path of the lookup.
pub const LOOKUP_PATH: &str = "/v1/nodes/lookup";
/// Largest HTTP response accepted (status line, headers and body), in bytes.
pub const LOOKUP_RESPONSE_MAX: usize = 1024;
/// Largest request [`write_request`] writes (a `Host` of up to [`HOST_MAX`] bytes).
pub const REQUEST_MAX: usize = 192;
/// Endpoints kept from one answer (for example 3 nodes, each over UDP and WebSocket).
pub const LOOKUP_ENDPOINTS: usize = 6;
/// Longest `host:port` kept for a WebSocket endpoint's `Host` header.
pub const HOST_MAX: usize = 48;
/// Longest WebSocket request path kept.
pub const PATH_MAX: usize = 48;

/// Where the lookup is served, and which of the answered endpoints the device may dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupConfig<'a> {
    /// Address of the broker's HTTP API.
    pub addr: SocketAddr,
    /// `Host` header value (e.g. `api.example.net` or `192.0.2.1:8080`).
    pub host: &'a str,
    /// Dial the nodes' UDP endpoints.
    pub udp: bool,
    /// Dial the nodes' WebSocket endpoints (after the UDP one of the same node when both).
    pub ws: bool,
}

/// One lookup the driver should perform ([`crate::client::DeviceClient::lookup_request`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupRequest<'a> {
    /// Identifies the request; hand it back to `lookup_done`.
    pub id: u32,
    /// Where to ask.
    pub config: LookupConfig<'a>,
    /// The device asking.
    pub device_id: u32,
}

/// Why a lookup gave no endpoint. The client then dials its static endpoint list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LookupError {
    /// The driver cannot perform lookups (no lookup I/O given to it).
    NotSupported,
    /// The TCP connection could not be opened.
    Connect,
    /// The connection failed while sending or receiving.
    Io,
    /// No complete answer within `ClientConfig::lookup_timeout_ms`.
    Timeout,
    /// The request or the response does not fit its buffer.
    TooLarge,
    /// The answer's HTTP status was not 200.
    Status(u16),
    /// Not a well-formed HTTP/1.x response (or one this client does not read, e.g. chunked).
    BadHttp,
    /// The body is not the expected JSON.
    BadJson,
    /// The answer listed no node this device can dial.
    NoUsableNode,
}

impl core::fmt::Display for LookupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LookupError::NotSupported => f.write_str("lookup not supported by the driver"),
            LookupError::Connect => f.write_str("connect failed"),
            LookupError::Io => f.write_str("connection failed"),
            LookupError::Timeout => f.write_str("timed out"),
            LookupError::TooLarge => f.write_str("too large"),
            LookupError::Status(s) => write!(f, "HTTP status {s}"),
            LookupError::BadHttp => f.write_str("malformed HTTP response"),
            LookupError::BadJson => f.write_str("malformed JSON body"),
            LookupError::NoUsableNode => f.write_str("no usable node"),
        }
    }
}

/// An endpoint learned from a lookup (owns its WebSocket host and path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookedUp {
    /// The node's address for this transport.
    pub addr: SocketAddr,
    /// `None`: UDP; `Some((host, path))`: WebSocket with that `Host` header and path.
    pub ws: Option<(String<HOST_MAX>, String<PATH_MAX>)>,
}

impl LookedUp {
    /// The endpoint, borrowing the strings.
    pub fn as_endpoint(&self) -> Endpoint<'_> {
        match &self.ws {
            None => Endpoint::udp(self.addr),
            Some((host, path)) => Endpoint {
                addr: self.addr,
                transport: TransportKind::WebSocket {
                    host: host.as_str(),
                    path: path.as_str(),
                },
            },
        }
    }
}

/// A parsed answer: the endpoints to dial in order, and whether the broker's view was stale.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LookupNodes {
    /// Endpoints, primary node first.
    pub endpoints: Vec<LookedUp, LOOKUP_ENDPOINTS>,
    /// The broker answered from a last known view (its ZooKeeper is unreachable).
    pub stale: bool,
}

/// Writes the HTTP/1.1 request for `req` into `buf`; returns its length.
pub fn write_request(req: &LookupRequest<'_>, buf: &mut [u8]) -> Result<usize, LookupError> {
    let mut w = Writer { buf, len: 0 };
    use core::fmt::Write as _;
    write!(
        w,
        "GET {LOOKUP_PATH}?kind=device&id={} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        req.device_id, req.config.host
    )
    .map_err(|_| LookupError::TooLarge)?;
    Ok(w.len)
}

struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl core::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Parses a complete HTTP response (the bytes up to the connection's close) and keeps the
/// endpoints `config` allows, in the answer's order (per node: UDP, then WebSocket).
pub fn parse_response(
    response: &[u8],
    config: &LookupConfig<'_>,
) -> Result<LookupNodes, LookupError> {
    if response.len() > LOOKUP_RESPONSE_MAX {
        return Err(LookupError::TooLarge);
    }
    let body = http::body_of_200(response)?;
    let mut nodes = LookupNodes::default();
    let stale = json::parse_lookup(body, |entry| {
        let candidates = [
            (config.udp, entry.udp.and_then(udp_endpoint)),
            (config.ws, entry.ws.and_then(ws_endpoint)),
        ];
        for (wanted, endpoint) in candidates {
            if let (true, Some(e)) = (wanted, endpoint) {
                // Beyond LOOKUP_ENDPOINTS: ignored (later nodes are the last fallbacks).
                let _ = nodes.endpoints.push(e);
            }
        }
    })?;
    nodes.stale = stale;
    if nodes.endpoints.is_empty() {
        return Err(LookupError::NoUsableNode);
    }
    Ok(nodes)
}

fn udp_endpoint(s: &str) -> Option<LookedUp> {
    let addr = s.parse::<SocketAddr>().ok()?;
    Some(LookedUp { addr, ws: None })
}

/// `ws://a.b.c.d:port/path` (port 80 when absent, path `/` when absent).
fn ws_endpoint(url: &str) -> Option<LookedUp> {
    let rest = url.strip_prefix("ws://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr = match authority.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(authority.parse().ok()?, 80),
    };
    let host = String::try_from(authority).ok()?;
    let path = String::try_from(path).ok()?;
    Some(LookedUp {
        addr,
        ws: Some((host, path)),
    })
}

#[cfg(test)]
mod tests;
