//! Ctrl-C tears the rig's network down: `hil-tests net-up --rig ci` builds the CI rig's
//! namespace (bridge and 16 TAPs) and waits; SIGINT must end it with status 130 and leave no
//! namespace behind. Needs CAP_NET_ADMIN and iproute2 (as the host TAP rigs do).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn sigint_removes_the_rigs_namespace_bridge_and_taps() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hil-tests"))
        .args(["net-up", "--rig", "ci"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let name = line.trim().to_string();
    assert!(
        name.starts_with("hil-"),
        "net-up printed no namespace (needs CAP_NET_ADMIN): {line:?}"
    );
    let ns = Path::new("/run/netns").join(&name);
    assert!(ns.exists(), "{name} not created");
    let links = Command::new("ip")
        .args(["-n", &name, "-brief", "link", "show", "master", "br0"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(links.lines().count(), 16, "TAPs on br0: {links}");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "net-up ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(!ns.exists(), "{name} left behind after SIGINT");
}
