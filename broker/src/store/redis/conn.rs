//! [`RedisConn`]: one shared, reconnecting connection (redis's `ConnectionManager`, multiplexed)
//! to a single Redis or to the current Sentinel master.
//!
//! With Sentinel, a connection-level error (refused, dropped, I/O, timeout, `READONLY` from a
//! demoted master) makes the next call ask the sentinels for the master again. The failed call
//! itself is not retried (a script may have run before the connection dropped); the caller sees
//! [`StoreError::Backend`] and may retry.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Client, RedisError, RedisResult};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::store::StoreError;

/// Where Redis is and how to talk to it (a `[redis]` config section).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// A single Redis: `redis://[user:password@]host:port/db`. Empty when `sentinels` is used.
    pub url: String,
    /// Sentinel addresses (`redis://host:26379`); non-empty selects Sentinel mode.
    pub sentinels: Vec<String>,
    /// The monitored master's name (Sentinel mode).
    pub master_name: String,
    /// Password of the master (Sentinel mode; in `url` otherwise). Empty: none.
    pub master_password: String,
    /// Prefix of every key this broker writes (`broker:` by default).
    pub key_prefix: String,
    /// Connection timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout of one command or script, milliseconds.
    pub response_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/".into(),
            sentinels: Vec::new(),
            master_name: String::new(),
            master_password: String::new(),
            key_prefix: "broker:".into(),
            connect_timeout_ms: 2000,
            response_timeout_ms: 2000,
        }
    }
}

impl RedisConfig {
    /// Checks the combination of keys; `Err` names the key and the reason.
    pub fn validate(&self) -> Result<(), RedisConnError> {
        let bad = |key: &'static str, why: &str| Err(RedisConnError::Config(key, why.to_string()));
        if self.sentinels.is_empty() {
            if self.url.is_empty() {
                return bad("url", "set `url` or `sentinels` + `master_name`");
            }
            if !(self.url.starts_with("redis://") || self.url.starts_with("unix://")) {
                return bad("url", "must start with redis:// or unix://");
            }
        } else if self.master_name.is_empty() {
            return bad("master_name", "required with `sentinels`");
        }
        if self.key_prefix.is_empty() {
            return bad("key_prefix", "must not be empty");
        }
        if self.connect_timeout_ms == 0 || self.response_timeout_ms == 0 {
            return bad("response_timeout_ms", "timeouts must be > 0");
        }
        Ok(())
    }
}

/// Why a Redis connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisConnError {
    /// A configuration key is wrong.
    #[error("redis config `{0}`: {1}")]
    Config(&'static str, String),
    /// Redis (or every sentinel) could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

impl From<RedisConnError> for StoreError {
    fn from(e: RedisConnError) -> Self {
        StoreError::Backend(e.to_string())
    }
}

enum Source {
    Single(Client),
    Sentinel(Mutex<SentinelClient>),
}

/// A shared connection to Redis (see module docs). Cheap to share behind an `Arc`.
pub struct RedisConn {
    source: Source,
    manager_config: ConnectionManagerConfig,
    current: RwLock<ConnectionManager>,
    prefix: String,
}

impl RedisConn {
    /// Connects (resolving the master through Sentinel when configured).
    pub async fn connect(cfg: &RedisConfig) -> Result<RedisConn, RedisConnError> {
        cfg.validate()?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(cfg.response_timeout_ms)))
            .set_number_of_retries(2);
        let source = if cfg.sentinels.is_empty() {
            Source::Single(Client::open(cfg.url.as_str())?)
        } else {
            let node = if cfg.master_password.is_empty() {
                None
            } else {
                let info =
                    redis::RedisConnectionInfo::default().set_password(cfg.master_password.clone());
                Some(
                    redis::sentinel::SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(info),
                )
            };
            Source::Sentinel(Mutex::new(SentinelClient::build(
                cfg.sentinels.clone(),
                cfg.master_name.clone(),
                node,
                SentinelServerType::Master,
            )?))
        };
        let manager = open(&source, &manager_config).await?;
        Ok(RedisConn {
            source,
            manager_config,
            current: RwLock::new(manager),
            prefix: cfg.key_prefix.clone(),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A handle to the current connection (multiplexed; clone per call).
    pub async fn get(&self) -> ConnectionManager {
        self.current.read().await.clone()
    }

    /// Maps a command's result to the store's error type; after a connection-level error in
    /// Sentinel mode, re-resolves the master for the next call.
    pub async fn check<T>(&self, r: RedisResult<T>) -> Result<T, StoreError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                if matches!(self.source, Source::Sentinel(_)) && connection_level(&e) {
                    match open(&self.source, &self.manager_config).await {
                        Ok(m) => *self.current.write().await = m,
                        Err(re) => {
                            tracing::warn!(error = %re, "redis: sentinel master lookup failed")
                        }
                    }
                }
                Err(StoreError::Backend(format!("redis: {e}")))
            }
        }
    }
}

fn connection_level(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.to_string().contains("READONLY")
}

async fn open(
    source: &Source,
    config: &ConnectionManagerConfig,
) -> Result<ConnectionManager, RedisError> {
    let client = match source {
        Source::Single(c) => c.clone(),
        Source::Sentinel(s) => s.lock().await.async_get_client().await?,
    };
    ConnectionManager::new_with_config(client, config.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_key() {
        assert!(RedisConfig::default().validate().is_ok());
        let no_url = RedisConfig {
            url: String::new(),
            ..RedisConfig::default()
        };
        assert!(matches!(
            no_url.validate(),
            Err(RedisConnError::Config("url", _))
        ));
        let sentinel_without_name = RedisConfig {
            sentinels: vec!["redis://127.0.0.1:26379".into()],
            ..RedisConfig::default()
        };
        assert!(matches!(
            sentinel_without_name.validate(),
            Err(RedisConnError::Config("master_name", _))
        ));
        let sentinel = RedisConfig {
            url: String::new(),
            sentinels: vec!["redis://127.0.0.1:26379".into()],
            master_name: "mymaster".into(),
            ..RedisConfig::default()
        };
        assert!(sentinel.validate().is_ok());
        let toml: RedisConfig =
            toml::from_str("url = \"redis://h:1/\"\nkey_prefix = \"x:\"").unwrap();
        assert_eq!(
            (toml.url.as_str(), toml.key_prefix.as_str()),
            ("redis://h:1/", "x:")
        );
    }
}
