//! The broker under test: the real `broker` library started in-process on fresh state, with a
//! fresh fleet master key and API token per run, on the addresses a rig asks for (port 0, so
//! runs never collide). Devices get their key from [`TestBroker::device_key`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use broker::config::Config;
use rand::RngCore;
use shared_protocol::keys::{MasterKey, derive_device_key};

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
    running: broker::Running,
    master: [u8; 32],
    api_token: String,
    advertise: IpAddr,
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
        let toml = config_toml(device_bind, api_bind, data_dir, &master, &api_token);
        let config = Config::from_str_with_env("hil-broker.toml", &toml, Vec::new())
            .map_err(|e| BrokerError::Config(e.to_string()))?;
        let running = broker::start(&config).await?;
        Ok(TestBroker {
            running,
            master,
            api_token,
            advertise,
        })
    }

    /// Base URL of the HTTP API (`http://a.b.c.d:port`).
    pub fn api_base(&self) -> String {
        format!("http://{}", self.running.http)
    }

    /// The API's bearer token.
    pub fn api_token(&self) -> &str {
        &self.api_token
    }

    /// The UDP endpoint as devices reach it.
    pub fn udp(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.running.comet.udp.port())
    }

    /// The device WebSocket endpoint as devices reach it.
    pub fn ws(&self) -> SocketAddr {
        SocketAddr::new(self.advertise, self.running.comet.device_ws.port())
    }

    /// The key the broker expects from device `id` (derived from this run's fleet master key).
    pub fn device_key(&self, id: u32) -> [u8; 32] {
        derive_device_key(&MasterKey(self.master), id).0
    }

    /// Drains and stops the broker.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

fn config_toml(
    device_bind: IpAddr,
    api_bind: IpAddr,
    data_dir: &Path,
    master: &[u8; 32],
    api_token: &str,
) -> String {
    let data_dir = data_dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        "[listen]\nhttp = \"{http}\"\ndevice_ws = \"{dev_ws}\"\napp_ws = \"{app_ws}\"\nudp = \"{udp}\"\n\
         [storage]\ndata_dir = \"{data_dir}\"\n\
         [security]\nfleet_master_key = \"{master}\"\napi_token = \"{api_token}\"\n\
         [timeouts]\nshutdown_drain_secs = 2\n",
        http = SocketAddr::new(api_bind, 0),
        dev_ws = SocketAddr::new(device_bind, 0),
        app_ws = SocketAddr::new(api_bind, 0),
        udp = SocketAddr::new(device_bind, 0),
        master = hex::encode(master),
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
            lo,
            lo,
            Path::new("/tmp/x \"y\""),
            &[7; 32],
            "0123456789abcdef0123",
        );
        let config = Config::from_str_with_env("t.toml", &text, Vec::new()).unwrap();
        assert_eq!(config.listen.udp, SocketAddr::new(lo, 0));
        assert_eq!(config.storage.data_dir, Path::new("/tmp/x \"y\""));
        assert_eq!(
            config.security.fleet_master_key.expose(),
            hex::encode([7u8; 32])
        );
    }
}
