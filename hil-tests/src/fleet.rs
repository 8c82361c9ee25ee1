//! The fleet scenarios: many boards on the rig's own network namespace (the host TAP boards on a
//! bridge, plus the rig's QEMU board on QEMU's user network inside the same namespace), each
//! board's UDP path through its own impairment relay ([`crate::impair`]), one broker.
//!
//! [`run`] starts the broker and one relay per board, then runs each scenario asked for; every
//! scenario boots the boards it needs with fresh device ids and stops them again, so scenarios
//! do not depend on each other. Pass criteria are in the step functions and in
//! [`crate::catalog`]; each scenario is one JUnit suite, one case per board or step. The
//! scenarios with an app (`phone-to-plug`, `silent-device`) use a [`crate::phone::Phone`] on
//! the broker's app WebSocket. `fleet` (every board at once, a broadcast, a roll-out of a
//! second firmware image to half of them) is in [`broadcast`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use shared_protocol::codes::Code;
use shared_protocol::ids::{Address, IdProfile, Kind as IdKind};

use crate::api::{Api, Upload, from_device};
use crate::broker::TestBroker;
use crate::device::{self, Boot, Device};
use crate::impair::{Profile, Relay};
use crate::junit::Suite;
use crate::netns::Namespace;
use crate::phone::Phone;
use crate::rig::{Kind, Rig, Transport};
use crate::run::{BOARD_LIFETIME_S, Paths, failed_suite, report};
use crate::scenario::{COMMAND_TIMEOUT_MS, Case, Outcome};

mod broadcast;
mod cut_off;

pub use broadcast::{BROADCAST_SETTLE, BROADCAST_WAIT, DeliveryLog, delivery_log};
pub use cut_off::{CUT_OFF_BOARD, CUT_OFF_METER_MS, HOST_TAP_QUEUE, Numbered, numbered_readings};

/// What the fleet scenarios run on.
pub struct Context<'a> {
    /// The rig.
    pub rig: &'a Rig,
    /// Where to read and write.
    pub paths: &'a Paths,
    /// Board logs.
    pub logs: &'a Path,
    /// The rig's namespace (TAP links go up and down in it).
    pub ns: &'a Namespace,
    /// Where the broker's device endpoints and the relays bind.
    pub bind: IpAddr,
    /// Where the broker's HTTP API binds.
    pub api_bind: IpAddr,
    /// The broker (and relays) as the host TAP boards reach them.
    pub advertise: IpAddr,
    /// The broker as the QEMU board reaches it, when the rig has one.
    pub qemu_host: Option<IpAddr>,
}

/// Boot to online, the criterion of `boot-online`.
pub const BOOT_ONLINE_LIMIT: Duration = Duration::from_secs(2);
/// Commands sent by `http-under-loss`.
pub const LOSSY_COMMANDS: usize = 20;
/// Loss on each direction in `http-under-loss` and `uploads-under-trouble`, percent.
pub const LOSS_PCT: f64 = 20.0;
/// Boards uploading in `uploads-under-trouble`.
pub const UPLOAD_BOARDS: u32 = 4;
/// Meter interval in `uploads-under-trouble` (10 readings/s).
pub const UPLOAD_METER_MS: u64 = 100;
/// How long `wrong-key` watches the board.
pub const WRONG_KEY_WATCH: Duration = Duration::from_secs(12);
/// Most login attempts `wrong-key` accepts in [`WRONG_KEY_WATCH`] (full-jitter back-off from
/// 1 s makes about 5; retrying every second would make 12).
pub const WRONG_KEY_MAX_ATTEMPTS: usize = 9;
/// The relay states a phone asks for in `phone-to-plug`, in order.
pub const PHONE_SEQUENCE: [&str; 3] = ["on", "off", "on"];
/// How long `phone-to-plug` waits for each answer (login, `ok`, state event, upload).
pub const PHONE_WAIT: Duration = Duration::from_secs(5);
/// How long `link-flap` keeps the board's TAP link down (under the fleet's 6 s session
/// timeout, so the session may survive it).
pub const LINK_DOWN: Duration = Duration::from_secs(3);
/// The window `silent-device` allows from the network cut to the offline mark: the fleet's
/// session timeout (`session_secs` = 6 s with 2 s heartbeats) plus one heartbeat interval.
pub const OFFLINE_WINDOW: Duration = Duration::from_secs(8);
/// How long `broker-away` keeps the broker out of the board's reach.
pub const AWAY: Duration = Duration::from_secs(30);
/// When in the outage the phone of `broker-away` pushes its messages (after the broker's 6 s
/// session timeout has marked the device offline).
pub const AWAY_PUSH_AT: Duration = Duration::from_secs(10);
/// The relay states the phone pushes in `broker-away` while the broker is away, in order.
pub const AWAY_PUSHES: [&str; 4] = ["on", "off", "on", "off"];
/// Broker heartbeat interval in the fleet (short, so a lost shutdown kick costs seconds).
pub const HEARTBEAT_SECS: u64 = 2;
/// Command timeout asked of the broker under loss (retransmissions back off up to 8 s).
const LOSSY_COMMAND_TIMEOUT_MS: u64 = 30_000;
const POLL: Duration = Duration::from_millis(50);

/// One board slot of the fleet.
struct Slot {
    /// `tap3`, `qemu`.
    label: String,
    kind: Kind,
    /// Host TAP board index (0 for QEMU).
    index: u32,
    relay: Relay,
    /// The relay as this board reaches it.
    relay_addr: SocketAddr,
}

struct Fleet<'a> {
    ctx: &'a Context<'a>,
    broker: TestBroker,
    api: Api,
    slots: Vec<Slot>,
    next_id: u32,
}

/// A booted board.
struct Running {
    slot: usize,
    device_id: u32,
    device: Device,
    /// What it was booted with (a roll-out boots the same device again).
    boot: Boot,
}

