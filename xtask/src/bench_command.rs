//! Scenario `command`: the round trip of one command to one device among N idle terminals.
//! For each terminal count and each variant (ours: devices logged in over the device WebSocket
//! or UDP, commanded through `POST /v1/devices/{id}/commands`; Mosquitto: MQTT/TCP responders,
//! request/reply at QoS 0 and at QoS 1), a fresh server in its own namespace, `bench-load idle`
//! processes holding the terminals (ours answer commands; MQTT responders answer requests),
//! then one `bench-load request` sending the requests one at a time. Figures: p50, p99 and
//! p99.9 of the round trip as the requester sees it, and the server's CPU time per request.
//!
//! The whole set runs in rounds, the variants taking turns, and each variant's percentiles are
//! taken over all its rounds' requests together: the tail of a one-at-a-time round trip on a
//! shared machine is set by short slow spells of the machine's other work, so one run per
//! variant compares whichever spells each happened to meet. Each round's own p99 is kept in
//! the row to show the spread.

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

/// Every variant, ours first. MQTT at QoS 0 is the cheapest request/reply; at QoS 1 each
/// request and reply is acknowledged, as our commands and their results are.
pub const VARIANTS: [Variant; 4] = [
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
    Variant {
        name: "mosquitto request/reply qos1",
        kind: "mqtt-responder-qos1",
        product: Product::Mosquitto,
        port: port::MQTT,
    },
];

/// Runs every variant at every count, `rounds` times over with `samples` timed requests each
/// time; one JSON row per variant and count, its percentiles taken over every round's requests
/// together. The variants take turns (each round starts one variant later), so a slow spell of
/// the machine lands on each of them rather than on whichever ran at that moment.
pub fn run(
    broker: &Path,
    load: &Path,
    counts: &[u32],
    samples: u32,
    rounds: u32,
) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    for &count in counts {
        let mut pools: Vec<Pool> = VARIANTS.iter().map(|_| Pool::default()).collect();
        for round in 0..rounds as usize {
            for turn in 0..VARIANTS.len() {
                let i = (round + turn) % VARIANTS.len();
                let v = VARIANTS[i];
                eprintln!(
                    "bench command: {} among {count}, round {} of {rounds}",
                    v.name,
                    round + 1
                );
                let r = measure(broker, load, v, count, samples)?;
                let mut sorted = r.latencies_us.clone();
                eprintln!(
                    "  p50 {} µs, p99 {} µs, {:.1} µs server CPU per request",
                    percentile(&mut sorted, 50.0).unwrap_or(0),
                    percentile(&mut sorted, 99.0).unwrap_or(0),
                    r.cpu_us / r.ok.max(1) as f64
                );
                pools[i].add(r);
            }
        }
        for (v, pool) in VARIANTS.iter().zip(pools) {
            rows.push(pool.row(v, count, samples));
        }
    }
    Ok(rows)
}

/// What one round of one variant measured.
struct Round {
    up: u64,
    terminals_failed: u64,
    ok: u64,
    failed: u64,
    reasons: Value,
    /// Every answered request's round trip, µs.
    latencies_us: Vec<u64>,
    /// The server's CPU time while the requests ran, µs.
    cpu_us: f64,
}

/// The rounds of one variant at one count, pooled.
#[derive(Default)]
struct Pool {
    rounds: Vec<Round>,
}

impl Pool {
    fn add(&mut self, r: Round) {
        self.rounds.push(r);
    }

    /// The variant's row: percentiles over every round's requests, CPU per answered request
    /// over all of them, and each round's own p99 so the spread between rounds shows.
    fn row(self, v: &Variant, count: u32, samples: u32) -> Value {
        let mut all: Vec<u64> = Vec::new();
        let mut round_p99 = Vec::new();
        let mut reasons = serde_json::Map::new();
        let (mut ok, mut failed, mut terminals_failed, mut cpu_us) = (0, 0, 0, 0.0);
        let mut up = u64::MAX;
        for r in &self.rounds {
            round_p99.push(percentile(&mut r.latencies_us.clone(), 99.0));
            all.extend_from_slice(&r.latencies_us);
            ok += r.ok;
            failed += r.failed;
            terminals_failed += r.terminals_failed;
            up = up.min(r.up);
            cpu_us += r.cpu_us;
            if let Some(m) = r.reasons.as_object() {
                for (reason, n) in m {
                    let sum = reasons.get(reason).and_then(Value::as_u64).unwrap_or(0)
                        + n.as_u64().unwrap_or(0);
                    reasons.insert(reason.clone(), json!(sum));
                }
            }
        }
        let rounds = self.rounds.len() as u64;
        json!({
            "server": v.product.name(),
            "variant": v.name,
            "transport": v.kind,
            "terminals": count,
            "up": up,
            "terminals_failed": terminals_failed,
            "rounds": rounds,
            "samples": u64::from(samples) * rounds,
            "ok": ok,
            "failed": failed,
            "reasons": reasons,
            "p50_us": percentile(&mut all, 50.0),
            "p99_us": percentile(&mut all, 99.0),
            "p999_us": percentile(&mut all, 99.9),
            "max_us": percentile(&mut all, 100.0),
            "round_p99_us": round_p99,
            "server_cpu_us_per_request": (cpu_us / ok.max(1) as f64 * 10.0).round() / 10.0,
        })
    }
}

