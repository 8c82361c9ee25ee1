//! ZkDiscovery against the real ZooKeeper from `cargo xtask services up` (feature
//! `services-tests`; run: `cargo test -p broker --features services-tests --test discovery_zk`).
//!
//! Outages are made with a TCP proxy this test owns between the discovery and ZooKeeper, so the
//! shared ZooKeeper is never restarted: dropping the proxy for less than the session timeout is a
//! disconnection (stale view, same session); for longer, the server expires the session.
#![cfg(feature = "services-tests")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use broker::discovery::metrics::DiscoveryMetrics;
use broker::discovery::zk::{ZkAuth, ZkSettings};
use broker::discovery::zk_discovery::{ZkOptions, ZkStatus};
use broker::discovery::{Discovery, NodeAddr, NodeInfo, NodeView, Role, ZkDiscovery};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

mod services_env;

/// The digest credentials every discovery in this test uses (`discovery.zk_auth`).
const ZK_AUTH: &str = "plugcloud-test:zk-test-password";

/// A plain client authenticated as the project (reads the project's znodes).
async fn authed(zk: &str) -> Client {
    Client::connector()
        .with_auth("digest", ZK_AUTH.as_bytes())
        .connect(zk)
        .await
        .unwrap()
}

/// The service environment this test needs (see `services_env`).
fn services() -> BTreeMap<String, String> {
    services_env::require(&["ZOOKEEPER_ADDR"])
}

fn zk_addr() -> String {
    services()["ZOOKEEPER_ADDR"].clone()
}

fn unique_root(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "/test-{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn comet(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        role: Role::Comet,
        addr: NodeAddr {
            udp: Some(format!("{id}.example:8083")),
            ws: Some(format!("ws://{id}.example:8081/")),
            app_ws: None,
            link: None,
        },
        load: 0,
    }
}

fn start(servers: &str, root: &str, me: Option<NodeInfo>, session: Duration) -> ZkDiscovery {
    ZkDiscovery::start(ZkOptions {
        zk: ZkSettings {
            servers: servers.into(),
            session_timeout: session,
            auth: ZkAuth::parse(ZK_AUTH),
        },
        root: root.into(),
        me,
        load_update: Duration::from_millis(200),
        metrics: DiscoveryMetrics::noop(),
    })
    .unwrap()
}

async fn wait_view(
    rx: &mut watch::Receiver<NodeView>,
    within: Duration,
    what: &str,
    pred: impl Fn(&NodeView) -> bool,
) -> Duration {
    let t0 = Instant::now();
    let ok = matches!(
        tokio::time::timeout(within, rx.wait_for(|v| pred(v))).await,
        Ok(Ok(_))
    );
    assert!(ok, "{what}: not within {within:?}; view: {:?}", rx.borrow());
    t0.elapsed()
}

async fn wait_status(
    rx: &mut watch::Receiver<ZkStatus>,
    within: Duration,
    what: &str,
    pred: impl Fn(&ZkStatus) -> bool,
) {
    let ok = matches!(
        tokio::time::timeout(within, rx.wait_for(|s| pred(s))).await,
        Ok(Ok(_))
    );
    assert!(
        ok,
        "{what}: not within {within:?}; status: {:?}",
        rx.borrow()
    );
}

fn ids(v: &NodeView) -> Vec<&str> {
    v.nodes.iter().map(|n| n.id.as_str()).collect()
}

/// A TCP proxy to ZooKeeper that the test can cut (listener and live connections) and restore
/// on the same port.
struct Proxy {
    addr: SocketAddr,
    target: String,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = Proxy {
            addr,
            target: target.into(),
            task: None,
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
    }

    /// Cuts everything: the JoinSet of connections is dropped with the accept task.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_visible_load_updates_and_removal_updates_the_view() {
    let zk = zk_addr();
    let root = unique_root("disc");
    let a = start(&zk, &root, Some(comet("a")), Duration::from_secs(6));
    let b = start(&zk, &root, Some(comet("b")), Duration::from_secs(6));
    let observer = start(&zk, &root, None, Duration::from_secs(6));
    let mut view = observer.view();
    let took = wait_view(&mut view, Duration::from_secs(10), "both registered", |v| {
        v.healthy && ids(v) == ["a", "b"]
    })
    .await;
    eprintln!("registration visible to another session after {took:?}");

    // A plain client sees the ephemeral znode and its JSON.
    let raw = authed(&zk).await;
    let (data, stat) = raw.get_data(&format!("{root}/comet/a")).await.unwrap();
    assert_ne!(stat.ephemeral_owner, 0, "ephemeral");
    let info: NodeInfo = serde_json::from_slice(&data).unwrap();
    assert_eq!(info, comet("a"));

    // Load updates reach the others.
    a.set_load(17);
    wait_view(&mut view, Duration::from_secs(5), "load update", |v| {
        v.get(Role::Comet, "a").is_some_and(|n| n.load == 17)
    })
    .await;

    // A clean shutdown removes the node at once.
    a.shutdown().await;
    let took = wait_view(&mut view, Duration::from_secs(3), "a removed", |v| {
        ids(v) == ["b"]
    })
    .await;
    eprintln!("clean shutdown removed from the view after {took:?}");
    assert!(
        raw.check_stat(&format!("{root}/comet/a"))
            .await
            .unwrap()
            .is_none(),
        "znode deleted"
    );

