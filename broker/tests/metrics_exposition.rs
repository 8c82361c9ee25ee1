//! `/metrics` of a fresh in-process broker (nothing connected yet) read as a Prometheus server
//! would: the text is parsed strictly (every family has one `# HELP` and one `# TYPE` line
//! before its samples, sample names belong to their family, label sets and values are well
//! formed), and every family the broker documents as always present is there with its
//! documented type: counters and gauges at 0, `broker_build_info` with the crate version, and
//! the `process_*` families with this process's real figures. `/metrics` needs the API token.
//! Listens on 127.0.0.1 only.

use std::collections::BTreeMap;

use broker::config::{Config, Secret};
use broker::metrics::catalog::{self, Scope};
use broker::metrics::process;

const TOKEN: &str = "test-api-token-0123456789";

/// A sample's labels, in text order.
type Labels = Vec<(String, String)>;

/// One family as parsed from the exposition text.
#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    /// Sample name with its labels (in text order) and value.
    samples: Vec<(String, Labels, f64)>,
}

/// Parses `{k="v",...}` at the start of `s`: the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((Vec::new(), s));
    };
    let mut labels = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses the text format strictly; families by name.
fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (word, name, arg) = (parts.next(), parts.next(), parts.next());
            let (Some(word), Some(name), Some(arg)) = (word, name, arg) else {
                return Err(err("short comment line".into()));
            };
            let f = families.entry(name.to_string()).or_default();
            if !f.samples.is_empty() {
                return Err(err("HELP/TYPE after the family's samples".into()));
            }
            match word {
                "HELP" if f.help.is_none() => f.help = Some(arg.to_string()),
                "TYPE" if f.kind.is_none() => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(err(format!("unknown type {arg}")));
                    }
                    f.kind = Some(arg.to_string())
                }
                _ => return Err(err("repeated or unknown comment".into())),
            }
            current = Some(name.to_string());
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(err)?;
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err(format!("bad value {v:?}")))?,
        };
        let family = current
            .clone()
            .ok_or_else(|| err("sample before any TYPE".into()))?;
        let kind = families[&family].kind.clone().unwrap_or_default();
        let belongs = name == family
            || (kind == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str())));
        if !belongs {
            return Err(err(format!("sample outside its family {family}")));
        }
        families
            .get_mut(&family)
            .unwrap()
            .samples
            .push((name.to_string(), labels, value));
    }
    Ok(families)
}

fn value_of(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = families
        .values()
        .flat_map(|f| &f.samples)
        .filter(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0]
}

#[test]
fn the_strict_parser_rejects_malformed_text() {
    for bad in [
        "broker_x 1\n",                                                // no TYPE
        "# TYPE broker_x counter\nbroker_y 1\n",                       // sample of another family
        "# TYPE broker_x counter\nbroker_x{a=b} 1\n",                  // unquoted label value
        "# TYPE broker_x counter\nbroker_x 1\n# HELP broker_x late\n", // HELP after samples
        "# TYPE broker_x counter\n# TYPE broker_x gauge\n",            // two TYPE lines
        "# TYPE broker_x counter\nbroker_x one\n",                     // not a number
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
    let ok = parse("# HELP h_seconds x\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\",op=\"a\\\"b\"} 0\nh_seconds_sum 0\nh_seconds_count 0\n").unwrap();
    assert_eq!(ok["h_seconds"].samples[0].1[1].1, "a\"b");
}

#[tokio::test]
async fn a_fresh_broker_exports_every_family_with_help_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    let any = "127.0.0.1:0".parse().unwrap();
    c.listen.http = any;
    c.listen.device_ws = any;
    c.listen.app_ws = any;
    c.listen.udp = any;
    c.storage.data_dir = dir.path().to_path_buf();
    c.security.api_token = Secret::new(TOKEN);
    let running = broker::start(&c).await.unwrap();
    let url = format!("http://{}/metrics", running.http);
    let http = reqwest::Client::new();

    // The API token is required, as for the rest of the API.
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let resp = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4"
    );
    let text = resp.text().await.unwrap();
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    // Every family has both lines, and every exported family is catalogued (documented).
    let always = catalog::FAMILIES
        .iter()
        .filter(|f| f.scope == Scope::Always)
        .chain(process::FAMILIES);
    for (name, f) in &families {
        assert!(
            f.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{name}: no HELP"
        );
        assert!(f.kind.is_some(), "{name}: no TYPE");
        assert!(!f.samples.is_empty(), "{name}: no samples");
        let known = catalog::FAMILIES
            .iter()
            .chain(process::FAMILIES)
            .any(|c| c.name == name);
        assert!(known, "{name} is exported but not catalogued");
    }
    for f in always {
        let got = families
            .get(f.name)
            .unwrap_or_else(|| panic!("{} missing from a fresh broker\n{text}", f.name));
        assert_eq!(got.kind.as_deref(), Some(f.kind.as_str()), "{}", f.name);
        assert_eq!(got.help.as_deref(), Some(f.help), "{}", f.name);
    }
    // Counters and gauges exist at 0 before anything happened.
    for (name, labels) in [
        ("broker_connections_total", vec![("transport", "udp")]),
        ("broker_sessions", vec![("transport", "app_ws")]),
        (
            "broker_login_failures_total",
            vec![("transport", "device_ws"), ("reason", "auth_failed")],
        ),
        (
            "broker_login_failures_total",
            vec![("transport", "udp"), ("reason", "rate_limited")],
        ),
        ("broker_commands_total", vec![("result", "timeout")]),
        ("broker_offline_messages", vec![]),
    ] {
        assert_eq!(value_of(&families, name, &labels), 0.0, "{name}{labels:?}");
    }
    for (k, _) in catalog::zero_series() {
        assert!(families.contains_key(k), "{k}");
    }
    // An empty histogram: every bucket and the count at 0.
    assert_eq!(
        value_of(
            &families,
            "broker_latency_seconds_count",
            &[("op", "command")]
        ),
        0.0
    );
    // Build info.
    let build = &families["broker_build_info"].samples;
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].2, 1.0);
    assert!(
        build[0]
            .1
            .contains(&("version".to_string(), env!("CARGO_PKG_VERSION").to_string())),
        "{build:?}"
    );
    // Process figures are this process's, not placeholders.
    let rss = value_of(&families, "process_resident_memory_bytes", &[]);
    assert!(rss > 1_000_000.0, "rss {rss}");
    let fds = value_of(&families, "process_open_fds", &[]);
    let listed = std::fs::read_dir("/proc/self/fd").unwrap().count() as f64;
    assert!((fds - listed).abs() < 16.0, "fds {fds} vs {listed}");
    assert!(value_of(&families, "process_threads", &[]) >= 1.0);
    let start = value_of(&families, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "start {start}, now {now}"
    );
    running.stop().await;
}
