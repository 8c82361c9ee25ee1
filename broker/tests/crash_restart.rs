//! The real `broker` binary: data acknowledged over HTTP (pushes, bindings, groups) and uploads
//! a device got an UploadAck for (over UDP and over WebSocket, some still in flight at the
//! kill) survive `kill -9` and a restart; SIGTERM then drains and exits cleanly. Listens on
//! 127.0.0.1 port 0 only; signals only the PID it started.

use crate::banner_support;
use crate::comet_support;

use std::collections::BTreeSet;
use std::time::Duration;

use banner_support::{Started, all_uploads, start, write_config};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use comet_support::{Device, Got, Wire, login};
use serde_json::{Value, json};
use shared_protocol::frame::Body;

/// Uploads each device has acknowledged before the burst that the kill interrupts.
const SETTLED: u32 = 30;
/// Uploads sent back to back just before the kill.
const BURST: u32 = 10;
/// Uploads a device keeps unacknowledged at most while settling (under MAX_IN_FLIGHT).
const WINDOW: u32 = 8;

async fn call(
    b: &Started,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    b.call(method, path, body).await
}

fn upload_payload(device: u32, upload_id: u32) -> String {
    format!("d{device}-u{upload_id}")
}

async fn send_upload(dev: &mut Device, device: u32, upload_id: u32) {
    let payload = upload_payload(device, upload_id);
    dev.send(Body::Upload {
        upload_id,
        topic: "meter",
        payload: payload.as_bytes(),
    })
    .await;
}

/// Uploads 1..=SETTLED with at most WINDOW unacknowledged; returns the acknowledged ids.
async fn settle_uploads(dev: &mut Device, device: u32) -> BTreeSet<u32> {
    let mut acked = BTreeSet::new();
    let mut next = 1;
    while acked.len() < SETTLED as usize {
        while next <= SETTLED && next - 1 - (acked.len() as u32) < WINDOW {
            send_upload(dev, device, next).await;
            next += 1;
        }
        match dev.next_event(comet_support::WAIT).await {
            Some(Got::UploadAck { upload_id }) => assert!(acked.insert(upload_id)),
            other => panic!("device {device}: expected an UploadAck, got {other:?}"),
        }
    }
    acked
}

/// UploadAcks that reach the device within a short while (after the kill: only those the
/// broker sent before it died).
async fn late_acks(dev: &mut Device) -> BTreeSet<u32> {
    let mut acked = BTreeSet::new();
    while let Some(got) = dev.next_event(Duration::from_millis(300)).await {
        if let Got::UploadAck { upload_id } = got {
            acked.insert(upload_id);
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged_and_sigterm_drains() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");

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

    // Two devices upload: over UDP (61) and over the device WebSocket (62).
    let mut udp_dev = login(Wire::udp(b.udp).await, 61, 0)
        .await
        .expect("udp login");
    let mut ws_dev = login(Wire::ws(&b.device_ws).await, 62, 0)
        .await
        .expect("ws login");
    let (mut udp_acked, mut ws_acked) = tokio::join!(
        settle_uploads(&mut udp_dev, 61),
        settle_uploads(&mut ws_dev, 62)
    );
    // A burst in flight, then SIGKILL at once: some of it may be acknowledged, some not.
    for id in SETTLED + 1..=SETTLED + BURST {
        send_upload(&mut udp_dev, 61, id).await;
        send_upload(&mut ws_dev, 62, id).await;
    }
    b.kill_9();
    let (udp_late, ws_late) = tokio::join!(late_acks(&mut udp_dev), late_acks(&mut ws_dev));
    eprintln!(
        "burst of {BURST}: {} (udp) and {} (ws) acknowledged before the kill",
        udp_late.len(),
        ws_late.len()
    );
    udp_acked.extend(udp_late);
    ws_acked.extend(ws_late);

    let mut b = start(&config);
    // Every acknowledged upload is in the spool, once, with its topic and payload.
    let uploads = all_uploads(&b).await;
    for (device, acked) in [(61u32, &udp_acked), (62, &ws_acked)] {
        let stored: Vec<&Value> = uploads
            .iter()
            .filter(|u| u["device"] == json!({"kind": "device", "id": device}))
            .collect();
        let ids: Vec<u32> = stored
            .iter()
            .map(|u| u["upload_id"].as_u64().unwrap() as u32)
            .collect();
        let unique: BTreeSet<u32> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "device {device}: duplicates in {ids:?}"
        );
        let missing: Vec<&u32> = acked.difference(&unique).collect();
        assert!(
            missing.is_empty(),
            "device {device}: acknowledged but lost: {missing:?}"
        );
        for u in stored {
            let id = u["upload_id"].as_u64().unwrap() as u32;
            assert_eq!(u["topic"], "meter");
            assert_eq!(u["payload"], json!(B64.encode(upload_payload(device, id))));
        }
    }
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

    // SIGTERM: graceful drain, exit code 0 (with terminals connected: tests/sigterm_drain.rs).
    b.sigterm();
    let (code, _) = b.wait_exit(Duration::from_secs(20));
    assert_eq!(code, 0);
}
