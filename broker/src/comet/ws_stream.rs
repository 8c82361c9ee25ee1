//! A server WebSocket over an async byte stream, polled by one task: a `Stream` of the messages
//! it receives and a `Sink` of the messages it sends, on the WebSocket library's (tungstenite's)
//! protocol state, with the upgrade handshake ([`accept`]) and wrapping a socket whose
//! handshake is done ([`WsStream::from_raw_socket`]).
//!
//! Why not the library's own async adapter (tokio-tungstenite's `WebSocketStream`): so that
//! its read and write halves can be polled from different tasks, it allocates two waker
//! proxies per connection (2 x 64 B on the heap, kept for the connection's life). Each
//! WebSocket here is read and written by its connection's task only, so one waker slot inline
//! ([`Io`]) does: every poll stores the polling task's waker there before the library runs,
//! and a socket call that would block registers it with the runtime and reports `WouldBlock`
//! to the library, which keeps its state and is called again on the next poll. An idle
//! connection is 128 B of heap smaller (docs/performance.md, "Memory per session").
//!
//! Behaviour follows the library's adapter: a read error other than a closed connection is
//! yielded once and the stream then ends; `start_send` queues the message (a full write buffer
//! is flushed by the next `poll_ready`); flushing a connection that just closed is not an error.
//! Reading is cancel safe (a dropped `next()` loses no message: the library keeps what it has
//! read of a frame). The handshake and the live session share the type, so every WebSocket
//! endpoint, the conformance echo included, runs on it.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::HandshakeError;
use tokio_tungstenite::tungstenite::handshake::server::Callback;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, WebSocket};

/// An async byte stream seen as a blocking one by the WebSocket library: each call polls the
/// stream once with the waker of the task that polls the WebSocket, and `Pending` becomes
/// `WouldBlock`.
#[derive(Debug)]
pub struct Io<S> {
    stream: S,
    /// The waker of the last poll (a no-op one until the first).
    waker: Waker,
}

impl<S> Io<S> {
    fn new(stream: S) -> Io<S> {
        Io {
            stream,
            waker: Waker::noop().clone(),
        }
    }

    /// Makes the socket calls that follow wake the task polling through `cx`.
    fn set_waker(&mut self, cx: &Context<'_>) {
        self.waker.clone_from(cx.waker());
    }

