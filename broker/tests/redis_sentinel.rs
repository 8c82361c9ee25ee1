//! Redis Sentinel failover under the broker's Redis store and online registry, on real processes
//! (feature `services-tests`; run: `cargo test -p broker --features services-tests --test
//! redis_sentinel -- --nocapture`).
//!
//! The test starts its own Redis master, one replica (`--replicaof`) and one Sentinel
//! (`redis-server <conf> --sentinel`, quorum 1, `down-after-milliseconds` 1000, `failover-timeout`
//! 3000) in a temporary directory on free 127.0.0.1 ports, using the `redis-server` binary that
//! `cargo xtask services up` installs. It does not need the services themselves. Every process it
//! starts is killed by PID when the test ends, also on panic ([`Procs`]).
//!
//! Flow: the store and the registry, configured with `sentinels` + `master_name`, write and read;
//! `WAIT 1 1000` makes sure the replica has the writes; the master gets SIGKILL; the store is
//! retried until a write succeeds (bounded), then the data from before the failover is read back
//! through the new master and new writes go on.
#![cfg(feature = "services-tests")]

mod port_support;

use port_support::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::config::EvictionPolicy;
use broker::store::embedded::OfflineLimits;
use broker::store::redis::{OnlineRegistry, RedisConfig, RedisConn, RedisStore};
use broker::store::{NewMessage, OfflineStore, Recipients};
use broker::terminal::Address;
use bytes::Bytes;

const MASTER_NAME: &str = "brokertest";
/// How long the store may stay unusable after the master is killed.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// The processes this test started; each is killed (SIGKILL, by PID) and reaped on drop. On a
/// panic the tails of their logs are printed.
struct Procs {
    dir: tempfile::TempDir,
    children: Vec<(String, Option<Child>)>,
}

