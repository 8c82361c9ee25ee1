//! The outbox: command results, requests and sends waiting to be sent or acknowledged.
//!
//! Unlike uploads these need only the transport's acknowledgement of their frame; an entry leaves
//! the outbox when the frame carrying it is acknowledged. Entries not yet acknowledged when a
//! session ends are sent again in the next one (at least once). Capacity `O`, the
//! application's choice ([`OUTBOX`] by default).

use heapless::{String, Vec};
use shared_protocol::frame::Body;
use shared_protocol::ids::Address;
use shared_protocol::limits::MAX_PATH;

use crate::api::OutboxError;

/// Outgoing reliable messages (other than uploads) the client holds at once, unless the
/// application chooses (the `O` parameter of `DeviceClient`).
pub const OUTBOX: usize = 2;

/// What an outbox entry carries.
#[derive(Clone, Debug)]
pub(crate) enum OutKind {
    CommandResult { cmd_id: u32, status: u16 },
    Request { req_id: u32, path: String<MAX_PATH> },
    Send { to: Address },
}

#[derive(Clone, Debug)]
pub(crate) struct OutMsg<const P: usize> {
    /// Local handle stored in the send window instead of the bytes.
    pub token: u32,
    pub kind: OutKind,
    pub payload: Vec<u8, P>,
    /// Sequence number of the frame carrying it in the current session, once sent.
    pub seq: Option<u32>,
}

impl<const P: usize> OutMsg<P> {
    /// The frame body for this entry.
    pub fn body(&self) -> Body<'_> {
        let payload = self.payload.as_slice();
        match &self.kind {
            OutKind::CommandResult { cmd_id, status } => Body::CommandResult {
                cmd_id: *cmd_id,
                status: *status,
                payload,
            },
            OutKind::Request { req_id, path } => Body::Request {
                req_id: *req_id,
                path: path.as_str(),
                payload,
            },
            OutKind::Send { to } => Body::Send { to: *to, payload },
        }
    }
}

/// The bounded list of outgoing messages.
#[derive(Debug)]
pub(crate) struct Outbox<const P: usize, const O: usize> {
    entries: Vec<OutMsg<P>, O>,
    next_token: u32,
}

impl<const P: usize, const O: usize> Outbox<P, O> {
    pub const fn new() -> Self {
        Outbox {
            entries: Vec::new(),
            next_token: 1,
        }
    }

    pub fn push(&mut self, kind: OutKind, payload: &[u8]) -> Result<(), OutboxError> {
        if self.entries.is_full() {
            return Err(OutboxError::Full);
        }
        if payload.len() > shared_protocol::limits::MAX_PAYLOAD {
            return Err(OutboxError::PayloadTooLarge);
        }
        let payload = Vec::from_slice(payload).map_err(|_| OutboxError::PayloadTooLarge)?;
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        self.entries
            .push(OutMsg {
                token,
                kind,
                payload,
                seq: None,
            })
            .map_err(|_| OutboxError::Full)
    }

    pub fn next_unsent(&self) -> Option<&OutMsg<P>> {
        self.entries.iter().find(|m| m.seq.is_none())
    }

    pub fn get(&self, token: u32) -> Option<&OutMsg<P>> {
        self.entries.iter().find(|m| m.token == token)
    }

    pub fn mark_sent(&mut self, token: u32, seq: u32) {
        if let Some(m) = self.entries.iter_mut().find(|m| m.token == token) {
            m.seq = Some(seq);
        }
    }

    /// Drops the entry carried by acknowledged frame `seq`.
    pub fn acked(&mut self, seq: u32) {
        self.entries.retain(|m| m.seq != Some(seq));
    }

    pub fn mark_all_unsent(&mut self) {
        for m in self.entries.iter_mut() {
            m.seq = None;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_holds_o_entries_and_refuses_the_next() {
        let mut outbox: Outbox<8, 2> = Outbox::new();
        let result = || OutKind::CommandResult {
            cmd_id: 1,
            status: 0,
        };
        assert_eq!(outbox.push(result(), b"a"), Ok(()));
        assert_eq!(outbox.push(result(), b"b"), Ok(()));
        assert_eq!(outbox.push(result(), b"c"), Err(OutboxError::Full));
        assert_eq!(outbox.len(), 2);
        assert_eq!(
            outbox.push(result(), b"123456789"),
            Err(OutboxError::Full),
            "full is checked first"
        );
        outbox.mark_sent(1, 10);
        outbox.acked(10);
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            outbox.push(result(), b"123456789"),
            Err(OutboxError::PayloadTooLarge)
        );
        assert_eq!(outbox.push(result(), b"c"), Ok(()));
    }
}
