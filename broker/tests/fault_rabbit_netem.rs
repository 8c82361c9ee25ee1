//! RabbitMQ partitioned from the upload publisher (the msgbus side, `RabbitUploadSink`) by
//! dropping every packet on a network link, against the real RabbitMQ node 1 from `cargo xtask
//! services up` (feature `services-tests`; run: `cargo test -p broker --features
//! services-tests --test fault_rabbit_netem -- --nocapture` to see the figures). The same
//! scenario and pass criteria as the relay blackhole of `fault_rabbit_partition`
//! ([`partition_support`]), with the cut made by the kernel instead of by test code.
//!
//! The network, created by the test and removed when it ends, pass or fail ([`Netns`]):
//!
//! ```text
//!  network namespace (unique name)          |  host
//!  publisher runtime: spool + sink  -- veth pair (a /30) --  relay on the veth's host
//!                                                             address -> 127.0.0.1 node 1
//! ```
//!
//! * The publisher (the embedded spool and the `RabbitUploadSink`) runs on a tokio runtime
//!   whose threads all enter the namespace before doing anything ([`namespaced_runtime`]), so
//!   every socket it opens (lapin's connections included) lives there and reaches the host only
//!   through the veth pair. The relay checks it: every connection it accepted came from the
//!   namespace's address.
//! * The RabbitMQ services listen on 127.0.0.1 only (xtask/src/services.rs), which a namespace
//!   cannot reach, and the shared services must not be reconfigured. So a plain TCP relay
//!   listens on the veth's host address and copies bytes to node 1 on 127.0.0.1. It never
//!   stops on its own: the cut is the kernel's.
//! * The cut: `tc qdisc add dev VETH root netem loss 100%` on both ends of the pair for
//!   [`partition_support::PARTITION`] (8 s), then the qdiscs are deleted. Packets are dropped
//!   silently both ways, as on a dead path: sockets stay open, nothing is refused or reset, and
//!   TCP retransmits after the heal. A kernel built without netem (`CONFIG_NET_SCH_NETEM`, as
//!   on the machine this was written on) refuses that qdisc; the test then installs a token
//!   bucket (`tbf`) whose burst (1 byte) is smaller than any packet, which drops every packet
//!   the same way, and says which one it used.
//!
//! Needs root (`CAP_NET_ADMIN` and `CAP_SYS_ADMIN` for the namespace) and the `ip` and `tc`
//! tools; without the capabilities it is skipped with a message saying so.
#![cfg(feature = "services-tests")]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

mod partition_support;
mod rabbit_support;
mod services_env;

use rabbit_support::blackhole::host_port;

