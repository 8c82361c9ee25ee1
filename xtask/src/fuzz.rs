//! Fuzzing with the committed corpora: the CI short run ([`ci`], step `fuzz` of `cargo xtask
//! test`) and the long run `cargo xtask fuzz [--target T] [--seconds N] [--merge]` ([`run`]).
//!
//! Every target of every fuzz crate ([`crate::crates::fuzz_crates`]) has a seed corpus committed
//! under `<crate>/corpus/<target>/`, so each run starts from the coverage earlier runs reached
//! instead of from nothing. libFuzzer writes what it finds into the first corpus folder it is
//! given, so both runs give it a scratch folder first (`<crate>/target/new-corpus/<target>/`,
//! ignored by git) and the committed one second: a run never changes the working tree. `--merge`
//! then rebuilds the committed corpus as a smallest set of inputs (old and new) keeping every
//! code edge reached, so it grows in coverage, not in files (docs/fuzzing.md).

use crate::shell::{cargo, has_program, run_command};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How a run builds its fuzz crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    /// Unoptimized (`cargo fuzz run --dev`), the CI step's: it compiles in well under half the
    /// time (the broker's fuzz crate, the step's longest build: 3 min 10 s against 7 min 25 s
    /// on this machine) and still replays the whole committed corpus, with integer overflow
    /// checked; it runs far fewer new inputs a second, which is the long run's job.
    Dev,
    /// Optimized, cargo-fuzz's default: the long run's.
    Release,
}

/// One fuzz target: its crate folder and its name.
struct Target {
    crate_dir: PathBuf,
    name: String,
}

impl Target {
    fn committed(&self) -> PathBuf {
        self.crate_dir.join("corpus").join(&self.name)
    }

    fn scratch(&self) -> PathBuf {
        self.crate_dir
            .join("target")
            .join("new-corpus")
            .join(&self.name)
    }

    /// `cargo +nightly fuzz <subcommand> <target>` from the folder that holds the crate.
    fn cargo_fuzz(&self, subcommand: &str) -> Command {
        let mut command = cargo_fuzz_in(&self.crate_dir);
        command.args([subcommand, &self.name]);
        command
    }

    /// Fuzzes for `seconds` on a `build` build, new finds into the scratch folder, the
    /// committed corpus read.
    fn fuzz(&self, seconds: u64, build: Build) -> Result<(), String> {
        let (scratch, committed) = (self.scratch(), self.committed());
        for dir in [&scratch, &committed] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut command = self.cargo_fuzz("run");
        if build == Build::Dev {
            command.arg("--dev");
        }
        run_command(
            command
                .arg(&scratch)
                .arg(&committed)
                .arg("--")
                .arg(format!("-max_total_time={seconds}")),
        )
    }

