//! `cargo xtask soak [--minutes N] [--connections N] ...`: a long run of the standalone broker
//! under steady device traffic with connection churn, judged on whether its resident memory and
//! open file descriptors stay flat and its errors do not grow.
//!
//! How the pieces fit:
//! * the broker binary is built (`--release` optional) and started on free 127.0.0.1 ports with
//!   a config of its own in `target/soak/` (limits lifted for one client address, the upload
//!   spool capped so retention runs, the store's page cache sized by `--store-cache-mib`);
//! * the client side is `broker load`: one process keeps 99% of the connections for the whole
//!   run, uploading every `--upload-interval` ms; every minute a churn batch of 1% of the
//!   connections logs in, uploads and says goodbye about 50 s later (so 1% of the connections
//!   end and 1% are new each minute), alternating between two id ranges as reconnecting devices
//!   would;
//! * every sample interval the broker's `VmRSS` and `/proc/PID/fd` count are read, with the
//!   errors so far (WARN/ERROR lines of the broker's log plus the failures each finished load
//!   process reported);
//! * [`crate::soak_report`] judges the samples (flat within 5% after warm-up, no growth in
//!   errors) and renders the result: `<out>/<stamp>-<minutes>min-<connections>conn.md` and
//!   `.svg` (default out: `docs/soak/`). Exit status 0 only when the run passed; a run whose
//!   steady client saw the broker fall behind the offered uploads fails too
//!   ([`soak_report::kept_up`]), since its memory then holds a backlog;
//! * [`quick`] is the 90 s form `cargo xtask test` runs as its `soak` step.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::host_build::build_host_debug_binaries;
use crate::shell::{cargo, project_root, run_command, target_dir};
use crate::soak_report::{
    self, FLAT_WITHIN_PERCENT, KEPT_UP_P99_MS, KEPT_UP_PERCENT, Sample, Verdict,
};

const USAGE: &str = "\
usage: cargo xtask soak [--minutes N] [--connections N] [--upload-interval MS]
                        [--warmup-minutes N] [--spool-max-records N]
                        [--store-cache-mib N] [--release] [--binary PATH] [--out DIR]

  --minutes N          length of the steady run (default 30)
  --connections N      simulated device connections, 1% of them churned per minute (default 10000)
  --upload-interval MS time between two uploads of one device (default 30000)
  --warmup-minutes N   samples before this are not judged (default: a fifth of the run, at least 0.5)
  --spool-max-records N the broker's upload.spool_max_records (default 20000): reached within
                       the warm-up, so the store file is no longer growing when judged
  --store-cache-mib N  the broker's storage.cache_bytes in MiB (default 2): smaller than the
                       store file, so the page cache is full within the warm-up
  --release            build and run the broker in release mode (default: debug)
  --binary PATH        run this broker binary instead of building one (say which build it is
                       with --release or not: the result file reports it)
  --out DIR            where the result files go (default docs/soak)
Pass: RSS and open fds drift at most 5% over the measured window, errors do not grow, and
the broker keeps up (95% of the offered uploads/s acknowledged, ack p99 at most 5 s).
";

