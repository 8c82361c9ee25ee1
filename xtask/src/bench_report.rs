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
            let ratio = |key: &str| div(&t[key], &o[key]);
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

/// What a floor of `bench/floors.json` bounds in each scenario: the scenario's name (the key in
/// the floors file), its key in the results document, the ratio checked, and the field of a
/// ratio row that says at what count it was measured.
pub const FLOORED: [(&str, &str, &str, &str); 4] = [
    ("idle-memory", "idle_memory", "memory", "connections"),
    ("fanout", "fanout", "deliveries_per_sec", "terminals"),
    ("command", "command", "p50", "terminals"),
    ("udp-frames", "udp_frames", "per_core_sec", "devices"),
];

/// Checks the `metric` ratio of each row of `ratios` against `floors` (`{pair: min}`, one
/// scenario's object of `bench/floors.json`): one line per ratio below its floor or floor not
/// measured; empty when the run passes.
pub fn below_floors(
    ratios: &[Value],
    floors: &Value,
    metric: &str,
    count_field: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    let Some(mins) = floors.as_object() else {
        return vec!["bench/floors.json has no object for this scenario".into()];
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
            let got = r[metric].as_f64().unwrap_or(0.0);
            if got < min {
                failures.push(format!(
                    "{pair} at {} {count_field}: {metric} ratio {got} below the floor {min}",
                    r[count_field]
                ));
            }
        }
    }
    failures
}

/// A scenario's part of the markdown, written by the scenario's own module.
pub type Section = fn(&mut String, &Value);

