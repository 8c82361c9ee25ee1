//! rmqkeeper's health endpoint and metrics, and its reading of the shared config file, against
//! real RabbitMQ node 1 and ZooKeeper from `cargo xtask services up` (feature
//! `services-tests`; run: `cargo test -p broker --features services-tests --test keeper_health`).
//!
//! Three `broker -c FILE rmqkeeper` children read one config file like a cluster node's
//! (`[discovery]`, `cluster.rabbit_root`, `[rmqkeeper]`), two with a flag overriding a key:
//! * the healthy keeper registers node 1 under the file's root; `/healthz` answers 200 with
//!   `registered: true` and `/metrics` shows every keeper family with `rmqkeeper_registered 1`;
//! * a keeper checking a vhost that does not exist sees an unhealthy node: 200 (the keeper does
//!   its job), `rabbit_healthy: false`, failed `aliveness` checks counted, nothing registered;
//! * a keeper without ZooKeeper answers 503.
//!
//! The healthy keeper's output goes to a file, as under a service manager: it has log lines and
//! no ANSI colour codes. Nothing on the RabbitMQ node is changed; the keepers are stopped by
//! their PIDs.
#![cfg(feature = "services-tests")]

mod port_support;

use port_support::free_port;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::discovery::zk::{ZkAuth, ZkSettings};
use broker::keeper::RabbitView;
use broker::metrics::catalog::KEEPER_FAMILIES;
use serde_json::Value;

mod services_env;

const ZK_AUTH: &str = "plugcloud-test:zk-test-password";

/// Kills the keeper children (by PID) when dropped, also when the test fails.
struct Keepers(Vec<Child>);

