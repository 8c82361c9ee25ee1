//! The online registry: which sessions are live for which terminal.
//!
//! Lock choice: the registry is split into [`SHARDS`] shards, each a `std::sync::Mutex` over a
//! table of the terminals with one session and one of those with several; a terminal always maps to the same shard (a
//! multiplicative hash of its packed address). Logins, logouts and unicast lookups on different
//! terminals therefore rarely touch the same lock, and each critical section is a hash-map
//! operation that never awaits (mini-redis `db.rs` reasoning: a std mutex is cheaper than an async
//! one when it is never held across `.await`). A kind-wide fan-out visits shards one at a time and
//! clones the handles out, so it never holds more than one shard lock. Online counts are kept in
//! atomics so `/v1/online` does not scan. An owner-task design was rejected: every delivery would
//! then pay a channel hop through a single task per shard for no gain in this workload.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use std::sync::{Mutex, MutexGuard};

use crate::terminal::{Address, AddressKey, Kind};

use super::session::{SessionHandle, Transport};

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;

/// One shard: each online terminal's live sessions, never empty (a terminal goes when its last
/// session does). Nearly every terminal has one session, so those are kept in a table of their
/// own, 8 B a slot: the session's handle alone, found by its terminal's address, which the
/// handle knows; the terminals with several (`signed` profile) are in a second table, which is
/// empty (no allocation) where no terminal has more than one. A terminal is in at most one of
/// the two.
#[derive(Default)]
struct Shard {
    /// Keyed hashing (terminal ids come from clients), as `HashMap`'s default.
    hasher: RandomState,
    /// Terminals with exactly one session, by [`SessionHandle::address`].
    one: HashTable<SessionHandle>,
    /// Terminals with at least two sessions.
    many: HashMap<Address, Vec<SessionHandle>>,
}

impl Shard {
    fn hash(&self, a: Address) -> u64 {
        self.hasher.hash_one(a)
    }

    /// The one session of `a`, if it has exactly one.
    fn one(&self, a: Address) -> Option<&SessionHandle> {
        self.one.find(self.hash(a), |s| s.address() == a)
    }

    /// Files `h` as its terminal's one session (the terminal has none in `one`).
    fn insert_one(&mut self, h: SessionHandle) {
        let hasher = &self.hasher;
        self.one
            .insert_unique(hasher.hash_one(h.address()), h, |s| {
                hasher.hash_one(s.address())
            });
    }

    /// Adds `h`; with `multi == false` the terminal's other sessions are removed and returned.
    /// Also returns whether the terminal had no session before.
    fn insert(&mut self, h: SessionHandle, multi: bool) -> (Vec<SessionHandle>, bool) {
        let addr = h.address();
        if let Some(list) = self.many.get_mut(&addr) {
            if multi {
                list.push(h);
                return (Vec::new(), false);
            }
            let old = self.many.remove(&addr).unwrap_or_default();
            self.insert_one(h);
            return (old, false);
        }
        let hasher = &self.hasher;
        let entry = self.one.entry(
            hasher.hash_one(addr),
            |s| s.address() == addr,
            |s| hasher.hash_one(s.address()),
        );
        match entry {
            Entry::Vacant(e) => {
                e.insert(h);
                (Vec::new(), true)
            }
            Entry::Occupied(e) if multi => {
                let (first, _) = e.remove();
                self.many.insert(addr, vec![first, h]);
                (Vec::new(), false)
            }
            Entry::Occupied(mut e) => (vec![std::mem::replace(e.get_mut(), h)], false),
        }
    }

    /// Removes `h`: `Some(true)` when the terminal has no session left, `None` when `h` was not
    /// here.
    fn remove(&mut self, h: &SessionHandle) -> Option<bool> {
        let addr = h.address();
        if let Ok(e) = self
            .one
            .find_entry(self.hash(addr), |s| s.address() == addr)
        {
            return e.get().same(h).then(|| {
                e.remove();
                true
            });
        }
        let list = self.many.get_mut(&addr)?;
        let pos = list.iter().position(|s| s.same(h))?;
        list.swap_remove(pos);
        if list.len() == 1
            && let Some(only) = self.many.remove(&addr).and_then(|mut l| l.pop())
        {
            self.insert_one(only);
        }
        Some(false)
    }

    /// The terminal's sessions (empty when it has none).
    fn sessions(&self, a: &Address) -> &[SessionHandle] {
        match self.one(*a) {
            Some(h) => std::slice::from_ref(h),
            None => self.many.get(a).map_or(&[], Vec::as_slice),
        }
    }

