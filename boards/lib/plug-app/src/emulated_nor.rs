//! NOR flash as the boards without one emulate it in a host file (host-tap in a plain file,
//! QEMU through semihosting), so the persistent area ([`crate::persist`]) meets there the rules
//! it meets on silicon: the geometry, aligned accesses within the area, and writes that may only
//! clear bits (an erase sets them). Each board keeps its own file I/O and error type and asks
//! [`check_access`] and [`check_write`] before it touches the file.

/// Sector (erase unit).
pub const ERASE_SIZE: usize = 4096;
/// Program unit.
pub const WRITE_SIZE: usize = 4;
/// Sectors in the emulated area.
pub const SECTORS: usize = 4;
/// Bytes of the emulated area.
pub const SIZE: usize = ERASE_SIZE * SECTORS;

/// How an access breaks the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleBroken {
    /// Offset or length not a multiple of the access's unit.
    NotAligned,
    /// Beyond [`SIZE`] (or an erase whose end is before its start).
    OutOfBounds,
    /// A write would turn a 0 bit into 1 (only an erase can).
    SetsBits,
}

/// The byte offset of an access of `len` bytes at `offset` in units of `align` (1 to read,
/// [`WRITE_SIZE`] to write, [`ERASE_SIZE`] to erase), or why it is refused.
pub fn check_access(offset: u32, len: usize, align: usize) -> Result<usize, RuleBroken> {
    let start = offset as usize;
    if start.checked_add(len).is_none_or(|end| end > SIZE) {
        return Err(RuleBroken::OutOfBounds);
    }
    if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
        return Err(RuleBroken::NotAligned);
    }
    Ok(start)
}

/// Refuses writing `new` over `old` when it would set a bit ([`RuleBroken::SetsBits`]).
pub fn check_write(old: &[u8], new: &[u8]) -> Result<(), RuleBroken> {
    if old.iter().zip(new).any(|(o, n)| n & !o != 0) {
        return Err(RuleBroken::SetsBits);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_must_be_aligned_and_inside_the_area() {
        assert_eq!(check_access(8, 4, WRITE_SIZE), Ok(8));
        assert_eq!(check_access(6, 4, WRITE_SIZE), Err(RuleBroken::NotAligned));
        assert_eq!(check_access(8, 6, WRITE_SIZE), Err(RuleBroken::NotAligned));
        assert_eq!(
            check_access((SIZE - 4) as u32, 8, WRITE_SIZE),
            Err(RuleBroken::OutOfBounds)
        );
        assert_eq!(check_access(u32::MAX, 1, 1), Err(RuleBroken::OutOfBounds));
        assert_eq!(check_access(0, SIZE, ERASE_SIZE), Ok(0));
    }

    #[test]
    fn a_write_may_clear_bits_only() {
        assert_eq!(check_write(&[0xFF, 0xF0], &[0x0F, 0x10]), Ok(()));
        assert_eq!(check_write(&[0xF0], &[0xF1]), Err(RuleBroken::SetsBits));
    }
}
