//! Fuzzes the node lookup's answer parser, `firmware::lookup::parse_response` (the HTTP status
//! line, headers and `Content-Length`, then the strict JSON scanner and the endpoint filter).
//!
//! The answer comes from the network before any login, so it is hostile input on a device with
//! no allocator and a small stack. Two shapes of input:
//!
//! * First byte even: the rest is the raw HTTP response. Checked: no panic; a response over
//!   `LOOKUP_RESPONSE_MAX` is `TooLarge`; an accepted answer keeps 1 to `LOOKUP_ENDPOINTS`
//!   endpoints, only of the kinds the configuration asks for, with `Host` and path within
//!   `HOST_MAX` / `PATH_MAX`.
//! * First byte odd: the rest describes nodes (addresses, ports, paths, unknown members, `stale`,
//!   whitespace, with or without `Content-Length`) from which the target writes a well-formed
//!   answer. Checked besides the above: the parser returns exactly the endpoints written, in
//!   order, cut at `LOOKUP_ENDPOINTS`, and the `stale` flag written. This is the oracle that
//!   catches a parser that silently drops or invents nodes.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use firmware::config::TransportKind;
use firmware::lookup::{
    HOST_MAX, LOOKUP_ENDPOINTS, LOOKUP_RESPONSE_MAX, LookupConfig, LookupError, LookupNodes,
    PATH_MAX, parse_response,
};
use libfuzzer_sys::fuzz_target;

const CONFIG: LookupConfig<'static> = LookupConfig {
    addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 8080)),
    host: "192.0.2.1:8080",
    udp: true,
    ws: true,
};

/// The configurations tried on every input: both kinds, UDP only, WebSocket only.
fn configs() -> [LookupConfig<'static>; 3] {
    [
        CONFIG,
        LookupConfig {
            ws: false,
            ..CONFIG
        },
        LookupConfig {
            udp: false,
            ..CONFIG
        },
    ]
}

/// The invariants every result must hold, whatever the input.
fn check(response: &[u8], config: &LookupConfig<'_>, result: &Result<LookupNodes, LookupError>) {
    if response.len() > LOOKUP_RESPONSE_MAX {
        assert_eq!(result, &Err(LookupError::TooLarge));
    }
    if let Ok(nodes) = result {
        assert!(!nodes.endpoints.is_empty() && nodes.endpoints.len() <= LOOKUP_ENDPOINTS);
        for e in &nodes.endpoints {
            match e.as_endpoint().transport {
                TransportKind::Udp => assert!(config.udp, "a UDP endpoint nobody asked for"),
                TransportKind::WebSocket { host, path } => {
                    assert!(config.ws, "a WebSocket endpoint nobody asked for");
                    assert!(host.len() <= HOST_MAX && path.len() <= PATH_MAX);
                    assert!(path.starts_with('/'));
                }
            }
        }
    }
}

/// Reads the input a byte at a time (0 once it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
}

/// One node as written into the answer.
struct Node {
    udp: Option<SocketAddr>,
    /// Address, whether the port is written, path.
    ws: Option<(SocketAddr, bool, String)>,
}

/// A well-formed answer from `input` and the endpoints the parser must return for `config`.
fn generate(input: &mut Input<'_>) -> (Vec<u8>, Vec<Node>, bool) {
    let count = input.byte() % 9;
    let stale = input.byte() & 1 == 1;
    let spaces = input.byte();
    let sp = |bit: u8| if spaces & bit != 0 { " \n\t" } else { "" };
    let mut nodes = Vec::new();
    let mut members = Vec::new();
    for i in 0..count {
        let flags = input.byte();
        let ip = Ipv4Addr::new(input.byte(), input.byte(), input.byte(), input.byte());
        let port = input.u16();
        let udp = (flags & 1 != 0).then(|| SocketAddr::V4(SocketAddrV4::new(ip, port)));
        let ws = (flags & 2 != 0).then(|| {
            let with_port = flags & 4 != 0;
            let port = if with_port { port } else { 80 };
            let path_len = usize::from(input.byte() % 12);
            let mut path = String::from("/");
            for _ in 0..path_len {
                path.push(char::from(b'a' + input.byte() % 26));
            }
            (SocketAddr::V4(SocketAddrV4::new(ip, port)), with_port, path)
        });
        let mut fields = vec![format!(r#""id":"c{i}""#)];
        if let Some(a) = udp {
            fields.push(format!(r#""udp":{}"{a}""#, sp(1)));
        } else if flags & 8 != 0 {
            fields.push(r#""udp":null"#.into());
        }
        if let Some((a, with_port, path)) = &ws {
            let authority = if *with_port {
                a.to_string()
            } else {
                a.ip().to_string()
            };
            fields.push(format!(r#""ws"{}:"ws://{authority}{path}""#, sp(2)));
        }
        if flags & 16 != 0 {
            fields.push(r#""app_ws":{"x":[1,-2.5e3,true,null,"\u00e9"]}"#.into());
        }
        if flags & 32 != 0 {
            fields.reverse();
        }
        members.push(format!("{{{}}}", fields.join(&format!(",{}", sp(4)))));
        nodes.push(Node { udp, ws });
    }
    let body = format!(
        r#"{{{}"nodes"{}:[{}],"stale":{stale},"zk":[[[]]]}}{}"#,
        sp(8),
        sp(16),
        members.join(","),
        sp(32)
    );
    let length = if spaces & 64 != 0 {
        String::new()
    } else {
        format!("content-length: {}\r\n", body.len())
    };
    let response =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}\r\n{body}");
    (response.into_bytes(), nodes, stale)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        for config in configs() {
            let result = parse_response(rest, &config);
            check(rest, &config, &result);
        }
        return;
    }
    let (response, nodes, stale) = generate(&mut Input(rest));
    for config in configs() {
        let result = parse_response(&response, &config);
        check(&response, &config, &result);
        if response.len() > LOOKUP_RESPONSE_MAX {
            continue;
        }
        let mut expected = Vec::new();
        for node in &nodes {
            if let (true, Some(a)) = (config.udp, node.udp) {
                expected.push((a, None));
            }
            if let (true, Some((a, with_port, path))) = (config.ws, &node.ws) {
                let host = if *with_port {
                    a.to_string()
                } else {
                    a.ip().to_string()
                };
                expected.push((*a, Some((host, path.clone()))));
            }
        }
        expected.truncate(LOOKUP_ENDPOINTS);
        match result {
            Ok(got) => {
                let got: Vec<_> = got
                    .endpoints
                    .iter()
                    .map(|e| {
                        let ws =
                            e.ws.as_ref()
                                .map(|(h, p)| (h.as_str().to_owned(), p.as_str().to_owned()));
                        (e.addr, ws)
                    })
                    .collect();
                assert_eq!(got, expected, "endpoints written vs. parsed");
                assert_eq!(
                    parse_response(&response, &config).map(|n| n.stale),
                    Ok(stale)
                );
            }
            Err(LookupError::NoUsableNode) => assert!(expected.is_empty()),
            Err(e) => panic!("a well-formed answer refused: {e:?}"),
        }
    }
});
