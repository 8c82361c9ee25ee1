//! The per-session frame worker: applies a device session's Sends and Uploads one at a time, in
//! the order the device sent them (its frames' `seq` order as the link delivered them).
//!
//! The endpoint's receive path (a UDP shard or a device WebSocket task) must not wait on the
//! store, so it hands each Send or Upload to this session's [`FrameWorker`] through a bounded
//! queue (`limits.max_queued_frames_per_session` entries) and goes on; one task per session
//! drains the queue in order ([`super::frame_queue`], whose memory follows the frames waiting in
//! it, not the number that went through). So a device's Sends get `msg_id`s in the order it
//! sent them, and its Uploads reach the spool (and from there RabbitMQ or the webhook) in that
//! order. When the queue is full the frame is refused with `Error QUEUE_FULL` about its `seq`
//! and counted in `broker_sends_total` / `broker_uploads_total` with `result="queue_full"`; the
//! device may resend it.
//!
//! The [`FrameWorker`] also holds the session's work budget ([`super::budget`]): the token
//! bucket every Send, Upload and Request frame is charged to ([`FrameWorker::admit`]) and the
//! semaphore bounding its Requests in flight ([`FrameWorker::request_slot`]).
//!
//! **Order under refusal.** An Upload refused for load at admission (`RATE_LIMITED` over the
//! rate, `QUEUE_FULL` over the queue) closes the session's *upload gate* on its `upload_id`
//! ([`FrameWorker::upload_refused`]): every later Upload of the session is refused with the same
//! code, without being charged to the rate ([`FrameWorker::upload_held`]), until an Upload with
//! the refused id comes again or [`UPLOAD_GATE_MS`] pass. A device that resends refused uploads
//! oldest first (docs/protocol.md section 4, "Upload semantics") so has them stored in the order
//! it took them, even when the rate refused one in the middle of a window of frames in flight.
//!
//! Uploads that wait back to back are made durable together (one store commit for up to 64,
//! [`crate::store::UploadSpool::append_many`]), in order, so ordering costs a device no upload
//! throughput.
//!
//! Results come back through the session's outbound queue ([`Router::report`]): an Upload's
//! `UploadAck` once it is durable, an `Error` about a Send's or Upload's `seq` when it was
//! refused (nothing is sent for a successful Send, nor for an Upload the store failed to keep:
//! the device resends it). Device Requests are not ordered here: they are HTTP calls that run
//! concurrently, and the order of their effects at the backend is not promised.
//!
//! The worker ends when its [`FrameWorker`] is dropped (the session ended), after applying what
//! was already queued.
//!
//! Memory: an idle session must stay small (docs/performance.md, "Memory per session"), and a
//! queue with its task costs a few KiB (tokio's channel allocates its first block of slots up
//! front). So [`FrameWorker::spawn`] only records what the task needs: the queue and its task
//! are created by the first Send or Upload ([`FrameWorker::submit`]), and the Request semaphore
//! by the first Request ([`FrameWorker::request_slot`]). A session that only pings and receives
//! never has either; the order and bounds above are the same once they exist.

use std::sync::Arc;

use bytes::Bytes;
use shared_protocol::codes::Code;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::router::{Outbound, Router, SessionHandle, UploadError};
use crate::store::NewUpload;
use crate::terminal::Address;

use super::budget::{TokenBucket, WorkLimits};
use super::device;
use super::frame_queue;

/// A device frame the worker applies.
#[derive(Debug)]
pub enum Work {
    /// A terminal-to-terminal Send.
    Send {
        /// Recipient.
        to: Address,
        /// Payload.
        payload: Bytes,
        /// The device frame's seq.
        about_seq: u32,
    },
    /// An Upload.
    Upload {
        /// The device's upload id.
        upload_id: u32,
        /// Topic.
        topic: String,
        /// Payload.
        payload: Bytes,
        /// The device frame's seq.
        about_seq: u32,
    },
}

/// The sending end of one session's ordered frame queue, with the session's work budget (see
/// module docs). The queue, its task and the Request semaphore are created on first use.
pub struct FrameWorker {
    /// The queue to the worker task; `None` until the first Send or Upload.
    tx: Option<frame_queue::Sender<Work>>,
    /// What the task is started with.
    router: Router,
    session: SessionHandle,
    /// `limits.queued_frames`, the queue's bound once it exists.
    queued_frames: u32,
    /// `limits.requests_in_flight`, the semaphore's permits once it exists.
    requests_in_flight: u32,
    rate: TokenBucket,
    /// Bounds the Requests in flight; `None` until the first Request.
    requests: Option<Arc<Semaphore>>,
    /// The upload gate (module docs): the refused upload id, the code it got, and when.
    upload_gate: Option<UploadGate>,
}

