//! `bench-load`: the load clients of `cargo xtask bench`. The harness starts each server (our
//! broker, Mosquitto) in a network namespace of its own and runs this binary in the same
//! namespace, several processes when a count exceeds what one process may hold open.
//!
//! * [`idle`]: opens N idle connections of one [`idle::Kind`], prints one JSON status line when
//!   every attempt has finished, and holds them until its standard input closes.
//! * [`fanout`]: terminals that time a broadcast's deliveries, and the sender of it.
//! * [`command`]: the requester of the command round trip (our API command; MQTT
//!   request/reply), timing each request.
//! * [`uploads`]: clients uploading back to back (our devices; MQTT QoS 1 publishers with a
//!   persistent-session subscriber), counting what was acknowledged in a window.
//! * [`pings`]: the UDP frame rate: devices flooding the broker with Pings, and plain
//!   datagrams against an echo server with the broker's batched I/O.
//! * [`tally`]: the counters and failure reasons the status line is made from.
//! * [`ours`]: our device (WebSocket or UDP, through `broker load`'s simulated device) and app
//!   WebSocket clients.
//! * [`mqtt`]: an MQTT 3.1.1 client over TCP or WebSocket, packets by rumqttc's codec.

mod command;
mod fanout;
mod http1;
mod idle;
mod mqtt;
mod ours;
mod pings;
mod tally;
mod uploads;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load clients for `cargo xtask bench` (docs/performance.md, "Side by side with Mosquitto").
#[derive(Parser)]
#[command(name = "bench-load")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open idle connections, report, and hold them until stdin closes.
    Idle(idle::IdleArgs),
    /// Open terminals that receive a broadcast; report when all of it arrived or stdin closes.
    Fanout(fanout::FanoutArgs),
    /// Send the broadcast (ten 64-byte messages by default).
    Publish(fanout::PublishArgs),
    /// Send requests one at a time to idle terminals and report the latency percentiles.
    Request(command::RequestArgs),
    /// Upload back to back for a window and report the acknowledged uploads per second.
    Uploads(uploads::UploadsArgs),
    /// Keep Pings (or plain datagrams) unanswered over UDP and count the answers in a window.
    Pings(pings::PingsArgs),
    /// Return every UDP datagram to its sender (the machine's limit for `pings --kind raw-udp`).
    UdpEcho(pings::EchoArgs),
}

/// A runtime of one thread: the echo server's, so that its CPU time is one core's work at
/// most, and the requester's, so that its HTTP connection task and its timed request run on
/// the same thread (no hand-off between threads inside a timed round trip, as with the MQTT
/// requester, which reads its socket directly).
fn one_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Idle(args) => runtime.block_on(idle::run(args)),
        Command::Fanout(args) => runtime.block_on(fanout::run(args)),
        Command::Publish(args) => runtime.block_on(fanout::publish(args)),
        Command::Request(args) => {
            one_thread_runtime().and_then(|rt| rt.block_on(command::run(args)))
        }
        Command::Uploads(args) => runtime.block_on(uploads::run(args)),
        Command::Pings(args) => runtime.block_on(pings::run(args)),
        Command::UdpEcho(args) => {
            one_thread_runtime().and_then(|rt| rt.block_on(pings::echo(args)))
        }
    };
    match result {
        Ok(()) => {
            // Held connections are dropped with the process, not one by one.
            runtime.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-load: {e}");
            ExitCode::from(2)
        }
    }
}
