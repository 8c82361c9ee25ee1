//! `broker load`: the project's load generator. Many simulated devices log in to a running
//! broker over UDP or the device WebSocket, upload on an interval and answer commands, and the
//! run ends with a report of login rate and latency, acknowledged uploads per second with
//! acknowledgement latency percentiles, lost sessions and, given the broker's PID, its resident
//! memory per session.
//!
//! * [`device`]: one simulated device (the same handshake and link code as `broker client`).
//! * [`stats`]: latency percentiles, counters and the report.
//!
//! Phases: devices start at `--login-rate` per second (the ramp); each starts uploading once
//! logged in; `--duration` seconds after the ramp ends uploading stops, outstanding
//! acknowledgements get a grace period, and every device says Goodbye. Exit status 0 when the run
//! was clean (every device logged in, no session lost, every upload acknowledged), 1 otherwise,
//! 2 for bad arguments.
//!
//! With `--pings-in-flight N` the steady phase is a Ping flood instead of uploads: each device
//! keeps N Pings unanswered (a Pong, or a pause of [`device::PING_LOSS_MS`] without one, frees
//! the slots), and the report gives Pongs per second and, with `--broker-pid`, Pongs per second
//! of broker CPU time between the end of the ramp and the end of the steady phase.

pub mod device;
pub mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;

use crate::client::device::Endpoint;
use crate::client::{self, creds};
use crate::config::Config;
use device::{Live, Plan};
use stats::{MemorySamples, PingFlood, Report};

/// `broker load`: simulated devices against a running broker.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    devices: u32,
    /// Id of the first device; the others follow.
    #[arg(long, default_value_t = 100_000, value_name = "ID")]
    first_id: u32,
    /// Broker UDP address [default: listen.udp of the config, 127.0.0.1:8083].
    #[arg(long, value_name = "ADDR", conflicts_with = "ws")]
    udp: Option<SocketAddr>,
    /// Use the device WebSocket, at URL [default: ws(s)://<listen.device_ws>/].
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    ws: Option<String>,
    /// Logins started per second during the ramp.
    #[arg(long, default_value_t = 500, value_name = "PER_SEC")]
    login_rate: u32,
    /// Seconds of steady load after the ramp.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    duration: u64,
    /// Milliseconds between uploads of one device (0: no uploads, e.g. to measure memory).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    upload_interval: u64,
    /// Upload payload size in bytes.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    payload: usize,
    /// Unacknowledged uploads allowed per device.
    #[arg(long, default_value_t = 4, value_name = "N")]
    in_flight: usize,
    /// Give up a login after this many seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    login_timeout: u64,
    /// The broker's PID: its resident memory is sampled before, when connected and at the end.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// The fleet master key (64 hex digits) the device keys derive from [default: the config's,
    /// else the one the broker generated into secrets.toml in its data directory].
    #[arg(long, value_name = "HEX")]
    master_key: Option<String>,
    /// The broker's data directory, read for generated secrets [default: storage.data_dir].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Ping flood instead of uploads: Pings each device keeps unanswered during the steady
    /// phase (0: off). The report gives Pongs/s and, with --broker-pid, Pongs per broker
    /// core-second.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pings_in_flight: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `broker load`; see the module docs for the exit status.