    /// Every terminal with its sessions.
    fn iter(&self) -> impl Iterator<Item = (Address, &[SessionHandle])> {
        let one = self
            .one
            .iter()
            .map(|h| (h.address(), std::slice::from_ref(h)));
        one.chain(self.many.iter().map(|(a, l)| (*a, l.as_slice())))
    }
}

/// Online counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OnlineCounts {
    /// Devices with at least one session.
    pub devices: u64,
    /// Phones with at least one session.
    pub phones: u64,
    /// Sessions over device WebSocket.
    pub device_ws_sessions: u64,
    /// Sessions over UDP.
    pub udp_sessions: u64,
    /// Sessions over app WebSocket.
    pub app_ws_sessions: u64,
}

/// Result of [`Registry::insert`].
pub struct Inserted {
    /// Sessions this one replaced (to be kicked), `plug` profile only.
    pub replaced: Vec<SessionHandle>,
    /// True when the terminal had no session before (it just came online).
    pub came_online: bool,
}

/// The sharded registry (see module docs).
pub struct Registry {
    shards: Box<[Mutex<Shard>]>,
    devices: AtomicI64,
    phones: AtomicI64,
    per_transport: [AtomicI64; 3],
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            devices: AtomicI64::new(0),
            phones: AtomicI64::new(0),
            per_transport: [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)],
        }
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::DeviceWs => 0,
        Transport::Udp => 1,
        Transport::AppWs => 2,
    }
}

