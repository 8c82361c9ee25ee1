//! A phone for the scenarios: an app on the broker's app WebSocket (JSON, docs/protocol.md
//! section 7), built on the broker client's connection code (`broker::client::net`) and the
//! protocol's JSON messages (`shared_protocol::json`).
//!
//! [`Phone::login`] authenticates with a token ([`crate::broker::TestBroker::phone_token`]);
//! [`Phone::send`] sends a message and waits for the broker's `ok`;
//! [`Phone::next_delivery`] waits for the next `deliver` and acknowledges it;
//! [`Phone::presence_of`] waits for a presence event of one terminal. While it waits the
//! phone pings every half heartbeat interval (the welcome's `heartbeat_secs`), as an app
//! must, so the broker keeps its session however long a step waits. Deliveries that arrive
//! while the phone waits for something else are kept in order for the next
//! [`Phone::next_delivery`]; other presence events and pongs are skipped.

use std::collections::VecDeque;
use std::time::Duration;

use broker::client::net::{self, ClientWs};
use futures_util::SinkExt;
use shared_protocol::codes::Code;
use shared_protocol::ids::Address;
use shared_protocol::json::{
    AckMsg, Auth, ClientMessage, Deliver, Goodbye, Presence, SendMsg, ServerMessage,
};
use shared_protocol::limits::MAX_JSON_MESSAGE;
use tokio_tungstenite::tungstenite::Message;

/// Why a phone step failed.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// The WebSocket could not be opened.
    #[error("app WebSocket: {0}")]
    Connect(String),
    /// The broker refused the login.
    #[error("login rejected: code {code}: {reason}")]
    Rejected {
        /// The reject code.
        code: u16,
        /// The broker's text.
        reason: String,
    },
    /// The broker refused a send.
    #[error("send {reference} refused: code {code}: {message}")]
    Refused {
        /// The send's `ref`.
        reference: u32,
        /// The error code.
        code: u16,
        /// The broker's text.
        message: String,
    },
    /// The connection ended or the broker sent something the app protocol does not allow here.
    #[error("app session: {0}")]
    Session(String),
    /// Nothing arrived in time.
    #[error("no {what} within {} ms", .after.as_millis())]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        after: Duration,
    },
}

/// A logged-in app session.
pub struct Phone {
    ws: ClientWs,
    next_ref: u32,
    /// Half the broker's heartbeat interval: the longest the phone stays silent.
    ping_every: Duration,
    /// When the phone last sent something.
    last_write: tokio::time::Instant,
    early: VecDeque<Deliver>,
}

impl Phone {
    /// Connects to `url` (`ws://host:port/`) and logs in with `token`; waits at most `limit`
    /// for the `welcome`.
    pub async fn login(url: &str, token: &str, limit: Duration) -> Result<Phone, PhoneError> {
        let ws = tokio::time::timeout(limit, net::connect(url, None, MAX_JSON_MESSAGE))
            .await
            .map_err(|_| PhoneError::Timeout {
                what: "app WebSocket connection",
                after: limit,
            })?
            .map_err(PhoneError::Connect)?;
        let mut phone = Phone {
            ws,
            next_ref: 1,
            ping_every: limit,
            last_write: tokio::time::Instant::now(),
            early: VecDeque::new(),
        };
        let auth = ClientMessage::Auth(Auth {
            token: token.to_string(),
            since_id: 0,
        });
        phone.write(&auth).await?;
        match phone.read("welcome", limit).await? {
            ServerMessage::Welcome(w) => {
                phone.ping_every = Duration::from_millis(u64::from(w.heartbeat_secs) * 500);
                Ok(phone)
            }
            ServerMessage::Reject(r) => Err(PhoneError::Rejected {
                code: r.code.0,
                reason: r.reason,
            }),
            other => Err(PhoneError::Session(format!(
                "expected welcome, got {other:?}"
            ))),
        }
    }

