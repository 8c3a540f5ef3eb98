//! The `weft` binary: parse arguments, run one command, map errors to a single
//! `error: ...` line on stderr and an exit code (1 for runtime errors; clap
//! exits with 2 on usage errors).

use std::process::ExitCode;

use clap::Parser;
use weft_cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weft_cli::commands::run(cli)) {
        Ok(code) => code,
        // `weft history ... | head`: the reader left, nothing more to say.
        Err(e) if weft_cli::commands::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
