//! Which devices have a phone bound, kept in memory so that a device coming online or going
//! offline with no binding (the common case) costs no database read: the router asks the
//! bindings for the phones to tell at every login and logout ([`Bindings::phones_of`]), and
//! without this view each of those asks was a read transaction on tokio's blocking pool.
//!
//! The view is a count of bindings per device, loaded from `bind_dp` at open. It may count more
//! than the database holds, never fewer: a bind counts its device up before its write and
//! takes it back if the write failed or added nothing; an unbind counts it down only once its
//! write removed a binding. So "no binding here" is always true of the database, and a device
//! the view counts is read from the database as before.
//!
//! [`Bindings::phones_of`]: crate::store::Bindings::phones_of

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::BIND_DP;
use crate::store::StoreError;

/// Bindings per device key, an upper bound of the database's (see the module docs).
#[derive(Debug, Default)]
pub struct BoundDevices {
    counts: Mutex<HashMap<u64, u32>>,
}

impl BoundDevices {
    /// Counts the bindings of every device in `db`'s `bind_dp` table.
    pub fn load(db: &Database) -> Result<BoundDevices, StoreError> {
        let read = db.begin_read()?;
        let table = read.open_table(BIND_DP)?;
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for e in table.iter()? {
            let device = e?.0.value().0;
            *counts.entry(device).or_default() += 1;
        }
        Ok(BoundDevices {
            counts: Mutex::new(counts),
        })
    }

    /// Whether `device` may have a binding; `false` means it has none.
    pub fn may_have(&self, device: u64) -> bool {
        self.lock().contains_key(&device)
    }

    /// Counts one binding of `device` up (before a bind's write).
    pub fn count_up(&self, device: u64) {
        *self.lock().entry(device).or_default() += 1;
    }

    /// Counts one binding of `device` down (a bind that added nothing, or an unbind that
    /// removed one); the device is forgotten at zero.
    pub fn count_down(&self, device: u64) {
        let mut counts = self.lock();
        if let Some(n) = counts.get_mut(&device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&device);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, u32>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_forgotten_once_counted_down_as_often_as_up() {
        let b = BoundDevices::default();
        assert!(!b.may_have(7));
        b.count_up(7);
        b.count_up(7);
        b.count_down(7);
        assert!(b.may_have(7), "one binding left");
        b.count_down(7);
        assert!(!b.may_have(7));
        b.count_down(7);
        assert!(
            !b.may_have(7),
            "counting down an unknown device changes nothing"
        );
        b.count_up(7);
        assert!(b.may_have(7));
    }
}