/// Runs the fleet scenarios `names` (one suite each).
pub async fn run(ctx: &Context<'_>, names: &[&String]) -> Vec<Suite> {
    let started = Instant::now();
    let data_dir = ctx
        .paths
        .work
        .join("broker")
        .join(format!("{}-fleet", ctx.rig.name));
    let broker = match TestBroker::start_with(
        ctx.bind,
        ctx.api_bind,
        ctx.advertise,
        &data_dir,
        Some(HEARTBEAT_SECS),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            return vec![failed_suite(
                &format!("{}/fleet", ctx.rig.name),
                started,
                e.to_string(),
            )];
        }
    };
    let api = Api::new(broker.api_base(), broker.api_token().to_string());
    let mut slots = Vec::new();
    let boards = ctx.rig.host_tap.as_ref().map_or(0, |h| h.boards);
    let mut wanted: Vec<(String, Kind, u32, IpAddr)> = (0..boards)
        .map(|i| (format!("tap{i}"), Kind::HostTap, i, ctx.advertise))
        .collect();
    if let Some(host) = ctx.qemu_host {
        wanted.push(("qemu".into(), Kind::Qemu, 0, host));
    }
    for (label, kind, index, reach) in wanted {
        match Relay::start(SocketAddr::new(ctx.bind, 0), broker.udp_bound()).await {
            Ok(relay) => {
                let port = relay.local_addr().map(|a| a.port()).unwrap_or(0);
                slots.push(Slot {
                    label,
                    kind,
                    index,
                    relay,
                    relay_addr: SocketAddr::new(reach, port),
                });
            }
            Err(e) => {
                broker.stop().await;
                return vec![failed_suite(
                    &format!("{}/fleet", ctx.rig.name),
                    started,
                    format!("relay for {label}: {e}"),
                )];
            }
        }
    }
    eprintln!(
        "hil[{}]: fleet broker up, API {}, {} board slots with relays, in {} ms",
        ctx.rig.name,
        broker.api_base(),
        slots.len(),
        started.elapsed().as_millis()
    );
    let mut fleet = Fleet {
        ctx,
        broker,
        api,
        slots,
        next_id: ctx.rig.device_id.wrapping_add(10_000),
    };
    let mut suites = Vec::new();
    for name in names {
        let started = Instant::now();
        eprintln!("hil[{}/{name}]: start", ctx.rig.name);
        let (cases, logs) = match name.as_str() {
            "boot-online" => fleet.boot_online().await,
            "http-under-loss" => fleet.http_under_loss().await,
            "uploads-under-trouble" => fleet.uploads_under_trouble().await,
            "nat-rebinding" => fleet.nat_rebinding().await,
            "wrong-key" => fleet.wrong_key().await,
            "phone-to-plug" => fleet.phone_to_plug().await,
            "link-flap" => fleet.link_flap().await,
            "silent-device" => fleet.silent_device().await,
            "broker-away" => fleet.broker_away().await,
            "id-profiles" => fleet.id_profiles().await,
            "cluster-failover" => crate::failover::run(ctx).await,
            "fleet" => fleet.fleet_broadcast().await,
            "cut-off" => fleet.cut_off().await,
            other => (
                vec![failed_case(
                    "set-up",
                    format!("no fleet scenario `{other}`"),
                )],
                String::new(),
            ),
        };
        let suite = Suite {
            name: format!("{}/{name}", ctx.rig.name),
            cases,
            time: started.elapsed(),
            system_out: logs,
        };
        report(&suite);
        suites.push(suite);
    }
    fleet.broker.stop().await;
    suites
}

fn failed_case(name: &str, reason: String) -> Case {
    Case {
        name: name.into(),
        outcome: Outcome::Fail(reason),
        time: Duration::ZERO,
        detail: String::new(),
    }
}

fn case(name: String, started: Instant, result: Result<String, String>) -> Case {
    let (outcome, detail) = match result {
        Ok(d) => (Outcome::Pass, d),
        Err(e) => (Outcome::Fail(e), String::new()),
    };
    eprintln!(
        "hil   {} {name}",
        if outcome == Outcome::Pass {
            "ok  "
        } else {
            "FAIL"
        }
    );
    Case {
        name,
        outcome,
        time: started.elapsed(),
        detail,
    }
}

/// The value at `p` (`[q0.5, q0.95]`) of sorted `ms`.
pub fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The `relay` field of a plug's JSON report (`{"relay":"on"}` -> `on`).
pub fn relay_state(report: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(report).ok()?;
    v.get("relay")?.as_str().map(str::to_string)
}

