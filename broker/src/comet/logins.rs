//! Device LOGIN acceptance shared by the UDP and device WebSocket endpoints: the stateless
//! [`Acceptor`], device keys (explicit per-device keys win over derivation from the fleet master
//! key) and the table of last accepted login timestamps behind the `REPLAY` check
//! (docs/protocol.md section 3).
//!
//! The timestamp table is sharded by device id (64 `std::sync::Mutex` shards). The shard lock is
//! held for the whole synchronous `Acceptor::on_login` call (HMACs, HKDF, one seal: microseconds,
//! no `.await`), so the `REPLAY` comparison and the recording of the new timestamp are atomic even
//! when two endpoints accept LOGINs for the same device at once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use shared_protocol::handshake::{Accepted, Acceptor, LoginError, TerminalRecord, WelcomeParams};
use shared_protocol::ids::Address as WireAddress;
use shared_protocol::keys::{CookieSecret, DeviceKey, MasterKey, PeerAddr, derive_device_key};
use shared_protocol::packet::Login;

use crate::secrets::Secrets;
use crate::terminal::IdProfile;

const SHARDS: usize = 64;

/// What happened to a LOGIN.
#[derive(Debug)]
pub enum LoginOutcome<'o> {
    /// Accepted: register the session, then send `accepted.welcome`.
    Accepted(Accepted<'o>),
    /// Refused: send a REJECT with this error's code (if it has one).
    Refused(LoginError),
    /// A duplicate of the LOGIN accepted last for this device (same challenge timestamp): no
    /// answer, the first WELCOME is on its way.
    Duplicate,
}

/// Keys, acceptor and last-login table (see module docs).
pub struct Logins {
    acceptor: Acceptor,
    master: MasterKey,
    explicit: HashMap<u32, DeviceKey>,
    last: Box<[Mutex<HashMap<u32, u64>>]>,
}

impl Logins {
    /// Built from the resolved secrets and the ID profile.
    pub fn new(secrets: &Secrets, profile: IdProfile) -> Logins {
        Logins {
            acceptor: Acceptor::new(profile, CookieSecret(secrets.cookie_secret)),
            master: MasterKey(secrets.fleet_master_key),
            explicit: secrets
                .device_keys
                .iter()
                .map(|(id, k)| (*id, DeviceKey(*k)))
                .collect(),
            last: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// The stateless acceptor (for HELLOs).
    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }

    /// The key of device `id`.
    pub fn device_key(&self, id: u32) -> DeviceKey {
        self.explicit
            .get(&id)
            .cloned()
            .unwrap_or_else(|| derive_device_key(&self.master, id))
    }

    fn shard(&self, id: u32) -> MutexGuard<'_, HashMap<u32, u64>> {
        let i = (id.wrapping_mul(0x9E37_79B9) >> 26) as usize % SHARDS;
        self.last[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a LOGIN (section 3 order) and, when accepted, records its timestamp.
    pub fn on_login<'o>(
        &self,
        peer: &PeerAddr,
        packet: &[u8],
        now_ms: u64,
        session_id: u32,
        params: &WelcomeParams,
        out: &'o mut [u8],
    ) -> LoginOutcome<'o> {
        // The id is only known after decoding; decode once up front to pick the shard (the
        // acceptor decodes again and reports any error in spec order).
        let Ok(login) = Login::decode(packet) else {
            return match self.acceptor.on_login(
                peer,
                packet,
                now_ms,
                |_| None,
                session_id,
                params,
                out,
            ) {
                Ok(_) => LoginOutcome::Refused(LoginError::Malformed),
                Err(e) => LoginOutcome::Refused(e),
            };
        };
        let id = login.address.id;
        let mut shard = self.shard(id);
        let last = shard.get(&id).copied();
        let lookup = |a: WireAddress| {
            Some(TerminalRecord {
                key: self.device_key(a.id),
                last_login_ms: last,
            })
        };
        match self
            .acceptor
            .on_login(peer, packet, now_ms, lookup, session_id, params, out)
        {
            Ok(accepted) => {
                shard.insert(id, accepted.login_timestamp_ms);
                LoginOutcome::Accepted(accepted)
            }
            Err(LoginError::Replay) if last == Some(login.timestamp_ms) => LoginOutcome::Duplicate,
            Err(e) => LoginOutcome::Refused(e),
        }
    }
}

/// The metric label of a refused LOGIN.
pub fn failure_label(e: LoginError) -> &'static str {
    match e {
        LoginError::Dropped(_) => "dropped",
        LoginError::Malformed => "malformed",
        LoginError::InvalidId => "invalid_id",
        LoginError::KindMismatch => "kind_mismatch",
        LoginError::KindNotAllowed => "kind_not_allowed",
        LoginError::BadCookie => "bad_cookie",
        LoginError::CookieExpired => "cookie_expired",
        LoginError::UnknownTerminal => "unknown_terminal",
        LoginError::AuthFailed => "auth_failed",
        LoginError::Replay => "replay",
        LoginError::Internal(_) => "internal",
    }
}
