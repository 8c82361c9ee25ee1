//! Property tests of the wire codecs: every frame variant, packet type and JSON message
//! round-trips, encodings stay within the limits, and no decoder panics on arbitrary or mutated
//! bytes (an accepted input always re-encodes to something that decodes to the same value).

use proptest::prelude::*;
use shared_protocol::codes::Code;
use shared_protocol::frame::{Ack, Body, DecodeError, Frame};
use shared_protocol::ids::{Address, Kind};
use shared_protocol::limits::{
    HELLO_MIN_LEN, MAX_FRAME, MAX_MSG_ID, MAX_NAME, MAX_PACKET, MAX_PATH, MAX_PAYLOAD, MAX_TOPIC,
};
use shared_protocol::packet::{Challenge, DataHeader, Hello, Login, Packet, Reject};

fn address() -> impl Strategy<Value = Address> {
    (any::<bool>(), any::<u32>()).prop_map(|(phone, id)| Address {
        kind: if phone { Kind::Phone } else { Kind::Device },
        id,
    })
}

/// Owned material for one frame of each variant; `frame()` borrows from it.
#[derive(Debug, Clone)]
struct Parts {
    variant: u32,
    seq: u32,
    ack: Ack,
    n64: u64,
    n32: u32,
    n16a: u16,
    n16b: u16,
    addr: Address,
    from: Option<Address>,
    flag: bool,
    payload: Vec<u8>,
    text: String,
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        0u32..16,
        1u32..,
        (any::<u32>(), any::<u32>()),
        (0..=MAX_MSG_ID, any::<u32>(), any::<u16>(), any::<u16>()),
        (address(), proptest::option::of(address()), any::<bool>()),
        proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
        "\\PC{0,8}",
    )
        .prop_map(
            |(
                variant,
                seq,
                (next, mask),
                (n64, n32, n16a, n16b),
                (addr, from, flag),
                payload,
                text,
            )| {
                // Keep strings within the smallest limit in bytes.
                let mut text: String = text;
                while text.len() > MAX_NAME.min(MAX_TOPIC).min(MAX_PATH) {
                    text.pop();
                }
                Parts {
                    variant,
                    seq,
                    ack: Ack { next, mask },
                    n64,
                    n32,
                    n16a,
                    n16b,
                    addr,
                    from,
                    flag,
                    payload,
                    text,
                }
            },
        )
}

impl Parts {
    fn frame(&self) -> Frame<'_> {
        let p = self.payload.as_slice();
        let t = self.text.as_str();
        let body = match self.variant {
            0 => Body::Welcome {
                session_id: self.n32,
                heartbeat_secs: self.n16a,
                session_timeout_secs: self.n16b,
                max_payload: self.n16a,
                server_time_ms: self.n64,
            },
            1 => Body::Ping,
            2 => Body::Pong {
                server_time_ms: self.n64,
            },
            3 => Body::AckOnly,
            4 => Body::Deliver {
                msg_id: self.n64,
                from: self.from,
                payload: p,
            },
            5 => Body::Send {
                to: self.addr,
                payload: p,
            },
            6 => Body::Upload {
                upload_id: self.n32,
                topic: t,
                payload: p,
            },
            7 => Body::UploadAck {
                upload_id: self.n32,
            },
            8 => Body::Command {
                cmd_id: self.n32,
                name: t,
                payload: p,
            },
            9 => Body::CommandResult {
                cmd_id: self.n32,
                status: self.n16a,
                payload: p,
            },
            10 => Body::Request {
                req_id: self.n32,
                path: t,
                payload: p,
            },
            11 => Body::Response {
                req_id: self.n32,
                status: self.n16a,
                payload: p,
            },
            12 => Body::Presence {
                who: self.addr,
                online: self.flag,
            },
            13 => Body::Kick {
                reason: Code(self.n16a),
            },
            14 => Body::Goodbye {
                reason: Code(self.n16b),
            },
            _ => Body::Error {
                code: Code(self.n16a),
                about_seq: self.n32,
            },
        };
        let seq = if body.is_reliable() { self.seq } else { 0 };
        Frame {
            seq,
            ack: self.ack,
            body,
        }
    }
}

