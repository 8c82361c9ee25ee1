//! The `broker` binary as a child process (killed by its PID on drop), usually on 127.0.0.1
//! port-0 addresses with the fixed test secrets of `comet_support` (so its protocol clients log
//! in), its bound addresses read back from the start-up banner the binary prints on stdout: the
//! same lines a user reads. Used by the process-level tests (`crash_restart`, `sigterm_drain`,
//! `cli_tools`); they also declare `mod comet_support;`, which this module builds on.
#![allow(dead_code)] // Each test binary uses its own part.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::comet_support::{API_TOKEN, MASTER, TOKEN_SECRET};

/// Writes `broker.toml` into `dir`: every listener on 127.0.0.1 port 0, the data directory
/// `dir/data`, the fixed test secrets, then `extra` (more TOML sections) verbatim.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("broker.toml");
    let data = dir.join("data");
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\ndevice_ws = \"127.0.0.1:0\"\napp_ws = \"127.0.0.1:0\"\n\
         udp = \"127.0.0.1:0\"\n[storage]\ndata_dir = {data:?}\n[security]\napi_token = \"{API_TOKEN}\"\n\
         fleet_master_key = \"{}\"\ntoken_secret = \"{}\"\n{extra}",
        hex::encode(MASTER),
        hex::encode(TOKEN_SECRET),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The `broker` binary with plain logs and no inherited `RUST_LOG`; add arguments, `current_dir`
/// and `BROKER__*` variables as needed.
pub fn broker_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.env("NO_COLOR", "1").env_remove("RUST_LOG");
    cmd
}

/// A child process whose stdout and stderr lines arrive on a channel; killed (by its PID) on
/// drop.
pub struct Spawned {
    /// The process.
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every output line (stdout and stderr) read so far.
    pub seen: Vec<String>,
}

impl Spawned {
    /// Spawns `cmd` with piped stdin, stdout and stderr.
    pub fn new(mut cmd: Command) -> Spawned {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a child process");
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
        Spawned {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// `sh -c "exec <script>"` in `dir`: the shell reads the line as a user's would, and the
    /// PID is the command's own.
    pub fn shell(script: &str, dir: &Path, env: &[(&str, &str)]) -> Spawned {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("exec {script}"))
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Spawned::new(cmd)
    }

    /// Waits (up to 20 s) for an output line containing `needle`; returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
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

    /// Reads every remaining output line into `seen` until both pipes close (the process exited)
    /// or `limit` passes; returns all lines seen.
    pub fn drain_until_closed(&mut self, limit: Duration) -> &[String] {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return &self.seen,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "output still open {limit:?} later; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Writes `line` to its stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits up to `limit` for the exit; its code (`-1` for a signal) and when it came.
    pub fn wait_exit(&mut self, limit: Duration) -> (i32, Instant) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "process still running {limit:?} later; output:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `broker` (see [`Spawned`]) and what its banner said.
pub struct Started {
    /// The process.
    pub proc: Spawned,
    /// The HTTP API base, e.g. `http://127.0.0.1:4321` (no `/v1`).
    pub http: String,
    /// The device UDP endpoint.
    pub udp: SocketAddr,
    /// The device WebSocket URL.
    pub device_ws: String,
    /// The app WebSocket URL.
    pub app_ws: String,
    /// The banner's lines, from `broker ready` to `stop with`.
    pub banner: Vec<String>,
}

/// The text after `prefix` in `line` up to the next space.
fn word_after<'a>(line: &'a str, prefix: &str) -> &'a str {
    let rest = line
        .split_once(prefix)
        .unwrap_or_else(|| panic!("`{prefix}` not in banner line `{line}`"))
        .1;
    rest.split(' ').next().unwrap()
}

/// Starts `broker --config <config>` and waits for its banner.
pub fn start(config: &Path) -> Started {
    let mut cmd = broker_command();
    cmd.arg("--config").arg(config);
    start_command(cmd)
}

/// Spawns `cmd` (a broker serving) and waits for its banner.
pub fn start_command(cmd: Command) -> Started {
    let mut proc = Spawned::new(cmd);
    let mut banner = vec![proc.expect("broker ready")];
    loop {
        let line = proc.expect("");
        let last = line.starts_with("stop with");
        banner.push(line);
        if last {
            break;
        }
    }
    let mut b = Started {
        proc,
        http: String::new(),
        udp: "127.0.0.1:0".parse().unwrap(),
        device_ws: String::new(),
        app_ws: String::new(),
        banner,
    };
    b.http = word_after(b.line("HTTP API"), "HTTP API  ")
        .trim_end_matches("/v1")
        .to_string();
    let devices = b.line("devices").to_string();
    b.udp = word_after(&devices, "udp ").parse().unwrap();
    b.device_ws = word_after(&devices, " and ").to_string();
    b.app_ws = word_after(b.line("apps"), "apps      ").to_string();
    b
}

impl Started {
    /// An HTTP API call with the test API token: the status and the JSON body (`Null` when
    /// the body is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.http))
            .bearer_auth(API_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("HTTP API call");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` (see [`Started::call`]).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body (see [`Started::call`]).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The banner line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> &str {
        self.banner
            .iter()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", self.banner.join("\n")))
    }

    /// Sends SIGTERM to this process (by its PID only).
    pub fn sigterm(&self) {
        let pid = self.proc.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
    }

    /// Sends SIGKILL to this process and reaps it.
    pub fn kill_9(&mut self) {
        self.proc.child.kill().unwrap();
        self.proc.child.wait().unwrap();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.proc.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit` for the exit (see [`Spawned::wait_exit`]).
    pub fn wait_exit(&mut self, limit: Duration) -> (i32, Instant) {
        self.proc.wait_exit(limit)
    }
}

/// `GET /v1/uploads` page by page from the start: every upload in the spool.
pub async fn all_uploads(api: &Started) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = api
            .get(&format!("/v1/uploads?after={after}&limit=1000"))
            .await;
        assert_eq!(s, 200, "{page}");
        let batch = page["uploads"].as_array().unwrap().clone();
        if batch.is_empty() {
            return out;
        }
        after = page["next"].as_u64().unwrap();
        out.extend(batch);
    }
}
