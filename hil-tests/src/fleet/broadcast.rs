//! The `fleet` scenario: every board of the rig online together, one broadcast to all devices,
//! then a firmware-image change rolled to half of the host TAP boards.
//!
//! 1. All host TAP boards and the QEMU board boot with fresh device ids (no meter uploads) and
//!    must be online within the rig's `login_timeout_s`.
//! 2. One `POST /v1/push` with target `all_devices`. Each board logs every Deliver its plug
//!    application receives with a running count (`delivery N: msg_id M, ...`, and the repeats
//!    the SDK let through; `plug_app::deliveries`): every board must log delivery 1 with the
//!    push's `msg_id` within [`BROADCAST_WAIT`], and [`BROADCAST_SETTLE`] later still exactly
//!    one delivery and no repeat.
//! 3. The first half of the host TAP boards is stopped and started again as the same device
//!    (same record) on the rig's second image (`[host_tap] next_binary`, the board built with
//!    feature `next-image`): each must log in again and its `status` command must report the
//!    new version (`<version>+next`) within `login_timeout_s` (asked again while the old
//!    image's session is being replaced); its log must show no delivery (the broadcast was
//!    acknowledged by the old image). Every board left on the old image must still answer a
//!    `status` command with the old version.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Fleet, POLL, Running, case, failed_case};
use crate::rig::Kind;
use crate::scenario::{Case, Outcome};

/// How long every board has to log the broadcast after the push was accepted.
pub const BROADCAST_WAIT: Duration = Duration::from_secs(15);
/// How long after the last board logged the broadcast the harness looks for a second delivery.
pub const BROADCAST_SETTLE: Duration = Duration::from_secs(2);
/// The version suffix of the second image (`host-tap-plug-next`).
pub const NEXT_VERSION_SUFFIX: &str = "+next";
/// Command timeout of the version checks (no loss on the paths in this scenario).
const COMMAND_TIMEOUT_MS: u64 = 10_000;

/// What one board's log says about deliveries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeliveryLog {
    /// `msg_id` of each `delivery N:` line, in log order.
    pub msg_ids: Vec<u64>,
    /// The highest "repeats let through" count logged.
    pub repeats: u64,
}

