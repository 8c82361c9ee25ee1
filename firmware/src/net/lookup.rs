//! [`HttpLookup`]: the node lookup's I/O, one HTTP/1.1 GET over an embassy-net TCP socket.
//!
//! The request and the parsing are sans-IO ([`crate::lookup`]); this only connects, writes the
//! request, reads until the server closes (the request says `Connection: close`) into a buffer
//! of [`LOOKUP_RESPONSE_MAX`] bytes, and hands the bytes to the client. A response that does
//! not fit is [`LookupError::TooLarge`].

use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_time::Duration;

use super::transport::ip_endpoint;
use crate::lookup::{LOOKUP_RESPONSE_MAX, LookupError, LookupRequest, REQUEST_MAX, write_request};

/// TCP receive window of the lookup socket, in bytes.
pub const LOOKUP_TCP_RX: usize = 512;

/// Memory of an [`HttpLookup`]: TCP buffers, the request and the response (about 1.9 KiB).
pub struct LookupBuffers {
    tcp_rx: [u8; LOOKUP_TCP_RX],
    tcp_tx: [u8; REQUEST_MAX],
    request: [u8; REQUEST_MAX],
    response: [u8; LOOKUP_RESPONSE_MAX],
}

impl LookupBuffers {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        LookupBuffers {
            tcp_rx: [0; LOOKUP_TCP_RX],
            tcp_tx: [0; REQUEST_MAX],
            request: [0; REQUEST_MAX],
            response: [0; LOOKUP_RESPONSE_MAX],
        }
    }
}

impl Default for LookupBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Performs node lookups on `stack`. Give it to the runner with
/// [`Runner::with_lookup`](super::Runner::with_lookup).
pub struct HttpLookup<'d> {
    stack: Stack<'d>,
    bufs: &'d mut LookupBuffers,
}

impl<'d> HttpLookup<'d> {
    /// A lookup client over `stack` using `buffers`.
    pub fn new(stack: Stack<'d>, buffers: &'d mut LookupBuffers) -> Self {
        HttpLookup {
            stack,
            bufs: buffers,
        }
    }

    /// Asks the lookup; returns the complete response. The caller bounds the time.
    pub async fn fetch(&mut self, req: &LookupRequest<'_>) -> Result<&[u8], LookupError> {
        let len = {
            let bufs = &mut *self.bufs;
            let n = write_request(req, &mut bufs.request)?;
            let remote = ip_endpoint(req.config.addr).map_err(|_| LookupError::Connect)?;
            let mut socket = TcpSocket::new(self.stack, &mut bufs.tcp_rx, &mut bufs.tcp_tx);
            socket.set_timeout(Some(Duration::from_secs(10)));
            let result =
                exchange(&mut socket, remote, &bufs.request[..n], &mut bufs.response).await;
            socket.abort();
            // Let the reset go out before the socket's memory is reused.
            let _ = socket.flush().await;
            result?
        };
        Ok(&self.bufs.response[..len])
    }
}

async fn exchange(
    socket: &mut TcpSocket<'_>,
    remote: embassy_net::IpEndpoint,
    request: &[u8],
    response: &mut [u8],
) -> Result<usize, LookupError> {
    socket
        .connect(remote)
        .await
        .map_err(|_| LookupError::Connect)?;
    let mut sent = 0;
    while sent < request.len() {
        sent += socket
            .write(&request[sent..])
            .await
            .map_err(|_| LookupError::Io)?;
    }
    let mut len = 0;
    loop {
        let Some(room) = response.get_mut(len..).filter(|r| !r.is_empty()) else {
            return Err(LookupError::TooLarge);
        };
        match socket.read(room).await {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(_) => return Err(LookupError::Io),
        }
    }
}
