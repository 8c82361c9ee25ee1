//! Logging macros used inside the crate: `log` on the host, `defmt` on targets, nothing otherwise.
//!
//! Arguments must implement both `core::fmt::Display` and `defmt::Format` (integers, `&str`,
//! `bool`), so every call compiles with either back end (or none: then the arguments are only
//! evaluated). When both features are on (for example
//! `--all-features` on the host), `log` wins so host test binaries link without a defmt logger.

#![allow(unused_macros)]

macro_rules! log_debug {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::debug!($($arg)*);
        #[cfg(all(feature = "defmt", not(feature = "log")))]
        ::defmt::debug!($($arg)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($($arg)*,);
    }};
}

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

macro_rules! log_warn {
    ($($arg:tt)*) => {{
        #[cfg(feature = "log")]
        ::log::warn!($($arg)*);
        #[cfg(all(feature = "defmt", not(feature = "log")))]
        ::defmt::warn!($($arg)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($($arg)*,);
    }};
}

#[allow(unused_imports)]
pub(crate) use {log_debug, log_info, log_warn};
