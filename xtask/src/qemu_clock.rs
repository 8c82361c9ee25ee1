//! `cargo xtask qemu-clock [--systick-clock]`: the QEMU board's clock keeps the host's pace
//! while the host is loaded.
//!
//! How the pieces fit:
//! * `boards/qemu-mps2-an386`'s `clock-probe` (see its module docs) writes a line
//!   `clock-probe <ms>` with the board's clock every 100 ms of board time, computing half of
//!   each period (a busy CPU is when QEMU's timer interrupts fall behind), on QEMU's standard
//!   error.
//! * [`Load`] keeps every host core busy ([`LOAD_PER_CORE`] spinning threads per core) for the
//!   run, the way a CI machine running builds next to the tests is.
//! * [`sample`] boots the probe with the board's runner and stamps each line with the host's
//!   monotonic clock as it arrives; it stops after [`SPAN`] of host time (a slow board clock
//!   would otherwise take minutes to write its 12 s).
//! * [`judge`] compares the board's elapsed time with the host's between the first and the
//!   last line: the board must not go back and must stay within [`TOLERANCE`] of the host over
//!   at least [`MIN_SPAN`]. The lines must also straddle the counter's 32-bit wrap
//!   ([`crosses_wrap`]), which the probe puts 3 s after boot.
//!
//! `--systick-clock` builds the probe with the board's `systick-clock` feature, the driver
//! that counted SysTick interrupts: the run is expected to fail, which shows the test can.
//! docs/boards.md records both figures.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cross::{CrossEnv, QEMU_BOARD, cross_target_dir, kill_group, print_log};
use crate::shell::{project_root, run_command};

/// The probe binary.
const PROBE_BIN: &str = "clock-probe";
/// The board's target, for the ELF path.
const TARGET: &str = "thumbv7em-none-eabihf";
/// The prefix of the probe's clock lines.
const LINE_PREFIX: &str = "clock-probe ";
/// Largest relative difference between the board's and the host's elapsed time.
const TOLERANCE: f64 = 0.02;
/// Shortest host time the comparison needs between its first and last line.
const MIN_SPAN: Duration = Duration::from_secs(10);
/// Host time after the first line at which sampling stops: the probe writes 12 s of board
/// time, so a clock that keeps pace ends on its own just before.
const SPAN: Duration = Duration::from_secs(13);
/// Longest the boot may take to the first line.
const BOOT_TIMEOUT: Duration = Duration::from_secs(20);
/// Spinning threads per host core while the probe runs.
const LOAD_PER_CORE: usize = 2;

/// Runs `cargo xtask qemu-clock [--systick-clock]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let systick = match args {
        [] => false,
        [flag] if flag == "--systick-clock" => true,
        _ => return Err("usage: cargo xtask qemu-clock [--systick-clock]".into()),
    };
    let env = CrossEnv::setup()?;
    let board = project_root().join("boards").join(QEMU_BOARD);
    let target_dir = cross_target_dir();
    let mut build = env.cargo(&board, &target_dir);
    build.args(["build", "--release", "--locked", "--bin", PROBE_BIN]);
    if systick {
        build.args(["--features", "systick-clock"]);
    }
    run_command(&mut build)?;
    let elf = target_dir.join(TARGET).join("release").join(PROBE_BIN);
    // The runner decodes the board's log with it; built now, not inside the boot's timeout.
    crate::cross::build_defmt_log()?;

    let threads = thread::available_parallelism().map_or(2, |n| n.get()) * LOAD_PER_CORE;
    let runner = board.join("run-qemu.sh");
    eprintln!(
        "$ QEMU_NIC=none {} {} (with {threads} spinning threads on the host)",
        runner.display(),
        elf.display()
    );
    let load = Load::start(threads);
    let mut command = Command::new(&runner);
    command
        .arg(&elf)
        .env("QEMU_NIC", "none")
        .current_dir(&board);
    let run = sample(&mut command);
    drop(load);
    let run = run?;
    print_log(&run.log);
    let clock = if systick {
        "SysTick-counting clock (systick-clock)"
    } else {
        "counter clock"
    };
    match judge(&run.samples) {
        Ok(_) if !systick && !crosses_wrap(&run.samples) => Err(format!(
            "the clock lines do not cross the counter's wrap at {WRAP_MS} ms, which the probe \
             sets 3 s after boot: the wrap handling went untested"
        )),
        Ok(report) => {
            eprintln!(
                "qemu-clock: pass: {clock}: {report}, host loaded with {threads} spinning threads"
            );
            Ok(())
        }
        Err(e) => Err(format!(
            "{clock}: {e} (host loaded with {threads} spinning threads)"
        )),
    }
}

