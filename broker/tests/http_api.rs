//! The HTTP API over real HTTP on 127.0.0.1 against an in-process broker (`broker::start`) with
//! its embedded store in a temporary directory. Terminals are simulated through the router's
//! comet-facing interface (`Router::login` / `Session`). API calls go through the shared
//! [`http_support::ApiClient`].

use crate::http_support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::config::{Config, Secret};
use broker::router::{Login, Outbound, Transport};
use broker::terminal::Address;
use http_support::ApiClient;
use serde_json::{Value, json};

const TOKEN: &str = "test-api-token-0123456789";

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    let any = "127.0.0.1:0".parse().unwrap();
    c.listen.http = any;
    c.listen.device_ws = any;
    c.listen.app_ws = any;
    c.listen.udp = any;
    c.storage.data_dir = dir.to_path_buf();
    c.security.api_token = Secret::new(TOKEN);
    c
}

/// An API client with the test token for `running`.
fn api_client(running: &broker::Running) -> ApiClient {
    ApiClient::new(format!("http://{}", running.http), TOKEN)
}

fn login(a: Address, since_id: u64) -> Login {
    Login {
        address: a,
        transport: Transport::Udp,
        peer: "127.0.0.1:9".parse().unwrap(),
        since_id,
        upload_epoch: 1,
    }
}

#[tokio::test]
async fn health_is_open_and_v1_and_metrics_need_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path())).await.unwrap();
    let base = format!("http://{}", running.http);
    let c = reqwest::Client::new();
    // Operators' data (metrics name terminals' counts and failure reasons) needs the token too.
    let r = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            c.get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    let r = c.get(format!("{base}/v1/online")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized");
    let r = c
        .get(format!("{base}/v1/online"))
        .bearer_auth("wrong-token-xxxxxxxx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let api = api_client(&running);
    let (s, online) = api.get("/v1/online").await;
    assert_eq!((s, online["devices"].as_u64()), (200, Some(0)));
    assert_eq!(online["scope"], "standalone", "{online}");
    assert!(online.get("cluster").is_none(), "{online}");
    let (s, doc) = api.get("/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(broker::api::OPENAPI).unwrap()
    );
    let (s, body) = api.get("/v1/nope").await;
    assert_eq!((s, body["error"].as_str()), (404, Some("not_found")));
    running.stop().await;
}

#[tokio::test]
async fn push_is_stored_readable_and_replayed_then_acked() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path())).await.unwrap();
    let api = api_client(&running);
    let d7 = Address::device(7);

    let (s, out) = api
        .post("/v1/push", json!({"target": {"terminal": {"kind": "device", "id": 7}}, "text": "hello", "ttl_secs": 60}))
        .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(
        (out["stored_for"].as_u64(), out["delivered_online"].as_u64()),
        (Some(1), Some(0))
    );
    let msg_id = out["msg_id"].as_u64().unwrap();

    let (s, stored) = api.get("/v1/terminals/device/7/messages").await;
    assert_eq!(s, 200);
    assert_eq!(stored["messages"][0]["msg_id"].as_u64(), Some(msg_id));
    assert_eq!(stored["messages"][0]["payload"], B64.encode("hello"));
    assert_eq!(stored["messages"][0]["from"], Value::Null);

    let mut session = running.router.login(login(d7, 0)).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), session.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        Outbound::Deliver {
            msg_id,
            from: None,
            payload: bytes::Bytes::from_static(b"hello")
        }
    );
    let (_, status) = api.get("/v1/terminals/device/7").await;
    assert_eq!(status["online"], true);
    assert_eq!(status["sessions"][0]["transport"], "udp");
    assert!(running.router.ack(d7, msg_id).await.unwrap());
    let (_, stored) = api.get("/v1/terminals/device/7/messages").await;
    assert_eq!(stored["messages"], json!([]));

    // Bad requests are refused with a JSON error.
    let (s, e) = api
        .post("/v1/push", json!({"target": "everyone", "payload": "%%%"}))
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")));
    let (s, _) = api
        .post(
            "/v1/push",
            json!({"target": "everyone", "text": "x".repeat(2000)}),
        )
        .await;
    assert_eq!(s, 413);
    let (s, e) = api
        .post(
            "/v1/push",
            json!({"target": {"group": "none"}, "text": "x"}),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (404, Some("unknown_group")));
    running.stop().await;
}

