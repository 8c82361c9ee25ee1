//! [`Generations`]: which session generation this comet holds per terminal, and whether a
//! replacement notice from another comet must kick it. Sans-IO: [`super::presence`] drives it
//! and does the Redis calls and the kicks.
//!
//! The rule: a notice "`terminal` was claimed with generation `g`" kicks the local session only
//! when the local generation is older than `g`; a newer local login (a race the other way)
//! ignores it. While a local login of the terminal is still claiming (its generation unknown),
//! a notice is deferred and decided when the last pending claim finishes: if the highest
//! deferred generation is newer than every local claim, the terminal's local session is
//! kicked then. Two logins racing on two comets therefore end with exactly one live session:
//! the one whose claim ran last in Redis (claims are serialized by the script).

use std::collections::BTreeMap;

use crate::terminal::Address;

/// What to do about a notice or a finished claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Kick the terminal's local session(s) with `REPLACED`.
    Kick,
    /// Nothing: the local session is newer, or the terminal is not held here.
    Keep,
    /// A local claim is in flight; decided when it finishes.
    Deferred,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Generation of the newest finished local claim.
    current: Option<u64>,
    /// Local claims in flight.
    pending: u32,
    /// Highest generation named by a notice received while claims were in flight.
    deferred: u64,
}

/// Per-terminal generations held by this node (see module docs).
#[derive(Debug, Default)]
pub struct Generations {
    map: BTreeMap<Address, Entry>,
}

impl Generations {
    /// A local login of `terminal` starts claiming.
    pub fn begin(&mut self, terminal: Address) {
        self.map.entry(terminal).or_default().pending += 1;
    }

    /// A local claim finished with `generation` (`None`: it failed and the login was refused).
    /// `Kick` when a notice deferred meanwhile names a newer generation than any local claim.
    pub fn finish(&mut self, terminal: Address, generation: Option<u64>) -> Verdict {
        let Some(e) = self.map.get_mut(&terminal) else {
            return Verdict::Keep;
        };
        e.pending = e.pending.saturating_sub(1);
        if let Some(g) = generation {
            e.current = Some(e.current.map_or(g, |c| c.max(g)));
        }
        if e.pending > 0 {
            return Verdict::Deferred;
        }
        let deferred = std::mem::take(&mut e.deferred);
        match e.current {
            Some(c) if deferred > c => {
                self.map.remove(&terminal);
                Verdict::Kick
            }
            Some(_) => Verdict::Keep,
            None => {
                self.map.remove(&terminal);
                Verdict::Keep
            }
        }
    }

    /// Another node claimed `terminal` with `generation`.
    pub fn notice(&mut self, terminal: Address, generation: u64) -> Verdict {
        let Some(e) = self.map.get_mut(&terminal) else {
            return Verdict::Keep;
        };
        if e.pending > 0 {
            e.deferred = e.deferred.max(generation);
            return Verdict::Deferred;
        }
        match e.current {
            Some(c) if c < generation => {
                self.map.remove(&terminal);
                Verdict::Kick
            }
            _ => Verdict::Keep,
        }
    }

    /// The terminal's session with `generation` logged out: forget it unless a newer local
    /// login replaced it meanwhile. True when forgotten.
    pub fn forget(&mut self, terminal: Address, generation: u64) -> bool {
        match self.map.get(&terminal) {
            Some(e) if e.pending == 0 && e.current == Some(generation) => {
                self.map.remove(&terminal);
                true
            }
            _ => false,
        }
    }

    /// Every terminal with a finished claim and its generation.
    pub fn held(&self) -> BTreeMap<Address, u64> {
        self.map
            .iter()
            .filter_map(|(t, e)| e.current.map(|g| (*t, g)))
            .collect()
    }

    /// Terminals with a finished claim.
    pub fn len(&self) -> usize {
        self.map.values().filter(|e| e.current.is_some()).count()
    }

    /// Whether no terminal is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Address = Address::device(42);

    fn held(g: u64) -> Generations {
        let mut s = Generations::default();
        s.begin(T);
        assert_eq!(s.finish(T, Some(g)), Verdict::Keep);
        s
    }

    #[test]
    fn an_older_local_session_is_kicked_a_newer_one_kept() {
        let mut s = held(10);
        assert_eq!(s.notice(T, 10), Verdict::Keep, "same generation: not older");
        assert_eq!(s.notice(T, 9), Verdict::Keep, "a stale notice");
        assert_eq!(s.held().get(&T), Some(&10));
        assert_eq!(s.notice(T, 11), Verdict::Kick);
        assert!(s.is_empty(), "a kicked terminal is no longer held");
        assert_eq!(s.notice(T, 12), Verdict::Keep, "nothing left to kick");
        assert_eq!(
            Generations::default().notice(T, 1),
            Verdict::Keep,
            "unknown terminal"
        );
    }

    #[test]
    fn a_notice_during_a_local_claim_is_decided_when_the_claim_finishes() {
        // The other node's claim ran after ours (ours got 20, theirs 21): ours must go.
        let mut s = held(10);
        s.begin(T);
        assert_eq!(s.notice(T, 21), Verdict::Deferred);
        assert_eq!(s.finish(T, Some(20)), Verdict::Kick);
        assert!(s.is_empty());
        // Ours ran last (theirs 21 replaced our old 10, ours got 22 and replaces theirs).
        let mut s = held(10);
        s.begin(T);
        assert_eq!(s.notice(T, 21), Verdict::Deferred);
        assert_eq!(s.finish(T, Some(22)), Verdict::Keep);
        assert_eq!(s.held().get(&T), Some(&22));
        assert_eq!(
            s.notice(T, 21),
            Verdict::Keep,
            "the same notice from the mailbox"
        );
    }

    #[test]
    fn two_local_claims_in_flight_decide_on_the_last_one() {
        let mut s = Generations::default();
        s.begin(T);
        s.begin(T);
        assert_eq!(s.notice(T, 30), Verdict::Deferred);
        assert_eq!(
            s.finish(T, Some(29)),
            Verdict::Deferred,
            "one still claiming"
        );
        assert_eq!(s.finish(T, Some(31)), Verdict::Keep, "31 is newer than 30");
        assert_eq!(s.held().get(&T), Some(&31));
    }

    #[test]
    fn a_failed_claim_leaves_the_previous_session_and_forget_is_by_generation() {
        let mut s = held(5);
        s.begin(T);
        assert_eq!(s.finish(T, None), Verdict::Keep);
        assert_eq!(s.held().get(&T), Some(&5));
        assert!(!s.forget(T, 4), "an older session's logout");
        assert!(s.forget(T, 5));
        assert!(s.is_empty());
        let mut s = Generations::default();
        s.begin(T);
        assert_eq!(s.finish(T, None), Verdict::Keep);
        assert!(s.is_empty(), "a failed first claim leaves nothing");
    }
}
