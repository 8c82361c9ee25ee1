//! The broker's configuration: one TOML file, typed sections with a default for every key,
//! environment overrides, and validation that names the file, key and reason.
//!
//! Loaded once in `main` ([`Config::load`]) and passed down by value/reference; nothing else in
//! the crate reads files or the environment for settings. [`DEFAULT_TOML`] is the documented default
//! file printed by `broker config default`; a test keeps it equal to [`Config::default`].
//!
//! Environment overrides: `BROKER__SECTION__KEY=value` (e.g. `BROKER__LIMITS__OUTBOUND_QUEUE=128`,
//! `BROKER__SECURITY__DEVICE_KEYS__7=<hex>`). The value is read as the type of the key's default:
//! string keys take the text as is, other keys parse it as a TOML value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::terminal::IdProfile;

/// The documented default configuration (`broker config default`).
pub const DEFAULT_TOML: &str = include_str!("default_config.toml");

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "BROKER__";

pub use crate::secret::Secret;

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening sockets.
    pub listen: Listen,
    /// Where durable data lives.
    pub storage: Storage,
    /// ID profile.
    pub identity: Identity,
    /// Keys, secrets and the API token.
    pub security: Security,
    /// Size, connection and rate limits.
    pub limits: Limits,
    /// Offline message store.
    pub offline: Offline,
    /// Heartbeats and timeouts.
    pub timeouts: Timeouts,
    /// Device uploads.
    pub upload: Upload,
    /// The app backend that device requests are forwarded to.
    pub backend: Backend,
    /// Connection and request limits of the HTTP API listener.
    pub api: ApiConfig,
    /// Logging (owned by `crate::logging`).
    pub log: crate::logging::LogConfig,
    /// The web console (owned by `crate::console`).
    pub console: crate::console::ConsoleConfig,
    /// Cluster discovery and node lookup (docs/discovery.md).
    pub discovery: crate::discovery::DiscoveryConfig,
    /// TLS (wss) for the WebSocket endpoints.
    pub tls: crate::comet::tls::TlsConfig,
    /// Redis for the cluster roles (offline store, bindings, groups, online registry).
    pub redis: crate::store::redis::RedisConfig,
    /// RabbitMQ for the cluster roles (uploads, backend pushes).
    pub rabbitmq: crate::uploads::RabbitConfig,
    /// Cluster roles: msgbus links, online-registry heartbeats, RabbitMQ discovery.
    pub cluster: crate::cluster::ClusterConfig,
    /// `broker rmqkeeper`: the guarded RabbitMQ node and the health/metrics listener.
    pub rmqkeeper: crate::keeper::config::KeeperSection,
    /// PROXY protocol v2 on the WebSocket listeners (client addresses behind a load balancer).
    pub proxy_protocol: crate::comet::proxy::ProxyConfig,
    /// Test-only endpoints (the WebSocket conformance echo), all off by default.
    pub conformance: crate::comet::echo::ConformanceConfig,
    /// The device UDP socket's kernel buffers.
    pub udp: crate::comet::udp::UdpConfig,
}

/// `[listen]`: socket addresses (port 0 picks a free port).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// HTTP API.
    pub http: SocketAddr,
    /// Device WebSocket (binary frames).
    pub device_ws: SocketAddr,
    /// App WebSocket (JSON text frames).
    pub app_ws: SocketAddr,
    /// Device UDP.
    pub udp: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: ([127, 0, 0, 1], 8080).into(),
            device_ws: ([127, 0, 0, 1], 8081).into(),
            app_ws: ([127, 0, 0, 1], 8082).into(),
            udp: ([127, 0, 0, 1], 8083).into(),
        }
    }
}

/// `[storage]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// Directory for the embedded store and generated secrets (created if missing).
    pub data_dir: PathBuf,
    /// Write requests that may wait for the embedded store's writer; more writers (device
    /// sessions, the API) wait for a slot (`broker_store_writer_waits_total`).
    pub writer_queue: u32,
    /// Memory for the embedded store's page cache, in bytes (at least [`MIN_STORE_CACHE_BYTES`]).
    /// The cache fills up to the store file's size and then stays there, so the broker's memory
    /// grows after start by up to the smaller of the two (docs/storage.md).
    pub cache_bytes: u64,
}

/// The smallest `storage.cache_bytes` accepted: below one MiB the store rereads its index pages
/// from the file on most lookups.
pub const MIN_STORE_CACHE_BYTES: u64 = 1 << 20;

impl Storage {
    /// The embedded store's tuning from this section (the store never reads the configuration).
    /// `cache_bytes` was checked at load to fit a `usize`; a value that does not (only possible
    /// on a 32-bit target) is capped at `usize::MAX`.
    pub fn store_tuning(&self) -> crate::store::embedded::StoreTuning {
        crate::store::embedded::StoreTuning {
            writer_queue: self.writer_queue as usize,
            cache_bytes: usize::try_from(self.cache_bytes).unwrap_or(usize::MAX),
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: PathBuf::from("broker-data"),
            writer_queue: 512,
            // The store library's own default, so an unset key changes nothing.
            cache_bytes: 1 << 30,
        }
    }
}

