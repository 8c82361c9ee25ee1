//! Cluster mode end to end on the real services from `cargo xtask services up` (feature
//! `services-tests`): Redis, ZooKeeper and both RabbitMQ nodes, each guarded by a real
//! `broker rmqkeeper` child process. Two comet and two msgbus nodes run in process on
//! 127.0.0.1 port 0.
//!
//! Run: `cargo test -p broker --features services-tests --test cluster_e2e -- --nocapture`.
//! Every run uses its own Redis key prefix, znode roots and RabbitMQ exchanges/queues, deleted at
//! the end. The failover step stops the RabbitMQ node in use with `rabbitmqctl stop_app` and
//! starts it again (also on panic).
#![cfg(feature = "services-tests")]

mod cluster_support;
mod comet_support;
mod rabbit_support;
mod services_env;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use broker::cluster::ClusterNode;
use broker::keeper::RabbitView;
use broker::roles::{start_comet, start_msgbus};
use broker::terminal::Address;
use cluster_support::*;
use comet_support::*;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};
use shared_protocol::frame::Body;

fn header_str(h: &FieldTable, key: &str) -> Option<String> {
    match h.inner().get(key)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Takes every message from `queue` on `url`; returns their dedup keys.
async fn drain_keys(url: &str, queue: &str) -> Vec<String> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Ok(Some(m)) = ch.basic_get(queue.into(), BasicGetOptions::default()).await {
        let d = m.delivery;
        let h = d.properties.headers().clone().unwrap_or_default();
        out.push(header_str(&h, "dedup_key").unwrap_or_default());
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

async fn upload_n(dev: &mut Device, ids: std::ops::Range<u32>) {
    for id in ids {
        dev.send(Body::Upload {
            upload_id: id,
            topic: "power",
            payload: format!("w={id}").as_bytes(),
        })
        .await;
        let t = Instant::now();
        loop {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "upload {id} not acked"
            );
            match dev.next_event(Duration::from_secs(20)).await {
                Some(Got::UploadAck { upload_id }) if upload_id == id => break,
                Some(_) => {}
                None => panic!("upload {id}: no ack"),
            }
        }
    }
}

/// Logs device `id` in at comet `a` over raw UDP, then sends the same LOGIN bytes, from the same
/// socket, to comet `b`: `b` answers REJECT `BAD_COOKIE`.
async fn login_accepted_at_a_is_refused_at_b(
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
    id: u32,
) {
    use shared_protocol::codes::Code;
    use shared_protocol::handshake::{ClientEvent, ClientHandshake};
    use shared_protocol::limits::MAX_PACKET;
    use shared_protocol::packet::{PacketType, Reject};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = |to: std::net::SocketAddr, packet: Vec<u8>| {
        let socket = &socket;
        async move {
            socket.send_to(&packet, to).await.unwrap();
            let mut buf = vec![0u8; 2048];
            let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            buf.truncate(n);
            buf
        }
    };
    let mut hs = ClientHandshake::new(Address::device(id), device_key(id), 0, 1);
    let mut out = [0u8; MAX_PACKET];
    let hello = hs
        .start(broker::router::now_ms(), rand::random(), &mut out)
        .unwrap()
        .to_vec();
    let mut challenge = ask(a, hello).await;
    let ClientEvent::Send(login) = hs.on_packet(&mut challenge, &mut out).unwrap() else {
        panic!("a LOGIN for comet A's CHALLENGE")
    };
    let login = login.to_vec();
    let welcome = ask(a, login.clone()).await;
    assert_eq!(welcome[1], PacketType::Welcome as u8, "comet A accepts");
    let answer = ask(b, login).await;
    let reject = Reject::decode(&answer).expect("a REJECT from comet B");
    assert_eq!(reject.code, Code::BAD_COOKIE, "comet B refuses the replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_comets_two_msgbus_two_rabbits() {
    let run = Run::new();
    let _k1 = run.keeper(1);
    let _k2 = run.keeper(2);
    let rabbits =
        RabbitView::start(run.zk_settings(Duration::from_secs(4)), &run.rabbit_root()).unwrap();
    let rv = rabbits.watch();
    wait_until(
        "both RabbitMQ nodes registered by their keepers",
        Duration::from_secs(20),
        || rv.borrow().nodes.len() == 2,
    )
    .await;

    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfg_a = run.config(dirs[0].path(), "comet-a");
    let comet_a = start_comet(&cfg_a).await.unwrap();
    let comet_b = start_comet(&run.config(dirs[1].path(), "comet-b"))
        .await
        .unwrap();
    let bus1 = start_msgbus(&run.config(dirs[2].path(), "msgbus-1"))
        .await
        .unwrap();
    let bus2 = start_msgbus(&run.config(dirs[3].path(), "msgbus-2"))
        .await
        .unwrap();
    let t = wait_until(
        "every msgbus linked to both comets",
        Duration::from_secs(20),
        || {
            [&bus1, &bus2]
                .iter()
                .all(|b| b.links.as_ref().unwrap().connected().len() == 2)
                && [&comet_a, &comet_b]
                    .iter()
                    .all(|c| c.comet_links.as_ref().unwrap().connected().len() == 2)
        },
    )
    .await;
    eprintln!("cluster linked in {t:?}");

    // Node lookup (no token) on any node lists both comets.
    let (s, v) = api(
        &bus1,
        reqwest::Method::GET,
        "/v1/nodes/lookup?kind=device&id=42",
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ids: BTreeSet<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["comet-a", "comet-b"]));

    // The console's node table (token) on a msgbus lists every node in discovery, itself marked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let (s, v) = api(&bus1, reqwest::Method::GET, "/v1/console/nodes", None).await;
        assert_eq!(s, 200, "{v}");
        let rows: BTreeSet<(String, String, bool)> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().to_string(),
                    n["role"].as_str().unwrap().to_string(),
                    n["this_node"].as_bool().unwrap(),
                )
            })
            .collect();
        if rows.len() == 4 || Instant::now() > deadline {
            assert_eq!(v["healthy"], true, "{v}");
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let row = |id: &str, role: &str, me: bool| (id.to_string(), role.to_string(), me);
    assert_eq!(
        rows,
        BTreeSet::from([
            row("comet-a", "comet", false),
            row("comet-b", "comet", false),
            row("msgbus-1", "msgbus", true),
            row("msgbus-2", "msgbus", false),
        ])
    );

    // Phone 3 on comet A, plug 42 on comet B, bound through msgbus 1.
    let (s, v) = api(&bus1, reqwest::Method::PUT, "/v1/bindings/3/42", None).await;
    assert!((200..300).contains(&s), "{s} {v}");
    let (mut phone, welcome) = App::login(
        &format!("ws://{}/", comet_a.running.comet.app_ws),
        Address::phone(3),
        0,
    )
    .await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let mut plug = login(Wire::udp(comet_b.running.comet.udp).await, 42, 0)
        .await
        .unwrap();
    // Both registered in the shared online registry (msgbus routes by it).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // `/v1/online` on a msgbus: its own counts are labelled as this node's (it holds no
    // session), and the cluster part counts what each comet holds.
    let (s, v) = api(&bus1, reqwest::Method::GET, "/v1/online", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["scope"].as_str(), v["devices"].as_u64()),
        (Some("node"), Some(0)),
        "{v}"
    );
    assert_eq!(v["cluster"]["terminals_by_node"]["comet-a"], 1, "{v}");
    assert_eq!(v["cluster"]["terminals_by_node"]["comet-b"], 1, "{v}");
    assert_eq!(v["cluster"]["terminals"], 2, "{v}");

    // 0. A LOGIN accepted by comet A and replayed to comet B, from the very same address, is
    //    refused there: each comet has its own cookie secret (docs/protocol.md section 3.1).
    login_accepted_at_a_is_refused_at_b(comet_a.running.comet.udp, comet_b.running.comet.udp, 77)
        .await;

    // 1. The phone sends to the plug across comets, and the plug answers.
    let t = Instant::now();
    phone
        .send(json!({"type": "send", "to": {"kind": "device", "id": 42}, "payload": B64.encode("on"), "ref": 1}))
        .await;
    assert_eq!(
        phone.recv_skip_presence(WAIT).await.unwrap(),
        json!({"type": "ok", "ref": 1})
    );
    match plug.next_event(WAIT).await {
        Some(Got::Deliver { from, payload, .. }) => {
            assert_eq!((from, payload), (Some(Address::phone(3)), b"on".to_vec()))
        }
        other => panic!("plug got {other:?}"),
    }
    eprintln!("phone on comet A -> plug on comet B: {:?}", t.elapsed());
    plug.send(Body::Send {
        to: Address::phone(3),
        payload: b"done",
    })
    .await;
    let got = app_delivers(&mut phone, Duration::from_secs(2)).await;
    assert_eq!(
        got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
        vec![b"done".to_vec()]
    );

    // 1b. Online status on any node answers from the cluster-wide registry.
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let (s, v) = api(&comet_a, get.clone(), "/v1/terminals/device/42", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["online"], &v["nodes"], &v["sessions"]),
        (&json!(true), &json!(["comet-b"]), &json!([])),
        "plug 42 through comet A: {v}"
    );
    let (s, v) = api(&bus1, get.clone(), "/v1/terminals/phone/3", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["online"], &v["nodes"]),
        (&json!(true), &json!(["comet-a"]))
    );
    let (s, v) = api(&comet_b, get.clone(), "/v1/terminals/device/4242", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((&v["online"], &v["nodes"]), (&json!(false), &json!([])));

    // 1c. An HTTP command to comet A's API (through a msgbus) and to msgbus 2's API (straight
    //     over its link) reaches the plug on comet B; the caller gets the plug's answer.
    for (via, node) in [
        ("comet-a", &comet_a),
        ("msgbus-2", &bus2),
        ("comet-b", &comet_b),
    ] {
        let t = Instant::now();
        let ((s, v), answered) = tokio::join!(
            api(
                node,
                post.clone(),
                "/v1/devices/42/commands",
                Some(json!({"name": "relay", "text": via, "timeout_ms": 5000})),
            ),
            answer_one_command(&mut plug),
        );
        assert_eq!(s, 200, "{via}: {v}");
        assert_eq!(
            answered,
            Ok(("relay".to_string(), via.as_bytes().to_vec())),
            "{via}"
        );
        assert_eq!(
            v,
            json!({"status": 7, "payload": B64.encode(format!("relay:{via}"))}),
            "{via}"
        );
        eprintln!(
            "HTTP command via {via} -> plug on comet B: {:?}",
            t.elapsed()
        );
    }
    // Offline anywhere: 404; the plug does not answer: 504 at the caller's timeout.
    let (s, v) = api(
        &comet_a,
        post.clone(),
        "/v1/devices/4242/commands",
        Some(json!({"name": "relay"})),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("not_online")), "{v}");
    let t = Instant::now();
    let (s, v) = api(
        &comet_a,
        post.clone(),
        "/v1/devices/42/commands",
        Some(json!({"name": "relay", "timeout_ms": 400})),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (504, Some("timeout")), "{v}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(
        plug.next_event(WAIT).await,
        Some(Got::Command { .. })
    ));

    // 1d. /metrics on each node: links and frames per peer, cluster commands, presence writes
    //     and discovery.
    let (a, b, m2) = (
        scrape(&comet_a).await,
        scrape(&comet_b).await,
        scrape(&bus2).await,
    );
    for p in ["msgbus-1", "msgbus-2"] {
        let series = format!(r#"broker_link_up{{peer="{p}"}}"#);
        assert_eq!(sample(&a, &series), Some(1.0), "{series} in {a}");
    }
    let commands_sent: f64 = ["msgbus-1", "msgbus-2"]
        .iter()
        .filter_map(|p| {
            sample(
                &a,
                &format!(r#"broker_link_frames_sent_total{{peer="{p}",frame="command"}}"#),
            )
        })
        .sum();
    assert_eq!(
        commands_sent, 2.0,
        "the answered and the timed-out command: {a}"
    );
    for (result, n) in [("ok", 1.0), ("timeout", 1.0), ("not_online", 1.0)] {
        let series = format!(r#"broker_cluster_commands_total{{result="{result}"}}"#);
        assert_eq!(sample(&a, &series), Some(n), "{series} in {a}");
    }
    assert_eq!(
        sample(&m2, r#"broker_cluster_commands_total{result="ok"}"#),
        Some(1.0),
        "{m2}"
    );
    assert!(
        sample(
            &m2,
            r#"broker_link_frames_sent_total{peer="comet-b",frame="command"}"#
        ) >= Some(1.0),
        "{m2}"
    );
    assert!(
        sample(&b, r#"broker_presence_writes_total{op="register"}"#) >= Some(1.0),
        "{b}"
    );
    assert!(
        sample(&b, r#"broker_presence_writes_total{op="heartbeat"}"#) >= Some(1.0),
        "{b}"
    );
    assert!(!b.contains("broker_presence_errors_total"), "{b}");
    assert_eq!(sample(&a, "broker_discovery_healthy"), Some(1.0), "{a}");
    assert_eq!(
        sample(&a, r#"broker_discovery_nodes{role="comet"}"#),
        Some(2.0),
        "{a}"
    );

    // 2. A backend push (msgbus 2) and a broadcast (msgbus 1): each terminal gets each once.
    let (s, v) = api(
        &bus2,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": {"list": [{"kind": "device", "id": 42}, {"kind": "phone", "id": 3}]}, "text": "list"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api(
        &bus1,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": "everyone", "text": "all"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut on_plug: Vec<Vec<u8>> = device_delivers(&mut plug, Duration::from_secs(2))
        .await
        .into_iter()
        .map(|g| g.1)
        .collect();
    let mut on_phone: Vec<Vec<u8>> = app_delivers(&mut phone, Duration::from_secs(1))
        .await
        .into_iter()
        .map(|g| g.1)
        .collect();
    on_plug.sort();
    on_phone.sort();
    assert_eq!(
        on_plug,
        vec![b"all".to_vec(), b"list".to_vec()],
        "plug on comet B"
    );
    assert_eq!(
        on_phone,
        vec![b"all".to_vec(), b"list".to_vec()],
        "phone on comet A"
    );

    // 3. A backend push published to the RabbitMQ push exchange reaches the plug once.
    let url2 = run.env["RABBITMQ_2_AMQP_URL"].clone();
    let url1 = run.env["RABBITMQ_1_AMQP_URL"].clone();
    {
        let body =
            json!({"target": {"terminal": {"kind": "device", "id": 42}}, "text": "from-rabbit"})
                .to_string();
        // Once msgbus has declared and bound its push queue on this node.
        rabbit_support::publish_when_routed(
            &url2,
            &cfg_a.rabbitmq.push_exchange,
            "push",
            body.as_bytes(),
            Duration::from_secs(10),
        )
        .await;
    }
    let got: Vec<Vec<u8>> = device_delivers(&mut plug, Duration::from_secs(3))
        .await
        .into_iter()
        .map(|g| g.1)
        .collect();
    assert_eq!(got, vec![b"from-rabbit".to_vec()]);

    // 4. Uploads: acked after the confirm (or durable spool); consumed exactly once by dedup_key.
    let sink = comet_b.sink.clone().unwrap();
    upload_n(&mut plug, 1..21).await;
    let in_use = sink
        .current_node()
        .await
        .expect("connected to a RabbitMQ node");
    let (node_name, other_url) = if in_use.contains(&run.env["RABBITMQ_1_AMQP_ADDR"]) {
        (run.env["RABBITMQ_1_NODE"].clone(), url2.clone())
    } else {
        (run.env["RABBITMQ_2_NODE"].clone(), url1.clone())
    };
    eprintln!("uploads go to {node_name}; stopping its app");

    // 5. stop_app on the node in use: its znode goes within two check intervals, the sink
    //    switches to the other node, nothing acknowledged is lost.
    let restart = StartAppOnDrop(Some(node_name.clone()));
    let t = Instant::now();
    let out = Command::new("rabbitmqctl")
        .args(["-n", &node_name, "stop_app"])
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "stop_app: {out:?}");
    let stopped = t.elapsed();
    let gone = wait_until(
        "the stopped node's znode to go",
        Duration::from_secs(10),
        || rv.borrow().nodes.len() == 1,
    )
    .await;
    eprintln!(
        "stop_app took {stopped:?}; znode gone {gone:?} after it (check interval {CHECK_MS} ms)"
    );
    assert!(
        gone <= Duration::from_millis(2 * CHECK_MS + 500),
        "znode removed after {gone:?}"
    );
    upload_n(&mut plug, 21..41).await;
    let now = sink.current_node().await;
    eprintln!(
        "after failover: stats {:?}, node {:?}",
        sink.stats(),
        now.as_deref().map(|u| u.rsplit('@').next().unwrap_or(""))
    );
    assert!(
        now.as_deref()
            .is_some_and(|u| other_url.ends_with(u.rsplit('@').next().unwrap())),
        "switched to the other node"
    );
    wait_until("upload spool drained", Duration::from_secs(20), || {
        !sink.has_backlog()
    })
    .await;
    drop(restart);
    let t = Instant::now();
    let mut keys = Vec::new();
    loop {
        if Connection::connect(&url1, ConnectionProperties::default())
            .await
            .is_ok()
            && Connection::connect(&url2, ConnectionProperties::default())
                .await
                .is_ok()
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "RabbitMQ node did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    keys.extend(drain_keys(&url1, &cfg_a.rabbitmq.upload_queue).await);
    keys.extend(drain_keys(&url2, &cfg_a.rabbitmq.upload_queue).await);
    let unique: BTreeSet<String> = keys.iter().cloned().collect();
    eprintln!(
        "uploads consumed: {} messages, {} after dedup",
        keys.len(),
        unique.len()
    );
    // `plug` logged in with comet_support's UPLOAD_EPOCH (one boot).
    let want: BTreeSet<String> = (1..41)
        .map(|i| format!("42:{UPLOAD_EPOCH:016x}:{i}"))
        .collect();
    assert_eq!(
        unique, want,
        "every acknowledged upload exactly once after dedup"
    );

    for n in [comet_a, comet_b, bus1, bus2] {
        n.stop().await;
    }
    rabbits.shutdown().await;
    cleanup_rabbit(&url1, &cfg_a).await;
    cleanup_rabbit(&url2, &cfg_a).await;
    run.clean_redis().await;
}

/// The lookup answer for device `id` from `node`: (comet id, udp endpoint), primary first.
async fn lookup(node: &ClusterNode, id: u32) -> Vec<(String, String)> {
    lookup_of(node, "device", id, "udp").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_comet_its_devices_reconnect_through_lookup_and_get_what_was_pushed() {
    let run = Run::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut comets = BTreeMap::new();
    comets.insert(
        "comet-x",
        CometProc::spawn(&run, dirs[0].path(), "comet-x", Duration::from_secs(4)),
    );
    comets.insert(
        "comet-y",
        CometProc::spawn(&run, dirs[1].path(), "comet-y", Duration::from_secs(4)),
    );
    let mut cfg = run.config(dirs[2].path(), "msgbus-1");
    cfg.cluster.rabbit_root = String::new();
    cfg.rabbitmq.push_exchange = String::new();
    let bus = start_msgbus(&cfg).await.unwrap();
    wait_until(
        "msgbus linked to both comet processes",
        Duration::from_secs(30),
        || bus.links.as_ref().unwrap().connected().len() == 2,
    )
    .await;

    // Devices 1..=6 connect to the primary comet lookup names; at least one lands on each.
    let mut devices = Vec::new();
    for id in 1..=6u32 {
        let nodes = lookup(&bus, id).await;
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        let dev = login(Wire::udp(nodes[0].1.parse().unwrap()).await, id, 0)
            .await
            .unwrap();
        devices.push((id, nodes[0].0.clone(), dev));
    }
    let victim = devices[0].1.clone();
    let survivor = if victim == "comet-x" {
        "comet-y"
    } else {
        "comet-x"
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A push while everyone is online reaches each device once.
    let all: Vec<Value> = (1..=6)
        .map(|i| json!({"kind": "device", "id": i}))
        .collect();
    let (s, v) = api(
        &bus,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": {"list": all}, "text": "before"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut since = BTreeMap::new();
    for (id, _, dev) in devices.iter_mut() {
        let got = device_delivers(dev, Duration::from_millis(700)).await;
        assert_eq!(
            got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
            vec![b"before".to_vec()],
            "device {id}"
        );
        since.insert(*id, got[0].0);
    }

    // kill -9 the comet holding device 1.
    let killed_at = Instant::now();
    drop(comets.remove(victim.as_str()));
    let (s, v) = api(
        &bus,
        reqwest::Method::POST,
        "/v1/push",
        Some(json!({"target": {"list": all}, "text": "meanwhile"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Its devices find the other comet through lookup (once ZooKeeper expired the session),
    // log in with their since-id and get what was pushed meanwhile, once.
    let mut moved = 0;
    for (id, node, dev) in devices.iter_mut() {
        if *node != victim {
            let got: Vec<Vec<u8>> = device_delivers(dev, Duration::from_millis(500))
                .await
                .into_iter()
                .map(|g| g.1)
                .collect();
            assert_eq!(
                got,
                vec![b"meanwhile".to_vec()],
                "device {id} on the survivor"
            );
            continue;
        }
        let since = since[id];
        let t = Instant::now();
        let target = loop {
            let nodes = lookup(&bus, *id).await;
            if nodes.len() == 1 {
                break nodes[0].clone();
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "lookup still lists the dead comet"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(target.0, survivor);
        let mut again = login(Wire::udp(target.1.parse().unwrap()).await, *id, since)
            .await
            .unwrap();
        let got: Vec<Vec<u8>> = device_delivers(&mut again, Duration::from_millis(1500))
            .await
            .into_iter()
            .map(|g| g.1)
            .collect();
        assert_eq!(got, vec![b"meanwhile".to_vec()], "device {id} after moving");
        moved += 1;
    }
    eprintln!(
        "{moved} devices moved from {victim} to {survivor}; last one done {:?} after the kill",
        killed_at.elapsed()
    );
    assert!(moved >= 1);
    bus.stop().await;
    drop(comets);
    run.clean_redis().await;
}
