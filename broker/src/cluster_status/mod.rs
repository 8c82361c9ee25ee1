//! `broker cluster status`: one look at a whole cluster from the configuration file every node
//! shares, for an operator or a monitoring check.
//!
//! How the pieces fit: [`gather`] runs the probes in [`probe`] (ZooKeeper for the comet and
//! msgbus nodes and the RabbitMQ nodes the rmqkeepers registered; Redis for reachability and each
//! node's heartbeat and terminal count; an AMQP connection to each RabbitMQ node) and collects a
//! [`Report`]; [`report`] judges it and lays it out, without I/O. [`cli`] prints the report (text
//! or `--json`) and exits 0 when the cluster is healthy, 1 when any problem was found and 2 when
//! the configuration does not describe a ZooKeeper cluster. Every probe is read-only and bounded
//! by `--timeout-ms`.

pub mod probe;
pub mod report;

use std::process::ExitCode;
use std::time::Duration;

pub use report::{Check, NodeStatus, RabbitSection, RabbitStatus, Report};

use crate::config::Config;
use crate::discovery::config::DiscoveryMode;

/// `broker cluster status` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the report as one JSON object (`healthy`, `problems`, then every section).
    #[arg(long)]
    pub json: bool,
    /// Longest wait for each service (ZooKeeper, Redis, each RabbitMQ node), milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// Why there is no cluster to look at.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Discovery is not ZooKeeper, so there is no registry of nodes to read.
    #[error(
        "discovery.mode is `{0}`: `broker cluster status` reads the nodes from ZooKeeper; give the \
         cluster's config file (-c FILE) with discovery.mode = \"zookeeper\""
    )]
    NotZookeeper(&'static str),
}

/// Looks at the cluster `config` describes (see module docs).
pub async fn gather(config: &Config, timeout: Duration) -> Result<Report, StatusError> {
    match config.discovery.mode {
        DiscoveryMode::Zookeeper => {}
        DiscoveryMode::None => return Err(StatusError::NotZookeeper("none")),
        DiscoveryMode::Static => return Err(StatusError::NotZookeeper("static")),
    }
    let rabbit_root = Some(config.cluster.rabbit_root.as_str()).filter(|r| !r.is_empty());
    let zk = probe::zookeeper(&config.discovery, rabbit_root, timeout).await;
    let mut nodes: Vec<NodeStatus> = zk
        .nodes
        .iter()
        .map(|n| NodeStatus {
            id: n.id.clone(),
            role: n.role.as_str(),
            load: n.load,
            endpoints: [&n.addr.udp, &n.addr.ws, &n.addr.app_ws]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            link: n.addr.link.clone(),
            redis_heartbeat: None,
            terminals: None,
        })
        .collect();
    let redis = probe::redis(&config.redis, &mut nodes, timeout).await;
    let registered = rabbit_root.map(|_| zk.rabbit.as_slice());
    let rabbit_nodes = probe::rabbitmq(&config.rabbitmq, registered, timeout).await;
    Ok(Report {
        zookeeper: zk.check,
        root: config.discovery.root.clone(),
        nodes,
        rejected: zk.rejected,
        rabbitmq: RabbitSection {
            source: if rabbit_root.is_some() {
                "zookeeper"
            } else {
                "static"
            },
            root: rabbit_root.map(str::to_string),
            nodes: rabbit_nodes,
        },
        redis,
    })
}

/// Entry point of `broker cluster status` (see module docs for the exit codes).
pub fn cli(config: &Config, args: StatusArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("broker cluster status: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let report = match rt.block_on(gather(config, timeout)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("broker cluster status: {e}");
            return ExitCode::from(2);
        }
    };
    let text = if args.json {
        report.to_json()
    } else {
        report.render_text()
    };
    if let Err(e) = crate::cli_output::print(&text) {
        eprintln!("broker cluster status: cannot write to stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::from(report.exit_code())
}
