//! Kind-wide pushes stored and offered in batches.
//!
//! A kind-wide push (`all_devices`, `all_phones`, `everyone`) must hold every order stripe
//! ([`super::order`]) from issuing its id until its offer is queued. Taken one push at a time,
//! ten concurrent broadcasts meant ten durable writes in a row with every stripe held across
//! each, and the fan-out drain usually found one message queued per walk, so every session was
//! woken and written to once per message.
//!
//! Here such pushes are handed to one runner task instead ([`super::Router`] spawns it when
//! the queue goes from idle to busy; it ends when the queue is empty). The runner takes every
//! push queued so far as one batch, takes every stripe once, stores the batch's messages
//! concurrently (the embedded store's group commit puts them in one or two transactions),
//! answers each caller, queues the stored ones for the fan-out in increasing id order and
//! releases the stripes; nothing awaits between the answers and the release, and a push that
//! follows an answer needs a stripe, so it is queued behind the batch. Pushes that arrive
//! meanwhile form the next batch. The fan-out drain
//! then finds the batch queued together and offers a session all of it at once, which the
//! session writes in one burst.
//!
//! Guarantees kept: a caller is answered only after its message is durable (or with its own
//! store error: one failing append fails only its push); per-terminal id order holds because
//! the stripes are held from the first id issued to the last offer queued, and the offers are
//! queued in id order ([`in_id_order`]).

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::store::{Appended, StoreError};
use crate::terminal::{Address, Kind};

use super::runner_queue::RunnerQueue;

/// What a kind-wide push gets back: what was stored and how many sessions it was offered to,
/// or its own store error.
pub(crate) type Outcome = Result<(Appended, u64), StoreError>;

/// One kind-wide push waiting for the runner.
pub(crate) struct Pending {
    /// The kind it targets (`None`: every kind).
    pub kind: Option<Kind>,
    /// Its sender, `None` for the backend.
    pub from: Option<Address>,
    /// Its payload.
    pub payload: Bytes,
    /// When it expires (Unix ms).
    pub expires_at_ms: u64,
    /// Where its outcome goes: what was stored and how many sessions it was offered to.
    pub reply: oneshot::Sender<Outcome>,
}

/// The batch queue (see module docs).
pub(crate) type Batches = RunnerQueue<Pending>;

/// The positions of the stored messages among `results` (one per push of a batch, in batch
/// order), sorted by their message id: the order their offers must be queued in. A store may
/// finish concurrent appends in any order, and a failed append has no id and is left out.
pub(crate) fn in_id_order(results: &[Result<Appended, StoreError>]) -> Vec<usize> {
    let mut stored: Vec<(u64, usize)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|a| (a.msg_id, i)))
        .collect();
    stored.sort_unstable();
    stored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(msg_id: u64) -> Result<Appended, StoreError> {
        Ok(Appended {
            msg_id,
            ..Appended::default()
        })
    }

    #[test]
    fn offers_follow_the_ids_the_store_issued_and_skip_failures() {
        let results = vec![
            appended(42),
            Err(StoreError::Backend("disk full".into())),
            appended(40),
            appended(41),
        ];
        assert_eq!(in_id_order(&results), [2, 3, 0]);
        assert!(in_id_order(&[Err(StoreError::Backend("x".into()))]).is_empty());
        assert!(in_id_order(&[]).is_empty());
    }
}
