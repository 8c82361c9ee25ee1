//! Polling a task's future again at once when it woke itself while being polled, instead of
//! handing the wake to tokio.
//!
//! Why: a future that wakes its own task during its poll (hyper's HTTP/1 connection does this
//! for every request with a body: the handler takes the body's chunk, which wakes the
//! connection's reader, the same task) is treated by tokio's multi-thread scheduler as a task
//! that yielded. It goes to the back of the worker's queue, and tokio wakes a parked worker
//! to come and steal it: a futex wake and a context switch on another core, for work the
//! current worker is about to do anyway. [`RepollOnSelfWake`] sees such a wake itself and
//! polls the inner future again, up to [`MAX_REPOLLS`] times per poll, so the task never
//! looks like it yielded. A wake that comes while the inner future is not being polled goes
//! to the task's waker as usual.
//!
//! A future that has used up tokio's cooperative budget is not polled again: tokio defers
//! that wake until the task's poll has returned, so it reaches the task as usual. And
//! [`MAX_REPOLLS`] bounds the rest: a future that always wakes itself does not hold its
//! worker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// How many times one poll of [`RepollOnSelfWake`] polls its inner future again after the
/// inner future woke itself.
pub const MAX_REPOLLS: u32 = 4;

/// The inner future is being polled: a wake now is seen by the poller, not forwarded.
const POLLING: u8 = 1;
/// A wake came while [`POLLING`] was set.
const WOKEN: u8 = 2;

/// The waker the inner future is given: forwards to the task's waker unless the inner future
/// is being polled right now, in which case it only records the wake.
struct Relay {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let before = self.state.fetch_or(WOKEN, Ordering::AcqRel);
        if before & POLLING == 0 {
            self.task.wake();
        }
    }
}

/// `inner`, polled again at once when it wakes itself during its poll (see the module docs).
pub struct RepollOnSelfWake<F> {
    inner: Pin<Box<F>>,
    relay: Arc<Relay>,
    waker: Waker,
}

impl<F: Future> RepollOnSelfWake<F> {
    /// Wraps `inner` (boxed once, here, so the wrapper is `Unpin`).
    pub fn new(inner: F) -> Self {
        let relay = Arc::new(Relay {
            state: AtomicU8::new(0),
            task: AtomicWaker::new(),
        });
        RepollOnSelfWake {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&relay)),
            relay,
        }
    }
}

impl<F: Future> Future for RepollOnSelfWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.relay.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..=MAX_REPOLLS {
            // Clears a wake forwarded before this poll: this poll answers it.
            this.relay.state.store(POLLING, Ordering::Release);
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
                this.relay.state.store(0, Ordering::Release);
                return Poll::Ready(out);
            }
            // Not woken while polled: from now on wakes go to the task.
            if this
                .relay
                .state
                .compare_exchange(POLLING, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Poll::Pending;
            }
        }
        // Still waking itself after every repoll: let tokio schedule it like any yield.
        this.relay.state.store(0, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Mutex, PoisonError};

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself during each of its first `self_wakes` polls, then is ready; counts polls.
    struct SelfWaking {
        self_wakes: u32,
        polls: u32,
    }

    impl Future for SelfWaking {
        type Output = u32;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            self.polls += 1;
            if self.polls > self.self_wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn task_waker() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(Arc::clone(&counter));
        (counter, waker)
    }

    #[test]
    fn a_self_wake_is_answered_by_polling_again_without_waking_the_task() {
        let (counter, waker) = task_waker();
        let mut cx = Context::from_waker(&waker);
        let mut f = RepollOnSelfWake::new(SelfWaking {
            self_wakes: 2,
            polls: 0,
        });
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(3));
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_is_handed_back_to_the_scheduler() {
        let (counter, waker) = task_waker();
        let mut cx = Context::from_waker(&waker);
        let mut f = RepollOnSelfWake::new(SelfWaking {
            self_wakes: u32::MAX,
            polls: 0,
        });
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Pending);
        assert_eq!(f.inner.polls, MAX_REPOLLS + 1);
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the task is woken once"
        );
    }

    /// Pending until its stored waker was woken from outside.
    #[derive(Default)]
    struct WaitsForOutside {
        waker: Arc<Mutex<Option<Waker>>>,
        fired: Arc<AtomicUsize>,
    }

    impl Future for WaitsForOutside {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.fired.load(Ordering::SeqCst) > 0 {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_from_outside_a_poll_reaches_the_task() {
        let (counter, waker) = task_waker();
        let mut cx = Context::from_waker(&waker);
        let inner = WaitsForOutside::default();
        let (stored, fired) = (Arc::clone(&inner.waker), Arc::clone(&inner.fired));
        let mut f = RepollOnSelfWake::new(inner);
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Pending);
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        fired.store(1, Ordering::SeqCst);
        let outside = stored
            .lock()
            .unwrap()
            .take()
            .expect("the inner future left its waker");
        std::thread::spawn(move || outside.wake()).join().unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "forwarded to the task");
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(()));
    }

    /// Spends tokio's cooperative budget until it runs out (tokio then has the task yield);
    /// counts polls.
    struct SpendsTheBudget {
        polls: u32,
    }

    impl Future for SpendsTheBudget {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            loop {
                match tokio::task::coop::poll_proceed(cx) {
                    Poll::Ready(progress) => progress.made_progress(),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }

    /// tokio wakes a task out of budget only after its poll, so the wrapper does not poll it
    /// again: the task yields as it would without the wrapper.
    #[tokio::test]
    async fn a_future_out_of_its_budget_yields_without_being_polled_again() {
        let mut f = RepollOnSelfWake::new(SpendsTheBudget { polls: 0 });
        let polls = std::future::poll_fn(|cx| {
            assert!(Pin::new(&mut f).poll(cx).is_pending());
            Poll::Ready(f.inner.polls)
        })
        .await;
        assert_eq!(polls, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_to_completion_on_the_runtime() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let f = RepollOnSelfWake::new(async move {
            tokio::task::yield_now().await;
            rx.await.unwrap_or(0)
        });
        let task = tokio::spawn(f);
        tx.send(7).unwrap();
        assert_eq!(task.await.unwrap(), 7);
    }
}