/// First device id of the steady population; churn batches use ids above it.
const STEADY_FIRST_ID: u32 = 100_000;
/// The soak broker's default `upload.spool_max_records`: small enough that retention starts
/// trimming (and the store file stops growing) within the warm-up of a run at the default
/// rates, so the measured window sees a store of constant size.
const SPOOL_MAX_RECORDS: u64 = 20_000;
/// The soak broker's default `storage.cache_bytes`, in MiB: below the size the store file
/// reaches at the spool cap (about 6 MiB at 20,000 records), so the page cache is full within
/// the warm-up. With the broker's default (1 GiB) the cache grows with every page read until
/// it holds the whole file, which a run shows as growth of up to the file's size.
const STORE_CACHE_MIB: u64 = 2;
/// Seconds between churn batches.
const CHURN_EVERY_SECS: u64 = 60;
/// Seconds into the run the first churn batch starts (so a short run churns too).
const CHURN_FIRST_SECS: u64 = 20;
/// Seconds a churn batch uploads after logging in.
const CHURN_LIFETIME_SECS: u64 = 45;

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq)]
struct Options {
    minutes: f64,
    connections: u32,
    upload_interval_ms: u64,
    warmup_minutes: Option<f64>,
    spool_max_records: u64,
    store_cache_mib: u64,
    release: bool,
    binary: Option<PathBuf>,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        minutes: 30.0,
        connections: 10_000,
        upload_interval_ms: 30_000,
        warmup_minutes: None,
        spool_max_records: SPOOL_MAX_RECORDS,
        store_cache_mib: STORE_CACHE_MIB,
        release: false,
        binary: None,
        out: project_root().join("docs/soak"),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or(format!("{name} needs a value\n{USAGE}"))
        };
        let number = |name: &str, v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|n| *n > 0.0)
                .ok_or(format!("{name}: `{v}` is not a positive number"))
        };
        match arg.as_str() {
            "--minutes" => o.minutes = number(arg, value(arg)?)?,
            "--connections" => o.connections = number(arg, value(arg)?)? as u32,
            "--upload-interval" => o.upload_interval_ms = number(arg, value(arg)?)? as u64,
            "--warmup-minutes" => o.warmup_minutes = Some(number(arg, value(arg)?)?),
            "--spool-max-records" => o.spool_max_records = number(arg, value(arg)?)? as u64,
            "--store-cache-mib" => o.store_cache_mib = number(arg, value(arg)?)?.ceil() as u64,
            "--release" => o.release = true,
            "--binary" => o.binary = Some(PathBuf::from(value(arg)?)),
            "--out" => o.out = PathBuf::from(value(arg)?),
            "help" | "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if o.connections < 100 {
        return Err("--connections: at least 100 (1% of them churn every minute)".into());
    }
    Ok(o)
}

impl Options {
    fn warmup_secs(&self) -> f64 {
        self.warmup_minutes.unwrap_or((self.minutes / 5.0).max(0.5)) * 60.0
    }

    fn churn_batch(&self) -> u32 {
        (self.connections / 100).max(1)
    }
}

/// The arguments of the quick soak that `cargo xtask test` runs as its `soak` step: 90 s
/// (30 s warm-up) with 1,000 connections uploading every 10 s and a spool cap of 2,000
/// records (reached within the warm-up), results in `target/soak-quick/`.
pub const QUICK: &[&str] = &[
    "--minutes",
    "1.5",
    "--connections",
    "1000",
    "--upload-interval",
    "10000",
    "--warmup-minutes",
    "0.5",
    "--spool-max-records",
    "2000",
];

/// The quick soak ([`QUICK`]), its result files under `target/soak-quick/`.
pub fn quick() -> Result<(), String> {
    let mut args: Vec<String> = QUICK.iter().map(|a| a.to_string()).collect();
    args.push("--out".into());
    args.push(target_dir().join("soak-quick").display().to_string());
    run(&args)
}

