//! Scenario `udp-frames`: authenticated UDP exchanges per server core-second, ours against the
//! machine's own limit in the same run.
//!
//! * Ours: a fresh broker and `bench-load pings --kind device-udp`: [`DEVICES`] devices log in
//!   over UDP and each keeps [`IN_FLIGHT`] Pings unanswered. Every Ping is an authenticated DATA
//!   packet the broker opens, checks against the session's replay window and answers with a
//!   sealed Pong.
//! * The machine's limit: `bench-load udp-echo` (the broker's batched I/O, `recvmmsg` and
//!   `sendmmsg` of up to 32, and no protocol work) against `bench-load pings --kind raw-udp`,
//!   the same number of sockets and datagrams in flight, each datagram a sealed Ping's size.
//!
//! Once every client is up the window starts: answers in it per second, the server's CPU time
//! (`/proc/PID/stat`) over it, and answers per server core-second. The ratio is ours / the echo
//! server's answers per core-second: the share of the bare I/O rate the protocol leaves.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench_ns::{self, Pipes};
use crate::bench_report::{Bar, Cell, bar_chart, div, scenario_tables};
use crate::bench_servers::{self, MosquittoTuning, Product, Server, port};

/// Devices (or plain sockets) flooding the server.
const DEVICES: u32 = 100;
/// Requests each keeps unanswered.
const IN_FLIGHT: u32 = 8;
/// What is measured: `bench-load pings --kind` and the server that answers it.
const VARIANTS: [(&str, Product); 2] =
    [("device-udp", Product::Ours), ("raw-udp", Product::UdpEcho)];

/// Measures ours and the echo server over a window of `seconds`; one JSON row each.
pub fn run(broker: &Path, load: &Path, seconds: u64) -> Result<Vec<Value>, String> {
    let mut rows = Vec::new();
    for (kind, product) in VARIANTS {
        eprintln!("bench udp-frames: {kind} against {}", product.name());
        let server_binary = if product == Product::Ours {
            broker
        } else {
            load
        };
        let row = measure(server_binary, load, kind, product, seconds)?;
        eprintln!("  {row}");
        rows.push(row);
    }
    Ok(rows)
}

fn measure(
    server_binary: &Path,
    load: &Path,
    kind: &str,
    product: Product,
    seconds: u64,
) -> Result<Value, String> {
    let server = Server::start(product, server_binary, MosquittoTuning::default())?;
    let pid = server.pid();
    let args: Vec<String> = [
        "pings",
        "--kind",
        kind,
        "--count",
        &DEVICES.to_string(),
        "--addr",
        &format!("127.0.0.1:{}", port::UDP),
        "--in-flight",
        &IN_FLIGHT.to_string(),
        "--seconds",
        &seconds.to_string(),
        "--master-key",
        bench_servers::MASTER_KEY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut client = server.namespace().spawn(load, &args, Pipes::Client)?;
    let up = bench_ns::load_status(&client.read_line(Duration::from_secs(60))?)?;
    let cpu_before = bench_ns::cpu_ticks(pid)?;
    let end = bench_ns::load_status(&client.read_line(Duration::from_secs(seconds + 30))?)?;
    let cpu_after = bench_ns::cpu_ticks(pid)?;
    client.wait_or_stop(Duration::from_secs(5));
    drop(server);
    let answers = end["answers"].as_u64().unwrap_or(0) - up["answers"].as_u64().unwrap_or(0);
    let window = end["secs"].as_f64().unwrap_or(0.0);
    let cpu_s = (cpu_after - cpu_before) as f64 / bench_ns::ticks_per_sec() as f64;
    if answers == 0 || window <= 0.0 || cpu_s <= 0.0 {
        return Err(format!(
            "{kind}: nothing answered in the window ({up}, {end})"
        ));
    }
    Ok(json!({
        "server": product.name(),
        "transport": kind,
        "devices": DEVICES,
        "up": up["up"],
        "failed": up["failed"],
        "in_flight": IN_FLIGHT,
        "seconds": (window * 100.0).round() / 100.0,
        "answers": answers,
        "per_sec": (answers as f64 / window).round(),
        "server_cpu_s": (cpu_s * 100.0).round() / 100.0,
        "per_core_sec": (answers as f64 / cpu_s).round(),
    }))
}

/// The ratio of the rows: our answers per server core-second over the echo server's.
pub fn ratios(rows: &[Value]) -> Vec<Value> {
    let find = |t: &str| rows.iter().find(|r| r["transport"] == t);
    let (Some(ours), Some(echo)) = (find("device-udp"), find("raw-udp")) else {
        return Vec::new();
    };
    vec![json!({
        "pair": "device-udp/udp-echo",
        "devices": ours["devices"],
        "per_core_sec": div(&ours["per_core_sec"], &echo["per_core_sec"]),
        "per_sec": div(&ours["per_sec"], &echo["per_sec"]),
    })]
}

/// The `udp-frames` part of the markdown.
pub fn markdown(md: &mut String, doc: &Value) {
    scenario_tables(
        md,
        doc,
        "udp_frames",
        "\n## UDP frames: request/answer exchanges per server core-second\n\n",
        &[
            ("server", Cell::Text("server")),
            ("kind", Cell::Text("transport")),
            ("up", Cell::Value("up")),
            ("in flight each", Cell::Value("in_flight")),
            ("seconds", Cell::Value("seconds")),
            ("answers/s", Cell::Value("per_sec")),
            ("server CPU (s)", Cell::Value("server_cpu_s")),
            (
                "answers per server core-second",
                Cell::Value("per_core_sec"),
            ),
        ],
        &["devices", "per_core_sec", "per_sec"],
    );
}

/// The plot: answers per server core-second, one bar per server.
pub fn svg(rows: &[Value]) -> String {
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            group: format!(
                "{} ({})",
                r["transport"].as_str().unwrap_or("?"),
                r["server"].as_str().unwrap_or("?")
            ),
            series: format!("{} in flight x {}", r["in_flight"], r["up"]),
            value: r["per_core_sec"].as_f64().unwrap_or(0.0),
        })
        .collect();
    bar_chart(
        "UDP request/answer exchanges per server core-second (higher is better)",
        &bars,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_ours_over_the_echo_per_core_second() {
        let rows = [
            json!({"transport": "device-udp", "devices": 100, "per_core_sec": 250_000.0, "per_sec": 200_000.0}),
            json!({"transport": "raw-udp", "devices": 100, "per_core_sec": 1_000_000.0, "per_sec": 400_000.0}),
        ];
        let r = ratios(&rows);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["pair"], "device-udp/udp-echo");
        assert_eq!(r[0]["per_core_sec"], 0.25);
        assert_eq!(r[0]["per_sec"], 0.5);
        assert!(
            ratios(&rows[..1]).is_empty(),
            "no ratio without the echo row"
        );
    }
}
