//! The embedded offline store's in-memory view of every terminal's pending deliveries, loaded
//! from the database at open and kept in step with it by the store's writes.
//!
//! A terminal's pending stream is its own inbox (messages addressed to it by name: unicast,
//! lists, groups, sends) merged, in id order, with the broadcasts of its class (pushes to every
//! known terminal of its kind, or of every kind) issued after it was first remembered, minus the
//! broadcasts a full inbox refused for it (`reject-new`). What it has acknowledged is one number,
//! its cursor: deliveries arrive in id order, so a terminal that acknowledges id `n` has every
//! id at or below `n` (the same rule as the since-id at login), and nothing at or below the
//! cursor is pending. A broadcast is therefore one record, not one reference per terminal.
//!
//! The index answers the hot paths without touching the database: whether a login has anything
//! to replay above its since-id, whether an ack covers anything, a terminal's pending count for
//! the per-terminal cap, and which terminals a broadcast is for. It holds no bodies.
//!
//! Sans-IO: the store applies each change to the database and to this index inside the same
//! write transaction; when a transaction rolls back, the store reloads the index from the
//! database (see [`super::super::group_commit`]). The one exception is an acknowledgement
//! ([`DeliveryIndex::acknowledge`]): it moves the cursor here at once and is kept as unsaved
//! until the store's writer takes it ([`DeliveryIndex::take_unsaved`]) into its next
//! transaction, so an ack costs no database round trip and many acks share one commit.

use std::collections::{BTreeSet, HashMap};

use crate::terminal::Kind;

/// The broadcast class of a kind-wide push: 0 for every kind, else the kind's number plus one.
pub fn class_of(kind: Option<Kind>) -> u8 {
    kind.map_or(0, |k| k.as_u8() + 1)
}

/// The broadcast class of the kind a packed terminal key belongs to.
fn kind_class_of_key(key: u64) -> u8 {
    u8::try_from(key >> 32).unwrap_or(u8::MAX).saturating_add(1)
}

mod slots;

pub use slots::TerminalState;
use slots::{NOT_KNOWN, Slots};

/// The parts of a terminal's state that are usually empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rare {
    /// Ids addressed to it by name, all above `cursor`.
    inbox: BTreeSet<u64>,
    /// Broadcast ids refused for it by a full inbox (`reject-new`), all above its broadcast floor.
    skipped: BTreeSet<u64>,
}

/// What [`DeliveryIndex::inbox`] and [`DeliveryIndex::skipped`] show while there is no [`Rare`].
static EMPTY: BTreeSet<u64> = BTreeSet::new();

impl TerminalState {
    /// Remembered at login: the last id issued then (capped at `u64::MAX - 1`); broadcasts above
    /// it are for this terminal. `None`: never remembered (it only gets messages addressed to
    /// it by name).
    pub fn known_since(&self) -> Option<u64> {
        (self.known_since != NOT_KNOWN).then_some(self.known_since)
    }

    /// Acknowledged through this id (0: nothing yet).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Broadcasts with an id above this are pending (unless skipped); `None`: no broadcasts.
    fn broadcast_floor(&self) -> Option<u64> {
        self.known_since().map(|k| k.max(self.cursor))
    }
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.inbox.is_empty() && self.skipped.is_empty()
    }
}

/// What advancing a cursor covered ([`DeliveryIndex::advance_cursor`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    /// Inbox ids now acknowledged (their references go).
    pub inbox: Vec<u64>,
    /// Skip marks now below the cursor (their records go).
    pub skipped: Vec<u64>,
    /// Pending deliveries acknowledged, inbox and broadcasts together.
    pub pending: u64,
}

/// Every terminal's pending deliveries (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct DeliveryIndex {
    /// Every terminal the store knows, one packed 19 B slot each (docs/performance.md,
    /// "Memory per session"). The inbox and the skip marks are empty for most terminals most
    /// of the time, so they live in `rare`, which holds a terminal only while one of them is
    /// not empty.
    terminals: Slots,
    /// The inbox and skip marks of the terminals that have any (a terminal leaves once both
    /// are empty again).
    rare: HashMap<u64, Rare>,
    /// Unexpired broadcast ids per class, ascending.
    broadcasts: HashMap<u8, Vec<u64>>,
    /// The last message id issued.
    last_id: u64,
    /// Cursor moves made by [`DeliveryIndex::acknowledge`] and not yet taken to be written.
    unsaved: HashMap<u64, Covered>,
    /// Terminals remembered by [`DeliveryIndex::remember_unsaved`] and not yet taken to be
    /// written.
    unsaved_known: Vec<u64>,
}