/// Runs `cargo xtask soak [...]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let binary = match &o.binary {
        Some(path) => path.clone(),
        None => build(o.release)?,
    };
    let work = target_dir().join("soak");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    let config = write_config(&work, &o)?;
    let log_path = work.join("broker.log");
    let mut broker = Running::start(
        Command::new(&binary).arg("--config").arg(&config),
        &log_path,
    )?;
    wait_for_start(&mut broker, &log_path, Duration::from_secs(120))?;
    let pid = broker.0.id();
    let machine = machine();
    let load_at_start = load_average();
    let started = Instant::now();
    let total = Duration::from_secs_f64(o.minutes * 60.0);
    eprintln!(
        "soak: broker PID {pid}, {} connections ({} churned per minute), {:.1} min; log {}",
        o.connections,
        o.churn_batch(),
        o.minutes,
        log_path.display()
    );

    let steady = o.connections - o.churn_batch();
    let steady_report = work.join("steady.json");
    let mut steady_load = Running::start(
        &mut load_command(
            &binary,
            &config,
            steady,
            STEADY_FIRST_ID,
            total.as_secs(),
            &o,
        ),
        &steady_report,
    )?;
    let mut batches: Vec<(Running, PathBuf)> = Vec::new();
    let mut next_batch = Duration::from_secs(CHURN_FIRST_SECS);
    let mut batch_no = 0u32;
    let mut client_errors = 0u64;
    let mut churned = 0u64;
    let interval = Duration::from_secs_f64((o.minutes * 60.0 / 240.0).clamp(2.0, 15.0));
    let mut samples = Vec::new();
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < total {
        let now = started.elapsed();
        if now >= next_batch && now + Duration::from_secs(CHURN_LIFETIME_SECS + 10) < total {
            let first = STEADY_FIRST_ID + o.connections + (batch_no % 2) * o.churn_batch();
            let report = work.join(format!("churn-{batch_no}.json"));
            let mut cmd = load_command(
                &binary,
                &config,
                o.churn_batch(),
                first,
                CHURN_LIFETIME_SECS,
                &o,
            );
            batches.push((Running::start(&mut cmd, &report)?, report));
            batch_no += 1;
            next_batch += Duration::from_secs(CHURN_EVERY_SECS);
        }
        // Collect finished churn batches.
        let mut still = Vec::new();
        for (mut b, report) in batches {
            if b.0.try_wait().map_err(|e| e.to_string())?.is_some() {
                let (errors, devices) = report_errors(&report);
                client_errors += errors;
                churned += devices;
            } else {
                still.push((b, report));
            }
        }
        batches = still;
        if now >= next_sample {
            samples.push(Sample {
                secs: now.as_secs_f64(),
                rss_kib: crate::bench_ns::resident(pid)?.total_kib,
                fds: open_fds(pid)?,
                errors: log_errors(&log_path) + client_errors,
            });
            next_sample += interval;
        }
        if let Some(status) = broker.0.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the broker exited during the soak ({status}); see {}",
                log_path.display()
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
    // The steady load ends on its own (its duration is the run's, plus ramp and grace).
    let end_wait = Instant::now();
    while steady_load
        .0
        .try_wait()
        .map_err(|e| e.to_string())?
        .is_none()
    {
        if end_wait.elapsed() > Duration::from_secs(120) {
            return Err("the steady `broker load` did not finish".into());
        }
        thread::sleep(Duration::from_millis(500));
    }
    let (steady_errors, _) = report_errors(&steady_report);
    let steady_json = last_json_line(&steady_report).unwrap_or_default();
    for (mut b, report) in batches {
        let _ = b.0.wait();
        let (errors, devices) = report_errors(&report);
        client_errors += errors;
        churned += devices;
    }
    drop(broker);

    let mut verdict = soak_report::judge(&samples, o.warmup_secs());
    let keeping_up = steady_rates(&steady_json, steady, o.upload_interval_ms);
    if let Some(why) = soak_report::kept_up(keeping_up.0, keeping_up.1, keeping_up.2) {
        verdict.failures.push(why);
    }
    let stamp = stamp();
    let name = format!(
        "{}-{}min-{}conn",
        stamp
            .replace(':', "")
            .replace('T', "-")
            .trim_end_matches('Z'),
        o.minutes,
        o.connections
    );
    fs::create_dir_all(&o.out).map_err(|e| format!("create {}: {e}", o.out.display()))?;
    let svg_name = format!("{name}.svg");
    let title = format!(
        "broker soak {stamp}: {} connections, {:.1} min",
        o.connections, o.minutes
    );
    write(
        &o.out.join(&svg_name),
        &soak_report::svg(&samples, o.warmup_secs(), &title),
    )?;
    let summary = Summary {
        o: &o,
        stamp: &stamp,
        machine: &machine,
        load: (load_at_start, load_average()),
        verdict: &verdict,
        samples: &samples,
        steady_json: &steady_json,
        steady_errors,
        churn: (batch_no, churned, client_errors),
        svg_name: &svg_name,
        keeping_up,
    };
    write(&o.out.join(format!("{name}.md")), &summary.markdown())?;
    eprintln!(
        "soak: RSS {:+.1}%, fds {:+.1}%, errors {} then {}; results in {}",
        verdict.rss.percent(),
        verdict.fds.percent(),
        verdict.errors_first_half,
        verdict.errors_second_half,
        o.out.join(format!("{name}.md")).display()
    );
    if verdict.passed() && steady_errors == 0 {
        Ok(())
    } else {
        let mut why = verdict.failures.clone();
        if steady_errors > 0 {
            why.push(format!("the steady load reported {steady_errors} failures"));
        }
        Err(format!("soak failed: {}", why.join("; ")))
    }
}

/// A child process whose stdout and stderr go to a file; killed (by its PID) when dropped.
struct Running(Child);

