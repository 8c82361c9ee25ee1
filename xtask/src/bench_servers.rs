//! The servers `cargo xtask bench` measures, each started alone in a fresh [`Namespace`]:
//! our broker on embedded defaults (a temporary data directory and a generated bench config:
//! per-address limits lifted, since every client comes from 127.0.0.1, and the per-terminal
//! frame rate, since a bench device uploads back to back, far above what a plug sends) and Mosquitto with a
//! generated config (an MQTT/TCP and an MQTT/WebSocket listener, anonymous, no persistence).
//! A [`Server`] owns its namespace, process and temporary directory, and removes all three.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench_ns::{self, Namespace, Pipes, Spawned};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// Our broker, standalone on embedded defaults.
    Ours,
    /// Mosquitto (Debian's package).
    Mosquitto,
    /// `bench-load udp-echo`: every UDP datagram back to its sender with the broker's batched
    /// I/O and no protocol work (the machine's limit in scenario `udp-frames`).
    UdpEcho,
}

impl Product {
    /// Its name in results.
    pub fn name(self) -> &'static str {
        match self {
            Product::Ours => "plugcloud",
            Product::Mosquitto => "mosquitto",
            Product::UdpEcho => "udp-echo",
        }
    }
}

/// Mosquitto options a scenario may vary.
#[derive(Clone, Copy, Debug, Default)]
pub struct MosquittoTuning {
    /// `allow_duplicate_messages true` (no per-delivery duplicate scan).
    pub allow_duplicate_messages: bool,
}

/// Ports inside every namespace (nothing else listens there).
pub mod port {
    /// Our HTTP API.
    pub const HTTP: u16 = 8080;
    /// Our device WebSocket.
    pub const DEVICE_WS: u16 = 8081;
    /// Our app WebSocket.
    pub const APP_WS: u16 = 8082;
    /// Our device UDP (and the UDP echo server's).
    pub const UDP: u16 = 8083;
    /// Mosquitto MQTT/TCP.
    pub const MQTT: u16 = 1883;
    /// Mosquitto MQTT/WebSocket.
    pub const MQTT_WS: u16 = 9001;
}

/// The fleet master key and app token secret written into our bench config (a throwaway broker
/// in a throwaway namespace; the clients derive keys and tokens from them).
pub const MASTER_KEY: &str = "6d61737465722d6b65792d666f722d62656e63686d61726b732d6f6e6c792121";
/// See [`MASTER_KEY`].
pub const TOKEN_SECRET: &str = "746f6b656e2d7365637265742d666f722d62656e63686d61726b732d6f6e6c79";

/// The bearer token of our bench broker's HTTP API.
pub const API_TOKEN: &str = "bench-api-token-not-secret";

/// A running server in its own namespace.
pub struct Server {
    process: Spawned,
    namespace: Namespace,
    dir: PathBuf,
}

impl Server {
    /// Starts `product` in a new namespace and waits until it listens. `binary` is the program
    /// for ours (the `broker` binary) and for [`Product::UdpEcho`] (the `bench-load` binary);
    /// Mosquitto is Debian's.
    pub fn start(
        product: Product,
        binary: &Path,
        tuning: MosquittoTuning,
    ) -> Result<Server, String> {
        let dir = std::env::temp_dir().join(format!(
            "plugbench-{}-{}",
            std::process::id(),
            product.name()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let namespace = Namespace::create()?;
        let log = dir.join("server.log");
        let started = match product {
            Product::Ours => {
                let config = dir.join("bench.toml");
                write(&config, &ours_config(&dir.join("data")))?;
                namespace.spawn(
                    binary,
                    &["--config".into(), config.display().to_string()],
                    Pipes::Server(&log),
                )
            }
            Product::UdpEcho => namespace.spawn(
                binary,
                &[
                    "udp-echo".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", port::UDP),
                ],
                Pipes::Server(&log),
            ),
            Product::Mosquitto => {
                let config = dir.join("mosquitto.conf");
                write(&config, &mosquitto_config(tuning))?;
                namespace.spawn(
                    Path::new("/usr/sbin/mosquitto"),
                    &["-c".into(), config.display().to_string()],
                    Pipes::Server(&log),
                )
            }
        };
        let process = match started {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let server = Server {
            process,
            namespace,
            dir,
        };
        let (tcp, udp): (&[u16], &[u16]) = match product {
            Product::Ours => (&[port::HTTP, port::DEVICE_WS, port::APP_WS], &[port::UDP]),
            Product::Mosquitto => (&[port::MQTT, port::MQTT_WS], &[]),
            Product::UdpEcho => (&[], &[port::UDP]),
        };
        bench_ns::wait_listening(server.pid(), tcp, udp, Duration::from_secs(30))
            .map_err(|e| format!("{e}; its log: {}", server.log_tail()))?;
        Ok(server)
    }

    /// The server's PID (the process measured).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its namespace, for the clients.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The end of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Our bench config: embedded defaults, the ports above, known secrets, limits sized for one
/// source address holding every connection.
fn ours_config(data_dir: &Path) -> String {
    format!(
        r#"[listen]
http = "127.0.0.1:{http}"
device_ws = "127.0.0.1:{dws}"
app_ws = "127.0.0.1:{aws}"
udp = "127.0.0.1:{udp}"
[storage]
data_dir = "{data}"
[security]
fleet_master_key = "{MASTER_KEY}"
token_secret = "{TOKEN_SECRET}"
api_token = "{API_TOKEN}"
[limits]
max_connections = 100000
max_connections_per_ip = 100000
login_attempts_per_ip_per_sec = 1000000
frames_per_sec_per_terminal = 1000000
frame_burst_per_terminal = 1000000
[timeouts]
shutdown_drain_secs = 1
[log]
filter = "warn"
"#,
        http = port::HTTP,
        dws = port::DEVICE_WS,
        aws = port::APP_WS,
        udp = port::UDP,
        data = data_dir.display(),
    )
}

/// Mosquitto's bench config: anonymous MQTT/TCP and MQTT/WebSocket listeners, no persistence,
/// errors only in the log.
fn mosquitto_config(tuning: MosquittoTuning) -> String {
    format!(
        "per_listener_settings false\nallow_anonymous true\npersistence false\n\
         log_dest stderr\nlog_type error\nset_tcp_nodelay true\nmax_queued_messages 10000\n\
         allow_duplicate_messages {dup}\n\
         listener {mqtt} 127.0.0.1\nlistener {ws} 127.0.0.1\nprotocol websockets\n",
        dup = tuning.allow_duplicate_messages,
        mqtt = port::MQTT,
        ws = port::MQTT_WS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_the_ports_and_the_tuning() {
        let ours = ours_config(Path::new("/tmp/x/data"));
        assert!(ours.contains("device_ws = \"127.0.0.1:8081\""));
        assert!(ours.contains("data_dir = \"/tmp/x/data\""));
        assert!(ours.contains(MASTER_KEY));
        let m = mosquitto_config(MosquittoTuning {
            allow_duplicate_messages: true,
        });
        assert!(m.contains("allow_duplicate_messages true"));
        assert!(m.contains("listener 9001 127.0.0.1\nprotocol websockets"));
        assert_eq!(MASTER_KEY.len(), 64);
        assert_eq!(TOKEN_SECRET.len(), 64);
    }
}
