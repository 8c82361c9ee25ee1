//! The `broker` binary as a child process for tests: a temporary config on free 127.0.0.1
//! ports ([`setup`]), spawned subcommands whose output lines can be awaited ([`Proc`], killed by
//! its own PID on drop), and the API token the broker generated. Shared by the tests that run
//! the binary (`client_quickstart`, `load_generator`). API calls go through the shared
//! [`http_support::ApiClient`].
#![allow(dead_code)] // Each test binary uses its own part.

#[path = "../http_support/mod.rs"]
pub mod http_support;
#[path = "../port_support/mod.rs"]
pub mod port_support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use self::http_support::ApiClient;

/// How long any wait in these helpers lasts.
pub const WAIT: Duration = Duration::from_secs(20);

/// A free TCP port on 127.0.0.1 (outside the ephemeral range: [`port_support`]).
pub fn free_tcp() -> u16 {
    port_support::free_port()
}

/// A free UDP port on 127.0.0.1 (outside the ephemeral range: [`port_support`]).
pub fn free_udp() -> u16 {
    port_support::free_port()
}

/// A spawned process whose stdout lines arrive on a channel; killed (by its PID) on drop.
pub struct Proc {
    /// The child process.
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Proc {
    /// Spawns `broker --config <config> <args>`.
    pub fn spawn(config: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn broker binary");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with `{needle}`; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The first line containing `needle` printed within `wait`, or `None` (the lines read
    /// meanwhile are kept in [`Proc::seen`]): for what must not happen in a window.
    pub fn first_within(&mut self, needle: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    /// Writes `line` to its stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (bounded by [`WAIT`]) for its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary config and data directory.
pub struct Setup {
    _dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// The HTTP API base URL.
    pub http: String,
}

/// A config on free 127.0.0.1 ports with a data directory in a temporary folder.
pub fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    let data = dir.path().join("broker-data");
    let http = format!("127.0.0.1:{}", free_tcp());
    std::fs::write(
        &config,
        format!(
            "[listen]\nhttp = \"{http}\"\ndevice_ws = \"127.0.0.1:{}\"\napp_ws = \"127.0.0.1:{}\"\n\
             udp = \"127.0.0.1:{}\"\n[storage]\ndata_dir = {data:?}\n",
            free_tcp(),
            free_tcp(),
            free_udp()
        ),
    )
    .unwrap();
    Setup {
        _dir: dir,
        config,
        data,
        http: format!("http://{http}"),
    }
}

/// The API token the broker generated (what the README tells users to read).
pub fn api_token(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("secrets.toml")).unwrap();
    let t: toml::Table = text.parse().unwrap();
    t["api_token"].as_str().unwrap().to_string()
}

/// An HTTP API call with the generated API token: status and body (see [`ApiClient::call`]).
pub async fn api(
    s: &Setup,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    ApiClient::new(s.http.clone(), api_token(&s.data))
        .call(method, path, body)
        .await
}
