//! `hil-tests`: lists and runs rigs and scenarios. Usually started by `cargo xtask hil`, which
//! builds the boards first.
//!
//! ```text
//! hil-tests list
//! hil-tests run --rig NAME|FILE [--rig ...] [--scenario S]... [--root DIR] [--dry-run]
//! hil-tests net-up --rig NAME|FILE     (the rig's network only, until Ctrl-C; for the teardown test)
//! hil-tests cluster-node comet|msgbus CONFIG   (one node of the cluster scenario; started by it)
//! ```
//! `hil-tests --rig R` (no subcommand) is `run`. Each run writes a directory
//! `<root>/target/hil/runs/<unix seconds>-<rigs>/` (board logs, broker data, `junit.xml`,
//! `summary.txt`) and copies the report and summary to `<root>/target/hil/`. With `--dry-run`
//! (real-board rigs only) it prints the commands a run would execute for each boot (build,
//! write the record, flash and run with probe-rs) and runs nothing.
//! Exit status: 0 all passed, 1 a case failed, 2 bad arguments or rig file, 130 interrupted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hil_tests::junit::{self, Suite};
use hil_tests::netns::{self, Namespace};
use hil_tests::rig::Rig;
use hil_tests::run::{Paths, run_rig, selected};
use hil_tests::teardown::Teardown;
use hil_tests::{catalog, dry_run};

const USAGE: &str = "usage: hil-tests list | run --rig R [--rig R]... [--scenario S]... [--root DIR] [--dry-run] [--upload-run-s N] [--cut-off-s N] | net-up --rig R";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    List,
    Run,
    NetUp,
}

#[derive(Debug)]
struct Args {
    command: Command,
    rigs: Vec<String>,
    scenarios: Vec<String>,
    root: PathBuf,
    /// Print a real-board rig's commands instead of running them.
    dry_run: bool,
    /// Overrides every rig's `upload_run_s` (`--upload-run-s`: the full 60 s form).
    upload_run_s: Option<u64>,
    /// Overrides every rig's `cut_off_s` (`--cut-off-s`: e.g. the 10-minute form).
    cut_off_s: Option<u64>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = args.into_iter().peekable();
    let command = match args.peek().map(String::as_str) {
        Some("list") => Command::List,
        Some("run") => Command::Run,
        Some("net-up") => Command::NetUp,
        _ => Command::Run,
    };
    if matches!(
        args.peek().map(String::as_str),
        Some("list" | "run" | "net-up")
    ) {
        args.next();
    }
    let mut parsed = Args {
        command,
        rigs: Vec::new(),
        scenarios: Vec::new(),
        root: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        dry_run: false,
        upload_run_s: None,
        cut_off_s: None,
    };
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--rig" => parsed.rigs.push(value("--rig")?),
            "--scenario" => {
                let s = value("--scenario")?;
                if catalog::find(&s).is_none() {
                    return Err(format!("unknown scenario `{s}` (see `hil-tests list`)"));
                }
                parsed.scenarios.push(s);
            }
            "--root" => parsed.root = PathBuf::from(value("--root")?),
            "--dry-run" => parsed.dry_run = true,
            "--upload-run-s" => parsed.upload_run_s = Some(seconds(&value("--upload-run-s")?)?),
            "--cut-off-s" => parsed.cut_off_s = Some(seconds(&value("--cut-off-s")?)?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if parsed.command != Command::List && parsed.rigs.is_empty() {
        if parsed.command == Command::NetUp {
            return Err("net-up needs --rig".into());
        }
        parsed.rigs.push("qemu".into());
    }
    Ok(parsed)
}

/// A positive number of seconds.
fn seconds(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a positive number of seconds")),
    }
}

