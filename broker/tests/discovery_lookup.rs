//! `GET /v1/nodes/lookup` over real HTTP on 127.0.0.1: no token needed, primary first, follows
//! the live view (a comet leaving moves its terminals to their next choice), 400/503 bodies.

use broker::discovery::route::{LookupResponse, lookup_router};
use broker::discovery::{NodeAddr, NodeInfo, NodeView, Role, lookup};
use broker::terminal::Address;
use tokio::sync::watch;

fn comet(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        role: Role::Comet,
        addr: NodeAddr {
            udp: Some(format!("{id}.example:8083")),
            ws: Some(format!("ws://{id}.example:8081/")),
            app_ws: Some(format!("ws://{id}.example:8082/")),
            link: Some(format!("{id}.internal:7000")),
        },
        load: 5,
    }
}

#[tokio::test]
async fn lookup_route_follows_the_live_view() {
    let view = NodeView {
        nodes: vec![comet("a"), comet("b"), comet("c")],
        healthy: true,
    };
    let (tx, rx) = watch::channel(view.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            lookup_router(rx, 2, broker::terminal::IdProfile::Plug),
        )
        .await
        .unwrap();
    });
    let http = reqwest::Client::new();
    let get = |q: &str| {
        let url = format!("http://{addr}/v1/nodes/lookup?{q}");
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };

    let resp = get("kind=device&id=42").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: LookupResponse = resp.json().await.unwrap();
    let expected: Vec<String> = lookup::lookup(&view, Address::device(42), 2)
        .iter()
        .map(|n| n.id.clone())
        .collect();
    let got: Vec<String> = body.nodes.iter().map(|n| n.id.clone()).collect();
    assert_eq!(got, expected);
    assert!(!body.stale);
    let primary = &body.nodes[0];
    assert_eq!(
        primary.udp.as_deref(),
        Some(format!("{}.example:8083", primary.id).as_str())
    );

    // The primary dies: the answer's new primary is the old second choice.
    let old_second = got[1].clone();
    let mut without = view.clone();
    without.nodes.retain(|n| n.id != got[0]);
    without.healthy = false;
    tx.send_replace(without);
    let body: LookupResponse = get("kind=device&id=42").await.json().await.unwrap();
    assert_eq!(body.nodes[0].id, old_second);
    assert!(body.stale, "stale view is flagged");

    let resp = get("kind=robot&id=1").await;
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "bad_request");
    assert!(err["message"].as_str().unwrap().contains("robot"));

    tx.send_replace(NodeView {
        nodes: vec![],
        healthy: true,
    });
    let resp = get("kind=phone&id=9").await;
    assert_eq!(resp.status(), 503);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "no_nodes");
    server.abort();
}
