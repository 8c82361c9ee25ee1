//! The at-least-once upload queue.
//!
//! An upload stays in the queue from [`UploadQueue::push`] until the broker's `UploadAck` for
//! its id ([`UploadQueue::ack`]). The queue lives in the client, not in the session, so it survives
//! disconnects: after every login each entry is sent again with the same `upload_id`
//! ([`UploadQueue::mark_all_unsent`]), so the broker may see an upload twice but never loses one
//! the device accepted.
//!
//! **When the queue is full, the application's [`FullPolicy`] decides**, per upload
//! (`DeviceApi::upload_with`; `DeviceApi::upload` keeps the oldest). A policy the application
//! never asks for is not linked into its image:
//! * [`FullPolicy::KeepOldest`] (the default): [`UploadQueue::push`] returns [`QueueFull`] and
//!   the caller's upload is not taken (the client counts it in `Stats::uploads_rejected`).
//!   Entries already accepted are never dropped, so an accepted upload is a promise; the
//!   application sees back-pressure at once and decides (the plug keeps only its latest meter
//!   reading, for example).
//! * [`FullPolicy::KeepNewest`]: the oldest queued upload is dropped to make room (counted in
//!   `Stats::uploads_evicted`), for an application whose latest readings matter most. An upload
//!   dropped while its frame was in flight may still be stored by the broker; its UploadAck then
//!   finds nothing to remove.
//!
//! Either way a new upload that is itself invalid (too long) changes nothing.
//!
//! Upload ids start at a random non-zero value per boot (so ids from before a reboot are unlikely
//! to collide with new ones at the broker) and increase by one, skipping 0.
//!
//! Memory: `N * (P + MAX_TOPIC + 16)` bytes or so.

use heapless::{String, Vec};
use shared_protocol::limits::MAX_TOPIC;

/// The id of an upload, echoed by the broker's `UploadAck`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UploadId(pub u32);

/// Why an upload was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum UploadError {
    /// The queue holds `N` unacknowledged uploads (the reject-newest policy).
    QueueFull,
    /// The payload is longer than the queue's `P` (or the protocol's `MAX_PAYLOAD`).
    PayloadTooLarge,
    /// The topic is longer than `MAX_TOPIC` bytes.
    TopicTooLong,
}

/// The queue is full (see the module docs for the policy).
pub type QueueFull = UploadError;

impl core::fmt::Display for UploadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            UploadError::QueueFull => "upload queue full",
            UploadError::PayloadTooLarge => "upload payload too large",
            UploadError::TopicTooLong => "upload topic too long",
        })
    }
}

/// What a full upload queue does with a new upload (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FullPolicy {
    /// Refuse the new upload ([`UploadError::QueueFull`]); keep what was accepted.
    #[default]
    KeepOldest,
    /// Drop the oldest queued upload to take the new one.
    KeepNewest,
}

/// One queued upload.
#[derive(Clone, Debug)]
pub struct Upload<const P: usize> {
    /// Its id.
    pub id: UploadId,
    /// Topic, at most `MAX_TOPIC` bytes.
    pub topic: String<MAX_TOPIC>,
    /// Payload, at most `P` bytes.
    pub payload: Vec<u8, P>,
    /// The `seq` of the frame that carried it in the current session (waiting for
    /// `UploadAck`), or 0: still to be sent (frame seqs start at 1).
    sent_seq: u32,
}

/// A bounded FIFO of uploads waiting for acknowledgement: capacity `N`, payloads up to `P` bytes.
#[derive(Debug)]
pub struct UploadQueue<const N: usize, const P: usize> {
    entries: Vec<Upload<P>, N>,
    next_id: u32,
}

impl<const N: usize, const P: usize> UploadQueue<N, P> {
    /// An empty queue whose first id is `first_id` (0 is replaced by 1).
    pub fn new(first_id: u32) -> Self {
        UploadQueue {
            entries: Vec::new(),
            next_id: first_id.max(1),
        }
    }

