//! An MQTT 3.1.1 client for the benchmark, over TCP or over WebSocket (binary messages,
//! subprotocol `mqtt`, as Mosquitto's `websockets` listener expects). Packets are encoded and
//! decoded by rumqttc's codec (`rumqttc::mqttbytes::v4`); this module only frames them on the
//! socket and says what an idle client does: CONNECT with keep-alive off, wait for a CONNACK
//! that accepts, then read until the server closes. A responder (the MQTT side of the command
//! round trip) also subscribes to its request topic, answers every request on its reply topic
//! (at QoS 0, or at QoS 1 with PUBACKs both ways) and, like our devices, sends a heartbeat every [`RESPONDER_KEEP_ALIVE_SECS`] (MQTT's
//! keep-alive and PINGREQ), so both sides of the comparison carry the same idle traffic.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use rumqttc::ConnectReturnCode;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, PubAck, Publish, Subscribe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::tally::Tally;

/// A responder's keep-alive, seconds: a PINGREQ that often, as our devices send a Ping every
/// `heartbeat_secs` of the broker's WELCOME (30 on the embedded defaults the benchmark runs).
pub const RESPONDER_KEEP_ALIVE_SECS: u16 = 30;

/// Largest packet read or written (the benchmark's payloads are 64 bytes).
const MAX_PACKET: usize = 64 * 1024;

/// One MQTT connection and what has been read from it but not decoded yet.
pub struct Conn {
    socket: Socket,
    read: BytesMut,
}

enum Socket {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<TcpStream>>),
}

impl Conn {
    /// Connects over TCP, or over WebSocket when `websocket`, and completes the MQTT CONNECT as
    /// `client_id` (clean session, keep-alive off).
    pub async fn connect(
        websocket: bool,
        addr: SocketAddr,
        client_id: &str,
    ) -> Result<Conn, String> {
        Conn::connect_session(websocket, addr, client_id, true, 0).await
    }

    /// [`Conn::connect`] with the clean-session flag and keep-alive (seconds, 0: off) given:
    /// `clean_session: false` asks the server to keep the session (subscriptions, QoS 1
    /// messages queued for it) across connections; with a keep-alive the caller sends PINGREQs.
    pub async fn connect_session(
        websocket: bool,
        addr: SocketAddr,
        client_id: &str,
        clean_session: bool,
        keep_alive_secs: u16,
    ) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = tcp.set_nodelay(true);
        let socket = if websocket {
            let mut request = format!("ws://{addr}/mqtt")
                .into_client_request()
                .map_err(|e| e.to_string())?;
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "mqtt".parse().map_err(|_| "header")?,
            );
            // Small buffers: the default 128 KiB read buffer per connection would make a
            // client process of 15,000 connections take 2 GiB.
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
                .await
                .map_err(|e| format!("websocket handshake: {e}"))?;
            Socket::Ws(Box::new(ws))
        } else {
            Socket::Tcp(tcp)
        };
        let mut conn = Conn {
            socket,
            read: BytesMut::with_capacity(256),
        };
        let mut connect = Connect::new(client_id);
        connect.keep_alive = keep_alive_secs;
        connect.clean_session = clean_session;
        conn.send(&Packet::Connect(connect)).await?;
        match conn.recv().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok(conn),
            Packet::ConnAck(ack) => Err(format!("connack refused: {:?}", ack.code)),
            other => Err(format!("expected connack, got {other:?}")),
        }
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), String> {
        let mut out = BytesMut::with_capacity(packet.size() + 5);
        packet
            .write(&mut out, MAX_PACKET)
            .map_err(|e| format!("encode: {e}"))?;
        match &mut self.socket {
            Socket::Tcp(s) => s
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {}", e.kind())),
            Socket::Ws(ws) => ws
                .send(Message::Binary(out.freeze()))
                .await
                .map_err(|e| format!("write: {e}")),
        }
    }

    /// The next packet; an error when the socket ends or a packet does not decode.
    pub async fn recv(&mut self) -> Result<Packet, String> {
        loop {
            match Packet::read(&mut self.read, MAX_PACKET) {
                Ok(p) => return Ok(p),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(format!("decode: {e}")),
            }
            match &mut self.socket {
                Socket::Tcp(s) => {
                    let n = s
                        .read_buf(&mut self.read)
                        .await
                        .map_err(|e| format!("read: {}", e.kind()))?;
                    if n == 0 {
                        return Err("closed".into());
                    }
                }
                Socket::Ws(ws) => match ws.next().await {
                    Some(Ok(Message::Binary(b))) => self.read.extend_from_slice(&b),
                    Some(Ok(Message::Close(_))) | None => return Err("closed".into()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("read: {e}")),
                },
            }
        }
    }
}

