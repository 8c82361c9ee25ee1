//! Group commit for the embedded store.
//!
//! redb allows one write transaction at a time and each commit is an fsync, so writers that each
//! commit alone are capped at one fsync per write however many devices upload at once. Here one
//! writer thread owns the write side: it takes every write request that queued up while the
//! previous commit ran and applies them, in arrival order, in one transaction with one fsync.
//! No request is answered before the commit holding it is durable, so "acknowledged means
//! durable" still holds.
//!
//! Atomicity per request: a request that fails rolls the whole batch back (nothing of it was
//! committed), then the batch is replayed one request per transaction, so the failure affects only
//! its own request and every other request gets the answer it would have got alone. Requests are
//! therefore `FnMut`: they may run twice, and only the committed run's result is answered.
//!
//! Backpressure: the queue in front of the writer holds at most [`QUEUE_CAPACITY`] requests.
//! When it is full, [`GroupCommit::write`] waits for a slot (asynchronously: the calling task
//! yields, no thread blocks) instead of growing the queue, so a flood of writers (device
//! sessions uploading faster than the disk commits) slows down to the disk's pace and memory
//! stays bounded. The writer frees slots a batch at a time as it takes requests in.
//!
//! Lazy writes: [`GroupCommit::write_lazy`] is for writes whose loss in a crash costs only a
//! redelivery (a terminal's acknowledgement cursor, a first login's record): a batch made only of
//! lazy writes commits without an fsync (redb's `Durability::None`), unless the last durable
//! commit is older than the lazy window ([`LAZY_WINDOW`] by default). When no request comes
//! within the window after a lazy commit, the writer makes one durable commit of its own (the
//! batch hook's writes only), so a crash loses at most the lazy writes of the last window even
//! when the broker falls idle right after them. Any durable commit persists every lazy one
//! before it: a durable write that depends on a lazy one (a broadcast that counts a first
//! login) never outlives it.
//!
//! The queue's bound is `storage.writer_queue`; [`GroupCommit::queued`] and
//! [`GroupCommit::waits`] feed the `broker_store_writer_queue` gauge and the
//! `broker_store_writer_waits_total` counter.
//!
//! Rollback hook: a request may keep state outside the database in step with its writes (the
//! embedded store's delivery index); [`GroupCommit::start_with`] takes a hook the writer calls
//! after every rolled-back transaction, before anything else runs, so that state can be reloaded
//! from what is committed.
//!
//! Batch hook: state that changes in memory first and is written later (the embedded store's
//! acknowledgement cursors) is written by a hook the writer runs at the start of every
//! transaction ([`Hooks::before_batch`]), so any commit, lazy or durable, carries every such
//! change made before it. Nobody waits for it: [`GroupCommit::nudge`] only makes sure a
//! transaction comes soon (it queues an empty lazy write unless the queue already holds
//! requests). When the queue closes the writer runs the hook once more in a durable commit, so
//! a clean shutdown keeps those changes and every lazy write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Requests committed together at most (bounds the work lost to one failing request).
pub const MAX_BATCH: usize = 256;

/// Requests waiting for the writer at most (two full batches: one can queue while the
/// previous commits); more writers wait for a slot.
pub const QUEUE_CAPACITY: usize = 2 * MAX_BATCH;

/// Lazy writes are made durable at the latest this long after the last durable commit.
pub const LAZY_WINDOW: Duration = Duration::from_secs(1);

/// Called by the writer after every rolled-back transaction (see the module docs).
pub type RollbackHook = Box<dyn Fn() + Send + 'static>;

/// Called by the writer at the start of every transaction, before its requests (see the module
/// docs); an error fails the transaction like a failing request.
pub type BatchHook = Box<dyn FnMut(&WriteTransaction) -> Result<(), StoreError> + Send + 'static>;

/// What the writer calls besides the requests (see the module docs).
pub struct Hooks {
    /// After every rolled-back transaction.
    pub on_rollback: RollbackHook,
    /// At the start of every transaction.
    pub before_batch: BatchHook,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            on_rollback: Box::new(|| {}),
            before_batch: Box::new(|_: &WriteTransaction| Ok(())),
        }
    }
}

/// A type-erased write request.
trait Request: Send {
    /// Applies the request's writes inside `txn`, keeping its result for [`Request::answer`].
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError>;
    /// Answers the caller: the kept result when `outcome` is `Ok`, else the error.
    fn answer(self: Box<Self>, outcome: Result<(), StoreError>);
    /// Whether the caller needs the write durable before its answer.
    fn durable(&self) -> bool;
}

