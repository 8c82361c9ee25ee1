//! `--lookup URL`: where a cluster terminal connects, asked of the node lookup
//! (`GET /v1/nodes/lookup?kind=..&id=..` on any comet or msgbus, [`crate::discovery::route`])
//! before every login, so a client whose comet died or sent SHUTDOWN follows the cluster to
//! another comet as a device's SDK does.
//!
//! [`Lookup::candidates`] answers the endpoints to try in order (primary first, then the
//! fallbacks); the device and phone sessions try each until one logs in, so a comet that is
//! gone but still listed (its ZooKeeper session not yet expired) costs one refused connection.
//!
//! The lookup is one HTTP/1.1 `GET` (hyper's client connection) over [`net::open`]'s stream:
//! plain TCP for `http://`, or rustls for `https://` (a node with `[tls] api = true`, or a
//! TLS proxy in front of the lookup), trusting `--ca-file` or else the public web roots, as
//! `wss://` does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::discovery::route::{LOOKUP_PATH, LookupResponse};
use crate::terminal::{Address, Kind};

use super::{ClientError, net};

/// How long one lookup request may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which endpoint of a comet the client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The device UDP address.
    Udp,
    /// The device WebSocket URL.
    DeviceWs,
    /// The app WebSocket URL.
    AppWs,
}

/// The node lookup of a cluster (see module docs).
#[derive(Clone, Debug)]
pub struct Lookup {
    url: String,
    ca_file: Option<PathBuf>,
}

impl Lookup {
    /// `base` is the lookup URL itself (ending in `/v1/nodes/lookup`) or the HTTP API of any
    /// cluster node (`http://host:port`), to which the lookup path is added.
    pub fn new(base: &str) -> Result<Lookup, ClientError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "--lookup {base}: an http:// or https:// URL of a cluster node's API is expected"
            )));
        }
        let trimmed = base.trim_end_matches('/');
        let url = if trimmed.ends_with(LOOKUP_PATH) {
            trimmed.to_string()
        } else {
            format!("{trimmed}{LOOKUP_PATH}")
        };
        Ok(Lookup { url, ca_file: None })
    }

    /// Trusts the certificates of `ca_file` (a CA or a self-signed server certificate) for an
    /// `https://` lookup, instead of the public web roots.
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Lookup {
        self.ca_file = ca_file;
        self
    }

    /// The lookup URL asked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `want` endpoints of the comets serving `who`, primary first; a
    /// [`ClientError::Connect`] when the lookup cannot be reached, answers an error, or names
    /// no comet with that endpoint.
    pub async fn candidates(&self, who: Address, want: Want) -> Result<Vec<String>, ClientError> {
        let kind = match who.kind {
            Kind::Device => "device",
            Kind::Phone => "phone",
        };
        let fail = |why: String| ClientError::Connect(format!("lookup {}: {why}", self.url));
        // Both values are plain words and digits: nothing to escape.
        let url = format!("{}?kind={kind}&id={}", self.url, who.id);
        let (status, body) =
            tokio::time::timeout(LOOKUP_TIMEOUT, get(&url, self.ca_file.as_deref()))
                .await
                .map_err(|_| fail(format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs())))?
                .map_err(fail)?;
        if !(200..300).contains(&status) {
            return Err(fail(format!("HTTP {status}: {body}")));
        }
        let answer: LookupResponse =
            serde_json::from_str(&body).map_err(|e| fail(format!("{e}: {body}")))?;
        let found = endpoints(&answer, want);
        if found.is_empty() {
            return Err(fail(format!("no comet offers {want:?} for {who}")));
        }
        Ok(found)
    }
}

