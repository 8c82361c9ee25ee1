//! Scenario `fanout`: one broadcast of ten 64-byte messages to every terminal. For each
//! terminal count and each variant (ours: apps on the app WebSocket, `POST /v1/push` to
//! `all_phones`, and devices on the device WebSocket, `POST /v1/push` to `all_devices`; Mosquitto: MQTT/TCP subscribers to one topic at QoS 0 and QoS 1, with the
//! default config and with `allow_duplicate_messages true`), a fresh server in its own
//! namespace, `bench-load fanout` processes holding the terminals, and one `bench-load
//! publish`. Figures: deliveries per second (from the first send to the last delivery), the
//! time to the first and to the last delivery, the time until the sender had every message
//! accepted, and the server's CPU time per delivery.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench_idle::{spawn_clients, wait_up};
use crate::bench_ns::{self, Pipes, Spawned};
use crate::bench_servers::{self, MosquittoTuning, Product, Server, port};

/// Messages in the broadcast.
const MESSAGES: u32 = 10;
/// Terminals connected per second.
const RATE: u32 = 1000;

/// One way of broadcasting.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Its name in results.
    pub name: &'static str,
    product: Product,
    /// `bench-load fanout --kind` of the terminals, and the port they connect to.
    kind: &'static str,
    port: u16,
    qos: u8,
    tuning: MosquittoTuning,
}

/// Every variant, ours first.
pub const VARIANTS: [Variant; 6] = [
    Variant {
        name: "plugcloud app-ws push",
        product: Product::Ours,
        kind: "app-ws",
        port: port::APP_WS,
        qos: 0,
        tuning: MosquittoTuning {
            allow_duplicate_messages: false,
        },
    },
    Variant {
        name: "plugcloud device-ws push",
        product: Product::Ours,
        kind: "device-ws",
        port: port::DEVICE_WS,
        qos: 0,
        tuning: MosquittoTuning {
            allow_duplicate_messages: false,
        },
    },
    Variant {
        name: "mosquitto qos0",
        product: Product::Mosquitto,
        kind: "mqtt-tcp",
        port: port::MQTT,
        qos: 0,
        tuning: MosquittoTuning {
            allow_duplicate_messages: false,
        },
    },
    Variant {
        name: "mosquitto qos0 allow_duplicate_messages",
        product: Product::Mosquitto,
        kind: "mqtt-tcp",
        port: port::MQTT,
        qos: 0,
        tuning: MosquittoTuning {
            allow_duplicate_messages: true,
        },
    },
    Variant {
        name: "mosquitto qos1",
        product: Product::Mosquitto,
        kind: "mqtt-tcp",
        port: port::MQTT,
        qos: 1,
        tuning: MosquittoTuning {
            allow_duplicate_messages: false,
        },
    },
    Variant {
        name: "mosquitto qos1 allow_duplicate_messages",
        product: Product::Mosquitto,
        kind: "mqtt-tcp",
        port: port::MQTT,
        qos: 1,
        tuning: MosquittoTuning {
            allow_duplicate_messages: true,
        },
    },
];

/// Runs every variant (or only those whose name contains one of `only`) at every count; one
/// JSON row each.
pub fn run(
    broker: &Path,
    load: &Path,
    counts: &[u32],
    only: &[String],
) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    for &count in counts {
        let picked = VARIANTS
            .into_iter()
            .filter(|v| only.is_empty() || only.iter().any(|o| v.name.contains(o.as_str())));
        for v in picked {
            eprintln!("bench fanout: {} to {count}", v.name);
            let row = measure(broker, load, v, count)?;
            eprintln!("  {row}");
            rows.push(row);
        }
    }
    Ok(rows)
}

/// How long the receivers stay connected after the last delivery before the server's CPU time
/// is read: ten times the device link's acknowledgement delay.
const ACK_SETTLE: Duration = Duration::from_millis(500);

