//! Command-line syntax (clap derive). Parsing only: validation that needs I/O
//! (reading files, parsing `--input`) happens in the commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use crate::args::{
    AnalyticsArgs, CancelArgs, ChildrenArgs, InstanceRef, ListArgs, PauseResumeArgs, ReplayArgs,
    SignalArgs, StateArgs, TraceArgs, WatchArgs,
};

/// Where the orchestrator's HTTP API listens unless `--api` / `WEFT_API` say otherwise.
pub const DEFAULT_API: &str = "http://127.0.0.1:8080";

/// Weft: register workflow definitions, start, control and inspect instances.
#[derive(Debug, Parser)]
#[command(name = "weft", version)]
pub struct Cli {
    /// Base URL of the orchestrator's HTTP API.
    #[arg(
        long,
        global = true,
        env = "WEFT_API",
        default_value = DEFAULT_API,
        value_name = "URL"
    )]
    pub api: String,

    /// Bearer token for the API (when it requires authentication).
    #[arg(
        long,
        global = true,
        env = "WEFT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Read the API token from this file (its first line).
    #[arg(long, global = true, env = "WEFT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// A CA certificate (PEM) to trust for an https:// API, besides the public ones.
    #[arg(long, global = true, env = "WEFT_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// A client certificate (PEM) to present to an https:// API that asks for
    /// one (mTLS); needs --client-key.
    #[arg(long, global = true, env = "WEFT_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,

    /// The private key (PEM) of --client-cert.
    #[arg(long, global = true, env = "WEFT_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register and fetch workflow definitions.
    #[command(subcommand)]
    Def(DefCommand),
    /// Start a workflow instance and print its id (optionally wait for it to finish).
    Start(StartArgs),
    /// Show a workflow instance's current state.
    Get(GetArgs),
    /// List a workflow instance's events, one line each.
    History(HistoryArgs),
    /// List the instances of a workflow type (filter by state and creation time).
    List(ListArgs),
    /// Show an instance's state, now or right after a given event.
    State(StateArgs),
    /// Fold a range of an instance's history and show the events and the resulting state (read-only).
    Replay(ReplayArgs),
    /// Print an instance's events as they happen; exits 0 when the workflow ends.
    Watch(WatchArgs),
    /// Show an instance's trace: spans per workflow, state and task attempt, as a waterfall.
    Trace(TraceArgs),
    /// List the child workflows an instance started: type, id, state, and the parent task and attempt.
    Children(ChildrenArgs),
    /// Show a workflow type's success rate, durations, per-task figures, bottleneck and insights.
    Analytics(AnalyticsArgs),
    /// Cancel an instance.
    Cancel(CancelArgs),
    /// Pause an instance (no new task is dispatched until it is resumed).
    Pause(PauseResumeArgs),
    /// Resume a paused instance.
    Resume(PauseResumeArgs),
    /// Send a named signal with data to an instance.
    Signal(SignalArgs),
    /// List, inspect and redrive a workflow type's dead-lettered records.
    #[command(subcommand)]
    Dlq(crate::commands::dlq::DlqCommand),
    /// Schedules: start workflows on a cron expression or at a fixed interval.
    #[command(subcommand)]
    Schedule(crate::commands::schedule::ScheduleCommand),
    /// Administration: archive ended instances out of the projections.
    #[command(subcommand)]
    Admin(crate::commands::admin::AdminCommand),
    /// Show an instance's history read from its events topic (also once archived).
    Archived(crate::commands::admin::ArchivedArgs),
    /// List the nodes of the cluster: workers and replicas, their health, capabilities, capacity and load.
    Nodes(crate::commands::nodes::NodesArgs),
}

