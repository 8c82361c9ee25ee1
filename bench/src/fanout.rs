//! `bench-load fanout` (terminals that receive a broadcast) and `bench-load publish` (the
//! sender). A broadcast message's payload carries its index and the sender's wall-clock time of
//! the first send (both processes run on one machine, one clock); every receiving process keeps,
//! per message, the first and last time one of its terminals got it and how many did.
//!
//! Receivers print one status line when every connection attempt finished (as `idle` does),
//! then a result line once every terminal that is up got every message, or when standard input
//! closes (the harness gave up waiting): `{"deliveries":..,"first_us":..,"last_us":..}`.
//! They keep their connections open until standard input closes, so that acknowledgements
//! still on their way reach the server before the harness reads its CPU time.
//! Our terminals are apps on the app WebSocket (each delivery acknowledged, as an app must) or
//! devices on the device WebSocket (`broker load`'s simulated devices, whose link acknowledges
//! each Deliver; they count deliveries and stamp the last one in ms, so the first delivery is
//! when a 1 ms poll first sees one and the payload is not checked); MQTT terminals subscribe to one topic at QoS 0 or 1 (QoS 1 deliveries get a PUBACK).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe};
use shared_protocol::json::{AckMsg, ClientMessage, ServerMessage};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::mqtt::Conn;
use crate::ours;
use crate::tally::Tally;

/// The MQTT topic every terminal subscribes to.
const TOPIC: &str = "bench/fanout";
/// Bytes of every broadcast payload (index, send time, padding).
pub const PAYLOAD: usize = 64;

/// Who receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Receiver {
    /// Our apps on the app WebSocket (a push to `all_phones`).
    AppWs,
    /// Our devices on the device WebSocket (a push to `all_devices`).
    DeviceWs,
    /// MQTT/TCP subscribers.
    MqttTcp,
}

/// Arguments of `bench-load fanout`.
#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// Who receives.
    #[arg(long, value_enum)]
    kind: Receiver,
    /// Terminals in this process.
    #[arg(long, value_name = "N")]
    count: u32,
    /// Id of the first terminal.
    #[arg(long, default_value_t = 1, value_name = "ID")]
    first_id: u32,
    /// The server's address for this kind.
    #[arg(long, value_name = "ADDR")]
    addr: SocketAddr,
    /// Connections started per second.
    #[arg(long, default_value_t = 1000, value_name = "PER_SEC")]
    rate: u32,
    /// App token secret (64 hex digits) for `app-ws`.
    #[arg(long, value_name = "HEX")]
    token_secret: Option<String>,
    /// Fleet master key (64 hex digits) for `device-ws`.
    #[arg(long, value_name = "HEX")]
    master_key: Option<String>,
    /// MQTT subscription QoS (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Messages the broadcast sends.
    #[arg(long, default_value_t = 10, value_name = "N")]
    messages: u32,
    /// Give up one connection attempt after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
}

/// Who sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sender {
    /// `POST /v1/push` to the target: every push sent at once, each on its own connection,
    /// then every answer awaited (as the MQTT QoS 1 publisher sends every PUBLISH back to back,
    /// then awaits the PUBACKs).
    Ours,
    /// MQTT PUBLISH to the topic, back to back.
    Mqtt,
}

/// Arguments of `bench-load publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Who sends.
    #[arg(long, value_enum)]
    to: Sender,
    /// Our HTTP API or Mosquitto's MQTT address.
    #[arg(long, value_name = "ADDR")]
    addr: SocketAddr,
    /// Our API bearer token.
    #[arg(long, value_name = "TOKEN")]
    api_token: Option<String>,
    /// Our push target: `all_phones` or `all_devices`.
    #[arg(long, default_value = "all_phones", value_name = "TARGET")]
    target: String,
    /// MQTT PUBLISH QoS (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Messages to send.
    #[arg(long, default_value_t = 10, value_name = "N")]
    messages: u32,
}

/// Microseconds since the Unix epoch (the clock both sides share).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Payload of message `index` sent at `sent_us`.
pub fn payload(index: u32, sent_us: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..4].copy_from_slice(&index.to_le_bytes());
    p[4..12].copy_from_slice(&sent_us.to_le_bytes());
    p
}

/// What one process's terminals received.
#[derive(Debug)]
pub struct Recorder {
    deliveries: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    unknown: AtomicU64,
    messages: u32,
}

impl Recorder {
    /// A recorder for a broadcast of `messages`.
    pub fn new(messages: u32) -> Recorder {
        Recorder {
            deliveries: AtomicU64::new(0),
            first_us: AtomicU64::new(u64::MAX),
            last_us: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            messages,
        }
    }

