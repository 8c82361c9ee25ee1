//! Support for the cluster tests on real services (`cluster_e2e`, `cluster_order`,
//! `cluster_session`, `fault_comet_pause`, `fault_redis_restart`, `zk_restart`,
//! `cluster_client_lookup`): the services' env file, a [`Run`] with names unique to one test run
//! (Redis key prefix, znode roots, RabbitMQ exchanges and queues) and node configs, [`Nodes`]
//! (in-process comets and msgbus nodes started and linked), comet ([`CometProc`]) and
//! rmqkeeper child processes, the HTTP API, `/metrics`, and a test device
//! answering commands.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::cluster::ClusterNode;
use broker::config::{Config, Secret};
use broker::discovery::DiscoveryConfig;
use broker::discovery::config::DiscoveryMode;
use broker::discovery::zk::{ZkAuth, ZkSettings};
use broker::roles::{start_comet, start_msgbus};
use broker::terminal::IdProfile;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};
use shared_protocol::frame::Body;

use crate::comet_support::http_support::ApiClient;
use crate::comet_support::*;

/// The service environment this test needs (see `services_env`).
pub fn services() -> BTreeMap<String, String> {
    crate::services_env::require(&["REDIS_URL", "ZOOKEEPER_ADDR", "RABBITMQ_2_AMQP_URL"])
}

/// Check interval of the keepers (the znode must go within two of them).
pub const CHECK_MS: u64 = 1000;

/// The test cluster's ZooKeeper digest credentials (`discovery.zk_auth`, `--zk-auth`).
pub const ZK_AUTH: &str = "plugcloud-test:zk-test-password";

/// The test cluster's key (`cluster.link_key`).
pub const LINK_KEY: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";

/// Names unique to this run.
pub struct Run {
    pub id: String,
    pub env: BTreeMap<String, String>,
}

