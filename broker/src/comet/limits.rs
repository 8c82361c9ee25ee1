//! Admission limits shared by every comet endpoint: connections in total and per client IP
//! ([`ConnLimiter`], config `limits.max_connections` / `limits.max_connections_per_ip`) and login
//! attempts per client IP per second ([`LoginLimiter`], `limits.login_attempts_per_ip_per_sec`).
//!
//! A refused WebSocket connection is answered (a close frame with the refusing limit) only while
//! fewer than `limits.max_pending_refusals` other refusals are being answered
//! ([`ConnLimiter::try_refusal`]); beyond that it is closed at once without an answer. So a
//! connection flood holds at most `max_connections + max_pending_refusals` sockets, whatever
//! its rate: file descriptors are never exhausted by connections the broker refuses.
//!
//! Both are sharded by IP (16 `std::sync::Mutex` shards); every critical section is one hash-map
//! operation (or an amortised prune, see [`LoginLimiter`]) and no lock is held across
//! `.await`. A UDP session counts as a connection, under its peer's current address (a session
//! that moves takes its count along, [`ConnLimiter::moved`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::budget::TokenBucket;

const SHARDS: usize = 16;

/// Which connection limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnLimit {
    /// `limits.max_connections`.
    Total,
    /// `limits.max_connections_per_ip`.
    PerIp,
}

impl ConnLimit {
    /// The config key (also the `limit` metric label).
    pub fn key(self) -> &'static str {
        match self {
            ConnLimit::Total => "max_connections",
            ConnLimit::PerIp => "max_connections_per_ip",
        }
    }
}

struct Sharded<V> {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<IpAddr, V>>]>,
}

impl<V> Sharded<V> {
    fn new() -> Self {
        Sharded {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, ip: IpAddr) -> MutexGuard<'_, HashMap<IpAddr, V>> {
        let i = self.hasher.hash_one(ip) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts open connections in total and per IP.
pub struct ConnLimiter {
    max_total: u32,
    max_per_ip: u32,
    max_refusing: u32,
    total: AtomicU32,
    refusing: AtomicU32,
    per_ip: Sharded<u32>,
}

/// A refused connection being answered; dropping it frees the slot
/// ([`ConnLimiter::try_refusal`]).
pub struct RefusalGuard {
    limiter: Arc<ConnLimiter>,
}

impl std::fmt::Debug for RefusalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusalGuard")
    }
}

impl Drop for RefusalGuard {
    fn drop(&mut self) {
        self.limiter.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted connection; dropping it gives the slot back. Kept once per live connection, so
/// its IP is held as 16 bytes (IPv4 mapped into IPv6; the limiter counts canonical addresses,
/// which this maps back exactly): 24 B, not the 32 B an `IpAddr` beside the pointer would take.
pub struct ConnGuard {
    /// `None` once [`ConnGuard::into_counted`] took the slot out.
    limiter: Option<Arc<ConnLimiter>>,
    ip: Ipv6Addr,
}

impl ConnGuard {
    /// The canonical address this connection is counted under.
    fn ip(&self) -> IpAddr {
        IpAddr::V6(self.ip).to_canonical()
    }

    /// Detaches the slot from the guard, for a table that holds many connections of one
    /// limiter and keeps each one's address anyway (a UDP shard: its sessions' peers): the
    /// slot stays taken under the address returned until the holder gives it back with
    /// [`ConnLimiter::release`] (or moves it with [`ConnLimiter::moved`]). The holder keeps
    /// no guard, so a session's connection-limit slot costs it no bytes of its own.
    #[must_use = "the slot is given back with ConnLimiter::release"]
    pub fn into_counted(mut self) -> IpAddr {
        self.limiter = None;
        self.ip()
    }
}

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnGuard").field("ip", &self.ip()).finish()
    }
}

