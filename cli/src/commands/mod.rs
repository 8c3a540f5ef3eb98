//! One module per subcommand. [`run`] dispatches a parsed [`Cli`]; commands
//! write their normal output to the given writer and return errors whose
//! `Display` (with `{:#}`) is a single line for `error: ...`.

pub mod admin;
pub mod children;
pub mod control;
pub mod def;
pub mod dlq;
pub mod get;
pub mod history;
pub mod insight;
pub mod list;
pub mod nodes;
pub mod replay;
pub mod schedule;
pub mod start;
pub mod state;
pub mod watch;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;

use crate::api::{Client, ControlAction};
use crate::cli::{Cli, Command, DefCommand};

/// Run one command against the API named by `cli.api`, printing to stdout.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let token = crate::credentials::token(cli.token.as_deref(), cli.token_file.as_deref())?;
    let tls = crate::credentials::tls(
        cli.ca_cert.as_deref(),
        cli.client_cert.as_deref(),
        cli.client_key.as_deref(),
    )?;
    let client = Client::secured(&cli.api, token.as_deref(), &tls)?;
    let mut out = std::io::stdout().lock();
    let out: &mut dyn Write = &mut out;
    match cli.command {
        Command::Def(DefCommand::Apply { file }) => def::apply(&client, &file, out).await?,
        Command::Def(DefCommand::Diff(a)) => def::diff(&client, &a, out).await?,
        Command::Def(DefCommand::Deprecate(a)) => def::deprecate(&client, &a, out).await?,
        Command::Def(DefCommand::Reinstate(a)) => def::reinstate(&client, &a, out).await?,
        Command::Def(DefCommand::Delete(a)) => def::delete(&client, &a, out).await?,
        Command::Def(DefCommand::Get {
            workflow_type,
            version,
        }) => def::get(&client, &workflow_type, version, out).await?,
        Command::Start(args) => return start::run(&client, &args, out).await,
        Command::Get(args) => get::run(&client, &args, out).await?,
        Command::History(args) => history::run(&client, &args, out).await?,
        Command::List(args) => list::run(&client, &args, out).await?,
        Command::State(args) => state::run(&client, &args, out).await?,
        Command::Replay(args) => replay::run(&client, &args, out).await?,
        Command::Watch(args) => return watch::run(&client, &args, out).await,
        Command::Trace(args) => insight::trace(&client, &args, out).await?,
        Command::Children(args) => children::run(&client, &args, out).await?,
        Command::Analytics(args) => insight::analytics(&client, &args, out).await?,
        Command::Cancel(args) => {
            let action = ControlAction::Cancel {
                reason: args.reason.clone(),
            };
            let key = args.idempotency_key.as_deref();
            control::run(&client, &args.instance, action, key, out).await?
        }
        Command::Pause(args) => {
            let key = args.idempotency_key.as_deref();
            control::run(&client, &args.instance, ControlAction::Pause, key, out).await?
        }
        Command::Resume(args) => {
            let key = args.idempotency_key.as_deref();
            control::run(&client, &args.instance, ControlAction::Resume, key, out).await?
        }
        Command::Dlq(cmd) => dlq::run(&client, &cmd, out).await?,
        Command::Admin(cmd) => admin::run(&client, &cmd, out).await?,
        Command::Schedule(cmd) => schedule::run(&client, &cmd, out).await?,
        Command::Archived(a) => admin::archived(&client, &a, out).await?,
        Command::Nodes(a) => nodes::run(&client, &a, out).await?,
        Command::Signal(args) => {
            let action = ControlAction::Signal {
                name: args.name.clone(),
                data: control::signal_data(args.data.as_deref())?,
            };
            let key = args.idempotency_key.as_deref();
            control::run(&client, &args.instance, action, key, out).await?
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Whether `e` is stdout going away (`weft history ... | head`), which is not worth reporting.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Pretty-print a JSON value followed by a newline.
pub(crate) fn write_json(out: &mut dyn Write, value: &Value) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}
