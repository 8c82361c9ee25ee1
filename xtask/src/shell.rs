//! Small helpers to run commands from the project root with clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The project root (the folder holding the workspace `Cargo.toml`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}

/// Runs `command` from the project root, echoing it first; an error names the command and its
/// exit status.
pub fn run_command(command: &mut Command) -> Result<(), String> {
    if command.get_current_dir().is_none() {
        command.current_dir(project_root());
    }
    eprintln!("$ {}", describe(command));
    let status = command
        .status()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(command)))
    }
}

/// The workspace's target folder: `$CARGO_TARGET_DIR` (relative to the project root) or
/// `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| project_root().join(dir))
        .unwrap_or_else(|| project_root().join("target"))
}

/// Builds a `cargo` command using the cargo that runs xtask.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// True when `program` answers `--version`.
pub fn has_program(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `step`, printing its name and how long it took.
pub fn timed<T>(name: &str, step: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    eprintln!("\n==> {name}");
    let start = Instant::now();
    let result = step();
    let elapsed = start.elapsed().as_secs_f32();
    match &result {
        Ok(_) => eprintln!("<== {name}: ok in {elapsed:.1} s{}", disk_note()),
        Err(e) => eprintln!("<== {name}: FAILED in {elapsed:.1} s{}: {e}", disk_note()),
    }
    result
}

/// ", N MiB free, target/ holds M MiB" for the project's disk, so a CI log shows where space
/// went (a CI machine once ran out of it); empty when `df`/`du` are missing.
fn disk_note() -> String {
    let root = project_root();
    let free = Command::new("df")
        .args(["-Pm"])
        .arg(&root)
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().nth(1)?.to_owned();
            line.split_whitespace().nth(3).map(String::from)
        });
    let target = Command::new("du")
        .args(["-sm"])
        .arg(target_dir())
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace().next().map(String::from)
        });
    match (free, target) {
        (Some(free), Some(target)) => format!(" ({free} MiB free, target/ {target} MiB)"),
        (Some(free), None) => format!(" ({free} MiB free)"),
        _ => String::new(),
    }
}

/// Sends `signal` (`-TERM`, `-STOP`, `-CONT`, ...) to every process of the process group
/// `group`, through `kill`; a group already gone is not an error.
pub fn signal_group(group: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{group}")])
        .stderr(std::process::Stdio::null())
        .status();
}

/// `command` as a shell-like line: the program and its arguments.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