    /// Rebuilds the committed corpus as a smallest set of inputs, from it and the scratch
    /// folder, that keeps every code edge either reached (libFuzzer's `-set_cover_merge=1` with
    /// `-use_counters=0`: edges, not hit counts; `cargo fuzz cmin` keeps several times more
    /// files, one per hit-count feature), then empties the scratch folder. The previous corpus
    /// waits under `target/` until the merge succeeded.
    fn merge(&self) -> Result<(), String> {
        let (scratch, committed) = (self.scratch(), self.committed());
        let previous = self
            .crate_dir
            .join("target")
            .join("previous-corpus")
            .join(&self.name);
        let _ = std::fs::remove_dir_all(&previous);
        std::fs::create_dir_all(previous.parent().unwrap_or(&previous))
            .and_then(|()| std::fs::rename(&committed, &previous))
            .and_then(|()| std::fs::create_dir_all(&committed))
            .map_err(|e| format!("cannot set {} aside: {e}", committed.display()))?;
        let merged = run_command(
            self.cargo_fuzz("run")
                .arg(&committed)
                .arg(&previous)
                .arg(&scratch)
                .args(["--", "-set_cover_merge=1", "-use_counters=0"]),
        );
        if let Err(e) = merged {
            // Put the previous corpus back rather than leave a half-merged one.
            let _ = std::fs::remove_dir_all(&committed);
            let _ = std::fs::rename(&previous, &committed);
            return Err(e);
        }
        for dir in [&previous, &scratch] {
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot empty {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// Every target of every fuzz crate, sorted by crate then name.
fn targets() -> Result<Vec<Target>, String> {
    let mut all = Vec::new();
    for crate_dir in crate::crates::fuzz_crates() {
        let mut names: Vec<String> = std::fs::read_dir(crate_dir.join("fuzz_targets"))
            .map_err(|e| format!("cannot list fuzz targets in {}: {e}", crate_dir.display()))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_suffix(".rs")
                    .map(String::from)
            })
            .collect();
        names.sort();
        all.extend(names.into_iter().map(|name| Target {
            crate_dir: crate_dir.clone(),
            name,
        }));
    }
    Ok(all)
}

/// The builds of the CI step, for a background warm-up ([`crate::warm_up`]): cargo-fuzz's
/// install when it is missing, then each fuzz crate's unoptimized build of all its targets
/// (what each target's `cargo fuzz run --dev` then finds fresh). Empty without nightly.
pub fn warm_up_commands() -> Vec<Command> {
    if !has_program("rustup", &["run", "nightly", "cargo", "--version"]) {
        return Vec::new();
    }
    let mut commands = Vec::new();
    if !has_program("rustup", &["run", "nightly", "cargo", "fuzz", "--version"]) {
        let mut install = cargo();
        install.args(["install", "cargo-fuzz", "--locked"]);
        commands.push(install);
    }
    for crate_dir in crate::crates::fuzz_crates() {
        let mut build = cargo_fuzz_in(&crate_dir);
        build.args(["build", "--dev"]);
        commands.push(build);
    }
    commands
}

/// `rustup run nightly cargo fuzz` from the folder that holds the fuzz crate `crate_dir`.
fn cargo_fuzz_in(crate_dir: &Path) -> Command {
    // `rustup run` rather than `cargo +nightly`: under `cargo run` the PATH may point at
    // the pinned toolchain's own cargo, which does not understand `+toolchain`.
    let mut command = Command::new("rustup");
    command
        .current_dir(crate_dir.parent().unwrap_or(crate_dir))
        .args(["run", "nightly", "cargo", "fuzz"]);
    command
}

/// Whether nightly and cargo-fuzz are there (cargo-fuzz is installed when missing); `false`
/// without a nightly toolchain.
fn tools() -> Result<bool, String> {
    if !has_program("rustup", &["run", "nightly", "cargo", "--version"]) {
        return Ok(false);
    }
    if !has_program("rustup", &["run", "nightly", "cargo", "fuzz", "--version"]) {
        run_command(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(true)
}

/// Seconds per target in the CI step unless `FUZZ_SECONDS` says otherwise: enough to replay the
/// committed corpus and explore a little; growing the corpus is the long run's job ([`run`]).
const CI_SECONDS: u64 = 5;

/// The CI step: every target for `FUZZ_SECONDS` (default [`CI_SECONDS`]) from its committed
/// corpus, on unoptimized builds ([`Build::Dev`]).
pub fn ci() -> Result<(), String> {
    if !tools()? {
        eprintln!("skipped: no nightly toolchain on this machine");
        return Ok(());
    }
    let seconds = match std::env::var("FUZZ_SECONDS") {
        Ok(s) => s
            .parse()
            .map_err(|_| format!("FUZZ_SECONDS={s} is not a number of seconds"))?,
        Err(_) => CI_SECONDS,
    };
    for target in targets()? {
        target.fuzz(seconds, Build::Dev)?;
    }
    Ok(())
}

/// `cargo xtask fuzz [--target T] [--seconds N] [--merge]`: a long run (default 300 s per
/// target) of one target or all, optionally merged into the committed corpus.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut only = None;
    let mut seconds = 300;
    let mut merge = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--target" => only = Some(iter.next().ok_or("--target needs a target name")?),
            "--seconds" => {
                let value = iter.next().ok_or("--seconds needs a number")?;
                seconds = value
                    .parse()
                    .map_err(|_| format!("--seconds {value} is not a number of seconds"))?;
            }
            "--merge" => merge = true,
            other => return Err(format!("unknown option `{other}` for `fuzz`")),
        }
    }
    let chosen: Vec<Target> = targets()?
        .into_iter()
        .filter(|t| only.is_none_or(|name| &t.name == name))
        .collect();
    if chosen.is_empty() {
        let names: Vec<String> = targets()?.into_iter().map(|t| t.name).collect();
        return Err(format!(
            "no fuzz target `{}` (targets: {})",
            only.map(String::as_str).unwrap_or(""),
            names.join(", ")
        ));
    }
    if !tools()? {
        return Err(
            "fuzzing needs the nightly toolchain (rustup toolchain install nightly)".into(),
        );
    }
    for target in &chosen {
        target.fuzz(seconds, Build::Release)?;
        if merge {
            target.merge()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_committed_corpus_and_a_scratch_folder_git_ignores() {
        let all = targets().unwrap();
        assert!(all.iter().any(|t| t.name == "client_datagram"));
        for t in &all {
            assert!(
                t.committed().is_dir()
                    && std::fs::read_dir(t.committed()).unwrap().next().is_some(),
                "{} has no committed corpus",
                t.name
            );
            // Under `target/`, which every fuzz crate's .gitignore lists.
            assert!(t.scratch().starts_with(t.crate_dir.join("target")));
        }
    }
}
