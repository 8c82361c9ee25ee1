//! The keeper's decisions, sans IO: given the last health result and whether the node's znode
//! exists in the current session, what to do, and which transitions deserve a log line.

use super::health::Health;

/// What the keeper should do with the znode now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Healthy but not registered: create the ephemeral znode.
    Register,
    /// Unhealthy but registered: delete it.
    Unregister,
    /// State matches health.
    Nothing,
}

/// The reconcile rule: registered exactly while healthy.
pub fn decide(healthy: bool, registered: bool) -> Action {
    match (healthy, registered) {
        (true, false) => Action::Register,
        (false, true) => Action::Unregister,
        _ => Action::Nothing,
    }
}

/// Remembers the last health result to report only changes.
#[derive(Clone, Debug, Default)]
pub struct HealthTracker {
    last: Option<Health>,
}

impl HealthTracker {
    /// Records `now`; returns a one-line description when it differs from the previous result
    /// (the first result is always reported). A change of failure reason is a transition too.
    pub fn observe(&mut self, now: &Health) -> Option<String> {
        if self.last.as_ref() == Some(now) {
            return None;
        }
        let was = self.last.as_ref().map(|h| h.is_healthy());
        self.last = Some(now.clone());
        Some(match (was, now) {
            (_, Health::Healthy) => "healthy".to_string(),
            (Some(false), Health::Unhealthy { check, reason }) => {
                format!("still unhealthy, now {check} check failed: {reason}")
            }
            (_, Health::Unhealthy { check, reason }) => {
                format!("unhealthy: {check} check failed: {reason}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sick(check: &'static str, reason: &str) -> Health {
        Health::Unhealthy {
            check,
            reason: reason.into(),
        }
    }

    #[test]
    fn registered_exactly_while_healthy() {
        assert_eq!(decide(true, false), Action::Register);
        assert_eq!(decide(false, true), Action::Unregister);
        assert_eq!(decide(true, true), Action::Nothing);
        assert_eq!(decide(false, false), Action::Nothing);
    }

    #[test]
    fn reports_each_transition_once() {
        let mut t = HealthTracker::default();
        assert_eq!(t.observe(&Health::Healthy).as_deref(), Some("healthy"));
        assert_eq!(t.observe(&Health::Healthy), None);
        assert_eq!(
            t.observe(&sick("aliveness", "refused")).as_deref(),
            Some("unhealthy: aliveness check failed: refused")
        );
        assert_eq!(t.observe(&sick("aliveness", "refused")), None);
        assert_eq!(
            t.observe(&sick("alarms", "memory")).as_deref(),
            Some("still unhealthy, now alarms check failed: memory")
        );
        assert_eq!(t.observe(&Health::Healthy).as_deref(), Some("healthy"));
        let mut first = HealthTracker::default();
        assert!(
            first
                .observe(&sick("alarms", "x"))
                .unwrap()
                .starts_with("unhealthy")
        );
    }
}