fn measure(broker: &Path, load: &Path, v: Variant, count: u32) -> Result<Value, String> {
    let server = Server::start(v.product, broker, v.tuning)?;
    let pid = server.pid();
    let mut receivers = spawn_clients(count, RATE, |first_id, n, rate| {
        receiver(&server, load, v, first_id, n, rate)
    })?;
    let wait = Duration::from_secs(u64::from(count / RATE) + 60);
    let (up, failed) = wait_up(&mut receivers, wait)?;
    std::thread::sleep(Duration::from_secs(1));
    let cpu_before = bench_ns::cpu_ticks(pid)?;
    let mut publisher = publisher(&server, load, v)?;
    let sent = bench_ns::load_status(&publisher.read_line(Duration::from_secs(120))?)?;
    publisher.wait_or_stop(Duration::from_secs(5));
    let (mut deliveries, mut expected) = (0, 0);
    let (mut first_us, mut last_us) = (u64::MAX, 0);
    for r in &mut receivers {
        let line = match r.read_line(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                // Not everything arrived: the receiver reports what did.
                r.close_stdin();
                r.read_line(Duration::from_secs(10))?
            }
        };
        let got = bench_ns::load_status(&line)?;
        deliveries += got["deliveries"].as_u64().unwrap_or(0);
        expected += got["expected"].as_u64().unwrap_or(0);
        first_us = first_us.min(got["first_us"].as_u64().unwrap_or(u64::MAX));
        last_us = last_us.max(got["last_us"].as_u64().unwrap_or(0));
    }
    // Every receiver keeps its connections until its stdin closes: the last acknowledgements
    // (a device's within 50 ms of its last Deliver) reach the server in this pause, so the CPU
    // time per delivery includes them, for every server alike.
    std::thread::sleep(ACK_SETTLE);
    let cpu_after = bench_ns::cpu_ticks(pid)?;
    for r in &mut receivers {
        r.wait_or_stop(Duration::from_secs(10));
    }
    drop(server);
    let start_us = sent["start_us"].as_u64().unwrap_or(0);
    if deliveries == 0 || last_us <= start_us {
        return Err(format!("{} to {count}: nothing delivered", v.name));
    }
    let span_s = (last_us - start_us) as f64 / 1e6;
    let cpu_us = (cpu_after - cpu_before) as f64 * 1e6 / bench_ns::ticks_per_sec() as f64;
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    Ok(json!({
        "server": v.product.name(),
        "variant": v.name,
        "transport": v.kind,
        "terminals": count,
        "up": up,
        "failed": failed,
        "messages": MESSAGES,
        "deliveries": deliveries,
        "expected": expected,
        "deliveries_per_sec": (deliveries as f64 / span_s).round(),
        "first_ms": round1(first_us.saturating_sub(start_us) as f64 / 1e3),
        "last_ms": round1(span_s * 1e3),
        // When the sender had every message accepted (every `POST /v1/push` answered, or
        // every PUBLISH written / PUBACKed): what of `last_ms` the intake took.
        "published_ms": round1(sent["end_us"].as_u64().unwrap_or(start_us).saturating_sub(start_us) as f64 / 1e3),
        "server_cpu_us_per_delivery": (cpu_us / deliveries as f64 * 100.0).round() / 100.0,
    }))
}

fn receiver(
    server: &Server,
    load: &Path,
    v: Variant,
    first_id: u32,
    n: u32,
    rate: u32,
) -> Result<Spawned, String> {
    let args = [
        "fanout".to_string(),
        format!("--kind={}", v.kind),
        format!("--count={n}"),
        format!("--first-id={first_id}"),
        format!("--addr=127.0.0.1:{}", v.port),
        format!("--rate={rate}"),
        format!("--token-secret={}", bench_servers::TOKEN_SECRET),
        format!("--master-key={}", bench_servers::MASTER_KEY),
        format!("--qos={}", v.qos),
        format!("--messages={MESSAGES}"),
    ];
    server.namespace().spawn(load, &args, Pipes::Client)
}

fn publisher(server: &Server, load: &Path, v: Variant) -> Result<Spawned, String> {
    let (to, port) = match v.product {
        Product::Ours => ("ours", port::HTTP),
        Product::Mosquitto => ("mqtt", port::MQTT),
        Product::UdpEcho => return Err("the UDP echo server takes no requests".into()),
    };
    let args = [
        "publish".to_string(),
        format!("--to={to}"),
        format!("--addr=127.0.0.1:{port}"),
        format!("--api-token={}", bench_servers::API_TOKEN),
        format!(
            "--target={}",
            if v.kind == "device-ws" {
                "all_devices"
            } else {
                "all_phones"
            }
        ),
        format!("--qos={}", v.qos),
        format!("--messages={MESSAGES}"),
    ];
    server.namespace().spawn(load, &args, Pipes::Client)
}
