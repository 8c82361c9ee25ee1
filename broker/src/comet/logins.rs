//! Device LOGIN acceptance shared by the UDP and device WebSocket endpoints: the stateless
//! [`Acceptor`], device keys (explicit per-device keys win over derivation from the fleet master
//! key), the node's [`ChallengeClock`] that stamps every CHALLENGE, and the table of last
//! accepted logins behind the `REPLAY` check (docs/protocol.md section 3).
//!
//! The clock and the table work together: a LOGIN must carry a challenge timestamp strictly
//! greater than the last one accepted for its terminal, and the clock never stamps two
//! CHALLENGEs of one terminal alike, so logins of one device in the same millisecond are each
//! accepted (when answered in the order their CHALLENGEs were issued) while a copy of an
//! accepted LOGIN is still refused. Both are per node, which is enough: a LOGIN is only accepted
//! by the node whose cookie secret made its cookie.
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
//! The table forgets what it no longer needs: once a LOGIN's challenge is older than the
//! challenge lifetime, a copy of it fails the age check (step 4.3) before the `REPLAY` check, and
//! every LOGIN that can still pass the age check carries a newer timestamp. So an entry older
//! than the lifetime is dropped when its shard is next swept (at a LOGIN, at most once per
//! lifetime per shard), and the shard keeps the newest timestamp it dropped as a floor: a
//! device with no entry must still be stamped above it. With a wall clock that only moves
//! forward the floor never refuses a LOGIN the entry would have accepted; after the clock was
//! set back it refuses (`REPLAY`) what it cannot tell from a copy, as a kept entry would. The
//! table therefore holds the devices that logged in within the last lifetime (30 s), not every
//! device that ever logged in on this node.
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
    Accepted, Acceptor, HelloError, HelloReply, LoginError, SessionGrant, TerminalRecord,
    WelcomeParams,
};
use shared_protocol::ids::Address as WireAddress;
use shared_protocol::keys::{CookieSecret, DeviceKey, MasterKey, PeerAddr, derive_device_key};
use shared_protocol::limits::CHALLENGE_LIFETIME_MS;
use shared_protocol::packet::Login;

use super::challenge_clock::ChallengeClock;
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

/// The answer to a HELLO (see [`Logins::on_hello`]).
#[derive(Debug)]
pub struct HelloAnswer<'o> {
    /// The CHALLENGE or REJECT to send, or why the HELLO gets no answer.
    pub reply: Result<HelloReply<'o>, HelloError>,
    /// The CHALLENGE's timestamp came from a saturated slot of the challenge clock (it may
    /// repeat one this terminal already had): count it.
    pub clock_saturated: bool,
}

/// The LOGIN accepted last for a device: its challenge timestamp (the `REPLAY` bound) and the
/// first [`PROOF_KEPT`] bytes of its proof (which tell an exact copy from another LOGIN for the
/// same challenge).
///
/// Only the proof's first 4 bytes are kept. They decide nothing about acceptance: they are
/// compared only for a LOGIN already refused as `REPLAY` (its proof verified, its timestamp not
/// above the bound), to choose between silence (an exact copy, whose WELCOME is on its way) and
/// a `REPLAY` answer. Two valid proofs for the same challenge that agree in those 32 bits (a
/// 2^-32 chance for the rare device that answers one CHALLENGE twice with different contents)
/// leave the second unanswered, and the device tries again with a new HELLO.
#[derive(Clone, Copy, Debug)]
struct LastLogin {
    /// The challenge timestamp (wall-clock milliseconds).
    timestamp_ms: u64,
    /// The proof's first [`PROOF_KEPT`] bytes.
    proof: [u8; PROOF_KEPT],
}

/// How many bytes of an accepted LOGIN's proof [`LastLogin`] keeps.
const PROOF_KEPT: usize = 4;

impl LastLogin {
    fn new(timestamp_ms: u64, proof: &[u8; 32]) -> LastLogin {
        let mut kept = [0u8; PROOF_KEPT];
        kept.copy_from_slice(&proof[..PROOF_KEPT]);
        LastLogin {
            timestamp_ms,
            proof: kept,
        }
    }

    /// Whether a LOGIN with this timestamp and proof is a copy of this one.
    fn is_copy(&self, timestamp_ms: u64, proof: &[u8; 32]) -> bool {
        self.timestamp_ms == timestamp_ms && self.proof[..] == proof[..PROOF_KEPT]
    }
}

