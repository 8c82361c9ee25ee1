//! `broker client`: a command-line terminal that acts as a device or a phone, for trying the
//! broker out, scripting and tests.
//!
//! * [`device`]: a device over UDP or the device WebSocket (shared-protocol handshake, secure
//!   session and reliability through the sans-IO [`link`]).
//! * [`phone`]: a phone over the app WebSocket (JSON messages and an HS256 token).
//! * [`input`]: the stdin command language (`send device:42 hello`, `upload power {..}`, ...).
//! * [`output`]: one line per event, text or JSON (`--json`).
//! * [`creds`]: device keys and tokens from flags, the config, or the secrets the broker
//!   generated into its data directory, so `broker client device --id 42` works next to a broker
//!   started with `cargo run -p broker` in the same directory.
//! * [`net`]: TCP and TLS (rustls) connections: `ws://` / `wss://`, and the lookup's
//!   `http://` / `https://`.
//! * [`lookup`]: `--lookup URL`, a cluster's node lookup asked for a comet before every login,
//!   so the client follows the cluster when its comet dies or sends SHUTDOWN.
//!
//! Defaults come from the same configuration as the broker (`--config`, `BROKER__*`): the
//! `[listen]` addresses (an unspecified bind address becomes 127.0.0.1), `[tls]`, `[security]`,
//! `storage.data_dir`. Exit status: 0 after `quit`, end of session or `--count` deliveries, and
//! after Ctrl-C or SIGTERM at any point (listened for from the start: while connecting or
//! pausing before the next login the client just ends, logged in it says Goodbye first); 1 when
//! the broker rejects the login, kicks the session or cannot be reached; 2 for bad arguments.
// The clap help texts below use `[optional]` and `<placeholder>` as a terminal shows them,
// not as doc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

pub mod creds;
pub mod device;
pub mod input;
pub mod link;
pub mod lookup;
pub mod net;
pub mod output;
pub mod phone;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use shared_protocol::codes::Code;
use shared_protocol::ids::{Address, Kind};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::shutdown_signal::ShutdownSignal;

/// Why the client stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad flags or configuration.
    #[error("{0}")]
    Usage(String),
    /// The broker could not be reached or the connection could not be set up.
    #[error("{0}")]
    Connect(String),
    /// The broker refused the login.
    #[error("login rejected: {code} ({hint}){wait}", wait = retry_note(*.retry_after_ms))]
    Rejected {
        /// The reject code.
        code: Code,
        /// What it means / what to check.
        hint: String,
        /// How long to wait before trying again: the REJECT's `retry_after_ms`, capped at
        /// `REJECT_RETRY_AFTER_CAP_MS` because a REJECT is unauthenticated (0: no advice).
        retry_after_ms: u32,
    },
    /// The broker ended the session.
    #[error("kicked by the broker: {0} ({desc})", desc = .0.description())]
    Kicked(Code),
    /// The connection ended.
    #[error("{0}")]
    Closed(String),
    /// The session died (no acknowledgement or silence).
    #[error("session lost: {0}")]
    Link(#[from] link::LinkError),
    /// Something the protocol code refused.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// A logged-in session at `via` ended with `cause`: what the client prints when it moves.
    #[error("session at {via} ended: {cause}")]
    Ended {
        /// Where the session was (`udp 127.0.0.1:8083`, `ws://...`).
        via: String,
        /// Why it ended.
        cause: Box<ClientError>,
    },
}

impl ClientError {
    fn io(e: std::io::Error) -> ClientError {
        ClientError::Io(e)
    }

    /// `self`, which ended a logged-in session at `via`, named with `via`. A connected UDP
    /// socket reports an ICMP "port unreachable" from the peer as a refused connection: said
    /// in words, since nothing listens at `via` any more (the comet died or its host dropped it).
    pub(crate) fn ended_at(self, via: &str) -> ClientError {
        let cause = match self {
            ClientError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                ClientError::Closed(
                    "unreachable: a packet was refused (ICMP port unreachable), \
                     nothing listens there any more"
                        .into(),
                )
            }
            e => e,
        };
        ClientError::Ended {
            via: via.to_string(),
            cause: Box::new(cause),
        }
    }

    /// Whether a client that was logged in should log in again after this end: the broker
    /// asked it to come back (a kick or refusal with a retryable code: SHUTDOWN,
    /// HEARTBEAT_TIMEOUT, SERVER_BUSY, ...), or the connection or session was lost. Never after
    /// REPLACED (another session of the terminal is live), an operator's kick, bad credentials
    /// or a usage error.
    pub fn comes_back(&self) -> bool {
        match self {
            ClientError::Kicked(code) | ClientError::Rejected { code, .. } => code.is_retryable(),
            ClientError::Connect(_)
            | ClientError::Closed(_)
            | ClientError::Link(_)
            | ClientError::Io(_) => true,
            ClientError::Usage(_) | ClientError::Protocol(_) => false,
            ClientError::Ended { cause, .. } => cause.comes_back(),
        }
    }
}

