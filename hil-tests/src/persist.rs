//! The QEMU board's persistent area end to end (`plug_app::persist` over the emulated flash
//! file, `board_qemu_mps2_an386::flash_file`): the real `plug` binary boots twice with one
//! flash file against the run's broker.
//!
//! Boot A (fresh file) logs in; the test pushes [`MESSAGES`] texts to the device through the
//! broker's API; the board takes them and, with a since-id period of 1 s
//! (`PLUG_SINCE_PERIOD_MS`, `device::SINCE_PERIOD_MS`), stores the highest msg_id; the test stops it once its log shows
//! that id stored. Boot B (same file, same loader boot number 1) must log a higher boot number
//! and start its client with the since_id boot A stored (the `persist: boot N, since_id M` line,
//! what the SDK reports in its first LOGIN), log in, and receive none of those messages again.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::device::{self, Boot};
use crate::junit::Suite;
use crate::rig::Rig;
use crate::scenario::{Case, Outcome};

/// Texts pushed to the device during boot A.
pub const MESSAGES: usize = 3;
/// Boot to login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long boot A may take to take and store the messages.
const STORE_WAIT: Duration = Duration::from_secs(8);

/// Waits until the broker sees `device_id` online.
async fn wait_online(api: &Api, device_id: u32, board: &mut device::Device) -> Result<(), String> {
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    loop {
        if let Some(status) = board.exited() {
            return Err(format!("board ended before its login: {status}"));
        }
        if let Ok(s) = api.device_status(device_id).await
            && s.online
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not online within {LOGIN_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `persist: boot N, since_id M` line of a decoded board log.
pub fn persisted(log: &str) -> Option<(u32, u64)> {
    let line = log.lines().find(|l| l.contains("persist: boot "))?;
    let rest = line.split("persist: boot ").nth(1)?;
    let (boot, rest) = rest.split_once(", since_id ")?;
    let since = rest.split_whitespace().next()?;
    Some((boot.trim().parse().ok()?, since.parse().ok()?))
}

/// The highest id of the `since_id N stored` lines of a decoded board log.
pub fn stored_since(log: &str) -> Option<u64> {
    log.lines()
        .filter_map(|l| l.split("since_id ").nth(1))
        .filter_map(|rest| rest.split_once(" stored").map(|(id, _)| id))
        .filter_map(|id| id.trim().parse().ok())
        .max()
}

/// msg_ids of the `delivery N: msg_id X` lines of a decoded board log.
pub fn delivered(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("delivery "))
        .filter_map(|l| l.split("msg_id ").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}

async fn run_boots(
    rig: &Rig,
    root: &Path,
    logs: &Path,
    api: &Api,
    base: &Boot,
) -> Result<String, String> {
    let flash = logs.join(format!("{}-persist.flash", rig.name));
    let _ = std::fs::remove_file(&flash);
    let boot = Boot {
        flash: Some(flash.clone()),
        ..base.clone()
    };
    // Boot A: log in, take the messages, store the highest msg_id.
    let mut a = device::start(rig, root, &boot, logs, &format!("{}-persist-a", rig.name))
        .map_err(|e| e.to_string())?;
    if let Err(e) = wait_online(api, boot.device_id, &mut a).await {
        let log = a.stop();
        return Err(format!("boot A: {e}; log:\n{log}"));
    }
    for i in 0..MESSAGES {
        if let Err(e) = api
            .push_text("device", boot.device_id, &format!("persist {i}"))
            .await
        {
            let log = a.stop();
            return Err(format!("push {i}: {e}; log:\n{log}"));
        }
    }
    tokio::time::sleep(STORE_WAIT).await;
    let log_a = a.stop();
    let got_a = delivered(&log_a);
    let (boot_a, _) =
        persisted(&log_a).ok_or(format!("boot A logged no persist line:\n{log_a}"))?;
    let stored = stored_since(&log_a).ok_or(format!("boot A stored no since_id:\n{log_a}"))?;
    let highest = got_a.iter().copied().max().unwrap_or(0);
    if got_a.len() != MESSAGES || stored != highest {
        return Err(format!(
            "boot A took msg_ids {got_a:?} and stored since_id {stored}: expected {MESSAGES} messages, the highest stored; log:\n{log_a}"
        ));
    }
    // Boot B: same flash file, same loader boot number.
    let mut b = device::start(rig, root, &boot, logs, &format!("{}-persist-b", rig.name))
        .map_err(|e| e.to_string())?;
    let online = wait_online(api, boot.device_id, &mut b).await;
    // Time for a resend of anything above the reported since_id.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log_b = b.stop();
    online.map_err(|e| format!("boot B: {e}; log:\n{log_b}"))?;
    let (boot_b, since_b) =
        persisted(&log_b).ok_or(format!("boot B logged no persist line:\n{log_b}"))?;
    if boot_b <= boot_a {
        return Err(format!(
            "boot B is number {boot_b}, not above boot A's {boot_a}"
        ));
    }
    if since_b != stored {
        return Err(format!(
            "boot B started with since_id {since_b}, boot A stored {stored}; log:\n{log_b}"
        ));
    }
    let again: Vec<u64> = delivered(&log_b)
        .into_iter()
        .filter(|id| got_a.contains(id))
        .collect();
    if !again.is_empty() {
        return Err(format!(
            "boot B received msg_ids {again:?} again; log:\n{log_b}"
        ));
    }
    Ok(format!(
        "boot A = {boot_a} took msg_ids {got_a:?}, stored since_id {stored}; boot B = {boot_b} logged in with since_id {since_b}, nothing received again"
    ))
}

/// The suite: two boots of one device over one flash file.
pub async fn run(rig: &Rig, root: &Path, logs: &Path, api: &Api, base: Boot) -> Suite {
    let started = Instant::now();
    let outcome = run_boots(rig, root, logs, api, &base).await;
    let (outcome, detail) = match outcome {
        Ok(detail) => (Outcome::Pass, detail),
        Err(e) => (Outcome::Fail(e), String::new()),
    };
    Suite {
        name: format!("{}/persist", rig.name),
        cases: vec![Case {
            name: "boot counter and since_id survive a restart".into(),
            outcome,
            time: started.elapsed(),
            detail,
        }],
        time: started.elapsed(),
        system_out: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_log_lines_are_parsed() {
        let log = "0.1 INFO persist: boot 7, since_id 12 (flash file x.flash)\n\
                   2.0 INFO delivery 1: msg_id 13, 9 bytes (repeats let through: 0)\n\
                   3.0 INFO since_id 13 stored\n3.5 INFO since_id 11 stored";
        assert_eq!(persisted(log), Some((7, 12)));
        assert_eq!(stored_since(log), Some(13));
        assert_eq!(delivered(log), [13]);
    }
}
