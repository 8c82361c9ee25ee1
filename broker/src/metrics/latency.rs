//! `broker_latency_seconds`: the broker's latency histograms, one per [`Op`], kept as fixed
//! bucket counters.
//!
//! Recording a latency is two relaxed atomic additions (its bucket's count and the sum), so
//! nothing is kept per sample and nothing has to be folded later: memory is the same after a
//! billion samples as after none, and a sample recorded while `/metrics` is being rendered is
//! never lost (it shows in this rendering or the next). The Prometheus exporter's own
//! histograms keep every sample in a list until a fold, and a sample pushed while a fold runs
//! can be dropped; these replace them for the one histogram family the broker has.
//!
//! [`LatencyHistograms::render`] writes the family in the Prometheus text format: cumulative
//! `_bucket{le=...}` lines, `_sum` and `_count`. The count is the sum of the bucket counts read
//! for that rendering, so `_count` always equals the `+Inf` bucket; the sum is read separately
//! and may include a sample the buckets of that rendering do not yet show.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds (100 us .. 30 s); a last bucket, `+Inf`, holds
/// the rest.
pub const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The family's name.
pub const FAMILY: &str = "broker_latency_seconds";

/// Operations whose latency is measured (`broker_latency_seconds{op=...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A push: store then fan out to online sessions.
    Push,
    /// A device upload made durable.
    Upload,
    /// HTTP-to-device command round trip.
    Command,
    /// Device-to-HTTP request round trip.
    DeviceRequest,
    /// A login (comet: from first packet to accepted).
    Login,
    /// Offline replay lookup at login.
    Replay,
}

impl Op {
    /// Every op, in the order the family is rendered.
    pub const ALL: [Op; 6] = [
        Op::Push,
        Op::Upload,
        Op::Command,
        Op::DeviceRequest,
        Op::Login,
        Op::Replay,
    ];

    /// The `op` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Push => "push",
            Op::Upload => "upload",
            Op::Command => "command",
            Op::DeviceRequest => "device_request",
            Op::Login => "login",
            Op::Replay => "replay",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One op's histogram: a count per bucket (not cumulative) and the sum in nanoseconds.
struct Histogram {
    /// `counts[i]` samples fell in bucket `i` (`BUCKETS[i-1] < value <= BUCKETS[i]`); the last
    /// one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// The latency histograms of every [`Op`] (see the module docs).
pub struct LatencyHistograms {
    /// Indexed by [`Op::index`].
    ops: [Histogram; Op::ALL.len()],
    /// [`BUCKETS`] in nanoseconds, for comparing a `Duration` without floating point.
    bounds_nanos: [u64; BUCKETS.len()],
}

impl Default for LatencyHistograms {
    fn default() -> Self {
        LatencyHistograms::new()
    }
}

impl LatencyHistograms {
    /// Empty histograms for every op.
    pub fn new() -> LatencyHistograms {
        LatencyHistograms {
            ops: std::array::from_fn(|_| Histogram::new()),
            bounds_nanos: BUCKETS.map(|s| (s * 1e9).round() as u64),
        }
    }

    /// Records one latency of `op`.
    pub fn record(&self, op: Op, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_nanos.partition_point(|&bound| bound < nanos);
        let histogram = &self.ops[op.index()];
        histogram.counts[bucket].fetch_add(1, Ordering::Relaxed);
        histogram.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Samples recorded for `op` so far.
    pub fn count(&self, op: Op) -> u64 {
        self.ops[op.index()]
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Appends the family to `out` in the Prometheus text format, `help` as its `# HELP` text.
    pub fn render(&self, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {FAMILY} {help}");
        let _ = writeln!(out, "# TYPE {FAMILY} histogram");
        for op in Op::ALL {
            let histogram = &self.ops[op.index()];
            let op = op.as_str();
            let mut cumulative = 0u64;
            for (i, count) in histogram.counts.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                match BUCKETS.get(i) {
                    Some(le) => {
                        let _ = writeln!(
                            out,
                            "{FAMILY}_bucket{{op=\"{op}\",le=\"{le}\"}} {cumulative}"
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "{FAMILY}_bucket{{op=\"{op}\",le=\"+Inf\"}} {cumulative}"
                        );
                    }
                }
            }
            let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{FAMILY}_sum{{op=\"{op}\"}} {sum}");
            let _ = writeln!(out, "{FAMILY}_count{{op=\"{op}\"}} {cumulative}");
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series line starting with `series ` in `text`.
    fn value(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
            .to_string()
    }

    #[test]
    fn a_latency_on_a_bound_counts_in_that_bucket_and_above_it_in_the_next() {
        let h = LatencyHistograms::new();
        h.record(Op::Command, Duration::from_micros(100));
        h.record(Op::Command, Duration::from_micros(101));
        h.record(Op::Command, Duration::from_secs(31));
        let mut text = String::new();
        h.render("help", &mut text);
        let bucket = |le: &str| {
            value(
                &text,
                &format!("broker_latency_seconds_bucket{{op=\"command\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.0001"), "1");
        assert_eq!(bucket("0.00025"), "2");
        assert_eq!(bucket("30"), "2");
        assert_eq!(bucket("+Inf"), "3");
        assert_eq!(
            value(&text, "broker_latency_seconds_count{op=\"command\"}"),
            "3"
        );
        assert_eq!(
            value(&text, "broker_latency_seconds_sum{op=\"command\"}"),
            "31.000201"
        );
        assert_eq!(h.count(Op::Command), 3);
        assert_eq!(h.count(Op::Push), 0);
    }

    #[test]
    fn every_op_is_rendered_with_help_and_type_even_when_empty() {
        let h = LatencyHistograms::new();
        let mut text = String::new();
        h.render("Latency of broker operations.", &mut text);
        assert!(text.starts_with(
            "# HELP broker_latency_seconds Latency of broker operations.\n\
             # TYPE broker_latency_seconds histogram\n"
        ));
        for op in Op::ALL {
            let op = op.as_str();
            assert_eq!(
                value(
                    &text,
                    &format!("broker_latency_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}}")
                ),
                "0"
            );
            assert_eq!(
                value(&text, &format!("broker_latency_seconds_sum{{op=\"{op}\"}}")),
                "0"
            );
        }
        // Bucket bounds, then +Inf, then sum and count, for each of the six ops.
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            6 * (BUCKETS.len() + 3) + 1
        );
    }

    #[test]
    fn an_overlong_latency_lands_in_the_last_bucket() {
        let h = LatencyHistograms::new();
        h.record(Op::Login, Duration::MAX);
        let mut text = String::new();
        h.render("help", &mut text);
        assert_eq!(
            value(
                &text,
                "broker_latency_seconds_bucket{op=\"login\",le=\"30\"}"
            ),
            "0"
        );
        assert_eq!(
            value(
                &text,
                "broker_latency_seconds_bucket{op=\"login\",le=\"+Inf\"}"
            ),
            "1"
        );
    }
}
