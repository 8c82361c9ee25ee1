//! `broker load` against the real `broker` binary: a small run is clean (every device logs in,
//! every upload is acknowledged), what it reports as acknowledged is in the durable spool, the
//! memory figures come from the broker's PID, and a wrong fleet key is reported as failed logins
//! with exit status 1.

use serde_json::Value;

use crate::proc_support;
use proc_support::{Proc, api, setup};

/// Runs `broker load <args> --json` and returns its exit code and report.
fn load(config: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let mut run = Proc::spawn(config, &[&["load", "--json"], args].concat());
    let code = run.wait_exit();
    let line = run.expect("{\"devices\":");
    (
        code,
        serde_json::from_str(&line).expect("the report is JSON"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_is_clean_and_every_acknowledged_upload_is_durable() {
    let s = setup();
    // Every simulated device logs in from 127.0.0.1: lift the per-address login rate limit.
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config.push_str("[limits]\nlogin_attempts_per_ip_per_sec = 10000\n");
    std::fs::write(&s.config, config).unwrap();
    let mut broker = Proc::spawn(&s.config, &[]);
    broker.expect("HTTP API on http://");
    let pid = broker.child.id().to_string();

    let (code, report) = load(
        &s.config,
        &[
            "--devices",
            "20",
            "--login-rate",
            "200",
            "--duration",
            "2",
            "--upload-interval",
            "200",
            "--broker-pid",
            &pid,
        ],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["devices"], 20);
    assert_eq!(report["logged_in"], 20);
    assert_eq!(report["login_latency"]["count"], 20);
    let sent = report["uploads_sent"].as_u64().unwrap();
    assert!(sent >= 20, "each device uploads at least once: {report}");
    assert_eq!(report["uploads_acked"], sent);
    assert_eq!(report["ack_latency"]["count"], sent);
    assert!(report["memory"]["connected_kib"].as_u64().unwrap() > 0);
    assert!(report["bytes_per_session"].is_u64(), "{report}");

    // Acknowledged means stored: the spool holds exactly the acknowledged uploads.
    let (status, page) = api(
        &s,
        reqwest::Method::GET,
        "/v1/uploads?after=0&limit=1",
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["head"].as_u64(), Some(sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_fleet_key_is_reported_as_failed_logins() {
    let s = setup();
    let mut broker = Proc::spawn(&s.config, &[]);
    broker.expect("HTTP API on http://");
    let wrong = "22".repeat(32);
    let (code, report) = load(
        &s.config,
        &["--devices", "5", "--duration", "0", "--master-key", &wrong],
    );
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["logged_in"], 0);
    assert_eq!(
        report["login_failures"]["rejected: AUTH_FAILED"], 5,
        "{report}"
    );
    assert_eq!(report["uploads_sent"], 0);
}
