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
//!
//! libFuzzer runs on one core, so both runs fuzz as many targets side by side as the machine
//! has cores ([`each_target`]); each target's output goes to a log of its own and is printed
//! whole when the target is done, so the lines of targets running together never interleave.

use crate::shell::{cargo, describe, has_program, run_command};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a run builds its fuzz crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    /// Unoptimized and without AddressSanitizer (`cargo fuzz run --dev --sanitizer none`), the
    /// CI step's. Unoptimized compiles in well under half the time (the broker's fuzz crate,
    /// the step's longest build: 3 min 10 s against 7 min 25 s on one machine) and still
    /// replays the whole committed corpus, with integer overflow and debug assertions checked;
    /// it runs far fewer new inputs a second, which is the long run's job. The sanitizer finds
    /// memory errors only in `unsafe` code, which the project's crates deny (the workspace
    /// lints) and the long run still checks in their dependencies; without it the three crates'
    /// build took 17 % less CPU (the broker's: 544 s against 655 s). Coverage instrumentation
    /// goes on the project's crates only (`scripts/fuzz-rustc.sh` as cargo's rustc wrapper):
    /// in a run of seconds from the corpus the coverage of third-party code guides nothing,
    /// and leaving it out took the broker's build from 545 s to 476 s of CPU.
    Dev,
    /// Optimized, with AddressSanitizer: cargo-fuzz's default, the long run's.
    Release,
}

impl Build {
    /// Adds this build's `cargo fuzz build` or `run` options and environment to `command`.
    fn apply(self, command: &mut Command) -> &mut Command {
        match self {
            Build::Dev => command.args(["--dev", "--sanitizer", "none"]).env(
                "RUSTC_WRAPPER",
                crate::shell::project_root().join("scripts/fuzz-rustc.sh"),
            ),
            Build::Release => command,
        }
    }
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

    /// `cargo +nightly fuzz <subcommand> <target>` from the folder that holds the crate, built
    /// in the shared [`build_dir`].
    fn cargo_fuzz(&self, subcommand: &str) -> Command {
        let mut command = cargo_fuzz_in(&self.crate_dir);
        command.args([subcommand, &self.name]);
        command.arg("--target-dir").arg(build_dir());
        command
    }

    /// Where this target's output goes while it runs beside others ([`each_target`]).
    fn log(&self) -> PathBuf {
        self.crate_dir
            .join("target")
            .join("fuzz-logs")
            .join(format!("{}.log", self.name))
    }

    /// Fuzzes for `seconds` on a `build` build, new finds into the scratch folder, the
    /// committed corpus read; the output appended to `log`.
    fn fuzz(&self, seconds: u64, build: Build, log: &Path) -> Result<(), String> {
        let (scratch, committed) = (self.scratch(), self.committed());
        for dir in [&scratch, &committed] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut command = self.cargo_fuzz("run");
        build.apply(&mut command);
        run_logged(
            command
                .arg(&scratch)
                .arg(&committed)
                .arg("--")
                .arg(format!("-max_total_time={seconds}")),
            log,
        )
    }

    /// Rebuilds the committed corpus as a smallest set of inputs, from it and the scratch
    /// folder, that keeps every code edge either reached (libFuzzer's `-set_cover_merge=1` with
    /// `-use_counters=0`: edges, not hit counts; `cargo fuzz cmin` keeps several times more
    /// files, one per hit-count feature), then empties the scratch folder. The previous corpus
    /// waits under `target/` until the merge succeeded. The output is appended to `log`.
    fn merge(&self, log: &Path) -> Result<(), String> {
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
        let merged = run_logged(
            self.cargo_fuzz("run")
                .arg(&committed)
                .arg(&previous)
                .arg(&scratch)
                .args(["--", "-set_cover_merge=1", "-use_counters=0"]),
            log,
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

/// Runs `command` with its output appended to `log` (the command line first); an error names
/// the command, its exit status and the log.
fn run_logged(command: &mut Command, log: &Path) -> Result<(), String> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    writeln!(file, "$ {}", describe(command))
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .status()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({status}); its output is in {}",
            describe(command),
            log.display()
        ))
    }
}

/// Runs `job` on every target, `jobs` targets at a time, each with a fresh log file
/// ([`Target::log`]) that is printed whole when its target is done. After the first failure
/// no new target starts; the targets already running finish, and every failure is returned.
fn each_target(
    targets: &[Target],
    jobs: usize,
    job: impl Fn(&Target, &Path) -> Result<(), String> + Sync,
) -> Result<(), String> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let printing = Mutex::new(());
    let failed = || {
        !failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    };
    let worker = || {
        while !failed() {
            let Some(target) = targets.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return;
            };
            let log = target.log();
            let result = log
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| File::create(&log))
                .map_err(|e| format!("cannot create {}: {e}", log.display()))
                .and_then(|_| {
                    eprintln!("fuzz: {} started, output in {}", target.name, log.display());
                    job(target, &log)
                });
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            let _turn = printing.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "\n--- fuzz target {} ({})",
                target.name,
                target.crate_dir.display()
            );
            eprint!("{output}");
            match result {
                Ok(()) => eprintln!("--- {}: ok", target.name),
                Err(e) => {
                    eprintln!("--- {}: FAILED: {e}", target.name);
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{}: {e}", target.name));
                }
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, targets.len().max(1)) {
            scope.spawn(worker);
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Targets fuzzed side by side unless told otherwise: one per core.
fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The builds of the CI step, for a background warm-up ([`crate::warm_up`]): cargo-fuzz's
/// install when it is missing, then each fuzz crate's unoptimized build of all its targets
/// (what each target's run in [`ci`] then finds fresh). Empty without nightly.
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
        build.arg("build");
        Build::Dev
            .apply(&mut build)
            .arg("--target-dir")
            .arg(build_dir());
        commands.push(build);
    }
    commands
}

