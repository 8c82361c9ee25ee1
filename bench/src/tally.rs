//! Counts of a client process: connections up, failed attempts grouped by reason, and
//! connections lost after they were up. Shared by every connection task of the process.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What happened to the connections of one process so far.
#[derive(Debug, Default)]
pub struct Tally {
    up: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    /// One connection is up (connected and, for ours, logged in).
    pub fn up(&self) {
        self.up.fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt failed for `reason`.
    pub fn failed(&self, reason: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.count_reason(reason);
    }

    /// A connection that was up ended for `reason`.
    pub fn lost(&self, reason: &str) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.count_reason(&format!("lost: {reason}"));
    }

    fn count_reason(&self, reason: &str) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        *reasons.entry(reason.to_string()).or_default() += 1;
    }

    /// Adds `n` connections that are up, counted elsewhere (by `broker load`'s device counters).
    pub fn add_up(&self, n: u64) {
        self.up.fetch_add(n, Ordering::Relaxed);
    }

    /// Attempts finished either way.
    pub fn finished(&self) -> u64 {
        self.up.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// The status line: `{"up":..,"failed":..,"lost":..,"reasons":{..}}`.
    pub fn json(&self) -> serde_json::Value {
        let reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "up": self.up.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "lost": self.lost.load(Ordering::Relaxed),
            "reasons": *reasons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_losses_are_counted_by_reason() {
        let t = Tally::default();
        t.up();
        t.up();
        t.failed("refused");
        t.failed("refused");
        t.lost("closed");
        assert_eq!(t.finished(), 4);
        let j = t.json();
        assert_eq!(j["up"], 2);
        assert_eq!(j["failed"], 2);
        assert_eq!(j["lost"], 1);
        assert_eq!(j["reasons"]["refused"], 2);
        assert_eq!(j["reasons"]["lost: closed"], 1);
    }
}
