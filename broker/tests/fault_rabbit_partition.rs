//! RabbitMQ partitioned from the upload publisher (the msgbus side, `RabbitUploadSink`) while
//! uploads flow, against the real RabbitMQ node 1 from `cargo xtask services up` (feature
//! `services-tests`; run: `cargo test -p broker --features services-tests --test
//! fault_rabbit_partition -- --nocapture` to see the figures).
//!
//! The partition is a blackhole in a TCP relay that this test puts between the publisher and
//! node 1 ([`Blackhole`]): while it is on, the relay stops moving bytes either way and holds new
//! connections without reaching the node, so sockets stay open and every publish and confirm
//! goes unanswered, as when packets are dropped on the path; nothing is refused or reset. When it
//! is lifted, held bytes flow again. The shared services are never stopped or reconfigured.
//!
//! Pass criteria: [`partition_support`] (the same as the netem variant, `fault_rabbit_netem`).
#![cfg(feature = "services-tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod partition_support;
mod rabbit_support;
mod services_env;

use partition_support::host_port;

/// A TCP relay to `upstream` that can be switched to drop nothing and deliver nothing.
struct Blackhole {
    addr: std::net::SocketAddr,
    on: Arc<AtomicBool>,
}

impl Blackhole {
    async fn start(upstream: String) -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let on = Arc::new(AtomicBool::new(false));
        let flag = on.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (flag, upstream) = (flag.clone(), upstream.clone());
                tokio::spawn(async move {
                    // A connection opened during the partition reaches the node after the heal.
                    wait_while(&flag).await;
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(relay(cr, sw, flag.clone()));
                    relay(sr, cw, flag).await;
                });
            }
        });
        Blackhole { addr, on }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }
}

async fn wait_while(flag: &AtomicBool) {
    while flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Copies `from` to `to`, reading nothing while the blackhole is on (the bytes wait in the
/// kernel's buffers, as they would behind a cut link), until either side closes.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    flag: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_while(&flag).await;
        let n = match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        // Bytes read just before the cut still go out: they were on the wire already.
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn node1_url() -> String {
    services_env::require(&["RABBITMQ_1_AMQP_URL"])["RABBITMQ_1_AMQP_URL"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_rabbitmq_loses_no_confirmed_upload_and_the_spool_drains() {
    let url = node1_url();
    let node = host_port(&url);
    let hole = Blackhole::start(node.clone()).await;
    let relayed = url.replacen(&node, &hole.addr.to_string(), 1);
    let cfg = partition_support::config("partition");
    let outcome = partition_support::run(
        &tokio::runtime::Handle::current(),
        relayed,
        &cfg,
        || hole.set(true),
        || hole.set(false),
    )
    .await;
    partition_support::check(&url, &cfg, outcome).await;
}
