//! One simulated device of a load run: logs in through the same handshake and
//! [`Link`](crate::client::link::Link) as `broker client device`, then uploads on a fixed interval
//! (at most `in_flight` unacknowledged), answers commands, and stops at the run's deadline after a
//! grace period for the last acknowledgements. Live counters feed the progress line; the rest comes back as a
//! [`DeviceOutcome`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shared_protocol::codes::Code;
use shared_protocol::frame::Body;
use shared_protocol::keys::DeviceKey;

use super::stats::DeviceOutcome;
use crate::client::ClientError;
use crate::client::device::{
    Clock, Endpoint, LoginReport, Wire, draw_upload_epoch, finish, login, send_body,
};
use crate::client::link::Incoming;
use crate::client::output::Event;

/// Counters shared by every device of a run, read by the progress line.
#[derive(Debug, Default)]
pub struct Live {
    /// Devices whose login finished (either way).
    pub logins_done: AtomicU64,
    /// Devices logged in.
    pub logged_in: AtomicU64,
    /// Uploads acknowledged.
    pub acked: AtomicU64,
    /// Delivers received (pushed messages; the link acknowledges each).
    pub delivered: AtomicU64,
    /// Unix ms of the last Deliver received (0: none yet).
    pub last_delivery_unix_ms: AtomicU64,
    /// Pongs received (Ping flood).
    pub pongs: AtomicU64,
    /// Uploads the broker refused with an `Error`.
    pub uploads_refused: AtomicU64,
}

/// In a Ping flood, a device that heard nothing for this long takes its unanswered Pings as
/// lost and sends new ones.
pub const PING_LOSS_MS: u64 = 200;

/// What every device of a run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// Give up logging in after this long.
    pub login_timeout: Duration,
    /// Time between uploads of one device; `None` for no uploads.
    pub upload_interval: Option<Duration>,
    /// Upload payload size in bytes.
    pub payload_len: usize,
    /// Unacknowledged uploads allowed per device.
    pub in_flight: usize,
    /// When uploading stops.
    pub stop_at: tokio::time::Instant,
    /// How long to wait for outstanding acknowledgements after `stop_at`.
    pub grace: Duration,
}

/// Runs device `id` from `start_at` to the end of the plan.
pub async fn run(
    id: u32,
    key: DeviceKey,
    plan: Arc<Plan>,
    start_at: tokio::time::Instant,
    live: Arc<Live>,
) -> DeviceOutcome {
    run_pinging(id, key, plan, start_at, live, 0).await
}

/// [`run`], keeping `pings_in_flight` Pings unanswered during the steady phase (0: none).
pub async fn run_pinging(
    id: u32,
    key: DeviceKey,
    plan: Arc<Plan>,
    start_at: tokio::time::Instant,
    live: Arc<Live>,
    pings_in_flight: usize,
) -> DeviceOutcome {
    tokio::time::sleep_until(start_at).await;
    let mut outcome = DeviceOutcome::default();
    let clock = Clock(Instant::now());
    let via = Wire::describe(&plan.endpoint);
    let logged_in = match Wire::open(&plan.endpoint).await {
        Ok(mut wire) => {
            // Each simulated device is one boot: its own epoch, so its upload ids starting at 1
            // never collide with another run's.
            let report = LoginReport {
                since_id: 0,
                upload_epoch: draw_upload_epoch(),
            };
            let give_up = tokio::time::Instant::now() + plan.login_timeout;
            loop {
                let left = give_up.saturating_duration_since(tokio::time::Instant::now());
                match login(&mut wire, &via, id, &key, report, left, &clock).await {
                    Err(e) if answered_a_stale_challenge(&e) && !left.is_zero() => {
                        outcome.login_retries += 1;
                    }
                    done => break done.map(|(link, _)| (wire, link)),
                }
            }
        }
        Err(e) => Err(e),
    };
    live.logins_done.fetch_add(1, Ordering::Relaxed);
    let (mut wire, mut link) = match logged_in {
        Ok(v) => v,
        Err(e) => {
            outcome.login_failure = Some(failure_reason(&e));
            return outcome;
        }
    };
    outcome.login = Some(clock.0.elapsed());
    live.logged_in.fetch_add(1, Ordering::Relaxed);
    let steady = steady(
        &mut wire,
        &mut link,
        &clock,
        &plan,
        pings_in_flight,
        &live,
        &mut outcome,
    );
    if let Err(e) = steady.await {
        outcome.session_lost = Some(failure_reason(&e));
        return outcome;
    }
    let _ = finish(&mut wire, &mut link, &clock).await;
    outcome
}

