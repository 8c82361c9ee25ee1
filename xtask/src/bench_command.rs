//! Scenario `command`: the round trip of one command to one device among N idle terminals.
//! For each terminal count and each variant (ours: devices logged in over the device WebSocket
//! or UDP, commanded through `POST /v1/devices/{id}/commands`; Mosquitto: MQTT/TCP responders,
//! request/reply at QoS 0), a fresh server in its own namespace, `bench-load idle` processes
//! holding the terminals (ours answer commands; MQTT responders answer requests), then one
//! `bench-load request` sending the requests one at a time. Figures: p50, p99 and p99.9 of the
//! round trip as the requester sees it, and the server's CPU time per request.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench_idle::{spawn_clients, wait_up};
use crate::bench_ns::{self, Pipes, Spawned};
use crate::bench_servers::{self, MosquittoTuning, Product, Server, port};

/// Terminals connected per second.
const RATE: u32 = 1000;

/// One way of commanding a terminal.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    /// Its name in results.
    pub name: &'static str,
    /// `bench-load idle --kind` of the terminals.
    kind: &'static str,
    product: Product,
    port: u16,
}

/// Every variant, ours first.
pub const VARIANTS: [Variant; 3] = [
    Variant {
        name: "plugcloud device-ws command",
        kind: "device-ws",
        product: Product::Ours,
        port: port::DEVICE_WS,
    },
    Variant {
        name: "plugcloud device-udp command",
        kind: "device-udp",
        product: Product::Ours,
        port: port::UDP,
    },
    Variant {
        name: "mosquitto request/reply qos0",
        kind: "mqtt-responder",
        product: Product::Mosquitto,
        port: port::MQTT,
    },
];

/// Runs every variant at every count with `samples` timed requests each; one JSON row each.
pub fn run(broker: &Path, load: &Path, counts: &[u32], samples: u32) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    for &count in counts {
        for v in VARIANTS {
            eprintln!("bench command: {} among {count}", v.name);
            let row = measure(broker, load, v, count, samples)?;
            eprintln!("  {row}");
            rows.push(row);
        }
    }
    Ok(rows)
}

fn measure(
    broker: &Path,
    load: &Path,
    v: Variant,
    count: u32,
    samples: u32,
) -> Result<Value, String> {
    let server = Server::start(v.product, broker, MosquittoTuning::default())?;
    let pid = server.pid();
    let mut terminals = spawn_clients(count, RATE, |first_id, n, rate| {
        terminal(&server, load, v, first_id, n, rate)
    })?;
    let wait = Duration::from_secs(u64::from(count / RATE) + 60);
    let (up, failed) = wait_up(&mut terminals, wait)?;
    if up == 0 {
        return Err(format!("{} among {count}: no terminal came up", v.name));
    }
    std::thread::sleep(Duration::from_secs(1));
    let cpu_before = bench_ns::cpu_ticks(pid)?;
    let mut requester = requester(&server, load, v, count, samples)?;
    // Generous: a busy machine, and every request may wait up to its own timeout.
    let result = bench_ns::load_status(
        &requester.read_line(Duration::from_secs(u64::from(samples) / 10 + 120))?,
    )?;
    let cpu_after = bench_ns::cpu_ticks(pid)?;
    requester.wait_or_stop(Duration::from_secs(5));
    for t in &mut terminals {
        t.wait_or_stop(Duration::from_secs(10));
    }
    drop(server);
    let ok = result["ok"].as_u64().unwrap_or(0);
    if ok == 0 {
        return Err(format!(
            "{} among {count}: no request answered: {result}",
            v.name
        ));
    }
    let cpu_us = (cpu_after - cpu_before) as f64 * 1e6 / bench_ns::ticks_per_sec() as f64;
    Ok(json!({
        "server": v.product.name(),
        "variant": v.name,
        "transport": v.kind,
        "terminals": count,
        "up": up,
        "terminals_failed": failed,
        "samples": samples,
        "ok": ok,
        "failed": result["failed"],
        "reasons": result["reasons"],
        "p50_us": result["p50_us"],
        "p99_us": result["p99_us"],
        "p999_us": result["p999_us"],
        "max_us": result["max_us"],
        "server_cpu_us_per_request": (cpu_us / ok as f64 * 10.0).round() / 10.0,
    }))
}

fn terminal(
    server: &Server,
    load: &Path,
    v: Variant,
    first_id: u32,
    n: u32,
    rate: u32,
) -> Result<Spawned, String> {
    let args = [
        "idle".to_string(),
        format!("--kind={}", v.kind),
        format!("--count={n}"),
        format!("--first-id={first_id}"),
        format!("--addr=127.0.0.1:{}", v.port),
        format!("--rate={rate}"),
        format!("--master-key={}", bench_servers::MASTER_KEY),
    ];
    server.namespace().spawn(load, &args, Pipes::Client)
}

fn requester(
    server: &Server,
    load: &Path,
    v: Variant,
    terminals: u32,
    samples: u32,
) -> Result<Spawned, String> {
    let (to, port) = match v.product {
        Product::Ours => ("ours", port::HTTP),
        Product::Mosquitto => ("mqtt", port::MQTT),
        Product::UdpEcho => return Err("the UDP echo server takes no requests".into()),
    };
    let args = [
        "request".to_string(),
        format!("--to={to}"),
        format!("--addr=127.0.0.1:{port}"),
        format!("--api-token={}", bench_servers::API_TOKEN),
        format!("--terminals={terminals}"),
        format!("--samples={samples}"),
    ];
    server.namespace().spawn(load, &args, Pipes::Client)
}
