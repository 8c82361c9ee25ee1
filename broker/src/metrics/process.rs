//! The standard `process_*` metrics of the broker process, read from `/proc/self` each time
//! `/metrics` is rendered, in the names and types Prometheus client libraries use (so stock
//! dashboards work): resident and virtual memory, CPU seconds, open and maximum file
//! descriptors, threads and start time.
//!
//! They are rendered as text after the recorder's own families rather than recorded through
//! it, because `process_cpu_seconds_total` is a fractional counter (the recorder's counters are
//! integers). Reading three small files needs no crate. On a system without `/proc` (not
//! Linux) the families are left out rather than exported as made-up zeros.

use std::fmt::Write;

use super::catalog::{Family, Kind, Scope};

/// The process families, in the order they are rendered.
pub const FAMILIES: &[Family] = &[
    family(
        "process_cpu_seconds_total",
        Kind::Counter,
        "User and system CPU time spent, seconds.",
    ),
    family(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size, bytes.",
    ),
    family(
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory size, bytes.",
    ),
    family("process_open_fds", Kind::Gauge, "Open file descriptors."),
    family(
        "process_max_fds",
        Kind::Gauge,
        "Limit of open file descriptors (RLIMIT_NOFILE soft limit).",
    ),
    family("process_threads", Kind::Gauge, "OS threads."),
    family(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since the Unix epoch, seconds.",
    ),
];

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family {
        name,
        kind,
        scope: Scope::Always,
        help,
    }
}

/// One reading of the process figures (same order as [`FAMILIES`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: f64,
    /// `process_resident_memory_bytes`.
    pub resident_bytes: f64,
    /// `process_virtual_memory_bytes`.
    pub virtual_bytes: f64,
    /// `process_open_fds`.
    pub open_fds: f64,
    /// `process_max_fds`.
    pub max_fds: f64,
    /// `process_threads`.
    pub threads: f64,
    /// `process_start_time_seconds`.
    pub start_time_seconds: f64,
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on every Linux target).
const USER_HZ: f64 = 100.0;

impl Sample {
    /// Reads the figures of this process, or `None` where `/proc` cannot be read.
    pub fn read() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        Sample::parse(&stat, &status, &limits, &boot, open_fds)
    }

    /// The figures from the texts of `/proc/self/stat`, `/proc/self/status`,
    /// `/proc/self/limits` and `/proc/stat`, and the number of open descriptors.
    pub fn parse(
        stat: &str,
        status: &str,
        limits: &str,
        boot: &str,
        open_fds: f64,
    ) -> Option<Sample> {
        // Fields after the command name (which may hold spaces and parentheses): the first
        // is field 3 (`state`), so field N is at index N - 3.
        let after_comm = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let cpu_seconds = (field(14)? + field(15)?) / USER_HZ;
        let start_ticks = field(22)?;
        let kib = |key: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            let v: f64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
            Some(v * 1024.0)
        };
        let threads: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))?
            .trim()
            .parse()
            .ok()?;
        let max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::INFINITY);
        let btime: f64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(Sample {
            cpu_seconds,
            resident_bytes: kib("VmRSS:")?,
            virtual_bytes: kib("VmSize:")?,
            open_fds,
            max_fds,
            threads,
            start_time_seconds: btime + start_ticks / USER_HZ,
        })
    }

    /// Appends the families in the Prometheus text format to `out`.
    pub fn render(&self, out: &mut String) {
        let values = [
            self.cpu_seconds,
            self.resident_bytes,
            self.virtual_bytes,
            self.open_fds,
            self.max_fds,
            self.threads,
            self.start_time_seconds,
        ];
        for (family, value) in FAMILIES.iter().zip(values) {
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
            if value.is_infinite() {
                let _ = writeln!(out, "{} +Inf", family.name);
            } else {
                let _ = writeln!(out, "{} {}", family.name, value);
            }
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 12345 1000000 500 rest";
        let status = "Name:\tbroker\nVmSize:\t  20000 kB\nVmRSS:\t    3000 kB\nThreads:\t7\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 4096                 files\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\n";
        let s = Sample::parse(stat, status, limits, boot, 12.0).expect("parses");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.resident_bytes, 3000.0 * 1024.0);
        assert_eq!(s.virtual_bytes, 20000.0 * 1024.0);
        assert_eq!(s.open_fds, 12.0);
        assert_eq!(s.max_fds, 1024.0);
        assert_eq!(s.threads, 7.0);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 123.45);
        assert_eq!(Sample::parse("garbage", status, limits, boot, 1.0), None);
    }

    #[test]
    fn reads_this_process() {
        let s = Sample::read().expect("/proc is readable on Linux");
        assert!(s.resident_bytes > 0.0 && s.open_fds >= 3.0 && s.threads >= 1.0);
        let mut text = String::new();
        s.render(&mut text);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
    }
}
