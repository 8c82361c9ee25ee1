//! TCP forwarders from the rig's network namespace to services on the host's loopback (Redis,
//! ZooKeeper, RabbitMQ from `cargo xtask services`), for the cluster scenario, whose comets run
//! inside the namespace next to the boards.
//!
//! A socket stays in the namespace it was created in, whichever thread uses it later. So each
//! forwarder's listener is bound by the calling thread (inside the namespace) on the service's
//! own address (`127.0.0.1:<port>` is free there: the namespace has a loopback of its own), and
//! a thread of this module enters the namespace the process started in (`/proc/self/ns/net`,
//! the main thread's: only the rig's thread enters the rig's namespace), where it accepts
//! and opens each upstream connection. Nodes in the namespace then use the services' addresses
//! unchanged. Dropping the [`HostForward`] stops the thread and closes every connection.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;

use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Running forwarders, stopped on drop.
pub struct HostForward {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostForward {
    /// Listens on each of `targets` in the calling thread's namespace and forwards every
    /// connection to the same address in the namespace the process started in.
    pub fn start(targets: &[SocketAddr]) -> std::io::Result<HostForward> {
        let pairs: Vec<(SocketAddr, SocketAddr)> = targets.iter().map(|t| (*t, *t)).collect();
        HostForward::start_pairs(&pairs)
    }

    /// Listens on each `(front, target)`'s `front` here and forwards to its `target` there.
    fn start_pairs(pairs: &[(SocketAddr, SocketAddr)]) -> std::io::Result<HostForward> {
        let mut listeners = Vec::new();
        for (front, target) in pairs {
            let l = std::net::TcpListener::bind(front)?;
            l.set_nonblocking(true)?;
            listeners.push((l, *target));
        }
        let host = File::open("/proc/self/ns/net")?;
        let here = std::fs::metadata("/proc/thread-self/ns/net")?;
        let same = host.metadata()?.ino() == here.ino();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("hil-host-forward".into())
            .spawn(move || {
                if !same && let Err(e) = setns(&host, CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(std::io::Error::other(format!(
                        "entering the process's own network namespace: {e}"
                    ))));
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    for (l, target) in listeners {
                        match TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(accept_loop(l, target));
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    let _ = ready_tx.send(Ok(()));
                    let _ = stopped.await;
                });
            })?;
        let mut forward = HostForward {
            stop: Some(stop),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(forward),
            Ok(Err(e)) => {
                forward.shut();
                Err(e)
            }
            Err(_) => {
                forward.shut();
                Err(std::io::Error::other("the forwarding thread ended"))
            }
        }
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HostForward {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Accepts on `listener` (the rig's namespace) and pipes each connection to `target` (opened
/// here, in the process's own namespace) until either side closes.
async fn accept_loop(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut upstream) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Without a namespace of its own the forwarder still pipes bytes both ways: a listener
    /// stands in for the service, the forwarder listens on a second port and forwards there.
    /// (The namespace crossing itself is exercised by the `cluster-failover` scenario.)
    #[test]
    fn bytes_go_both_ways_and_drop_stops_listening() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let service_addr = service.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = service.accept().await.unwrap();
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.unwrap();
                buf.reverse();
                s.write_all(&buf).await.unwrap();
            });
            // The forwarder must listen on the service's own address in the rig's namespace;
            // here (one namespace) it listens on a free port and forwards to the service.
            let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let front = free.local_addr().unwrap();
            drop(free);
            let forward = HostForward::start_pairs(&[(front, service_addr)]).unwrap();
            let mut c = TcpStream::connect(front).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"gnip");
            drop(forward);
            assert!(TcpStream::connect(front).await.is_err(), "stopped on drop");
        });
    }
}
