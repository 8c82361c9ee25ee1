//! A UDP shard's session table: its sessions stored inline in fixed-size pages, each found by
//! its session id, which names the session's shard, its slot in that shard's table and the
//! slot's generation.
//!
//! Compared with a hash map of boxed sessions, a session costs no allocation of its own (no
//! allocator header, no rounding up to the allocator's size classes) and no hash-table slot
//! (key, pointer, control byte and the spare room a table keeps after growing). Pages are
//! allocated as sessions arrive and never freed; a freed slot is reused first (last freed,
//! first reused), so a table that shrank and grows again takes no new memory.
//!
//! **Session ids.** `sid = local * count + shard` (so [`ShardMap::shard_of`] still finds the
//! shard), with `local = generation << index_bits | slot`. The generation is one byte, never
//! 0 (so no id is 0), and moves on each time the slot is freed, so an id of an ended session
//! does not name the next session in its slot until the generation has come round (256
//! sessions later): a packet with a stale id is dropped as unknown, and one that does reach a
//! later session in its slot fails that session's authentication. `index_bits` is what the
//! 32 bits leave after the shard and the generation, at most 24, so the shards together hold
//! between 2^23 and 2^24 sessions (8.4 to 16.8 million) on any number of cores. A new slot's first generation is
//! random, so a restarted broker is unlikely to hand out the ids of its previous run again.
//!
//! Sans-IO and single-owner: the shard's task is the only user, so nothing here locks.

use super::ShardMap;

/// Slots per page: 64 sessions of about 240 bytes is a 15 KiB allocation.
const PAGE: usize = 64;

/// Bits of a session id's local part given to the generation.
const GENERATION_BITS: u32 = 8;

/// The most slot bits a table uses (2^24 sessions over all shards).
const MAX_INDEX_BITS: u32 = 24;

/// No next vacant slot (end of the free list).
const NONE: u32 = u32::MAX;

/// One slot. Its generation is kept beside it, in its page's array of generations, so a live
/// slot is no larger than the session it holds (the enum's tag fits in a spare value of the
/// session's own fields).
enum Entry<T> {
    /// Free; `next` is the next free slot (or [`NONE`]).
    Vacant { next: u32 },
    /// Promised to a login under way (its id is in the WELCOME being prepared).
    Reserved,
    /// A live session.
    Occupied(T),
}

/// [`PAGE`] slots and their generations: one allocation.
struct Page<T> {
    generations: [u8; PAGE],
    entries: [Entry<T>; PAGE],
}

/// The next generation after `g`, skipping 0.
fn next_generation(g: u8) -> u8 {
    g.checked_add(1).unwrap_or(1)
}

/// How one shard's session ids name a slot and its generation (see the module docs).
#[derive(Clone, Copy, Debug)]
struct IdCodec {
    /// The number of shards.
    count: u32,
    /// This shard.
    shard: u32,
    /// Bits of an id's local part that name the slot.
    index_bits: u32,
}

impl IdCodec {
    fn new(map: ShardMap, shard: usize) -> IdCodec {
        let count = map.count() as u32;
        // Bits the shard number takes in an id: ceil(log2(count)).
        let shard_bits = u32::BITS - (count - 1).leading_zeros();
        IdCodec {
            count,
            shard: shard as u32 % count,
            index_bits: (u32::BITS - shard_bits - GENERATION_BITS).min(MAX_INDEX_BITS),
        }
    }

    /// The most slots a table with these ids holds.
    fn capacity(&self) -> usize {
        1 << self.index_bits
    }

    /// The id of slot `index` in generation `generation`.
    fn encode(&self, index: u32, generation: u8) -> u32 {
        let local = (u32::from(generation) << self.index_bits) | index;
        local * self.count + self.shard
    }

    /// The slot and generation `sid` names, if it is this shard's and in range.
    fn decode(&self, sid: u32) -> Option<(usize, u8)> {
        if sid % self.count != self.shard {
            return None;
        }
        let local = sid / self.count;
        let index = local & ((1 << self.index_bits) - 1);
        let generation = u8::try_from(local >> self.index_bits).ok()?;
        Some((index as usize, generation))
    }
}

/// A shard's sessions by session id (see the module docs).
pub struct SessionTable<T> {
    codec: IdCodec,
    pages: Vec<Box<Page<T>>>,
    /// First free slot of the pages allocated so far ([`NONE`]: all taken).
    free: u32,
}

impl<T> SessionTable<T> {
    /// Bytes one slot takes with its generation: a session's whole cost in the table (besides
    /// a part-filled page).
    #[cfg(test)]
    pub(super) const SLOT_BYTES: usize = std::mem::size_of::<Entry<T>>() + 1;

    /// An empty table for shard `shard` of `map`.
    pub fn new(map: ShardMap, shard: usize) -> SessionTable<T> {
        SessionTable {
            codec: IdCodec::new(map, shard),
            pages: Vec::new(),
            free: NONE,
        }
    }

