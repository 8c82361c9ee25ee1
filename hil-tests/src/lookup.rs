//! The broker's node lookup for the lookup scenario: the real route
//! (`broker::discovery::route::lookup_router`, `GET /v1/nodes/lookup`) served on its own port
//! over a one-node view naming the test broker's device endpoints.
//!
//! The standalone broker serves no lookup (only cluster comets do, docs/discovery.md), so the
//! test mounts the cluster's route itself; the board is provisioned with a wrong static broker
//! and can only log in through the lookup's answer.

use std::net::{IpAddr, SocketAddr};

use broker::discovery::{NodeAddr, NodeInfo, NodeView, Role};
use tokio::sync::watch;

use crate::broker::TestBroker;

/// A running lookup server.
pub struct LookupServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    _view: watch::Sender<NodeView>,
}

impl LookupServer {
    /// Serves the lookup on `bind:0`; devices reach it at `advertise`.
    pub async fn start(
        bind: IpAddr,
        advertise: IpAddr,
        broker: &TestBroker,
    ) -> std::io::Result<LookupServer> {
        let node = NodeInfo {
            id: "hil-comet".into(),
            role: Role::Comet,
            addr: NodeAddr {
                udp: Some(broker.udp().to_string()),
                ws: Some(format!("ws://{}/device", broker.ws())),
                app_ws: None,
                link: None,
            },
            load: 0,
        };
        let (tx, rx) = watch::channel(NodeView {
            nodes: vec![node],
            healthy: true,
        });
        // The HIL broker runs the default `plug` profile.
        let router =
            broker::discovery::route::lookup_router(rx, 3, broker::terminal::IdProfile::Plug);
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind, 0)).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(LookupServer {
            addr: SocketAddr::new(advertise, port),
            task,
            _view: tx,
        })
    }

    /// The lookup's address as the board reaches it (`PLUG_LOOKUP`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}