/// How long the upload gate stays closed at most when the refused upload does not come back (a
/// device that keeps refused uploads for its next login, or dropped them): its later uploads are
/// then taken again, out of order with the refused one, rather than refused for the session.
pub const UPLOAD_GATE_MS: u64 = 10_000;

/// An Upload refused for load, which later Uploads of the session must not overtake.
#[derive(Debug, Clone, Copy)]
struct UploadGate {
    upload_id: u32,
    code: Code,
    since_ms: u64,
}

impl std::fmt::Debug for FrameWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWorker")
            .field("session", &self.session)
            .field("started", &self.started())
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl FrameWorker {
    /// The worker of `session` with the budget `limits`; `now_ms` is the endpoint's monotonic
    /// clock (the one later passed to [`FrameWorker::admit`]). Its task starts with the first
    /// [`FrameWorker::submit`] (see module docs).
    pub fn spawn(
        router: Router,
        session: SessionHandle,
        limits: WorkLimits,
        now_ms: u64,
    ) -> FrameWorker {
        FrameWorker {
            tx: None,
            router,
            session,
            queued_frames: u32::try_from(limits.queued_frames).unwrap_or(u32::MAX),
            requests_in_flight: u32::try_from(limits.requests_in_flight).unwrap_or(u32::MAX),
            rate: TokenBucket::new(limits.frames_per_sec, limits.frame_burst, now_ms),
            requests: None,
            upload_gate: None,
        }
    }

    /// Whether the queue and its task exist (a Send or Upload was submitted).
    pub fn started(&self) -> bool {
        self.tx.is_some()
    }

    /// Charges one work frame (Send, Upload or Request) to the session's rate at `now_ms`;
    /// `false` when it is over `limits.frames_per_sec_per_terminal` (the frame must not be
    /// carried out).
    pub fn admit(&mut self, now_ms: u64) -> bool {
        self.rate.try_take(now_ms)
    }

    /// The code to refuse Upload `upload_id` with at `now_ms` because an earlier Upload of the
    /// session was refused for load and has not come back (the upload gate, module docs);
    /// `None` when it may go on to admission. The refused upload's own resend opens the gate.
    pub fn upload_held(&mut self, upload_id: u32, now_ms: u64) -> Option<Code> {
        let gate = self.upload_gate?;
        if gate.upload_id == upload_id || now_ms.saturating_sub(gate.since_ms) >= UPLOAD_GATE_MS {
            self.upload_gate = None;
            return None;
        }
        Some(gate.code)
    }

    /// Upload `upload_id` was refused with `code` at admission at `now_ms`: closes the upload
    /// gate on it, unless an older refused upload already holds it.
    pub fn upload_refused(&mut self, upload_id: u32, code: Code, now_ms: u64) {
        if self.upload_gate.is_none() {
            self.upload_gate = Some(UploadGate {
                upload_id,
                code,
                since_ms: now_ms,
            });
        }
    }

    /// A slot for one device Request, held until its Response is queued; `None` when
    /// `limits.max_requests_in_flight_per_session` are already in flight.
    pub fn request_slot(&mut self) -> Option<OwnedSemaphorePermit> {
        let limit = self.requests_in_flight as usize;
        self.requests
            .get_or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone()
            .try_acquire_owned()
            .ok()
    }

    /// Queues `work` behind the session's earlier frames, starting the queue and its task on
    /// first use; `Err` (the work back) when the queue is full or the worker is gone. Counting
    /// the refusal is the caller's job.
    pub fn submit(&mut self, work: Work) -> Result<(), Work> {
        let tx = self.tx.get_or_insert_with(|| {
            let (tx, rx) = frame_queue::bounded(self.queued_frames as usize);
            tokio::spawn(run(self.router.clone(), self.session.clone(), rx));
            tx
        });
        tx.try_send(work)
    }
}

/// Most Uploads applied together (one store commit).
const UPLOAD_BATCH: usize = 64;

