//! Offering stored messages to live sessions, off the push call.
//!
//! A push stores its message durably, then hands the offer to [`FanOut`] and answers. A
//! kind-wide push (`all_devices`, `all_phones`, `everyone`) is always queued as a [`Job`]; a
//! drain task ([`super::Router`] spawns one when the queue goes from idle to busy, and it ends
//! when the queue is empty) walks the registry one shard at a time and yields between shards,
//! so a broadcast to 10,000 sessions never holds a push, a login or another task for the whole
//! walk. Consecutive kind-wide jobs of the same kind are walked together: each session is offered
//! all of their messages at once ([`super::SessionHandle::offer_delivers`]), in id order, and is
//! woken once, so it writes them in one burst.
//!
//! Order: jobs are queued while the push holds its order stripes ([`super::order`]) and are
//! drained first in, first out, so each session is still offered its terminal's ids in
//! increasing order. A push to named terminals is offered at once, inside the push call, only
//! while no job is queued or being drained; otherwise it queues behind them, or it could
//! overtake an earlier broadcast's offer.
//!
//! At least once: a session that logs in after a walk passed its shard read the message in its
//! login replay (it registers before reading, and the message was stored before being queued);
//! one that logs in before gets it twice and skips the duplicate. A session that ended meanwhile
//! gets it from the store at its next login.

use bytes::Bytes;

use crate::terminal::{Address, Kind};

use super::runner_queue::{RunnerQueue, RunnerState};
use super::session::SessionHandle;

/// Who a queued message is offered to.
pub(crate) enum Targets {
    /// Every session of this kind (`None`: every kind) found when the drain reaches it.
    Kind(Option<Kind>),
    /// These sessions (looked up at push time).
    Sessions(Vec<SessionHandle>),
}

/// One stored message waiting to be offered.
pub(crate) struct Job {
    /// Who gets it.
    pub targets: Targets,
    /// Its id.
    pub msg_id: u64,
    /// Its sender, `None` for the backend.
    pub from: Option<Address>,
    /// Its payload.
    pub payload: Bytes,
}

impl Job {
    /// The kind a kind-wide job targets (`Some(None)`: every kind); `None` for named sessions.
    pub fn kind_wide(&self) -> Option<Option<Kind>> {
        match self.targets {
            Targets::Kind(k) => Some(k),
            Targets::Sessions(_) => None,
        }
    }
}

/// The fan-out queue's state: the queued jobs and whether a drain task runs (it owns the jobs
/// it took out; later ones must wait for it). `idle`: a push may offer at once.
pub(crate) type State = RunnerState<Job>;

/// The fan-out queue (see module docs), behind one mutex held only for a queue operation or a
/// small inline offer.
pub(crate) type FanOut = RunnerQueue<Job>;

/// The length of the run of jobs at the start of `jobs` that can be walked together: kind-wide
/// jobs of the same kind (1 for a job to named sessions).
pub(crate) fn run_len(jobs: &[Job]) -> usize {
    match jobs.first().and_then(Job::kind_wide) {
        None => jobs.len().min(1),
        Some(kind) => jobs
            .iter()
            .take_while(|j| j.kind_wide() == Some(kind))
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(targets: Targets, msg_id: u64) -> Job {
        Job {
            targets,
            msg_id,
            from: None,
            payload: Bytes::new(),
        }
    }

    #[test]
    fn runs_group_consecutive_broadcasts_of_one_kind_only() {
        let jobs = vec![
            job(Targets::Kind(Some(Kind::Device)), 1),
            job(Targets::Kind(Some(Kind::Device)), 2),
            job(Targets::Kind(None), 3),
            job(Targets::Sessions(Vec::new()), 4),
            job(Targets::Kind(Some(Kind::Device)), 5),
        ];
        assert_eq!(run_len(&jobs), 2);
        assert_eq!(run_len(&jobs[2..]), 1);
        assert_eq!(run_len(&jobs[3..]), 1);
        assert_eq!(run_len(&jobs[4..]), 1);
        assert_eq!(run_len(&[]), 0);
    }

    #[test]
    fn the_queue_is_busy_from_the_first_job_until_a_take_finds_none() {
        let mut st = State::default();
        assert!(st.idle());
        assert!(
            st.enqueue(job(Targets::Kind(None), 1)),
            "idle -> start a drain"
        );
        assert!(!st.enqueue(job(Targets::Kind(None), 2)), "already draining");
        let mut got = Vec::new();
        assert!(st.take(&mut got));
        assert_eq!(got.iter().map(|j| j.msg_id).collect::<Vec<_>>(), [1, 2]);
        assert!(!st.idle(), "busy while the drain works on what it took");
        assert!(!st.take(&mut got));
        assert!(st.idle());
    }
}