#[tokio::test]
async fn bindings_authorise_terminal_sends() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path())).await.unwrap();
    let api = api_client(&running);
    let (p, d) = (Address::phone(3), Address::device(4));
    let payload = bytes::Bytes::from_static(b"on");

    assert!(
        running.router.send(p, d, payload.clone()).await.is_err(),
        "unbound send is refused"
    );
    let (s, b) = api.put("/v1/bindings/3/4", None).await;
    assert_eq!((s, &b), (200, &json!({"changed": true})));
    let (_, devs) = api.get("/v1/phones/3/devices").await;
    assert_eq!(devs, json!({"terminals": [{"kind": "device", "id": 4}]}));
    let (_, phones) = api.get("/v1/devices/4/phones").await;
    assert_eq!(phones, json!({"terminals": [{"kind": "phone", "id": 3}]}));

    let sent = running.router.send(p, d, payload.clone()).await.unwrap();
    assert_eq!(sent.stored_for, 1);
    let (s, b) = api
        .call(reqwest::Method::DELETE, "/v1/bindings/3/4", None)
        .await;
    assert_eq!((s, &b), (200, &json!({"changed": true})));
    assert!(
        running.router.send(p, d, payload).await.is_err(),
        "refused again after unbinding"
    );
    let (s, _) = api.put("/v1/bindings/0/4", None).await;
    assert_eq!(s, 400);
    // The plug profile writes ids unsigned: `-1` is refused, not read as phone 4294967295, and
    // nothing is bound.
    let (s, b) = api.put("/v1/bindings/-1/42", None).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "bad_request", "{b}");
    let (s, b) = api.get("/v1/devices/42/phones").await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.to_string().contains("4294967295"), "{b}");
    running.stop().await;
}

#[tokio::test]
async fn device_commands_404_offline_200_answered_504_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path())).await.unwrap();
    let api = api_client(&running);
    let (s, e) = api
        .post(
            "/v1/devices/9/commands",
            json!({"name": "relay", "text": "on"}),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (404, Some("not_online")));
    // A name longer than the wire allows (32 bytes) is refused at once, not sent and timed out.
    let (s, e) = api
        .post(
            "/v1/devices/9/commands",
            json!({"name": "r".repeat(33), "text": "on"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 32")),
        "{e}"
    );

    let d9 = Address::device(9);
    let mut session = running.router.login(login(d9, 0)).await.unwrap();
    let router = running.router.clone();
    let device = tokio::spawn(async move {
        // Answer the first command, ignore the second.
        if let Some(Outbound::Command {
            cmd_id,
            name,
            payload,
        }) = session.next().await
        {
            assert_eq!((name.as_str(), &payload[..]), ("relay", &b"on"[..]));
            router.complete_command(d9, cmd_id, 200, bytes::Bytes::from_static(b"relay=on"));
        }
        session.next().await;
        session
    });
    let (s, r) = api
        .post(
            "/v1/devices/9/commands",
            json!({"name": "relay", "text": "on", "timeout_ms": 5000}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r, json!({"status": 200, "payload": B64.encode("relay=on")}));
    let (s, e) = api
        .post(
            "/v1/devices/9/commands",
            json!({"name": "relay", "timeout_ms": 200}),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (504, Some("timeout")));
    let (s, _) = api
        .post(
            "/v1/devices/9/commands",
            json!({"name": "relay", "timeout_ms": 999999}),
        )
        .await;
    assert_eq!(s, 400);
    drop(device.await.unwrap());
    running.stop().await;
}

#[tokio::test]
async fn a_command_whose_client_disconnects_is_cancelled_and_forgotten() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path())).await.unwrap();
    let d11 = Address::device(11);
    // A device that never answers.
    let mut session = running.router.login(login(d11, 0)).await.unwrap();
    let body = json!({"name": "relay", "text": "on", "timeout_ms": 60000}).to_string();
    let mut client = tokio::net::TcpStream::connect(running.http).await.unwrap();
    let request = format!(
        "POST /v1/devices/11/commands HTTP/1.1\r\nHost: broker\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(5), session.next())
        .await
        .expect("the command reaches the device");
    let Some(Outbound::Command { cmd_id, .. }) = sent else {
        panic!("expected a command, got {sent:?}")
    };
    // The API client goes away before the device answers.
    drop(client);
    let api = api_client(&running);
    let cancelled = "broker_commands_total{result=\"cancelled\"} 1";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = api.text("/metrics").await;
        if text.contains(cancelled) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cancelled command counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !running
            .router
            .complete_command(d11, cmd_id, 200, bytes::Bytes::new()),
        "the device's late answer is delivered to no one"
    );
    drop(session);
    running.stop().await;
}

