//! `broker rmqkeeper` settings: the `[rmqkeeper]` section of the shared config file
//! ([`super::config::KeeperSection`]) with `[discovery]` and `cluster.rabbit_root`, overridden by
//! flags, merged and validated into a [`KeeperConfig`].
//!
//! Every flag also reads an `RMQKEEPER_*` environment variable; a flag wins over the file. A bad
//! value is a [`KeeperConfigError`] whose message names where it came from, the flag
//! (`rmqkeeper: --mgmt-url: invalid URL ...`) or the file's key
//! (`rmqkeeper: rmqkeeper.mgmt_url: ...`); the binary prints it and exits with [`EXIT_CONFIG`].

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

use super::config::KeeperSection;
use crate::discovery::DiscoveryConfig;
use crate::discovery::validate_root;
use crate::discovery::zk::{ZkAuth, ZkSettings};

/// Exit code for a configuration error (same as a command-line usage error).
pub const EXIT_CONFIG: u8 = 2;

/// `broker rmqkeeper`: keeps one RabbitMQ node registered in ZooKeeper while it is healthy.
/// Every flag overrides the same key of the config file's `[rmqkeeper]` section.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct KeeperArgs {
    /// AMQP URL of the guarded node as publishers should dial it (`amqp://host:port/vhost`);
    /// credentials in it are not published. [rmqkeeper.amqp_url]
    #[arg(long, env = "RMQKEEPER_AMQP_URL")]
    pub amqp_url: Option<String>,
    /// Management API base URL (`http://user:password@host:15672`). [rmqkeeper.mgmt_url]
    #[arg(long, env = "RMQKEEPER_MGMT_URL")]
    pub mgmt_url: Option<String>,
    /// Management API user (overrides the URL's). [rmqkeeper.mgmt_user]
    #[arg(long, env = "RMQKEEPER_MGMT_USER")]
    pub mgmt_user: Option<String>,
    /// Management API password (overrides the URL's). [rmqkeeper.mgmt_password]
    #[arg(long, env = "RMQKEEPER_MGMT_PASSWORD", hide_env_values = true)]
    pub mgmt_password: Option<String>,
    /// Virtual host whose aliveness is checked (default `/`). [rmqkeeper.vhost]
    #[arg(long, env = "RMQKEEPER_VHOST")]
    pub vhost: Option<String>,
    /// ZooKeeper connect string. [discovery.zk_servers]
    #[arg(long, env = "RMQKEEPER_ZK_SERVERS")]
    pub zk_servers: Option<String>,
    /// ZooKeeper digest credentials `user:password`; the registration is readable and writable
    /// by this identity only. [discovery.zk_auth]
    #[arg(long, env = "RMQKEEPER_ZK_AUTH", hide_env_values = true)]
    pub zk_auth: Option<String>,
    /// Znode root; the node registers as `<root>/<node-name>`. [rmqkeeper.root, else
    /// cluster.rabbit_root]
    #[arg(long, env = "RMQKEEPER_ROOT")]
    pub root: Option<String>,
    /// Health check interval, milliseconds (default 5000). [rmqkeeper.check_interval_ms]
    #[arg(long, env = "RMQKEEPER_CHECK_INTERVAL_MS")]
    pub check_interval_ms: Option<u64>,
    /// ZooKeeper session timeout, milliseconds. [rmqkeeper.session_timeout_ms, else
    /// discovery.session_timeout_ms]
    #[arg(long, env = "RMQKEEPER_SESSION_TIMEOUT_MS")]
    pub session_timeout_ms: Option<u64>,
    /// Znode name; default: the node name the management API reports (`rabbit@host`).
    /// [rmqkeeper.node_name]
    #[arg(long, env = "RMQKEEPER_NODE_NAME")]
    pub node_name: Option<String>,
    /// Where `/healthz` and `/metrics` are served (`host:port`, e.g. 127.0.0.1:9102; empty:
    /// not served). [rmqkeeper.listen]
    #[arg(long, env = "RMQKEEPER_LISTEN")]
    pub listen: Option<String>,
}

/// A configuration error, naming the flag or the config key the value came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rmqkeeper: {setting}: {reason}")]
pub struct KeeperConfigError {
    /// `--flag` or `section.key`.
    pub setting: String,
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
    /// Where `/healthz` and `/metrics` are served, if anywhere.
    pub listen: Option<SocketAddr>,
}

