//! Test support for the comet integration tests: an in-process broker on 127.0.0.1:0 ports
//! (`broker::start`), a protocol-speaking device over UDP or WebSocket (the shared-protocol
//! client handshake, secure session and receive window), an app client speaking raw JSON, and
//! the shared HTTP API client ([`http_support`]).
#![allow(dead_code, missing_docs)]

#[path = "../http_support/mod.rs"]
pub mod http_support;

use std::net::SocketAddr;
use std::time::Duration;

use broker::config::{Config, Secret};
use broker::terminal::{Address, IdProfile};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use shared_protocol::codes::Code;
use shared_protocol::frame::{Body, Frame};
use shared_protocol::handshake::{ClientEvent, ClientHandshake, WelcomeInfo};
use shared_protocol::keys::{MasterKey, derive_device_key};
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::packet::Reject;
use shared_protocol::reliability::{Ack, RecvOutcome, RecvWindow};
use shared_protocol::session::SecureSession;
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use self::http_support::ApiClient;

pub const API_TOKEN: &str = "comet-test-api-token-0123";
pub const MASTER: [u8; 32] = [0x42; 32];
pub const TOKEN_SECRET: [u8; 32] = [0x17; 32];

pub struct TestBroker {
    pub running: broker::Running,
    pub dir: tempfile::TempDir,
    http: ApiClient,
}

pub fn config(dir: &std::path::Path, profile: IdProfile) -> Config {
    let mut c = Config::default();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    c.listen.http = any;
    c.listen.device_ws = any;
    c.listen.app_ws = any;
    c.listen.udp = any;
    c.storage.data_dir = dir.to_path_buf();
    c.identity.profile = profile;
    c.security.api_token = Secret::new(API_TOKEN);
    c.security.fleet_master_key = Secret::new(hex::encode(MASTER));
    c.security.token_secret = Secret::new(hex::encode(TOKEN_SECRET));
    c
}

impl TestBroker {
    pub async fn start(profile: IdProfile) -> TestBroker {
        Self::start_with(profile, |_| {}).await
    }

    pub async fn start_with(profile: IdProfile, tweak: impl FnOnce(&mut Config)) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), profile);
        tweak(&mut c);
        let running = broker::start(&c).await.unwrap();
        let http = ApiClient::new(format!("http://{}", running.http), API_TOKEN);
        TestBroker { running, dir, http }
    }

    pub fn udp(&self) -> SocketAddr {
        self.running.comet.udp
    }

    pub fn device_ws(&self) -> String {
        format!("ws://{}/", self.running.comet.device_ws)
    }

    pub fn app_ws(&self) -> String {
        format!("ws://{}/", self.running.comet.app_ws)
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.http.call(method, path, body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.http.get(path).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.http.post(path, body).await
    }

    pub async fn bind(&self, phone: u32, device: u32) {
        let (s, b) = self
            .api(
                reqwest::Method::PUT,
                &format!("/v1/bindings/{}/{device}", phone as i32),
                None,
            )
            .await;
        assert!((200..300).contains(&s), "bind: {s} {b}");
    }

    pub fn metrics(&self) -> String {
        self.running.router.metrics().render()
    }

    /// Whether some series whose line contains `needle` (a label text such as
    /// `reason="auth_failed"`) has a value other than 0: series are registered at 0 at start,
    /// so their mere presence says nothing.
    pub fn counted(&self, needle: &str) -> bool {
        self.metrics().lines().any(|l| {
            !l.starts_with('#')
                && l.contains(needle)
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
        })
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// A frame received by a test device, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    Deliver {
        msg_id: u64,
        from: Option<Address>,
        payload: Vec<u8>,
    },
    Command {
        cmd_id: u32,
        name: String,
        payload: Vec<u8>,
    },
    UploadAck {
        upload_id: u32,
    },
    Response {
        req_id: u32,
        status: u16,
        payload: Vec<u8>,
    },
    Presence {
        who: Address,
        online: bool,
    },
    Kick {
        reason: Code,
    },
    Error {
        code: Code,
        about_seq: u32,
    },
    Pong,
    AckOnly,
    Other(String),
}

