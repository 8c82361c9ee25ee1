//! Keeps `docs/protocol.md` in step with the code and the vectors, so the document cannot drift.
//!
//! * Every byte example in the document is a fenced block preceded by a marker
//!   `<!-- hex: FILE#PATH -->` naming a hex string in `docs/vectors/FILE` (PATH: dot-separated
//!   object keys, array indexes or case names). The block's bytes (hex pairs left of the first
//!   double space on each line, `hh x N` repeating a byte) must equal that string; frame and
//!   packet examples must also decode and re-encode to the same bytes. `<!-- text: ... -->`
//!   blocks must equal the string verbatim. A block that looks like a hex example but has no
//!   marker fails the test, and every frame and packet vector must be shown in the document.
//! * The section 8 table lists exactly the constants of `src/limits.rs`, with their values.
//! * The section 9 tables list exactly the codes of `src/codes.rs`: number, name, class, retry
//!   flag and meaning (the doc comment); the range table matches `Code::class` for every u16.
//! * The section 4 variant table matches `Body` (index, name, reliability) and the field names
//!   of the frame vectors.
//! * (feature `json`) The section 7.2 examples decode, re-encode to the same text, and are cases
//!   of `docs/vectors/json.json`; every JSON message type there has an example in the table.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shared_protocol::codes::{Class, Code};
use shared_protocol::frame::Frame;
use shared_protocol::limits;
use shared_protocol::packet::Packet;

const DOC: &str = include_str!("../../docs/protocol.md");
const LIMITS_RS: &str = include_str!("../src/limits.rs");
const CODES_RS: &str = include_str!("../src/codes.rs");
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vectors/");

fn vector_file(name: &str) -> Value {
    let path = format!("{VECTORS}{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Follows `a.b.0.name` through objects, array indexes and arrays of named cases.
fn select<'v>(mut v: &'v Value, path: &str) -> &'v Value {
    for part in path.split('.') {
        v = match v {
            Value::Object(m) => m.get(part),
            Value::Array(a) => match part.parse::<usize>() {
                Ok(i) => a.get(i),
                Err(_) => a.iter().find(|c| c["name"] == part),
            },
            _ => None,
        }
        .unwrap_or_else(|| panic!("no {part} in path {path}"));
    }
    v
}

/// The lines of the `##` section whose heading starts with `heading`.
fn section(heading: &str) -> Vec<&'static str> {
    let mut lines = DOC.lines().skip_while(|l| !l.starts_with(heading));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no section {heading}"));
    let level = first.chars().take_while(|c| *c == '#').count();
    lines
        .take_while(|l| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            !(hashes > 0 && hashes <= level && l[hashes..].starts_with(' '))
        })
        .collect()
}

