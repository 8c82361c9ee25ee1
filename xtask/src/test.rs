//! `cargo xtask test`: everything CI runs, in a fixed order, stopping at the first failure.
//!
//! Steps (each can be skipped with `--skip NAME` or selected with `--only NAME`):
//! 1. `deps`: install what a fresh machine lacks (`scripts/bootstrap.sh`, idempotent).
//! 2. `fmt`: `cargo fmt --check` on the workspace and on every crate outside it (board crates,
//!    `boards/lib/*`, the fuzz crate; see [`crate::crates`]).
//! 3. `clippy`: clippy on every target and feature with warnings denied, on the workspace and
//!    on the host-built crates outside it (`boards/host-tap`, `boards/lib/plug-app`,
//!    `hil-tests/defmt-log`). The lint of the workspace and of the two host-built crates is
//!    their tests' build with clippy's driver compiling their own crates
//!    ([`crate::host_build`]), so steps 4 and 7 only run them; `hil-tests/defmt-log` gets a
//!    `cargo clippy` of its own. The MCU board crates get theirs from the cross toolchain in
//!    step 9.
//! 4. `test`: all host tests (unit, integration, property, vector tests), with Redis, RabbitMQ
//!    and ZooKeeper started for the tests that need them (`cargo xtask services up`) and stopped
//!    again afterwards, pass or fail.
//!
//!    From the first step after `deps` on, the builds of `doc`, `hil`, `bench` and `fuzz` (those
//!    selected) run in the background at the lowest CPU priority ([`crate::warm_up`]), using
//!    what the other steps leave of the CPU (the tests, the soak and the HIL mostly wait; builds
//!    have serial stretches); they are paused while `bench` measures, and those steps find
//!    their builds done or finish them first.
//! 5. `docs`: `cargo xtask docs-check` ([`crate::docs_check`]): README.md and docs/ against the
//!    code (links, configuration keys, command lines and the outputs the docs show); under a
//!    minute once the broker is built.
//! 6. `soak`: the quick soak ([`crate::soak::quick`]): 90 s of a standalone broker under
//!    device churn and uploads, failing if its memory or open files grow after a 30 s warm-up,
//!    its errors grow, or it falls behind the offered load (docs/soak/README.md).
//! 7. `boards`: the tests of the host-built crates outside the workspace, with all their
//!    features (with `hil-tests/defmt-log`'s streaming decoder on a recorded board log).
//! 8. `doc`: rustdoc with warnings denied (broken links, missing docs), into `<target>/rustdoc`.
//! 9. `cross`: the pinned cross toolchain, the no_std crates (`shared-protocol`, `firmware`)
//!    checked for the MCU target no board builds them for, every board built and linted
//!    (clippy, warnings denied).
//! 10. `size`: flash and RAM per board against its budget.
//! 11. `hil`: the plug firmware on the virtual rigs (QEMU, host TAP) against a real broker.
//! 12. `bench`: `cargo xtask bench --quick`, our broker side by side with Mosquitto at 1,000
//!     connections, failing below the ratio floors of `bench/floors.json` (needs root and
//!     `mosquitto`, which `deps` installs; see [`crate::bench`]).
//! 13. `fuzz`: a short run of every fuzz target from its committed corpus, one target per
//!     core at a time, when the nightly toolchain is present (`FUZZ_SECONDS`, default 5, per
//!     target, to keep CI within its time budget; new finds go to an ignored scratch folder; a
//!     long run that can merge them back: `cargo xtask fuzz`, see [`crate::fuzz`]).

use crate::host_build::{
    HOST_TEST_FLAGS, lint_tests, lint_workspace, with_clippy_driver, workspace_cargo,
};
use crate::shell::{cargo, project_root, run_command, target_dir, timed};
use crate::warm_up::{WarmUp, WarmUps};
use std::path::Path;
use std::process::Command;

/// A named step of the test run.
struct Step {
    name: &'static str,
    what: &'static str,
    action: fn(&mut Run) -> Result<(), String>,
    /// The step measures time or throughput against a peer, so background builds for later
    /// steps are paused (SIGSTOP) while it runs ([`crate::warm_up`]).
    measures: bool,
}

/// What the steps of one run share: the steps selected, and the background builds started for
/// later ones ([`crate::warm_up`]).
struct Run {
    selected: Vec<&'static str>,
    warm_ups: WarmUps,
}

