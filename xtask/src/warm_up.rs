//! Background builds for later steps of `cargo xtask test`, run while the steps between mostly
//! wait.
//!
//! The host tests, the quick soak and the HIL spend much of their time waiting on timers,
//! sockets and services, while rustdoc's dependency checks, the host TAP board's and the bench's
//! release builds and the fuzz crates' builds keep both cores busy for minutes. From the first
//! step after `deps` on (what the builds need is installed by then), [`WarmUps::start`] runs
//! those builds one after another on a thread, each under `nice -n 19` in a process group of
//! its own, with their output in `<target>/warm-up/<name>.log`. Around a step that measures (the bench's ratios to
//! Mosquitto need a quiet machine), [`WarmUps::pause`] stops the group (SIGSTOP) and
//! [`WarmUps::resume`] lets it go on afterwards. Steps that compile run alongside: a nice-19
//! compiler takes what they leave idle (serial stretches such as a board's LTO), and on one
//! machine pausing it during them made the whole run longer, not shorter. The step that needs
//! a warm-up calls [`WarmUps::wait`] before it builds: its own build then finds everything
//! fresh. A warm-up only fills cargo's caches, so its outcome decides nothing: when
//! one fails, the step's own build runs as it would have and reports the error. When the run
//! ends early (a step failed), dropping [`WarmUps`] ends the build still running.

use crate::shell::{describe, signal_group, target_dir};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// One background build: the step it is for and the commands it runs in order.
pub struct WarmUp {
    /// The step that waits for it (`bench`, `fuzz`).
    pub step: &'static str,
    /// The builds, run in order under `nice -n 19`; the first failure ends this warm-up.
    pub commands: Vec<Command>,
}

/// How one warm-up ended.
struct Outcome {
    step: &'static str,
    took: Duration,
    result: Result<(), String>,
}

/// The warm-ups of one `cargo xtask test` run: none until [`WarmUps::start`].
#[derive(Default)]
pub struct WarmUps {
    /// Warm-ups started and not yet waited for, by step.
    pending: BTreeMap<&'static str, PathBuf>,
    /// Outcomes as the thread finishes them.
    done: Option<Receiver<Outcome>>,
    /// Outcomes received while waiting for another step's.
    received: Vec<Outcome>,
    /// What the thread runs now and may run next, shared with it.
    control: Control,
}

/// The build running now and whether builds may run, shared by [`WarmUps`] and its thread.
#[derive(Default, Clone)]
struct Control {
    state: Arc<(Mutex<State>, Condvar)>,
}

/// See [`Control`].
#[derive(Default)]
struct State {
    /// The process group of the build running now.
    group: Option<u32>,
    /// Builds are stopped (SIGSTOP) and none starts until resumed.
    paused: bool,
    /// The run is over: start nothing more.
    ended: bool,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets `paused`, signalling the running build's group (SIGSTOP or SIGCONT) to match.
    fn set_paused(&self, paused: bool) {
        let mut state = self.lock();
        if state.paused != paused
            && let Some(group) = state.group
        {
            signal_group(group, if paused { "-STOP" } else { "-CONT" });
        }
        state.paused = paused;
        self.state.1.notify_all();
    }