pub fn cli(config: &Config, args: LoadArgs) -> ExitCode {
    let plan = match prepare(config, &args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("broker load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("broker load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(plan, &args));
    if args.json {
        match serde_json::to_string(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => eprintln!("broker load: {e}"),
        }
    } else {
        println!("{report}");
    }
    if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Everything resolved before the first packet: endpoint and keys.
struct Prepared {
    endpoint: Endpoint,
    keys: Vec<(u32, shared_protocol::keys::DeviceKey)>,
}

fn prepare(config: &Config, args: &LoadArgs) -> Result<Prepared, String> {
    if args.devices == 0 || args.login_rate == 0 || args.in_flight == 0 {
        return Err("--devices, --login-rate and --in-flight must be at least 1".into());
    }
    let last = args
        .first_id
        .checked_add(args.devices - 1)
        .filter(|&l| l <= i32::MAX as u32)
        .ok_or("--first-id + --devices goes past the largest device id (2147483647)")?;
    if args.first_id == 0 {
        return Err("device ids start at 1".into());
    }
    let endpoint = match &args.ws {
        Some(url) if !url.is_empty() => Endpoint::Ws(url.clone(), None),
        Some(_) => {
            let (url, ca) = client::default_url(config, config.listen.device_ws);
            Endpoint::Ws(url, ca)
        }
        None => Endpoint::Udp(args.udp.unwrap_or_else(|| client::dial(config.listen.udp))),
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.storage.data_dir.clone());
    let keys = (args.first_id..=last)
        .map(|id| {
            creds::device_key(config, &data_dir, id, None, args.master_key.as_deref())
                .map(|k| (id, k))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Prepared { endpoint, keys })
}

async fn run(prepared: Prepared, args: &LoadArgs) -> Report {
    let devices = prepared.keys.len() as u64;
    let rss = |pid: u32| resident_kib(Path::new(&format!("/proc/{pid}/status"))).unwrap_or(0);
    let before_kib = args.broker_pid.map(rss);
    let start = tokio::time::Instant::now();
    let ramp = Duration::from_secs_f64(devices as f64 / f64::from(args.login_rate));
    let plan = Arc::new(Plan {
        endpoint: prepared.endpoint,
        login_timeout: Duration::from_secs(args.login_timeout),
        upload_interval: (args.upload_interval > 0)
            .then(|| Duration::from_millis(args.upload_interval)),
        payload_len: args.payload,
        in_flight: args.in_flight,
        stop_at: start + ramp + Duration::from_secs(args.duration),
        grace: ack_grace(),
    });
    let live = Arc::new(Live::default());
    let tasks: Vec<_> = prepared
        .keys
        .into_iter()
        .enumerate()
        .map(|(i, (id, key))| {
            let at = start + ramp.mul_f64(i as f64 / devices as f64);
            let pings = args.pings_in_flight;
            tokio::spawn(device::run_pinging(
                id,
                key,
                plan.clone(),
                at,
                live.clone(),
                pings,
            ))
        })
        .collect();

    let started = Instant::now();
    let mut connected_kib = None;
    // Pongs and broker CPU ticks when everyone is logged in, then at the end of the steady phase.
    let cpu = |pid: u32| cpu_ticks(Path::new(&format!("/proc/{pid}/stat")));
    let mut flood_start: Option<(Instant, u64, Option<u64>)> = None;
    let mut flood_end: Option<(Instant, u64, Option<u64>)> = None;
    let mut ramp_took = ramp;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let finished = loop {
        tick.tick().await;
        let done = live.logins_done.load(Ordering::Relaxed);
        if connected_kib.is_none() && done == devices {
            ramp_took = started.elapsed();
            connected_kib = Some(args.broker_pid.map(rss));
            let pongs = live.pongs.load(Ordering::Relaxed);
            flood_start = Some((Instant::now(), pongs, args.broker_pid.and_then(cpu)));
        }
        if flood_end.is_none() && tokio::time::Instant::now() >= plan.stop_at {
            let pongs = live.pongs.load(Ordering::Relaxed);
            flood_end = Some((Instant::now(), pongs, args.broker_pid.and_then(cpu)));
        }
        eprintln!(
            "[{:>4.0} s] logged in {}/{devices}, uploads acknowledged {}, pongs {}, deliveries {} (last at {} Unix ms)",
            started.elapsed().as_secs_f64(),
            live.logged_in.load(Ordering::Relaxed),
            live.acked.load(Ordering::Relaxed),
            live.pongs.load(Ordering::Relaxed),
            live.delivered.load(Ordering::Relaxed),
            live.last_delivery_unix_ms.load(Ordering::Relaxed)
        );
        if tasks.iter().all(|t| t.is_finished()) {
            break started.elapsed();
        }
    };
    let end_kib = args.broker_pid.map(rss);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.unwrap_or_default());
    }
    let memory = match (before_kib, connected_kib.flatten(), end_kib) {
        (Some(before_kib), Some(connected_kib), Some(end_kib)) => Some(MemorySamples {
            before_kib,
            connected_kib,
            end_kib,
        }),
        _ => None,
    };
    // Uploads were measured from the first login to the end of the steady phase.
    let window = plan.stop_at.saturating_duration_since(start);
    let mut report = Report::new(outcomes, ramp_took, window, finished, memory);
    if args.pings_in_flight > 0
        && let (Some((t0, p0, c0)), Some((t1, p1, c1))) = (flood_start, flood_end)
    {
        report.pings = Some(PingFlood::new(
            p1.saturating_sub(p0),
            t1.duration_since(t0),
            c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
        ));
    }
    report
}

/// User plus system CPU time of the process whose `/proc/<pid>/stat` this is, in clock ticks.
fn cpu_ticks(stat: &Path) -> Option<u64> {
    parse_cpu_ticks(&std::fs::read_to_string(stat).ok()?)
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // After the command name (which may hold spaces and parentheses): the state is the first
    // field, utime the 12th and stime the 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of a `/proc/<pid>/status` file, in KiB.
fn resident_kib(status: &Path) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(status).ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How long the last uploads may wait for their acknowledgements once uploading stops: the
/// protocol's whole retransmission schedule (every wait at its longest, up to
/// `MAX_TRANSMISSIONS`), after which the link has either delivered the frame or ended the
/// session. Anything shorter reports a frame as unacknowledged while its retransmission is
/// still due (two lost datagrams already take 1.5 s). The run ends as soon as nothing is pending.
fn ack_grace() -> Duration {
    let schedule: u64 = (1..=shared_protocol::limits::MAX_TRANSMISSIONS)
        .map(|n| shared_protocol::reliability::retransmit_wait(n, u16::MAX))
        .sum();
    Duration::from_millis(schedule + 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_proc_status_text() {
        let status = "Name:\tbroker\nVmPeak:\t  99999 kB\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(20480));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_are_user_plus_system_time_even_with_odd_command_names() {
        let stat = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
        assert!(cpu_ticks(Path::new("/proc/self/stat")).is_some());
    }

    #[test]
    fn our_own_resident_memory_is_readable() {
        let kib = resident_kib(Path::new("/proc/self/status")).expect("linux /proc");
        assert!(kib > 0);
    }
}
