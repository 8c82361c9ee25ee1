//! The postcard primitives the frame codec ([`crate::frame`]) and the handshake packet codecs
//! ([`crate::packet`]) read and write, by hand.
//!
//! Frames are postcard on the wire (docs/protocol.md section 4): unsigned integers as LEB128
//! varints, `bool` and `Option` tags as one byte `0`/`1`, enum variants as a `u32` varint index,
//! byte strings and UTF-8 strings as a length varint and the bytes. serde's derived codecs for
//! [`crate::frame::Frame`] monomorphise one visitor per field type and variant, which cost a
//! device about 2 KiB of flash; these few non-generic functions read and write the same bytes.
//! The same holds for the handshake bodies. The derives are kept for hosts, and
//! `tests/wire_props.rs` checks that both codecs produce
//! the same bytes for every frame and the same result (value or error) for arbitrary input.
//!
//! [`Reader`] accepts exactly what postcard 1.x accepts: a varint of a `B`-bit integer has at
//! most `ceil(B / 7)` bytes and its last byte may not carry bits above `B`; non-minimal
//! encodings within that length are accepted, as postcard does. Lengths are `usize` varints,
//! as in postcard (so their width follows the platform's pointer width).

use crate::ids::{Address, Kind};

/// Why bytes could not be read (mapped to the caller's own error type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The bytes end inside a field.
    Truncated,
    /// A varint too long for its type, or a `bool`, `Option` or enum tag out of range.
    Malformed,
    /// A string field is not UTF-8.
    BadUtf8,
    /// An enum's variant index this version does not know (the index).
    UnknownVariant(u32),
}

/// Reads postcard fields from the front of a byte slice.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub(crate) const fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// Whether every byte has been read.
    pub(crate) const fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// One byte.
    pub(crate) fn byte(&mut self) -> Result<u8, WireError> {
        let (&first, rest) = self.rest.split_first().ok_or(WireError::Truncated)?;
        self.rest = rest;
        Ok(first)
    }

    /// A varint of a `bits`-bit unsigned integer (one function for every width, so a device
    /// links one copy).
    #[inline(never)]
    fn varint(&mut self, bits: u32) -> Result<u64, WireError> {
        let max_len = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        let mut value = 0u64;
        for i in 0..max_len {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if i == max_len - 1 && byte > last_max {
                    return Err(WireError::Malformed);
                }
                return Ok(value);
            }
        }
        Err(WireError::Malformed)
    }

    /// A `u16` varint.
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        // In range: at most 3 bytes and the last one checked against the width.
        self.varint(u16::BITS).map(|v| v as u16)
    }

    /// A `u32` varint (also an enum's variant index).
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.varint(u32::BITS).map(|v| v as u32)
    }

    /// A `u64` varint.
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        self.varint(u64::BITS)
    }

    /// A `bool` (one byte, `0` or `1`); also an `Option`'s tag.
    pub(crate) fn bool(&mut self) -> Result<bool, WireError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Malformed),
        }
    }

    /// `N` bytes as they are (postcard's `[u8; N]`).
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        self.fill(&mut out)?;
        Ok(out)
    }

    /// Fills `out` with the next bytes (one copy for every array size).
    #[inline(never)]
    fn fill(&mut self, out: &mut [u8]) -> Result<(), WireError> {
        if out.len() > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(out.len());
        out.copy_from_slice(taken);
        self.rest = rest;
        Ok(())
    }

    /// What is left unread.
    pub(crate) const fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// A length-prefixed byte string, borrowed.
    #[inline(never)]
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint(usize::BITS)?;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
        if len > self.rest.len() {
            return Err(WireError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    /// A length-prefixed UTF-8 string, borrowed.
    pub(crate) fn str(&mut self) -> Result<&'a str, WireError> {
        core::str::from_utf8(self.bytes()?).map_err(|_| WireError::BadUtf8)
    }
}

/// The output buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BufferFull;

