//! The broker's integration tests that can share one process, built and linked as one test
//! binary instead of one per file: each file named below is a module of it, and the support
//! modules they use are declared once, here. Compiling some thirty binaries, each with its own
//! copy of the support code and its own link, cost several times the CPU of this one.
//!
//! A test file stays a binary of its own (a `[[test]]` in `broker/Cargo.toml`, which lists
//! every test binary: `autotests` is off) when it needs the process to itself: a counting
//! global allocator (`*_session_memory`), its own resident memory (`metrics_latency`,
//! `ws_frames`), a global log subscriber (`http_proxy_protocol`), thousands of sockets against
//! the per-process file limit (the floods, `work_limits`), or the external services (feature
//! `services-tests`), several of which restart or cut them off while they run.
//!
//! One file's tests: `cargo test -p broker --test suite comet_udp::`.

// Shared by several of the modules below.
mod banner_support;
mod comet_support;
// The broker binary as a child process; it carries its own copy of `http_support`, as
// `comet_support` does, since each also serves binaries of its own.
#[allow(clippy::duplicate_mod)]
mod proc_support;
use comet_support::http_support;
use proc_support::port_support;

// One module per test file.
mod api_limits;
mod app_too_large;
mod cli_tools;
mod client_quickstart;
mod comet_app;
mod comet_scenarios;
mod comet_udp;
mod comet_ws;
mod config_docs;
mod console_browser;
mod crash_midstream;
mod crash_restart;
mod delivery_order;
mod deploy_files;
mod discovery_lookup;
mod http_api;
mod keeper_cli;
mod layering;
mod load_generator;
mod log_lines;
mod log_redaction;
mod login_replay;
mod metrics_exposition;
mod monitoring_docs;
mod sigterm_drain;
mod tls_wss;
mod upload_epochs;
mod ws_autobahn;
mod ws_proxy_protocol;
mod ws_write_timeout;
