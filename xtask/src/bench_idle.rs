//! Scenario `idle-memory`: resident memory per idle connection. For each transport and count,
//! a fresh server in its own namespace; its RSS is read once it listens, `bench-load idle`
//! processes (at most [`PER_CLIENT_PROCESS`] connections each) open the connections at a fixed
//! rate, and when every one has reported, after a short settle, RSS is read again:
//! (after - before) / connections up. The server's CPU time over the same span, per connection,
//! is the cost of accepting and logging one in (our login; an MQTT CONNECT).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bench_ns::{self, Pipes, Spawned};
use crate::bench_servers::{self, MosquittoTuning, Product, Server, port};

/// Connections one load-client process opens (below the 20,000 files one process may hold).
pub const PER_CLIENT_PROCESS: u32 = 10_000;

/// Starts the load-client processes for terminals `1..=count`, at most [`PER_CLIENT_PROCESS`]
/// each, sharing `rate` logins per second: `spawn(first_id, n, per_process_rate)` starts one.
pub fn spawn_clients(
    count: u32,
    rate: u32,
    mut spawn: impl FnMut(u32, u32, u32) -> Result<bench_ns::Spawned, String>,
) -> Result<Vec<bench_ns::Spawned>, String> {
    let per_process_rate = (rate / count.div_ceil(PER_CLIENT_PROCESS)).max(1);
    let mut clients = Vec::new();
    let mut first_id = 1;
    while first_id <= count {
        let n = PER_CLIENT_PROCESS.min(count - first_id + 1);
        clients.push(spawn(first_id, n, per_process_rate)?);
        first_id += n;
    }
    Ok(clients)
}

/// Waits up to `wait` for each client's status line; the terminals up and failed, summed.
pub fn wait_up(clients: &mut [bench_ns::Spawned], wait: Duration) -> Result<(u64, u64), String> {
    let (mut up, mut failed) = (0, 0);
    for c in clients {
        let status = bench_ns::load_status(&c.read_line(wait)?)?;
        up += status["up"].as_u64().unwrap_or(0);
        failed += status["failed"].as_u64().unwrap_or(0);
    }
    Ok((up, failed))
}
/// Connections started per second (below the rate where logins queue behind each other here).
const RATE: u32 = 1000;
/// Pause between the last connection reported up and the second RSS reading.
const SETTLE: Duration = Duration::from_secs(2);

/// One kind of connection, as `bench-load idle --kind` names it.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    /// `bench-load`'s name for it, also its name in results.
    pub kind: &'static str,
    /// The server that speaks it.
    pub product: Product,
    /// Its port in the namespace.
    pub port: u16,
}

/// Every transport measured, ours first.
pub const TRANSPORTS: [Transport; 5] = [
    Transport {
        kind: "device-ws",
        product: Product::Ours,
        port: port::DEVICE_WS,
    },
    Transport {
        kind: "app-ws",
        product: Product::Ours,
        port: port::APP_WS,
    },
    Transport {
        kind: "device-udp",
        product: Product::Ours,
        port: port::UDP,
    },
    Transport {
        kind: "mqtt-tcp",
        product: Product::Mosquitto,
        port: port::MQTT,
    },
    Transport {
        kind: "mqtt-ws",
        product: Product::Mosquitto,
        port: port::MQTT_WS,
    },
];

/// Measures every transport at every count; one JSON row per (transport, count).
pub fn run(broker: &Path, load: &Path, counts: &[u32]) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    for &count in counts {
        for t in TRANSPORTS {
            eprintln!("bench idle-memory: {} x {count}", t.kind);
            let row = measure(broker, load, t, count)?;
            eprintln!("  {row}");
            rows.push(row);
        }
    }
    Ok(rows)
}

fn measure(broker: &Path, load: &Path, t: Transport, count: u32) -> Result<Value, String> {
    measure_at(broker, load, t, count, RATE)
}

