//! `broker rmqkeeper` flags and their validation into a [`KeeperConfig`].
//!
//! Every flag also reads an `RMQKEEPER_*` environment variable. A bad value is a
//! [`KeeperConfigError`] whose message names the flag (`rmqkeeper: --mgmt-url: invalid URL ...`);
//! the binary prints it and exits with [`EXIT_CONFIG`].

use std::time::Duration;

use reqwest::Url;

use crate::discovery::validate_root;
use crate::discovery::zk::{ZkAuth, ZkSettings};

/// Exit code for a configuration error (same as a command-line usage error).
pub const EXIT_CONFIG: u8 = 2;

/// `broker rmqkeeper`: keeps one RabbitMQ node registered in ZooKeeper while it is healthy.
#[derive(Clone, Debug, clap::Args)]
pub struct KeeperArgs {
    /// AMQP URL of the guarded node as publishers should dial it (`amqp://host:port/vhost`);
    /// credentials in it are not published.
    #[arg(long, env = "RMQKEEPER_AMQP_URL")]
    pub amqp_url: String,
    /// Management API base URL (`http://user:password@host:15672`).
    #[arg(long, env = "RMQKEEPER_MGMT_URL")]
    pub mgmt_url: String,
    /// Management API user (overrides the URL's).
    #[arg(long, env = "RMQKEEPER_MGMT_USER")]
    pub mgmt_user: Option<String>,
    /// Management API password (overrides the URL's).
    #[arg(long, env = "RMQKEEPER_MGMT_PASSWORD", hide_env_values = true)]
    pub mgmt_password: Option<String>,
    /// Virtual host whose aliveness is checked.
    #[arg(long, env = "RMQKEEPER_VHOST", default_value = "/")]
    pub vhost: String,
    /// ZooKeeper connect string.
    #[arg(long, env = "RMQKEEPER_ZK_SERVERS", default_value = "127.0.0.1:2181")]
    pub zk_servers: String,
    /// ZooKeeper digest credentials `user:password` (the cluster's `discovery.zk_auth`); the
    /// registration is readable and writable by this identity only.
    #[arg(long, env = "RMQKEEPER_ZK_AUTH", hide_env_values = true)]
    pub zk_auth: Option<String>,
    /// Znode root; the node registers as `<root>/<node-name>`.
    #[arg(long, env = "RMQKEEPER_ROOT", default_value = "/rabbitmq")]
    pub root: String,
    /// Health check interval, milliseconds.
    #[arg(long, env = "RMQKEEPER_CHECK_INTERVAL_MS", default_value_t = 5000)]
    pub check_interval_ms: u64,
    /// ZooKeeper session timeout, milliseconds.
    #[arg(long, env = "RMQKEEPER_SESSION_TIMEOUT_MS", default_value_t = 10000)]
    pub session_timeout_ms: u64,
    /// Znode name; default: the node name the management API reports (`rabbit@host`).
    #[arg(long, env = "RMQKEEPER_NODE_NAME")]
    pub node_name: Option<String>,
}