/// Packet type index and the fields any packet type may draw from.
type PacketInputs = (u8, Address, [u8; 16], u64, [u8; 32], u64, u16, u32, Vec<u8>);

fn packet_strategy() -> impl Strategy<Value = PacketInputs> {
    (
        0u8..5,
        address(),
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        0..=MAX_MSG_ID,
        any::<u16>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 20..=MAX_PACKET - 14),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_frame_round_trips(parts in parts()) {
        let frame = parts.frame();
        let mut buf = [0u8; MAX_PACKET];
        let bytes = frame.encode(&mut buf).expect("frames within limits encode");
        prop_assert!(bytes.len() <= MAX_FRAME);
        prop_assert_eq!(Frame::decode(bytes), Ok(frame));
    }

    #[test]
    fn every_packet_round_trips(
        (t, address, nonce, ts, cookie, since_id, code, n32, sealed) in packet_strategy()
    ) {
        let session_id = n32.max(1);
        let packet = match t {
            0 => Packet::Hello(Hello { address, client_nonce: nonce }),
            1 => Packet::Challenge(Challenge { timestamp_ms: ts, cookie }),
            2 => Packet::Login(Login {
                address, client_nonce: nonce, timestamp_ms: ts, cookie, since_id,
                upload_epoch: ts | 1, proof: cookie,
            }),
            3 => Packet::Reject(Reject { code: Code(code), max_version: cookie[0], retry_after_ms: n32 }),
            _ => Packet::Data {
                header: DataHeader { session_id, counter: ts >> 16 },
                sealed: &sealed,
            },
        };
        let mut buf = [0u8; MAX_PACKET];
        let bytes = packet.encode(&mut buf).expect("encodes");
        prop_assert!(bytes.len() <= MAX_PACKET);
        if t == 0 {
            prop_assert_eq!(bytes.len(), HELLO_MIN_LEN);
        }
        prop_assert_eq!(Packet::decode(bytes), Ok(packet));
    }

    #[test]
    fn frame_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
        if let Ok(frame) = Frame::decode(&bytes) {
            let mut buf = [0u8; MAX_PACKET];
            let again = frame.encode(&mut buf).expect("accepted frames re-encode");
            prop_assert_eq!(Frame::decode(again), Ok(frame));
        }
    }

    /// A device's decoder agrees with the full one on every frame a broker sends, and refuses
    /// a device-sent body by its index alone (so any bytes after that index are not read).
    #[test]
    fn the_device_decoder_is_the_full_one_restricted_to_broker_bodies(
        parts in parts(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>(),
    ) {
        let mut buf = [0u8; MAX_PACKET];
        let valid = parts.frame().encode(&mut buf).unwrap().to_vec();
        let mut mutated = valid.clone();
        let i = at % mutated.len();
        mutated[i] = byte;
        mutated.truncate(1 + cut % mutated.len());
        for bytes in [valid, mutated] {
            let full = Frame::decode(&bytes);
            let device = Frame::decode_from_broker(&bytes);
            let device_sent = |index: u32| matches!(index, 1 | 5 | 6 | 9 | 10);
            match (full, device) {
                (Ok(frame), device) if device_sent(frame.body.index()) => {
                    prop_assert_eq!(device, Err(DecodeError::WrongDirection(frame.body.index())));
                }
                (full, Err(DecodeError::WrongDirection(index))) => {
                    prop_assert!(device_sent(index));
                    // The full decoder failed inside that body's fields.
                    prop_assert!(full.is_err());
                }
                (full, device) => prop_assert_eq!(device, full),
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic(parts in parts(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut buf = [0u8; MAX_PACKET];
        let mut bytes = parts.frame().encode(&mut buf).unwrap().to_vec();
        let i = at % bytes.len();
        bytes[i] = byte;
        bytes.truncate(1 + cut % bytes.len());
        if let Ok(frame) = Frame::decode(&bytes) {
            let mut out = [0u8; MAX_PACKET];
            let again = frame.encode(&mut out).expect("accepted frames re-encode");
            prop_assert_eq!(Frame::decode(again), Ok(frame));
        }
    }

    #[test]
    fn packet_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
        if let Ok(packet) = Packet::decode(&bytes) {
            let mut buf = [0u8; MAX_PACKET];
            let again = packet.encode(&mut buf).expect("accepted packets re-encode");
            prop_assert_eq!(Packet::decode(again), Ok(packet));
        }
    }

    #[test]
    fn packet_decode_with_valid_header_never_panics(
        t in prop::sample::select(vec![1u8, 2, 3, 4, 0x10]),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = vec![1, t];
        bytes.extend_from_slice(&body);
        if let Ok(packet) = Packet::decode(&bytes) {
            let mut buf = [0u8; MAX_PACKET];
            let again = packet.encode(&mut buf).expect("accepted packets re-encode");
            prop_assert_eq!(Packet::decode(again), Ok(packet));
        }
    }
}

#[cfg(feature = "json")]
mod json {
    use super::*;
    use shared_protocol::json::{
        AckMsg, Auth, Claims, ClientMessage, Deliver, ErrorMsg, Goodbye, Kick, OkMsg, Pong,
        Presence, Reject, SendMsg, ServerMessage, Welcome, mint, verify,
    };
    use shared_protocol::limits::MAX_JSON_MESSAGE;

    fn client() -> impl Strategy<Value = ClientMessage> {
        prop_oneof![
            ("[A-Za-z0-9._-]{0,300}", 0..=MAX_MSG_ID)
                .prop_map(|(token, since_id)| ClientMessage::Auth(Auth { token, since_id })),
            Just(ClientMessage::Ping),
            (
                address(),
                proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
                any::<u32>()
            )
                .prop_map(|(to, payload, reference)| ClientMessage::Send(SendMsg {
                    to,
                    payload,
                    reference
                })),
            (0..=MAX_MSG_ID).prop_map(|msg_id| ClientMessage::Ack(AckMsg { msg_id })),
            any::<u16>().prop_map(|r| ClientMessage::Goodbye(Goodbye { reason: Code(r) })),
        ]
    }

    fn server() -> impl Strategy<Value = ServerMessage> {
        prop_oneof![
            (
                address(),
                any::<u16>(),
                any::<u16>(),
                any::<u16>(),
                any::<u64>()
            )
                .prop_map(
                    |(
                        address,
                        heartbeat_secs,
                        session_timeout_secs,
                        max_payload,
                        server_time_ms,
                    )| {
                        ServerMessage::Welcome(Welcome {
                            address,
                            heartbeat_secs,
                            session_timeout_secs,
                            max_payload,
                            server_time_ms,
                        })
                    }
                ),
            (any::<u16>(), "\\PC{0,60}").prop_map(|(c, reason)| ServerMessage::Reject(Reject {
                code: Code(c),
                reason
            })),
            any::<u64>().prop_map(|t| ServerMessage::Pong(Pong { server_time_ms: t })),
            (
                0..=MAX_MSG_ID,
                proptest::option::of(address()),
                proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD)
            )
                .prop_map(|(msg_id, from, payload)| ServerMessage::Deliver(Deliver {
                    msg_id,
                    from,
                    payload
                })),
            any::<u32>().prop_map(|reference| ServerMessage::Ok(OkMsg { reference })),
            (
                any::<u16>(),
                proptest::option::of(any::<u32>()),
                "\\PC{0,60}"
            )
                .prop_map(|(c, reference, message)| ServerMessage::Error(ErrorMsg {
                    code: Code(c),
                    reference,
                    message
                })),
            (address(), any::<bool>())
                .prop_map(|(who, online)| ServerMessage::Presence(Presence { who, online })),
            any::<u16>().prop_map(|r| ServerMessage::Kick(Kick { reason: Code(r) })),
            any::<u16>().prop_map(|r| ServerMessage::Goodbye(Goodbye { reason: Code(r) })),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn client_messages_round_trip(m in client()) {
            let text = m.encode().expect("encodes");
            prop_assert!(text.len() <= MAX_JSON_MESSAGE);
            prop_assert_eq!(ClientMessage::decode(text.as_bytes()), Ok(m));
        }

        #[test]
        fn server_messages_round_trip(m in server()) {
            let text = m.encode().expect("encodes");
            prop_assert!(text.len() <= MAX_JSON_MESSAGE);
            prop_assert_eq!(ServerMessage::decode(text.as_bytes()), Ok(m));
        }

        #[test]
        fn json_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = ClientMessage::decode(&bytes);
            let _ = ServerMessage::decode(&bytes);
        }

        #[test]
        fn json_like_input_never_panics(text in r#"\{("[a-z_]{1,8}":(-?[0-9]{1,20}|"[a-z0-9+/=]{0,8}"|null|true|\{\}|\[\]),?){0,6}\}"#) {
            let _ = ClientMessage::decode(text.as_bytes());
            let _ = ServerMessage::decode(text.as_bytes());
        }

        #[test]
        fn tokens_round_trip(addr in address(), exp in 1u64.., now in any::<u64>(), secret in proptest::collection::vec(any::<u8>(), 1..64)) {
            let claims = Claims { address: addr, exp };
            let token = mint(&secret, &claims);
            let got = verify(&secret, &token, now);
            if now < exp {
                prop_assert_eq!(got, Ok(claims));
            } else {
                prop_assert_eq!(got, Err(shared_protocol::json::TokenError::Expired));
            }
        }

        #[test]
        fn token_verify_never_panics(token in "\\PC{0,200}") {
            let _ = verify(b"k", &token, 0);
        }
    }
}

/// The frame and handshake codecs are written by hand (`wire` module) to keep a device's flash
/// small; the types keep their serde derives. These properties hold the two to the same bytes
/// on encode and to the same result, value or error, on decode of valid and mutated input, with
/// postcard through the derives as the reference.
mod same_as_postcard {
    use super::*;
    use serde::{Deserialize, Serialize};
    use shared_protocol::frame::DecodeError;
    use shared_protocol::packet::PacketError;

    /// What `Frame::decode` returned when it decoded through the serde derive.
    fn reference_frame(bytes: &[u8]) -> Result<Frame<'_>, DecodeError> {
        if bytes.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge);
        }
        let (frame, rest) = postcard::take_from_bytes::<Frame<'_>>(bytes).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
            postcard::Error::DeserializeBadUtf8 => DecodeError::BadUtf8,
            _ => {
                let index = postcard::take_from_bytes::<(u32, Ack)>(bytes)
                    .ok()
                    .and_then(|(_, rest)| postcard::take_from_bytes::<u32>(rest).ok());
                match index {
                    Some((i, _)) if i >= 16 => DecodeError::UnknownBody(i),
                    _ => DecodeError::Malformed,
                }
            }
        })?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        frame.check()?;
        Ok(frame)
    }

    /// What a handshake body's `decode` returned when it decoded through the serde derive
    /// (`packet` has a valid header of the body's type).
    fn reference_body<T: for<'de> Deserialize<'de>>(
        packet: &[u8],
        padded: bool,
    ) -> Result<T, PacketError> {
        if padded && packet.len() < HELLO_MIN_LEN {
            return Err(PacketError::HelloTooShort);
        }
        let (value, rest) = postcard::take_from_bytes::<T>(&packet[2..]).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd => PacketError::Truncated,
            _ => PacketError::Malformed,
        })?;
        match (padded, rest.iter().all(|&b| b == 0)) {
            (_, true) if rest.is_empty() => Ok(value),
            (true, true) => Ok(value),
            (true, false) => Err(PacketError::BadPadding),
            (false, _) => Err(PacketError::TrailingBytes),
        }
    }

    /// The header and postcard body the serde derive writes.
    fn reference_packet<T: Serialize>(t: u8, body: &T) -> Vec<u8> {
        let mut out = vec![shared_protocol::limits::PROTOCOL_VERSION, t];
        let mut buf = [0u8; MAX_PACKET];
        out.extend_from_slice(postcard::to_slice(body, &mut buf).unwrap());
        out
    }

    /// A packet with one body byte changed and cut after the header or later.
    fn mutate_body(mut bytes: Vec<u8>, at: usize, byte: u8, cut: usize) -> Vec<u8> {
        let i = 2 + at % (bytes.len() - 2);
        bytes[i] = byte;
        bytes.truncate(2 + cut % (bytes.len() - 1));
        bytes
    }

    /// `bytes` with byte `at` set to `byte`, cut to at most `cut` + 1 bytes.
    fn mutate(mut bytes: Vec<u8>, at: usize, byte: u8, cut: usize) -> Vec<u8> {
        let i = at % bytes.len();
        bytes[i] = byte;
        bytes.truncate(1 + cut % bytes.len());
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn frames_encode_to_the_derives_bytes(parts in parts()) {
            let frame = parts.frame();
            let mut buf = [0u8; MAX_PACKET];
            let bytes = frame.encode(&mut buf).unwrap();
            let mut theirs = [0u8; MAX_PACKET];
            prop_assert_eq!(&bytes[..], &postcard::to_slice(&frame, &mut theirs).unwrap()[..]);
        }

        #[test]
        fn frames_decode_like_the_derive(
            parts in parts(), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>(),
        ) {
            let mut buf = [0u8; MAX_PACKET];
            let valid = parts.frame().encode(&mut buf).unwrap().to_vec();
            prop_assert_eq!(Frame::decode(&valid), reference_frame(&valid));
            let mutated = mutate(valid, at, byte, cut);
            prop_assert_eq!(Frame::decode(&mutated), reference_frame(&mutated));
        }

        #[test]
        fn arbitrary_bytes_decode_like_the_derive(
            head in proptest::collection::vec(0u8..20, 0..6),
            tail in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            // Small leading bytes reach the body decoders instead of failing on `seq`.
            let bytes = [head, tail].concat();
            prop_assert_eq!(Frame::decode(&bytes), reference_frame(&bytes));
        }

        #[test]
        fn handshake_bodies_match_the_derive(
            (_, address, nonce, ts, cookie, since_id, code, n32, _) in packet_strategy(),
            at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>(),
        ) {
            let mut buf = [0u8; MAX_PACKET];
            let hello = Hello { address, client_nonce: nonce };
            let ours = hello.encode(&mut buf).unwrap().to_vec();
            let theirs = reference_packet(0x01, &hello);
            prop_assert_eq!(&ours[..theirs.len()], &theirs[..]);
            prop_assert!(ours[theirs.len()..].iter().all(|&b| b == 0));
            let bytes = mutate_body(ours, at, byte, cut);
            prop_assert_eq!(Hello::decode(&bytes), reference_body::<Hello>(&bytes, true));

            let challenge = Challenge { timestamp_ms: ts, cookie };
            let ours = challenge.encode(&mut buf).unwrap().to_vec();
            prop_assert_eq!(&ours, &reference_packet(0x02, &challenge));
            let bytes = mutate_body(ours, at, byte, cut);
            prop_assert_eq!(Challenge::decode(&bytes), reference_body::<Challenge>(&bytes, false));

            let login = Login {
                address, client_nonce: nonce, timestamp_ms: ts, cookie, since_id,
                upload_epoch: ts | 1, proof: cookie,
            };
            let ours = login.encode(&mut buf).unwrap().to_vec();
            prop_assert_eq!(&ours, &reference_packet(0x03, &login));
            let bytes = mutate_body(ours, at, byte, cut);
            let expected = reference_body::<Login>(&bytes, false).and_then(|l| {
                if l.fields_in_range() { Ok(l) } else { Err(PacketError::OutOfRange) }
            });
            prop_assert_eq!(Login::decode(&bytes), expected);

            let reject = Reject { code: Code(code), max_version: cookie[0], retry_after_ms: n32 };
            let ours = reject.encode(&mut buf).unwrap().to_vec();
            prop_assert_eq!(&ours, &reference_packet(0x04, &reject));
            let bytes = mutate_body(ours, at, byte, cut);
            prop_assert_eq!(Reject::decode(&bytes), reference_body::<Reject>(&bytes, false));
        }
    }
}
