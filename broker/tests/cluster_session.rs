//! One session per terminal cluster-wide (`plug` profile) on the real services from
//! `cargo xtask services up` (feature `services-tests`): Redis and ZooKeeper, RabbitMQ for the
//! comets' upload sinks. Two comets and one msgbus run in process on 127.0.0.1 port 0.
//!
//! Run: `cargo test -p broker --features services-tests --test cluster_session -- --nocapture`.
//! Every test uses its own Redis key prefix and znode root, deleted at the end.
#![cfg(feature = "services-tests")]

mod cluster_support;
mod comet_support;
mod services_env;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::cluster::ClusterNode;
use broker::cluster::claims::{Notice, SessionClaims};
use broker::store::redis::{OnlineRegistry, RedisConn};
use broker::terminal::Address;
use cluster_support::*;
use comet_support::*;
use serde_json::json;
use shared_protocol::codes::Code;

/// Two comets (`comet-a`, `comet-b`) and one msgbus over this run's names.
struct Cluster {
    run: Run,
    a: ClusterNode,
    b: ClusterNode,
    bus: ClusterNode,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start() -> Cluster {
        let n = Nodes::start(&["comet-a", "comet-b"], &["msgbus-1"], |_| {}).await;
        let [a, b]: [ClusterNode; 2] = n.comets.try_into().ok().expect("two comets");
        let [bus]: [ClusterNode; 1] = n.buses.try_into().ok().expect("one msgbus");
        Cluster {
            run: n.run,
            a,
            b,
            bus,
            _dirs: n.dirs,
        }
    }

    async fn stop(self) {
        stop_all(&self.run, [self.a, self.b, self.bus]).await;
    }

    /// The comets the online registry names for device `id` (asked through the msgbus).
    async fn nodes_of(&self, id: u32) -> Vec<String> {
        registered_nodes(&self.bus, "device", id).await
    }

    /// Live local sessions of device `id` on (comet A, comet B).
    fn sessions(&self, id: u32) -> (usize, usize) {
        let d = Address::device(id);
        (
            self.a.running.router.status(d).len(),
            self.b.running.router.status(d).len(),
        )
    }

    /// Pushes `text` to device `id` through the msgbus; the msg_id when answered 200.
    async fn push(&self, id: u32, text: &str) -> Option<u64> {
        push_text(
            &self.bus,
            json!({"terminal": {"kind": "device", "id": id}}),
            text,
        )
        .await
    }
}