/// One terminal's acknowledgements to write ([`DeliveryIndex::take_unsaved`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsavedAck {
    /// The terminal's key.
    pub key: u64,
    /// Its cursor now.
    pub cursor: u64,
    /// Everything its acknowledgements covered since the last take.
    pub covered: Covered,
}

impl DeliveryIndex {
    /// The last message id issued (0: none).
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Records that `id` was issued.
    pub fn issued(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    /// A terminal's state, if it has any.
    pub fn terminal(&self, key: u64) -> Option<TerminalState> {
        self.terminals.get(key)
    }

    /// Ids addressed to the terminal by name, all above its cursor.
    pub fn inbox(&self, key: u64) -> &BTreeSet<u64> {
        self.rare.get(&key).map_or(&EMPTY, |r| &r.inbox)
    }

    /// Broadcast ids refused for the terminal by a full inbox (`reject-new`), all above its
    /// broadcast floor.
    pub fn skipped(&self, key: u64) -> &BTreeSet<u64> {
        self.rare.get(&key).map_or(&EMPTY, |r| &r.skipped)
    }

    /// The terminal's inbox and skip marks, made if there were none (the terminal too).
    fn rare_mut(&mut self, key: u64) -> &mut Rare {
        self.terminals.update(key, |_| ());
        self.rare.entry(key).or_default()
    }

    /// Runs `change` on the terminal's inbox and skip marks if it has any, then drops them if
    /// both are empty; returns what `change` returned (`R::default()` when there were none).
    fn change_rare<R: Default>(&mut self, key: u64, change: impl FnOnce(&mut Rare) -> R) -> R {
        let Some(rare) = self.rare.get_mut(&key) else {
            return R::default();
        };
        let r = change(rare);
        if rare.is_empty() {
            self.rare.remove(&key);
        }
        r
    }

    /// Whether the terminal was remembered.
    pub fn is_known(&self, key: u64) -> bool {
        self.terminals
            .get(key)
            .is_some_and(|t| t.known_since != NOT_KNOWN)
    }

    /// Remembers a terminal with broadcasts above `since` (no-op when already known).
    pub fn remember(&mut self, key: u64, since: u64) {
        self.terminals.update(key, |t| {
            if t.known_since == NOT_KNOWN {
                t.known_since = since.min(NOT_KNOWN - 1);
            }
        });
    }

    /// Remembers a terminal at its first login with broadcasts above the last id issued, kept
    /// as unsaved until [`DeliveryIndex::take_unsaved_known`] (nothing changes when it is
    /// already known). Returns whether it is the first unsaved one since the last take (the
    /// caller then makes sure a write comes).
    pub fn remember_unsaved(&mut self, key: u64) -> bool {
        if self.is_known(key) {
            return false;
        }
        self.remember(key, self.last_id);
        let first = self.unsaved_known.is_empty();
        self.unsaved_known.push(key);
        first
    }

    /// Takes every unsaved first login, as (terminal, known since), to be written.
    pub fn take_unsaved_known(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.unsaved_known)
            .into_iter()
            .filter_map(|key| self.terminals.get(key).map(|t| (key, t.known_since)))
            .collect()
    }

    /// Carries into `fresh` (this index reloaded from the database after a rollback) every
    /// terminal remembered here and not there, as unsaved: a first login whose record was in
    /// the rolled-back transaction, or not written yet, is written by the next one.
    pub fn carry_known_into(&self, fresh: &mut DeliveryIndex) {
        for (key, t) in self.terminals.iter() {
            if t.known_since != NOT_KNOWN && !fresh.is_known(key) {
                fresh.remember(key, t.known_since);
                fresh.unsaved_known.push(key);
            }
        }
    }

    /// Loads a persisted cursor.
    pub fn set_cursor(&mut self, key: u64, cursor: u64) {
        self.terminals.update(key, |t| t.cursor = cursor);
    }

    /// Adds inbox id `id` for the terminal.
    pub fn add_inbox(&mut self, key: u64, id: u64) {
        self.rare_mut(key).inbox.insert(id);
    }

    /// Removes inbox id `id` of the terminal; whether it was there.
    pub fn remove_inbox(&mut self, key: u64, id: u64) -> bool {
        self.change_rare(key, |r| r.inbox.remove(&id))
    }