/// One measurement: `count` connections of `t` opened at `rate` per second on a fresh server
/// (also the login storm's, at higher rates). The row's `connect_secs` runs from the first
/// client process started to the last one reporting every attempt finished.
pub fn measure_at(
    broker: &Path,
    load: &Path,
    t: Transport,
    count: u32,
    rate: u32,
) -> Result<Value, String> {
    let server = Server::start(t.product, broker, MosquittoTuning::default())?;
    let pid = server.pid();
    std::thread::sleep(Duration::from_secs(1));
    let before = bench_ns::resident(pid)?;
    let cpu_before = bench_ns::cpu_ticks(pid)?;
    let started = Instant::now();
    let mut clients = spawn_clients(count, rate, |first_id, n, per_process_rate| {
        start_client(&server, load, t, first_id, n, per_process_rate)
    })?;
    // Each process reports once all of its attempts finished.
    let wait = Duration::from_secs(u64::from(count / rate) + 60);
    let mut up = 0;
    let mut failed = 0;
    let mut reasons = serde_json::Map::new();
    for c in &mut clients {
        let line = c.read_line(wait)?;
        let status = bench_ns::load_status(&line)?;
        up += status["up"].as_u64().unwrap_or(0);
        failed += status["failed"].as_u64().unwrap_or(0);
        if let Some(r) = status["reasons"].as_object() {
            for (k, v) in r {
                let sum =
                    reasons.get(k).and_then(Value::as_u64).unwrap_or(0) + v.as_u64().unwrap_or(0);
                reasons.insert(k.clone(), json!(sum));
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let cpu_after = bench_ns::cpu_ticks(pid)?;
    std::thread::sleep(SETTLE);
    let after = bench_ns::resident(pid)?;
    for c in &mut clients {
        c.wait_or_stop(Duration::from_secs(10));
    }
    drop(server);
    if up == 0 {
        return Err(format!("{}: no connection came up ({reasons:?})", t.kind));
    }
    // The anonymous part is the connections' cost; all of it also counts the server's program
    // pages that the logins ran for the first time (about 1 MB for the broker's binary).
    let per_conn =
        |before: u64, after: u64| (after.saturating_sub(before) * 1024) as f64 / up as f64;
    let bytes_per_conn = per_conn(before.anon_kib, after.anon_kib);
    let resident_per_conn = per_conn(before.total_kib, after.total_kib);
    let cpu_us_per_conn =
        (cpu_after - cpu_before) as f64 * 1e6 / bench_ns::ticks_per_sec() as f64 / up as f64;
    Ok(json!({
        "server": t.product.name(),
        "transport": t.kind,
        "connections": count,
        "client_processes": clients.len(),
        "up": up,
        "failed": failed,
        "reasons": reasons,
        "rss_before_kib": before.total_kib,
        "rss_after_kib": after.total_kib,
        "rss_anon_before_kib": before.anon_kib,
        "rss_anon_after_kib": after.anon_kib,
        "bytes_per_connection": bytes_per_conn.round(),
        "resident_bytes_per_connection": resident_per_conn.round(),
        "server_cpu_us_per_connection": (cpu_us_per_conn * 10.0).round() / 10.0,
        "connect_secs": (connect_secs * 1000.0).round() / 1000.0,
    }))
}

fn start_client(
    server: &Server,
    load: &Path,
    t: Transport,
    first_id: u32,
    n: u32,
    rate: u32,
) -> Result<Spawned, String> {
    let args: Vec<String> = [
        "idle",
        "--kind",
        t.kind,
        "--count",
        &n.to_string(),
        "--first-id",
        &first_id.to_string(),
        "--addr",
        &format!("127.0.0.1:{}", t.port),
        "--rate",
        &rate.to_string(),
        "--master-key",
        bench_servers::MASTER_KEY,
        "--token-secret",
        bench_servers::TOKEN_SECRET,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    server.namespace().spawn(load, &args, Pipes::Client)
}