/// A [`LastLogin`] as its shard's table keeps it, for every device that logged in on this node
/// within the challenge lifetime (see the module docs), so laid out small: the timestamp as
/// milliseconds above its shard's base, so with its key one 12 B slot of the table
/// (docs/performance.md, "Memory per session").
#[derive(Clone, Copy)]
struct Row {
    /// The challenge timestamp minus the shard's `base_ms`.
    offset_ms: u32,
    /// The proof's first [`PROOF_KEPT`] bytes.
    proof: [u8; PROOF_KEPT],
}

impl Row {
    /// The challenge timestamp, given its shard's base.
    fn timestamp_ms(&self, base_ms: u64) -> u64 {
        base_ms + u64::from(self.offset_ms)
    }
}

/// One shard of the last-login table: the devices that logged in within the challenge lifetime,
/// and the floor left by those forgotten since (see the module docs).
#[derive(Default)]
struct LastLogins {
    by_id: HashMap<u32, Row>,
    /// What the rows' offsets count from: at or below every row's timestamp, and within 2^32 ms
    /// (49 days) of each (moved by [`LastLogins::insert`] when a timestamp falls outside).
    base_ms: u64,
    /// The newest challenge timestamp dropped from this shard (0: none yet).
    floor_ms: u64,
    /// When this shard was last swept (wall-clock ms; 0: never).
    swept_ms: u64,
}

impl LastLogins {
    /// The last LOGIN accepted for `id` while it is remembered.
    fn get(&self, id: u32) -> Option<LastLogin> {
        self.by_id.get(&id).map(|r| LastLogin {
            timestamp_ms: r.timestamp_ms(self.base_ms),
            proof: r.proof,
        })
    }

    /// What a LOGIN must be stamped above, given its device's `last` accepted LOGIN (from
    /// [`LastLogins::get`]): that LOGIN's timestamp, else the shard's floor (`None` while
    /// nothing was ever dropped).
    fn bound_ms(&self, last: Option<LastLogin>) -> Option<u64> {
        last.map(|l| l.timestamp_ms)
            .or((self.floor_ms > 0).then_some(self.floor_ms))
    }

    /// Records an accepted LOGIN of `id`.
    fn insert(&mut self, id: u32, login: LastLogin) {
        let t = login.timestamp_ms;
        if t < self.base_ms || t - self.base_ms > u64::from(u32::MAX) {
            self.rebase(t);
        }
        let offset_ms = u32::try_from(t - self.base_ms).unwrap_or(u32::MAX);
        self.by_id.insert(
            id,
            Row {
                offset_ms,
                proof: login.proof,
            },
        );
    }

    /// Moves the base so that `t` fits: to the oldest of `t` and the rows, or to `t` when that
    /// oldest lies more than 2^32 ms below it. Rows that then do not fit (more than 2^32 ms
    /// from the base: older than any sweep leaves, or newer than `t` by that much because the
    /// wall clock was set back) are dropped into the floor, as a sweep drops expired rows (a
    /// device with no row must be stamped above it; see the module docs on a clock set back).
    /// With the wall clock moving forward no live row is dropped: [`Logins::on_login`] sweeps
    /// the shard first, which leaves only rows within two lifetimes of `t`.
    fn rebase(&mut self, t: u64) {
        let oldest = self
            .by_id
            .values()
            .map(|r| r.timestamp_ms(self.base_ms))
            .min()
            .map_or(t, |o| o.min(t));
        let base = if t - oldest > u64::from(u32::MAX) {
            t
        } else {
            oldest
        };
        self.retain_rows(
            |ts, r| match ts.checked_sub(base).and_then(|o| u32::try_from(o).ok()) {
                Some(o) => {
                    r.offset_ms = o;
                    true
                }
                None => false,
            },
        );
        self.base_ms = base;
    }

    /// Keeps the rows `keep` says yes to (given each row's timestamp; it may change the row)
    /// and raises the floor to the newest timestamp of those it drops.
    fn retain_rows(&mut self, mut keep: impl FnMut(u64, &mut Row) -> bool) {
        let base = self.base_ms;
        let mut floor = self.floor_ms;
        self.by_id.retain(|_, r| {
            let ts = r.timestamp_ms(base);
            let kept = keep(ts, r);
            if !kept {
                floor = floor.max(ts);
            }
            kept
        });
        self.floor_ms = floor;
    }