/// The one build folder of every fuzz crate, `<target>/fuzz`: the crates have workspaces of
/// their own but share most dependencies (libFuzzer's C++ runtime, the protocol crate and its
/// cryptography), which are then compiled once instead of once per crate (the three unoptimized
/// builds: 895 s of CPU in folders of their own, 760 s in this one). Their target names are
/// distinct, so their binaries can sit side by side.
fn build_dir() -> PathBuf {
    crate::shell::target_dir().join("fuzz")
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
/// corpus, on unoptimized builds ([`Build::Dev`]), one target per core at a time.
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
    each_target(&targets()?, default_jobs(), |target, log| {
        target.fuzz(seconds, Build::Dev, log)
    })
}

/// `cargo xtask fuzz [--target T] [--seconds N] [--jobs J] [--merge]`: a long run (default
/// 300 s per target, one target per core at a time) of one target or all, optionally merged
/// into the committed corpus.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut only = None;
    let mut seconds = 300;
    let mut jobs = default_jobs();
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
            "--jobs" => {
                let value = iter.next().ok_or("--jobs needs a number")?;
                jobs = value
                    .parse()
                    .ok()
                    .filter(|&jobs| jobs > 0)
                    .ok_or_else(|| format!("--jobs {value} is not a positive number"))?;
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
    each_target(&chosen, jobs, |target, log| {
        target.fuzz(seconds, Build::Release, log)?;
        if merge {
            target.merge(log)?;
        }
        Ok(())
    })
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

    #[test]
    fn target_names_are_distinct_across_crates_sharing_one_build_folder() {
        let all = targets().unwrap();
        let mut names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a target name is used twice: {names:?}");
        assert!(
            all.iter()
                .any(|t| t.cargo_fuzz("run").get_args().any(|a| a == build_dir()))
        );
    }

    /// Fake targets in a scratch folder of their own (logs go under it).
    fn fake_targets(test: &str, names: &[&str]) -> (PathBuf, Vec<Target>) {
        let dir = std::env::temp_dir().join(format!("xtask-fuzz-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let targets = names
            .iter()
            .map(|name| Target {
                crate_dir: dir.clone(),
                name: (*name).into(),
            })
            .collect();
        (dir, targets)
    }

    #[test]
    fn every_target_runs_once_with_a_log_of_its_own() {
        let (dir, targets) = fake_targets("all", &["a", "b", "c", "d", "e"]);
        let ran = Mutex::new(Vec::new());
        each_target(&targets, 2, |target, log| {
            std::fs::write(log, format!("output of {}\n", target.name)).unwrap();
            ran.lock().unwrap().push(target.name.clone());
            Ok(())
        })
        .unwrap();
        let mut ran = ran.into_inner().unwrap();
        ran.sort();
        assert_eq!(ran, ["a", "b", "c", "d", "e"]);
        for target in &targets {
            let output = std::fs::read_to_string(target.log()).unwrap();
            assert_eq!(output, format!("output of {}\n", target.name));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failure_is_returned_and_no_new_target_starts_after_it() {
        let (dir, targets) = fake_targets("failure", &["a", "b", "c", "d"]);
        let ran = Mutex::new(Vec::new());
        let result = each_target(&targets, 1, |target, _log| {
            ran.lock().unwrap().push(target.name.clone());
            if target.name == "b" {
                Err("crashed".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err("b: crashed".into()));
        assert_eq!(ran.into_inner().unwrap(), ["a", "b"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn targets_run_side_by_side_up_to_the_job_count() {
        use std::sync::Condvar;
        use std::time::Duration;
        let (dir, targets) = fake_targets("side-by-side", &["a", "b"]);
        // Each job waits for the other to have started: only two at once pass.
        let started = (Mutex::new(0), Condvar::new());
        each_target(&targets, 2, |target, _log| {
            let (count, changed) = &started;
            let mut count = count.lock().unwrap();
            *count += 1;
            changed.notify_all();
            let (count, timeout) = changed
                .wait_timeout_while(count, Duration::from_secs(30), |count| *count < 2)
                .unwrap();
            if timeout.timed_out() {
                Err(format!("{} ran alone ({} started)", target.name, *count))
            } else {
                Ok(())
            }
        })
        .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