    // The other node's view matches the observer's.
    let mut bview = b.view();
    wait_view(&mut bview, Duration::from_secs(3), "b's own view", |v| {
        ids(v) == ["b"]
    })
    .await;
    b.shutdown().await;
    observer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_outage_keeps_the_last_view_flagged_stale() {
    let zk = zk_addr();
    let root = unique_root("outage");
    let mut proxy = Proxy::start(&zk).await;
    let other = start(&zk, &root, Some(comet("o")), Duration::from_secs(10));
    let d = start(
        &proxy.addr.to_string(),
        &root,
        Some(comet("p")),
        Duration::from_secs(10),
    );
    let mut view = d.view();
    wait_view(&mut view, Duration::from_secs(10), "both seen", |v| {
        v.healthy && ids(v) == ["o", "p"]
    })
    .await;
    let session = d.status().borrow().session;

    proxy.cut();
    let took = wait_view(&mut view, Duration::from_secs(10), "stale", |v| !v.healthy).await;
    eprintln!("outage noticed (view stale) after {took:?}");
    assert_eq!(ids(&view.borrow()), ["o", "p"], "last known view kept");

    proxy.restore().await;
    wait_view(&mut view, Duration::from_secs(15), "healthy again", |v| {
        v.healthy && ids(v) == ["o", "p"]
    })
    .await;
    // Normally the same session resumes; the client may also give up on it and the discovery
    // then registers in a new one. Either way this node is registered again.
    let status = d.status().borrow().clone();
    assert!(status.registered, "{status:?}");
    if status.session != session {
        eprintln!("note: the short outage cost the session ({status:?})");
    }
    d.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_creates_a_new_session_and_registers_again() {
    let zk = zk_addr();
    let root = unique_root("expiry");
    let mut proxy = Proxy::start(&zk).await;
    // 4 s is the smallest session the server grants with tickTime=2000.
    let d = start(
        &proxy.addr.to_string(),
        &root,
        Some(comet("x")),
        Duration::from_secs(4),
    );
    let observer = start(&zk, &root, None, Duration::from_secs(10));
    let mut seen = observer.view();
    wait_view(&mut seen, Duration::from_secs(10), "x registered", |v| {
        ids(v) == ["x"]
    })
    .await;
    let mut status = d.status();
    let first = status.borrow().session.unwrap();

    // Longer than the session timeout: the server expires the session and drops the znode.
    proxy.cut();
    let took = wait_view(&mut seen, Duration::from_secs(15), "x expired", |v| {
        v.nodes.is_empty()
    })
    .await;
    eprintln!("server expired the cut-off session after {took:?}");
    proxy.restore().await;

    let t0 = Instant::now();
    wait_status(&mut status, Duration::from_secs(20), "re-registered", |s| {
        s.sessions == 2 && s.registered
    })
    .await;
    wait_view(&mut seen, Duration::from_secs(5), "x back", |v| {
        ids(v) == ["x"]
    })
    .await;
    eprintln!(
        "new session and re-registration {:?} after the proxy came back",
        t0.elapsed()
    );
    let second = status.borrow().session.unwrap();
    assert_ne!(first, second);
    let raw = authed(&zk).await;
    let (_, stat) = raw.get_data(&format!("{root}/comet/x")).await.unwrap();
    assert_eq!(stat.ephemeral_owner, second, "owned by the new session");
    let mut own = d.view();
    wait_view(&mut own, Duration::from_secs(5), "own view current", |v| {
        v.healthy && ids(v) == ["x"]
    })
    .await;
    d.shutdown().await;
    observer.shutdown().await;
}

#[tokio::test]
async fn an_anonymous_client_cannot_read_create_or_change_the_projects_znodes() {
    let zk = zk_addr();
    let root = unique_root("acl");
    let a = start(&zk, &root, Some(comet("a")), Duration::from_secs(6));
    let mut view = a.view();
    wait_view(&mut view, Duration::from_secs(10), "a registered", |v| {
        v.healthy && ids(v) == ["a"]
    })
    .await;
    let node = format!("{root}/comet/a");
    let anon = Client::connect(&zk).await.unwrap();
    let fake = serde_json::to_vec(&comet("fake")).unwrap();
    let open = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    // No fake comet can be registered, under the role directory or the root.
    for path in [format!("{root}/comet/fake"), format!("{root}/fake")] {
        let r = anon.create(&path, &fake, &open).await;
        assert!(matches!(r, Err(ZkError::NoAuth)), "create {path}: {r:?}");
    }
    // The real registration can be neither changed nor removed, nor read.
    let r = anon.set_data(&node, &fake, None).await;
    assert!(matches!(r, Err(ZkError::NoAuth)), "set_data: {r:?}");
    let r = anon.delete(&node, None).await;
    assert!(matches!(r, Err(ZkError::NoAuth)), "delete: {r:?}");
    let r = anon.get_data(&node).await;
    assert!(matches!(r, Err(ZkError::NoAuth)), "get_data: {r:?}");
    let r = anon.list_children(&format!("{root}/comet")).await;
    assert!(matches!(r, Err(ZkError::NoAuth)), "list_children: {r:?}");
    // The project's identity holds every permission, as a digest ACL.
    let raw = authed(&zk).await;
    for path in [root.clone(), format!("{root}/comet"), node.clone()] {
        let (acl, _) = raw.get_acl(&path).await.unwrap();
        assert_eq!(acl.len(), 1, "{path}: {acl:?}");
        assert_eq!(acl[0].scheme(), "digest", "{path}");
        assert!(
            acl[0].id().starts_with("plugcloud-test:"),
            "{path}: {acl:?}"
        );
    }
    let (data, _) = raw.get_data(&node).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<NodeInfo>(&data).unwrap(),
        comet("a")
    );
    a.shutdown().await;
}