    /// Drops the entries whose challenge is past its lifetime at `now_ms`, raising the floor to
    /// the newest of them; does nothing if the shard was swept less than a lifetime ago.
    fn forget_expired(&mut self, now_ms: u64) {
        if self.swept_ms != 0 && now_ms.saturating_sub(self.swept_ms) < CHALLENGE_LIFETIME_MS {
            return;
        }
        self.swept_ms = now_ms;
        self.retain_rows(|t, _| t.saturating_add(CHALLENGE_LIFETIME_MS) >= now_ms);
        // Give the memory back once the table is mostly empty (a login burst has passed).
        if self.by_id.len() < self.by_id.capacity() / 4 {
            self.by_id.shrink_to(self.by_id.len());
        }
    }
}

/// Draws this node's cookie secret from the OS CSPRNG (once, when the node starts).
pub fn node_cookie_secret() -> Result<CookieSecret, rand::rand_core::OsError> {
    let mut secret = [0u8; 32];
    OsRng.try_fill_bytes(&mut secret)?;
    Ok(CookieSecret(secret))
}

/// Keys, acceptor, challenge clock and last-login table (see module docs).
pub struct Logins {
    acceptor: Acceptor,
    clock: ChallengeClock,
    master: MasterKey,
    explicit: HashMap<u32, DeviceKey>,
    last: Box<[Mutex<LastLogins>]>,
}

impl Logins {
    /// Built from the resolved secrets, the ID profile and this node's cookie secret (from
    /// [`node_cookie_secret`]; tests may pass their own).
    pub fn new(secrets: &Secrets, profile: IdProfile, cookie_secret: CookieSecret) -> Logins {
        Logins {
            acceptor: Acceptor::new(profile, cookie_secret),
            clock: ChallengeClock::new(),
            master: MasterKey(secrets.fleet_master_key),
            explicit: secrets
                .device_keys
                .iter()
                .map(|(id, k)| (*id, DeviceKey(*k)))
                .collect(),
            last: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Answers a HELLO received at wall-clock time `now_ms`: a CHALLENGE stamped by the node's
    /// challenge clock (never the same timestamp twice for one terminal, see
    /// [`ChallengeClock`]), or a REJECT, or nothing. Keeps no state for the HELLO beyond the
    /// clock's slot.
    pub fn on_hello<'o>(
        &self,
        peer: &PeerAddr,
        packet: &[u8],
        now_ms: u64,
        out: &'o mut [u8],
    ) -> HelloAnswer<'o> {
        let mut clock_saturated = false;
        let reply = self.acceptor.on_hello_stamped(
            peer,
            packet,
            |a| {
                let stamp = self.clock.stamp(a.id, now_ms);
                clock_saturated = stamp.saturated;
                stamp.timestamp_ms
            },
            out,
        );
        HelloAnswer {
            reply,
            clock_saturated,
        }
    }

    /// The key of device `id`.
    pub fn device_key(&self, id: u32) -> DeviceKey {
        self.explicit
            .get(&id)
            .cloned()
            .unwrap_or_else(|| derive_device_key(&self.master, id))
    }

    /// Which shard of the last-login table holds device `id`.
    fn shard_index(id: u32) -> usize {
        (id.wrapping_mul(0x9E37_79B9) >> 26) as usize % SHARDS
    }

    fn shard(&self, id: u32) -> MutexGuard<'_, LastLogins> {
        self.last[Self::shard_index(id)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
        shard.forget_expired(now_ms);
        let last = shard.get(id);
        let bound = shard.bound_ms(last);
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
                last_login_ms: bound,
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
                    LastLogin::new(accepted.login_timestamp_ms, &login.proof),
                );
                LoginOutcome::Accepted(accepted)
            }
            Err(LoginError::Replay)
                if last.is_some_and(|l| l.is_copy(login.timestamp_ms, &login.proof)) =>
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

#[cfg(test)]
mod tests {
    use shared_protocol::handshake::{ClientEvent, ClientHandshake};
    use shared_protocol::ids::Address;
    use shared_protocol::limits::{CHALLENGE_LIFETIME_MS, MAX_PACKET};

    use super::*;
    use crate::secret::Secret;