/// Table rows (cells trimmed) of `lines`, header and separator rows excluded.
fn rows(lines: &[&str]) -> Vec<Vec<String>> {
    lines
        .iter()
        .filter(|l| l.starts_with('|') && !l.starts_with("|-") && !l.starts_with("| -"))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

fn unquote(cell: &str) -> &str {
    cell.trim().trim_matches('`')
}

// ---- byte examples ----

fn is_hex_byte(s: &str) -> bool {
    s.len() == 2
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// The bytes of one annotated line: hex pairs before the first double space; `hh x N`.
fn line_bytes(line: &str) -> Vec<u8> {
    let spec = line.split("  ").next().unwrap_or("");
    let tokens: Vec<&str> = spec.split(' ').filter(|t| !t.is_empty()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        if t == "x" {
            let count: usize = tokens
                .get(i + 1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad repeat in {line:?}"));
            let last = *out
                .last()
                .unwrap_or_else(|| panic!("repeat of nothing: {line:?}"));
            out.extend(std::iter::repeat_n(last, count - 1));
            i += 2;
        } else {
            assert!(is_hex_byte(t), "not a hex byte {t:?} in {line:?}");
            out.push(u8::from_str_radix(t, 16).unwrap());
            i += 1;
        }
    }
    out
}

fn looks_like_hex_example(first_line: &str) -> bool {
    first_line
        .split("  ")
        .next()
        .is_some_and(|spec| spec.split(' ').next().is_some_and(is_hex_byte))
}

struct Example {
    kind: &'static str,
    target: String,
    body: Vec<&'static str>,
}

/// Every fenced block, with the marker on the line before it (if any).
fn examples() -> (Vec<Example>, Vec<Vec<&'static str>>) {
    let lines: Vec<&str> = DOC.lines().collect();
    let mut marked = Vec::new();
    let mut unmarked = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].starts_with("```") {
            let start = i + 1;
            let mut end = start;
            while !lines[end].starts_with("```") {
                end += 1;
            }
            let body = lines[start..end].to_vec();
            let marker = i
                .checked_sub(1)
                .map(|p| lines[p].trim())
                .and_then(|p| p.strip_prefix("<!-- "))
                .and_then(|p| p.strip_suffix(" -->"));
            match marker.and_then(|m| m.split_once(": ")) {
                Some(("hex", target)) => marked.push(Example {
                    kind: "hex",
                    target: target.to_owned(),
                    body,
                }),
                Some(("text", target)) => marked.push(Example {
                    kind: "text",
                    target: target.to_owned(),
                    body,
                }),
                _ => unmarked.push(body),
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    (marked, unmarked)
}

#[test]
fn every_byte_example_matches_its_vector_and_the_codec() {
    let (marked, unmarked) = examples();
    let mut files: BTreeMap<String, Value> = BTreeMap::new();
    let mut shown: BTreeSet<String> = BTreeSet::new();
    for ex in &marked {
        let (file, path) = ex
            .target
            .split_once('#')
            .unwrap_or_else(|| panic!("marker {} needs FILE#PATH", ex.target));
        let doc = files
            .entry(file.to_owned())
            .or_insert_with(|| vector_file(file));
        let expected = select(doc, path)
            .as_str()
            .unwrap_or_else(|| panic!("{} is not a string", ex.target));
        shown.insert(ex.target.clone());
        if ex.kind == "text" {
            assert_eq!(ex.body.join("\n").trim(), expected, "{}", ex.target);
            continue;
        }
        let bytes: Vec<u8> = ex.body.iter().flat_map(|l| line_bytes(l)).collect();
        assert_eq!(hex::encode(&bytes), expected, "example {}", ex.target);
        let mut buf = [0u8; limits::MAX_PACKET];
        match file {
            "frames.json" => {
                let f = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", ex.target));
                assert_eq!(f.encode(&mut buf).unwrap(), &bytes[..], "{}", ex.target);
            }
            "packets.json" | "handshake.json" if path.ends_with("hex") || is_packet(path) => {
                let p = Packet::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", ex.target));
                assert_eq!(p.encode(&mut buf).unwrap(), &bytes[..], "{}", ex.target);
            }
            "handshake.json" if path == "outputs.welcome_frame" => {
                let f = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", ex.target));
                assert_eq!(f.encode(&mut buf).unwrap(), &bytes[..], "{}", ex.target);
            }
            _ => {}
        }
    }
    // Every frame and packet vector, and the whole handshake, is shown in the document.
    for (file, key) in [("frames.json", "valid"), ("packets.json", "valid")] {
        for case in vector_file(file)[key].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let target = format!("{file}#valid.{name}.hex");
            if file == "packets.json" && name == "data" {
                // The DATA layout is shown with a real sealed packet (session.json) instead.
                assert!(shown.contains("session.json#cases.0.packet"));
                continue;
            }
            assert!(
                shown.contains(&target),
                "no example in the doc for {target}"
            );
        }
    }
    for out in ["hello", "challenge", "login", "welcome", "welcome_frame"] {
        let target = format!("handshake.json#outputs.{out}");
        assert!(
            shown.contains(&target),
            "no example in the doc for {target}"
        );
    }
    assert!(shown.contains("token.json#valid.phone_7.token"));
    for body in unmarked {
        let first = body.iter().find(|l| !l.trim().is_empty()).copied();
        assert!(
            !first.is_some_and(looks_like_hex_example),
            "a byte example without a vector marker: {first:?}"
        );
    }
}

fn is_packet(path: &str) -> bool {
    [
        "outputs.hello",
        "outputs.challenge",
        "outputs.login",
        "outputs.welcome",
    ]
    .contains(&path)
}

#[test]
fn the_line_parser_reads_annotations_and_repeats() {
    assert_eq!(line_bytes("ac 02     msg_id 300"), vec![0xac, 0x02]);
    assert_eq!(line_bytes("00 x 3            padding"), vec![0, 0, 0]);
    assert_eq!(line_bytes("01"), vec![1]);
    assert!(looks_like_hex_example("01 02  x"));
    assert!(!looks_like_hex_example("byte 0   version"));
    assert!(!looks_like_hex_example("offset  size  field"));
}

// ---- section 8 ----

/// "1200 bytes" -> 1200, "2^53 - 1" -> 2^53 - 1, "30 000 ms" -> 30000.
fn value_of(cell: &str) -> u64 {
    let mut s = cell.trim().to_owned();
    for unit in [" bytes", " ms", " s"] {
        if let Some(stripped) = s.strip_suffix(unit) {
            s = stripped.to_owned();
        }
    }
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let (base, minus) = match s.split_once('-') {
        Some((b, m)) => (b.to_owned(), m.parse::<u64>().expect("subtrahend")),
        None => (s.clone(), 0),
    };
    let v = match base.split_once('^') {
        Some((b, e)) => b.parse::<u64>().unwrap().pow(e.parse().unwrap()),
        None => base
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("value {cell:?}")),
    };
    v - minus
}

fn limit_constants() -> BTreeMap<&'static str, u64> {
    use limits::*;
    BTreeMap::from([
        ("PROTOCOL_VERSION", u64::from(PROTOCOL_VERSION)),
        ("MAX_PACKET", MAX_PACKET as u64),
        ("PACKET_HEADER_LEN", PACKET_HEADER_LEN as u64),
        ("HELLO_MIN_LEN", HELLO_MIN_LEN as u64),
        ("DATA_HEADER_LEN", DATA_HEADER_LEN as u64),
        ("WELCOME_HEADER_LEN", WELCOME_HEADER_LEN as u64),
        ("BROKER_NONCE_LEN", BROKER_NONCE_LEN as u64),
        (
            "REJECT_RETRY_AFTER_CAP_MS",
            u64::from(REJECT_RETRY_AFTER_CAP_MS),
        ),
        ("TAG_LEN", TAG_LEN as u64),
        ("DATA_OVERHEAD", DATA_OVERHEAD as u64),
        ("MAX_FRAME", MAX_FRAME as u64),
        ("MIN_FRAME", MIN_FRAME as u64),
        ("COUNTER_LIMIT", COUNTER_LIMIT),
        ("MAX_PAYLOAD", MAX_PAYLOAD as u64),
        ("MAX_TOPIC", MAX_TOPIC as u64),
        ("MAX_PATH", MAX_PATH as u64),
        ("MAX_NAME", MAX_NAME as u64),
        ("MAX_MSG_ID", MAX_MSG_ID),
        ("MAX_IN_FLIGHT", u64::from(MAX_IN_FLIGHT)),
        ("RECEIVE_WINDOW", u64::from(RECEIVE_WINDOW)),
        ("ACK_DELAY_MS", ACK_DELAY_MS),
        ("RTO_INITIAL_MS", RTO_INITIAL_MS),
        ("RTO_MAX_MS", RTO_MAX_MS),
        ("MAX_TRANSMISSIONS", u64::from(MAX_TRANSMISSIONS)),
        ("CHALLENGE_LIFETIME_MS", CHALLENGE_LIFETIME_MS),
        ("CHALLENGE_CLOCK_MAX_LEAD_MS", CHALLENGE_CLOCK_MAX_LEAD_MS),
        ("HANDSHAKE_TIMEOUT_MS", HANDSHAKE_TIMEOUT_MS),
        ("DEFAULT_HEARTBEAT_SECS", u64::from(DEFAULT_HEARTBEAT_SECS)),
        (
            "DEFAULT_SESSION_TIMEOUT_SECS",
            u64::from(DEFAULT_SESSION_TIMEOUT_SECS),
        ),
        ("MAX_JSON_MESSAGE", MAX_JSON_MESSAGE as u64),
        ("MAX_TOKEN", MAX_TOKEN as u64),
        ("MAX_TEXT", MAX_TEXT as u64),
    ])
}

#[test]
fn limits_table_matches_limits_rs() {
    let mut in_doc = BTreeMap::new();
    for row in rows(&section("## 8.")) {
        if !row[0].starts_with('`') {
            continue;
        }
        let names: Vec<&str> = row[0].split(" / ").map(unquote).collect();
        let values: Vec<&str> = row[1].split(" / ").collect();
        assert_eq!(names.len(), values.len(), "row {row:?}");
        for (name, value) in names.into_iter().zip(values) {
            assert!(
                in_doc.insert(name.to_owned(), value_of(value)).is_none(),
                "{name} twice"
            );
        }
    }
    let in_source: BTreeSet<String> = LIMITS_RS
        .lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .map(|l| l.split(':').next().unwrap().trim().to_owned())
        .collect();
    let known = limit_constants();
    let known_names: BTreeSet<String> = known.keys().map(|k| (*k).to_owned()).collect();
    assert_eq!(
        in_source, known_names,
        "limits.rs changed: update this test's list"
    );
    let doc_names: BTreeSet<String> = in_doc.keys().cloned().collect();
    assert_eq!(
        doc_names, in_source,
        "section 8 must list exactly the constants of limits.rs"
    );
    for (name, value) in &known {
        assert_eq!(in_doc[*name], *value, "section 8 value of {name}");
    }
}

// ---- section 9 ----

fn class_name(c: Class) -> &'static str {
    match c {
        Class::Normal => "normal",
        Class::Malformed => "malformed",
        Class::Auth => "auth",
        Class::Load => "load",
        Class::Delivery => "delivery",
        Class::SessionEnd => "session end",
        Class::Internal => "internal",
        Class::Reserved => "reserved",
    }
}

