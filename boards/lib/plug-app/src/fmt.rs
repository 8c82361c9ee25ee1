//! The application's log macro: `log` on host boards (feature `log`), `defmt` on targets
//! (feature `defmt`), nothing otherwise. Arguments must implement both `Display` and
//! `defmt::Format` (integers, `&str`), so a call compiles with either back end.

macro_rules! log_info {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::info!($($arg)*);
        #[cfg(all(feature = "defmt", not(feature = "log")))]
        ::defmt::info!($($arg)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($($arg)*,);
    }};
}
