//! `[tls]`: the device and app WebSockets over TLS (rustls), with a self-signed certificate made
//! in the test (rcgen). An app completes the JSON auth over wss:// trusting that certificate, a
//! device logs in over wss:// with shared-protocol, a plain ws:// client gets nowhere, bad
//! certificate paths fail start-up naming the key, and with `api = true` the HTTP API answers over
//! https:// only.

use std::net::SocketAddr;
use std::time::Duration;

use broker::config::{Config, Secret};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shared_protocol::frame::{Body, Frame};
use shared_protocol::handshake::{ClientEvent, ClientHandshake};
use shared_protocol::ids::Address;
use shared_protocol::keys::{MasterKey, derive_device_key};
use shared_protocol::limits::MAX_PACKET;
use tokio_tungstenite::tungstenite::Message;

const MASTER: [u8; 32] = [0x42; 32];
const TOKEN_SECRET: [u8; 32] = [0x17; 32];
const WAIT: Duration = Duration::from_secs(5);

struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Certs { dir }
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }
}

fn config(data: &std::path::Path, certs: &Certs) -> Config {
    let mut c = Config::default();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    c.listen.http = any;
    c.listen.device_ws = any;
    c.listen.app_ws = any;
    c.listen.udp = any;
    c.storage.data_dir = data.to_path_buf();
    c.security.api_token = Secret::new("tls-test-api-token-0123");
    c.security.fleet_master_key = Secret::new(hex::encode(MASTER));
    c.security.token_secret = Secret::new(hex::encode(TOKEN_SECRET));
    c.tls.enabled = true;
    c.tls.cert_file = certs.cert().display().to_string();
    c.tls.key_file = certs.key().display().to_string();
    c
}

async fn next_text(ws: &mut broker::client::net::ClientWs) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn app_and_device_log_in_over_wss_and_plain_ws_does_not() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let running = broker::start(&config(data.path(), &certs)).await.unwrap();
    let app_url = format!("wss://localhost:{}/", running.comet.app_ws.port());

    // App: JSON auth over TLS, trusting the self-signed certificate.
    let mut app = broker::client::net::connect(&app_url, Some(&certs.cert()), 16384)
        .await
        .unwrap();
    let exp = broker::router::now_ms() / 1000 + 600;
    let token = shared_protocol::json::mint(
        &TOKEN_SECRET,
        &shared_protocol::json::Claims {
            address: Address::phone(7),
            exp,
        },
    );
    let auth = json!({"type": "auth", "token": token, "since_id": 0});
    app.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    let welcome = next_text(&mut app).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["address"], json!({"kind": "phone", "id": 7}));

    // Without trusting the certificate the TLS handshake fails (public roots only).
    let e = broker::client::net::connect(&app_url, None, 16384)
        .await
        .err()
        .expect("an untrusted certificate must fail");
    assert!(e.contains("TLS handshake"), "{e}");

    // Plain ws:// to the TLS port: no WebSocket.
    let plain = format!("ws://{}/", running.comet.app_ws);
    let e = tokio::time::timeout(WAIT, broker::client::net::connect(&plain, None, 16384))
        .await
        .unwrap()
        .err()
        .expect("plain ws to a TLS listener must fail");
    assert!(e.contains("WebSocket handshake"), "{e}");

    // Device: shared-protocol login over wss, then a push arrives.
    let dev_url = format!("wss://localhost:{}/", running.comet.device_ws.port());
    let mut ws = broker::client::net::connect(&dev_url, Some(&certs.cert()), MAX_PACKET)
        .await
        .unwrap();
    let key = derive_device_key(&MasterKey(MASTER), 42);
    let mut hs = ClientHandshake::new(Address::device(42), key, 0, 1);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs.start(0, rand::random(), &mut out).unwrap().to_vec();
    ws.send(Message::Binary(hello.into())).await.unwrap();
    let mut session = loop {
        let mut p = match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        match hs.on_packet(&mut p, &mut out).unwrap() {
            ClientEvent::Send(login) => {
                let login = login.to_vec();
                ws.send(Message::Binary(login.into())).await.unwrap();
            }
            ClientEvent::Established(e) => break e.session,
            other => panic!("{other:?}"),
        }
    };
    running
        .router
        .push(
            broker::router::Target::Terminal(Address::device(42)),
            None,
            bytes::Bytes::from_static(b"over tls"),
            None,
        )
        .await
        .unwrap();
    let mut p = match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Binary(b))) => b.to_vec(),
        other => panic!("{other:?}"),
    };
    let frame: Frame<'_> = session.open_frame(&mut p).unwrap();
    match frame.body {
        Body::Deliver { payload, .. } => assert_eq!(payload, b"over tls"),
        other => panic!("{other:?}"),
    }
    running.stop().await;
}

#[tokio::test]
async fn bad_certificate_paths_fail_start_up_naming_the_key() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let mut c = config(data.path(), &certs);
    c.tls.cert_file = data.path().join("missing.pem").display().to_string();
    let e = broker::start(&c).await.err().expect("must not start");
    assert!(
        e.to_string()
            .starts_with("key `tls.cert_file`: cannot read"),
        "{e}"
    );

    let mut c = config(data.path(), &certs);
    c.tls.key_file = certs.cert().display().to_string();
    let e = broker::start(&c).await.err().expect("must not start");
    assert!(e.to_string().starts_with("key `tls.key_file`:"), "{e}");

    let text = format!(
        "[tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}\n",
        data.path().join("nope.pem"),
        certs.key()
    );
    let e = Config::from_str_with_env("b.toml", &text, Vec::new()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("b.toml: key `tls.cert_file`: cannot read"),
        "{e}"
    );
    let ok = format!(
        "[tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}\n",
        certs.cert(),
        certs.key()
    );
    assert!(
        Config::from_str_with_env("ok.toml", &ok, Vec::new())
            .unwrap()
            .tls
            .enabled
    );
}

/// One HTTP/1.1 GET over TLS to `addr` (certificate for `localhost`, trusting `ca`); the whole
/// response as text.
async fn https_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    ca: &std::path::Path,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = broker::client::net::client_config(Some(ca)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn the_http_api_is_served_over_https_when_asked_and_not_over_plain_http() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let mut c = config(data.path(), &certs);
    c.tls.api = true;
    let running = broker::start(&c).await.unwrap();

    let ok = https_get(
        running.http,
        "/v1/online",
        Some("tls-test-api-token-0123"),
        &certs.cert(),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"devices\""), "the API's own JSON: {ok}");
    let denied = https_get(running.http, "/v1/online", None, &certs.cert()).await;
    assert!(
        denied.starts_with("HTTP/1.1 401"),
        "bearer auth still applies: {denied}"
    );

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = tokio::time::timeout(
        WAIT,
        reqwest::get(format!("http://{}/healthz", running.http)),
    )
    .await
    .unwrap();
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");

    // Without `[tls] enabled` an HTTPS API is refused at start-up, naming the key.
    let other = tempfile::tempdir().unwrap();
    let mut off = config(other.path(), &certs);
    off.tls.enabled = false;
    off.tls.api = true;
    let e = broker::start(&off).await.err().expect("must not start");
    assert!(e.to_string().starts_with("key `tls.api`:"), "{e}");
}
