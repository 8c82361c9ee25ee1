//! Runs one rig: sets up its network (nothing for QEMU and real boards, a namespace with a TAP
//! for the host TAP board), starts a fresh broker where the board can reach it, then for each
//! transport boots the board, runs the scenario (`scenario.rs`) and stops the board.
//! Set-up failures become a failed `set-up` case, so the report always says what happened.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::broker::TestBroker;
use crate::device::{self, Boot};
use crate::fleet;
use crate::junit::Suite;
use crate::lookup::LookupServer;
use crate::netns::{self, Namespace};
use crate::nonces;
use crate::rig::{Kind, Rig, Transport, parse_cidr};
use crate::scenario::{self, Case, Outcome, Target};
use crate::teardown::Teardown;

/// Where a run reads and writes.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Project root (rig paths are relative to it).
    pub root: PathBuf,
    /// Output folder (this run's directory under `target/hil/runs/`): logs, broker data.
    pub work: PathBuf,
    /// Registry of what a Ctrl-C must tear down.
    pub teardown: Teardown,
    /// Scenarios asked for on the command line (empty: each rig's own list).
    pub only: Vec<String>,
}

/// Extra time a board may run past its login timeout before it ends itself (a safety net
/// should the test be killed without stopping it).
pub const BOARD_LIFETIME_S: u64 = 180;

/// The static broker port of the lookup suites: nothing listens there (TCPMUX, unused).
const WRONG_PORT: u16 = 1;

/// Addresses of one rig's network.
struct Net {
    /// Where the broker's device endpoints bind.
    device_bind: IpAddr,
    /// Where its HTTP API binds.
    api_bind: IpAddr,
    /// The broker as the board reaches it.
    advertise: IpAddr,
}

/// The scenarios of `rig` this run runs: the rig's own list, or when `only` is given those of
/// `only` the rig can run (fleet scenarios need a host TAP rig), in catalogue order.
pub fn selected(rig: &Rig, only: &[String]) -> Vec<String> {
    if only.is_empty() {
        return rig.scenarios.clone();
    }
    crate::catalog::SCENARIOS
        .iter()
        .filter(|k| only.iter().any(|o| o == k.name))
        .filter(|k| !k.fleet || rig.kind == Kind::HostTap)
        .map(|k| k.name.to_string())
        .collect()
}