/// Whether and when a client logs in again after a session ended (device and phone alike):
/// only after some login succeeded, only for an end to come back from
/// ([`ClientError::comes_back`]), and after a pause: a step doubling from [`RECONNECT_MIN`] up
/// to [`RECONNECT_MAX`] (reset by every successful login), of which a random half to all is
/// waited (jitter, so the clients of a comet that died do not all log in at the same instant).
#[derive(Clone, Copy, Debug)]
pub struct Reconnect {
    next: Duration,
    logged_in_once: bool,
}

/// The first pause.
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
/// The longest pause.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            next: RECONNECT_MIN,
            logged_in_once: false,
        }
    }
}

impl Reconnect {
    /// The pause before the next attempt: between half the current step and all of it, as
    /// `jitter` (uniformly random in practice) goes from 0 to `u16::MAX`, and at least the
    /// broker's `retry_after_ms` advice.
    pub fn pause(&mut self, e: &ClientError, jitter: u16) -> Duration {
        let advice = match e {
            ClientError::Rejected { retry_after_ms, .. } => {
                Duration::from_millis(u64::from(*retry_after_ms))
            }
            _ => Duration::ZERO,
        };
        let half = self.next / 2;
        let jittered = half + half.mul_f64(f64::from(jitter) / f64::from(u16::MAX));
        let pause = jittered.max(advice);
        self.next = (self.next * 2).min(RECONNECT_MAX);
        pause
    }

    /// A login succeeded: the next pause starts small again.
    pub fn logged_in(&mut self) {
        self.next = RECONNECT_MIN;
        self.logged_in_once = true;
    }

    /// Runs `session` until it ends cleanly, or ends in a way not to come back from, or
    /// Ctrl-C or SIGTERM (`interrupt`) interrupts a pause: the device's and the phone's outer
    /// loop. `session` sets its `&mut bool` once it has logged in; between sessions,
    /// [`Reconnect::after`] decides.
    pub(crate) async fn serve(
        enabled: bool,
        printer: &output::Printer,
        interrupt: &CancellationToken,
        mut session: impl AsyncFnMut(&mut bool) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let mut again = Reconnect::default();
        loop {
            let mut logged_in = false;
            let err = match session(&mut logged_in).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !again
                .after(err, logged_in, enabled, printer, interrupt)
                .await?
            {
                return Ok(());
            }
        }
    }

    /// A session ended with `err` (`logged_in`: it had logged in). `Ok(true)`: log in again,
    /// the pause (announced on `printer`) is over; `Ok(false)`: Ctrl-C or SIGTERM (`interrupt`)
    /// during the pause, a clean end; `Err(err)`: give up (reconnecting is off (`enabled`), no login ever succeeded, or
    /// the end is not one to come back from).
    pub(crate) async fn after(
        &mut self,
        err: ClientError,
        logged_in: bool,
        enabled: bool,
        printer: &output::Printer,
        interrupt: &CancellationToken,
    ) -> Result<bool, ClientError> {
        if logged_in {
            self.logged_in();
        }
        if !(enabled && self.logged_in_once && err.comes_back()) {
            return Err(err);
        }
        let pause = self.pause(&err, rand::random());
        printer.print(&output::Event::Reconnecting {
            why: err.to_string(),
            after_ms: u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
        });
        tokio::select! {
            () = interrupt.cancelled() => Ok(false),
            _ = tokio::time::sleep(pause) => Ok(true),
        }
    }
}

/// `broker client`: act as a device or a phone.
#[derive(Args, Debug)]
pub struct ClientArgs {
    #[command(subcommand)]
    role: RoleArgs,
}

