//! Nonces on a board without a hardware random generator (QEMU).
//!
//! [`BootRng`] is a hash-based deterministic generator (SHA-256 in counter mode over a secret
//! state) seeded from the provisioning record's per-device seed, a boot number that differs on
//! every power-on, and the count of resets since that power-on (a watchdog reset restarts the
//! board with the same boot number). The seed is secret (it never leaves the record), so outputs
//! are unpredictable to anyone without it; the pair (boot number, reset count) makes every
//! boot's stream different, so HELLO nonces and upload epochs do not repeat across boots. A board with a hardware generator (STM32F4 RNG, the RP2040's
//! ring oscillator) uses that instead (docs/boards.md).

use firmware::rng::Rng;
use sha2::{Digest, Sha256};

/// Domain separation of the generator's key from any other use of the seed.
const LABEL: &[u8] = b"plugcloud boot rng v1";

/// SHA-256 counter-mode generator keyed by (seed, boot number, resets since power-on).
pub struct BootRng {
    key: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl BootRng {
    /// A generator for boot number `boot` of the device with record seed `seed`, after
    /// `resets` resets since that boot's power-on (0 on the power-on itself).
    pub fn new(seed: &[u8; 16], boot: u32, resets: u32) -> Self {
        let key: [u8; 32] = Sha256::new()
            .chain_update(LABEL)
            .chain_update(seed)
            .chain_update(boot.to_le_bytes())
            .chain_update(resets.to_le_bytes())
            .finalize()
            .into();
        BootRng {
            key,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn refill(&mut self) {
        self.block = Sha256::new()
            .chain_update(self.key)
            .chain_update(self.counter.to_le_bytes())
            .finalize()
            .into();
        self.counter += 1;
        self.used = 0;
    }
}

impl Rng for BootRng {
    fn next_u32(&mut self) -> u32 {
        if self.used + 4 > self.block.len() {
            self.refill();
        }
        let word = &self.block[self.used..self.used + 4];
        self.used += 4;
        u32::from_le_bytes([word[0], word[1], word[2], word[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_nonce(seed: [u8; 16], boot: u32) -> [u8; 32] {
        nonce_after_resets(seed, boot, 0)
    }

    fn nonce_after_resets(seed: [u8; 16], boot: u32, resets: u32) -> [u8; 32] {
        let mut nonce = [0u8; 32];
        BootRng::new(&seed, boot, resets).fill_bytes(&mut nonce);
        nonce
    }

    #[test]
    fn every_boot_and_every_device_gets_another_stream() {
        let seed = [7; 16];
        assert_eq!(first_nonce(seed, 1), first_nonce(seed, 1));
        let boots: std::vec::Vec<_> = (0..100).map(|b| first_nonce(seed, b)).collect();
        for (i, a) in boots.iter().enumerate() {
            for b in &boots[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(first_nonce([8; 16], 1), first_nonce(seed, 1));
    }

    #[test]
    fn a_reset_with_the_same_boot_number_gets_another_stream() {
        let seed = [7; 16];
        assert_eq!(
            nonce_after_resets(seed, 5, 2),
            nonce_after_resets(seed, 5, 2)
        );
        let streams: std::vec::Vec<_> = (0..3)
            .flat_map(|boot| (0..3).map(move |resets| nonce_after_resets(seed, boot, resets)))
            .collect();
        for (i, a) in streams.iter().enumerate() {
            for b in &streams[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn the_stream_does_not_repeat_across_blocks() {
        let mut rng = BootRng::new(&[1; 16], 3, 0);
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut a);
        rng.fill_bytes(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }
}
