//! Arguments of the query, stream and control subcommands (`list`, `state`,
//! `replay`, `watch`, `cancel`, `pause`, `resume`, `signal`); the older
//! commands' arguments are in [`crate::cli`].

use clap::Args;

/// The two positional arguments naming an instance.
#[derive(Debug, Args)]
pub struct InstanceRef {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// The instance id.
    #[arg(value_name = "ID")]
    pub instance_id: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The workflow type to list.
    #[arg(long = "type", value_name = "TYPE")]
    pub workflow_type: String,
    /// Only instances in this state (repeat for several: --state running --state failed).
    #[arg(long, value_name = "STATE")]
    pub state: Vec<String>,
    /// Only instances created after this time: RFC 3339 UTC (2024-05-01T12:00:00Z) or epoch ms.
    #[arg(long, value_name = "TIME")]
    pub created_after: Option<String>,
    /// Page size (server default 50, at most 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Continue after a previous page (the cursor `weft list` printed).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Follow the cursor and list every page.
    #[arg(long, conflicts_with = "cursor")]
    pub all: bool,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub instance: InstanceRef,
    /// The state right after this event (sequence number) instead of the current one.
    #[arg(long, value_name = "SEQ")]
    pub at: Option<u64>,
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub instance: InstanceRef,
    /// First sequence number to replay (default 1).
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// Last sequence number to replay (default: the last event).
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
    /// Print the API's JSON (events and folded state).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub instance: InstanceRef,
    /// Start with this sequence number (default 1: the whole history first).
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// Print each event as one line of JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub instance: InstanceRef,
    /// Why (recorded in the workflow.cancelled event).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Repeating the request with the same key applies it once.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct PauseResumeArgs {
    #[command(flatten)]
    pub instance: InstanceRef,
    /// Repeating the request with the same key applies it once.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    #[command(flatten)]
    pub instance: InstanceRef,
    /// The signal name (what the waiting task waits for).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The signal data, a JSON object (default `{}`).
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    /// Repeating the request with the same key applies it once.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft").chain(args.iter().copied()))
    }

    #[test]
    fn list_filters() {
        let cli = parse(&[
            "list",
            "--type",
            "demo",
            "--state",
            "running",
            "--state",
            "failed",
            "--created-after",
            "2024-05-01T00:00:00Z",
            "--limit",
            "5",
            "--cursor",
            "c1.00",
        ])
        .unwrap();
        let Command::List(l) = cli.command else {
            panic!("not list")
        };
        assert_eq!(l.workflow_type, "demo");
        assert_eq!(l.state, vec!["running", "failed"]);
        assert_eq!(l.created_after.as_deref(), Some("2024-05-01T00:00:00Z"));
        assert_eq!(
            (l.limit, l.cursor.as_deref(), l.all),
            (Some(5), Some("c1.00"), false)
        );
    }

    #[test]
    fn instance_commands() {
        let Command::State(s) = parse(&["state", "demo", "abc", "--at", "4"])
            .unwrap()
            .command
        else {
            panic!("not state")
        };
        assert_eq!(
            (
                s.instance.workflow_type.as_str(),
                s.instance.instance_id.as_str(),
                s.at
            ),
            ("demo", "abc", Some(4))
        );
        let Command::Replay(r) = parse(&["replay", "demo", "abc", "--from", "2", "--to", "5"])
            .unwrap()
            .command
        else {
            panic!("not replay")
        };
        assert_eq!((r.from, r.to), (Some(2), Some(5)));
        let Command::Watch(w) = parse(&["watch", "demo", "abc"]).unwrap().command else {
            panic!("not watch")
        };
        assert_eq!(w.from, None);
        let Command::Cancel(c) = parse(&["cancel", "demo", "abc", "--reason", "ops"])
            .unwrap()
            .command
        else {
            panic!("not cancel")
        };
        assert_eq!(c.reason.as_deref(), Some("ops"));
        assert!(matches!(
            parse(&["pause", "demo", "abc"]).unwrap().command,
            Command::Pause(_)
        ));
        assert!(matches!(
            parse(&["resume", "demo", "abc"]).unwrap().command,
            Command::Resume(_)
        ));
        let Command::Signal(s) = parse(&[
            "signal",
            "demo",
            "abc",
            "approved",
            "--data",
            r#"{"by":"me"}"#,
        ])
        .unwrap()
        .command
        else {
            panic!("not signal")
        };
        assert_eq!(
            (s.name.as_str(), s.data.as_deref()),
            ("approved", Some(r#"{"by":"me"}"#))
        );
    }

    #[test]
    fn usage_errors() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["list"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["list", "--type", "d", "--limit", "-1"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind(&["list", "--type", "d", "--limit", "x"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["list", "--type", "d", "--all", "--cursor", "c"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["state", "demo", "abc", "--at", "x"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["signal", "demo", "abc"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(kind(&["watch", "demo"]), ErrorKind::MissingRequiredArgument);
    }
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub instance: InstanceRef,
    /// Print the trace as OTLP/JSON (what an OpenTelemetry collector takes on
    /// `POST /v1/traces`) instead of a waterfall.
    #[arg(long, conflicts_with = "json")]
    pub otlp: bool,
    /// Print the API's span list as JSON instead of a waterfall.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ChildrenArgs {
    #[command(flatten)]
    pub instance: InstanceRef,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// Fewest ended instances or attempts a rate insight needs (default 10).
    #[arg(long, value_name = "N")]
    pub min_samples: Option<u64>,
    /// Flag the type as slow when completed instances average more than this
    /// many milliseconds (default 30000).
    #[arg(long, value_name = "MS")]
    pub slow_ms: Option<u64>,
    /// Print the API's JSON instead of a report.
    #[arg(long)]
    pub json: bool,
}
