//! Processes of `cargo xtask bench` inside a network namespace of their own: [`Namespace`]
//! (`ip netns add`, only `lo` up, removed on drop), [`Spawned`] (a server or client started in
//! one with the per-process file limit raised to what the machine allows, stopped by its PID on
//! drop), and what the harness reads about a process from `/proc`: resident memory, CPU time,
//! and the sockets listening in its namespace.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Open files allowed per process on this machine (the hard limit cannot be raised above it).
pub const FILES_PER_PROCESS: u32 = 20_000;

/// A network namespace with only `lo` up; deleted (with anything left in it) on drop.
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `plugbench-<xtask pid>-<n>` and brings its loopback up.
    pub fn create() -> Result<Namespace, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "plugbench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        quiet(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Namespace { name };
        quiet(
            Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]),
        )?;
        Ok(ns)
    }

    /// Starts `program args` inside the namespace with `ulimit -n` raised. The child's PID is
    /// the program's (the wrappers `exec` it).
    pub fn spawn(&self, program: &Path, args: &[String], stdio: Pipes) -> Result<Spawned, String> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, "sh", "-c"])
            .arg(format!(
                "ulimit -n {FILES_PER_PROCESS} && exec \"$0\" \"$@\""
            ))
            .arg(program)
            .args(args);
        match stdio {
            Pipes::Server(log) => {
                let file = std::fs::File::create(log)
                    .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
                let err = file.try_clone().map_err(|e| e.to_string())?;
                command.stdin(Stdio::null()).stdout(file).stderr(err);
            }
            Pipes::Client => {
                command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit());
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {} in {}: {e}", program.display(), self.name))?;
        // A thread per client forwards its stdout lines, so a read can time out.
        let lines = child.stdout.take().map(|stdout| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        Ok(Spawned {
            child,
            lines,
            name: program
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = quiet(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// Where a spawned process's standard streams go.
pub enum Pipes<'a> {
    /// A server: stdout and stderr to this log file, no stdin.
    Server(&'a Path),
    /// A load client: stdin and stdout piped to the harness (status line out, stdin held).
    Client,
}

/// One JSON status line of `bench-load`, or an error quoting what it said instead.
pub fn load_status(line: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("bench-load said `{}`: {e}", line.trim()))
}

/// A process the harness started; stopped by its PID on drop if still running.
pub struct Spawned {
    child: Child,
    lines: Option<mpsc::Receiver<String>>,
    name: String,
}

impl Spawned {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of the client's stdout, waiting at most `timeout`.
    pub fn read_line(&mut self, timeout: Duration) -> Result<String, String> {
        let lines = self
            .lines
            .as_ref()
            .ok_or_else(|| format!("{} has no stdout to read", self.name))?;
        match lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!(
                "{} (pid {}) exited without a status line",
                self.name,
                self.pid()
            )),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "{} (pid {}) said nothing within {timeout:?}",
                self.name,
                self.pid()
            )),
        }
    }

    /// Closes the client's stdin: it reports what it has and exits.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Asks it to stop (SIGTERM to its PID; stdin closed for a client), waits up to `grace`,
    /// then kills it (SIGKILL to its PID).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.pid().to_string();
        let _ = quiet(Command::new("kill").args(["-TERM", &pid]));
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `grace` for it to exit on its own (a client whose stdin closed), then stops it.
    pub fn wait_or_stop(&mut self, grace: Duration) {
        drop(self.child.stdin.take());
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop(Duration::from_secs(2));
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Resident memory of a process, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resident {
    /// All of it (`VmRSS`), the pages of its program and libraries included: those grow as
    /// code runs for the first time, by the size of the code, not of the work.
    pub total_kib: u64,
    /// Its anonymous part (`RssAnon`): heap, stacks and other private memory, what a connection
    /// or a message costs.
    pub anon_kib: u64,
}

/// The resident memory of `pid` now.
pub fn resident(pid: u32) -> Result<Resident, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    parse_resident(&status).ok_or_else(|| format!("no VmRSS or RssAnon in /proc/{pid}/status"))
}

fn parse_resident(status: &str) -> Option<Resident> {
    Some(Resident {
        total_kib: status_kib(status, "VmRSS:")?,
        anon_kib: status_kib(status, "RssAnon:")?,
    })
}

/// The value of a `/proc/PID/status` line such as `VmRSS:\t  20480 kB`, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User plus system CPU time `pid` has used, in clock ticks (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot be asked).
pub fn ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Waits until, in `pid`'s network namespace, every port of `tcp` listens and every port of
/// `udp` is bound (read from `/proc/<pid>/net/`), or fails after `timeout`.
pub fn wait_listening(pid: u32, tcp: &[u16], udp: &[u16], timeout: Duration) -> Result<(), String> {
    let until = Instant::now() + timeout;
    loop {
        let table = |file: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default()
        };
        let tcp_text = table("tcp") + &table("tcp6");
        let udp_text = table("udp") + &table("udp6");
        let tcp_ok = tcp.iter().all(|&p| socket_in(&tcp_text, p, Some("0A")));
        let udp_ok = udp.iter().all(|&p| socket_in(&udp_text, p, None));
        if tcp_ok && udp_ok {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "pid {pid} did not listen on tcp {tcp:?} / udp {udp:?} within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when a `/proc/net/{tcp,udp}` table has a socket on local `port` (in `state`, if given).
fn socket_in(table: &str, port: u16, state: Option<&str>) -> bool {
    let port_hex = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or("");
        let st = fields.nth(1).unwrap_or("");
        local.ends_with(&port_hex) && state.is_none_or(|s| s == st)
    })
}

fn quiet(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_are_parsed() {
        assert_eq!(
            parse_resident("Name:\tx\nVmRSS:\t  20480 kB\nRssAnon:\t   8192 kB\n"),
            Some(Resident {
                total_kib: 20480,
                anon_kib: 8192
            })
        );
        assert_eq!(parse_resident("Name:\tx\nVmRSS:\t  20480 kB\n"), None);
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn listening_sockets_are_found_by_port_and_state() {
        let tcp = "  sl  local_address rem_address   st tx_queue\n   0: 0100007F:1F91 00000000:0000 0A 00000000\n   1: 0100007F:1F92 0100007F:9C40 01 00000000\n";
        assert!(socket_in(tcp, 8081, Some("0A")));
        assert!(
            !socket_in(tcp, 8082, Some("0A")),
            "established, not listening"
        );
        assert!(socket_in(tcp, 8082, None));
        assert!(!socket_in(tcp, 80, None));
    }

    #[test]
    fn our_own_memory_and_cpu_are_readable() {
        let me = std::process::id();
        let r = resident(me).unwrap();
        assert!(r.anon_kib > 0 && r.total_kib > r.anon_kib, "{r:?}");
        cpu_ticks(me).unwrap();
    }
}