/// `[identity]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Identity {
    /// `plug` or `signed` (docs/protocol.md section 1).
    pub profile: IdProfile,
}

pub use crate::secrets::Security;

pub use crate::terminal::QueueFullPolicy;

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest device packet accepted (UDP datagram or WebSocket binary message), 64..=1200.
    pub max_device_frame_bytes: u32,
    /// Largest app WebSocket text message, 256..=4096 (protocol `MAX_JSON_MESSAGE`).
    pub max_app_message_bytes: u32,
    /// Largest message payload (push, send, upload, command), bytes, 1..=1024 (protocol
    /// `MAX_PAYLOAD`).
    pub max_payload_bytes: u32,
    /// Connections accepted in total (all transports).
    pub max_connections: u32,
    /// Connections accepted per client IP.
    pub max_connections_per_ip: u32,
    /// Refused WebSocket connections answered with a close code at once; further refused
    /// connections are closed without an answer (so a flood holds at most
    /// `max_connections + max_pending_refusals` sockets).
    pub max_pending_refusals: u32,
    /// WebSocket connections in their handshake (upgrade and login) the broker waits on at
    /// once; one more closes another, silent ones first, never one whose bytes wait unread
    /// (`comet::pending`), so connections that never log in cannot fill `max_connections`
    /// (when it is below that).
    pub max_pending_handshakes: u32,
    /// Login attempts accepted per client IP per second.
    pub login_attempts_per_ip_per_sec: u32,
    /// Outbound events queued per session.
    pub outbound_queue: u32,
    /// What happens when that queue is full.
    pub queue_full_policy: QueueFullPolicy,
    /// Longest a WebSocket write of a live session may wait for the client to read,
    /// milliseconds; then the connection is dropped and counted.
    pub ws_write_timeout_ms: u64,
    /// Sends and Uploads one device session may have waiting to be applied; more get
    /// `Error QUEUE_FULL`.
    pub max_queued_frames_per_session: u32,
    /// Device Requests (HTTP calls to the backend) one session may have in flight; more get
    /// `Error QUEUE_FULL`.
    pub max_requests_in_flight_per_session: u32,
    /// Sustained rate of Send, Upload and Request frames a device terminal may send, per
    /// second; frames over it get `Error RATE_LIMITED`.
    pub frames_per_sec_per_terminal: u32,
    /// Burst of such frames allowed above that rate (the token bucket's size).
    pub frame_burst_per_terminal: u32,
}

impl Limits {
    /// The per-session work limits (validated non-zero at load; at least 1 regardless).
    pub fn work_limits(&self) -> crate::comet::budget::WorkLimits {
        crate::comet::budget::WorkLimits {
            queued_frames: (self.max_queued_frames_per_session as usize).max(1),
            requests_in_flight: (self.max_requests_in_flight_per_session as usize).max(1),
            frames_per_sec: self.frames_per_sec_per_terminal,
            frame_burst: self.frame_burst_per_terminal,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_device_frame_bytes: 1200,
            max_app_message_bytes: 4096,
            max_payload_bytes: 1024,
            max_connections: 10000,
            max_connections_per_ip: 100,
            max_pending_refusals: 64,
            max_pending_handshakes: 1000,
            login_attempts_per_ip_per_sec: 20,
            outbound_queue: 64,
            queue_full_policy: QueueFullPolicy::Disconnect,
            ws_write_timeout_ms: 10000,
            max_queued_frames_per_session: 64,
            max_requests_in_flight_per_session: 8,
            frames_per_sec_per_terminal: 100,
            frame_burst_per_terminal: 200,
        }
    }
}

pub use crate::terminal::EvictionPolicy;

/// `[offline]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Offline {
    /// Default lifetime of a stored message, seconds (a push may ask for less or more).
    pub ttl_secs: u64,
    /// Largest TTL a push may ask for, seconds.
    pub max_ttl_secs: u64,
    /// Messages kept per terminal.
    pub max_per_terminal: u32,
    /// What happens when a terminal's inbox is full.
    pub eviction: EvictionPolicy,
    /// How often expired messages are purged, seconds.
    pub purge_interval_secs: u64,
}

impl Default for Offline {
    fn default() -> Self {
        Offline {
            ttl_secs: 604800,
            max_ttl_secs: 2592000,
            max_per_terminal: 1000,
            eviction: EvictionPolicy::DropOldest,
            purge_interval_secs: 60,
        }
    }
}

