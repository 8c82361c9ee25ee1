//! A TCP relay between a test and a RabbitMQ node that can be switched into a blackhole: while
//! it is on, the relay stops moving bytes either way and holds new connections without reaching
//! the node, so sockets stay open and every publish and confirm goes unanswered, as when packets
//! are dropped on the path; nothing is refused or reset. When it is lifted, held bytes flow
//! again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to `upstream` that can be switched to drop nothing and deliver nothing.
pub struct Blackhole {
    /// Where to connect instead of the node.
    pub addr: std::net::SocketAddr,
    on: Arc<AtomicBool>,
}

impl Blackhole {
    /// Starts relaying from a free port on 127.0.0.1 to `upstream` (`host:port`), open.
    pub async fn start(upstream: String) -> Blackhole {
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

    /// Switches the blackhole on (`true`) or off.
    pub fn set(&self, on: bool) {
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

/// `host:port` of an `amqp://user:pass@host:port/vhost` URL.
pub fn host_port(url: &str) -> String {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    after_at.split('/').next().unwrap().to_string()
}
