//! Behaviour every store implementation must have: one async suite per trait, written against the
//! trait object so the embedded store and a future Redis store run the very same checks.
//! Each suite expects a fresh, empty store.

use std::sync::Arc;

use bytes::Bytes;

use super::{
    Bindings, Groups, MAX_MSG_ID, NewMessage, NewUpload, OfflineStore, Recipients, StoreError,
    UploadSpool,
};
use crate::terminal::EvictionPolicy;
use crate::terminal::{Address, Kind};

fn msg(payload: &'static [u8], expires_at_ms: u64) -> NewMessage {
    NewMessage {
        from: Some(Address::phone(9)),
        payload: Bytes::from_static(payload),
        expires_at_ms,
    }
}

/// Ids never go back: strictly increasing per terminal across reopening the store (`reopen`
/// drops nothing itself: the previous store must be dropped by the time it returns one) and while
/// the injected clock jumps back, and never below the clock floor of [`super::msg_id`].
pub async fn ids_never_go_back<F, Fut>(mut reopen: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn OfflineStore>>,
{
    use super::msg_id::clock_floor;
    let a = Address::device(77);
    let t0: u64 = 1_764_000_000_000; // December 2025
    let hour = 3_600_000;
    let mut ids = Vec::new();
    let mut append = async |store: &Arc<dyn OfflineStore>, now_ms: u64| {
        let id = store
            .append(Recipients::List(vec![a]), msg(b"id", u64::MAX), now_ms)
            .await
            .unwrap()
            .msg_id;
        assert!(id <= MAX_MSG_ID);
        if let Some(last) = ids.last() {
            assert!(id > *last, "id {id} after {last} (now_ms {now_ms})");
        }
        ids.push(id);
        id
    };
    let store = reopen().await;
    assert!(append(&store, t0).await >= clock_floor(t0));
    append(&store, t0).await;
    append(&store, t0 - hour).await;
    append(&store, 0).await;
    drop(store);
    // Reopened while the clock is a day behind.
    let store = reopen().await;
    append(&store, t0 - 24 * hour).await;
    append(&store, t0).await;
    // The clock moved on: ids follow it.
    assert!(append(&store, t0 + 10).await >= clock_floor(t0 + 10));
    drop(store);
    let store = reopen().await;
    append(&store, t0 + 10).await;
    let stored: Vec<u64> = store
        .since(a, 0, 100, 0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(stored, ids, "every message kept, in id order");
    assert_eq!(
        store.ack_through(a, MAX_MSG_ID).await.unwrap(),
        ids.len() as u64
    );
}

/// The offline store suite; the store must be configured with `cap` per terminal and `eviction`.
pub async fn offline_store(store: Arc<dyn OfflineStore>, cap: u64, eviction: EvictionPolicy) {
    assert!(cap >= 2, "suite needs a cap of at least 2");
    let (a, b, c) = (Address::device(1), Address::device(2), Address::phone(3));
    let far = 1_000_000;

    // Ids are issued increasing; a multi-recipient message is stored once, referenced per terminal.
    let first = store
        .append(Recipients::List(vec![a, b, c, a]), msg(b"one", far), 0)
        .await
        .unwrap();
    assert!(first.msg_id >= 1 && first.msg_id <= MAX_MSG_ID);
    assert_eq!((first.stored_for, first.evicted, first.rejected), (3, 0, 0));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.messages, stats.references), (1, 3));

    let second = store
        .append(Recipients::List(vec![a]), msg(b"two", far), 0)
        .await
        .unwrap();
    assert!(second.msg_id > first.msg_id);

    // since: in order, after since_id, limited.
    let got = store.since(a, 0, 10, 0).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        vec![first.msg_id, second.msg_id]
    );
    assert_eq!(got[0].payload, Bytes::from_static(b"one"));
    assert_eq!(got[0].from, Some(Address::phone(9)));
    assert_eq!(got[0].expires_at_ms, far);
    let got = store.since(a, first.msg_id, 10, 0).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        vec![second.msg_id]
    );
    assert_eq!(store.since(a, 0, 1, 0).await.unwrap().len(), 1);

    // ack forgets for that terminal only; the body goes with the last reference.
    assert!(store.ack(b, first.msg_id).await.unwrap());
    assert!(
        !store.ack(b, first.msg_id).await.unwrap(),
        "second ack is a no-op"
    );
    assert!(
        !store.ack(b, second.msg_id).await.unwrap(),
        "never stored for b"
    );
    assert!(store.since(b, 0, 10, 0).await.unwrap().is_empty());
    assert_eq!(store.since(c, 0, 10, 0).await.unwrap().len(), 1);
    assert!(store.ack(a, first.msg_id).await.unwrap());
    assert!(store.ack(c, first.msg_id).await.unwrap());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.messages, stats.references), (1, 1));
    assert!(store.ack(a, second.msg_id).await.unwrap());
    assert_eq!(store.stats().await.unwrap().messages, 0);

    // TTL: expired messages are not replayed and are purged.
    let short = store
        .append(Recipients::List(vec![a]), msg(b"short", 100), 0)
        .await
        .unwrap();
    let long = store
        .append(Recipients::List(vec![a]), msg(b"long", far), 0)
        .await
        .unwrap();
    assert_eq!(store.since(a, 0, 10, 99).await.unwrap().len(), 2);
    let got = store.since(a, 0, 10, 100).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        vec![long.msg_id]
    );
    assert_eq!(store.purge_expired(100).await.unwrap(), 1);
    assert_eq!(store.purge_expired(100).await.unwrap(), 0);
    assert!(
        !store
            .since(a, 0, 10, 0)
            .await
            .unwrap()
            .iter()
            .any(|m| m.msg_id == short.msg_id)
    );
    assert!(store.ack(a, long.msg_id).await.unwrap());
    assert_eq!(store.stats().await.unwrap(), Default::default());

    // Per-terminal cap with a counted eviction policy.
    let mut ids = Vec::new();
    for _ in 0..cap {
        ids.push(
            store
                .append(Recipients::List(vec![b]), msg(b"fill", far), 0)
                .await
                .unwrap()
                .msg_id,
        );
    }
    let over = store
        .append(Recipients::List(vec![b, c]), msg(b"over", far), 0)
        .await
        .unwrap();
    let kept: Vec<u64> = store
        .since(b, 0, 1000, 0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    match eviction {
        EvictionPolicy::DropOldest => {
            assert_eq!((over.stored_for, over.evicted, over.rejected), (2, 1, 0));
            let mut expect = ids[1..].to_vec();
            expect.push(over.msg_id);
            assert_eq!(kept, expect);
        }
        EvictionPolicy::RejectNew => {
            assert_eq!((over.stored_for, over.evicted, over.rejected), (1, 0, 1));
            assert_eq!(kept, ids);
        }
    }
    assert_eq!(store.since(c, 0, 10, 0).await.unwrap().len(), 1);

    // ack_through (a login's since-id): everything at or below it goes, in either policy, so a
    // full inbox frees up; what is above stays, and other terminals keep their references.
    let last = *kept.last().unwrap();
    let below_last = kept[kept.len() - 2];
    assert_eq!(
        store.ack_through(b, below_last).await.unwrap(),
        kept.len() as u64 - 1
    );
    let left: Vec<u64> = store
        .since(b, 0, 1000, 0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(left, vec![last]);
    assert_eq!(
        store.ack_through(b, below_last).await.unwrap(),
        0,
        "idempotent"
    );
    let room = store
        .append(Recipients::List(vec![b]), msg(b"room", far), 0)
        .await
        .unwrap();
    assert_eq!((room.stored_for, room.evicted, room.rejected), (1, 0, 0));
    assert_eq!(
        store.since(c, 0, 10, 0).await.unwrap().len(),
        1,
        "c keeps its copy"
    );
    assert_eq!(store.ack_through(b, room.msg_id).await.unwrap(), 2);
    assert!(store.since(b, 0, 10, 0).await.unwrap().is_empty());

    // Kind-wide recipients: the terminals remembered at login.
    let (d1, d2, p1) = (
        Address::device(100),
        Address::device(101),
        Address::phone(100),
    );
    for t in [d1, d2, p1, d1] {
        store.remember(t).await.unwrap();
    }
    let pending_before = store.stats().await.unwrap().references;
    let devices = store
        .append(Recipients::Known(Some(Kind::Device)), msg(b"devs", far), 0)
        .await
        .unwrap();
    assert_eq!(devices.stored_for, 2);
    assert_eq!(
        store.since(d2, 0, 10, 0).await.unwrap()[0].msg_id,
        devices.msg_id
    );
    assert!(store.since(p1, 0, 10, 0).await.unwrap().is_empty());
    let phones = store
        .append(Recipients::Known(Some(Kind::Phone)), msg(b"phones", far), 0)
        .await
        .unwrap();
    assert_eq!(phones.stored_for, 1);
    let all = store
        .append(Recipients::Known(None), msg(b"all", far), 0)
        .await
        .unwrap();
    assert_eq!(all.stored_for, 3);
    let got: Vec<u64> = store
        .since(p1, 0, 10, 0)
        .await
        .unwrap()
        .iter()
        .map(|m| m.msg_id)
        .collect();
    assert_eq!(got, vec![phones.msg_id, all.msg_id]);
    // Each broadcast is one body, pending once per terminal it is for: 2 + 1 + 3.
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.references, pending_before + 6);
    store.ack_through(p1, all.msg_id).await.unwrap();
    assert_eq!(
        store.stats().await.unwrap().references,
        pending_before + 4,
        "the phone's two broadcasts are acknowledged"
    );

    broadcasts_and_cursors(&store, cap, eviction, [d1, d2]).await;
}

