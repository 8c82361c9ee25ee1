//! `cut-off`: a device cut off from the real broker for minutes while it uploads four times
//! a second. Its upload queue (the SDK's, `Q` uploads) must stay bounded, with every reading it
//! could not keep counted (`readings_skipped`), and after the network comes back the readings
//! it kept must reach the spool once each and in order. The plug numbers its readings (`n`,
//! docs/firmware.md), so the spool alone tells which were taken: kept + dropped = taken.
//!
//! The cut is the TAP unplugged from the rig's bridge (the board keeps writing frames, nobody
//! hears them), for the rig's `cut_off_s` (or `--cut-off-s`).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Fleet, case, failed_case};
use crate::api::Upload;
use crate::scenario::Case;

/// Meter interval in `cut-off`: four uploads a second, so the quick form's 90 s cut (360
/// readings) outlasts the host TAP board's queue.
pub const CUT_OFF_METER_MS: u64 = 250;
/// The host TAP board of `cut-off` (free in every other scenario but `fleet`).
pub const CUT_OFF_BOARD: u32 = 8;
/// Uploading before the cut.
const BEFORE_CUT: Duration = Duration::from_secs(5);
/// From the end of the cut to a session again: the board's reconnect backoff has grown to its
/// 60 s cap by then (full jitter), plus a login.
const BACK_ONLINE: Duration = Duration::from_secs(90);
/// Uploads the host TAP board's queue holds (`plug_app::app::UPLOADS`, feature
/// `deep-upload-queue`): a cut longer than this many readings must drop some.
pub const HOST_TAP_QUEUE: u64 = 256;
/// How long to wait for the queue to drain after the board is online again.
const DRAIN: Duration = Duration::from_secs(30);

/// What the spool says about one boot's power readings.
#[derive(Debug, PartialEq, Eq)]
pub struct Numbered {
    /// Readings in the spool (kept).
    pub kept: u64,
    /// The highest reading number among them (taken, when that reading was kept).
    pub last: u64,
}

/// The power readings' numbers in spool order: each above the one before (in order, none
/// twice); returns how many and the last.
pub fn numbered_readings(uploads: &[Upload]) -> Result<Numbered, String> {
    let mut last = 0u64;
    let mut kept = 0u64;
    for u in uploads.iter().filter(|u| u.topic == "power") {
        let n = serde_json::from_slice::<Value>(&u.payload)
            .ok()
            .and_then(|v| v.get("n").and_then(Value::as_u64))
            .ok_or_else(|| format!("power upload {} has no reading number n", u.upload_id))?;
        if n <= last {
            return Err(format!(
                "reading {n} after reading {last} in the spool (upload {})",
                u.upload_id
            ));
        }
        last = n;
        kept += 1;
    }
    Ok(Numbered { kept, last })
}