impl ConnLimiter {
    /// A limiter with the configured maxima: connections in total, per IP, and refused
    /// connections answered at once.
    pub fn new(max_total: u32, max_per_ip: u32, max_refusing: u32) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_ip,
            max_refusing,
            total: AtomicU32::new(0),
            refusing: AtomicU32::new(0),
            per_ip: Sharded::new(),
        })
    }

    /// Admits a connection from `ip`, or says which limit refuses it. An IPv4-mapped IPv6
    /// address counts as its IPv4 address.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, ConnLimit> {
        let ip = ip.to_canonical();
        let admitted = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(ConnLimit::Total);
        }
        let mut shard = self.per_ip.shard(ip);
        let n = shard.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            if *n == 0 {
                shard.remove(&ip);
            }
            drop(shard);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(ConnLimit::PerIp);
        }
        *n += 1;
        Ok(ConnGuard {
            limiter: Some(self.clone()),
            ip: match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            },
        })
    }

    /// Gives back the slot of a connection admitted by this limiter and counted under `ip`
    /// (see [`ConnGuard::into_counted`]).
    pub fn release(&self, ip: IpAddr) {
        self.uncount(ip.to_canonical());
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    /// Moves a live connection's slot from the address it is counted under to `to` (a UDP
    /// session whose peer moved, NAT rebinding). Never refuses: a session that proved itself
    /// authentic is not ended for its new address, so `to` may count one more than
    /// `limits.max_connections_per_ip` until connections from it end. The total is unchanged.
    pub fn moved(&self, from: IpAddr, to: IpAddr) {
        let (from, to) = (from.to_canonical(), to.to_canonical());
        if from == to {
            return;
        }
        self.uncount(from);
        *self.per_ip.shard(to).entry(to).or_insert(0) += 1;
    }

    /// One connection less counted under the canonical address `ip`.
    fn uncount(&self, ip: IpAddr) {
        let mut shard = self.per_ip.shard(ip);
        if let Some(n) = shard.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&ip);
            }
        }
    }

    /// Connections currently admitted.
    pub fn open(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }

    /// A slot to answer one refused connection, or `None` when `max_pending_refusals` are
    /// being answered already (the connection is then closed without an answer).
    pub fn try_refusal(self: &Arc<Self>) -> Option<RefusalGuard> {
        self.refusing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_refusing).then_some(n + 1)
            })
            .ok()
            .map(|_| RefusalGuard {
                limiter: self.clone(),
            })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(limiter) = self.limiter.take() {
            limiter.release(self.ip());
        }
    }
}

/// Token bucket per IP: `rate` attempts per second, bursts up to `rate`.
///
/// Memory and time under a flood from many addresses: a shard forgets the buckets that have
/// refilled (they hold no information) when it grows past its prune mark, and the mark is then
/// set to twice what was kept (at least 1024). So a sweep over `n` buckets happens
/// only after at least `n / 2` new addresses were added since the last one: pruning costs O(1)
/// amortised per attempt, never a scan per attempt.
pub struct LoginLimiter {
    rate: u32,
    hasher: RandomState,
    shards: Box<[Mutex<BucketShard>]>,
}

struct BucketShard {
    buckets: HashMap<IpAddr, TokenBucket>,
    /// Size at which the next sweep runs.
    prune_at: usize,
    /// Buckets visited by sweeps so far (the amortisation test reads it).
    swept: u64,
}

/// Buckets per shard below which nothing is pruned.
const PRUNE_ABOVE: usize = 1024;

