//! Free ports for servers a test starts on 127.0.0.1.
//!
//! A port the kernel picks for `bind(":0")` comes from the ephemeral range (32768-60999 by
//! default on Linux), and once the probing socket is closed any other socket bound to `:0` in
//! the meantime (a client's, another test's) can be handed the same port before the server
//! under test binds it. These ports come from below that range, which the kernel never hands
//! out on its own, so only an explicit bind can take one; each is checked free for both TCP and
//! UDP, and a process never hands the same port out twice.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The ports handed out: `FIRST..FIRST + SPAN`.
const FIRST: u32 = 20_000;
/// How many ports the range holds.
const SPAN: u32 = 12_000;

/// A port on 127.0.0.1 free for TCP and UDP, outside the kernel's ephemeral range.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each process starts at its own place, so test binaries run one after the other (or two
    // checkouts' tests at once) rarely probe the same ports.
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + start.wrapping_add(n) % SPAN) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}
