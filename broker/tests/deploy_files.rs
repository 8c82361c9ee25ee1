//! The deployment files in docs/examples/systemd are real systemd units: each one, with its
//! `ExecStart` pointed at the `broker` binary just built, passes `systemd-analyze verify` with
//! nothing to say (an unknown key, a bad value or a missing executable is printed, and fails
//! here), and each `ExecStart` names a subcommand the binary has.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the units install the binary; replaced by the built one before verifying.
const INSTALLED: &str = "/usr/local/bin/broker";

fn units() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
}

#[test]
fn every_systemd_unit_verifies_cleanly_against_the_built_binary() {
    let units = units();
    assert_eq!(
        units.len(),
        4,
        "broker, comet@, msgbus@, rmqkeeper@: {units:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    for unit in &units {
        let name = unit.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(
            text.contains(INSTALLED),
            "{name}: ExecStart is not {INSTALLED}"
        );
        let local = text.replace(INSTALLED, env!("CARGO_BIN_EXE_broker"));
        std::fs::write(tmp.path().join(&name), local).unwrap();
        // A template is verified through an instance of it.
        let target = name.replace("@.service", "@test.service");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(tmp.path().join(&target))
            .output()
            .expect("systemd-analyze (Debian's systemd package) runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{name}: {said}");
        assert!(
            said.trim().is_empty(),
            "{name}: systemd-analyze says:\n{said}"
        );

        // The subcommand it runs exists (`broker <role> --help` exits 0).
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let mut words = exec.split_whitespace().skip(1);
        let sub = words.next().unwrap();
        let args: Vec<&str> = if sub.starts_with("--") {
            vec!["--help"]
        } else {
            vec![sub, "--help"]
        };
        let help = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(&args)
            .output()
            .unwrap();
        assert!(help.status.success(), "{name}: broker {args:?} failed");
    }
}
