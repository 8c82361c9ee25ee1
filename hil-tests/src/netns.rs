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
    pub fn plug(&self, tap: &str, bridge: &str, plugged: bool) -> Result<(), NetError> {
        if plugged {
            ip(&["-n", &self.name, "link", "set", tap, "master", bridge]).map(|_| ())
        } else {
            ip(&["-n", &self.name, "link", "set", tap, "nomaster"]).map(|_| ())
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
}
