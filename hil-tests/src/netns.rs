//! The host TAP rig's private network: a network namespace with a bridge (the broker's address
//! on it) and one TAP device per board enslaved to it, created by the test and removed when the
//! [`Namespace`] guard drops (also when the scenario fails or panics; on Ctrl-C the
//! [`crate::teardown`] watcher removes it). Namespaces of earlier runs that were killed before
//! cleaning up are removed by [`remove_stale`] (their names carry the creating process's PID).
//!
//! The thread that runs the rig calls [`Namespace::enter`]: every socket it (and the runtime
//! threads and child processes it starts) opens from then on lives in the namespace, so the
//! broker, the API client and the board process share one private LAN and nothing leaves it.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

/// Name prefix of the namespaces this crate creates (`hil-<pid>`).
pub const PREFIX: &str = "hil-";

/// The bridge's MAC address: locally administered, and apart from the boards' (`02:50:..`,
/// see `boards/host-tap`) and QEMU's (`52:54:..`).
pub const BRIDGE_MAC: &str = "02:b7:00:00:00:01";

/// A network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {reason} (the host TAP rig needs CAP_NET_ADMIN and iproute2)")]
    Ip {
        /// Its arguments.
        args: String,
        /// Its error output or exit status.
        reason: String,
    },
    /// Entering the namespace failed.
    #[error("entering network namespace {name}: {reason}")]
    Enter {
        /// The namespace.
        name: String,
        /// What failed.
        reason: String,
    },
}

fn ip(args: &[&str]) -> Result<String, NetError> {
    let failed = |reason: String| NetError::Ip {
        args: args.join(" "),
        reason,
    };
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(failed(if stderr.is_empty() {
            output.status.to_string()
        } else {
            stderr
        }))
    }
}

/// A network namespace with one TAP device, removed on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates namespace `name` with loopback up, bridge `bridge` addressed `host_cidr`
    /// (`a.b.c.d/prefix`, the kernel's side) and the TAPs `taps` on it, all up (each board
    /// process attaches to its TAP).
    pub fn create(
        name: &str,
        bridge: &str,
        host_cidr: &str,
        taps: &[String],
    ) -> Result<Namespace, NetError> {
        ip(&["netns", "add", name])?;
        // From here on the guard removes the namespace, whatever fails next.
        let ns = Namespace {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&["-n", name, "link", "add", bridge, "type", "bridge"])?;
        // An address of its own: by default a bridge takes its ports' lowest MAC, so it could be
        // a board's own TAP's, and frames the board sends there would still reach the host once
        // that TAP is unplugged (see `plug`).
        ip(&["-n", name, "link", "set", bridge, "address", BRIDGE_MAC])?;
        ip(&["-n", name, "addr", "add", host_cidr, "dev", bridge])?;
        ip(&["-n", name, "link", "set", bridge, "up"])?;
        for tap in taps {
            ip(&["-n", name, "tuntap", "add", "dev", tap, "mode", "tap"])?;
            ip(&["-n", name, "link", "set", tap, "master", bridge])?;
            ns.set_link(tap, true)?;
        }
        Ok(ns)
    }

    /// Brings link `dev` of the namespace up or down (a board's network coming up or going
    /// away).
    pub fn set_link(&self, dev: &str, up: bool) -> Result<(), NetError> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.name, "link", "set", dev, state]).map(|_| ())
    }

    /// Plugs TAP `tap` into bridge `bridge` or unplugs it (its link stays up, so the board
    /// process writing to it sees no error; its frames just reach nobody while unplugged).
    ///
    /// An unplugged TAP is still an interface of the namespace's own network stack, so
    /// unplugging also turns ARP off on it: otherwise the stack answers the board's next ARP
    /// request for the broker's address with the TAP's MAC, and the board's packets reach the
    /// broker again one way (the broker's answers go out on the bridge).
    pub fn plug(&self, tap: &str, bridge: &str, plugged: bool) -> Result<(), NetError> {
        if plugged {
            ip(&[
                "-n", &self.name, "link", "set", tap, "arp", "on", "master", bridge,
            ])
            .map(|_| ())
        } else {
            ip(&[
                "-n", &self.name, "link", "set", tap, "nomaster", "arp", "off",
            ])
            .map(|_| ())
        }
    }

    /// `ip -n <name> -brief link` of the namespace (names and states of its links).
    pub fn links(&self) -> Result<String, NetError> {
        ip(&["-n", &self.name, "-brief", "link"])
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into the namespace (threads and processes it starts later
    /// inherit it).
    pub fn enter(&self) -> Result<(), NetError> {
        let enter_err = |reason: String| NetError::Enter {
            name: self.name.clone(),
            reason,
        };
        let file = File::open(Path::new("/run/netns").join(&self.name))
            .map_err(|e| enter_err(e.to_string()))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| enter_err(e.to_string()))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace removes its TAP and addresses with it.
        if let Err(e) = delete(&self.name) {
            eprintln!("hil: could not remove network namespace {}: {e}", self.name);
        }
    }
}