/// `NAME -> doc comment` from the `code_table!` invocation in codes.rs.
fn code_docs() -> BTreeMap<String, String> {
    let body = CODES_RS
        .split("code_table! {")
        .nth(1)
        .expect("code_table! invocation");
    let mut docs = BTreeMap::new();
    let mut comment = String::new();
    for line in body.lines().map(str::trim) {
        if line == "}" {
            break;
        }
        if let Some(c) = line.strip_prefix("///") {
            if !comment.is_empty() {
                comment.push(' ');
            }
            comment.push_str(c.trim());
        } else if let Some((name, _)) = line.split_once(" = ") {
            docs.insert(name.to_owned(), std::mem::take(&mut comment));
        }
    }
    docs
}

#[test]
fn code_table_matches_codes_rs() {
    let lines = section("## 9.");
    let docs = code_docs();
    let mut in_doc = BTreeSet::new();
    for row in rows(&lines) {
        if row.len() != 6 || !row[1].starts_with('`') {
            continue;
        }
        let number: u16 = row[0].parse().unwrap_or_else(|_| panic!("code {row:?}"));
        let name = unquote(&row[1]);
        let code = Code(number);
        assert_eq!(code.name(), Some(name), "section 9: {number} is not {name}");
        assert_eq!(row[2], class_name(code.class()), "class of {name}");
        let retry = match row[3].as_str() {
            "yes" => true,
            "no" => false,
            other => panic!("retry {other:?} of {name}"),
        };
        assert_eq!(retry, code.is_retryable(), "retry of {name}");
        assert_eq!(
            row[5],
            docs[name].trim_end_matches('.'),
            "meaning of {name} (doc comment in codes.rs)"
        );
        assert!(in_doc.insert(number), "{name} twice");
    }
    let all: BTreeSet<u16> = Code::ALL.iter().map(|c| c.0).collect();
    assert_eq!(
        in_doc, all,
        "section 9 must list exactly the codes of codes.rs"
    );
    assert_eq!(docs.len(), all.len());

    // The range table: every u16 in exactly one row, with Code::class's class.
    let mut covered = vec![0u8; 65536];
    for row in rows(&lines) {
        if row.len() != 2 || !row[0].starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let class = if row[1].starts_with("malformed") {
            "malformed"
        } else if row[1].starts_with("identity") {
            "auth"
        } else if row[1].starts_with("load") {
            "load"
        } else if row[1].starts_with("routing") {
            "delivery"
        } else if row[1].starts_with("why a session") {
            "session end"
        } else {
            row[1].split_whitespace().next().unwrap()
        };
        for range in row[0].split(", ") {
            let (lo, hi) = match range.split_once("..=") {
                Some((a, b)) => (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap()),
                None => (range.parse().unwrap(), range.parse().unwrap()),
            };
            for v in lo..=hi {
                covered[v as usize] += 1;
                let c = Code(u16::try_from(v).unwrap());
                assert_eq!(class_name(c.class()), class, "range {range}: {v}");
            }
        }
    }
    assert!(
        covered.iter().all(|&n| n == 1),
        "range table must cover each u16 once"
    );
}

