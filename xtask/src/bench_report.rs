//! What `cargo xtask bench` writes and checks: the ratios to Mosquitto in the same run, the
//! JSON document, the markdown table, the SVG plot, and the floors committed in
//! `bench/floors.json` (ratios, never absolute times) that a run must not fall below.
//!
//! A ratio is always "Mosquitto / ours" for a cost (bytes, CPU time), so higher is better for
//! us and a floor is a lower bound.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// The pairs compared: our transport against Mosquitto's closest one.
pub const PAIRS: [(&str, &str); 3] = [
    ("device-ws", "mqtt-ws"),
    ("app-ws", "mqtt-ws"),
    ("device-udp", "mqtt-tcp"),
];

fn find<'a>(rows: &'a [Value], transport: &str, connections: u64) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["transport"] == transport && r["connections"].as_u64() == Some(connections))
}

/// Ratios of the idle-memory rows: per count and pair, memory and CPU per connection.
pub fn idle_ratios(rows: &[Value]) -> Vec<Value> {
    let mut counts: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["connections"].as_u64())
        .collect();
    counts.dedup();
    let mut out = Vec::new();
    for &n in &counts {
        for (ours, theirs) in PAIRS {
            let (Some(o), Some(t)) = (find(rows, ours, n), find(rows, theirs, n)) else {
                continue;
            };
            let ratio = |key: &str| {
                let (a, b) = (
                    t[key].as_f64().unwrap_or(0.0),
                    o[key].as_f64().unwrap_or(0.0),
                );
                if b > 0.0 {
                    (a / b * 100.0).round() / 100.0
                } else {
                    f64::INFINITY
                }
            };
            out.push(json!({
                "pair": format!("{ours}/{theirs}"),
                "connections": n,
                "memory": ratio("bytes_per_connection"),
                "cpu": ratio("server_cpu_us_per_connection"),
            }));
        }
    }
    out
}

/// Checks each idle-memory ratio of the run against `floors` (`{"idle-memory": {pair: min}}`):
/// one line per ratio below its floor; empty when the run passes.
pub fn below_floors(ratios: &[Value], floors: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let Some(mins) = floors["idle-memory"].as_object() else {
        return vec!["bench/floors.json has no \"idle-memory\" object".into()];
    };
    for (pair, min) in mins {
        let Some(min) = min.as_f64() else {
            failures.push(format!("floor {pair} is not a number"));
            continue;
        };
        let measured: Vec<&Value> = ratios
            .iter()
            .filter(|r| r["pair"] == pair.as_str())
            .collect();
        if measured.is_empty() {
            failures.push(format!("{pair}: not measured in this run"));
        }
        for r in measured {
            let got = r["memory"].as_f64().unwrap_or(0.0);
            if got < min {
                failures.push(format!(
                    "{pair} at {} connections: memory ratio {got} below the floor {min}",
                    r["connections"]
                ));
            }
        }
    }
    failures
}

/// The run's markdown: context, then the idle-memory table and its ratios.
pub fn markdown(doc: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# `cargo xtask bench`{}\n",
        if doc["quick"] == true { " --quick" } else { "" }
    );
    let _ = writeln!(
        md,
        "- date: {}\n- machine: {}\n- load average (1 min) at start / end: {} / {}\n- mosquitto: {}\n",
        doc["date"].as_str().unwrap_or("?"),
        doc["machine"].as_str().unwrap_or("?"),
        doc["load_average"]["start"],
        doc["load_average"]["end"],
        doc["mosquitto"].as_str().unwrap_or("?"),
    );
    if let Some(rows) = doc["idle_memory"]["rows"].as_array() {
        md.push_str("## Idle memory per connection (server RSS delta / connections up)\n\n");
        md.push_str("| server | transport | connections | up | failed | client processes | B per connection | server CPU per connection (µs) |\n|---|---|---|---|---|---|---|---|\n");
        for r in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r["server"].as_str().unwrap_or("?"),
                r["transport"].as_str().unwrap_or("?"),
                r["connections"],
                r["up"],
                r["failed"],
                r["client_processes"],
                r["bytes_per_connection"],
                r["server_cpu_us_per_connection"],
            );
        }
    }
    if let Some(ratios) = doc["idle_memory"]["ratios"].as_array() {
        md.push_str("\n### Ratios, Mosquitto / ours (higher is better for us)\n\n");
        md.push_str("| pair | connections | memory | CPU per connection |\n|---|---|---|---|\n");
        for r in ratios {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                r["pair"].as_str().unwrap_or("?"),
                r["connections"],
                r["memory"],
                r["cpu"],
            );
        }
    }
    fanout_markdown(&mut md, doc);
    if let Some(f) = doc["floor_failures"].as_array() {
        let _ = writeln!(
            md,
            "\nFloors (bench/floors.json): {}",
            if f.is_empty() {
                "all met".to_string()
            } else {
                format!("{} below", f.len())
            }
        );
        for line in f {
            let _ = writeln!(md, "- {}", line.as_str().unwrap_or("?"));
        }
    }
    md
}