    /// Queues an upload and returns its id, or refuses it; a full queue refuses it
    /// ([`FullPolicy::KeepOldest`]).
    pub fn push(&mut self, topic: &str, payload: &[u8]) -> Result<UploadId, UploadError> {
        self.push_with(topic, payload, FullPolicy::KeepOldest)
            .map(|(id, _)| id)
    }

    /// Queues an upload and returns its id and, when the queue was full and `policy` is
    /// [`FullPolicy::KeepNewest`], the id of the oldest upload dropped for it (module docs).
    pub fn push_with(
        &mut self,
        topic: &str,
        payload: &[u8],
        policy: FullPolicy,
    ) -> Result<(UploadId, Option<UploadId>), UploadError> {
        let topic = String::try_from(topic).map_err(|_| UploadError::TopicTooLong)?;
        let payload = Vec::from_slice(payload).map_err(|_| UploadError::PayloadTooLarge)?;
        if payload.len() > shared_protocol::limits::MAX_PAYLOAD {
            return Err(UploadError::PayloadTooLarge);
        }
        let mut dropped = None;
        if self.entries.is_full() {
            if policy == FullPolicy::KeepOldest {
                return Err(UploadError::QueueFull);
            }
            let oldest = self.oldest(false).ok_or(UploadError::QueueFull)?;
            dropped = Some(self.entries[oldest].id);
            self.remove(oldest);
        }
        let id = UploadId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        // Cannot fail: checked `is_full` above.
        let _ = self.entries.push(Upload {
            id,
            topic,
            payload,
            sent_seq: 0,
        });
        Ok((id, dropped))
    }

    /// Removes the upload the broker acknowledged; false if it was not queued (a duplicate ack).
    pub fn ack(&mut self, id: UploadId) -> bool {
        match self.entries.iter().position(|u| u.id == id) {
            Some(index) => {
                self.remove(index);
                true
            }
            None => false,
        }
    }

    /// Removes entry `index`: the last entry takes its slot, no shifting ([`Self::oldest`] finds
    /// the oldest by id). Swapping two distinct entries (not `swap_remove`, whose possibly
    /// overlapping copy is a `memmove`) keeps the SDK free of `memmove` (0.7 KiB of flash).
    fn remove(&mut self, index: usize) {
        let last = self.entries.len() - 1;
        if index < last {
            let (front, back) = self.entries.split_at_mut(last);
            core::mem::swap(&mut front[index], &mut back[0]);
        }
        self.entries.pop();
    }

    /// The index of the oldest entry, or of the oldest not sent in this session.
    fn oldest(&self, unsent_only: bool) -> Option<usize> {
        // Ids grow by one per push (wrapping, skipping 0), so the oldest entry is the one whose
        // id lies furthest behind the next id; at most N ids are alive, so this never wraps.
        // A plain loop: `max_by_key` over the filtered entries was a fold of closures.
        let mut oldest: Option<(u32, usize)> = None;
        for (i, u) in self.entries.iter().enumerate() {
            if unsent_only && u.sent_seq != 0 {
                continue;
            }
            let behind = self.next_id.wrapping_sub(u.id.0);
            if oldest.is_none_or(|(b, _)| behind > b) {
                oldest = Some((behind, i));
            }
        }
        oldest.map(|(_, i)| i)
    }

    /// The queued upload with this id.
    pub fn get(&self, id: UploadId) -> Option<&Upload<P>> {
        self.entries.iter().find(|u| u.id == id)
    }

    /// The oldest upload not yet sent in the current session.
    pub fn next_unsent(&self) -> Option<&Upload<P>> {
        self.oldest(true).map(|i| &self.entries[i])
    }

    /// Marks an upload as sent in the current session, in the frame numbered `seq` (not 0), and
    /// returns it (`None` if it is not queued).
    pub fn mark_sent(&mut self, id: UploadId, seq: u32) -> Option<&Upload<P>> {
        let u = self.entries.iter_mut().find(|u| u.id == id)?;
        u.sent_seq = seq;
        Some(u)
    }

