//! The scenarios `hil-tests` knows, by name, with their pass criteria: what `hil-tests list`
//! prints and what rig files and `--scenario` are checked against. The code of each lives in
//! [`crate::scenario`] (`basic`, every rig) or [`crate::fleet`] (rigs with a namespace and a
//! bridge: `kind = "host-tap"`).

/// One scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Its name (rig files, `--scenario`, JUnit suite names).
    pub name: &'static str,
    /// Whether it needs the fleet network (a host TAP rig's namespace and bridge).
    pub fleet: bool,
    /// When it passes.
    pub criterion: &'static str,
}

/// Every scenario, in the order a rig runs them.
pub const SCENARIOS: &[Known] = &[
    Known {
        name: "basic",
        fleet: false,
        criterion: "per transport: login, relay.set/relay.get through the API, relay and power \
                    uploads readable (plus the lookup and nonce suites where the rig asks)",
    },
    Known {
        name: "boot-online",
        fleet: true,
        criterion: "every host TAP board, booted with its TAP link down, online within 2 s of \
                    the link coming up, the QEMU board within 2 s of QEMU starting",
    },
    Known {
        name: "http-under-loss",
        fleet: true,
        criterion: "20% loss each way on the UDP path of tap0's board and of the QEMU board: \
                    every one of 20 relay commands through the HTTP API returns the device's \
                    result; p50/p95 recorded",
    },
    Known {
        name: "uploads-under-trouble",
        fleet: true,
        criterion: "power readings every 100 ms for upload_run_s on 4 boards with 20% loss, \
                    delay with jitter and reordering, the broker restarted in the middle: every \
                    reading in the spool exactly once, upload ids gap-free and in order per \
                    device, none skipped or refused by the board",
    },
    Known {
        name: "cut-off",
        fleet: true,
        criterion: "tap8's board uploading four times a second is cut off the network (its TAP \
                    unplugged) for cut_off_s, then plugged back in: online again within 90 s, \
                    its drop counter (readings_skipped) above 0 when the cut outlasts its \
                    256-upload queue and steady once it is back, and its numbered readings in the \
                    spool once each, in order, with kept + dropped = taken (the highest number)",
    },
    Known {
        name: "nat-rebinding",
        fleet: true,
        criterion: "a board uploading every 200 ms; its UDP path moves to a new source port \
                    mid-session (a flushed NAT mapping): the broker shows the session at the new \
                    address, 7 commands answer, the board logged in once and never reconnected, \
                    its uploads are gap-free and in order",
    },
    Known {
        name: "wrong-key",
        fleet: true,
        criterion: "a board provisioned with another device's key: no session appears in 12 s, \
                    its log reports `login rejected: code 17` (AUTH_FAILED), at most 9 login \
                    attempts (it backs off)",
    },
    Known {
        name: "phone-to-plug",
        fleet: true,
        criterion: "on tap3's board and the QEMU board: a bound phone on the app WebSocket sends \
                    `relay.set on`, `off`, `on`; after each it receives the device's state \
                    event (`{\"relay\":...}` from that device) within 5 s, and the device's \
                    relay uploads end with on, off, on",
    },
    Known {
        name: "link-flap",
        fleet: true,
        criterion: "tap4's board, uploading every 200 ms, has its TAP link set down for 3 s and \
                    up again: it is still running, answers 3 relay commands afterwards, and its \
                    log shows the outage counted (`link back after N failed attempts`, N >= 1)",
    },
    Known {
        name: "silent-device",
        fleet: true,
        criterion: "tap5's board online, a bound phone logged in; the board's TAP is unplugged \
                    from the bridge (network cut): within 8 s (the 6 s session timeout plus a \
                    heartbeat) the phone gets the device's offline presence event and the API \
                    lists no session of the device",
    },
    Known {
        name: "broker-away",
        fleet: true,
        criterion: "tap6's board online, a bound phone logged in; the broker out of the board's \
                    reach for 30 s (its relay drops everything) while the phone pushes relay.set \
                    on, off, on, off: after the outage the board logs in again, the phone gets \
                    the device's answers in push order and the relay uploads end with them; \
                    every reconnect delay in the board's log is within its backoff ceiling \
                    (1 s doubling, 60 s cap, +150 ms) and not all at the ceiling (jitter)",
    },
    Known {
        name: "id-profiles",
        fleet: true,
        criterion: "phones only. plug profile (the fleet broker): a second login with a phone's \
                    id kicks the first with reason REPLACED within 5 s and a push to the id \
                    reaches the second; signed profile (a second broker): two phones logged in \
                    with one negative id both receive a push to it within 5 s, neither kicked",
    },
    Known {
        name: "cluster-failover",
        fleet: true,
        criterion: "a cluster (2 comets, a msgbus) on the services; a board whose node lookup \
                    names one comet is online on comet-a, a bound phone on comet-b; its \
                    relay.set reaches the device and the state event comes back; comet-a is \
                    killed (SIGKILL): within 25 s the device is online on comet-b after a new \
                    lookup, and the phone's next relay.set reaches it and its state event comes \
                    back",
    },
    Known {
        name: "fleet",
        fleet: true,
        criterion: "every host TAP board and the QEMU board online together; one push to \
                    all devices: each board logs that message's delivery within 15 s, and 2 s \
                    later exactly one delivery and no repeat, which its `deliveries` command confirms \
                    (with the repeats the SDK suppressed, reported); then half of the host TAP boards \
                    restarted on the second image (same device): each logs in and its status \
                    reports the new version (`+next`), with no delivery again; every other \
                    board answers status with the old version",
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Known> {
    SCENARIOS.iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for k in SCENARIOS {
            assert_eq!(find(k.name), Some(k));
            assert_eq!(SCENARIOS.iter().filter(|o| o.name == k.name).count(), 1);
        }
        assert_eq!(find("no-such"), None);
    }
}
