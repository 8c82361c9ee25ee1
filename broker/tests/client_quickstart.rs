//! The README quick start, for real: the `broker` binary on 127.0.0.1 ports with a temporary
//! data directory, `broker client device --id 42` and `broker client phone` as separate
//! processes reading the secrets the broker generated, a push and a command through the HTTP API
//! with the generated API token, and a phone-to-device send. Also: a wrong key exits non-zero
//! with a clear message, and Ctrl-C or SIGTERM ends a client with exit 0 wherever it is.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::proc_support;
use proc_support::{Proc, api, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_command_and_phone_send_reach_the_cli_clients() {
    let s = setup();
    let started = Instant::now();
    let mut broker = Proc::spawn(&s.config, &[]);
    broker.expect("HTTP API on http://");

    let mut device = Proc::spawn(&s.config, &["client", "device", "--id", "42"]);
    device.expect("connected as device:42 via udp 127.0.0.1:");

    let (status, body) = api(
        &s,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": {"terminal": {"kind": "device", "id": 42}}, "text": "hello"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let line = device.expect("deliver #");
    assert!(line.ends_with("from backend: hello"), "{line}");
    eprintln!("broker start to delivery: {:?}", started.elapsed());

    let (status, body) = api(
        &s,
        reqwest::Method::POST,
        "/v1/devices/42/commands",
        Some(json!({"name": "relay", "text": "on"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": 0, "payload": "b2s="}));
    device.expect("command #");
    device.expect("answered #");

    // A phone bound to the device sends to it through the app WebSocket.
    let (status, body) = api(&s, reqwest::Method::PUT, "/v1/bindings/7/42", None).await;
    assert!((200..300).contains(&status), "{status} {body}");
    let mut phone = Proc::spawn(&s.config, &["client", "phone", "--id", "7", "--json"]);
    let connected: Value = serde_json::from_str(&phone.expect("\"connected\"")).unwrap();
    assert_eq!(connected["address"], json!({"kind": "phone", "id": 7}));
    phone.say("send device:42 relay on please");
    let ok: Value = serde_json::from_str(&phone.expect("\"ok\"")).unwrap();
    assert_eq!(ok["ref"], 1);
    let line = device.expect("from phone:7");
    assert!(line.ends_with(": relay on please"), "{line}");

    // The device uploads; the upload is acknowledged once durable and readable via the API.
    device.say("upload power {\"w\":3}");
    device.expect("upload #1 durable");

    device.say("quit");
    assert_eq!(device.wait_exit(), 0);
    phone.say("quit");
    assert_eq!(phone.wait_exit(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_or_no_broker_exits_non_zero_with_a_reason() {
    let s = setup();
    // No broker yet and no secrets: a clear message, exit 2.
    let mut early = Proc::spawn(&s.config, &["client", "device", "--id", "42"]);
    assert_eq!(early.wait_exit(), 2);
    early.expect("start the broker once");
    // A key but no broker listening: UDP port unreachable.
    let key = "11".repeat(32);
    let mut nobody = Proc::spawn(
        &s.config,
        &[
            "client",
            "device",
            "--id",
            "42",
            "--key",
            &key,
            "--login-timeout",
            "3",
        ],
    );
    assert_eq!(nobody.wait_exit(), 1);
    nobody.expect("broker client: ");

    let mut broker = Proc::spawn(&s.config, &[]);
    broker.expect("HTTP API on http://");
    let mut wrong = Proc::spawn(
        &s.config,
        &["client", "device", "--id", "42", "--key", &key],
    );
    assert_eq!(wrong.wait_exit(), 1);
    wrong.expect("login rejected: AUTH_FAILED");

    let mut bad_token = Proc::spawn(
        &s.config,
        &["client", "phone", "--id", "7", "--token", "not-a-token"],
    );
    assert_eq!(bad_token.wait_exit(), 1);
    bad_token.expect("login rejected: BAD_TOKEN");

    // `--count 1` exits 0 after one delivery (over the device WebSocket this time).
    let mut once = Proc::spawn(
        &s.config,
        &["client", "device", "--id", "43", "--ws", "--count", "1"],
    );
    once.expect("connected as device:43 via ws://127.0.0.1:");
    let (status, _) = api(
        &s,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": {"terminal": {"kind": "device", "id": 43}}, "text": "once"})),
    )
    .await;
    assert_eq!(status, 200);
    once.expect("from backend: once");
    assert_eq!(once.wait_exit(), 0);
}

/// Sends `signal` (`-TERM`, `-INT`) to `p`, by its PID only.
fn signal(p: &Proc, signal: &str) {
    let pid = p.child.id().to_string();
    let ok = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

/// Ctrl-C (SIGINT) or SIGTERM ends a client with exit 0 wherever it is: while it waits for a
/// login that is never answered (nothing to log out of, and no waiting for the login timeout),
/// and logged in (it says Goodbye, so the broker has it offline at once, not after a session
/// timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_or_sigterm_ends_a_client_with_exit_0_connecting_or_logged_in() {
    let s = setup();
    let key = "11".repeat(32);
    for sig in ["-INT", "-TERM"] {
        // A UDP port that takes datagrams and never answers, fresh for each client so that the
        // HELLO read below is this client's.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let to = silent.local_addr().unwrap().to_string();
        let mut waiting = Proc::spawn(
            &s.config,
            &[
                "client",
                "device",
                "--id",
                "42",
                "--key",
                &key,
                "--udp",
                &to,
                "--login-timeout",
                "60",
            ],
        );
        let mut hello = [0u8; 2048];
        silent.recv_from(&mut hello).expect("the client's HELLO");
        let signalled = Instant::now();
        signal(&waiting, sig);
        assert_eq!(waiting.wait_exit(), 0, "{sig} while logging in");
        let took = signalled.elapsed();
        assert!(took < Duration::from_secs(5), "{sig}: exit {took:?} later");
    }

    let mut broker = Proc::spawn(&s.config, &[]);
    broker.expect("HTTP API on http://");
    for (id, sig) in [("42", "-INT"), ("43", "-TERM")] {
        let mut device = Proc::spawn(&s.config, &["client", "device", "--id", id]);
        device.expect(&format!("connected as device:{id} via udp"));
        let path = format!("/v1/terminals/device/{id}");
        let (status, body) = api(&s, reqwest::Method::GET, &path, None).await;
        assert_eq!((status, &body["online"]), (200, &json!(true)), "{body}");
        signal(&device, sig);
        assert_eq!(device.wait_exit(), 0, "{sig} while logged in");
        // Offline within 3 s: the Goodbye, not the session timeout (three heartbeats).
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let (status, body) = api(&s, reqwest::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{body}");
            if body["online"] == json!(false) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still online after {sig}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_come_back_after_a_shutdown_kick_unless_told_to_exit() {
    let s = setup();
    let mut broker = Proc::spawn(&s.config, &[]);
    broker.expect("HTTP API on http://");
    let mut device = Proc::spawn(&s.config, &["client", "device", "--id", "42"]);
    device.expect("connected as device:42 via udp 127.0.0.1:");
    let mut quitter = Proc::spawn(
        &s.config,
        &["client", "device", "--id", "43", "--ws", "--exit-on-kick"],
    );
    quitter.expect("connected as device:43 via ws://");
    let mut phone = Proc::spawn(&s.config, &["client", "phone", "--id", "7"]);
    phone.expect("connected as phone:7 via ws://");
    device.say("upload power 1");
    device.expect("upload #1 durable");

    // The broker restarts: it kicks every session with SHUTDOWN.
    // SIGTERM, as an operator's restart does.
    signal(&broker, "-TERM");
    assert_eq!(broker.wait_exit(), 0);
    device.expect("kicked: SHUTDOWN");
    let line = device.expect("reconnecting in ");
    assert!(line.contains("SHUTDOWN"), "{line}");
    quitter.expect("kicked: SHUTDOWN");
    assert_eq!(quitter.wait_exit(), 1, "--exit-on-kick exits");
    phone.expect("kicked: SHUTDOWN");
    phone.expect("reconnecting in ");

    // Back up on the same ports: the device logs in again by itself (pauses double while the
    // broker is down) and gets what is pushed, and its upload ids go on (same boot, no reuse).
    let mut broker = Proc::spawn(&s.config, &[]);
    broker.expect("HTTP API on http://");
    device.expect("connected as device:42 via udp 127.0.0.1:");
    let (status, body) = api(
        &s,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": {"terminal": {"kind": "device", "id": 42}}, "text": "back"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    device.expect("from backend: back");
    device.say("upload power 2");
    device.expect("upload #2 durable");
    device.say("quit");
    assert_eq!(device.wait_exit(), 0);
    // The phone is back too and gets its push.
    phone.expect("connected as phone:7 via ws://");
    let (status, body) = api(
        &s,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": {"terminal": {"kind": "phone", "id": 7}}, "text": "hi phone"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    phone.expect("from backend: hi phone");
    phone.say("quit");
    assert_eq!(phone.wait_exit(), 0);
    drop(broker);
}