    const PEER: PeerAddr = PeerAddr::V4([127, 0, 0, 1], 4000);
    const PARAMS: WelcomeParams = WelcomeParams {
        heartbeat_secs: 30,
        session_timeout_secs: 90,
        max_payload: 1024,
        server_time_ms: 0,
    };

    fn logins() -> Logins {
        let secrets = Secrets {
            fleet_master_key: [0x5a; 32],
            device_keys: HashMap::new(),
            token_secret: [0; 32],
            api_token: Secret::new("t"),
        };
        Logins::new(&secrets, IdProfile::Plug, CookieSecret([0x42; 32]))
    }

    /// HELLO -> CHALLENGE for device `id` at `now`: the device (waiting for its CHALLENGE) and
    /// the CHALLENGE bytes.
    fn challenge(logins: &Logins, id: u32, nonce: u8, now: u64) -> (ClientHandshake, Vec<u8>) {
        let mut dev = ClientHandshake::new(Address::device(id), logins.device_key(id), 0, 1);
        let mut buf = [0u8; MAX_PACKET];
        let hello = dev.start(now, [nonce; 16], &mut buf).unwrap().to_vec();
        let mut out = [0u8; MAX_PACKET];
        let answer = logins.on_hello(&PEER, &hello, now, &mut out);
        assert!(!answer.clock_saturated);
        match answer.reply {
            Ok(HelloReply::Challenge(p)) => (dev, p.to_vec()),
            other => panic!("{other:?}"),
        }
    }

