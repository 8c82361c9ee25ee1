//! Resolved secrets: the `[security]` config values, parsed, with any unset one generated once and
//! kept in `<data_dir>/secrets.toml` (mode 0600) so `cargo run -p broker` works without set-up and
//! restarts keep the same keys. Values are never logged; `Debug` is redacted.
//!
//! An existing `secrets.toml` with a wider mode is narrowed to 0600 when read or rewritten
//! ([`crate::private_files`]). [`Secrets`] and the intermediate hex texts are overwritten with
//! zeros when dropped (`zeroize`).
//!
//! The handshake cookie secret is not one of them: each node draws its own at start and never
//! stores it (`comet::logins::node_cookie_secret`, docs/protocol.md section 3.1). A
//! `cookie_secret` left in an older `secrets.toml` is ignored and dropped when the file is next
//! rewritten.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::private_files::{open_private, restrict_to_owner};
use crate::secret::Secret;

/// `[security]`: all values are secrets. Empty means "generate at first start into the data dir".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// Fleet master key, 64 hex digits; device keys derive from it.
    pub fleet_master_key: Secret,
    /// Explicit per-device keys (id -> 64 hex digits); they win over derivation.
    pub device_keys: BTreeMap<String, Secret>,
    /// Ignored (parsed only so older files still load; a warning is logged when set): each
    /// node draws its own handshake cookie secret at start (docs/protocol.md section 3.1).
    pub cookie_secret: Secret,
    /// Secret for app tokens, 64 hex digits.
    pub token_secret: Secret,
    /// Bearer token for the HTTP API (at least 16 characters).
    pub api_token: Secret,
}

/// Parses 64 hex digits into a 32-byte key.
pub fn parse_key_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

/// File name of generated secrets inside the data directory.
pub const SECRETS_FILE: &str = "secrets.toml";

/// The broker's secrets, ready to use. Not `Clone` (borrow it); zeroised when dropped.
pub struct Secrets {
    /// Fleet master key (device keys derive from it).
    pub fleet_master_key: [u8; 32],
    /// Explicit device keys by id.
    pub device_keys: HashMap<u32, [u8; 32]>,
    /// App token secret.
    pub token_secret: [u8; 32],
    /// HTTP API bearer token.
    pub api_token: Secret,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        self.fleet_master_key.zeroize();
        self.token_secret.zeroize();
        for key in self.device_keys.values_mut() {
            key.zeroize();
        }
        // `api_token` wipes itself (`Secret`).
    }
}

impl ZeroizeOnDrop for Secrets {}

/// Why the secrets could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Reading or writing the secrets file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Keys are neither configured nor in the secrets file (and were not to be generated: see
    /// [`Secrets::existing`]).
    #[error(
        "no broker secrets here: {keys:?} neither set in [security] nor found in {path} (run \
         where the broker runs, or pass its --config; a broker generates them at its first start)"
    )]
    Missing {
        /// The file looked in.
        path: PathBuf,
        /// The keys missing.
        keys: Vec<&'static str>,
    },
    /// The secrets file is corrupt.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Default, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Generated {
    #[serde(default)]
    fleet_master_key: String,
    #[serde(default)]
    token_secret: String,
    #[serde(default)]
    api_token: String,
}

impl Secrets {
    /// Resolves `security` (already validated); unset values come from, or are generated into,
    /// `<data_dir>/secrets.toml`. Returns the secrets and the names of keys generated now.
    pub fn resolve(
        security: &Security,
        data_dir: &Path,
    ) -> Result<(Secrets, Vec<&'static str>), SecretsError> {
        Self::load(security, data_dir, true)
    }

    /// The secrets of an existing broker: like [`Secrets::resolve`], but a key neither
    /// configured nor stored is [`SecretsError::Missing`] instead of generated, and nothing is
    /// written. Tools that mint tokens or print device keys use this, so they never hand out a
    /// credential made from secrets the broker does not have.
    pub fn existing(security: &Security, data_dir: &Path) -> Result<Secrets, SecretsError> {
        Self::load(security, data_dir, false).map(|(s, _)| s)
    }

