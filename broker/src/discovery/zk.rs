//! ZooKeeper session helpers shared by [`super::ZkDiscovery`] and the rmqkeeper
//! ([`crate::keeper`]): connecting with a bounded wait, recognising a dead session, making
//! directories, and (re)creating an ephemeral znode owned by the current session.
//!
//! A [`Client`] whose session expired never recovers: every call fails with `SessionExpired`.
//! Callers drop it, build a new one with [`connect`] and re-create their ephemeral znodes.
//!
//! Access control: with [`ZkSettings::auth`] set, the session adds `digest` auth on connect and
//! every znode this module creates (directories and ephemerals) carries the ACL
//! `auth::ALL` ([`Acls::creator_all`]), which ZooKeeper expands to
//! `digest:<user>:base64(sha1(<user>:<password>))` with all permissions. There is no world
//! READ: every reader (comet, msgbus, rmqkeeper) authenticates with the same credentials, so an
//! anonymous client can neither list, read, create under nor change the project's znodes.
//! Without credentials znodes are world-writable (`world:anyone` ALL); cluster roles refuse to
//! start that way.

use std::fmt;
use std::time::Duration;

use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, SessionState};

/// Digest credentials (`user:password`) of the project's ZooKeeper identity (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct ZkAuth(String);

impl ZkAuth {
    /// Parses `user:password` (both non-empty); `None` otherwise.
    pub fn parse(s: &str) -> Option<ZkAuth> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Some(ZkAuth(s.to_string()))
            }
            _ => None,
        }
    }

    /// The digest user (safe to log).
    pub fn user(&self) -> &str {
        self.0.split_once(':').map_or("", |(u, _)| u)
    }
}

impl fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZkAuth({}:<redacted>)", self.user())
    }
}

/// Where and how to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkSettings {
    /// Connect string, `host:port[,host:port...]`.
    pub servers: String,
    /// Session timeout asked for (the server may clamp it).
    pub session_timeout: Duration,
    /// Digest credentials added on connect; znodes are then created readable and writable by
    /// this identity only (module docs). `None`: open ACLs.
    pub auth: Option<ZkAuth>,
}

/// The ACL of every znode created by a session with these credentials (module docs).
fn acls(client_auth: bool) -> Acls<'static> {
    if client_auth {
        Acls::creator_all()
    } else {
        Acls::anyone_all()
    }
}

/// Connects a new session, giving up after one pass over the servers (no endless wait when the
/// ensemble is down: the caller retries with its own backoff and keeps serving meanwhile).
pub async fn connect(settings: &ZkSettings) -> Result<Client, ZkError> {
    let mut connector = Client::connector();
    connector = connector
        .with_session_timeout(settings.session_timeout)
        .with_fail_eagerly();
    if let Some(auth) = &settings.auth {
        connector = connector.with_auth("digest", auth.0.as_bytes());
    }
    let attempt = connector.connect(&settings.servers);
    // fail_eagerly covers refused connections; the timeout covers black-holed servers.
    match tokio::time::timeout(settings.session_timeout + Duration::from_secs(1), attempt).await {
        Ok(r) => r,
        Err(_) => Err(ZkError::Timeout),
    }
}

/// Whether the session can never be used again (expired, closed, auth failed).
pub fn is_dead(state: SessionState) -> bool {
    matches!(
        state,
        SessionState::Expired | SessionState::Closed | SessionState::AuthFailed
    )
}

/// Whether an operation error means the session is gone for good.
pub fn is_session_error(e: &ZkError) -> bool {
    matches!(
        e,
        ZkError::SessionExpired | ZkError::ClientClosed | ZkError::AuthFailed
    )
}

/// `mkdir -p` of persistent directories, with the ACL for `settings` (module docs).
/// Directories that already exist keep their ACL.
pub async fn mkdir_p(client: &Client, settings: &ZkSettings, path: &str) -> Result<(), ZkError> {
    client
        .mkdir(
            path,
            &CreateMode::Persistent.with_acls(acls(settings.auth.is_some())),
        )
        .await
}

