//! Handles of the catalogued series, registered once when the metrics are made, so that
//! recording one on a hot path (every command, upload, send or login) is an atomic update and
//! one lookup in a table that never changes.
//!
//! Why: asking the exporter's registry for a series by name and labels builds its key (a label
//! vector, so an allocation), converts the key to an owned one and hashes it, and takes the
//! registry's lock, on every call. The series the catalog lists are known when the broker
//! starts ([`super::catalog::zero_series`]); their handles
//! are kept here, keyed by name and their one label. A series not in the catalog (a dynamic
//! label such as a peer's address) still goes through the registry.
//!
//! The handles share their values with the registry (the exporter's handles are references to
//! the registered series), and the exporter never removes a series (no idle timeout is set), so
//! a value recorded through a handle here is the one `/metrics` shows.

use std::collections::HashMap;

use metrics::Counter;

/// A label as the broker's metrics spell it: key and value.
type Label = (&'static str, &'static str);

/// A series with one label: its name, the label's key and the label's value.
type OneLabel = (&'static str, &'static str, &'static str);

/// The registered handles of the catalogue's one-label counters.
#[derive(Default)]
pub struct Hot {
    counters: HashMap<OneLabel, Counter, foldhash::fast::FixedState>,
}

impl Hot {
    /// Keeps `counter` as the handle of series `name{labels}` when `labels` is one label (a
    /// series with more labels is left to the registry).
    pub fn keep_counter(&mut self, name: &'static str, labels: &[Label], counter: &Counter) {
        if let Some(key) = one_label(name, labels) {
            self.counters.insert(key, counter.clone());
        }
    }

    /// The kept handle of counter `name` with exactly `labels`, if it is one.
    pub fn counter(&self, name: &'static str, labels: &[Label]) -> Option<&Counter> {
        self.counters.get(&one_label(name, labels)?)
    }
}

/// The table key of series `name{labels}`, when `labels` is exactly one label.
fn one_label(name: &'static str, labels: &[Label]) -> Option<OneLabel> {
    match labels {
        [(key, value)] => Some((name, key, value)),
        _ => None,
    }
}