/// Runs `rig`'s selected scenarios: `basic` gives one suite per transport, each fleet
/// scenario one suite (or one failed `set-up` suite).
pub fn run_rig(rig: &Rig, paths: &Paths) -> Vec<Suite> {
    let scenarios = selected(rig, &paths.only);
    let started = Instant::now();
    let logs = paths.work.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        return setup_failure(
            rig,
            started,
            format!("cannot create {}: {e}", logs.display()),
        );
    }
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    match rig.kind {
        Kind::Qemu => {
            let q = rig.qemu.as_ref().expect("checked by Rig::parse");
            let net = Net {
                device_bind: lo,
                api_bind: lo,
                advertise: IpAddr::V4(q.broker_host),
            };
            in_runtime(rig, paths, &logs, &net, started, &scenarios, None)
        }
        Kind::ProbeRs => {
            let p = rig.probe_rs.as_ref().expect("checked by Rig::parse");
            match device::probe_attached() {
                Ok(true) => {}
                Ok(false) => {
                    return setup_failure(rig, started, device::DeviceError::NoProbe.to_string());
                }
                Err(e) => return setup_failure(rig, started, e.to_string()),
            }
            let net = Net {
                device_bind: p.broker_bind,
                api_bind: lo,
                advertise: IpAddr::V4(p.broker_addr),
            };
            in_runtime(rig, paths, &logs, &net, started, &scenarios, None)
        }
        Kind::HostTap => {
            let h = rig.host_tap.as_ref().expect("checked by Rig::parse");
            let host = IpAddr::V4(parse_cidr(&h.host_ip).expect("checked by Rig::parse").0);
            for stale in netns::remove_stale() {
                eprintln!("hil: removed stale network namespace {stale}");
            }
            let taps: Vec<String> = (0..h.boards).map(|i| h.tap(i)).collect();
            let ns_name = netns::name_for_this_process();
            paths.teardown.add_namespace(&ns_name);
            let ns = match Namespace::create(&ns_name, &h.bridge, &h.host_ip, &taps) {
                Ok(ns) => ns,
                Err(e) => {
                    paths.teardown.remove_namespace(&ns_name);
                    return setup_failure(rig, started, e.to_string());
                }
            };
            eprintln!(
                "hil[{}]: namespace {ns_name}: bridge {} at {}, {} TAP(s)",
                rig.name,
                h.bridge,
                h.host_ip,
                taps.len()
            );
            // The namespace is the rig's own: the broker may listen on every address in it
            // (the QEMU board reaches it through QEMU's user network, i.e. the namespace's
            // loopback; the host TAP boards through the bridge).
            let net = Net {
                device_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                api_bind: lo,
                advertise: host,
            };
            // The namespace is entered by a thread of its own; the guard outlives it and
            // removes the namespace whatever happened inside.
            let outcome = std::thread::scope(|scope| {
                scope
                    .spawn(|| match ns.enter() {
                        Ok(()) => {
                            in_runtime(rig, paths, &logs, &net, started, &scenarios, Some(&ns))
                        }
                        Err(e) => setup_failure(rig, started, e.to_string()),
                    })
                    .join()
            });
            drop(ns);
            paths.teardown.remove_namespace(&ns_name);
            outcome
                .unwrap_or_else(|_| setup_failure(rig, started, "the rig's thread panicked".into()))
        }
    }
}

fn in_runtime(
    rig: &Rig,
    paths: &Paths,
    logs: &Path,
    net: &Net,
    started: Instant,
    scenarios: &[String],
    ns: Option<&Namespace>,
) -> Vec<Suite> {
    // Built on the calling thread, so its worker threads share that thread's namespace.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return setup_failure(rig, started, format!("tokio runtime: {e}")),
    };
    runtime.block_on(async {
        let mut suites = Vec::new();
        if scenarios.iter().any(|s| s == "basic") {
            suites.extend(flow(rig, paths, logs, net, started).await);
        }
        let fleet: Vec<&String> = scenarios.iter().filter(|s| *s != "basic").collect();
        if let (Some(ns), false) = (ns, fleet.is_empty()) {
            let qemu_host = rig.qemu.as_ref().map(|q| IpAddr::V4(q.broker_host));
            let ctx = fleet::Context {
                rig,
                paths,
                logs,
                ns,
                bind: net.device_bind,
                api_bind: net.api_bind,
                advertise: net.advertise,
                qemu_host,
            };
            suites.extend(fleet::run(&ctx, &fleet).await);
        }
        suites
    })
}

