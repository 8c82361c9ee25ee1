//! Scenario `uploads`: durable uploads per second. For each variant (ours: devices on the
//! device WebSocket and on UDP sending 64-byte Upload frames, each acknowledged only once
//! durable; Mosquitto: MQTT/TCP clients publishing 64-byte messages at QoS 1 to a subscriber
//! with a persistent session), a fresh server and one `bench-load uploads` process: the same
//! number of clients, each with the same window of unacknowledged uploads, for the same time.
//! Figures: acknowledged uploads per second, and the server's CPU time per upload (over the
//! whole client run, logins included).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench_ns;
use crate::bench_servers::{self, MosquittoTuning, Product, Server, port};

/// Clients uploading at once.
const PUBLISHERS: u32 = 100;
/// Unacknowledged uploads per client.
const IN_FLIGHT: u32 = 4;

/// One way of uploading.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Its name in results.
    pub name: &'static str,
    /// `bench-load uploads --kind`.
    kind: &'static str,
    product: Product,
    port: u16,
}

/// Every variant, ours first.
pub const VARIANTS: [Variant; 3] = [
    Variant {
        name: "plugcloud device-ws upload",
        kind: "device-ws",
        product: Product::Ours,
        port: port::DEVICE_WS,
    },
    Variant {
        name: "plugcloud device-udp upload",
        kind: "device-udp",
        product: Product::Ours,
        port: port::UDP,
    },
    Variant {
        name: "mosquitto qos1 publish, persistent subscriber",
        kind: "mqtt-tcp",
        product: Product::Mosquitto,
        port: port::MQTT,
    },
];

/// Runs every variant for `seconds` each; one JSON row each.
pub fn run(broker: &Path, load: &Path, seconds: u64) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    for v in VARIANTS {
        eprintln!("bench uploads: {} for {seconds} s", v.name);
        let row = measure(broker, load, v, seconds)?;
        eprintln!("  {row}");
        rows.push(row);
    }
    Ok(rows)
}

fn measure(broker: &Path, load: &Path, v: Variant, seconds: u64) -> Result<Value, String> {
    let server = Server::start(v.product, broker, MosquittoTuning::default())?;
    let pid = server.pid();
    let cpu_before = bench_ns::cpu_ticks(pid)?;
    let args = [
        "uploads".to_string(),
        format!("--kind={}", v.kind),
        format!("--addr=127.0.0.1:{}", v.port),
        format!("--master-key={}", bench_servers::MASTER_KEY),
        format!("--publishers={PUBLISHERS}"),
        format!("--in-flight={IN_FLIGHT}"),
        format!("--seconds={seconds}"),
    ];
    let mut client = server
        .namespace()
        .spawn(load, &args, bench_ns::Pipes::Client)?;
    let line = client.read_line(Duration::from_secs(seconds + 90))?;
    let cpu_after = bench_ns::cpu_ticks(pid)?;
    client.wait_or_stop(Duration::from_secs(5));
    drop(server);
    let result = bench_ns::load_status(&line)?;
    let acked = result["acked"].as_u64().unwrap_or(0);
    if acked == 0 {
        return Err(format!("{}: nothing acknowledged: {result}", v.name));
    }
    let cpu_us = (cpu_after - cpu_before) as f64 * 1e6 / bench_ns::ticks_per_sec() as f64;
    Ok(json!({
        "server": v.product.name(),
        "variant": v.name,
        "transport": v.kind,
        "publishers": PUBLISHERS,
        "in_flight": IN_FLIGHT,
        "up": result["up"],
        "failed": result["failed"],
        "reasons": result["reasons"],
        "seconds": seconds,
        "acked": acked,
        "per_sec": result["per_sec"],
        "received": result["received"],
        "refused": result["refused"],
        "server_cpu_us_per_upload": (cpu_us / acked as f64 * 10.0).round() / 10.0,
    }))
}
