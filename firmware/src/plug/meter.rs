//! Power metering: the [`Meter`] trait boards implement, and [`SimulatedMeter`] for virtual boards.

use core::num::NonZeroU32;

use crate::divide::{div_rem, nonzero};
use crate::time::Instant;

/// One meter reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reading {
    /// Active power, milliwatts.
    pub power_mw: u32,
    /// RMS voltage, millivolts.
    pub voltage_mv: u32,
    /// RMS current, milliamperes.
    pub current_ma: u32,
    /// Energy since boot, milliwatt-hours.
    pub energy_mwh: u64,
}

/// A power meter (e.g. an HLW8012/BL0937 on a real plug).
pub trait Meter {
    /// Reads the meter at `now`. `relay_on` is the relay's state, for meters that model their
    /// load (simulation); real meters measure and ignore it.
    fn read(&mut self, now: Instant, relay_on: bool) -> Reading;
}

/// A deterministic simulated load: `load_mw` (plus a small ripple) while the relay is on, nothing
/// while it is off; energy is integrated between readings.
#[derive(Clone, Debug)]
pub struct SimulatedMeter {
    load_mw: u32,
    voltage_mv: u32,
    last: Option<(Instant, u32)>,
    energy_mw_ms: u64,
}

impl SimulatedMeter {
    /// A meter for a load of `load_mw` milliwatts on a 230 V line.
    pub const fn new(load_mw: u32) -> Self {
        SimulatedMeter {
            load_mw,
            voltage_mv: 230_000,
            last: None,
            energy_mw_ms: 0,
        }
    }
}

impl Meter for SimulatedMeter {
    fn read(&mut self, now: Instant, relay_on: bool) -> Reading {
        let power_mw = if relay_on {
            // Up to 2 % ripple, a pure function of time so tests are reproducible.
            let seconds = div_rem(now.as_millis(), const { nonzero(1_000) }).0;
            let ripple = div_rem(seconds, const { nonzero(5) }).1 * (self.load_mw / 250);
            self.load_mw.saturating_add(ripple)
        } else {
            0
        };
        if let Some((then, previous_mw)) = self.last {
            let elapsed = now.millis_since(then);
            self.energy_mw_ms = self
                .energy_mw_ms
                .saturating_add(u64::from(previous_mw).saturating_mul(elapsed));
        }
        self.last = Some((now, power_mw));
        let voltage = NonZeroU32::new(self.voltage_mv).unwrap_or(const { nonzero(1) });
        let current_ma = div_rem(u64::from(power_mw) * 1_000, voltage).0 as u32;
        Reading {
            power_mw,
            voltage_mv: self.voltage_mv,
            current_ma,
            energy_mwh: div_rem(self.energy_mw_ms, const { nonzero(3_600_000) }).0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_meter_integrates_energy_while_on() {
        let mut m = SimulatedMeter::new(60_000);
        let r0 = m.read(Instant::from_millis(0), true);
        assert_eq!(r0.power_mw, 60_000);
        assert_eq!(r0.current_ma, 260);
        // One hour at 60 W (ripple 240 mW per second-bucket; bucket 0 at t=0).
        let r1 = m.read(Instant::from_millis(3_600_000), true);
        assert_eq!(r1.energy_mwh, 60_000);
        let off = m.read(Instant::from_millis(3_600_000 + 1_000), false);
        assert_eq!(off.power_mw, 0);
        assert_eq!(off.current_ma, 0);
        let later = m.read(Instant::from_millis(7_200_000), false);
        // The 1 s after the second reading was at its power (60 W + 0 ripple at 3600 s).
        assert_eq!(later.energy_mwh, off.energy_mwh);
        assert!(off.energy_mwh >= 60_016);
    }
}