impl Drop for Keepers {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

/// A keeper on `file` with `extra` flags; with `log`, its output goes to that file at level
/// info (as under a service manager that writes a log file), else nowhere.
fn keeper(file: &std::path::Path, extra: &[&str], log: Option<&std::path::Path>) -> Child {
    let (level, out) = match log {
        Some(path) => ("info", Stdio::from(std::fs::File::create(path).unwrap())),
        None => ("warn", Stdio::null()),
    };
    Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("-c")
        .arg(file)
        .arg("rmqkeeper")
        .args(extra)
        .env("RUST_LOG", level)
        .stdout(out)
        .spawn()
        .expect("spawn broker rmqkeeper")
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}

/// Polls `/healthz` on `port` until `ok(status, body)` holds.
async fn health_until(port: u16, what: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((code, body)) = get(&url).await {
            let v: Value = serde_json::from_str(&body).unwrap();
            if ok(code, &v) {
                return v;
            }
            last = Some((code, v));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}; last answer {last:?}");
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_serve_health_and_metrics_from_the_shared_config() {
    let env: BTreeMap<String, String> = services_env::require(&[
        "ZOOKEEPER_ADDR",
        "RABBITMQ_1_AMQP_ADDR",
        "RABBITMQ_1_MGMT_URL",
        "RABBITMQ_1_NODE",
        "RABBITMQ_1_MGMT_USER",
        "RABBITMQ_1_MGMT_PASSWORD",
    ]);
    let run = format!("kh{}x{}", broker::router::now_ms(), rand::random::<u16>());
    let root = format!("/{run}-rabbit");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    let (healthy_port, sick_port, no_zk_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        &file,
        format!(
            r#"[discovery]
zk_servers = "{zk}"
zk_auth = "{ZK_AUTH}"
session_timeout_ms = 4000

[cluster]
rabbit_root = "{root}"

[rmqkeeper]
amqp_url = "amqp://{amqp}/%2f"
mgmt_url = "{mgmt}"
mgmt_user = "{user}"
mgmt_password = "{password}"
check_interval_ms = 300
listen = "127.0.0.1:{healthy_port}"
"#,
            zk = env["ZOOKEEPER_ADDR"],
            amqp = env["RABBITMQ_1_AMQP_ADDR"],
            mgmt = env["RABBITMQ_1_MGMT_URL"],
            user = env["RABBITMQ_1_MGMT_USER"],
            password = env["RABBITMQ_1_MGMT_PASSWORD"],
        ),
    )
    .unwrap();
    let sick_listen = format!("127.0.0.1:{sick_port}");
    let no_zk_listen = format!("127.0.0.1:{no_zk_port}");
    let no_vhost = format!("{run}-no-such-vhost");
    let sick_name = format!("{run}-sick");
    let log = dir.path().join("rmqkeeper.log");
    let _keepers = Keepers(vec![
        keeper(&file, &[], Some(&log)),
        // A fixed node name: without one, a node never seen healthy has no name to register
        // under, and the keeper opens no session (503) until it has.
        keeper(
            &file,
            &[
                "--vhost",
                &no_vhost,
                "--node-name",
                &sick_name,
                "--listen",
                &sick_listen,
            ],
            None,
        ),
        keeper(
            &file,
            &["--zk-servers", "127.0.0.1:1", "--listen", &no_zk_listen],
            None,
        ),
    ]);

    // Healthy: registered under the file's root, where a cluster node's view finds it.
    let node = env["RABBITMQ_1_NODE"].clone();
    let h = health_until(healthy_port, "the healthy keeper registered", |code, v| {
        code == 200 && v["registered"] == true
    })
    .await;
    assert_eq!(h["zookeeper"], true);
    assert_eq!(h["rabbit_healthy"], true);
    assert_eq!(h["node"], node.as_str());
    let view = RabbitView::start(
        ZkSettings {
            servers: env["ZOOKEEPER_ADDR"].clone(),
            session_timeout: Duration::from_secs(4),
            auth: ZkAuth::parse(ZK_AUTH),
        },
        &root,
    )
    .unwrap();
    let rx = view.watch();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.borrow().nodes.iter().all(|n| n.node != node) {
        assert!(Instant::now() < deadline, "node not under {root}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    view.shutdown().await;
    let (code, text) = get(&format!("http://127.0.0.1:{healthy_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    for f in KEEPER_FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {} {}", f.name, f.kind.as_str())),
            "{} missing:\n{text}",
            f.name
        );
    }
    assert_eq!(sample(&text, "rmqkeeper_registered"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "rmqkeeper_rabbit_healthy"), Some(1.0));
    assert_eq!(sample(&text, "rmqkeeper_zk_connected"), Some(1.0));
    // Its log file has lines and no ANSI colour codes (colour only on a terminal).
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.trim().is_empty(),
        "the keeper logged nothing at info"
    );
    assert!(
        !logged.contains('\x1b'),
        "ANSI escape codes in the keeper's log file:\n{logged}"
    );
    assert_eq!(sample(&text, "rmqkeeper_zk_sessions_total"), Some(1.0));
    assert_eq!(
        sample(&text, r#"rmqkeeper_registrations_total{to="registered"}"#),
        Some(1.0)
    );
    assert!(sample(&text, r#"rmqkeeper_checks_total{result="healthy"}"#).unwrap() >= 1.0);
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);

    // Unhealthy node (its vhost does not exist): the keeper is fine, the node is not used.
    let h = health_until(sick_port, "a failed aliveness check", |code, v| {
        code == 200 && v["rabbit_healthy"] == false
    })
    .await;
    assert_eq!(h["registered"], false);
    assert_eq!(h["zookeeper"], true);
    assert!(
        h["rabbit_problem"]
            .as_str()
            .unwrap()
            .starts_with("aliveness: "),
        "{h}"
    );
    let (_, text) = get(&format!("http://127.0.0.1:{sick_port}/metrics"))
        .await
        .unwrap();
    assert!(sample(&text, r#"rmqkeeper_checks_total{result="aliveness"}"#).unwrap() >= 1.0);
    assert_eq!(sample(&text, "rmqkeeper_rabbit_healthy"), Some(0.0));
    assert_eq!(sample(&text, "rmqkeeper_registered"), Some(0.0));

    // No ZooKeeper: the keeper cannot do its job, 503. It still checks the node; until its
    // first check ends, `rabbit_healthy` is null (not known yet), so wait for that answer too.
    let h = health_until(
        no_zk_port,
        "503 without ZooKeeper, node checked",
        |code, v| code == 503 && !v["rabbit_healthy"].is_null(),
    )
    .await;
    assert_eq!(h["zookeeper"], false);
    assert_eq!(h["rabbit_healthy"], true, "{h}");
}
