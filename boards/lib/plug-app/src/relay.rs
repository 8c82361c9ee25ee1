//! The relay behind a GPIO pin, with an optional status LED that mirrors it.
//!
//! Works with any HAL's output pin (embedded-hal 1.0 [`OutputPin`]); the polarity of each pin is
//! the board's choice (relay modules are often active-low).

use embedded_hal::digital::OutputPin;
use firmware::plug::{Relay, RelayFault};

/// Which level switches a pin's load on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Polarity {
    /// High = on.
    ActiveHigh,
    /// Low = on.
    ActiveLow,
}

impl Polarity {
    fn level(self, on: bool) -> bool {
        match self {
            Polarity::ActiveHigh => on,
            Polarity::ActiveLow => !on,
        }
    }
}

/// A relay on one output pin, and a LED on another that shows the relay's state.
pub struct GpioRelay<R: OutputPin, L: OutputPin> {
    relay: R,
    relay_polarity: Polarity,
    led: Option<(L, Polarity)>,
    on: bool,
}

impl<R: OutputPin, L: OutputPin> GpioRelay<R, L> {
    /// A relay that starts off (the pin is driven to "off" now).
    pub fn new(relay: R, relay_polarity: Polarity, led: Option<(L, Polarity)>) -> Self {
        let mut this = GpioRelay {
            relay,
            relay_polarity,
            led,
            on: false,
        };
        // A pin that cannot be driven shows up at the first command as a RelayFault.
        let _ = this.set(false);
        this
    }
}

impl<R: OutputPin, L: OutputPin> Relay for GpioRelay<R, L> {
    fn set(&mut self, on: bool) -> Result<(), RelayFault> {
        self.relay
            .set_state(self.relay_polarity.level(on).into())
            .map_err(|_| RelayFault)?;
        self.on = on;
        if let Some((led, polarity)) = &mut self.led {
            // The LED is cosmetic: its failure does not fail the relay.
            let _ = led.set_state(polarity.level(on).into());
        }
        Ok(())
    }

    fn is_on(&self) -> bool {
        self.on
    }
}

/// A relay behind a `'static` reference, so one plug task type serves every relay type.
pub struct DynRelay(pub &'static mut dyn Relay);

impl Relay for DynRelay {
    fn set(&mut self, on: bool) -> Result<(), RelayFault> {
        self.0.set(on)
    }

    fn is_on(&self) -> bool {
        self.0.is_on()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use core::convert::Infallible;
    use embedded_hal::digital::{ErrorKind, ErrorType};

    /// A pin that records its level, or fails every write.
    struct Pin<'a> {
        level: &'a Cell<Option<bool>>,
        broken: bool,
    }

    #[derive(Debug)]
    struct Broken;

    impl embedded_hal::digital::Error for Broken {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    impl ErrorType for Pin<'_> {
        type Error = Broken;
    }

    impl OutputPin for Pin<'_> {
        fn set_low(&mut self) -> Result<(), Broken> {
            if self.broken {
                return Err(Broken);
            }
            self.level.set(Some(false));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Broken> {
            if self.broken {
                return Err(Broken);
            }
            self.level.set(Some(true));
            Ok(())
        }
    }

    struct NoPin;
    impl ErrorType for NoPin {
        type Error = Infallible;
    }
    impl OutputPin for NoPin {
        fn set_low(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    #[test]
    fn drives_relay_and_led_with_their_polarities() {
        let relay_level = Cell::new(None);
        let led_level = Cell::new(None);
        let mut relay = GpioRelay::new(
            Pin {
                level: &relay_level,
                broken: false,
            },
            Polarity::ActiveLow,
            Some((
                Pin {
                    level: &led_level,
                    broken: false,
                },
                Polarity::ActiveHigh,
            )),
        );
        // Starts off: active-low relay pin high, LED low.
        assert_eq!(
            (relay_level.get(), led_level.get()),
            (Some(true), Some(false))
        );
        assert!(!relay.is_on());
        relay.set(true).unwrap();
        assert!(relay.is_on());
        assert_eq!(
            (relay_level.get(), led_level.get()),
            (Some(false), Some(true))
        );
    }

    #[test]
    fn a_failing_relay_pin_is_a_fault_and_keeps_the_state() {
        let level = Cell::new(None);
        let mut relay: GpioRelay<_, NoPin> = GpioRelay::new(
            Pin {
                level: &level,
                broken: true,
            },
            Polarity::ActiveHigh,
            None,
        );
        assert_eq!(relay.set(true), Err(RelayFault));
        assert!(!relay.is_on());
    }

    #[test]
    fn a_failing_led_does_not_fail_the_relay() {
        let relay_level = Cell::new(None);
        let led_level = Cell::new(None);
        let mut relay = GpioRelay::new(
            Pin {
                level: &relay_level,
                broken: false,
            },
            Polarity::ActiveHigh,
            Some((
                Pin {
                    level: &led_level,
                    broken: true,
                },
                Polarity::ActiveHigh,
            )),
        );
        assert_eq!(relay.set(true), Ok(()));
        assert_eq!(relay_level.get(), Some(true));
    }
}
