//! The delivery index's per-terminal table, packed: every terminal the store knows has one
//! slot, so a slot is 19 bytes, not the 24 an aligned `(u64, u64, u64)` takes. A key packs an
//! address into 40 bits (kind number and id, see [`crate::terminal::AddressKey`]) and an id
//! fits in 56 bits (message ids stop at 2^53 - 1), so the key takes 5 bytes and each of the two
//! ids 7, with no alignment padding between them.
//!
//! The table hands out [`TerminalState`] by value and takes changes through closures, so the
//! index above it works with plain `u64`s.

use std::collections::HashMap;

/// What the index keeps per terminal: when it was first remembered and how far it has
/// acknowledged (its inbox and skip marks, usually empty, live in the index's `rare` table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminalState {
    /// Remembered at login: the last id issued then; broadcasts above it are for this
    /// terminal. [`NOT_KNOWN`]: never remembered (it only gets messages addressed to it by
    /// name).
    pub(super) known_since: u64,
    /// Acknowledged through this id (0: nothing yet).
    pub(super) cursor: u64,
}

/// [`TerminalState::known_since`] of a terminal never remembered. A remembered terminal's
/// value is capped below it, which changes nothing: ids stop at `MAX_MSG_ID` (2^53 - 1), so no
/// broadcast id lies above either.
pub(super) const NOT_KNOWN: u64 = u64::MAX;

impl Default for TerminalState {
    fn default() -> Self {
        TerminalState {
            known_since: NOT_KNOWN,
            cursor: 0,
        }
    }
}

/// Keys no address packs to are at or above this (see the module docs).
const KEY_LIMIT: u64 = 1 << 40;

/// The largest id a slot holds; [`NOT_KNOWN`] is kept as the one value above it.
const ID_MAX: u64 = (1 << 56) - 2;

/// A key in 5 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key([u8; 5]);

impl Key {
    /// `None` for a key no address packs to.
    fn pack(key: u64) -> Option<Key> {
        (key < KEY_LIMIT).then(|| {
            let b = key.to_le_bytes();
            Key([b[0], b[1], b[2], b[3], b[4]])
        })
    }

    fn unpack(self) -> u64 {
        let mut b = [0u8; 8];
        b[..5].copy_from_slice(&self.0);
        u64::from_le_bytes(b)
    }
}

/// A [`TerminalState`] in 14 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed([u8; 14]);

fn pack_id(v: u64) -> [u8; 7] {
    let v = if v == NOT_KNOWN {
        ID_MAX + 1
    } else {
        v.min(ID_MAX)
    };
    let b = v.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6]]
}

fn unpack_id(b: &[u8]) -> u64 {
    let mut full = [0u8; 8];
    full[..7].copy_from_slice(b);
    match u64::from_le_bytes(full) {
        v if v > ID_MAX => NOT_KNOWN,
        v => v,
    }
}

impl Packed {
    fn pack(s: TerminalState) -> Packed {
        let mut b = [0u8; 14];
        b[..7].copy_from_slice(&pack_id(s.known_since));
        b[7..].copy_from_slice(&pack_id(s.cursor));
        Packed(b)
    }

    fn unpack(self) -> TerminalState {
        TerminalState {
            known_since: unpack_id(&self.0[..7]),
            cursor: unpack_id(&self.0[7..]),
        }
    }
}

/// Every terminal's [`TerminalState`] by key (see the module docs).
#[derive(Clone, Debug, Default)]
pub(super) struct Slots {
    by_key: HashMap<Key, Packed>,
}

impl Slots {
    /// The terminal's state, if it has a slot.
    pub(super) fn get(&self, key: u64) -> Option<TerminalState> {
        self.by_key.get(&Key::pack(key)?).map(|p| p.unpack())
    }

    /// Runs `change` on the terminal's state, made (default) if it had no slot, and keeps the
    /// result. A key no address packs to gets no slot (nothing can look it up): `change` then
    /// runs on a default state that is not kept.
    pub(super) fn update<R>(
        &mut self,
        key: u64,
        change: impl FnOnce(&mut TerminalState) -> R,
    ) -> R {
        let Some(key) = Key::pack(key) else {
            return change(&mut TerminalState::default());
        };
        let slot = self
            .by_key
            .entry(key)
            .or_insert_with(|| Packed::pack(TerminalState::default()));
        let mut state = slot.unpack();
        let r = change(&mut state);
        *slot = Packed::pack(state);
        r
    }

    /// Runs `change` on the terminal's state if it has a slot.
    pub(super) fn update_existing(&mut self, key: u64, change: impl FnOnce(&mut TerminalState)) {
        if let Some(slot) = Key::pack(key).and_then(|k| self.by_key.get_mut(&k)) {
            let mut state = slot.unpack();
            change(&mut state);
            *slot = Packed::pack(state);
        }
    }

    /// Every terminal with its state, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, TerminalState)> + '_ {
        self.by_key.iter().map(|(k, p)| (k.unpack(), p.unpack()))
    }

    /// Every terminal's key, in no order.
    pub(super) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_key.keys().map(|k| k.unpack())
    }

    /// Bytes one slot takes in the table (key and state, without the table's control byte).
    #[cfg(test)]
    pub(super) const SLOT_BYTES: usize = std::mem::size_of::<(Key, Packed)>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_19_bytes_and_gives_back_what_it_was_given() {
        assert_eq!(Slots::SLOT_BYTES, 19);
        let mut slots = Slots::default();
        let keys = [0, 1, (7 << 32) | u64::from(u32::MAX), KEY_LIMIT - 1];
        let ids = [0, 1, (1 << 53) - 1, NOT_KNOWN - 1, NOT_KNOWN];
        for &key in &keys {
            for &known_since in &ids {
                for &cursor in &ids[..3] {
                    slots.update(key, |s| {
                        *s = TerminalState {
                            known_since,
                            cursor,
                        }
                    });
                    let got = slots.get(key).unwrap();
                    assert_eq!(got.cursor, cursor);
                    // A remembered terminal's value is capped below `NOT_KNOWN`, which keeps
                    // every id (ids stop at 2^53 - 1).
                    let want = if known_since == NOT_KNOWN {
                        NOT_KNOWN
                    } else {
                        known_since.min(ID_MAX)
                    };
                    assert_eq!(got.known_since, want, "{key} {known_since}");
                }
            }
        }
        let mut seen: Vec<u64> = slots.keys().collect();
        seen.sort_unstable();
        assert_eq!(seen, keys);
    }

    #[test]
    fn a_key_no_address_packs_to_gets_no_slot() {
        let mut slots = Slots::default();
        let changed = slots.update(KEY_LIMIT, |s| {
            s.cursor = 5;
            s.cursor
        });
        assert_eq!(changed, 5);
        assert_eq!(slots.get(KEY_LIMIT), None);
        assert_eq!(slots.iter().count(), 0);
        slots.update_existing(KEY_LIMIT, |s| s.cursor = 6);
        assert_eq!(slots.get(KEY_LIMIT), None);
    }

    #[test]
    fn a_new_slot_is_an_unknown_terminal_with_nothing_acknowledged() {
        let mut slots = Slots::default();
        slots.update(3, |_| ());
        assert_eq!(slots.get(3), Some(TerminalState::default()));
        assert_eq!(TerminalState::default().known_since, NOT_KNOWN);
    }
}
