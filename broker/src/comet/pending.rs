//! WebSocket connections still in their handshake (the WebSocket upgrade and the login),
//! capped at `limits.max_pending_handshakes`, with the oldest silent one closed to make room.
//!
//! Without this cap, clients that open connections and never finish their login (from as many
//! source addresses as it takes to pass `limits.max_connections_per_ip`) hold connection slots
//! for the whole `timeouts.handshake_secs` and can fill `limits.max_connections`: a legitimate
//! login is then refused `SERVER_BUSY` for as long as the flood lasts. With it, connections in
//! their handshake never number more than the cap, and a new one arriving when the cap is
//! reached closes another (counted as
//! `broker_limit_rejections_total{limit="max_pending_handshakes"}`):
//!
//! * the oldest of those still **silent**, that have not completed their WebSocket upgrade
//!   (a client sends its upgrade request as soon as it is connected), preferring, among the
//!   [`LOOK_AT`] oldest silent ones, the oldest whose address has another silent connection
//!   (so a flood of several connections per address takes its own places before a lone
//!   client's);
//! * only when none is silent, the oldest of those that have spoken
//!   ([`PendingGuard::spoke`]).
//!
//! So connections that never speak, however fast they are reopened and from however many
//! addresses, only ever take each other's places: a client that sends its upgrade request at
//! once gets through such a flood, unless `max_pending_handshakes` newer connections arrive
//! between its accept and its upgrade. Clients that complete their upgrade and then stall
//! compete among themselves, oldest out first; they must open real WebSockets to do so.
//!
//! `ws::accept` admits each connection the connection limits admitted ([`Pending::admit`]),
//! ends it if [`PendingGuard::evicted`] completes during the upgrade and marks it
//! [`PendingGuard::spoke`] after; the endpoints' login waits for each message with
//! `ws::next_before`, which also ends on eviction (between messages only, so a login is never
//! cut off half-way), and drop the guard once the login is done. Every critical section is a
//! few ordered-map operations (at most [`LOOK_AT`] looked at); no lock is held across
//! `.await`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The connections in their handshake, oldest first (`limits.max_pending_handshakes`).
#[derive(Debug)]
pub struct Pending {
    cap: usize,
    open: Arc<Mutex<Open>>,
}

/// How many of the oldest silent connections are looked at for one whose address has another
/// (bounded work per admission).
pub const LOOK_AT: usize = 8;

#[derive(Debug, Default)]
struct Open {
    next: u64,
    /// Eviction signal per pending connection not upgraded yet, by admission order.
    silent: BTreeMap<u64, (IpAddr, CancellationToken)>,
    /// Silent connections per address.
    silent_from: HashMap<IpAddr, usize>,
    /// The same for those upgraded, still logging in.
    spoke: BTreeMap<u64, CancellationToken>,
}

impl Open {
    fn len(&self) -> usize {
        self.silent.len() + self.spoke.len()
    }

    /// Removes silent connection `id`, keeping the per-address count.
    fn remove_silent(&mut self, id: u64) -> Option<CancellationToken> {
        let (ip, token) = self.silent.remove(&id)?;
        if let Some(n) = self.silent_from.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.silent_from.remove(&ip);
            }
        }
        Some(token)
    }

    /// The connection to close to make room (see the module docs).
    fn victim(&mut self) -> Option<CancellationToken> {
        let shared = self
            .silent
            .iter()
            .take(LOOK_AT)
            .find(|(_, (ip, _))| self.silent_from.get(ip).is_some_and(|n| *n > 1))
            .map(|(id, _)| *id);
        match shared.or_else(|| self.silent.keys().next().copied()) {
            Some(id) => self.remove_silent(id),
            None => self.spoke.pop_first().map(|(_, token)| token),
        }
    }
}

impl Pending {
    /// At most `cap` connections in their handshake at once (at least 1).
    pub fn new(cap: u32) -> Pending {
        Pending {
            cap: cap.max(1) as usize,
            open: Arc::default(),
        }
    }