/// What [`ensure_ephemeral`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// The znode was created.
    Created,
    /// It already belonged to this session; its data was updated.
    Updated,
    /// A znode left by another session (e.g. this process before a crash, still within its
    /// session timeout) was deleted and re-created.
    Replaced(i64),
}

/// Makes `path` an ephemeral znode of this session holding `data` (parent directories are
/// created), with the ACL for `settings` (module docs).
pub async fn ensure_ephemeral(
    client: &Client,
    settings: &ZkSettings,
    path: &str,
    data: &[u8],
) -> Result<Ensured, ZkError> {
    let opts = CreateMode::Ephemeral.with_acls(acls(settings.auth.is_some()));
    let mut replaced = None;
    for _ in 0..3 {
        match client.create(path, data, &opts).await {
            Ok(_) => return Ok(replaced.map_or(Ensured::Created, Ensured::Replaced)),
            Err(ZkError::NoNode) => {
                if let Some((parent, _)) = path.rsplit_once('/')
                    && !parent.is_empty()
                {
                    mkdir_p(client, settings, parent).await?;
                }
            }
            Err(ZkError::NodeExists) => match client.check_stat(path).await? {
                Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
                    client.set_data(path, data, None).await?;
                    return Ok(Ensured::Updated);
                }
                Some(stat) => {
                    match client.delete(path, Some(stat.version)).await {
                        Ok(()) | Err(ZkError::NoNode) => {}
                        Err(ZkError::BadVersion) => continue,
                        Err(e) => return Err(e),
                    }
                    replaced = Some(stat.ephemeral_owner);
                }
                None => {}
            },
            Err(e) => return Err(e),
        }
    }
    Err(ZkError::NodeExists)
}

/// Deletes `path` if it is an ephemeral of this session; `Ok(false)` if it was not there or not ours.
pub async fn delete_own(client: &Client, path: &str) -> Result<bool, ZkError> {
    match client.check_stat(path).await? {
        Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
            match client.delete(path, Some(stat.version)).await {
                Ok(()) => Ok(true),
                Err(ZkError::NoNode) => Ok(false),
                Err(e) => Err(e),
            }
        }
        _ => Ok(false),
    }
}

/// The children of `dir` with their data, as `(name, data)`: empty when `dir` does not exist;
/// a child deleted between the listing and its read is left out.
pub async fn children_with_data(
    client: &Client,
    dir: &str,
) -> Result<Vec<(String, Vec<u8>)>, ZkError> {
    let children = match client.list_children(dir).await {
        Ok(c) => c,
        Err(ZkError::NoNode) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(children.len());
    for name in children {
        match client.get_data(&format!("{dir}/{name}")).await {
            Ok((data, _)) => out.push((name, data)),
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Exponential retry delay: `base * 2^attempt`, capped.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `base` up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay (and advances).
    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to the base delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn zk_auth_needs_user_and_password_and_is_redacted() {
        let a = ZkAuth::parse("plugcloud:s3cret").unwrap();
        assert_eq!(a.user(), "plugcloud");
        assert_eq!(format!("{a:?}"), "ZkAuth(plugcloud:<redacted>)");
        for bad in ["", "user", ":pw", "user:"] {
            assert_eq!(ZkAuth::parse(bad), None, "{bad}");
        }
        assert_eq!(acls(true), Acls::creator_all());
        assert_eq!(acls(false), Acls::anyone_all());
    }

    #[test]
    fn dead_states_and_errors() {
        assert!(is_dead(SessionState::Expired));
        assert!(is_dead(SessionState::Closed));
        assert!(!is_dead(SessionState::Disconnected));
        assert!(!is_dead(SessionState::SyncConnected));
        assert!(is_session_error(&ZkError::SessionExpired));
        assert!(!is_session_error(&ZkError::ConnectionLoss));
    }
}
