//! Restarting ZooKeeper under a running cluster (every node re-registers), on the real services from `cargo xtask services up` (feature
//! `services-tests`).
//!
//! Run: `cargo test -p broker --features services-tests --test zk_restart -- --nocapture`.
//!
//! The test stops the development ZooKeeper with `scripts/services.sh down --only zookeeper`
//! (which stops only the PID `up` recorded) and starts it again with `up --only zookeeper`
//! (also when the test panics while it is down). It has its own test binary, so no other test
//! of ours runs meanwhile (`cargo test` runs test binaries one after another); it is the only
//! test in this file.
//!
//! Two comets and two msgbus nodes run in process, two real `broker rmqkeeper` processes guard
//! the RabbitMQ nodes. While ZooKeeper is down every node must keep serving with its last known
//! view (flagged stale): lookups, pushes and HTTP commands across comets. After the restart,
//! every comet's, msgbus's and keeper's znode must be back within [`BACK_WITHIN`] and every
//! node's view healthy again.
#![cfg(feature = "services-tests")]

mod cluster_support;
mod comet_support;
mod services_env;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use broker::cluster::ClusterNode;
use broker::discovery::Role;
use broker::roles::{start_comet, start_msgbus};
use cluster_support::*;
use comet_support::*;
use serde_json::json;
use zookeeper_client::Client;

/// How long after ZooKeeper is ready again every znode must be back.
const BACK_WITHIN: Duration = Duration::from_secs(30);
/// How long ZooKeeper stays down (longer than the session timeout).
const DOWN_FOR: Duration = Duration::from_secs(6);
/// The session timeout of every node and keeper (`Run::config`, `Run::keeper`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the znodes must stay unchanged to count as settled.
const STABLE: Duration = Duration::from_secs(3);