fn owned(body: &Body<'_>) -> Got {
    match *body {
        Body::Deliver {
            msg_id,
            from,
            payload,
        } => Got::Deliver {
            msg_id,
            from,
            payload: payload.to_vec(),
        },
        Body::Command {
            cmd_id,
            name,
            payload,
        } => Got::Command {
            cmd_id,
            name: name.to_owned(),
            payload: payload.to_vec(),
        },
        Body::UploadAck { upload_id } => Got::UploadAck { upload_id },
        Body::Response {
            req_id,
            status,
            payload,
        } => Got::Response {
            req_id,
            status,
            payload: payload.to_vec(),
        },
        Body::Presence { who, online } => Got::Presence { who, online },
        Body::Kick { reason } => Got::Kick { reason },
        Body::Error { code, about_seq } => Got::Error { code, about_seq },
        Body::Pong { .. } => Got::Pong,
        Body::AckOnly => Got::AckOnly,
        other => Got::Other(other.name().to_owned()),
    }
}

pub type ClientWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A device's packet transport.
pub enum Wire {
    Udp {
        socket: UdpSocket,
        broker: SocketAddr,
    },
    Ws(Box<ClientWs>),
}

impl Wire {
    pub async fn udp(broker: SocketAddr) -> Wire {
        Wire::Udp {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            broker,
        }
    }

    /// A UDP wire from a socket bound to `local_ip` (any 127.0.0.0/8 address is local here):
    /// a device behind another address.
    pub async fn udp_from(local_ip: &str, broker: SocketAddr) -> Wire {
        Wire::Udp {
            socket: UdpSocket::bind((local_ip, 0)).await.unwrap(),
            broker,
        }
    }

    pub async fn ws(url: &str) -> Wire {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Wire::Ws(Box::new(ws))
    }

    pub async fn send(&mut self, packet: &[u8]) {
        match self {
            Wire::Udp { socket, broker } => {
                socket.send_to(packet, *broker).await.unwrap();
            }
            Wire::Ws(ws) => {
                let _ = ws.send(Message::Binary(packet.to_vec().into())).await;
            }
        }
    }