    /// The broker refused frame `seq` for load without storing its upload: marks that upload,
    /// and every upload sent after it in this session (a higher `seq`), as not sent, to go
    /// again in this session oldest first. The broker refuses the later ones too until the
    /// refused one comes again (docs/protocol.md section 4, "Order"), and their own refusals
    /// may arrive only after the device has sent it again. Returns how many were marked: 0
    /// when no queued upload is waiting in frame `seq` (a late refusal of a frame whose upload
    /// already went again, or an acknowledged one).
    pub fn mark_unsent_from(&mut self, seq: u32) -> u32 {
        let mut marked = 0;
        if seq != 0 && self.entries.iter().any(|u| u.sent_seq == seq) {
            for u in self.entries.iter_mut() {
                if u.sent_seq >= seq {
                    u.sent_seq = 0;
                    marked += 1;
                }
            }
        }
        marked
    }

    /// Marks every upload as not sent (a new session starts); returns how many were sent before.
    pub fn mark_all_unsent(&mut self) -> u32 {
        let mut was_sent = 0;
        for u in self.entries.iter_mut() {
            was_sent += u32::from(u.sent_seq != 0);
            u.sent_seq = 0;
        }
        was_sent
    }

    /// Uploads waiting for acknowledgement.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no upload waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when [`push`](Self::push) would return [`UploadError::QueueFull`].
    pub fn is_full(&self) -> bool {
        self.entries.is_full()
    }

