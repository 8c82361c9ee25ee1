//! The pure half of `cargo xtask soak` (see [`crate::soak`]): the samples a run takes, the
//! pass criteria applied to them ([`Verdict`]), and the result files: a Markdown summary and an
//! SVG plot of resident memory and open file descriptors over time. Nothing here does I/O, so
//! the criteria and the plot are unit-tested on made-up samples.

use std::fmt::Write as _;

/// Largest drift allowed between the start and the end of the measured window, percent.
pub const FLAT_WITHIN_PERCENT: f64 = 5.0;

/// One sample of the broker process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the broker started.
    pub secs: f64,
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fds: u64,
    /// Errors so far: WARN/ERROR lines in the broker's log plus failures the load clients
    /// reported (failed logins, lost sessions, unacknowledged uploads).
    pub errors: u64,
}

/// How one series (RSS or fds) behaved over the measured window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Drift {
    /// Mean over the first fifth of the measured window.
    pub start: f64,
    /// Mean over the last fifth of the measured window.
    pub end: f64,
    /// Smallest and largest sample in the measured window.
    pub min: u64,
    /// Largest sample in the measured window.
    pub max: u64,
}

impl Drift {
    /// `(end - start) / start` in percent (positive: growth).
    pub fn percent(&self) -> f64 {
        if self.start == 0.0 {
            return 0.0;
        }
        (self.end - self.start) / self.start * 100.0
    }

    /// Whether the series stayed within [`FLAT_WITHIN_PERCENT`] (either direction).
    pub fn flat(&self) -> bool {
        self.percent().abs() <= FLAT_WITHIN_PERCENT
    }
}

/// The outcome of a run against the pass criteria.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Samples after warm-up.
    pub measured: usize,
    /// Resident memory over the measured window.
    pub rss: Drift,
    /// Open file descriptors over the measured window.
    pub fds: Drift,
    /// Errors counted in the first half of the measured window.
    pub errors_first_half: u64,
    /// Errors counted in the second half of the measured window.
    pub errors_second_half: u64,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

impl Verdict {
    /// Whether every criterion held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Applies the pass criteria to `samples` (in time order), ignoring those before `warmup_secs`:
/// RSS and fds each drift by at most [`FLAT_WITHIN_PERCENT`] between the first and the last
/// fifth of the measured window, and the second half of that window counts no more errors than
/// the first half. Fewer than 10 measured samples is a failure (too short to judge).
pub fn judge(samples: &[Sample], warmup_secs: f64) -> Verdict {
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.secs >= warmup_secs).collect();
    let mut failures = Vec::new();
    if measured.len() < 10 {
        failures.push(format!(
            "only {} samples after warm-up: run longer",
            measured.len()
        ));
    }
    let drift = |f: fn(&Sample) -> u64| -> Drift {
        let values: Vec<u64> = measured.iter().map(|s| f(s)).collect();
        let fifth = (values.len() / 5).max(1).min(values.len());
        let mean = |v: &[u64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<u64>() as f64 / v.len() as f64
            }
        };
        Drift {
            start: mean(&values[..fifth]),
            end: mean(&values[values.len() - fifth..]),
            min: values.iter().copied().min().unwrap_or(0),
            max: values.iter().copied().max().unwrap_or(0),
        }
    };
    let rss = drift(|s| s.rss_kib);
    let fds = drift(|s| s.fds);
    for (name, d) in [("RSS", rss), ("open fds", fds)] {
        if !d.flat() {
            failures.push(format!(
                "{name} drifted {:+.1}% ({:.0} -> {:.0}), more than {FLAT_WITHIN_PERCENT}%",
                d.percent(),
                d.start,
                d.end
            ));
        }
    }
    let (first_half, second_half) = match (measured.first(), measured.last()) {
        (Some(first), Some(last)) => {
            let mid_secs = (first.secs + last.secs) / 2.0;
            let mid = measured
                .iter()
                .rev()
                .find(|s| s.secs <= mid_secs)
                .map_or(first.errors, |s| s.errors);
            (mid - first.errors, last.errors - mid)
        }
        _ => (0, 0),
    };
    if second_half > first_half {
        failures.push(format!(
            "errors grew: {first_half} in the first half of the measured window, \
             {second_half} in the second"
        ));
    }
    Verdict {
        measured: measured.len(),
        rss,
        fds,
        errors_first_half: first_half,
        errors_second_half: second_half,
        failures,
    }
}

/// Smallest share of the offered upload rate the steady client must see acknowledged, percent.
pub const KEPT_UP_PERCENT: f64 = 95.0;

/// Largest 99th percentile of the steady client's upload acknowledgement latency, ms.
pub const KEPT_UP_P99_MS: f64 = 5_000.0;

/// Whether the broker kept up with the offered load (`None`) or why not. A broker that does
/// not keep up queues the excess (uploads waiting for the store writer, held by the client's
/// in-flight window), so its resident memory measures that backlog, not leaks: such a run is
/// a failure that says to lower the rate, whatever its RSS did.
pub fn kept_up(offered_per_sec: f64, acked_per_sec: f64, ack_p99_ms: f64) -> Option<String> {
    let share = if offered_per_sec > 0.0 {
        acked_per_sec / offered_per_sec * 100.0
    } else {
        100.0
    };
    (share < KEPT_UP_PERCENT || ack_p99_ms > KEPT_UP_P99_MS).then(|| {
        format!(
            "the broker did not keep up: {acked_per_sec:.0} uploads/s acknowledged of \
             {offered_per_sec:.0} offered ({share:.0}%, at least {KEPT_UP_PERCENT}% needed), ack \
             p99 {ack_p99_ms:.0} ms (at most {KEPT_UP_P99_MS} ms); its memory then holds a backlog, \
             so lower the rate (--connections, --upload-interval)"
        )
    })
}