/// `CAP_NET_ADMIN` (links, addresses, qdiscs) and `CAP_SYS_ADMIN` (creating and entering
/// namespaces), as bit numbers of `CapEff` in /proc/self/status.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Why the test cannot run here, when it cannot.
fn missing_capabilities() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| effective & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// Runs a command; panics with its output when it fails.
fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` (iproute2 installed?): {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A network namespace joined to the host by a veth pair with a /30 on it; deleted (with the
/// pair) when dropped, also when the test panics.
struct Netns {
    name: String,
    host_veth: String,
    ns_veth: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Netns {
    /// Names and the /30 come from the process id, so concurrent runs do not collide.
    fn create() -> Netns {
        let pid = std::process::id();
        let block = pid % 16_384;
        let base = [10, 234, (block / 64) as u8, ((block % 64) * 4) as u8];
        let ns = Netns {
            name: format!("plugcloud-rabbit-netem-{pid}"),
            host_veth: format!("rqh{pid}"),
            ns_veth: format!("rqn{pid}"),
            host_ip: Ipv4Addr::new(base[0], base[1], base[2], base[3] + 1),
            ns_ip: Ipv4Addr::new(base[0], base[1], base[2], base[3] + 2),
        };
        // Left over from an earlier process that had this id and was killed: nobody uses it.
        ns.remove();
        sh("ip", &["netns", "add", &ns.name]);
        sh(
            "ip",
            &[
                "link",
                "add",
                &ns.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_veth,
                "netns",
                &ns.name,
            ],
        );
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", ns.host_ip),
                "dev",
                &ns.host_veth,
            ],
        );
        sh("ip", &["link", "set", &ns.host_veth, "up"]);
        ns.exec(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", ns.ns_ip),
                "dev",
                &ns.ns_veth,
            ],
        );
        ns.exec("ip", &["link", "set", &ns.ns_veth, "up"]);
        ns.exec("ip", &["link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace.
    fn exec(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        sh("ip", &all);
    }

    /// The namespace's file, for `setns`.
    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Drops every packet leaving either end of the pair (see module docs); returns the qdisc
    /// used.
    fn cut(&self) -> &'static str {
        let netem = [
            "qdisc", "add", "dev", "VETH", "root", "netem", "loss", "100%",
        ];
        let tbf = [
            "qdisc", "add", "dev", "VETH", "root", "tbf", "rate", "8bit", "burst", "1", "limit",
            "1",
        ];
        let with = |args: &[&'static str], dev: &str| -> Vec<String> {
            args.iter()
                .map(|a| {
                    if *a == "VETH" {
                        dev.to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        };
        let probe = Command::new("tc")
            .args(with(&netem, &self.host_veth))
            .output()
            .expect("cannot run `tc` (iproute2 installed?)");
        let (used, args): (&'static str, &[&'static str]) = if probe.status.success() {
            ("netem loss 100%", &netem)
        } else {
            let why = String::from_utf8_lossy(&probe.stderr);
            assert!(
                why.contains("unknown"),
                "`tc qdisc add ... netem` failed: {why}"
            );
            eprintln!(
                "this kernel has no netem qdisc ({}); dropping every packet with a 1-byte tbf \
                 instead",
                why.trim()
            );
            let host: Vec<String> = with(&tbf, &self.host_veth);
            let host: Vec<&str> = host.iter().map(String::as_str).collect();
            sh("tc", &host);
            ("tbf burst 1 byte", &tbf)
        };
        let inside = with(args, &self.ns_veth);
        let inside: Vec<&str> = inside.iter().map(String::as_str).collect();
        self.exec("tc", &inside);
        used
    }

    /// Removes the qdiscs `cut` added.
    fn heal(&self) {
        sh("tc", &["qdisc", "del", "dev", &self.host_veth, "root"]);
        self.exec("tc", &["qdisc", "del", "dev", &self.ns_veth, "root"]);
    }

    /// Deletes the pair and the namespace, whatever exists of them.
    fn remove(&self) {
        for args in [
            vec!["link", "del", self.host_veth.as_str()],
            vec!["netns", "del", self.name.as_str()],
        ] {
            let _ = Command::new("ip")
                .args(&args)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A tokio runtime whose threads (workers and blocking pool) all enter the network namespace
/// at `path` when they start; threads they spawn inherit it.
fn namespaced_runtime(path: String) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the namespace");
        })
        .build()
        .unwrap()
}

/// A plain TCP relay on `listen` to `upstream`; records the address of every client it
/// accepted.
async fn relay(listen: SocketAddr, upstream: String) -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let listener = TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    let seen = clients.clone();
    tokio::spawn(async move {
        while let Ok((mut client, from)) = listener.accept().await {
            seen.lock().unwrap().push(from);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, clients)
}

#[test]
fn a_netem_partition_from_rabbitmq_loses_no_confirmed_upload_and_the_spool_drains() {
    if let Some(missing) = missing_capabilities() {
        eprintln!("SKIPPED: creating a network namespace and qdiscs needs {missing} (run as root)");
        return;
    }
    let url = services_env::require(&["RABBITMQ_1_AMQP_URL"])["RABBITMQ_1_AMQP_URL"].clone();
    // Declared first, so dropped last: the runtimes are gone before the network is.
    let ns = Netns::create();
    let publisher_rt = namespaced_runtime(ns.path());
    let host_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    host_rt.block_on(async {
        let node = host_port(&url);
        let (relay_addr, clients) = relay(SocketAddr::from((ns.host_ip, 0)), node.clone()).await;
        let through_veth = url.replacen(&node, &relay_addr.to_string(), 1);
        let cfg = partition_support::config("netem");
        let used = Mutex::new("");
        let outcome = partition_support::run(
            publisher_rt.handle(),
            through_veth,
            &cfg,
            || *used.lock().unwrap() = ns.cut(),
            || ns.heal(),
        )
        .await;
        let clients = clients.lock().unwrap().clone();
        eprintln!(
            "cut with {}; the relay accepted {} connections from {:?}",
            used.lock().unwrap(),
            clients.len(),
            clients
        );
        assert!(
            !clients.is_empty(),
            "the publisher connected through the veth"
        );
        assert!(
            clients.iter().all(|c| c.ip() == ns.ns_ip),
            "every connection came from inside the namespace ({}): {clients:?}",
            ns.ns_ip
        );
        partition_support::check(&url, &cfg, outcome).await;
    });
    publisher_rt.shutdown_timeout(std::time::Duration::from_secs(5));
}
