use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::{Config, EvictionPolicy, QueueFullPolicy};
use crate::store::embedded::{EmbeddedStore, OfflineLimits};

struct Fixture {
    router: Router,
    _dir: tempfile::TempDir,
}

fn fixture(edit: impl FnOnce(&mut Config)) -> Fixture {
    let mut c = Config::default();
    c.limits.outbound_queue = 4;
    edit(&mut c);
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        OfflineLimits {
            max_per_terminal: u64::from(c.offline.max_per_terminal),
            eviction: c.offline.eviction,
        },
    )
    .unwrap();
    let router = Router::new(c.router_settings(), store.stores(), Metrics::new());
    Fixture { router, _dir: dir }
}

fn login(a: Address, t: Transport, since_id: u64) -> Login {
    Login {
        address: a,
        transport: t,
        peer: "127.0.0.1:4000".parse().unwrap(),
        since_id,
        upload_epoch: EPOCH,
    }
}

/// The upload epoch of every session [`login`] opens.
const EPOCH: u64 = 0x5eed_0001;

async fn next(s: &mut Session) -> Outbound {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("event within 5 s")
        .expect("event")
}

fn deliver_id(ev: &Outbound) -> u64 {
    match ev {
        Outbound::Deliver { msg_id, .. } => *msg_id,
        other => panic!("expected Deliver, got {other:?}"),
    }
}

const D1: Address = Address {
    kind: Kind::Device,
    id: 1,
};
const P1: Address = Address {
    kind: Kind::Phone,
    id: 1,
};

#[tokio::test]
async fn plug_profile_newest_login_wins() {
    let f = fixture(|_| {});
    let mut old = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    let mut new = f
        .router
        .login(login(D1, Transport::DeviceWs, 0))
        .await
        .unwrap();
    assert_eq!(
        next(&mut old).await,
        Outbound::Kick {
            reason: KickReason::Replaced
        }
    );
    assert_eq!(old.next().await, None);
    let sessions = f.router.status(D1);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].transport, Transport::DeviceWs);
    f.router
        .push(Target::Terminal(D1), None, Bytes::from_static(b"hi"), None)
        .await
        .unwrap();
    assert!(matches!(next(&mut new).await, Outbound::Deliver { .. }));
    drop(old);
    assert_eq!(
        f.router.online_counts().devices,
        1,
        "dropping the replaced session changes nothing"
    );
    drop(new);
    assert_eq!(f.router.online_counts().devices, 0);
}

