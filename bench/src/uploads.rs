//! `bench-load uploads`: durable uploads per second. `--publishers` clients log in (or
//! connect), then each sends back to back with at most `--in-flight` unacknowledged for
//! `--seconds`; the result line counts what was acknowledged in that window:
//! `{"up":..,"failed":..,"reasons":{..},"acked":..,"seconds":..,"per_sec":..,"received":..,
//! "refused":..}` (`refused`: our uploads the broker refused with an `Error`, none for MQTT).
//!
//! * Ours: `broker load`'s simulated devices on the device WebSocket or UDP sending Upload
//!   frames; an UploadAck says the upload is durable (stored, synced) on the broker.
//! * MQTT: QoS 1 PUBLISHes to `bench/up/<id>`, counted when their PUBACK arrives, with one
//!   subscriber holding a persistent session (clean session off, QoS 1 subscription to
//!   `bench/up/+`, every delivery PUBACKed); `received` is what it got in the window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Args, ValueEnum};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe};
use tokio::time::Instant;

use crate::mqtt::Conn;
use crate::ours::{self, Uploading};
use crate::tally::Tally;

/// Who uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Uploader {
    /// Our devices over the device WebSocket.
    DeviceWs,
    /// Our devices over UDP.
    DeviceUdp,
    /// MQTT/TCP clients publishing at QoS 1.
    MqttTcp,
}

/// Arguments of `bench-load uploads`.
#[derive(Args, Debug)]
pub struct UploadsArgs {
    /// Who uploads.
    #[arg(long, value_enum)]
    kind: Uploader,
    /// The server's address for this kind.
    #[arg(long, value_name = "ADDR")]
    addr: SocketAddr,
    /// Fleet master key (64 hex digits) for device kinds.
    #[arg(long, value_name = "HEX")]
    master_key: Option<String>,
    /// Clients uploading at once.
    #[arg(long, default_value_t = 100, value_name = "N")]
    publishers: u32,
    /// Unacknowledged uploads per client.
    #[arg(long, default_value_t = 4, value_name = "N")]
    in_flight: u16,
    /// Payload bytes of each upload.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    payload: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    seconds: u64,
    /// Give up one login or connection after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
}

/// Runs `bench-load uploads`.
pub async fn run(args: UploadsArgs) -> Result<(), String> {
    if args.publishers == 0 || args.in_flight == 0 || args.seconds == 0 {
        return Err("--publishers, --in-flight and --seconds must be at least 1".into());
    }
    let tally = Arc::new(Tally::default());
    let timeout = Duration::from_secs(args.timeout);
    let window = Duration::from_secs(args.seconds);
    let (acked, received, refused) = match args.kind {
        Uploader::DeviceWs | Uploader::DeviceUdp => {
            let (a, refused) = ours_uploads(&args, &tally, timeout, window).await?;
            (a, None, Some(refused))
        }
        Uploader::MqttTcp => {
            let (a, r) = mqtt_uploads(&args, &tally, timeout, window).await?;
            (a, Some(r), None)
        }
    };
    let status = tally.json();
    println!(
        "{}",
        serde_json::json!({
            "up": status["up"],
            "failed": status["failed"],
            "reasons": status["reasons"],
            "acked": acked,
            "seconds": args.seconds,
            "per_sec": (acked as f64 / window.as_secs_f64()).round(),
            "received": received,
            "refused": refused,
        })
    );
    Ok(())
}

