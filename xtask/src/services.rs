//! `cargo xtask services up|down|status|env`: Redis, RabbitMQ (N nodes with the management
//! plugin) and ZooKeeper on 127.0.0.1 for development and CI.
//!
//! The work happens in `scripts/services.sh`: installing missing Debian packages, starting each
//! service with its data, logs and pid file under `.cache/services/<name>/`, waiting until each
//! really answers, stopping only the PIDs it recorded, and writing `.cache/services/env`
//! (`KEY=VALUE` lines that tests read). This module checks the command, runs the script from the
//! project root and times it. Ports and variables: docs/services.md.

use std::path::PathBuf;
use std::process::Command;

use crate::shell::{project_root, run_command, timed};

/// The commands the script knows.
const COMMANDS: [&str; 4] = ["up", "down", "status", "env"];

const USAGE: &str = "\
usage: cargo xtask services <command> [options]

commands:
  up       install missing packages, start what is not running, wait until ready, write the env file
  down     stop what `up` started (by recorded PID)
  status   per service: running or stopped, pid, ready, ports
  env      print the env file (services running now)

options:
  --only redis,rabbitmq,zookeeper   restrict to these services (default: all)
  --rabbit-nodes N                  RabbitMQ nodes for up/status, 1..9 (default 2)
  --fresh                           up only: wipe the data of services it starts
";

/// Path of the script doing the work.
fn script() -> PathBuf {
    project_root().join("scripts").join("services.sh")
}

/// Runs `cargo xtask services <args>`; `args[0]` is the command, the rest are passed on.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(command) = args.first() else {
        return Err(format!("services: missing command\n{USAGE}"));
    };
    match command.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        c if COMMANDS.contains(&c) => timed(&format!("services {c}"), || {
            run_command(Command::new("bash").arg(script()).args(args))
        }),
        other => Err(format!("services: unknown command `{other}`\n{USAGE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Output;

    /// Runs the script directly with `args` (only for calls that fail before touching anything).
    fn script_output(args: &[&str]) -> Output {
        Command::new("bash")
            .arg(script())
            .args(args)
            .output()
            .expect("bash runs")
    }

    #[test]
    fn script_is_valid_bash() {
        let status = Command::new("bash")
            .arg("-n")
            .arg(script())
            .status()
            .expect("bash runs");
        assert!(status.success(), "bash -n {} failed", script().display());
    }

    #[test]
    fn script_rejects_bad_options_with_exit_code_2_naming_them() {
        let cases: [(&[&str], &str); 5] = [
            (
                &["up", "--rabbit-nodes", "0"],
                "--rabbit-nodes must be 1..9",
            ),
            (
                &["up", "--rabbit-nodes", "10"],
                "--rabbit-nodes must be 1..9",
            ),
            (&["up", "--only", "redis,mysql"], "unknown service `mysql`"),
            (&["down", "--fresh"], "--fresh only goes with up"),
            (&["restart"], "unknown command `restart`"),
        ];
        for (args, expected) in cases {
            let out = script_output(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
        }
    }

    #[test]
    fn run_rejects_missing_and_unknown_commands_without_running_the_script() {
        let missing = run(&[]).unwrap_err();
        assert!(missing.contains("missing command"), "{missing}");
        let unknown = run(&["restart".to_string()]).unwrap_err();
        assert!(unknown.contains("unknown command `restart`"), "{unknown}");
    }

    #[test]
    fn usage_lists_every_script_command() {
        for command in COMMANDS {
            assert!(
                USAGE.contains(&format!("\n  {command} ")),
                "{command} missing"
            );
        }
    }
}
