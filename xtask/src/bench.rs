//! `cargo xtask bench [--quick] [--only NAME] [--out DIR] [--terminals N] [--variant NAME]`:
//! our broker side by side with
//! Mosquitto, in the same run, each server alone in a network namespace of its own with its
//! load clients (docs/performance.md, "Side by side with Mosquitto").
//!
//! * [`bench_servers`](crate::bench_servers): the two servers, their generated configs.
//! * [`bench_ns`](crate::bench_ns): namespaces, processes stopped by PID, `/proc` readings.
//! * [`bench_idle`]: scenario `idle-memory`.
//! * [`bench_fanout`]: scenario `fanout`.
//! * [`bench_command`]: scenario `command`.
//! * [`bench_uploads`]: scenario `uploads`.
//! * [`bench_login`]: scenario `login-storm`.
//! * [`bench_udp`]: scenario `udp-frames` (against the machine's own limit, not Mosquitto).
//! * [`bench_report`]: ratios, JSON, markdown, SVG, floors.
//!
//! The load clients are the `bench-load` binary (the `bench/` crate), built here in release
//! mode with the broker (`--no-build`: use the binaries already in `target/release`). A full run writes its results under `bench/results/`; `--quick`
//! (1k connections, for CI) writes under `target/bench/` and fails when a ratio to Mosquitto
//! falls below `bench/floors.json`. Needs root (namespaces) and `mosquitto`
//! (`scripts/bootstrap.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::shell::{cargo, project_root, run_command, target_dir};
use crate::{
    bench_command, bench_fanout, bench_idle, bench_login, bench_report, bench_udp, bench_uploads,
};

/// Scenarios, in the order they run.
const SCENARIOS: [&str; 6] = [
    "idle-memory",
    "fanout",
    "command",
    "uploads",
    "login-storm",
    "udp-frames",
];

#[derive(Debug)]
struct Options {
    quick: bool,
    no_build: bool,
    only: Vec<String>,
    out: Option<PathBuf>,
    /// `fanout` terminal counts instead of the default ones (`--terminals N`, repeatable).
    terminals: Vec<u32>,
    /// Only the `fanout` variants whose name contains one of these (`--variant NAME`,
    /// repeatable); a filtered run is not checked against the fan-out floors.
    variants: Vec<String>,
    /// `command` rounds instead of the default (`--rounds N`, at least 1).
    rounds: Option<u32>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        no_build: false,
        only: Vec::new(),
        out: None,
        terminals: Vec::new(),
        variants: Vec::new(),
        rounds: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-build" => o.no_build = true,
            "--only" => {
                let name = it.next().ok_or("--only needs a scenario name")?;
                if !SCENARIOS.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown scenario `{name}`; scenarios: {}",
                        SCENARIOS.join(", ")
                    ));
                }
                o.only.push(name.clone());
            }
            "--out" => o.out = Some(PathBuf::from(it.next().ok_or("--out needs a directory")?)),
            "--terminals" => {
                let n = it.next().ok_or("--terminals needs a count")?;
                o.terminals.push(
                    n.parse()
                        .map_err(|_| format!("--terminals: `{n}` is not a count"))?,
                );
            }
            "--variant" => o
                .variants
                .push(it.next().ok_or("--variant needs a name")?.clone()),
            "--rounds" => {
                let n = it.next().ok_or("--rounds needs a count")?;
                match n.parse::<u32>() {
                    Ok(r) if r >= 1 => o.rounds = Some(r),
                    _ => return Err(format!("--rounds: `{n}` is not a count of at least 1")),
                }
            }
            other => {
                return Err(format!(
                    "unknown option `{other}`; usage: cargo xtask bench [--quick] [--no-build] [--only {}] [--out DIR] [--terminals N] [--variant NAME] [--rounds N]",
                    SCENARIOS.join("|")
                ));
            }
        }
    }
    Ok(o)
}

/// The release build of the broker and the load generator the bench runs (also the CI's
/// background warm-up for this step, [`crate::warm_up`]).
pub fn build_command() -> Command {
    let mut command = cargo();
    command.args(["build", "--release", "-p", "broker", "-p", "bench-load"]);
    command
}

