//! Hardware-in-the-loop tests: the real plug firmware on a board (virtual in CI, real on a
//! desk) against a real broker, checked through the broker's HTTP API. See docs/hil.md.
//!
//! How the pieces fit:
//! * [`rig`]: a rig file (`rigs/*.toml`) says which board and how to start it.
//! * [`run`]: per rig, the network set-up ([`netns`] for the host TAP board), a fresh
//!   [`broker`] (in-process, port 0), then per transport: boot the board ([`device`]), run the
//!   [`scenario`] (shared by every rig) over the [`api`] client, stop the board.
//! * [`dry_run`]: a real-board rig's probe-rs commands, printed instead of run (`--dry-run`).
//! * [`lookup`]: the node lookup the lookup suites' boards ask (rigs with `lookup = true`).
//! * [`junit`]: the results as JUnit XML and the readable summary (in the run's directory).
//! * [`catalog`]: the scenarios by name with their criteria (`hil-tests list`).
//! * [`fleet`]: the scenarios on many boards in the host TAP rig's namespace (a bridge, one
//!   TAP per board, QEMU's board beside them), each board's UDP path through an [`impair`]
//!   relay whose loss, delay, jitter, reordering and duplication a scenario changes as it runs.
//! * [`phone`]: an app on the broker's app WebSocket (the phone-to-plug scenario).
//! * [`backoff_log`]: reconnect delays read from a board's log, checked against its backoff
//!   (the broker-away scenario).
//! * [`teardown`]: what a Ctrl-C must remove (namespaces, board processes).
//! * [`failover`]: the cluster scenario (two comets and a msgbus as child processes on the
//!   services, reached from the rig's namespace through [`host_forward`]).

pub mod api;
pub mod backoff_log;
pub mod broker;
pub mod catalog;
pub mod device;
pub mod dry_run;
pub mod failover;
pub mod fleet;
pub mod host_forward;
pub mod impair;
pub mod junit;
pub mod lookup;
pub mod netns;
pub mod nonces;
pub mod persist;
pub mod phone;
pub mod rig;
pub mod run;
pub mod scenario;
pub mod teardown;
