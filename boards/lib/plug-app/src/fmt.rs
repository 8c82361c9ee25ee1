//! The application's log macros: `log` on host boards (feature `log`), `defmt` on targets
//! (feature `defmt`), nothing otherwise. Arguments must implement both `Display` and
//! `defmt::Format` (integers, `&str`), so a call compiles with either back end.

/// Logs at `$level` (`info`, `error`) through whichever back end is on.
macro_rules! log_at {
    ($level:ident, $($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::$level!($($arg)*);
        #[cfg(all(feature = "defmt", not(feature = "log")))]
        ::defmt::$level!($($arg)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($($arg)*,);
    }};
}

macro_rules! log_info {
    ($($arg:tt)*) => {
        log_at!(info, $($arg)*)
    };
}

macro_rules! log_error {
    ($($arg:tt)*) => {
        log_at!(error, $($arg)*)
    };
}
