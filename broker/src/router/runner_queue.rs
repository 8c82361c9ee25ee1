//! A work queue drained by at most one runner task at a time, shared by the batch queue of
//! kind-wide pushes ([`super::batch`]) and the fan-out queue ([`super::fanout`]).
//!
//! The first item queued while no runner is at work tells its caller to spawn one; the runner
//! takes everything waiting in one step, works on it, and takes again until it finds the queue
//! empty, which marks the queue idle so that the next item starts a new runner. Items queued
//! meanwhile wait for the runner that is at work, so they are handled in arrival order.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// The waiting items and whether a runner is at work.
pub(crate) struct RunnerState<T> {
    waiting: VecDeque<T>,
    /// A runner task exists (it owns the items it took; it ends only after finding none).
    busy: bool,
}

impl<T> Default for RunnerState<T> {
    fn default() -> Self {
        RunnerState {
            waiting: VecDeque::new(),
            busy: false,
        }
    }
}

impl<T> RunnerState<T> {
    /// Whether nothing waits and no runner is at work.
    pub fn idle(&self) -> bool {
        !self.busy && self.waiting.is_empty()
    }

    /// Queues `item`; true when the caller must spawn the runner (none was at work).
    pub fn enqueue(&mut self, item: T) -> bool {
        self.waiting.push_back(item);
        let start = !self.busy;
        self.busy = true;
        start
    }

    /// Moves every waiting item into `into` (arrival order); false, and the queue marked idle,
    /// when there was none and the runner must end.
    pub fn take(&mut self, into: &mut Vec<T>) -> bool {
        if self.waiting.is_empty() {
            self.busy = false;
            return false;
        }
        into.extend(self.waiting.drain(..));
        true
    }
}

/// A [`RunnerState`] behind one mutex, held only for one queue operation (or a small inline
/// step of the caller's).
pub(crate) struct RunnerQueue<T> {
    state: Mutex<RunnerState<T>>,
}

impl<T> Default for RunnerQueue<T> {
    fn default() -> Self {
        RunnerQueue {
            state: Mutex::new(RunnerState::default()),
        }
    }
}

impl<T> RunnerQueue<T> {
    /// Locks the queue state.
    pub fn lock(&self) -> MutexGuard<'_, RunnerState<T>> {
        // Single-step updates leave the state consistent after a panic: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runner_from_the_first_item_until_a_take_finds_none() {
        let mut st = RunnerState::default();
        assert!(st.idle());
        assert!(st.enqueue(1), "idle: the first item starts the runner");
        assert!(!st.enqueue(2), "a runner is already at work");
        assert!(!st.idle());
        let mut got = Vec::new();
        assert!(st.take(&mut got));
        assert_eq!(got, [1, 2], "arrival order");
        assert!(!st.idle(), "busy while the runner works on what it took");
        assert!(!st.enqueue(3), "still busy while the runner works");
        got.clear();
        assert!(st.take(&mut got), "the item that came meanwhile is next");
        assert_eq!(got, [3]);
        assert!(!st.take(&mut got), "empty: the runner ends");
        assert!(st.idle());
        assert!(
            st.enqueue(4),
            "idle again: the next item starts a new runner"
        );
    }
}
