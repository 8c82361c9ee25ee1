//! The real `broker` binary with `[log] format = "json"`: every log line on its stdout is one
//! JSON object with the documented fields (`timestamp`, `level`, `target`, `message`, event
//! fields at the top level), and the lines an operator searches for are there:
//!
//! * refused logins (`login refused`) with `transport`, `peer`, `reason` and, when the login
//!   named one, `terminal`; under a flood of them at most 20 lines per 10 s, then one summary
//!   line (`login refusals not logged one by one`) with the count per reason;
//! * a command timeout names the device;
//! * one `session ended` line per session on every transport, with the protocol's name of the
//!   reason (`HEARTBEAT_TIMEOUT`, `SHUTDOWN`) and never a Rust `Debug` text.
//!
//! Listens on 127.0.0.1 only; signals only the PID it started.

use crate::banner_support;
use crate::comet_support;

use std::time::{Duration, Instant};

use banner_support::{Started, broker_command, start_command, write_config};
use broker::terminal::Address;
use comet_support::{App, Wire, app_token, login};
use serde_json::{Value, json};

/// The device whose configured key differs from the one the test client derives.
const WRONG_KEY_DEVICE: u32 = 9;
const WS_DEVICE: u32 = 77;
const UDP_DEVICE: u32 = 42;
const PHONE: u32 = 5;

/// The first JSON log line matching `pred`, read so far or read from now on (every line read
/// is kept in `b.proc.seen`); panics after `limit` (or when no line comes for 20 s).
fn wait_for(b: &mut Started, limit: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let matching = |l: &str| serde_json::from_str::<Value>(l).ok().filter(|v| pred(v));
    if let Some(v) = b.proc.seen.iter().find_map(|l| matching(l)) {
        return v;
    }
    let deadline = Instant::now() + limit;
    loop {
        let line = b.proc.expect("");
        if let Some(v) = matching(&line) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}:\n{}",
            b.proc.seen.join("\n")
        );
    }
}