async fn flow(rig: &Rig, paths: &Paths, logs: &Path, net: &Net, started: Instant) -> Vec<Suite> {
    let data_dir = paths.work.join("broker").join(&rig.name);
    let broker =
        match TestBroker::start(net.device_bind, net.api_bind, net.advertise, &data_dir).await {
            Ok(b) => b,
            Err(e) => return setup_failure(rig, started, e.to_string()),
        };
    eprintln!(
        "hil[{}]: broker up in {} ms: API {}, devices at udp {} and ws {}",
        rig.name,
        started.elapsed().as_millis(),
        broker.api_base(),
        broker.udp(),
        broker.ws()
    );
    let api = Api::new(broker.api_base(), broker.api_token().to_string());
    let mut suites = Vec::new();
    let lookup = if rig.lookup {
        match LookupServer::start(net.device_bind, net.advertise, &broker).await {
            Ok(l) => Some(l),
            Err(e) => {
                broker.stop().await;
                return setup_failure(rig, started, format!("lookup server: {e}"));
            }
        }
    } else {
        None
    };
    // Every transport plainly, then (rigs with `lookup = true`) again with a wrong static
    // broker (a port nothing listens on) and the lookup.
    let mut boots: Vec<(Transport, bool)> = rig.transports.iter().map(|t| (*t, false)).collect();
    if lookup.is_some() {
        boots.extend(rig.transports.iter().map(|t| (*t, true)));
    }
    for (index, (transport, via_lookup)) in boots.into_iter().enumerate() {
        let suite_started = Instant::now();
        let suffix = if via_lookup { "-lookup" } else { "" };
        let name = format!("{}/{}{suffix}", rig.name, transport.as_str());
        // One device id per boot: no session of an earlier boot can answer for this one.
        let device_id = rig.device_id.wrapping_add(index as u32);
        let cursor = match api.uploads(0, 1).await {
            Ok(page) => page.head,
            Err(e) => {
                suites.push(failed_suite(
                    &name,
                    suite_started,
                    format!("reading the upload cursor: {e}"),
                ));
                continue;
            }
        };
        let boot = Boot {
            device_id,
            key: broker.device_key(device_id),
            transport,
            udp: if via_lookup {
                SocketAddr::new(net.advertise, WRONG_PORT)
            } else {
                broker.udp()
            },
            ws: if via_lookup {
                SocketAddr::new(net.advertise, WRONG_PORT)
            } else {
                broker.ws()
            },
            lookup: lookup
                .as_ref()
                .filter(|_| via_lookup)
                .map(LookupServer::addr),
            meter_ms: rig.meter_ms,
            boot_number: index as u32 + 1,
            record_seed: ::broker::provisioning::fresh_seed(&mut rand::rng()),
            exit_after_s: rig.login_timeout_s + BOARD_LIFETIME_S,
            board: 0,
            flash: None,
        };
        let log_name = format!("{}-{}{suffix}", rig.name, transport.as_str());
        let mut board = match device::start(rig, &paths.root, &boot, logs, &log_name) {
            Ok(d) => d.watched(&paths.teardown),
            Err(e) => {
                suites.push(failed_suite(
                    &name,
                    suite_started,
                    format!("starting the board: {e}"),
                ));
                continue;
            }
        };
        let mut gone = || board.exited().map(|s| s.to_string());
        let mut cases = scenario::run(
            Target {
                api: &api,
                device_id,
                transport,
                login_timeout: Duration::from_secs(rig.login_timeout_s),
                cursor,
                // Boards with a watchdog report why they started (QEMU's does).
                reports_reset_reason: rig.kind == crate::rig::Kind::Qemu,
            },
            &mut gone,
        )
        .await;
        let system_out = board.stop();
        let logged_in = cases.first().is_some_and(|c| c.outcome == Outcome::Pass);
        if rig.kind == Kind::Qemu && logged_in {
            cases.push(decoded_log_case(&system_out));
        }
        let suite = Suite {
            name,
            cases,
            time: suite_started.elapsed(),
            system_out,
        };
        report(&suite);
        suites.push(suite);
    }
    if let Some(l) = lookup {
        l.stop();
    }
    if rig.kind == Kind::Qemu {
        suites.push(nonce_suite(rig, paths, logs, net, &broker).await);
        suites.push(persist_suite(rig, paths, logs, &api, &broker).await);
    }
    broker.stop().await;
    suites
}

/// The line the firmware logs when its login is welcomed (`firmware/src/client`).
pub const ONLINE_LOG_LINE: &str = "online: session ";

/// `board log decoded`: a QEMU board that logged in wrote its log as defmt frames; the log the
/// harness keeps must be their text, decoded with the ELF's defmt table (`defmt-log`), which
/// is shown by the firmware's login line in it.
pub fn decoded_log_case(log: &str) -> Case {
    let frames = log.lines().filter(|l| l.contains(ONLINE_LOG_LINE)).count();
    let outcome = if frames > 0 {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "the board logged in but its log has no `{ONLINE_LOG_LINE}` line: defmt not decoded ({})",
            log.lines().next().unwrap_or("empty log")
        ))
    };
    Case {
        name: "board log decoded (defmt)".into(),
        outcome,
        time: Duration::ZERO,
        detail: format!("{} lines decoded", log.lines().count()),
    }
}

