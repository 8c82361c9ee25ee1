//! The web console in a real headless browser: Debian's chromium, driven over WebDriver by
//! its chromedriver (installed by scripts/bootstrap.sh), against an in-process broker on
//! 127.0.0.1. The test loads `/console`, logs in with the API token (kept in
//! `sessionStorage`, never in the URL), sees a device come online, sees a push to it and a
//! login with a wrong key appear in the live event stream, sends it a relay command from the
//! form and sees the device's result, then sees the device go offline. Screenshots
//! of each step are saved under `target/tmp/console/`. A second test checks the HTTP side:
//! the event stream needs the token, and `[console] enabled = false` serves neither.
//! chromedriver is started on a free port and stopped by its own PID.

use crate::port_support;

use crate::comet_support;
use port_support::free_port;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::terminal::{Address, IdProfile};
use comet_support::{API_TOKEN, Got, TestBroker, Wire, login};
use fantoccini::{Client, ClientBuilder, Locator};
use shared_protocol::frame::Body;
use shared_protocol::handshake::{ClientEvent, ClientHandshake};
use shared_protocol::keys::{MasterKey, derive_device_key};
use shared_protocol::limits::MAX_PACKET;

const DEVICE: u32 = 77;
/// A device that logs in with a key the broker does not hold.
const IMPOSTOR: u32 = 78;
const TOKEN_KEY: &str = "plugcloud.console.token";

/// chromedriver, killed by its PID on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver and a headless chromium session through it.
async fn browser() -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver; run scripts/bootstrap.sh)");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromium session");
    (driver, client)
}

