//! Side-by-side AEAD benchmark: sealing and opening a 64-byte DATA plaintext with this crate's
//! session code and with `ring` in the same run, on the same machine, at the same load.
//!
//! Measured, for a 64-byte plaintext under the 14-byte DATA header as associated data:
//! * `session`: [`SecureSession::seal`] / [`SecureSession::open_in_place`], exactly what the
//!   broker calls per packet (header, replay window, AEAD), on the backend the `fast-aead`
//!   feature selects (`shared_protocol::aead::SessionAead`);
//! * `rustcrypto`: the portable backend's `chacha20poly1305` calls alone, with the cipher keyed
//!   once; the cost of keying it (`key once`), to see what per-packet keying would add; and its
//!   Poly1305 alone over the 96 bytes one such packet authenticates, to see its share;
//! * `ring`: `ring::aead::LessSafeKey` keyed once, the reference the target is stated against,
//!   and the cost of keying it (`key once`), which the `fast-aead` backend pays per packet.
//!
//! After criterion's own report it prints a summary: the median ns/op of each case, the ratios
//! session/ring, the CPU model, the core count and the load average before and after (the
//! machine is shared, so the ratios are the point, not the absolute times).
//!
//! Run: `cargo bench -p shared-protocol --bench aead` (figures in docs/performance.md).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce};
use criterion::Criterion;
use poly1305::Poly1305;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, UnboundKey};
use shared_protocol::keys::{DirectionKey, SessionKeys};
use shared_protocol::session::{OVERHEAD, Role, SecureSession};

const PLAINTEXT: usize = 64;
const HEADER: usize = 14;
const KEY: [u8; 32] = [0x42; 32];

/// Median ns/op of every sample of every case, filled by [`timed`].
type Samples = RefCell<BTreeMap<&'static str, Vec<f64>>>;

/// Runs one criterion case whose routine times itself (`iters` operations, returns the elapsed
/// time) and also keeps each sample's ns/op for the summary.
fn timed(
    c: &mut Criterion,
    samples: &Samples,
    name: &'static str,
    mut run: impl FnMut(u64) -> Duration,
) {
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let took = run(iters);
            let per_op = took.as_nanos() as f64 / iters.max(1) as f64;
            samples.borrow_mut().entry(name).or_default().push(per_op);
            took
        })
    });
}

fn session_pair() -> (SecureSession, SecureSession) {
    let keys = SessionKeys {
        d2b: DirectionKey(KEY),
        b2d: DirectionKey([0x24; 32]),
    };
    (
        SecureSession::new(Role::Device, 9, &keys),
        SecureSession::new(Role::Broker, 9, &keys),
    )
}

fn ring_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).expect("32-byte key"))
}

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

fn cases(c: &mut Criterion, samples: &Samples) {
    let plain = [0x5Au8; PLAINTEXT];
    let aad = [0x02u8; HEADER];

    timed(c, samples, "session seal 64 B", |iters| {
        let (mut device, _) = session_pair();
        let mut out = [0u8; PLAINTEXT + OVERHEAD];
        let start = Instant::now();
        for _ in 0..iters {
            black_box(device.seal(black_box(&plain), &mut out).expect("seal"));
        }
        start.elapsed()
    });
    timed(c, samples, "session open 64 B", |iters| {
        // Each packet opens once (replay window): seal them all first, outside the timing.
        let (mut device, mut broker) = session_pair();
        let mut packets = vec![[0u8; PLAINTEXT + OVERHEAD]; iters as usize];
        for p in &mut packets {
            device.seal(&plain, p).expect("seal");
        }
        let start = Instant::now();
        for p in &mut packets {
            black_box(broker.open_in_place(black_box(p)).expect("open").len());
        }
        start.elapsed()
    });

    timed(c, samples, "rustcrypto seal 64 B", |iters| {
        let cipher = ChaCha20Poly1305::new(&KEY.into());
        let mut buf = [0u8; PLAINTEXT];
        let start = Instant::now();
        for i in 0..iters {
            buf.copy_from_slice(&plain);
            let tag = cipher
                .encrypt_inout_detached(
                    &Nonce::from(nonce_bytes(i)),
                    &aad,
                    InOutBuf::from(&mut buf[..]),
                )
                .expect("seal");
            black_box(tag);
        }
        start.elapsed()
    });
    timed(c, samples, "rustcrypto key once", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(ChaCha20Poly1305::new(black_box(&KEY.into())));
        }
        start.elapsed()
    });

    timed(c, samples, "rustcrypto poly1305 96 B", |iters| {
        // AAD padded to 16, the ciphertext, and the two lengths: what one packet's tag covers.
        let input = [0x33u8; 96];
        let start = Instant::now();
        for _ in 0..iters {
            let mac = Poly1305::new(black_box(&KEY.into()));
            black_box(mac.compute_unpadded(black_box(&input)));
        }
        start.elapsed()
    });

    timed(c, samples, "ring seal 64 B", |iters| {
        let key = ring_key();
        let mut buf = [0u8; PLAINTEXT];
        let start = Instant::now();
        for i in 0..iters {
            buf.copy_from_slice(&plain);
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(i));
            let tag = key
                .seal_in_place_separate_tag(nonce, Aad::from(&aad), &mut buf)
                .expect("seal");
            black_box(tag.as_ref()[0]);
        }
        start.elapsed()
    });
    timed(c, samples, "ring key once", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(ring_key());
        }
        start.elapsed()
    });
    timed(c, samples, "ring open 64 B", |iters| {
        let key = ring_key();
        let mut packets = vec![[0u8; PLAINTEXT + 16]; iters as usize];
        for (i, p) in packets.iter_mut().enumerate() {
            p[..PLAINTEXT].copy_from_slice(&plain);
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(i as u64));
            let tag = key
                .seal_in_place_separate_tag(nonce, Aad::from(&aad), &mut p[..PLAINTEXT])
                .expect("seal");
            p[PLAINTEXT..].copy_from_slice(tag.as_ref());
        }
        let start = Instant::now();
        for (i, p) in packets.iter_mut().enumerate() {
            let nonce = ring::aead::Nonce::assume_unique_for_key(nonce_bytes(i as u64));
            let opened = key
                .open_in_place(nonce, Aad::from(&aad), black_box(&mut p[..]))
                .expect("open");
            black_box(opened.len());
        }
        start.elapsed()
    });
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.into())
}

fn main() {
    let load_before = load_average();
    let samples = Samples::default();
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(40)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    cases(&mut c, &samples);
    c.final_summary();

    let mut samples = samples.into_inner();
    let mut medians = BTreeMap::new();
    for (name, v) in &mut samples {
        if !v.is_empty() {
            medians.insert(*name, median(v));
        }
    }
    println!();
    println!("AEAD summary ({PLAINTEXT}-byte plaintext, {HEADER}-byte AAD), median ns/op:");
    for (name, ns) in &medians {
        println!("  {name:<24} {ns:>9.1} ns");
    }
    for op in ["seal", "open"] {
        let ours = medians.get(format!("session {op} 64 B").as_str());
        let ring = medians.get(format!("ring {op} 64 B").as_str());
        if let (Some(ours), Some(ring)) = (ours, ring) {
            println!("  {op}: session / ring = {:.2}x", ours / ring);
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("  machine: {} ({cores} cores)", cpu_model());
    println!(
        "  load average (1/5/15 min): before {load_before}, after {}",
        load_average()
    );
}