impl Running {
    fn start(command: &mut Command, output: &Path) -> Result<Running, String> {
        let file = fs::File::create(output).map_err(|e| format!("{}: {e}", output.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .spawn()
            .map(Running)
            .map_err(|e| format!("cannot start {command:?}: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn load_command(
    binary: &Path,
    config: &Path,
    devices: u32,
    first_id: u32,
    secs: u64,
    o: &Options,
) -> Command {
    let mut c = Command::new(binary);
    c.arg("--config").arg(config).args([
        "load",
        "--json",
        "--devices",
        &devices.to_string(),
        "--first-id",
        &first_id.to_string(),
        "--login-rate",
        "250",
        "--duration",
        &secs.to_string(),
        "--upload-interval",
        &o.upload_interval_ms.to_string(),
        "--in-flight",
        "2",
    ]);
    c
}

/// The broker binary the soak runs: release (`--release`) or
/// debug (the host tests' build, fresh after `cargo xtask test`).
fn build(release: bool) -> Result<PathBuf, String> {
    if !release {
        return Ok(build_host_debug_binaries()?.join("broker"));
    }
    run_command(cargo().args(["build", "--release", "-p", "broker", "--bin", "broker"]))?;
    Ok(target_dir().join("release/broker"))
}

/// Three free TCP ports and one free UDP port on 127.0.0.1, all distinct: every socket
/// stays bound until all four are known, so the kernel cannot hand out one port twice.
fn free_ports() -> Result<([u16; 3], u16), String> {
    let tcp: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("pick a free TCP port: {e}"))?;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| format!("pick a free UDP port: {e}"))?;
    let mut ports = [0u16; 3];
    for (port, listener) in ports.iter_mut().zip(&tcp) {
        *port = listener.local_addr().map_err(|e| e.to_string())?.port();
    }
    let udp_port = udp.local_addr().map_err(|e| e.to_string())?.port();
    Ok((ports, udp_port))
}

/// The soak's broker config: free ports, its own data directory and store cache size, limits
/// sized for the connections from one address, and a spool cap so retention trims during the
/// run.
fn write_config(work: &Path, o: &Options) -> Result<PathBuf, String> {
    let limit = o.connections + o.connections / 10 + 100;
    let (spool_max_records, cache_bytes) = (o.spool_max_records, o.store_cache_mib << 20);
    let ([http, device_ws, app_ws], udp) = free_ports()?;
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:{http}\"\ndevice_ws = \"127.0.0.1:{device_ws}\"\n\
         app_ws = \"127.0.0.1:{app_ws}\"\nudp = \"127.0.0.1:{udp}\"\n[storage]\ndata_dir = {:?}\n\
         cache_bytes = {cache_bytes}\n[limits]\nmax_connections = {limit}\n\
         max_connections_per_ip = {limit}\nlogin_attempts_per_ip_per_sec = 100000\n\
         [upload]\nspool_max_records = {spool_max_records}\n",
        work.join("data"),
    );
    // Owner-only, as operators are told to keep it (the broker warns otherwise).
    let data = work.join("data");
    fs::create_dir_all(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
    fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", data.display()))?;
    let path = work.join("broker.toml");
    write(&path, &text)?;
    Ok(path)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Waits until the broker's log says its HTTP API listens. A broker that exits first, or
/// stays silent past `limit`, fails the soak with the end of its log in the message.
fn wait_for_start(broker: &mut Running, log: &Path, limit: Duration) -> Result<(), String> {
    const NEEDLE: &str = "HTTP API on";
    let t = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(NEEDLE) {
            return Ok(());
        }
        let problem = match broker.0.try_wait().map_err(|e| e.to_string())? {
            Some(status) => format!("the broker exited ({status}) before its HTTP API listened"),
            None if t.elapsed() >= limit => {
                format!("no `{NEEDLE}` in the broker's log within {limit:?}")
            }
            None => {
                thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{problem}; the last lines of {}:\n{}",
            log.display(),
            tail.join("\n")
        ));
    }
}

fn open_fds(pid: u32) -> Result<u64, String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))
}

/// WARN and ERROR lines in the broker's log so far.
fn log_errors(path: &Path) -> u64 {
    let Ok(file) = fs::File::open(path) else {
        return 0;
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count() as u64
}

fn last_json_line(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| l.starts_with("{\"devices\":"))
        .map(str::to_owned)
}