/// Saves a screenshot as `target/tmp/console/<name>.png`.
async fn screenshot(client: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Waits up to 10 s until the text of `css` satisfies `pred`; returns it.
async fn wait_text(client: &Client, css: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    wait_text_within(client, css, what, Duration::from_secs(10), pred).await
}

async fn wait_text_within(
    client: &Client,
    css: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if pred(&text) {
            return text;
        }
        if Instant::now() > deadline {
            screenshot(client, &format!("failed-{}", what.replace(' ', "-"))).await;
            panic!("{what}: `{css}` shows {text:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A device handshake for `id` with a key derived from another fleet's master key: the
/// broker refuses it (`auth_failed`).
async fn login_with_a_wrong_key(mut wire: Wire, id: u32) {
    let key = derive_device_key(&MasterKey([0x5a; 32]), id);
    let mut hs = ClientHandshake::new(Address::device(id), key, 0, 1);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(broker::router::now_ms(), rand::random(), &mut out)
        .unwrap()
        .to_vec();
    wire.send(&hello).await;
    while let Some(mut p) = wire.recv(Duration::from_secs(5)).await {
        match hs.on_packet(&mut p, &mut out) {
            Ok(ClientEvent::Send(login)) => {
                let login = login.to_vec();
                wire.send(&login).await;
            }
            Ok(ClientEvent::Rejected(_)) => return,
            Ok(ClientEvent::Established(_)) => panic!("a wrong key was accepted"),
            Ok(ClientEvent::Ignored) | Err(_) => {}
        }
    }
}

async fn fill(client: &Client, css: &str, value: &str) {
    let e = client.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_a_device_come_online_run_a_command_and_go_offline() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let base = format!("http://{}", b.running.http);
    let (_driver, client) = browser().await;

    // Load and log in.
    client.goto(&format!("{base}/console")).await.unwrap();
    wait_text(&client, "#login h2", "login page", |t| t == "Log in").await;
    screenshot(&client, "1-login").await;
    fill(&client, "#token", API_TOKEN).await;
    client
        .find(Locator::Css("#login-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#status", "live stream", |t| t == "live").await;
    wait_text(&client, "#node", "node", |t| {
        t == concat!("node: standalone, version ", env!("CARGO_PKG_VERSION"))
    })
    .await;
    let url = client.current_url().await.unwrap();
    assert!(!url.as_str().contains(API_TOKEN), "token in the URL: {url}");
    let stored = client
        .execute(
            &format!("return sessionStorage.getItem('{TOKEN_KEY}')"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, serde_json::json!(API_TOKEN));
    screenshot(&client, "2-logged-in").await;

    // A device comes online.
    let mut dev = login(Wire::ws(&b.device_ws()).await, DEVICE, 0)
        .await
        .expect("device login");
    let row = wait_text(&client, "#terminals", "device online", |t| {
        t.contains(&format!("device:{DEVICE}"))
    })
    .await;
    assert!(row.contains("device_ws"), "{row}");
    wait_text(&client, "#events", "online event", |t| {
        t.contains(&format!("device:{DEVICE} online"))
    })
    .await;
    // The node table: a standalone broker is one node, loaded with the device's session (the
    // page refreshes it every 5 s).
    wait_text(&client, "#nodes tr.node td:nth-child(1)", "node row", |t| {
        t == "standalone (this node)"
    })
    .await;
    wait_text_within(
        &client,
        "#nodes tr.node td:nth-child(3)",
        "node load",
        Duration::from_secs(15),
        |t| t == "1",
    )
    .await;
    screenshot(&client, "3-device-online").await;

    // A push to it shows up in the live stream as a delivery from the backend, and a login
    // with a wrong key as a refusal naming the terminal and the reason.
    let (status, pushed) = b
        .post(
            "/v1/push",
            serde_json::json!({
                "target": { "terminal": { "kind": "device", "id": DEVICE } },
                "text": "hello console",
            }),
        )
        .await;
    assert_eq!(status, 200, "{pushed}");
    match dev.next_event(Duration::from_secs(5)).await {
        Some(Got::Deliver { payload, .. }) => assert_eq!(payload, b"hello console"),
        other => panic!("expected the push, got {other:?}"),
    }
    let delivered = wait_text(&client, "#events", "delivery event", |t| {
        t.contains(&format!(
            "from backend queued to device:{DEVICE} (device_ws)"
        ))
    })
    .await;
    let msg_id = pushed["msg_id"].as_u64().expect("the push's message id");
    assert!(
        delivered.contains(&format!("message #{msg_id} ")),
        "{delivered}"
    );
    login_with_a_wrong_key(Wire::ws(&b.device_ws()).await, IMPOSTOR).await;
    let refused = wait_text(&client, "#events", "refusal event", |t| {
        t.contains(&format!(
            "login as device:{IMPOSTOR} refused over device_ws"
        ))
    })
    .await;
    assert!(refused.contains(": auth_failed"), "{refused}");
    screenshot(&client, "3b-live-delivery-and-refusal").await;

    // Its page, then a relay command from the form; the device answers.
    client
        .find(Locator::Css("#terminals tr.terminal"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#t-details", "terminal page", |t| {
        t.contains("sessions") && t.contains("device_ws")
    })
    .await;
    let answering = tokio::spawn(async move {
        match dev.next_event(Duration::from_secs(10)).await {
            Some(Got::Command {
                cmd_id,
                name,
                payload,
            }) => {
                let answer = format!("{name} {} done", String::from_utf8_lossy(&payload));
                dev.send(Body::CommandResult {
                    cmd_id,
                    status: 0,
                    payload: answer.as_bytes(),
                })
                .await;
                dev
            }
            other => panic!("expected the command, got {other:?}"),
        }
    });
    fill(&client, "#cmd-name", "relay").await;
    fill(&client, "#cmd-text", "on").await;
    client
        .find(Locator::Css("#command-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let result = wait_text(&client, "#cmd-result", "command result", |t| {
        t.starts_with("result:")
    })
    .await;
    assert_eq!(result, "result: status 0, payload \"relay on done\"");
    screenshot(&client, "4-command-result").await;

    // The device goes offline.
    let dev = answering.await.unwrap();
    drop(dev);
    wait_text(&client, "#events", "offline event", |t| {
        t.contains(&format!("device:{DEVICE} offline"))
    })
    .await;
    wait_text(&client, "#count", "no terminal online", |t| t == "0").await;
    screenshot(&client, "5-device-offline").await;

    client.close().await.unwrap();
    b.stop().await;
}

#[tokio::test]
async fn the_event_stream_needs_the_token_and_the_console_can_be_turned_off() {
    let http = reqwest::Client::new();
    let on = TestBroker::start(IdProfile::Plug).await;
    let base = format!("http://{}", on.running.http);
    let page = http.get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external asset"
    );
    let events = format!("{base}/v1/console/events");
    let anonymous = http.get(&events).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let mut stream = http
        .get(&events)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).starts_with("event: hello\n"),
        "{first:?}"
    );
    // Shutdown ends the stream (the API listener can drain).
    on.stop().await;
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the event stream outlived the shutdown");

    let off = TestBroker::start_with(IdProfile::Plug, |c| c.console.enabled = false).await;
    let base = format!("http://{}", off.running.http);
    for path in ["/console", "/console/app.js", "/v1/console/events"] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    off.stop().await;
}
