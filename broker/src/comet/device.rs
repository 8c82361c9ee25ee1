//! What device frames mean to the router, and router events as device frames. Shared by the UDP
//! and device WebSocket endpoints so both transports behave identically.
//!
//! Synchronous router calls (command results, spawned device requests) are made here; Sends and
//! Uploads need the store, so they go to the session's [`FrameWorker`], which applies them in
//! the order the device sent them without blocking the endpoint's socket loop.
//!
//! Every Send, Upload and Request is first charged to the session's budget
//! ([`super::budget`]): over the rate it gets `Error RATE_LIMITED`, over the queue or the
//! Requests-in-flight bound `Error QUEUE_FULL`, about its `seq`, and is not carried out. Each
//! refusal is counted under the config key that refused it
//! (`broker_limit_rejections_total{limit}`) and under the frame's own counter. An Upload
//! refused so also holds back the session's later Uploads until it comes again (the worker's
//! upload gate, [`super::worker`]); those are refused with the same code and counted with
//! `result="after_refused"`.
//!
//! A refusal for load is not advisory: the device sends the refused frame again when it hears
//! of it (docs/protocol.md section 4, "Upload semantics"), and an Upload whose refusal never
//! reached the device would wait for its next login, overtaken by newer ones. So such an
//! `Error` is not sent straight into the endpoint's send window, where it would have to be
//! dropped when the window is full; it is queued with the router's events
//! ([`Router::report`]), which wait for room in the window, under the session's queue bound
//! and counted full-queue policy (`limits.outbound_queue`).

use bytes::Bytes;
use shared_protocol::codes::Code;
use shared_protocol::frame::{Body, Frame};

use crate::router::{Outbound, PushError, Router, SessionHandle};
use crate::terminal::Address;

use super::sendwin::Tag;
use super::worker::{FrameWorker, Work};

/// What the endpoint must do after a device frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Nothing more.
    Nothing,
    /// Answer a Ping with a Pong.
    Pong,
    /// Send an Error frame about device frame `about_seq`: an advisory one, which the endpoint
    /// may drop (counted) when its send window is full. (A refusal for load goes through the
    /// session's outbound queue instead, module docs.)
    Error {
        /// The code.
        code: Code,
        /// The device frame's seq.
        about_seq: u32,
    },
    /// The device ended the session (Goodbye).
    Goodbye,
    /// Acknowledge the device's frames now (an AckOnly, unless a frame sent since carried the
    /// acknowledgement) rather than when `ACK_DELAY` ends. The frame closed an exchange the
    /// broker began (a CommandResult answering its Command), so nothing is likely to go to the
    /// device soon to carry the acknowledgement, and waiting would cost the endpoint a timer
    /// wake-up of its own for each command (docs/protocol.md section 5).
    Acknowledge,
}

/// The kind of work frame, for counting refusals.
#[derive(Clone, Copy)]
enum WorkKind {
    Send,
    Upload,
    Request,
}

/// Counts a refused work frame under its own counter with `result`.
fn count_refused(router: &Router, kind: WorkKind, result: &'static str) {
    let m = router.metrics();
    match kind {
        WorkKind::Send => m.send(result),
        WorkKind::Upload => m.upload(result),
        WorkKind::Request => m.device_request(result),
    }
}

/// Where an endpoint keeps a session's [`FrameWorker`]. [`on_frame`] asks for the worker only
/// for a work frame (Send, Upload, Request), so an endpoint may create it then and keep none
/// while the session only pings and receives (both do, with [`LazyWorker`]).
pub trait WorkerSlot {
    /// The session's worker, created now if there is none yet.
    fn worker(&mut self) -> &mut FrameWorker;
}

impl WorkerSlot for FrameWorker {
    fn worker(&mut self) -> &mut FrameWorker {
        self
    }
}

/// A session's frame worker kept as one null pointer until the first work frame asks for it
/// (UDP shard and device WebSocket): an idle session then holds 8 bytes, not the worker's 72.
/// Its budget starts full when it is created, as it would have been had it been created at
/// login (a full bucket stays full until a frame is charged to it).
pub struct LazyWorker<'a> {
    slot: &'a mut Option<Box<FrameWorker>>,
    ctx: &'a super::Context,
    handle: &'a SessionHandle,
    now_ms: u64,
}