    fn load(
        security: &Security,
        data_dir: &Path,
        generate: bool,
    ) -> Result<(Secrets, Vec<&'static str>), SecretsError> {
        let path = data_dir.join(SECRETS_FILE);
        let io = |source| SecretsError::Io {
            path: path.clone(),
            source,
        };
        let mut stored: Generated = match std::fs::read_to_string(&path).map(Zeroizing::new) {
            Ok(text) => {
                restrict_to_owner(&path).map_err(io)?;
                toml::from_str(&text).map_err(|e| SecretsError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Generated::default(),
            Err(e) => return Err(io(e)),
        };
        let mut generated = Vec::new();
        let mut rng = rand::rng();
        let mut pick =
            |configured: &Secret, stored: &mut String, name: &'static str, token: bool| {
                if !configured.is_empty() {
                    return Zeroizing::new(configured.expose().to_string());
                }
                if stored.is_empty() {
                    let mut b = [0u8; 32];
                    rng.fill_bytes(&mut b);
                    *stored = if token {
                        hex::encode(&b[..24])
                    } else {
                        hex::encode(b)
                    };
                    b.zeroize();
                    generated.push(name);
                }
                Zeroizing::new(stored.clone())
            };
        let master = pick(
            &security.fleet_master_key,
            &mut stored.fleet_master_key,
            "fleet_master_key",
            false,
        );
        let token = pick(
            &security.token_secret,
            &mut stored.token_secret,
            "token_secret",
            false,
        );
        let api = pick(
            &security.api_token,
            &mut stored.api_token,
            "api_token",
            true,
        );
        if !generate && !generated.is_empty() {
            return Err(SecretsError::Missing {
                path: path.clone(),
                keys: generated,
            });
        }
        if !generated.is_empty() {
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let body = Zeroizing::new(toml::to_string(&stored).expect("plain strings serialise"));
            let text = Zeroizing::new(format!(
                "# Generated by the broker at first start for keys left empty in [security].\n{}",
                body.as_str()
            ));
            write_private(&path, text.as_bytes()).map_err(io)?;
        }
        let key = |hex: &str, name: &str| {
            parse_key_hex(hex).ok_or_else(|| SecretsError::Corrupt {
                path: path.clone(),
                reason: format!("`{name}` is not 64 hex digits"),
            })
        };
        let mut device_keys = HashMap::new();
        for (id, k) in &security.device_keys {
            let id = crate::terminal::parse_id_bits(id).ok_or_else(|| SecretsError::Corrupt {
                path: path.clone(),
                reason: format!("device_keys: `{id}` is not a 32-bit id"),
            })?;
            device_keys.insert(id, key(k.expose(), "device_keys")?);
        }
        Ok((
            Secrets {
                fleet_master_key: key(&master, "fleet_master_key")?,
                device_keys,
                token_secret: key(&token, "token_secret")?,
                api_token: Secret::new(api.as_str()),
            },
            generated,
        ))
    }
}

/// Writes a file readable by the owner only, durably (fsync), replacing it atomically. A stale
/// temporary file with a wider mode is narrowed to 0600 before the secrets go into it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("toml.tmp");
    let mut f = open_private(&tmp)?;
    f.set_len(0)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn secrets_file_is_0600_even_if_it_existed_wider() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRETS_FILE);
        // Created 0600 at first start.
        let (first, _) = Secrets::resolve(&Security::default(), dir.path()).unwrap();
        assert_eq!(mode(&path), 0o600);
        // Left 0644 (e.g. restored from a backup): narrowed on the next start, nothing generated.
        chmod(&path, 0o644);
        let (again, generated) = Secrets::resolve(&Security::default(), dir.path()).unwrap();
        assert!(generated.is_empty());
        assert_eq!(again.api_token, first.api_token);
        assert_eq!(mode(&path), 0o600);
        // A file written 0644 by hand with only some keys: rewritten 0600, also through a stale
        // world-readable temporary file.
        std::fs::write(&path, format!("token_secret = \"{}\"\n", "11".repeat(32))).unwrap();
        chmod(&path, 0o644);
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, "stale").unwrap();
        chmod(&tmp, 0o666);
        let (third, generated) = Secrets::resolve(&Security::default(), dir.path()).unwrap();
        assert_eq!(third.token_secret, [0x11; 32]);
        assert_eq!(generated.len(), 2);
        assert_eq!(mode(&path), 0o600);
        assert!(!tmp.exists());
    }

    #[test]
    fn generates_once_then_reuses_and_config_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (a, gen_a) = Secrets::resolve(&Security::default(), dir.path()).unwrap();
        assert_eq!(gen_a, vec!["fleet_master_key", "token_secret", "api_token"]);
        let (b, gen_b) = Secrets::resolve(&Security::default(), dir.path()).unwrap();
        assert!(gen_b.is_empty());
        assert_eq!(a.fleet_master_key, b.fleet_master_key);
        assert_eq!(a.api_token, b.api_token);
        assert_ne!(a.fleet_master_key, a.token_secret);
        let stored = std::fs::read_to_string(dir.path().join(SECRETS_FILE)).unwrap();
        assert!(
            !stored.contains("cookie_secret"),
            "the cookie secret is never stored"
        );

        let sec = Security {
            api_token: Secret::new("configured-token-123"),
            device_keys: [("9".to_string(), Secret::new("22".repeat(32)))].into(),
            ..Security::default()
        };
        let (c, _) = Secrets::resolve(&sec, dir.path()).unwrap();
        assert_eq!(c.api_token.expose(), "configured-token-123");
        assert_eq!(c.device_keys[&9], [0x22; 32]);
        assert_eq!(c.fleet_master_key, a.fleet_master_key);
        assert_eq!(format!("{c:?}"), "Secrets(<redacted>)");
    }

    #[test]
    fn existing_refuses_to_invent_secrets_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        match Secrets::existing(&Security::default(), dir.path()) {
            Err(SecretsError::Missing { keys, .. }) => {
                assert_eq!(keys, vec!["fleet_master_key", "token_secret", "api_token"])
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join(SECRETS_FILE).exists());
        // Once the broker generated them, the tools read the very same secrets.
        let (broker, _) = Secrets::resolve(&Security::default(), dir.path()).unwrap();
        let tool = Secrets::existing(&Security::default(), dir.path()).unwrap();
        assert_eq!(tool.token_secret, broker.token_secret);
        assert_eq!(tool.fleet_master_key, broker.fleet_master_key);
        // Configured keys need no file at all.
        let configured = Security {
            fleet_master_key: Secret::new("33".repeat(32)),
            token_secret: Secret::new("44".repeat(32)),
            api_token: Secret::new("configured-token-123"),
            ..Security::default()
        };
        let empty = tempfile::tempdir().unwrap();
        let s = Secrets::existing(&configured, empty.path()).unwrap();
        assert_eq!(s.token_secret, [0x44; 32]);
    }

    #[test]
    fn an_older_file_with_a_cookie_secret_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let old = format!(
            "fleet_master_key = \"{}\"\ncookie_secret = \"{}\"\ntoken_secret = \"{}\"\napi_token = \"{}\"\n",
            "11".repeat(32),
            "22".repeat(32),
            "33".repeat(32),
            "44".repeat(24)
        );
        std::fs::write(dir.path().join(SECRETS_FILE), old).unwrap();
        let (s, generated) = Secrets::resolve(&Security::default(), dir.path()).unwrap();
        assert!(generated.is_empty());
        assert_eq!(s.fleet_master_key, [0x11; 32]);
        assert_eq!(s.token_secret, [0x33; 32]);
    }
}
