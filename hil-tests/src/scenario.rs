//! The scenario every rig runs, once per transport, against the broker's HTTP API only (what
//! an app backend sees): the board logs in over the expected transport, answers `relay.set`
//! and `relay.get` sent through the API, and its `relay` and `power` uploads are readable from
//! the upload spool with a cursor (all under the boot's one upload epoch, no dedup key twice).
//! Each step is one JUnit test case; after a failed step the rest are skipped (they depend on
//! it).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{Api, from_device};
use crate::rig::Transport;

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It failed, with the reason.
    Fail(String),
    /// It did not run, with the reason.
    Skip(String),
}

/// One step's result.
#[derive(Debug, Clone)]
pub struct Case {
    /// Step name.
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// How long it took.
    pub time: Duration,
    /// What it observed (shown in the report).
    pub detail: String,
}

/// What the scenario needs to know about the board under test.
pub struct Target<'a> {
    /// The API of the broker the board uses.
    pub api: &'a Api,
    /// The board's device id.
    pub device_id: u32,
    /// The transport it was told to use.
    pub transport: Transport,
    /// Boot to login.
    pub login_timeout: Duration,
    /// Spool cursor taken before the boot: only later uploads count.
    pub cursor: u64,
    /// The board uploads a `boot` report with its reset reason after each boot; this fresh boot
    /// must say `power-on`.
    pub reports_reset_reason: bool,
}

/// The `boot` upload of a fresh boot.
const POWER_ON_REPORT: &[u8] = br#"{"reset":"power-on"}"#;

/// Wait for uploads to show up in the spool.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Command timeout asked of the broker.
pub const COMMAND_TIMEOUT_MS: u64 = 5_000;
/// Interval between API polls.
const POLL: Duration = Duration::from_millis(100);

type StepResult = Result<String, String>;

/// Runs the scenario; `gone` says why the board has ended, if it has (checked while waiting
/// for the login). Returns one case per step.
pub async fn run(t: Target<'_>, gone: &mut dyn FnMut() -> Option<String>) -> Vec<Case> {
    let mut cases = Vec::new();
    let names = ["logs in", "relay.set on", "relay.get", "uploads readable"];
    let mut failed: Option<String> = None;
    for (index, name) in names.iter().enumerate() {
        let name = format!("{} over {}", name, t.transport.as_str());
        if let Some(first) = &failed {
            cases.push(Case {
                name,
                outcome: Outcome::Skip(format!("after failed step `{first}`")),
                time: Duration::ZERO,
                detail: String::new(),
            });
            continue;
        }
        let started = Instant::now();
        let result = match index {
            0 => login(&t, gone).await,
            1 => relay_set(&t).await,
            2 => relay_get(&t).await,
            _ => uploads(&t).await,
        };
        let time = started.elapsed();
        let (outcome, detail) = match result {
            Ok(detail) => (Outcome::Pass, detail),
            Err(reason) => {
                failed = Some(name.clone());
                (Outcome::Fail(reason), String::new())
            }
        };
        cases.push(Case {
            name,
            outcome,
            time,
            detail,
        });
    }
    cases
}