    /// Starts `command` once builds may run, recording its group; `None` once the run ended.
    fn spawn(&self, command: &mut Command) -> Option<std::io::Result<std::process::Child>> {
        let mut state = self.lock();
        while state.paused && !state.ended {
            state = self.state.1.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.ended {
            return None;
        }
        // Started under the lock a pause or the end takes: either they see this group, or
        // this saw them.
        let child = command.spawn();
        if let Ok(child) = &child {
            state.group = Some(child.id());
        }
        Some(child)
    }

    fn finished(&self) {
        self.lock().group = None;
    }
}

impl Drop for WarmUps {
    fn drop(&mut self) {
        let mut state = self.control.lock();
        state.ended = true;
        if let Some(group) = state.group {
            // A stopped group handles SIGTERM once continued.
            signal_group(group, "-TERM");
            signal_group(group, "-CONT");
        }
        self.control.state.1.notify_all();
    }
}

impl WarmUps {
    /// Starts `warm_ups` on one background thread, in order. Call it once.
    pub fn start(&mut self, warm_ups: Vec<WarmUp>) {
        let folder = target_dir().join("warm-up");
        if let Err(e) = std::fs::create_dir_all(&folder) {
            eprintln!("warm-up: skipped, cannot create {}: {e}", folder.display());
            return;
        }
        let (send, done) = mpsc::channel();
        let mut jobs = Vec::new();
        for warm_up in warm_ups {
            let log = folder.join(format!("{}.log", warm_up.step));
            eprintln!(
                "warm-up: building for `{}` in the background (nice 19, log {})",
                warm_up.step,
                log.display()
            );
            self.pending.insert(warm_up.step, log.clone());
            jobs.push((warm_up, log));
        }
        let control = self.control.clone();
        thread::spawn(move || {
            for (warm_up, log) in jobs {
                let started = Instant::now();
                let result = run_niced(warm_up.commands, &log, &control);
                let outcome = Outcome {
                    step: warm_up.step,
                    took: started.elapsed(),
                    result,
                };
                if send.send(outcome).is_err() {
                    return;
                }
            }
        });
        self.done = Some(done);
    }

    /// True once [`WarmUps::start`] has run.
    pub fn started(&self) -> bool {
        self.done.is_some()
    }

    /// Stops the background builds (SIGSTOP) until [`WarmUps::resume`]: for a step that
    /// measures.
    pub fn pause(&self) {
        self.control.set_paused(true);
    }

    /// Lets the background builds run again.
    pub fn resume(&self) {
        self.control.set_paused(false);
    }