    /// The most sessions this table holds.
    pub fn capacity(&self) -> usize {
        self.codec.capacity()
    }

    /// Slot `index` and its generation.
    fn entry(&self, index: usize) -> Option<(u8, &Entry<T>)> {
        let page = self.pages.get(index / PAGE)?;
        let i = index % PAGE;
        Some((page.generations[i], &page.entries[i]))
    }

    /// Slot `index` and its generation, to change.
    fn entry_mut(&mut self, index: usize) -> Option<(&mut u8, &mut Entry<T>)> {
        let page = self.pages.get_mut(index / PAGE)?;
        let i = index % PAGE;
        Some((&mut page.generations[i], &mut page.entries[i]))
    }

    /// Adds a page of vacant slots to the free list; `false` when the table is at capacity.
    fn grow(&mut self) -> bool {
        let first = self.pages.len() * PAGE;
        if first + PAGE > self.capacity() {
            return false;
        }
        let start = rand::random::<u8>().max(1);
        let free = self.free;
        let page = Box::new(Page {
            generations: [start; PAGE],
            entries: std::array::from_fn(|i| Entry::Vacant {
                next: if i + 1 < PAGE {
                    (first + i + 1) as u32
                } else {
                    free
                },
            }),
        });
        self.pages.push(page);
        self.free = first as u32;
        true
    }

    /// Reserves a slot for a login under way and returns the id its session will have;
    /// `None` when the table is full. The slot is [`Self::fill`]ed when the login completes,
    /// or [`Self::release`]d when it fails.
    pub fn reserve(&mut self) -> Option<u32> {
        if self.free == NONE && !self.grow() {
            return None;
        }
        let index = self.free;
        let (generation, entry) = self.entry_mut(index as usize)?;
        let Entry::Vacant { next } = *entry else {
            return None;
        };
        let generation = *generation;
        *entry = Entry::Reserved;
        self.free = next;
        Some(self.codec.encode(index, generation))
    }

    /// Puts `value` in the slot reserved as `sid`; gives it back when `sid` names no reserved
    /// slot.
    pub fn fill(&mut self, sid: u32, value: T) -> Result<(), T> {
        let Some((index, generation)) = self.codec.decode(sid) else {
            return Err(value);
        };
        match self.entry_mut(index) {
            Some((g, entry @ Entry::Reserved)) if *g == generation => {
                *entry = Entry::Occupied(value);
                Ok(())
            }
            _ => Err(value),
        }
    }

    /// Frees the slot reserved as `sid` (its login failed); nothing when it is not reserved.
    pub fn release(&mut self, sid: u32) {
        if let Some((index, generation)) = self.codec.decode(sid)
            && matches!(self.entry(index), Some((g, Entry::Reserved)) if g == generation)
        {
            self.vacate(index);
        }
    }

    /// Makes slot `index` vacant with the next generation and puts it first on the free list;
    /// returns what it held.
    fn vacate(&mut self, index: usize) -> Option<T> {
        let free = self.free;
        let (generation, entry) = self.entry_mut(index)?;
        *generation = next_generation(*generation);
        let old = std::mem::replace(entry, Entry::Vacant { next: free });
        self.free = index as u32;
        match old {
            Entry::Occupied(value) => Some(value),
            _ => None,
        }
    }

    /// The slot of the live session `sid` names.
    fn live_index(&self, sid: u32) -> Option<usize> {
        let (index, generation) = self.codec.decode(sid)?;
        let live = matches!(self.entry(index)?, (g, Entry::Occupied(_)) if g == generation);
        live.then_some(index)
    }