async fn login(t: &Target<'_>, gone: &mut dyn FnMut() -> Option<String>) -> StepResult {
    let started = Instant::now();
    let want = t.transport.api_name();
    let deadline = started + t.login_timeout;
    loop {
        if let Some(why) = gone() {
            return Err(format!("the board ended before logging in: {why}"));
        }
        let last = match t.api.device_status(t.device_id).await {
            Ok(status) => {
                if let Some(s) = status.sessions.iter().find(|s| s.transport == want) {
                    return Ok(format!(
                        "online over {want} from {} after {:.2} s",
                        s.peer,
                        started.elapsed().as_secs_f32()
                    ));
                }
                format!("online: {}, sessions: {:?}", status.online, status.sessions)
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "device {} not online over {want} within {} s (last: {last})",
                t.device_id,
                t.login_timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `{"relay":"on"}` → `Some(true)`.
fn relay_state(payload: &[u8]) -> Option<bool> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    match v.get("relay")?.as_str()? {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

async fn command_expect_on(t: &Target<'_>, name: &str, text: &str) -> StepResult {
    let started = Instant::now();
    let reply = t
        .api
        .command(t.device_id, name, text, COMMAND_TIMEOUT_MS)
        .await
        .map_err(|e| e.to_string())?;
    let shown = String::from_utf8_lossy(&reply.payload).into_owned();
    if reply.status != 0 {
        return Err(format!(
            "{name}: device status {} (payload {shown})",
            reply.status
        ));
    }
    match relay_state(&reply.payload) {
        Some(true) => Ok(format!(
            "HTTP 200, status 0, {shown} in {} ms",
            started.elapsed().as_millis()
        )),
        _ => Err(format!(
            "{name}: expected {{\"relay\":\"on\"}}, got {shown}"
        )),
    }
}

async fn relay_set(t: &Target<'_>) -> StepResult {
    command_expect_on(t, "relay.set", "on").await
}

async fn relay_get(t: &Target<'_>) -> StepResult {
    command_expect_on(t, "relay.get", "").await
}

/// Whether a `power` payload reports the relay on with a load.
fn power_on(payload: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return false;
    };
    relay_state(payload) == Some(true)
        && v.get("power_mw")
            .and_then(Value::as_u64)
            .is_some_and(|p| p > 0)
}

async fn uploads(t: &Target<'_>) -> StepResult {
    let mut cursor = t.cursor;
    let mut relay_on = None;
    let mut power = None;
    let mut boot = None;
    let mut seen = 0usize;
    // One boot since the cursor: one upload epoch, and no two uploads with one dedup key.
    let mut epochs = std::collections::BTreeSet::new();
    let mut keys = std::collections::HashSet::new();
    let deadline = Instant::now() + UPLOAD_TIMEOUT;
    loop {
        let page = t
            .api
            .uploads(cursor, 100)
            .await
            .map_err(|e| e.to_string())?;
        for u in page.uploads.iter().filter(|u| from_device(u, t.device_id)) {
            seen += 1;
            epochs.insert(u.upload_epoch);
            if !keys.insert(u.dedup_key.clone()) {
                return Err(format!("two uploads with dedup_key {}", u.dedup_key));
            }
            match u.topic.as_str() {
                "relay" if relay_state(&u.payload) == Some(true) => {
                    relay_on = relay_on.or(Some(u.cursor))
                }
                "boot" => boot = boot.or(Some(String::from_utf8_lossy(&u.payload).into_owned())),
                "power" if power_on(&u.payload) => {
                    power = power.or(Some((
                        u.cursor,
                        String::from_utf8_lossy(&u.payload).into_owned(),
                    )))
                }
                _ => {}
            }
        }
        cursor = page.next;
        if let Some(report) = &boot
            && t.reports_reset_reason
            && report.as_bytes() != POWER_ON_REPORT
        {
            return Err(format!(
                "boot report {report}, expected {}",
                String::from_utf8_lossy(POWER_ON_REPORT)
            ));
        }
        let boot_done = boot.is_some() || !t.reports_reset_reason;
        if let (Some(r), Some((p, payload)), true) = (&relay_on, &power, boot_done) {
            if epochs.len() != 1 || epochs.contains(&0) {
                return Err(format!(
                    "one boot should upload under one nonzero epoch, saw {epochs:x?}"
                ));
            }
            return Ok(format!(
                "{seen} uploads from device {}; relay on at cursor {r}, power at cursor {p}: {payload}; boot report: {}",
                t.device_id,
                boot.as_deref().unwrap_or("none expected")
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {} s: {seen} uploads from device {} since cursor {}; relay on seen: {}, power with relay on seen: {}, boot report seen: {}",
                UPLOAD_TIMEOUT.as_secs(),
                t.device_id,
                t.cursor,
                relay_on.is_some(),
                power.is_some(),
                boot.is_some()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_relay_and_power_payloads() {
        assert_eq!(relay_state(br#"{"relay":"on"}"#), Some(true));
        assert_eq!(relay_state(br#"{"relay":"off"}"#), Some(false));
        assert_eq!(relay_state(br#"{"relay":1}"#), None);
        assert_eq!(relay_state(b"not json"), None);
        assert!(power_on(
            br#"{"power_mw":60000,"voltage_mv":230000,"current_ma":260,"energy_mwh":12,"relay":"on"}"#
        ));
        assert!(!power_on(br#"{"power_mw":0,"relay":"on"}"#));
        assert!(!power_on(br#"{"power_mw":60000,"relay":"off"}"#));
    }
}