/// Reads the plug application's delivery lines (`delivery N: msg_id M, B bytes (repeats let
/// through: R)`) out of a board log, host (`log`) or decoded defmt alike.
pub fn delivery_log(log: &str) -> DeliveryLog {
    let mut out = DeliveryLog::default();
    for line in log.lines() {
        let Some(at) = line.find("delivery ") else {
            continue;
        };
        let rest = &line[at..];
        let number = |key: &str| -> Option<u64> {
            let from = rest.find(key)? + key.len();
            let digits: String = rest[from..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        };
        let (Some(msg_id), Some(repeats)) = (number("msg_id "), number("let through: ")) else {
            continue;
        };
        out.msg_ids.push(msg_id);
        out.repeats = out.repeats.max(repeats);
    }
    out
}

impl Fleet<'_> {
    /// The `fleet` scenario (module docs).
    pub(super) async fn fleet_broadcast(&mut self) -> (Vec<Case>, String) {
        let mut cases = Vec::new();
        let next_binary = match self
            .ctx
            .rig
            .host_tap
            .as_ref()
            .and_then(|h| h.next_binary.clone())
        {
            Some(b) => b,
            None => {
                return (
                    vec![failed_case(
                        "set-up",
                        "the rig has no [host_tap] next_binary (the second image)".into(),
                    )],
                    String::new(),
                );
            }
        };
        let mut boards = Vec::new();
        for slot in 0..self.slots.len() {
            match self.boot(slot, 0, "fleet") {
                Ok(b) => boards.push(b),
                Err(e) => cases.push(failed_case("set-up", e)),
            }
        }
        let ids: Vec<u32> = boards.iter().map(|b| b.device_id).collect();
        let limit = Duration::from_secs(self.ctx.rig.login_timeout_s);
        let started = Instant::now();
        let online = self.online_all(&ids, limit).await;
        let offline: Vec<String> = boards
            .iter()
            .zip(&online)
            .filter_map(|(b, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", self.slots[b.slot].label))
            })
            .collect();
        cases.push(case(
            format!("{} boards online together", boards.len()),
            started,
            if offline.is_empty() {
                Ok(format!(
                    "all online {} ms after the boots",
                    started.elapsed().as_millis()
                ))
            } else {
                Err(offline.join("; "))
            },
        ));
        if cases.iter().any(|c| c.outcome != Outcome::Pass) {
            let logs = self.stop_all(boards);
            return (cases, logs);
        }

        // 2. The broadcast.
        let text = format!("fleet broadcast {}", rand::random::<u32>());
        let started = Instant::now();
        let pushed = match self.api.push_all_devices(&text).await {
            Ok(p) => p,
            Err(e) => {
                cases.push(failed_case("broadcast", e.to_string()));
                let logs = self.stop_all(boards);
                return (cases, logs);
            }
        };
        let msg_id = pushed.get("msg_id").and_then(Value::as_u64).unwrap_or(0);
        let mut first_seen: Vec<Option<Duration>> = vec![None; boards.len()];
        let deadline = started + BROADCAST_WAIT;
        while first_seen.iter().any(Option::is_none) && Instant::now() < deadline {
            for (b, seen) in boards.iter().zip(first_seen.iter_mut()) {
                if seen.is_none()
                    && delivery_log(&b.device.log_so_far())
                        .msg_ids
                        .contains(&msg_id)
                {
                    *seen = Some(started.elapsed());
                }
            }
            tokio::time::sleep(POLL * 4).await;
        }
        tokio::time::sleep(BROADCAST_SETTLE).await;
        for (b, seen) in boards.iter().zip(&first_seen) {
            let log = delivery_log(&b.device.log_so_far());
            let label = &self.slots[b.slot].label;
            let result = match seen {
                None => Err(format!(
                    "no delivery of msg_id {msg_id} logged within {} s (deliveries logged: {:?})",
                    BROADCAST_WAIT.as_secs(),
                    log.msg_ids
                )),
                Some(_) if log.msg_ids != [msg_id] || log.repeats != 0 => Err(format!(
                    "deliveries logged {:?} (want exactly [{msg_id}]), repeats let through {}",
                    log.msg_ids, log.repeats
                )),
                Some(t) => self.delivery_counts(b.device_id).await.map(|counts| {
                    format!(
                        "msg_id {msg_id} once, {} ms after the push; no repeat; {counts}",
                        t.as_millis()
                    )
                }),
            };
            cases.push(case(
                format!("{label}: the broadcast once"),
                started,
                result,
            ));
        }
        let outcome = format!("push: {pushed}");

        // 3. The roll-out to the first half of the host TAP boards.
        let host_taps: Vec<usize> = boards
            .iter()
            .enumerate()
            .filter(|(_, b)| self.slots[b.slot].kind == Kind::HostTap)
            .map(|(i, _)| i)
            .collect();
        let rolled: Vec<usize> = host_taps[..host_taps.len() / 2].to_vec();
        let mut logs = String::new();
        for &i in &rolled {
            let b = &mut boards[i];
            let log = b.device.stop_in_place();
            logs.push_str(&super::log_tail(
                &format!("{} (old image)", self.slots[b.slot].label),
                b.device_id,
                &log,
            ));
        }
        let mut rolled_ok = true;
        for &i in &rolled {
            let slot = boards[i].slot;
            let mut boot = boards[i].boot.clone();
            boot.boot_number = boot.boot_number.wrapping_add(1);
            match self.start_boot(slot, &boot, "fleet-next", Some(&next_binary)) {
                Ok(device) => boards[i].device = device,
                Err(e) => {
                    rolled_ok = false;
                    cases.push(failed_case(
                        &format!("{}: start the new image", self.slots[slot].label),
                        e,
                    ));
                }
            }
        }
        if rolled_ok {
            for &i in &rolled {
                let started = Instant::now();
                let b = &boards[i];
                let label = self.slots[b.slot].label.clone();
                let result = self.new_image_steps(b, limit).await;
                cases.push(case(
                    format!("{label}: new image logged in"),
                    started,
                    result,
                ));
            }
        }
        for (i, b) in boards.iter().enumerate() {
            if rolled.contains(&i) {
                continue;
            }
            let started = Instant::now();
            let label = self.slots[b.slot].label.clone();
            let result = self.old_image_steps(b).await;
            cases.push(case(
                format!("{label}: old image still answers"),
                started,
                result,
            ));
        }
        eprintln!("hil[{}/fleet]: {outcome}", self.ctx.rig.name);
        logs.push_str(&self.stop_all(boards));
        (cases, format!("{outcome}\n{logs}"))
    }

    /// A board restarted on the second image: within `limit` its `status` answers with the new
    /// version, and it logged no delivery (the broadcast was acknowledged by the old image).
    /// The old image's session may still be listed for a moment (a stopped board says no
    /// goodbye; the new login replaces it), so a `status` that fails before the deadline is
    /// asked again.
    /// The board's own delivery counts (command `deliveries`, answered by the plug application,
    /// `boards/lib/plug-app/src/deliveries.rs`): it must have received exactly one Deliver
    /// and let no repeat through; the repeats the SDK suppressed itself are reported.
    async fn delivery_counts(&self, id: u32) -> Result<String, String> {
        let reply = self
            .api
            .command(id, "deliveries", "", COMMAND_TIMEOUT_MS)
            .await
            .map_err(|e| format!("deliveries command: {e}"))?;
        let counts: Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| format!("deliveries payload: {e}"))?;
        let count = |k: &str| counts.get(k).and_then(Value::as_u64);
        match (count("received"), count("repeats"), count("suppressed")) {
            (Some(1), Some(0), Some(suppressed)) => Ok(format!(
                "the board counts 1 received, 0 repeats, {suppressed} repeats suppressed by the SDK"
            )),
            _ => Err(format!(
                "the board's delivery counts are {counts} (want 1 received and 0 repeats)"
            )),
        }
    }

    async fn new_image_steps(&self, b: &Running, limit: Duration) -> Result<String, String> {
        let deadline = b.device.started() + limit;
        let mut failures = Vec::new();
        let fw = loop {
            match self.firmware_version(b.device_id).await {
                Ok(fw) => break fw,
                Err(e) if Instant::now() < deadline => {
                    failures.push(e);
                    tokio::time::sleep(POLL * 4).await;
                }
                Err(e) => {
                    failures.push(e);
                    return Err(format!(
                        "no status answer within {} s: {}",
                        limit.as_secs(),
                        failures.join("; ")
                    ));
                }
            }
        };
        if !fw.ends_with(NEXT_VERSION_SUFFIX) {
            return Err(format!(
                "status reports firmware {fw:?}, want the new image's (ending {NEXT_VERSION_SUFFIX:?})"
            ));
        }
        let log = delivery_log(&b.device.log_so_far());
        if !log.msg_ids.is_empty() {
            return Err(format!(
                "the new image got deliveries {:?} (the broadcast was acknowledged before)",
                log.msg_ids
            ));
        }
        Ok(format!(
            "firmware {fw}, status answered {} ms after its start ({} earlier tries failed: {}), no delivery again",
            b.device.started().elapsed().as_millis(),
            failures.len(),
            failures.join("; ")
        ))
    }

    /// A board left on the old image: `status` still answers, with the old version.
    async fn old_image_steps(&self, b: &Running) -> Result<String, String> {
        let fw = self.firmware_version(b.device_id).await?;
        if fw.ends_with(NEXT_VERSION_SUFFIX) {
            return Err(format!("status reports the new image's firmware {fw:?}"));
        }
        Ok(format!("status answered, firmware {fw}"))
    }

    /// The `fw` field of the board's `status` answer.
    async fn firmware_version(&self, id: u32) -> Result<String, String> {
        let reply = self
            .api
            .command(id, "status", "", COMMAND_TIMEOUT_MS)
            .await
            .map_err(|e| format!("status command: {e}"))?;
        let status: Value =
            serde_json::from_slice(&reply.payload).map_err(|e| format!("status payload: {e}"))?;
        status
            .get("fw")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("status without `fw`: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_lines_are_read_from_host_and_defmt_logs() {
        let host = "[2026-12-03T19:00:00.123Z INFO  plug_app::app] delivery 1: msg_id 42, 20 bytes (repeats let through: 0)\n\
                    [2026-12-03T19:00:00.200Z INFO  firmware::client] online\n";
        assert_eq!(
            delivery_log(host),
            DeliveryLog {
                msg_ids: vec![42],
                repeats: 0
            }
        );
        let defmt = "0.512 INFO delivery 1: msg_id 42, 20 bytes (repeats let through: 0)\n\
                     0.600 INFO delivery 2: msg_id 42, 20 bytes (repeats let through: 1)\n";
        assert_eq!(
            delivery_log(defmt),
            DeliveryLog {
                msg_ids: vec![42, 42],
                repeats: 1
            }
        );
        assert_eq!(delivery_log("no deliveries here\n"), DeliveryLog::default());
    }
}
