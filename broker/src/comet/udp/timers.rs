//! A shard's session timers, sans-IO: which session's link needs [`Link::poll`] next, and when.
//!
//! Each session's next deadline ([`Link::poll_timeout`]) is either *near* (within
//! [`NEAR_MS`] of now: a retransmission, a delayed ack, a silence timeout about to strike) or
//! *far* (an idle session's silence timeout, tens of seconds away).
//! * Near deadlines sit in one ordered set of `(deadline_ms, session_id)`; the shard sleeps
//!   until the first.
//! * Far deadlines sit nowhere: the session is only marked far ([`Slot::FAR`]). While any
//!   session is far, the shard sweeps its table every [`NEAR_MS`] ([`Timers::sweep_due`]) and
//!   moves each far session whose deadline has come within [`NEAR_MS`] into the set, so it
//!   still fires at its exact deadline.
//!
//! Why: an idle session is the common case, and its only deadline moves with every packet it
//! sends. In the set it costs a B-tree entry (about 34 B per session with the nodes' slack)
//! and a removal and an insertion per packet; marked far it costs nothing, and one visit a
//! second (docs/performance.md, "Memory per session", has the broker's CPU with 10,000 idle
//! sessions before and after).
//!
//! The shard keeps each session's [`Slot`] in the session itself and hands it to every call
//! here, so this module never looks up a session.
//!
//! [`Link::poll`]: super::super::link::Link::poll
//! [`Link::poll_timeout`]: super::super::link::Link::poll_timeout

use std::collections::BTreeSet;

/// How far ahead a deadline is kept in the ordered set, and how often far sessions are swept.
pub const NEAR_MS: u64 = 1_000;

/// Where one session's timer is: in the set under a deadline, marked far, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u64);

impl Slot {
    /// No deadline at all (a session not yet scheduled).
    pub const NONE: Slot = Slot(u64::MAX);
    /// Deadline beyond [`NEAR_MS`]: found by the sweep.
    pub const FAR: Slot = Slot(u64::MAX - 1);

    /// Whether the sweep must look at this session.
    pub fn is_far(self) -> bool {
        self == Slot::FAR
    }

    /// The deadline under which the session sits in the set, if it does.
    fn near(self) -> Option<u64> {
        (self != Slot::NONE && self != Slot::FAR).then_some(self.0)
    }
}

/// The near set, the count of far sessions and the next sweep (see the module docs).
#[derive(Debug, Default)]
pub struct Timers {
    near: BTreeSet<(u64, u32)>,
    far: usize,
    next_sweep: Option<u64>,
}

impl Timers {
    /// Moves session `sid` from `slot` to where `deadline` belongs at `now_ms`; returns the
    /// new slot (store it in the session).
    pub fn place(&mut self, sid: u32, slot: Slot, deadline: u64, now_ms: u64) -> Slot {
        let want = if deadline > now_ms.saturating_add(NEAR_MS) {
            Slot::FAR
        } else {
            Slot(deadline.min(Slot::FAR.0 - 1))
        };
        if want == slot {
            return slot;
        }
        self.remove(sid, slot);
        match want.near() {
            Some(d) => {
                self.near.insert((d, sid));
            }
            None => {
                self.far += 1;
                if self.next_sweep.is_none() {
                    self.next_sweep = Some(now_ms.saturating_add(NEAR_MS));
                }
            }
        }
        want
    }

    /// Forgets session `sid`, which was at `slot` (it ended, or fired).
    pub fn remove(&mut self, sid: u32, slot: Slot) {
        if slot.is_far() {
            self.far -= 1;
        } else if let Some(d) = slot.near() {
            self.near.remove(&(d, sid));
        }
    }

    /// When the shard must next wake for its timers: the first near deadline or the next
    /// sweep, whichever comes first.
    pub fn next_wake(&self) -> Option<u64> {
        let first = self.near.first().map(|(d, _)| *d);
        [first, self.next_sweep].into_iter().flatten().min()
    }

    /// Takes the first session whose near deadline is at or before `now_ms` (its slot is then
    /// [`Slot::NONE`]).
    pub fn pop_due(&mut self, now_ms: u64) -> Option<u32> {
        let &(deadline, sid) = self.near.first()?;
        if deadline > now_ms {
            return None;
        }
        self.near.pop_first();
        Some(sid)
    }

    /// Whether far sessions must be swept at `now_ms` ([`Timers::sweep`]).
    pub fn sweep_due(&self, now_ms: u64) -> bool {
        self.next_sweep.is_some_and(|at| at <= now_ms)
    }