impl<'a> LazyWorker<'a> {
    /// The worker in `slot`, created there for `handle` on first use with the budget of
    /// `ctx`'s settings at `now_ms` (the endpoint's monotonic clock).
    pub fn new(
        slot: &'a mut Option<Box<FrameWorker>>,
        ctx: &'a super::Context,
        handle: &'a SessionHandle,
        now_ms: u64,
    ) -> LazyWorker<'a> {
        LazyWorker {
            slot,
            ctx,
            handle,
            now_ms,
        }
    }
}

impl WorkerSlot for LazyWorker<'_> {
    fn worker(&mut self) -> &mut FrameWorker {
        self.slot.get_or_insert_with(|| {
            Box::new(FrameWorker::spawn(
                self.ctx.router.clone(),
                self.handle.clone(),
                self.ctx.settings.work,
                self.now_ms,
            ))
        })
    }
}

/// Applies one (new, in-window) device frame; Sends and Uploads are queued to `worker`, and
/// every work frame is charged to `worker`'s budget at `now_ms` (the endpoint's monotonic
/// clock). Frames that are not work never ask `worker` for the worker.
pub fn on_frame(
    router: &Router,
    handle: &SessionHandle,
    worker: &mut impl WorkerSlot,
    frame: &Frame<'_>,
    now_ms: u64,
) -> Reaction {
    let me = handle.address();
    let max_payload = router.settings().max_payload;
    let about_seq = frame.seq;
    if frame.body.payload().is_some_and(|p| p.len() > max_payload) {
        router.metrics().limit_hit("max_payload_bytes");
        return Reaction::Error {
            code: Code::TOO_LARGE,
            about_seq,
        };
    }
    let kind = match frame.body {
        Body::Send { .. } => Some(WorkKind::Send),
        Body::Upload { .. } => Some(WorkKind::Upload),
        Body::Request { .. } => Some(WorkKind::Request),
        _ => None,
    };
    if let Body::Upload { upload_id, .. } = frame.body
        && let Some(code) = worker.worker().upload_held(upload_id, now_ms)
    {
        count_refused(router, WorkKind::Upload, "after_refused");
        return refuse_for_load(router, handle, code, about_seq);
    }
    if let Some(kind) = kind
        && !worker.worker().admit(now_ms)
    {
        router.metrics().limit_hit("frames_per_sec_per_terminal");
        count_refused(router, kind, "rate_limited");
        if let Body::Upload { upload_id, .. } = frame.body {
            worker
                .worker()
                .upload_refused(upload_id, Code::RATE_LIMITED, now_ms);
        }
        return refuse_for_load(router, handle, Code::RATE_LIMITED, about_seq);
    }
    match frame.body {
        Body::Ping => Reaction::Pong,
        Body::AckOnly => Reaction::Nothing,
        Body::Goodbye { .. } => Reaction::Goodbye,
        Body::Send { to, payload } => match router.settings().profile.validate(to) {
            Ok(to) => {
                let work = Work::Send {
                    to,
                    payload: Bytes::copy_from_slice(payload),
                    about_seq,
                };
                if worker.worker().submit(work).is_err() {
                    return queue_full(router, handle, WorkKind::Send, about_seq);
                }
                Reaction::Nothing
            }
            Err(e) => Reaction::Error {
                code: address_code(e),
                about_seq,
            },
        },
        Body::Upload {
            upload_id,
            topic,
            payload,
        } => {
            let work = Work::Upload {
                upload_id,
                topic: topic.to_owned(),
                payload: Bytes::copy_from_slice(payload),
                about_seq,
            };
            if worker.worker().submit(work).is_err() {
                worker
                    .worker()
                    .upload_refused(upload_id, Code::QUEUE_FULL, now_ms);
                return queue_full(router, handle, WorkKind::Upload, about_seq);
            }
            Reaction::Nothing
        }
        Body::CommandResult {
            cmd_id,
            status,
            payload,
        } => {
            // false: late, duplicate or not ours; nothing to tell the device.
            router.complete_command(me, cmd_id, status, Bytes::copy_from_slice(payload));
            Reaction::Acknowledge
        }
        Body::Request {
            req_id,
            path,
            payload,
        } => {
            let Some(slot) = worker.worker().request_slot() else {
                return queue_full(router, handle, WorkKind::Request, about_seq);
            };
            router.spawn_device_request(
                handle,
                req_id,
                path.to_owned(),
                Bytes::copy_from_slice(payload),
                slot,
            );
            Reaction::Nothing
        }
        Body::Welcome { .. }
        | Body::Pong { .. }
        | Body::Deliver { .. }
        | Body::UploadAck { .. }
        | Body::Command { .. }
        | Body::Response { .. }
        | Body::Presence { .. }
        | Body::Kick { .. }
        | Body::Error { .. } => Reaction::Error {
            code: Code::UNEXPECTED,
            about_seq,
        },
    }
}