/// The steady client's offered and acknowledged uploads per second and its acknowledgement
/// p99 (ms), from its report (zeros for a missing report, which already counts as a failure).
fn steady_rates(report: &str, devices: u32, upload_interval_ms: u64) -> (f64, f64, f64) {
    let offered = f64::from(devices) * 1000.0 / upload_interval_ms as f64;
    let Ok(v) = serde_json::from_str::<serde_json::Value>(report) else {
        return (offered, 0.0, 0.0);
    };
    (
        offered,
        v["acked_per_sec"].as_f64().unwrap_or(0.0),
        v["ack_latency"]["p99_ms"].as_f64().unwrap_or(0.0),
    )
}

/// Failures a finished `broker load` reported (failed logins, lost sessions, unacknowledged
/// uploads) and its device count; a missing report counts as one failure.
fn report_errors(path: &Path) -> (u64, u64) {
    let Some(report) =
        last_json_line(path).and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
    else {
        return (1, 0);
    };
    let n = |key: &str| report[key].as_u64().unwrap_or(0);
    let lost: u64 = report["sessions_lost"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    let failed_logins = n("devices").saturating_sub(n("logged_in"));
    let unacked = n("uploads_sent").saturating_sub(n("uploads_acked"));
    (failed_logins + lost + unacked, n("devices"))
}

fn command_text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn stamp() -> String {
    command_text("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(String::new(), |kib| {
            format!("{} GiB RAM", kib / 1024 / 1024)
        });
    format!(
        "{cpu}, {} cores, {mem}, Linux {}",
        command_text("nproc", &[]),
        command_text("uname", &["-r"])
    )
}

/// Everything the Markdown result file reports.
struct Summary<'a> {
    o: &'a Options,
    stamp: &'a str,
    machine: &'a str,
    load: (String, String),
    verdict: &'a Verdict,
    samples: &'a [Sample],
    steady_json: &'a str,
    steady_errors: u64,
    churn: (u32, u64, u64),
    svg_name: &'a str,
    /// Offered and acknowledged uploads/s of the steady client, and its ack p99 in ms.
    keeping_up: (f64, f64, f64),
}