    /// One terminal got `payload` now; a payload that is not one of the broadcast's is counted
    /// apart.
    pub fn record(&self, payload: &[u8]) {
        let index = payload
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if payload.len() != PAYLOAD || index.is_none_or(|i| i >= self.messages) {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = now_us();
        self.first_us.fetch_min(now, Ordering::Relaxed);
        self.last_us.fetch_max(now, Ordering::Relaxed);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// The result line.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "deliveries": self.deliveries(),
            "unknown": self.unknown.load(Ordering::Relaxed),
            "first_us": self.first_us.load(Ordering::Relaxed),
            "last_us": self.last_us.load(Ordering::Relaxed),
        })
    }
}

/// Runs `bench-load fanout`.
pub async fn run(args: FanoutArgs) -> Result<(), String> {
    if args.count == 0 || args.rate == 0 || args.messages == 0 {
        return Err("--count, --rate and --messages must be at least 1".into());
    }
    let tally = Arc::new(Tally::default());
    let recorder = Arc::new(Recorder::new(args.messages));
    let timeout = Duration::from_secs(args.timeout);
    let start = Instant::now();
    let ramp = Duration::from_secs_f64(f64::from(args.count) / f64::from(args.rate));
    if args.kind == Receiver::DeviceWs {
        return run_devices(args, tally, timeout, start, ramp).await;
    }
    let secret = match args.kind {
        Receiver::AppWs => Some(
            args.token_secret
                .clone()
                .ok_or("app-ws needs --token-secret")?,
        ),
        Receiver::MqttTcp | Receiver::DeviceWs => None,
    };
    for i in 0..args.count {
        let id = args.first_id + i;
        let at = start + ramp.mul_f64(f64::from(i) / f64::from(args.count));
        let (tally, recorder, secret) = (tally.clone(), recorder.clone(), secret.clone());
        let (kind, addr, qos) = (args.kind, args.addr, args.qos);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let reason = match kind {
                Receiver::AppWs => app_terminal(addr, id, secret, timeout, &tally, &recorder).await,
                Receiver::MqttTcp => mqtt_terminal(addr, id, qos, timeout, &tally, &recorder).await,
                Receiver::DeviceWs => Ok(()),
            };
            if let Err((up, reason)) = reason {
                if up {
                    tally.lost(&reason);
                } else {
                    tally.failed(&reason);
                }
            }
        });
    }
    let deadline = start + ramp + timeout + Duration::from_secs(5);
    while tally.finished() < u64::from(args.count) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{}", tally.json());
    let expected = tally.json()["up"].as_u64().unwrap_or(0) * u64::from(args.messages);
    let all_in = async {
        while recorder.deliveries() < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = all_in => {}
        _ = stdin_closed() => {}
    }
    let mut result = recorder.json();
    result["expected"] = expected.into();
    result["lost"] = tally.json()["lost"].clone();
    println!("{result}");
    stdin_closed().await;
    Ok(())
}

/// Returns when standard input closes (the harness gave up waiting, or is done).
pub async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// `bench-load fanout --kind device-ws`: simulated devices count their deliveries; a 1 ms poll
/// stamps the first one.
async fn run_devices(
    args: FanoutArgs,
    tally: Arc<Tally>,
    timeout: Duration,
    start: Instant,
    ramp: Duration,
) -> Result<(), String> {
    let count = args.count;
    let devices = ours::spawn_devices(
        true,
        args.addr,
        args.master_key.as_deref(),
        args.first_id..args.first_id + count,
        timeout,
        move |i| start + ramp.mul_f64(f64::from(i) / f64::from(count)),
        &tally,
    )?;
    let deadline = start + ramp + timeout + Duration::from_secs(5);
    while tally.finished() + devices.logged_in() < u64::from(count) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tally.add_up(devices.logged_in());
    println!("{}", tally.json());
    let expected = devices.logged_in() * u64::from(args.messages);
    let mut first_us = u64::MAX;
    let all_in = async {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while devices.delivered() < expected {
            tick.tick().await;
            if first_us == u64::MAX && devices.delivered() > 0 {
                first_us = now_us();
            }
        }
    };
    tokio::select! {
        _ = all_in => {}
        _ = stdin_closed() => {}
    }
    let last_ms = devices.last_delivery_unix_ms();
    println!(
        "{}",
        serde_json::json!({
            "deliveries": devices.delivered(),
            "unknown": 0,
            "first_us": if devices.delivered() > 0 { first_us.min(last_ms * 1000) } else { u64::MAX },
            "last_us": last_ms * 1000,
            "expected": expected,
            "lost": tally.json()["lost"],
        })
    );
    // The devices acknowledge within `ACK_DELAY_MS` of a Deliver: they stay connected until
    // the harness has read the server's CPU time, so that time includes the acknowledgements.
    stdin_closed().await;
    Ok(())
}

