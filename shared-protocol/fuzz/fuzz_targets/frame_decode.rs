//! Packet header, every packet body and the frame codec on arbitrary bytes: no panic, and every
//! accepted input re-encodes to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared_protocol::frame::Frame;
use shared_protocol::limits::MAX_PACKET;
use shared_protocol::packet::{DataHeader, Packet, peek_header};

fuzz_target!(|data: &[u8]| {
    let mut buf = [0u8; MAX_PACKET];

    let _ = peek_header(data);
    let _ = DataHeader::parse(data);
    if let Ok(packet) = Packet::decode(data) {
        let again = packet.encode(&mut buf).expect("accepted packet re-encodes");
        assert_eq!(Packet::decode(again), Ok(packet));
    }

    if let Ok(frame) = Frame::decode(data) {
        let again = frame.encode(&mut buf).expect("accepted frame re-encodes");
        assert_eq!(Frame::decode(again), Ok(frame));
    }
});