struct Typed<T, F> {
    work: F,
    result: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    durable: bool,
}

impl<T, F> Request for Typed<T, F>
where
    T: Send,
    F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        self.result = Some((self.work)(txn)?);
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<(), StoreError>) {
        let Typed { result, reply, .. } = *self;
        let answer = outcome.and_then(|()| {
            result.ok_or_else(|| StoreError::Backend("write answered before it ran".into()))
        });
        // The caller may have gone away (its future was dropped); the write stands either way.
        let _ = reply.send(answer);
    }

    fn durable(&self) -> bool {
        self.durable
    }
}

/// The writer thread and the queue in front of it.
pub struct GroupCommit {
    queue: Option<mpsc::Sender<Box<dyn Request>>>,
    writer: Option<JoinHandle<()>>,
    /// Writes that found the queue full and waited for a slot.
    waits: AtomicU64,
}

impl GroupCommit {
    /// Starts the writer thread for `db` with a queue of [`QUEUE_CAPACITY`].
    pub fn start(db: Arc<Database>) -> Result<GroupCommit, StoreError> {
        Self::start_with_capacity(db, QUEUE_CAPACITY)
    }

    /// Starts the writer thread for `db` with a queue of `capacity` requests (at least 1).
    pub fn start_with_capacity(
        db: Arc<Database>,
        capacity: usize,
    ) -> Result<GroupCommit, StoreError> {
        Self::start_with(db, capacity, LAZY_WINDOW, Hooks::default())
    }

    /// Starts the writer thread for `db` with a queue of `capacity` requests (at least 1), lazy
    /// writes made durable within `lazy_window`, and `hooks` (see the module docs).
    pub fn start_with(
        db: Arc<Database>,
        capacity: usize,
        lazy_window: Duration,
        hooks: Hooks,
    ) -> Result<GroupCommit, StoreError> {
        let (queue, mut requests) = mpsc::channel(capacity.max(1));
        let clock = timer_runtime()?;
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut w = Writer {
                    db: &db,
                    lazy_window,
                    last_durable: Instant::now(),
                    lazy_since_durable: false,
                    hooks,
                };
                w.run(&mut requests, &clock);
                w.close();
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the store writer: {e}")))?;
        Ok(GroupCommit {
            queue: Some(queue),
            writer: Some(writer),
            waits: AtomicU64::new(0),
        })
    }

    /// Requests waiting for the writer now (at most the queue's capacity).
    pub fn queued(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(0, |q| q.max_capacity() - q.capacity())
    }

    /// Writes so far that found the queue full and waited for a slot.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Runs `work` in a write transaction and returns its result once that transaction is
    /// durable. `work` may run more than once (see the module docs); its effects are committed
    /// exactly once or not at all. Waits for a queue slot while the queue is full; dropping the
    /// future while it waits queues nothing.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(work, true).await
    }

    /// [`GroupCommit::write`] for a write whose loss in a crash is harmless (see the module
    /// docs): answered once committed, which may be without an fsync; a crash within the lazy
    /// window may undo it.
    pub async fn write_lazy<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(work, false).await
    }

    /// Makes sure a transaction starts soon, so the batch hook runs (see the module docs):
    /// queues an empty lazy write nobody waits for, unless requests are already queued (one of
    /// them starts the next transaction). Never waits.
    pub fn nudge(&self) {
        if let Some(queue) = self.queue.as_ref() {
            nudge_queue(queue);
        }
    }

    /// [`GroupCommit::nudge`] `delay` from now, from a task of its own; never waits. What the
    /// batch hook writes then gathers for `delay` instead of starting a transaction each time
    /// the writer frees up: the first logins of a login storm share one transaction per
    /// `delay`. The task holds the queue weakly, so a store dropped meanwhile is not kept open
    /// (and its writer's final commit runs the hook). Outside a runtime it nudges at once.
    pub fn nudge_after(&self, delay: Duration) {
        let Some(queue) = self.queue.as_ref() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            nudge_queue(queue);
            return;
        };
        let queue = queue.downgrade();
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(queue) = queue.upgrade() {
                nudge_queue(&queue);
            }
        });
    }

    async fn submit<T, F>(&self, work: F, durable: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let request = Box::new(Typed {
            work,
            result: None,
            reply,
            durable,
        });
        let stopped = || StoreError::Backend("the store writer has stopped".into());
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        match queue.try_send(request as Box<dyn Request>) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(request)) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                queue.send(request).await.map_err(|_| stopped())?;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
        }
        answer
            .await
            .map_err(|_| StoreError::Backend("the store writer stopped mid-write".into()))?
    }
}