/// The namespace name for this process.
pub fn name_for_this_process() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// Deletes namespace `name` (what the guard's drop and the Ctrl-C watcher do).
pub fn delete(name: &str) -> Result<(), NetError> {
    ip(&["netns", "del", name]).map(|_| ())
}

/// Whether namespace `name` exists.
pub fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Removes `hil-<pid>` namespaces whose process is gone (a run killed before cleaning up).
/// Returns the names removed.
pub fn remove_stale() -> Vec<String> {
    let Ok(list) = ip(&["netns", "list"]) else {
        return Vec::new();
    };
    stale_names(&list, |pid| {
        Path::new("/proc").join(pid.to_string()).exists()
    })
    .into_iter()
    .filter(|name| ip(&["netns", "del", name]).is_ok())
    .collect()
}

/// Names in `ip netns list` output that this crate created for a process that is not alive.
fn stale_names(list: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let pid: u32 = name.strip_prefix(PREFIX)?.parse().ok()?;
            (!alive(pid)).then(|| name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn only_our_dead_namespaces_are_stale() {
        let list = "hil-12 (id: 3)\nhil-99\nother-5\nhil-x\nhil-7 (id: 1)\n";
        let stale = stale_names(list, |pid| pid == 99);
        assert_eq!(stale, ["hil-12", "hil-7"]);
    }

    /// Needs CAP_NET_ADMIN (the host TAP rigs do too).
    #[test]
    fn the_guard_builds_the_bridge_and_taps_and_its_drop_removes_everything() {
        let name = format!("{PREFIX}{}-unit", std::process::id());
        let taps = vec!["tap0".to_string(), "tap1".to_string(), "tap2".to_string()];
        let ns = Namespace::create(&name, "br0", "198.51.100.1/24", &taps)
            .expect("creating a namespace needs CAP_NET_ADMIN and iproute2");
        let links = ns.links().unwrap();
        for dev in ["br0", "tap0", "tap1", "tap2"] {
            assert!(links.contains(dev), "{dev} missing in {links}");
        }
        let masters = ip(&["-n", &name, "-brief", "link", "show", "master", "br0"]).unwrap();
        assert_eq!(masters.lines().count(), 3, "{masters}");
        ns.set_link("tap1", false).unwrap();
        let down = ip(&["-n", &name, "link", "show", "tap1"]).unwrap();
        assert!(!down.contains(",UP"), "{down}");
        ns.plug("tap2", "br0", false).unwrap();
        let masters = ip(&["-n", &name, "-brief", "link", "show", "master", "br0"]).unwrap();
        assert_eq!(masters.lines().count(), 2, "{masters}");
        ns.plug("tap2", "br0", true).unwrap();
        let masters = ip(&["-n", &name, "-brief", "link", "show", "master", "br0"]).unwrap();
        assert_eq!(masters.lines().count(), 3, "{masters}");
        assert!(exists(&name));
        drop(ns);
        assert!(!exists(&name), "the namespace outlived its guard");
    }

    /// Makes a socket with `make` in namespace `ns` (a socket stays in the namespace it was
    /// made in), on a thread of its own so the caller's namespace does not change.
    fn socket_in(ns: &str, make: impl FnOnce() -> UdpSocket + Send + 'static) -> UdpSocket {
        let file = File::open(Path::new("/run/netns").join(ns)).expect("namespace file");
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns needs CAP_NET_ADMIN");
            make()
        })
        .join()
        .expect("socket thread")
    }

    /// How long a check that expects delivery waits for it.
    const HEARD: Duration = Duration::from_secs(5);
    /// How long a check that expects no delivery listens (four sends, ARP's first retries).
    const UNHEARD: Duration = Duration::from_secs(1);

    /// Whether `to` receives what `from` sends to it within `window`, sending every 250 ms.
    /// A board that asked ARP while unplugged may wait up to a second for its next request
    /// after being plugged back in, so the checks that expect delivery give it a few seconds.
    fn reaches(from: &UdpSocket, to: &UdpSocket, tag: u8, window: Duration) -> bool {
        let dest = to.local_addr().unwrap();
        let mut buf = [0u8; 8];
        let deadline = std::time::Instant::now() + window;
        while std::time::Instant::now() < deadline {
            from.send_to(&[tag], dest).unwrap();
            while let Ok(n) = to.recv(&mut buf) {
                if buf[..n] == [tag] {
                    return true;
                }
            }
        }
        false
    }

    /// Needs CAP_NET_ADMIN. A board on an unplugged port reaches nobody: neither with the
    /// bridge's MAC it had learned (without a fixed bridge address that can be its own port's,
    /// as it is here: the bridge's only port) nor after asking ARP anew. Plugged back in, it
    /// is heard again. The board is a veth end in a second namespace (a TAP needs a process
    /// holding it open; to the bridge both are ports).
    #[test]
    fn a_board_on_an_unplugged_port_reaches_nobody() {
        let name = format!("{PREFIX}{}-cut", std::process::id());
        let board = format!("{PREFIX}{}-cutb", std::process::id());
        let ns = Namespace::create(&name, "br0", "198.51.100.1/24", &[])
            .expect("creating a namespace needs CAP_NET_ADMIN and iproute2");
        ip(&["netns", "add", &board]).unwrap();
        let board_ns = Namespace {
            name: board.clone(),
        };
        ip(&[
            "-n", &name, "link", "add", "port0", "type", "veth", "peer", "name", "nic0", "netns",
            &board,
        ])
        .unwrap();
        ns.plug("port0", "br0", true).unwrap();
        ns.set_link("port0", true).unwrap();
        ip(&[
            "-n",
            &board,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "nic0",
        ])
        .unwrap();
        board_ns.set_link("nic0", true).unwrap();

        let host = socket_in(&name, || UdpSocket::bind("198.51.100.1:0").unwrap());
        host.set_read_timeout(Some(Duration::from_millis(250)))
            .unwrap();
        let dev = socket_in(&board, || UdpSocket::bind("198.51.100.2:0").unwrap());
        assert!(
            reaches(&dev, &host, 1, HEARD),
            "plugged in, the board is heard"
        );

        ns.plug("port0", "br0", false).unwrap();
        assert!(
            !reaches(&dev, &host, 2, UNHEARD),
            "unplugged, with the learned MAC"
        );
        ip(&["-n", &board, "neigh", "flush", "all"]).unwrap();
        assert!(
            !reaches(&dev, &host, 3, UNHEARD),
            "unplugged, after a new ARP request"
        );

        ns.plug("port0", "br0", true).unwrap();
        assert!(
            reaches(&dev, &host, 4, HEARD),
            "plugged back in, heard again"
        );
        drop(board_ns);
        drop(ns);
        assert!(!exists(&name) && !exists(&board));
    }
}