/// `GET url` (`http://` or `https://`, trusting `ca_file` or else the public web roots for
/// `https://`) over one HTTP/1.1 connection: the status and the body, as text.
async fn get(url: &str, ca_file: Option<&Path>) -> Result<(u16, String), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "`{url}`: the URL must start with http:// or https://"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{url}`: no host"))?
        .as_str();
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = net::open(url, host, port, tls.then_some(ca_file)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection's task ends with the answer, when `sender` is dropped.
    tokio::spawn(connection);
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::get(target)
        .header(hyper::header::HOST, authority)
        .body(String::new())
        .map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The `want` endpoints named in `answer`, in its order.
pub fn endpoints(answer: &LookupResponse, want: Want) -> Vec<String> {
    answer
        .nodes
        .iter()
        .filter_map(|n| match want {
            Want::Udp => n.udp.clone(),
            Want::DeviceWs => n.ws.clone(),
            Want::AppWs => n.app_ws.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::route::LookupNode;

    #[test]
    fn the_lookup_path_is_added_to_an_api_url_once() {
        let a = Lookup::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(a.url(), "http://127.0.0.1:8080/v1/nodes/lookup");
        let b = Lookup::new("http://h:1/v1/nodes/lookup/").unwrap();
        assert_eq!(b.url(), "http://h:1/v1/nodes/lookup");
        assert!(matches!(
            Lookup::new("127.0.0.1:8080"),
            Err(ClientError::Usage(_))
        ));
    }

    #[test]
    fn endpoints_keep_the_lookup_order_and_skip_comets_without_one() {
        let node = |id: &str, udp: Option<&str>, ws: Option<&str>| LookupNode {
            id: id.into(),
            udp: udp.map(Into::into),
            ws: ws.map(Into::into),
            app_ws: None,
        };
        let answer = LookupResponse {
            nodes: vec![
                node("b", Some("h:2"), None),
                node("a", Some("h:1"), Some("ws://h:3/")),
            ],
            stale: false,
        };
        assert_eq!(endpoints(&answer, Want::Udp), vec!["h:2", "h:1"]);
        assert_eq!(endpoints(&answer, Want::DeviceWs), vec!["ws://h:3/"]);
        assert!(endpoints(&answer, Want::AppWs).is_empty());
    }

    /// A one-route HTTPS server on 127.0.0.1 with a self-signed certificate for `localhost`:
    /// every request line it reads goes to the channel, and each request is answered with a
    /// lookup naming one comet. Returns its port, the certificate file and the request lines.
    async fn https_lookup_server(
        dir: &Path,
    ) -> (u16, PathBuf, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let acceptor = crate::comet::tls::load(&crate::comet::tls::TlsConfig {
            enabled: true,
            cert_file: cert.display().to_string(),
            key_file: key.display().to_string(),
            api: false,
        })
        .unwrap()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = serde_json::to_string(&LookupResponse {
            nodes: vec![LookupNode {
                id: "comet-a".into(),
                udp: Some("127.0.0.1:9".into()),
                ws: None,
                app_ws: None,
            }],
            stale: false,
        })
        .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                // A client that does not trust the certificate ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tls.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the request ended early");
                    head.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8(head).unwrap();
                tx.send(head.lines().next().unwrap().to_string()).unwrap();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                tls.write_all(reply.as_bytes()).await.unwrap();
                let _ = tls.shutdown().await;
            }
        });
        (port, cert, rx)
    }

    #[tokio::test]
    async fn an_https_lookup_trusts_the_ca_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (port, cert, mut asked) = https_lookup_server(dir.path()).await;
        let base = format!("https://localhost:{port}");
        let trusting = Lookup::new(&base).unwrap().with_ca_file(Some(cert));
        let found = trusting
            .candidates(Address::device(42), Want::Udp)
            .await
            .unwrap();
        assert_eq!(found, vec!["127.0.0.1:9"]);
        assert_eq!(
            asked.recv().await.unwrap(),
            "GET /v1/nodes/lookup?kind=device&id=42 HTTP/1.1"
        );
        // Without the certificate (public roots only) the handshake fails, and says so.
        let Err(ClientError::Connect(why)) = Lookup::new(&base)
            .unwrap()
            .candidates(Address::device(42), Want::Udp)
            .await
        else {
            panic!("an untrusted certificate must fail the lookup")
        };
        assert!(why.contains("TLS handshake"), "{why}");
        assert!(asked.try_recv().is_err(), "no request went over it");
    }
}
