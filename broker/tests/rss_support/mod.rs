//! The test process's resident memory, for tests that bound how much a workload makes it
//! grow (`metrics_latency`, `ws_frames`).

/// The process's resident set size (`VmRSS` in `/proc/self/status`), KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