// ---- section 4 ----

#[test]
fn variant_table_matches_body_and_vectors() {
    let frames = vector_file("frames.json");
    let mut by_type: BTreeMap<String, Value> = BTreeMap::new();
    for case in frames["valid"].as_array().unwrap() {
        let t = case["frame"]["body"]["type"].as_str().unwrap().to_owned();
        by_type.entry(t).or_insert_with(|| case.clone());
    }
    let mut seen = BTreeSet::new();
    for row in rows(&section("## 4.")) {
        if row.len() != 5 || row[0].parse::<u32>().is_err() {
            continue;
        }
        let index: u32 = row[0].parse().unwrap();
        let name = &row[1];
        let case = by_type
            .get(name)
            .unwrap_or_else(|| panic!("no vector for {name}"));
        let bytes = hex::decode(case["hex"].as_str().unwrap()).unwrap();
        let body = Frame::decode(&bytes).unwrap().body;
        assert_eq!(body.index(), index, "{name}");
        assert_eq!(body.name(), name, "{name}");
        assert_eq!(
            body.is_reliable(),
            row[3].starts_with("yes"),
            "reliable column of {name}"
        );
        let doc_fields: BTreeSet<String> = if row[4] == "(none)" {
            BTreeSet::new()
        } else {
            row[4]
                .split(", ")
                .map(|f| f.split_whitespace().next().unwrap().to_owned())
                .collect()
        };
        let vector_fields: BTreeSet<String> = case["frame"]["body"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "type")
            .cloned()
            .collect();
        assert_eq!(doc_fields, vector_fields, "fields of {name}");
        seen.insert(index);
    }
    assert_eq!(seen, (0..shared_protocol::frame::BODY_VARIANTS).collect());
}

