//! Plug application tests against a recording fake of [`DeviceApi`].

use std::string::String;
use std::vec::Vec;

use shared_protocol::ids::{Address, Kind};

use super::*;
use crate::api::OutboxError;
use crate::queue::{FullPolicy, UploadError, UploadId};
use crate::stats::Stats;

#[derive(Default)]
struct FakeApi {
    uploads: Vec<(String, String)>,
    results: Vec<(u32, u16, String)>,
    sent: Vec<(Address, String)>,
    /// Sends refused as if the outbox were full.
    outbox_full: bool,
    upload_room: Option<usize>,
    online: bool,
    stats: Stats,
}

impl DeviceApi for FakeApi {
    fn upload_with(
        &mut self,
        topic: &str,
        payload: &[u8],
        when_full: FullPolicy,
    ) -> Result<UploadId, UploadError> {
        assert_eq!(
            when_full,
            FullPolicy::KeepOldest,
            "the plug keeps the oldest"
        );
        if let Some(room) = self.upload_room.as_mut() {
            if *room == 0 {
                return Err(UploadError::QueueFull);
            }
            *room -= 1;
        }
        self.uploads
            .push((topic.into(), String::from_utf8(payload.to_vec()).unwrap()));
        Ok(UploadId(self.uploads.len() as u32))
    }
    fn command_result(
        &mut self,
        cmd_id: u32,
        status: u16,
        payload: &[u8],
    ) -> Result<(), OutboxError> {
        self.results
            .push((cmd_id, status, String::from_utf8(payload.to_vec()).unwrap()));
        Ok(())
    }
    fn request(&mut self, _: &str, _: &[u8]) -> Result<u32, OutboxError> {
        Ok(1)
    }
    fn send(&mut self, to: Address, payload: &[u8]) -> Result<(), OutboxError> {
        if self.outbox_full {
            return Err(OutboxError::Full);
        }
        self.sent
            .push((to, String::from_utf8(payload.to_vec()).unwrap()));
        Ok(())
    }
    fn stats(&self) -> Stats {
        self.stats
    }
    fn is_online(&self) -> bool {
        self.online
    }
}

const CONFIG: PlugConfig = PlugConfig {
    firmware_version: "1.2.3",
    meter_interval_ms: 60_000,
};

fn plug() -> Plug<MemoryRelay, SimulatedMeter> {
    Plug::new(
        MemoryRelay::default(),
        SimulatedMeter::new(10_000),
        CONFIG,
        Instant::ZERO,
    )
}

fn command(cmd_id: u32, name: &str, payload: &[u8]) -> Event<64> {
    Event::Command {
        cmd_id,
        name: name.try_into().unwrap(),
        payload: heapless::Vec::from_slice(payload).unwrap(),
    }
}