/// One panel of the plot: label, top edge, the value plotted, line colour.
type Panel = (&'static str, f64, fn(&Sample) -> f64, &'static str);

/// An SVG plot: resident memory (MiB, top panel) and open file descriptors (bottom panel) over
/// minutes, with the warm-up shaded.
pub fn svg(samples: &[Sample], warmup_secs: f64, title: &str) -> String {
    const W: f64 = 800.0;
    const PANEL: f64 = 170.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    let end_secs = samples.last().map_or(1.0, |s| s.secs).max(1.0);
    let x = |secs: f64| LEFT + secs / end_secs * (W - LEFT - RIGHT);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="440" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="14">{}</text>"#,
        escape(title)
    );
    let panels: [Panel; 2] = [
        ("RSS, MiB", 40.0, |s| s.rss_kib as f64 / 1024.0, "#1f5fbf"),
        ("open fds", 240.0, |s| s.fds as f64, "#bf5f1f"),
    ];
    for (label, top, value, colour) in panels {
        let values: Vec<f64> = samples.iter().map(value).collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() {
            // Pad so a flat line sits mid-panel; never a zero range.
            let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(1.0);
            (lo - pad, hi + pad)
        } else {
            (0.0, 1.0)
        };
        let y = |v: f64| top + PANEL - (v - lo) / (hi - lo) * PANEL;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
            W - LEFT - RIGHT
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL}" fill="#eee"/>"##,
            x(warmup_secs.min(end_secs)) - LEFT
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{label}</text>"#,
            LEFT + 6.0,
            top + 14.0
        );
        for v in [lo, hi] {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"#,
                LEFT - 6.0,
                y(v) + 4.0
            );
        }
        let points: Vec<String> = samples
            .iter()
            .zip(&values)
            .map(|(s, v)| format!("{:.1},{:.1}", x(s.secs), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
    }
    let minutes = end_secs / 60.0;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="430">0</text><text x="{}" y="430" text-anchor="end">{minutes:.1} min (shaded: warm-up)</text>"#,
        W - RIGHT
    );
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize, rss: impl Fn(usize) -> u64, errors: impl Fn(usize) -> u64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                secs: i as f64 * 10.0,
                rss_kib: rss(i),
                fds: 120,
                errors: errors(i),
            })
            .collect()
    }

    #[test]
    fn a_broker_that_falls_behind_fails_the_run() {
        assert_eq!(kept_up(165.0, 164.0, 900.0), None);
        // The committed 25-minute run before the fix: acked nearly all, but seconds late.
        assert!(kept_up(330.0, 326.3, 14_939.6).is_some());
        // Falling behind the rate with a short tail.
        assert!(kept_up(330.0, 267.9, 1_000.0).is_some());
        assert_eq!(kept_up(0.0, 0.0, 0.0), None);
    }

    #[test]
    fn a_flat_run_after_warm_up_passes() {
        // Warm-up climbs from 10 MiB to 50 MiB, then it stays within 1%.
        let s = series(
            60,
            |i| {
                if i < 10 {
                    10_000 + i as u64 * 4_000
                } else {
                    50_000 + (i % 3) as u64 * 200
                }
            },
            |_| 0,
        );
        let v = judge(&s, 100.0);
        assert!(v.passed(), "{v:?}");
        assert_eq!(v.measured, 50);
        assert!(v.rss.percent().abs() < 1.0);
    }

    #[test]
    fn growth_over_five_percent_fails_and_names_the_series() {
        // 1% per sample after warm-up: a leak.
        let s = series(60, |i| 50_000 + i as u64 * 500, |_| 0);
        let v = judge(&s, 100.0);
        assert!(!v.passed());
        assert!(
            v.failures[0].starts_with("RSS drifted +"),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn errors_growing_in_the_second_half_fail() {
        let s = series(60, |_| 50_000, |i| if i > 40 { (i - 40) as u64 } else { 0 });
        let v = judge(&s, 100.0);
        assert_eq!((v.errors_first_half, v.errors_second_half), (0, 19));
        assert!(v.failures.iter().any(|f| f.starts_with("errors grew")));
        // A steady trickle (same count per half) is not growth.
        let s = series(61, |_| 50_000, |i| i as u64);
        assert!(judge(&s, 0.0).passed());
    }

    #[test]
    fn too_few_samples_is_no_pass() {
        let s = series(12, |_| 50_000, |_| 0);
        assert!(!judge(&s, 100.0).passed());
    }

    #[test]
    fn the_plot_has_both_series_and_every_sample() {
        let s = series(30, |i| 40_000 + i as u64, |_| 0);
        let text = svg(&s, 60.0, "soak <test>");
        assert!(text.starts_with("<svg"));
        assert_eq!(text.matches("<polyline").count(), 2);
        let first_line = text.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(first_line.matches(',').count(), 30);
        assert!(text.contains("soak &lt;test&gt;"));
    }
}
