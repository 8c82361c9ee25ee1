//! Cluster-mode state in Redis: the offline store, bindings and groups ([`RedisStore`], the same
//! traits and semantics as [`super::embedded`]) and the cluster-wide online registry
//! ([`OnlineRegistry`]).
//!
//! The append script also sequences live delivery in a cluster: it appends a delivery notice
//! to the stream of each comet holding a recipient ([`comet_stream`]), which that comet reads in
//! order.
//!
//! Both sit on one [`RedisConn`]: a reconnecting connection to a single Redis (`url`) or to the
//! master that Redis Sentinel names (`sentinels` + `master_name`). Every multi-key change is one
//! Lua script or one `MULTI` pipeline, so it is atomic on the server. Keys share a configurable
//! prefix (several deployments or test runs can share one Redis); the layout is in
//! `docs/storage.md`. Redis Cluster is not supported (scripts build key names at run time).
//!
//! Lost data (a restart without persistence, a failover to a replica that missed writes) is
//! noticed through a run marker and the id counter (`data_loss`), logged and counted, and the
//! next push fails with [`crate::store::StoreError::DataLost`] instead of being answered as if
//! nothing happened; ids stay above everything issued before (see [`crate::store::msg_id`]).
//!
//! Durability is Redis's: `Ok` means the change is in the master's memory; with `appendonly yes`
//! and `appendfsync always` it is also on disk, like the embedded store.

pub mod comet_stream;
mod conn;
mod data_loss;
mod offline;
mod offline_lua;
mod registry;
pub mod replies;

pub use comet_stream::{Batch, CometStream, DeliveryNotice, NoticeDest, StreamPos};
pub use conn::{RedisConfig, RedisConn, RedisConnError};
pub use offline::RedisStore;
pub use registry::{OnlineRegistry, SweepReport};