/// Queues an empty lazy write on `queue` unless requests are already queued (see
/// [`GroupCommit::nudge`]). Full: one of the queued requests starts the next transaction.
/// Closed: the writer's final commit runs the hook.
fn nudge_queue(queue: &mpsc::Sender<Box<dyn Request>>) {
    if queue.capacity() < queue.max_capacity() {
        return;
    }
    let (reply, _) = oneshot::channel();
    let empty = Box::new(Typed {
        work: |_: &WriteTransaction| Ok::<(), StoreError>(()),
        result: None,
        reply,
        durable: false,
    });
    let _ = queue.try_send(empty as Box<dyn Request>);
}

impl Drop for GroupCommit {
    /// Closes the queue and waits for the writer to finish what it holds, so the database file
    /// is closed when the store is gone (it can be reopened at once).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The runtime the writer thread waits on: a timer and nothing else.
fn timer_runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot start the store writer's timer: {e}")))
}

/// The writer thread's state.
struct Writer<'a> {
    db: &'a Database,
    lazy_window: Duration,
    last_durable: Instant,
    /// A lazy commit came after the last durable one: it is not durable yet.
    lazy_since_durable: bool,
    hooks: Hooks,
}

impl Writer<'_> {
    /// Commits batches until the queue closes. `clock` is a timer-only runtime the thread
    /// parks on until a request (or the queue's end) arrives or, while a lazy commit is not
    /// durable yet, at most until the lazy window ends.
    fn run(
        &mut self,
        requests: &mut mpsc::Receiver<Box<dyn Request>>,
        clock: &tokio::runtime::Runtime,
    ) {
        loop {
            let deadline = self
                .lazy_since_durable
                .then(|| tokio::time::Instant::from_std(self.last_durable + self.lazy_window));
            let next = clock.block_on(async {
                match deadline {
                    Some(at) => tokio::time::timeout_at(at, requests.recv()).await,
                    None => Ok(requests.recv().await),
                }
            });
            let first = match next {
                Ok(Some(first)) => first,
                Ok(None) => break,
                Err(_window_ended) => {
                    self.make_lazy_durable();
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
    }

    /// Commits `batch` in one transaction, or, when a request fails, each request alone.
    fn commit_batch(&mut self, mut batch: Vec<Box<dyn Request>>) {
        if batch.len() > 1 {
            match self.apply_all(&mut batch) {
                Ok(()) => {
                    for r in batch {
                        r.answer(Ok(()));
                    }
                    return;
                }
                Err(BatchFailure::Commit(e)) => {
                    for r in batch {
                        r.answer(Err(e.clone()));
                    }
                    return;
                }
                // A request failed: nothing was committed; replay one by one.
                Err(BatchFailure::Request(_)) => {}
            }
        }
        for mut r in batch {
            let outcome = self
                .apply_all(std::slice::from_mut(&mut r))
                .map_err(|f| match f {
                    BatchFailure::Commit(e) | BatchFailure::Request(e) => e,
                });
            r.answer(outcome);
        }
    }

    fn apply_all(&mut self, batch: &mut [Box<dyn Request>]) -> Result<(), BatchFailure> {
        let r = self.try_apply_all(batch);
        if r.is_err() {
            (self.hooks.on_rollback)();
        }
        r
    }

    /// The queue closed: runs the batch hook once more in a durable commit (see the module docs).
    fn close(&mut self) {
        if let Err(e) = self.commit_hook_durably() {
            tracing::warn!(error = %e, "store writer: the final commit failed");
        }
    }

    /// The lazy window ended with no request: one durable commit (of the batch hook's writes)
    /// persists the lazy commits before it. On failure it is tried again a window later.
    fn make_lazy_durable(&mut self) {
        if let Err(e) = self.commit_hook_durably() {
            self.last_durable = Instant::now();
            tracing::warn!(error = %e, "store writer: making lazy writes durable failed");
        }
    }

    /// Runs the batch hook alone in a durable commit.
    fn commit_hook_durably(&mut self) -> Result<(), StoreError> {
        let committed = self
            .db
            .begin_write()
            .map_err(StoreError::from)
            .and_then(|txn| {
                (self.hooks.before_batch)(&txn)?;
                txn.commit()?;
                Ok(())
            });
        match committed {
            Ok(()) => {
                self.last_durable = Instant::now();
                self.lazy_since_durable = false;
                Ok(())
            }
            Err(e) => {
                (self.hooks.on_rollback)();
                Err(e)
            }
        }
    }

    fn try_apply_all(&mut self, batch: &mut [Box<dyn Request>]) -> Result<(), BatchFailure> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| BatchFailure::Commit(e.into()))?;
        let durable =
            batch.iter().any(|r| r.durable()) || self.last_durable.elapsed() >= self.lazy_window;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| BatchFailure::Commit(StoreError::Backend(e.to_string())))?;
        }
        if let Err(e) = (self.hooks.before_batch)(&txn) {
            let _ = txn.abort();
            return Err(BatchFailure::Request(e));
        }
        for r in batch.iter_mut() {
            if let Err(e) = r.apply(&txn) {
                // Dropping the transaction rolls it back.
                let _ = txn.abort();
                return Err(BatchFailure::Request(e));
            }
        }
        txn.commit().map_err(|e| BatchFailure::Commit(e.into()))?;
        if durable {
            self.last_durable = Instant::now();
        }
        self.lazy_since_durable = !durable;
        Ok(())
    }
}

