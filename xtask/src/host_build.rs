//! The host workspace's debug build, compiled once for the lint, the tests and the tools that
//! run its binaries.
//!
//! `cargo clippy` is `cargo check` with clippy's driver standing in for rustc on the
//! workspace's own crates (`RUSTC_WORKSPACE_WRAPPER`): clippy's lints run inside an ordinary
//! compile, and `check` only stops it before code generation. So every debug build of the
//! workspace here goes through clippy's driver ([`workspace_cargo`]): the `clippy` step of
//! `cargo xtask test` builds the host tests that way and fails on any warning
//! ([`lint_workspace`]), and the `test` step, `docs-check`, the soak and the HIL
//! ([`build_host_debug_binaries`]) find that build fresh. CI compiles the workspace and its
//! dependencies once instead of a check build for clippy and a full build for the tests. The
//! host-built crates outside the workspace (`boards/host-tap`, `boards/lib/plug-app`, each a
//! workspace of its own) are linted the same way ([`lint_tests`]) before the `boards` step runs
//! their tests.
//!
//! Warnings are counted from cargo's JSON messages rather than turned into errors by a flag:
//! a flag would change the build's fingerprint, so a developer's `cargo xtask hil` would either
//! fail on an unused import or rebuild everything CI built. Cargo replays a fresh crate's
//! warnings, so the count holds whether or not anything was compiled.
//!
//! Clippy's driver compiles with MIR optimizations off (its lints read unoptimized MIR); LLVM
//! still runs as the profile says, and debug builds barely use them.

use crate::shell::{cargo, describe, project_root, target_dir};
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The package and feature selection of the host tests (`cargo test` in `cargo xtask test`):
/// every workspace crate with all its features (the broker's `services-tests` among them).
pub const HOST_TEST_FLAGS: &[&str] = &["--workspace", "--all-features", "--locked"];

/// `cargo` for debug builds of the host workspace: clippy's driver compiles the workspace's
/// crates (dependencies compile with rustc, as under `cargo clippy`). Every caller uses the same
/// driver, so each finds the build the others made fresh.
pub fn workspace_cargo() -> Command {
    let mut command = cargo();
    with_clippy_driver(&mut command);
    command
}

/// Makes clippy's driver compile the crates of the workspace `command` runs in (the host
/// workspace, or a crate outside it that is a workspace of its own); its dependencies still
/// compile with rustc.
pub fn with_clippy_driver(command: &mut Command) -> &mut Command {
    command.env("RUSTC_WORKSPACE_WRAPPER", clippy_driver())
}

/// Clippy's driver: the one next to the cargo that runs xtask (the toolchain folder of
/// rust-toolchain.toml's toolchain, which lists the `clippy` component), else `clippy-driver`
/// on the `PATH` (rustup's proxy).
fn clippy_driver() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|cargo| cargo.parent().map(|dir| dir.join("clippy-driver")))
        .filter(|driver| driver.is_file())
        .unwrap_or_else(|| PathBuf::from("clippy-driver"))
}

/// Builds the host tests of every target (`--all-targets`: the benches too) with clippy's
/// driver and fails if clippy or rustc warned about a workspace crate: `cargo clippy
/// --workspace --all-targets --all-features -- -D warnings`, but producing the code the tests
/// run. The diagnostics are printed as cargo would print them.
pub fn lint_workspace() -> Result<(), String> {
    let mut command = cargo();
    command.current_dir(project_root());
    lint_tests(command, HOST_TEST_FLAGS, "the workspace")
}