#[test]
fn relay_set_answers_and_reports_state_once() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    let now = Instant::from_millis(5);
    p.on_event(&command(7, "relay.set", b"on"), now, &mut api);
    assert!(p.relay().is_on());
    assert_eq!(api.results, [(7, STATUS_OK, r#"{"relay":"on"}"#.into())]);
    assert_eq!(api.uploads, [("relay".into(), r#"{"relay":"on"}"#.into())]);
    // Setting the same state again answers but reports no change.
    p.on_event(&command(8, "relay.set", b" on\n"), now, &mut api);
    assert_eq!(api.results.len(), 2);
    assert_eq!(api.uploads.len(), 1);
}

#[test]
fn toggle_get_and_bad_arguments() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    let now = Instant::ZERO;
    p.on_event(&command(1, "relay.toggle", b""), now, &mut api);
    p.on_event(&command(2, "relay.toggle", b""), now, &mut api);
    p.on_event(&command(3, "relay.get", b""), now, &mut api);
    p.on_event(&command(4, "relay.set", b"maybe"), now, &mut api);
    p.on_event(&command(5, "reboot", b""), now, &mut api);
    let statuses: Vec<(u32, u16)> = api.results.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        statuses,
        [
            (1, STATUS_OK),
            (2, STATUS_OK),
            (3, STATUS_OK),
            (4, STATUS_BAD_ARGUMENT),
            (5, STATUS_UNKNOWN_COMMAND)
        ]
    );
    assert_eq!(api.results[2].2, r#"{"relay":"off"}"#);
    let reports: Vec<&str> = api.uploads.iter().map(|u| u.1.as_str()).collect();
    assert_eq!(reports, [r#"{"relay":"on"}"#, r#"{"relay":"off"}"#]);
    assert_eq!(p.stats().commands, 5);
}

#[test]
fn status_reports_version_uptime_and_connection_stats() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    api.online = true;
    api.stats.logins = 3;
    api.stats.retransmits = 9;
    p.on_event(
        &command(1, "status", b""),
        Instant::from_millis(125_000),
        &mut api,
    );
    let text = &api.results[0].2;
    for part in [
        r#""fw":"1.2.3""#,
        r#""uptime_s":125"#,
        r#""online":true"#,
        r#""logins":3"#,
        r#""retransmits":9"#,
        r#""commands":1"#,
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
}

#[test]
fn meter_uploads_follow_the_interval_and_count_skips() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    assert_eq!(p.poll_timeout(), Some(Instant::from_millis(60_000)));
    p.on_timer(Instant::from_millis(59_999), &mut api);
    assert!(api.uploads.is_empty());
    p.on_timer(Instant::from_millis(60_000), &mut api);
    assert_eq!(api.uploads.len(), 1);
    assert_eq!(api.uploads[0].0, "power");
    assert!(api.uploads[0].1.contains(r#""power_mw":0"#));
    assert_eq!(p.poll_timeout(), Some(Instant::from_millis(120_000)));
    assert!(api.uploads[0].1.ends_with(r#","n":1}"#), "numbered from 1");
    api.upload_room = Some(0);
    p.on_timer(Instant::from_millis(120_000), &mut api);
    assert_eq!(p.stats().readings_skipped, 1);
    assert_eq!(p.poll_timeout(), Some(Instant::from_millis(180_000)));
    // The skipped reading kept its number: the next one uploaded is 3, so the gap in the
    // numbers is the skipped reading (taken = uploaded + skipped).
    api.upload_room = None;
    p.on_timer(Instant::from_millis(180_000), &mut api);
    assert_eq!(api.uploads.len(), 2);
    assert!(
        api.uploads[1].1.ends_with(r#","n":3}"#),
        "{}",
        api.uploads[1].1
    );
    assert_eq!(p.stats().readings, 3);
}

#[test]
fn state_report_after_login_is_retried_when_the_queue_is_full() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    api.upload_room = Some(0);
    let t0 = Instant::from_millis(10);
    p.on_event(&Event::<64>::Connected { session_id: 5 }, t0, &mut api);
    assert!(api.uploads.is_empty());
    assert_eq!(p.poll_timeout(), Some(t0.plus_millis(STATE_RETRY_MS)));
    api.upload_room = None;
    p.on_timer(t0.plus_millis(STATE_RETRY_MS), &mut api);
    assert_eq!(api.uploads, [("relay".into(), r#"{"relay":"off"}"#.into())]);
    assert_eq!(p.poll_timeout(), Some(Instant::from_millis(60_000)));
}

struct BrokenRelay;

impl Relay for BrokenRelay {
    fn set(&mut self, _: bool) -> Result<(), RelayFault> {
        Err(RelayFault)
    }
    fn is_on(&self) -> bool {
        false
    }
}

#[test]
fn relay_fault_is_reported_not_uploaded() {
    let mut p = Plug::new(BrokenRelay, SimulatedMeter::new(1), CONFIG, Instant::ZERO);
    let mut api = FakeApi::default();
    p.on_event(&command(1, "relay.set", b"on"), Instant::ZERO, &mut api);
    assert_eq!(api.results[0].1, STATUS_HARDWARE_FAULT);
    assert!(api.uploads.is_empty());
}

fn message(from: Option<Address>, payload: &[u8]) -> Event<64> {
    Event::Deliver {
        msg_id: 1,
        from,
        payload: heapless::Vec::from_slice(payload).unwrap(),
    }
}

const PHONE: Address = Address {
    kind: Kind::Phone,
    id: 9,
};

#[test]
fn a_phone_message_runs_the_command_and_the_phone_gets_the_state() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    let now = Instant::from_millis(3);
    p.on_event(&message(Some(PHONE), b"relay.set on"), now, &mut api);
    assert!(p.relay().is_on());
    assert_eq!(api.sent, [(PHONE, r#"{"relay":"on"}"#.into())]);
    // The change is reported like one made by a back-end command; no command result is sent.
    assert_eq!(api.uploads, [("relay".into(), r#"{"relay":"on"}"#.into())]);
    assert!(api.results.is_empty());
    p.on_event(&message(Some(PHONE), b" relay.toggle\n"), now, &mut api);
    p.on_event(&message(Some(PHONE), b"relay.get"), now, &mut api);
    assert!(!p.relay().is_on());
    assert_eq!(api.sent[1].1, r#"{"relay":"off"}"#);
    assert_eq!(api.sent[2].1, r#"{"relay":"off"}"#);
    assert_eq!(p.stats().commands, 3);
}

#[test]
fn a_bad_phone_message_is_answered_with_an_error_and_changes_nothing() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    let now = Instant::ZERO;
    p.on_event(&message(Some(PHONE), b"relay.set maybe"), now, &mut api);
    p.on_event(&message(Some(PHONE), b"reboot"), now, &mut api);
    p.on_event(&message(Some(PHONE), b"\xff on"), now, &mut api);
    assert!(!p.relay().is_on());
    assert!(api.uploads.is_empty());
    let answers: Vec<&str> = api.sent.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        answers,
        [
            r#"{"error":"expected on or off"}"#,
            r#"{"error":"unknown command"}"#,
            r#"{"error":"command name not UTF-8"}"#
        ]
    );
}

#[test]
fn messages_from_devices_or_the_back_end_are_not_commands() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    let device = Address {
        kind: Kind::Device,
        id: 4,
    };
    p.on_event(
        &message(Some(device), b"relay.set on"),
        Instant::ZERO,
        &mut api,
    );
    p.on_event(&message(None, b"relay.set on"), Instant::ZERO, &mut api);
    assert!(!p.relay().is_on());
    assert!(api.sent.is_empty() && api.uploads.is_empty());
    assert_eq!(p.stats().commands, 0);
}

#[test]
fn an_answer_the_outbox_refuses_is_counted() {
    let (mut p, mut api) = (plug(), FakeApi::default());
    api.outbox_full = true;
    p.on_event(
        &message(Some(PHONE), b"relay.set on"),
        Instant::ZERO,
        &mut api,
    );
    assert!(p.relay().is_on());
    assert_eq!(p.stats().results_dropped, 1);
}
