//! What a load run measured: latency samples with percentiles, counters, and the report printed
//! at the end (text for people, JSON for scripts). Pure data: no I/O, no clock.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Latency samples in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Records one sample (saturating at about 71 minutes).
    pub fn record(&mut self, latency: Duration) {
        self.0
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Count, percentiles and maximum; `None` without samples.
    pub fn summary(mut self) -> Option<LatencySummary> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let at = |q: f64| millis(nearest_rank(&self.0, q));
        Some(LatencySummary {
            count: self.0.len() as u64,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: millis(self.0[self.0.len() - 1]),
        })
    }
}

/// The nearest-rank `q` quantile (0 < q <= 1) of ascending, non-empty `sorted`.
fn nearest_rank(sorted: &[u32], q: f64) -> u32 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(micros: u32) -> f64 {
    f64::from(micros) / 1000.0
}

/// Percentiles of one latency, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

/// What one simulated device saw.
#[derive(Debug, Default)]
pub struct DeviceOutcome {
    /// Login latency (HELLO sent to WELCOME received), when it logged in.
    pub login: Option<Duration>,
    /// Why it could not log in.
    pub login_failure: Option<String>,
    /// Logins started again after a REJECT for a stale CHALLENGE (`BAD_COOKIE` or
    /// `COOKIE_EXPIRED`: the broker answered an earlier HELLO of this device late).
    pub login_retries: u64,
    /// Uploads sent (first transmissions).
    pub uploads_sent: u64,
    /// Uploads the broker acknowledged (durable).
    pub uploads_acked: u64,
    /// Uploads the broker refused with an `Error` (not resent), by code.
    pub uploads_refused: BTreeMap<String, u64>,
    /// Upload sent to UploadAck received, per acknowledged upload.
    pub ack_latency: Latencies,
    /// Commands from the broker that were answered.
    pub commands_answered: u64,
    /// Why the session ended early (kicked, retransmission gave up, socket error).
    pub session_lost: Option<String>,
}

/// Broker memory (resident set) at the points a run samples it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MemorySamples {
    /// Before the first login, in KiB.
    pub before_kib: u64,
    /// Once every device finished logging in, in KiB.
    pub connected_kib: u64,
    /// At the end of the steady phase, in KiB.
    pub end_kib: u64,
}

impl MemorySamples {
    /// Resident memory added per logged-in session, in bytes (`None` without sessions).
    pub fn per_session_bytes(&self, sessions: u64) -> Option<u64> {
        (sessions > 0).then(|| self.connected_kib.saturating_sub(self.before_kib) * 1024 / sessions)
    }
}

/// The summary of a whole run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Devices started.
    pub devices: u64,
    /// Devices that logged in.
    pub logged_in: u64,
    /// Login failures by reason.
    pub login_failures: BTreeMap<String, u64>,
    /// Logins started again after a REJECT for a stale CHALLENGE (each device retries within
    /// its login timeout; see [`DeviceOutcome::login_retries`]).
    pub login_retries: u64,
    /// Achieved login rate over the ramp, per second.
    pub logins_per_sec: f64,
    /// Login latency.
    pub login_latency: Option<LatencySummary>,
    /// Uploads sent.
    pub uploads_sent: u64,
    /// Uploads acknowledged.
    pub uploads_acked: u64,
    /// Uploads refused with an `Error`, by code (e.g. `RATE_LIMITED`).
    pub uploads_refused: BTreeMap<String, u64>,
    /// Acknowledged uploads per second over the measured window.
    pub acked_per_sec: f64,
    /// Upload acknowledgement latency.
    pub ack_latency: Option<LatencySummary>,
    /// Commands answered.
    pub commands_answered: u64,
    /// Sessions that ended early, by reason.
    pub sessions_lost: BTreeMap<String, u64>,
    /// Seconds from the first login to the end of the steady phase.
    pub elapsed_secs: f64,
    /// Broker memory, when a broker PID was given.
    pub memory: Option<MemorySamples>,
    /// Resident bytes per session (from `memory`).
    pub bytes_per_session: Option<u64>,
    /// The Ping flood's figures (`--pings-in-flight`).
    pub pings: Option<PingFlood>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

/// What a Ping flood measured over the steady phase.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PingFlood {
    /// Pongs received.
    pub pongs: u64,
    /// Seconds measured over.
    pub secs: f64,
    /// Pongs per second.
    pub pongs_per_sec: f64,
    /// Broker CPU seconds (user + system) over the same time, when its PID was given.
    pub broker_cpu_secs: Option<f64>,
    /// Pongs per second of broker CPU time.
    pub pongs_per_broker_core_sec: Option<f64>,
}

