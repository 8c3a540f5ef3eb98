//! Polling with a deadline: how tests wait for something to become true. A test
//! never asserts by sleeping a fixed time; it waits until a condition holds and
//! fails with a message naming what it waited for.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Polls `cond` every `poll` until it returns `true`, or fails after `deadline`
/// with an error naming `what` was awaited.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn f(api: weft_integration_tests::ApiClient) -> anyhow::Result<()> {
/// weft_integration_tests::wait_until("demo workflow completes", Duration::from_secs(30), Duration::from_millis(100), || async {
///     api.get("demo", "some-id").await.is_ok_and(|v| v["state"] == "completed")
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_until<F, Fut>(
    what: &str,
    deadline: Duration,
    poll: Duration,
    mut cond: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return Ok(());
        }
        if start.elapsed() >= deadline {
            bail!("timed out after {deadline:?} waiting until {what}");
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls `probe` every `poll` until it returns `Ok(Some(value))` and returns the
/// value; `Ok(None)` and `Err(_)` mean "not yet". Fails after `deadline` with an
/// error naming `what` was awaited and the last thing the probe said.
pub async fn wait_for<T, E, F, Fut>(
    what: &str,
    deadline: Duration,
    poll: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, E>>,
    E: Display,
{
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met".to_string(),
            Err(e) => format!("error: {e:#}"),
        };
        if start.elapsed() >= deadline {
            bail!("timed out after {deadline:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(poll).await;
    }
}
