//! A device session's bounded queue from the endpoint's receive path to the session's
//! [`super::worker`] task, whose memory follows how many frames wait in it, not how many have
//! passed through it.
//!
//! Why not `tokio::sync::mpsc`: its channel keeps values in linked blocks of 32 slots,
//! allocates the first block when created and, once 32 values have passed through, keeps a
//! second block for reuse. With one channel per session and a 64-byte
//! [`super::worker::Work`], every session held one 2 KiB block from its login and a second
//! one from its 33rd Send or Upload on, whether or not anything was waiting. A fleet uploading
//! every 30 s therefore stepped up by 2 KiB a session 16 minutes after it logged in: 9.8 MiB
//! for 4,950 sessions, as measured (docs/soak/README.md).
//!
//! Here the frames wait in a `VecDeque` that starts empty (no allocation until the first frame)
//! and is shrunk back to [`IDLE_SLOTS`] slots whenever it empties, so an idle session holds at
//! most `IDLE_SLOTS` slots and a busy one at most as many as wait at once (never more than the
//! queue's capacity, `limits.max_queued_frames_per_session`).
//!
//! One [`Sender`] (the session's endpoint, inside its `FrameWorker`) and one [`Receiver`] (the
//! worker task). Dropping the sender closes the queue: the receiver still gets everything that
//! was queued, then `None`. Once the receiver is gone, sends are refused.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Slots an emptied queue keeps (the smallest allocation a `VecDeque` of frames makes).
pub const IDLE_SLOTS: usize = 4;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Woken on every send and when the sender goes.
    ready: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl<T> Shared<T> {
    /// The state; held only for one synchronous queue operation, never across `.await`.
    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A queue of at most `capacity` items (at least 1).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        ready: Notify::new(),
        capacity: capacity.max(1),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// The sending end (see module docs).
pub struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `item` behind the earlier ones; `Err` (the item back) when the queue is full or
    /// the receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), T> {
        let mut state = self.0.state();
        if state.receiver_gone || state.items.len() >= self.0.capacity {
            return Err(item);
        }
        state.items.push_back(item);
        drop(state);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.state().sender_gone = true;
        self.0.ready.notify_one();
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.0.state();
        f.debug_struct("frame_queue::Sender")
            .field("queued", &state.items.len())
            .field("capacity", &self.0.capacity)
            .finish()
    }
}

/// The receiving end (see module docs).
pub struct Receiver<T>(Arc<Shared<T>>);

/// What one look at the queue found.
enum Taken<T> {
    Item(T),
    Empty,
    Closed,
}

impl<T> Receiver<T> {
    /// The oldest item, waiting for one; `None` once the sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            match self.take() {
                Taken::Item(item) => return Some(item),
                Taken::Closed => return None,
                // A send between this look and the wait below is not missed: `notify_one`
                // with nobody waiting leaves a permit that `notified` takes at once.
                Taken::Empty => self.0.ready.notified().await,
            }
        }
    }

    /// The oldest item if one is waiting now.
    pub fn try_recv(&mut self) -> Option<T> {
        match self.take() {
            Taken::Item(item) => Some(item),
            Taken::Empty | Taken::Closed => None,
        }
    }

    fn take(&self) -> Taken<T> {
        let mut state = self.0.state();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() {
                    state.items.shrink_to(IDLE_SLOTS);
                }
                Taken::Item(item)
            }
            None if state.sender_gone => Taken::Closed,
            None => Taken::Empty,
        }
    }

    /// Slots the queue holds now (its allocation, in items).
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.0.state().items.capacity()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.state().receiver_gone = true;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_and_a_full_queue_refuses_with_the_item_back() {
        let (tx, mut rx) = bounded(3);
        for n in 1..=3 {
            tx.try_send(n).unwrap();
        }
        assert_eq!(tx.try_send(4), Err(4));
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(5).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, Some(5));
        assert_eq!(rx.try_recv(), None);
    }

    /// The property the per-session queue exists for: however many items passed through,
    /// an emptied queue holds at most `IDLE_SLOTS` slots (a `tokio::sync::mpsc` channel holds
    /// two 32-slot blocks after its 32nd item).
    #[tokio::test]
    async fn memory_follows_the_depth_not_the_number_of_items_passed() {
        let (tx, mut rx) = bounded::<[u8; 72]>(64);
        assert_eq!(rx.slots(), 0, "nothing allocated before the first item");
        for _ in 0..1000 {
            tx.try_send([7; 72]).unwrap();
            assert!(rx.recv().await.is_some());
            assert!(rx.slots() <= IDLE_SLOTS, "{} slots", rx.slots());
        }
        for _ in 0..64 {
            tx.try_send([1; 72]).unwrap();
        }
        assert!(rx.slots() >= 64);
        while rx.try_recv().is_some() {}
        assert!(
            rx.slots() <= IDLE_SLOTS,
            "{} slots after a burst",
            rx.slots()
        );
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_on_a_send_and_ends_after_the_sender_is_dropped() {
        let (tx, mut rx) = bounded(8);
        let worker = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(n) = rx.recv().await {
                got.push(n);
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(1).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(2).unwrap();
        tx.try_send(3).unwrap();
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("the receiver ended")
            .unwrap();
        assert_eq!(got, [1, 2, 3], "queued items are delivered before the end");
    }

    #[test]
    fn sends_are_refused_once_the_receiver_is_gone() {
        let (tx, rx) = bounded(8);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(1));
    }
}