impl PingFlood {
    /// Figures from `pongs` received over `took`, while the broker used `broker_ticks`.
    pub fn new(pongs: u64, took: Duration, broker_ticks: Option<u64>) -> PingFlood {
        let secs = took.as_secs_f64();
        let broker_cpu_secs = broker_ticks.map(|t| t as f64 / TICKS_PER_SEC);
        PingFlood {
            pongs,
            secs,
            pongs_per_sec: if secs > 0.0 { pongs as f64 / secs } else { 0.0 },
            broker_cpu_secs,
            pongs_per_broker_core_sec: broker_cpu_secs
                .filter(|c| *c > 0.0)
                .map(|c| pongs as f64 / c),
        }
    }
}

impl Report {
    /// Folds the device outcomes of a run into a report. `ramp` is how long logging everyone in
    /// took; `window` is the time uploads were measured over.
    pub fn new(
        outcomes: Vec<DeviceOutcome>,
        ramp: Duration,
        window: Duration,
        elapsed: Duration,
        memory: Option<MemorySamples>,
    ) -> Report {
        let devices = outcomes.len() as u64;
        let mut logins = Latencies::default();
        let mut acks = Latencies::default();
        let mut login_failures = BTreeMap::new();
        let mut sessions_lost = BTreeMap::new();
        let mut refused = BTreeMap::new();
        let (mut sent, mut acked, mut answered, mut retries) = (0, 0, 0, 0);
        for o in outcomes {
            retries += o.login_retries;
            if let Some(l) = o.login {
                logins.record(l);
            }
            if let Some(why) = o.login_failure {
                *login_failures.entry(why).or_insert(0) += 1;
            }
            if let Some(why) = o.session_lost {
                *sessions_lost.entry(why).or_insert(0) += 1;
            }
            sent += o.uploads_sent;
            acked += o.uploads_acked;
            for (code, n) in o.uploads_refused {
                *refused.entry(code).or_insert(0) += n;
            }
            answered += o.commands_answered;
            acks.merge(o.ack_latency);
        }
        let logged_in = logins.0.len() as u64;
        let per_sec = |n: u64, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            }
        };
        Report {
            devices,
            logged_in,
            login_failures,
            login_retries: retries,
            logins_per_sec: per_sec(logged_in, ramp),
            login_latency: logins.summary(),
            uploads_sent: sent,
            uploads_acked: acked,
            uploads_refused: refused,
            acked_per_sec: per_sec(acked, window),
            ack_latency: acks.summary(),
            commands_answered: answered,
            sessions_lost,
            elapsed_secs: elapsed.as_secs_f64(),
            bytes_per_session: memory.and_then(|m| m.per_session_bytes(logged_in)),
            memory,
            pings: None,
        }
    }

    /// Whether the broker refused logins or frames with RATE_LIMITED: its default `[limits]`
    /// protect it from exactly the load a load test offers.
    pub fn rate_limited(&self) -> bool {
        self.login_failures
            .keys()
            .chain(self.sessions_lost.keys())
            .chain(self.uploads_refused.keys())
            .any(|why| why.contains("RATE_LIMITED"))
    }

    /// True when every device logged in, no session was lost and every upload was acknowledged.
    pub fn clean(&self) -> bool {
        self.logged_in == self.devices
            && self.sessions_lost.is_empty()
            && self.uploads_acked == self.uploads_sent
    }
}

