//! The send window over a transport that loses nothing (docs/protocol.md section 5, "Reliable
//! transport"): never a resend within the session, and the peer is given up at the very moment
//! a datagram sender with the same acknowledgements and jitter gives up.

use proptest::prelude::*;
use shared_protocol::handshake::Carrier;
use shared_protocol::limits::MAX_IN_FLIGHT;
use shared_protocol::reliability::{Ack, SendEvent, SendWindow};

type Win = SendWindow<16, 8>;

/// What happened to one window at one tick.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tick {
    resends: usize,
    dead: bool,
}

fn poll_all(w: &mut Win, now: u64, jitter: u16) -> Tick {
    let mut tick = Tick::default();
    while let Some(e) = w.poll(now, jitter) {
        match e {
            SendEvent::Retransmit { .. } => tick.resends += 1,
            SendEvent::PeerDead => tick.dead = true,
        }
    }
    tick
}

#[test]
fn a_reliable_carrier_never_resends_and_dies_at_the_datagram_deadline() {
    for jitter in [0, 1, 20_000, u16::MAX] {
        let mut udp = Win::new();
        let mut ws = Win::new().with_carrier(Carrier::Reliable);
        udp.push(b"a", 0, jitter).unwrap();
        ws.push(b"a", 0, jitter).unwrap();
        let mut udp_resends = 0;
        let mut now = 0;
        loop {
            now += 1;
            let u = poll_all(&mut udp, now, jitter);
            let w = poll_all(&mut ws, now, jitter);
            udp_resends += u.resends;
            assert_eq!(w.resends, 0, "resent over a reliable carrier at {now} ms");
            assert_eq!(u.dead, w.dead, "jitter {jitter}: deaths differ at {now} ms");
            assert_eq!(udp.poll_timeout(), ws.poll_timeout());
            if u.dead {
                break;
            }
            assert!(now < 60_000, "never gave up");
        }
        assert_eq!(udp_resends, 7, "the datagram window resent 7 times");
        assert!(ws.is_dead() && !ws.can_send());
        match jitter {
            0 => assert_eq!(now, 19_750),
            u16::MAX => assert_eq!(now, 39_500),
            _ => assert!((19_750..=39_500).contains(&now)),
        }
    }
}

#[test]
fn a_late_poll_counts_the_missed_waits_and_still_sends_nothing() {
    let mut ws = Win::new().with_carrier(Carrier::Reliable);
    ws.push(b"a", 0, u16::MAX).unwrap();
    // One poll long after the first wait ended counts that wait only, as a datagram sender
    // would resend once; the following waits run in full afterwards.
    assert_eq!(ws.poll(10_000, u16::MAX), None);
    assert_eq!(ws.poll_timeout(), Some(11_000));
    assert!(!ws.is_dead());
}

#[test]
fn an_acknowledgement_retires_frames_as_over_a_datagram_transport() {
    let mut ws = Win::new().with_carrier(Carrier::Reliable);
    for i in 0..MAX_IN_FLIGHT as u8 {
        ws.push(&[i], 0, 0).unwrap();
    }
    assert!(!ws.can_send());
    // Acks arrive late (after every first wait): nothing is resent, they retire the frames.
    assert_eq!(ws.poll(2_000, 0), None);
    let acked = ws.on_ack(Ack { next: 17, mask: 0 }, 2_100).unwrap();
    assert_eq!(acked.len(), MAX_IN_FLIGHT as usize);
    assert_eq!(ws.in_flight(), 0);
    assert_eq!(ws.poll_timeout(), None);
}

/// A peer that acknowledges later frames but never the oldest (it refused it) does not keep a
/// reliable carrier's session alive: "Live peer" is off, the oldest frame's eight waits run in
/// full and the session ends at 39.5 s. A datagram sender resends the frame sooner instead and
/// is still alive then.
#[test]
fn selective_acks_do_not_postpone_giving_up_over_a_reliable_carrier() {
    let mut udp = Win::new();
    let mut ws = Win::new().with_carrier(Carrier::Reliable);
    let mut ws_dead_at = None;
    for now in (0..=39_500u64).step_by(100) {
        if now % 1_500 == 0 && udp.can_send() {
            assert_eq!(udp.push(b"f", now, u16::MAX), ws.push(b"f", now, u16::MAX));
        }
        if now % 1_500 == 700 {
            // Every frame but the first, selectively.
            let above = udp.next_seq() - 2;
            let ack = Ack {
                next: 1,
                mask: (1u32 << above) - 1,
            };
            udp.on_ack(ack, now).unwrap();
            if !ws.is_dead() {
                ws.on_ack(ack, now).unwrap();
            }
        }
        poll_all(&mut udp, now, u16::MAX);
        let w = poll_all(&mut ws, now, u16::MAX);
        assert_eq!(w.resends, 0);
        if w.dead {
            ws_dead_at = Some(now);
        }
    }
    assert_eq!(ws_dead_at, Some(39_500));
    assert!(
        !udp.is_dead(),
        "the datagram sender's resends were hurried, not counted"
    );
}

proptest! {
    /// Whatever frames are pushed and acknowledged when, and whatever the jitter, a reliable
    /// carrier's window resends nothing, keeps the datagram window's timers and gives up at the
    /// same tick (or neither does).
    #[test]
    fn reliable_and_datagram_windows_keep_the_same_timers(
        script in proptest::collection::vec((0u64..3_000, 0u8..3, any::<u16>()), 1..40),
    ) {
        let mut udp = Win::new();
        let mut ws = Win::new().with_carrier(Carrier::Reliable);
        let mut now = 0;
        for (gap, action, jitter) in script {
            // Time passes in 10 ms ticks, both windows polled at each.
            let until = now + gap;
            while now < until {
                now += 10;
                let u = poll_all(&mut udp, now, jitter);
                let w = poll_all(&mut ws, now, jitter);
                prop_assert_eq!(w.resends, 0);
                prop_assert_eq!(u.dead, w.dead);
                prop_assert_eq!(udp.poll_timeout(), ws.poll_timeout());
            }
            match action {
                0 | 1 if udp.can_send() => {
                    prop_assert_eq!(udp.push(b"f", now, jitter), ws.push(b"f", now, jitter));
                }
                // The peer acknowledges everything but the newest frame.
                2 => {
                    let ack = Ack { next: udp.next_seq().saturating_sub(1).max(1), mask: 0 };
                    prop_assert_eq!(udp.on_ack(ack, now), ws.on_ack(ack, now));
                }
                _ => {}
            }
            prop_assert_eq!(udp.is_dead(), ws.is_dead());
        }
    }
}