async fn run(router: Router, session: SessionHandle, mut rx: frame_queue::Receiver<Work>) {
    let me = session.address();
    let mut next = None;
    loop {
        let work = match next.take() {
            Some(w) => w,
            None => match rx.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        match work {
            Work::Send {
                to,
                payload,
                about_seq,
            } => {
                if let Some(code) = device::send(&router, me, to, payload).await {
                    router.report(&session, Outbound::Error { code, about_seq });
                }
            }
            Work::Upload { .. } => {
                // Uploads waiting back to back are stored together, still in order; a Send
                // behind them waits for them.
                let mut batch = vec![work];
                while batch.len() < UPLOAD_BATCH {
                    match rx.try_recv() {
                        Some(w @ Work::Upload { .. }) => batch.push(w),
                        Some(other) => {
                            next = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                upload_batch(&router, &session, batch).await;
            }
        }
    }
}

async fn upload_batch(router: &Router, session: &SessionHandle, batch: Vec<Work>) {
    let mut tags = Vec::with_capacity(batch.len());
    let mut uploads = Vec::with_capacity(batch.len());
    for w in batch {
        if let Work::Upload {
            upload_id,
            topic,
            payload,
            about_seq,
        } = w
        {
            tags.push((upload_id, about_seq));
            uploads.push(NewUpload {
                upload_id,
                topic,
                payload,
            });
        }
    }
    let results = router
        .upload_many(session.address(), session.upload_epoch(), uploads)
        .await;
    for ((upload_id, about_seq), r) in tags.into_iter().zip(results) {
        let reply = match r {
            Ok(_) => Some(Outbound::UploadAck { upload_id }),
            Err(UploadError::TooLarge) => Some(Outbound::Error {
                code: Code::TOO_LARGE,
                about_seq,
            }),
            // Not durable: no ack, the device resends.
            Err(UploadError::Store(_)) => None,
        };
        if let Some(ev) = reply {
            router.report(session, ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::router::{Login, Transport};
    use crate::store::embedded::{EmbeddedStore, OfflineLimits};

    /// A worker for device 1 on a fresh embedded store, with `limits`.
    async fn worker(limits: WorkLimits) -> (FrameWorker, tempfile::TempDir) {
        let c = Config::default();
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(
            dir.path(),
            OfflineLimits {
                max_per_terminal: u64::from(c.offline.max_per_terminal),
                eviction: c.offline.eviction,
            },
        )
        .unwrap();
        let router = Router::new(c.router_settings(), store.stores(), Metrics::new());
        let session = router
            .login(Login {
                address: Address::device(1),
                transport: Transport::Udp,
                peer: "127.0.0.1:4000".parse().unwrap(),
                since_id: 0,
                upload_epoch: 1,
            })
            .await
            .unwrap();
        let worker = FrameWorker::spawn(router, session.handle().clone(), limits, 0);
        (worker, dir)
    }

    #[tokio::test]
    async fn a_refused_upload_holds_back_later_ones_until_it_comes_again_or_the_gate_expires() {
        let limits = WorkLimits {
            queued_frames: 8,
            requests_in_flight: 1,
            frames_per_sec: 100,
            frame_burst: 100,
        };
        let (mut w, _dir) = worker(limits).await;
        assert_eq!(w.upload_held(7, 0), None, "no gate before a refusal");
        w.upload_refused(7, Code::RATE_LIMITED, 1_000);
        w.upload_refused(8, Code::QUEUE_FULL, 1_001);
        assert_eq!(
            w.upload_held(8, 1_002),
            Some(Code::RATE_LIMITED),
            "the oldest refusal holds the gate, with its code"
        );
        assert_eq!(w.upload_held(9, 1_003), Some(Code::RATE_LIMITED));
        assert_eq!(w.upload_held(7, 2_000), None, "the refused one opens it");
        assert_eq!(w.upload_held(8, 2_001), None, "and it stays open");

        w.upload_refused(20, Code::QUEUE_FULL, 5_000);
        assert_eq!(
            w.upload_held(21, 5_000 + UPLOAD_GATE_MS - 1),
            Some(Code::QUEUE_FULL)
        );
        assert_eq!(
            w.upload_held(21, 5_000 + UPLOAD_GATE_MS),
            None,
            "a refused upload that never comes back holds the rest for at most the gate time"
        );
        assert_eq!(w.upload_held(22, 5_000 + UPLOAD_GATE_MS + 1), None);
    }

    #[tokio::test]
    async fn the_queue_and_its_task_start_with_the_first_send_or_upload() {
        let limits = WorkLimits {
            queued_frames: 2,
            requests_in_flight: 1,
            frames_per_sec: 100,
            frame_burst: 100,
        };
        let (mut worker, _dir) = worker(limits).await;
        assert!(
            !worker.started(),
            "an idle session has no queue and no task"
        );

        // The Request semaphore appears with the first Request and still bounds them.
        let slot = worker
            .request_slot()
            .expect("one Request in flight allowed");
        assert!(
            worker.request_slot().is_none(),
            "a second is over the bound"
        );
        drop(slot);
        assert!(worker.request_slot().is_some(), "the slot came back");
        assert!(!worker.started(), "Requests do not start the queue");

        let send = |about_seq| Work::Send {
            to: Address::device(2),
            payload: Bytes::from_static(b"x"),
            about_seq,
        };
        worker.submit(send(1)).expect("queued");
        assert!(worker.started());
        // The queue keeps its bound once started: the test's one-thread runtime runs the task
        // only when the test awaits, so the first Send still waits and one more fits.
        let accepted = (2..10)
            .filter(|&seq| worker.submit(send(seq)).is_ok())
            .count();
        assert_eq!(accepted, 1, "a bound of 2 frames waiting");
    }
}
