//! The latency histograms lose no sample and keep nothing per sample.
//!
//! Two threads record a broker-sized stream of latency samples (4 million) while a third
//! renders `/metrics` over and over, as a scraper would. Every sample must be counted in the
//! final rendering (`_count` and the `+Inf` bucket), the bucket counts must add up to the
//! samples each bucket was given, and the process's resident memory must grow by less than
//! 4 MB: keeping even 8 bytes per sample would take 32 MB. The exporter's own histograms,
//! which the broker used before, kept about 16 bytes per sample until a fold and could drop a
//! sample recorded during one.

mod rss_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use broker::metrics::{Metrics, Op};
use rss_support::rss_kib;

/// Samples recorded by each recording thread.
const PER_THREAD: u64 = 2_000_000;
/// Recording threads.
const THREADS: u64 = 2;

/// The value of series `series` in exposition `text`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in the exposition"))
}

#[test]
fn every_sample_recorded_during_scrapes_is_counted_and_none_is_kept() {
    let metrics = Metrics::new();
    // One rendering first, so the allocations every rendering makes are already counted.
    let _ = metrics.render();
    let before = rss_kib();
    let recording = Arc::new(AtomicBool::new(true));
    let scraper = {
        let (metrics, recording) = (metrics.clone(), recording.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0u32;
            while recording.load(Ordering::Relaxed) {
                let _ = metrics.render();
                scrapes += 1;
            }
            scrapes
        })
    };
    let recorders: Vec<_> = (0..THREADS)
        .map(|_| {
            let metrics = metrics.clone();
            std::thread::spawn(move || {
                // 0, 1, ..., 4 ms: half the samples at or under 2 ms, the rest above 2.5 ms.
                for i in 0..PER_THREAD {
                    metrics.latency(Op::Upload, Duration::from_millis(i % 5));
                }
            })
        })
        .collect();
    for r in recorders {
        r.join().unwrap();
    }
    recording.store(false, Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    let grown = rss_kib().saturating_sub(before);
    let text = metrics.render();
    let samples = (PER_THREAD * THREADS) as f64;
    eprintln!("{samples} samples during {scrapes} scrapes; RSS grew by {grown} KiB");
    assert!(scrapes > 1, "the scraper rendered {scrapes} times");
    assert_eq!(
        value(&text, "broker_latency_seconds_count{op=\"upload\"}"),
        samples
    );
    assert_eq!(
        value(
            &text,
            "broker_latency_seconds_bucket{op=\"upload\",le=\"+Inf\"}"
        ),
        samples
    );
    // 0 ms, 1 ms and 2 ms fall at or under 2.5 ms; 3 ms and 4 ms above it.
    assert_eq!(
        value(
            &text,
            "broker_latency_seconds_bucket{op=\"upload\",le=\"0.0025\"}"
        ),
        samples * 3.0 / 5.0
    );
    // Sum: each thread records 400,000 rounds of 0+1+2+3+4 ms.
    let sum = value(&text, "broker_latency_seconds_sum{op=\"upload\"}");
    assert!((sum - samples * 0.002).abs() < 1e-6, "sum {sum}");
    assert_eq!(metrics.latency_count(Op::Upload), PER_THREAD * THREADS);
    assert_eq!(metrics.latency_count(Op::Login), 0);
    assert!(
        grown < 4 * 1024,
        "RSS grew by {grown} KiB for {samples} samples"
    );
}