impl Procs {
    fn spawn(&mut self, name: &str, cmd: &mut Command) {
        let log = std::fs::File::create(self.log(name)).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.children.push((name.to_string(), Some(child)));
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// SIGKILL (`kill -9`) to the process started as `name`, by its PID.
    fn kill(&mut self, name: &str) {
        let (_, slot) = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("known process");
        let mut child = slot.take().expect("still running");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (name, child) in &mut self.children {
            if let Some(c) = child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if std::thread::panicking() {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("--- {name}.log (last lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// The `redis-server` binary (installed by `cargo xtask services up` as the `redis-server`
/// package): the first one on `PATH`.
fn redis_server() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .expect("no redis-server on PATH: run `cargo xtask services up` (it installs redis-server)")
}

async fn client(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Polls `probe` every 50 ms until it returns `Some`, panicking with `what` after `bound`.
async fn until<T, F, Fut>(what: &str, bound: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `INFO replication` of the Redis on `port`, or `None` while it does not answer.
async fn replication(port: u16) -> Option<String> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut c = c.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .ok()
}

/// The master address the sentinel on `port` names.
async fn sentinel_master(port: u16) -> Option<(String, u16)> {
    let mut c = client(port).await;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER_NAME)
        .query_async(&mut c)
        .await
        .ok()?;
    addr.and_then(|(h, p)| Some((h, p.parse().ok()?)))
}

fn start_redis(procs: &mut Procs, bin: &Path, name: &str, port: u16, replica_of: Option<u16>) {
    let dir = procs.dir.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir);
    if let Some(m) = replica_of {
        cmd.args(["--replicaof", "127.0.0.1", &m.to_string()]);
    }
    procs.spawn(name, &mut cmd);
}

fn msg(payload: &'static [u8]) -> NewMessage {
    NewMessage {
        from: None,
        payload: Bytes::from_static(payload),
        expires_at_ms: u64::MAX / 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_sentinel_promotes_replica_and_the_store_keeps_working() {
    let bin = redis_server();
    let mut procs = Procs {
        dir: tempfile::tempdir().unwrap(),
        children: Vec::new(),
    };
    let (mport, rport, sport) = (free_port(), free_port(), free_port());
    start_redis(&mut procs, &bin, "master", mport, None);
    start_redis(&mut procs, &bin, "replica", rport, Some(mport));
    let conf = procs.dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "bind 127.0.0.1\nport {sport}\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {mport} 1\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n",
            dir = procs.dir.path().display()
        ),
    )
    .unwrap();
    procs.spawn("sentinel", Command::new(&bin).arg(&conf).arg("--sentinel"));

    // The replica is in sync and the sentinel knows it (it is the one it can promote).
    until("replica link up", Duration::from_secs(15), || async {
        replication(rport)
            .await
            .filter(|i| i.contains("master_link_status:up"))
    })
    .await;
    until(
        "sentinel sees the master and the replica",
        Duration::from_secs(20),
        || async {
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{sport}/"))
                .ok()?
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                .arg("replicas")
                .arg(MASTER_NAME)
                .query_async(&mut c)
                .await
                .ok()?;
            let port = rport.to_string();
            replicas
                .iter()
                .any(|r| {
                    r.windows(2).any(|w| w[0] == "port" && w[1] == port)
                        && r.windows(2).any(|w| w[0] == "flags" && w[1] == "slave")
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        sentinel_master(sport).await,
        Some(("127.0.0.1".into(), mport))
    );

    // The broker's store and registry through Sentinel.
    let cfg = RedisConfig {
        url: String::new(),
        sentinels: vec![format!("redis://127.0.0.1:{sport}/")],
        master_name: MASTER_NAME.into(),
        key_prefix: "sentineltest:".into(),
        connect_timeout_ms: 500,
        response_timeout_ms: 1000,
        ..RedisConfig::default()
    };
    let conn = Arc::new(RedisConn::connect(&cfg).await.expect("master via sentinel"));
    let store = RedisStore::new(
        conn.clone(),
        OfflineLimits {
            max_per_terminal: 100,
            eviction: EvictionPolicy::DropOldest,
        },
    );
    let registry = OnlineRegistry::new(conn.clone());
    let (plug, phone) = (Address::device(7), Address::phone(3));
    let before = store
        .append(Recipients::List(vec![plug]), msg(b"before failover"), 0)
        .await
        .unwrap();
    registry.register(plug, "comet-a", 11).await.unwrap();
    assert_eq!(store.since(plug, 0, 10, 0).await.unwrap().len(), 1);
    assert_eq!(
        registry.lookup(plug).await.unwrap(),
        vec![("comet-a".to_string(), 11)]
    );
    // The writes went to the master started as such, and the replica has them.
    let mut master = client(mport).await;
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut master).await.unwrap();
    assert!(dbsize > 0, "writes reached the monitored master");
    // WAIT blocks up to its own timeout; each call stays well under the client's response
    // timeout, and a busy machine gets several tries.
    until(
        "the replica to acknowledge the writes",
        Duration::from_secs(10),
        || {
            let mut master = master.clone();
            async move {
                let acked: u64 = redis::cmd("WAIT")
                    .arg(1)
                    .arg(200)
                    .query_async(&mut master)
                    .await
                    .ok()?;
                (acked == 1).then_some(())
            }
        },
    )
    .await;
    drop(master);

    // kill -9 the master; retry a write until the store works again through the new master.
    procs.kill("master");
    let killed = Instant::now();
    let mut failed_attempts = 0u32;
    let mut switched: Option<Duration> = None;
    let (after, store_back) = loop {
        match store
            .append(Recipients::List(vec![plug]), msg(b"after failover"), 0)
            .await
        {
            Ok(a) => break (a, killed.elapsed()),
            Err(e) => {
                failed_attempts += 1;
                if switched.is_none() && sentinel_master(sport).await.map(|m| m.1) == Some(rport) {
                    switched = Some(killed.elapsed());
                }
                assert!(
                    killed.elapsed() < FAILOVER_BOUND,
                    "store still failing {FAILOVER_BOUND:?} after the master was killed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let promoted = sentinel_master(sport).await;
    eprintln!(
        "sentinel failover: store writes again {store_back:?} after SIGKILL of the master; \
         sentinel named the replica after {switched:?} (seen between failed attempts); \
         {failed_attempts} failed attempts; down-after 1000 ms"
    );
    assert_eq!(
        promoted,
        Some(("127.0.0.1".into(), rport)),
        "the sentinel promoted the replica"
    );
    assert!(
        store_back > Duration::from_millis(1000),
        "no write can succeed before the sentinel declares the master down"
    );
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut client(rport).await)
        .await
        .unwrap();
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );

    // Data from before the failover is there, new data is there, and writing goes on.
    let got = store.since(plug, 0, 10, 0).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|m| (m.msg_id, m.payload.clone()))
            .collect::<Vec<_>>(),
        vec![
            (before.msg_id, Bytes::from_static(b"before failover")),
            (after.msg_id, Bytes::from_static(b"after failover")),
        ]
    );
    assert!(
        after.msg_id > before.msg_id,
        "the id counter was replicated"
    );
    assert_eq!(
        registry.lookup(plug).await.unwrap(),
        vec![("comet-a".to_string(), 11)]
    );
    registry.register(phone, "comet-b", 1).await.unwrap();
    assert_eq!(
        registry.lookup(phone).await.unwrap(),
        vec![("comet-b".to_string(), 1)]
    );
    assert!(store.ack(plug, before.msg_id).await.unwrap());
    assert_eq!(
        store
            .since(plug, 0, 10, 0)
            .await
            .unwrap()
            .iter()
            .map(|m| m.msg_id)
            .collect::<Vec<_>>(),
        vec![after.msg_id]
    );
    assert!(
        store_back < FAILOVER_BOUND,
        "failover within {FAILOVER_BOUND:?}"
    );
}
