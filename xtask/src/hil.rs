//! `cargo xtask hil`: builds the boards a rig needs and runs the hardware-in-the-loop
//! scenarios (`hil-tests`), which write `target/hil/junit.xml`. See docs/hil.md.
//!
//! * `qemu`: the `plug` firmware is cross-built once into the shared cross target folder (the
//!   same image as `cross boards`, so both reuse one artifact; `hil-tests` loads each boot's
//!   provisioning record with QEMU's `-device loader`), QEMU is installed if missing, and
//!   `hil-tests/defmt-log` (the decoder of the board's defmt log) is built into
//!   `<target>/defmt-log`.
//! * `host-tap`: the host board is built with the host toolchain into `<target>/host-tap`, and
//!   its second image for the roll-out test (feature `next-image`) as `host-tap-plug-next`.
//! * `ci`: the fleet rig (16 host TAP boards and a QEMU board in one namespace): both of the
//!   above.
//!   Its `cluster-failover` scenario runs a cluster on Redis, ZooKeeper and RabbitMQ: when they
//!   do not answer, `cargo xtask services up` starts them for the run and `down` stops them
//!   after it; services already running are used and left running.
//! * any other rig (real boards, `hil-tests/rigs/<name>.toml`): nothing is built here;
//!   `hil-tests` builds the firmware (the cross environment is passed to it) and refuses when
//!   no probe is attached.

use std::process::Command;
use std::time::Instant;

use crate::cross::{self, CrossEnv, QEMU_BOARD};
use crate::host_build::build_host_debug_binaries;
use crate::shell::{cargo, has_program, project_root, run_command, target_dir};

