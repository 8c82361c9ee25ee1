//! [`ClientResources`] (the caller's static memory) and [`DeviceHandle`] (the application's
//! side), plus [`run_plug`], the plug application's task body.

use core::cell::RefCell;

use embassy_futures::select::{Either, select};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::signal::Signal;
use embassy_time::Timer;
use shared_protocol::ids::Address;

use crate::api::{DeviceApi, OutboxError};
use crate::client::{ConnectionState, DeviceClient, Event};
use crate::client::{EVENT_QUEUE, OUTBOX};
use crate::plug::{Meter, Plug, Relay};
use crate::queue::{FullPolicy, UploadError, UploadId};
use crate::rng::Rng;
use crate::stats::Stats;
use crate::time::Instant;

/// The client core and the two wake-up signals, in memory the caller provides (a `StaticCell`).
/// `M` is the mutex kind: `NoopRawMutex` when the runner and the application share one
/// executor, `CriticalSectionRawMutex` otherwise.
pub struct ClientResources<
    'c,
    M: RawMutex,
    R: Rng,
    const Q: usize,
    const P: usize,
    const E: usize = EVENT_QUEUE,
    const O: usize = OUTBOX,
> {
    pub(crate) client: Mutex<M, RefCell<DeviceClient<'c, R, Q, P, E, O>>>,
    /// The application queued something: the runner should transmit.
    pub(crate) runner_wake: Signal<M, ()>,
    /// The runner produced events: the application should look.
    pub(crate) app_wake: Signal<M, ()>,
}

impl<'c, M: RawMutex, R: Rng, const Q: usize, const P: usize, const E: usize, const O: usize>
    ClientResources<'c, M, R, Q, P, E, O>
{
    /// Wraps a client core.
    pub fn new(client: DeviceClient<'c, R, Q, P, E, O>) -> Self {
        ClientResources {
            client: Mutex::new(RefCell::new(client)),
            runner_wake: Signal::new(),
            app_wake: Signal::new(),
        }
    }

    /// Runs `f` on the core under the lock (never held across an `.await`).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut DeviceClient<'c, R, Q, P, E, O>) -> T) -> T {
        self.client.lock(|cell| f(&mut cell.borrow_mut()))
    }
}

/// The application's handle: cheap to copy; implements [`DeviceApi`]. One task should consume
/// events ([`next_event`](Self::next_event)); any task may upload or answer.
pub struct DeviceHandle<
    'd,
    'c,
    M: RawMutex,
    R: Rng,
    const Q: usize,
    const P: usize,
    const E: usize = EVENT_QUEUE,
    const O: usize = OUTBOX,
> {
    pub(crate) res: &'d ClientResources<'c, M, R, Q, P, E, O>,
}

impl<M: RawMutex, R: Rng, const Q: usize, const P: usize, const E: usize, const O: usize> Clone
    for DeviceHandle<'_, '_, M, R, Q, P, E, O>
{
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: RawMutex, R: Rng, const Q: usize, const P: usize, const E: usize, const O: usize> Copy
    for DeviceHandle<'_, '_, M, R, Q, P, E, O>
{
}

impl<'d, 'c, M: RawMutex, R: Rng, const Q: usize, const P: usize, const E: usize, const O: usize>
    DeviceHandle<'d, 'c, M, R, Q, P, E, O>
{
    /// Waits for the next event (command, delivery, connection change...).
    pub async fn next_event(&self) -> Event<P> {
        loop {
            if let Some(event) = self.res.with(|c| c.poll_event()) {
                // The runner may have stopped reading for want of event room.
                return self.wake_runner(event);
            }
            self.res.app_wake.wait().await;
        }
    }

    /// The next event if one is waiting.
    pub fn try_event(&self) -> Option<Event<P>> {
        self.wake_runner(self.res.with(|c| c.poll_event()))
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.res.with(|c| c.state())
    }

    /// Ends the session and stops reconnecting (see `DeviceClient::close`).
    pub fn close(&self) {
        self.res.with(|c| c.close());
        self.res.runner_wake.signal(());
    }

    /// Connects again after [`close`](Self::close).
    pub fn connect(&self) {
        self.res.with(|c| c.connect(super::now()));
        self.res.runner_wake.signal(());
    }

    /// Uploads waiting for acknowledgement.
    pub fn uploads_pending(&self) -> usize {
        self.res.with(|c| c.uploads_pending())
    }

    fn wake_runner<T>(&self, result: T) -> T {
        self.res.runner_wake.signal(());
        result
    }
}

impl<M: RawMutex, R: Rng, const Q: usize, const P: usize, const E: usize, const O: usize> DeviceApi
    for DeviceHandle<'_, '_, M, R, Q, P, E, O>
{
    fn upload_with(
        &mut self,
        topic: &str,
        payload: &[u8],
        when_full: FullPolicy,
    ) -> Result<UploadId, UploadError> {
        let r = self.res.with(|c| c.upload_with(topic, payload, when_full));
        self.wake_runner(r)
    }

    fn command_result(
        &mut self,
        cmd_id: u32,
        status: u16,
        payload: &[u8],
    ) -> Result<(), OutboxError> {
        let r = self.res.with(|c| c.command_result(cmd_id, status, payload));
        self.wake_runner(r)
    }

    fn request(&mut self, path: &str, payload: &[u8]) -> Result<u32, OutboxError> {
        let r = self.res.with(|c| c.request(path, payload));
        self.wake_runner(r)
    }

    fn send(&mut self, to: Address, payload: &[u8]) -> Result<(), OutboxError> {
        let r = self.res.with(|c| c.send(to, payload));
        self.wake_runner(r)
    }

    fn stats(&self) -> Stats {
        self.res.with(|c| c.stats())
    }

    fn is_online(&self) -> bool {
        self.res.with(|c| c.is_online())
    }
}

/// A timer firing at `t` (never for `None`).
pub(crate) fn timer_at(t: Option<Instant>) -> Timer {
    match t {
        Some(t) => Timer::at(embassy_time::Instant::from_millis(t.as_millis())),
        None => Timer::at(embassy_time::Instant::MAX),
    }
}

/// The plug application's task body: answers commands and runs its timers, forever. The
/// client's `P` must hold the plug's largest report ([`crate::plug::REPORT_MAX`]).
pub async fn run_plug<
    M: RawMutex,
    R: Rng,
    Rl: Relay,
    Me: Meter,
    const Q: usize,
    const P: usize,
    const E: usize,
    const O: usize,
>(
    mut handle: DeviceHandle<'_, '_, M, R, Q, P, E, O>,
    plug: &mut Plug<Rl, Me>,
) -> ! {
    const { assert!(P >= crate::plug::REPORT_MAX) };
    loop {
        match select(handle.next_event(), timer_at(plug.poll_timeout())).await {
            Either::First(event) => plug.on_event(&event, super::now(), &mut handle),
            Either::Second(()) => plug.on_timer(super::now(), &mut handle),
        }
    }
}
