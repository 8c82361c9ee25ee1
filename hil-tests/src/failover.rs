//! Scenario `cluster-failover` (the broker as a cluster): two comets and a msgbus, each a child
//! process of this program (`hil-tests cluster-node <role> <config>`, [`node_main`]) on the
//! services of `cargo xtask services` (Redis, ZooKeeper, RabbitMQ), inside the rig's network
//! namespace next to the boards. The services listen on the host's loopback; a
//! [`HostForward`] makes their addresses reachable in the namespace.
//!
//! A host TAP board is provisioned with the msgbus's node lookup and a static broker nothing
//! listens on, so it can only log in where the lookup sends it; its device id is picked so that
//! the lookup's choice is `comet-a`. The lookup answers with one comet (`lookup_max = 1`), so
//! after `comet-a` dies the board reaches `comet-b` only by asking the lookup again. A phone bound to it logs in on `comet-b`'s app
//! WebSocket. Steps (one JUnit case each; after a failure the rest are skipped):
//! 1. the cluster is up: both comets in the lookup's answer;
//! 2. the device is online on `comet-a` (its own API lists the UDP session);
//! 3. the phone's `relay.set on` crosses the cluster to the device and the state event comes
//!    back;
//! 4. `comet-a` is killed (SIGKILL by PID): the device must be online on `comet-b` within
//!    [`FAILOVER_LIMIT`], and its log must show a second lookup answer;
//! 5. the phone's next command (`relay.set off`) reaches the device and its state event
//!    comes back.
//!
//! Every process started (the nodes, the board) is stopped by PID when the scenario ends, and
//! is registered with [`crate::teardown`] so Ctrl-C kills it too. The run's Redis keys and
//! RabbitMQ queue and exchange are deleted afterwards.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use broker::discovery::Role;
use broker::discovery::route::LookupResponse;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::RngCore;
use serde::Deserialize;
use shared_protocol::ids::{Address, Kind as IdKind};
use shared_protocol::keys::{MasterKey, derive_device_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::device::{self, Boot, Device};
use crate::fleet::{Context, relay_state};
use crate::host_forward::HostForward;
use crate::phone::Phone;
use crate::rig::{Kind, Transport};
use crate::run::BOARD_LIFETIME_S;
use crate::scenario::{Case, Outcome};
use crate::teardown::Teardown;

/// The subcommand a node process runs (`hil-tests cluster-node comet|msgbus <config>`).
pub const NODE_COMMAND: &str = "cluster-node";
/// The comets' heartbeat interval towards devices, seconds.
pub const HEARTBEAT_SECS: u64 = 2;
/// The comets' session timeout: a device silent this long is offline, and a device whose
/// comet went silent this long gives the session up (it learns the value in WELCOME).
pub const SESSION_SECS: u64 = 6;
/// The SDK's default backoff ceilings of its first two reconnect delays (1 s doubling, full
/// jitter, `firmware/src/backoff.rs`).
const BACKOFF_CEILINGS_S: u64 = 1 + 2;
/// Allowance for the new lookup (one HTTP exchange) and the login on a loaded machine.
const LOOKUP_AND_LOGIN_S: u64 = 6;
/// How long from the kill to the device's session on `comet-b` may take. The lookup answer
/// names one comet (`lookup_max = 1`), so the device's round is comet-a, then its static
/// endpoint: the session timeout (the board notices the silence), the first backoff delay, one
/// handshake timeout on the static endpoint (nothing answers there), the second backoff delay,
/// then the new lookup (comet-a left ZooKeeper 4 s after the kill) and the login on comet-b.
pub const FAILOVER_LIMIT: Duration = Duration::from_secs(
    SESSION_SECS
        + BACKOFF_CEILINGS_S
        + shared_protocol::limits::HANDSHAKE_TIMEOUT_MS / 1000
        + LOOKUP_AND_LOGIN_S,
);
/// How long the cluster may take to come up (both comets registered in ZooKeeper).
const CLUSTER_UP: Duration = Duration::from_secs(40);
/// How long a phone command may take to come back as the device's state event.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// ZooKeeper session timeout of the nodes (the services' minimum: two 2 s ticks).
const ZK_SESSION_MS: u64 = 4000;
/// Node ports inside the rig's namespace (no other process binds there; below the ephemeral
/// range the in-process brokers' port 0 draws from): HTTP, device WS, app WS, UDP, link.
const PORT_BASE: u16 = 7100;
const POLL: Duration = Duration::from_millis(100);

/// The three nodes, in start order.
const NODES: [(&str, Role); 3] = [
    ("comet-a", Role::Comet),
    ("comet-b", Role::Comet),
    ("msgbus", Role::Msgbus),
];

/// Runs the scenario in the rig's namespace (see the module docs); one case per step.
pub async fn run(ctx: &Context<'_>) -> (Vec<Case>, String) {
    let mut steps = Steps::default();
    let env = match services_env(&ctx.paths.root) {
        Ok(env) => env,
        Err(e) => {
            steps.fail("cluster up", Instant::now(), e);
            return (steps.finish(), String::new());
        }
    };
    let run_id = format!("hil{}x{}", broker::router::now_ms(), rand::random::<u16>());
    let started = Instant::now();
    let forward = match HostForward::start(&env.forwarded()) {
        Ok(f) => f,
        Err(e) => {
            steps.fail(
                "cluster up",
                started,
                format!("forwarding the services into the namespace: {e}"),
            );
            return (steps.finish(), String::new());
        }
    };
    let mut cluster = Cluster::new(ctx, &env, &run_id);
    let board = steps_with(ctx, &mut cluster, &mut steps, started).await;
    let mut logs = String::new();
    if let Some((id, board)) = board {
        logs.push_str(&tail(&format!("board (device {id})"), &board.stop()));
    }
    logs.push_str(&cluster.stop());
    let cleanup = clean_services(&env, &run_id).await;
    drop(forward);
    if let Err(e) = cleanup {
        eprintln!("hil[cluster-failover]: cleaning the services: {e}");
        logs.push_str(&format!("[hil] cleaning the services: {e}\n"));
    }
    (steps.finish(), logs)
}

/// The steps after the forwarders are up; returns the board (stopped by the caller).
async fn steps_with(
    ctx: &Context<'_>,
    cluster: &mut Cluster,
    steps: &mut Steps,
    started: Instant,
) -> Option<(u32, Device)> {
    let up = cluster.start(ctx.paths.teardown.clone(), ctx.logs);
    let up = match up {
        Ok(()) => cluster.wait_up().await,
        Err(e) => Err(e),
    };
    if !steps.record("cluster up", started, up) {
        return None;
    }
    let started = Instant::now();
    let id = match cluster
        .device_on("comet-a", ctx.rig.device_id.wrapping_add(20_000))
        .await
    {
        Ok(id) => id,
        Err(e) => {
            steps.fail("device online on comet-a", started, e);
            return None;
        }
    };
    let mut board = match cluster.boot(ctx, id) {
        Ok(b) => b,
        Err(e) => {
            steps.fail("device online on comet-a", started, e);
            return None;
        }
    };
    let online = cluster
        .online_on(
            0,
            id,
            Duration::from_secs(ctx.rig.login_timeout_s),
            &mut board,
            None,
        )
        .await
        .map(|t| {
            format!(
                "device {id} online on comet-a {} ms after boot",
                t.as_millis()
            )
        });
    if !steps.record("device online on comet-a", started, online) {
        return Some((id, board));
    }
    let started = Instant::now();
    let phone = cluster.phone_on_b(id).await;
    let mut phone = match phone {
        Ok(p) => p,
        Err(e) => {
            steps.fail("phone on comet-b reaches the device on comet-a", started, e);
            return Some((id, board));
        }
    };
    let before = command(&mut phone, id, "on").await;
    if !steps.record(
        "phone on comet-b reaches the device on comet-a",
        started,
        before,
    ) {
        return Some((id, board));
    }
    let killed = Instant::now();
    let failover = match cluster.kill(0) {
        Ok(()) => cluster
            .online_on(1, id, FAILOVER_LIMIT, &mut board, Some(&mut phone))
            .await
            .and_then(|_| {
                let lookups = cluster.board_lookups();
                if lookups < 2 {
                    return Err(format!(
                        "online on comet-b, but the board's log shows {lookups} lookup answer(s): \
                         it did not ask the lookup again after comet-a died"
                    ));
                }
                Ok(format!(
                    "device {id} online on comet-b {} ms after comet-a was killed (limit {} s), \
                     after {lookups} lookup answers",
                    killed.elapsed().as_millis(),
                    FAILOVER_LIMIT.as_secs()
                ))
            }),
        Err(e) => Err(e),
    };
    if !steps.record("comet-a killed: device online on comet-b", killed, failover) {
        return Some((id, board));
    }
    let started = Instant::now();
    let after = command(&mut phone, id, "off").await;
    steps.record(
        "phone's next command reaches the device on comet-b",
        started,
        after,
    );
    phone.close().await;
    Some((id, board))
}

/// The phone sends `relay.set <state>` to device `id`; the device's state event must come back.
async fn command(phone: &mut Phone, id: u32, state: &str) -> Result<String, String> {
    let device = Address {
        kind: IdKind::Device,
        id,
    };
    let sent = Instant::now();
    let text = format!("relay.set {state}");
    phone
        .send(device, text.as_bytes(), ANSWER_WAIT)
        .await
        .map_err(|e| format!("`{text}`: {e}"))?;
    // Deliveries before the answer (a state the device reported on its own, e.g. after its
    // new login) are passed over and counted; the answer must come within ANSWER_WAIT.
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut passed_over = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = phone.next_delivery(left).await.map_err(|e| {
            format!("state event after `{text}`: {e} (passed over before it: {passed_over:?})")
        })?;
        let got = relay_state(&event.payload);
        if event.from == Some(device) && got.as_deref() == Some(state) {
            return Ok(format!(
                "`{text}` answered with the device's state event in {} ms (passed over before it: {passed_over:?})",
                sent.elapsed().as_millis()
            ));
        }
        passed_over.push(format!(
            "{} from {:?}",
            String::from_utf8_lossy(&event.payload),
            event.from
        ));
    }
}

