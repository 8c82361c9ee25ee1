//! Our clients for the benchmark: simulated devices (the same handshake, link and heartbeats as
//! `broker load`, without uploads) and apps on the app WebSocket (token, `auth`, `welcome`, then
//! a `ping` each heartbeat). Keys and tokens come from the secrets the harness wrote into the
//! broker's config, through the same functions `broker client` uses.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use broker::client::device::Endpoint;
use broker::client::{creds, net};
use broker::config::Config;
use broker::load::device::{self, Live, Plan};
use futures_util::{SinkExt, StreamExt};
use shared_protocol::ids::Address;
use shared_protocol::json::{Auth, ClientMessage, ServerMessage};
use shared_protocol::limits::MAX_JSON_MESSAGE;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::tally::Tally;

/// The devices of one process, counting themselves logged in.
pub struct Devices {
    live: Arc<Live>,
}

impl Devices {
    /// Devices logged in so far.
    pub fn logged_in(&self) -> u64 {
        self.live.logged_in.load(Ordering::Relaxed)
    }

    /// Delivers received so far, by every device of the process (each acknowledged by its link).
    pub fn delivered(&self) -> u64 {
        self.live.delivered.load(Ordering::Relaxed)
    }

    /// Uploads acknowledged so far (an UploadAck says the upload is durable).
    pub fn acked(&self) -> u64 {
        self.live.acked.load(Ordering::Relaxed)
    }

    /// Unix time in ms of the last Deliver received (0: none yet).
    pub fn last_delivery_unix_ms(&self) -> u64 {
        self.live.last_delivery_unix_ms.load(Ordering::Relaxed)
    }

    /// Uploads the broker refused so far (an `Error` about the upload; not resent).
    pub fn refused(&self) -> u64 {
        self.live.uploads_refused.load(Ordering::Relaxed)
    }

    /// Pongs received so far (see [`spawn_pinging_devices`]).
    pub fn pongs(&self) -> u64 {
        self.live.pongs.load(Ordering::Relaxed)
    }
}

/// What logged-in devices upload: back to back, at most `in_flight` unacknowledged, until
/// `stop_at` (then they wait for the last acknowledgements and log out).
#[derive(Clone, Copy, Debug)]
pub struct Uploading {
    /// Upload payload bytes.
    pub payload_len: usize,
    /// Unacknowledged uploads per device.
    pub in_flight: usize,
    /// When uploading stops.
    pub stop_at: Instant,
}

/// Starts one simulated device per id, the i-th at `at(i)`; each logs in and stays idle
/// (heartbeats only). A failed login or a lost session is counted in `tally`.
pub fn spawn_devices(
    websocket: bool,
    addr: SocketAddr,
    master_key: Option<&str>,
    ids: Range<u32>,
    login_timeout: Duration,
    at: impl Fn(u32) -> Instant,
    tally: &Arc<Tally>,
) -> Result<Devices, String> {
    spawn_uploading_devices(
        websocket,
        addr,
        master_key,
        ids,
        login_timeout,
        at,
        tally,
        None,
    )
}

/// [`spawn_devices`], the devices uploading as `uploading` says once logged in.
#[allow(clippy::too_many_arguments)] // the arguments of `spawn_devices`, plus one
pub fn spawn_uploading_devices(
    websocket: bool,
    addr: SocketAddr,
    master_key: Option<&str>,
    ids: Range<u32>,
    login_timeout: Duration,
    at: impl Fn(u32) -> Instant,
    tally: &Arc<Tally>,
    uploading: Option<Uploading>,
) -> Result<Devices, String> {
    let master = master_key.ok_or("device kinds need --master-key")?;
    let endpoint = if websocket {
        Endpoint::Ws(format!("ws://{addr}/"), None)
    } else {
        Endpoint::Udp(addr)
    };
    let plan = Arc::new(match uploading {
        None => no_upload_plan(endpoint, login_timeout),
        Some(u) => Plan {
            endpoint,
            login_timeout,
            // Back to back: the next upload as soon as the window has room.
            upload_interval: Some(Duration::ZERO),
            payload_len: u.payload_len,
            in_flight: u.in_flight,
            stop_at: u.stop_at,
            grace: Duration::from_secs(10),
        },
    });
    spawn_with(plan, master, ids, at, tally, 0)
}

/// [`spawn_devices`] over UDP, each device keeping `in_flight` Pings unanswered once logged in
/// (a Pong, or a silence of `broker load`'s `PING_LOSS_MS`, frees one), until the process
/// exits.
pub fn spawn_pinging_devices(
    addr: SocketAddr,
    master_key: Option<&str>,
    ids: Range<u32>,
    login_timeout: Duration,
    at: impl Fn(u32) -> Instant,
    tally: &Arc<Tally>,
    in_flight: usize,
) -> Result<Devices, String> {
    let master = master_key.ok_or("device kinds need --master-key")?;
    let plan = Arc::new(no_upload_plan(Endpoint::Udp(addr), login_timeout));
    spawn_with(plan, master, ids, at, tally, in_flight)
}

