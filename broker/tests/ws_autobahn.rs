//! The Autobahn WebSocket conformance cases against the comet's WebSocket stack.
//!
//! The broker is started with its test-only echo endpoint (`[conformance] ws_echo_listen`,
//! module `comet::echo`: the same tungstenite configuration, upgrade and close codes as the
//! device and app listeners) and `kosoku` (a Python wheel that runs the Autobahn case files,
//! installed into `.cache/autobahn-venv` by `scripts/bootstrap.sh`) drives every case against
//! it. Each case's verdict (`behavior`, `behaviorClose`) must equal the one committed in
//! `tests/autobahn/expected.json`: any change, better or worse, fails and names the cases, so a
//! dependency update that alters the stack's behaviour is seen. After a reviewed change,
//! `AUTOBAHN_UPDATE=1 cargo test -p broker --test suite ws_autobahn::` rewrites the file.
//!
//! Sections 12 and 13 (permessage-deflate) are reported `UNIMPLEMENTED` by kosoku; the
//! broker does not negotiate compression either (`broker/tests/ws_frames.rs`).

use crate::comet_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use broker::terminal::IdProfile;
use comet_support::*;
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Case id -> "behavior/behaviorClose", from a kosoku `index.json`.
fn verdicts(index: &Value) -> BTreeMap<String, String> {
    let agents = index.as_object().expect("index.json is an object");
    assert_eq!(agents.len(), 1, "one agent in the report");
    let cases = agents.values().next().unwrap().as_object().unwrap();
    cases
        .iter()
        .map(|(id, c)| {
            let verdict = format!(
                "{}/{}",
                c["behavior"].as_str().unwrap(),
                c["behaviorClose"].as_str().unwrap()
            );
            (id.clone(), verdict)
        })
        .collect()
}

/// Sorts case ids like "1.1.10" numerically, so the file reads in suite order.
fn case_key(id: &str) -> Vec<u32> {
    id.split('.')
        .map(|p| p.parse().unwrap_or(u32::MAX))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autobahn_cases_give_the_committed_verdicts() {
    let kosoku = std::env::var_os("KOSOKU")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/autobahn-venv/bin/kosoku"));
    assert!(
        kosoku.exists(),
        "{} is missing: run scripts/bootstrap.sh (it installs kosoku into .cache/autobahn-venv)",
        kosoku.display()
    );
    let b = TestBroker::start_with(IdProfile::Plug, |c| {
        c.conformance.ws_echo_listen = "127.0.0.1:0".to_owned();
    })
    .await;
    let echo = b.running.comet.ws_echo.expect("the echo endpoint is on");
    let out = tempfile::tempdir().unwrap();
    let outdir = out.path().to_path_buf();
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(&kosoku)
            .arg("--parallelism")
            .arg("2")
            .arg("--outdir")
            .arg(&outdir)
            .arg(format!("ws://{echo}"))
            .status()
            .expect("kosoku runs")
    })
    .await
    .unwrap();
    println!("kosoku: {status} after {:?}", started.elapsed());
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("index.json")).expect("kosoku wrote index.json"),
    )
    .unwrap();
    let mut got: Vec<(String, String)> = verdicts(&index).into_iter().collect();
    got.sort_by_key(|(id, _)| case_key(id));
    let mut tally = BTreeMap::new();
    for (_, v) in &got {
        *tally.entry(v.clone()).or_insert(0u32) += 1;
    }
    println!("{} cases: {tally:?}", got.len());

    let expected_path = workspace().join("tests/autobahn/expected.json");
    if std::env::var_os("AUTOBAHN_UPDATE").is_some() {
        let mut text = String::from("{\n");
        for (i, (id, v)) in got.iter().enumerate() {
            let comma = if i + 1 < got.len() { "," } else { "" };
            text.push_str(&format!("  \"{id}\": \"{v}\"{comma}\n"));
        }
        text.push_str("}\n");
        std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
        std::fs::write(&expected_path, text).unwrap();
        println!("wrote {}", expected_path.display());
    }
    let expected: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(&expected_path).expect("tests/autobahn/expected.json exists"),
    )
    .unwrap();
    let got: BTreeMap<String, String> = got.into_iter().collect();
    let mut changed = Vec::new();
    for (id, want) in &expected {
        match got.get(id) {
            Some(v) if v == want => {}
            Some(v) => changed.push(format!("{id}: expected {want}, got {v}")),
            None => changed.push(format!("{id}: expected {want}, not run")),
        }
    }
    for (id, v) in &got {
        if !expected.contains_key(id) {
            changed.push(format!("{id}: new case, got {v}"));
        }
    }
    assert!(
        changed.is_empty(),
        "{} Autobahn verdicts differ from tests/autobahn/expected.json:\n{}",
        changed.len(),
        changed.join("\n")
    );
    assert!(got.len() > 400, "the whole suite ran ({} cases)", got.len());
    b.stop().await;
}
