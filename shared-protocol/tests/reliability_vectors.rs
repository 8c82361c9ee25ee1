//! Checks docs/vectors/reliability.json: the receiver rules of docs/protocol.md section 5,
//! written out by hand as arrival sequences with the verdict, deliveries and ack after each
//! frame, against [`RecvWindow`] driven as the broker (holding every early frame) and as the
//! device SDK (holding none) drive it.

use std::collections::BTreeSet;

use serde_json::Value;
use shared_protocol::reliability::{Ack, RecvOutcome, RecvWindow};

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/vectors/reliability.json"
);

/// Feeds `seq` to a receiver that holds early frames when `holds_all`; returns the verdict's
/// name in the vector file's words and the frames delivered, in order.
fn step(
    r: &mut RecvWindow,
    held: &mut BTreeSet<u32>,
    holds_all: bool,
    seq: u32,
) -> (&'static str, Vec<u32>) {
    match r.on_receive(seq, 0) {
        RecvOutcome::InOrder { released } => {
            let mut delivered = vec![seq];
            for next in seq + 1..=seq + released {
                assert!(held.remove(&next), "released {next} that was never held");
                delivered.push(next);
            }
            ("in_order", delivered)
        }
        RecvOutcome::Early if holds_all => {
            assert!(r.hold(seq));
            held.insert(seq);
            ("early_held", vec![])
        }
        RecvOutcome::Early => ("early_dropped", vec![]),
        RecvOutcome::Duplicate => ("duplicate", vec![]),
        RecvOutcome::OutOfWindow => ("out_of_window", vec![]),
        RecvOutcome::Unreliable => ("unreliable", vec![]),
    }
}

#[test]
fn receiver_matches_the_hand_written_vectors() {
    let text = std::fs::read_to_string(FILE).expect("docs/vectors/reliability.json");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let holds_all = match &case["holds"] {
            Value::String(s) if s == "all" => true,
            Value::Number(n) if n.as_u64() == Some(0) => false,
            other => panic!("{name}: holds {other}"),
        };
        let mut r = RecvWindow::new();
        let mut held = BTreeSet::new();
        for (i, s) in case["steps"].as_array().unwrap().iter().enumerate() {
            let seq = s["seq"].as_u64().unwrap() as u32;
            let (verdict, delivered) = step(&mut r, &mut held, holds_all, seq);
            let want: Vec<u32> = s["delivered"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let ack = Ack {
                next: s["ack"]["next"].as_u64().unwrap() as u32,
                mask: s["ack"]["mask"].as_u64().unwrap() as u32,
            };
            assert_eq!(verdict, s["verdict"].as_str().unwrap(), "{name}, step {i}");
            assert_eq!(delivered, want, "{name}, step {i}");
            assert_eq!(r.ack(), ack, "{name}, step {i}");
        }
    }
}