    /// The next packet, or `None` on timeout or when the WebSocket closed.
    pub async fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self {
            Wire::Udp { socket, .. } => {
                let mut buf = vec![0u8; 2048];
                let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Wire::Ws(ws) => loop {
                match tokio::time::timeout(wait, ws.next()).await.ok()?? {
                    Ok(Message::Binary(b)) => return Some(b.to_vec()),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            },
        }
    }

    /// For WebSockets: waits for the close frame and returns its code.
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let Wire::Ws(ws) = self else { return None };
        loop {
            match tokio::time::timeout(wait, ws.next()).await.ok()?? {
                Ok(Message::Close(Some(f))) => return Some(f.code.into()),
                Ok(Message::Close(None)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }
}

pub fn device_key(id: u32) -> shared_protocol::keys::DeviceKey {
    derive_device_key(&MasterKey(MASTER), id)
}

/// A logged-in test device.
pub struct Device {
    pub wire: Wire,
    pub session: SecureSession,
    pub welcome: WelcomeInfo,
    pub recv: RecvWindow,
    /// Frames received ahead of a gap, by seq, and frames released in order but not yet read.
    held: std::collections::BTreeMap<u32, (Ack, Got)>,
    ready: std::collections::VecDeque<(u32, Ack, Got)>,
    pub next_seq: u32,
    /// Acknowledge reliable frames at once (turn off to simulate a device that never acks).
    pub auto_ack: bool,
}

impl Device {
    /// A device whose login just completed on `wire`.
    pub fn established(wire: Wire, session: SecureSession, welcome: WelcomeInfo) -> Device {
        Device {
            wire,
            session,
            welcome,
            recv: RecvWindow::new(),
            held: Default::default(),
            ready: Default::default(),
            next_seq: 1,
            auto_ack: true,
        }
    }
}

/// The upload epoch [`login`] reports: every login through it is the same boot of its device.
pub const UPLOAD_EPOCH: u64 = 0x00b0_07ed;

/// Runs the client handshake (upload epoch [`UPLOAD_EPOCH`]); `Err(reject)` when the broker
/// refused.
pub async fn login(wire: Wire, id: u32, since_id: u64) -> Result<Device, Reject> {
    login_in_epoch(wire, id, since_id, UPLOAD_EPOCH).await
}

/// [`login`] over a fresh UDP wire from `local_ip` (see [`Wire::udp_from`]), tried every 100 ms
/// for up to 5 s while the broker refuses it with `refused` (a connection slot on its way
/// back); `None` if it never got in. Any other refusal fails the test.
pub async fn udp_login_once_admitted(
    local_ip: &str,
    broker: SocketAddr,
    id: u32,
    refused: Code,
) -> Option<Device> {
    for _ in 0..50 {
        match login(Wire::udp_from(local_ip, broker).await, id, 0).await {
            Ok(session) => return Some(session),
            Err(r) if r.code == refused => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(r) => panic!("unexpected refusal {:?}", r.code),
        }
    }
    None
}

/// [`login`] reporting `upload_epoch` (a new value models a reboot of the device).
pub async fn login_in_epoch(
    mut wire: Wire,
    id: u32,
    since_id: u64,
    upload_epoch: u64,
) -> Result<Device, Reject> {
    let mut hs = ClientHandshake::new(Address::device(id), device_key(id), since_id, upload_epoch);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(broker::router::now_ms(), rand::random(), &mut out)
        .unwrap()
        .to_vec();
    wire.send(&hello).await;
    loop {
        let mut p = wire
            .recv(Duration::from_secs(5))
            .await
            .expect("handshake answer");
        match hs.on_packet(&mut p, &mut out).unwrap() {
            ClientEvent::Send(login) => {
                let login = login.to_vec();
                wire.send(&login).await;
            }
            ClientEvent::Established(e) => {
                return Ok(Device::established(wire, e.session, e.welcome));
            }
            ClientEvent::Rejected(r) => return Err(r),
            ClientEvent::Ignored => {}
        }
    }
}

impl Device {
    pub fn seal(&mut self, body: Body<'_>) -> Vec<u8> {
        let seq = if body.is_reliable() {
            self.next_seq += 1;
            self.next_seq - 1
        } else {
            0
        };
        let frame = Frame {
            seq,
            ack: self.recv.ack(),
            body,
        };
        let mut out = [0u8; MAX_PACKET];
        let n = self.session.seal_frame(&frame, &mut out).unwrap();
        out[..n].to_vec()
    }

    pub async fn send(&mut self, body: Body<'_>) {
        let p = self.seal(body);
        self.wire.send(&p).await;
    }

    pub async fn ack(&mut self) {
        let ack = Frame::unreliable(self.recv.ack(), Body::AckOnly);
        let mut out = [0u8; MAX_PACKET];
        let n = self.session.seal_frame(&ack, &mut out).unwrap();
        self.recv.on_ack_sent();
        self.wire.send(&out[..n]).await;
    }

    /// The next new frame in `seq` order (duplicates are acknowledged and skipped; a frame
    /// ahead of a gap is held until the gap fills, as docs/protocol.md section 5 says), or
    /// `None` on timeout.
    pub async fn next(&mut self, wait: Duration) -> Option<(u32, Ack, Got)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(ready) = self.ready.pop_front() {
                return Some(ready);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut p = self.wire.recv(left).await?;
            let Ok(frame) = self.session.open_frame(&mut p) else {
                continue;
            };
            let (seq, ack, got) = (frame.seq, frame.ack, owned(&frame.body));
            match self.recv.on_receive(seq, 0) {
                RecvOutcome::Unreliable => self.ready.push_back((seq, ack, got)),
                RecvOutcome::InOrder { released } => {
                    self.ready.push_back((seq, ack, got));
                    for s in seq + 1..=seq + released {
                        let (a, g) = self.held.remove(&s).expect("released frames were held");
                        self.ready.push_back((s, a, g));
                    }
                }
                RecvOutcome::Early => {
                    self.recv.hold(seq);
                    self.held.insert(seq, (ack, got));
                }
                RecvOutcome::Duplicate | RecvOutcome::OutOfWindow => {}
            }
            if seq != 0 && self.auto_ack {
                self.ack().await;
            }
        }
    }

    /// The next frame other than AckOnly/Pong.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Got> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await?.2 {
                Got::AckOnly | Got::Pong => continue,
                g => return Some(g),
            }
        }
    }
}