    /// Adds broadcast `id` of `class` (ids are added in increasing order).
    pub fn add_broadcast(&mut self, class: u8, id: u64) {
        let v = self.broadcasts.entry(class).or_default();
        match v.last() {
            Some(last) if *last >= id => {
                let at = v.partition_point(|x| *x < id);
                if v.get(at) != Some(&id) {
                    v.insert(at, id);
                }
            }
            _ => v.push(id),
        }
    }

    /// Marks broadcast `id` as refused for the terminal.
    pub fn skip(&mut self, key: u64, id: u64) {
        self.rare_mut(key).skipped.insert(id);
    }

    /// Removes broadcast `id` of `class` (it expired) and every skip mark of it.
    pub fn remove_broadcast(&mut self, class: u8, id: u64) {
        if let Some(v) = self.broadcasts.get_mut(&class)
            && let Ok(at) = v.binary_search(&id)
        {
            v.remove(at);
        }
        self.rare.retain(|_, r| {
            r.skipped.remove(&id);
            !r.is_empty()
        });
    }

    /// Removes expired inbox ids from every terminal; returns the (terminal, id) pairs removed.
    pub fn remove_inbox_ids(&mut self, ids: &BTreeSet<u64>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if ids.is_empty() {
            return out;
        }
        self.rare.retain(|key, r| {
            for id in ids {
                if r.inbox.remove(id) {
                    out.push((*key, *id));
                }
            }
            !r.is_empty()
        });
        out
    }

    /// The two broadcast lists a terminal of this key reads (every kind, its kind).
    fn lists_of(&self, key: u64) -> [&[u64]; 2] {
        let get = |c: u8| self.broadcasts.get(&c).map_or(&[][..], Vec::as_slice);
        [get(0), get(kind_class_of_key(key))]
    }

    /// The terminal's pending ids above `above`, in id order, at most `limit`.
    pub fn pending(&self, key: u64, above: u64, limit: usize) -> Vec<u64> {
        let Some(t) = self.terminals.get(key) else {
            return Vec::new();
        };
        let skipped = self.skipped(key);
        let mut out: Vec<u64> = self
            .inbox(key)
            .range(above.saturating_add(1)..)
            .take(limit)
            .copied()
            .collect();
        if let Some(floor) = t.broadcast_floor() {
            let from = floor.max(above);
            for list in self.lists_of(key) {
                let start = list.partition_point(|x| *x <= from);
                out.extend(
                    list[start..]
                        .iter()
                        .filter(|id| !skipped.contains(id))
                        .take(limit),
                );
            }
        }
        out.sort_unstable();
        out.truncate(limit);
        out
    }

    /// How many deliveries are pending for the terminal (the per-terminal cap counts these).
    pub fn pending_count(&self, key: u64) -> u64 {
        let Some(t) = self.terminals.get(key) else {
            return 0;
        };
        let mut n = self.inbox(key).len() as u64;
        if let Some(floor) = t.broadcast_floor() {
            for list in self.lists_of(key) {
                n += (list.len() - list.partition_point(|x| *x <= floor)) as u64;
            }
            n = n.saturating_sub(self.skipped(key).len() as u64);
        }
        n
    }

    /// Whether anything at or below `through` is pending for the terminal.
    pub fn has_pending_through(&self, key: u64, through: u64) -> bool {
        self.pending(key, 0, 1)
            .first()
            .is_some_and(|id| *id <= through)
    }

    /// The terminal acknowledged everything through `through` (capped at the last id issued:
    /// a since-id from the future must not hide later messages): moves its cursor and returns
    /// what that covered. Nothing changes when nothing pending is covered.
    pub fn advance_cursor(&mut self, key: u64, through: u64) -> Covered {
        let through = through.min(self.last_id);
        let before = self.pending_count(key);
        let Some(t) = self.terminals.get(key) else {
            return Covered::default();
        };
        if through <= t.cursor || !self.has_pending_through(key, through) {
            return Covered::default();
        }
        let (inbox, skipped) = self.change_rare(key, |r| {
            let inbox: Vec<u64> = r.inbox.range(..=through).copied().collect();
            let skipped: Vec<u64> = r.skipped.range(..=through).copied().collect();
            for id in &inbox {
                r.inbox.remove(id);
            }
            for id in &skipped {
                r.skipped.remove(id);
            }
            (inbox, skipped)
        });
        self.terminals.update_existing(key, |t| t.cursor = through);
        let after = self.pending_count(key);
        Covered {
            inbox,
            skipped,
            pending: before - after,
        }
    }

