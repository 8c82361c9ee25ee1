//! `--lookup URL`: where a cluster terminal connects, asked of the node lookup
//! (`GET /v1/nodes/lookup?kind=..&id=..` on any comet or msgbus, [`crate::discovery::route`])
//! before every login, so a client whose comet died or sent SHUTDOWN follows the cluster to
//! another comet as a device's SDK does.
//!
//! [`Lookup::candidates`] answers the endpoints to try in order (primary first, then the
//! fallbacks); the device and phone sessions try each until one logs in, so a comet that is
//! gone but still listed (its ZooKeeper session not yet expired) costs one refused connection.

use std::time::Duration;

use crate::discovery::route::{LOOKUP_PATH, LookupResponse};
use crate::terminal::{Address, Kind};

use super::ClientError;

/// How long one lookup request may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which endpoint of a comet the client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The device UDP address.
    Udp,
    /// The device WebSocket URL.
    DeviceWs,
    /// The app WebSocket URL.
    AppWs,
}

/// The node lookup of a cluster (see module docs).
#[derive(Clone, Debug)]
pub struct Lookup {
    url: String,
}

impl Lookup {
    /// `base` is the lookup URL itself (ending in `/v1/nodes/lookup`) or the HTTP API of any
    /// cluster node (`http://host:port`), to which the lookup path is added.
    pub fn new(base: &str) -> Result<Lookup, ClientError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "--lookup {base}: an http:// or https:// URL of a cluster node's API is expected"
            )));
        }
        let trimmed = base.trim_end_matches('/');
        let url = if trimmed.ends_with(LOOKUP_PATH) {
            trimmed.to_string()
        } else {
            format!("{trimmed}{LOOKUP_PATH}")
        };
        Ok(Lookup { url })
    }

    /// The lookup URL asked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `want` endpoints of the comets serving `who`, primary first; a
    /// [`ClientError::Connect`] when the lookup cannot be reached, answers an error, or names
    /// no comet with that endpoint.
    pub async fn candidates(&self, who: Address, want: Want) -> Result<Vec<String>, ClientError> {
        let kind = match who.kind {
            Kind::Device => "device",
            Kind::Phone => "phone",
        };
        let fail = |why: String| ClientError::Connect(format!("lookup {}: {why}", self.url));
        let client = reqwest::Client::builder()
            .timeout(LOOKUP_TIMEOUT)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        // Both values are plain words and digits: nothing to escape.
        let resp = client
            .get(format!("{}?kind={kind}&id={}", self.url, who.id))
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {body}")));
        }
        let answer: LookupResponse =
            serde_json::from_str(&body).map_err(|e| fail(format!("{e}: {body}")))?;
        let found = endpoints(&answer, want);
        if found.is_empty() {
            return Err(fail(format!("no comet offers {want:?} for {who}")));
        }
        Ok(found)
    }
}

/// The `want` endpoints named in `answer`, in its order.
pub fn endpoints(answer: &LookupResponse, want: Want) -> Vec<String> {
    answer
        .nodes
        .iter()
        .filter_map(|n| match want {
            Want::Udp => n.udp.clone(),
            Want::DeviceWs => n.ws.clone(),
            Want::AppWs => n.app_ws.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::route::LookupNode;

    #[test]
    fn the_lookup_path_is_added_to_an_api_url_once() {
        let a = Lookup::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(a.url(), "http://127.0.0.1:8080/v1/nodes/lookup");
        let b = Lookup::new("http://h:1/v1/nodes/lookup/").unwrap();
        assert_eq!(b.url(), "http://h:1/v1/nodes/lookup");
        assert!(matches!(
            Lookup::new("127.0.0.1:8080"),
            Err(ClientError::Usage(_))
        ));
    }

    #[test]
    fn endpoints_keep_the_lookup_order_and_skip_comets_without_one() {
        let node = |id: &str, udp: Option<&str>, ws: Option<&str>| LookupNode {
            id: id.into(),
            udp: udp.map(Into::into),
            ws: ws.map(Into::into),
            app_ws: None,
        };
        let answer = LookupResponse {
            nodes: vec![
                node("b", Some("h:2"), None),
                node("a", Some("h:1"), Some("ws://h:3/")),
            ],
            stale: false,
        };
        assert_eq!(endpoints(&answer, Want::Udp), vec!["h:2", "h:1"]);
        assert_eq!(endpoints(&answer, Want::DeviceWs), vec!["ws://h:3/"]);
        assert!(endpoints(&answer, Want::AppWs).is_empty());
    }
}