/// The QEMU board's nonces across boots of one device (`nonces.rs`).
async fn nonce_suite(
    rig: &Rig,
    paths: &Paths,
    logs: &Path,
    net: &Net,
    broker: &TestBroker,
) -> Suite {
    let started = Instant::now();
    let (socket, port) = match nonces::sniffer(net.device_bind).await {
        Ok(s) => s,
        Err(e) => {
            return failed_suite(
                &format!("{}/nonces", rig.name),
                started,
                format!("sniffer socket: {e}"),
            );
        }
    };
    // A device id no other suite of this run uses.
    let device_id = rig.device_id.wrapping_add(1000);
    let base = Boot {
        device_id,
        key: broker.device_key(device_id),
        transport: Transport::Udp,
        udp: SocketAddr::new(net.advertise, port),
        ws: broker.ws(),
        lookup: None,
        meter_ms: rig.meter_ms,
        boot_number: 1,
        record_seed: ::broker::provisioning::fresh_seed(&mut rand::rng()),
        exit_after_s: rig.login_timeout_s + BOARD_LIFETIME_S,
        board: 0,
        flash: None,
    };
    let suite = nonces::run(rig, &paths.root, logs, base, &socket).await;
    report(&suite);
    suite
}

/// The QEMU board's boot counter and since_id across two boots of one flash file
/// (`persist.rs`).
async fn persist_suite(
    rig: &Rig,
    paths: &Paths,
    logs: &Path,
    api: &Api,
    broker: &TestBroker,
) -> Suite {
    // A device id no other suite of this run uses.
    let device_id = rig.device_id.wrapping_add(2000);
    let base = Boot {
        device_id,
        key: broker.device_key(device_id),
        transport: Transport::Udp,
        udp: broker.udp(),
        ws: broker.ws(),
        lookup: None,
        meter_ms: 0,
        boot_number: 1,
        record_seed: ::broker::provisioning::fresh_seed(&mut rand::rng()),
        exit_after_s: rig.login_timeout_s + BOARD_LIFETIME_S + 30,
        board: 0,
        flash: None,
    };
    let suite = crate::persist::run(rig, &paths.root, logs, api, base).await;
    report(&suite);
    suite
}

/// Prints a suite's result lines to stderr.
pub fn report(suite: &Suite) {
    for c in &suite.cases {
        let (mark, text) = match &c.outcome {
            Outcome::Pass => ("ok  ", c.detail.as_str()),
            Outcome::Fail(m) => ("FAIL", m.as_str()),
            Outcome::Skip(m) => ("skip", m.as_str()),
        };
        eprintln!(
            "hil[{}] {mark} {} ({:.2} s) {text}",
            suite.name,
            c.name,
            c.time.as_secs_f32()
        );
    }
    eprintln!(
        "hil[{}] total {:.2} s",
        suite.name,
        suite.time.as_secs_f32()
    );
    if suite.failures() > 0 {
        for line in suite.system_out.lines() {
            eprintln!("  board | {line}");
        }
    }
}

/// A suite that is one failed `set-up` case.
pub fn failed_suite(name: &str, started: Instant, reason: String) -> Suite {
    let suite = Suite {
        name: name.to_string(),
        cases: vec![Case {
            name: "set-up".into(),
            outcome: Outcome::Fail(reason),
            time: started.elapsed(),
            detail: String::new(),
        }],
        time: started.elapsed(),
        system_out: String::new(),
    };
    report(&suite);
    suite
}

fn setup_failure(rig: &Rig, started: Instant, reason: String) -> Vec<Suite> {
    vec![failed_suite(&rig.name, started, reason)]
}
