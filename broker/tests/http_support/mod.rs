//! The HTTP API client the integration tests share: every call carries the bearer token and
//! yields the status and the body as JSON (a body that is not JSON comes back as a JSON string
//! of its text, so failure messages show it). `http_api` includes it directly; `comet_support`
//! and `proc_support` include it as their own `http_support` module (`cluster_support` uses
//! the one of `comet_support`), so the test files that use those need no extra `mod` line.
#![allow(dead_code)] // Each test binary uses its own part.

use serde_json::Value;

/// An HTTP API client for one broker: its base URL and the bearer token of every call.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8080`) authenticating with `token`.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> ApiClient {
        ApiClient {
            base: base.into(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// `method` on `path` with an optional JSON `body`: the status and the body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `GET path` of a page that is text, not JSON (the metrics page): its body.
    pub async fn text(&self, path: &str) -> String {
        match self.get(path).await {
            (200, Value::String(text)) => text,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    /// `PUT path` with an optional JSON body.
    pub async fn put(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, body).await
    }
}
