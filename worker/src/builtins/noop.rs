//! The `noop` kind: succeeds at once with an empty output.

use weft_shared::data::DataMap;

use crate::context::TaskContext;
use crate::handler::{Handler, HandlerFuture};

/// Succeeds with `{}`.
pub struct Noop;

impl Handler for Noop {
    fn call(&self, _ctx: TaskContext) -> HandlerFuture {
        Box::pin(async { Ok(DataMap::new()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn noop_returns_an_empty_output() {
        let out = Noop
            .call(TaskContext::for_test(
                "noop",
                DataMap::new(),
                DataMap::new(),
            ))
            .await;
        assert_eq!(out, Ok(DataMap::new()));
    }
}