type Ended = Result<(), (bool, String)>;

async fn app_terminal(
    addr: SocketAddr,
    id: u32,
    secret: Option<String>,
    timeout: Duration,
    tally: &Tally,
    recorder: &Recorder,
) -> Ended {
    let secret = secret.unwrap_or_default();
    let token = ours::app_token(&secret, id).map_err(|e| (false, e))?;
    let url = format!("ws://{addr}/");
    let (mut ws, _) = tokio::time::timeout(timeout, ours::app_login(&url, token))
        .await
        .map_err(|_| (false, "app login timed out".to_string()))?
        .map_err(|e| (false, e))?;
    tally.up();
    loop {
        let m = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err((true, e.to_string())),
            None => return Err((true, "closed".into())),
        };
        if let Ok(ServerMessage::Deliver(d)) = ServerMessage::decode(m.as_bytes()) {
            recorder.record(&d.payload);
            let ack = ClientMessage::Ack(AckMsg { msg_id: d.msg_id });
            ours::send(&mut ws, &ack).await.map_err(|e| (true, e))?;
        }
    }
}

async fn mqtt_terminal(
    addr: SocketAddr,
    id: u32,
    qos: u8,
    timeout: Duration,
    tally: &Tally,
    recorder: &Recorder,
) -> Ended {
    let qos = if qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let subscribed = async {
        let mut conn = Conn::connect(false, addr, &format!("bench-{id}")).await?;
        let mut sub = Subscribe::new(TOPIC, qos);
        sub.pkid = 1;
        conn.send(&Packet::Subscribe(sub)).await?;
        match conn.recv().await? {
            Packet::SubAck(_) => Ok(conn),
            other => Err(format!("expected suback, got {other:?}")),
        }
    };
    let mut conn = tokio::time::timeout(timeout, subscribed)
        .await
        .map_err(|_| (false, "mqtt subscribe timed out".to_string()))?
        .map_err(|e| (false, e))?;
    tally.up();
    loop {
        match conn.recv().await.map_err(|e| (true, e))? {
            Packet::Publish(p) => {
                recorder.record(&p.payload);
                if p.qos == QoS::AtLeastOnce {
                    conn.send(&Packet::PubAck(PubAck::new(p.pkid)))
                        .await
                        .map_err(|e| (true, e))?;
                }
            }
            _ => continue,
        }
    }
}

/// Runs `bench-load publish`: sends the broadcast and prints `{"start_us":..,"end_us":..}`
/// (the first send, the last one answered).
pub async fn publish(args: PublishArgs) -> Result<(), String> {
    let start_us = now_us();
    match args.to {
        Sender::Ours => {
            let token = args.api_token.ok_or("--to ours needs --api-token")?;
            let client = reqwest::Client::new();
            let url = format!("http://{}/v1/push", args.addr);
            let pushes = (0..args.messages).map(|i| {
                let body = serde_json::json!({
                    "target": args.target,
                    "payload": base64::engine::general_purpose::STANDARD.encode(payload(i, start_us)),
                });
                let request = client.post(&url).bearer_auth(&token).json(&body).send();
                async move {
                    let r = request.await.map_err(|e| format!("push {i}: {e}"))?;
                    if !r.status().is_success() {
                        return Err(format!("push {i}: {}", r.status()));
                    }
                    Ok(())
                }
            });
            futures_util::future::try_join_all(pushes).await?;
        }
        Sender::Mqtt => {
            let mut conn = Conn::connect(false, args.addr, "bench-publisher").await?;
            let qos = if args.qos == 1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            for i in 0..args.messages {
                let mut p = Publish::new(TOPIC, qos, payload(i, start_us));
                if qos == QoS::AtLeastOnce {
                    p.pkid = u16::try_from(i + 1).map_err(|_| "at most 65535 QoS 1 messages")?;
                }
                conn.send(&Packet::Publish(p)).await?;
            }
            let mut acked = 0;
            while qos == QoS::AtLeastOnce && acked < args.messages {
                if let Packet::PubAck(_) = conn.recv().await? {
                    acked += 1;
                }
            }
            conn.send(&Packet::Disconnect).await?;
        }
    }
    println!(
        "{}",
        serde_json::json!({ "start_us": start_us, "end_us": now_us() })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_payloads_are_recorded_and_others_counted_apart() {
        let r = Recorder::new(2);
        r.record(&payload(0, 5));
        r.record(&payload(1, 5));
        r.record(&payload(2, 5));
        r.record(b"short");
        let j = r.json();
        assert_eq!(j["deliveries"], 2);
        assert_eq!(j["unknown"], 2);
        assert!(j["first_us"].as_u64().unwrap() <= j["last_us"].as_u64().unwrap());
    }
}