    /// One sweep at `now_ms`: each far session, as `(sid, slot, its deadline)`, is placed again
    /// (so one due within [`NEAR_MS`] moves into the set); the next sweep is [`NEAR_MS`] later
    /// while any session is still far.
    pub fn sweep<'a>(&mut self, now_ms: u64, far: impl Iterator<Item = (u32, &'a mut Slot, u64)>) {
        for (sid, slot, deadline) in far {
            *slot = self.place(sid, *slot, deadline, now_ms);
        }
        self.next_sweep = (self.far > 0).then(|| now_ms.saturating_add(NEAR_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard's worth of sessions with fixed deadlines, driven like the shard drives them.
    struct Shard {
        timers: Timers,
        slots: Vec<Slot>,
        deadlines: Vec<u64>,
    }

    impl Shard {
        fn new(deadlines: &[u64], now: u64) -> Shard {
            let mut timers = Timers::default();
            let slots = deadlines
                .iter()
                .enumerate()
                .map(|(sid, &d)| timers.place(sid as u32, Slot::NONE, d, now))
                .collect();
            Shard {
                timers,
                slots,
                deadlines: deadlines.to_vec(),
            }
        }

        /// Runs the shard's loop from `now` to `until`, waking only when the timers ask;
        /// returns `(sid, when it fired)` in firing order.
        fn run(&mut self, mut now: u64, until: u64) -> Vec<(u32, u64)> {
            let mut fired = Vec::new();
            while let Some(wake) = self.timers.next_wake() {
                now = now.max(wake);
                if now > until {
                    break;
                }
                while let Some(sid) = self.timers.pop_due(now) {
                    self.slots[sid as usize] = Slot::NONE;
                    fired.push((sid, now));
                }
                if self.timers.sweep_due(now) {
                    let far = self
                        .slots
                        .iter_mut()
                        .zip(&self.deadlines)
                        .enumerate()
                        .filter(|(_, (slot, _))| slot.is_far())
                        .map(|(sid, (slot, &d))| (sid as u32, slot, d));
                    self.timers.sweep(now, far);
                }
            }
            fired
        }
    }

    #[test]
    fn near_and_far_deadlines_fire_at_their_exact_time_in_order() {
        // Near ones, one exactly at the boundary, and far ones seconds and minutes away.
        let deadlines = [50, 1_000, 1_001, 2_500, 90_000, 7, 89_999];
        let mut shard = Shard::new(&deadlines, 0);
        assert_eq!(shard.slots[0], Slot(50));
        assert_eq!(shard.slots[1], Slot(1_000), "at the boundary: near");
        assert_eq!(shard.slots[2], Slot::FAR);
        assert_eq!(
            shard.timers.near.len(),
            3,
            "far sessions are not in the set"
        );
        let fired = shard.run(0, 100_000);
        let mut expected: Vec<(u32, u64)> = deadlines
            .iter()
            .enumerate()
            .map(|(sid, &d)| (sid as u32, d))
            .collect();
        expected.sort_by_key(|&(sid, d)| (d, sid));
        assert_eq!(fired, expected);
        assert_eq!(shard.timers.far, 0);
        assert_eq!(
            shard.timers.next_wake(),
            None,
            "nothing left: no more sweeps"
        );
    }

    #[test]
    fn a_late_sweep_fires_what_came_due_at_once_and_loses_nothing() {
        let mut shard = Shard::new(&[1_500, 3_000], 0);
        assert_eq!(shard.timers.next_wake(), Some(1_000), "the first sweep");
        // The shard wakes 2.2 s late: the first is overdue, the second comes within reach.
        let fired = shard.run(3_200, 10_000);
        assert_eq!(fired, [(0, 3_200), (1, 3_200)]);
    }

    #[test]
    fn moving_a_deadline_moves_the_session_between_set_and_sweep() {
        let mut t = Timers::default();
        let slot = t.place(9, Slot::NONE, 30_000, 0);
        assert_eq!((slot, t.far), (Slot::FAR, 1));
        // Its deadline moves further: nothing to do.
        assert_eq!(t.place(9, slot, 31_000, 100), Slot::FAR);
        // A retransmission is due soon: into the set, no longer far.
        let slot = t.place(9, slot, 400, 100);
        assert_eq!((slot, t.far, t.near.len()), (Slot(400), 0, 1));
        // Acknowledged: back to its silence deadline.
        let slot = t.place(9, slot, 31_000, 200);
        assert_eq!((slot, t.far, t.near.len()), (Slot::FAR, 1, 0));
        t.remove(9, slot);
        assert_eq!(t.far, 0);
        // With no far session left, the pending sweep finds nothing and no further one is set.
        t.sweep(1_000, std::iter::empty());
        assert_eq!(t.next_wake(), None);
    }
}
