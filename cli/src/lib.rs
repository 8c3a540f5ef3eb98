//! `weft`, the command line of the Weft workflow engine.
//!
//! Everything goes through the orchestrator's HTTP API: [`api`] is the client
//! (and turns transport and server failures into one-line messages),
//! [`commands`] holds one module per subcommand, [`render`] all text
//! formatting, and [`model`] lenient views of the API's JSON. Payloads stay
//! `serde_json::Value` wherever the CLI only passes them through, so the CLI
//! keeps working while the domain types evolve.

pub mod api;
pub mod args;
pub mod cli;
pub mod commands;
pub mod credentials;
pub mod model;
pub mod render;

pub use cli::Cli;