enum BatchFailure {
    /// A request failed with this error; the transaction was rolled back.
    Request(StoreError),
    /// The transaction could not begin or commit.
    Commit(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn db() -> (tempfile::TempDir, Arc<Database>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db.redb")).unwrap();
        (dir, Arc::new(db))
    }

    fn read(db: &Database, key: u64) -> Option<u64> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(T).ok()?;
        table.get(key).unwrap().map(|g| g.value())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_committed_and_answered() {
        let (_dir, db) = db();
        let group = Arc::new(GroupCommit::start(db.clone()).unwrap());
        let writes = (0..200u64).map(|k| {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .write(move |txn| {
                        txn.open_table(T)?.insert(k, k * 10)?;
                        Ok(k)
                    })
                    .await
            })
        });
        for (k, w) in writes.enumerate() {
            assert_eq!(w.await.unwrap().unwrap(), k as u64);
        }
        for k in 0..200 {
            assert_eq!(read(&db, k), Some(k * 10));
        }
    }

    #[test]
    fn a_failing_request_leaves_the_others_of_its_batch_committed() {
        let (_dir, db) = db();
        let (queue, mut requests) = mpsc::channel::<Box<dyn Request>>(8);
        let mut answers = Vec::new();
        for k in 0..3u64 {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            let work = move |txn: &WriteTransaction| {
                txn.open_table(T)?.insert(k, 1)?;
                if k == 1 {
                    return Err(StoreError::Corrupt("request 1 fails after writing".into()));
                }
                Ok(k)
            };
            queue
                .try_send(Box::new(Typed {
                    work,
                    result: None,
                    reply,
                    durable: true,
                }))
                .unwrap_or_else(|_| panic!("queue has room"));
        }
        drop(queue);
        // All three are queued before the writer starts: they form one batch.
        let rollbacks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = rollbacks.clone();
        Writer {
            db: &db,
            lazy_window: LAZY_WINDOW,
            last_durable: Instant::now(),
            lazy_since_durable: false,
            hooks: Hooks {
                on_rollback: Box::new(move || {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }),
                ..Hooks::default()
            },
        }
        .run(&mut requests, &timer_runtime().unwrap());
        // The batch rolled back, then request 1's own transaction did: the hook ran for each.
        assert_eq!(rollbacks.load(std::sync::atomic::Ordering::SeqCst), 2);
        let answers: Vec<_> = answers
            .into_iter()
            .map(|mut a| a.try_recv().unwrap())
            .collect();
        assert_eq!(answers[0].as_ref().ok(), Some(&0));
        assert!(matches!(answers[1], Err(StoreError::Corrupt(_))));
        assert_eq!(answers[2].as_ref().ok(), Some(&2));
        assert_eq!(read(&db, 0), Some(1));
        assert_eq!(
            read(&db, 1),
            None,
            "the failed request's write was rolled back"
        );
        assert_eq!(read(&db, 2), Some(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_stays_bounded_under_a_flood_and_every_write_lands() {
        let (_dir, db) = db();
        let capacity = 16;
        let group = Arc::new(GroupCommit::start_with_capacity(db.clone(), capacity).unwrap());
        // The first write holds the writer until released, as a slow disk would.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Mutex::new(held);
        let first = {
            let group = group.clone();
            tokio::spawn(async move {
                group
                    .write(move |txn| {
                        let _ = held.lock().unwrap().recv();
                        txn.open_table(T)?.insert(0, 0)?;
                        Ok(0u64)
                    })
                    .await
            })
        };
        // Wait until the writer holds it (the queue is empty again).
        while group.queued() > 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!first.is_finished());
        let flood = 2_000u64;
        let writes: Vec<_> = (1..=flood)
            .map(|k| {
                let group = group.clone();
                tokio::spawn(async move {
                    group
                        .write(move |txn| {
                            txn.open_table(T)?.insert(k, k)?;
                            Ok(k)
                        })
                        .await
                })
            })
            .collect();
        // Every writer has had time to try; the queue holds `capacity`, the rest wait.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(group.queued(), capacity, "the queue is full, not larger");
        let waiting = writes.iter().filter(|w| !w.is_finished()).count();
        assert_eq!(waiting, flood as usize, "writers wait for a slot");
        assert_eq!(
            group.waits(),
            flood - capacity as u64,
            "every writer that found the queue full is counted once"
        );
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for (k, w) in (1..=flood).zip(writes) {
            assert_eq!(w.await.unwrap().unwrap(), k);
        }
        assert_eq!(group.queued(), 0);
        for k in [1, flood / 2, flood] {
            assert_eq!(read(&db, k), Some(k));
        }
    }

    #[tokio::test]
    async fn lazy_writes_are_committed_and_visible_and_persist_with_a_later_durable_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = Arc::new(Database::create(&path).unwrap());
        let group = GroupCommit::start(db.clone()).unwrap();
        group
            .write_lazy(|txn| Ok(txn.open_table(T)?.insert(1, 1)?.is_none()))
            .await
            .unwrap();
        assert_eq!(
            read(&db, 1),
            Some(1),
            "a lazy write is visible once answered"
        );
        group
            .write(|txn| Ok(txn.open_table(T)?.insert(2, 2)?.is_none()))
            .await
            .unwrap();
        drop(group);
        drop(db);
        let again = Database::create(&path).unwrap();
        assert_eq!((read(&again, 1), read(&again, 2)), (Some(1), Some(2)));
    }

    #[tokio::test]
    async fn the_database_can_be_reopened_once_the_writer_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = Arc::new(Database::create(&path).unwrap());
        let group = GroupCommit::start(db.clone()).unwrap();
        group
            .write(|txn| Ok(txn.open_table(T)?.insert(7, 7)?.is_none()))
            .await
            .unwrap();
        drop(group);
        drop(db);
        let again = Database::create(&path).unwrap();
        assert_eq!(read(&again, 7), Some(7));
    }

    #[tokio::test]
    async fn the_batch_hook_runs_in_every_transaction_and_in_a_final_durable_commit() {
        use std::sync::Mutex;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = Arc::new(Database::create(&path).unwrap());
        // What the hook writes next, as the embedded store's unsaved acks: taken once.
        let next: Arc<Mutex<Vec<u64>>> = Arc::default();
        let hooks = Hooks {
            on_rollback: Box::new(|| {}),
            before_batch: {
                let next = next.clone();
                Box::new(move |txn: &WriteTransaction| -> Result<(), StoreError> {
                    let keys = std::mem::take(&mut *next.lock().unwrap());
                    let mut t = txn.open_table(T)?;
                    for k in keys {
                        t.insert(k, k)?;
                    }
                    Ok(())
                })
            },
        };
        let group =
            GroupCommit::start_with(db.clone(), QUEUE_CAPACITY, Duration::from_secs(3600), hooks)
                .unwrap();
        next.lock().unwrap().push(1);
        group
            .write_lazy(|txn| Ok(txn.open_table(T)?.insert(2, 2)?.is_none()))
            .await
            .unwrap();
        assert_eq!(read(&db, 1), Some(1), "written with the next transaction");
        next.lock().unwrap().push(3);
        group.nudge();
        let deadline = Instant::now() + Duration::from_secs(10);
        while read(&db, 3).is_none() {
            assert!(Instant::now() < deadline, "a nudge starts a transaction");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Left for the final commit when the writer stops: it is durable.
        next.lock().unwrap().push(4);
        drop(group);
        drop(db);
        let again = Database::create(&path).unwrap();
        assert_eq!(
            [1, 2, 3, 4].map(|k| read(&again, k)),
            [Some(1), Some(2), Some(3), Some(4)]
        );
    }
}