/// The cases so far; once one fails, the rest are skipped.
#[derive(Default)]
struct Steps {
    cases: Vec<Case>,
    failed: Option<String>,
}

const STEP_NAMES: [&str; 5] = [
    "cluster up",
    "device online on comet-a",
    "phone on comet-b reaches the device on comet-a",
    "comet-a killed: device online on comet-b",
    "phone's next command reaches the device on comet-b",
];

impl Steps {
    /// Records step `name`; whether it passed.
    fn record(&mut self, name: &str, started: Instant, result: Result<String, String>) -> bool {
        let passed = result.is_ok();
        let (outcome, detail) = match result {
            Ok(d) => (Outcome::Pass, d),
            Err(e) => {
                self.failed = Some(name.to_string());
                (Outcome::Fail(e), String::new())
            }
        };
        eprintln!(
            "hil   {} {name}{}",
            if passed { "ok  " } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        );
        self.cases.push(Case {
            name: name.to_string(),
            outcome,
            time: started.elapsed(),
            detail,
        });
        passed
    }

    fn fail(&mut self, name: &str, started: Instant, reason: String) {
        self.record(name, started, Err(reason));
    }

    /// The cases, with every step that did not run reported as skipped.
    fn finish(mut self) -> Vec<Case> {
        let first = self.failed.clone().unwrap_or_default();
        for name in STEP_NAMES.iter().skip(self.cases.len()) {
            self.cases.push(Case {
                name: name.to_string(),
                outcome: Outcome::Skip(format!("after failed step `{first}`")),
                time: Duration::ZERO,
                detail: String::new(),
            });
        }
        self.cases
    }
}