    /// The live session `sid` names.
    pub fn get(&self, sid: u32) -> Option<&T> {
        match self.entry(self.live_index(sid)?)? {
            (_, Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    /// The live session `sid` names, to change.
    pub fn get_mut(&mut self, sid: u32) -> Option<&mut T> {
        let index = self.live_index(sid)?;
        match self.entry_mut(index)? {
            (_, Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    /// Takes the live session `sid` names out of the table; its slot is free again.
    pub fn remove(&mut self, sid: u32) -> Option<T> {
        let index = self.live_index(sid)?;
        self.vacate(index)
    }

    /// Every live session with its id.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        let codec = self.codec;
        self.pages
            .iter_mut()
            .flat_map(|page| page.generations.iter().zip(page.entries.iter_mut()))
            .enumerate()
            .filter_map(move |(index, (generation, entry))| match entry {
                Entry::Occupied(value) => Some((codec.encode(index as u32, *generation), value)),
                _ => None,
            })
    }

    /// The ids of every live session.
    pub fn ids(&mut self) -> Vec<u32> {
        self.iter_mut().map(|(sid, _)| sid).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(count: usize, shard: usize) -> SessionTable<String> {
        SessionTable::new(ShardMap::new(count), shard)
    }

    fn add(t: &mut SessionTable<String>, value: &str) -> u32 {
        let sid = t.reserve().expect("room");
        t.fill(sid, value.to_string()).expect("reserved");
        sid
    }

    #[test]
    fn ids_name_their_shard_and_their_session_and_are_never_zero() {
        for (count, shard) in [(1, 0), (2, 0), (2, 1), (3, 2), (7, 4), (64, 63)] {
            let mut t = table(count, shard);
            let map = ShardMap::new(count);
            let sids: Vec<u32> = (0..200).map(|i| add(&mut t, &i.to_string())).collect();
            for (i, &sid) in sids.iter().enumerate() {
                assert_ne!(sid, 0);
                assert_eq!(map.shard_of(sid), shard, "count {count}");
                assert_eq!(t.get(sid), Some(&i.to_string()));
            }
            let mut unique = sids.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), sids.len());
            assert_eq!(t.ids().len(), 200);
            // An id of another shard names nothing here.
            if count > 1 {
                assert!(t.get(sids[0] + 1).is_none());
            }
        }
    }

    #[test]
    fn a_reserved_slot_is_not_live_until_filled_and_is_free_again_when_released() {
        let mut t = table(2, 1);
        let sid = t.reserve().unwrap();
        assert!(t.get(sid).is_none(), "reserved is not live");
        assert!(t.remove(sid).is_none());
        t.release(sid);
        assert!(
            t.fill(sid, "late".into()).is_err(),
            "released: not fillable"
        );
        let again = t.reserve().unwrap();
        assert_ne!(again, sid, "the slot comes back under a new generation");
        assert!(t.fill(again, "x".into()).is_ok());
        assert_eq!(t.ids().len(), 1);
        // Releasing a live session's id changes nothing.
        t.release(again);
        assert_eq!(t.get(again).map(String::as_str), Some("x"));
    }

    #[test]
    fn an_ended_sessions_id_names_nothing_and_its_slot_is_reused_under_a_new_id() {
        let mut t = table(2, 0);
        let a = add(&mut t, "a");
        let b = add(&mut t, "b");
        assert_eq!(t.remove(a).as_deref(), Some("a"));
        assert!(t.get(a).is_none());
        assert!(t.get_mut(a).is_none());
        assert!(t.remove(a).is_none());
        let c = add(&mut t, "c");
        assert_ne!(c, a);
        assert!(
            t.get(a).is_none(),
            "the old id does not reach the new session"
        );
        assert_eq!(t.get(c).map(String::as_str), Some("c"));
        assert_eq!(t.get(b).map(String::as_str), Some("b"));
        // The slot was reused: still one page.
        assert_eq!(t.pages.len(), 1);
    }

    #[test]
    fn a_slots_generation_comes_round_only_after_255_sessions_in_it() {
        let mut t = table(1, 0);
        let first = add(&mut t, "first");
        t.remove(first);
        let mut seen = vec![first];
        for _ in 0..254 {
            let sid = add(&mut t, "next");
            assert!(!seen.contains(&sid));
            seen.push(sid);
            t.remove(sid);
        }
        assert_eq!(
            add(&mut t, "again"),
            first,
            "generation 255 wraps to 1, not 0"
        );
    }

    #[test]
    fn iteration_yields_every_live_session_with_its_id() {
        let mut t = table(3, 1);
        let sids: Vec<u32> = (0..150).map(|i| add(&mut t, &i.to_string())).collect();
        for &sid in sids.iter().step_by(3) {
            t.remove(sid);
        }
        let mut listed: Vec<(u32, String)> = t.iter_mut().map(|(s, v)| (s, v.clone())).collect();
        listed.sort();
        let mut expected: Vec<(u32, String)> = sids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, &s)| (s, i.to_string()))
            .collect();
        expected.sort();
        assert_eq!(listed, expected);
    }

    #[test]
    fn a_full_table_reserves_nothing_more() {
        let mut t = table(1, 0);
        // Shrink the table for the test: 2 pages.
        t.codec.index_bits = 7;
        for i in 0..128 {
            add(&mut t, &i.to_string());
        }
        assert_eq!(t.ids().len(), t.capacity());
        assert!(t.reserve().is_none());
        let any = t.ids()[5];
        t.remove(any);
        assert!(t.reserve().is_some(), "a freed slot is reusable");
    }

    #[test]
    fn the_shards_together_hold_two_to_the_24_sessions() {
        for count in [1usize, 2, 3, 4, 64, 200, 256, 1024] {
            let t = table(count, 0);
            let total = t.capacity() * count;
            assert!(total >= 1 << 23, "count {count}: {total}");
            // The largest id fits in 32 bits.
            let top = t.codec.encode((t.capacity() - 1) as u32, u8::MAX);
            assert_eq!(ShardMap::new(count).shard_of(top), 0);
            let (index, generation) = t.codec.decode(top).unwrap();
            assert_eq!((index, generation), (t.capacity() - 1, u8::MAX));
        }
    }
}
