//! Randomness, injected by the caller.
//!
//! The core needs random bytes for the HELLO nonce and random numbers for jitter (reconnect
//! backoff, retransmission timers). Boards implement [`Rng`] over their hardware RNG where they
//! have one. [`SplitMix64`] is a tiny deterministic generator for tests and for virtual boards
//! that seed it from something unpredictable (QEMU has no TRNG); it is **not** cryptographic, so
//! a production board SHOULD use its hardware RNG for the nonce.

/// A source of random numbers.
pub trait Rng {
    /// A uniformly distributed 32-bit number.
    fn next_u32(&mut self) -> u32;

    /// Fills `buf` with random bytes.
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(4) {
            let word = self.next_u32().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// A number uniformly distributed in `0..=max` (with negligible modulo bias for the
    /// millisecond ranges the SDK uses).
    fn below_or_equal(&mut self, max: u32) -> u32 {
        if max == u32::MAX {
            return self.next_u32();
        }
        let wide = (u64::from(self.next_u32()) << 32) | u64::from(self.next_u32());
        // max < u32::MAX here, so max + 1 is a non-zero u32.
        match core::num::NonZeroU32::new(max + 1) {
            Some(range) => crate::divide::div_rem(wide, range).1,
            None => self.next_u32(),
        }
    }
}

impl<R: Rng + ?Sized> Rng for &mut R {
    fn next_u32(&mut self) -> u32 {
        (**self).next_u32()
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state, good statistical quality, not
/// cryptographic.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64-bit output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Rng for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_per_seed() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let mut c = SplitMix64::new(43);
        let xs: [u64; 4] = core::array::from_fn(|_| a.next_u64());
        let ys: [u64; 4] = core::array::from_fn(|_| b.next_u64());
        let zs: [u64; 4] = core::array::from_fn(|_| c.next_u64());
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn splitmix_reference_output() {
        // First output of SplitMix64 seeded with 0, as published with the algorithm.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn below_or_equal_stays_in_range_and_reaches_both_ends() {
        let mut r = SplitMix64::new(7);
        let (mut saw0, mut saw3) = (false, false);
        for _ in 0..1000 {
            let v = r.below_or_equal(3);
            assert!(v <= 3);
            saw0 |= v == 0;
            saw3 |= v == 3;
        }
        assert!(saw0 && saw3);
        assert_eq!(r.below_or_equal(0), 0);
    }

    #[test]
    fn fill_bytes_handles_odd_lengths() {
        let mut r = SplitMix64::new(1);
        let mut buf = [0u8; 7];
        r.fill_bytes(&mut buf);
        assert_ne!(buf, [0u8; 7]);
    }
}