/// `[timeouts]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// A connection must complete login within this, seconds.
    pub handshake_secs: u64,
    /// Heartbeat interval announced to devices, seconds.
    pub heartbeat_secs: u64,
    /// Silence after which a session is offline, seconds (greater than heartbeat_secs).
    pub session_secs: u64,
    /// Default timeout of an HTTP-to-device command, milliseconds.
    pub command_ms: u64,
    /// Largest timeout a command request may ask for, milliseconds.
    pub command_max_ms: u64,
    /// Time allowed to drain at shutdown, seconds.
    pub shutdown_drain_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake_secs: 10,
            heartbeat_secs: 30,
            session_secs: 90,
            command_ms: 10000,
            command_max_ms: 60000,
            shutdown_drain_secs: 10,
        }
    }
}

/// Checks a webhook or backend base URL: empty (off) or a plain `http://` URL with a host and
/// no query or fragment. `https://` is refused because the broker's HTTP client is built
/// without a TLS stack: such a URL would fail on every call; put a TLS-terminating proxy on
/// the path instead.
fn check_plain_http_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        return Ok(());
    }
    if url.starts_with("https://") {
        return Err(
            "https:// is not supported (the broker's HTTP client has no TLS); use an \
                    http:// URL, e.g. a local TLS-terminating proxy",
        );
    }
    if !url.starts_with("http://") {
        return Err("must be empty or start with http://");
    }
    match reqwest::Url::parse(url) {
        Ok(u) if u.host().is_some() && u.query().is_none() && u.fragment().is_none() => Ok(()),
        Ok(_) => Err("must be an http:// URL with a host and no query or fragment"),
        Err(_) => Err("is not a valid URL"),
    }
}

/// `[upload]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upload {
    /// If set (`http://...`; `https://` is refused at start-up: no TLS client), every upload is
    /// POSTed there as JSON, in order, at least once.
    pub webhook_url: String,
    /// Timeout of one webhook call, milliseconds.
    pub webhook_timeout_ms: u64,
    /// Delete spooled uploads every named consumer (webhook, RabbitMQ forwarder) has passed.
    pub spool_trim_consumed: bool,
    /// Spooled uploads kept at most; the oldest are dropped (counted) beyond it. 0 = no cap.
    pub spool_max_records: u64,
    /// Bytes of spooled uploads kept at most; the oldest are dropped beyond it. 0 = no cap.
    pub spool_max_bytes: u64,
    /// Spooled uploads older than this are dropped, seconds. 0 = no cap.
    pub spool_max_age_secs: u64,
}

impl Upload {
    /// The spool's retention limits from this section (the store never reads the
    /// configuration).
    pub fn spool_retention(&self) -> crate::store::embedded::SpoolRetention {
        crate::store::embedded::SpoolRetention {
            max_records: self.spool_max_records,
            max_bytes: self.spool_max_bytes,
            max_age_secs: self.spool_max_age_secs,
            trim_consumed: self.spool_trim_consumed,
        }
    }
}

impl Default for Upload {
    fn default() -> Self {
        Upload {
            webhook_url: String::new(),
            webhook_timeout_ms: 10000,
            spool_trim_consumed: true,
            spool_max_records: 1_000_000,
            spool_max_bytes: 1 << 30,
            spool_max_age_secs: 7 * 24 * 3600,
        }
    }
}

/// `[backend]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backend {
    /// Base URL (`http://...`; `https://` is refused at start-up: no TLS client) device Request
    /// frames are forwarded to (`base + path`); empty = off.
    pub device_request_url: String,
    /// Timeout of one forwarded request, milliseconds.
    pub timeout_ms: u64,
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            device_request_url: String::new(),
            timeout_ms: 10000,
        }
    }
}

pub use crate::api::listener::ApiConfig;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key has a bad value (or is unknown).
    #[error("{file}: key `{key}`{origin}: {reason}")]
    Invalid {
        /// The file (or `<defaults>`).
        file: String,
        /// Dotted key path.
        key: String,
        /// ` (from BROKER__...)` when the value came from the environment.
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

/// Every configuration key that holds a secret, as `section.key` (`security.device_keys` is a
/// table of them). [`Config::to_redacted_toml`] hides their values; the `Secret` type hides them
/// from `Debug`.
pub const SECRET_KEYS: &[&str] = &[
    "security.fleet_master_key",
    "security.device_keys",
    "security.cookie_secret",
    "security.token_secret",
    "security.api_token",
    "discovery.zk_auth",
    "cluster.link_key",
    "rabbitmq.password",
    "redis.master_password",
    "rmqkeeper.mgmt_password",
];

/// What a redacted secret shows instead of its value.
pub const REDACTED: &str = "<redacted>";

/// `url` with the password of its user-info part (`scheme://user:password@host`) replaced by
/// [`REDACTED`]; any other text unchanged.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:{REDACTED}{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

fn redact_value(v: &mut toml::Value) {
    match v {
        toml::Value::String(s) if !s.is_empty() => *s = REDACTED.to_string(),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| redact_value(v)),
        toml::Value::Array(a) => a.iter_mut().for_each(redact_value),
        _ => {}
    }
}