/// Runs `cargo xtask bench`.
pub fn run(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    check_prerequisites()?;
    if !o.no_build {
        run_command(&mut build_command())?;
    }
    let bin = target_dir().join("release");
    let (broker, load) = (bin.join("broker"), bin.join("bench-load"));
    let wanted = |s: &str| o.only.is_empty() || o.only.iter().any(|n| n == s);

    let load_start = load_average();
    let mut doc = json!({
        "quick": o.quick,
        "date": utc_now(),
        "machine": machine(),
        "mosquitto": mosquitto_version(),
    });
    if wanted("idle-memory") {
        let counts: &[u32] = if o.quick { &[1000] } else { &[5000, 15000] };
        let rows = bench_idle::run(&broker, &load, counts)?;
        let ratios = bench_report::idle_ratios(&rows);
        doc["idle_memory"] = json!({ "rows": rows, "ratios": ratios });
    }
    if wanted("fanout") {
        let counts: &[u32] = if !o.terminals.is_empty() {
            &o.terminals
        } else if o.quick {
            &[1000]
        } else {
            &[1000, 5000, 10000]
        };
        let rows = bench_fanout::run(&broker, &load, counts, &o.variants)?;
        let ratios = bench_report::fanout_ratios(&rows);
        doc["fanout"] = json!({ "rows": rows, "ratios": ratios });
    }
    if wanted("command") {
        let (counts, samples, rounds): (&[u32], u32, u32) = if o.quick {
            (&[1000], 2000, 1)
        } else {
            (&[10000], 10000, 3)
        };
        let rounds = o.rounds.unwrap_or(rounds);
        let rows = bench_command::run(&broker, &load, counts, samples, rounds)?;
        let ratios = bench_report::command_ratios(&rows);
        doc["command"] = json!({ "rows": rows, "ratios": ratios });
    }
    if wanted("uploads") {
        let rows = bench_uploads::run(&broker, &load, if o.quick { 5 } else { 20 })?;
        let ratios = bench_report::uploads_ratios(&rows);
        doc["uploads"] = json!({ "rows": rows, "ratios": ratios });
    }
    if wanted("login-storm") {
        let (count, rates): (u32, &[u32]) = if o.quick {
            (2000, &[5000])
        } else {
            (10000, &[2000, 5000, 10000])
        };
        let rows = bench_login::run(&broker, &load, count, rates)?;
        let ratios = bench_report::login_ratios(&rows);
        doc["login_storm"] = json!({ "rows": rows, "ratios": ratios });
    }
    if wanted("udp-frames") {
        let rows = bench_udp::run(&broker, &load, if o.quick { 3 } else { 10 })?;
        let ratios = bench_udp::ratios(&rows);
        doc["udp_frames"] = json!({ "rows": rows, "ratios": ratios });
    }
    doc["load_average"] = json!({ "start": load_start, "end": load_average() });

    let floors_file = project_root().join("bench/floors.json");
    let floors: Value = serde_json::from_str(
        &std::fs::read_to_string(&floors_file)
            .map_err(|e| format!("cannot read {}: {e}", floors_file.display()))?,
    )
    .map_err(|e| format!("{}: {e}", floors_file.display()))?;
    let mut failures = Vec::new();
    let mut checked = false;
    for (scenario, key, metric, count_field) in bench_report::FLOORED {
        if !wanted(scenario) || (scenario == "fanout" && !o.variants.is_empty()) {
            continue;
        }
        checked = true;
        let ratios = doc[key]["ratios"].as_array().cloned().unwrap_or_default();
        for line in bench_report::below_floors(&ratios, &floors[scenario], metric, count_field) {
            failures.push(format!("{scenario}: {line}"));
        }
    }
    if checked {
        // Absent when no floor was checked, so the report does not claim they were met.
        doc["floor_failures"] = json!(failures);
    }

    let out = o.out.clone().unwrap_or_else(|| {
        if o.quick {
            target_dir().join("bench")
        } else {
            project_root().join("bench/results")
        }
    });
    write_results(&out, &doc)?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "below the floors of bench/floors.json:\n  {}",
            failures.join("\n  ")
        ))
    }
}