/// The last 30 lines of a board's log under a `--- label (device id) ---` heading.
fn log_tail(label: &str, id: u32, log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = format!("--- {label} (device {id}) ---\n");
    for l in &lines[lines.len().saturating_sub(30)..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

impl Fleet<'_> {
    fn boot(&mut self, slot: usize, meter_ms: u64, scenario: &str) -> Result<Running, String> {
        self.boot_with_key(slot, meter_ms, scenario, false)
    }

    /// [`Fleet::boot`]; with `wrong_key` the record holds the key of another device id.
    fn boot_with_key(
        &mut self,
        slot: usize,
        meter_ms: u64,
        scenario: &str,
        wrong_key: bool,
    ) -> Result<Running, String> {
        let s = &self.slots[slot];
        let device_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let key_id = if wrong_key {
            device_id ^ 0x00ff_0000
        } else {
            device_id
        };
        let boot = Boot {
            device_id,
            key: self.broker.device_key(key_id),
            transport: Transport::Udp,
            udp: s.relay_addr,
            ws: SocketAddr::new(s.relay_addr.ip(), self.broker.ws().port()),
            lookup: None,
            meter_ms,
            boot_number: device_id,
            record_seed: ::broker::provisioning::fresh_seed(&mut rand::rng()),
            exit_after_s: self.ctx.rig.login_timeout_s
                + BOARD_LIFETIME_S
                + self.ctx.rig.upload_run_s
                + self.ctx.rig.cut_off_s,
            board: s.index,
            flash: None,
        };
        let device = self.start_boot(slot, &boot, scenario, None)?;
        Ok(Running {
            slot,
            device_id,
            device,
            boot,
        })
    }

    /// Starts the board of `slot` with `boot` (on the rig's image, or on host TAP image
    /// `binary`); its logs are `<rig>-<scenario>-<label>.*`.
    fn start_boot(
        &self,
        slot: usize,
        boot: &Boot,
        scenario: &str,
        binary: Option<&str>,
    ) -> Result<Device, String> {
        let s = &self.slots[slot];
        let name = format!("{}-{scenario}-{}", self.ctx.rig.name, s.label);
        Ok(device::start_image(
            s.kind,
            self.ctx.rig,
            &self.ctx.paths.root,
            boot,
            self.ctx.logs,
            &name,
            binary,
        )
        .map_err(|e| format!("starting {}: {e}", s.label))?
        .watched(&self.ctx.paths.teardown))
    }

    /// Stops boards; their logs (tail) for the suite's output.
    fn stop_all(&self, boards: Vec<Running>) -> String {
        let mut out = String::new();
        for b in boards {
            let label = &self.slots[b.slot].label;
            let log = b.device.stop();
            out.push_str(&log_tail(label, b.device_id, &log));
        }
        out
    }

    /// A phone bound to device `id`, logged in on the app WebSocket; its id with it (phones
    /// and devices are different kinds, so the phone takes the device's number).
    async fn bound_phone(&self, id: u32) -> Result<(u32, Phone), String> {
        let phone_id = id;
        self.api
            .bind(phone_id, id)
            .await
            .map_err(|e| e.to_string())?;
        let phone = Phone::login(
            &self.broker.app_ws_url(),
            &self.broker.phone_token(phone_id),
            PHONE_WAIT,
        )
        .await
        .map_err(|e| format!("phone {phone_id}: {e}"))?;
        Ok((phone_id, phone))
    }

    /// The slot of host TAP board `index`, else of the first host TAP board.
    fn host_tap_slot(&self, index: u32) -> Result<usize, Case> {
        self.slots
            .iter()
            .position(|s| s.kind == Kind::HostTap && s.index == index)
            .or_else(|| self.slots.iter().position(|s| s.kind == Kind::HostTap))
            .ok_or_else(|| failed_case("set-up", "no host TAP board".into()))
    }

    /// The board's `status` command answer (its counters, docs/firmware.md).
    async fn board_status(&self, id: u32) -> Result<Value, String> {
        let reply = self
            .api
            .command(id, "status", "", LOSSY_COMMAND_TIMEOUT_MS)
            .await
            .map_err(|e| format!("status command: {e}"))?;
        serde_json::from_slice(&reply.payload).map_err(|e| format!("status payload: {e}"))
    }

    /// Waits until `id` has a UDP session; returns when (or why not).
    async fn online(&self, id: u32, limit: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + limit;
        loop {
            match self.api.device_status(id).await {
                Ok(s) if s.sessions.iter().any(|s| s.transport == "udp") => {
                    return Ok(Instant::now());
                }
                Ok(_) => {}
                Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "device {id} not online within {} s",
                    limit.as_secs_f32()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// When each of `ids` got a UDP session: all are polled every round, so each board's time
    /// is its own (within one round of polls).
    async fn online_all(&self, ids: &[u32], limit: Duration) -> Vec<Result<Instant, String>> {
        let deadline = Instant::now() + limit;
        let mut results: Vec<Option<Result<Instant, String>>> = vec![None; ids.len()];
        while results.iter().any(Option::is_none) {
            for (id, slot) in ids.iter().zip(results.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                if let Ok(s) = self.api.device_status(*id).await
                    && s.sessions.iter().any(|s| s.transport == "udp")
                {
                    *slot = Some(Ok(Instant::now()));
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        results
            .into_iter()
            .zip(ids)
            .map(|(r, id)| {
                r.unwrap_or_else(|| {
                    Err(format!(
                        "device {id} not online within {} s",
                        limit.as_secs()
                    ))
                })
            })
            .collect()
    }

    /// Sets host TAP board `index`'s TAP link up or down (down: the board's writes fail).
    fn set_link(&self, index: u32, up: bool) -> Result<(), crate::netns::NetError> {
        let Some(h) = self.ctx.rig.host_tap.as_ref() else {
            return Ok(());
        };
        self.ctx.ns.set_link(&h.tap(index), up)
    }

    /// Plugs host TAP board `index`'s TAP into the rig's bridge or unplugs it.
    fn plug(&self, index: u32, plugged: bool) -> Result<(), crate::netns::NetError> {
        let Some(h) = self.ctx.rig.host_tap.as_ref() else {
            return Ok(());
        };
        self.ctx.ns.plug(&h.tap(index), &h.bridge, plugged)
    }

    /// `boot-online`: every host TAP board boots with its TAP link down (every write fails
    /// with EIO, which the board rides out with back-off, `boards/host-tap/src/tap.rs`); the
    /// links are set up together and each board must be online within [`BOOT_ONLINE_LIMIT`]
    /// of its link coming up; the QEMU board within the limit of QEMU starting.
    async fn boot_online(&mut self) -> (Vec<Case>, String) {
        let mut cases = Vec::new();
        let mut boards = Vec::new();
        for slot in 0..self.slots.len() {
            let s = &self.slots[slot];
            if s.kind == Kind::HostTap
                && let Err(e) = self.set_link(s.index, false)
            {
                cases.push(failed_case("set-up", e.to_string()));
                return (cases, String::new());
            }
        }
        for slot in 0..self.slots.len() {
            if self.slots[slot].kind == Kind::Qemu {
                continue;
            }
            match self.boot(slot, self.ctx.rig.meter_ms, "boot-online") {
                Ok(b) => boards.push(b),
                Err(e) => cases.push(failed_case("set-up", e)),
            }
        }
        // Let the processes open their TAPs (and fail their first writes) before the network
        // comes up.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut up_at = Vec::new();
        for b in &boards {
            if let Err(e) = self.set_link(self.slots[b.slot].index, true) {
                cases.push(failed_case("set-up", e.to_string()));
            }
            up_at.push(Instant::now());
        }
        if let Some(slot) = self.slots.iter().position(|s| s.kind == Kind::Qemu) {
            match self.boot(slot, self.ctx.rig.meter_ms, "boot-online") {
                Ok(b) => {
                    up_at.push(b.device.started());
                    boards.push(b);
                }
                Err(e) => cases.push(failed_case("set-up", e)),
            }
        }
        let limit = Duration::from_secs(self.ctx.rig.login_timeout_s);
        let ids: Vec<u32> = boards.iter().map(|b| b.device_id).collect();
        let results = self.online_all(&ids, limit).await;
        let mut all = Vec::new();
        for ((b, result), t0) in boards.iter().zip(results).zip(up_at) {
            let label = &self.slots[b.slot].label;
            let what = if self.slots[b.slot].kind == Kind::Qemu {
                "QEMU start"
            } else {
                "link up"
            };
            let r = result.and_then(|at| {
                let took = at.duration_since(t0);
                all.push(took);
                if took <= BOOT_ONLINE_LIMIT {
                    Ok(format!(
                        "device {} online {} ms after {what}",
                        b.device_id,
                        took.as_millis()
                    ))
                } else {
                    Err(format!(
                        "device {} online {} ms after {what}, over the {} ms limit",
                        b.device_id,
                        took.as_millis(),
                        BOOT_ONLINE_LIMIT.as_millis()
                    ))
                }
            });
            cases.push(case(format!("{label} online within 2 s"), t0, r));
        }
        all.sort();
        eprintln!(
            "hil[{}/boot-online]: {} boards, slowest {} ms",
            self.ctx.rig.name,
            all.len(),
            all.last().map_or(0, |d| d.as_millis())
        );
        let logs = self.stop_all(boards);
        (cases, logs)
    }

    /// `http-under-loss`: on one host TAP board (and the QEMU board if the rig has one),
    /// [`LOSS_PCT`] loss each way; [`LOSSY_COMMANDS`] relay commands through the API must each
    /// return the device's result with the relay in the state asked for.
    async fn http_under_loss(&mut self) -> (Vec<Case>, String) {
        let mut cases = Vec::new();
        let mut logs = String::new();
        let targets: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| (s.kind == Kind::HostTap && s.index == 0) || s.kind == Kind::Qemu)
            .map(|(i, _)| i)
            .collect();
        for slot in targets {
            let started = Instant::now();
            let label = self.slots[slot].label.clone();
            let board = match self.boot(slot, 0, "http-under-loss") {
                Ok(b) => b,
                Err(e) => {
                    cases.push(failed_case(&format!("{label} set-up"), e));
                    continue;
                }
            };
            let limit = Duration::from_secs(self.ctx.rig.login_timeout_s);
            let online = self
                .online(board.device_id, limit)
                .await
                .map(|_| String::new());
            if let Err(e) = online {
                cases.push(case(format!("{label} online"), started, Err(e)));
                logs.push_str(&self.stop_all(vec![board]));
                continue;
            }
            let relay = &self.slots[slot].relay;
            relay.set_profile(Profile::loss(LOSS_PCT));
            let counts = || {
                format!(
                    "relay to broker: {}; to board: {}",
                    relay.to_broker().summary(),
                    relay.to_board().summary()
                )
            };
            let result = match self.lossy_commands(board.device_id).await {
                Ok(d) => Ok(format!("{d}; {}", counts())),
                Err(e) => Err(format!(
                    "{e}; {}; the relay's latest datagrams:\n{}",
                    counts(),
                    relay.trace()
                )),
            };
            relay.set_profile(Profile::default());
            cases.push(case(
                format!("{label}: {LOSSY_COMMANDS} commands at {LOSS_PCT}% loss"),
                started,
                result,
            ));
            logs.push_str(&self.stop_all(vec![board]));
        }
        (cases, logs)
    }

    /// `nat-rebinding`: a board uploading every 200 ms answers commands; its relay then sends
    /// from a new source port (a NAT whose mapping was flushed). The session must go on: the
    /// broker shows it at the new address, commands keep answering, the board logged in once
    /// and never reconnected, and its uploads are in the spool gap-free and in order.
    async fn nat_rebinding(&mut self) -> (Vec<Case>, String) {
        let started = Instant::now();
        let slot = match self.host_tap_slot(1) {
            Ok(slot) => slot,
            Err(e) => return (vec![e], String::new()),
        };
        let label = self.slots[slot].label.clone();
        let cursor = match self.api.uploads(0, 1).await {
            Ok(p) => p.head,
            Err(e) => return (vec![failed_case("set-up", e.to_string())], String::new()),
        };
        let board = match self.boot(slot, 200, "nat-rebinding") {
            Ok(b) => b,
            Err(e) => return (vec![failed_case("set-up", e)], String::new()),
        };
        let result = self.rebinding_steps(slot, board.device_id, cursor).await;
        let logs = self.stop_all(vec![board]);
        (
            vec![case(
                format!("{label}: session survives a NAT rebinding"),
                started,
                result,
            )],
            logs,
        )
    }

    async fn rebinding_steps(&self, slot: usize, id: u32, cursor: u64) -> Result<String, String> {
        let limit = Duration::from_secs(self.ctx.rig.login_timeout_s);
        self.online(id, limit).await?;
        let peer = |status: crate::api::TerminalStatus| {
            status
                .sessions
                .iter()
                .find(|s| s.transport == "udp")
                .map(|s| s.peer.clone())
        };
        let before = peer(
            self.api
                .device_status(id)
                .await
                .map_err(|e| e.to_string())?,
        )
        .ok_or("no UDP session before the rebinding")?;
        for want in ["on", "off"] {
            self.expect_relay(id, want).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.slots[slot]
            .relay
            .rebind()
            .await
            .map_err(|e| format!("rebinding the relay: {e}"))?;
        for want in ["on", "off", "on", "off", "on"] {
            self.expect_relay(id, want).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = peer(
            self.api
                .device_status(id)
                .await
                .map_err(|e| e.to_string())?,
        )
        .ok_or("no UDP session after the rebinding")?;
        if after == before {
            return Err(format!("the broker still shows the session at {before}"));
        }
        let status = self.board_status(id).await?;
        let logins = status.get("logins").and_then(Value::as_u64);
        let reconnects = status.get("reconnects").and_then(Value::as_u64);
        if logins != Some(1) || reconnects != Some(0) {
            return Err(format!(
                "the board logged in again: logins {logins:?}, reconnects {reconnects:?} (status {status})"
            ));
        }
        let uploads = self.all_uploads(cursor, id).await?;
        check_order(&uploads)?;
        Ok(format!(
            "session moved from {before} to {after}; 7 commands answered; 1 login, 0 reconnects; {} uploads gap-free in order",
            uploads.len()
        ))
    }

    /// `wrong-key`: a board provisioned with a key that is not its own (the fleet key's key
    /// for another id). For [`WRONG_KEY_WATCH`]: no session of its id appears; then its log must
    /// report the refusal with `AUTH_FAILED` (17), and show at most [`WRONG_KEY_MAX_ATTEMPTS`]
    /// login attempts (it backs off or gives up instead of hammering the broker).
    async fn wrong_key(&mut self) -> (Vec<Case>, String) {
        let started = Instant::now();
        let slot = match self.host_tap_slot(2) {
            Ok(slot) => slot,
            Err(e) => return (vec![e], String::new()),
        };
        let label = self.slots[slot].label.clone();
        let board = match self.boot_with_key(slot, 0, "wrong-key", true) {
            Ok(b) => b,
            Err(e) => return (vec![failed_case("set-up", e)], String::new()),
        };
        let id = board.device_id;
        let deadline = Instant::now() + WRONG_KEY_WATCH;
        let mut session = None;
        while Instant::now() < deadline && session.is_none() {
            if let Ok(s) = self.api.device_status(id).await
                && !s.sessions.is_empty()
            {
                session = Some(format!("{:?}", s.sessions));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = board.device.stop();
        let attempts = log.matches("login: attempt").count();
        let refused = log.contains("login rejected: code 17");
        let result = match (session, refused) {
            (Some(s), _) => Err(format!("device {id} got a session with a wrong key: {s}")),
            (None, false) => Err(format!(
                "the board's log does not report `login rejected: code 17` (AUTH_FAILED) within {} s",
                WRONG_KEY_WATCH.as_secs()
            )),
            (None, true) if attempts > WRONG_KEY_MAX_ATTEMPTS => Err(format!(
                "{attempts} login attempts in {} s: no back-off",
                WRONG_KEY_WATCH.as_secs()
            )),
            (None, true) => Ok(format!(
                "no session in {} s; refused with AUTH_FAILED (17); {attempts} login attempts",
                WRONG_KEY_WATCH.as_secs()
            )),
        };
        (
            vec![case(
                format!("{label}: a wrong key is refused"),
                started,
                result,
            )],
            log_tail(&label, id, &log),
        )
    }

    /// `phone-to-plug`: on tap3's board and the QEMU board, a phone bound to the device (app
    /// WebSocket, JSON) sends `relay.set on`, `off`, `on`; after each the phone must receive
    /// the device's state event (a message from that device with the state asked for) within
    /// [`PHONE_WAIT`], and the device's `relay` uploads must end with the same three states.
    async fn phone_to_plug(&mut self) -> (Vec<Case>, String) {
        let mut cases = Vec::new();
        let mut logs = String::new();
        let mut targets = Vec::new();
        match self.host_tap_slot(3) {
            Ok(slot) => targets.push(slot),
            Err(e) => cases.push(e),
        }
        targets.extend(self.slots.iter().position(|s| s.kind == Kind::Qemu));
        for slot in targets {
            let started = Instant::now();
            let label = self.slots[slot].label.clone();
            let cursor = match self.api.uploads(0, 1).await {
                Ok(p) => p.head,
                Err(e) => {
                    cases.push(failed_case(&format!("{label} set-up"), e.to_string()));
                    continue;
                }
            };
            let board = match self.boot(slot, 0, "phone-to-plug") {
                Ok(b) => b,
                Err(e) => {
                    cases.push(failed_case(&format!("{label} set-up"), e));
                    continue;
                }
            };
            let result = self.phone_steps(board.device_id, cursor).await;
            cases.push(case(
                format!("{label}: a phone switches the relay and gets the state"),
                started,
                result,
            ));
            logs.push_str(&self.stop_all(vec![board]));
        }
        (cases, logs)
    }

    async fn phone_steps(&self, id: u32, cursor: u64) -> Result<String, String> {
        self.online(id, Duration::from_secs(self.ctx.rig.login_timeout_s))
            .await?;
        let (phone_id, mut phone) = self.bound_phone(id).await?;
        let device = Address {
            kind: IdKind::Device,
            id,
        };
        let mut took = Vec::new();
        for want in PHONE_SEQUENCE {
            let sent = Instant::now();
            let command = format!("relay.set {want}");
            phone
                .send(device, command.as_bytes(), PHONE_WAIT)
                .await
                .map_err(|e| format!("`{command}`: {e}"))?;
            let event = phone
                .next_delivery(PHONE_WAIT)
                .await
                .map_err(|e| format!("state event after `{command}`: {e}"))?;
            let state = relay_state(&event.payload);
            if event.from != Some(device) || state.as_deref() != Some(want) {
                return Err(format!(
                    "after `{command}` the phone got {} from {:?}, expected {{\"relay\":\"{want}\"}} from device {id}",
                    String::from_utf8_lossy(&event.payload),
                    event.from
                ));
            }
            took.push(sent.elapsed().as_millis());
        }
        phone.close().await;
        let reports = self
            .relay_reports_end_with(id, cursor, &PHONE_SEQUENCE)
            .await?;
        Ok(format!(
            "phone {phone_id} got each state event {took:?} ms after its command; the device's relay uploads: {reports:?}"
        ))
    }

    /// Waits up to [`PHONE_WAIT`] for device `id`'s `relay` uploads after `cursor` to end with
    /// `sequence`; returns them all.
    async fn relay_reports_end_with(
        &self,
        id: u32,
        cursor: u64,
        sequence: &[&str],
    ) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + PHONE_WAIT;
        loop {
            let states: Vec<String> = self
                .all_uploads(cursor, id)
                .await?
                .iter()
                .filter(|u| u.topic == "relay")
                .filter_map(|u| relay_state(&u.payload))
                .collect();
            if states.ends_with(&sequence.iter().map(|s| s.to_string()).collect::<Vec<_>>()) {
                return Ok(states);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the device's relay uploads are {states:?}, expected them to end with {sequence:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `link-flap`: tap4's board, uploading every 200 ms, answers a command; its TAP link is
    /// set down for [`LINK_DOWN`] (every write of the board then fails with EIO) and up again.
    /// The board must still be running, answer 3 commands afterwards, and its log must show
    /// the outage counted and ended (`link back after N failed attempts`, N >= 1).
    async fn link_flap(&mut self) -> (Vec<Case>, String) {
        let started = Instant::now();
        let slot = match self.host_tap_slot(4) {
            Ok(slot) => slot,
            Err(e) => return (vec![e], String::new()),
        };
        let label = self.slots[slot].label.clone();
        let mut board = match self.boot(slot, 200, "link-flap") {
            Ok(b) => b,
            Err(e) => return (vec![failed_case("set-up", e)], String::new()),
        };
        let result = self.flap_steps(slot, &mut board).await;
        let id = board.device_id;
        let log = board.device.stop();
        let result = result.and_then(|detail| {
            let counted = log
                .lines()
                .filter_map(|l| l.split("link back after ").nth(1))
                .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
                .collect::<Vec<_>>();
            match counted.iter().max() {
                Some(n) if *n >= 1 => Ok(format!(
                    "{detail}; the board's log: link back after {counted:?} failed attempts"
                )),
                _ => Err(format!(
                    "{detail}; but the board's log has no `link back after N failed attempts` line (the outage was not seen or not counted)"
                )),
            }
        });
        (
            vec![case(
                format!("{label}: the board rides out its link going down"),
                started,
                result,
            )],
            log_tail(&label, id, &log),
        )
    }

    async fn flap_steps(&self, slot: usize, board: &mut Running) -> Result<String, String> {
        let id = board.device_id;
        self.online(id, Duration::from_secs(self.ctx.rig.login_timeout_s))
            .await?;
        self.expect_relay(id, "on").await?;
        let tap = self
            .ctx
            .rig
            .host_tap
            .as_ref()
            .map(|h| h.tap(self.slots[slot].index))
            .ok_or("no [host_tap] table")?;
        self.ctx
            .ns
            .set_link(&tap, false)
            .map_err(|e| format!("link down: {e}"))?;
        tokio::time::sleep(LINK_DOWN).await;
        self.ctx
            .ns
            .set_link(&tap, true)
            .map_err(|e| format!("link up: {e}"))?;
        let up = Instant::now();
        if let Some(status) = board.device.exited() {
            return Err(format!("the board ended while its link was down: {status}"));
        }
        for want in ["off", "on", "off"] {
            self.expect_relay(id, want).await?;
        }
        let answered = up.elapsed();
        if let Some(status) = board.device.exited() {
            return Err(format!("the board ended after the flap: {status}"));
        }
        let status = self.board_status(id).await?;
        Ok(format!(
            "link down {} s; 3 commands answered {} ms after the link came back; board logins {}, reconnects {}",
            LINK_DOWN.as_secs(),
            answered.as_millis(),
            status.get("logins").unwrap_or(&Value::Null),
            status.get("reconnects").unwrap_or(&Value::Null)
        ))
    }

    /// `silent-device`: tap5's board is online with a bound phone logged in; its TAP is
    /// unplugged from the bridge (the network is cut, the board keeps running). Within
    /// [`OFFLINE_WINDOW`] the API must show no session of the device and the phone must get
    /// the presence event saying the device is offline.
    async fn silent_device(&mut self) -> (Vec<Case>, String) {
        let started = Instant::now();
        let slot = match self.host_tap_slot(5) {
            Ok(slot) => slot,
            Err(e) => return (vec![e], String::new()),
        };
        let label = self.slots[slot].label.clone();
        let board = match self.boot(slot, 0, "silent-device") {
            Ok(b) => b,
            Err(e) => return (vec![failed_case("set-up", e)], String::new()),
        };
        let index = self.slots[slot].index;
        let result = self.silent_steps(index, board.device_id).await;
        if let Err(e) = self.plug(index, true) {
            eprintln!("hil: plugging {label} back in: {e}");
        }
        let logs = self.stop_all(vec![board]);
        (
            vec![case(
                format!("{label}: a silent device is marked offline and its phone told"),
                started,
                result,
            )],
            logs,
        )
    }

    async fn silent_steps(&self, index: u32, id: u32) -> Result<String, String> {
        self.online(id, Duration::from_secs(self.ctx.rig.login_timeout_s))
            .await?;
        let (phone_id, mut phone) = self.bound_phone(id).await?;
        self.plug(index, false)
            .map_err(|e| format!("cutting the network: {e}"))?;
        let cut = Instant::now();
        let device = Address {
            kind: IdKind::Device,
            id,
        };
        let told = phone
            .presence_of(device, false, OFFLINE_WINDOW)
            .await
            .map_err(|e| format!("phone {phone_id}: offline event: {e}"))?;
        let told_after = cut.elapsed();
        phone.close().await;
        let status = self
            .api
            .device_status(id)
            .await
            .map_err(|e| e.to_string())?;
        let offline_after = cut.elapsed();
        if !status.sessions.is_empty() {
            return Err(format!(
                "the phone was told {} ms after the cut, but the API still lists {:?}",
                told_after.as_millis(),
                status.sessions
            ));
        }
        Ok(format!(
            "offline event {:?} at the phone {} ms after the cut (window {} ms); no session in the API at {} ms",
            told,
            told_after.as_millis(),
            OFFLINE_WINDOW.as_millis(),
            offline_after.as_millis()
        ))
    }

    /// `broker-away`: tap6's board is online with a bound phone logged in; for [`AWAY`] the
    /// broker is out of the board's reach (its relay drops every datagram both ways; the
    /// broker itself keeps running, so its API and the phone stay up). [`AWAY_PUSH_AT`] into
    /// the outage the phone pushes [`AWAY_PUSHES`] (`relay.set` messages, each answered `ok`:
    /// stored for the offline device). After the outage the board must log in again, the
    /// phone must receive the device's answers in push order and the device's `relay` uploads
    /// must end with the same states; the board's log must show every reconnect delay within
    /// its backoff ceiling, with jitter ([`crate::backoff_log`]).
    async fn broker_away(&mut self) -> (Vec<Case>, String) {
        let started = Instant::now();
        let slot = match self.host_tap_slot(6) {
            Ok(slot) => slot,
            Err(e) => return (vec![e], String::new()),
        };
        let label = self.slots[slot].label.clone();
        let cursor = match self.api.uploads(0, 1).await {
            Ok(p) => p.head,
            Err(e) => return (vec![failed_case("set-up", e.to_string())], String::new()),
        };
        let board = match self.boot(slot, 0, "broker-away") {
            Ok(b) => b,
            Err(e) => return (vec![failed_case("set-up", e)], String::new()),
        };
        let id = board.device_id;
        let pushed = self.away_steps(slot, id, cursor).await;
        self.slots[slot].relay.set_profile(Profile::default());
        let log = board.device.stop();
        let delivered = case(
            format!("{label}: pushes made while the broker was away arrive after, in order"),
            started,
            pushed,
        );
        let delays = crate::backoff_log::reconnect_delays(&log);
        let backoff = case(
            format!("{label}: reconnect delays follow the backoff with jitter"),
            started,
            crate::backoff_log::check_backoff(&delays, crate::backoff_log::SDK_DEFAULT),
        );
        (vec![delivered, backoff], log_tail(&label, id, &log))
    }

    async fn away_steps(&self, slot: usize, id: u32, cursor: u64) -> Result<String, String> {
        let limit = Duration::from_secs(self.ctx.rig.login_timeout_s);
        self.online(id, limit).await?;
        let (phone_id, mut phone) = self.bound_phone(id).await?;
        let device = Address {
            kind: IdKind::Device,
            id,
        };
        let relay = &self.slots[slot].relay;
        relay.set_profile(Profile::loss(100.0));
        let away_from = Instant::now();
        phone
            .idle(AWAY_PUSH_AT)
            .await
            .map_err(|e| format!("phone {phone_id} while the broker is away: {e}"))?;
        for want in AWAY_PUSHES {
            let command = format!("relay.set {want}");
            phone
                .send(device, command.as_bytes(), PHONE_WAIT)
                .await
                .map_err(|e| format!("pushing `{command}` while the broker is away: {e}"))?;
        }
        phone
            .idle(AWAY.saturating_sub(away_from.elapsed()))
            .await
            .map_err(|e| format!("phone {phone_id} while the broker is away: {e}"))?;
        relay.set_profile(Profile::default());
        let back = Instant::now();
        let online = self.online(id, limit).await?;
        // The pushes arrived, each once and in order, when the device's relay uploads end
        // with the states pushed (the plug reports every change).
        let reports = self
            .relay_reports_end_with(id, cursor, &AWAY_PUSHES)
            .await?;
        let arrived = back.elapsed();
        // The device answers each push to the phone; those answers that reach it must be in
        // push order (the plug holds OUTBOX results at once, so a burst may lose some).
        let mut answers = Vec::new();
        while answers.len() < AWAY_PUSHES.len() {
            let Ok(event) = phone.next_delivery(PHONE_WAIT).await else {
                break;
            };
            answers.push(relay_state(&event.payload).unwrap_or_default());
        }
        phone.close().await;
        let mut pushed = AWAY_PUSHES.iter();
        if !answers.iter().all(|a| pushed.any(|p| p == a)) {
            return Err(format!(
                "the phone's answers {answers:?} are not in push order {AWAY_PUSHES:?}"
            ));
        }
        let status = self.board_status(id).await?;
        Ok(format!(
            "away {} ms; online again {} ms after the outage ended; the pushes' relay states in the uploads {} ms after it: {reports:?}; phone {phone_id} got {} of {} answers {answers:?}; board reconnects {}; relay to board: {}",
            AWAY.as_millis(),
            online.duration_since(back).as_millis(),
            arrived.as_millis(),
            answers.len(),
            AWAY_PUSHES.len(),
            status.get("reconnects").unwrap_or(&Value::Null),
            relay.to_board().summary()
        ))
    }

    /// `id-profiles`, on phones only (the ID profile decides how logins of one terminal id
    /// coexist; boards play no part). Plug profile (the fleet broker): a phone logs in, a
    /// second login with the same id kicks the first with reason `REPLACED` within
    /// [`PHONE_WAIT`], and a push to that id reaches the second. Signed profile (a second
    /// broker with `[identity] profile = "signed"`, started and stopped here): two phones log
    /// in with one negative id; a push to that id reaches both, and neither is kicked.
    async fn id_profiles(&mut self) -> (Vec<Case>, String) {
        let started = Instant::now();
        let plug_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let plug = self
            .second_login_kicks(&self.broker, &self.api, plug_id)
            .await;
        let mut cases = vec![case(
            "plug profile: a second login kicks the first with its reason".into(),
            started,
            plug,
        )];
        let started = Instant::now();
        let signed_id = (-i64::from(self.next_id)) as u32;
        self.next_id = self.next_id.wrapping_add(1);
        let data_dir = self
            .ctx
            .paths
            .work
            .join("broker")
            .join(format!("{}-signed", self.ctx.rig.name));
        let signed = match TestBroker::start_with_profile(
            self.ctx.bind,
            self.ctx.api_bind,
            self.ctx.advertise,
            &data_dir,
            Some(HEARTBEAT_SECS),
            IdProfile::Signed,
        )
        .await
        {
            Ok(broker) => {
                let api = Api::new(broker.api_base(), broker.api_token().to_string());
                let result = two_logins_both_receive(&broker, &api, signed_id).await;
                broker.stop().await;
                result
            }
            Err(e) => Err(format!("signed-profile broker: {e}")),
        };
        cases.push(case(
            "signed profile: two phones with one id both receive events".into(),
            started,
            signed,
        ));
        (cases, String::new())
    }

    async fn second_login_kicks(
        &self,
        broker: &TestBroker,
        api: &Api,
        id: u32,
    ) -> Result<String, String> {
        let token = broker.phone_token(id);
        let url = broker.app_ws_url();
        let mut first = Phone::login(&url, &token, PHONE_WAIT)
            .await
            .map_err(|e| format!("first login of phone {id}: {e}"))?;
        let mut second = Phone::login(&url, &token, PHONE_WAIT)
            .await
            .map_err(|e| format!("second login of phone {id}: {e}"))?;
        let reason = first
            .kicked(PHONE_WAIT)
            .await
            .map_err(|e| format!("the first phone {id} was not kicked: {e}"))?;
        if reason != Code::REPLACED {
            return Err(format!(
                "the first phone was kicked with code {}, expected REPLACED ({})",
                reason.0,
                Code::REPLACED.0
            ));
        }
        api.push_text("phone", id, "after the second login")
            .await
            .map_err(|e| e.to_string())?;
        let got = second
            .next_delivery(PHONE_WAIT)
            .await
            .map_err(|e| format!("push to the second phone: {e}"))?;
        second.close().await;
        Ok(format!(
            "phone {id}: first session kicked with code {} (REPLACED); the second received {:?}",
            reason.0,
            String::from_utf8_lossy(&got.payload)
        ))
    }

    async fn expect_relay(&self, id: u32, want: &str) -> Result<(), String> {
        let reply = self
            .api
            .command(id, "relay.set", want, COMMAND_TIMEOUT_MS)
            .await
            .map_err(|e| format!("relay.set {want}: {e}"))?;
        if reply.status != 0 || relay_state(&reply.payload).as_deref() != Some(want) {
            return Err(format!(
                "relay.set {want}: status {}, payload {}",
                reply.status,
                String::from_utf8_lossy(&reply.payload)
            ));
        }
        Ok(())
    }

    async fn lossy_commands(&self, id: u32) -> Result<String, String> {
        let mut took = Vec::new();
        for i in 0..LOSSY_COMMANDS {
            let want = if i % 2 == 0 { "on" } else { "off" };
            let started = Instant::now();
            let reply = self
                .api
                .command(id, "relay.set", want, LOSSY_COMMAND_TIMEOUT_MS)
                .await
                .map_err(|e| format!("command {} of {LOSSY_COMMANDS}: {e}", i + 1))?;
            took.push(started.elapsed().as_millis());
            let shown = String::from_utf8_lossy(&reply.payload).into_owned();
            if reply.status != 0 || relay_state(&reply.payload).as_deref() != Some(want) {
                return Err(format!(
                    "command {} (relay.set {want}): status {}, payload {shown}",
                    i + 1,
                    reply.status
                ));
            }
        }
        took.sort();
        Ok(format!(
            "{LOSSY_COMMANDS} of {LOSSY_COMMANDS} answered; round trip p50 {} ms, p95 {} ms, max {} ms",
            percentile(&took, 0.5),
            percentile(&took, 0.95),
            took.last().copied().unwrap_or(0)
        ))
    }

    /// `uploads-under-trouble`: [`UPLOAD_BOARDS`] boards read their meter every
    /// [`UPLOAD_METER_MS`] for `upload_run_s` seconds over paths with loss, delay, jitter and
    /// reordering, and the broker restarts halfway. Then, per board: the board skipped and had
    /// refused no upload (its `status` counters), and the spool holds each of its uploads once
    /// (one dedup key each), their upload ids gap-free and in spool order, at least as many as
    /// the board saw acknowledged, and at least 80% of the readings the run should produce.
    async fn uploads_under_trouble(&mut self) -> (Vec<Case>, String) {
        let mut cases = Vec::new();
        let cursor = match self.api.uploads(0, 1).await {
            Ok(p) => p.head,
            Err(e) => return (vec![failed_case("set-up", e.to_string())], String::new()),
        };
        let slots: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == Kind::HostTap)
            .map(|(i, _)| i)
            .take(UPLOAD_BOARDS as usize)
            .collect();
        let mut boards = Vec::new();
        for slot in slots {
            match self.boot(slot, UPLOAD_METER_MS, "uploads") {
                Ok(b) => boards.push(b),
                Err(e) => cases.push(failed_case("set-up", e)),
            }
        }
        let limit = Duration::from_secs(self.ctx.rig.login_timeout_s);
        for b in &boards {
            if let Err(e) = self.online(b.device_id, limit).await {
                cases.push(failed_case("online", e));
                let logs = self.stop_all(boards);
                return (cases, logs);
            }
        }
        let trouble = Profile {
            loss_pct: LOSS_PCT,
            delay_ms: 20,
            jitter_ms: 15,
            reorder_pct: 25.0,
            duplicate_pct: 0.0,
        };
        for b in &boards {
            self.slots[b.slot].relay.set_profile(trouble);
        }
        let run = Duration::from_secs(self.ctx.rig.upload_run_s);
        let run_started = Instant::now();
        tokio::time::sleep(run / 2).await;
        let restart = match self.broker.restart().await {
            Ok(away) => format!("broker restarted (away {} ms)", away.as_millis()),
            Err(e) => {
                cases.push(failed_case("broker restart", e.to_string()));
                let logs = self.stop_all(boards);
                return (cases, logs);
            }
        };
        eprintln!(
            "hil[{}/uploads-under-trouble]: {restart}",
            self.ctx.rig.name
        );
        tokio::time::sleep(run.saturating_sub(run_started.elapsed())).await;
        for b in &boards {
            self.slots[b.slot].relay.set_profile(Profile::default());
        }
        let expected = (run.as_millis() / u128::from(UPLOAD_METER_MS)) as usize;
        for b in &boards {
            let started = Instant::now();
            let label = self.slots[b.slot].label.clone();
            let result = self
                .check_uploads(b.device_id, cursor, expected, limit)
                .await;
            let relay = &self.slots[b.slot].relay;
            let result = result.map(|d| {
                format!(
                    "{d}; {restart}; relay to broker: {}; to board: {}",
                    relay.to_broker().summary(),
                    relay.to_board().summary()
                )
            });
            cases.push(case(
                format!("{label}: every reading once, in order"),
                started,
                result,
            ));
        }
        let logs = self.stop_all(boards);
        (cases, logs)
    }

    async fn check_uploads(
        &self,
        id: u32,
        cursor: u64,
        expected: usize,
        limit: Duration,
    ) -> Result<String, String> {
        self.online(id, limit).await?;
        let status = self.board_status(id).await?;
        let count = |k: &str| status.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX);
        let (acked, rejected, skipped) = (
            count("uploads_acked"),
            count("uploads_rejected"),
            count("readings_skipped"),
        );
        let mut problems = Vec::new();
        if skipped != 0 || rejected != 0 {
            problems.push(format!(
                "the board skipped {skipped} readings, its upload queue refused {rejected} uploads"
            ));
        }
        let uploads = self.all_uploads(cursor, id).await?;
        if let Err(e) = check_order(&uploads) {
            problems.push(e);
        }
        let power = uploads.iter().filter(|u| u.topic == "power").count();
        if (uploads.len() as u64) < acked {
            problems.push(format!(
                "the spool holds {} uploads of device {id}, the board saw {acked} acknowledged",
                uploads.len()
            ));
        }
        if power * 5 < expected * 4 {
            problems.push(format!(
                "{power} readings in the spool, the run should produce {expected}"
            ));
        }
        if !problems.is_empty() {
            return Err(format!("{} (board status {status})", problems.join("; ")));
        }
        Ok(format!(
            "{} uploads ({power} readings, {expected} expected) once each, ids {}..={} gap-free in order; board: {acked} acked, {} resent, {} retransmits, {} reconnects",
            uploads.len(),
            uploads.first().map_or(0, |u| u.upload_id),
            uploads.last().map_or(0, |u| u.upload_id),
            status.get("uploads_resent").unwrap_or(&Value::Null),
            status.get("retransmits").unwrap_or(&Value::Null),
            status.get("reconnects").unwrap_or(&Value::Null),
        ))
    }

    async fn all_uploads(&self, mut cursor: u64, id: u32) -> Result<Vec<Upload>, String> {
        let mut out = Vec::new();
        loop {
            let page = self
                .api
                .uploads(cursor, 1000)
                .await
                .map_err(|e| e.to_string())?;
            let read = page.uploads.len();
            out.extend(page.uploads.into_iter().filter(|u| from_device(u, id)));
            if read == 0 || page.next >= page.head {
                return Ok(out);
            }
            cursor = page.next;
        }
    }
}

/// Two phones log in to `broker` with one id (`id`, negative under the signed profile); a
/// push to that id must reach both within [`PHONE_WAIT`], and neither may be kicked meanwhile
/// (a kick ends that phone's reads with an error).
async fn two_logins_both_receive(
    broker: &TestBroker,
    api: &Api,
    id: u32,
) -> Result<String, String> {
    let token = broker.phone_token(id);
    let url = broker.app_ws_url();
    let shown = id as i32;
    let mut phones = Vec::new();
    for n in 1..=2 {
        phones.push(
            Phone::login(&url, &token, PHONE_WAIT)
                .await
                .map_err(|e| format!("login {n} of phone {shown}: {e}"))?,
        );
    }
    api.push_text("phone", id, "to every session")
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    for (n, phone) in phones.iter_mut().enumerate() {
        let d = phone
            .next_delivery(PHONE_WAIT)
            .await
            .map_err(|e| format!("session {} of phone {shown}: {e}", n + 1))?;
        got.push(String::from_utf8_lossy(&d.payload).into_owned());
    }
    for phone in phones {
        phone.close().await;
    }
    Ok(format!(
        "phone {shown}: both sessions received the push ({got:?}); neither was kicked"
    ))
}

/// One boot's uploads in spool order: one epoch, each dedup key once, upload ids strictly
/// increasing by one. On failure it says how many ids are missing between the first and the
/// last, and how many come after a higher one (out of order), with the first example of each.
pub fn check_order(uploads: &[Upload]) -> Result<(), String> {
    let (Some(first), Some(_)) = (uploads.first(), uploads.last()) else {
        return Err("no uploads in the spool".into());
    };
    let mut keys = std::collections::HashSet::new();
    for u in uploads {
        if u.upload_epoch != first.upload_epoch {
            return Err(format!(
                "two upload epochs in one boot: {:x} and {:x}",
                first.upload_epoch, u.upload_epoch
            ));
        }
        if !keys.insert(u.dedup_key.as_str()) {
            return Err(format!("dedup key {} twice in the spool", u.dedup_key));
        }
    }
    // Ids relative to the first: they start at a random value and wrap, skipping 0.
    let offsets: Vec<u32> = uploads
        .iter()
        .map(|u| {
            let off = u.upload_id.wrapping_sub(first.upload_id);
            if u.upload_id < first.upload_id {
                off.wrapping_sub(1)
            } else {
                off
            }
        })
        .collect();
    let mut late = Vec::new();
    let mut highest = 0;
    for (u, off) in uploads.iter().zip(&offsets) {
        if *off < highest {
            late.push(u);
        }
        highest = highest.max(*off);
    }
    let present: std::collections::HashSet<u32> = offsets.iter().copied().collect();
    let missing: Vec<u32> = (0..=highest).filter(|o| !present.contains(o)).collect();
    if missing.is_empty() && late.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    if let Some(m) = missing.first() {
        problems.push(format!(
            "{} upload ids missing (first: {})",
            missing.len(),
            first.upload_id.wrapping_add(*m)
        ));
    }
    if let Some(u) = late.first() {
        problems.push(format!(
            "{} uploads after a higher id in the spool (first: id {} at cursor {})",
            late.len(),
            u.upload_id,
            u.cursor
        ));
    }
    Err(problems.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::ids::{Address, Kind as IdKind};

    fn upload(cursor: u64, id: u32, key: &str) -> Upload {
        Upload {
            cursor,
            device: Address {
                kind: IdKind::Device,
                id: 5,
            },
            upload_epoch: 9,
            upload_id: id,
            dedup_key: key.into(),
            topic: "power".into(),
            payload: Vec::new(),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u128> = (1..=20).collect();
        assert_eq!(percentile(&v, 0.5), 10);
        assert_eq!(percentile(&v, 0.95), 19);
        assert_eq!(percentile(&[7], 0.95), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn order_check_refuses_gaps_swaps_and_repeats() {
        let ok = [upload(1, 1, "a"), upload(2, 2, "b"), upload(3, 3, "c")];
        assert!(check_order(&ok).is_ok());
        let gap = [upload(1, 1, "a"), upload(2, 3, "c")];
        assert_eq!(
            check_order(&gap).unwrap_err(),
            "1 upload ids missing (first: 2)"
        );
        let swapped = [upload(1, 1, "a"), upload(2, 3, "c"), upload(3, 2, "b")];
        assert_eq!(
            check_order(&swapped).unwrap_err(),
            "1 uploads after a higher id in the spool (first: id 2 at cursor 3)"
        );
        let wrapping = [
            upload(1, u32::MAX, "a"),
            upload(2, 0, "b"),
            upload(3, 1, "c"),
        ];
        assert!(check_order(&wrapping).is_ok());
        let repeated = [upload(1, 1, "a"), upload(2, 2, "a")];
        assert!(check_order(&repeated).unwrap_err().contains("twice"));
        assert!(check_order(&[]).is_err());
    }
}