impl Fleet<'_> {
    /// `cut-off`: see the module docs.
    pub(super) async fn cut_off(&mut self) -> (Vec<Case>, String) {
        let cut = Duration::from_secs(self.ctx.rig.cut_off_s);
        let cursor = match self.api.uploads(0, 1).await {
            Ok(p) => p.head,
            Err(e) => return (vec![failed_case("set-up", e.to_string())], String::new()),
        };
        let slot = match self.host_tap_slot(CUT_OFF_BOARD) {
            Ok(s) => s,
            Err(c) => return (vec![c], String::new()),
        };
        let index = self.slots[slot].index;
        let board = match self.boot(slot, CUT_OFF_METER_MS, "cut-off") {
            Ok(b) => b,
            Err(e) => return (vec![failed_case("set-up", e)], String::new()),
        };
        let started = Instant::now();
        let result = self
            .cut_off_steps(index, board.device_id, cursor, cut)
            .await;
        let label = self.slots[slot].label.clone();
        let cases = vec![case(
            format!(
                "{label}: cut off {} s at 1 upload/s: queue bounded, drops counted, the rest once in order",
                cut.as_secs()
            ),
            started,
            result,
        )];
        // Plugged back in whatever happened (a failed step may have left it out).
        let _ = self.plug(index, true);
        let logs = self.stop_all(vec![board]);
        (cases, logs)
    }

    async fn cut_off_steps(
        &self,
        index: u32,
        id: u32,
        cursor: u64,
        cut: Duration,
    ) -> Result<String, String> {
        let limit = Duration::from_secs(self.ctx.rig.login_timeout_s);
        self.online(id, limit).await?;
        tokio::time::sleep(BEFORE_CUT).await;
        self.plug(index, false)
            .map_err(|e| format!("unplugging: {e}"))?;
        let cut_at = Instant::now();
        eprintln!(
            "hil[{}/cut-off]: tap{index} cut off for {} s",
            self.ctx.rig.name,
            cut.as_secs()
        );
        tokio::time::sleep(cut).await;
        self.plug(index, true)
            .map_err(|e| format!("plugging back in: {e}"))?;
        let restored = Instant::now();
        let online = self.online(id, BACK_ONLINE).await?;
        let back_after = online.duration_since(restored);
        // The queue drains (a reading a second on top): wait until the spool holds the board's
        // readings up to the one it numbered last, then read the drop counter on both sides of
        // the spool read (it must not move: nothing is dropped once the board is back).
        let deadline = Instant::now() + DRAIN;
        loop {
            let before = self.skipped(id).await?;
            let uploads = self.all_uploads(cursor, id).await?;
            let after = self.skipped(id).await?;
            super::check_order(&uploads)?;
            let numbered = numbered_readings(&uploads)?;
            let (dropped, taken) = (after, numbered.last);
            if before == after && numbered.kept + dropped == taken {
                let during_cut = cut.as_millis() as u64 / CUT_OFF_METER_MS;
                if during_cut > HOST_TAP_QUEUE + 5 && dropped == 0 {
                    return Err(format!(
                        "a {} s cut at {} uploads/s dropped nothing: the queue is not bounded at {HOST_TAP_QUEUE}",
                        cut.as_secs(),
                        1_000 / CUT_OFF_METER_MS
                    ));
                }
                return Ok(format!(
                    "{taken} readings taken: {} kept, in the spool once each and in order, {dropped} dropped and counted (queue {HOST_TAP_QUEUE}); cut {} ms; online again {} ms after the cut ended; drained {} ms after that",
                    numbered.kept,
                    restored.duration_since(cut_at).as_millis(),
                    back_after.as_millis(),
                    online.elapsed().as_millis()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} kept + {dropped} dropped != {taken} taken {} s after the board was back (drop counter {before} then {after})",
                    numbered.kept,
                    DRAIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The board's `readings_skipped` (its `status` answer).
    async fn skipped(&self, id: u32) -> Result<u64, String> {
        let status = self.board_status(id).await?;
        status
            .get("readings_skipped")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no readings_skipped in the board status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn power(id: u32, payload: &str) -> Upload {
        Upload {
            cursor: u64::from(id),
            device: shared_protocol::ids::Address::device(1),
            upload_epoch: 9,
            upload_id: id,
            dedup_key: format!("k{id}"),
            topic: "power".into(),
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn reading_numbers_give_kept_and_taken_and_refuse_disorder() {
        let ok = [
            power(1, r#"{"power_mw":1,"n":1}"#),
            power(2, r#"{"power_mw":1,"n":2}"#),
            power(3, r#"{"power_mw":1,"n":5}"#),
        ];
        assert_eq!(numbered_readings(&ok), Ok(Numbered { kept: 3, last: 5 }));
        let swapped = [
            power(1, r#"{"power_mw":1,"n":2}"#),
            power(2, r#"{"power_mw":1,"n":1}"#),
        ];
        assert!(
            numbered_readings(&swapped)
                .unwrap_err()
                .contains("reading 1 after reading 2")
        );
        let unnumbered = [power(1, r#"{"power_mw":1}"#)];
        assert!(numbered_readings(&unnumbered).is_err());
    }
}