/// Runs `scripts/services.sh CMD --only zookeeper` of the checkout whose services are running
/// (`services_dir` is `SERVICES_DIR` of the env file, `<root>/.cache/services`, read before the
/// stop: `down` removes the ZooKeeper keys from the env file).
fn services_script(services_dir: &str, cmd: &str) -> Result<(), String> {
    let root = PathBuf::from(services_dir).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts/services.sh"))
        .args([cmd, "--only", "zookeeper"])
        .current_dir(&root)
        .output()
        .map_err(|e| format!("run scripts/services.sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "services.sh {cmd} --only zookeeper: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Starts ZooKeeper again when dropped while armed (also when the test panics); holds
/// `SERVICES_DIR`.
struct ZkBackUp(bool, String);

impl Drop for ZkBackUp {
    fn drop(&mut self) {
        if self.0 {
            // No panic here: this may run while the test unwinds.
            if let Err(e) = services_script(&self.1, "up") {
                eprintln!("starting ZooKeeper again failed: {e}");
            }
        }
    }
}

/// The children of each path with the ephemeral owner (session) of each child, from a fresh
/// client; `None` while ZooKeeper does not answer.
async fn znodes(zk: &str, paths: &[String]) -> Option<BTreeSet<(String, i64)>> {
    let connect = Client::connector()
        .with_auth("digest", ZK_AUTH.as_bytes())
        .connect(zk);
    let client = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    let mut out = BTreeSet::new();
    for p in paths {
        let children = client.list_children(p).await.unwrap_or_default();
        for c in children {
            let path = format!("{p}/{c}");
            if let Ok((_, stat)) = client.get_data(&path).await {
                out.insert((path, stat.ephemeral_owner));
            }
        }
    }
    Some(out)
}

fn paths_of(z: &BTreeSet<(String, i64)>) -> BTreeSet<String> {
    z.iter().map(|(p, _)| p.clone()).collect()
}

fn view_ok(n: &ClusterNode, healthy: bool) -> bool {
    let v = n.view.borrow();
    v.healthy == healthy
        && v.with_role(Role::Comet).count() == 2
        && v.with_role(Role::Msgbus).count() == 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_zookeeper_every_node_registers_again_and_serving_goes_on() {
    let run = Run::new();
    let zk = run.env["ZOOKEEPER_ADDR"].clone();
    let _k1 = run.keeper(1);
    let _k2 = run.keeper(2);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfg = |i: usize, node: &str| {
        let mut c = run.config(dirs[i].path(), node);
        c.rabbitmq.push_exchange = String::new();
        c
    };
    let cfg_a = cfg(0, "comet-a");
    let comet_a = start_comet(&cfg_a).await.unwrap();
    let comet_b = start_comet(&cfg(1, "comet-b")).await.unwrap();
    let bus1 = start_msgbus(&cfg(2, "msgbus-1")).await.unwrap();
    let bus2 = start_msgbus(&cfg(3, "msgbus-2")).await.unwrap();
    let nodes = [&comet_a, &comet_b, &bus1, &bus2];

    let root = format!("/{}", run.id);
    let paths = vec![
        format!("{root}/comet"),
        format!("{root}/msgbus"),
        run.rabbit_root(),
    ];
    let want: BTreeSet<String> = [
        format!("{root}/comet/comet-a"),
        format!("{root}/comet/comet-b"),
        format!("{root}/msgbus/msgbus-1"),
        format!("{root}/msgbus/msgbus-2"),
        format!("{}/{}", run.rabbit_root(), run.env["RABBITMQ_1_NODE"]),
        format!("{}/{}", run.rabbit_root(), run.env["RABBITMQ_2_NODE"]),
    ]
    .into();
    let t = Instant::now();
    let before = loop {
        if let Some(z) = znodes(&zk, &paths).await
            && paths_of(&z) == want
        {
            break z;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "znodes never all registered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_until("views and links complete", Duration::from_secs(20), || {
        nodes.iter().all(|n| view_ok(n, true))
            && [&bus1, &bus2]
                .iter()
                .all(|b| b.links.as_ref().unwrap().connected().len() == 2)
    })
    .await;
    let mut plug = login(Wire::udp(comet_b.running.comet.udp).await, 42, 0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // ZooKeeper goes down.
    let services_dir = run.env["SERVICES_DIR"].clone();
    let mut back_up = ZkBackUp(true, services_dir.clone());
    let t = Instant::now();
    services_script(&services_dir, "down").unwrap();
    let down_at = Instant::now();
    eprintln!("ZooKeeper stopped in {:?}", t.elapsed());
    let t = wait_until(
        "every node to flag its view stale",
        Duration::from_secs(15),
        || nodes.iter().all(|n| view_ok(n, false)),
    )
    .await;
    eprintln!("every node serving its last known view (stale) {t:?} after the stop");

    // Meanwhile every node keeps serving: lookup from the last view, pushes and commands
    // across comets.
    let (s, v) = api(
        &bus1,
        reqwest::Method::GET,
        "/v1/nodes/lookup?kind=device&id=42",
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stale"], json!(true), "{v}");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2, "{v}");
    let (s, v) = api(
        &bus2,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": {"terminal": {"kind": "device", "id": 42}}, "text": "zk-down"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let got: Vec<Vec<u8>> = device_delivers(&mut plug, Duration::from_secs(1))
        .await
        .into_iter()
        .map(|g| g.1)
        .collect();
    assert_eq!(got, vec![b"zk-down".to_vec()]);
    let ((s, v), answered) = tokio::join!(
        api(
            &comet_a,
            reqwest::Method::POST,
            "/v1/devices/42/commands",
            Some(json!({"name": "relay", "text": "zk-down", "timeout_ms": 5000})),
        ),
        answer_one_command(&mut plug),
    );
    assert_eq!(s, 200, "command while ZooKeeper is down: {v}");
    assert!(
        answered.is_ok(),
        "no command reached the device: {answered:?}; {v}"
    );
    let text = scrape(&comet_a).await;
    assert_eq!(
        sample(&text, "broker_discovery_healthy"),
        Some(0.0),
        "{text}"
    );

    // ZooKeeper comes back (the script waits until it serves).
    tokio::time::sleep(DOWN_FOR.saturating_sub(down_at.elapsed())).await;
    let t = Instant::now();
    services_script(&services_dir, "up").unwrap();
    back_up.0 = false;
    eprintln!(
        "ZooKeeper down for {:?}; `up` took {:?}",
        down_at.elapsed(),
        t.elapsed()
    );
    let up_at = Instant::now();
    let first = loop {
        if let Some(z) = znodes(&zk, &paths).await
            && paths_of(&z) == want
        {
            break up_at.elapsed();
        }
        assert!(
            up_at.elapsed() < BACK_WITHIN,
            "not every znode is back {BACK_WITHIN:?} after ZooKeeper: {:?}",
            znodes(&zk, &paths).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_until("every view healthy again", BACK_WITHIN, || {
        nodes.iter().all(|n| view_ok(n, true))
    })
    .await;
    let healthy = up_at.elapsed();
    // ZooKeeper restores the sessions it had, with a fresh timeout: a znode still owned by a
    // session its client gave up on disappears one session timeout after the start. What is
    // there after that must be owned by live sessions: all present and unchanged for `STABLE`.
    tokio::time::sleep(SESSION_TIMEOUT * 3 / 2).await;
    let mut last: Option<(BTreeSet<(String, i64)>, Instant)> = None;
    let after = loop {
        match znodes(&zk, &paths).await {
            Some(z) if paths_of(&z) == want => match &last {
                Some((l, since)) if *l == z => {
                    if since.elapsed() >= STABLE {
                        break z;
                    }
                }
                _ => last = Some((z, Instant::now())),
            },
            _ => last = None,
        }
        assert!(
            up_at.elapsed() < BACK_WITHIN,
            "znodes not stable {BACK_WITHIN:?} after ZooKeeper: {:?}",
            znodes(&zk, &paths).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stable = up_at.elapsed();
    let new_sessions = after
        .iter()
        .filter(|z| !before.contains(z))
        .map(|(p, _)| p.as_str())
        .collect::<Vec<_>>();
    eprintln!(
        "after ZooKeeper was ready: every znode there {first:?}, every view healthy {healthy:?}, \
         every znode owned by a live session and stable {STABLE:?} at {stable:?}; \
         znodes re-created under a new session: {new_sessions:?}"
    );
    // ZooKeeper was down longer than the session timeout: every client gave its session up,
    // so every comet, msgbus and keeper must have registered again under a new session.
    assert_eq!(
        new_sessions.len(),
        want.len(),
        "every znode re-created under a new session: {new_sessions:?}"
    );
    assert!(nodes.iter().all(|n| view_ok(n, true)));
    let text = scrape(&comet_a).await;
    assert_eq!(
        sample(&text, "broker_discovery_healthy"),
        Some(1.0),
        "{text}"
    );

    // Still serving afterwards.
    let ((s, v), answered) = tokio::join!(
        api(
            &bus1,
            reqwest::Method::POST,
            "/v1/devices/42/commands",
            Some(json!({"name": "relay", "text": "zk-back", "timeout_ms": 5000})),
        ),
        answer_one_command(&mut plug),
    );
    assert_eq!(
        s,
        200,
        "command after the restart: {v}; bus1 links to {:?}",
        bus1.links.as_ref().unwrap().connected()
    );
    assert!(
        answered.is_ok(),
        "no command reached the device: {answered:?}; {v}"
    );

    for n in [comet_a, comet_b, bus1, bus2] {
        n.stop().await;
    }
    cleanup_rabbit(&run.env["RABBITMQ_1_AMQP_URL"], &cfg_a).await;
    cleanup_rabbit(&run.env["RABBITMQ_2_AMQP_URL"], &cfg_a).await;
    run.clean_redis().await;
}