/// Where the board's counter clock wraps: 2^32 cycles at 25 MHz, in whole milliseconds.
const WRAP_MS: u64 = (1 << 32) / 25_000;

/// True when the lines straddle the counter's wrap (the first before it, the last after).
fn crosses_wrap(samples: &[Sample]) -> bool {
    matches!(
        (samples.first(), samples.last()),
        (Some(first), Some(last)) if first.board_ms < WRAP_MS && last.board_ms > WRAP_MS
    )
}

/// Busy threads that keep the host's cores loaded until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    /// Starts `threads` threads that spin until the [`Load`] is dropped.
    fn start(threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005) + 1);
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One clock line: the host's time since the run started and the board's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Host time when the line arrived.
    host: Duration,
    /// The board's clock in the line, in milliseconds.
    board_ms: u64,
}

/// What a probe run gave.
struct Run {
    /// The clock lines, in arrival order.
    samples: Vec<Sample>,
    /// The board's standard output (its defmt log).
    log: Vec<u8>,
}

/// Boots the probe with `command` (the board's runner) in its own process group and collects
/// its clock lines until it exits, [`SPAN`] has passed since the first line, or no line came
/// within [`BOOT_TIMEOUT`]. The group is killed if still running.
fn sample(command: &mut Command) -> Result<Run, String> {
    let started = Instant::now();
    let mut child = command
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill(&mut child);
        return Err("QEMU output not captured".into());
    };
    let log_reader = thread::spawn(move || {
        let mut log = Vec::new();
        let _ = stdout.read_to_end(&mut log);
        log
    });
    let (lines_tx, lines_rx) = mpsc::channel();
    let line_reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::new();
    let mut first: Option<Instant> = None;
    let outcome = loop {
        let deadline = first.map_or(started + BOOT_TIMEOUT, |t| t + SPAN);
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(wait) {
            Ok((at, line)) => match line.strip_prefix(LINE_PREFIX) {
                Some(ms) => {
                    let board_ms = ms
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad clock line `{line}`"));
                    let board_ms = match board_ms {
                        Ok(ms) => ms,
                        Err(e) => break Err(e),
                    };
                    first.get_or_insert(at);
                    samples.push(Sample {
                        host: at - started,
                        board_ms,
                    });
                }
                None => eprintln!("  qemu  | {line}"),
            },
            // Standard error closed: QEMU has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) if first.is_none() => {
                break Err(format!("no clock line within {BOOT_TIMEOUT:?} of boot"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break Ok(()),
        }
    };
    let status = match child.try_wait() {
        Ok(Some(status)) => Some(status),
        _ => {
            kill(&mut child);
            None
        }
    };
    let _ = line_reader.join();
    let log = log_reader.join().unwrap_or_default();
    outcome?;
    if let Some(status) = status.filter(|s| !s.success()) {
        print_log(&log);
        return Err(format!("clock-probe ended with {status}"));
    }
    Ok(Run { samples, log })
}

/// Ends the runner's process group and reaps the runner.
fn kill(child: &mut Child) {
    kill_group(child.id());
    let _ = child.wait();
}

/// How the board's clock compared with the host's.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Report {
    /// Host time between the first and the last line.
    host: Duration,
    /// Board time between the same lines.
    board: Duration,
    /// Lines compared.
    lines: usize,
}

impl Report {
    /// Board time per host time (1.0: same pace).
    fn ratio(&self) -> f64 {
        self.board.as_secs_f64() / self.host.as_secs_f64()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "board {:.3} s over host {:.3} s ({:+.2} %, limit ±{:.0} %, {} lines)",
            self.board.as_secs_f64(),
            self.host.as_secs_f64(),
            (self.ratio() - 1.0) * 100.0,
            TOLERANCE * 100.0,
            self.lines
        )
    }
}

