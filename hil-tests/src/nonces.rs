//! QEMU has no entropy source: the board's nonces come from its record's secret seed mixed with
//! a boot number (`plug_app::entropy::BootRng`). This suite shows that two boots of one device
//! (same record, boot numbers 1 and 2) send HELLOs with different client nonces, and that a
//! repeated boot number repeats the nonce, so the boot number is what keeps nonces apart and
//! the harness must never reuse one for a device.
//!
//! The board's UDP broker is a socket of this test: it receives the board's first datagram, the
//! HELLO, and answers nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use shared_protocol::packet::Hello;
use tokio::net::UdpSocket;

use crate::device::{self, Boot};
use crate::junit::Suite;
use crate::rig::{Rig, Transport};
use crate::scenario::{Case, Outcome};

/// How long a board may take to boot, get a lease and send its HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// Boots the board with `boot` and returns the client nonce of its first HELLO to `socket`.
async fn first_nonce(
    rig: &Rig,
    root: &Path,
    boot: &Boot,
    logs: &Path,
    socket: &UdpSocket,
) -> Result<[u8; 16], String> {
    let name = format!("{}-nonce-boot{}", rig.name, boot.boot_number);
    let board = device::start(rig, root, boot, logs, &name).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    let received = tokio::time::timeout(HELLO_TIMEOUT, socket.recv_from(&mut buf)).await;
    let log = board.stop();
    let (len, _) = received
        .map_err(|_| format!("no datagram within {HELLO_TIMEOUT:?}; board log:\n{log}"))?
        .map_err(|e| format!("receive: {e}"))?;
    Hello::decode(&buf[..len])
        .map(|hello| hello.client_nonce)
        .map_err(|e| format!("first datagram is not a HELLO: {e}"))
}

/// The suite: boots 1, 2 and 1 again of one device, one record.
pub async fn run(rig: &Rig, root: &Path, logs: &Path, base: Boot, socket: &UdpSocket) -> Suite {
    let started = Instant::now();
    let mut nonces = Vec::new();
    let mut outcome = Outcome::Pass;
    for boot_number in [1, 2, 1] {
        let boot = Boot {
            boot_number,
            transport: Transport::Udp,
            ..base.clone()
        };
        match first_nonce(rig, root, &boot, logs, socket).await {
            Ok(nonce) => nonces.push(nonce),
            Err(e) => {
                outcome = Outcome::Fail(format!("boot {boot_number}: {e}"));
                break;
            }
        }
    }
    if let [first, second, again] = nonces[..] {
        if first == second {
            outcome = Outcome::Fail(format!(
                "boots 1 and 2 sent the same client nonce {first:02x?}"
            ));
        } else if first != again {
            outcome = Outcome::Fail(
                "boot 1 repeated sent another nonce: the boot number is not what separates boots"
                    .into(),
            );
        }
    }
    let detail = nonces
        .iter()
        .map(|n| n.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(", ");
    Suite {
        name: format!("{}/nonces", rig.name),
        cases: vec![Case {
            name: "client nonces differ across boots".into(),
            outcome,
            time: started.elapsed(),
            detail: format!("HELLO nonces of boots 1, 2, 1: {detail}"),
        }],
        time: started.elapsed(),
        system_out: String::new(),
    }
}

/// The sniffing socket for `rig`'s board: bound where the broker's device endpoints bind.
pub async fn sniffer(bind: std::net::IpAddr) -> std::io::Result<(UdpSocket, u16)> {
    let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
    let port = socket.local_addr()?.port();
    Ok((socket, port))
}