/// A plan with no uploads whose steady phase (heartbeats, and Pings when asked) lasts until the
/// process exits.
fn no_upload_plan(endpoint: Endpoint, login_timeout: Duration) -> Plan {
    Plan {
        endpoint,
        login_timeout,
        upload_interval: None,
        payload_len: 0,
        in_flight: 1,
        stop_at: Instant::now() + Duration::from_secs(7 * 86_400),
        grace: Duration::ZERO,
    }
}

/// Starts one device per id of `ids` on `plan`, the i-th at `at(i)`, each keeping
/// `pings_in_flight` Pings unanswered; failures and lost sessions are counted in `tally`.
fn spawn_with(
    plan: Arc<Plan>,
    master: &str,
    ids: Range<u32>,
    at: impl Fn(u32) -> Instant,
    tally: &Arc<Tally>,
    pings_in_flight: usize,
) -> Result<Devices, String> {
    let config = Config::default();
    let live = Arc::new(Live::default());
    let first = ids.start;
    for id in ids {
        let key = creds::device_key(&config, Path::new("."), id, None, Some(master))?;
        let (plan, live, tally) = (plan.clone(), live.clone(), tally.clone());
        let start_at = at(id - first);
        tokio::spawn(async move {
            let outcome = device::run_pinging(id, key, plan, start_at, live, pings_in_flight).await;
            if let Some(reason) = outcome.login_failure {
                tally.failed(&reason);
            } else if let Some(reason) = outcome.session_lost {
                tally.lost(&reason);
            }
        });
    }
    Ok(Devices { live })
}

/// Starts one app per id (terminal address `phone(id)`), the i-th at `at(i)`.
pub fn spawn_apps(
    addr: SocketAddr,
    token_secret: Option<&str>,
    ids: Range<u32>,
    timeout: Duration,
    at: impl Fn(u32) -> Instant,
    tally: &Arc<Tally>,
) -> Result<(), String> {
    let secret = token_secret.ok_or("app-ws needs --token-secret")?;
    let url = Arc::new(format!("ws://{addr}/"));
    let first = ids.start;
    for id in ids {
        let token = app_token(secret, id)?;
        let (url, tally) = (url.clone(), tally.clone());
        let start_at = at(id - first);
        tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            match tokio::time::timeout(timeout, app_login(&url, token)).await {
                Ok(Ok((ws, heartbeat))) => {
                    tally.up();
                    let reason = app_idle(ws, heartbeat).await;
                    tally.lost(&reason);
                }
                Ok(Err(reason)) => tally.failed(&reason),
                Err(_) => tally.failed("app login timed out"),
            }
        });
    }
    Ok(())
}

/// A token for app `phone(id)` signed with `secret` (64 hex digits).
pub fn app_token(secret: &str, id: u32) -> Result<String, String> {
    creds::phone_token(
        &Config::default(),
        Path::new("."),
        Address::phone(id),
        None,
        Some(secret),
    )
}

/// Connects, sends `auth` and waits for `welcome`: the socket and the heartbeat interval.
pub async fn app_login(url: &str, token: String) -> Result<(net::ClientWs, Duration), String> {
    let mut ws = net::connect(url, None, MAX_JSON_MESSAGE).await?;
    let auth = ClientMessage::Auth(Auth { token, since_id: 0 });
    send(&mut ws, &auth).await?;
    loop {
        let Message::Text(text) = net::next_message(&mut ws)
            .await
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        match ServerMessage::decode(text.as_bytes()).map_err(|e| e.to_string())? {
            ServerMessage::Welcome(w) => {
                return Ok((ws, Duration::from_secs(u64::from(w.heartbeat_secs.max(1)))));
            }
            ServerMessage::Reject(r) => return Err(format!("rejected: {}", r.code)),
            other => return Err(format!("expected welcome, got {}", other.type_name())),
        }
    }
}

/// Stays connected, pinging once per heartbeat and reading whatever comes, until the socket
/// ends: why it ended.
async fn app_idle(mut ws: net::ClientWs, heartbeat: Duration) -> String {
    let mut next_ping = Instant::now() + heartbeat;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_ping) => {
                if let Err(e) = send(&mut ws, &ClientMessage::Ping).await {
                    return e;
                }
                next_ping = Instant::now() + heartbeat;
            }
            m = ws.next() => match m {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.to_string(),
                None => return "closed".into(),
            },
        }
    }
}

/// Sends one app message.
pub async fn send(ws: &mut net::ClientWs, msg: &ClientMessage) -> Result<(), String> {
    let text = msg.encode().map_err(|e| e.to_string())?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}