const STEPS: &[Step] = &[
    Step {
        name: "deps",
        what: "install missing packages and tools",
        action: |_| deps(),
        measures: false,
    },
    Step {
        name: "fmt",
        what: "rustfmt check (workspace and crates outside it)",
        action: |_| fmt(),
        measures: false,
    },
    Step {
        name: "clippy",
        what: "clippy, warnings denied",
        action: |_| clippy(),
        measures: false,
    },
    Step {
        name: "test",
        what: "host tests",
        action: |_| host_tests(),
        measures: false,
    },
    Step {
        name: "docs",
        what: "docs-check: links, config keys, command lines and shown outputs of README.md and docs/",
        action: |_| docs_check(),
        measures: false,
    },
    Step {
        name: "soak",
        what: "quick soak: 90 s of churn and uploads, RSS and fds flat",
        action: |_| crate::soak::quick(),
        measures: false,
    },
    Step {
        name: "boards",
        what: "tests of host-built crates and tools outside the workspace",
        action: |_| host_board_tests(),
        measures: false,
    },
    Step {
        name: "doc",
        what: "rustdoc, warnings denied",
        action: doc,
        measures: false,
    },
    Step {
        name: "cross",
        what: "cross toolchain and MCU builds",
        action: |_| cross(),
        measures: false,
    },
    Step {
        name: "size",
        what: "board flash/RAM against budgets",
        action: |_| size(),
        measures: false,
    },
    Step {
        name: "hil",
        what: "plug firmware on virtual rigs",
        action: hil,
        measures: false,
    },
    Step {
        name: "bench",
        what: "side-by-side quick benchmark against floors",
        action: bench,
        measures: true,
    },
    Step {
        name: "fuzz",
        what: "short fuzz run per target",
        action: fuzz,
        measures: false,
    },
];

/// Runs the selected steps; `args` are the command-line options after `test`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut skip = Vec::new();
    let mut only = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--list" => {
                for step in STEPS {
                    println!("{:8} {}", step.name, step.what);
                }
                return Ok(());
            }
            "--skip" | "--only" => {
                let name = iter.next().ok_or(format!("{arg} needs a step name"))?;
                if !STEPS.iter().any(|s| s.name == name) {
                    return Err(format!(
                        "unknown step `{name}` (see `cargo xtask test --list`)"
                    ));
                }
                if arg == "--skip" {
                    &mut skip
                } else {
                    &mut only
                }
                .push(name.clone());
            }
            other => return Err(format!("unknown option `{other}` for `test`")),
        }
    }
    let selected: Vec<&Step> = STEPS
        .iter()
        .filter(|s| {
            !skip.iter().any(|n| n == s.name)
                && (only.is_empty() || only.iter().any(|n| n == s.name))
        })
        .collect();
    let mut state = Run {
        selected: selected.iter().map(|s| s.name).collect(),
        warm_ups: WarmUps::default(),
    };
    for step in selected {
        if step.name != "deps" && !state.warm_ups.started() {
            // What the warm-ups need is installed once `deps` has run; from here on they use
            // what every step leaves of the CPU, compiling steps too (crate::warm_up).
            state.warm_ups.start(warm_ups(&state.selected));
        }
        if step.measures {
            state.warm_ups.pause();
        } else {
            state.warm_ups.resume();
        }
        timed(step.name, || (step.action)(&mut state))?;
    }
    eprintln!("\nall selected steps passed");
    Ok(())
}

fn deps() -> Result<(), String> {
    run_command(Command::new("bash").arg(project_root().join("scripts/bootstrap.sh")))
}

fn fmt() -> Result<(), String> {
    run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // Each crate outside the workspace is its own workspace: `cargo fmt` in its folder checks
    // that crate (the root's rustfmt.toml applies: rustfmt looks for it in parent folders).
    for dir in crate::crates::outside_workspace()? {
        run_command(cargo().current_dir(dir).args(["fmt", "--", "--check"]))?;
    }
    Ok(())
}

/// The clippy arguments every host crate gets (after `clippy`): all targets and features,
/// warnings denied.
const CLIPPY_ARGS: &[&str] = &[
    "--all-targets",
    "--all-features",
    "--locked",
    "--",
    "-D",
    "warnings",
];

/// The feature selection of the host-built crates' tests (steps `clippy` and `boards`): all
/// their features, the set clippy lints (`boards/lib/plug-app`'s `log` wins over its `defmt`).
const HOST_BUILT_TEST_FLAGS: &[&str] = &["--all-features", "--locked"];

fn clippy() -> Result<(), String> {
    // The workspace and the host-built crates: their tests built with clippy's driver, which
    // the `test` and `boards` steps then find fresh (crate::host_build).
    lint_workspace()?;
    for dir in crate::crates::host_built()? {
        lint_tests(
            host_cargo(&dir),
            HOST_BUILT_TEST_FLAGS,
            &dir.display().to_string(),
        )?;
    }
    // The tool crates keep a separate lint: the QEMU board's runner builds them without
    // clippy's driver, and a build with it would only be rebuilt there.
    for (dir, target) in crate::crates::tool_crates() {
        run_command(tool_cargo(&dir, &target).arg("clippy").args(CLIPPY_ARGS))?;
    }
    Ok(())
}