impl Run {
    pub fn new() -> Run {
        // The in-process nodes' logs: captured, shown with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,broker=info")),
            )
            .try_init();
        Run {
            id: format!("e2e{}x{}", broker::router::now_ms(), rand::random::<u16>()),
            env: services(),
        }
    }

    /// Deletes this run's Redis keys.
    pub async fn clean_redis(&self) {
        let client = redis::Client::open(self.env["REDIS_URL"].as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.id))
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .unwrap();
        }
    }

    pub fn rabbit_root(&self) -> String {
        format!("/{}-rabbit", self.id)
    }

    /// The ZooKeeper settings of this run's nodes (with their digest credentials).
    pub fn zk_settings(&self, session_timeout: Duration) -> ZkSettings {
        ZkSettings {
            servers: self.env["ZOOKEEPER_ADDR"].clone(),
            session_timeout,
            auth: ZkAuth::parse(ZK_AUTH),
        }
    }

    /// The TOML config of a comet run as a child process (the keys docs/deployment.md
    /// shows), with a ZooKeeper session of `session_timeout`.
    pub fn comet_toml(
        &self,
        dir: &std::path::Path,
        node: &str,
        session_timeout: Duration,
    ) -> String {
        let e = &self.env;
        format!(
            r#"[listen]
http = "127.0.0.1:0"
device_ws = "127.0.0.1:0"
app_ws = "127.0.0.1:0"
udp = "127.0.0.1:0"

[storage]
data_dir = "{dir}"

[security]
api_token = "{API_TOKEN}"
fleet_master_key = "{master}"
token_secret = "{token}"

[discovery]
mode = "zookeeper"
zk_servers = "{zk}"
root = "/{id}"
session_timeout_ms = {timeout}
node_id = "{node}"
zk_auth = "{zk_auth}"

[redis]
url = "{redis}"
key_prefix = "{id}:"

[rabbitmq]
urls = ["{r1}", "{r2}"]
upload_exchange = "{id}.uploads"
upload_queue = "{id}.uploads"
push_exchange = ""

[cluster]
link_key = "{link_key}"
link_listen = "127.0.0.1:0"
heartbeat_ms = 300
node_ttl_ms = 1500
sweep_interval_ms = 500
reconcile_ms = 200
rabbit_root = ""
"#,
            dir = dir.display(),
            master = hex::encode(MASTER),
            token = hex::encode(TOKEN_SECRET),
            zk = e["ZOOKEEPER_ADDR"],
            id = self.id,
            redis = e["REDIS_URL"],
            r1 = e["RABBITMQ_1_AMQP_URL"],
            r2 = e["RABBITMQ_2_AMQP_URL"],
            zk_auth = ZK_AUTH,
            timeout = session_timeout.as_millis(),
            link_key = LINK_KEY,
        )
    }

    pub fn config(&self, dir: &std::path::Path, node: &str) -> Config {
        let mut c = config(dir, IdProfile::Plug);
        c.discovery = DiscoveryConfig {
            mode: DiscoveryMode::Zookeeper,
            zk_servers: self.env["ZOOKEEPER_ADDR"].clone(),
            root: format!("/{}", self.id),
            session_timeout_ms: 4000,
            load_update_secs: 1,
            node_id: node.into(),
            zk_auth: Secret::new(ZK_AUTH),
            ..DiscoveryConfig::default()
        };
        c.cluster.link_key = Secret::new(LINK_KEY);
        c.redis.url = self.env["REDIS_URL"].clone();
        c.redis.key_prefix = format!("{}:", self.id);
        c.rabbitmq.upload_exchange = format!("{}.uploads", self.id);
        c.rabbitmq.upload_queue = format!("{}.uploads", self.id);
        c.rabbitmq.push_exchange = format!("{}.pushes", self.id);
        c.rabbitmq.push_queue = format!("{}.msgbus.pushes", self.id);
        c.rabbitmq.confirm_timeout_ms = 2000;
        c.rabbitmq.connect_timeout_ms = 1000;
        c.rabbitmq.retry_interval_ms = 200;
        c.cluster.link_listen = "127.0.0.1:0".parse().unwrap();
        c.cluster.heartbeat_ms = 300;
        c.cluster.node_ttl_ms = 1500;
        c.cluster.sweep_interval_ms = 500;
        c.cluster.reconcile_ms = 200;
        c.cluster.rabbit_root = self.rabbit_root();
        c
    }

    /// [`Run::config`] for a node that finds RabbitMQ by static URLs (both nodes of the
    /// services) instead of rmqkeeper discovery, with no push consumer: what the cluster tests
    /// that are not about RabbitMQ run on.
    pub fn node_config(&self, dir: &std::path::Path, node: &str) -> Config {
        let mut c = self.config(dir, node);
        c.cluster.rabbit_root = String::new();
        c.rabbitmq.push_exchange = String::new();
        c.rabbitmq.urls = vec![
            self.env["RABBITMQ_1_AMQP_URL"].clone(),
            self.env["RABBITMQ_2_AMQP_URL"].clone(),
        ];
        c
    }

    pub fn keeper(&self, n: u8) -> Keeper {
        let e = &self.env;
        let amqp = e[&format!("RABBITMQ_{n}_AMQP_ADDR")].clone();
        let child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args([
                "rmqkeeper",
                "--amqp-url",
                &format!("amqp://{amqp}/%2f"),
                "--mgmt-url",
                &e[&format!("RABBITMQ_{n}_MGMT_URL")],
                "--mgmt-user",
                &e[&format!("RABBITMQ_{n}_MGMT_USER")],
                "--mgmt-password",
                &e[&format!("RABBITMQ_{n}_MGMT_PASSWORD")],
                "--zk-servers",
                &e["ZOOKEEPER_ADDR"],
                "--zk-auth",
                ZK_AUTH,
                "--root",
                &self.rabbit_root(),
                "--check-interval-ms",
                &CHECK_MS.to_string(),
                "--session-timeout-ms",
                "4000",
            ])
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn rmqkeeper");
        Keeper(child)
    }
}