#[tokio::test]
async fn groups_crud_and_group_push() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path())).await.unwrap();
    let api = api_client(&running);
    let (s, g) = api
        .put(
            "/v1/groups/kitchen",
            Some(json!({"members": [{"kind": "device", "id": 1}, {"kind": "device", "id": 2}]})),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    let (s, g) = api
        .call(
            reqwest::Method::PATCH,
            "/v1/groups/kitchen",
            Some(json!({"add": [{"kind": "phone", "id": 5}], "remove": [{"kind": "device", "id": 1}]})),
        )
        .await;
    assert_eq!((s, &g), (200, &json!({"name": "kitchen", "members": 2})));
    let (_, list) = api.get("/v1/groups").await;
    assert_eq!(list, json!({"groups": [{"name": "kitchen", "members": 2}]}));
    let (_, g) = api.get("/v1/groups/kitchen").await;
    assert_eq!(
        g["members"],
        json!([{"kind": "device", "id": 2}, {"kind": "phone", "id": 5}])
    );

    let (s, out) = api
        .post(
            "/v1/push",
            json!({"target": {"group": "kitchen"}, "text": "dinner"}),
        )
        .await;
    assert_eq!((s, out["stored_for"].as_u64()), (200, Some(2)));
    let (_, stored) = api.get("/v1/terminals/phone/5/messages").await;
    assert_eq!(stored["messages"][0]["payload"], B64.encode("dinner"));
    let (_, stored) = api.get("/v1/terminals/device/1/messages").await;
    assert_eq!(stored["messages"], json!([]));

    let (s, _) = api
        .put("/v1/groups/bad%20name", Some(json!({"members": []})))
        .await;
    assert_eq!(s, 400);
    let (_, d) = api
        .call(reqwest::Method::DELETE, "/v1/groups/kitchen", None)
        .await;
    assert_eq!(d, json!({"changed": true}));
    let (s, _) = api.get("/v1/groups/kitchen").await;
    assert_eq!(s, 404);
    running.stop().await;
}

#[tokio::test]
async fn uploads_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let running = broker::start(&cfg).await.unwrap();
    let d = Address::device(11);
    for i in 1..=3u32 {
        let r = running
            .router
            .upload(d, 0xe1, i, "energy", bytes::Bytes::from(format!("wh={i}")))
            .await
            .unwrap();
        assert!(!r.duplicate);
    }
    running.stop().await;

    let running = broker::start(&cfg).await.unwrap();
    let api = api_client(&running);
    let (s, page) = api.get("/v1/uploads?after=0&limit=2").await;
    assert_eq!(s, 200);
    assert_eq!(page["head"].as_u64(), Some(3));
    assert_eq!(page["uploads"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["uploads"][0]["device"],
        json!({"kind": "device", "id": 11})
    );
    assert_eq!(page["uploads"][0]["topic"], "energy");
    assert_eq!(page["uploads"][0]["upload_epoch"], "00000000000000e1");
    assert_eq!(page["uploads"][0]["dedup_key"], "11:00000000000000e1:1");
    assert_eq!(page["uploads"][0]["payload"], B64.encode("wh=1"));
    let next = page["next"].as_u64().unwrap();
    let (_, page) = api.get(&format!("/v1/uploads?after={next}")).await;
    assert_eq!(page["uploads"][0]["payload"], B64.encode("wh=3"));
    assert_eq!(page["uploads"].as_array().unwrap().len(), 1);
    let (s, _) = api.get("/v1/uploads?limit=0").await;
    assert_eq!(s, 400);
    // The metrics endpoint reports what happened.
    let text = api.text("/metrics").await;
    assert!(text.contains("broker_offline_messages"), "{text}");
    running.stop().await;
}

#[tokio::test]
async fn requests_refused_before_a_handler_get_the_documented_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let running = broker::start(&config(dir.path())).await.unwrap();
    let base = format!("http://{}", running.http);
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, ctype: Option<&str>, body: &str| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .body(body.to_string());
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        req.send()
    };
    let cases = [
        // (method, path, content type, body, status, error code)
        (
            reqwest::Method::POST,
            "/v1/push",
            Some("application/json"),
            "{not json",
            400,
            "bad_request",
        ),
        (
            reqwest::Method::POST,
            "/v1/push",
            Some("application/json"),
            "{}",
            400,
            "bad_request",
        ),
        (
            reqwest::Method::POST,
            "/v1/push",
            Some("text/plain"),
            "{}",
            415,
            "unsupported_media_type",
        ),
        (
            reqwest::Method::POST,
            "/v1/push",
            None,
            "{}",
            415,
            "unsupported_media_type",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/push",
            None,
            "",
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, ctype, body, status, code) in cases {
        let what = format!("{method} {path} {ctype:?} {body:?}");
        let resp = send(method, path, ctype, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let headers = resp.headers().clone();
        assert_eq!(
            headers.get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{what}"
        );
        if status == 405 {
            assert!(headers.contains_key("allow"), "{what}: Allow kept");
        }
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"], code, "{what}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        assert_eq!(v.as_object().unwrap().len(), 2, "{what}: {v}");
    }
    running.stop().await;
}
