//! The `broker` binary: parses the command line, loads the configuration once, sets up logging
//! and hands over to the library (`broker::run`). No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use broker::config::{Config, DEFAULT_TOML};
use broker::secrets::Secrets;
use broker::shutdown_signal::ShutdownSignal;
use broker::terminal::{Address, Kind};
use shared_protocol::provision::TransportPreference;

/// Plugcloud broker: serves smart plugs and phone apps. Without a subcommand it runs everything
/// in one process on embedded defaults.
#[derive(Parser)]
#[command(name = "broker", version)]
struct Cli {
    /// Configuration file (TOML); every key is optional. See `broker config default`.
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Mints an app token with the configured (or generated) token secret.
    Token {
        /// Terminal id (unsigned, or negative for the signed profile).
        #[arg(long, allow_hyphen_values = true)]
        id: String,
        /// Terminal kind.
        #[arg(long, value_enum, default_value_t = KindArg::Phone)]
        kind: KindArg,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86400)]
        ttl: u64,
    },
    /// Prints a device's key (hex): explicit from the config, else derived from the fleet master
    /// key. With --record, writes the device's provisioning record (docs/flashing.md) instead.
    DeviceKey {
        /// Device id.
        #[arg(long)]
        id: String,
        /// Write the binary provisioning record to this file (flashed next to the image).
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// UDP broker as the device reaches it (with --record).
        #[arg(long, value_name = "HOST:PORT", requires = "record")]
        udp: Option<std::net::SocketAddr>,
        /// WebSocket broker as the device reaches it (with --record).
        #[arg(long, value_name = "HOST:PORT", requires = "record")]
        ws: Option<std::net::SocketAddr>,
        /// `Host` header of the WebSocket upgrade (default: the --ws address).
        #[arg(long, requires = "ws")]
        ws_host: Option<String>,
        /// WebSocket request path (default /device).
        #[arg(long, requires = "ws")]
        ws_path: Option<String>,
        /// The broker's HTTP API, asked for the node to dial first (with --record).
        #[arg(long, value_name = "HOST:PORT", requires = "record")]
        lookup: Option<std::net::SocketAddr>,
        /// Which brokers the device dials (default: both, UDP first).
        #[arg(long, value_enum, requires = "record")]
        transport: Option<TransportArg>,
    },
    /// A command-line terminal: log in as a device or a phone, watch deliveries, send from stdin.
    Client(broker::client::ClientArgs),
    /// Load generator: many simulated devices against a running broker; reports login rate,
    /// acknowledged uploads per second, latency percentiles and, with --broker-pid, memory per
    /// session.
    Load(broker::load::LoadArgs),
    /// Looks at a whole cluster (the config file every node shares).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Keeps one RabbitMQ node registered in ZooKeeper while it is healthy (docs/discovery.md).
    Rmqkeeper(broker::keeper::KeeperArgs),
    /// Runs a cluster comet node: terminal endpoints over Redis, RabbitMQ and ZooKeeper
    /// (docs/deployment.md).
    Comet,
    /// Runs a cluster msgbus node: backend HTTP API, links to every comet, RabbitMQ pushes
    /// (docs/deployment.md).
    Msgbus,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Prints the full default configuration with a comment on every key.
    Default,
    /// Loads and validates the configuration, then prints it with secrets redacted.
    Check,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Every comet, msgbus and RabbitMQ node from ZooKeeper with its load and health, and
    /// Redis reachability; exits 1 when anything is unhealthy (docs/operations.md).
    Status(broker::cluster_status::StatusArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Ws,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Device,
    Phone,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Config {
        action: ConfigAction::Default,
    }) = cli.command
    {
        return emit(DEFAULT_TOML);
    }
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("broker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        None => serve(config, cli.config.as_deref()),
        Some(Command::Config {
            action: ConfigAction::Check,
        }) => emit(&config.to_redacted_toml()),
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => ExitCode::SUCCESS,
        Some(Command::Token { id, kind, ttl }) => token(&config, &id, kind, ttl),
        Some(Command::DeviceKey {
            id, record: None, ..
        }) => device_key(&config, &id),
        Some(Command::DeviceKey {
            id,
            record: Some(file),
            udp,
            ws,
            ws_host,
            ws_path,
            lookup,
            transport,
        }) => {
            let spec = broker::provisioning::RecordSpec {
                udp,
                ws,
                ws_host,
                ws_path,
                lookup,
                transport: transport.map(|t| match t {
                    TransportArg::Udp => TransportPreference::Udp,
                    TransportArg::Ws => TransportPreference::Ws,
                    TransportArg::Both => TransportPreference::Both,
                }),
            };
            device_record(&config, &id, &spec, &file)
        }
        Some(Command::Client(args)) => broker::client::cli(&config, args),
        Some(Command::Load(args)) => broker::load::cli(&config, args),
        Some(Command::Cluster {
            action: ClusterAction::Status(args),
        }) => broker::cluster_status::cli(&config, args),
        Some(Command::Rmqkeeper(args)) => rmqkeeper(args, &config),
        Some(Command::Comet) => serve_role(config, broker::discovery::Role::Comet),
        Some(Command::Msgbus) => serve_role(config, broker::discovery::Role::Msgbus),
    }
}