/// What to do about RATE_LIMITED refusals in a load test.
pub const RATE_LIMIT_HINT: &str = "hint: RATE_LIMITED is the broker's [limits] at work \
    (login_attempts_per_ip_per_sec, max_connections_per_ip, frames_per_sec_per_terminal): all \
    simulated devices share one address, so raise them in the broker's config for a load test \
    (docs/performance.md, \"Running a load test\")";

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "devices: {} started, {} logged in ({:.0} logins/s)",
            self.devices, self.logged_in, self.logins_per_sec
        )?;
        for (why, n) in &self.login_failures {
            writeln!(f, "  login failed x{n}: {why}")?;
        }
        if self.login_retries > 0 {
            writeln!(
                f,
                "  logins started again after a late CHALLENGE was refused: {}",
                self.login_retries
            )?;
        }
        if self.rate_limited() {
            writeln!(f, "  {RATE_LIMIT_HINT}")?;
        }
        if let Some(l) = &self.login_latency {
            writeln!(f, "login latency: {l}")?;
        }
        writeln!(
            f,
            "uploads: {} sent, {} acknowledged ({:.0}/s)",
            self.uploads_sent, self.uploads_acked, self.acked_per_sec
        )?;
        for (code, n) in &self.uploads_refused {
            writeln!(f, "  upload refused x{n}: {code}")?;
        }
        if let Some(l) = &self.ack_latency {
            writeln!(f, "upload ack latency: {l}")?;
        }
        if let Some(p) = &self.pings {
            write!(
                f,
                "pings: {} pongs in {:.1} s ({:.0}/s)",
                p.pongs, p.secs, p.pongs_per_sec
            )?;
            match (p.broker_cpu_secs, p.pongs_per_broker_core_sec) {
                (Some(c), Some(r)) => writeln!(
                    f,
                    "; broker CPU {c:.2} s, {r:.0} pongs per broker core-second"
                )?,
                _ => writeln!(f)?,
            }
        }
        if self.commands_answered > 0 {
            writeln!(f, "commands answered: {}", self.commands_answered)?;
        }
        for (why, n) in &self.sessions_lost {
            writeln!(f, "  session lost x{n}: {why}")?;
        }
        if let Some(m) = &self.memory {
            write!(
                f,
                "broker RSS: {:.1} MiB before, {:.1} MiB with {} sessions, {:.1} MiB at the end",
                m.before_kib as f64 / 1024.0,
                m.connected_kib as f64 / 1024.0,
                self.logged_in,
                m.end_kib as f64 / 1024.0
            )?;
            match self.bytes_per_session {
                Some(b) => writeln!(f, " (~{:.1} KiB per session)", b as f64 / 1024.0)?,
                None => writeln!(f)?,
            }
        }
        write!(f, "elapsed: {:.1} s", self.elapsed_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut l = Latencies::default();
        for n in 1..=100 {
            l.record(ms(n));
        }
        let s = l.summary().unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p90_ms, 90.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_no_summary() {
        let mut l = Latencies::default();
        l.record(Duration::from_micros(1500));
        let s = l.summary().unwrap();
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (1.5, 1.5, 1.5));
        assert_eq!(Latencies::default().summary(), None);
    }

    #[test]
    fn refused_uploads_are_summed_by_code_shown_and_hint_at_the_rate_limit() {
        let one = |code: &str, n: u64| DeviceOutcome {
            login: Some(ms(1)),
            uploads_sent: n,
            uploads_refused: [(code.to_string(), n)].into(),
            ..DeviceOutcome::default()
        };
        let outcomes = vec![
            one("RATE_LIMITED", 2),
            one("RATE_LIMITED", 3),
            one("QUEUE_FULL", 1),
        ];
        let r = Report::new(outcomes, ms(500), ms(2000), ms(2500), None);
        assert_eq!(r.uploads_refused.get("RATE_LIMITED"), Some(&5));
        assert_eq!(r.uploads_refused.get("QUEUE_FULL"), Some(&1));
        assert!(
            r.rate_limited(),
            "a RATE_LIMITED refusal points at [limits]"
        );
        assert!(!r.clean(), "refused uploads were not acknowledged");
        let text = r.to_string();
        assert!(text.contains("upload refused x5: RATE_LIMITED"), "{text}");
    }

    #[test]
    fn the_report_folds_outcomes_and_rates() {
        let mut acks = Latencies::default();
        acks.record(ms(2));
        acks.record(ms(4));
        let ok = DeviceOutcome {
            login: Some(ms(1)),
            login_retries: 2,
            uploads_sent: 3,
            uploads_acked: 2,
            ack_latency: acks,
            ..DeviceOutcome::default()
        };
        let failed = DeviceOutcome {
            login_failure: Some("timeout".into()),
            ..DeviceOutcome::default()
        };
        let memory = MemorySamples {
            before_kib: 1000,
            connected_kib: 1002,
            end_kib: 1003,
        };
        let r = Report::new(vec![ok, failed], ms(500), ms(2000), ms(2500), Some(memory));
        assert_eq!((r.devices, r.logged_in), (2, 1));
        assert_eq!(r.logins_per_sec, 2.0);
        assert_eq!(r.login_failures.get("timeout"), Some(&1));
        assert_eq!(r.login_retries, 2);
        assert_eq!((r.uploads_sent, r.uploads_acked), (3, 2));
        assert_eq!(r.acked_per_sec, 1.0);
        assert_eq!(r.ack_latency.as_ref().unwrap().max_ms, 4.0);
        assert_eq!(r.bytes_per_session, Some(2048));
        assert!(
            !r.clean(),
            "a failed login and an unacknowledged upload are not clean"
        );
        let text = r.to_string();
        assert!(text.contains("login failed x1: timeout"), "{text}");
        assert!(
            text.contains("after a late CHALLENGE was refused: 2"),
            "{text}"
        );
        assert!(!text.contains("hint:"), "{text}");
        // Refused by the broker's limits: the report says which keys to raise.
        let limited = DeviceOutcome {
            login_failure: Some(format!(
                "rejected: {}",
                shared_protocol::codes::Code::RATE_LIMITED
            )),
            ..DeviceOutcome::default()
        };
        let limited = Report::new(vec![limited], ms(500), ms(2000), ms(2500), None);
        assert!(limited.rate_limited());
        let hint = limited.to_string();
        assert!(hint.contains("login_attempts_per_ip_per_sec"), "{hint}");
        assert!(text.contains("~2.0 KiB per session"), "{text}");
    }

    #[test]
    fn a_run_where_everything_arrived_is_clean() {
        let ok = DeviceOutcome {
            login: Some(ms(1)),
            uploads_sent: 1,
            uploads_acked: 1,
            ..DeviceOutcome::default()
        };
        let r = Report::new(vec![ok], ms(1), ms(1), ms(1), None);
        assert!(r.clean());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["uploads_acked"], 1);
        assert!(json["memory"].is_null());
    }
}