/// A configuration error, naming the flag.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rmqkeeper: --{flag}: {reason}")]
pub struct KeeperConfigError {
    /// The flag (without dashes).
    pub flag: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// A validated keeper configuration.
#[derive(Clone, Debug)]
pub struct KeeperConfig {
    /// AMQP URL without credentials (published).
    pub amqp_url: Url,
    /// AMQP port (for the port-listener check).
    pub amqp_port: u16,
    /// Management base URL without credentials (published; ends with `/`).
    pub mgmt_url: Url,
    /// Management user.
    pub mgmt_user: String,
    /// Management password (never logged).
    pub mgmt_password: String,
    /// Checked vhost.
    pub vhost: String,
    /// ZooKeeper settings.
    pub zk: ZkSettings,
    /// Znode root.
    pub root: String,
    /// Check interval.
    pub interval: Duration,
    /// Fixed znode name, if given.
    pub node_name: Option<String>,
}

fn bad<T>(flag: &'static str, reason: impl Into<String>) -> Result<T, KeeperConfigError> {
    Err(KeeperConfigError {
        flag,
        reason: reason.into(),
    })
}

fn strip_credentials(u: &mut Url) {
    let _ = u.set_username("");
    let _ = u.set_password(None);
}

fn decode(s: &str) -> String {
    // Percent-decoding of URL user info (RFC 3986); invalid escapes stay as written.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `name` can be a znode name.
fn valid_znode_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

impl KeeperArgs {
    /// Validates the flags.
    pub fn validate(&self) -> Result<KeeperConfig, KeeperConfigError> {
        let mut amqp_url = match Url::parse(&self.amqp_url) {
            Ok(u) => u,
            Err(e) => return bad("amqp-url", format!("invalid URL `{}`: {e}", self.amqp_url)),
        };
        if amqp_url.scheme() != "amqp" && amqp_url.scheme() != "amqps" {
            return bad(
                "amqp-url",
                format!(
                    "invalid URL `{}`: scheme must be amqp or amqps",
                    self.amqp_url
                ),
            );
        }
        if amqp_url.host_str().is_none_or(str::is_empty) {
            return bad(
                "amqp-url",
                format!("invalid URL `{}`: no host", self.amqp_url),
            );
        }
        let amqp_port = amqp_url.port().unwrap_or(if amqp_url.scheme() == "amqps" {
            5671
        } else {
            5672
        });
        strip_credentials(&mut amqp_url);

        let mut mgmt_url = match Url::parse(&self.mgmt_url) {
            Ok(u) => u,
            Err(e) => return bad("mgmt-url", format!("invalid URL `{}`: {e}", self.mgmt_url)),
        };
        if mgmt_url.scheme() != "http" && mgmt_url.scheme() != "https" {
            return bad(
                "mgmt-url",
                format!(
                    "invalid URL `{}`: scheme must be http or https",
                    self.mgmt_url
                ),
            );
        }
        if mgmt_url.host_str().is_none_or(str::is_empty) {
            return bad(
                "mgmt-url",
                format!("invalid URL `{}`: no host", self.mgmt_url),
            );
        }
        if mgmt_url.query().is_some() || mgmt_url.fragment().is_some() {
            return bad(
                "mgmt-url",
                format!(
                    "invalid URL `{}`: no query or fragment allowed",
                    self.mgmt_url
                ),
            );
        }
        let url_user = decode(mgmt_url.username());
        let url_password = mgmt_url.password().map(decode);
        strip_credentials(&mut mgmt_url);
        if !mgmt_url.path().ends_with('/') {
            let p = format!("{}/", mgmt_url.path());
            mgmt_url.set_path(&p);
        }
        let mgmt_user = self.mgmt_user.clone().unwrap_or(url_user);
        let mgmt_password = self
            .mgmt_password
            .clone()
            .or(url_password)
            .unwrap_or_default();
        if mgmt_user.is_empty() {
            return bad(
                "mgmt-user",
                "missing: give it in --mgmt-url (http://user:password@host:port) or --mgmt-user",
            );
        }
        if self.vhost.is_empty() {
            return bad("vhost", "must not be empty (the default vhost is `/`)");
        }
        if self.zk_servers.trim().is_empty()
            || self.zk_servers.split(',').any(|s| {
                s.trim()
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            })
        {
            return bad(
                "zk-servers",
                format!(
                    "invalid connect string `{}`: expected host:port[,host:port...]",
                    self.zk_servers
                ),
            );
        }
        if validate_root(&self.root).is_err() {
            return bad(
                "root",
                format!(
                    "invalid znode path `{}`: must start with / and not end with /",
                    self.root
                ),
            );
        }
        if !(100..=3_600_000).contains(&self.check_interval_ms) {
            return bad("check-interval-ms", "must be within 100..=3600000");
        }
        if !(1000..=600_000).contains(&self.session_timeout_ms) {
            return bad("session-timeout-ms", "must be within 1000..=600000");
        }
        if let Some(n) = &self.node_name
            && !valid_znode_name(n)
        {
            return bad("node-name", format!("`{n}` is not a valid znode name"));
        }
        let Some(zk_auth) = self.zk_auth.as_deref().and_then(ZkAuth::parse) else {
            return bad(
                "zk-auth",
                "required: the ZooKeeper digest credentials user:password (discovery.zk_auth)",
            );
        };
        Ok(KeeperConfig {
            amqp_url,
            amqp_port,
            mgmt_url,
            mgmt_user,
            mgmt_password,
            vhost: self.vhost.clone(),
            zk: ZkSettings {
                servers: self.zk_servers.trim().to_string(),
                session_timeout: Duration::from_millis(self.session_timeout_ms),
                auth: Some(zk_auth),
            },
            root: self.root.clone(),
            interval: Duration::from_millis(self.check_interval_ms),
            node_name: self.node_name.clone(),
        })
    }
}

/// Whether a management-reported node name can be used as a znode name.
pub fn usable_node_name(name: &str) -> bool {
    valid_znode_name(name)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: KeeperArgs,
    }

    fn parse(extra: &[&str]) -> KeeperArgs {
        let mut argv = vec!["rmqkeeper"];
        for (flag, value) in [
            ("--amqp-url", "amqp://guest:secret@127.0.0.1:17001/%2f"),
            ("--mgmt-url", "http://guest:p%40ss@127.0.0.1:17101"),
            ("--zk-auth", "plugcloud:zk-secret"),
        ] {
            if !extra.contains(&flag) {
                argv.extend([flag, value]);
            }
        }
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn good_flags_validate_and_credentials_are_split_off() {
        let c = parse(&[]).validate().unwrap();
        assert_eq!(c.amqp_url.as_str(), "amqp://127.0.0.1:17001/%2f");
        assert_eq!(c.amqp_port, 17001);
        assert_eq!(c.mgmt_url.as_str(), "http://127.0.0.1:17101/");
        assert_eq!(
            (c.mgmt_user.as_str(), c.mgmt_password.as_str()),
            ("guest", "p@ss")
        );
        assert_eq!(c.vhost, "/");
        assert_eq!(c.root, "/rabbitmq");
        assert_eq!(c.interval, Duration::from_secs(5));
        let c = parse(&["--mgmt-user", "ops", "--mgmt-password", "x"])
            .validate()
            .unwrap();
        assert_eq!(
            (c.mgmt_user.as_str(), c.mgmt_password.as_str()),
            ("ops", "x")
        );
        let c = Cli::try_parse_from([
            "k",
            "--amqp-url",
            "amqp://h/",
            "--mgmt-url",
            "http://u@h:1/api-prefix",
            "--zk-auth",
            "a:b",
        ])
        .unwrap()
        .args
        .validate()
        .unwrap();
        assert_eq!(c.amqp_port, 5672);
        assert_eq!(c.mgmt_url.as_str(), "http://h:1/api-prefix/");
    }

    #[test]
    fn bad_flags_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--mgmt-url", "not a url"],
                "rmqkeeper: --mgmt-url: invalid URL `not a url`: ",
            ),
            (
                &["--mgmt-url", "ftp://h/"],
                "rmqkeeper: --mgmt-url: invalid URL `ftp://h/`: scheme",
            ),
            (
                &["--mgmt-url", "http://h:1"],
                "rmqkeeper: --mgmt-user: missing",
            ),
            (
                &["--amqp-url", "http://h/"],
                "rmqkeeper: --amqp-url: invalid URL `http://h/`: scheme",
            ),
            (
                &["--zk-servers", "zk1"],
                "rmqkeeper: --zk-servers: invalid connect string `zk1`",
            ),
            (
                &["--root", "rabbit"],
                "rmqkeeper: --root: invalid znode path `rabbit`",
            ),
            (
                &["--check-interval-ms", "0"],
                "rmqkeeper: --check-interval-ms: must be within",
            ),
            (&["--vhost", ""], "rmqkeeper: --vhost: must not be empty"),
            (
                &["--zk-auth", "no-password"],
                "rmqkeeper: --zk-auth: required",
            ),
            (
                &["--node-name", "a/b"],
                "rmqkeeper: --node-name: `a/b` is not a valid znode name",
            ),
        ];
        for (extra, want) in cases {
            let msg = parse(extra).validate().unwrap_err().to_string();
            assert!(msg.starts_with(want), "{extra:?}: {msg}");
        }
    }

    #[test]
    fn percent_decoding_of_user_info() {
        assert_eq!(decode("p%40ss"), "p@ss");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
