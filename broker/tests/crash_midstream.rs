//! The real `broker` binary (standalone, embedded store) killed with SIGKILL in the middle of 20
//! concurrent pushes and a burst of back-to-back Uploads: after the restart every push answered
//! 200 is delivered, in `msg_id` order, and every Upload the device got an UploadAck for is in
//! the spool, in the order sent. Listens on 127.0.0.1 port 0 only; signals only the PID it
//! started.

use crate::banner_support;
use crate::comet_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use banner_support::{all_uploads, start, write_config};
use comet_support::{API_TOKEN, Device, Got, Wire, login};
use serde_json::{Value, json};
use shared_protocol::frame::Body;

/// Concurrent pushes in flight at the kill.
const PUSHES: usize = 20;
/// Uploads sent back to back just before the kill.
const UPLOADS: u32 = 40;
/// The device that uploads.
const UPLOADER: u32 = 61;
/// The (offline) device the pushes go to.
const TARGET: u32 = 9;

/// One push to `TARGET`; its msg_id when answered 200 (`None`: refused or cut off by the kill).
async fn push(http: &str, i: usize) -> Option<u64> {
    let body =
        json!({"target": {"terminal": {"kind": "device", "id": TARGET}}, "text": format!("m{i}")});
    let resp = reqwest::Client::new()
        .post(format!("{http}/v1/push"))
        .bearer_auth(API_TOKEN)
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await
        .ok()?;
    if resp.status() != 200 {
        return None;
    }
    resp.json::<Value>().await.ok()?["msg_id"].as_u64()
}

/// UploadAcks that reach the device within a short while (after the kill: only those the
/// broker sent before it died).
async fn acks(dev: &mut Device, quiet: Duration) -> BTreeSet<u32> {
    let mut acked = BTreeSet::new();
    while let Some(got) = dev.next_event(quiet).await {
        if let Got::UploadAck { upload_id } = got {
            acked.insert(upload_id);
        }
    }
    acked
}

/// Sends uploads `ids` back to back (no waiting for their acks).
async fn upload(dev: &mut Device, ids: std::ops::RangeInclusive<u32>) {
    for id in ids {
        let payload = format!("u{id}");
        dev.send(Body::Upload {
            upload_id: id,
            topic: "meter",
            payload: payload.as_bytes(),
        })
        .await;
    }
}

fn strictly_increasing<T: PartialOrd>(v: &[T]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_amid_concurrent_pushes_and_uploads_loses_nothing_acknowledged_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut b = start(&config);
    let mut dev = login(Wire::udp(b.udp).await, UPLOADER, 0)
        .await
        .expect("login");

    // 20 concurrent pushes and 20 back-to-back uploads; once a few pushes are answered, 20
    // more uploads and SIGKILL right behind them: some of each are acknowledged, some cut off.
    let answered = Arc::new(AtomicUsize::new(0));
    let pushes: Vec<_> = (0..PUSHES)
        .map(|i| {
            let (http, answered) = (b.http.clone(), answered.clone());
            tokio::spawn(async move {
                let r = push(&http, i).await;
                answered.fetch_add(1, Ordering::SeqCst);
                r
            })
        })
        .collect();
    upload(&mut dev, 1..=UPLOADS / 2).await;
    let t = Instant::now();
    while answered.load(Ordering::SeqCst) < PUSHES / 4 && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    upload(&mut dev, UPLOADS / 2 + 1..=UPLOADS).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    b.kill_9();
    let mut pushed = Vec::new();
    for p in pushes {
        if let Some(id) = p.await.unwrap() {
            pushed.push(id);
        }
    }
    let acked = acks(&mut dev, Duration::from_millis(300)).await;
    eprintln!(
        "at the kill: {} of {PUSHES} pushes answered 200, {} of {UPLOADS} uploads acknowledged",
        pushed.len(),
        acked.len()
    );
    assert!(
        !pushed.is_empty(),
        "the kill came before any push was answered"
    );

    // After the restart: every push answered 200 is delivered, in msg_id order.
    let b = start(&config);
    let mut target = login(Wire::udp(b.udp).await, TARGET, 0)
        .await
        .expect("target login");
    let mut delivered = Vec::new();
    while let Some(got) = target.next_event(Duration::from_millis(1500)).await {
        if let Got::Deliver { msg_id, .. } = got {
            delivered.push(msg_id);
        }
    }
    assert!(strictly_increasing(&delivered), "delivered: {delivered:?}");
    let got: BTreeSet<u64> = delivered.iter().copied().collect();
    let lost: Vec<&u64> = pushed.iter().filter(|id| !got.contains(id)).collect();
    assert!(lost.is_empty(), "answered 200 but not delivered: {lost:?}");

    // Every acknowledged upload is in the spool once, and the spool holds the device's
    // uploads in the order sent.
    let uploads = all_uploads(&b).await;
    let ids: Vec<u32> = uploads
        .iter()
        .filter(|u| u["device"] == json!({"kind": "device", "id": UPLOADER}))
        .map(|u| u["upload_id"].as_u64().unwrap() as u32)
        .collect();
    assert!(strictly_increasing(&ids), "spool order: {ids:?}");
    let stored: BTreeSet<u32> = ids.iter().copied().collect();
    let lost: Vec<&u32> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    eprintln!(
        "after the restart: {} delivered, {} uploads stored",
        delivered.len(),
        ids.len()
    );
}
