//! `cargo xtask`: the project's single automation entry.
//!
//! Each subcommand lives in its own module ([`crates`] finds the crates outside the host
//! workspace for all of them); this file only parses the command line and
//! dispatches. Scripts that xtask calls (package installs, toolchain set-up) live in `scripts/`.
//!
//! * `test`: everything CI runs, in order (see [`mod@test`]).
//! * `cross`: set up the pinned cross toolchain and build the no_std crates for MCU targets.
//! * `bench`: our broker side by side with Mosquitto, each in a network namespace (see
//!   [`mod@bench`]).
//! * `size`: flash and RAM per board and for the SDK alone, checked against budgets, with a
//!   per-crate and per-symbol breakdown of each binary.
//! * `docs-check`: README.md and docs/ against the code: links, configuration keys, command
//!   lines and the outputs they show ([`docs_check`]).
//! * `fuzz`: a long run of the fuzz targets from their committed corpora, one per core at a
//!   time, optionally merging what it finds back into them ([`fuzz`]).
//! * `soak`: a long broker run under churning device load, judged on RSS, fds and errors
//!   ([`soak`], [`soak_report`]).

mod bench;
mod bench_command;
mod bench_fanout;
mod bench_idle;
mod bench_login;
mod bench_ns;
mod bench_report;
mod bench_servers;
mod bench_udp;
mod bench_uploads;
mod crates;
mod cross;
mod docs_check;
mod elf;
mod fuzz;
mod hil;
mod host_build;
mod qemu_clock;
mod qemu_watchdog;
mod services;
mod shell;
mod size;
mod soak;
mod soak_report;
mod symbols;
mod test;
mod warm_up;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--skip STEP]... [--only STEP]...   run everything CI runs (steps: see `cargo xtask test --list`)
  cross [...]                              set up the pinned cross toolchain and cross-build no_std crates
  qemu-smoke                               boot the QEMU board against a UDP echo on 127.0.0.1
  qemu-watchdog                            hang a task on the QEMU board: its watchdog must reset it
  qemu-clock [--systick-clock]             the QEMU board's clock against the host's, host loaded (within 2 %)
  hil [--rig qemu|host-tap|NAME]...        plug firmware on virtual (or real) boards against a broker (docs/hil.md)
  bench [--quick] [--only NAME] [--out DIR]  our broker side by side with Mosquitto (docs/performance.md)
  size [--top N]                           flash and RAM of every MCU board (checked against its size-budget.toml), per crate and symbol
  soak [--minutes N] [--connections N]    the broker under churning device load: RSS and fds flat, errors not growing (docs/soak/)
  fuzz [--target T] [--seconds N] [--jobs J] [--merge]  long fuzz run (default 300 s per target, one target per core at a time) from the committed corpora; --merge adds new coverage to them, minimised
  docs-check                               README.md and docs/ against the code: links, config keys, commands, shown outputs
  services up|down|status [...]            Redis, RabbitMQ and ZooKeeper on 127.0.0.1 (docs/services.md)
  help                                     this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "test" => test::run(rest),
        "cross" => cross::run(rest),
        "services" => services::run(rest),
        "qemu-smoke" => cross::qemu_smoke(rest),
        "qemu-watchdog" => qemu_watchdog::run(rest),
        "qemu-clock" => qemu_clock::run(rest),
        "hil" => hil::run(rest),
        "fuzz" => fuzz::run(rest),
        "size" => size::run(rest),
        "bench" => bench::run(rest),
        "soak" => soak::run(rest),
        "docs-check" => docs_check::run(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