#[tokio::test]
async fn signed_profile_keeps_all_sessions_and_all_receive() {
    let f = fixture(|c| c.identity.profile = IdProfile::Signed);
    let phone = Address::phone(-7i32 as u32);
    assert!(matches!(
        f.router
            .login(login(Address::phone(7), Transport::AppWs, 0))
            .await,
        Err(LoginError::Address(IdError::KindMismatch))
    ));
    let mut a = f
        .router
        .login(login(phone, Transport::AppWs, 0))
        .await
        .unwrap();
    let mut b = f
        .router
        .login(login(phone, Transport::AppWs, 0))
        .await
        .unwrap();
    let out = f
        .router
        .push(
            Target::Terminal(phone),
            None,
            Bytes::from_static(b"x"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.delivered_online, 2);
    assert_eq!(deliver_id(&next(&mut a).await), out.msg_id);
    assert_eq!(deliver_id(&next(&mut b).await), out.msg_id);
    assert_eq!(f.router.online_counts().app_ws_sessions, 2);
    assert_eq!(f.router.online_counts().phones, 1);
}

#[tokio::test]
async fn offline_messages_replay_in_order_after_since_id_and_an_ack_covers_all_below() {
    let f = fixture(|_| {});
    let mut ids = Vec::new();
    for p in [&b"a"[..], b"b", b"c"] {
        let o = f
            .router
            .push(Target::Terminal(D1), None, Bytes::copy_from_slice(p), None)
            .await
            .unwrap();
        assert_eq!((o.stored_for, o.delivered_online), (1, 0));
        ids.push(o.msg_id);
    }
    let mut s = f
        .router
        .login(login(D1, Transport::Udp, ids[0]))
        .await
        .unwrap();
    assert_eq!(s.replay_pending(), 2);
    match next(&mut s).await {
        Outbound::Deliver {
            msg_id,
            from,
            payload,
        } => {
            assert_eq!(
                (msg_id, from, payload),
                (ids[1], None, Bytes::from_static(b"b"))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(deliver_id(&next(&mut s).await), ids[2]);
    // A live push arrives after the replay.
    let live = f
        .router
        .push(Target::Terminal(D1), None, Bytes::from_static(b"d"), None)
        .await
        .unwrap();
    assert_eq!(live.delivered_online, 1);
    assert_eq!(deliver_id(&next(&mut s).await), live.msg_id);
    assert!(s.try_next().is_none());

    assert!(f.router.ack(D1, ids[1]).await.unwrap());
    drop(s);
    let s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    assert_eq!(
        s.replay_pending(),
        2,
        "ids[0] went with the first login's since-id, ids[1] with its ack; ids[2] and the live one remain"
    );
    drop(s);
    // Deliveries are in id order, so an ack covers every id below it (docs/protocol.md section 4).
    assert!(f.router.ack(D1, live.msg_id).await.unwrap());
    assert!(!f.router.ack(D1, ids[2]).await.unwrap(), "already covered");
    let s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    assert_eq!(s.replay_pending(), 0);
}

/// Stored messages at or below a login's since-id are acknowledged by it, the rest replayed in
/// order; under either eviction policy a full inbox is freed and nothing is stranded.
#[tokio::test]
async fn since_id_acknowledges_what_it_covers_and_strands_nothing() {
    for eviction in [EvictionPolicy::DropOldest, EvictionPolicy::RejectNew] {
        let f = fixture(|c| {
            c.offline.max_per_terminal = 4;
            c.offline.eviction = eviction;
        });
        let mut ids = Vec::new();
        for i in 0..4u8 {
            let o = f
                .router
                .push(Target::Terminal(P1), None, Bytes::from(vec![i]), None)
                .await
                .unwrap();
            ids.push(o.msg_id);
        }
        // The phone got the first two earlier (its since-id) but the acks were lost.
        let mut s = f
            .router
            .login(login(P1, Transport::AppWs, ids[1]))
            .await
            .unwrap();
        assert_eq!(deliver_id(&next(&mut s).await), ids[2], "{eviction:?}");
        assert_eq!(deliver_id(&next(&mut s).await), ids[3], "{eviction:?}");
        assert!(s.try_next().is_none());
        let stats = f.router.stores().offline.stats().await.unwrap();
        assert_eq!(stats.references, 2, "{eviction:?}: ids[0..2] removed");
        // The inbox has room again: two more are stored without eviction or refusal.
        for i in 4..6u8 {
            let o = f
                .router
                .push(Target::Terminal(P1), None, Bytes::from(vec![i]), None)
                .await
                .unwrap();
            assert_eq!(
                (o.stored_for, o.evicted, o.rejected),
                (1, 0, 0),
                "{eviction:?}"
            );
            assert_eq!(deliver_id(&next(&mut s).await), o.msg_id);
            ids.push(o.msg_id);
        }
        drop(s);
        // A login covering everything leaves nothing stored and replays nothing.
        let s = f
            .router
            .login(login(P1, Transport::AppWs, ids[5]))
            .await
            .unwrap();
        assert_eq!(s.replay_pending(), 0);
        let stats = f.router.stores().offline.stats().await.unwrap();
        assert_eq!((stats.messages, stats.references), (0, 0), "{eviction:?}");
    }
}

/// A `next` abandoned while it re-reads the store after a dropped Deliver (a transport's
/// `select!` picked another branch) loses nothing: the next call reads again.
#[tokio::test]
async fn an_abandoned_resync_loses_nothing() {
    let f = fixture(|c| {
        c.limits.queue_full_policy = QueueFullPolicy::DropNewest;
        c.limits.outbound_queue = 2;
    });
    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    let pushed = fill_queue(&f, 5).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        // Polled once (starting the store read), then dropped (an event it did yield counts).
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::ZERO, s.next()).await {
            got.push(deliver_id(&ev));
        }
    }
    while got.len() < pushed.len() {
        got.push(deliver_id(&next(&mut s).await));
    }
    let want: Vec<u64> = pushed.iter().map(|p| p.msg_id).collect();
    assert_eq!(got, want);
    assert!(s.try_next().is_none());
}

#[tokio::test]
async fn replay_and_live_queue_never_yield_an_id_twice() {
    let f = fixture(|_| {});
    let first = f
        .router
        .push(Target::Terminal(D1), None, Bytes::from_static(b"a"), None)
        .await
        .unwrap();
    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    // Simulate the login race: the same message is also queued live.
    s.handle().offer(
        Outbound::Deliver {
            msg_id: first.msg_id,
            from: None,
            payload: Bytes::new(),
        },
        f.router.queue_limits(),
    );
    assert_eq!(deliver_id(&next(&mut s).await), first.msg_id);
    assert!(s.try_next().is_none());
}

#[tokio::test]
async fn push_addressing_modes() {
    let f = fixture(|_| {});
    let (d2, p2) = (Address::device(2), Address::phone(2));
    let mut sd1 = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    let mut sd2 = f
        .router
        .login(login(d2, Transport::DeviceWs, 0))
        .await
        .unwrap();
    let mut sp1 = f
        .router
        .login(login(P1, Transport::AppWs, 0))
        .await
        .unwrap();
    // p2 is known (logged in once) but offline now.
    drop(
        f.router
            .login(login(p2, Transport::AppWs, 0))
            .await
            .unwrap(),
    );

    let m = f
        .router
        .push(
            Target::List(vec![D1, P1]),
            None,
            Bytes::from_static(b"m"),
            None,
        )
        .await
        .unwrap();
    assert_eq!((m.stored_for, m.delivered_online), (2, 2));
    assert_eq!(deliver_id(&next(&mut sd1).await), m.msg_id);
    assert_eq!(deliver_id(&next(&mut sp1).await), m.msg_id);

    f.router
        .stores()
        .groups
        .set("kitchen", &[d2, p2])
        .await
        .unwrap();
    let g = f
        .router
        .push(
            Target::Group("kitchen".into()),
            None,
            Bytes::from_static(b"g"),
            None,
        )
        .await
        .unwrap();
    assert_eq!((g.stored_for, g.delivered_online), (2, 1));
    assert_eq!(deliver_id(&next(&mut sd2).await), g.msg_id);
    assert!(matches!(
        f.router
            .push(Target::Group("nope".into()), None, Bytes::new(), None)
            .await,
        Err(PushError::UnknownGroup(_))
    ));

    let all_d = f
        .router
        .push(Target::AllDevices, None, Bytes::from_static(b"d"), None)
        .await
        .unwrap();
    assert_eq!((all_d.stored_for, all_d.delivered_online), (2, 2));
    let all_p = f
        .router
        .push(Target::AllPhones, None, Bytes::from_static(b"p"), None)
        .await
        .unwrap();
    assert_eq!((all_p.stored_for, all_p.delivered_online), (2, 1));
    let all = f
        .router
        .push(Target::Everyone, None, Bytes::from_static(b"e"), None)
        .await
        .unwrap();
    assert_eq!((all.stored_for, all.delivered_online), (4, 3));
    assert_eq!(deliver_id(&next(&mut sd1).await), all_d.msg_id);
    assert_eq!(deliver_id(&next(&mut sd1).await), all.msg_id);
    assert_eq!(deliver_id(&next(&mut sp1).await), all_p.msg_id);

    // Offline p2 gets group, all-phones and everyone on login, in order.
    let s = f
        .router
        .login(login(p2, Transport::AppWs, 0))
        .await
        .unwrap();
    assert_eq!(s.replay_pending(), 3);

    // TTL bounds and payload size.
    assert!(matches!(
        f.router
            .push(
                Target::Terminal(D1),
                None,
                Bytes::new(),
                Some(Duration::ZERO)
            )
            .await,
        Err(PushError::BadTtl(_))
    ));
    assert!(matches!(
        f.router
            .push(Target::Terminal(D1), None, Bytes::from(vec![0; 5000]), None)
            .await,
        Err(PushError::TooLarge(5000))
    ));
    assert!(matches!(
        f.router
            .push(
                Target::Terminal(Address::device(0)),
                None,
                Bytes::new(),
                None
            )
            .await,
        Err(PushError::Address(..))
    ));
}

async fn fill_queue(f: &Fixture, n: usize) -> Vec<PushOutcome> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            f.router
                .push(Target::Terminal(D1), None, Bytes::from_static(b"q"), None)
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn queue_full_policies_are_applied_and_counted() {
    let f = fixture(|c| c.limits.queue_full_policy = QueueFullPolicy::DropNewest);
    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    let pushed = fill_queue(&f, 6).await;
    assert_eq!(pushed.iter().filter(|p| p.delivered_online == 1).count(), 4);
    // The dropped ones are neither lost nor overtaken: the session re-reads the store and
    // yields all six in id order (a device would discard an id below one it already saw).
    for p in &pushed {
        assert_eq!(deliver_id(&next(&mut s).await), p.msg_id);
    }
    assert!(s.try_next().is_none());
    let text = f.router.metrics().render();
    assert!(
        text.contains("broker_queue_drops_total{transport=\"udp\",policy=\"drop-newest\"} 2"),
        "{text}"
    );
    // A live push after the resync follows in order.
    let later = fill_queue(&f, 1).await;
    assert_eq!(deliver_id(&next(&mut s).await), later[0].msg_id);

    let f = fixture(|c| c.limits.queue_full_policy = QueueFullPolicy::DropOldest);
    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    let pushed = fill_queue(&f, 6).await;
    for p in &pushed {
        assert_eq!(deliver_id(&next(&mut s).await), p.msg_id);
    }
    assert!(s.try_next().is_none());
    assert!(
        f.router
            .metrics()
            .render()
            .contains("policy=\"drop-oldest\"} 2")
    );

    let f = fixture(|c| c.limits.queue_full_policy = QueueFullPolicy::Disconnect);
    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    fill_queue(&f, 5).await;
    assert_eq!(
        next(&mut s).await,
        Outbound::Kick {
            reason: KickReason::QueueFull
        }
    );
    assert_eq!(s.next().await, None);
    assert!(
        f.router
            .metrics()
            .render()
            .contains("policy=\"disconnect\"} 1")
    );
}

#[tokio::test]
async fn a_send_to_an_invalid_address_gets_the_validation_code_not_not_authorized() {
    // docs/protocol.md section 4, "Which error wins": size, address, binding, store.
    let f = fixture(|_| {});
    assert!(matches!(
        f.router.send(P1, Address::device(0), Bytes::new()).await,
        Err(PushError::Address(_, IdError::InvalidId))
    ));
    assert!(matches!(
        f.router
            .send(P1, Address::device(0), Bytes::from(vec![0; 5000]))
            .await,
        Err(PushError::TooLarge(5000))
    ));
    let f = fixture(|c| c.identity.profile = IdProfile::Signed);
    let phone = Address::phone(-7i32 as u32);
    // A device address with a phone's (negative) id, to which the phone is not bound either.
    assert!(matches!(
        f.router
            .send(phone, Address::device(-3i32 as u32), Bytes::new())
            .await,
        Err(PushError::Address(_, IdError::KindMismatch))
    ));
    assert!(matches!(
        f.router.send(phone, Address::device(3), Bytes::new()).await,
        Err(PushError::NotBound { .. })
    ));
    assert!(
        f.router
            .metrics()
            .render()
            .contains("result=\"invalid_address\"} 1")
    );
}

#[tokio::test]
async fn send_needs_a_binding_and_presence_reaches_bound_phones() {
    let f = fixture(|_| {});
    let mut phone = f
        .router
        .login(login(P1, Transport::AppWs, 0))
        .await
        .unwrap();
    assert!(matches!(
        f.router.send(P1, D1, Bytes::from_static(b"on")).await,
        Err(PushError::NotBound { .. })
    ));
    assert!(matches!(
        f.router.send(P1, Address::phone(2), Bytes::new()).await,
        Err(PushError::NotBound { .. })
    ));
    f.router.stores().bindings.bind(P1, D1).await.unwrap();

    let mut dev = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    assert_eq!(
        next(&mut phone).await,
        Outbound::Presence {
            who: D1,
            online: true
        }
    );

    let sent = f
        .router
        .send(P1, D1, Bytes::from_static(b"on"))
        .await
        .unwrap();
    match next(&mut dev).await {
        Outbound::Deliver {
            msg_id,
            from,
            payload,
        } => {
            assert_eq!(
                (msg_id, from, payload),
                (sent.msg_id, Some(P1), Bytes::from_static(b"on"))
            );
        }
        other => panic!("{other:?}"),
    }
    let back = f
        .router
        .send(D1, P1, Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(deliver_id(&next(&mut phone).await), back.msg_id);

    dev.close().await;
    assert_eq!(
        next(&mut phone).await,
        Outbound::Presence {
            who: D1,
            online: false
        }
    );
}

#[tokio::test]
async fn a_session_replaced_by_a_login_elsewhere_ends_without_an_offline_presence() {
    let f = fixture(|_| {});
    f.router.stores().bindings.bind(P1, D1).await.unwrap();
    let mut phone = f
        .router
        .login(login(P1, Transport::AppWs, 0))
        .await
        .unwrap();
    for (reason, offline_presence) in [(KickReason::Replaced, false), (KickReason::Admin, true)] {
        let mut dev = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
        assert_eq!(
            next(&mut phone).await,
            Outbound::Presence {
                who: D1,
                online: true
            }
        );
        // What cluster mode does when a login on another comet replaces this session.
        assert_eq!(f.router.kick(D1, reason), 1);
        assert_eq!(next(&mut dev).await, Outbound::Kick { reason });
        dev.close().await;
        let got = tokio::time::timeout(Duration::from_millis(200), phone.next()).await;
        if offline_presence {
            assert_eq!(
                got.expect("an offline Presence"),
                Some(Outbound::Presence {
                    who: D1,
                    online: false
                })
            );
        } else {
            assert!(got.is_err(), "{reason:?}: {got:?}");
        }
    }
}

#[tokio::test]
async fn commands_complete_time_out_and_fail_when_offline() {
    let f = fixture(|_| {});
    let r = f.router.clone();
    assert_eq!(
        r.command(D1, "on".into(), Bytes::new(), Duration::from_secs(1))
            .await,
        Err(CommandError::NotOnline)
    );
    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    let call = tokio::spawn({
        let r = r.clone();
        async move {
            r.command(
                D1,
                "relay".into(),
                Bytes::from_static(b"1"),
                Duration::from_secs(5),
            )
            .await
        }
    });
    let Outbound::Command {
        cmd_id,
        name,
        payload,
    } = next(&mut s).await
    else {
        panic!("expected command")
    };
    assert_eq!(
        (name.as_str(), payload),
        ("relay", Bytes::from_static(b"1"))
    );
    assert!(
        !r.complete_command(Address::device(2), cmd_id, 200, Bytes::new()),
        "other device cannot answer"
    );
    assert!(r.complete_command(D1, cmd_id, 200, Bytes::from_static(b"done")));
    assert!(
        !r.complete_command(D1, cmd_id, 200, Bytes::new()),
        "duplicate is ignored"
    );
    assert_eq!(
        call.await.unwrap(),
        Ok(CommandResult {
            status: 200,
            payload: Bytes::from_static(b"done")
        })
    );

    let started = Instant::now();
    assert_eq!(
        r.command(D1, "x".into(), Bytes::new(), Duration::from_millis(100))
            .await,
        Err(CommandError::Timeout)
    );
    assert!(started.elapsed() >= Duration::from_millis(100));

    let call = tokio::spawn({
        let r = r.clone();
        async move {
            r.command(D1, "y".into(), Bytes::new(), Duration::from_secs(5))
                .await
        }
    });
    while s.handle().queued() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(s);
    assert_eq!(call.await.unwrap(), Err(CommandError::Disconnected));
}

#[tokio::test]
async fn a_command_whose_caller_gives_up_leaves_nothing_pending() {
    let f = fixture(|_| {});
    let r = f.router.clone();
    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    let call = tokio::spawn({
        let r = r.clone();
        async move {
            r.command(D1, "slow".into(), Bytes::new(), Duration::from_secs(60))
                .await
        }
    });
    let Outbound::Command { cmd_id, .. } = next(&mut s).await else {
        panic!("expected command")
    };
    assert_eq!(r.pending_commands(), 1);
    // The caller gives up (an HTTP client that disconnects drops the handler's future).
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert_eq!(r.pending_commands(), 0, "the given-up command is not kept");
    assert!(
        !r.complete_command(D1, cmd_id, 200, Bytes::new()),
        "a late answer matches nothing"
    );
    let text = r.metrics().render();
    assert!(
        text.contains("broker_commands_total{result=\"cancelled\"} 1"),
        "{text}"
    );
    // A command that ends normally is counted under its result, not as cancelled.
    assert_eq!(
        r.command(D1, "x".into(), Bytes::new(), Duration::from_millis(20))
            .await,
        Err(CommandError::Timeout)
    );
    assert_eq!(r.pending_commands(), 0);
    let text = r.metrics().render();
    assert!(
        text.contains("broker_commands_total{result=\"cancelled\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("broker_commands_total{result=\"timeout\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn uploads_are_durable_before_ack_and_deduplicated() {
    let f = fixture(|_| {});
    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    f.router
        .spawn_upload(s.handle(), 9, "energy".into(), Bytes::from_static(b"42"));
    assert_eq!(next(&mut s).await, Outbound::UploadAck { upload_id: 9 });
    let recs = f.router.stores().uploads.read(0, 10).await.unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (
            recs[0].device,
            recs[0].upload_epoch,
            recs[0].upload_id,
            recs[0].topic.as_str()
        ),
        (D1, EPOCH, 9, "energy"),
        "stored under the session's upload epoch"
    );
    let again = f
        .router
        .upload(D1, EPOCH, 9, "energy", Bytes::from_static(b"42"))
        .await
        .unwrap();
    assert!(again.duplicate);
    let next_boot = f
        .router
        .upload(D1, EPOCH + 1, 9, "energy", Bytes::from_static(b"42"))
        .await
        .unwrap();
    assert!(!next_boot.duplicate, "another epoch is another upload");
    assert!(matches!(
        f.router
            .upload(D1, EPOCH, 10, "energy", Bytes::from(vec![0; 5000]))
            .await,
        Err(UploadError::TooLarge)
    ));
}

/// Requests seen by the test backend: (path, device header, body).
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A tiny HTTP server on 127.0.0.1:0 that records bodies and answers with a fixed status.
async fn backend(status: u16) -> (String, Seen) {
    use axum::extract::{Request, State};
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(move |State(seen): State<Seen>, req: Request| async move {
            let path = req.uri().path().to_string();
            let dev = req
                .headers()
                .get("x-plugcloud-device")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap();
            seen.lock()
                .unwrap()
                .push((path.clone(), dev, body.to_vec()));
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                format!("answer:{path}"),
            )
        })
        .with_state(seen.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn device_requests_are_forwarded_to_the_backend() {
    let f = fixture(|_| {});
    assert_eq!(
        f.router.device_request(D1, "/x", Bytes::new()).await.status,
        503
    );

    let (url, seen) = backend(201).await;
    let f = fixture(|c| c.backend.device_request_url = url.clone());
    let resp = f
        .router
        .device_request(D1, "/time", Bytes::from_static(b"q"))
        .await;
    assert_eq!(
        resp,
        DeviceResponse {
            status: 201,
            payload: Bytes::from_static(b"answer:/time")
        }
    );
    assert_eq!(
        seen.lock().unwrap()[0],
        ("/time".into(), "device:1".into(), b"q".to_vec())
    );
    assert_eq!(
        f.router
            .device_request(D1, "/../etc", Bytes::new())
            .await
            .status,
        400
    );
    assert_eq!(
        f.router
            .device_request(D1, "relative", Bytes::new())
            .await
            .status,
        400
    );
    // Spellings the URL parser turns into `..` or a query are refused too, before any call.
    for path in [
        "/%2e%2e/etc",
        "/%2E%2e/etc",
        "/..\\etc",
        "/x?y=1",
        "/x#y",
        "//etc",
        "/./x",
    ] {
        assert_eq!(
            f.router.device_request(D1, path, Bytes::new()).await.status,
            400,
            "{path:?}"
        );
    }
    assert_eq!(seen.lock().unwrap().len(), 1, "no call for a refused path");
    let text = f.router.metrics().render();
    assert!(
        text.contains("broker_device_requests_total{result=\"bad_path\"} 9"),
        "{text}"
    );

    let mut s = f.router.login(login(D1, Transport::Udp, 0)).await.unwrap();
    let slot = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
    let permit = slot.clone().try_acquire_owned().unwrap();
    f.router
        .spawn_device_request(s.handle(), 77, "/r".into(), Bytes::new(), permit);
    assert_eq!(
        next(&mut s).await,
        Outbound::Response {
            req_id: 77,
            status: 201,
            payload: Bytes::from_static(b"answer:/r")
        }
    );
    // The Request's slot is given back once its answer is queued (the task ends just after).
    for _ in 0..100 {
        if slot.available_permits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(slot.available_permits(), 1);

    let f = fixture(|c| c.backend.device_request_url = "http://127.0.0.1:1".into());
    assert_eq!(
        f.router.device_request(D1, "/x", Bytes::new()).await.status,
        502
    );
}

#[tokio::test]
async fn webhook_forwards_uploads_in_order_and_persists_its_cursor() {
    let (url, seen) = backend(200).await;
    let f = fixture(|c| c.upload.webhook_url = format!("{url}/hook"));
    let shutdown = CancellationToken::new();
    let tasks = f.router.spawn_background(shutdown.clone());
    for i in 1..=3u32 {
        f.router
            .upload(D1, EPOCH, i, "t", Bytes::from(vec![i as u8]))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "webhook did not receive 3 uploads"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bodies: Vec<serde_json::Value> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, b)| serde_json::from_slice(b).unwrap())
        .collect();
    assert_eq!(
        bodies
            .iter()
            .map(|b| b["upload_id"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        bodies[0]["device"],
        serde_json::json!({"kind": "device", "id": 1})
    );
    assert_eq!(bodies[2]["payload_base64"], "Aw==");
    assert_eq!(bodies[0]["upload_epoch"], "000000005eed0001");
    assert_eq!(bodies[0]["dedup_key"], "1:000000005eed0001:1");
    while f
        .router
        .stores()
        .uploads
        .consumer_cursor(webhook::CONSUMER)
        .await
        .unwrap()
        < 3
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Where the model test's broker keeps its state; each [`ModelStore::open`] is a broker (re)start
/// on the same data.
enum ModelStore {
    /// The embedded store in this directory.
    Embedded(tempfile::TempDir),
    /// The Redis store on this connection (its own key prefix), uploads in a local spool.
    #[cfg(feature = "services-tests")]
    Redis(Arc<crate::store::redis::RedisConn>, tempfile::TempDir),
}

impl ModelStore {
    fn name(&self) -> &'static str {
        match self {
            ModelStore::Embedded(_) => "embedded",
            #[cfg(feature = "services-tests")]
            ModelStore::Redis(..) => "redis",
        }
    }

    /// Deletes everything the store holds while the broker runs, as a Redis restart without
    /// persistence would (then waits 5 ms: the outage); `false` for the embedded store, which
    /// does not lose data.
    async fn lose_data(&self) -> bool {
        match self {
            ModelStore::Embedded(_) => false,
            #[cfg(feature = "services-tests")]
            ModelStore::Redis(conn, _) => {
                let mut c = conn.get().await;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", conn.prefix()))
                    .query_async(&mut c)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    let _: () = redis::cmd("DEL")
                        .arg(keys)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                true
            }
        }
    }

    /// Opens the stores (a broker start), counting data losses into `metrics`.
    async fn open(&self, c: &Config, metrics: &Metrics) -> crate::store::Stores {
        let limits = OfflineLimits {
            max_per_terminal: u64::from(c.offline.max_per_terminal),
            eviction: c.offline.eviction,
        };
        match self {
            ModelStore::Embedded(dir) => {
                let _ = metrics;
                open_embedded(dir.path(), limits).await.stores()
            }
            #[cfg(feature = "services-tests")]
            ModelStore::Redis(conn, spool) => {
                let r = crate::store::redis::RedisStore::with_data_loss_counter(
                    conn.clone(),
                    limits,
                    metrics.store_data_loss(),
                );
                r.check_marker().await.unwrap();
                crate::store::Stores {
                    offline: r.clone(),
                    uploads: open_embedded(spool.path(), limits).await,
                    bindings: r.clone(),
                    groups: r,
                }
            }
        }
    }
}

/// Opens the embedded store in `dir`, retrying while the previous broker still closes it.
async fn open_embedded(dir: &std::path::Path, limits: OfflineLimits) -> Arc<EmbeddedStore> {
    let mut tries = 0;
    loop {
        match EmbeddedStore::open(dir, limits) {
            Ok(s) => return s,
            Err(e) if tries < 100 => {
                tries += 1;
                tracing::debug!(error = %e, "store still open, retrying");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen the store: {e}"),
        }
    }
}

/// The seeded model test's fixed seeds, or `ROUTER_MODEL_SEED` alone.
fn model_seeds() -> Vec<u64> {
    match std::env::var("ROUTER_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("ROUTER_MODEL_SEED is a u64")],
        Err(_) => (1..=6).collect(),
    }
}

#[tokio::test]
async fn seeded_model_order_and_at_least_once() {
    for seed in model_seeds() {
        let dir = tempfile::tempdir().unwrap();
        run_router_model(seed, ModelStore::Embedded(dir)).await;
    }
}

/// The same model on the Redis store of `cargo xtask services up` (feature `services-tests`).
#[cfg(feature = "services-tests")]
#[tokio::test]
async fn seeded_model_on_the_redis_store() {
    let env = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.cache/services/env"
    ))
    .unwrap_or_default();
    let url = env
        .lines()
        .find_map(|l| l.strip_prefix("REDIS_URL="))
        .expect("services are not running: run `cargo xtask services up` first")
        .to_string();
    for seed in model_seeds() {
        let cfg = crate::store::redis::RedisConfig {
            url: url.clone(),
            key_prefix: format!(
                "test:router-model:{}:{seed}:{}:",
                std::process::id(),
                now_ms()
            ),
            ..Default::default()
        };
        let conn = Arc::new(crate::store::redis::RedisConn::connect(&cfg).await.unwrap());
        let spool = tempfile::tempdir().unwrap();
        run_router_model(seed, ModelStore::Redis(conn.clone(), spool)).await;
        let mut c = conn.get().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", cfg.key_prefix))
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut c)
                .await
                .unwrap();
        }
    }
}

/// A seeded simulation of the router over `store` against a reference model: random
/// pushes (unicast, list, broadcasts to everyone or every device), device-to-phone sends, drains with and without acks,
/// disconnects, reconnects with the terminal's since-id, broker restarts (every session ends,
/// the store is reopened under a new router) and, on Redis, data loss (every key deleted while
/// the broker runs; bindings are then re-created), under a small outbound queue with a dropping
/// full-queue policy. After every step each terminal has seen its ids in strictly increasing
/// order (as a device discards anything at or below its highest id, an overtaken id would be
/// lost) and every new id is above every earlier one, restarts and data loss included; a loss is
/// counted in `broker_store_data_loss_total`. At the end, after a final reconnect and drain, each
/// terminal has seen every id addressed to it after the last loss (at least once, none lost) and
/// nothing that was not addressed to it. The failing seed is printed (`ROUTER_MODEL_SEED=<seed>`
/// replays it).
async fn run_router_model(seed: u64, store: ModelStore) {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    {
        println!("router model seed {seed} ({})", store.name());
        let mut rng = StdRng::seed_from_u64(seed);
        let policy = if rng.random_bool(0.5) {
            QueueFullPolicy::DropNewest
        } else {
            QueueFullPolicy::DropOldest
        };
        let mut c = Config::default();
        c.limits.queue_full_policy = policy;
        c.limits.outbound_queue = 3;
        let start = async |store: &ModelStore| {
            let metrics = Metrics::new();
            Fixture {
                router: Router::new(c.router_settings(), store.open(&c, &metrics).await, metrics),
                _dir: tempfile::tempdir().unwrap(),
            }
        };
        let mut f = start(&store).await;
        let mut last_id = 0u64;
        let mut issued = |id: u64, what: &str| {
            assert!(
                id > last_id,
                "seed {seed} ({}): {what} got id {id} after {last_id}",
                store.name()
            );
            last_id = id;
        };
        let terms = [D1, Address::device(2), P1];
        f.router.stores().bindings.bind(P1, D1).await.unwrap();
        // Per terminal: live session, highest id seen (its since-id), ids seen, ids addressed.
        let mut sessions: Vec<Option<Session>> = Vec::new();
        for t in terms {
            sessions.push(Some(
                f.router.login(login(t, Transport::Udp, 0)).await.unwrap(),
            ));
        }
        let mut high = [0u64; 3];
        let mut seen: [Vec<u64>; 3] = Default::default();
        let mut addressed: [Vec<u64>; 3] = Default::default();
        // Ids a terminal may or may not see: addressed before a data loss, or pushed to everyone
        // while it was not known (not logged in since the loss).
        let mut may: [Vec<u64>; 3] = Default::default();
        let mut known = [true; 3];
        let mut losses_since_start = 0u64;

        /// Drains up to `max` events as terminal `t` would, checking the order.
        #[allow(clippy::too_many_arguments)]
        async fn drain(
            f: &Fixture,
            s: &mut Session,
            t: Address,
            ack: bool,
            max: usize,
            high: &mut u64,
            seen: &mut Vec<u64>,
            seed: u64,
        ) {
            for _ in 0..max {
                let ev = match tokio::time::timeout(Duration::from_millis(20), s.next()).await {
                    Ok(Some(ev)) => ev,
                    _ => return,
                };
                if let Outbound::Deliver { msg_id, .. } = ev {
                    assert!(
                        msg_id > *high,
                        "seed {seed}: {t} got {msg_id} after {high} (seen {seen:?})"
                    );
                    *high = msg_id;
                    seen.push(msg_id);
                    if ack {
                        f.router.ack(t, msg_id).await.unwrap();
                    }
                }
            }
        }

        for _step in 0..150 {
            match rng.random_range(0..12) {
                0..=2 => {
                    let i = rng.random_range(0..3);
                    let o = f
                        .router
                        .push(Target::Terminal(terms[i]), None, Bytes::new(), None)
                        .await
                        .unwrap();
                    issued(o.msg_id, "push");
                    addressed[i].push(o.msg_id);
                }
                3 => {
                    let o = f
                        .router
                        .push(
                            Target::List(vec![terms[0], terms[2]]),
                            None,
                            Bytes::new(),
                            None,
                        )
                        .await
                        .unwrap();
                    issued(o.msg_id, "list push");
                    addressed[0].push(o.msg_id);
                    addressed[2].push(o.msg_id);
                }
                4 => {
                    // A broadcast to everyone or to every device: one record in the embedded
                    // store, for the terminals known (all three logged in at the start).
                    let devices_only = rng.random_bool(0.5);
                    let target = if devices_only {
                        Target::AllDevices
                    } else {
                        Target::Everyone
                    };
                    let o = f
                        .router
                        .push(target, None, Bytes::new(), None)
                        .await
                        .unwrap();
                    issued(o.msg_id, "broadcast");
                    for i in 0..3 {
                        if devices_only && terms[i].kind != Kind::Device {
                            continue;
                        }
                        if known[i] {
                            addressed[i].push(o.msg_id);
                        } else {
                            may[i].push(o.msg_id);
                        }
                    }
                }
                5 => {
                    let o = f.router.send(D1, P1, Bytes::new()).await.unwrap();
                    issued(o.msg_id, "send");
                    addressed[2].push(o.msg_id);
                }
                6 | 7 => {
                    let i = rng.random_range(0..3);
                    let ack = rng.random_bool(0.7);
                    let max = rng.random_range(1..6);
                    if let Some(s) = sessions[i].as_mut() {
                        drain(&f, s, terms[i], ack, max, &mut high[i], &mut seen[i], seed).await;
                    }
                }
                8 => {
                    let i = rng.random_range(0..3);
                    sessions[i] = None;
                }
                9 => {
                    let i = rng.random_range(0..3);
                    if sessions[i].is_none() {
                        let l = login(terms[i], Transport::Udp, high[i]);
                        sessions[i] = Some(f.router.login(l).await.unwrap());
                        known[i] = true;
                    }
                }
                10 => {
                    if store.lose_data().await {
                        for i in 0..3 {
                            may[i].append(&mut addressed[i]);
                            known[i] = false;
                        }
                        f.router.stores().bindings.bind(P1, D1).await.unwrap();
                        losses_since_start += 1;
                        // Noticed (and counted once) by the next store call that checks; the
                        // push that notices it stores nothing and says so, its retry is stored.
                        let refused = f
                            .router
                            .push(Target::Terminal(D1), None, Bytes::new(), None)
                            .await;
                        assert!(
                            matches!(
                                refused,
                                Err(PushError::Store(crate::store::StoreError::DataLost(_)))
                            ),
                            "seed {seed}: the first push after a loss reports it: {refused:?}"
                        );
                        let o = f
                            .router
                            .push(Target::Terminal(D1), None, Bytes::new(), None)
                            .await
                            .unwrap();
                        issued(o.msg_id, "push after a data loss");
                        addressed[0].push(o.msg_id);
                        let counted = f
                            .router
                            .metrics()
                            .render()
                            .lines()
                            .find_map(|l| l.strip_prefix("broker_store_data_loss_total "))
                            .map(|v| v.trim().to_string());
                        assert_eq!(
                            counted,
                            Some(losses_since_start.to_string()),
                            "seed {seed}: data loss counted"
                        );
                    }
                }
                _ => {
                    // Broker restart: every session ends, the store is reopened.
                    for s in &mut sessions {
                        *s = None;
                    }
                    drop(f);
                    f = start(&store).await;
                    losses_since_start = 0;
                }
            }
        }
        for i in 0..3 {
            sessions[i] = None;
            let mut s = f
                .router
                .login(login(terms[i], Transport::Udp, high[i]))
                .await
                .unwrap();
            drain(
                &f,
                &mut s,
                terms[i],
                true,
                usize::MAX,
                &mut high[i],
                &mut seen[i],
                seed,
            )
            .await;
            let missing: Vec<&u64> = addressed[i]
                .iter()
                .filter(|id| !seen[i].contains(id))
                .collect();
            assert!(
                missing.is_empty(),
                "seed {seed} ({policy:?}): {} never saw {missing:?}",
                terms[i]
            );
            let unexpected: Vec<&u64> = seen[i]
                .iter()
                .filter(|id| !addressed[i].contains(id) && !may[i].contains(id))
                .collect();
            assert!(
                unexpected.is_empty(),
                "seed {seed} ({policy:?}): {} saw {unexpected:?}, never addressed to it",
                terms[i]
            );
        }
    }
}

/// A broadcast is offered by the fan-out task after the push answered (the push call does not
/// walk the sessions), and pushes that follow, broadcast or unicast, reach each session in id
/// order; once the queue is idle a unicast is offered inside the push call again.
#[tokio::test]
async fn a_broadcast_is_offered_after_the_answer_and_later_pushes_keep_the_order() {
    let f = fixture(|c| c.limits.outbound_queue = 16);
    let mut sessions = Vec::new();
    for id in 1..=40 {
        let s = f
            .router
            .login(login(Address::device(id), Transport::DeviceWs, 0))
            .await
            .unwrap();
        sessions.push(s);
    }
    let a = f
        .router
        .push(Target::AllDevices, None, Bytes::from_static(b"a"), None)
        .await
        .unwrap();
    assert_eq!(a.delivered_online, 40, "the sessions online when stored");
    let b = f
        .router
        .push(Target::AllDevices, None, Bytes::from_static(b"b"), None)
        .await
        .unwrap();
    let u = f
        .router
        .push(Target::Terminal(D1), None, Bytes::from_static(b"u"), None)
        .await
        .unwrap();
    assert!(a.msg_id < b.msg_id && b.msg_id < u.msg_id);
    for want in [a.msg_id, b.msg_id, u.msg_id] {
        assert_eq!(deliver_id(&next(&mut sessions[0]).await), want);
    }
    for s in &mut sessions[1..] {
        assert_eq!(deliver_id(&next(s).await), a.msg_id);
        assert_eq!(deliver_id(&next(s).await), b.msg_id);
        assert!(s.try_next().is_none());
    }
    // Idle again: a unicast is offered inside the push call.
    let later = f
        .router
        .push(Target::Terminal(D1), None, Bytes::from_static(b"v"), None)
        .await
        .unwrap();
    assert_eq!(later.delivered_online, 1);
    assert_eq!(
        sessions[0].try_next().map(|e| deliver_id(&e)),
        Some(later.msg_id)
    );
}

#[tokio::test]
async fn concurrent_broadcasts_are_stored_as_one_batch_and_offered_with_one_wake_up() {
    let f = fixture(|c| c.limits.outbound_queue = 16);
    let mut sessions = Vec::new();
    let ready = Arc::new(ReadyList::new());
    for id in 1..=20u32 {
        let s = f
            .router
            .login(login(Address::device(id), Transport::DeviceWs, 0))
            .await
            .unwrap();
        assert!(s.handle().wake_into(ready.clone(), id));
        sessions.push(s);
    }
    // Ten broadcasts at once (as ten HTTP requests would be), then a push to one device sent
    // once they were all answered.
    let pushes = (0..10u8).map(|i| {
        f.router
            .push(Target::AllDevices, None, Bytes::from(vec![i]), None)
    });
    let answers: Vec<PushOutcome> = futures_util::future::join_all(pushes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let unicast = f
        .router
        .push(Target::Terminal(D1), None, Bytes::from_static(b"u"), None)
        .await
        .unwrap();
    let mut ids: Vec<u64> = answers.iter().map(|a| a.msg_id).collect();
    assert!(answers.iter().all(|a| a.delivered_online == 20));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "ten distinct ids");
    assert!(unicast.msg_id > ids[9]);
    // Every session gets the ten in id order (the unicast after them on D1), and was woken
    // once for all ten: they were queued together and offered in one walk.
    for s in &mut sessions {
        for &want in &ids {
            assert_eq!(deliver_id(&next(s).await), want);
        }
    }
    assert_eq!(deliver_id(&next(&mut sessions[0]).await), unicast.msg_id);
    let mut woken = Vec::new();
    ready.take(&mut woken);
    woken.retain(|&t| t != 1);
    woken.sort_unstable();
    assert_eq!(
        woken,
        (2..=20).collect::<Vec<u32>>(),
        "one wake-up per session"
    );
}

/// The consumer's wait: an event queued before it waits is found at once, one queued while it
/// waits (from another task) wakes it, and a wait whose future was dropped (a `select!` that
/// another branch won) loses nothing.
#[tokio::test]
async fn next_sees_events_queued_before_during_and_after_an_abandoned_wait() {
    let f = fixture(|_| {});
    let mut s = f
        .router
        .login(login(D1, Transport::DeviceWs, 0))
        .await
        .unwrap();
    let h = s.handle().clone();
    let limits = f.router.queue_limits();
    let command = |cmd_id| Outbound::Command {
        cmd_id,
        name: "x".into(),
        payload: Bytes::new(),
    };
    assert_eq!(h.offer(command(1), limits), Enqueued::Queued);
    assert_eq!(next(&mut s).await, command(1), "queued before the wait");
    let offer_later = {
        let h = h.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            h.offer(command(2), limits)
        })
    };
    assert_eq!(next(&mut s).await, command(2), "queued during the wait");
    assert_eq!(offer_later.await.unwrap(), Enqueued::Queued);
    // A wait abandoned before anything came, then an event: the next wait finds it.
    let abandoned = tokio::time::timeout(Duration::from_millis(20), s.next()).await;
    assert!(abandoned.is_err(), "nothing was queued: {abandoned:?}");
    assert_eq!(h.offer(command(3), limits), Enqueued::Queued);
    assert_eq!(
        next(&mut s).await,
        command(3),
        "queued after an abandoned wait"
    );
}
