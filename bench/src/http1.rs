//! A raw HTTP/1.1 client over one kept-alive TCP connection: the requester's side of our
//! command API, as lean as the MQTT requester's raw client ([`crate::mqtt::Conn`]).
//!
//! Why not an HTTP client crate: the round trip is timed by the requester, so whatever the
//! requester spends on a request counts as the server's latency. hyper's client connection
//! (its own connection task, request and response types, a body stream) cost the requester
//! about twice the MQTT requester's CPU per request on the reference machine, so the
//! comparison measured client libraries as much as servers. Here a request is one `write` of
//! bytes formatted in place, and an answer is read into one buffer whose head `httparse`
//! parses (the parser hyper itself uses); the server still gets and sends complete HTTP/1.1.
//!
//! Only what the command API answers is supported: a body sized by `Content-Length`. A
//! chunked answer, a head over [`MAX_HEAD`] or a connection closed mid-answer is an error.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Largest answer head read (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// Most headers of an answer parsed.
const MAX_HEADERS: usize = 32;

/// A complete answer: its status and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body, `Content-Length` bytes.
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Http1Error {
    /// The socket failed (its error kind).
    Io(std::io::ErrorKind),
    /// The server closed the connection before the answer was complete.
    Closed,
    /// The answer's head is not HTTP/1.1 as parsed by `httparse` (its reason).
    Malformed(String),
    /// The answer's head is over [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// The answer has no `Content-Length` (a chunked or close-delimited body).
    Unsized,
}

impl std::fmt::Display for Http1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Http1Error::Io(kind) => write!(f, "socket: {kind}"),
            Http1Error::Closed => f.write_str("connection closed mid-answer"),
            Http1Error::Malformed(why) => write!(f, "malformed answer: {why}"),
            Http1Error::HeadTooLarge => write!(f, "answer head over {MAX_HEAD} bytes"),
            Http1Error::Unsized => f.write_str("answer without Content-Length"),
        }
    }
}

/// One kept-alive HTTP/1.1 connection, one request at a time.
pub struct Http1Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed (the start of the next answer, if the server sent one
    /// early; normally empty between requests).
    read: Vec<u8>,
    /// The request being written, kept to reuse its allocation.
    write: Vec<u8>,
}

impl Http1Conn {
    /// Connects to `addr` with `TCP_NODELAY` set (the request leaves in one segment).
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Http1Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        Ok(Http1Conn {
            stream,
            read: Vec::with_capacity(4096),
            write: Vec::with_capacity(512),
        })
    }

    /// Sends `POST path` with a JSON `body` and `authorization` as the Authorization header,
    /// and reads the whole answer.
    pub async fn post_json(
        &mut self,
        path: &str,
        authorization: &str,
        body: &str,
    ) -> Result<Answer, Http1Error> {
        self.write.clear();
        post_request(&mut self.write, path, authorization, body);
        self.stream
            .write_all(&self.write)
            .await
            .map_err(|e| Http1Error::Io(e.kind()))?;
        loop {
            if let Some((answer, used)) = parse_answer(&self.read)? {
                self.read.drain(..used);
                return Ok(answer);
            }
            self.read.reserve(4096);
            let n = self
                .stream
                .read_buf(&mut self.read)
                .await
                .map_err(|e| Http1Error::Io(e.kind()))?;
            if n == 0 {
                return Err(Http1Error::Closed);
            }
        }
    }
}

/// Appends the bytes of `POST path` with `body` as JSON to `out`.
pub fn post_request(out: &mut Vec<u8>, path: &str, authorization: &str, body: &str) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nhost: bench\r\nauthorization: {authorization}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// The first complete answer at the start of `buf` and how many bytes it took; `None` while
/// more bytes are needed.
pub fn parse_answer(buf: &[u8]) -> Result<Option<(Answer, usize)>, Http1Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(Http1Error::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Http1Error::Malformed(e.to_string())),
    };
    let status = head.code.unwrap_or(0);
    let length = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .ok_or(Http1Error::Unsized)?;
    let length: usize = std::str::from_utf8(length.value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Http1Error::Malformed("Content-Length is not a number".into()))?;
    let end = head_len.saturating_add(length);
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((
        Answer {
            status,
            body: buf[head_len..end].to_vec(),
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_complete_http_with_its_body_length() {
        let mut out = Vec::new();
        post_request(&mut out, "/v1/devices/7/commands", "Bearer t", r#"{"a":1}"#);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete request"),
        };
        assert_eq!(req.method, Some("POST"));
        assert_eq!(req.path, Some("/v1/devices/7/commands"));
        assert_eq!(req.version, Some(1));
        let length = req
            .headers
            .iter()
            .find(|h| h.name == "content-length")
            .unwrap();
        assert_eq!(length.value, b"7");
        assert_eq!(&out[head_len..], br#"{"a":1}"#);
    }

    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn an_answer_is_read_once_its_body_is_complete() {
        for cut in 0..ANSWER.len() {
            assert_eq!(parse_answer(&ANSWER[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = ANSWER.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404");
        let (answer, used) = parse_answer(&two).unwrap().unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"hello");
        assert_eq!(used, ANSWER.len(), "the next answer's bytes stay unread");
    }

    #[test]
    fn answers_it_cannot_size_or_parse_are_errors() {
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked), Err(Http1Error::Unsized));
        assert!(matches!(
            parse_answer(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            Err(Http1Error::Malformed(_))
        ));
        assert!(matches!(
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: many\r\n\r\n"),
            Err(Http1Error::Malformed(_))
        ));
        let endless = [b"HTTP/1.1 200 OK\r\nx: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(parse_answer(&endless), Err(Http1Error::HeadTooLarge));
    }

    /// A server on 127.0.0.1 that answers every request with `status` and `body`, sending
    /// each answer in two writes (so the client must read more than once).
    async fn server(status: u16, body: &'static str) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 8];
                let mut req = httparse::Request::new(&mut headers);
                if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                    let length: usize = req
                        .headers
                        .iter()
                        .find(|h| h.name == "content-length")
                        .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                        .unwrap();
                    if buf.len() >= n + length {
                        buf.drain(..n + length);
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let (a, b) = answer.as_bytes().split_at(answer.len() / 2);
                        tcp.write_all(a).await.unwrap();
                        tcp.flush().await.unwrap();
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        tcp.write_all(b).await.unwrap();
                        continue;
                    }
                }
                if tcp.read_buf(&mut buf).await.unwrap() == 0 {
                    return;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn requests_on_one_connection_get_their_whole_answers() {
        let addr = server(200, r#"{"status":0}"#).await;
        let mut conn = Http1Conn::connect(addr).await.unwrap();
        for _ in 0..3 {
            let answer = conn.post_json("/x", "Bearer t", "{}").await.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(answer.body, br#"{"status":0}"#);
        }
    }
}