fn list(rigs_dir: &Path) -> ExitCode {
    println!("rigs ({}):", rigs_dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(rigs_dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    for path in files {
        match Rig::load(rigs_dir, &path.display().to_string()) {
            Ok(rig) => {
                let boards = rig.host_tap.as_ref().map_or(String::new(), |h| {
                    let qemu = if rig.qemu.is_some() { " + 1 QEMU" } else { "" };
                    format!(", {} host TAP board(s){qemu}", h.boards)
                });
                println!(
                    "  {:<16} kind {:?}{boards}; scenarios: {}",
                    rig.name,
                    rig.kind,
                    rig.scenarios.join(", ")
                );
            }
            Err(e) => println!("  {}: {e}", path.display()),
        }
    }
    println!("scenarios:");
    for k in catalog::SCENARIOS {
        let needs = if k.fleet { " [host-tap rigs]" } else { "" };
        println!("  {:<22}{needs} {}", k.name, k.criterion);
    }
    ExitCode::SUCCESS
}

/// The rig's network alone, until a signal (the teardown watcher removes it).
fn net_up(rig: &Rig, teardown: &Teardown) -> ExitCode {
    let Some(h) = &rig.host_tap else {
        eprintln!(
            "hil-tests: rig {} has no network of its own (not host-tap)",
            rig.name
        );
        return ExitCode::from(2);
    };
    let name = netns::name_for_this_process();
    teardown.add_namespace(&name);
    let taps: Vec<String> = (0..h.boards).map(|i| h.tap(i)).collect();
    let ns = match Namespace::create(&name, &h.bridge, &h.host_ip, &taps) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("hil-tests: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", ns.name());
    loop {
        std::thread::park();
    }
}

/// Sends the in-process brokers' log (`RUST_LOG`, else `info`) to `<run dir>/broker.log`.
fn broker_log(run_dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(run_dir).map_err(|e| e.to_string())?;
    let path = run_dir.join("broker.log");
    let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let rust_log = std::env::var("RUST_LOG").ok();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(broker::logging::filter(rust_log.as_deref(), "info"))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .finish();
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())?;
    Ok(path)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(hil_tests::failover::NODE_COMMAND) {
        return hil_tests::failover::node_main(&argv[1..]);
    }
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hil-tests: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let root = args.root.canonicalize().unwrap_or(args.root);
    let rigs_dir = root.join("hil-tests/rigs");
    if args.command == Command::List {
        return list(&rigs_dir);
    }
    let mut rigs = Vec::new();
    for name in &args.rigs {
        match Rig::load(&rigs_dir, name) {
            Ok(mut rig) => {
                rig.upload_run_s = args.upload_run_s.unwrap_or(rig.upload_run_s);
                rig.cut_off_s = args.cut_off_s.unwrap_or(rig.cut_off_s);
                rigs.push(rig)
            }
            Err(e) => {
                eprintln!("hil-tests: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let names: Vec<&str> = rigs.iter().map(|r| r.name.as_str()).collect();
    let hil = root.join("target/hil");
    let work = hil
        .join("runs")
        .join(format!("{stamp}-{}", names.join("+")));
    if args.dry_run {
        for rig in &rigs {
            match dry_run::plan(rig, &root, &work.join("logs")) {
                Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
                Err(e) => {
                    eprintln!("hil-tests: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    let teardown = match Teardown::install() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hil-tests: cannot watch for Ctrl-C: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.command == Command::NetUp {
        return net_up(&rigs[0], &teardown);
    }
    for rig in &rigs {
        if !args.scenarios.is_empty() && selected(rig, &args.scenarios).is_empty() {
            eprintln!(
                "hil-tests: rig {} runs none of {:?} (its scenarios: {:?})",
                rig.name, args.scenarios, rig.scenarios
            );
            return ExitCode::from(2);
        }
    }
    let paths = Paths {
        work,
        root,
        teardown,
        only: args.scenarios,
    };
    eprintln!("hil: run directory {}", paths.work.display());
    match broker_log(&paths.work) {
        Ok(path) => eprintln!("hil: broker log {}", path.display()),
        Err(e) => eprintln!("hil-tests: no broker log: {e}"),
    }
    let started = Instant::now();
    let mut suites: Vec<Suite> = Vec::new();
    for rig in &rigs {
        suites.extend(run_rig(rig, &paths));
    }
    let elapsed = started.elapsed();
    let xml = junit::render(&suites);
    let summary = junit::summary(&suites, elapsed, &paths.work);
    let mut wrote = true;
    for dir in [&paths.work, &hil] {
        let _ = std::fs::create_dir_all(dir);
        for (file, text) in [("junit.xml", &xml), ("summary.txt", &summary)] {
            if let Err(e) = std::fs::write(dir.join(file), text) {
                eprintln!("hil-tests: cannot write {}: {e}", dir.join(file).display());
                wrote = false;
            }
        }
    }
    eprint!("{summary}");
    let failures: usize = suites.iter().map(Suite::failures).sum();
    if failures == 0 && wrote {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_subcommands_rigs_and_scenarios() {
        assert_eq!(args(&[]).unwrap().rigs, ["qemu"]);
        let a = args(&["--rig", "qemu", "--rig", "host-tap"]).unwrap();
        assert_eq!(a.command, Command::Run);
        assert_eq!(a.rigs, ["qemu", "host-tap"]);
        let a = args(&["run", "--rig", "ci", "--scenario", "boot-online"]).unwrap();
        assert_eq!(
            (a.command, a.rigs, a.scenarios),
            (
                Command::Run,
                vec!["ci".to_string()],
                vec!["boot-online".to_string()]
            )
        );
        assert_eq!(args(&["list"]).unwrap().command, Command::List);
        assert!(
            args(&["run", "--scenario", "no-such"])
                .unwrap_err()
                .contains("unknown scenario")
        );
        assert!(args(&["net-up"]).is_err());
        assert!(args(&["--rig"]).is_err());
        assert!(args(&["--fast"]).is_err());
        assert!(
            args(&["run", "--rig", "nucleo-f429zi", "--dry-run"])
                .unwrap()
                .dry_run
        );
        assert!(!args(&["run", "--rig", "qemu"]).unwrap().dry_run);
    }
}