impl LoginLimiter {
    /// A limiter allowing `rate` login attempts per IP per second.
    pub fn new(rate: u32) -> LoginLimiter {
        LoginLimiter {
            rate: rate.max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(BucketShard {
                        buckets: HashMap::new(),
                        prune_at: PRUNE_ABOVE,
                        swept: 0,
                    })
                })
                .collect(),
        }
    }

    fn shard(&self, ip: IpAddr) -> MutexGuard<'_, BucketShard> {
        let i = self.hasher.hash_one(ip) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one attempt for `ip` at `now_ms`; false when the IP is over its rate.
    pub fn allow(&self, ip: IpAddr, now_ms: u64) -> bool {
        let rate = self.rate;
        let mut shard = self.shard(ip);
        if shard.buckets.len() >= shard.prune_at && !shard.buckets.contains_key(&ip) {
            let visited = shard.buckets.len() as u64;
            shard.buckets.retain(|_, b| !b.is_full_at(now_ms));
            shard.swept += visited;
            shard.prune_at = (shard.buckets.len() * 2).max(PRUNE_ABOVE);
        }
        shard
            .buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, rate, now_ms))
            .try_take(now_ms)
    }

    /// Buckets held now, over all shards.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len())
            .sum()
    }

    #[cfg(test)]
    fn swept(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).swept)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits() {
        let l = ConnLimiter::new(3, 2, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = l.try_acquire(a).unwrap();
        let _g2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), ConnLimit::PerIp);
        let _g3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), ConnLimit::Total);
        assert_eq!(l.open(), 3);
        drop(g1);
        assert_eq!(l.open(), 2);
        assert!(l.try_acquire(a).is_ok());
    }

    #[test]
    fn a_guard_gives_back_the_slot_of_the_address_it_was_counted_under() {
        let l = ConnLimiter::new(10, 1, 1);
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let g4 = l.try_acquire(v4).unwrap();
        assert_eq!(g4.ip(), v4);
        assert_eq!(
            l.try_acquire(mapped).unwrap_err(),
            ConnLimit::PerIp,
            "a mapped IPv4 address is that IPv4 address"
        );
        let g6 = l.try_acquire(v6).unwrap();
        assert_eq!(g6.ip(), v6);
        drop(g4);
        drop(g6);
        assert_eq!(l.open(), 0);
        // Each slot came back under its own address: both are free again.
        let again = (l.try_acquire(mapped), l.try_acquire(v6));
        assert!(again.0.is_ok() && again.1.is_ok());
        assert_eq!(std::mem::size_of::<ConnGuard>(), 24);
    }

    #[test]
    fn a_slot_taken_out_of_its_guard_holds_until_released() {
        let l = ConnLimiter::new(10, 1, 1);
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        let counted = l.try_acquire(v4).unwrap().into_counted();
        assert_eq!(counted, v4);
        assert_eq!(l.open(), 1, "the guard's drop gave nothing back");
        assert_eq!(l.try_acquire(v4).unwrap_err(), ConnLimit::PerIp);
        l.release(counted);
        assert_eq!(l.open(), 0);
        assert!(l.try_acquire(v4).is_ok(), "released under its own address");
    }

    #[test]
    fn a_moved_slot_is_counted_under_its_new_address_and_given_back_there() {
        let l = ConnLimiter::new(10, 1, 1);
        let old: IpAddr = "10.0.0.3".parse().unwrap();
        let new: IpAddr = "::ffff:10.0.0.4".parse().unwrap();
        let counted = l.try_acquire(old).unwrap().into_counted();
        l.moved(counted, new);
        assert!(l.try_acquire(old).is_ok(), "the old address's slot is free");
        assert_eq!(
            l.try_acquire(new).unwrap_err(),
            ConnLimit::PerIp,
            "the new address counts the session (as its IPv4 address)"
        );
        let other = l.try_acquire("10.0.0.5".parse().unwrap()).unwrap();
        l.moved(other.into_counted(), new);
        assert_eq!(l.open(), 2, "a move never changes the total");
        l.release(new);
        assert_eq!(
            l.try_acquire(new).unwrap_err(),
            ConnLimit::PerIp,
            "one still counted"
        );
        l.release(new);
        assert!(
            l.try_acquire(new).is_ok(),
            "both given back under the new address"
        );
    }

    #[test]
    fn refusals_answered_at_once_are_capped() {
        let l = ConnLimiter::new(1, 1, 2);
        let r1 = l.try_refusal().expect("first slot");
        let _r2 = l.try_refusal().expect("second slot");
        assert!(l.try_refusal().is_none(), "a third refusal is not answered");
        drop(r1);
        assert!(l.try_refusal().is_some(), "a freed slot is reused");
    }

    #[test]
    fn login_bucket_refills() {
        let l = LoginLimiter::new(2);
        let ip: IpAddr = "::1".parse().unwrap();
        assert!(l.allow(ip, 1000));
        assert!(l.allow(ip, 1000));
        assert!(!l.allow(ip, 1000));
        assert!(!l.allow(ip, 1400));
        assert!(
            l.allow(ip, 1500),
            "half a second refills one attempt at 2/s"
        );
        assert!(
            l.allow("10.1.1.1".parse().unwrap(), 1500),
            "other IPs are independent"
        );
    }

    #[test]
    fn pruning_under_a_flood_of_addresses_is_amortised_constant() {
        let l = LoginLimiter::new(5);
        let n: u32 = 200_000;
        // A flood from distinct addresses, all within one second: no bucket refills, so
        // nothing can be pruned and every sweep is pure cost.
        for i in 0..n {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.allow(ip, 1_000));
        }
        let swept = l.swept();
        println!("{n} addresses: {swept} bucket visits by sweeps");
        // Doubling marks: each shard sweeps at 1024, 2048, 4096... so the visits are under
        // twice the buckets held. A sweep per attempt past 1024 would be about 1.2e9.
        assert!(swept < 2 * u64::from(n), "swept {swept}");
        assert_eq!(l.tracked(), n as usize);
        // Once they have refilled, a later sweep forgets them.
        let later = 10_000;
        let before = l.tracked();
        let shrank = (0..4 * n).any(|i| {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            l.allow(ip, later);
            l.tracked() < before
        });
        assert!(shrank, "refilled buckets were never forgotten");
    }
}