/// Kind-wide pushes next to messages addressed by name, caps and expiry; `devices` are the
/// two devices remembered so far (the only known devices).
async fn broadcasts_and_cursors(
    store: &Arc<dyn OfflineStore>,
    cap: u64,
    eviction: EvictionPolicy,
    devices: [Address; 2],
) {
    let far = 1_000_000;
    let ids = |v: Vec<super::StoredMessage>| v.iter().map(|m| m.msg_id).collect::<Vec<u64>>();
    let to_devices = Recipients::Known(Some(Kind::Device));
    // A terminal remembered after a broadcast does not get it; it gets the ones after, merged
    // with its own messages in id order.
    let late = Address::device(102);
    store.remember(late).await.unwrap();
    assert!(store.since(late, 0, 10, 0).await.unwrap().is_empty());
    let own1 = store
        .append(Recipients::List(vec![late]), msg(b"own1", far), 0)
        .await
        .unwrap();
    let bc = store
        .append(to_devices.clone(), msg(b"bc", far), 0)
        .await
        .unwrap();
    assert_eq!(bc.stored_for, 3);
    let own2 = store
        .append(Recipients::List(vec![late]), msg(b"own2", far), 0)
        .await
        .unwrap();
    let got = store.since(late, 0, 10, 0).await.unwrap();
    assert_eq!(ids(got.clone()), vec![own1.msg_id, bc.msg_id, own2.msg_id]);
    assert_eq!(got[1].payload, Bytes::from_static(b"bc"));
    assert_eq!(
        ids(store.since(late, own1.msg_id, 10, 0).await.unwrap()),
        vec![bc.msg_id, own2.msg_id]
    );
    // The since-id covers a broadcast like any message: acknowledged for this terminal only.
    assert_eq!(store.ack_through(late, bc.msg_id).await.unwrap(), 2);
    assert_eq!(
        ids(store.since(late, 0, 10, 0).await.unwrap()),
        vec![own2.msg_id]
    );
    assert_eq!(
        ids(store.since(devices[0], 0, 10, 0).await.unwrap()).last(),
        Some(&bc.msg_id)
    );
    assert!(store.ack(devices[1], bc.msg_id).await.unwrap());
    assert!(
        !store.ack(devices[1], bc.msg_id).await.unwrap(),
        "a second ack is a no-op"
    );

    // Every known device empty, then each at the cap with broadcasts.
    let all_devices = [devices[0], devices[1], late];
    for d in all_devices {
        store.ack_through(d, MAX_MSG_ID).await.unwrap();
        assert!(
            store.since(d, 0, 10, 0).await.unwrap().is_empty(),
            "{d} empty"
        );
    }
    let mut filled = Vec::new();
    for _ in 0..cap {
        let f = store
            .append(to_devices.clone(), msg(b"fill", far), 0)
            .await
            .unwrap();
        assert_eq!((f.stored_for, f.evicted, f.rejected), (3, 0, 0));
        filled.push(f.msg_id);
    }
    let over = store
        .append(to_devices.clone(), msg(b"over", far), 0)
        .await
        .unwrap();
    match eviction {
        EvictionPolicy::DropOldest => {
            assert_eq!((over.stored_for, over.evicted, over.rejected), (3, 3, 0));
            let mut expect = filled[1..].to_vec();
            expect.push(over.msg_id);
            for d in all_devices {
                assert_eq!(ids(store.since(d, 0, 100, 0).await.unwrap()), expect, "{d}");
            }
        }
        EvictionPolicy::RejectNew => {
            assert_eq!((over.stored_for, over.evicted, over.rejected), (0, 0, 3));
            // One device makes room; the next broadcast is stored for it alone.
            assert_eq!(store.ack_through(late, filled[0]).await.unwrap(), 1);
            let next = store
                .append(to_devices.clone(), msg(b"next", far), 0)
                .await
                .unwrap();
            assert_eq!((next.stored_for, next.evicted, next.rejected), (1, 0, 2));
            let mut expect = filled[1..].to_vec();
            expect.push(next.msg_id);
            assert_eq!(ids(store.since(late, 0, 100, 0).await.unwrap()), expect);
            assert_eq!(
                ids(store.since(devices[0], 0, 100, 0).await.unwrap()),
                filled
            );
        }
    }

    // An expired broadcast is not replayed and is purged.
    for d in all_devices {
        store.ack_through(d, MAX_MSG_ID).await.unwrap();
    }
    let short = store
        .append(to_devices.clone(), msg(b"short", 200), 0)
        .await
        .unwrap();
    assert_eq!(short.stored_for, 3);
    assert_eq!(
        ids(store.since(late, 0, 10, 199).await.unwrap()),
        vec![short.msg_id]
    );
    assert!(store.since(late, 0, 10, 200).await.unwrap().is_empty());
    assert_eq!(store.purge_expired(200).await.unwrap(), 1);
    assert!(store.since(late, 0, 10, 0).await.unwrap().is_empty());

    // The cap counts broadcasts and the inbox together: a message addressed by name to a
    // terminal full of broadcasts evicts the oldest broadcast, or is refused.
    let mut filled = Vec::new();
    for _ in 0..cap {
        let f = store
            .append(to_devices.clone(), msg(b"fill", far), 0)
            .await
            .unwrap();
        filled.push(f.msg_id);
    }
    let own = store
        .append(Recipients::List(vec![late]), msg(b"own", far), 0)
        .await
        .unwrap();
    let got = ids(store.since(late, 0, 100, 0).await.unwrap());
    match eviction {
        EvictionPolicy::DropOldest => {
            assert_eq!((own.stored_for, own.evicted, own.rejected), (1, 1, 0));
            let mut expect = filled[1..].to_vec();
            expect.push(own.msg_id);
            assert_eq!(got, expect);
        }
        EvictionPolicy::RejectNew => {
            assert_eq!((own.stored_for, own.evicted, own.rejected), (0, 0, 1));
            assert_eq!(got, filled);
        }
    }
    assert_eq!(
        ids(store.since(devices[0], 0, 100, 0).await.unwrap()),
        filled,
        "the other terminals keep theirs"
    );
}