// ---- section 7.2 ----

#[cfg(feature = "json")]
#[test]
fn json_examples_match_the_codec_and_the_vectors() {
    use shared_protocol::json::{ClientMessage, ServerMessage};

    let lines = section("### 7.2");
    let split = lines
        .iter()
        .position(|l| l.starts_with("Broker to app"))
        .expect("broker table");
    let vectors = vector_file("json.json");
    for (dir, part) in [
        ("app_to_broker", &lines[..split]),
        ("broker_to_app", &lines[split..]),
    ] {
        let texts: BTreeSet<&str> = vectors[dir]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        let mut doc_types = BTreeSet::new();
        for row in rows(part) {
            if row.len() != 3 || !row[0].starts_with('`') {
                continue;
            }
            let example = unquote(&row[2]);
            let encoded = if dir == "app_to_broker" {
                let m = ClientMessage::decode(example.as_bytes())
                    .unwrap_or_else(|e| panic!("{example}: {e}"));
                assert_eq!(m.type_name(), unquote(&row[0]));
                m.encode().unwrap()
            } else {
                let m = ServerMessage::decode(example.as_bytes())
                    .unwrap_or_else(|e| panic!("{example}: {e}"));
                assert_eq!(m.type_name(), unquote(&row[0]));
                m.encode().unwrap()
            };
            assert_eq!(
                encoded, example,
                "the example is not in canonical form (member order of the table)"
            );
            assert!(
                texts.contains(example),
                "{example} is not a case of json.json"
            );
            doc_types.insert(unquote(&row[0]).to_owned());
        }
        let vector_types: BTreeSet<String> = vectors[dir]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"]["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            doc_types, vector_types,
            "{dir}: every message type has one example"
        );
    }
}
