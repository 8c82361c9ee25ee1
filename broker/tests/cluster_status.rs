//! `broker cluster status` against a running cluster on the real services from `cargo xtask
//! services up` (feature `services-tests`): one comet and one msgbus in process, RabbitMQ node 1
//! guarded by a real `broker rmqkeeper` child, the status command run as the real binary on a
//! config file like the nodes'.
//!
//! Shown: a healthy cluster lists every node with its terminals and heartbeat, the RabbitMQ node
//! the keeper registered and Redis, and exits 0; with the msgbus gone it exits 1 naming the
//! missing role; an unreachable Redis is a problem; a standalone config exits 2.
//!
//! Run: `cargo test -p broker --features services-tests --test cluster_status -- --nocapture`.
#![cfg(feature = "services-tests")]

mod cluster_support;
mod comet_support;
mod services_env;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use broker::cluster_status::{Report, gather};
use broker::config::Config;
use broker::roles::{start_comet, start_msgbus};
use cluster_support::*;
use comet_support::*;

/// Runs `broker -c <config> cluster status [extra]`.
fn status(config: &Config, dir: &std::path::Path, extra: &[&str]) -> Output {
    let file = dir.join("cluster.toml");
    std::fs::write(&file, toml::to_string(config).unwrap()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("-c")
        .arg(&file)
        .args(["cluster", "status", "--timeout-ms", "4000"])
        .args(extra)
        .output()
        .expect("run broker cluster status")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls the in-process report until `ok` holds (the keeper and the nodes register within a
/// few check intervals).
async fn report_until(config: &Config, what: &str, ok: impl Fn(&Report) -> bool) -> Report {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = gather(config, Duration::from_secs(4)).await.unwrap();
        if ok(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            r.render_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_lists_the_cluster_and_fails_on_what_is_missing() {
    let run = Run::new();
    let _keeper = run.keeper(1);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let comet = start_comet(&run.config(dirs[0].path(), "comet-a"))
        .await
        .unwrap();
    let bus = start_msgbus(&run.config(dirs[1].path(), "msgbus-1"))
        .await
        .unwrap();
    // The operator's copy of the shared config (its node id is unused by the status command).
    let cfg = run.config(dirs[2].path(), "operator");

    // A device online on the comet shows in the comet's terminal count.
    let _device = login(Wire::udp(comet.running.comet.udp).await, 42, 0)
        .await
        .expect("device 42 logs in on comet-a");
    let rabbit1 = run.env["RABBITMQ_1_NODE"].clone();
    let r = report_until(&cfg, "a healthy cluster with device 42 counted", |r| {
        r.problems().is_empty()
            && r.nodes
                .iter()
                .any(|n| n.id == "comet-a" && n.terminals == Some(1))
    })
    .await;
    let nodes: Vec<(&str, &str, Option<bool>)> = r
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.role, n.redis_heartbeat))
        .collect();
    assert_eq!(
        nodes,
        [
            ("comet-a", "comet", Some(true)),
            ("msgbus-1", "msgbus", Some(true))
        ]
    );
    assert!(r.nodes[0].link.is_some(), "a comet shows its link address");
    let rabbits: Vec<(&str, bool)> = r
        .rabbitmq
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.amqp.ok))
        .collect();
    assert_eq!(rabbits, [(rabbit1.as_str(), true)]);
    assert!(r.redis.ok && r.zookeeper.ok);

    // The binary says the same and exits 0.
    let out = status(&cfg, dirs[2].path(), &[]);
    let text = stdout(&out);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    for needle in ["comet-a", "msgbus-1", rabbit1.as_str(), "status: healthy"] {
        assert!(text.contains(needle), "`{needle}` missing:\n{text}");
    }
    assert!(
        !text.contains("guest:guest"),
        "credentials printed:\n{text}"
    );

    // Without the msgbus: exit 1 and the missing role named, in text and JSON.
    bus.stop().await;
    let _ = report_until(&cfg, "the msgbus gone from discovery", |r| {
        !r.nodes.iter().any(|n| n.role == "msgbus")
    })
    .await;
    let out = status(&cfg, dirs[2].path(), &[]);
    let text = stdout(&out);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let want = format!("problem: no msgbus registered under /{}/msgbus", run.id);
    assert!(text.contains(&want), "{text}");
    let out = status(&cfg, dirs[2].path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["healthy"], false);
    assert_eq!(json["nodes"][0]["id"], "comet-a");

    // An unreachable Redis is a problem of its own; the nodes' Redis fields are unknown.
    let mut no_redis = cfg.clone();
    no_redis.redis.url = "redis://127.0.0.1:1/".into();
    let r = gather(&no_redis, Duration::from_secs(3)).await.unwrap();
    assert!(!r.redis.ok);
    assert!(
        r.problems()
            .iter()
            .any(|p| p.starts_with("Redis redis://127.0.0.1:1/ unreachable")),
        "{:?}",
        r.problems()
    );
    assert_eq!(r.nodes[0].redis_heartbeat, None);

    // A standalone config has no cluster to look at: exit 2.
    let standalone = config(dirs[2].path(), broker::terminal::IdProfile::Plug);
    let out = status(&standalone, dirs[2].path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("discovery.mode is `none`"));

    comet.stop().await;
    run.clean_redis().await;
    let c = run.config(dirs[0].path(), "cleanup");
    cleanup_rabbit(&run.env["RABBITMQ_1_AMQP_URL"], &c).await;
}