    /// An acknowledgement through `through` ([`DeliveryIndex::advance_cursor`]) kept as unsaved
    /// until [`DeliveryIndex::take_unsaved`]. Returns how many pending deliveries it covered and
    /// whether it is the first unsaved one since the last take (the caller then makes sure a
    /// write comes).
    pub fn acknowledge(&mut self, key: u64, through: u64) -> (u64, bool) {
        let covered = self.advance_cursor(key, through);
        if covered.pending == 0 {
            return (0, false);
        }
        let first = self.unsaved.is_empty();
        let pending = covered.pending;
        let kept = self.unsaved.entry(key).or_default();
        kept.inbox.extend(covered.inbox);
        kept.skipped.extend(covered.skipped);
        kept.pending += pending;
        (pending, first)
    }

    /// Takes every unsaved acknowledgement, with each terminal's cursor now, to be written.
    pub fn take_unsaved(&mut self) -> Vec<UnsavedAck> {
        let unsaved = std::mem::take(&mut self.unsaved);
        unsaved
            .into_iter()
            .map(|(key, covered)| UnsavedAck {
                key,
                cursor: self.terminals.get(key).map_or(0, |t| t.cursor),
                covered,
            })
            .collect()
    }

    /// The remembered terminals a broadcast of `class` is for (every kind for class 0).
    pub fn known_in(&self, class: u8) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .terminals
            .iter()
            .filter(|(k, t)| {
                t.known_since != NOT_KNOWN && (class == 0 || kind_class_of_key(*k) == class)
            })
            .map(|(k, _)| k)
            .collect();
        v.sort_unstable();
        v
    }

    /// Pending deliveries over every terminal (a broadcast counts once per terminal).
    pub fn total_pending(&self) -> u64 {
        self.terminals.keys().map(|k| self.pending_count(k)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::{Address, AddressKey};

    fn dev(id: u32) -> u64 {
        Address::device(id).to_key()
    }

    fn phone(id: u32) -> u64 {
        Address::phone(id).to_key()
    }

    #[test]
    fn a_terminal_sees_its_inbox_and_its_classes_broadcasts_after_it_was_remembered() {
        let mut ix = DeliveryIndex::default();
        let dc = class_of(Some(Kind::Device));
        ix.issued(10);
        ix.add_broadcast(dc, 10); // before anyone was remembered
        ix.remember(dev(1), 10);
        ix.remember(phone(1), 10);
        ix.issued(11);
        ix.add_inbox(dev(1), 11);
        ix.issued(12);
        ix.add_broadcast(dc, 12);
        ix.issued(13);
        ix.add_broadcast(class_of(None), 13);
        ix.issued(14);
        ix.add_broadcast(class_of(Some(Kind::Phone)), 14);
        assert_eq!(ix.pending(dev(1), 0, 10), vec![11, 12, 13]);
        assert_eq!(ix.pending(phone(1), 0, 10), vec![13, 14]);
        assert_eq!(ix.pending(dev(1), 11, 10), vec![12, 13]);
        assert_eq!(ix.pending(dev(1), 0, 2), vec![11, 12]);
        assert_eq!(ix.pending_count(dev(1)), 3);
        // A terminal never remembered gets only its inbox.
        ix.add_inbox(dev(2), 14);
        assert_eq!(ix.pending(dev(2), 0, 10), vec![14]);
        assert_eq!(ix.known_in(dc), vec![dev(1)]);
        assert_eq!(ix.known_in(0), {
            let mut v = vec![dev(1), phone(1)];
            v.sort_unstable();
            v
        });
    }

    #[test]
    fn the_cursor_covers_everything_at_or_below_it_and_skips_are_not_pending() {
        let mut ix = DeliveryIndex::default();
        let dc = class_of(Some(Kind::Device));
        ix.remember(dev(1), 0);
        for id in 1..=6 {
            ix.issued(id);
            if id % 2 == 0 {
                ix.add_broadcast(dc, id);
            } else {
                ix.add_inbox(dev(1), id);
            }
        }
        ix.skip(dev(1), 4);
        assert_eq!(ix.pending(dev(1), 0, 10), vec![1, 2, 3, 5, 6]);
        assert_eq!(ix.pending_count(dev(1)), 5);
        assert!(!ix.has_pending_through(dev(1), 0));
        assert!(ix.has_pending_through(dev(1), 1));
        let c = ix.advance_cursor(dev(1), 4);
        assert_eq!((c.inbox, c.skipped, c.pending), (vec![1, 3], vec![4], 3));
        assert_eq!(ix.pending(dev(1), 0, 10), vec![5, 6]);
        assert_eq!(
            ix.advance_cursor(dev(1), 4),
            Covered::default(),
            "idempotent"
        );
        // A cursor from the future stops at the last id issued.
        let c = ix.advance_cursor(dev(1), u64::MAX);
        assert_eq!(c.pending, 2);
        assert_eq!(ix.terminal(dev(1)).unwrap().cursor(), 6);
        ix.issued(7);
        ix.add_broadcast(dc, 7);
        assert_eq!(ix.pending(dev(1), 0, 10), vec![7]);
        // An expired broadcast leaves every list and every skip mark.
        ix.skip(dev(1), 7);
        ix.remove_broadcast(dc, 7);
        assert_eq!(ix.pending_count(dev(1)), 0);
        assert!(ix.skipped(dev(1)).is_empty());
    }

    #[test]
    fn a_terminal_is_one_19_byte_slot_and_its_inbox_row_goes_once_empty() {
        // Every terminal the store knows holds one slot (key and state) in the index's table.
        assert_eq!(Slots::SLOT_BYTES, 19);
        let mut ix = DeliveryIndex::default();
        let dc = class_of(Some(Kind::Device));
        ix.remember(dev(1), 0);
        assert!(!ix.rare.contains_key(&dev(1)), "nothing pending");
        ix.issued(1);
        ix.add_inbox(dev(1), 1);
        ix.issued(2);
        ix.add_broadcast(dc, 2);
        ix.skip(dev(1), 2);
        assert!(ix.remove_inbox(dev(1), 1));
        assert!(ix.rare.contains_key(&dev(1)), "a skip mark left");
        ix.remove_broadcast(dc, 2);
        assert!(!ix.rare.contains_key(&dev(1)), "both empty again");
        ix.issued(3);
        ix.add_inbox(dev(1), 3);
        assert_eq!(ix.advance_cursor(dev(1), 3).inbox, vec![3]);
        assert!(!ix.rare.contains_key(&dev(1)), "acknowledged");
        // Remembered at the largest possible id: still remembered, nothing above it pending.
        ix.remember(dev(2), u64::MAX);
        assert!(ix.is_known(dev(2)));
        // Capped below the "never remembered" mark, still above every message id.
        let since = ix.terminal(dev(2)).unwrap().known_since().unwrap();
        assert!(since >= 1 << 53, "{since}");
        assert_eq!(ix.pending_count(dev(2)), 0);
        assert_eq!(ix.terminal(dev(3)).map(|t| t.known_since()), None);
        ix.set_cursor(dev(3), 5);
        assert!(!ix.is_known(dev(3)));
        assert_eq!(ix.terminal(dev(3)).unwrap().known_since(), None);
    }

    #[test]
    fn acknowledgements_merge_per_terminal_until_taken_and_only_the_first_asks_for_a_write() {
        let mut ix = DeliveryIndex::default();
        let dc = class_of(Some(Kind::Device));
        ix.remember(dev(1), 0);
        ix.remember(dev(2), 0);
        for id in 1..=4 {
            ix.issued(id);
            if id % 2 == 0 {
                ix.add_broadcast(dc, id);
            } else {
                ix.add_inbox(dev(1), id);
            }
        }
        assert_eq!(
            ix.acknowledge(dev(1), 2),
            (2, true),
            "inbox 1 and broadcast 2"
        );
        assert_eq!(
            ix.acknowledge(dev(1), 2),
            (0, false),
            "covers nothing: not kept"
        );
        assert_eq!(ix.acknowledge(dev(2), 4), (2, false), "not the first");
        assert_eq!(ix.acknowledge(dev(1), 4), (2, false));
        assert_eq!(
            ix.pending(dev(1), 0, 10),
            Vec::<u64>::new(),
            "moved at once"
        );
        let mut taken = ix.take_unsaved();
        taken.sort_by_key(|u| u.key);
        let mut want = vec![
            UnsavedAck {
                key: dev(1),
                cursor: 4,
                covered: Covered {
                    inbox: vec![1, 3],
                    skipped: vec![],
                    pending: 4,
                },
            },
            UnsavedAck {
                key: dev(2),
                cursor: 4,
                covered: Covered {
                    inbox: vec![],
                    skipped: vec![],
                    pending: 2,
                },
            },
        ];
        want.sort_by_key(|u| u.key);
        assert_eq!(taken, want);
        assert!(ix.take_unsaved().is_empty());
        ix.issued(5);
        ix.add_broadcast(dc, 5);
        assert_eq!(
            ix.acknowledge(dev(2), 5),
            (1, true),
            "first again after a take"
        );
    }
}