fn redact_urls(v: &mut toml::Value) {
    match v {
        toml::Value::String(s) => *s = redact_url_password(s),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| redact_urls(v)),
        toml::Value::Array(a) => a.iter_mut().for_each(redact_urls),
        _ => {}
    }
}

impl Config {
    /// The router's settings from `[identity]`, `[limits]`, `[offline]`, `[backend]` and
    /// `[upload]` (the router itself never reads the configuration).
    pub fn router_settings(&self) -> crate::router::RouterSettings {
        use std::time::Duration;
        crate::router::RouterSettings {
            profile: self.identity.profile,
            outbound_queue: self.limits.outbound_queue as usize,
            queue_full_policy: self.limits.queue_full_policy,
            default_ttl: Duration::from_secs(self.offline.ttl_secs),
            max_ttl: Duration::from_secs(self.offline.max_ttl_secs),
            max_payload: self.limits.max_payload_bytes as usize,
            max_replay: self.offline.max_per_terminal as usize,
            purge_interval: Duration::from_secs(self.offline.purge_interval_secs),
            backend_url: self.backend.device_request_url.clone(),
            backend_timeout: Duration::from_millis(self.backend.timeout_ms),
            webhook_url: self.upload.webhook_url.clone(),
            webhook_timeout: Duration::from_millis(self.upload.webhook_timeout_ms),
            offer_on_store: true,
        }
    }