/// Starts one idle MQTT client per id (client id `bench-<id>`), the i-th at `at(i)`.
pub fn spawn_idle(
    websocket: bool,
    addr: SocketAddr,
    ids: Range<u32>,
    timeout: Duration,
    at: impl Fn(u32) -> Instant,
    tally: &Arc<Tally>,
) {
    let first = ids.start;
    for id in ids {
        let tally = tally.clone();
        let start_at = at(id - first);
        tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            let client_id = format!("bench-{id}");
            match tokio::time::timeout(timeout, Conn::connect(websocket, addr, &client_id)).await {
                Ok(Ok(mut conn)) => {
                    tally.up();
                    let reason = loop {
                        if let Err(e) = conn.recv().await {
                            break e;
                        }
                    };
                    tally.lost(&reason);
                }
                Ok(Err(reason)) => tally.failed(&reason),
                Err(_) => tally.failed("mqtt connect timed out"),
            }
        });
    }
}

/// The topic terminal `id` receives requests on (`+` for every terminal).
pub fn request_topic(id: &str) -> String {
    format!("bench/req/{id}")
}

/// The topic terminal `id` answers requests on (`+` for every terminal).
pub fn reply_topic(id: &str) -> String {
    format!("bench/reply/{id}")
}

/// The next packet id after `id` (MQTT's are 1..=65535; 0 is not one).
pub fn next_pkid(id: u16) -> u16 {
    id.checked_add(1).unwrap_or(1)
}

/// Starts one responder per id (client id `bench-<id>`), the i-th at `at(i)`: an MQTT/TCP client
/// subscribed to `request_topic(id)` at `qos` that publishes each request's payload back on
/// `reply_topic(id)` at `qos` and sends a PINGREQ every [`RESPONDER_KEEP_ALIVE_SECS`]. At QoS 1 it
/// acknowledges each request (PUBACK) after publishing the reply, as a client library does once
/// the application's handler returned. It counts as up once its SUBACK arrived.
pub fn spawn_responders(
    addr: SocketAddr,
    qos: QoS,
    ids: Range<u32>,
    timeout: Duration,
    at: impl Fn(u32) -> Instant,
    tally: &Arc<Tally>,
) {
    let first = ids.start;
    for id in ids {
        let tally = tally.clone();
        let start_at = at(id - first);
        tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            let subscribed = async {
                let client_id = format!("bench-{id}");
                let keep_alive = RESPONDER_KEEP_ALIVE_SECS;
                let mut conn =
                    Conn::connect_session(false, addr, &client_id, true, keep_alive).await?;
                let mut sub = Subscribe::new(request_topic(&id.to_string()), qos);
                sub.pkid = 1;
                conn.send(&Packet::Subscribe(sub)).await?;
                match conn.recv().await? {
                    Packet::SubAck(_) => Ok(conn),
                    other => Err(format!("expected suback, got {other:?}")),
                }
            };
            let mut conn = match tokio::time::timeout(timeout, subscribed).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(reason)) => return tally.failed(&reason),
                Err(_) => return tally.failed("mqtt subscribe timed out"),
            };
            tally.up();
            let reply = reply_topic(&id.to_string());
            let period = Duration::from_secs(u64::from(RESPONDER_KEEP_ALIVE_SECS));
            let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
            let mut pkid = 0;
            let reason = loop {
                // `recv` only appends to the connection's read buffer, so a heartbeat that
                // interrupts it loses nothing.
                let answered = tokio::select! {
                    got = conn.recv() => match got {
                        Ok(Packet::Publish(p)) => {
                            let mut answer = Publish::new(&reply, qos, p.payload);
                            if qos != QoS::AtMostOnce {
                                pkid = next_pkid(pkid);
                                answer.pkid = pkid;
                            }
                            let sent = conn.send(&Packet::Publish(answer)).await;
                            match (sent, p.qos) {
                                (Ok(()), QoS::AtMostOnce) => Ok(()),
                                (Ok(()), _) => conn.send(&Packet::PubAck(PubAck::new(p.pkid))).await,
                                (Err(e), _) => Err(e),
                            }
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    },
                    _ = heartbeat.tick() => conn.send(&Packet::PingReq).await,
                };
                if let Err(e) = answered {
                    break e;
                }
            };
            tally.lost(&reason);
        });
    }
}
