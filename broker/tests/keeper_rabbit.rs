//! rmqkeeper against real RabbitMQ node 2 and ZooKeeper from `cargo xtask services up` (feature
//! `services-tests`; run: `cargo test -p broker --features services-tests --test keeper_rabbit`).
//!
//! Runs the `broker rmqkeeper` binary, watches its znode with a plain client and with
//! [`RabbitView`], makes the node unhealthy with `rabbitmqctl stop_app` and healthy again with
//! `start_app` (a guard restarts the app if the test fails half-way).
#![cfg(feature = "services-tests")]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::discovery::zk::{ZkAuth, ZkSettings};

/// The digest credentials of the keeper and the view (`--zk-auth`, `discovery.zk_auth`).
const ZK_AUTH: &str = "plugcloud-test:zk-test-password";
use broker::keeper::{RabbitNode, RabbitView};
use zookeeper_client::Client;

mod services_env;

/// The service environment this test needs (see `services_env`).
fn services() -> BTreeMap<String, String> {
    services_env::require(&[
        "ZOOKEEPER_ADDR",
        "RABBITMQ_2_MGMT_URL",
        "RABBITMQ_2_AMQP_URL",
    ])
}

fn rabbitmqctl(node: &str, action: &str) {
    let out = Command::new("rabbitmqctl")
        .args(["-n", node, action])
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Restarts the RabbitMQ app and stops the keeper (by its PID) whatever happens in the test.
struct Guard {
    node: String,
    stopped_app: bool,
    keeper: Option<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.stopped_app {
            let _ = Command::new("rabbitmqctl")
                .args(["-n", &self.node, "start_app"])
                .output();
        }
        if let Some(mut k) = self.keeper.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

async fn wait_znode(zk: &Client, path: &str, present: bool, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let exists = zk.check_stat(path).await.unwrap().is_some();
        if exists == present {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{path}: still {} after {within:?}",
            if present { "absent" } else { "present" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_follows_rabbitmq_health() {
    let env = services();
    let node = env["RABBITMQ_2_NODE"].clone();
    let zk_addr = env["ZOOKEEPER_ADDR"].clone();
    let mgmt = env["RABBITMQ_2_MGMT_URL"].replacen(
        "http://",
        &format!(
            "http://{}:{}@",
            env["RABBITMQ_2_MGMT_USER"], env["RABBITMQ_2_MGMT_PASSWORD"]
        ),
        1,
    );
    let root = format!("/test-keeper-{}", std::process::id());
    let interval = Duration::from_millis(1000);
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("keeper.log");
    let log = std::fs::File::create(&log_path).unwrap();

    let view = RabbitView::start(
        ZkSettings {
            servers: zk_addr.clone(),
            session_timeout: Duration::from_secs(10),
            auth: ZkAuth::parse(ZK_AUTH),
        },
        &root,
    )
    .unwrap();
    let mut rabbits = view.watch();

    let keeper = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "rmqkeeper",
            "--amqp-url",
            &env["RABBITMQ_2_AMQP_URL"],
            "--mgmt-url",
            &mgmt,
            "--zk-servers",
            &zk_addr,
            "--zk-auth",
            ZK_AUTH,
            "--root",
            &root,
            "--check-interval-ms",
            &interval.as_millis().to_string(),
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let keeper_pid = keeper.id();
    let mut guard = Guard {
        node: node.clone(),
        stopped_app: false,
        keeper: Some(keeper),
    };

    let zk = Client::connector()
        .with_auth("digest", ZK_AUTH.as_bytes())
        .connect(&zk_addr)
        .await
        .unwrap();
    let path = format!("{root}/{node}");
    let took = wait_znode(&zk, &path, true, Duration::from_secs(15)).await;
    eprintln!("registered {took:?} after start");
    let (data, stat) = zk.get_data(&path).await.unwrap();
    assert_ne!(stat.ephemeral_owner, 0, "ephemeral");
    let published: RabbitNode = serde_json::from_slice(&data).unwrap();
    assert_eq!(published.node, node);
    assert!(
        !published.amqp_url.contains('@'),
        "no credentials published: {}",
        published.amqp_url
    );
    assert_eq!(
        published
            .amqp_url_with_credentials("guest", "guest")
            .unwrap(),
        env["RABBITMQ_2_AMQP_URL"]
    );
    tokio::time::timeout(
        Duration::from_secs(5),
        rabbits.wait_for(|r| r.healthy && r.nodes == [published.clone()]),
    )
    .await
    .expect("RabbitView sees the node")
    .unwrap();

    // Unhealthy: the znode goes within two check intervals.
    guard.stopped_app = true;
    rabbitmqctl(&node, "stop_app");
    let took = wait_znode(&zk, &path, false, interval * 2).await;
    eprintln!("stop_app -> znode removed after {took:?} (interval {interval:?})");
    tokio::time::timeout(
        Duration::from_secs(5),
        rabbits.wait_for(|r| r.nodes.is_empty()),
    )
    .await
    .expect("RabbitView drops the node")
    .unwrap();

    // Healthy again: registered again.
    rabbitmqctl(&node, "start_app");
    guard.stopped_app = false;
    let took = wait_znode(&zk, &path, true, Duration::from_secs(20)).await;
    eprintln!("start_app -> registered again after {took:?}");
    tokio::time::timeout(
        Duration::from_secs(5),
        rabbits.wait_for(|r| r.nodes.len() == 1),
    )
    .await
    .expect("RabbitView sees the node again")
    .unwrap();

    // SIGTERM: clean exit 0, znode removed at once.
    let status = Command::new("kill")
        .args(["-TERM", &keeper_pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = guard.keeper.take().unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    wait_znode(&zk, &path, false, Duration::from_secs(1)).await;

    let log = std::fs::read_to_string(&log_path).unwrap();
    for want in [
        &format!("rmqkeeper: {node} healthy"),
        "rmqkeeper: registered",
        "rmqkeeper: removed (unhealthy)",
        "rmqkeeper: stopping; removed",
    ] {
        assert!(log.contains(want), "log lacks `{want}`:\n{log}");
    }
    // Which check fails first depends on where `stop_app` catches the
    // management plugin: aliveness refused, or an alarms or port-listener
    // request cut off mid-reply after aliveness passed.
    let went_unhealthy = ["aliveness", "alarms", "port-listener"]
        .iter()
        .any(|check| {
            log.contains(&format!(
                "rmqkeeper: {node} unhealthy: {check} check failed"
            ))
        });
    assert!(
        went_unhealthy,
        "log lacks `{node} unhealthy: <check> check failed`:\n{log}"
    );
    assert_eq!(
        log.matches("rmqkeeper: registered").count(),
        2,
        "registered twice (start, after start_app):\n{log}"
    );
    view.shutdown().await;
    let _ = zk.delete(&root, None).await;
}