#[derive(Debug, Subcommand)]
pub enum DefCommand {
    /// Register a definition file (YAML or JSON; `-` reads stdin).
    Apply {
        /// The definition file; `.yaml`/`.yml` is sent as YAML, `.json` as JSON.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a registered definition as JSON.
    Get {
        /// The workflow type.
        #[arg(value_name = "TYPE")]
        workflow_type: String,
        /// A specific version instead of the latest.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Show what changed between two versions of a definition.
    Diff(crate::commands::def::DiffArgs),
    /// Deprecate a version: it takes no new starts (running instances go on).
    Deprecate(crate::commands::def::DeprecateArgs),
    /// Take starts of a deprecated version again.
    Reinstate(crate::commands::def::VersionArgs),
    /// Delete a workflow type's definitions (refused while any instance has not ended).
    Delete(crate::commands::def::DeleteArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The workflow type to start.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// Start this version (default: the latest version that is not deprecated).
    #[arg(long, value_name = "N")]
    pub version: Option<u32>,
    /// The instance input, a JSON object (default `{}`).
    #[arg(long, value_name = "JSON", conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input JSON from a file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Starting twice with the same key yields the same instance.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// A secret of the instance (repeatable): NAME=VALUE, or NAME=@FILE to
    /// read the value from a file. Sealed by the orchestrator; only tasks
    /// whose definition names it see it.
    #[arg(long, value_name = "NAME=VALUE")]
    pub secret: Vec<String>,
    /// Secrets from a file holding a JSON object of names to strings.
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Follow the instance until it ends; exit 0 only if it completed.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. `30s`, `5m`); default: no limit.
    #[arg(long, value_name = "DURATION", requires = "wait", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// The instance id.
    #[arg(value_name = "ID")]
    pub instance_id: String,
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// The instance id.
    #[arg(value_name = "ID")]
    pub instance_id: String,
    /// First sequence number to list.
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// Last sequence number to list.
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
    /// At most this many events (without it: every event of the range, page by page).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Print the API's JSON instead of one line per event.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 30s, 5m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn def_apply_and_get() {
        let cli = parse(&["def", "apply", "demo.yaml"]).unwrap();
        assert!(
            matches!(cli.command, Command::Def(DefCommand::Apply { ref file }) if file == &PathBuf::from("demo.yaml"))
        );

        let cli = parse(&["def", "get", "demo", "--version", "3"]).unwrap();
        match cli.command {
            Command::Def(DefCommand::Get {
                workflow_type,
                version,
            }) => {
                assert_eq!(workflow_type, "demo");
                assert_eq!(version, Some(3));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn start_with_everything() {
        let cli = parse(&[
            "--api",
            "http://orch:9000",
            "start",
            "demo",
            "--input",
            r#"{"n":1}"#,
            "--idempotency-key",
            "k1",
            "--wait",
            "--timeout",
            "5m",
        ])
        .unwrap();
        assert_eq!(cli.api, "http://orch:9000");
        let Command::Start(s) = cli.command else {
            panic!("not start")
        };
        assert_eq!(s.workflow_type, "demo");
        assert_eq!(s.input.as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(s.idempotency_key.as_deref(), Some("k1"));
        assert!(s.wait);
        assert_eq!(s.timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn api_flag_is_global() {
        let cli = parse(&["get", "demo", "abc", "--api", "http://x:1", "--json"]).unwrap();
        assert_eq!(cli.api, "http://x:1");
        let Command::Get(g) = cli.command else {
            panic!("not get")
        };
        assert_eq!(
            (g.workflow_type.as_str(), g.instance_id.as_str()),
            ("demo", "abc")
        );
        assert!(g.json);
    }

    #[test]
    fn history_ranges() {
        let cli = parse(&[
            "history", "demo", "abc", "--from", "2", "--to", "9", "--limit", "5",
        ])
        .unwrap();
        let Command::History(h) = cli.command else {
            panic!("not history")
        };
        assert_eq!(
            (h.from, h.to, h.limit, h.json),
            (Some(2), Some(9), Some(5), false)
        );
    }

    #[test]
    fn nodes_output() {
        use crate::commands::nodes::Output;
        let out = |args: &[&str]| match parse(args).unwrap().command {
            Command::Nodes(n) => (n.output, n.json),
            other => panic!("not nodes: {other:?}"),
        };
        assert_eq!(out(&["nodes"]), (Output::Table, false));
        assert_eq!(out(&["nodes", "--output", "json"]), (Output::Json, false));
        assert_eq!(out(&["nodes", "-o", "table"]), (Output::Table, false));
        assert_eq!(out(&["nodes", "--json"]), (Output::Table, true));
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["nodes", "--output", "xml"]), ErrorKind::InvalidValue);
        assert_eq!(
            kind(&["nodes", "--json", "--output", "table"]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn usage_errors() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["start", "demo", "--input", "{}", "--input-file", "x.json"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["start", "demo", "--timeout", "5m"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["start", "demo", "--wait", "--timeout", "soon"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["history", "demo", "abc", "--from", "-1"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(kind(&["get", "demo"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["frobnicate"]), ErrorKind::InvalidSubcommand);
        assert_eq!(
            kind(&["def"]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }
}