    /// Sends `payload` to `to` and waits at most `limit` for the broker's `ok`.
    pub async fn send(
        &mut self,
        to: Address,
        payload: &[u8],
        limit: Duration,
    ) -> Result<(), PhoneError> {
        let reference = self.next_ref;
        self.next_ref = self.next_ref.wrapping_add(1);
        let msg = ClientMessage::Send(SendMsg {
            to,
            payload: payload.to_vec(),
            reference,
        });
        self.write(&msg).await?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read("ok", left).await? {
                ServerMessage::Ok(ok) if ok.reference == reference => return Ok(()),
                ServerMessage::Error(e) if e.reference == Some(reference) => {
                    return Err(PhoneError::Refused {
                        reference,
                        code: e.code.0,
                        message: e.message,
                    });
                }
                ServerMessage::Deliver(d) => self.early.push_back(d),
                other => self.unexpected(other)?,
            }
        }
    }

    /// The next delivery (acknowledged), waiting at most `limit`.
    pub async fn next_delivery(&mut self, limit: Duration) -> Result<Deliver, PhoneError> {
        let deliver = match self.early.pop_front() {
            Some(d) => d,
            None => {
                let deadline = tokio::time::Instant::now() + limit;
                loop {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match self.read("deliver", left).await? {
                        ServerMessage::Deliver(d) => break d,
                        other => self.unexpected(other)?,
                    }
                }
            }
        };
        let ack = ClientMessage::Ack(AckMsg {
            msg_id: deliver.msg_id,
        });
        self.write(&ack).await?;
        Ok(deliver)
    }

    /// Waits at most `limit` for a presence event saying `who` is `online` (or not).
    pub async fn presence_of(
        &mut self,
        who: Address,
        online: bool,
        limit: Duration,
    ) -> Result<Presence, PhoneError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read("presence event", left).await? {
                ServerMessage::Presence(p) if p.who == who && p.online == online => return Ok(p),
                ServerMessage::Deliver(d) => self.early.push_back(d),
                other => self.unexpected(other)?,
            }
        }
    }

    /// Keeps the session alive for `time` (pings as an idle app does; deliveries are kept for
    /// [`Phone::next_delivery`], presence events ignored).
    pub async fn idle(&mut self, time: Duration) -> Result<(), PhoneError> {
        let deadline = tokio::time::Instant::now() + time;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read("nothing (idle)", left).await {
                Err(PhoneError::Timeout { .. }) => return Ok(()),
                Err(e) => return Err(e),
                Ok(ServerMessage::Deliver(d)) => self.early.push_back(d),
                Ok(other) => self.unexpected(other)?,
            }
        }
    }

    /// Waits at most `limit` for the broker to kick this phone; returns the kick's reason.
    pub async fn kicked(&mut self, limit: Duration) -> Result<Code, PhoneError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read("kick", left).await? {
                ServerMessage::Kick(k) => return Ok(k.reason),
                ServerMessage::Deliver(d) => self.early.push_back(d),
                other => self.unexpected(other)?,
            }
        }
    }

    /// Says goodbye and closes the connection.
    pub async fn close(mut self) {
        let bye = ClientMessage::Goodbye(Goodbye {
            reason: Code::NORMAL,
        });
        let _ = self.write(&bye).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    /// Presence and pongs are expected at any time; anything else here ends the step.
    fn unexpected(&self, msg: ServerMessage) -> Result<(), PhoneError> {
        match msg {
            ServerMessage::Presence(_) | ServerMessage::Pong(_) => Ok(()),
            other => Err(PhoneError::Session(format!("unexpected {other:?}"))),
        }
    }

    async fn write(&mut self, msg: &ClientMessage) -> Result<(), PhoneError> {
        let text = msg
            .encode()
            .map_err(|e| PhoneError::Session(format!("encoding {msg:?}: {e}")))?;
        self.last_write = tokio::time::Instant::now();
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| PhoneError::Session(e.to_string()))
    }

    async fn read(
        &mut self,
        what: &'static str,
        limit: Duration,
    ) -> Result<ServerMessage, PhoneError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(PhoneError::Timeout { what, after: limit });
            }
            let ping_at = self.last_write + self.ping_every;
            if tokio::time::Instant::now() >= ping_at {
                self.write(&ClientMessage::Ping).await?;
                continue;
            }
            let slice = left.min(ping_at.saturating_duration_since(tokio::time::Instant::now()));
            let Ok(message) = tokio::time::timeout(slice, net::next_message(&mut self.ws)).await
            else {
                continue;
            };
            let message = message.map_err(|e| PhoneError::Session(e.to_string()))?;
            // Binary messages are not part of the app protocol: skipped.
            let Message::Text(text) = message else {
                continue;
            };
            return ServerMessage::decode(text.as_bytes())
                .map_err(|e| PhoneError::Session(format!("undecodable message {text}: {e}")));
        }
    }
}