/// The idle-memory plot: bytes per idle connection, one group per transport, one bar per count.
pub fn memory_svg(rows: &[Value]) -> String {
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            group: format!(
                "{} ({})",
                r["transport"].as_str().unwrap_or("?"),
                r["server"].as_str().unwrap_or("?")
            ),
            series: format!("{} connections", r["connections"]),
            value: r["bytes_per_connection"].as_f64().unwrap_or(0.0),
        })
        .collect();
    bar_chart(
        "Server memory per idle connection, bytes (lower is better)",
        &bars,
    )
}

/// The fan-out plot: time from the first send to the last terminal's last delivery, one group
/// per variant, one bar per terminal count.
pub fn fanout_svg(rows: &[Value]) -> String {
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            group: r["variant"]
                .as_str()
                .unwrap_or("?")
                .replace(" allow_duplicate_messages", " +dup"),
            series: format!("{} terminals", r["terminals"]),
            value: r["last_ms"].as_f64().unwrap_or(0.0),
        })
        .collect();
    bar_chart(
        "Broadcast of ten 64-byte messages: ms to the last delivery (lower is better)",
        &bars,
    )
}

/// One bar of a grouped bar chart.
pub struct Bar {
    /// The group on the x axis.
    pub group: String,
    /// The series (colour) within the group.
    pub series: String,
    /// Its height.
    pub value: f64,
}