    /// Waits for the warm-up of `step`, if one was started, and says how it went: `None`
    /// without one, else whether it built (the step goes on either way). The builds run while
    /// it waits and are paused again afterwards if they were before.
    pub fn wait(&mut self, step: &str) -> Option<Result<(), String>> {
        let log = self.pending.remove(step)?;
        let was_paused = self.control.lock().paused;
        self.resume();
        let waited = Instant::now();
        let outcome = loop {
            if let Some(i) = self.received.iter().position(|o| o.step == step) {
                break Some(self.received.swap_remove(i));
            }
            match self.done.as_ref().map(Receiver::recv) {
                Some(Ok(outcome)) => self.received.push(outcome),
                _ => break None,
            }
        };
        if was_paused {
            self.pause();
        }
        let waited = waited.elapsed().as_secs_f32();
        let Some(outcome) = outcome else {
            eprintln!("warm-up for `{step}`: its thread ended early; the step builds on its own");
            return Some(Err("the warm-up thread ended early".into()));
        };
        match &outcome.result {
            Ok(()) => eprintln!(
                "warm-up for `{step}`: built in {:.0} s in the background ({waited:.0} s waited here)",
                outcome.took.as_secs_f32()
            ),
            Err(e) => eprintln!(
                "warm-up for `{step}` failed ({e}; log {}): the step builds on its own",
                log.display()
            ),
        }
        Some(outcome.result)
    }
}

/// Runs `commands` in order under `nice -n 19`, each in a process group of its own (see
/// [`Control`]), their output in `log`.
fn run_niced(commands: Vec<Command>, log: &PathBuf, control: &Control) -> Result<(), String> {
    let file = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    for command in commands {
        let mut niced = niced(&command);
        let out = file.try_clone().map_err(|e| e.to_string())?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        niced
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let mut child = control
            .spawn(&mut niced)
            .ok_or("the run ended")?
            .map_err(|e| format!("cannot start `{}`: {e}", describe(&niced)))?;
        let status = child.wait();
        control.finished();
        let status = status.map_err(|e| format!("waiting for `{}`: {e}", describe(&niced)))?;
        if !status.success() {
            return Err(format!("`{}` failed ({status})", describe(&command)));
        }
    }
    Ok(())
}

/// `command` run through `nice -n 19`: same arguments, folder and environment.
fn niced(command: &Command) -> Command {
    let mut niced = Command::new("nice");
    niced
        .args(["-n", "19"])
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        niced.current_dir(dir);
    } else {
        niced.current_dir(crate::shell::project_root());
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => niced.env(key, value),
            None => niced.env_remove(key),
        };
    }
    niced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_niced_command_keeps_its_arguments_folder_and_environment() {
        let mut command = Command::new("cargo");
        command
            .args(["build", "--release"])
            .current_dir("/somewhere")
            .env("CARGO_TARGET_DIR", "/t")
            .env_remove("RUSTFLAGS");
        let niced = niced(&command);
        assert_eq!(niced.get_program(), "nice");
        let args: Vec<_> = niced.get_args().collect();
        assert_eq!(args, ["-n", "19", "cargo", "build", "--release"]);
        assert_eq!(niced.get_current_dir(), Some("/somewhere".as_ref()));
        let envs: Vec<_> = niced.get_envs().collect();
        assert!(envs.contains(&("CARGO_TARGET_DIR".as_ref(), Some("/t".as_ref()))));
        assert!(envs.contains(&("RUSTFLAGS".as_ref(), None)));
    }

    #[test]
    fn waiting_gives_each_step_its_own_outcome_whatever_the_order() {
        let mut warm_ups = WarmUps::default();
        let ok = |step| WarmUp {
            step,
            commands: vec![Command::new("true")],
        };
        let failing = WarmUp {
            step: "fuzz",
            commands: vec![Command::new("false"), Command::new("true")],
        };
        warm_ups.start(vec![ok("bench"), failing]);
        // Waiting for the second first keeps the first's outcome for later.
        let fuzz = warm_ups.wait("fuzz").expect("a fuzz warm-up was started");
        assert!(fuzz.unwrap_err().contains("`false` failed"));
        assert_eq!(warm_ups.received.len(), 1);
        assert_eq!(warm_ups.received[0].step, "bench");
        assert_eq!(warm_ups.wait("bench"), Some(Ok(())));
        assert!(warm_ups.received.is_empty() && warm_ups.pending.is_empty());
        // A step without a warm-up does not wait, and one waited for is not waited for twice.
        assert_eq!(warm_ups.wait("hil"), None);
        assert_eq!(warm_ups.wait("bench"), None);
    }

    #[test]
    fn dropping_the_warm_ups_ends_the_build_running_and_starts_no_more() {
        let marker = std::env::temp_dir().join(format!("warm-up-drop-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let mut warm_ups = WarmUps::default();
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let mut touch = Command::new("touch");
        touch.arg(&marker);
        warm_ups.start(vec![WarmUp {
            step: "bench",
            commands: vec![sleep, touch],
        }]);
        let control = warm_ups.control.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let group = loop {
            if let Some(group) = control.lock().group {
                break group;
            }
            assert!(Instant::now() < deadline, "the sleep never started");
            thread::sleep(Duration::from_millis(10));
        };
        // Paused first: a stopped group ends too.
        warm_ups.pause();
        drop(warm_ups);
        // The group is gone (kill -0 fails) well before the sleep would have ended, and the
        // second command never ran.
        let gone = loop {
            let alive = Command::new("kill")
                .args(["-0", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !alive || Instant::now() > deadline {
                break !alive;
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert!(gone, "the sleep's process group outlived the drop");
        thread::sleep(Duration::from_millis(200));
        assert!(!marker.exists(), "a command ran after the drop");
    }

    #[test]
    fn a_paused_warm_up_starts_nothing_until_resumed_and_waiting_resumes_it() {
        let marker = std::env::temp_dir().join(format!("warm-up-pause-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let mut warm_ups = WarmUps::default();
        warm_ups.pause();
        let mut touch = Command::new("touch");
        touch.arg(&marker);
        warm_ups.start(vec![WarmUp {
            step: "bench",
            commands: vec![touch],
        }]);
        thread::sleep(Duration::from_millis(300));
        assert!(!marker.exists(), "a paused warm-up started a build");
        assert_eq!(warm_ups.wait("bench"), Some(Ok(())));
        assert!(marker.exists());
        assert!(
            warm_ups.control.lock().paused,
            "waiting left the warm-ups running"
        );
        let _ = std::fs::remove_file(&marker);
    }
}