impl Registry {
    fn shard(&self, a: Address) -> MutexGuard<'_, Shard> {
        let h = a.to_key().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        self.shards[h as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn kind_counter(&self, k: Kind) -> &AtomicI64 {
        match k {
            Kind::Device => &self.devices,
            Kind::Phone => &self.phones,
        }
    }

    /// Adds a session. With `multi == false` (plug profile) existing sessions of the terminal are
    /// removed and returned for kicking.
    pub fn insert(&self, h: SessionHandle, multi: bool) -> Inserted {
        let addr = h.address();
        let t = h.transport();
        let mut shard = self.shard(addr);
        let (replaced, came_online) = shard.insert(h, multi);
        drop(shard);
        for r in &replaced {
            self.per_transport[transport_index(r.transport())].fetch_sub(1, Ordering::Relaxed);
        }
        self.per_transport[transport_index(t)].fetch_add(1, Ordering::Relaxed);
        if came_online {
            self.kind_counter(addr.kind).fetch_add(1, Ordering::Relaxed);
        }
        Inserted {
            replaced,
            came_online,
        }
    }

    /// Removes a session. Returns `Some(went_offline)` if it was registered (`went_offline` true
    /// when it was the terminal's last session), `None` if it was not (already replaced/removed).
    pub fn remove(&self, h: &SessionHandle) -> Option<bool> {
        let addr = h.address();
        let mut shard = self.shard(addr);
        let offline = shard.remove(h)?;
        drop(shard);
        self.per_transport[transport_index(h.transport())].fetch_sub(1, Ordering::Relaxed);
        if offline {
            self.kind_counter(addr.kind).fetch_sub(1, Ordering::Relaxed);
        }
        Some(offline)
    }

    /// The terminal's sessions, oldest first.
    pub fn get(&self, a: Address) -> Vec<SessionHandle> {
        let mut v = self.shard(a).sessions(&a).to_vec();
        v.sort_by_key(SessionHandle::id);
        v
    }

    /// Every session of terminals of `kind` (`None`: all), one shard lock at a time.
    pub fn all(&self, kind: Option<Kind>) -> Vec<SessionHandle> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            for (a, list) in s.iter() {
                if kind.is_none_or(|k| a.kind == k) {
                    out.extend(list.iter().cloned());
                }
            }
        }
        out
    }

    /// Appends to `out` the sessions of terminals of `kind` (`None`: all) in shard `shard`
    /// (`0..SHARDS`), holding only that shard's lock: a fan-out walks the registry this way, one
    /// shard at a time, yielding between shards.
    pub fn shard_sessions(&self, shard: usize, kind: Option<Kind>, out: &mut Vec<SessionHandle>) {
        let s = self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (a, list) in s.iter() {
            if kind.is_none_or(|k| a.kind == k) {
                out.extend(list.iter().cloned());
            }
        }
    }

    /// Sessions online now of terminals of `kind` (`None`: all), from the counters (no scan).
    /// Devices log in over device WebSocket and UDP, phones over app WebSocket.
    pub fn session_count(&self, kind: Option<Kind>) -> u64 {
        let get = |t: Transport| {
            self.per_transport[transport_index(t)]
                .load(Ordering::Relaxed)
                .max(0) as u64
        };
        let devices = get(Transport::DeviceWs) + get(Transport::Udp);
        let phones = get(Transport::AppWs);
        match kind {
            Some(Kind::Device) => devices,
            Some(Kind::Phone) => phones,
            None => devices + phones,
        }
    }

    /// Current counts.
    pub fn counts(&self) -> OnlineCounts {
        let get = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        OnlineCounts {
            devices: get(&self.devices),
            phones: get(&self.phones),
            device_ws_sessions: get(&self.per_transport[0]),
            udp_sessions: get(&self.per_transport[1]),
            app_ws_sessions: get(&self.per_transport[2]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(id: u64, a: Address, t: Transport) -> SessionHandle {
        SessionHandle::new(id, a, t, 1, "127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn a_terminal_with_one_session_is_one_8_byte_slot() {
        // Nearly every online terminal holds one slot (its session's handle) in its shard's
        // table, found by the address the handle knows.
        assert_eq!(std::mem::size_of::<SessionHandle>(), 8);
        let r = Registry::default();
        let (a, b) = (Address::device(1), Address::phone(1));
        r.insert(h(1, a, Transport::Udp), false);
        r.insert(h(2, b, Transport::AppWs), false);
        let ids = |v: Vec<SessionHandle>| v.iter().map(SessionHandle::id).collect::<Vec<_>>();
        assert_eq!((ids(r.get(a)), ids(r.get(b))), (vec![1], vec![2]));
        assert!(r.get(Address::device(2)).is_empty());
    }

    #[test]
    fn a_terminal_moves_between_the_one_and_many_tables_as_its_sessions_come_and_go() {
        let r = Registry::default();
        let d = Address::device(7);
        let s: Vec<_> = (1..=3).map(|i| h(i, d, Transport::Udp)).collect();
        for x in &s {
            r.insert(x.clone(), true);
        }
        let ids = |v: Vec<SessionHandle>| v.iter().map(SessionHandle::id).collect::<Vec<_>>();
        assert_eq!(ids(r.get(d)), [1, 2, 3]);
        assert_eq!(r.remove(&s[1]), Some(false));
        assert_eq!(r.remove(&s[1]), None, "already removed");
        assert_eq!(r.remove(&s[0]), Some(false));
        assert_eq!(ids(r.get(d)), [3]);
        assert_eq!(ids(r.all(Some(Kind::Device))), [3]);
        // Several again, then a plug-profile login replaces them all.
        r.insert(s[0].clone(), true);
        assert_eq!(ids(r.get(d)), [1, 3]);
        let newest = h(9, d, Transport::DeviceWs);
        let ins = r.insert(newest.clone(), false);
        assert!(!ins.came_online);
        assert_eq!(ids(ins.replaced).len(), 2);
        assert_eq!(ids(r.get(d)), [9]);
        assert_eq!(r.remove(&s[2]), None, "replaced");
        assert_eq!(r.remove(&newest), Some(true));
        assert!(r.get(d).is_empty());
        assert_eq!(r.counts(), OnlineCounts::default());
    }

    #[test]
    fn plug_replaces_signed_accumulates() {
        let r = Registry::default();
        let d = Address::device(1);
        let first = h(1, d, Transport::Udp);
        assert!(r.insert(first.clone(), false).came_online);
        let second = h(2, d, Transport::DeviceWs);
        let ins = r.insert(second.clone(), false);
        assert!(!ins.came_online);
        assert_eq!(ins.replaced.len(), 1);
        assert!(ins.replaced[0].same(&first));
        assert_eq!(r.remove(&first), None, "replaced session is gone already");
        let c = r.counts();
        assert_eq!((c.devices, c.udp_sessions, c.device_ws_sessions), (1, 0, 1));

        let p = Address::phone(-5i32 as u32);
        let (a, b) = (h(3, p, Transport::AppWs), h(4, p, Transport::AppWs));
        r.insert(a.clone(), true);
        assert!(r.insert(b.clone(), true).replaced.is_empty());
        assert_eq!(r.get(p).len(), 2);
        assert_eq!(r.all(Some(Kind::Phone)).len(), 2);
        assert_eq!(r.all(None).len(), 3);
        assert_eq!(r.remove(&a), Some(false));
        assert_eq!(r.remove(&b), Some(true));
        assert_eq!(r.remove(&second), Some(true));
        assert_eq!(r.counts(), OnlineCounts::default());
    }
}
