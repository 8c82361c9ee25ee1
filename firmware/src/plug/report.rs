//! The plug's JSON texts (command results and uploads), written without allocation.

use core::fmt::Write;

use heapless::String;

use super::{PlugStats, Reading};
use crate::stats::Stats;

/// Longest report, in bytes (the `status` result is the largest).
pub const REPORT_MAX: usize = 384;

/// A JSON object of at most [`REPORT_MAX`] bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report(String<REPORT_MAX>);

impl Report {
    /// The report's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The report's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    fn build(f: impl FnOnce(&mut String<REPORT_MAX>) -> core::fmt::Result) -> Report {
        let mut s = String::new();
        // Every report below is well under REPORT_MAX (checked by tests with maximal values);
        // an overflow would leave a truncated text, never a panic.
        let _ = f(&mut s);
        Report(s)
    }

    /// `{"relay":"on"}` or `{"relay":"off"}`.
    pub fn relay(on: bool) -> Report {
        Report::build(|s| write!(s, "{{\"relay\":\"{}\"}}", on_off(on)))
    }

    /// `{"error":"..."}` (the message must not need JSON escaping).
    pub fn error(message: &str) -> Report {
        Report::build(|s| write!(s, "{{\"error\":\"{message}\"}}"))
    }

    /// A meter reading and the relay state.
    pub fn reading(r: &Reading, relay_on: bool) -> Report {
        Report::build(|s| {
            write!(
                s,
                "{{\"power_mw\":{},\"voltage_mv\":{},\"current_ma\":{},\"energy_mwh\":{},\"relay\":\"{}\"}}",
                r.power_mw,
                r.voltage_mv,
                r.current_ma,
                r.energy_mwh,
                on_off(relay_on)
            )
        })
    }

    /// The `status` command's result.
    pub fn status(
        firmware_version: &str,
        uptime_s: u64,
        relay_on: bool,
        online: bool,
        c: &Stats,
        p: &PlugStats,
    ) -> Report {
        Report::build(|s| {
            write!(
                s,
                "{{\"fw\":\"{firmware_version}\",\"uptime_s\":{uptime_s},\"relay\":\"{}\",\"online\":{online},",
                on_off(relay_on)
            )?;
            write!(
                s,
                "\"logins\":{},\"reconnects\":{},\"login_failures\":{},\"retransmits\":{},",
                c.logins, c.reconnects, c.login_failures, c.retransmits
            )?;
            write!(
                s,
                "\"uploads_acked\":{},\"uploads_rejected\":{},\"uploads_resent\":{},",
                c.uploads_acked, c.uploads_rejected, c.uploads_resent
            )?;
            write!(
                s,
                "\"tx\":{},\"rx\":{},\"rx_dropped\":{},\"commands\":{},\"readings_skipped\":{}}}",
                c.tx_packets, c.rx_packets, c.rx_dropped, p.commands, p.readings_skipped
            )
        })
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_status_fits() {
        let max = Stats {
            logins: u32::MAX,
            reconnects: u32::MAX,
            login_failures: u32::MAX,
            retransmits: u32::MAX,
            uploads_acked: u32::MAX,
            uploads_rejected: u32::MAX,
            uploads_resent: u32::MAX,
            tx_packets: u32::MAX,
            rx_packets: u32::MAX,
            rx_dropped: u32::MAX,
            pings: u32::MAX,
            lookups: u32::MAX,
            lookup_failures: u32::MAX,
            events_dropped: u32::MAX,
        };
        let p = PlugStats {
            commands: u32::MAX,
            readings_skipped: u32::MAX,
            results_dropped: u32::MAX,
        };
        let r = Report::status("255.255.255-rc.255", u64::MAX, true, false, &max, &p);
        assert!(r.as_str().ends_with('}'), "truncated: {}", r.as_str());
        let reading = Reading {
            power_mw: u32::MAX,
            voltage_mv: u32::MAX,
            current_ma: u32::MAX,
            energy_mwh: u64::MAX,
        };
        assert!(Report::reading(&reading, true).as_str().ends_with('}'));
    }

    #[test]
    fn texts() {
        assert_eq!(Report::relay(true).as_str(), r#"{"relay":"on"}"#);
        assert_eq!(Report::error("x").as_str(), r#"{"error":"x"}"#);
        let r = Reading {
            power_mw: 1,
            voltage_mv: 2,
            current_ma: 3,
            energy_mwh: 4,
        };
        assert_eq!(
            Report::reading(&r, false).as_str(),
            r#"{"power_mw":1,"voltage_mv":2,"current_ma":3,"energy_mwh":4,"relay":"off"}"#
        );
    }
}
