//! Device LOGIN acceptance shared by the UDP and device WebSocket endpoints: the stateless
//! [`Acceptor`], device keys (explicit per-device keys win over derivation from the fleet master
//! key) and the table of last accepted logins behind the `REPLAY` check (docs/protocol.md
//! section 3).
//!
//! Randomness: the cookie secret is this node's own, drawn from the OS CSPRNG when the node starts
//! ([`node_cookie_secret`]), never stored or shared, so a LOGIN is only accepted by the node (and
//! the process) that answered its HELLO: a copy sent to another node or after a restart gets
//! `BAD_COOKIE`, and the per-node table below refuses a copy sent to this live node (`REPLAY`).
//! Each accepted LOGIN gets a fresh broker nonce from the OS CSPRNG, an input of its session keys.
//!
//! Login rate: the per-address allowance (`limits.login_attempts_per_ip_per_sec`) is charged by
//! the `admit` gate [`Logins::on_login`] takes, which runs only once the LOGIN's cookie and its
//! age have proven that the sender receives packets at its source address, and before the
//! proof is checked. So LOGINs with forged source addresses (which cannot carry a valid cookie)
//! never use up a victim address's allowance, while password-guessing from a real address is
//! still limited.
//!
//! The timestamp table is sharded by device id (64 `std::sync::Mutex` shards). The shard lock is
//! held for the whole synchronous `Acceptor::on_login` call (HMACs, HKDF, one seal: microseconds,
//! no `.await`), so the `REPLAY` comparison and the recording of the new timestamp are atomic even
//! when two endpoints accept LOGINs for the same device at once. The `admit` gate runs under that lock
//! and takes the login limiter's shard lock inside it; nothing takes them in the other order.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use rand::TryRngCore;
use rand::rngs::OsRng;
use shared_protocol::handshake::{
    Accepted, Acceptor, LoginError, SessionGrant, TerminalRecord, WelcomeParams,
};
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
    /// An exact copy of the LOGIN accepted last for this device (same challenge timestamp and
    /// proof): no answer, the first WELCOME is on its way.
    Duplicate,
    /// The OS random generator failed to give a broker nonce: answer `INTERNAL`.
    NoRandomness,
    /// The cookie proved the source address, and that address is over its login rate: answer
    /// `RATE_LIMITED` (nothing else was checked or recorded).
    RateLimited,
}

/// The LOGIN accepted last for a device: its challenge timestamp (the `REPLAY` bound) and its
/// proof (which tells an exact copy from another LOGIN for the same challenge).
#[derive(Clone, Copy)]
struct LastLogin {
    timestamp_ms: u64,
    proof: [u8; 32],
}

/// Draws this node's cookie secret from the OS CSPRNG (once, when the node starts).
pub fn node_cookie_secret() -> Result<CookieSecret, rand::rand_core::OsError> {
    let mut secret = [0u8; 32];
    OsRng.try_fill_bytes(&mut secret)?;
    Ok(CookieSecret(secret))
}

/// Keys, acceptor and last-login table (see module docs).
pub struct Logins {
    acceptor: Acceptor,
    master: MasterKey,
    explicit: HashMap<u32, DeviceKey>,
    last: Box<[Mutex<HashMap<u32, LastLogin>>]>,
}

impl Logins {
    /// Built from the resolved secrets, the ID profile and this node's cookie secret (from
    /// [`node_cookie_secret`]; tests may pass their own).
    pub fn new(secrets: &Secrets, profile: IdProfile, cookie_secret: CookieSecret) -> Logins {
        Logins {
            acceptor: Acceptor::new(profile, cookie_secret),
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

    fn shard(&self, id: u32) -> MutexGuard<'_, HashMap<u32, LastLogin>> {
        let i = (id.wrapping_mul(0x9E37_79B9) >> 26) as usize % SHARDS;
        self.last[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a LOGIN (section 3 order) and, when accepted, records its timestamp and proof.
    /// The session keys take a fresh broker nonce from the OS CSPRNG. `admit` charges the
    /// source address's login rate; it is called only after the cookie check passed (see the
    /// module docs), and `false` ends the check with [`LoginOutcome::RateLimited`].
    #[allow(clippy::too_many_arguments)]
    pub fn on_login<'o>(
        &self,
        peer: &PeerAddr,
        packet: &[u8],
        now_ms: u64,
        session_id: u32,
        params: &WelcomeParams,
        admit: impl FnOnce() -> bool,
        out: &'o mut [u8],
    ) -> LoginOutcome<'o> {
        let mut broker_nonce = [0u8; 16];
        if OsRng.try_fill_bytes(&mut broker_nonce).is_err() {
            return LoginOutcome::NoRandomness;
        }
        let grant = SessionGrant {
            session_id,
            broker_nonce,
        };
        // The id is only known after decoding; decode once up front to pick the shard (the
        // acceptor decodes again and reports any error in spec order).
        let Ok(login) = Login::decode(packet) else {
            return match self
                .acceptor
                .on_login(peer, packet, now_ms, |_| None, grant, params, out)
            {
                Ok(_) => LoginOutcome::Refused(LoginError::Malformed),
                Err(e) => LoginOutcome::Refused(e),
            };
        };
        let id = login.address.id;
        let mut shard = self.shard(id);
        let last = shard.get(&id).copied();
        // The acceptor looks the key up only after the cookie and its age checked out: that is
        // where the source address is proven and the rate is charged.
        let mut rate_limited = false;
        let lookup = |a: WireAddress| {
            if !admit() {
                rate_limited = true;
                return None;
            }
            Some(TerminalRecord {
                key: self.device_key(a.id),
                last_login_ms: last.map(|l| l.timestamp_ms),
            })
        };
        let result = self
            .acceptor
            .on_login(peer, packet, now_ms, lookup, grant, params, out);
        if rate_limited {
            return LoginOutcome::RateLimited;
        }
        match result {
            Ok(accepted) => {
                shard.insert(
                    id,
                    LastLogin {
                        timestamp_ms: accepted.login_timestamp_ms,
                        proof: login.proof,
                    },
                );
                LoginOutcome::Accepted(accepted)
            }
            Err(LoginError::Replay)
                if last.is_some_and(|l| {
                    l.timestamp_ms == login.timestamp_ms && l.proof == login.proof
                }) =>
            {
                LoginOutcome::Duplicate
            }
            Err(e) => LoginOutcome::Refused(e),
        }
    }
}

/// The metric label of a refused LOGIN.
/// The terminal a LOGIN packet names, unverified (for the refusal log line); `None` when the
/// packet does not decode.
pub fn claimed_terminal(packet: &[u8]) -> Option<crate::terminal::Address> {
    Login::decode(packet).ok().map(|l| l.address)
}

/// The `reason` label of a refused login (`broker_login_failures_total`, refusal log line).
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
