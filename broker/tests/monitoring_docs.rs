//! The Grafana dashboard (docs/grafana-dashboard.json) and the Prometheus alert rules
//! (docs/prometheus-alerts.yml) use only metrics the broker exports: every `broker_*` and
//! `process_*` name in them (a histogram's `_bucket`, `_sum` and `_count` series included) is
//! a catalogued family (`broker::metrics::catalog`, `broker::metrics::process`), whose
//! existence on a fresh broker `metrics_exposition` checks.

use std::collections::BTreeSet;

use broker::metrics::catalog::{FAMILIES, Kind};
use broker::metrics::process;

const DASHBOARD: &str = include_str!("../../docs/grafana-dashboard.json");
const ALERTS: &str = include_str!("../../docs/prometheus-alerts.yml");

/// Every `broker_...` / `process_...` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (text[i..].starts_with("broker_") || text[i..].starts_with("process_"))
            && (i == 0 || !ident(bytes[i - 1]));
        if starts {
            let end = (i..bytes.len())
                .find(|&j| !ident(bytes[j]))
                .unwrap_or(bytes.len());
            out.insert(text[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Whether `name` is an exported series name.
fn exported(name: &str) -> bool {
    FAMILIES.iter().chain(process::FAMILIES).any(|f| {
        f.name == name
            || (f.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f.name)))
    })
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for (file, text) in [
        ("dashboard", exprs.join("\n")),
        ("alerts", ALERTS.to_string()),
    ] {
        let names = metric_names(&text);
        assert!(names.len() >= 8, "{file}: only {names:?}");
        let unknown: Vec<&String> = names.iter().filter(|n| !exported(n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the broker does not export: {unknown:?}"
        );
    }
}

#[test]
fn the_name_check_catches_a_metric_that_does_not_exist() {
    let names = metric_names("rate(broker_logins_total[5m]) + broker_no_such_thing_total");
    assert!(names.contains("broker_logins_total"));
    assert!(!exported("broker_no_such_thing_total"));
    assert!(exported("broker_latency_seconds_bucket"));
    assert!(!exported("broker_logins_total_bucket"));
}