/// Writes postcard fields into a byte slice.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub(crate) fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer { buf, len: 0 }
    }

    /// The bytes written so far.
    pub(crate) fn finish(self) -> &'a mut [u8] {
        &mut self.buf[..self.len]
    }

    /// One byte.
    pub(crate) fn byte(&mut self, byte: u8) -> Result<(), BufferFull> {
        let slot = self.buf.get_mut(self.len).ok_or(BufferFull)?;
        *slot = byte;
        self.len += 1;
        Ok(())
    }

    /// Any unsigned integer as a minimal varint (postcard's encoding of `u16`, `u32`, `u64`,
    /// `usize` lengths and variant indexes).
    #[inline(never)]
    pub(crate) fn varint(&mut self, mut value: u64) -> Result<(), BufferFull> {
        while value >= 0x80 {
            self.byte(value as u8 | 0x80)?;
            value >>= 7;
        }
        self.byte(value as u8)
    }

    /// A `bool` (also an `Option`'s tag).
    pub(crate) fn bool(&mut self, value: bool) -> Result<(), BufferFull> {
        self.byte(u8::from(value))
    }

    /// A length-prefixed byte string (also a `str`'s bytes).
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        self.varint(bytes.len() as u64)?;
        self.raw(bytes)
    }

    /// Bytes as they are, without a length (postcard's `[u8; N]`).
    #[inline(never)]
    pub(crate) fn raw(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(BufferFull)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// An [`Address`] as postcard writes it (frames and handshake bodies alike): the kind's variant
/// index (a `u32` varint, `0` or `1`), then the id.
pub(crate) fn write_address(w: &mut Writer<'_>, address: Address) -> Result<(), BufferFull> {
    w.varint(address.kind as u64)?;
    w.varint(address.id.into())
}

/// Reads what [`write_address`] writes; another kind index is [`WireError::Malformed`].
pub(crate) fn read_address(r: &mut Reader<'_>) -> Result<Address, WireError> {
    let kind = match r.u32()? {
        0 => Kind::Device,
        1 => Kind::Phone,
        _ => return Err(WireError::Malformed),
    };
    Ok(Address { kind, id: r.u32()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_limits_follow_postcard() {
        // u32: 5 bytes at most, the fifth at most 0x0F.
        assert_eq!(
            Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).u32(),
            Ok(u32::MAX)
        );
        assert_eq!(
            Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0x10]).u32(),
            Err(WireError::Malformed)
        );
        assert_eq!(
            Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).u32(),
            Err(WireError::Malformed)
        );
        // Non-minimal but within the length: accepted, like postcard.
        assert_eq!(Reader::new(&[0x80, 0x00]).u32(), Ok(0));
        // u16: 3 bytes, the third at most 0x03.
        assert_eq!(Reader::new(&[0xFF, 0xFF, 0x03]).u16(), Ok(u16::MAX));
        assert_eq!(
            Reader::new(&[0xFF, 0xFF, 0x04]).u16(),
            Err(WireError::Malformed)
        );
        // u64: 10 bytes, the tenth at most 0x01.
        let mut max = [0xFF; 10];
        max[9] = 0x01;
        assert_eq!(Reader::new(&max).u64(), Ok(u64::MAX));
        max[9] = 0x02;
        assert_eq!(Reader::new(&max).u64(), Err(WireError::Malformed));
        assert_eq!(Reader::new(&[0x80]).u64(), Err(WireError::Truncated));
    }

    #[test]
    fn strings_and_tags() {
        let mut r = Reader::new(&[2, b'o', b'k', 1, 0xFF, 5, b'x']);
        assert_eq!(r.str(), Ok("ok"));
        assert_eq!(r.byte(), Ok(1));
        assert_eq!(r.bool(), Err(WireError::Malformed));
        assert_eq!(r.bytes(), Err(WireError::Truncated));
        assert_eq!(Reader::new(&[1, 0xFF]).str(), Err(WireError::BadUtf8));
    }

    #[test]
    fn writer_stops_at_the_end_of_its_buffer() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.varint(300), Ok(()));
        assert_eq!(w.bytes(b"ab"), Err(BufferFull));
        let mut buf = [0u8; 4];
        let mut w = Writer::new(&mut buf);
        w.varint(300).unwrap();
        w.bytes(b"a").unwrap();
        assert_eq!(w.finish(), &[0xAC, 0x02, 1, b'a']);
    }
}