/// Prints `text` on stdout; a closed pipe ends quietly (`broker::cli_output`).
fn emit(text: &str) -> ExitCode {
    match broker::cli_output::print(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The secrets of the broker `config` describes. Never generates any: a token or key made from
/// secrets the broker does not have would be refused by it.
fn secrets(config: &Config) -> Result<Secrets, ExitCode> {
    Secrets::existing(&config.security, &config.storage.data_dir).map_err(|e| {
        eprintln!("broker: {e}");
        ExitCode::FAILURE
    })
}

fn parse_id(config: &Config, id: &str) -> Result<u32, ExitCode> {
    let profile = config.identity.profile;
    match broker::terminal::parse_id(profile, id) {
        Some(v) if v != 0 => Ok(v),
        _ => {
            eprintln!("broker: `{id}` is not a non-zero 32-bit id of profile {profile}");
            Err(ExitCode::from(2))
        }
    }
}

fn token(config: &Config, id: &str, kind: KindArg, ttl: u64) -> ExitCode {
    let id = match parse_id(config, id) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let kind = match kind {
        KindArg::Device => Kind::Device,
        KindArg::Phone => Kind::Phone,
    };
    let address = Address { kind, id };
    if let Err(e) = config.identity.profile.validate(address) {
        eprintln!(
            "broker: {address}: {e} (profile {})",
            config.identity.profile
        );
        return ExitCode::from(2);
    }
    let s = match secrets(config) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let exp = broker::router::now_ms() / 1000 + ttl;
    let claims = shared_protocol::json::Claims { address, exp };
    emit(&format!(
        "{}\n",
        shared_protocol::json::mint(&s.token_secret, &claims)
    ))
}

fn device_key(config: &Config, id: &str) -> ExitCode {
    let id = match parse_id(config, id) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let s = match secrets(config) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let key = broker::provisioning::device_key(&s, id);
    emit(&format!("{}\n", hex::encode(key)))
}

/// `broker device-key --record FILE`: writes device `id`'s provisioning record.
fn device_record(
    config: &Config,
    id: &str,
    spec: &broker::provisioning::RecordSpec,
    file: &std::path::Path,
) -> ExitCode {
    let id = match parse_id(config, id) {
        Ok(v) => v,
        Err(c) => return c,
    };
    let s = match secrets(config) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let key = broker::provisioning::device_key(&s, id);
    let bytes = match broker::provisioning::record_bytes(
        id,
        key,
        spec,
        broker::provisioning::fresh_seed(&mut rand::rng()),
    ) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("broker: device {id}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::write(file, &bytes) {
        eprintln!("broker: cannot write {}: {e}", file.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "broker: wrote the provisioning record of device {id} ({} bytes) to {}",
        bytes.len(),
        file.display()
    );
    ExitCode::SUCCESS
}

fn init_logs(config: &broker::logging::LogConfig) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let subscriber = broker::logging::subscriber(config, rust_log.as_deref(), ansi);
    // try_init also routes the `log` records of dependencies into the subscriber.
    if tracing_subscriber::util::SubscriberInitExt::try_init(subscriber).is_err() {
        eprintln!("broker: a log subscriber was already installed");
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("broker: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `broker` without a subcommand: start, print the banner, serve until SIGINT/SIGTERM, drain.
fn serve(config: Config, config_file: Option<&std::path::Path>) -> ExitCode {
    init_logs(&config.log);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(async {
        // Listening before the banner: a SIGTERM right after "ready" drains, never kills.
        let signal = match listen_for_shutdown() {
            Ok(s) => s,
            Err(c) => return c,
        };
        let running = match broker::start(&config).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("broker: {e}");
                return ExitCode::FAILURE;
            }
        };
        // A closed stdout (`broker | head`) must not stop the broker.
        let _ = broker::cli_output::print(&banner(&config, config_file, &running));
        signal.recv().await;
        running.stop().await;
        ExitCode::SUCCESS
    })
}

/// The start-up text on stdout: where the broker listens and the exact commands that connect a
/// device, a phone and an app to it, and push to a device. Never contains a secret.
fn banner(
    config: &Config,
    config_file: Option<&std::path::Path>,
    running: &broker::Running,
) -> String {
    // The same program, with the same `--config` (the clients read their defaults from it).
    let exe = std::env::args().next().unwrap_or_else(|| "broker".into());
    let cmd = match config_file {
        Some(file) => format!(
            "{} --config {}",
            shell_word(&exe),
            shell_word(&file.display().to_string())
        ),
        None => shell_word(&exe),
    };
    // Where a client on this machine connects: an unspecified bind address becomes 127.0.0.1.
    let local = |a: std::net::SocketAddr| {
        let ip = if a.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            a.ip()
        };
        std::net::SocketAddr::new(ip, a.port())
    };
    let ws = if config.tls.enabled { "wss" } else { "ws" };
    let http_scheme = if config.tls.enabled && config.tls.api {
        "https"
    } else {
        "http"
    };
    let (http, udp) = (local(running.http), local(running.comet.udp));
    let (device_ws, app_ws) = (local(running.comet.device_ws), local(running.comet.app_ws));
    // A port-0 address in the config gives the client nothing to connect to: name the bound one.
    let udp_flag = if config.listen.udp.port() == 0 {
        format!(" --udp {udp}")
    } else {
        String::new()
    };
    let ws_flag = if config.listen.device_ws.port() == 0 {
        format!(" --ws {ws}://{device_ws}/")
    } else {
        " --ws".to_string()
    };
    let app_flag = if config.listen.app_ws.port() == 0 {
        format!(" --app-ws {ws}://{app_ws}/")
    } else {
        String::new()
    };
    let data = config.storage.data_dir.join(broker::secrets::SECRETS_FILE);
    let api_token = if config.security.api_token.is_empty() {
        format!("api_token in {}", data.display())
    } else {
        "security.api_token of the config".to_string()
    };
    let profile = &config.identity.profile;
    let data_dir = config.storage.data_dir.display();
    let drain = config.timeouts.shutdown_drain_secs;
    // Phone ids are negative in the signed profile (the one with concurrent sessions).
    let phone = if profile.allows_concurrent_sessions() {
        "-7"
    } else {
        "7"
    };
    let push = r#"'{"target": {"terminal": {"kind": "device", "id": 42}}, "text": "hello"}'"#;
    let lines = [
        format!("broker ready (profile {profile}, data in {data_dir})"),
        format!("  HTTP API  {http_scheme}://{http}/v1  (bearer token: {api_token})"),
        format!("  devices   udp {udp} and {ws}://{device_ws}/"),
        format!(
            "  apps      {ws}://{app_ws}/  (JSON; first message {{\"type\":\"auth\",\"token\":...}})"
        ),
        "connect a client (from another terminal in this directory):".to_string(),
        format!("  a device over UDP:  {cmd} client device --id 42{udp_flag}"),
        format!("  a device over WS:   {cmd} client device --id 42{ws_flag}"),
        format!("  a phone:            {cmd} client phone --id {phone}{app_flag}"),
        format!("  an app's token:     {cmd} token --id {phone}"),
        format!("  a device's key:     {cmd} device-key --id 42"),
        format!(
            "  push to device 42:  curl -H \"Authorization: Bearer $TOKEN\" \
             -H 'Content-Type: application/json' -d {push} {http_scheme}://{http}/v1/push"
        ),
        format!(
            "stop with Ctrl-C or SIGTERM (terminals are told to reconnect later; drain up to {drain} s)"
        ),
    ];
    lines.join("\n") + "\n"
}

/// `word` quoted for a POSIX shell when it holds anything but safe characters.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `broker comet` / `broker msgbus`: a cluster role until SIGINT/SIGTERM.
fn serve_role(config: Config, role: broker::discovery::Role) -> ExitCode {
    init_logs(&config.log);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    // Listening before the role starts (inside the runtime, which installs the handlers).
    let signal = match rt.block_on(async { listen_for_shutdown() }) {
        Ok(s) => s,
        Err(c) => return c,
    };
    match rt.block_on(broker::roles::run(role, config, signal.recv())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ broker::cluster::ClusterError::Config(..)) => {
            eprintln!("broker {}: configuration error: {e}", role.as_str());
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("broker {}: {e}", role.as_str());
            ExitCode::FAILURE
        }
    }
}

/// `broker rmqkeeper`: the config file's `[rmqkeeper]` (with `[discovery]`), flags overriding
/// it; logs as the other roles (`[log]`, RUST_LOG; colour only on a terminal).
fn rmqkeeper(args: broker::keeper::KeeperArgs, config: &Config) -> ExitCode {
    init_logs(&config.log);
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(broker::keeper::cli(args, config.keeper_sources())),
        Err(e) => {
            eprintln!("rmqkeeper: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// [`ShutdownSignal::listen`], or the exit code (with a message) when no handler can be installed.
fn listen_for_shutdown() -> Result<ShutdownSignal, ExitCode> {
    ShutdownSignal::listen().map_err(|e| {
        eprintln!("broker: cannot listen for SIGINT/SIGTERM: {e}");
        ExitCode::FAILURE
    })
}