const USAGE: &str = "\
usage: cargo xtask hil [list] [--rig NAME]... [--scenario S]... [--no-build] [--dry-run]
                       [--upload-run-s N] [--cut-off-s N]

  list           rigs and scenarios (with their pass criteria)
  --rig NAME     rig to run: qemu, host-tap, ci, or a file hil-tests/rigs/NAME.toml
                 (repeatable; default: qemu, host-tap and ci)
  --scenario S   only these scenarios of the rigs (repeatable; default: each rig's list)
  --no-build     use the boards built earlier
  --dry-run      real-board rigs: print the build and probe-rs commands of each boot, run nothing
  --upload-run-s N  length of uploads-under-trouble (the ci rig's quick form is 20 s; 60 is the full one)
  --cut-off-s N  how long cut-off keeps its board off the network (ci rig: 90 s; 600 is the full form)
Results: target/hil/summary.txt and junit.xml; everything of a run (board and broker logs,
report) in target/hil/runs/<time>-<rigs>/.
";

/// The rigs `cargo xtask hil` runs by default (the CI step).
pub const CI_RIGS: [&str; 3] = ["qemu", "host-tap", "ci"];

/// Runs `cargo xtask hil [...]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut rigs: Vec<String> = Vec::new();
    let mut scenarios: Vec<String> = Vec::new();
    let mut build = true;
    let mut dry_run = false;
    // Rig overrides handed to hil-tests as they are.
    let mut overrides: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "list" => {
                let mut command = hil_tests()?;
                command.arg("list");
                return run_command(&mut command);
            }
            "--scenario" => scenarios.push(
                args.next()
                    .ok_or(format!("--scenario needs a name\n{USAGE}"))?
                    .clone(),
            ),
            "--rig" => rigs.push(
                args.next()
                    .ok_or(format!("--rig needs a name\n{USAGE}"))?
                    .clone(),
            ),
            "--no-build" => build = false,
            "--upload-run-s" | "--cut-off-s" => {
                let value = args
                    .next()
                    .ok_or(format!("{arg} needs a number of seconds\n{USAGE}"))?;
                overrides.extend([arg.clone(), value.clone()]);
            }
            "--dry-run" => dry_run = true,
            "help" | "--help" | "-h" => {
                eprint!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if rigs.is_empty() {
        rigs = CI_RIGS.iter().map(|r| r.to_string()).collect();
    }
    if dry_run {
        // Real-board rigs only: hil-tests prints their commands; nothing is built or run.
        let mut command = hil_tests()?;
        command.args(["run", "--dry-run"]);
        for rig in &rigs {
            command.args(["--rig", rig]);
        }
        return run_command(&mut command);
    }
    // What each rig needs built: `ci` is both virtual boards.
    let mut builds: Vec<&str> = Vec::new();
    for rig in &rigs {
        let needs: Vec<&str> = match rig.as_str() {
            "ci" => vec!["qemu", "host-tap"],
            other => vec![other],
        };
        for n in needs {
            if !builds.contains(&n) {
                builds.push(n);
            }
        }
    }
    let target = target_dir();
    let started = Instant::now();
    let mut cross_env: Option<CrossEnv> = None;
    let mut timings = Vec::new();
    for rig in &builds {
        let step = Instant::now();
        match *rig {
            "qemu" => {
                let env = cross_env.get_or_insert(CrossEnv::setup()?);
                if !has_program("qemu-system-arm", &["--version"]) {
                    run_command(&mut Command::new(
                        project_root().join("scripts/install-qemu.sh"),
                    ))?;
                }
                if build {
                    // The harness's defmt decoder for the QEMU board's log.
                    cross::build_defmt_log()?;
                    let board = project_root().join("boards").join(QEMU_BOARD);
                    let mut command = env.cargo(&board, &cross::cross_target_dir());
                    command.args(["build", "--release", "--locked", "--bin", "plug"]);
                    cross::placeholder_env(&mut command);
                    run_command(&mut command)?;
                }
            }
            "host-tap" => {
                if build {
                    build_host_tap()?;
                }
            }
            _ => {
                // A real board: hil-tests builds it with this run's provisioning.
                cross_env.get_or_insert(CrossEnv::setup()?);
            }
        }
        timings.push(format!(
            "build {rig}: {:.1} s",
            step.elapsed().as_secs_f32()
        ));
    }

    let step = Instant::now();
    let mut command = hil_tests()?;
    command.arg("run");
    for rig in &rigs {
        command.args(["--rig", rig]);
    }
    for s in &scenarios {
        command.args(["--scenario", s]);
    }
    command.args(&overrides);
    command.env("HIL_TARGET_DIR", &target);
    if let Some(env) = &cross_env
        && rigs.iter().any(|r| !CI_RIGS.contains(&r.as_str()))
    {
        // Real-board rigs build firmware from inside hil-tests: give it the cross compiler.
        for key in ["RUSTC", "LD_LIBRARY_PATH", "RUSTC_BOOTSTRAP"] {
            if let Some(value) = env.get(key) {
                command.env(key, value);
            }
        }
    }
    let started_services = needs_services(&rigs, &scenarios) && !services_answer();
    if started_services {
        crate::services::run(&["up".into(), "--rabbit-nodes".into(), "1".into()])?;
    }
    let result = run_command(&mut command);
    if started_services {
        // Stops only what that `up` started (the script stops the PIDs it recorded).
        let down = crate::services::run(&["down".into()]);
        if let Err(e) = down {
            eprintln!("hil: stopping the services: {e}");
        }
    }
    timings.push(format!(
        "hil-tests (build + run): {:.1} s",
        step.elapsed().as_secs_f32()
    ));
    eprintln!(
        "hil: {}; total {:.1} s; summary {}, report {}",
        timings.join(", "),
        started.elapsed().as_secs_f32(),
        project_root().join("target/hil/summary.txt").display(),
        project_root().join("target/hil/junit.xml").display()
    );
    result
}

/// The scenario of the `ci` rig that runs on the services (a broker cluster).
const SERVICES_SCENARIO: &str = "cluster-failover";

/// Whether the run includes [`SERVICES_SCENARIO`]: the `ci` rig, with every scenario of its
/// list or that one asked for.
fn needs_services(rigs: &[String], scenarios: &[String]) -> bool {
    rigs.iter().any(|r| r == "ci")
        && (scenarios.is_empty() || scenarios.iter().any(|s| s == SERVICES_SCENARIO))
}

/// Whether Redis, ZooKeeper and RabbitMQ node 1 answer on their ports (docs/services.md).
fn services_answer() -> bool {
    [16379u16, 12181, 17001, 17101].iter().all(|port| {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
            std::time::Duration::from_secs(1),
        )
        .is_ok()
    })
}

/// Builds the host TAP board into `<target>/host-tap`: first the roll-out test's second image
/// (feature `next-image`, kept as `host-tap-plug-next`), then the board itself. Both share one
/// target folder, so the second build only compiles the board crate again.
fn build_host_tap() -> Result<(), String> {
    run_command(&mut host_tap_next_image_build())?;
    let release = target_dir().join("host-tap").join("release");
    std::fs::copy(
        release.join("host-tap-plug"),
        release.join("host-tap-plug-next"),
    )
    .map_err(|e| format!("copying the next-image board binary: {e}"))?;
    run_command(&mut host_tap_build(&[]))
}

/// The release build of the host TAP board with the roll-out test's second image (feature
/// `next-image`): the first of [`build_host_tap`]'s builds, and what `cargo xtask test` builds
/// ahead in the background for the `hil` step (the board's dependencies, the long part).
pub fn host_tap_next_image_build() -> Command {
    host_tap_build(&["--features", "next-image"])
}

/// `cargo build --release` of the host TAP board into `<target>/host-tap` with `features`.
fn host_tap_build(features: &[&str]) -> Command {
    let mut command = cargo();
    command
        .current_dir(project_root().join("boards/host-tap"))
        .args(["build", "--release", "--locked"])
        .args(features)
        .env("CARGO_TARGET_DIR", target_dir().join("host-tap"));
    command
}

/// The `hil-tests` harness, built (debug, the host tests' build: fresh after `cargo xtask test`)
/// and ready to run from the project root.
fn hil_tests() -> Result<Command, String> {
    let mut command = Command::new(build_host_debug_binaries()?.join("hil-tests"));
    command.current_dir(project_root());
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runs_with_the_cluster_scenario_need_the_services() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(needs_services(&v(&["qemu", "ci"]), &[]));
        assert!(needs_services(
            &v(&["ci"]),
            &v(&["boot-online", SERVICES_SCENARIO])
        ));
        assert!(!needs_services(&v(&["ci"]), &v(&["boot-online"])));
        assert!(!needs_services(&v(&["qemu", "host-tap"]), &[]));
    }
}