    /// Admits one more connection from `ip` into its handshake (as silent); when `cap` are
    /// already there, another is signalled to close ([`PendingGuard::evicted`]; which one: see
    /// the module docs) and `true` is returned with the guard, for the caller to count.
    pub fn admit(&self, ip: IpAddr) -> (PendingGuard, bool) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        while open.len() >= self.cap {
            if let Some(token) = open.victim() {
                token.cancel();
                evicted = true;
            }
        }
        let id = open.next;
        open.next += 1;
        let token = CancellationToken::new();
        open.silent.insert(id, (ip, token.clone()));
        *open.silent_from.entry(ip).or_default() += 1;
        let guard = PendingGuard {
            id,
            token,
            open: self.open.clone(),
        };
        (guard, evicted)
    }

    /// Connections in their handshake now.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no connection is in its handshake.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's place among the pending handshakes; dropping it (once the login is done
/// or the connection ends) frees the place.
#[derive(Debug)]
pub struct PendingGuard {
    id: u64,
    token: CancellationToken,
    open: Arc<Mutex<Open>>,
}

impl PendingGuard {
    /// Completes when a newer connection took this one's place: the handshake must end.
    pub async fn evicted(&self) {
        self.token.cancelled().await;
    }

    /// The connection completed its WebSocket upgrade: from now on it is closed to make room
    /// only when no silent connection is left.
    pub fn spoke(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = open.remove_silent(self.id) {
            open.spoke.insert(self.id, token);
        }
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.remove_silent(self.id).is_none() {
            open.spoke.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn the_oldest_handshake_makes_room_and_finished_ones_free_theirs() {
        let p = Pending::new(2);
        let (first, evicted) = p.admit(A);
        assert!(!evicted);
        let (second, evicted) = p.admit(A);
        assert!(!evicted);
        let (third, evicted) = p.admit(A);
        assert!(evicted, "the cap was reached");
        assert!(first.token.is_cancelled(), "the oldest is told to close");
        assert!(!second.token.is_cancelled() && !third.token.is_cancelled());
        assert_eq!(p.len(), 2);
        // A finished login frees its place: the next one evicts nobody.
        drop(third);
        let (_fourth, evicted) = p.admit(A);
        assert!(!evicted);
        assert!(!second.token.is_cancelled());
        // The evicted guard's drop removes nothing of the others.
        drop(first);
        assert_eq!(p.len(), 2);
        drop(second);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn silent_connections_make_room_before_those_that_spoke() {
        let p = Pending::new(3);
        let (oldest, _) = p.admit(A);
        oldest.spoke();
        let (silent, _) = p.admit(A);
        let (newer, _) = p.admit(A);
        newer.spoke();
        let (next, evicted) = p.admit(A);
        assert!(evicted);
        assert!(silent.token.is_cancelled(), "the silent one goes first");
        assert!(!oldest.token.is_cancelled() && !newer.token.is_cancelled());
        let (_last, evicted) = p.admit(A);
        assert!(evicted);
        assert!(
            next.token.is_cancelled(),
            "the newer silent one before any that spoke"
        );
        assert!(!oldest.token.is_cancelled() && !newer.token.is_cancelled());
        // With no silent one left (the newest spoke), the oldest that spoke goes.
        _last.spoke();
        let (_again, evicted) = p.admit(A);
        assert!(evicted);
        assert!(oldest.token.is_cancelled());
        assert!(!newer.token.is_cancelled());
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn a_lone_client_keeps_its_place_while_an_address_with_several_gives_one_up() {
        let p = Pending::new(3);
        let (lone, _) = p.admit(B);
        let (flood1, _) = p.admit(A);
        let (flood2, _) = p.admit(A);
        let (flood3, evicted) = p.admit(A);
        assert!(evicted);
        assert!(
            !lone.token.is_cancelled(),
            "older, but alone on its address"
        );
        assert!(
            flood1.token.is_cancelled(),
            "the oldest of the address with several"
        );
        // With one silent connection per address left, the oldest goes.
        drop(flood2);
        let (_c, _) = p.admit(std::net::Ipv4Addr::new(192, 0, 2, 3).into());
        assert_eq!(p.len(), 3);
        let (_d, evicted) = p.admit(std::net::Ipv4Addr::new(192, 0, 2, 4).into());
        assert!(evicted);
        assert!(lone.token.is_cancelled());
        assert!(!flood3.token.is_cancelled());
    }

    #[tokio::test]
    async fn an_evicted_guard_wakes_its_waiter() {
        let p = Pending::new(1);
        let (old, _) = p.admit(A);
        let waiter = tokio::spawn(async move { old.evicted().await });
        let (_new, evicted) = p.admit(A);
        assert!(evicted);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