/// In-process comets and msgbus nodes of one [`Run`], each on [`Run::node_config`] (changed by
/// the test's `tweak`) in its own data directory, started in the order given and linked.
pub struct Nodes {
    pub run: Run,
    pub comets: Vec<ClusterNode>,
    pub buses: Vec<ClusterNode>,
    pub dirs: Vec<tempfile::TempDir>,
}

impl Nodes {
    /// Starts the comets `comets`, then the msgbus nodes `buses`, and waits (20 s at most) until
    /// every msgbus is linked to every comet and every comet to every msgbus.
    pub async fn start(comets: &[&str], buses: &[&str], tweak: impl Fn(&mut Config)) -> Nodes {
        let run = Run::new();
        let mut dirs = Vec::new();
        let mut cfg = |node: &str| {
            dirs.push(tempfile::tempdir().unwrap());
            let mut c = run.node_config(dirs.last().unwrap().path(), node);
            tweak(&mut c);
            c
        };
        let mut started_comets = Vec::new();
        for node in comets {
            started_comets.push(start_comet(&cfg(node)).await.unwrap());
        }
        let mut started_buses = Vec::new();
        for node in buses {
            started_buses.push(start_msgbus(&cfg(node)).await.unwrap());
        }
        let bus_refs: Vec<&ClusterNode> = started_buses.iter().collect();
        wait_linked(&bus_refs, comets.len(), Duration::from_secs(20)).await;
        wait_until(
            "every comet linked to every msgbus",
            Duration::from_secs(20),
            || {
                started_comets
                    .iter()
                    .all(|c| c.comet_links.as_ref().unwrap().connected().len() == buses.len())
            },
        )
        .await;
        Nodes {
            run,
            comets: started_comets,
            buses: started_buses,
            dirs,
        }
    }

    /// Stops every node and deletes the run's Redis keys.
    pub async fn stop(self) {
        stop_all(&self.run, self.comets.into_iter().chain(self.buses)).await;
    }
}

/// Waits until each of `buses` is linked to `comets` comets (in process or child processes).
pub async fn wait_linked(buses: &[&ClusterNode], comets: usize, limit: Duration) {
    wait_until("every msgbus linked to every comet", limit, || {
        buses
            .iter()
            .all(|m| m.links.as_ref().unwrap().connected().len() == comets)
    })
    .await;
}

/// Stops `nodes` and deletes the run's Redis keys.
pub async fn stop_all(run: &Run, nodes: impl IntoIterator<Item = ClusterNode>) {
    for n in nodes {
        n.stop().await;
    }
    run.clean_redis().await;
}

/// Pushes `text` to `target` (the push API's target object) through `node`; the msg_id when
/// answered 200.
pub async fn push_text(node: &ClusterNode, target: Value, text: &str) -> Option<u64> {
    let (s, v) = api(
        node,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": target, "text": text})),
    )
    .await;
    (s == 200).then(|| v["msg_id"].as_u64().unwrap())
}