    /// Polls the stream once with the stored waker; `Pending` becomes `WouldBlock`.
    fn poll_once<T>(
        &mut self,
        poll: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> io::Result<T>
    where
        S: Unpin,
    {
        let mut cx = Context::from_waker(&self.waker);
        match poll(Pin::new(&mut self.stream), &mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<S: AsyncRead + Unpin> Read for Io<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.poll_once(|stream, cx| {
            let mut read = ReadBuf::new(buf);
            stream
                .poll_read(cx, &mut read)
                .map_ok(|()| read.filled().len())
        })
    }
}

impl<S: AsyncWrite + Unpin> Write for Io<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll_once(|stream, cx| stream.poll_write(cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll_once(|stream, cx| stream.poll_flush(cx))
    }
}

/// Maps the library's "would block" to `Pending`.
fn ready<T>(r: Result<T, WsError>) -> Poll<Result<T, WsError>> {
    match r {
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

/// Runs the server side of the upgrade handshake on `stream` (`callback` sees the request and
/// may refuse it), then yields the WebSocket configured with `config`.
pub async fn accept<S, C>(
    stream: S,
    callback: C,
    config: WebSocketConfig,
) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: Callback + Unpin,
{
    let mut step = Some(tokio_tungstenite::tungstenite::accept_hdr_with_config(
        Io::new(stream),
        callback,
        Some(config),
    ));
    // Each poll runs the handshake once more with the polling task's waker stored, so a socket
    // call that blocks registers that task (the first try, above, ran before there was one).
    std::future::poll_fn(|cx| {
        let result = match step.take() {
            None => return Poll::Pending, // not polled again once it finished
            Some(Err(HandshakeError::Interrupted(mut mid))) => {
                mid.get_mut().get_mut().set_waker(cx);
                mid.handshake()
            }
            Some(done) => done,
        };
        match result {
            Ok(ws) => Poll::Ready(Ok(WsStream::new(ws))),
            Err(HandshakeError::Failure(e)) => Poll::Ready(Err(e)),
            interrupted => {
                step = Some(interrupted);
                Poll::Pending
            }
        }
    })
    .await
}

/// A WebSocket polled by one task (see the module docs).
#[derive(Debug)]
pub struct WsStream<S> {
    ws: WebSocket<Io<S>>,
    /// A close was started and is being flushed.
    closing: bool,
    /// The stream yielded its end (or its last error).
    ended: bool,
    /// The library's write buffer has room (false after a send that had to wait).
    ready: bool,
}

impl<S> WsStream<S> {
    fn new(ws: WebSocket<Io<S>>) -> WsStream<S> {
        WsStream {
            ws,
            closing: false,
            ended: false,
            ready: true,
        }
    }

    /// Wraps a socket whose upgrade is done, with a fresh protocol state configured by `config`.
    pub fn from_raw_socket(stream: S, role: Role, config: WebSocketConfig) -> WsStream<S> {
        WsStream::new(WebSocket::from_raw_socket(
            Io::new(stream),
            role,
            Some(config),
        ))
    }

    /// The socket, dropping the protocol state (and whatever it buffered).
    pub fn into_inner(self) -> S {
        self.ws.into_inner().stream
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.ws.get_ref().stream
    }

    /// The socket, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.ws.get_mut().stream
    }

    /// Runs `f` on the protocol state with `cx`'s waker stored for the socket calls it makes.
    fn with_waker<R>(&mut self, cx: &Context<'_>, f: impl FnOnce(&mut WebSocket<Io<S>>) -> R) -> R {
        self.ws.get_mut().set_waker(cx);
        f(&mut self.ws)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WsStream<S> {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match std::task::ready!(ready(self.with_waker(cx, |ws| ws.read()))) {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(e) => {
                self.ended = true;
                if matches!(e, WsError::ConnectionClosed | WsError::AlreadyClosed) {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(e)))
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WsStream<S> {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.ready {
            return Poll::Ready(Ok(()));
        }
        let flushed = std::task::ready!(ready(self.with_waker(cx, |ws| ws.flush())));
        self.ready = true;
        Poll::Ready(flushed)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        // The socket calls a full write buffer makes use the waker of the last poll.
        match self.ws.write(message) {
            Ok(()) => {
                self.ready = true;
                Ok(())
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                // Queued; the next `poll_ready` flushes what blocked.
                self.ready = false;
                Ok(())
            }
            Err(e) => {
                self.ready = true;
                Err(e)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let flushed = std::task::ready!(ready(self.with_waker(cx, |ws| ws.flush())));
        self.ready = true;
        match flushed {
            // The connection closed as this flush completed it: nothing is left to write.
            Err(WsError::ConnectionClosed) => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.ready = true;
        let closing = self.closing;
        let r = self.with_waker(cx, |ws| if closing { ws.flush() } else { ws.close(None) });
        match r {
            Ok(()) | Err(WsError::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.closing = true;
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn config() -> WebSocketConfig {
        WebSocketConfig::default().read_buffer_size(0)
    }

    /// A client frame: FIN, `opcode`, masked with a zero key (so the payload is as given).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode, 0x80 | u8::try_from(payload.len()).unwrap()];
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn messages_arrive_in_order_across_partial_reads_and_answers_go_out() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut ws = WsStream::from_raw_socket(server, Role::Server, config());
        let mut bytes = client_frame(0x2, b"first");
        bytes.extend(client_frame(0x1, b"second"));
        // One byte at a time: every frame arrives in pieces, so the reader blocks mid-frame.
        let writer = tokio::spawn(async move {
            for b in bytes {
                client.write_all(&[b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Binary(b"first".as_slice().into())
        );
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Text("second".into())
        );
        let mut client = writer.await.unwrap();
        ws.send(Message::Binary(b"answer".as_slice().into()))
            .await
            .unwrap();
        let mut got = [0u8; 8];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x82\x06answer", "an unmasked server frame");
    }

    #[tokio::test]
    async fn a_send_larger_than_the_pipe_waits_for_the_reader_and_then_completes() {
        let (server, mut client) = tokio::io::duplex(16);
        let mut ws = WsStream::from_raw_socket(server, Role::Server, config());
        let payload = vec![7u8; 1000];
        let expected = payload.clone();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 4 + 1000];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        ws.send(Message::Binary(payload.into())).await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(&got[..4], &[0x82, 126, 0x03, 0xe8]);
        assert_eq!(&got[4..], expected.as_slice());
    }

    #[tokio::test]
    async fn a_close_from_the_client_ends_the_stream_after_the_messages_before_it() {
        let (server, mut client) = tokio::io::duplex(256);
        let mut ws = WsStream::from_raw_socket(server, Role::Server, config());
        let mut bytes = client_frame(0x2, b"last");
        bytes.extend(client_frame(0x8, &[0x03, 0xe8]));
        client.write_all(&bytes).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Binary(b"last".as_slice().into())
        );
        assert!(matches!(ws.next().await, Some(Ok(Message::Close(_)))));
        // The library answers the close; flushing it ends the connection.
        ws.flush().await.unwrap();
        assert!(ws.next().await.is_none(), "the stream has ended");
        let mut echo = [0u8; 4];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(
            echo,
            [0x88, 2, 0x03, 0xe8],
            "the close answered with its code"
        );
    }

    #[tokio::test]
    async fn a_frame_that_breaks_the_protocol_is_one_error_and_then_the_end() {
        let (server, mut client) = tokio::io::duplex(64);
        let mut ws = WsStream::from_raw_socket(server, Role::Server, config());
        // Unmasked: a client must mask every frame (RFC 6455 section 5.1).
        client.write_all(&[0x82, 0x01, 0x00]).await.unwrap();
        assert!(matches!(ws.next().await, Some(Err(WsError::Protocol(_)))));
        assert!(ws.next().await.is_none());
    }

    #[tokio::test]
    async fn the_upgrade_answers_101_and_the_socket_then_carries_frames() {
        let (server, mut client) = tokio::io::duplex(1024);
        let accepted = tokio::spawn(accept(
            server,
            tokio_tungstenite::tungstenite::handshake::server::NoCallback,
            config(),
        ));
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .await
            .unwrap();
        let mut ws = accepted.await.unwrap().unwrap();
        let mut head = vec![0u8; 256];
        let n = client.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455 section 1.3's example key and accept value.
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "the accept key: {head}"
        );
        client.write_all(&client_frame(0x2, b"hi")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Binary(b"hi".as_slice().into())
        );
    }
}