/// [`lint_workspace`] for the workspace `command` (a `cargo` already given its folder and
/// target folder) runs in, with `flags` selecting packages and features: the tests of every
/// target built with clippy's driver, failing if it or rustc warned about a crate of that
/// workspace (`what` in the error). A later `cargo test` with the same flags and driver
/// ([`with_clippy_driver`]) finds the build fresh.
pub fn lint_tests(mut command: Command, flags: &[&str], what: &str) -> Result<(), String> {
    with_clippy_driver(&mut command)
        .args(["test", "--no-run", "--all-targets", "--message-format=json"])
        .args(flags)
        .stdout(Stdio::piped());
    eprintln!("$ {} (clippy's driver compiles {what})", describe(&command));
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(&command)))?;
    let mut diagnostics = Diagnostics::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading cargo's messages: {e}"))?;
            if let Some(rendered) = diagnostics.read(&line) {
                eprint!("{rendered}");
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{}`: {e}", describe(&command)))?;
    if !status.success() {
        return Err(format!("`{}` failed ({status})", describe(&command)));
    }
    diagnostics.verdict(what)
}

/// What cargo reported about the workspace's crates.
#[derive(Debug, Default, PartialEq)]
struct Diagnostics {
    /// Warnings pointing at code (a lint or rustc warning; not the "N warnings emitted" line).
    warnings: usize,
}

impl Diagnostics {
    /// Reads one line of cargo's JSON messages; returns the text to print for a compiler
    /// message (other messages: artifacts, build-script runs, are not shown).
    fn read(&mut self, line: &str) -> Option<String> {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            // Not a message (nothing else should be on stdout): pass it on.
            return Some(format!("{line}\n"));
        };
        if message["reason"] != "compiler-message" {
            return None;
        }
        let diagnostic = &message["message"];
        let points_at_code = diagnostic["spans"]
            .as_array()
            .is_some_and(|spans| !spans.is_empty());
        if diagnostic["level"] == "warning" && points_at_code {
            self.warnings += 1;
        }
        diagnostic["rendered"].as_str().map(str::to_string)
    }

    /// Passes when nothing warned about `what` (the crates linted).
    fn verdict(&self, what: &str) -> Result<(), String> {
        match self.warnings {
            0 => Ok(()),
            n => Err(format!(
                "{n} warning{} in {what} (above); warnings are denied",
                if n == 1 { "" } else { "s" }
            )),
        }
    }
}

/// Builds the workspace's debug host binaries (`broker`, `hil-tests`, ...) and returns the
/// folder that holds them (`<target>/debug`).
///
/// It builds with the flags and driver of `cargo xtask test`'s host tests (`--workspace
/// --all-features --tests`, [`workspace_cargo`]): integration tests need the binaries too, so
/// after that step this build is already fresh. Any other flags resolve dependency features
/// differently (tests add dev-dependency features such as tokio's `test-util`) and would compile
/// the broker and everything above tokio a second time. The binaries behave the same either way.
pub fn build_host_debug_binaries() -> Result<PathBuf, String> {
    crate::shell::run_command(
        workspace_cargo()
            .arg("build")
            .args(HOST_TEST_FLAGS)
            .arg("--tests"),
    )?;
    Ok(target_dir().join("debug"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINT_WARNING: &str = r#"{"reason":"compiler-message","package_id":"path+file:///p/broker#0.1.0","message":{"rendered":"warning: length comparison to zero\n","level":"warning","spans":[{"file_name":"src/lib.rs","line_start":3}]}}"#;
    const SUMMARY: &str = r#"{"reason":"compiler-message","package_id":"path+file:///p/broker#0.1.0","message":{"rendered":"warning: 1 warning emitted\n","level":"warning","spans":[]}}"#;
    const NOTE: &str = r#"{"reason":"compiler-message","package_id":"path+file:///p/broker#0.1.0","message":{"rendered":"note: something\n","level":"note","spans":[{"file_name":"src/lib.rs"}]}}"#;
    const ARTIFACT: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///p/broker#0.1.0","filenames":[]}"#;

    #[test]
    fn a_warning_fails_and_its_text_is_shown() {
        let mut diagnostics = Diagnostics::default();
        assert_eq!(
            diagnostics.read(LINT_WARNING).as_deref(),
            Some("warning: length comparison to zero\n")
        );
        diagnostics.read(SUMMARY);
        assert_eq!(diagnostics.warnings, 1, "the summary line is not a warning");
        let error = diagnostics.verdict("the workspace").unwrap_err();
        assert!(error.starts_with("1 warning in the workspace"), "{error}");
    }

    #[test]
    fn artifacts_and_notes_pass() {
        let mut diagnostics = Diagnostics::default();
        assert_eq!(diagnostics.read(ARTIFACT), None);
        assert!(diagnostics.read(NOTE).is_some());
        assert_eq!(diagnostics.verdict("the workspace"), Ok(()));
    }

    #[test]
    fn lines_that_are_not_json_are_passed_on() {
        let mut diagnostics = Diagnostics::default();
        assert_eq!(
            diagnostics.read("plain text").as_deref(),
            Some("plain text\n")
        );
        assert_eq!(diagnostics.warnings, 0);
    }
}
