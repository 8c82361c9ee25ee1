//! The real `broker` binary: data acknowledged over HTTP survives `kill -9` and a restart, and
//! SIGTERM drains and exits cleanly. Listens on 127.0.0.1 port 0 only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

const TOKEN: &str = "crash-test-api-token-0123";

struct Broker {
    child: Child,
    base: String,
}

fn start(config: &std::path::Path) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start broker");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("HTTP API on http://").nth(1) {
                let addr = rest.split("/v1").next().unwrap().to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("broker printed its HTTP address");
    Broker {
        child,
        base: format!("http://{addr}"),
    }
}

async fn call(
    b: &Broker,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", b.base))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn kill_9_loses_nothing_acknowledged_and_sigterm_drains() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\ndevice_ws = \"127.0.0.1:0\"\napp_ws = \"127.0.0.1:0\"\nudp = \"127.0.0.1:0\"\n\
             [storage]\ndata_dir = {data:?}\n[security]\napi_token = \"{TOKEN}\"\n"
        ),
    )
    .unwrap();

    let mut b = start(&config);
    let mut ids = Vec::new();
    for i in 0..20 {
        let body =
            json!({"target": {"terminal": {"kind": "device", "id": 5}}, "text": format!("m{i}")});
        let (s, out) = call(&b, reqwest::Method::POST, "/v1/push", Some(body)).await;
        assert_eq!(s, 200, "{out}");
        ids.push(out["msg_id"].as_u64().unwrap());
    }
    let (s, _) = call(&b, reqwest::Method::PUT, "/v1/bindings/1/5", None).await;
    assert_eq!(s, 200);
    let members = json!({"members": [{"kind": "device", "id": 5}]});
    let (s, _) = call(&b, reqwest::Method::PUT, "/v1/groups/lab", Some(members)).await;
    assert_eq!(s, 200);

    // SIGKILL right after the last acknowledged write.
    b.child.kill().unwrap();
    b.child.wait().unwrap();

    let mut b = start(&config);
    let (s, stored) = call(
        &b,
        reqwest::Method::GET,
        "/v1/terminals/device/5/messages?limit=1000",
        None,
    )
    .await;
    assert_eq!(s, 200);
    let got: Vec<u64> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        got, ids,
        "every acknowledged push is still stored, in order"
    );
    let (_, phones) = call(&b, reqwest::Method::GET, "/v1/devices/5/phones", None).await;
    assert_eq!(phones, json!({"terminals": [{"kind": "phone", "id": 1}]}));
    let (_, group) = call(&b, reqwest::Method::GET, "/v1/groups/lab", None).await;
    assert_eq!(group["members"], json!([{"kind": "device", "id": 5}]));
    // New ids continue above the old ones.
    let body = json!({"target": {"terminal": {"kind": "device", "id": 5}}, "text": "after"});
    let (_, out) = call(&b, reqwest::Method::POST, "/v1/push", Some(body)).await;
    assert!(out["msg_id"].as_u64().unwrap() > *ids.last().unwrap());

    // SIGTERM: graceful drain, exit code 0.
    let pid = b.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = b.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broker did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
