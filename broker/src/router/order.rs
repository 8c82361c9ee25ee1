//! Per-terminal ordering of deliveries: [`OrderLocks`] makes "issue a message id in the store,
//! then offer the message to the recipients' live sessions" one step per terminal, so every
//! session is offered its terminal's messages in strictly increasing `msg_id` order.
//!
//! Without it two concurrent pushes to one terminal could get ids 41 and 42 from the store and be
//! offered 42 first; a device acknowledges and discards every id at or below the highest it has
//! seen, so 41 would be lost. The locks are `tokio::sync::Mutex` stripes (held across the store
//! append, which awaits): a terminal always maps to the same stripe, so pushes to different
//! terminals mostly run concurrently (and still share the embedded store's group commit), while
//! pushes to the same terminal queue in arrival order (tokio's mutex is fair). A kind-wide push
//! takes every stripe. Stripes are always taken in ascending index order, so two pushes never
//! wait on each other in a cycle.

use tokio::sync::{Mutex, MutexGuard};

use crate::terminal::{Address, AddressKey};

/// Number of stripes (a power of two).
pub const STRIPES: usize = 64;

/// The stripe locks (see module docs).
pub struct OrderLocks {
    stripes: Box<[Mutex<()>]>,
}

impl Default for OrderLocks {
    fn default() -> Self {
        OrderLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

/// Held stripes: while alive, no other push to the covered terminals issues an id or offers.
pub struct OrderGuard<'a> {
    _held: Vec<MutexGuard<'a, ()>>,
}

/// The stripe of a terminal.
pub fn stripe_of(a: Address) -> usize {
    (a.to_key().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES
}

impl OrderLocks {
    /// Takes the stripes of `terminals` (`None`: every stripe, for a kind-wide push).
    pub async fn lock(&self, terminals: Option<&[Address]>) -> OrderGuard<'_> {
        let mut idx: Vec<usize> = match terminals {
            Some(list) => list.iter().map(|a| stripe_of(*a)).collect(),
            None => (0..STRIPES).collect(),
        };
        idx.sort_unstable();
        idx.dedup();
        let mut held = Vec::with_capacity(idx.len());
        for i in idx {
            held.push(self.stripes[i].lock().await);
        }
        OrderGuard { _held: held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn same_terminal_waits_other_terminals_do_not() {
        let locks = Arc::new(OrderLocks::default());
        let a = Address::device(1);
        let other = (2..200)
            .map(Address::device)
            .find(|b| stripe_of(*b) != stripe_of(a))
            .expect("some other stripe");
        let held = locks.lock(Some(&[a])).await;
        // Another terminal's stripe is free.
        tokio::time::timeout(Duration::from_millis(100), locks.lock(Some(&[other])))
            .await
            .expect("other stripe is free");
        // The same terminal (alone, in a list, or kind-wide) waits.
        for t in [Some(vec![a]), Some(vec![other, a]), None] {
            let waited =
                tokio::time::timeout(Duration::from_millis(50), locks.lock(t.as_deref())).await;
            assert!(waited.is_err(), "{t:?} must wait for the held stripe");
        }
        drop(held);
        tokio::time::timeout(Duration::from_millis(100), locks.lock(None))
            .await
            .expect("all stripes free again");
    }
}
