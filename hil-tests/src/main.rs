//! `hil-tests`: runs rigs and writes JUnit XML. Usually started by `cargo xtask hil`, which
//! builds the boards first.
//!
//! ```text
//! hil-tests [--rig NAME|FILE]... [--junit FILE] [--root DIR]
//! ```
//! Defaults: rig `qemu`, report `<root>/target/hil/junit.xml`, root = this crate's parent.
//! Exit status: 0 all passed, 1 a step failed, 2 bad arguments or rig file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use hil_tests::junit::{self, Suite};
use hil_tests::rig::Rig;
use hil_tests::run::{Paths, run_rig};

struct Args {
    rigs: Vec<String>,
    junit: Option<PathBuf>,
    root: PathBuf,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        rigs: Vec::new(),
        junit: None,
        root: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--rig" => parsed.rigs.push(value("--rig")?),
            "--junit" => parsed.junit = Some(PathBuf::from(value("--junit")?)),
            "--root" => parsed.root = PathBuf::from(value("--root")?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if parsed.rigs.is_empty() {
        parsed.rigs.push("qemu".into());
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "hil-tests: {e}\nusage: hil-tests [--rig NAME|FILE]... [--junit FILE] [--root DIR]"
            );
            return ExitCode::from(2);
        }
    };
    let root = args.root.canonicalize().unwrap_or(args.root);
    let rigs_dir = root.join("hil-tests/rigs");
    let mut rigs = Vec::new();
    for name in &args.rigs {
        match Rig::load(&rigs_dir, name) {
            Ok(rig) => rigs.push(rig),
            Err(e) => {
                eprintln!("hil-tests: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let paths = Paths {
        work: root.join("target/hil"),
        root,
    };
    let started = Instant::now();
    let mut suites: Vec<Suite> = Vec::new();
    for rig in &rigs {
        suites.extend(run_rig(rig, &paths));
    }
    let junit_path = args.junit.unwrap_or_else(|| paths.work.join("junit.xml"));
    if let Some(dir) = junit_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&junit_path, junit::render(&suites)) {
        eprintln!("hil-tests: cannot write {}: {e}", junit_path.display());
        return ExitCode::FAILURE;
    }
    let failures: usize = suites.iter().map(Suite::failures).sum();
    let cases: usize = suites.iter().map(|s| s.cases.len()).sum();
    eprintln!(
        "hil-tests: {} suites, {cases} cases, {failures} failed in {:.1} s; report {}",
        suites.len(),
        started.elapsed().as_secs_f32(),
        junit_path.display()
    );
    if failures == 0 {
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
    fn defaults_to_the_qemu_rig_and_collects_repeated_rigs() {
        assert_eq!(args(&[]).unwrap().rigs, ["qemu"]);
        let a = args(&["--rig", "qemu", "--rig", "host-tap", "--junit", "x.xml"]).unwrap();
        assert_eq!(a.rigs, ["qemu", "host-tap"]);
        assert_eq!(a.junit, Some(PathBuf::from("x.xml")));
        assert!(args(&["--rig"]).is_err());
        assert!(args(&["--fast"]).is_err());
    }
}