    /// What `broker rmqkeeper` reads from the file: `[rmqkeeper]`, `[discovery]` and
    /// `cluster.rabbit_root`.
    pub fn keeper_sources(&self) -> crate::keeper::args::KeeperSources<'_> {
        crate::keeper::args::KeeperSources {
            keeper: &self.rmqkeeper,
            discovery: &self.discovery,
            rabbit_root: &self.cluster.rabbit_root,
        }
    }

    /// The HTTP API's settings from `[timeouts]` and `[console]` (the API never reads the
    /// configuration itself).
    pub fn api_settings(&self) -> crate::api::ApiSettings {
        use std::time::Duration;
        crate::api::ApiSettings {
            command_default: Duration::from_millis(self.timeouts.command_ms),
            command_max: Duration::from_millis(self.timeouts.command_max_ms),
            console: self.console.enabled,
        }
    }

    /// The comet's settings from `[identity]`, `[timeouts]`, `[limits]`, `[udp]` and
    /// `[proxy_protocol]` (the comet itself never reads the configuration). The proxy section
    /// was validated at load.
    pub fn comet_settings(&self) -> crate::comet::Settings {
        use shared_protocol::limits::{MAX_JSON_MESSAGE, MAX_PACKET, MAX_PAYLOAD};
        use std::time::Duration;
        let l = &self.limits;
        crate::comet::Settings {
            profile: self.identity.profile,
            admission: crate::comet::Admission {
                max_connections: l.max_connections,
                max_connections_per_ip: l.max_connections_per_ip,
                max_pending_refusals: l.max_pending_refusals,
                max_pending_handshakes: l.max_pending_handshakes,
                login_attempts_per_ip_per_sec: l.login_attempts_per_ip_per_sec,
            },
            proxy: self.proxy_protocol.load().ok().flatten(),
            handshake: Duration::from_secs(self.timeouts.handshake_secs),
            heartbeat_secs: u16::try_from(self.timeouts.heartbeat_secs).unwrap_or(u16::MAX),
            session_timeout_secs: u16::try_from(self.timeouts.session_secs).unwrap_or(u16::MAX),
            max_payload: u16::try_from(l.max_payload_bytes)
                .unwrap_or(u16::MAX)
                .min(MAX_PAYLOAD as u16),
            max_device_packet: (l.max_device_frame_bytes as usize).min(MAX_PACKET),
            max_app_message: (l.max_app_message_bytes as usize).min(MAX_JSON_MESSAGE),
            ws_write_timeout: Duration::from_millis(l.ws_write_timeout_ms),
            work: l.work_limits(),
            udp: self.udp,
        }
    }

    /// The configuration as TOML (what `broker config check` prints), with every secret in
    /// [`SECRET_KEYS`] and every password inside a URL replaced by [`REDACTED`]; an unset
    /// secret stays an empty string, so the output shows which are set.
    pub fn to_redacted_toml(&self) -> String {
        let mut doc = toml::Value::try_from(self).expect("the configuration serialises to TOML");
        redact_urls(&mut doc);
        for key in SECRET_KEYS {
            let (section, name) = key.split_once('.').expect("section.key");
            if let Some(v) = doc.get_mut(section).and_then(|s| s.get_mut(name)) {
                redact_value(v);
            }
        }
        toml::to_string_pretty(&doc).expect("a TOML value renders")
    }

    /// Loads `file` (or the defaults), applies `BROKER__*` variables from `env`, and validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let name = file.map_or_else(|| "<defaults>".to_string(), |p| p.display().to_string());
        let text = match file {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                file: name.clone(),
                source,
            })?,
            None => String::new(),
        };
        Config::from_str_with_env(&name, &text, env)
    }

    /// Like [`Config::load`] with the file's text given (`name` is used in errors).
    pub fn from_str_with_env(
        name: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    file: name.to_string(),
                    message: e.to_string(),
                })?;
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        let mut from_env: BTreeMap<String, String> = BTreeMap::new();
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            set_path(&mut table, &defaults, &path, &value);
            from_env.insert(path.join("."), var);
        }
        let origin_of = |key: &str| {
            from_env
                .iter()
                .find(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
                .map(|(_, v)| format!(" (from {v})"))
                .unwrap_or_default()
        };
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Invalid {
                    file: name.to_string(),
                    origin: origin_of(&key),
                    key,
                    reason: e.into_inner().message().to_string(),
                }
            })?;
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                file: name.to_string(),
                origin: origin_of(&key),
                key,
                reason,
            })?;
        Ok(config)
    }

    /// Checks values that types alone cannot; returns the offending key and why.
    fn validate(&self) -> Result<(), (String, String)> {
        fn err<T>(key: &str, reason: impl Into<String>) -> Result<T, (String, String)> {
            Err((key.to_string(), reason.into()))
        }
        let s = &self.security;
        for (key, secret) in [
            ("security.fleet_master_key", &s.fleet_master_key),
            ("security.token_secret", &s.token_secret),
        ] {
            if !secret.is_empty() && parse_key_hex(secret.expose()).is_none() {
                return err(key, "must be 64 hex digits (32 bytes) or empty");
            }
        }
        for (id, key) in &s.device_keys {
            let k = format!("security.device_keys.{id}");
            if matches!(crate::terminal::parse_id_bits(id), None | Some(0)) {
                return err(&k, "the key name must be a non-zero 32-bit device id");
            }
            if parse_key_hex(key.expose()).is_none() {
                return err(&k, "must be 64 hex digits (32 bytes)");
            }
        }
        if !s.api_token.is_empty() && s.api_token.expose().len() < 16 {
            return err(
                "security.api_token",
                "must be at least 16 characters or empty",
            );
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return err("storage.data_dir", "must not be empty");
        }
        let cache = self.storage.cache_bytes;
        if cache < MIN_STORE_CACHE_BYTES || usize::try_from(cache).is_err() {
            return err(
                "storage.cache_bytes",
                format!(
                    "must be at least {MIN_STORE_CACHE_BYTES} (1 MiB) and fit this machine's memory"
                ),
            );
        }
        let l = &self.limits;
        if !(64..=1200).contains(&l.max_device_frame_bytes) {
            return err(
                "limits.max_device_frame_bytes",
                "must be within 64..=1200 (protocol MAX_PACKET)",
            );
        }
        if !(256..=4096).contains(&l.max_app_message_bytes) {
            return err(
                "limits.max_app_message_bytes",
                "must be within 256..=4096 (protocol MAX_JSON_MESSAGE)",
            );
        }
        if !(1..=1024).contains(&l.max_payload_bytes) {
            return err(
                "limits.max_payload_bytes",
                "must be within 1..=1024 (protocol MAX_PAYLOAD)",
            );
        }
        for (key, v) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_ip", l.max_connections_per_ip),
            ("limits.max_pending_refusals", l.max_pending_refusals),
            ("limits.max_pending_handshakes", l.max_pending_handshakes),
            ("storage.writer_queue", self.storage.writer_queue),
            (
                "limits.login_attempts_per_ip_per_sec",
                l.login_attempts_per_ip_per_sec,
            ),
            ("limits.outbound_queue", l.outbound_queue),
            (
                "limits.max_queued_frames_per_session",
                l.max_queued_frames_per_session,
            ),
            (
                "limits.max_requests_in_flight_per_session",
                l.max_requests_in_flight_per_session,
            ),
            (
                "limits.frames_per_sec_per_terminal",
                l.frames_per_sec_per_terminal,
            ),
            (
                "limits.frame_burst_per_terminal",
                l.frame_burst_per_terminal,
            ),
            ("offline.max_per_terminal", self.offline.max_per_terminal),
        ] {
            if v == 0 {
                return err(key, "must be greater than 0");
            }
        }
        let o = &self.offline;
        if o.ttl_secs == 0 || o.max_ttl_secs < o.ttl_secs {
            return err(
                "offline.ttl_secs",
                "must be greater than 0 and at most offline.max_ttl_secs",
            );
        }
        if o.purge_interval_secs == 0 {
            return err("offline.purge_interval_secs", "must be greater than 0");
        }
        let t = &self.timeouts;
        if t.handshake_secs == 0 {
            return err("timeouts.handshake_secs", "must be greater than 0");
        }
        if t.heartbeat_secs == 0 || t.heartbeat_secs > u64::from(u16::MAX) {
            return err("timeouts.heartbeat_secs", "must be within 1..=65535");
        }
        if t.session_secs <= t.heartbeat_secs || t.session_secs > u64::from(u16::MAX) {
            return err(
                "timeouts.session_secs",
                "must be greater than timeouts.heartbeat_secs and at most 65535",
            );
        }
        if t.command_ms == 0 || t.command_ms > t.command_max_ms {
            return err(
                "timeouts.command_ms",
                "must be greater than 0 and at most timeouts.command_max_ms",
            );
        }
        for (key, url) in [
            ("upload.webhook_url", &self.upload.webhook_url),
            (
                "backend.device_request_url",
                &self.backend.device_request_url,
            ),
        ] {
            if let Err(reason) = check_plain_http_url(url) {
                return err(key, reason);
            }
        }
        if self.upload.webhook_timeout_ms == 0 {
            return err("upload.webhook_timeout_ms", "must be greater than 0");
        }
        if self.backend.timeout_ms == 0 {
            return err("backend.timeout_ms", "must be greater than 0");
        }
        for (key, v) in [
            (
                "limits.ws_write_timeout_ms",
                self.limits.ws_write_timeout_ms,
            ),
            ("api.max_connections", u64::from(self.api.max_connections)),
            (
                "api.header_read_timeout_ms",
                self.api.header_read_timeout_ms,
            ),
            ("api.body_timeout_ms", self.api.body_timeout_ms),
            ("api.max_body_bytes", u64::from(self.api.max_body_bytes)),
        ] {
            if v == 0 {
                return err(key, "must be greater than 0");
            }
        }
        self.discovery.validate()?;
        self.tls.validate()?;
        self.redis.validate().map_err(|e| match e {
            crate::store::redis::RedisConnError::Config(key, reason) => {
                (format!("redis.{key}"), reason)
            }
            other => ("redis".to_string(), other.to_string()),
        })?;
        let r = &self.rabbitmq;
        for (i, u) in r.urls.iter().enumerate() {
            if !(u.starts_with("amqp://") || u.starts_with("amqps://")) {
                return err(&format!("rabbitmq.urls[{i}]"), "must be an amqp:// URL");
            }
        }
        for (key, v) in [
            ("rabbitmq.confirm_timeout_ms", r.confirm_timeout_ms),
            ("rabbitmq.connect_timeout_ms", r.connect_timeout_ms),
            ("rabbitmq.retry_interval_ms", r.retry_interval_ms),
        ] {
            if v == 0 {
                return err(key, "must be greater than 0");
            }
        }
        if r.forward_batch == 0 {
            return err("rabbitmq.forward_batch", "must be greater than 0");
        }
        if r.upload_exchange.is_empty() || r.upload_queue.is_empty() {
            return err(
                "rabbitmq.upload_exchange",
                "upload_exchange and upload_queue must be set",
            );
        }
        self.cluster.validate()?;
        self.conformance.ws_echo()?;
        self.proxy_protocol.load()?;
        self.udp.validate()?;
        Ok(())
    }
}

