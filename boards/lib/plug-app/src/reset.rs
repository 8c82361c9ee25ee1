//! Why a real board started, decoded from what its chip keeps across a reset, and the name
//! the boot report uploads (`AppConfig::reset_reason`, topic `boot`).
//!
//! Each chip leaves different traces, so each has its own decoder here; a board reads the raw
//! register values (and clears them) and passes them in. Nothing here touches a register, so
//! the mapping is tested on the host:
//!
//! * **STM32F4** (nucleo-f429zi): the flags of `RCC_CSR` ([`stm32f4_reason`]). The firmware
//!   resets itself only after a fault (its HardFault handler), so a software reset reads as
//!   [`ResetReason::Fault`].
//! * **RP2040** (pico-w): the watchdog's `REASON` register plus a marker the HardFault handler
//!   writes to a watchdog scratch register before it forces a reset ([`rp2040_reason`]).
//!
//! The QEMU board has its own watchdog model and marker (its `watchdog` module); the names it
//! reports are the same.

/// Why the board started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ResetReason {
    /// Power applied (or a reset nothing else explains).
    PowerOn,
    /// The supply dipped below the brown-out threshold.
    Brownout,
    /// The reset pin (the board's reset button or a debug probe).
    Pin,
    /// The watchdog was not fed in time: the network task stopped making progress.
    Watchdog,
    /// A fault or a panic (release builds abort on panic): the HardFault handler reset the chip.
    Fault,
    /// The chip left a low-power mode through a reset.
    LowPower,
}

impl ResetReason {
    /// The name in logs and in the boot report (`{"reset":"<name>"}`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ResetReason::PowerOn => "power-on",
            ResetReason::Brownout => "brownout",
            ResetReason::Pin => "pin",
            ResetReason::Watchdog => "watchdog",
            ResetReason::Fault => "fault",
            ResetReason::LowPower => "low-power",
        }
    }
}

/// `RCC_CSR` bit: low-power reset.
pub const STM32F4_LPWRRSTF: u32 = 1 << 31;
/// `RCC_CSR` bit: window watchdog reset.
pub const STM32F4_WWDGRSTF: u32 = 1 << 30;
/// `RCC_CSR` bit: independent watchdog reset.
pub const STM32F4_IWDGRSTF: u32 = 1 << 29;
/// `RCC_CSR` bit: software reset (`SYSRESETREQ`).
pub const STM32F4_SFTRSTF: u32 = 1 << 28;
/// `RCC_CSR` bit: power-on / power-down reset.
pub const STM32F4_PORRSTF: u32 = 1 << 27;
/// `RCC_CSR` bit: NRST pin reset.
pub const STM32F4_PINRSTF: u32 = 1 << 26;
/// `RCC_CSR` bit: brown-out reset.
pub const STM32F4_BORRSTF: u32 = 1 << 25;

/// The reason an STM32F4 started, from its `RCC_CSR` value (read before clearing the flags with
/// `RMVF`). The flags accumulate until cleared and an internal reset also pulses the pin, so
/// several can be set at once: the most specific wins (a power-on sets POR, BOR and PIN; a
/// watchdog or software reset also sets PIN).
pub const fn stm32f4_reason(csr: u32) -> ResetReason {
    if csr & STM32F4_PORRSTF != 0 {
        ResetReason::PowerOn
    } else if csr & (STM32F4_IWDGRSTF | STM32F4_WWDGRSTF) != 0 {
        ResetReason::Watchdog
    } else if csr & STM32F4_SFTRSTF != 0 {
        ResetReason::Fault
    } else if csr & STM32F4_LPWRRSTF != 0 {
        ResetReason::LowPower
    } else if csr & STM32F4_BORRSTF != 0 {
        ResetReason::Brownout
    } else if csr & STM32F4_PINRSTF != 0 {
        ResetReason::Pin
    } else {
        ResetReason::PowerOn
    }
}

/// RP2040 watchdog `REASON` bit: the watchdog timer ran out.
pub const RP2040_REASON_TIMER: u32 = 1 << 0;
/// RP2040 watchdog `REASON` bit: a reset forced through the watchdog's `CTRL.TRIGGER`.
pub const RP2040_REASON_FORCE: u32 = 1 << 1;
/// What the HardFault handler leaves in the watchdog scratch register before it forces a reset
/// (`"FLT!"`); the register survives a watchdog reset and reads 0 after a power-on.
pub const RP2040_FAULT_MARKER: u32 = u32::from_le_bytes(*b"FLT!");

/// The reason an RP2040 started, from the watchdog's `REASON` register and the scratch word the
/// fault handler writes (clear it after reading). A forced reset without the marker (a debugger
/// or a future firmware update) reads as [`ResetReason::Pin`], an outside request.
pub const fn rp2040_reason(reason: u32, scratch: u32) -> ResetReason {
    if reason & RP2040_REASON_FORCE != 0 {
        if scratch == RP2040_FAULT_MARKER {
            ResetReason::Fault
        } else {
            ResetReason::Pin
        }
    } else if reason & RP2040_REASON_TIMER != 0 {
        ResetReason::Watchdog
    } else {
        ResetReason::PowerOn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stm32f4_power_on_sets_three_flags_and_reads_as_power_on() {
        let csr = STM32F4_PORRSTF | STM32F4_BORRSTF | STM32F4_PINRSTF;
        assert_eq!(stm32f4_reason(csr), ResetReason::PowerOn);
    }

    #[test]
    fn stm32f4_internal_resets_win_over_the_pin_flag_they_pulse() {
        let cases = [
            (STM32F4_IWDGRSTF, ResetReason::Watchdog),
            (STM32F4_WWDGRSTF, ResetReason::Watchdog),
            (STM32F4_SFTRSTF, ResetReason::Fault),
            (STM32F4_LPWRRSTF, ResetReason::LowPower),
            (STM32F4_BORRSTF, ResetReason::Brownout),
            (0, ResetReason::Pin),
        ];
        for (flag, reason) in cases {
            assert_eq!(stm32f4_reason(flag | STM32F4_PINRSTF), reason, "{flag:#x}");
        }
        assert_eq!(stm32f4_reason(0), ResetReason::PowerOn, "no flag at all");
    }

    #[test]
    fn rp2040_tells_a_fault_from_a_forced_reset_and_a_timeout() {
        let fault = RP2040_FAULT_MARKER;
        assert_eq!(
            rp2040_reason(RP2040_REASON_FORCE, fault),
            ResetReason::Fault
        );
        assert_eq!(rp2040_reason(RP2040_REASON_FORCE, 0), ResetReason::Pin);
        assert_eq!(rp2040_reason(RP2040_REASON_TIMER, 0), ResetReason::Watchdog);
        assert_eq!(
            rp2040_reason(RP2040_REASON_TIMER, fault),
            ResetReason::Watchdog,
            "a stale marker does not turn a timeout into a fault"
        );
        assert_eq!(rp2040_reason(0, fault), ResetReason::PowerOn);
    }

    #[test]
    fn names_are_short_and_distinct() {
        let all = [
            ResetReason::PowerOn,
            ResetReason::Brownout,
            ResetReason::Pin,
            ResetReason::Watchdog,
            ResetReason::Fault,
            ResetReason::LowPower,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(a.as_str().len() <= 16);
            for b in &all[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
        assert_eq!(ResetReason::Watchdog.as_str(), "watchdog");
        assert_eq!(ResetReason::PowerOn.as_str(), "power-on");
    }
}
