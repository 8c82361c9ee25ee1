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
/// module docs).
#[derive(Debug)]
pub struct FrameWorker {
    tx: frame_queue::Sender<Work>,
    rate: TokenBucket,
    requests: Arc<Semaphore>,
}

impl FrameWorker {
    /// Starts the worker task for `session` with the budget `limits`; `now_ms` is the
    /// endpoint's monotonic clock (the one later passed to [`FrameWorker::admit`]).
    pub fn spawn(
        router: Router,
        session: SessionHandle,
        limits: WorkLimits,
        now_ms: u64,
    ) -> FrameWorker {
        let (tx, rx) = frame_queue::bounded(limits.queued_frames);
        tokio::spawn(run(router, session, rx));
        FrameWorker {
            tx,
            rate: TokenBucket::new(limits.frames_per_sec, limits.frame_burst, now_ms),
            requests: Arc::new(Semaphore::new(limits.requests_in_flight)),
        }
    }

    /// Charges one work frame (Send, Upload or Request) to the session's rate at `now_ms`;
    /// `false` when it is over `limits.frames_per_sec_per_terminal` (the frame must not be
    /// carried out).
    pub fn admit(&mut self, now_ms: u64) -> bool {
        self.rate.try_take(now_ms)
    }

    /// A slot for one device Request, held until its Response is queued; `None` when
    /// `limits.max_requests_in_flight_per_session` are already in flight.
    pub fn request_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.requests.clone().try_acquire_owned().ok()
    }

    /// Queues `work` behind the session's earlier frames; `Err` (the work back) when the queue
    /// is full or the worker is gone. Counting the refusal is the caller's job.
    pub fn submit(&self, work: Work) -> Result<(), Work> {
        self.tx.try_send(work)
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