/// The run's markdown: context, the idle-memory, fan-out, command, uploads and login-storm
/// tables with their ratios, then `more` (other scenarios' parts), then the floors.
pub fn markdown(doc: &Value, more: &[Section]) -> String {
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
        table(
            &mut md,
            "## Idle memory per connection (growth of the server's resident memory / connections up)\n\n\
             Anonymous: heap, stacks and other private memory, what the connections cost. All \
             resident: also the server's program and library pages that the logins ran for the \
             first time.\n\n",
            &[
                ("server", Cell::Text("server")),
                ("transport", Cell::Text("transport")),
                ("connections", Cell::Value("connections")),
                ("up", Cell::Value("up")),
                ("failed", Cell::Value("failed")),
                ("client processes", Cell::Value("client_processes")),
                (
                    "B per connection (anonymous)",
                    Cell::Value("bytes_per_connection"),
                ),
                (
                    "B per connection (all resident)",
                    Cell::Value("resident_bytes_per_connection"),
                ),
                (
                    "server CPU per connection (µs)",
                    Cell::Value("server_cpu_us_per_connection"),
                ),
            ],
            rows,
        );
    }
    if let Some(ratios) = doc["idle_memory"]["ratios"].as_array() {
        table(
            &mut md,
            "\n### Ratios, Mosquitto / ours (higher is better for us)\n\n",
            &[
                ("pair", Cell::Text("pair")),
                ("connections", Cell::Value("connections")),
                ("memory", Cell::Value("memory")),
                ("CPU per connection", Cell::Value("cpu")),
            ],
            ratios,
        );
    }
    fanout_markdown(&mut md, doc);
    command_markdown(&mut md, doc);
    uploads_markdown(&mut md, doc);
    login_markdown(&mut md, doc);
    for section in more {
        section(&mut md, doc);
    }
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
        "Server memory per idle connection, anonymous resident bytes (lower is better)",
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
            out.push(json!({
                "pair": format!(
                    "{}/{}",
                    ours["transport"].as_str().unwrap_or("?"),
                    theirs["variant"].as_str().unwrap_or("?")
                ),
                "ours": ours["variant"],
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
        table(
            md,
            "\n## Broadcast fan-out: ten 64-byte messages to every terminal\n\n",
            &[
                ("variant", Cell::Text("variant")),
                ("terminals", Cell::Value("terminals")),
                ("up", Cell::Value("up")),
                ("deliveries / expected", Cell::Of("deliveries", "expected")),
                ("deliveries/s", Cell::Value("deliveries_per_sec")),
                ("first (ms)", Cell::Value("first_ms")),
                ("last (ms)", Cell::Value("last_ms")),
                (
                    "server CPU per delivery (µs)",
                    Cell::Value("server_cpu_us_per_delivery"),
                ),
            ],
            rows,
        );
    }
    if let Some(ratios) = doc["fanout"]["ratios"].as_array() {
        table(
            md,
            "\n### Ratios, ours against each Mosquitto variant (higher is better for us)\n\n",
            &[
                ("ours", Cell::Text("ours")),
                ("against", Cell::Text("against")),
                ("terminals", Cell::Value("terminals")),
                (
                    "deliveries/s (ours/theirs)",
                    Cell::Value("deliveries_per_sec"),
                ),
                ("time to last (theirs/ours)", Cell::Value("last_ms")),
                ("CPU per delivery (theirs/ours)", Cell::Value("cpu")),
            ],
            ratios,
        );
    }
}

/// The MQTT variants the command round trip of ours is compared with: request/reply at QoS 0
/// (the cheapest) and at QoS 1 (acknowledged both ways, as our commands are).
const COMMAND_PEERS: [&str; 2] = ["mqtt-responder", "mqtt-responder-qos1"];

/// Ratios of the command rows: each of our transports against each MQTT request/reply variant
/// at the same terminal count, Mosquitto / ours for p50, p99, p99.9 and CPU per request (higher
/// is better for us). The pair is named `<our transport>/<MQTT variant's transport>`.
pub fn command_ratios(rows: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for peer in COMMAND_PEERS {
        for ours in rows.iter().filter(|r| r["server"] == "plugcloud") {
            let Some(theirs) = rows
                .iter()
                .find(|r| r["transport"] == peer && r["terminals"] == ours["terminals"])
            else {
                continue;
            };
            let div = |key: &str| div_to(&theirs[key], &ours[key], 1000.0);
            out.push(json!({
                "pair": format!("{}/{peer}", ours["transport"].as_str().unwrap_or("?")),
                "terminals": ours["terminals"],
                "p50": div("p50_us"),
                "p99": div("p99_us"),
                "p999": div("p999_us"),
                "cpu": div("server_cpu_us_per_request"),
            }));
        }
    }
    out
}

/// The command round-trip part of the markdown.
fn command_markdown(md: &mut String, doc: &Value) {
    if let Some(rows) = doc["command"]["rows"].as_array() {
        table(
            md,
            "\n## Command round trip to one of N idle terminals (one request at a time; percentiles over all rounds)\n\n",
            &[
                ("variant", Cell::Text("variant")),
                ("terminals", Cell::Value("terminals")),
                ("up", Cell::Value("up")),
                ("answered / sent", Cell::Of("ok", "samples")),
                ("p50 (µs)", Cell::Value("p50_us")),
                ("p99 (µs)", Cell::Value("p99_us")),
                ("p99.9 (µs)", Cell::Value("p999_us")),
                ("max (µs)", Cell::Value("max_us")),
                (
                    "server CPU per request (µs)",
                    Cell::Value("server_cpu_us_per_request"),
                ),
                ("rounds", Cell::Value("rounds")),
                ("p99 of each round (µs)", Cell::Escaped("round_p99_us")),
            ],
            rows,
        );
    }
    if let Some(ratios) = doc["command"]["ratios"].as_array() {
        table(
            md,
            "\n### Ratios, Mosquitto request/reply / ours (higher is better for us)\n\n",
            &[
                ("pair", Cell::Text("pair")),
                ("terminals", Cell::Value("terminals")),
                ("p50", Cell::Value("p50")),
                ("p99", Cell::Value("p99")),
                ("p99.9", Cell::Value("p999")),
                ("CPU per request", Cell::Value("cpu")),
            ],
            ratios,
        );
    }
}

/// The command plot: round-trip percentiles in µs, one group per variant and terminal count,
/// one bar per percentile.
pub fn command_svg(rows: &[Value]) -> String {
    let mut bars = Vec::new();
    for r in rows {
        let group = format!(
            "{} x{}",
            r["variant"]
                .as_str()
                .unwrap_or("?")
                .replace("plugcloud ", "")
                .replace("mosquitto ", "mqtt "),
            r["terminals"]
        );
        for (series, key) in [("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")] {
            bars.push(Bar {
                group: group.clone(),
                series: series.into(),
                value: r[key].as_f64().unwrap_or(0.0),
            });
        }
    }
    bar_chart(
        "Command round trip to one of N idle terminals, µs (lower is better)",
        &bars,
    )
}

/// Ratios of the uploads rows: each of our transports against Mosquitto's QoS 1 publishes
/// (acknowledged per second ours / theirs; CPU per upload theirs / ours). The pair is named
/// `<our transport>/mqtt-tcp`.
pub fn uploads_ratios(rows: &[Value]) -> Vec<Value> {
    let Some(theirs) = rows.iter().find(|r| r["server"] == "mosquitto") else {
        return Vec::new();
    };
    rows.iter()
        .filter(|r| r["server"] == "plugcloud")
        .map(|ours| {
            json!({
                "pair": format!(
                    "{}/{}",
                    ours["transport"].as_str().unwrap_or("?"),
                    theirs["transport"].as_str().unwrap_or("?")
                ),
                "publishers": ours["publishers"],
                "per_sec": div(&ours["per_sec"], &theirs["per_sec"]),
                "cpu": div(
                    &theirs["server_cpu_us_per_upload"],
                    &ours["server_cpu_us_per_upload"]
                ),
            })
        })
        .collect()
}

/// Ratios of the login-storm rows: each of our transports against MQTT CONNECT at the same
/// offered rate (completed per second ours / theirs; CPU per login theirs / ours).
pub fn login_ratios(rows: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for ours in rows.iter().filter(|r| r["server"] == "plugcloud") {
        let Some(theirs) = rows.iter().find(|r| {
            r["server"] == "mosquitto" && r["offered_per_sec"] == ours["offered_per_sec"]
        }) else {
            continue;
        };
        out.push(json!({
            "pair": format!(
                "{}/{}",
                ours["transport"].as_str().unwrap_or("?"),
                theirs["transport"].as_str().unwrap_or("?")
            ),
            "offered_per_sec": ours["offered_per_sec"],
            "completed_per_sec": div(&ours["completed_per_sec"], &theirs["completed_per_sec"]),
            "cpu": div(&theirs["server_cpu_us_per_login"], &ours["server_cpu_us_per_login"]),
        }));
    }
    out
}

/// `a / b` to two decimals; infinite (JSON null) when `b` is not positive.
pub fn div(a: &Value, b: &Value) -> f64 {
    div_to(a, b, 100.0)
}

/// `a / b` rounded to a multiple of `1 / scale`; infinite (JSON null) when `b` is not positive.
fn div_to(a: &Value, b: &Value, scale: f64) -> f64 {
    let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    if b > 0.0 {
        (a / b * scale).round() / scale
    } else {
        f64::INFINITY
    }
}

/// The uploads part of the markdown.
fn uploads_markdown(md: &mut String, doc: &Value) {
    scenario_tables(
        md,
        doc,
        "uploads",
        "\n## Durable uploads: 64-byte uploads back to back, acknowledged per second\n\n",
        &[
            ("variant", Cell::Text("variant")),
            ("clients up", Cell::Value("up")),
            ("in flight each", Cell::Value("in_flight")),
            ("seconds", Cell::Value("seconds")),
            ("acknowledged/s", Cell::Value("per_sec")),
            ("refused", Cell::Value("refused")),
            ("received by the subscriber", Cell::Value("received")),
            (
                "server CPU per upload (µs)",
                Cell::Value("server_cpu_us_per_upload"),
            ),
        ],
        &["publishers", "per_sec", "cpu"],
    );
}

/// The login-storm part of the markdown.
fn login_markdown(md: &mut String, doc: &Value) {
    scenario_tables(
        md,
        doc,
        "login_storm",
        "\n## Login storm: logins offered at a fixed rate\n\n",
        &[
            ("server", Cell::Text("server")),
            ("transport", Cell::Text("transport")),
            ("attempted", Cell::Value("attempted")),
            ("offered/s", Cell::Value("offered_per_sec")),
            ("up", Cell::Value("up")),
            ("failed", Cell::Value("failed")),
            ("completed/s", Cell::Value("completed_per_sec")),
            ("failures by reason", Cell::Escaped("reasons")),
            (
                "server CPU per login (µs)",
                Cell::Value("server_cpu_us_per_login"),
            ),
        ],
        &["offered_per_sec", "completed_per_sec", "cpu"],
    );
}

/// The ratios of `doc[key]` as a table of `pair` and `columns` (each titled by its key).
pub fn ratio_table(md: &mut String, doc: &Value, key: &str, columns: &[&'static str]) {
    let Some(ratios) = doc[key]["ratios"].as_array() else {
        return;
    };
    let mut all = vec![("pair", Cell::Text("pair"))];
    all.extend(columns.iter().map(|c| (*c, Cell::Value(c))));
    table(
        md,
        "\n### Ratios (higher is better for us)\n\n",
        &all,
        ratios,
    );
}

/// The tables of scenario `key`: its rows under `heading`, one column per `(title, cell)`,
/// then its ratios ([`ratio_table`] with `ratio_columns`).
pub fn scenario_tables(
    md: &mut String,
    doc: &Value,
    key: &str,
    heading: &str,
    columns: &[(&str, Cell)],
    ratio_columns: &[&'static str],
) {
    if let Some(rows) = doc[key]["rows"].as_array() {
        table(md, heading, columns, rows);
    }
    ratio_table(md, doc, key, ratio_columns);
}

/// How one cell of a results table shows its row's fields.
#[derive(Clone, Copy, Debug)]
pub enum Cell {
    /// A string field, `?` when it is missing.
    Text(&'static str),
    /// Any field as its JSON (a number as stored, `null` when missing).
    Value(&'static str),
    /// Two fields as `a / b` (e.g. answered / sent).
    Of(&'static str, &'static str),
    /// Any field as its JSON with `|` replaced by `/`, so that it cannot end the cell.
    Escaped(&'static str),
}

impl Cell {
    fn show(self, row: &Value) -> String {
        match self {
            Cell::Text(k) => row[k].as_str().unwrap_or("?").to_string(),
            Cell::Value(k) => row[k].to_string(),
            Cell::Of(a, b) => format!("{} / {}", row[a], row[b]),
            Cell::Escaped(k) => row[k].to_string().replace('|', "/"),
        }
    }
}

/// Appends `heading`, then a markdown table of `rows` with one column per `(title, cell)`.
pub fn table(md: &mut String, heading: &str, columns: &[(&str, Cell)], rows: &[Value]) {
    md.push_str(heading);
    let titles: Vec<&str> = columns.iter().map(|(title, _)| *title).collect();
    let _ = writeln!(
        md,
        "| {} |\n|{}",
        titles.join(" | "),
        "---|".repeat(columns.len())
    );
    for r in rows {
        let cells: Vec<String> = columns.iter().map(|(_, cell)| cell.show(r)).collect();
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
}

/// The uploads plot: acknowledged uploads per second, one bar per variant.
pub fn uploads_svg(rows: &[Value]) -> String {
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            group: r["variant"].as_str().unwrap_or("?").to_string(),
            series: format!("{} clients", r["publishers"]),
            value: r["per_sec"].as_f64().unwrap_or(0.0),
        })
        .collect();
    bar_chart(
        "64-byte uploads acknowledged per second (higher is better)",
        &bars,
    )
}

/// The login-storm plot: logins completed per second, one group per transport, one bar per
/// offered rate.
pub fn login_svg(rows: &[Value]) -> String {
    let bars: Vec<Bar> = rows
        .iter()
        .map(|r| Bar {
            group: format!(
                "{} ({})",
                r["transport"].as_str().unwrap_or("?"),
                r["server"].as_str().unwrap_or("?")
            ),
            series: format!("{}/s offered", r["offered_per_sec"]),
            value: r["completed_per_sec"].as_f64().unwrap_or(0.0),
        })
        .collect();
    bar_chart(
        "Login storm: logins completed per second (higher is better)",
        &bars,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_and_login_ratios_compare_ours_with_mosquitto() {
        let up = |server: &str, transport: &str, rate: f64, cpu: f64| {
            json!({"server": server, "transport": transport, "publishers": 100,
                   "per_sec": rate, "server_cpu_us_per_upload": cpu})
        };
        let rows = vec![
            up("plugcloud", "device-ws", 5000.0, 40.0),
            up("mosquitto", "mqtt-tcp", 20000.0, 10.0),
        ];
        let r = uploads_ratios(&rows);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["pair"], "device-ws/mqtt-tcp");
        assert_eq!(r[0]["per_sec"], 0.25);
        assert_eq!(r[0]["cpu"], 0.25);
        assert!(
            uploads_ratios(&rows[..1]).is_empty(),
            "no Mosquitto row: no ratio"
        );

        let login = |server: &str, transport: &str, offered: u64, done: f64| {
            json!({"server": server, "transport": transport, "offered_per_sec": offered,
                   "completed_per_sec": done, "server_cpu_us_per_login": 100.0})
        };
        let rows = vec![
            login("plugcloud", "device-udp", 2000, 1000.0),
            login("mosquitto", "mqtt-tcp", 2000, 2000.0),
            login("plugcloud", "device-udp", 5000, 1000.0),
        ];
        let r = login_ratios(&rows);
        assert_eq!(r.len(), 1, "no Mosquitto row at 5000/s");
        assert_eq!(r[0]["completed_per_sec"], 0.5);
        assert_eq!(r[0]["cpu"], 1.0);
        let md = markdown(&json!({"login_storm": {"rows": rows, "ratios": r}}), &[]);
        assert!(
            md.contains("| device-udp/mqtt-tcp | 2000 | 0.5 | 1.0 |"),
            "{md}"
        );
    }

    #[test]
    fn command_ratios_compare_each_transport_with_mqtt_request_reply() {
        let r = |server: &str, transport: &str, n: u64, p99: f64| {
            json!({"server": server, "transport": transport, "terminals": n, "p50_us": 100.0,
                   "p99_us": p99, "p999_us": 0.0, "server_cpu_us_per_request": 20.0})
        };
        let rows = vec![
            r("plugcloud", "device-ws", 1000, 400.0),
            r("plugcloud", "device-udp", 1000, 800.0),
            r("mosquitto", "mqtt-responder", 1000, 200.0),
            r("mosquitto", "mqtt-responder-qos1", 1000, 600.0),
            r("plugcloud", "device-ws", 5000, 400.0),
        ];
        let ratios = command_ratios(&rows);
        assert_eq!(ratios.len(), 4, "no Mosquitto row at 5,000: no ratio there");
        assert_eq!(ratios[0]["pair"], "device-ws/mqtt-responder");
        assert_eq!(ratios[0]["p99"], 0.5);
        assert_eq!(ratios[1]["p99"], 0.25);
        assert_eq!(ratios[2]["pair"], "device-ws/mqtt-responder-qos1");
        assert_eq!(ratios[2]["p99"], 1.5);
        assert_eq!(ratios[3]["pair"], "device-udp/mqtt-responder-qos1");
        assert_eq!(ratios[3]["p99"], 0.75);
        assert_eq!(ratios[0]["p50"], 1.0);
        assert!(
            ratios[0]["p999"].is_null(),
            "nothing to divide by: no ratio"
        );
        let floors = json!({"device-ws/mqtt-responder": 0.4, "device-udp/mqtt-responder": 0.4});
        let failed = below_floors(&ratios, &floors, "p99", "terminals");
        assert_eq!(failed.len(), 1);
        assert!(failed[0].starts_with("device-udp/mqtt-responder at 1000 terminals"));
    }

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
        let check = |floors: Value| below_floors(&ratios, &floors, "memory", "connections");
        assert!(check(json!({"device-ws/mqtt-ws": 1.2})).is_empty());
        let high = check(json!({"device-ws/mqtt-ws": 1.6}));
        assert_eq!(high.len(), 1);
        assert!(high[0].contains("memory ratio 1.5 below the floor 1.6"));
        assert!(check(json!({"app-ws/mqtt-ws": 1.0}))[0].contains("not measured"));
        assert_eq!(check(Value::Null).len(), 1);
        assert_eq!(check(json!({"device-ws/mqtt-ws": "x"})).len(), 1);
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

    #[test]
    fn a_table_shows_each_kind_of_cell() {
        let mut md = String::new();
        let rows = [json!({"name": "a", "n": 2.5, "ok": 3, "of": 4, "why": {"x|y": 1}})];
        table(
            &mut md,
            "## T\n\n",
            &[
                ("name", Cell::Text("name")),
                ("missing", Cell::Text("nope")),
                ("n", Cell::Value("n")),
                ("ok / of", Cell::Of("ok", "of")),
                ("why", Cell::Escaped("why")),
            ],
            &rows,
        );
        assert_eq!(
            md,
            "## T\n\n| name | missing | n | ok / of | why |\n|---|---|---|---|---|\n| a | ? | 2.5 | 3 / 4 | {\"x/y\":1} |\n"
        );
    }
}