/// A grouped bar chart. Hand-written SVG: a few rectangles and labels need no plotting library
/// (nor its font handling).
pub fn bar_chart(title: &str, bars: &[Bar]) -> String {
    let mut groups: Vec<&str> = Vec::new();
    let mut series: Vec<&str> = Vec::new();
    for b in bars {
        if !groups.contains(&b.group.as_str()) {
            groups.push(&b.group);
        }
        if !series.contains(&b.series.as_str()) {
            series.push(&b.series);
        }
    }
    let max = bars.iter().map(|b| b.value).fold(1.0f64, f64::max);
    let (width, height, left, bottom, top) = (900.0, 380.0, 70.0, 70.0, 40.0);
    let plot_h = height - bottom - top;
    let group_w = (width - left - 20.0) / groups.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    let colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n",
        width / 2.0
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            width - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (g, group) in groups.iter().enumerate() {
        let x0 = left + group_w * g as f64 + group_w * 0.1;
        for (c, s) in series.iter().enumerate() {
            let Some(b) = bars.iter().find(|b| b.group == *group && b.series == *s) else {
                continue;
            };
            let h = plot_h * b.value / max;
            let x = x0 + bar_w * c as f64;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{group}, {s}: {:.0}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{:.0}</text>",
                top + plot_h - h,
                (bar_w - 2.0).max(1.0),
                colors[c % colors.len()],
                b.value,
                x + bar_w / 2.0 - 1.0,
                top + plot_h - h - 3.0,
                b.value
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{group}</text>",
            x0 + group_w * 0.4,
            top + plot_h + 16.0
        );
    }
    for (c, s) in series.iter().enumerate() {
        let x = left + 10.0 + 140.0 * c as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{s}</text>",
            height - 22.0,
            colors[c % colors.len()],
            x + 16.0,
            height - 12.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Ratios of the fan-out rows: ours against each Mosquitto variant at the same terminal count
/// (deliveries per second ours / theirs; time to the last delivery and CPU per delivery
/// theirs / ours: higher is better for us in every column).
pub fn fanout_ratios(rows: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for ours in rows.iter().filter(|r| r["server"] == "plugcloud") {
        for theirs in rows
            .iter()
            .filter(|r| r["server"] == "mosquitto" && r["terminals"] == ours["terminals"])
        {
            let div = |a: &Value, b: &Value| {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                if b > 0.0 {
                    (a / b * 100.0).round() / 100.0
                } else {
                    f64::INFINITY
                }
            };
            out.push(json!({
                "against": theirs["variant"],
                "terminals": ours["terminals"],
                "deliveries_per_sec": div(&ours["deliveries_per_sec"], &theirs["deliveries_per_sec"]),
                "last_ms": div(&theirs["last_ms"], &ours["last_ms"]),
                "cpu": div(&theirs["server_cpu_us_per_delivery"], &ours["server_cpu_us_per_delivery"]),
            }));
        }
    }
    out
}

/// The fan-out part of the markdown.
fn fanout_markdown(md: &mut String, doc: &Value) {
    if let Some(rows) = doc["fanout"]["rows"].as_array() {
        md.push_str("\n## Broadcast fan-out: ten 64-byte messages to every terminal\n\n");
        md.push_str("| variant | terminals | up | deliveries / expected | deliveries/s | first (ms) | last (ms) | server CPU per delivery (µs) |\n|---|---|---|---|---|---|---|---|\n");
        for r in rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                r["variant"].as_str().unwrap_or("?"),
                r["terminals"],
                r["up"],
                r["deliveries"],
                r["expected"],
                r["deliveries_per_sec"],
                r["first_ms"],
                r["last_ms"],
                r["server_cpu_us_per_delivery"],
            );
        }
    }
    if let Some(ratios) = doc["fanout"]["ratios"].as_array() {
        md.push_str(
            "\n### Ratios, ours against each Mosquitto variant (higher is better for us)\n\n",
        );
        md.push_str("| against | terminals | deliveries/s (ours/theirs) | time to last (theirs/ours) | CPU per delivery (theirs/ours) |\n|---|---|---|---|---|\n");
        for r in ratios {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                r["against"].as_str().unwrap_or("?"),
                r["terminals"],
                r["deliveries_per_sec"],
                r["last_ms"],
                r["cpu"],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_ratios_compare_ours_with_each_variant_at_the_same_count() {
        let r = |server: &str, variant: &str, n: u64, rate: f64, last: f64, cpu: f64| {
            json!({"server": server, "variant": variant, "terminals": n,
                   "deliveries_per_sec": rate, "last_ms": last, "server_cpu_us_per_delivery": cpu})
        };
        let rows = vec![
            r("plugcloud", "ours", 1000, 20000.0, 500.0, 10.0),
            r("mosquitto", "q0", 1000, 40000.0, 250.0, 5.0),
            r("mosquitto", "q0", 5000, 1.0, 1.0, 1.0),
        ];
        let ratios = fanout_ratios(&rows);
        assert_eq!(ratios.len(), 1);
        assert_eq!(ratios[0]["deliveries_per_sec"], 0.5);
        assert_eq!(ratios[0]["last_ms"], 0.5);
        assert_eq!(ratios[0]["cpu"], 0.5);
    }

    fn row(transport: &str, n: u64, bytes: f64, cpu: f64) -> Value {
        json!({"server": "s", "transport": transport, "connections": n,
               "bytes_per_connection": bytes, "server_cpu_us_per_connection": cpu})
    }

    #[test]
    fn ratios_are_mosquitto_over_ours_per_count() {
        let rows = vec![
            row("device-ws", 1000, 3000.0, 200.0),
            row("mqtt-ws", 1000, 6000.0, 50.0),
            row("device-udp", 1000, 1500.0, 150.0),
            row("mqtt-tcp", 1000, 750.0, 40.0),
        ];
        let r = idle_ratios(&rows);
        assert_eq!(r.len(), 2, "app-ws was not measured: no ratio for it");
        assert_eq!(r[0]["pair"], "device-ws/mqtt-ws");
        assert_eq!(r[0]["memory"], 2.0);
        assert_eq!(r[0]["cpu"], 0.25);
        assert_eq!(r[1]["memory"], 0.5);
    }

    #[test]
    fn a_ratio_below_its_floor_fails_and_a_missing_one_too() {
        let ratios = vec![json!({"pair": "device-ws/mqtt-ws", "connections": 1000, "memory": 1.5})];
        let ok = json!({"idle-memory": {"device-ws/mqtt-ws": 1.2}});
        assert!(below_floors(&ratios, &ok).is_empty());
        let high = json!({"idle-memory": {"device-ws/mqtt-ws": 1.6}});
        assert_eq!(below_floors(&ratios, &high).len(), 1);
        let missing = json!({"idle-memory": {"app-ws/mqtt-ws": 1.0}});
        assert!(below_floors(&ratios, &missing)[0].contains("not measured"));
        assert_eq!(below_floors(&ratios, &json!({})).len(), 1);
    }

    #[test]
    fn the_plot_has_one_bar_per_row() {
        let rows = vec![
            row("device-ws", 1000, 3000.0, 1.0),
            row("mqtt-ws", 1000, 6000.0, 1.0),
        ];
        let svg = memory_svg(&rows);
        assert_eq!(
            svg.matches("<rect x").count(),
            2 + 1,
            "two bars and one legend swatch"
        );
        assert!(svg.contains("device-ws (s), 1000 connections: 3000"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