fn json_lines(b: &Started) -> Vec<Value> {
    b.proc
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_refusals_timeouts_and_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "device_keys = {{ \"{WRONG_KEY_DEVICE}\" = \"{}\" }}\n\
             [log]\nformat = \"json\"\n\
             [timeouts]\nheartbeat_secs = 1\nsession_secs = 3\n",
            "ab".repeat(32)
        ),
    );
    let mut cmd = broker_command();
    cmd.arg("--config").arg(&config);
    let mut b = start_command(cmd);

    // The start-up line says where the API token really is: this config sets it, so it is not
    // in a secrets.toml (which was never written).
    let listening = wait_for(&mut b, Duration::from_secs(5), "listening line", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("broker listening"))
    });
    let text = listening["message"].as_str().unwrap();
    assert!(
        text.contains("bearer token: security.api_token of the config"),
        "{text}"
    );
    assert!(!text.contains("secrets.toml"), "{text}");

    // A login naming a terminal, refused: the line names it and its peer.
    let wire = Wire::udp(b.udp).await;
    assert!(login(wire, WRONG_KEY_DEVICE, 0).await.is_err());
    let refused = wait_for(&mut b, Duration::from_secs(5), "refusal of device:9", |v| {
        v["message"] == "login refused" && v["terminal"] == "device:9"
    });
    assert_eq!(refused["level"], "WARN", "{refused}");
    assert_eq!(refused["transport"], "udp", "{refused}");
    assert_eq!(refused["reason"], "auth_failed", "{refused}");
    assert!(
        refused["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{refused}"
    );
    for field in ["timestamp", "target"] {
        assert!(refused[field].is_string(), "{field}: {refused}");
    }

    // A flood of refused app logins: at most 20 lines in the interval, then a summary.
    let garbled = format!("{}x", app_token(Address::phone(PHONE), 3600));
    for _ in 0..40 {
        let mut app = App::connect(&b.app_ws).await;
        app.send(json!({"type": "auth", "token": garbled, "since_id": 0}))
            .await;
        let r = app.recv(Duration::from_secs(5)).await.expect("an answer");
        assert_eq!(r["type"], "reject", "{r}");
    }
    let summary = wait_for(&mut b, Duration::from_secs(15), "refusal summary", |v| {
        v["message"] == "login refusals not logged one by one"
    });
    let lines = json_lines(&b);
    let one_by_one = lines
        .iter()
        .filter(|v| v["message"] == "login refused")
        .count();
    assert_eq!(one_by_one, 20, "one line per refusal up to the budget");
    // A refused app login names the terminal its token claims, like a device login does.
    let app_refusal = lines
        .iter()
        .find(|v| v["message"] == "login refused" && v["transport"] == "app_ws")
        .expect("an app refusal line");
    assert_eq!(
        app_refusal["terminal"],
        format!("phone:{PHONE}"),
        "{app_refusal}"
    );
    assert_eq!(app_refusal["reason"], "bad_token", "{app_refusal}");
    // 1 UDP refusal + 40 app refusals = 41; 20 written, 21 summarised.
    assert_eq!(summary["suppressed"], 21, "{summary}");
    // Per reason (`bad_token`, and `rate_limited` once the 20 logins per second per address
    // are used up), adding up to the count.
    let per_reason: u64 = summary["reasons"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|kv| {
            let (reason, n) = kv.split_once('=').expect("reason=count");
            assert!(["bad_token", "rate_limited"].contains(&reason), "{summary}");
            n.parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(per_reason, 21, "{summary}");

    // A WebSocket device that falls silent: its session ends with HEARTBEAT_TIMEOUT.
    let ws_wire = Wire::ws(&b.device_ws).await;
    let _ws_dev = login(ws_wire, WS_DEVICE, 0).await.expect("ws login");
    let ended = wait_for(&mut b, Duration::from_secs(10), "ws session end", |v| {
        v["message"] == "session ended" && v["terminal"] == format!("device:{WS_DEVICE}")
    });
    assert_eq!(ended["transport"], "device_ws", "{ended}");
    assert_eq!(ended["reason"], "HEARTBEAT_TIMEOUT", "{ended}");
    assert_eq!(ended["closed_by"], "broker", "{ended}");

    // A UDP device and a phone; a command the device never answers times out, naming it.
    let udp_dev = login(Wire::udp(b.udp).await, UDP_DEVICE, 0)
        .await
        .expect("udp login");
    let (_app, welcome) = App::login(&b.app_ws, Address::phone(PHONE), 0).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (status, body) = b
        .post(
            &format!("/v1/devices/{UDP_DEVICE}/commands"),
            json!({"name": "relay", "text": "on", "timeout_ms": 300}),
        )
        .await;
    assert_eq!(status, 504, "{body}");
    // Shut down before the 3 s session timeout: both sessions end with SHUTDOWN.
    b.sigterm();
    let timed_out = wait_for(&mut b, Duration::from_secs(5), "command timeout", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("command timed out"))
    });
    assert_eq!(
        timed_out["device"],
        format!("device:{UDP_DEVICE}"),
        "{timed_out}"
    );
    assert_eq!(timed_out["level"], "WARN", "{timed_out}");
    for (terminal, transport) in [
        (format!("device:{UDP_DEVICE}"), "udp"),
        (format!("phone:{PHONE}"), "app_ws"),
    ] {
        let ended = wait_for(
            &mut b,
            Duration::from_secs(10),
            "shutdown session end",
            |v| v["message"] == "session ended" && v["terminal"] == terminal.as_str(),
        );
        assert_eq!(ended["transport"], transport, "{ended}");
        assert_eq!(ended["reason"], "SHUTDOWN", "{ended}");
        assert_eq!(ended["closed_by"], "broker", "{ended}");
    }
    drop(udp_dev);
    let (code, _) = b.wait_exit(Duration::from_secs(15));
    assert_eq!(code, 0);

    // Every log line is JSON (only the banner is plain text), and none holds a Debug text.
    for line in &b.proc.seen {
        if b.banner.contains(line) || line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|_| panic!("a log line that is not JSON: {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v[field].is_string(), "{field} missing: {line}");
        }
        for debug in ["Code(", "Close("] {
            assert!(!line.contains(debug), "a Debug text in: {line}");
        }
    }
}