/// Our devices: log in (at most `timeout`), upload until the window ends; the acknowledgements
/// and the refusals (an `Error` about an upload) counted from the window's start to its end.
async fn ours_uploads(
    args: &UploadsArgs,
    tally: &Arc<Tally>,
    timeout: Duration,
    window: Duration,
) -> Result<(u64, u64), String> {
    let start = Instant::now();
    // Logins spread over 100 ms; the window opens once every login finished.
    let login_phase = timeout + Duration::from_secs(1);
    let uploading = Uploading {
        payload_len: args.payload,
        in_flight: usize::from(args.in_flight),
        // Far enough that uploads go on through the whole window; the process exits after it.
        stop_at: start + login_phase + window + Duration::from_secs(60),
    };
    let n = args.publishers;
    let devices = ours::spawn_uploading_devices(
        args.kind == Uploader::DeviceWs,
        args.addr,
        args.master_key.as_deref(),
        1..n + 1,
        timeout,
        move |i| start + Duration::from_millis(100).mul_f64(f64::from(i) / f64::from(n)),
        tally,
        Some(uploading),
    )?;
    while tally.finished() + devices.logged_in() < u64::from(n) && start.elapsed() < login_phase {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally.add_up(devices.logged_in());
    let (acked, refused) = (devices.acked(), devices.refused());
    tokio::time::sleep(window).await;
    Ok((devices.acked() - acked, devices.refused() - refused))
}

/// MQTT: the persistent subscriber first, then the publishers; PUBACKs and the subscriber's
/// deliveries counted from the window's start to its end.
async fn mqtt_uploads(
    args: &UploadsArgs,
    tally: &Arc<Tally>,
    timeout: Duration,
    window: Duration,
) -> Result<(u64, u64), String> {
    let received = Arc::new(AtomicU64::new(0));
    let mut sub = Conn::connect_session(false, args.addr, "bench-archive", false, 0).await?;
    let mut subscribe = Subscribe::new("bench/up/+", QoS::AtLeastOnce);
    subscribe.pkid = 1;
    sub.send(&Packet::Subscribe(subscribe)).await?;
    match sub.recv().await? {
        Packet::SubAck(_) => {}
        other => return Err(format!("expected suback, got {other:?}")),
    }
    let got = received.clone();
    tokio::spawn(async move {
        while let Ok(p) = sub.recv().await {
            if let Packet::Publish(p) = p {
                got.fetch_add(1, Ordering::Relaxed);
                if sub
                    .send(&Packet::PubAck(PubAck::new(p.pkid)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let acked = Arc::new(AtomicU64::new(0));
    let mut connected = Vec::new();
    for id in 1..=args.publishers {
        match tokio::time::timeout(
            timeout,
            Conn::connect(false, args.addr, &format!("bench-{id}")),
        )
        .await
        {
            Ok(Ok(conn)) => {
                tally.up();
                connected.push((id, conn));
            }
            Ok(Err(reason)) => tally.failed(&reason),
            Err(_) => tally.failed("mqtt connect timed out"),
        }
    }
    // Every publisher starts at the same moment, once all are connected.
    let go = Instant::now() + Duration::from_millis(200);
    for (id, mut conn) in connected {
        let (acked, tally) = (acked.clone(), tally.clone());
        let (in_flight, payload) = (args.in_flight, vec![b'x'; args.payload]);
        tokio::spawn(async move {
            tokio::time::sleep_until(go).await;
            if let Err(e) = publish_back_to_back(&mut conn, id, in_flight, &payload, &acked).await {
                tally.lost(&e);
            }
        });
    }
    tokio::time::sleep_until(go).await;
    let (acked_before, received_before) = (
        acked.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    tokio::time::sleep(window).await;
    Ok((
        acked.load(Ordering::Relaxed) - acked_before,
        received.load(Ordering::Relaxed) - received_before,
    ))
}

/// QoS 1 PUBLISHes to `bench/up/<id>` with at most `in_flight` unacknowledged, until the
/// connection fails (the process exits after the window).
async fn publish_back_to_back(
    conn: &mut Conn,
    id: u32,
    in_flight: u16,
    payload: &[u8],
    acked: &AtomicU64,
) -> Result<(), String> {
    let topic = format!("bench/up/{id}");
    let mut pkid = 0u16;
    for _ in 0..in_flight {
        conn.send(&next_publish(&topic, &mut pkid, payload)).await?;
    }
    loop {
        if let Packet::PubAck(_) = conn.recv().await? {
            acked.fetch_add(1, Ordering::Relaxed);
            conn.send(&next_publish(&topic, &mut pkid, payload)).await?;
        }
    }
}

/// The next QoS 1 PUBLISH of a publisher, its packet id the one after `pkid` (never 0).
fn next_publish(topic: &str, pkid: &mut u16, payload: &[u8]) -> Packet {
    *pkid = pkid.checked_add(1).unwrap_or(1);
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
    p.pkid = *pkid;
    Packet::Publish(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_zero_when_they_wrap() {
        let mut pkid = u16::MAX - 1;
        let ids: Vec<u16> = (0..3)
            .map(|_| match next_publish("t", &mut pkid, b"x") {
                Packet::Publish(p) => p.pkid,
                _ => unreachable!("next_publish makes a PUBLISH"),
            })
            .collect();
        assert_eq!(ids, [u16::MAX, 1, 2]);
    }
}