#[derive(Subcommand, Debug)]
enum RoleArgs {
    /// Log in as a device (UDP by default, or the device WebSocket with --ws).
    ///
    /// Without --key or --master-key the key is derived from the fleet master key in the config,
    /// or from the one the broker generated into <data dir>/secrets.toml at its first start:
    /// next to a broker started with `cargo run -p broker` in the same directory,
    /// `broker client device --id 42` needs nothing else.
    ///
    /// Prints deliveries, commands, presence and kicks, one line each; commands are answered
    /// automatically (--command-status, --command-reply) unless --manual-commands. Reads
    /// commands from stdin: send <kind:id> <text> | upload <topic> <text> |
    /// request <path> <text> | result <cmd_id> <status> [text] | ping | quit.
    Device(DeviceArgs),
    /// Log in as a phone over the app WebSocket (JSON).
    ///
    /// Without --token or --token-secret a 24 h token is minted with the config's token secret or
    /// the one the broker generated into <data dir>/secrets.toml. Prints deliveries (acknowledged
    /// at once unless --manual-ack), ok/error answers, presence and kicks. Reads commands from
    /// stdin: send <kind:id> <text> | ack [msg_id] | ping | quit.
    Phone(PhoneArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// Print one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// The broker's data directory, read for generated secrets [default: storage.data_dir of the
    /// config, i.e. ./broker-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Highest msg_id already received: stored messages after it are replayed (0: all).
    #[arg(long, default_value_t = 0)]
    since_id: u64,
    /// Exit (status 0) after this many deliveries.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Give up logging in after this many seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    login_timeout: u64,
    /// Exit (status 1) when the broker ends the session, instead of logging in again after a
    /// pause as a device would (the default after a SHUTDOWN kick, a heartbeat timeout or a
    /// lost connection; never after REPLACED or an operator's kick).
    #[arg(long)]
    exit_on_kick: bool,
    /// A cluster's node lookup: the HTTP API of any comet or msgbus (`http://host:port`, or
    /// `https://` trusting --ca-file) or the full `.../v1/nodes/lookup` URL. Asked for a comet before every login (primary
    /// first, then the fallbacks), so the client follows the cluster when its comet dies or
    /// sends SHUTDOWN. Not with --udp, a --ws URL or --app-ws.
    #[arg(long, value_name = "URL")]
    lookup: Option<String>,
    /// PEM certificate(s) to trust for wss:// and an https:// --lookup (a CA or the server's
    /// self-signed certificate)
    /// [default: tls.cert_file when [tls] is enabled and the URL is the default, else public roots].
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DeviceArgs {
    /// Device id.
    #[arg(long, allow_hyphen_values = true)]
    id: String,
    /// The device key, 64 hex digits.
    #[arg(long, value_name = "HEX", conflicts_with = "master_key")]
    key: Option<String>,
    /// The fleet master key (64 hex digits) to derive the device key from.
    #[arg(long, value_name = "HEX")]
    master_key: Option<String>,
    /// Broker UDP address [default: listen.udp of the config, 127.0.0.1:8083].
    #[arg(long, value_name = "ADDR", conflicts_with = "ws")]
    udp: Option<SocketAddr>,
    /// Use the device WebSocket, at URL [default: ws(s)://<listen.device_ws>/].
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    ws: Option<String>,
    /// Status of automatic command answers.
    #[arg(long, default_value_t = 0)]
    command_status: u16,
    /// Payload (text) of automatic command answers.
    #[arg(long, default_value = "ok", value_name = "TEXT")]
    command_reply: String,
    /// Do not answer commands automatically; answer with `result <cmd_id> <status> [text]`.
    #[arg(long)]
    manual_commands: bool,
    /// Ping the broker after this many ms without a packet from it, and count the session lost
    /// when 3 Pings in a row, 1 s apart, go unanswered (0: only the protocol's heartbeat, which
    /// notices a dead broker after 3 heartbeats, 90 s by default). Over UDP the Ping also brings
    /// back the "port unreachable" of a comet that is gone.
    #[arg(long, default_value_t = link::Probe::DEFAULT_QUIET_MS, value_name = "MS")]
    probe_after_ms: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct PhoneArgs {
    /// Phone id (negative in the signed profile).
    #[arg(long, allow_hyphen_values = true)]
    id: String,
    /// An app token (from `broker token --id N`).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_secret")]
    token: Option<String>,
    /// The token secret (64 hex digits) to mint a token with.
    #[arg(long, value_name = "HEX")]
    token_secret: Option<String>,
    /// App WebSocket URL [default: ws(s)://<listen.app_ws>/].
    #[arg(long, value_name = "URL")]
    app_ws: Option<String>,
    /// Do not acknowledge deliveries automatically; acknowledge with `ack [msg_id]`.
    #[arg(long)]
    manual_ack: bool,
    #[command(flatten)]
    common: Common,
}

impl Common {
    /// The node lookup `--lookup` names, trusting `--ca-file` for an `https://` one; `None`
    /// without `--lookup`.
    fn lookup(&self) -> Result<Option<lookup::Lookup>, ClientError> {
        Ok(self
            .lookup
            .as_deref()
            .map(lookup::Lookup::new)
            .transpose()?
            .map(|l| l.with_ca_file(self.ca_file.clone())))
    }
}

/// The "retry after" part of a rejection message (empty when the broker gave no wait).
fn retry_note(retry_after_ms: u32) -> String {
    if retry_after_ms == 0 {
        String::new()
    } else {
        format!("; retry after {retry_after_ms} ms")
    }
}

/// A listen address as a destination: unspecified (0.0.0.0 / ::) becomes loopback.
/// `addr` with an unspecified IP replaced by loopback: where a client on this machine dials.
pub(crate) fn dial(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The default WebSocket URL for a listen address, and the CA file to trust for it.
pub(crate) fn default_url(config: &Config, listen: SocketAddr) -> (String, Option<PathBuf>) {
    let a = dial(listen);
    if config.tls.enabled {
        // The certificate names a host, not an address, most of the time: use localhost.
        let host = if a.ip().is_loopback() {
            "localhost".to_string()
        } else {
            a.ip().to_string()
        };
        let ca = (!config.tls.cert_file.is_empty()).then(|| PathBuf::from(&config.tls.cert_file));
        (format!("wss://{host}:{}/", a.port()), ca)
    } else {
        (format!("ws://{a}/"), None)
    }
}

fn parse_id(id: &str, kind: Kind, config: &Config) -> Result<Address, ClientError> {
    let bits = match crate::terminal::parse_id(config.identity.profile, id) {
        Some(v) if v != 0 => v,
        _ => {
            return Err(ClientError::Usage(format!(
                "`{id}` is not a non-zero 32-bit id"
            )));
        }
    };
    let address = Address { kind, id: bits };
    config.identity.profile.validate(address).map_err(|e| {
        ClientError::Usage(format!(
            "{address}: {e} (profile {})",
            config.identity.profile
        ))
    })?;
    Ok(address)
}

fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    rx
}

async fn run(config: &Config, args: ClientArgs) -> Result<(), ClientError> {
    // Before the first connection: a Ctrl-C or SIGTERM from here on is never lost and never
    // ends the process through the signal's default action.
    let interrupt = ShutdownSignal::listen()
        .map_err(ClientError::io)?
        .into_token();
    match args.role {
        RoleArgs::Device(a) => {
            let c = &a.common;
            let data_dir = c
                .data_dir
                .clone()
                .unwrap_or_else(|| config.storage.data_dir.clone());
            let address = parse_id(&a.id, Kind::Device, config)?;
            let key = creds::device_key(
                config,
                &data_dir,
                address.id,
                a.key.as_deref(),
                a.master_key.as_deref(),
            )
            .map_err(ClientError::Usage)?;
            let lookup = c.lookup()?;
            let explicit = a.udp.is_some() || a.ws.as_ref().is_some_and(|u| !u.is_empty());
            let endpoint = match (lookup, &a.ws, a.udp) {
                (Some(_), _, _) if explicit => {
                    return Err(ClientError::Usage(
                        "--lookup picks the comet: give --ws without a URL (or nothing, for UDP), \
                         not --udp or a --ws URL"
                            .into(),
                    ));
                }
                (Some(lookup), ws, _) => device::Endpoint::Lookup {
                    lookup,
                    ws: ws.is_some(),
                    ca: c.ca_file.clone(),
                },
                (None, Some(url), _) if !url.is_empty() => {
                    device::Endpoint::Ws(url.clone(), c.ca_file.clone())
                }
                (None, Some(_), _) => {
                    let (url, ca) = default_url(config, config.listen.device_ws);
                    device::Endpoint::Ws(url, c.ca_file.clone().or(ca))
                }
                (None, None, Some(addr)) => device::Endpoint::Udp(addr),
                (None, None, None) => device::Endpoint::Udp(dial(config.listen.udp)),
            };
            let answer = if a.manual_commands {
                device::Answer::Manual
            } else {
                device::Answer::Auto(a.command_status, a.command_reply.clone().into_bytes())
            };
            let o = device::DeviceOptions {
                id: address.id,
                key,
                endpoint,
                since_id: c.since_id,
                answer,
                count: c.count,
                login_timeout: Duration::from_secs(c.login_timeout),
                printer: output::Printer { json: c.json },
                reconnect: !c.exit_on_kick,
                probe: (a.probe_after_ms > 0).then(|| link::Probe::after(a.probe_after_ms)),
            };
            device::run(o, stdin_lines(), interrupt).await
        }
        RoleArgs::Phone(a) => {
            let c = &a.common;
            let data_dir = c
                .data_dir
                .clone()
                .unwrap_or_else(|| config.storage.data_dir.clone());
            let address = parse_id(&a.id, Kind::Phone, config)?;
            let token = creds::phone_token(
                config,
                &data_dir,
                address,
                a.token.as_deref(),
                a.token_secret.as_deref(),
            )
            .map_err(ClientError::Usage)?;
            let lookup = c.lookup()?;
            if lookup.is_some() && a.app_ws.is_some() {
                return Err(ClientError::Usage(
                    "--lookup picks the comet: not with --app-ws".into(),
                ));
            }
            let (url, ca) = match &a.app_ws {
                Some(url) => (url.clone(), c.ca_file.clone()),
                None => {
                    let (url, ca) = default_url(config, config.listen.app_ws);
                    (url, c.ca_file.clone().or(ca))
                }
            };
            let o = phone::PhoneOptions {
                address,
                token,
                url,
                lookup,
                ca_file: ca,
                since_id: c.since_id,
                manual_ack: a.manual_ack,
                count: c.count,
                login_timeout: Duration::from_secs(c.login_timeout),
                printer: output::Printer { json: c.json },
                reconnect: !c.exit_on_kick,
            };
            phone::run(o, stdin_lines(), interrupt).await
        }
    }
}

/// Runs `broker client ...` with the loaded configuration; prints failures to stderr.
pub fn cli(config: &Config, args: ClientArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("broker client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(config, args));
    // The stdin reader sits in a blocking read: do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker client: {e}");
            match e {
                ClientError::Usage(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_pauses_double_with_jitter_between_half_and_all_of_the_step() {
        let lost = ClientError::Closed("gone".into());
        let mut r = Reconnect::default();
        assert_eq!(r.pause(&lost, 0), Duration::from_millis(250));
        assert_eq!(r.pause(&lost, u16::MAX), Duration::from_millis(1000));
        let third = r.pause(&lost, u16::MAX / 2);
        assert!(
            (Duration::from_millis(1490)..=Duration::from_millis(1510)).contains(&third),
            "{third:?}"
        );
        for _ in 0..10 {
            r.pause(&lost, u16::MAX);
        }
        assert_eq!(r.pause(&lost, u16::MAX), RECONNECT_MAX);
        // A login resets the step; a REJECT's advice is a floor.
        r.logged_in();
        let busy = ClientError::Rejected {
            code: Code::SERVER_BUSY,
            hint: String::new(),
            retry_after_ms: 5_000,
        };
        assert_eq!(r.pause(&busy, 0), Duration::from_secs(5));
    }

    #[test]
    fn a_refused_packet_ends_a_session_as_unreachable_and_the_client_comes_back() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = ClientError::Io(refused).ended_at("udp 127.0.0.1:9");
        assert!(e.comes_back());
        let shown = e.to_string();
        assert!(
            shown.starts_with("session at udp 127.0.0.1:9 ended: unreachable"),
            "{shown}"
        );
        // The cause decides: an operator's kick is not come back from.
        let kicked = ClientError::Kicked(Code::ADMIN_KICK).ended_at("udp 127.0.0.1:9");
        assert!(!kicked.comes_back());
    }

    #[test]
    fn defaults_follow_the_config() {
        let mut c = Config::default();
        assert_eq!(
            dial("0.0.0.0:8083".parse().unwrap()),
            "127.0.0.1:8083".parse().unwrap()
        );
        assert_eq!(
            default_url(&c, c.listen.device_ws),
            ("ws://127.0.0.1:8081/".into(), None)
        );
        c.tls.enabled = true;
        c.tls.cert_file = "/etc/cert.pem".into();
        assert_eq!(
            default_url(&c, c.listen.app_ws),
            (
                "wss://localhost:8082/".into(),
                Some(PathBuf::from("/etc/cert.pem"))
            )
        );
        assert!(matches!(
            parse_id("0", Kind::Device, &c),
            Err(ClientError::Usage(_))
        ));
        assert_eq!(
            parse_id("42", Kind::Device, &c).unwrap(),
            Address::device(42)
        );
    }
}