/// An app over the JSON WebSocket transport, speaking raw JSON as a browser would.
pub struct App {
    pub ws: ClientWs,
}

pub fn app_token(address: Address, exp_offset_secs: i64) -> String {
    let now = broker::router::now_ms() / 1000;
    let exp = (now as i64 + exp_offset_secs) as u64;
    shared_protocol::json::mint(
        &TOKEN_SECRET,
        &shared_protocol::json::Claims { address, exp },
    )
}

impl App {
    pub async fn connect(url: &str) -> App {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        App { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON message, or `None` on timeout/close.
    pub async fn recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.ws.next()).await.ok()?? {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Next message whose `type` is not `presence`.
    pub async fn recv_skip_presence(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let v = self.recv(wait).await?;
            if v["type"] != "presence" {
                return Some(v);
            }
        }
    }

    /// Connects and authenticates; returns the app and the `welcome` (or the `reject`).
    pub async fn login(url: &str, address: Address, since_id: u64) -> (App, Value) {
        let mut app = App::connect(url).await;
        let token = app_token(address, 3600);
        app.send(serde_json::json!({"type": "auth", "token": token, "since_id": since_id}))
            .await;
        let answer = app.recv(Duration::from_secs(5)).await.expect("auth answer");
        (app, answer)
    }
}

pub const WAIT: Duration = Duration::from_secs(5);

/// Sends device `id` (logged in as `dev`) three commands through the API and answers each from
/// `dev`; each CommandResult must be acknowledged by an AckOnly, the fastest within `ACK_DELAY`
/// of its send (a delayed acknowledgement never can be).
pub async fn assert_command_results_acknowledged_at_once(
    b: &TestBroker,
    dev: &mut Device,
    id: u32,
) {
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let (got, took) = command_result_acknowledged(b, dev, id).await;
        assert_eq!(got, Got::AckOnly);
        fastest = fastest.min(took);
    }
    assert!(
        fastest < Duration::from_millis(shared_protocol::limits::ACK_DELAY_MS),
        "the fastest acknowledgement took {fastest:?}"
    );
}

/// Sends device `id` (logged in as `dev`) a command through the API, answers it from `dev`, and
/// returns the frame that first acknowledged the CommandResult with the time from sending the
/// CommandResult to receiving that frame.
async fn command_result_acknowledged(b: &TestBroker, dev: &mut Device, id: u32) -> (Got, Duration) {
    let path = format!("/v1/devices/{id}/commands");
    let post = b.post(
        &path,
        serde_json::json!({"name": "relay", "text": "on", "timeout_ms": 5000}),
    );
    let answer = async {
        let Some(Got::Command { cmd_id, .. }) = dev.next_event(WAIT).await else {
            panic!("no command reached the device");
        };
        let seq = dev.next_seq;
        dev.send(Body::CommandResult {
            cmd_id,
            status: 0,
            payload: b"done",
        })
        .await;
        let sent = tokio::time::Instant::now();
        loop {
            let (_, ack, got) = dev
                .next(WAIT)
                .await
                .expect("the broker acknowledges the CommandResult");
            if ack.next > seq {
                return (got, sent.elapsed());
            }
        }
    };
    let ((status, body), acknowledged) = tokio::join!(post, answer);
    assert_eq!(status, 200, "{body}");
    acknowledged
}
