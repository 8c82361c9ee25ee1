//! `bench-load idle`: opens `--count` idle connections of one kind at `--rate` per second,
//! prints one JSON status line on stdout when every attempt has finished (or the wait ran out),
//! and holds what is up until standard input closes; the process then exits, dropping them all.
//! Ours log in and then answer heartbeats (and commands); MQTT clients connect with keep-alive
//! off, and responders answer requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use rumqttc::mqttbytes::QoS;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::tally::Tally;
use crate::{mqtt, ours};

/// One kind of idle connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Our device protocol over the device WebSocket, logged in.
    DeviceWs,
    /// Our device protocol over UDP, logged in.
    DeviceUdp,
    /// Our app JSON protocol over the app WebSocket, authenticated.
    AppWs,
    /// MQTT 3.1.1 over TCP, connected (CONNACK received).
    MqttTcp,
    /// MQTT 3.1.1 over WebSocket (subprotocol `mqtt`), connected.
    MqttWs,
    /// MQTT 3.1.1 over TCP, subscribed to its request topic and answering each request on its
    /// reply topic (the MQTT side of the command round trip, see `bench-load request`), QoS 0.
    MqttResponder,
    /// The same at QoS 1: requests and replies each acknowledged (PUBACK).
    MqttResponderQos1,
}

/// Arguments of `bench-load idle`.
#[derive(Args, Debug)]
pub struct IdleArgs {
    /// What to open.
    #[arg(long, value_enum)]
    kind: Kind,
    /// How many connections.
    #[arg(long, value_name = "N")]
    count: u32,
    /// Id of the first device, app or MQTT client; the others follow.
    #[arg(long, default_value_t = 1, value_name = "ID")]
    first_id: u32,
    /// The server's address for this kind.
    #[arg(long, value_name = "ADDR")]
    addr: SocketAddr,
    /// Connections started per second.
    #[arg(long, default_value_t = 2000, value_name = "PER_SEC")]
    rate: u32,
    /// Fleet master key (64 hex digits) for device kinds.
    #[arg(long, value_name = "HEX")]
    master_key: Option<String>,
    /// App token secret (64 hex digits) for `app-ws`.
    #[arg(long, value_name = "HEX")]
    token_secret: Option<String>,
    /// Give up one connection attempt after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
}

/// Runs `bench-load idle`; an error only for bad arguments.
pub async fn run(args: IdleArgs) -> Result<(), String> {
    if args.count == 0 || args.rate == 0 {
        return Err("--count and --rate must be at least 1".into());
    }
    args.first_id
        .checked_add(args.count - 1)
        .filter(|&last| last <= i32::MAX as u32)
        .ok_or("--first-id + --count goes past the largest id (2147483647)")?;
    let tally = Arc::new(Tally::default());
    let timeout = Duration::from_secs(args.timeout);
    let start = Instant::now();
    let ramp = Duration::from_secs_f64(f64::from(args.count) / f64::from(args.rate));
    let ids = args.first_id..args.first_id + args.count;
    let at = move |i: u32| start + ramp.mul_f64(f64::from(i) / f64::from(args.count));
    // Devices count themselves up in `broker load`'s live counters.
    let devices = match args.kind {
        Kind::DeviceWs | Kind::DeviceUdp => Some(ours::spawn_devices(
            args.kind == Kind::DeviceWs,
            args.addr,
            args.master_key.as_deref(),
            ids,
            timeout,
            at,
            &tally,
        )?),
        Kind::AppWs => {
            ours::spawn_apps(
                args.addr,
                args.token_secret.as_deref(),
                ids,
                timeout,
                at,
                &tally,
            )?;
            None
        }
        Kind::MqttTcp | Kind::MqttWs => {
            mqtt::spawn_idle(
                args.kind == Kind::MqttWs,
                args.addr,
                ids,
                timeout,
                at,
                &tally,
            );
            None
        }
        Kind::MqttResponder | Kind::MqttResponderQos1 => {
            let qos = if args.kind == Kind::MqttResponderQos1 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            mqtt::spawn_responders(args.addr, qos, ids, timeout, at, &tally);
            None
        }
    };
    let deadline = start + ramp + timeout + Duration::from_secs(5);
    let count = u64::from(args.count);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let up_elsewhere = devices.as_ref().map_or(0, |d| d.logged_in());
        if tally.finished() + up_elsewhere >= count || Instant::now() >= deadline {
            tally.add_up(up_elsewhere);
            break;
        }
    }
    println!("{}", tally.json());
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    Ok(())
}
