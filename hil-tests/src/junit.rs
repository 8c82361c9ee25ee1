//! JUnit XML for CI: one `<testsuite>` per rig and transport, one `<testcase>` per scenario
//! step, the board's log in the suite's `<system-out>`.

use std::fmt::Write;
use std::time::Duration;

use crate::scenario::{Case, Outcome};

/// One rig × transport run.
#[derive(Debug, Clone)]
pub struct Suite {
    /// `<rig>/<transport>`, or `<rig>` for set-up failures.
    pub name: String,
    /// Its steps.
    pub cases: Vec<Case>,
    /// Wall time of the whole run (boot, steps, stop).
    pub time: Duration,
    /// The board's log.
    pub system_out: String,
}

impl Suite {
    /// Failed cases.
    pub fn failures(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
            .count()
    }

    /// Skipped cases.
    pub fn skipped(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Skip(_)))
            .count()
    }
}

/// Escapes text for XML attributes and content (control characters other than tab and
/// newline, invalid in XML 1.0, become `?`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The whole report.
pub fn render(suites: &[Suite]) -> String {
    let tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(Suite::failures).sum();
    let skipped: usize = suites.iter().map(Suite::skipped).sum();
    let time: f64 = suites.iter().map(|s| s.time.as_secs_f64()).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"hil\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">"
    );
    for s in suites {
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
            escape(&s.name),
            s.cases.len(),
            s.failures(),
            s.skipped(),
            s.time.as_secs_f64()
        );
        for c in &s.cases {
            let _ = write!(
                x,
                "    <testcase classname=\"hil.{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&s.name),
                escape(&c.name),
                c.time.as_secs_f64()
            );
            match &c.outcome {
                Outcome::Pass if c.detail.is_empty() => x.push_str("/>\n"),
                Outcome::Pass => {
                    let _ = writeln!(
                        x,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        escape(&c.detail)
                    );
                }
                Outcome::Fail(m) => {
                    let _ = writeln!(
                        x,
                        ">\n      <failure message=\"{}\"/>\n    </testcase>",
                        escape(m)
                    );
                }
                Outcome::Skip(m) => {
                    let _ = writeln!(
                        x,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        escape(m)
                    );
                }
            }
        }
        let _ = writeln!(x, "    <system-out>{}</system-out>", escape(&s.system_out));
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Lines of a failing suite's logs shown in the summary.
pub const SUMMARY_LOG_LINES: usize = 60;

/// The readable summary: one line per case, a total, and for every suite with a failure its
/// failure messages and the last [`SUMMARY_LOG_LINES`] lines of its logs.
pub fn summary(suites: &[Suite], elapsed: Duration, run_dir: &std::path::Path) -> String {
    let mut x = String::from("== HIL summary ==\n");
    for s in suites {
        for c in &s.cases {
            let (mark, text) = match &c.outcome {
                Outcome::Pass => ("ok  ", c.detail.as_str()),
                Outcome::Fail(m) => ("FAIL", m.as_str()),
                Outcome::Skip(m) => ("skip", m.as_str()),
            };
            let _ = writeln!(
                x,
                "{mark} {} :: {} ({:.2} s) {text}",
                s.name,
                c.name,
                c.time.as_secs_f32()
            );
        }
    }
    let cases: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(Suite::failures).sum();
    let skipped: usize = suites.iter().map(Suite::skipped).sum();
    let _ = writeln!(
        x,
        "{} suites, {cases} cases: {} passed, {failures} failed, {skipped} skipped in {:.1} s; logs and report in {}",
        suites.len(),
        cases - failures - skipped,
        elapsed.as_secs_f32(),
        run_dir.display()
    );
    if suites.iter().any(|s| s.failures() > 0) {
        let _ = writeln!(
            x,
            "the brokers' log: {}",
            run_dir.join("broker.log").display()
        );
    }
    for s in suites.iter().filter(|s| s.failures() > 0) {
        let _ = writeln!(x, "\n== FAILED: {} ==", s.name);
        for c in &s.cases {
            if let Outcome::Fail(m) = &c.outcome {
                let _ = writeln!(x, "  {}: {m}", c.name);
            }
        }
        let lines: Vec<&str> = s.system_out.lines().collect();
        let _ = writeln!(
            x,
            "  -- logs (last {} of {} lines) --",
            SUMMARY_LOG_LINES.min(lines.len()),
            lines.len()
        );
        for l in &lines[lines.len().saturating_sub(SUMMARY_LOG_LINES)..] {
            let _ = writeln!(x, "  | {l}");
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, outcome: Outcome) -> Case {
        Case {
            name: name.into(),
            outcome,
            time: Duration::from_millis(1500),
            detail: String::new(),
        }
    }

    #[test]
    fn counts_and_escapes() {
        let suites = [Suite {
            name: "qemu/udp".into(),
            cases: vec![
                case("logs in", Outcome::Pass),
                case("relay <set>", Outcome::Fail("got \"off\" & more".into())),
                case("uploads", Outcome::Skip("after failed".into())),
            ],
            time: Duration::from_secs(3),
            system_out: "log\u{1}line".into(),
        }];
        let xml = render(&suites);
        assert!(xml.contains(
            "<testsuites name=\"hil\" tests=\"3\" failures=\"1\" skipped=\"1\" time=\"3.000\">"
        ));
        assert!(xml.contains("name=\"relay &lt;set&gt;\" time=\"1.500\""));
        assert!(xml.contains("<failure message=\"got &quot;off&quot; &amp; more\"/>"));
        assert!(xml.contains("<skipped message=\"after failed\"/>"));
        assert!(xml.contains("<system-out>log?line</system-out>"));
        assert!(xml.contains("name=\"logs in\" time=\"1.500\"/>"));
        let text = summary(&suites, Duration::from_secs(4), std::path::Path::new("/r"));
        assert!(text.contains("FAIL qemu/udp :: relay <set>"), "{text}");
        assert!(
            text.contains("3 cases: 1 passed, 1 failed, 1 skipped"),
            "{text}"
        );
        assert!(
            text.contains("== FAILED: qemu/udp ==") && text.contains("  | log\u{1}line"),
            "{text}"
        );
    }
}