/// Tests of the host-built crates and tool crates outside the workspace.
fn host_board_tests() -> Result<(), String> {
    for dir in crate::crates::host_built()? {
        run_command(
            with_clippy_driver(&mut host_cargo(&dir))
                .arg("test")
                .args(HOST_BUILT_TEST_FLAGS),
        )?;
    }
    for (dir, target) in crate::crates::tool_crates() {
        run_command(tool_cargo(&dir, &target).args(["test", "--locked"]))?;
    }
    Ok(())
}

/// `cargo` in the folder of a tool crate, with the target folder its other builds use.
fn tool_cargo(dir: &Path, target: &Path) -> Command {
    let mut command = cargo();
    command.current_dir(dir).env("CARGO_TARGET_DIR", target);
    command
}

/// `cargo` in the folder of a host-built crate outside the workspace, with the workspace's
/// target folder (`CARGO_TARGET_DIR`, else `target/`) rather than one of its own: one folder
/// to cache and clean, and dependencies built with the same features are reused.
fn host_cargo(dir: &Path) -> Command {
    let mut command = cargo();
    command
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir());
    command
}

fn host_tests() -> Result<(), String> {
    // `--all-features` includes the broker's `services-tests`, which talk to real services.
    crate::services::run(&["up".into()])?;
    // Built by the `clippy` step when it ran (crate::host_build); else built here.
    let tests = run_command(workspace_cargo().arg("test").args(HOST_TEST_FLAGS));
    let down = crate::services::run(&["down".into()]);
    tests.and(down)
}

/// The background builds for the later steps among `selected`, in the order the steps run:
/// rustdoc's (its own target folder, [`doc_command`]), the host TAP board's release build for
/// the HIL, the bench's release build and the fuzz crates' builds. None of them takes the lock
/// of the target folder the host tests, the soak and the HIL build in (`<target>/debug`), which
/// would make those steps wait for a background build.
fn warm_ups(selected: &[&str]) -> Vec<WarmUp> {
    let mut warm_ups = Vec::new();
    if selected.contains(&"doc") {
        warm_ups.push(WarmUp {
            step: "doc",
            commands: vec![doc_command()],
        });
    }
    if selected.contains(&"hil") {
        warm_ups.push(WarmUp {
            step: "hil",
            commands: vec![crate::hil::host_tap_next_image_build()],
        });
    }
    if selected.contains(&"bench") {
        warm_ups.push(WarmUp {
            step: "bench",
            commands: vec![crate::bench::build_command()],
        });
    }
    if selected.contains(&"fuzz") {
        warm_ups.push(WarmUp {
            step: "fuzz",
            commands: crate::fuzz::warm_up_commands(),
        });
    }
    warm_ups
}

fn doc(run: &mut Run) -> Result<(), String> {
    run.warm_ups.wait("doc");
    run_command(&mut doc_command())
}

/// rustdoc on the workspace with warnings denied, in a target folder of its own
/// (`<target>/rustdoc`): rustdoc needs its dependencies checked (`cargo check`'s metadata),
/// which no other step builds, and a folder of its own lets it run in the background beside
/// the host tests without either waiting for the other's lock.
fn doc_command() -> Command {
    let mut command = cargo();
    command
        .args([
            "doc",
            "--workspace",
            "--no-deps",
            "--all-features",
            "--locked",
        ])
        .env("CARGO_TARGET_DIR", target_dir().join("rustdoc"))
        // Links to private items are fine in docs that include them.
        .env(
            "RUSTDOCFLAGS",
            "-D warnings -A rustdoc::private_intra_doc_links",
        );
    command
}

fn docs_check() -> Result<(), String> {
    crate::docs_check::run(&[])
}

fn cross() -> Result<(), String> {
    crate::cross::run(&[])
}

fn size() -> Result<(), String> {
    crate::size::run(&[])
}

fn hil(run: &mut Run) -> Result<(), String> {
    run.warm_ups.wait("hil");
    crate::hil::run(&[])
}

fn bench(run: &mut Run) -> Result<(), String> {
    run.warm_ups.wait("bench");
    crate::bench::run(&["--quick".to_string()])
}

fn fuzz(run: &mut Run) -> Result<(), String> {
    run.warm_ups.wait("fuzz");
    crate::fuzz::ci()
}
