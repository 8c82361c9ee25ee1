//! Request building and response parsing of the node lookup, on the broker's answer shapes.

use std::format;
use std::string::String;
use std::vec::Vec;

use super::*;

const CONFIG: LookupConfig<'static> = LookupConfig {
    addr: SocketAddr::V4(core::net::SocketAddrV4::new(
        core::net::Ipv4Addr::new(192, 0, 2, 1),
        8080,
    )),
    host: "192.0.2.1:8080",
    udp: true,
    ws: true,
};

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\ndate: Sun, 22 Nov 2026 05:00:00 GMT\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn addrs(nodes: &LookupNodes) -> Vec<String> {
    nodes
        .endpoints
        .iter()
        .map(|e| match &e.ws {
            None => format!("udp {}", e.addr),
            Some((host, path)) => format!("ws {} {host} {path}", e.addr),
        })
        .collect()
}

/// The broker's answer, as `broker/src/discovery/route.rs` serialises it.
const ANSWER: &str = r#"{"nodes":[{"id":"c1","udp":"198.51.100.1:7001","ws":"ws://198.51.100.1:8081/","app_ws":"ws://198.51.100.1:8082/"},{"id":"c2","udp":"198.51.100.2:7001","ws":"ws://198.51.100.2:8081/device"}],"stale":false}"#;

#[test]
fn request_is_a_minimal_get() {
    let req = LookupRequest {
        id: 1,
        config: CONFIG,
        device_id: 4001,
    };
    let mut buf = [0u8; REQUEST_MAX];
    let n = write_request(&req, &mut buf).unwrap();
    assert_eq!(
        core::str::from_utf8(&buf[..n]).unwrap(),
        "GET /v1/nodes/lookup?kind=device&id=4001 HTTP/1.1\r\nHost: 192.0.2.1:8080\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    // Too small a buffer is an error, not a panic.
    assert_eq!(
        write_request(&req, &mut buf[..40]),
        Err(LookupError::TooLarge)
    );
}

#[test]
fn answer_becomes_endpoints_in_order() {
    let nodes = parse_response(&http("200 OK", ANSWER), &CONFIG).unwrap();
    assert_eq!(
        addrs(&nodes),
        [
            "udp 198.51.100.1:7001",
            "ws 198.51.100.1:8081 198.51.100.1:8081 /",
            "udp 198.51.100.2:7001",
            "ws 198.51.100.2:8081 198.51.100.2:8081 /device",
        ]
    );
    assert!(!nodes.stale);
    // The transport choice filters.
    let udp_only = LookupConfig {
        ws: false,
        ..CONFIG
    };
    let nodes = parse_response(&http("200 OK", ANSWER), &udp_only).unwrap();
    assert_eq!(
        addrs(&nodes),
        ["udp 198.51.100.1:7001", "udp 198.51.100.2:7001"]
    );
    let ws_only = LookupConfig {
        udp: false,
        ..CONFIG
    };
    assert_eq!(
        parse_response(&http("200 OK", ANSWER), &ws_only)
            .unwrap()
            .endpoints
            .len(),
        2
    );
}

#[test]
fn stale_flag_unknown_members_and_whitespace() {
    let body = r#" { "version" : [1, {"x": null}, -2.5e3, true] ,
        "nodes" : [ { "id" : "c\"1", "udp" : "192.0.2.9:1", "load": 3 } ] , "stale" : true } "#;
    let nodes = parse_response(&http("200 OK", body), &CONFIG).unwrap();
    assert_eq!(addrs(&nodes), ["udp 192.0.2.9:1"]);
    assert!(nodes.stale);
}

