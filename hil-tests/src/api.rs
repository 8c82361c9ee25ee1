//! The broker's HTTP API as the scenario uses it: terminal status, device commands, uploads
//! with a cursor. Only the fields the scenario checks are decoded.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use shared_protocol::ids::{Address, Kind};

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be made or the body not read.
    #[error("{what}: {source}")]
    Http {
        /// Which call.
        what: String,
        /// The client error.
        source: reqwest::Error,
    },
    /// The API answered with an unexpected status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// Which call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: String,
    },
    /// The body is not what the API documents.
    #[error("{what}: unexpected body: {reason}")]
    Body {
        /// Which call.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

/// One session of a terminal (`GET /v1/terminals/device/{id}`).
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    /// `udp`, `device_ws` or `app_ws`.
    pub transport: String,
    /// Peer address as the broker sees it.
    pub peer: String,
}

/// A terminal's online state.
#[derive(Debug, Clone, Deserialize)]
pub struct TerminalStatus {
    /// Whether it has a session.
    pub online: bool,
    /// Its sessions.
    pub sessions: Vec<Session>,
}

/// A device's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// Application status (0 = success).
    pub status: u16,
    /// Result payload (decoded from base64).
    pub payload: Vec<u8>,
}

/// One upload from the spool.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Position in the spool.
    pub cursor: u64,
    /// Who sent it.
    pub device: Address,
    /// The upload epoch of the boot that sent it.
    pub upload_epoch: u64,
    /// The device's upload id.
    pub upload_id: u32,
    /// The key consumers drop duplicates by (`<device id>:<epoch hex>:<upload id>`).
    pub dedup_key: String,
    /// Topic.
    pub topic: String,
    /// Payload (decoded from base64).
    pub payload: Vec<u8>,
}

/// A page of uploads.
#[derive(Debug, Clone)]
pub struct UploadsPage {
    /// Uploads after the requested cursor.
    pub uploads: Vec<Upload>,
    /// Cursor to ask from next.
    pub next: u64,
    /// Newest cursor in the spool.
    pub head: u64,
}

#[derive(Deserialize)]
struct RawReply {
    status: u16,
    payload: String,
}

#[derive(Deserialize)]
struct RawUpload {
    cursor: u64,
    device: Address,
    upload_epoch: String,
    upload_id: u32,
    dedup_key: String,
    topic: String,
    payload: String,
}

#[derive(Deserialize)]
struct RawPage {
    uploads: Vec<RawUpload>,
    next: u64,
    head: u64,
}

/// A client of one broker's API.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// A client for the API at `base` (`http://host:port`) with bearer `token`.
    pub fn new(base: String, token: String) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .expect("a plain HTTP client always builds");
        Api {
            client,
            base,
            token,
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
    ) -> Result<T, ApiError> {
        let response = self
            .send(what, self.client.get(format!("{}{path}", self.base)))
            .await?;
        decode(what, response, 200).await
    }

    /// Sends `request` with the API token; a transport failure names `what` was asked.
    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| ApiError::Http {
                what: what.into(),
                source,
            })
    }

    /// `GET /v1/terminals/device/{id}`.
    pub async fn device_status(&self, id: u32) -> Result<TerminalStatus, ApiError> {
        self.get("device status", &format!("/v1/terminals/device/{id}"))
            .await
    }

    /// `POST /v1/devices/{id}/commands` with a text payload; `Ok` only for HTTP 200.
    pub async fn command(
        &self,
        id: u32,
        name: &str,
        text: &str,
        timeout_ms: u64,
    ) -> Result<CommandReply, ApiError> {
        let what = format!("command {name}");
        let body = serde_json::json!({ "name": name, "text": text, "timeout_ms": timeout_ms });
        let url = format!("{}/v1/devices/{id}/commands", self.base);
        let response = self.send(&what, self.client.post(url).json(&body)).await?;
        let raw: RawReply = decode(&what, response, 200).await?;
        Ok(CommandReply {
            status: raw.status,
            payload: base64(&what, &raw.payload)?,
        })
    }

    /// `PUT /v1/bindings/{phone}/{device}`: binds phone `phone` to device `device` (so each
    /// may send to the other); `Ok` only for HTTP 200.
    pub async fn bind(&self, phone: u32, device: u32) -> Result<(), ApiError> {
        let what = "bind";
        let url = format!("{}/v1/bindings/{phone}/{device}", self.base);
        let response = self.send(what, self.client.put(url)).await?;
        let _: serde_json::Value = decode(what, response, 200).await?;
        Ok(())
    }

    /// `POST /v1/push` of `text` to one terminal (`kind` `"device"` or `"phone"`, `id` its 32
    /// id bits); `Ok` only for HTTP 200.
    pub async fn push_text(&self, kind: &str, id: u32, text: &str) -> Result<(), ApiError> {
        let what = "push";
        let body = serde_json::json!({
            "target": { "terminal": { "kind": kind, "id": id } },
            "text": text,
        });
        let url = format!("{}/v1/push", self.base);
        let response = self.send(what, self.client.post(url).json(&body)).await?;
        let _: serde_json::Value = decode(what, response, 200).await?;
        Ok(())
    }

    /// `POST /v1/push` of `text` to every device (target `all_devices`); the broker's answer
    /// (`msg_id`, `stored_for`, `delivered_online`, ...) for HTTP 200.
    pub async fn push_all_devices(&self, text: &str) -> Result<serde_json::Value, ApiError> {
        let what = "push to all devices";
        let body = serde_json::json!({ "target": "all_devices", "text": text });
        let url = format!("{}/v1/push", self.base);
        let response = self.send(what, self.client.post(url).json(&body)).await?;
        decode(what, response, 200).await
    }

    /// `GET /v1/uploads?after={after}&limit={limit}`.
    pub async fn uploads(&self, after: u64, limit: usize) -> Result<UploadsPage, ApiError> {
        let raw: RawPage = self
            .get(
                "uploads",
                &format!("/v1/uploads?after={after}&limit={limit}"),
            )
            .await?;
        let mut uploads = Vec::with_capacity(raw.uploads.len());
        for u in raw.uploads {
            uploads.push(Upload {
                cursor: u.cursor,
                device: u.device,
                upload_epoch: epoch_hex(&u.upload_epoch)?,
                upload_id: u.upload_id,
                dedup_key: u.dedup_key,
                topic: u.topic,
                payload: base64("uploads", &u.payload)?,
            });
        }
        Ok(UploadsPage {
            uploads,
            next: raw.next,
            head: raw.head,
        })
    }
}

/// Whether `upload` came from device `id`.
pub fn from_device(upload: &Upload, id: u32) -> bool {
    upload.device.kind == Kind::Device && upload.device.id == id
}

async fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    response: reqwest::Response,
    expect: u16,
) -> Result<T, ApiError> {
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|source| ApiError::Http {
        what: what.into(),
        source,
    })?;
    if status != expect {
        return Err(ApiError::Status {
            what: what.into(),
            status,
            body,
        });
    }
    serde_json::from_str(&body).map_err(|e| ApiError::Body {
        what: what.into(),
        reason: format!("{e}: {body}"),
    })
}

/// An upload epoch as the API writes it: 16 lower-case hex digits.
fn epoch_hex(text: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::Body {
        what: "uploads".into(),
        reason: format!("upload_epoch {text:?} is not 16 hex digits"),
    };
    if text.len() != 16 {
        return Err(bad());
    }
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

fn base64(what: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(text).map_err(|e| ApiError::Body {
        what: what.into(),
        reason: format!("payload is not base64: {e}"),
    })
}
