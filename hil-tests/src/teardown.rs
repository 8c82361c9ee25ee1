//! Teardown on Ctrl-C: what a run sets up outside itself (network namespaces, board processes)
//! is registered here while it exists, and a watcher thread removes it when the run is
//! interrupted (SIGINT, SIGTERM, SIGHUP), then ends the process with status 130.
//!
//! In a normal run the guards do the teardown ([`crate::netns::Namespace`]'s drop,
//! [`crate::device::Device::stop`]) and unregister; the watcher only acts on a signal, which
//! would otherwise end the process without running any drop. Boards are ended with SIGKILL (the
//! run is being abandoned), namespaces deleted (which removes their bridge and TAPs).

use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Exit status of a run ended by a signal (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT: i32 = 130;

#[derive(Debug, Default)]
struct Registered {
    namespaces: Vec<String>,
    pids: Vec<u32>,
}

/// Handle to the registry the watcher cleans up from (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Teardown {
    registered: Arc<Mutex<Registered>>,
}

impl Teardown {
    /// A registry without a watcher (tests, library use): nothing happens on a signal.
    pub fn detached() -> Teardown {
        Teardown::default()
    }

    /// A registry and the thread that tears everything in it down on SIGINT/SIGTERM/SIGHUP.
    pub fn install() -> std::io::Result<Teardown> {
        let teardown = Teardown::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        // Registered before this returns, so no signal in between is missed.
        let (mut int, mut term, mut hup) = runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })?;
        let watched = teardown.clone();
        std::thread::Builder::new()
            .name("hil-teardown".into())
            .spawn(move || {
                let name = runtime.block_on(async {
                    tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                        _ = hup.recv() => "SIGHUP",
                    }
                });
                let (pids, namespaces) = watched.tear_down();
                eprintln!(
                    "hil: {name}: ended {pids} board process(es), removed network namespace(s) [{}]; exiting",
                    namespaces.join(", ")
                );
                std::process::exit(INTERRUPTED_EXIT);
            })?;
        Ok(teardown)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Registered) -> T) -> T {
        f(&mut self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Registers a namespace to delete on a signal.
    pub fn add_namespace(&self, name: &str) {
        self.with(|r| r.namespaces.push(name.to_string()));
    }

    /// Unregisters a namespace (its guard removed it).
    pub fn remove_namespace(&self, name: &str) {
        self.with(|r| r.namespaces.retain(|n| n != name));
    }

    /// Registers a board process to kill on a signal.
    pub fn add_pid(&self, pid: u32) {
        self.with(|r| r.pids.push(pid));
    }

    /// Unregisters a board process (it was stopped and reaped: its PID may be reused).
    pub fn remove_pid(&self, pid: u32) {
        self.with(|r| r.pids.retain(|p| *p != pid));
    }

    /// Kills every registered process and deletes every registered namespace; returns how many
    /// processes and which namespaces.
    pub fn tear_down(&self) -> (usize, Vec<String>) {
        let (pids, namespaces) = self.with(|r| {
            (
                std::mem::take(&mut r.pids),
                std::mem::take(&mut r.namespaces),
            )
        });
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        for ns in &namespaces {
            if let Err(e) = crate::netns::delete(ns) {
                eprintln!("hil: could not remove network namespace {ns}: {e}");
            }
        }
        (pids.len(), namespaces)
    }
}