/// The `p`-th percentile of `us` (nearest rank, as `bench-load request` reports it: the
/// smallest latency with at least `p` percent of requests at or below it); `None` if empty.
fn percentile(us: &mut [u64], p: f64) -> Option<u64> {
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    // Less a hair, so that a whole rank (99.9% of 1,000 = 999) is not pushed up by float error.
    let rank = (p / 100.0 * us.len() as f64 - 1e-9).ceil() as usize;
    Some(us[rank.clamp(1, us.len()) - 1])
}

fn measure(
    broker: &Path,
    load: &Path,
    v: Variant,
    count: u32,
    samples: u32,
) -> Result<Round, String> {
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
    let latencies_us: Vec<u64> = result["latencies_us"]
        .as_array()
        .ok_or_else(|| format!("{}: the requester gave no latencies", v.name))?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    Ok(Round {
        up,
        terminals_failed: failed,
        ok,
        failed: result["failed"].as_u64().unwrap_or(0),
        reasons: result["reasons"].clone(),
        latencies_us,
        cpu_us: (cpu_after - cpu_before) as f64 * 1e6 / bench_ns::ticks_per_sec() as f64,
    })
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
        format!("--qos={}", u8::from(v.kind == "mqtt-responder-qos1")),
        "--print-latencies".to_string(),
    ];
    server.namespace().spawn(load, &args, Pipes::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(latencies_us: Vec<u64>, cpu_us: f64, reasons: Value) -> Round {
        let ok = latencies_us.len() as u64;
        Round {
            up: 10,
            terminals_failed: 0,
            ok,
            failed: 1,
            reasons,
            latencies_us,
            cpu_us,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut us: Vec<u64> = (1..=1000).rev().collect();
        assert_eq!(percentile(&mut us, 50.0), Some(500));
        assert_eq!(percentile(&mut us, 99.0), Some(990));
        assert_eq!(percentile(&mut us, 99.9), Some(999));
        assert_eq!(percentile(&mut us, 100.0), Some(1000));
        assert_eq!(percentile(&mut [], 99.0), None);
        assert_eq!(percentile(&mut [7], 1.0), Some(7));
    }

    #[test]
    fn rounds_are_pooled_before_percentiles_are_taken() {
        // Round one is fast throughout; round two has a slow spell in its last tenth. The
        // pooled p99 lies inside the spell, the pooled p50 in the fast part, and each round
        // keeps its own p99.
        let fast: Vec<u64> = vec![100; 1000];
        let mut spell: Vec<u64> = vec![100; 900];
        spell.extend(std::iter::repeat_n(900, 100));
        let mut pool = Pool::default();
        pool.add(round(fast, 10_000.0, json!({"timed out": 1})));
        pool.add(round(
            spell,
            30_000.0,
            json!({"timed out": 2, "HTTP 503": 1}),
        ));
        let row = pool.row(&VARIANTS[0], 10, 1000);
        assert_eq!(row["rounds"], 2);
        assert_eq!(row["samples"], 2000);
        assert_eq!(row["ok"], 2000);
        assert_eq!(row["failed"], 2);
        assert_eq!(row["p50_us"], 100);
        assert_eq!(row["p99_us"], 900);
        assert_eq!(row["round_p99_us"], json!([100, 900]));
        assert_eq!(row["max_us"], 900);
        assert_eq!(row["reasons"], json!({"timed out": 3, "HTTP 503": 1}));
        // 40 ms of CPU over 2,000 answered requests.
        assert_eq!(row["server_cpu_us_per_request"], 20.0);
    }
}
