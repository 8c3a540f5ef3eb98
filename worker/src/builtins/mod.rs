//! The built-in task kinds every `weft-worker` offers: `noop`, `sleep`,
//! `http`, `shell` (only with `worker.enable_shell`), `choose` (a decision's
//! branches), `workflow` (a child workflow, [`ChildWorkflow`]; registered by
//! the worker, which has the Kafka settings), and for testing failure paths `fail`, `flaky`, `ledger` (an
//! effect applied once per idempotency key), `tally` (logs every call) and `steps` (checkpoints after each step). Built-ins read their settings
//! from the task `parameters` only — never from workflow input, so input
//! cannot pick a URL, a command or a file (`choose` reads the one input key
//! its parameters name).

mod choose;
mod fail;
mod flaky;
mod http;
pub mod ledger;
mod noop;
mod shell;
mod sleep;
pub mod steps;
pub mod tally;
pub mod workflow;

use std::sync::Arc;

pub use choose::{Choose, BRANCHES};
pub use fail::Fail;
pub use flaky::Flaky;
pub use http::Http;
pub use ledger::Ledger;
pub use noop::Noop;
pub use shell::Shell;
pub use sleep::Sleep;
pub use steps::Steps;
pub use tally::Tally;
pub use workflow::ChildWorkflow;

use crate::handler::Registry;

/// The handler names of the built-in kinds.
pub const NAMES: &[&str] = &[
    "noop", "sleep", "http", "shell", "fail", "flaky", "ledger", "choose", "tally", "steps",
];

/// Largest body or stream kept in an output (bytes); longer ones are cut.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Registers every built-in kind that has no handler of the same name yet.
pub fn register(registry: &mut Registry, enable_shell: bool) {
    register_with(registry, enable_shell, Http::new());
}

/// [`register`] with a configured `http` kind (see [`Http::from_settings`]).
pub fn register_with(registry: &mut Registry, enable_shell: bool, http: Http) {
    registry.insert_if_absent("noop", Arc::new(Noop));
    registry.insert_if_absent("sleep", Arc::new(Sleep));
    registry.insert_if_absent("http", Arc::new(http));
    registry.insert_if_absent(
        "shell",
        Arc::new(Shell {
            enabled: enable_shell,
        }),
    );
    registry.insert_if_absent("fail", Arc::new(Fail));
    registry.insert_if_absent("flaky", Arc::new(Flaky));
    registry.insert_if_absent("ledger", Arc::new(Ledger));
    registry.insert_if_absent("choose", Arc::new(Choose));
    registry.insert_if_absent("tally", Arc::new(Tally));
    registry.insert_if_absent("steps", Arc::new(Steps));
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate_utf8("héllo".into(), 2), "h");
        assert_eq!(truncate_utf8("abc".into(), 10), "abc");
    }

    #[test]
    fn register_keeps_user_handlers() {
        let mut r = Registry::default();
        r.insert("noop", Arc::new(Sleep));
        register(&mut r, false);
        assert_eq!(
            r.names(),
            [
                "choose", "fail", "flaky", "http", "ledger", "noop", "shell", "sleep", "steps",
                "tally"
            ]
        );
    }
}
