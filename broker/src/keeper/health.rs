//! RabbitMQ health through the management API: the aliveness test on the vhost, the alarms
//! health check and the port-listener check for the AMQP port, in that order; the first failure
//! decides. Any transport error (refused, timeout) is unhealthy too: after `rabbitmqctl stop_app`
//! the management listener itself goes away.

use std::time::Duration;

use reqwest::{Client, StatusCode, Url};
use serde::Deserialize;

use super::args::KeeperConfig;

/// The result of one health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// All checks passed.
    Healthy,
    /// A check failed.
    Unhealthy {
        /// Which check (`aliveness`, `alarms`, `port-listener`).
        check: &'static str,
        /// Why, in one line.
        reason: String,
    },
}

impl Health {
    /// Whether all checks passed.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

#[derive(Deserialize)]
struct StatusBody {
    status: Option<String>,
    reason: Option<String>,
}

/// A management API client for one node.
#[derive(Clone, Debug)]
pub struct Management {
    http: Client,
    base: Url,
    user: String,
    password: String,
    vhost: String,
    amqp_port: u16,
}

impl Management {
    /// A client for `cfg`; each request times out after `min(interval, 5 s)`.
    pub fn new(cfg: &KeeperConfig) -> Result<Management, reqwest::Error> {
        let timeout = cfg.interval.min(Duration::from_secs(5));
        Ok(Management {
            http: Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()?,
            base: cfg.mgmt_url.clone(),
            user: cfg.mgmt_user.clone(),
            password: cfg.mgmt_password.clone(),
            vhost: cfg.vhost.clone(),
            amqp_port: cfg.amqp_port,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            s.pop_if_empty().extend(segments);
        }
        u
    }

    async fn get(&self, url: Url) -> Result<(StatusCode, String), String> {
        let resp = self
            .http
            .get(url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| one_line(&e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| one_line(&e))?;
        Ok((status, body))
    }

    async fn status_check(&self, check: &'static str, url: Url) -> Result<(), Health> {
        let unhealthy = |reason: String| Health::Unhealthy { check, reason };
        let (status, body) = self.get(url).await.map_err(unhealthy)?;
        let parsed: Option<StatusBody> = serde_json::from_str(&body).ok();
        let ok = status.is_success()
            && parsed
                .as_ref()
                .and_then(|b| b.status.as_deref())
                .is_some_and(|s| s == "ok");
        if ok {
            return Ok(());
        }
        let reason = parsed
            .and_then(|b| b.reason)
            .unwrap_or_else(|| body.chars().take(200).collect::<String>());
        Err(unhealthy(format!(
            "HTTP {}: {}",
            status.as_u16(),
            reason.trim()
        )))
    }

    /// Runs the three checks (see module docs).
    pub async fn check(&self) -> Health {
        let port = self.amqp_port.to_string();
        let checks = [
            (
                "aliveness",
                self.url(&["api", "aliveness-test", &self.vhost]),
            ),
            ("alarms", self.url(&["api", "health", "checks", "alarms"])),
            (
                "port-listener",
                self.url(&["api", "health", "checks", "port-listener", &port]),
            ),
        ];
        for (name, url) in checks {
            if let Err(h) = self.status_check(name, url).await {
                return h;
            }
        }
        Health::Healthy
    }

    /// The node name the management API reports (`GET /api/overview`, field `node`).
    pub async fn node_name(&self) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Overview {
            node: String,
        }
        let (status, body) = self.get(self.url(&["api", "overview"])).await?;
        if !status.is_success() {
            return Err(format!("GET /api/overview: HTTP {}", status.as_u16()));
        }
        serde_json::from_str::<Overview>(&body)
            .map(|o| o.node)
            .map_err(|e| format!("GET /api/overview: {e}"))
    }
}

fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.replace('\n', " ")
}