fn write_results(out: &Path, doc: &Value) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let stem = format!(
        "{}-{}",
        doc["date"]
            .as_str()
            .unwrap_or("run")
            .replace([':', '-'], ""),
        if doc["quick"] == true {
            "quick"
        } else {
            "full"
        }
    );
    let write = |name: String, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
        Ok::<(), String>(())
    };
    let json = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    write(format!("{stem}.json"), json + "\n")?;
    write(
        format!("{stem}.md"),
        bench_report::markdown(doc, &[bench_udp::markdown]),
    )?;
    if let Some(rows) = doc["idle_memory"]["rows"].as_array() {
        write(
            format!("{stem}-idle-memory.svg"),
            bench_report::memory_svg(rows),
        )?;
    }
    if let Some(rows) = doc["fanout"]["rows"].as_array() {
        write(format!("{stem}-fanout.svg"), bench_report::fanout_svg(rows))?;
    }
    if let Some(rows) = doc["command"]["rows"].as_array() {
        write(
            format!("{stem}-command.svg"),
            bench_report::command_svg(rows),
        )?;
    }
    if let Some(rows) = doc["uploads"]["rows"].as_array() {
        write(
            format!("{stem}-uploads.svg"),
            bench_report::uploads_svg(rows),
        )?;
    }
    if let Some(rows) = doc["login_storm"]["rows"].as_array() {
        write(
            format!("{stem}-login-storm.svg"),
            bench_report::login_svg(rows),
        )?;
    }
    if let Some(rows) = doc["udp_frames"]["rows"].as_array() {
        write(format!("{stem}-udp-frames.svg"), bench_udp::svg(rows))?;
    }
    Ok(())
}

fn check_prerequisites() -> Result<(), String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|l| l.split_whitespace().next() == Some("0"))
        });
    if uid != Some(true) {
        return Err("bench needs root: it creates network namespaces (`ip netns add`)".into());
    }
    if !Path::new("/usr/sbin/mosquitto").exists() {
        return Err("mosquitto is not installed: run scripts/bootstrap.sh".into());
    }
    Ok(())
}

fn utc_now() -> String {
    output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_else(|| "unknown".into())
}

fn mosquitto_version() -> String {
    output("/usr/sbin/mosquitto", &["-h"])
        .and_then(|t| t.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// `"<CPU model>, <n> cores, <memory> GiB"`.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let damon = if damon_running() {
        ", the kernel's DAMON monitor running (kdamond)"
    } else {
        ""
    };
    format!("{model}, {cores} cores, {mem_gib:.0} GiB{damon}")
}

/// Whether a DAMON monitor (kernel thread `kdamond`) runs: it samples memory access by
/// clearing page-table access bits twice a second or so, background work the machine's owner
/// set up that can slow the processes measured for a moment, so it is noted with the load.
fn damon_running() -> bool {
    let Ok(dirs) = std::fs::read_dir("/sys/kernel/mm/damon/admin/kdamonds") else {
        return false;
    };
    dirs.flatten()
        .any(|d| std::fs::read_to_string(d.path().join("state")).is_ok_and(|s| s.trim() == "on"))
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    // mosquitto -h exits 3 after printing its usage: the text is what is wanted.
    let out = Command::new(program).args(args).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse(&args(&["--quick", "--only", "idle-memory"])).unwrap();
        assert!(o.quick);
        assert_eq!(o.only, ["idle-memory"]);
        assert!(
            parse(&args(&["--only", "nope"]))
                .unwrap_err()
                .contains("idle-memory")
        );
        assert!(parse(&args(&["--only"])).is_err());
        assert!(parse(&args(&["--fast"])).is_err());
    }

    #[test]
    fn command_rounds_are_a_count_of_at_least_one() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&args(&["--rounds", "5"])).unwrap().rounds, Some(5));
        assert_eq!(parse(&args(&[])).unwrap().rounds, None);
        assert!(parse(&args(&["--rounds", "0"])).is_err());
        assert!(parse(&args(&["--rounds", "x"])).is_err());
        assert!(parse(&args(&["--rounds"])).is_err());
    }

    #[test]
    fn fanout_can_be_narrowed_to_some_counts_and_variants() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse(&args(&[
            "--terminals",
            "10000",
            "--variant",
            "device-ws",
            "--variant",
            "qos0",
        ]))
        .unwrap();
        assert_eq!(o.terminals, [10000]);
        assert_eq!(o.variants, ["device-ws", "qos0"]);
        assert!(parse(&args(&["--terminals", "many"])).is_err());
        assert!(parse(&args(&["--variant"])).is_err());
    }
}