pub use crate::secrets::parse_key_hex;

/// Sets `path` in `table` to `raw`, typed like the default at that path (strings stay strings).
fn set_path(table: &mut toml::Table, defaults: &toml::Table, path: &[String], raw: &str) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = table;
    let mut d = Some(defaults);
    for p in parents {
        d = d.and_then(|d| d.get(p)).and_then(toml::Value::as_table);
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("just made a table");
    }
    let default = d.and_then(|d| d.get(last));
    let value = match default {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_string()),
        _ => parse_toml_value(raw).unwrap_or_else(|| toml::Value::String(raw.to_string())),
    };
    t.insert(last.clone(), value);
}

fn parse_toml_value(raw: &str) -> Option<toml::Value> {
    let t: toml::Table = format!("v = {raw}").parse().ok()?;
    t.get("v").cloned()
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn passwords_inside_urls_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url_password("redis://app:hunter2@10.0.0.5:6379/0"),
            "redis://app:<redacted>@10.0.0.5:6379/0"
        );
        assert_eq!(
            redact_url_password("amqp://guest:p%40ss@h:5672/%2f"),
            "amqp://guest:<redacted>@h:5672/%2f"
        );
        assert_eq!(
            redact_url_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        // A user without a password, and an `@` after the authority, are left alone.
        assert_eq!(redact_url_password("redis://app@h:1"), "redis://app@h:1");
        assert_eq!(redact_url_password("http://h:1/a@b:c"), "http://h:1/a@b:c");
        assert_eq!(redact_url_password("plain text"), "plain text");
    }

    #[test]
    fn check_output_is_toml_without_any_secret_and_loads_back() {
        let toml_in = r#"
            [security]
            fleet_master_key = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11"
            token_secret = "bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22"
            api_token = "sentinel-api-token"
            [security.device_keys]
            "7" = "cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33cc33"
            [discovery]
            zk_auth = "zkuser:sentinel-zk"
            [cluster]
            link_key = "dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44dd44"
            [rabbitmq]
            urls = ["amqp://guest:sentinel-amqp@127.0.0.1:5672/%2f"]
            password = "sentinel-rabbit"
            [redis]
            url = "redis://app:sentinel-redis@127.0.0.1:6379/0"
            master_password = "sentinel-master"
        "#;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broker.toml");
        std::fs::write(&file, toml_in).unwrap();
        let c = Config::load(Some(&file), Vec::<(String, String)>::new()).unwrap();
        let out = c.to_redacted_toml();
        for secret in [
            "aa11",
            "bb22",
            "cc33",
            "dd44",
            "sentinel-api-token",
            "sentinel-zk",
            "sentinel-amqp",
            "sentinel-rabbit",
            "sentinel-redis",
            "sentinel-master",
        ] {
            assert!(!out.contains(secret), "{secret} printed:\n{out}");
        }
        assert!(out.contains("[security]"), "{out}");
        assert!(
            out.contains("redis://app:<redacted>@127.0.0.1:6379/0"),
            "{out}"
        );
        // The printed TOML is a valid configuration again (secrets aside).
        let back: Config = toml::from_str(&out).expect("check output parses as a config");
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.limits, c.limits);
        assert_eq!(back.security.api_token.expose(), REDACTED);
        assert!(back.security.cookie_secret.is_empty(), "unset stays empty");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn the_stores_defaults_are_the_storage_sections_defaults() {
        assert_eq!(
            Storage::default().store_tuning(),
            crate::store::embedded::StoreTuning::default()
        );
    }

    #[test]
    fn documented_default_equals_code_default() {
        let parsed = Config::from_str_with_env("default", DEFAULT_TOML, no_env()).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn every_default_key_is_documented_with_a_comment() {
        let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
        let mut section = String::new();
        let mut documented = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = s.to_string();
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.split('=').next().unwrap().trim();
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "key `{section}.{key}` has no comment line above it"
            );
            documented.push(format!("{section}.{key}"));
        }
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for (section, table) in &defaults {
            for key in table.as_table().unwrap().keys() {
                let full = format!("{section}.{key}");
                let has_subtable = defaults[section][key].is_table();
                if !has_subtable {
                    assert!(
                        documented.contains(&full),
                        "`{full}` missing from default_config.toml"
                    );
                }
            }
        }
    }

    #[test]
    fn https_and_malformed_http_urls_are_refused_naming_the_key() {
        for (section, key) in [("upload", "webhook_url"), ("backend", "device_request_url")] {
            for (url, reason) in [
                ("https://backend.example/api", "https:// is not supported"),
                (
                    "ftp://backend.example/",
                    "must be empty or start with http://",
                ),
                ("http://", "is not a valid URL"),
                ("http://h/api?k=1", "no query or fragment"),
                ("http://h/api#f", "no query or fragment"),
            ] {
                let toml = format!("[{section}]\n{key} = \"{url}\"\n");
                let e = Config::from_str_with_env("u.toml", &toml, no_env()).unwrap_err();
                let msg = e.to_string();
                assert!(msg.contains(&format!("`{section}.{key}`")), "{url}: {msg}");
                assert!(msg.contains(reason), "{url}: {msg}");
            }
            let toml = format!("[{section}]\n{key} = \"http://127.0.0.1:8080/api\"\n");
            assert!(Config::from_str_with_env("u.toml", &toml, no_env()).is_ok());
        }
    }

    #[test]
    fn a_store_cache_under_one_mib_is_refused_naming_the_key_and_one_mib_is_taken() {
        for bad in [0, MIN_STORE_CACHE_BYTES - 1] {
            let toml = format!("[storage]\ncache_bytes = {bad}\n");
            let e = Config::from_str_with_env("a.toml", &toml, no_env()).unwrap_err();
            assert!(e.to_string().contains("`storage.cache_bytes`"), "{e}");
        }
        let toml = format!("[storage]\ncache_bytes = {MIN_STORE_CACHE_BYTES}\n");
        let c = Config::from_str_with_env("a.toml", &toml, no_env()).unwrap();
        assert_eq!(c.storage.cache_bytes, MIN_STORE_CACHE_BYTES);
        assert_eq!(Config::default().storage.cache_bytes, 1 << 30);
    }

    #[test]
    fn zero_api_and_ws_write_limits_are_refused_naming_the_key() {
        for (section, key) in [
            ("api", "max_connections"),
            ("api", "header_read_timeout_ms"),
            ("api", "body_timeout_ms"),
            ("api", "max_body_bytes"),
            ("limits", "ws_write_timeout_ms"),
        ] {
            let toml = format!("[{section}]\n{key} = 0\n");
            let e = Config::from_str_with_env("a.toml", &toml, no_env()).unwrap_err();
            assert!(e.to_string().contains(&format!("`{section}.{key}`")), "{e}");
        }
    }

    #[test]
    fn bad_value_names_file_key_and_reason() {
        let e =
            Config::from_str_with_env("b.toml", "[limits]\noutbound_queue = \"many\"\n", no_env())
                .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("b.toml: key `limits.outbound_queue`"),
            "{msg}"
        );
        assert!(msg.contains("invalid type"), "{msg}");

        let e = Config::from_str_with_env("b.toml", "[limits]\noutbound_queue = 0\n", no_env())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.toml: key `limits.outbound_queue`: must be greater than 0"
        );

        let e = Config::from_str_with_env(
            "b.toml",
            "[limits]\nqueue_full_policy = \"explode\"\n",
            no_env(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("key `limits.queue_full_policy`"),
            "{e}"
        );

        let e = Config::from_str_with_env("b.toml", "[limits]\nmax_conections = 3\n", no_env())
            .unwrap_err();
        assert!(
            e.to_string().contains("unknown field `max_conections`"),
            "{e}"
        );

        let e =
            Config::from_str_with_env("b.toml", "[security]\ntoken_secret = \"abc\"\n", no_env())
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.toml: key `security.token_secret`: must be 64 hex digits (32 bytes) or empty"
        );
        for (text, expected) in [
            (
                "[limits]\nmax_app_message_bytes = 16384\n",
                "b.toml: key `limits.max_app_message_bytes`: must be within 256..=4096 (protocol MAX_JSON_MESSAGE)",
            ),
            (
                "[limits]\nmax_payload_bytes = 2048\n",
                "b.toml: key `limits.max_payload_bytes`: must be within 1..=1024 (protocol MAX_PAYLOAD)",
            ),
        ] {
            let e = Config::from_str_with_env("b.toml", text, no_env()).unwrap_err();
            assert_eq!(e.to_string(), expected);
        }
        let e = Config::from_str_with_env("b.toml", "[limits\n", no_env()).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }));
    }

    #[test]
    fn env_overrides_apply_and_are_named_in_errors() {
        let env = vec![
            (
                "BROKER__LIMITS__OUTBOUND_QUEUE".to_string(),
                "128".to_string(),
            ),
            (
                "BROKER__LISTEN__HTTP".to_string(),
                "127.0.0.1:9000".to_string(),
            ),
            (
                "BROKER__SECURITY__API_TOKEN".to_string(),
                "1234567890123456".to_string(),
            ),
            (
                "BROKER__IDENTITY__PROFILE".to_string(),
                "signed".to_string(),
            ),
            (
                "BROKER__SECURITY__DEVICE_KEYS__7".to_string(),
                "11".repeat(32),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::from_str_with_env("f.toml", "[limits]\noutbound_queue = 5\n", env).unwrap();
        assert_eq!(c.limits.outbound_queue, 128);
        assert_eq!(c.listen.http, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.security.api_token.expose(), "1234567890123456");
        assert_eq!(c.identity.profile, IdProfile::Signed);
        assert_eq!(c.security.device_keys["7"].expose(), "11".repeat(32));

        let env = vec![(
            "BROKER__TIMEOUTS__SESSION_SECS".to_string(),
            "5".to_string(),
        )];
        let e = Config::from_str_with_env("f.toml", "", env).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "f.toml: key `timeouts.session_secs` (from BROKER__TIMEOUTS__SESSION_SECS):"
            ),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut c = Config::default();
        c.security.api_token = Secret::new("super-secret-token-value");
        c.security
            .device_keys
            .insert("7".into(), Secret::new("ab".repeat(32)));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("super-secret"), "{dbg}");
        assert!(!dbg.contains("abab"), "{dbg}");
        assert!(dbg.contains("Secret(<redacted>)"));
    }

    #[test]
    fn discovery_section_is_validated_with_its_key() {
        let e =
            Config::from_str_with_env("c.toml", "[discovery]\nmode = \"zookeeper\"\n", no_env())
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.toml: key `discovery.node_id`: must be set in zookeeper mode"
        );
        let c = Config::from_str_with_env(
            "c.toml",
            "[discovery]\nmode = \"zookeeper\"\nnode_id = \"comet-a\"\n",
            vec![(
                "BROKER__DISCOVERY__ZK_SERVERS".to_string(),
                "zk1:2181,zk2:2181".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(c.discovery.zk_servers, "zk1:2181,zk2:2181");
    }

    #[test]
    fn load_reports_missing_file() {
        let e = Config::load(Some(Path::new("/nonexistent/broker.toml")), no_env()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/broker.toml: cannot read"),
            "{e}"
        );
    }
}