impl Summary<'_> {
    fn markdown(&self) -> String {
        let (o, v) = (self.o, self.verdict);
        let passed = v.passed() && self.steady_errors == 0;
        let mut s = format!(
            "# Soak run {stamp}: {result}\n\n\
             `cargo xtask soak --minutes {min} --connections {conn} --upload-interval {ui} \
             --warmup-minutes {warmup} --spool-max-records {spool} --store-cache-mib {cache}{rel}{bin}`\n\n\
             * Machine: {machine}; load average {l0} at the start, {l1} at the end (shared machine).\n\
             * Broker: standalone, embedded store, {build} build{arena}; clients: `broker load` over UDP on 127.0.0.1.\n\
             * Traffic: {steady} steady connections, one upload per {ui} ms each; {batches} churn batches \
               of {batch} devices ({churned} logins), one per minute, each ending after about {life} s.\n\
             * Warm-up (not judged): {warm:.1} min; {measured} samples judged.\n\n\
             | criterion | start of window | end of window | drift | min | max | limit |\n\
             |---|---|---|---|---|---|---|\n\
             | RSS, KiB | {r0:.0} | {r1:.0} | {rp:+.2}% | {rmin} | {rmax} | ±{FLAT_WITHIN_PERCENT}% |\n\
             | open fds | {f0:.0} | {f1:.0} | {fp:+.2}% | {fmin} | {fmax} | ±{FLAT_WITHIN_PERCENT}% |\n\
             | errors (broker WARN/ERROR lines + client failures) | {e0} in the first half | {e1} in the second half | | | | no growth |\n\n\
             Kept up: {up1:.1} of {up0:.1} offered uploads/s acknowledged (at least {KEPT_UP_PERCENT}% needed), \
             ack p99 {up2:.0} ms (at most {KEPT_UP_P99_MS} ms).\n\n\
             Churn clients reported {cerr} failures; the steady client {serr}.\n\n\
             ![RSS and open fds over time]({svg})\n\n",
            stamp = self.stamp,
            result = if passed { "PASS" } else { "FAIL" },
            min = o.minutes,
            conn = o.connections,
            ui = o.upload_interval_ms,
            warmup = o.warmup_secs() / 60.0,
            spool = o.spool_max_records,
            cache = o.store_cache_mib,
            rel = if o.release { " --release" } else { "" },
            bin = o
                .binary
                .as_ref()
                .map(|b| format!(" --binary {}", b.display()))
                .unwrap_or_default(),
            machine = self.machine,
            l0 = self.load.0,
            l1 = self.load.1,
            build = if o.release { "release" } else { "debug" },
            arena = std::env::var("MALLOC_ARENA_MAX")
                .map(|n| format!(", glibc malloc with MALLOC_ARENA_MAX={n}"))
                .unwrap_or_default(),
            steady = o.connections - o.churn_batch(),
            batches = self.churn.0,
            batch = o.churn_batch(),
            churned = self.churn.1,
            life = CHURN_LIFETIME_SECS,
            warm = o.warmup_secs() / 60.0,
            measured = v.measured,
            r0 = v.rss.start,
            r1 = v.rss.end,
            rp = v.rss.percent(),
            rmin = v.rss.min,
            rmax = v.rss.max,
            f0 = v.fds.start,
            f1 = v.fds.end,
            fp = v.fds.percent(),
            fmin = v.fds.min,
            fmax = v.fds.max,
            e0 = v.errors_first_half,
            e1 = v.errors_second_half,
            cerr = self.churn.2,
            serr = self.steady_errors,
            svg = self.svg_name,
            up0 = self.keeping_up.0,
            up1 = self.keeping_up.1,
            up2 = self.keeping_up.2,
        );
        if !passed {
            s.push_str("Failures:\n\n");
            for f in &v.failures {
                s.push_str(&format!("* {f}\n"));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "Steady client report:\n\n```json\n{}\n```\n\n<details><summary>Samples (seconds, RSS KiB, fds, errors)</summary>\n\n```\n",
            self.steady_json
        ));
        for x in self.samples {
            s.push_str(&format!(
                "{:.0} {} {} {}\n",
                x.secs, x.rss_kib, x.fds, x.errors
            ));
        }
        s.push_str("```\n\n</details>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_have_defaults_and_refuse_nonsense() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.minutes, o.connections, o.churn_batch()),
            (30.0, 10_000, 100)
        );
        assert_eq!(o.warmup_secs(), 360.0);
        let o = parse(&args("--minutes 1 --connections 500")).unwrap();
        assert_eq!((o.churn_batch(), o.warmup_secs()), (5, 30.0));
        assert_eq!((o.spool_max_records, o.store_cache_mib), (20_000, 2));
        let o = parse(&args("--store-cache-mib 16")).unwrap();
        assert_eq!(o.store_cache_mib, 16);
        assert!(parse(&args("--store-cache-mib 0")).is_err());
        let quick: Vec<String> = QUICK.iter().map(|a| a.to_string()).collect();
        let q = parse(&quick).unwrap();
        assert_eq!((q.spool_max_records, q.warmup_secs()), (2_000, 30.0));
        assert!(parse(&args("--minutes 0")).is_err());
        assert!(parse(&args("--connections 50")).is_err());
        assert!(parse(&args("--bogus")).is_err());
        let o = parse(&args("--release --binary target/release/broker")).unwrap();
        assert_eq!(
            (o.release, o.binary),
            (true, Some(PathBuf::from("target/release/broker")))
        );
    }

    #[test]
    fn the_steady_rates_come_from_the_load_report() {
        let report = r#"{"devices":100,"acked_per_sec":9.5,"ack_latency":{"p99_ms":420.5}}"#;
        assert_eq!(steady_rates(report, 100, 10_000), (10.0, 9.5, 420.5));
        assert_eq!(steady_rates("", 100, 10_000), (10.0, 0.0, 0.0));
    }

    #[test]
    fn a_load_report_yields_its_failures() {
        let dir = std::env::temp_dir().join(format!("soak-report-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        fs::write(
            &path,
            "log line\n{\"devices\":10,\"logged_in\":9,\"login_failures\":{\"timeout\":1},\
             \"uploads_sent\":40,\"uploads_acked\":38,\"sessions_lost\":{\"kicked\":2,\"timeout\":1}}\n",
        )
        .unwrap();
        assert_eq!(report_errors(&path), (1 + 3 + 2, 10));
        fs::write(&path, "no report\n").unwrap();
        assert_eq!(report_errors(&path), (1, 0));
        let _ = fs::remove_dir_all(&dir);
    }
}
