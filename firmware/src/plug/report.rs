//! The plug's JSON texts (command results and uploads), written without allocation and without
//! `core::fmt` (its machinery costs about 2 KiB of flash on a Cortex-M; [`Text`] appends strings
//! and decimal numbers and is all these texts need).

use heapless::String;

use super::{PlugStats, Reading};
use crate::divide::{div_rem, nonzero};
use crate::stats::Stats;

/// Longest report, in bytes (the `status` result is the largest).
pub const REPORT_MAX: usize = 384;

/// A JSON object of at most [`REPORT_MAX`] bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report(String<REPORT_MAX>);

/// A report being written: pieces are appended until one does not fit; from then on nothing
/// more is appended, so an overflow leaves a truncated text, never a panic.
struct Text {
    text: String<REPORT_MAX>,
    full: bool,
}

impl Text {
    fn new() -> Self {
        Text {
            text: String::new(),
            full: false,
        }
    }

    /// Appends `piece` as it is.
    fn str(&mut self, piece: &str) -> &mut Self {
        if !self.full && self.text.push_str(piece).is_err() {
            self.full = true;
        }
        self
    }

    /// Appends `n` in decimal.
    fn num(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            let (quotient, digit) = div_rem(n, const { nonzero(10) });
            digits[start] = b'0' + digit as u8;
            n = quotient;
            if n == 0 {
                break;
            }
        }
        // ASCII digits are always UTF-8.
        self.str(core::str::from_utf8(&digits[start..]).unwrap_or_default())
    }

    /// Appends `true` or `false`.
    fn bool(&mut self, b: bool) -> &mut Self {
        self.str(if b { "true" } else { "false" })
    }

    fn done(&mut self) -> Report {
        Report(core::mem::take(&mut self.text))
    }
}

impl Report {
    /// The report's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The report's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// `{"relay":"on"}` or `{"relay":"off"}`.
    pub fn relay(on: bool) -> Report {
        Text::new()
            .str("{\"relay\":\"")
            .str(on_off(on))
            .str("\"}")
            .done()
    }

    /// `{"error":"..."}` (the message must not need JSON escaping).
    pub fn error(message: &str) -> Report {
        Text::new()
            .str("{\"error\":\"")
            .str(message)
            .str("\"}")
            .done()
    }

    /// A meter reading and the relay state; a periodic reading (topic `power`) also carries
    /// `"n"`, its number since boot (1, 2, 3...; a reading the full upload queue refused keeps
    /// its number, so the gaps in the numbers that arrive are exactly the readings skipped).
    pub fn reading(r: &Reading, relay_on: bool, n: Option<u32>) -> Report {
        let mut t = Text::new();
        t.str("{\"power_mw\":")
            .num(r.power_mw.into())
            .str(",\"voltage_mv\":")
            .num(r.voltage_mv.into())
            .str(",\"current_ma\":")
            .num(r.current_ma.into())
            .str(",\"energy_mwh\":")
            .num(r.energy_mwh)
            .str(",\"relay\":\"")
            .str(on_off(relay_on))
            .str("\"");
        if let Some(n) = n {
            t.str(",\"n\":").num(n.into());
        }
        t.str("}").done()
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
        let mut t = Text::new();
        t.str("{\"fw\":\"")
            .str(firmware_version)
            .str("\",\"uptime_s\":")
            .num(uptime_s)
            .str(",\"relay\":\"")
            .str(on_off(relay_on))
            .str("\",\"online\":")
            .bool(online);
        let values = [
            c.logins,
            c.reconnects,
            c.login_failures,
            c.retransmits,
            c.uploads_acked,
            c.uploads_rejected,
            c.uploads_resent,
            c.tx_packets,
            c.rx_packets,
            c.rx_dropped,
            p.commands,
            p.readings_skipped,
        ];
        for (key, value) in STATUS_COUNTERS.iter().zip(values) {
            t.str(key).num(value.into());
        }
        t.str("}").done()
    }
}

/// The `status` report's counter keys, each with the separator before it, in the order of the
/// values [`Report::status`] lists: one table in flash instead of a name and a value per
/// counter built on the stack.
static STATUS_COUNTERS: [&str; 12] = [
    ",\"logins\":",
    ",\"reconnects\":",
    ",\"login_failures\":",
    ",\"retransmits\":",
    ",\"uploads_acked\":",
    ",\"uploads_rejected\":",
    ",\"uploads_resent\":",
    ",\"tx\":",
    ",\"rx\":",
    ",\"rx_dropped\":",
    ",\"commands\":",
    ",\"readings_skipped\":",
];

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
            uploads_evicted: u32::MAX,
            uploads_resent: u32::MAX,
            tx_packets: u32::MAX,
            rx_packets: u32::MAX,
            rx_dropped: u32::MAX,
            pings: u32::MAX,
            lookups: u32::MAX,
            lookup_failures: u32::MAX,
            events_dropped: u32::MAX,
            deliveries_suppressed: u32::MAX,
        };
        let p = PlugStats {
            commands: u32::MAX,
            readings_skipped: u32::MAX,
            results_dropped: u32::MAX,
            readings: u32::MAX,
        };
        let r = Report::status("255.255.255-rc.255", u64::MAX, true, false, &max, &p);
        assert!(r.as_str().ends_with('}'), "truncated: {}", r.as_str());
        let reading = Reading {
            power_mw: u32::MAX,
            voltage_mv: u32::MAX,
            current_ma: u32::MAX,
            energy_mwh: u64::MAX,
        };
        assert!(
            Report::reading(&reading, true, None)
                .as_str()
                .ends_with('}')
        );
        assert!(
            Report::reading(&reading, true, Some(u32::MAX))
                .as_str()
                .ends_with(r#","n":4294967295}"#)
        );
    }

    #[test]
    fn status_text_names_every_counter() {
        let c = Stats {
            logins: 1,
            reconnects: 2,
            login_failures: 3,
            retransmits: 4,
            uploads_acked: 5,
            uploads_rejected: 6,
            uploads_resent: 7,
            tx_packets: 8,
            rx_packets: 9,
            rx_dropped: 10,
            ..Stats::default()
        };
        let p = PlugStats {
            commands: 11,
            readings_skipped: 12,
            results_dropped: 0,
            readings: 0,
        };
        assert_eq!(
            Report::status("1.0", 0, true, false, &c, &p).as_str(),
            concat!(
                r#"{"fw":"1.0","uptime_s":0,"relay":"on","online":false,"logins":1,"reconnects":2,"#,
                r#""login_failures":3,"retransmits":4,"uploads_acked":5,"uploads_rejected":6,"#,
                r#""uploads_resent":7,"tx":8,"rx":9,"rx_dropped":10,"commands":11,"readings_skipped":12}"#
            )
        );
    }

    #[test]
    fn numbers_are_decimal_from_zero_to_the_largest() {
        for n in [0, 7, 10, 99, 1_000_000, u64::from(u32::MAX), u64::MAX] {
            let text = Text::new().num(n).done();
            assert_eq!(text.as_str(), std::format!("{n}"));
        }
    }

    #[test]
    fn a_text_that_does_not_fit_stops_at_the_first_piece_that_overflows() {
        let long = "x".repeat(REPORT_MAX);
        let r = Report::error(&long);
        assert_eq!(
            r.as_str(),
            r#"{"error":""#,
            "the message did not fit: nothing after it"
        );
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
            Report::reading(&r, false, None).as_str(),
            r#"{"power_mw":1,"voltage_mv":2,"current_ma":3,"energy_mwh":4,"relay":"off"}"#
        );
    }
}
