//! Handles of the catalogued series, registered once when the metrics are made, so that
//! recording one on a hot path (every command, upload, send or login) is an atomic update and
//! one lookup in a table that never changes.
//!
//! Why: asking the exporter's registry for a series by name and labels builds its key (a label
//! vector, so an allocation), converts the key to an owned one and hashes it, and takes the
//! registry's lock, on every call. The series the catalog lists are known when the broker
//! starts ([`super::catalog::zero_series`], [`super::catalog::zero_histograms`]); their handles
//! are kept here, keyed by name and their one label. A series not in the catalog (a dynamic
//! label such as a peer's address) still goes through the registry.
//!
//! The handles share their values with the registry (the exporter's handles are references to
//! the registered series), and the exporter never removes a series (no idle timeout is set), so
//! a value recorded through a handle here is the one `/metrics` shows.

use std::collections::HashMap;

use metrics::{Counter, Histogram};

/// A series with one label: its name, the label's key and the label's value.
type OneLabel = (&'static str, &'static str, &'static str);

/// The registered handles of the catalogue's one-label counters and histograms.
#[derive(Default)]
pub struct Hot {
    counters: HashMap<OneLabel, Counter, foldhash::fast::FixedState>,
    histograms: HashMap<OneLabel, Histogram, foldhash::fast::FixedState>,
}

impl Hot {
    /// Keeps `counter` as the handle of series `name{key="value"}` when `labels` is that one
    /// label (a series with more labels is left to the registry).
    pub fn keep_counter(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        counter: &Counter,
    ) {
        if let [(key, value)] = labels {
            self.counters.insert((name, key, value), counter.clone());
        }
    }

    /// Keeps `histogram` as the handle of series `name{key="value"}` when `labels` is that one
    /// label (a series with more labels is left to the registry).
    pub fn keep_histogram(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        histogram: &Histogram,
    ) {
        if let [(key, value)] = labels {
            self.histograms
                .insert((name, key, value), histogram.clone());
        }
    }

    /// The kept handle of counter `name` with exactly `labels`, if it is one.
    pub fn counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Option<&Counter> {
        match labels {
            [(key, value)] => self.counters.get(&(name, *key, *value)),
            _ => None,
        }
    }

    /// The kept handle of histogram `name{key="value"}`, if it is one.
    pub fn histogram(
        &self,
        name: &'static str,
        key: &'static str,
        value: &'static str,
    ) -> Option<&Histogram> {
        self.histograms.get(&(name, key, value))
    }
}
