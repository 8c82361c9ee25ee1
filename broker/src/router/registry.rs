//! The online registry: which sessions are live for which terminal.
//!
//! Lock choice: the registry is split into [`SHARDS`] shards, each a `std::sync::Mutex` over a
//! `HashMap<Address, Sessions>` (a terminal's one session inline, or a `Vec` of several); a terminal always maps to the same shard (a
//! multiplicative hash of its packed address). Logins, logouts and unicast lookups on different
//! terminals therefore rarely touch the same lock, and each critical section is a hash-map
//! operation that never awaits (mini-redis `db.rs` reasoning: a std mutex is cheaper than an async
//! one when it is never held across `.await`). A kind-wide fan-out visits shards one at a time and
//! clones the handles out, so it never holds more than one shard lock. Online counts are kept in
//! atomics so `/v1/online` does not scan. An owner-task design was rejected: every delivery would
//! then pay a channel hop through a single task per shard for no gain in this workload.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::terminal::{Address, AddressKey, Kind};

use super::session::{SessionHandle, Transport};

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;

type Shard = HashMap<Address, Sessions>;

/// A terminal's live sessions, never empty (an entry goes when its last session does). Most
/// terminals have one, kept inline: no allocation besides the table's slot. Several are a boxed
/// `Vec`, so the slot is 24 B with the address, not 32 B.
#[allow(
    clippy::box_collection,
    reason = "rare: a pointer keeps every terminal's slot 8 B smaller"
)]
enum Sessions {
    One(SessionHandle),
    Many(Box<Vec<SessionHandle>>),
}

impl Sessions {
    fn as_slice(&self) -> &[SessionHandle] {
        match self {
            Sessions::One(h) => std::slice::from_ref(h),
            Sessions::Many(v) => v,
        }
    }

    fn push(&mut self, h: SessionHandle) {
        match self {
            Sessions::Many(v) => v.push(h),
            Sessions::One(first) => *self = Sessions::Many(Box::new(vec![first.clone(), h])),
        }
    }

    fn into_vec(self) -> Vec<SessionHandle> {
        match self {
            Sessions::One(h) => vec![h],
            Sessions::Many(v) => *v,
        }
    }

    /// Removes `h`: `Some(true)` when no session is left, `None` when `h` was not here.
    fn remove(&mut self, h: &SessionHandle) -> Option<bool> {
        match self {
            Sessions::One(only) => only.same(h).then_some(true),
            Sessions::Many(v) => {
                let pos = v.iter().position(|s| s.same(h))?;
                v.swap_remove(pos);
                let left = v.len();
                if left == 1
                    && let Some(only) = v.pop()
                {
                    *self = Sessions::One(only);
                }
                Some(left == 0)
            }
        }
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
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
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
        let (replaced, came_online) = match shard.entry(addr) {
            Entry::Vacant(e) => {
                e.insert(Sessions::One(h));
                (Vec::new(), true)
            }
            Entry::Occupied(mut e) if multi => {
                e.get_mut().push(h);
                (Vec::new(), false)
            }
            Entry::Occupied(mut e) => {
                let old = std::mem::replace(e.get_mut(), Sessions::One(h));
                (old.into_vec(), false)
            }
        };
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
        let offline = shard.get_mut(&addr)?.remove(h)?;
        if offline {
            shard.remove(&addr);
        }
        drop(shard);
        self.per_transport[transport_index(h.transport())].fetch_sub(1, Ordering::Relaxed);
        if offline {
            self.kind_counter(addr.kind).fetch_sub(1, Ordering::Relaxed);
        }
        Some(offline)
    }

    /// The terminal's sessions, oldest first.
    pub fn get(&self, a: Address) -> Vec<SessionHandle> {
        let mut v = self
            .shard(a)
            .get(&a)
            .map(|list| list.as_slice().to_vec())
            .unwrap_or_default();
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
                    out.extend(list.as_slice().iter().cloned());
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
                out.extend(list.as_slice().iter().cloned());
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
    use crate::terminal::QueueFullPolicy;

    fn h(id: u64, a: Address, t: Transport) -> SessionHandle {
        SessionHandle::new(
            id,
            a,
            t,
            1,
            "127.0.0.1:1".parse().unwrap(),
            4,
            QueueFullPolicy::DropNewest,
        )
    }

    #[test]
    fn a_terminal_s_entry_is_one_24_byte_slot() {
        // Every online terminal holds one slot (address and sessions) in its shard's table.
        assert_eq!(std::mem::size_of::<(Address, Sessions)>(), 24);
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
