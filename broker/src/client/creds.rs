//! Where the client's credentials come from, first match wins:
//!
//! * device key: `--key`, else derived from `--master-key`, else `[security] device_keys.<id>` or
//!   `fleet_master_key` of the config, else the `fleet_master_key` the broker generated into
//!   `<data dir>/secrets.toml` at its first start;
//! * phone token: `--token`, else minted (24 h) with `--token-secret`, else with the config's
//!   `token_secret`, else with the generated one in `<data dir>/secrets.toml`.
//!
//! The client only reads that file; it never generates secrets (that is the broker's job).

use std::path::Path;

use serde::Deserialize;
use shared_protocol::ids::Address;
use shared_protocol::keys::{DeviceKey, MasterKey, derive_device_key};

use crate::config::{Config, parse_key_hex};
use crate::secrets::SECRETS_FILE;

/// The keys of `secrets.toml` the client can use.
#[derive(Default, Deserialize)]
struct Stored {
    #[serde(default)]
    fleet_master_key: String,
    #[serde(default)]
    token_secret: String,
}

fn stored(data_dir: &Path) -> Result<Stored, String> {
    let path = data_dir.join(SECRETS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn hex_key(value: &str, what: &str) -> Result<[u8; 32], String> {
    parse_key_hex(value).ok_or_else(|| format!("{what} must be 64 hex digits"))
}

fn missing(what: &str, flag: &str, data_dir: &Path) -> String {
    format!(
        "no {what}: pass {flag}, or start the broker once on this machine (it generates {}) and \
         run the client from the same directory or with --data-dir",
        data_dir.join(SECRETS_FILE).display()
    )
}

/// The device key for `id` (see the module docs for the order).
pub fn device_key(
    config: &Config,
    data_dir: &Path,
    id: u32,
    key: Option<&str>,
    master: Option<&str>,
) -> Result<DeviceKey, String> {
    if let Some(k) = key {
        return Ok(DeviceKey(hex_key(k, "--key")?));
    }
    let derive = |m: [u8; 32]| derive_device_key(&MasterKey(m), id);
    if let Some(m) = master {
        return Ok(derive(hex_key(m, "--master-key")?));
    }
    let sec = &config.security;
    for (k, v) in &sec.device_keys {
        if crate::terminal::parse_id_bits(k) == Some(id) {
            return Ok(DeviceKey(hex_key(
                v.expose(),
                &format!("security.device_keys.{k}"),
            )?));
        }
    }
    if !sec.fleet_master_key.is_empty() {
        return Ok(derive(hex_key(
            sec.fleet_master_key.expose(),
            "security.fleet_master_key",
        )?));
    }
    let s = stored(data_dir)?;
    if s.fleet_master_key.is_empty() {
        return Err(missing("device key", "--key or --master-key", data_dir));
    }
    Ok(derive(hex_key(
        &s.fleet_master_key,
        "fleet_master_key in secrets.toml",
    )?))
}

/// The app token for `address` (see the module docs for the order).
pub fn phone_token(
    config: &Config,
    data_dir: &Path,
    address: Address,
    token: Option<&str>,
    token_secret: Option<&str>,
) -> Result<String, String> {
    if let Some(t) = token {
        return Ok(t.to_string());
    }
    let secret = if let Some(s) = token_secret {
        hex_key(s, "--token-secret")?
    } else if !config.security.token_secret.is_empty() {
        hex_key(
            config.security.token_secret.expose(),
            "security.token_secret",
        )?
    } else {
        let s = stored(data_dir)?;
        if s.token_secret.is_empty() {
            return Err(missing("token", "--token or --token-secret", data_dir));
        }
        hex_key(&s.token_secret, "token_secret in secrets.toml")?
    };
    let exp = crate::router::now_ms() / 1000 + 86_400;
    let claims = shared_protocol::json::Claims { address, exp };
    Ok(shared_protocol::json::mint(&secret, &claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::secrets::Secrets;

    #[test]
    fn reads_what_the_broker_generated_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::default();
        let e = device_key(&c, dir.path(), 42, None, None).unwrap_err();
        assert!(e.contains("secrets.toml"), "{e}");
        assert!(phone_token(&c, dir.path(), Address::phone(7), None, None).is_err());

        let (s, _) = Secrets::resolve(&c.security, dir.path()).unwrap();
        let k = device_key(&c, dir.path(), 42, None, None).unwrap();
        assert_eq!(k.0, derive_device_key(&MasterKey(s.fleet_master_key), 42).0);
        let t = phone_token(&c, dir.path(), Address::phone(7), None, None).unwrap();
        let claims = shared_protocol::json::verify(&s.token_secret, &t, 0).unwrap();
        assert_eq!(claims.address, Address::phone(7));

        assert_eq!(
            device_key(&c, dir.path(), 42, Some(&"ab".repeat(32)), None)
                .unwrap()
                .0,
            [0xab; 32]
        );
        let mut c2 = c.clone();
        c2.security
            .device_keys
            .insert("42".into(), Secret::new("cd".repeat(32)));
        assert_eq!(
            device_key(&c2, dir.path(), 42, None, None).unwrap().0,
            [0xcd; 32]
        );
        assert!(device_key(&c, dir.path(), 42, Some("xyz"), None).is_err());
        assert_eq!(
            phone_token(&c, dir.path(), Address::phone(7), Some("tok"), None).unwrap(),
            "tok"
        );
    }
}