/// The comets the online registry names for terminal `kind`/`id`, asked through `node`.
pub async fn registered_nodes(node: &ClusterNode, kind: &str, id: u32) -> Vec<String> {
    let (s, v) = api(
        node,
        reqwest::Method::GET,
        &format!("/v1/terminals/{kind}/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["nodes"]
        .as_array()
        .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Whether `ids` strictly increase (the order every session must see).
pub fn strictly_increasing(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

/// A `broker comet --config F` child process on [`Run::comet_toml`] (written into its data
/// directory); signalled only by its own PID, and killed (SIGKILL) on drop.
pub struct CometProc {
    pub child: Child,
}

impl CometProc {
    /// Starts comet `node` of `run` in `dir` with a ZooKeeper session of `session_timeout`.
    pub fn spawn(
        run: &Run,
        dir: &std::path::Path,
        node: &str,
        session_timeout: Duration,
    ) -> CometProc {
        let file = dir.join("comet.toml");
        std::fs::write(&file, run.comet_toml(dir, node, session_timeout)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["comet", "--config"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn broker comet");
        CometProc { child }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to this child's PID only.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} {}", self.child.id());
    }
}

impl Drop for CometProc {
    fn drop(&mut self) {
        // A stopped process still dies of SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keeper child process, killed (by its PID) when dropped.
pub struct Keeper(pub Child);

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a RabbitMQ node's app again when dropped (also when the test panics).
pub struct StartAppOnDrop(pub Option<String>);

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            let out = Command::new("rabbitmqctl")
                .args(["-n", &node, "start_app"])
                .output();
            eprintln!("start_app {node}: {:?}", out.map(|o| o.status));
        }
    }
}

pub async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed()
}

pub async fn api(
    node: &ClusterNode,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    ApiClient::new(format!("http://{}", node.running.http), API_TOKEN)
        .call(method, path, body)
        .await
}

/// Every Deliver a device gets within `wait` (acked by the test device).
pub async fn device_delivers(dev: &mut Device, wait: Duration) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while let Some(g) = dev
        .next_event(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        if let Got::Deliver {
            msg_id, payload, ..
        } = g
        {
            out.push((msg_id, payload));
        }
    }
    out
}

/// Every deliver an app gets within `wait` (acked).
pub async fn app_delivers(app: &mut App, wait: Duration) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while let Some(v) = app
        .recv_skip_presence(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        if v["type"] == "deliver" {
            app.send(json!({"type": "ack", "msg_id": v["msg_id"]}))
                .await;
            let p = B64.decode(v["payload"].as_str().unwrap()).unwrap();
            out.push((v["msg_id"].as_u64().unwrap(), p));
        }
    }
    out
}

/// Waits for one Command on `dev` and answers it with status 7 and `<name>:<payload>`. When none
/// arrives within [`WAIT`], the error holds every other frame the device got meanwhile (the
/// caller reports it with what its HTTP request got).
pub async fn answer_one_command(dev: &mut Device) -> Result<(String, Vec<u8>), Vec<Got>> {
    let mut other = Vec::new();
    loop {
        match dev.next_event(WAIT).await {
            Some(Got::Command {
                cmd_id,
                name,
                payload,
            }) => {
                let answer = format!("{name}:{}", String::from_utf8_lossy(&payload));
                dev.send(Body::CommandResult {
                    cmd_id,
                    status: 7,
                    payload: answer.as_bytes(),
                })
                .await;
                return Ok((name, payload));
            }
            Some(got) => other.push(got),
            None => return Err(other),
        }
    }
}

/// The `/metrics` text of `node`, read over HTTP like a scraper does.
pub async fn scrape(node: &ClusterNode) -> String {
    reqwest::Client::new()
        .get(format!("http://{}/metrics", node.running.http))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `series` (name and labels, exactly as rendered) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Deletes the run's RabbitMQ exchanges and queues on the node at `url`.
pub async fn cleanup_rabbit(url: &str, c: &Config) {
    let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        let r = &c.rabbitmq;
        for q in [&r.upload_queue, &r.push_queue] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [&r.upload_exchange, &r.push_exchange] {
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "cleanup".into()).await;
}

/// The node lookup's answer (from `bus`, a msgbus) for terminal `kind`/`id`: (comet id,
/// endpoint `field`), primary first; empty when the lookup does not answer 200.
pub async fn lookup_of(
    bus: &ClusterNode,
    kind: &str,
    id: u32,
    field: &str,
) -> Vec<(String, String)> {
    let (s, v) = api(
        bus,
        reqwest::Method::GET,
        &format!("/v1/nodes/lookup?kind={kind}&id={id}"),
        None,
    )
    .await;
    if s != 200 {
        return Vec::new();
    }
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n[field].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