    /// The queue's capacity `N`.
    pub const fn capacity(&self) -> usize {
        N
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_rejects_the_newest_and_keeps_the_rest() {
        let mut q: UploadQueue<2, 8> = UploadQueue::new(10);
        let a = q.push("t", b"a").unwrap();
        let b = q.push("t", b"b").unwrap();
        assert_eq!((a, b), (UploadId(10), UploadId(11)));
        assert_eq!(q.push("t", b"c"), Err(UploadError::QueueFull));
        assert_eq!(q.len(), 2);
        assert!(q.ack(a));
        assert_eq!(q.push("t", b"c"), Ok(UploadId(12)));
        assert_eq!(q.next_unsent().unwrap().payload.as_slice(), b"b");
    }

    #[test]
    fn keep_newest_drops_the_oldest_for_a_valid_upload_only() {
        let mut q: UploadQueue<3, 4> = UploadQueue::new(u32::MAX - 1);
        let ids: std::vec::Vec<UploadId> = (0..3).map(|i| q.push("t", &[i]).unwrap()).collect();
        // The oldest by age, not by slot: ack the first, then the wrap makes id 1 newest.
        assert!(q.ack(ids[0]));
        let d = q.push("t", &[3]).unwrap();
        q.mark_sent(ids[1], 7);
        assert_eq!(
            q.push_with("t", b"12345", FullPolicy::KeepNewest),
            Err(UploadError::PayloadTooLarge),
            "an invalid upload drops nothing"
        );
        assert_eq!(q.len(), 3);
        assert_eq!(
            q.push_with("t", &[4], FullPolicy::KeepNewest),
            Ok((UploadId(3), Some(ids[1]))),
            "the oldest goes, in flight or not"
        );
        assert!(q.get(ids[1]).is_none());
        assert_eq!(
            q.push_with("t", &[5], FullPolicy::KeepNewest).unwrap().1,
            Some(ids[2])
        );
        let kept: std::vec::Vec<u8> = core::iter::from_fn(|| {
            let u = q.next_unsent()?;
            let (id, byte) = (u.id, u.payload[0]);
            q.mark_sent(id, 1);
            Some(byte)
        })
        .collect();
        assert_eq!(kept, [3, 4, 5], "the newest three, oldest first");
        assert_eq!(d, UploadId(2));
        assert_eq!(
            q.push_with("t", &[6], FullPolicy::KeepOldest),
            Err(UploadError::QueueFull)
        );
    }

    #[test]
    fn size_limits_are_errors() {
        let mut q: UploadQueue<2, 4> = UploadQueue::new(1);
        assert_eq!(q.push("t", b"12345"), Err(UploadError::PayloadTooLarge));
        let long = "x".repeat(MAX_TOPIC + 1);
        assert_eq!(q.push(&long, b""), Err(UploadError::TopicTooLong));
        assert!(q.is_empty());
    }

    #[test]
    fn sent_marks_reset_for_a_new_session_and_acks_remove() {
        let mut q: UploadQueue<4, 8> = UploadQueue::new(1);
        let a = q.push("t", b"a").unwrap();
        let b = q.push("t", b"b").unwrap();
        q.mark_sent(a, 1);
        assert_eq!(q.next_unsent().unwrap().id, b);
        q.mark_sent(b, 2);
        assert!(q.next_unsent().is_none());
        assert_eq!(q.mark_all_unsent(), 2);
        assert_eq!(q.next_unsent().unwrap().id, a);
        assert!(q.ack(a));
        assert!(!q.ack(a), "a duplicate ack changes nothing");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn an_upload_refused_in_its_frame_goes_again_with_the_ones_sent_after_it() {
        let mut q: UploadQueue<5, 8> = UploadQueue::new(1);
        let a = q.push("t", b"a").unwrap();
        let b = q.push("t", b"b").unwrap();
        let c = q.push("t", b"c").unwrap();
        let d = q.push("t", b"d").unwrap();
        q.mark_sent(a, 5);
        q.mark_sent(b, 6);
        q.mark_sent(c, 7);
        assert_eq!(q.mark_unsent_from(0), 0, "seq 0 names no frame");
        assert_eq!(q.mark_unsent_from(9), 0, "no upload went in frame 9");
        assert_eq!(q.next_unsent().unwrap().id, d);
        // b refused: c, sent behind it, is refused by the broker too and goes again with it.
        assert_eq!(q.mark_unsent_from(6), 2);
        assert_eq!(q.next_unsent().unwrap().id, b, "older than c and d");
        assert_eq!(
            q.mark_unsent_from(7),
            0,
            "c's own refusal, late: already unsent"
        );
        // b goes again in frame 8; a late refusal of frame 6 changes nothing.
        q.mark_sent(b, 8);
        assert_eq!(q.mark_unsent_from(6), 0);
        assert_eq!(q.next_unsent().unwrap().id, c);
        assert_eq!(q.mark_all_unsent(), 2, "only a and b were still sent");
    }

    #[test]
    fn uploads_go_out_oldest_first_whatever_was_acked() {
        // Ids wrap from u32::MAX to 1 in the middle of the queue.
        let mut q: UploadQueue<4, 8> = UploadQueue::new(u32::MAX - 1);
        let ids: std::vec::Vec<UploadId> = (0..4).map(|i| q.push("t", &[i]).unwrap()).collect();
        assert!(q.ack(ids[1]));
        let mut order = std::vec::Vec::new();
        while let Some(u) = q.next_unsent() {
            order.push(u.payload[0]);
            let id = u.id;
            q.mark_sent(id, order.len() as u32);
        }
        assert_eq!(order, [0, 2, 3], "oldest first, the acked one gone");
        assert_eq!(q.mark_all_unsent(), 3);
        assert!(q.ack(ids[0]));
        let e = q.push("t", &[4]).unwrap();
        assert_eq!(q.next_unsent().unwrap().id, ids[2]);
        assert!(q.ack(ids[2]));
        assert!(q.ack(ids[3]));
        assert_eq!(q.next_unsent().unwrap().id, e);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn ids_skip_zero_when_wrapping() {
        let mut q: UploadQueue<4, 8> = UploadQueue::new(u32::MAX);
        assert_eq!(q.push("t", b"").unwrap(), UploadId(u32::MAX));
        assert_eq!(q.push("t", b"").unwrap(), UploadId(1));
        let q0: UploadQueue<1, 1> = UploadQueue::new(0);
        assert_eq!(q0.next_id, 1);
    }
}
