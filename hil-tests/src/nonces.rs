//! QEMU has no entropy source: the board's nonces come from its record's secret seed mixed with
//! a boot number (`plug_app::entropy::BootRng`). This suite shows that two boots of one device
//! (same record, boot numbers 1 and 2) send HELLOs with different client nonces, and that a
//! repeated boot number repeats the nonce, so the boot number is what keeps nonces apart and
//! the harness must never reuse one for a device.
//!
//! The board's UDP broker is a socket of this test: it receives the board's first datagram, the
//! HELLO, and answers nothing. The same socket shows the safe state: booted with a record whose
//! checksum does not match, the board sends nothing and ends with status 4 when its
//! `PLUG_EXIT_AFTER_S` runs out.

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

/// Drops datagrams an earlier, stopped boot left in `socket` (retransmitted HELLOs).
fn drain(socket: &UdpSocket) {
    let mut buf = [0u8; 2048];
    while socket.try_recv_from(&mut buf).is_ok() {}
}

/// Boots the board with `boot` and returns the client nonce of its first HELLO to `socket`.
async fn first_nonce(
    rig: &Rig,
    root: &Path,
    boot: &Boot,
    logs: &Path,
    socket: &UdpSocket,
) -> Result<[u8; 16], String> {
    drain(socket);
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

/// Status of the QEMU plug after a bad record or options (`src/bin/plug.rs`).
const EXIT_CONFIG: i32 = 4;
/// Lifetime of the board booted with a bad record.
const OFFLINE_LIFETIME_S: u64 = 5;

/// Boots `base` with one bit of its record flipped: passes when the board sends nothing and
/// exits with [`EXIT_CONFIG`] after its lifetime.
async fn corrupted_record_stays_offline(
    rig: &Rig,
    root: &Path,
    logs: &Path,
    base: &Boot,
    socket: &UdpSocket,
) -> Case {
    let started = Instant::now();
    let boot = Boot {
        exit_after_s: OFFLINE_LIFETIME_S,
        boot_number: 3,
        ..base.clone()
    };
    let (outcome, detail) = match boot_offline(rig, root, logs, &boot, socket).await {
        Ok(detail) => (Outcome::Pass, detail),
        Err(e) => (Outcome::Fail(e), String::new()),
    };
    Case {
        name: "a corrupted record keeps the board offline".into(),
        outcome,
        time: started.elapsed(),
        detail,
    }
}

/// Boots `boot` with a corrupted record; what was observed, or why it failed.
async fn boot_offline(
    rig: &Rig,
    root: &Path,
    logs: &Path,
    boot: &Boot,
    socket: &UdpSocket,
) -> Result<String, String> {
    let mut record = boot.record().map_err(|e| e.to_string())?;
    record[30] ^= 0x01;
    let name = format!("{}-bad-record", rig.name);
    drain(socket);
    let mut board = device::start_with_record(rig, root, boot, &record, logs, &name)
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(OFFLINE_LIFETIME_S + 30);
    let status = loop {
        if let Some(status) = board.exited() {
            break status;
        }
        if Instant::now() > deadline {
            let log = board.stop();
            return Err(format!("still running after its lifetime; log:\n{log}"));
        }
        if let Ok(Ok((len, from))) =
            tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await
        {
            let log = board.stop();
            return Err(format!(
                "sent {len} bytes to the broker from {from}; log:\n{log}"
            ));
        }
    };
    board.stop();
    match status.code() {
        Some(EXIT_CONFIG) => Ok(format!("no datagram, exit status {EXIT_CONFIG}")),
        other => Err(format!("exit status {other:?}, expected {EXIT_CONFIG}")),
    }
}

/// The suite: boots 1, 2 and 1 again of one device, one record; then a corrupted record.
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
    let nonce_case = Case {
        name: "client nonces differ across boots".into(),
        outcome,
        time: started.elapsed(),
        detail: format!("HELLO nonces of boots 1, 2, 1: {detail}"),
    };
    let offline_case = corrupted_record_stays_offline(rig, root, logs, &base, socket).await;
    Suite {
        name: format!("{}/nonces", rig.name),
        cases: vec![nonce_case, offline_case],
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