#[test]
fn unusable_entries_are_skipped() {
    // Host names (no DNS), wss (no TLS), null, escapes, garbage: skipped; the IP literal stays.
    let body = r#"{"nodes":[{"id":"a","udp":"comet.example:7001","ws":"wss://192.0.2.1:443/"},
        {"id":"b","udp":null,"ws":"ws:\/\/192.0.2.2:80\/"},{"id":"c","udp":"nonsense"},
        {"id":"d","ws":"ws://192.0.2.4"}],"stale":false}"#;
    let nodes = parse_response(&http("200 OK", body), &CONFIG).unwrap();
    assert_eq!(addrs(&nodes), ["ws 192.0.2.4:80 192.0.2.4 /"]);
    let none = r#"{"nodes":[{"id":"a","udp":"comet.example:7001"}],"stale":false}"#;
    assert_eq!(
        parse_response(&http("200 OK", none), &CONFIG),
        Err(LookupError::NoUsableNode)
    );
    assert_eq!(
        parse_response(&http("200 OK", r#"{"nodes":[],"stale":false}"#), &CONFIG),
        Err(LookupError::NoUsableNode)
    );
}

#[test]
fn more_nodes_than_room_keeps_the_first() {
    let mut body = String::from(r#"{"nodes":["#);
    for i in 0..10 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"id":"n{i}","udp":"192.0.2.{i}:7001","ws":"ws://192.0.2.{i}:8081/"}}"#
        ));
    }
    body.push_str(r#"],"stale":false}"#);
    let response = http("200 OK", &body);
    assert!(response.len() <= LOOKUP_RESPONSE_MAX);
    let nodes = parse_response(&response, &CONFIG).unwrap();
    assert_eq!(nodes.endpoints.len(), LOOKUP_ENDPOINTS);
    assert_eq!(addrs(&nodes)[0], "udp 192.0.2.0:7001");
}

#[test]
fn error_statuses_are_typed() {
    let busy = http(
        "503 Service Unavailable",
        r#"{"error":"no_nodes","message":"none"}"#,
    );
    assert_eq!(
        parse_response(&busy, &CONFIG),
        Err(LookupError::Status(503))
    );
    let bad = http("400 Bad Request", r#"{"error":"bad_request"}"#);
    assert_eq!(parse_response(&bad, &CONFIG), Err(LookupError::Status(400)));
}

#[test]
fn malformed_responses_are_errors_not_panics() {
    let cases: &[(&[u8], LookupError)] = &[
        (b"", LookupError::BadHttp),
        (b"HTTP/1.1 200 OK\r\n", LookupError::BadHttp),
        (b"SMTP 200 OK\r\n\r\n{}", LookupError::BadHttp),
        (b"HTTP/1.1 2x0 OK\r\n\r\n{}", LookupError::BadHttp),
        (
            b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n{}",
            LookupError::BadHttp,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n{\"nodes\":[]}",
            LookupError::BadHttp,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n{}",
            LookupError::BadHttp,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            LookupError::BadHttp,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", LookupError::BadJson),
        (b"HTTP/1.1 200 OK\r\n\r\n{}", LookupError::BadJson),
        (b"HTTP/1.1 200 OK\r\n\r\n[]", LookupError::BadJson),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":{}}",
            LookupError::BadJson,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":[],\"stale\":1}",
            LookupError::BadJson,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":[]",
            LookupError::BadJson,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":[]} trailing",
            LookupError::BadJson,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":[{\"udp\":\"a\x01\"}]}",
            LookupError::BadJson,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":[{\"udp\":\"\\q\"}]}",
            LookupError::BadJson,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":[],\"x\":[[[[[[[[[[[[1]]]]]]]]]]]]}",
            LookupError::BadJson,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":[],\"x\":-}",
            LookupError::BadJson,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\":[],\"x\":\"\xff\"}",
            LookupError::BadJson,
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            parse_response(bytes, &CONFIG),
            Err(*want),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let huge = std::vec![b' '; LOOKUP_RESPONSE_MAX + 1];
    assert_eq!(parse_response(&huge, &CONFIG), Err(LookupError::TooLarge));
}

#[test]
fn every_prefix_and_byte_flip_of_an_answer_is_handled() {
    // No input panics: every truncation and every single-byte corruption of a real answer.
    let good = http("200 OK", ANSWER);
    for n in 0..good.len() {
        assert!(parse_response(&good[..n], &CONFIG).is_err(), "prefix {n}");
    }
    assert!(parse_response(&good, &CONFIG).is_ok());
    for i in 0..good.len() {
        for b in [0u8, b'"', b'{', b'[', b'\\', 0xff, b'9'] {
            let mut bad = good.clone();
            bad[i] = b;
            let _ = parse_response(&bad, &CONFIG);
        }
    }
}