/// The services' addresses, from `.cache/services/env` (written by `cargo xtask services up`).
struct ServicesEnv {
    redis: SocketAddr,
    zookeeper: SocketAddr,
    rabbit_amqp: SocketAddr,
    rabbit_mgmt: SocketAddr,
    rabbit_user: String,
    rabbit_password: String,
}

impl ServicesEnv {
    /// What the nodes (and the clean-up) connect to, forwarded into the namespace.
    fn forwarded(&self) -> Vec<SocketAddr> {
        vec![
            self.redis,
            self.zookeeper,
            self.rabbit_amqp,
            self.rabbit_mgmt,
        ]
    }
}

/// Reads `<root>/.cache/services/env`.
fn services_env(root: &Path) -> Result<ServicesEnv, String> {
    let path = root.join(".cache/services/env");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (the cluster scenario runs on the services: `cargo xtask services up`)",
            path.display()
        )
    })?;
    parse_services_env(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_services_env(text: &str) -> Result<ServicesEnv, String> {
    let vars: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |k: &str| vars.get(k).copied().ok_or(format!("no {k}"));
    let addr = |k: &str| {
        let v = get(k)?;
        let v = v.strip_prefix("http://").unwrap_or(v);
        v.trim_end_matches('/')
            .parse::<SocketAddr>()
            .map_err(|e| format!("{k} = {v}: {e}"))
    };
    Ok(ServicesEnv {
        redis: addr("REDIS_ADDR")?,
        zookeeper: addr("ZOOKEEPER_ADDR")?,
        rabbit_amqp: addr("RABBITMQ_1_AMQP_ADDR")?,
        rabbit_mgmt: addr("RABBITMQ_1_MGMT_URL")?,
        rabbit_user: get("RABBITMQ_1_MGMT_USER")?.to_string(),
        rabbit_password: get("RABBITMQ_1_MGMT_PASSWORD")?.to_string(),
    })
}

/// One node process.
struct Node {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

/// The cluster of one run: its secrets, its nodes' configs and processes.
struct Cluster {
    bind: IpAddr,
    dir: PathBuf,
    secrets: Secrets,
    configs: Vec<String>,
    nodes: Vec<Node>,
    /// The board's raw output files (`.out`, `.stderr`: its log while it runs).
    board_out: Vec<PathBuf>,
    teardown: Option<Teardown>,
    http: reqwest::Client,
}

fn node_addr(bind: IpAddr, index: usize, which: u16) -> SocketAddr {
    SocketAddr::new(bind, PORT_BASE + 10 * index as u16 + which)
}

/// The secrets of one run's cluster (fresh per run).
struct Secrets {
    master: [u8; 32],
    token_secret: [u8; 32],
    api_token: String,
    link_key: String,
    zk_auth: String,
}

impl Secrets {
    fn fresh() -> Secrets {
        let mut rng = rand::rng();
        let mut master = [0u8; 32];
        rng.fill_bytes(&mut master);
        let mut token_secret = [0u8; 32];
        rng.fill_bytes(&mut token_secret);
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let link_key = hex::encode(bytes);
        rng.fill_bytes(&mut bytes);
        Secrets {
            master,
            token_secret,
            api_token: hex::encode(&bytes[..16]),
            link_key,
            zk_auth: format!("hil:{}", hex::encode(&bytes[16..])),
        }
    }
}

/// The configs of [`NODES`], in order: every endpoint on `bind` at fixed ports, data under
/// `dir`, ZooKeeper discovery, Redis and RabbitMQ names under `run_id`.
fn node_configs(
    bind: IpAddr,
    dir: &Path,
    env: &ServicesEnv,
    run_id: &str,
    s: &Secrets,
) -> Vec<String> {
    NODES
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let data = dir.join(name).display().to_string();
            format!(
                "[listen]\nhttp = \"{http}\"\ndevice_ws = \"{ws}\"\napp_ws = \"{app}\"\nudp = \"{udp}\"\n\
                 [storage]\ndata_dir = \"{data}\"\n\
                 [security]\nfleet_master_key = \"{master}\"\napi_token = \"{api_token}\"\n\
                 token_secret = \"{token}\"\n\
                 [timeouts]\nheartbeat_secs = {HEARTBEAT_SECS}\nsession_secs = {SESSION_SECS}\n\
                 shutdown_drain_secs = 1\n\
                 [discovery]\nmode = \"zookeeper\"\nzk_servers = \"{zk}\"\nroot = \"/{run_id}\"\n\
                 session_timeout_ms = {ZK_SESSION_MS}\nnode_id = \"{name}\"\nzk_auth = \"{zk_auth}\"\n\
                 lookup_max = 1\n\
                 [redis]\nurl = \"redis://{redis}/\"\nkey_prefix = \"{run_id}:\"\n\
                 [rabbitmq]\nurls = [\"amqp://{user}:{pw}@{amqp}/%2f\"]\n\
                 upload_exchange = \"{run_id}.uploads\"\nupload_queue = \"{run_id}.uploads\"\n\
                 push_exchange = \"\"\n\
                 [cluster]\nlink_key = \"{link_key}\"\nlink_listen = \"{link}\"\nrabbit_root = \"\"\n\
                 heartbeat_ms = 300\nnode_ttl_ms = 1500\nsweep_interval_ms = 500\nreconcile_ms = 200\n",
                http = node_addr(bind, i, 1),
                ws = node_addr(bind, i, 2),
                app = node_addr(bind, i, 3),
                udp = node_addr(bind, i, 4),
                link = node_addr(bind, i, 5),
                master = hex::encode(s.master),
                api_token = s.api_token,
                token = hex::encode(s.token_secret),
                zk_auth = s.zk_auth,
                link_key = s.link_key,
                zk = env.zookeeper,
                redis = env.redis,
                amqp = env.rabbit_amqp,
                user = env.rabbit_user,
                pw = env.rabbit_password,
            )
        })
        .collect()
}