/// Counts a frame refused for a full queue (or Requests in flight) and answers `QUEUE_FULL`.
fn queue_full(router: &Router, handle: &SessionHandle, kind: WorkKind, about_seq: u32) -> Reaction {
    router.metrics().limit_hit(match kind {
        WorkKind::Send | WorkKind::Upload => "max_queued_frames_per_session",
        WorkKind::Request => "max_requests_in_flight_per_session",
    });
    count_refused(router, kind, "queue_full");
    refuse_for_load(router, handle, Code::QUEUE_FULL, about_seq)
}

/// Refuses device frame `about_seq` for load with `code`: the `Error` waits in the session's
/// outbound queue, never dropped for want of window room (module docs).
fn refuse_for_load(
    router: &Router,
    handle: &SessionHandle,
    code: Code,
    about_seq: u32,
) -> Reaction {
    router.report(handle, Outbound::Error { code, about_seq });
    Reaction::Nothing
}

fn address_code(e: crate::terminal::IdError) -> Code {
    e.code()
}

/// Runs a terminal-to-terminal send; `None` on success, else the code to report.
pub async fn send(router: &Router, from: Address, to: Address, payload: Bytes) -> Option<Code> {
    match router.send(from, to, payload).await {
        Ok(_) => None,
        Err(e) => Some(push_error_code(&e)),
    }
}

/// The protocol code for a failed push or send.
pub fn push_error_code(e: &PushError) -> Code {
    match e {
        PushError::TooLarge(_) => Code::TOO_LARGE,
        PushError::Address(_, e) => address_code(*e),
        PushError::NotBound { .. } => Code::NOT_AUTHORIZED,
        PushError::Store(_) => Code::UNAVAILABLE,
        PushError::UnknownGroup(_) | PushError::BadTtl(_) => Code::INTERNAL,
    }
}

/// A router event as a reliable device frame body and the tag its ack reports. `Kick` is not
/// reliable and is handled by the endpoints (`None` here).
pub fn outbound_body(ev: &Outbound) -> Option<(Body<'_>, Tag)> {
    Some(match ev {
        Outbound::Deliver {
            msg_id,
            from,
            payload,
        } => (
            Body::Deliver {
                msg_id: *msg_id,
                from: *from,
                payload,
            },
            Tag::Deliver(*msg_id),
        ),
        Outbound::Command {
            cmd_id,
            name,
            payload,
        } => (
            Body::Command {
                cmd_id: *cmd_id,
                name,
                payload,
            },
            Tag::Plain,
        ),
        Outbound::Response {
            req_id,
            status,
            payload,
        } => (
            Body::Response {
                req_id: *req_id,
                status: *status,
                payload,
            },
            Tag::Plain,
        ),
        Outbound::UploadAck { upload_id } => (
            Body::UploadAck {
                upload_id: *upload_id,
            },
            Tag::Plain,
        ),
        Outbound::Error { code, about_seq } => (
            Body::Error {
                code: *code,
                about_seq: *about_seq,
            },
            Tag::Plain,
        ),
        Outbound::Presence { who, online } => (
            Body::Presence {
                who: *who,
                online: *online,
            },
            Tag::Plain,
        ),
        Outbound::Kick { .. } => return None,
    })
}
