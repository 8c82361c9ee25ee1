//! The services `cargo xtask services up` started, as the tests that use them read them: the
//! KEY=VALUE lines of `.cache/services/env` (addresses and URLs of Redis, RabbitMQ nodes,
//! ZooKeeper). Shared by every service test binary.

use std::collections::BTreeMap;

/// The service environment; panics, naming the fix, when a key in `required` is missing (the
/// services are not up).
pub fn require(required: &[&str]) -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../.cache/services/env");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let env = parse(&text);
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !env.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "services are not running: run `cargo xtask services up` first ({path} has no {})",
        missing.join(", ")
    );
    env
}

fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