impl Cluster {
    fn new(ctx: &Context<'_>, env: &ServicesEnv, run_id: &str) -> Cluster {
        let secrets = Secrets::fresh();
        let bind = ctx.advertise;
        let dir = ctx.paths.work.join("broker").join("cluster-failover");
        let configs = node_configs(bind, &dir, env, run_id, &secrets);
        Cluster {
            bind,
            dir,
            secrets,
            configs,
            nodes: Vec::new(),
            board_out: Vec::new(),
            teardown: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Writes the configs and starts the node processes (in this thread's namespace).
    fn start(&mut self, teardown: Teardown, logs: &Path) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        for ((name, role), config) in NODES.iter().zip(&self.configs) {
            let path = self.dir.join(format!("{name}.toml"));
            std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
            let log = logs.join(format!("cluster-failover-{name}.log"));
            let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out
                .try_clone()
                .map_err(|e| format!("{}: {e}", log.display()))?;
            let role = match role {
                Role::Comet => "comet",
                Role::Msgbus => "msgbus",
            };
            let child = Command::new(&exe)
                .arg(NODE_COMMAND)
                .arg(role)
                .arg(&path)
                .env(
                    "RUST_LOG",
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("starting {name}: {e}"))?;
            teardown.add_pid(child.id());
            self.nodes.push(Node {
                name,
                child: Some(child),
                log,
            });
        }
        self.teardown = Some(teardown);
        Ok(())
    }

    fn api(&self, index: usize) -> String {
        format!("http://{}", node_addr(self.bind, index, 1))
    }

    /// The lookup's answer for device `id` (asked of the msgbus).
    async fn lookup(&self, id: u32) -> Result<LookupResponse, String> {
        let url = format!("{}/v1/nodes/lookup?kind=device&id={id}", self.api(2));
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        resp.json().await.map_err(|e| e.to_string())
    }

    /// Waits until the lookup names both comets; says why not (with a dead node's exit).
    async fn wait_up(&mut self) -> Result<String, String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < CLUSTER_UP {
            for n in &mut self.nodes {
                if let Some(Ok(Some(status))) = n.child.as_mut().map(Child::try_wait) {
                    return Err(format!(
                        "{} ended ({status}); its log: {}",
                        n.name,
                        n.log.display()
                    ));
                }
            }
            // The lookup names one comet per device (`lookup_max = 1`): both are up when
            // both are some device's first choice.
            let mut seen = std::collections::BTreeSet::new();
            for id in 0..32 {
                match self.lookup(id).await {
                    Ok(r) => seen.extend(r.nodes.into_iter().map(|n| n.id)),
                    Err(e) => {
                        last = e;
                        break;
                    }
                }
            }
            if seen.contains("comet-a") && seen.contains("comet-b") {
                return Ok(format!(
                    "2 comets and a msgbus up, both comets in the lookup's answers after {} ms",
                    started.elapsed().as_millis()
                ));
            }
            if !seen.is_empty() {
                last = format!("the lookup names only {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "the cluster was not up within {} s (last: {last})",
            CLUSTER_UP.as_secs()
        ))
    }

    /// The first device id from `from` whose lookup answer puts `comet` first.
    async fn device_on(&self, comet: &str, from: u32) -> Result<u32, String> {
        for id in from..from.saturating_add(64) {
            let r = self.lookup(id).await?;
            if r.nodes.first().is_some_and(|n| n.id == comet) {
                return Ok(id);
            }
        }
        Err(format!(
            "no device id from {from} is looked up on {comet} first"
        ))
    }

    /// Boots a host TAP board as device `id`: its lookup is the msgbus's, its static broker a
    /// port nothing listens on.
    fn boot(&mut self, ctx: &Context<'_>, id: u32) -> Result<Device, String> {
        let boards = ctx.rig.host_tap.as_ref().map_or(1, |h| h.boards);
        let board = boards.saturating_sub(1).min(7);
        let nowhere = SocketAddr::new(ctx.advertise, 1);
        let boot = Boot {
            device_id: id,
            key: derive_device_key(&MasterKey(self.secrets.master), id).0,
            transport: Transport::Udp,
            udp: nowhere,
            ws: nowhere,
            lookup: Some(node_addr(self.bind, 2, 1)),
            meter_ms: 0,
            boot_number: id,
            record_seed: broker::provisioning::fresh_seed(&mut rand::rng()),
            exit_after_s: ctx.rig.login_timeout_s + BOARD_LIFETIME_S,
            board,
            flash: None,
        };
        let name = format!("{}-cluster-failover-tap{board}", ctx.rig.name);
        self.board_out = ["out", "stderr"]
            .iter()
            .map(|ext| ctx.logs.join(format!("{name}.{ext}")))
            .collect();
        device::start_as(
            Kind::HostTap,
            ctx.rig,
            &ctx.paths.root,
            &boot,
            ctx.logs,
            &name,
        )
        .map(|d| d.watched(&ctx.paths.teardown))
        .map_err(|e| format!("starting the board: {e}"))
    }

    /// Waits until node `index`'s own API lists a UDP session of device `id`; how long it
    /// took. A `phone` given is kept alive meanwhile (its pings; its comet's session timeout
    /// is shorter than the wait).
    async fn online_on(
        &self,
        index: usize,
        id: u32,
        limit: Duration,
        board: &mut Device,
        mut phone: Option<&mut Phone>,
    ) -> Result<Duration, String> {
        #[derive(Deserialize)]
        struct Status {
            sessions: Vec<Session>,
        }
        #[derive(Deserialize)]
        struct Session {
            transport: String,
        }
        let started = Instant::now();
        let url = format!("{}/v1/terminals/device/{id}", self.api(index));
        let mut last = String::new();
        while started.elapsed() < limit {
            if let Some(status) = board.exited() {
                return Err(format!("the board ended ({status})"));
            }
            let got = self
                .http
                .get(&url)
                .bearer_auth(&self.secrets.api_token)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            match got {
                Ok(resp) => match resp.json::<Status>().await {
                    Ok(s) if s.sessions.iter().any(|s| s.transport == "udp") => {
                        return Ok(started.elapsed());
                    }
                    Ok(_) => last = "no UDP session".into(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            match phone.as_deref_mut() {
                Some(p) => p
                    .idle(POLL)
                    .await
                    .map_err(|e| format!("the phone's session ended while waiting: {e}"))?,
                None => tokio::time::sleep(POLL).await,
            }
        }
        Err(format!(
            "device {id} not online on {} within {} s (last: {last})",
            NODES[index].0,
            limit.as_secs()
        ))
    }

    /// A phone bound to device `id` (through the msgbus's API), logged in on `comet-b`.
    async fn phone_on_b(&self, id: u32) -> Result<Phone, String> {
        let url = format!("{}/v1/bindings/{id}/{id}", self.api(2));
        self.http
            .put(&url)
            .bearer_auth(&self.secrets.api_token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("binding phone {id} to device {id}: {e}"))?;
        let claims = shared_protocol::json::Claims {
            address: Address {
                kind: IdKind::Phone,
                id,
            },
            exp: broker::router::now_ms() / 1000 + 86_400,
        };
        let token = shared_protocol::json::mint(&self.secrets.token_secret, &claims);
        let app = format!("ws://{}/", node_addr(self.bind, 1, 3));
        Phone::login(&app, &token, ANSWER_WAIT)
            .await
            .map_err(|e| format!("phone {id} on comet-b: {e}"))
    }

    /// How many lookup answers the board has logged so far (`lookup: N endpoints`).
    fn board_lookups(&self) -> usize {
        self.board_out
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|log| count_lookups(&log))
            .sum()
    }

    /// Kills node `index` with SIGKILL (by PID) and reaps it.
    fn kill(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        let Some(mut child) = node.child.take() else {
            return Err(format!("{} is not running", node.name));
        };
        let pid = child.id();
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
            .map_err(|e| format!("kill -9 {pid} ({}): {e}", node.name))?;
        let _ = child.wait();
        if let Some(t) = &self.teardown {
            t.remove_pid(pid);
        }
        Ok(())
    }

    /// Stops every node still running (SIGTERM, SIGKILL after 5 s); their logs' tails.
    fn stop(&mut self) -> String {
        let mut out = String::new();
        for n in &mut self.nodes {
            let status = match n.child.take() {
                Some(mut child) => {
                    let s = end(&mut child);
                    if let Some(t) = &self.teardown {
                        t.remove_pid(child.id());
                    }
                    s
                }
                None => "killed by the scenario".into(),
            };
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            out.push_str(&tail(&format!("{} (ended {status})", n.name), &log));
        }
        out
    }
}

/// The lookup answers in a board's log (the SDK logs `lookup: N endpoints` for each).
fn count_lookups(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("lookup: ") && l.contains(" endpoints"))
        .count()
}

/// SIGTERM, then SIGKILL after 5 s; how the process ended.
fn end(child: &mut Child) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return format!("by itself: {status}");
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return format!("on SIGTERM: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    "on SIGKILL".into()
}

/// The last 30 lines of `log` under a heading.
fn tail(label: &str, log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = format!("--- {label} ---\n");
    for l in &lines[lines.len().saturating_sub(30)..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Deletes the run's Redis keys and its RabbitMQ queue and exchange (through the forwarders).
async fn clean_services(env: &ServicesEnv, run_id: &str) -> Result<(), String> {
    // One script: every key under the run's prefix.
    let script =
        "for _,k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 1";
    let pattern = format!("{run_id}:*");
    let args = ["EVAL", script, "0", &pattern];
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    let mut redis = tokio::net::TcpStream::connect(env.redis)
        .await
        .map_err(|e| format!("Redis: {e}"))?;
    redis
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Redis: {e}"))?;
    let mut answer = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), redis.read(&mut answer))
        .await
        .map_err(|_| "Redis: no answer to the clean-up script".to_string())?
        .map_err(|e| format!("Redis: {e}"))?;
    if !answer[..n].starts_with(b":1") {
        return Err(format!(
            "Redis clean-up answered {}",
            String::from_utf8_lossy(&answer[..n]).trim()
        ));
    }
    let http = reqwest::Client::new();
    for what in ["queues", "exchanges"] {
        let url = format!("http://{}/api/{what}/%2f/{run_id}.uploads", env.rabbit_mgmt);
        let resp = http
            .delete(&url)
            .basic_auth(&env.rabbit_user, Some(&env.rabbit_password))
            .send()
            .await
            .map_err(|e| format!("RabbitMQ {what}: {e}"))?;
        // 404: never declared (no upload reached RabbitMQ).
        if !resp.status().is_success() && resp.status() != reqwest::StatusCode::NOT_FOUND {
            return Err(format!("deleting RabbitMQ {what}: HTTP {}", resp.status()));
        }
    }
    Ok(())
}

/// `hil-tests cluster-node comet|msgbus <config>`: runs one cluster node (the broker's own
/// `broker::roles`) until SIGTERM or SIGINT; its log goes to stderr (`RUST_LOG`).
pub fn node_main(args: &[String]) -> ExitCode {
    let (role, path) = match args {
        [role, path] if role == "comet" => (Role::Comet, path),
        [role, path] if role == "msgbus" => (Role::Msgbus, path),
        _ => {
            eprintln!("usage: hil-tests {NODE_COMMAND} comet|msgbus <config.toml>");
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let config = match broker::config::Config::load(Some(Path::new(path)), Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{NODE_COMMAND}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{NODE_COMMAND}: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Listening before the node starts: a SIGTERM during start-up stops it cleanly.
        let signal = broker::shutdown_signal::ShutdownSignal::listen()
            .map_err(|e| format!("cannot listen for SIGINT/SIGTERM: {e}"))?;
        broker::roles::run(role, config, signal.recv())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NODE_COMMAND}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_env_file_gives_every_address_the_cluster_needs() {
        let text = "# comment\nREDIS_ADDR=127.0.0.1:16379\nZOOKEEPER_ADDR=127.0.0.1:12181\n\
                    RABBITMQ_1_AMQP_ADDR=127.0.0.1:17001\nRABBITMQ_1_MGMT_URL=http://127.0.0.1:17101\n\
                    RABBITMQ_1_MGMT_USER=guest\nRABBITMQ_1_MGMT_PASSWORD=pw\n";
        let env = parse_services_env(text).unwrap();
        assert_eq!(env.redis.port(), 16379);
        assert_eq!(env.rabbit_mgmt.port(), 17101);
        assert_eq!(env.rabbit_password, "pw");
        assert_eq!(env.forwarded().len(), 4);
        let missing = parse_services_env("REDIS_ADDR=127.0.0.1:1\n")
            .err()
            .unwrap();
        assert_eq!(missing, "no ZOOKEEPER_ADDR");
    }

    #[test]
    fn lookup_answers_are_counted_from_the_board_log() {
        let log = "[t INFO  firmware::client] lookup: 1 endpoints (stale view: false)\n\
                   [t INFO  firmware::client] login: attempt 1 to endpoint 0\n\
                   [t WARN  firmware::client] lookup failed: timeout; using the static endpoints\n\
                   [t INFO  firmware::client] lookup: 1 endpoints (stale view: true)\n";
        assert_eq!(count_lookups(log), 2);
        assert_eq!(count_lookups(""), 0);
    }

    #[test]
    fn the_failover_limit_is_the_sum_of_its_parts() {
        // 6 s session timeout + 1 + 2 s backoff ceilings + 10 s handshake + 6 s.
        assert_eq!(FAILOVER_LIMIT, Duration::from_secs(25));
    }

    #[test]
    fn the_generated_node_configs_are_accepted_by_the_broker() {
        let env = parse_services_env(
            "REDIS_ADDR=127.0.0.1:16379\nZOOKEEPER_ADDR=127.0.0.1:12181\n\
             RABBITMQ_1_AMQP_ADDR=127.0.0.1:17001\nRABBITMQ_1_MGMT_URL=http://127.0.0.1:17101\n\
             RABBITMQ_1_MGMT_USER=guest\nRABBITMQ_1_MGMT_PASSWORD=guest\n",
        )
        .unwrap();
        let configs = node_configs(
            "198.51.100.1".parse().unwrap(),
            Path::new("/tmp/hil-cluster"),
            &env,
            "hil1x2",
            &Secrets::fresh(),
        );
        for (text, (name, _)) in configs.iter().zip(NODES) {
            let c = broker::config::Config::from_str_with_env("n.toml", text, Vec::new()).unwrap();
            assert_eq!(c.discovery.node_id, name);
            assert_eq!(c.redis.key_prefix, "hil1x2:");
        }
    }
}