/// The upload spool suite.
pub async fn upload_spool(spool: Arc<dyn UploadSpool>) {
    let d = Address::device(7);
    // The upload epoch of d's current boot, and of its next one.
    let (e1, e2) = (0xa1_u64, 0xffff_0000_0000_00b2_u64);
    assert_eq!(spool.head().await.unwrap(), 0);
    assert!(spool.read(0, 10).await.unwrap().is_empty());
    let a = spool
        .append(d, e1, 1, "power", Bytes::from_static(b"a"), 10)
        .await
        .unwrap();
    let b = spool
        .append(d, e1, 2, "power", Bytes::from_static(b"b"), 11)
        .await
        .unwrap();
    assert!(!a.duplicate && !b.duplicate);
    assert!(b.cursor > a.cursor);
    // A resend of the same upload is recognised; a reused id with other content is new data.
    let again = spool
        .append(d, e1, 1, "power", Bytes::from_static(b"a"), 12)
        .await
        .unwrap();
    assert_eq!(
        again,
        super::SpoolAppended {
            cursor: a.cursor,
            duplicate: true
        }
    );
    let reused = spool
        .append(d, e1, 1, "power", Bytes::from_static(b"c"), 13)
        .await
        .unwrap();
    assert!(!reused.duplicate && reused.cursor > b.cursor);
    let other = spool
        .append(
            Address::device(8),
            e1,
            1,
            "power",
            Bytes::from_static(b"a"),
            14,
        )
        .await
        .unwrap();
    assert!(!other.duplicate);
    assert_eq!(spool.head().await.unwrap(), other.cursor);

    let all = spool.read(0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].cursor, a.cursor);
    assert_eq!(
        (
            all[0].device,
            all[0].upload_epoch,
            all[0].upload_id,
            all[0].topic.as_str()
        ),
        (d, e1, 1, "power")
    );
    assert_eq!(all[0].dedup_key(), "7:00000000000000a1:1");
    assert_eq!(all[0].payload, Bytes::from_static(b"a"));
    assert_eq!(all[0].received_at_ms, 10);
    let page = spool.read(a.cursor, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.cursor).collect::<Vec<_>>(),
        vec![b.cursor, reused.cursor]
    );
    assert!(spool.read(other.cursor, 10).await.unwrap().is_empty());

    assert_eq!(spool.consumer_cursor("webhook").await.unwrap(), 0);
    spool
        .set_consumer_cursor("webhook", b.cursor)
        .await
        .unwrap();
    assert_eq!(spool.consumer_cursor("webhook").await.unwrap(), b.cursor);
    assert_eq!(spool.consumer_cursor("other").await.unwrap(), 0);

    // append_many: in order, one result each, an identical resend inside the batch deduplicated.
    let up = |id: u32, p: &'static [u8]| NewUpload {
        upload_id: id,
        topic: "power".into(),
        payload: Bytes::from_static(p),
    };
    let head = spool.head().await.unwrap();
    let many = spool
        .append_many(
            d,
            e1,
            vec![up(50, b"x"), up(51, b"y"), up(50, b"x"), up(52, b"z")],
            20,
        )
        .await;
    let many: Vec<_> = many.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        many.iter().map(|m| m.duplicate).collect::<Vec<_>>(),
        vec![false, false, true, false]
    );
    assert_eq!(many[2].cursor, many[0].cursor);
    let ids: Vec<u32> = spool
        .read(head, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.upload_id)
        .collect();
    assert_eq!(ids, vec![50, 51, 52]);

    // After a reboot (new epoch) the same ids, even with the same content, are new uploads
    // with their own keys; a resend within the new epoch is still recognised.
    let head = spool.head().await.unwrap();
    let rebooted: Vec<_> = spool
        .append_many(d, e2, vec![up(50, b"x"), up(51, b"y"), up(50, b"x")], 30)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rebooted.iter().map(|m| m.duplicate).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    assert!(rebooted[0].cursor > many[3].cursor);
    let after = spool.read(head, 10).await.unwrap();
    assert_eq!(
        after
            .iter()
            .map(|r| (r.upload_epoch, r.upload_id))
            .collect::<Vec<_>>(),
        vec![(e2, 50), (e2, 51)]
    );
    assert_eq!(after[0].dedup_key(), "7:ffff0000000000b2:50");
    let resend_old_epoch = spool
        .append(d, e1, 50, "power", Bytes::from_static(b"x"), 31)
        .await
        .unwrap();
    assert_eq!(
        resend_old_epoch,
        super::SpoolAppended {
            cursor: many[0].cursor,
            duplicate: true
        },
        "a late resend from the previous boot still finds its record"
    );
}