/// Why a run failed the comparison.
#[derive(Debug, Clone, PartialEq)]
enum ClockError {
    /// Fewer than two clock lines.
    TooFewLines(usize),
    /// The board's clock went back between two lines. (It may read the same twice: a timer
    /// woken late leaves the next line's wait empty.)
    WentBack {
        /// The earlier reading, ms.
        from: u64,
        /// The later one, ms.
        to: u64,
    },
    /// The lines spanned less host time than [`MIN_SPAN`].
    SpanTooShort(Duration),
    /// The board's elapsed time is off by more than [`TOLERANCE`].
    Drift(Report),
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooFewLines(n) => write!(f, "{n} clock lines; at least 2 needed"),
            Self::WentBack { from, to } => {
                write!(f, "the board's clock went from {from} ms to {to} ms")
            }
            Self::SpanTooShort(span) => write!(
                f,
                "the clock lines span {:.1} s of host time; at least {:.0} s needed",
                span.as_secs_f64(),
                MIN_SPAN.as_secs_f64()
            ),
            Self::Drift(report) => write!(f, "the board's clock drifts: {report}"),
        }
    }
}

/// Compares the board's clock with the host's over `samples` (see the module docs).
fn judge(samples: &[Sample]) -> Result<Report, ClockError> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Err(ClockError::TooFewLines(samples.len()));
    };
    if samples.len() < 2 {
        return Err(ClockError::TooFewLines(samples.len()));
    }
    if let Some(pair) = samples.windows(2).find(|p| p[1].board_ms < p[0].board_ms) {
        return Err(ClockError::WentBack {
            from: pair[0].board_ms,
            to: pair[1].board_ms,
        });
    }
    let host = last.host - first.host;
    if host < MIN_SPAN {
        return Err(ClockError::SpanTooShort(host));
    }
    let report = Report {
        host,
        board: Duration::from_millis(last.board_ms - first.board_ms),
        lines: samples.len(),
    };
    if (report.ratio() - 1.0).abs() > TOLERANCE {
        return Err(ClockError::Drift(report));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(u64, u64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(host_ms, board_ms)| Sample {
                host: Duration::from_millis(host_ms),
                board_ms,
            })
            .collect()
    }

    #[test]
    fn a_clock_at_the_hosts_pace_passes() {
        let report = judge(&samples(&[(1_000, 5), (6_000, 5_010), (13_000, 12_005)])).unwrap();
        assert_eq!(report.board, Duration::from_secs(12));
        assert_eq!(report.host, Duration::from_secs(12));
        assert_eq!(report.lines, 3);
    }

    #[test]
    fn a_slow_clock_fails_with_its_figures() {
        // The SysTick-counting clock under load: 12 s of host time, 7 s on the board.
        let err = judge(&samples(&[(0, 0), (12_000, 7_000)])).unwrap_err();
        let ClockError::Drift(report) = err else {
            panic!("{err:?}")
        };
        assert!((report.ratio() - 7.0 / 12.0).abs() < 1e-9);
        assert!(err.to_string().contains("-41.67 %"), "{err}");
    }

    #[test]
    fn a_little_drift_is_within_tolerance_and_more_is_not() {
        assert!(judge(&samples(&[(0, 0), (10_000, 10_190)])).is_ok());
        assert!(judge(&samples(&[(0, 0), (10_000, 9_810)])).is_ok());
        assert!(judge(&samples(&[(0, 0), (10_000, 10_210)])).is_err());
    }

    #[test]
    fn a_clock_that_goes_back_fails() {
        // What a 32-bit clock does at the counter's wrap.
        let err = judge(&samples(&[(0, 170_000), (6_000, 176_000), (12_000, 3_000)]));
        assert_eq!(
            err,
            Err(ClockError::WentBack {
                from: 176_000,
                to: 3_000
            })
        );
    }

    #[test]
    fn the_wrap_is_crossed_only_by_lines_on_both_sides_of_it() {
        assert_eq!(WRAP_MS, 171_798);
        assert!(crosses_wrap(&samples(&[(0, 168_800), (12_000, 180_800)])));
        assert!(!crosses_wrap(&samples(&[(0, 0), (12_000, 12_000)])));
        assert!(!crosses_wrap(&samples(&[(0, 172_000), (12_000, 184_000)])));
    }

    #[test]
    fn short_runs_prove_nothing() {
        assert_eq!(judge(&samples(&[(0, 0)])), Err(ClockError::TooFewLines(1)));
        assert_eq!(
            judge(&samples(&[(0, 0), (5_000, 5_000)])),
            Err(ClockError::SpanTooShort(Duration::from_secs(5)))
        );
    }
}
