//! RabbitMQ partitioned from the upload publisher (the msgbus side, `RabbitUploadSink`) while
//! uploads flow, against the real RabbitMQ node 1 from `cargo xtask services up` (feature
//! `services-tests`; run: `cargo test -p broker --features services-tests --test
//! fault_rabbit_partition -- --nocapture` to see the figures).
//!
//! The partition is a blackhole in a TCP relay that this test puts between the publisher and
//! node 1 (`Blackhole` in `rabbit_support`): while it is on, the relay stops moving bytes either way and holds new
//! connections without reaching the node, so sockets stay open and every publish and confirm
//! goes unanswered, as when packets are dropped on the path; nothing is refused or reset. When it
//! is lifted, held bytes flow again. The shared services are never stopped or reconfigured.
//!
//! Pass criteria: [`partition_support`] (the same as the netem variant, `fault_rabbit_netem`).
#![cfg(feature = "services-tests")]

mod partition_support;
mod rabbit_support;
mod services_env;

use rabbit_support::blackhole::{Blackhole, host_port};

fn node1_url() -> String {
    services_env::require(&["RABBITMQ_1_AMQP_URL"])["RABBITMQ_1_AMQP_URL"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_from_rabbitmq_loses_no_confirmed_upload_and_the_spool_drains() {
    let url = node1_url();
    let node = host_port(&url);
    let hole = Blackhole::start(node.clone()).await;
    let relayed = url.replacen(&node, &hole.addr.to_string(), 1);
    let cfg = partition_support::config("partition");
    let outcome = partition_support::run(
        &tokio::runtime::Handle::current(),
        relayed,
        &cfg,
        || hole.set(true),
        || hole.set(false),
    )
    .await;
    partition_support::check(&url, &cfg, outcome).await;
}