/// The logged-in phase: uploads, acknowledgements, commands, link timers.
async fn steady(
    wire: &mut Wire,
    link: &mut crate::client::link::Link,
    clock: &Clock,
    plan: &Plan,
    pings_in_flight: usize,
    live: &Live,
    outcome: &mut DeviceOutcome,
) -> Result<(), ClientError> {
    let payload = vec![b'x'; plan.payload_len];
    let mut pending: HashMap<u32, Instant> = HashMap::new();
    // The frame seq of each pending upload, so that an `Error` about it frees its slot.
    let mut upload_of_seq: HashMap<u32, u32> = HashMap::new();
    let mut next_upload_id = 1u32;
    // Spread the first upload over one interval so devices do not upload in lockstep.
    let mut next_upload = plan
        .upload_interval
        .map(|every| tokio::time::Instant::now() + every.mul_f64(rand::random::<f64>()));
    let give_up = plan.stop_at + plan.grace;
    // Ping flood: Pings sent and not yet answered, and when the last packet came.
    let mut pings_out = 0usize;
    let mut heard_at = tokio::time::Instant::now();
    loop {
        let uploading = tokio::time::Instant::now() < plan.stop_at;
        if !uploading && pending.is_empty() {
            return Ok(());
        }
        while uploading && pings_out < pings_in_flight {
            send_body(wire, link, clock, &Body::Ping).await?;
            pings_out += 1;
        }
        let ping_loss = heard_at + Duration::from_millis(PING_LOSS_MS);
        let upload_due = next_upload.filter(|_| uploading && pending.len() < plan.in_flight);
        tokio::select! {
            _ = tokio::time::sleep_until(give_up) => return Ok(()),
            _ = tokio::time::sleep_until(ping_loss), if pings_out > 0 => {
                pings_out = 0;
                heard_at = tokio::time::Instant::now();
            }
            _ = tokio::time::sleep_until(upload_due.unwrap_or(give_up)), if upload_due.is_some() => {
                let upload_id = next_upload_id;
                next_upload_id = next_upload_id.wrapping_add(1).max(1);
                let body = Body::Upload { upload_id, topic: "load", payload: &payload };
                if let Some(seq) = send_body(wire, link, clock, &body).await? {
                    upload_of_seq.insert(seq, upload_id);
                }
                pending.insert(upload_id, Instant::now());
                outcome.uploads_sent += 1;
                next_upload = plan.upload_interval.map(|every| tokio::time::Instant::now() + every);
            }
            _ = tokio::time::sleep_until(clock.at(link.next_deadline())) => {
                for p in link.poll(clock.ms(), rand::random())? {
                    wire.send(&p).await?;
                }
            }
            p = wire.recv() => {
                let mut p = p?;
                heard_at = tokio::time::Instant::now();
                for incoming in link.on_packet(&mut p, clock.ms()) {
                match incoming {
                    Incoming::Pong if pings_out > 0 => {
                        pings_out -= 1;
                        live.pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    Incoming::Event(Event::Error { code, about: Some(seq), .. }) => {
                        // A refused upload is not resent (the SDK resends one refused for
                        // load; a load test reports the refusal instead).
                        if let Some(upload_id) = upload_of_seq.remove(&seq) {
                            pending.remove(&upload_id);
                            *outcome.uploads_refused.entry(code.to_string()).or_insert(0) += 1;
                            live.uploads_refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Incoming::Event(Event::UploadAck { upload_id }) => {
                        upload_of_seq.retain(|_, id| *id != upload_id);
                        if let Some(sent) = pending.remove(&upload_id) {
                            outcome.ack_latency.record(sent.elapsed());
                            outcome.uploads_acked += 1;
                            live.acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Incoming::Event(Event::Kick { reason }) => {
                        return Err(ClientError::Kicked(reason));
                    }
                    Incoming::Event(Event::Deliver { .. }) => {
                        live.delivered.fetch_add(1, Ordering::Relaxed);
                        live.last_delivery_unix_ms
                            .fetch_max(crate::router::now_ms(), Ordering::Relaxed);
                    }
                    Incoming::Command { cmd_id, .. } => {
                        let body = Body::CommandResult { cmd_id, status: 0, payload: b"ok" };
                        send_body(wire, link, clock, &body).await?;
                        outcome.commands_answered += 1;
                    }
                    _ => {}
                }
                }
            }
        }
    }
}

/// Whether a login was refused because it answered a CHALLENGE meant for an earlier HELLO.
///
/// A HELLO unanswered for a second is sent again with a fresh nonce (docs/protocol.md section
/// 3.2, step 6); when the broker's CHALLENGE to the first HELLO arrives after that, the LOGIN
/// pairs the new nonce with the old cookie and is refused `BAD_COOKIE` (or `COOKIE_EXPIRED`
/// when it arrives very late). A REJECT is advisory and the device SDK starts again after one,
/// so a load device does the same at once, within its login timeout, and counts the retry.
fn answered_a_stale_challenge(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rejected { code, .. }
            if *code == Code::BAD_COOKIE || *code == Code::COOKIE_EXPIRED
    )
}

/// A short reason to group failures by (the full error names addresses and ids).
fn failure_reason(e: &ClientError) -> String {
    match e {
        ClientError::Rejected { code, .. } => format!("rejected: {code}"),
        ClientError::Kicked(code) => format!("kicked: {code}"),
        ClientError::Connect(m) if m.starts_with("no answer") => "login timed out".into(),
        ClientError::Io(io) => format!("socket: {}", io.kind()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: Code) -> ClientError {
        ClientError::Rejected {
            code,
            hint: String::new(),
            retry_after_ms: 0,
        }
    }

    #[test]
    fn only_a_refused_stale_challenge_is_retried() {
        assert!(answered_a_stale_challenge(&rejected(Code::BAD_COOKIE)));
        assert!(answered_a_stale_challenge(&rejected(Code::COOKIE_EXPIRED)));
        assert!(!answered_a_stale_challenge(&rejected(Code::AUTH_FAILED)));
        assert!(!answered_a_stale_challenge(&rejected(Code::RATE_LIMITED)));
        assert!(!answered_a_stale_challenge(&ClientError::Connect(
            "no answer".into()
        )));
    }
}
