//! Upload de-duplication keys across device restarts, over a real UDP socket: a device's upload
//! ids restart with every boot, and the upload epoch of its LOGIN (drawn once per boot) keeps
//! the uploads of different boots apart while a resend within one boot is still recognised
//! (docs/protocol.md section 4, "Upload semantics"; docs/storage.md).

use crate::comet_support;

use std::collections::BTreeSet;

use broker::terminal::IdProfile;
use comet_support::*;
use serde_json::Value;
use shared_protocol::frame::Body;

const DEVICE: u32 = 71;
/// The epochs of two boots of the device.
const BOOT_1: u64 = 0x1111_2222_3333_4444;
const BOOT_2: u64 = 0xf000_0000_0000_0001;

/// Sends `Upload`s `(id, payload)` back to back and waits for their `UploadAck`s, in order.
async fn upload_all(dev: &mut Device, uploads: &[(u32, String)]) {
    for (id, payload) in uploads {
        dev.send(Body::Upload {
            upload_id: *id,
            topic: "energy",
            payload: payload.as_bytes(),
        })
        .await;
    }
    let mut acked = Vec::new();
    while acked.len() < uploads.len() {
        match dev.next_event(WAIT).await {
            Some(Got::UploadAck { upload_id }) => acked.push(upload_id),
            other => panic!("expected UploadAck, got {other:?}"),
        }
    }
    let ids: Vec<u32> = uploads.iter().map(|(id, _)| *id).collect();
    assert_eq!(acked, ids, "every upload acknowledged, in order");
}

/// The device's uploads in the spool, in spool order.
async fn spool(b: &TestBroker) -> Vec<Value> {
    let (status, page) = b.get("/v1/uploads?after=0&limit=100").await;
    assert_eq!(status, 200, "{page}");
    page["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["device"]["id"] == DEVICE)
        .cloned()
        .collect()
}

fn duplicates_counted(b: &TestBroker) -> u64 {
    b.metrics()
        .lines()
        .find(|l| l.starts_with("broker_uploads_total{result=\"duplicate\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_reboot_never_collides_and_a_resend_within_a_boot_is_deduplicated() {
    let b = TestBroker::start(IdProfile::Plug).await;
    let boot = |tag: &str| -> Vec<(u32, String)> {
        (1..=3).map(|i| (i, format!("{tag}-wh={i}"))).collect()
    };

    // Boot 1: ids 1..3.
    let mut dev = login_in_epoch(Wire::udp(b.udp()).await, DEVICE, 0, BOOT_1)
        .await
        .expect("login accepted");
    upload_all(&mut dev, &boot("boot1")).await;
    assert_eq!(spool(&b).await.len(), 3);

    // Still boot 1, after a reconnect (new socket, new session, same epoch): upload 2 sent again
    // because its ack was lost is recognised and acknowledged, not stored twice.
    drop(dev);
    let mut dev = login_in_epoch(Wire::udp(b.udp()).await, DEVICE, 0, BOOT_1)
        .await
        .expect("login accepted");
    let before = duplicates_counted(&b);
    upload_all(&mut dev, &boot("boot1")[1..2]).await;
    assert_eq!(spool(&b).await.len(), 3, "a resend is not a new upload");
    assert_eq!(duplicates_counted(&b), before + 1, "and it is counted");

    // Boot 2: a new epoch, ids 1..3 again, other readings.
    drop(dev);
    let mut dev = login_in_epoch(Wire::udp(b.udp()).await, DEVICE, 0, BOOT_2)
        .await
        .expect("login accepted");
    upload_all(&mut dev, &boot("boot2")).await;

    let records = spool(&b).await;
    assert_eq!(records.len(), 6, "{records:?}");
    let keys: BTreeSet<&str> = records
        .iter()
        .map(|u| u["dedup_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 6, "six distinct dedup keys: {keys:?}");
    let seen: Vec<(String, u64, String)> = records
        .iter()
        .map(|u| {
            (
                u["upload_epoch"].as_str().unwrap().to_string(),
                u["upload_id"].as_u64().unwrap(),
                u["dedup_key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, String)> = [(BOOT_1, 1), (BOOT_1, 2), (BOOT_1, 3)]
        .into_iter()
        .chain([(BOOT_2, 1), (BOOT_2, 2), (BOOT_2, 3)])
        .map(|(e, id)| (format!("{e:016x}"), id, format!("{DEVICE}:{e:016x}:{id}")))
        .collect();
    assert_eq!(seen, expected);
    let payloads: Vec<String> = records
        .iter()
        .map(|u| u["payload"].as_str().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<&String> = payloads.iter().collect();
    assert_eq!(distinct.len(), 6, "every genuine reading kept");
    b.stop().await;
}
