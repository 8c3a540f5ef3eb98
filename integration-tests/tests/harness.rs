//! The harness itself: a process the test did not stop must not stop, and a
//! panic in a log fails the test. A process that exits on its own, or logs
//! `panicked at`, fails `check()`, is not brought back silently by `restart()`
//! or `start()`, and panics when dropped; one the test killed does none of that.
//! Plain shell commands stand in for the binaries (no broker needed).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use anyhow::{ensure, Result};
use weft_integration_tests::{wait_until, Process, ProcessSpec};

fn sh(name: &str, script: &str) -> ProcessSpec {
    ProcessSpec::new(name, "sh").args(["-c", script])
}

async fn wait_exit(p: &mut Process) -> Result<()> {
    wait_until(
        &format!("{} exits", p.name()),
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let exited = p.try_exit_status().is_some();
            async move { exited }
        },
    )
    .await
}

/// Whether dropping `p` panics (the panic message, if it does).
fn drop_panics(p: Process) -> Option<String> {
    catch_unwind(AssertUnwindSafe(move || drop(p)))
        .err()
        .map(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
}

#[tokio::test]
async fn a_process_that_exits_on_its_own_fails_the_test() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let mut p = Process::spawn(sh("crasher", "echo started; exit 3"), logs.path())?;
    wait_exit(&mut p).await?;
    let err = p.check().expect_err("an unexpected exit fails check()");
    ensure!(
        format!("{err:#}").contains("exited on its own") && format!("{err:#}").contains("started"),
        "the error names the exit and shows the log: {err:#}"
    );
    ensure!(
        p.restart().is_err(),
        "restart() brought a crashed process back"
    );
    ensure!(p.start().is_err(), "start() brought a crashed process back");
    ensure!(p.starts() == 1, "it was started again: {}", p.starts());
    let panic = drop_panics(p).expect("dropping a crashed process panics");
    ensure!(panic.contains("crasher exited on its own"), "{panic}");
    Ok(())
}

#[tokio::test]
async fn a_panic_in_the_log_fails_the_test() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let script = "echo \"thread 'main' panicked at src/main.rs:1:1:\"; sleep 60";
    let mut p = Process::spawn(sh("panicker", script), logs.path())?;
    wait_until(
        "the panic is in the log",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let logged = !p.panics().is_empty();
            async move { logged }
        },
    )
    .await?;
    ensure!(p.is_running(), "it still runs");
    let err = p.check().expect_err("a logged panic fails check()");
    ensure!(format!("{err:#}").contains("panicked"), "{err:#}");
    ensure!(p.restart().is_err(), "restart() hid a panic");
    ensure!(
        drop_panics(p).is_some(),
        "dropping it did not fail the test"
    );

    // A test that makes a process panic on purpose says so.
    let mut p = Process::spawn(sh("panicker-expected", script), logs.path())?;
    p.allow_panics();
    wait_until(
        "the panic is in the log",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let logged = !p.panics().is_empty();
            async move { logged }
        },
    )
    .await?;
    p.check()?;
    ensure!(drop_panics(p).is_none(), "an allowed panic failed the test");
    Ok(())
}

#[tokio::test]
async fn a_process_the_test_stops_may_stop() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let mut p = Process::spawn(sh("sleeper", "sleep 60"), logs.path())?;
    p.check()?;
    p.kill9();
    p.check()?;
    p.restart()?;
    ensure!(p.is_running() && p.starts() == 2, "restarted after a kill");
    let status = p.terminate_and_wait(Duration::from_secs(10)).await?;
    ensure!(!status.success(), "sh ends by SIGTERM: {status}");
    p.check()?;
    p.start()?;
    ensure!(p.is_running() && p.starts() == 3, "started after a SIGTERM");
    ensure!(
        drop_panics(p).is_none(),
        "dropping a running process panicked"
    );

    // An exit the test asked for is fine even if the process was gone already.
    let mut p = Process::spawn(sh("quick", "exit 0"), logs.path())?;
    wait_exit(&mut p).await?;
    ensure!(
        p.check().is_err(),
        "a clean exit nobody asked for still fails"
    );
    p.kill9();
    p.check()?;
    ensure!(
        drop_panics(p).is_none(),
        "a stopped process panicked on drop"
    );
    Ok(())
}