/// Waits for the Kick on a replaced session; the Delivers it got before.
async fn until_kick(dev: &mut Device) -> (Code, Vec<u64>) {
    let mut ids = Vec::new();
    loop {
        match dev.next_event(WAIT).await {
            Some(Got::Kick { reason }) => return (reason, ids),
            Some(Got::Deliver { msg_id, .. }) => ids.push(msg_id),
            Some(_) => {}
            None => panic!("no Kick within {WAIT:?} (delivered before: {ids:?})"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_on_comet_b_replaces_the_session_on_comet_a_and_races_leave_one_session() {
    let c = Cluster::start().await;

    // Device 42 on comet A, then on comet B: A's session gets Kick REPLACED.
    let mut on_a = login(Wire::udp(c.a.running.comet.udp).await, 42, 0)
        .await
        .unwrap();
    assert_eq!(c.nodes_of(42).await, vec!["comet-a".to_string()]);
    let t = Instant::now();
    let mut on_b = login(Wire::udp(c.b.running.comet.udp).await, 42, 0)
        .await
        .unwrap();
    let (reason, before) = until_kick(&mut on_a).await;
    eprintln!(
        "login on comet B -> Kick on comet A: {:?} (login included)",
        t.elapsed()
    );
    assert_eq!(reason, Code::REPLACED);
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(c.nodes_of(42).await, vec!["comet-b".to_string()]);
    wait_until(
        "comet A dropped the replaced session",
        Duration::from_secs(5),
        || c.sessions(42) == (0, 1),
    )
    .await;

    // A push afterwards reaches B's session only, once.
    let id = c.push(42, "after").await.expect("push answered 200");
    let got = device_delivers(&mut on_b, Duration::from_millis(1500)).await;
    assert_eq!(got, vec![(id, b"after".to_vec())], "comet B's session");
    assert_eq!(
        device_delivers(&mut on_a, Duration::from_millis(300)).await,
        vec![],
        "the replaced session on comet A"
    );

    // Comet A counted one kick (the notice from the link or the mailbox, whichever came
    // first; the other finds nothing left to kick).
    let a_metrics = scrape(&c.a).await;
    let kicked: f64 = ["link", "mailbox"]
        .iter()
        .filter_map(|via| {
            sample(
                &a_metrics,
                &format!(r#"broker_cluster_replacements_total{{via="{via}",result="kicked"}}"#),
            )
        })
        .sum();
    assert_eq!(kicked, 1.0, "{a_metrics}");

    // And back: a login on comet A replaces the one on comet B.
    let mut again_a = login(Wire::udp(c.a.running.comet.udp).await, 42, id)
        .await
        .unwrap();
    let (reason, _) = until_kick(&mut on_b).await;
    assert_eq!(reason, Code::REPLACED);
    assert_eq!(c.nodes_of(42).await, vec!["comet-a".to_string()]);
    let id2 = c.push(42, "back").await.unwrap();
    assert_eq!(
        device_delivers(&mut again_a, Duration::from_millis(1500)).await,
        vec![(id2, b"back".to_vec())]
    );

    // Races: devices 100..110 log in on both comets at the same time; each ends with exactly
    // one live session, the one the online registry names, and the other got Kick REPLACED.
    let mut survivors = (0, 0);
    for id in 100..110u32 {
        let (ra, rb) = tokio::join!(
            async { login(Wire::udp(c.a.running.comet.udp).await, id, 0).await },
            async { login(Wire::udp(c.b.running.comet.udp).await, id, 0).await },
        );
        let (mut da, mut db) = (ra.unwrap(), rb.unwrap());
        wait_until(
            "exactly one live session cluster-wide",
            Duration::from_secs(5),
            || matches!(c.sessions(id), (1, 0) | (0, 1)),
        )
        .await;
        // Settled: still exactly one after a few heartbeats (mailbox drains included).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (na, nb) = c.sessions(id);
        assert_eq!(na + nb, 1, "device {id}: sessions on A, B = {na}, {nb}");
        let (winner, loser) = if na == 1 {
            survivors.0 += 1;
            ("comet-a", &mut db)
        } else {
            survivors.1 += 1;
            ("comet-b", &mut da)
        };
        assert_eq!(
            c.nodes_of(id).await,
            vec![winner.to_string()],
            "device {id}"
        );
        let (reason, _) = until_kick(loser).await;
        assert_eq!(reason, Code::REPLACED, "device {id}");
        let pid = c.push(id, "race").await.unwrap();
        let live = if na == 1 { &mut da } else { &mut db };
        assert_eq!(
            device_delivers(live, Duration::from_millis(800)).await,
            vec![(pid, b"race".to_vec())],
            "device {id}: the surviving session gets the push"
        );
    }
    eprintln!(
        "races: comet A kept {}, comet B kept {}",
        survivors.0, survivors.1
    );

    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_terminal_moving_between_comets_mid_stream_keeps_order_and_loses_nothing_acknowledged() {
    const PUSHES: usize = 80;
    const PUSHERS: usize = 4;
    const MOVE_AFTER: usize = 25;
    let c = Arc::new(Cluster::start().await);
    let dev_id = 50;
    let mut on_a = login(Wire::udp(c.a.running.comet.udp).await, dev_id, 0)
        .await
        .unwrap();
    assert_eq!(c.nodes_of(dev_id).await, vec!["comet-a".to_string()]);

    // Comet A's session: every Deliver until its Kick.
    let seen_a = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader_a = {
        let seen = seen_a.clone();
        tokio::spawn(async move {
            loop {
                match on_a.next_event(Duration::from_secs(20)).await {
                    Some(Got::Deliver { msg_id, .. }) => seen.lock().unwrap().push(msg_id),
                    Some(Got::Kick { reason }) => return reason,
                    Some(_) => {}
                    None => panic!("comet A's session was never kicked"),
                }
            }
        })
    };

    // PUSHERS concurrent pushers, PUSHES pushes in all; the ids answered 200.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|_| {
            let (c, next, acked) = (c.clone(), next.clone(), acked.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= PUSHES {
                        return;
                    }
                    if let Some(id) = c.push(dev_id, &format!("p{i}")).await {
                        acked.lock().unwrap().push(id);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    // Mid-stream, the device moves to comet B, reporting the highest id it has (its since-id).
    wait_until(
        "comet A's session saw the first pushes",
        Duration::from_secs(20),
        || seen_a.lock().unwrap().len() >= MOVE_AFTER,
    )
    .await;
    let since = *seen_a.lock().unwrap().last().unwrap();
    let mut on_b = login(Wire::udp(c.b.running.comet.udp).await, dev_id, since)
        .await
        .unwrap();
    let moved_at = acked.lock().unwrap().len();
    let mut seen_b = Vec::new();
    let collect = async {
        loop {
            match on_b.next_event(Duration::from_millis(1500)).await {
                Some(Got::Deliver { msg_id, .. }) => seen_b.push(msg_id),
                Some(Got::Kick { reason }) => panic!("comet B's session kicked: {reason:?}"),
                Some(_) => {}
                None => break,
            }
        }
    };
    tokio::join!(collect, async {
        for p in pushers {
            p.await.unwrap();
        }
    });
    assert_eq!(reader_a.await.unwrap(), Code::REPLACED);

    let seen_a = seen_a.lock().unwrap().clone();
    let acked: BTreeSet<u64> = acked.lock().unwrap().iter().copied().collect();
    eprintln!(
        "{} pushes answered 200 ({} before the move, since-id {since}); comet A's session saw {}, comet B's {}",
        acked.len(),
        moved_at,
        seen_a.len(),
        seen_b.len()
    );
    assert_eq!(acked.len(), PUSHES, "every push answered 200");
    assert!(strictly_increasing(&seen_a), "comet A: {seen_a:?}");
    assert!(strictly_increasing(&seen_b), "comet B: {seen_b:?}");
    assert!(
        seen_b.first().is_some_and(|f| *f > since),
        "comet B starts after the since-id {since}: {seen_b:?}"
    );
    // Across the two sessions, after dedup by msg_id: every acknowledged push, in order.
    let mut merged = seen_a.clone();
    let mut have: BTreeSet<u64> = seen_a.iter().copied().collect();
    merged.extend(seen_b.iter().copied().filter(|id| have.insert(*id)));
    assert!(
        strictly_increasing(&merged),
        "merged: {merged:?}\nA: {seen_a:?}\nB: {seen_b:?}"
    );
    let merged_set: BTreeSet<u64> = merged.iter().copied().collect();
    assert_eq!(
        merged_set, acked,
        "every push answered 200 was seen, nothing else"
    );
    match Arc::try_unwrap(c) {
        Ok(c) => c.stop().await,
        Err(_) => panic!("cluster still shared"),
    }
}

#[tokio::test]
async fn claims_replace_in_the_plug_profile_keep_every_session_in_the_signed_one_and_survive_lost_redis_data()
 {
    let run = Run::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = run.config(dir.path(), "comet-a");
    let conn = Arc::new(RedisConn::connect(&cfg.redis).await.unwrap());
    let claims = SessionClaims::new(conn.clone());
    let registry = OnlineRegistry::new(conn);
    let t = Address::phone(7);

    // Signed profile (several sessions allowed): nothing is replaced, both nodes hold it.
    let g1 = claims.claim(t, "comet-a", false).await.unwrap();
    let g2 = claims.claim(t, "comet-b", false).await.unwrap();
    assert!(g1.replaced.is_empty() && g2.replaced.is_empty());
    assert!(g2.generation > g1.generation);
    assert_eq!(
        registry.lookup(t).await.unwrap(),
        vec![
            ("comet-a".to_string(), g1.generation),
            ("comet-b".to_string(), g2.generation)
        ]
    );
    assert_eq!(claims.take_kicks("comet-a").await.unwrap(), vec![]);

    // Plug profile: a login on comet A takes the terminal from comet B, whose mailbox gets
    // the notice once.
    let g3 = claims.claim(t, "comet-a", true).await.unwrap();
    assert!(g3.generation > g2.generation);
    assert_eq!(g3.replaced, vec![("comet-b".to_string(), g2.generation)]);
    assert_eq!(
        registry.lookup(t).await.unwrap(),
        vec![("comet-a".to_string(), g3.generation)]
    );
    let notice = Notice {
        terminal: t,
        generation: g3.generation,
    };
    assert_eq!(claims.take_kicks("comet-b").await.unwrap(), vec![notice]);
    assert_eq!(claims.take_kicks("comet-b").await.unwrap(), vec![]);
    assert_eq!(claims.take_kicks("comet-a").await.unwrap(), vec![]);

    // comet B, swept as dead meanwhile, may not register its replaced session again; comet A
    // may register its current one.
    assert!(!claims.restore(t, "comet-b", g2.generation).await.unwrap());
    assert!(claims.restore(t, "comet-a", g3.generation).await.unwrap());
    assert_eq!(
        registry.lookup(t).await.unwrap(),
        vec![("comet-a".to_string(), g3.generation)]
    );

    // Redis loses the generation (a restart without persistence): the next one is still newer.
    let client = redis::Client::open(run.env["REDIS_URL"].as_str()).unwrap();
    let mut rc = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:session_gen:*", run.id))
        .query_async(&mut rc)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut rc)
        .await
        .unwrap();
    let g4 = claims.claim(t, "comet-b", true).await.unwrap();
    assert!(g4.generation > g3.generation, "{g4:?} after {g3:?}");
    assert_eq!(g4.replaced, vec![("comet-a".to_string(), g3.generation)]);
    run.clean_redis().await;
}