    /// The device's LOGIN answering `challenge`.
    fn login_for(dev: &mut ClientHandshake, challenge: &[u8]) -> Vec<u8> {
        let mut ch = challenge.to_vec();
        let mut out = [0u8; MAX_PACKET];
        match dev.on_packet(&mut ch, &mut out).unwrap() {
            ClientEvent::Send(p) => p.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    /// What `logins` makes of `login` at `now`: the accepted timestamp, or the outcome's name.
    fn outcome(logins: &Logins, login: &[u8], now: u64) -> Result<u64, String> {
        let mut out = [0u8; MAX_PACKET];
        match logins.on_login(&PEER, login, now, 1, &PARAMS, || true, &mut out) {
            LoginOutcome::Accepted(a) => Ok(a.login_timestamp_ms),
            LoginOutcome::Refused(e) => Err(format!("{e:?}")),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn many_challenges_in_one_millisecond_each_log_in_and_a_used_proof_stays_refused() {
        let logins = logins();
        let now = 1_700_000_000_000;
        // Twenty HELLOs of one device answered in one (injected) millisecond.
        let mut pending: Vec<_> = (0..20u8).map(|i| challenge(&logins, 77, i, now)).collect();
        let mut accepted = Vec::new();
        let mut used = Vec::new();
        for (dev, ch) in &mut pending {
            let login = login_for(dev, ch);
            // Each LOGIN is accepted, still in the same millisecond.
            accepted.push(outcome(&logins, &login, now).unwrap());
            used.push(login);
        }
        assert_eq!(accepted, (now..now + 20).collect::<Vec<_>>());
        // A copy of any earlier accepted LOGIN is REPLAY; a copy of the last one is the
        // retransmission the broker does not answer.
        for login in &used[..19] {
            assert_eq!(outcome(&logins, login, now), Err("Replay".into()));
        }
        assert_eq!(outcome(&logins, &used[19], now), Err("Duplicate".into()));
        // A challenge answered after a newer one was accepted is REPLAY: strictly newer only.
        let (mut a, ch_a) = challenge(&logins, 77, 100, now);
        let (mut b, ch_b) = challenge(&logins, 77, 101, now);
        let (la, lb) = (login_for(&mut a, &ch_a), login_for(&mut b, &ch_b));
        assert_eq!(outcome(&logins, &lb, now), Ok(now + 21));
        assert_eq!(outcome(&logins, &la, now), Err("Replay".into()));
    }

    impl Logins {
        /// Devices in the last-login table.
        fn remembered(&self) -> usize {
            self.last
                .iter()
                .map(|s| s.lock().unwrap().by_id.len())
                .sum()
        }
    }

    #[test]
    fn a_login_past_its_challenge_lifetime_is_forgotten_and_its_copy_still_refused() {
        let logins = logins();
        let now = 1_700_000_000_000;
        let (mut dev, ch) = challenge(&logins, 5, 0, now);
        let first = login_for(&mut dev, &ch);
        assert_eq!(outcome(&logins, &first, now), Ok(now));
        // Within the lifetime the entry answers copies (and is swept at most once a lifetime).
        assert_eq!(outcome(&logins, &first, now + 10), Err("Duplicate".into()));
        assert_eq!(logins.remembered(), 1);
        // One lifetime on, another device of the same shard logs in: the shard is swept.
        let later = now + CHALLENGE_LIFETIME_MS + 1;
        let neighbour = (6..)
            .find(|&id| Logins::shard_index(id) == Logins::shard_index(5))
            .unwrap();
        let (mut other, ch) = challenge(&logins, neighbour, 0, later);
        assert_eq!(
            outcome(&logins, &login_for(&mut other, &ch), later),
            Ok(later)
        );
        assert_eq!(logins.remembered(), 1, "only the new login is kept");
        // The forgotten LOGIN is still refused (its challenge expired), and the device logs in
        // again with a new one.
        assert_eq!(outcome(&logins, &first, later), Err("CookieExpired".into()));
        let (mut dev2, ch) = challenge(&logins, 5, 1, later);
        assert_eq!(
            outcome(&logins, &login_for(&mut dev2, &ch), later),
            Ok(later)
        );
    }

    #[test]
    fn after_the_clock_is_set_back_a_login_stamped_below_a_forgotten_one_is_refused() {
        let logins = logins();
        let now = 1_700_000_000_000;
        let (mut dev, ch) = challenge(&logins, 5, 0, now);
        assert_eq!(outcome(&logins, &login_for(&mut dev, &ch), now), Ok(now));
        // Forgotten at the next sweep of its shard.
        let later = now + CHALLENGE_LIFETIME_MS + 1;
        let mut same_shard = (6..).filter(|&id| Logins::shard_index(id) == Logins::shard_index(5));
        let (a, b) = (same_shard.next().unwrap(), same_shard.next().unwrap());
        let (mut dev_a, ch) = challenge(&logins, a, 0, later);
        assert_eq!(
            outcome(&logins, &login_for(&mut dev_a, &ch), later),
            Ok(later)
        );
        // The wall clock goes back before the forgotten login: a challenge stamped at or below
        // it could be a copy's, so it is refused as the kept entry would have refused it.
        let back = now - 5;
        let (mut dev_b, ch) = challenge(&logins, b, 0, back);
        assert_eq!(
            outcome(&logins, &login_for(&mut dev_b, &ch), back),
            Err("Replay".into())
        );
        // Once the clock has passed the floor again, the same device logs in.
        let (mut dev_b, ch) = challenge(&logins, b, 1, now + 1);
        assert_eq!(
            outcome(&logins, &login_for(&mut dev_b, &ch), now + 1),
            Ok(now + 1)
        );
    }

    #[test]
    fn a_login_burst_s_table_is_given_back_after_the_lifetime() {
        let logins = logins();
        let now = 1_700_000_000_000;
        for id in 1..=2_000u32 {
            // (Devices sharing a challenge-clock slot are stamped a millisecond apart.)
            let (mut dev, ch) = challenge(&logins, id, 0, now);
            assert!(outcome(&logins, &login_for(&mut dev, &ch), now).is_ok());
        }
        assert_eq!(logins.remembered(), 2_000);
        let capacity = |l: &Logins| -> usize {
            l.last
                .iter()
                .map(|s| s.lock().unwrap().by_id.capacity())
                .sum()
        };
        assert!(capacity(&logins) >= 2_000);
        // A lifetime after the last stamp, one login in each shard sweeps it.
        let later = now + CHALLENGE_LIFETIME_MS + 10;
        let mut swept = [false; SHARDS];
        for id in 10_001.. {
            let shard = Logins::shard_index(id);
            if swept[shard] {
                continue;
            }
            swept[shard] = true;
            let (mut dev, ch) = challenge(&logins, id, 0, later);
            assert!(outcome(&logins, &login_for(&mut dev, &ch), later).is_ok());
            if swept.iter().all(|s| *s) {
                break;
            }
        }
        assert_eq!(logins.remembered(), SHARDS);
        assert!(
            capacity(&logins) <= 4 * SHARDS,
            "the burst's slots were given back: {}",
            capacity(&logins)
        );
    }

    #[test]
    fn a_device_s_last_login_is_one_12_byte_slot() {
        // Every device that logged in on this node holds one slot (id and last login).
        assert_eq!(std::mem::size_of::<(u32, Row)>(), 12);
        let proof = std::array::from_fn::<u8, 32, _>(|i| i as u8);
        let l = LastLogin::new(1_700_000_000_123, &proof);
        let mut shard = LastLogins::default();
        shard.insert(5, l);
        let got = shard.get(5).unwrap();
        assert_eq!(got.timestamp_ms, 1_700_000_000_123);
        assert!(got.is_copy(1_700_000_000_123, &proof));
        assert!(l.is_copy(1_700_000_000_123, &proof));
        assert!(!l.is_copy(1_700_000_000_124, &proof));
        let mut other = proof;
        other[PROOF_KEPT - 1] ^= 1;
        assert!(!l.is_copy(1_700_000_000_123, &other));
    }

    #[test]
    fn rows_keep_their_timestamps_when_the_base_moves() {
        let proof = [7u8; 32];
        let t = 1_700_000_000_000;
        let mut shard = LastLogins::default();
        shard.insert(1, LastLogin::new(t, &proof));
        // An older challenge answered later moves the base down; both rows keep their times.
        shard.insert(2, LastLogin::new(t - 20_000, &proof));
        assert_eq!(shard.get(1).unwrap().timestamp_ms, t);
        assert_eq!(shard.get(2).unwrap().timestamp_ms, t - 20_000);
        // A day on, the base stays and the new row fits beside the old ones.
        let day = t + 86_400_000;
        shard.insert(3, LastLogin::new(day, &proof));
        assert_eq!(shard.get(2).unwrap().timestamp_ms, t - 20_000);
        assert_eq!(shard.get(3).unwrap().timestamp_ms, day);
        // 60 days on (a sweep drops rows this old before, in practice), rows beyond the
        // offsets' range go into the floor, far below any challenge still in its lifetime.
        let later = t + 60 * 86_400_000;
        shard.insert(4, LastLogin::new(later, &proof));
        assert_eq!(shard.get(4).unwrap().timestamp_ms, later);
        assert_eq!(shard.get(1).map(|l| l.timestamp_ms), None);
        assert_eq!(shard.floor_ms, day);
    }

    #[test]
    fn a_clock_set_back_past_the_offsets_range_drops_newer_rows_into_the_floor() {
        let proof = [9u8; 32];
        let t = 1_700_000_000_000;
        let mut shard = LastLogins::default();
        shard.insert(1, LastLogin::new(t, &proof));
        let back = t - 50 * 86_400_000;
        shard.insert(2, LastLogin::new(back, &proof));
        assert_eq!(shard.get(1).map(|l| l.timestamp_ms), None, "dropped");
        assert_eq!(shard.get(2).unwrap().timestamp_ms, back);
        // A device with no row must be stamped above the dropped one's timestamp.
        assert_eq!(shard.bound_ms(shard.get(1)), Some(t));
    }

    #[test]
    fn a_challenge_stamped_ahead_of_the_wall_clock_keeps_its_full_lifetime() {
        let logins = logins();
        let now = 5_000_000;
        for i in 0..10u8 {
            challenge(&logins, 9, i, now);
        }
        // Ten milliseconds ahead of the wall clock.
        let (mut dev, ch) = challenge(&logins, 9, 10, now);
        let login = login_for(&mut dev, &ch);
        let stamped = now + 10;
        // The age check counts from the stamped time: still good CHALLENGE_LIFETIME after it,
        // expired one millisecond later.
        let late = stamped + CHALLENGE_LIFETIME_MS;
        assert_eq!(
            outcome(&logins, &login, late + 1),
            Err("CookieExpired".into())
        );
        assert_eq!(outcome(&logins, &login, late), Ok(stamped));
    }

    #[test]
    fn other_devices_keep_the_wall_clock_while_one_logs_in_repeatedly() {
        let logins = logins();
        let now = 8_000;
        for i in 0..5u8 {
            let (mut dev, ch) = challenge(&logins, 21, i, now);
            let login = login_for(&mut dev, &ch);
            assert_eq!(outcome(&logins, &login, now), Ok(now + u64::from(i)));
        }
        let (mut dev, ch) = challenge(&logins, 22, 0, now);
        assert_eq!(outcome(&logins, &login_for(&mut dev, &ch), now), Ok(now));
    }
}
