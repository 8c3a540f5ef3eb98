//! The harness every Weft integration test uses: real binaries against a real
//! broker, all on loopback, all in temporary directories.
//!
//! - [`Broker`]: a Tansu broker on a free port with SQLite storage, killed on drop.
//! - [`Process`]: one child process with a log file; `kill9()`, `terminate()`, `restart()`.
//! - [`TestCluster`]: a broker, N orchestrators and M workers, ready when `start` returns;
//!   [`ApiClient`] talks to an orchestrator's HTTP API.
//! - [`wait_until`] / [`wait_for`]: poll a condition with a deadline (tests never
//!   assert by sleeping).
//! - [`cli::weft`]: runs the `weft` CLI against an API, with a deadline.
//! - [`collector::Collector`]: a minimal OTLP/HTTP collector that keeps what it receives.
//! - [`bench_support`]: raw broker round trips for the broker test and `weft-bench`.
//! - [`bench`]: `weft-bench`'s phases (engine runs, raw chain baseline, /proc costs, report).
//! - [`rebuild`]: a topic of complete histories and a raw reader for `weft-rebuild-bench`.
//!
//! Prerequisites: `make setup` (installs Tansu into `~/.cache/weft`, or set
//! `WEFT_TANSU_BIN`) and `cargo build --workspace --bins` (the binaries are taken
//! from the test executable's target directory, or `WEFT_TEST_BIN_DIR`). `make test`
//! does both.

pub mod api;
pub mod bench;
pub mod bench_support;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod collector;
pub mod paths;
pub mod process;
pub mod python;
pub mod rebuild;
pub mod wait;

pub use api::{ApiClient, ApiResponse};
pub use broker::{Broker, BrokerOptions, BrokerStorage};
pub use cluster::{ClusterOptions, Node, NodeKind, TestCluster};
pub use process::{Process, ProcessSpec};
pub use wait::{wait_for, wait_until};
