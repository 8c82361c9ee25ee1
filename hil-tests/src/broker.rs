//! The broker under test: the real `broker` library started in-process on fresh state, with a
//! fresh fleet master key and API token per run, on the addresses a rig asks for (port 0, so
//! runs never collide). Devices get their key from [`TestBroker::device_key`].
//! [`TestBroker::restart`] stops it and starts it again on the same ports, data and secrets (a
//! broker restart in the middle of a scenario).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use broker::config::Config;
use rand::RngCore;
use shared_protocol::ids::IdProfile;
use shared_protocol::keys::{MasterKey, derive_device_key};

/// Each session's outbound queue on a test broker (`limits.outbound_queue`, default 64): the
/// host TAP board's upload queue (`plug_app::app::UPLOADS`, 256 with `deep-upload-queue`) may be
/// answered all at once after a reconnect, and answers beyond the send window wait in this
/// queue, so it must hold at least as many (a full one ends the session).
pub const OUTBOUND_QUEUE: u32 = 256;

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The generated configuration was refused (a bug in this module).
    #[error("broker configuration: {0}")]
    Config(String),
    /// The broker could not start.
    #[error("broker start: {0}")]
    Start(#[from] broker::StartError),
    /// The data directory could not be prepared.
    #[error("broker data dir {dir}: {source}")]
    DataDir {
        /// The folder.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running broker and what a test needs to talk to it.
pub struct TestBroker {
    running: Option<broker::Running>,
    keys: Keys,
    advertise: IpAddr,
    data_dir: PathBuf,
    /// The addresses it listens on (ports fixed after the first start): HTTP, device WS, app
    /// WS, UDP.
    bound: [SocketAddr; 4],
    /// Config lines after the generated `[timeouts]` table (heartbeats, then `[identity]`).
    extra: String,
}

impl TestBroker {
    /// Starts a broker whose device endpoints (UDP, WebSocket) bind `device_bind:0`, with its
    /// HTTP API on `api_bind:0`, storing into `data_dir` (emptied first). Devices are told to
    /// reach it at `advertise` (e.g. 10.0.2.2 from inside QEMU).
    pub async fn start(
        device_bind: IpAddr,
        api_bind: IpAddr,
        advertise: IpAddr,
        data_dir: &Path,
    ) -> Result<TestBroker, BrokerError> {
        TestBroker::start_with(device_bind, api_bind, advertise, data_dir, None).await
    }

    /// [`TestBroker::start`] with heartbeats every `heartbeat_secs` (sessions offline after
    /// 2.5 intervals of silence) instead of the broker's default; the fleet scenarios use short
    /// ones so a board whose shutdown kick was lost notices within seconds.
    pub async fn start_with(
        device_bind: IpAddr,
        api_bind: IpAddr,
        advertise: IpAddr,
        data_dir: &Path,
        heartbeat_secs: Option<u64>,
    ) -> Result<TestBroker, BrokerError> {
        TestBroker::start_with_profile(
            device_bind,
            api_bind,
            advertise,
            data_dir,
            heartbeat_secs,
            IdProfile::Plug,
        )
        .await
    }

    /// [`TestBroker::start_with`] under ID profile `profile` (docs/configuration.md
    /// `[identity]`; the broker's default is `plug`).
    pub async fn start_with_profile(
        device_bind: IpAddr,
        api_bind: IpAddr,
        advertise: IpAddr,
        data_dir: &Path,
        heartbeat_secs: Option<u64>,
        profile: IdProfile,
    ) -> Result<TestBroker, BrokerError> {
        if data_dir.exists() {
            std::fs::remove_dir_all(data_dir).map_err(|source| BrokerError::DataDir {
                dir: data_dir.to_path_buf(),
                source,
            })?;
        }
        let mut rng = rand::rng();
        let mut master = [0u8; 32];
        rng.fill_bytes(&mut master);
        let mut token = [0u8; 24];
        rng.fill_bytes(&mut token);
        let api_token = hex::encode(token);
        let mut token_secret = [0u8; 32];
        rng.fill_bytes(&mut token_secret);
        let keys = Keys {
            master,
            api_token,
            token_secret,
        };
        let any = [
            SocketAddr::new(api_bind, 0),
            SocketAddr::new(device_bind, 0),
            SocketAddr::new(api_bind, 0),
            SocketAddr::new(device_bind, 0),
        ];
        let mut extra = heartbeat_secs
            .map(|h| format!("heartbeat_secs = {h}\nsession_secs = {}\n", h * 5 / 2 + 1))
            .unwrap_or_default();
        // After the `[timeouts]` lines above, so each opens its own table.
        extra.push_str(&format!("[limits]\noutbound_queue = {OUTBOUND_QUEUE}\n"));
        if profile == IdProfile::Signed {
            extra.push_str("[identity]\nprofile = \"signed\"\n");
        }
        let running = start_on(any, data_dir, &keys, &extra).await?;
        let bound = [
            running.http,
            running.comet.device_ws,
            running.comet.app_ws,
            running.comet.udp,
        ];
        Ok(TestBroker {
            running: Some(running),
            keys,
            advertise,
            data_dir: data_dir.to_path_buf(),
            bound,
            extra,
        })
    }

    fn running(&self) -> &broker::Running {
        self.running
            .as_ref()
            .expect("a TestBroker is running between its methods")
    }

    /// Stops the broker (drain, as on SIGTERM) and starts it again on the same ports, data
    /// folder and secrets. Returns how long it was away.
    pub async fn restart(&mut self) -> Result<std::time::Duration, BrokerError> {
        let started = std::time::Instant::now();
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        // The ports were just released; the kernel may still hold them for a moment.
        let mut tries = 0;
        let running = loop {
            match start_on(self.bound, &self.data_dir, &self.keys, &self.extra).await {
                Ok(r) => break r,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("hil: broker restart: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.running = Some(running);
        Ok(started.elapsed())
    }

    /// The app WebSocket endpoint as bound (`ws://a.b.c.d:port/`; phones run next to the test).
    pub fn app_ws_url(&self) -> String {
        let app = self.running().comet.app_ws;
        let app = if app.ip().is_unspecified() {
            SocketAddr::new(self.advertise, app.port())
        } else {
            app
        };
        format!("ws://{app}/")
    }

    /// An app token for phone `id`, valid for a day (signed with this run's token secret).
    pub fn phone_token(&self, id: u32) -> String {
        let claims = shared_protocol::json::Claims {
            address: shared_protocol::ids::Address {
                kind: shared_protocol::ids::Kind::Phone,
                id,
            },
            exp: broker::router::now_ms() / 1000 + 86_400,
        };
        shared_protocol::json::mint(&self.keys.token_secret, &claims)
    }

    /// Base URL of the HTTP API (`http://a.b.c.d:port`).
    pub fn api_base(&self) -> String {
        format!("http://{}", self.running().http)
    }

    /// The API's bearer token.
    pub fn api_token(&self) -> &str {
        &self.keys.api_token
    }

    /// The UDP endpoint as devices reach it.
    pub fn udp(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.running().comet.udp.port())
    }

    /// The device WebSocket endpoint as devices reach it.
    pub fn ws(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.running().comet.device_ws.port())
    }

    /// The UDP endpoint as bound (where a relay in front of it forwards to).
    pub fn udp_bound(&self) -> SocketAddr {
        let udp = self.running().comet.udp;
        if udp.ip().is_unspecified() {
            SocketAddr::new(self.advertise, udp.port())
        } else {
            udp
        }
    }

    /// The key the broker expects from device `id` (derived from this run's fleet master key).
    pub fn device_key(&self, id: u32) -> [u8; 32] {
        derive_device_key(&MasterKey(self.keys.master), id).0
    }

    /// Drains and stops the broker.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

/// The secrets of one test broker (fresh per run, kept over restarts).
struct Keys {
    master: [u8; 32],
    api_token: String,
    token_secret: [u8; 32],
}

async fn start_on(
    addrs: [SocketAddr; 4],
    data_dir: &Path,
    keys: &Keys,
    extra: &str,
) -> Result<broker::Running, BrokerError> {
    let toml = config_toml(addrs, data_dir, keys) + extra;
    let config = Config::from_str_with_env("hil-broker.toml", &toml, Vec::new())
        .map_err(|e| BrokerError::Config(e.to_string()))?;
    Ok(broker::start(&config).await?)
}

/// `addrs`: HTTP, device WebSocket, app WebSocket, UDP.
fn config_toml(addrs: [SocketAddr; 4], data_dir: &Path, keys: &Keys) -> String {
    let data_dir = data_dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        "[listen]\nhttp = \"{http}\"\ndevice_ws = \"{dev_ws}\"\napp_ws = \"{app_ws}\"\nudp = \"{udp}\"\n\
         [storage]\ndata_dir = \"{data_dir}\"\n\
         [security]\nfleet_master_key = \"{master}\"\napi_token = \"{api_token}\"\n\
         token_secret = \"{token_secret}\"\n\
         [timeouts]\nshutdown_drain_secs = 2\n",
        http = addrs[0],
        dev_ws = addrs[1],
        app_ws = addrs[2],
        udp = addrs[3],
        master = hex::encode(keys.master),
        api_token = keys.api_token,
        token_secret = hex::encode(keys.token_secret),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn generated_config_is_accepted_by_the_broker() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let text = config_toml(
            [SocketAddr::new(lo, 0); 4],
            Path::new("/tmp/x \"y\""),
            &Keys {
                master: [7; 32],
                api_token: "0123456789abcdef0123".into(),
                token_secret: [9; 32],
            },
        );
        let config = Config::from_str_with_env("t.toml", &text, Vec::new()).unwrap();
        assert_eq!(config.listen.udp, SocketAddr::new(lo, 0));
        assert_eq!(config.storage.data_dir, Path::new("/tmp/x \"y\""));
        assert_eq!(
            config.security.fleet_master_key.expose(),
            hex::encode([7u8; 32])
        );
        assert_eq!(
            config.security.token_secret.expose(),
            hex::encode([9u8; 32])
        );
    }
}