/// A value and the setting it came from (`--flag` or `section.key`), for error messages.
struct Setting<T> {
    value: T,
    name: String,
}

/// The flag's value, else the file's when set (`Some`), else `default`; named after its source.
fn pick<T>(flag: Option<T>, flag_name: &str, file: Option<(T, &str)>, default: T) -> Setting<T> {
    match (flag, file) {
        (Some(value), _) => Setting {
            value,
            name: format!("--{flag_name}"),
        },
        (None, Some((value, key))) => Setting {
            value,
            name: key.to_string(),
        },
        (None, None) => Setting {
            value: default,
            name: format!("--{flag_name}"),
        },
    }
}

/// `Some((value, key))` when the file's string is set.
fn set<'a>(value: &'a str, key: &'a str) -> Option<(String, &'a str)> {
    (!value.is_empty()).then(|| (value.to_string(), key))
}

fn bad<T>(setting: &str, reason: impl Into<String>) -> Result<T, KeeperConfigError> {
    Err(KeeperConfigError {
        setting: setting.to_string(),
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

/// What the keeper reads from the config file: its `[rmqkeeper]` section, `[discovery]`
/// (ZooKeeper) and `cluster.rabbit_root`; the broker builds it (`Config::keeper_sources`).
#[derive(Clone, Copy, Debug)]
pub struct KeeperSources<'a> {
    /// `[rmqkeeper]`.
    pub keeper: &'a KeeperSection,
    /// `[discovery]`.
    pub discovery: &'a DiscoveryConfig,
    /// `cluster.rabbit_root` (empty: `/rabbitmq`).
    pub rabbit_root: &'a str,
}

impl KeeperArgs {
    /// Merges the flags over the config file's `sources` and validates the result.
    pub fn resolve(&self, sources: KeeperSources<'_>) -> Result<KeeperConfig, KeeperConfigError> {
        let file = sources.keeper;
        let disc = sources.discovery;
        let amqp = pick(
            self.amqp_url.clone(),
            "amqp-url",
            set(&file.amqp_url, "rmqkeeper.amqp_url"),
            String::new(),
        );
        let mgmt = pick(
            self.mgmt_url.clone(),
            "mgmt-url",
            set(&file.mgmt_url, "rmqkeeper.mgmt_url"),
            String::new(),
        );
        if amqp.value.is_empty() {
            return bad(
                &amqp.name,
                "missing: give --amqp-url or rmqkeeper.amqp_url in the config file",
            );
        }
        if mgmt.value.is_empty() {
            return bad(
                &mgmt.name,
                "missing: give --mgmt-url or rmqkeeper.mgmt_url in the config file",
            );
        }
        let mut amqp_url = match Url::parse(&amqp.value) {
            Ok(u) => u,
            Err(e) => return bad(&amqp.name, format!("invalid URL `{}`: {e}", amqp.value)),
        };
        if amqp_url.scheme() != "amqp" && amqp_url.scheme() != "amqps" {
            return bad(
                &amqp.name,
                format!("invalid URL `{}`: scheme must be amqp or amqps", amqp.value),
            );
        }
        if amqp_url.host_str().is_none_or(str::is_empty) {
            return bad(&amqp.name, format!("invalid URL `{}`: no host", amqp.value));
        }
        let amqp_port = amqp_url.port().unwrap_or(if amqp_url.scheme() == "amqps" {
            5671
        } else {
            5672
        });
        strip_credentials(&mut amqp_url);

        let mut mgmt_url = match Url::parse(&mgmt.value) {
            Ok(u) => u,
            Err(e) => return bad(&mgmt.name, format!("invalid URL `{}`: {e}", mgmt.value)),
        };
        if mgmt_url.scheme() != "http" && mgmt_url.scheme() != "https" {
            return bad(
                &mgmt.name,
                format!("invalid URL `{}`: scheme must be http or https", mgmt.value),
            );
        }
        if mgmt_url.host_str().is_none_or(str::is_empty) {
            return bad(&mgmt.name, format!("invalid URL `{}`: no host", mgmt.value));
        }
        if mgmt_url.query().is_some() || mgmt_url.fragment().is_some() {
            return bad(
                &mgmt.name,
                format!("invalid URL `{}`: no query or fragment allowed", mgmt.value),
            );
        }
        let url_user = decode(mgmt_url.username());
        let url_password = mgmt_url.password().map(decode).unwrap_or_default();
        strip_credentials(&mut mgmt_url);
        if !mgmt_url.path().ends_with('/') {
            let p = format!("{}/", mgmt_url.path());
            mgmt_url.set_path(&p);
        }
        let mgmt_user = pick(
            self.mgmt_user.clone(),
            "mgmt-user",
            set(&file.mgmt_user, "rmqkeeper.mgmt_user"),
            url_user,
        );
        let mgmt_password = pick(
            self.mgmt_password.clone(),
            "mgmt-password",
            set(file.mgmt_password.expose(), "rmqkeeper.mgmt_password"),
            url_password,
        );
        if mgmt_user.value.is_empty() {
            return bad(
                "--mgmt-user",
                "missing: give it in --mgmt-url (http://user:password@host:port), --mgmt-user or \
                 rmqkeeper.mgmt_user",
            );
        }
        let vhost = pick(
            self.vhost.clone(),
            "vhost",
            Some((file.vhost.clone(), "rmqkeeper.vhost")),
            "/".into(),
        );
        if vhost.value.is_empty() {
            return bad(&vhost.name, "must not be empty (the default vhost is `/`)");
        }
        let zk_servers = pick(
            self.zk_servers.clone(),
            "zk-servers",
            Some((disc.zk_servers.clone(), "discovery.zk_servers")),
            String::new(),
        );
        if zk_servers.value.trim().is_empty()
            || zk_servers.value.split(',').any(|s| {
                s.trim()
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            })
        {
            return bad(
                &zk_servers.name,
                format!(
                    "invalid connect string `{}`: expected host:port[,host:port...]",
                    zk_servers.value
                ),
            );
        }
        let default_root = if sources.rabbit_root.is_empty() {
            "/rabbitmq".to_string()
        } else {
            sources.rabbit_root.to_string()
        };
        let root = pick(
            self.root.clone(),
            "root",
            set(&file.root, "rmqkeeper.root"),
            default_root,
        );
        if validate_root(&root.value).is_err() {
            return bad(
                &root.name,
                format!(
                    "invalid znode path `{}`: must start with / and not end with /",
                    root.value
                ),
            );
        }
        let interval = pick(
            self.check_interval_ms,
            "check-interval-ms",
            Some((file.check_interval_ms, "rmqkeeper.check_interval_ms")),
            5000,
        );
        if !(100..=3_600_000).contains(&interval.value) {
            return bad(&interval.name, "must be within 100..=3600000");
        }
        let session = pick(
            self.session_timeout_ms,
            "session-timeout-ms",
            match file.session_timeout_ms {
                0 => Some((disc.session_timeout_ms, "discovery.session_timeout_ms")),
                ms => Some((ms, "rmqkeeper.session_timeout_ms")),
            },
            10_000,
        );
        if !(1000..=600_000).contains(&session.value) {
            return bad(&session.name, "must be within 1000..=600000");
        }
        let node_name = pick(
            self.node_name.clone(),
            "node-name",
            set(&file.node_name, "rmqkeeper.node_name"),
            String::new(),
        );
        if !node_name.value.is_empty() && !valid_znode_name(&node_name.value) {
            return bad(
                &node_name.name,
                format!("`{}` is not a valid znode name", node_name.value),
            );
        }
        let zk_auth = pick(
            self.zk_auth.clone(),
            "zk-auth",
            set(disc.zk_auth.expose(), "discovery.zk_auth"),
            String::new(),
        );
        let Some(zk_auth) = ZkAuth::parse(&zk_auth.value) else {
            return bad(
                &zk_auth.name,
                "required: the ZooKeeper digest credentials user:password (--zk-auth or \
                 discovery.zk_auth)",
            );
        };
        let listen = pick(
            self.listen.clone(),
            "listen",
            Some((file.listen.clone(), "rmqkeeper.listen")),
            String::new(),
        );
        let listen_addr = match listen.value.trim() {
            "" => None,
            a => match a.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    return bad(
                        &listen.name,
                        format!("`{a}` is not host:port with a numeric IP (or empty: off)"),
                    );
                }
            },
        };
        Ok(KeeperConfig {
            amqp_url,
            amqp_port,
            mgmt_url,
            mgmt_user: mgmt_user.value,
            mgmt_password: mgmt_password.value,
            vhost: vhost.value,
            zk: ZkSettings {
                servers: zk_servers.value.trim().to_string(),
                session_timeout: Duration::from_millis(session.value),
                auth: Some(zk_auth),
            },
            root: root.value,
            interval: Duration::from_millis(interval.value),
            node_name: Some(node_name.value).filter(|n| !n.is_empty()),
            listen: listen_addr,
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
    use crate::config::Config;

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
        let c = parse(&[])
            .resolve(Config::default().keeper_sources())
            .unwrap();
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
            .resolve(Config::default().keeper_sources())
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
        .resolve(Config::default().keeper_sources())
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
            let msg = parse(extra)
                .resolve(Config::default().keeper_sources())
                .unwrap_err()
                .to_string();
            assert!(msg.starts_with(want), "{extra:?}: {msg}");
        }
    }

    fn file_config() -> Config {
        let mut c = Config::default();
        c.discovery.zk_servers = "zk1:2181,zk2:2181".into();
        c.discovery.zk_auth = crate::config::Secret::new("plugcloud:from-file");
        c.cluster.rabbit_root = "/mq".into();
        c.rmqkeeper.amqp_url = "amqp://mq1:5672/%2f".into();
        c.rmqkeeper.mgmt_url = "http://mq1:15672".into();
        c.rmqkeeper.mgmt_user = "ops".into();
        c.rmqkeeper.mgmt_password = crate::config::Secret::new("pw");
        c.rmqkeeper.listen = "127.0.0.1:9200".into();
        c
    }

    #[test]
    fn the_shared_config_file_alone_is_enough_and_flags_override_it() {
        let none = Cli::try_parse_from(["k"]).unwrap().args;
        let c = none.resolve(file_config().keeper_sources()).unwrap();
        assert_eq!(c.amqp_url.as_str(), "amqp://mq1:5672/%2f");
        assert_eq!(
            (c.mgmt_user.as_str(), c.mgmt_password.as_str()),
            ("ops", "pw")
        );
        assert_eq!(c.zk.servers, "zk1:2181,zk2:2181");
        assert_eq!(c.zk.auth.as_ref().map(|a| a.user()), Some("plugcloud"));
        // The root follows cluster.rabbit_root, where the comets and msgbus nodes look.
        assert_eq!(c.root, "/mq");
        assert_eq!(c.zk.session_timeout, Duration::from_secs(10));
        assert_eq!(c.listen, Some("127.0.0.1:9200".parse().unwrap()));

        let flags = Cli::try_parse_from([
            "k",
            "--amqp-url",
            "amqp://mq9:1/%2f",
            "--root",
            "/other",
            "--listen",
            "",
        ])
        .unwrap()
        .args;
        let c = flags.resolve(file_config().keeper_sources()).unwrap();
        assert_eq!(c.amqp_url.as_str(), "amqp://mq9:1/%2f");
        assert_eq!(c.root, "/other");
        assert_eq!(c.listen, None);
    }

    #[test]
    fn a_bad_file_value_names_its_key() {
        let none = Cli::try_parse_from(["k"]).unwrap().args;
        type Tweak = fn(&mut Config);
        let cases: &[(Tweak, &str)] = &[
            (
                |c| c.rmqkeeper.mgmt_url = "ftp://h/".into(),
                "rmqkeeper: rmqkeeper.mgmt_url: invalid URL `ftp://h/`: scheme",
            ),
            (
                |c| c.rmqkeeper.amqp_url = String::new(),
                "rmqkeeper: --amqp-url: missing",
            ),
            (
                |c| c.rmqkeeper.listen = "localhost:1".into(),
                "rmqkeeper: rmqkeeper.listen: `localhost:1` is not host:port",
            ),
            (
                |c| c.rmqkeeper.check_interval_ms = 1,
                "rmqkeeper: rmqkeeper.check_interval_ms: must be within",
            ),
            (
                |c| c.discovery.zk_auth = crate::config::Secret::default(),
                "rmqkeeper: --zk-auth: required",
            ),
        ];
        for (tweak, want) in cases {
            let mut c = file_config();
            tweak(&mut c);
            let msg = none.resolve(c.keeper_sources()).unwrap_err().to_string();
            assert!(msg.starts_with(want), "{msg}");
        }
    }

    #[test]
    fn percent_decoding_of_user_info() {
        assert_eq!(decode("p%40ss"), "p@ss");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
