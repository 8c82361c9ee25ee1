//! 64-bit by 32-bit division without the compiler's 64-bit division routine.
//!
//! On 32-bit MCUs without a 64-bit divide instruction (all Cortex-M), `u64 / u64` and
//! `u64 % u64` call `__aeabi_uldivmod` from compiler-builtins, about 600 B of flash. The SDK
//! divides a `u64` only a few times per reading or login (decimal digits, milliseconds to
//! seconds, energy units, the random back-off draw), always by a `u32`, so one shift-and-subtract
//! loop of a few dozen bytes replaces it; speed does not matter at these call rates.
//! [`div_rem`] gives exactly `(n / d, n % d)` (held by the tests against the built-in operators).

use core::num::NonZeroU32;

/// `(n / d, n % d)`.
#[inline(never)]
pub fn div_rem(n: u64, d: NonZeroU32) -> (u64, u32) {
    let d = u64::from(d.get());
    let mut quotient = 0u64;
    let mut remainder = 0u64;
    for bit in (0..u64::BITS).rev() {
        // remainder < d <= 2^32 - 1 before the shift, so it stays below 2^33: no overflow.
        remainder = (remainder << 1) | ((n >> bit) & 1);
        if remainder >= d {
            remainder -= d;
            quotient |= 1 << bit;
        }
    }
    (quotient, remainder as u32)
}

/// A divisor from a constant: `const { nonzero(1_000) }` (in a `const` block a zero fails to
/// compile).
pub const fn nonzero(d: u32) -> NonZeroU32 {
    match NonZeroU32::new(d) {
        Some(d) => d,
        None => panic!("divisor must not be zero"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_built_in_operators() {
        let numerators = [
            0,
            1,
            9,
            10,
            999,
            1_000,
            3_599_999,
            3_600_000,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            0x1234_5678_9ABC_DEF0,
            u64::MAX - 1,
            u64::MAX,
        ];
        let divisors = [1, 2, 5, 10, 1_000, 3_600, 3_600_000, u32::MAX - 1, u32::MAX];
        for n in numerators {
            for d in divisors {
                let expected = (n / u64::from(d), (n % u64::from(d)) as u32);
                assert_eq!(div_rem(n, nonzero(d)), expected, "{n} / {d}");
            }
        }
        // A spread of pseudo-random values too.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = ((x >> 17) as u32 >> (x % 32)).max(1);
            assert_eq!(
                div_rem(x, nonzero(d)),
                (x / u64::from(d), (x % u64::from(d)) as u32)
            );
        }
    }
}