/// The bindings suite.
pub async fn bindings(b: Arc<dyn Bindings>) {
    let (p1, p2, d1, d2) = (
        Address::phone(1),
        Address::phone(2),
        Address::device(1),
        Address::device(2),
    );
    assert!(!b.is_bound(p1, d1).await.unwrap());
    assert!(b.bind(p1, d1).await.unwrap());
    assert!(
        !b.bind(p1, d1).await.unwrap(),
        "second bind reports existing"
    );
    assert!(b.bind(p1, d2).await.unwrap());
    assert!(b.bind(p2, d1).await.unwrap());
    assert!(b.is_bound(p1, d1).await.unwrap());
    assert!(!b.is_bound(p2, d2).await.unwrap());
    assert_eq!(b.devices_of(p1).await.unwrap(), vec![d1, d2]);
    assert_eq!(b.phones_of(d1).await.unwrap(), vec![p1, p2]);
    assert!(b.unbind(p1, d1).await.unwrap());
    assert!(!b.unbind(p1, d1).await.unwrap());
    assert_eq!(b.devices_of(p1).await.unwrap(), vec![d2]);
    assert_eq!(b.phones_of(d1).await.unwrap(), vec![p2]);
}

/// The groups suite.
pub async fn groups(g: Arc<dyn Groups>) {
    let (a, b, c) = (Address::device(1), Address::device(2), Address::phone(3));
    assert_eq!(g.members("kitchen").await.unwrap(), None);
    g.set("kitchen", &[b, a, a]).await.unwrap();
    assert_eq!(g.members("kitchen").await.unwrap(), Some(vec![a, b]));
    assert_eq!(g.update("kitchen", &[c, a], &[b]).await.unwrap(), 2);
    assert_eq!(g.members("kitchen").await.unwrap(), Some(vec![a, c]));
    g.set("empty", &[]).await.unwrap();
    assert_eq!(g.members("empty").await.unwrap(), Some(vec![]));
    g.set("kitchen", &[b]).await.unwrap();
    assert_eq!(g.members("kitchen").await.unwrap(), Some(vec![b]));
    assert_eq!(
        g.list().await.unwrap(),
        vec![("empty".to_string(), 0), ("kitchen".to_string(), 1)]
    );
    assert!(g.delete("kitchen").await.unwrap());
    assert!(!g.delete("kitchen").await.unwrap());
    assert_eq!(g.members("kitchen").await.unwrap(), None);
    assert!(matches!(
        g.set("bad name", &[a]).await,
        Err(StoreError::InvalidGroupName)
    ));
    assert!(matches!(
        g.update("", &[a], &[]).await,
        Err(StoreError::InvalidGroupName)
    ));
}
