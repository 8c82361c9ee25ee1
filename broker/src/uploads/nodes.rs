//! The healthy RabbitMQ nodes as a `watch` channel of AMQP URLs ([`NodeList`]), and connecting.
//!
//! In cluster mode the list comes from rmqkeeper's [`RabbitView`] ([`urls_from_rabbit_view`]
//! adds credentials); without ZooKeeper, [`static_nodes`] serves a fixed list. Publishers pick
//! the next URL after the one that failed, so a dead node is not retried first.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::keeper::{RabbitNodes, RabbitView};

/// Healthy AMQP URLs (with credentials), most recent view.
pub type NodeList = watch::Receiver<Vec<String>>;

/// A fixed node list (and its sender, to change it, e.g. in tests).
pub fn static_nodes(urls: Vec<String>) -> (watch::Sender<Vec<String>>, NodeList) {
    watch::channel(urls)
}

/// Follows `view`, adding `user`/`password` to each registered URL; stops with `cancel`.
pub fn urls_from_rabbit_view(
    view: &RabbitView,
    user: String,
    password: String,
    cancel: CancellationToken,
) -> NodeList {
    let mut rx = view.watch();
    let to_urls = move |n: &RabbitNodes| -> Vec<String> {
        n.nodes
            .iter()
            .filter_map(|n| n.amqp_url_with_credentials(&user, &password))
            .collect()
    };
    let (tx, out) = watch::channel(to_urls(&rx.borrow()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
            let urls = to_urls(&rx.borrow_and_update());
            tx.send_if_modified(|cur| {
                let changed = *cur != urls;
                *cur = urls.clone();
                changed
            });
        }
    });
    out
}

/// The candidates in the order to try them: the URLs after `last` first, `last` itself last.
pub fn rotation(urls: &[String], last: Option<&str>) -> Vec<String> {
    let start = last
        .and_then(|l| urls.iter().position(|u| u == l))
        .map_or(0, |i| i + 1);
    (0..urls.len())
        .map(|k| urls[(start + k) % urls.len()].clone())
        .collect()
}

/// Connects to `url` within `timeout`.
pub async fn connect(url: &str, timeout: Duration, name: &str) -> Result<Connection, String> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(timeout, Connection::connect(url, props)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("connect timed out after {timeout:?}")),
    }
}

/// The node's `host:port` in `url` (the metrics' `node` label): no scheme, credentials or
/// vhost.
pub fn node_label(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// `url` without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_starts_after_the_failed_node() {
        let urls = vec!["a".to_string(), "b".into(), "c".into()];
        assert_eq!(rotation(&urls, None), vec!["a", "b", "c"]);
        assert_eq!(rotation(&urls, Some("a")), vec!["b", "c", "a"]);
        assert_eq!(rotation(&urls, Some("c")), vec!["a", "b", "c"]);
        assert_eq!(rotation(&urls, Some("gone")), vec!["a", "b", "c"]);
        assert!(rotation(&[], Some("a")).is_empty());
    }

    #[test]
    fn node_label_is_host_and_port() {
        assert_eq!(
            node_label("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "127.0.0.1:5672"
        );
        assert_eq!(node_label("amqp://rabbit-2:5672"), "rabbit-2:5672");
        assert_eq!(node_label("h:1"), "h:1");
    }

    #[test]
    fn redact_hides_credentials() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://h:1/"), "amqp://h:1/");
    }
}
