//! Scenario `login-storm`: many logins offered at once. For each transport (ours: device
//! WebSocket and UDP; Mosquitto: MQTT/TCP CONNECT) and each offered rate, a fresh server and
//! `bench-load idle` opening the connections at that rate (the idle-memory measurement of
//! [`bench_idle::measure_at`] at a higher rate). Figures: logins offered per second, completed
//! per second (connections up over the time from the first attempt to the last one finished,
//! including the clients' start), failures by reason, and the server's CPU time per login.

use std::path::Path;

use serde_json::{Value, json};

use crate::bench_idle::{self, TRANSPORTS, Transport};

/// The transports stormed: `bench-load idle --kind` names.
const KINDS: [&str; 3] = ["device-ws", "device-udp", "mqtt-tcp"];

/// Runs every transport at every offered rate, `count` logins each; one JSON row each.
pub fn run(broker: &Path, load: &Path, count: u32, rates: &[u32]) -> Result<Vec<Value>, String> {
    let transports: Vec<Transport> = TRANSPORTS
        .iter()
        .copied()
        .filter(|t| KINDS.contains(&t.kind))
        .collect();
    let mut rows = Vec::new();
    for &rate in rates {
        for &t in &transports {
            eprintln!("bench login-storm: {} x {count} at {rate}/s", t.kind);
            let m = bench_idle::measure_at(broker, load, t, count, rate)?;
            let row = storm_row(&m, rate);
            eprintln!("  {row}");
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The login-storm row made from one idle measurement `m` at `offered` logins per second.
fn storm_row(m: &Value, offered: u32) -> Value {
    let up = m["up"].as_f64().unwrap_or(0.0);
    let secs = m["connect_secs"].as_f64().unwrap_or(0.0);
    json!({
        "server": m["server"],
        "transport": m["transport"],
        "attempted": m["connections"],
        "offered_per_sec": offered,
        "up": m["up"],
        "failed": m["failed"],
        "reasons": m["reasons"],
        "connect_secs": secs,
        "completed_per_sec": if secs > 0.0 { (up / secs).round() } else { 0.0 },
        "server_cpu_us_per_login": m["server_cpu_us_per_connection"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_rate_is_connections_up_over_the_connect_time() {
        let m = json!({"server": "plugcloud", "transport": "device-ws", "connections": 2000,
                       "up": 1500, "failed": 500, "reasons": {"rejected: BAD_COOKIE": 500},
                       "connect_secs": 0.5, "server_cpu_us_per_connection": 300.0});
        let r = storm_row(&m, 10_000);
        assert_eq!(r["completed_per_sec"], 3000.0);
        assert_eq!(r["offered_per_sec"], 10_000);
        assert_eq!(r["reasons"]["rejected: BAD_COOKIE"], 500);
        let never = json!({"up": 0, "connect_secs": 0.0});
        assert_eq!(storm_row(&never, 1)["completed_per_sec"], 0.0);
    }
}
