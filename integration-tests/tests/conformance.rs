//! The conformance kit (`weft-conformance`, see `docs/protocol.md`) against
//! both workers Weft ships: the Rust `weft-worker` and the Python worker of
//! `sdk/python`, each the only member of its group, on a real broker with a
//! real orchestrator. Every case must pass.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_integration_tests::{python, ClusterOptions, TestCluster};

/// Fewer partitions than the default: the kit creates a workflow type (five
/// topics) per case.
fn options(workers: usize) -> ClusterOptions {
    ClusterOptions::new(1, workers).env("WEFT_KAFKA_PARTITIONS", "2")
}

/// Runs the kit against the cluster's orchestrator; returns its report.
async fn conformance(cluster: &TestCluster, group: &str) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_weft-conformance"))
            .args(["--bootstrap", &cluster.bootstrap()])
            .args(["--api", &cluster.api_url(0)])
            .args(["--group", group])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("weft-conformance did not finish within 300 s")??;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    ensure!(
        out.status.success(),
        "weft-conformance failed ({}):\n{report}",
        out.status
    );
    let cases = report.lines().filter(|l| l.starts_with("PASS ")).count();
    ensure!(
        cases >= 11 && !report.lines().any(|l| l.starts_with("FAIL ")),
        "not every case passed:\n{report}"
    );
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rust_worker_passes_the_conformance_kit() -> Result<()> {
    let cluster = TestCluster::start(options(1)).await?;
    let result = conformance(&cluster, "weft-workers").await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_worker_passes_the_conformance_kit() -> Result<()> {
    let py = python::python()?;
    let cluster = TestCluster::start(options(0)).await?;
    let mut worker = python::start_worker(
        &py,
        "py-conformance",
        &cluster.bootstrap(),
        &["--group", "weft-workers-py"],
        &cluster.dir().join("logs"),
    )
    .await?;
    let result = conformance(&cluster, "weft-workers-py").await;
    if result.is_err() {
        cluster.print_logs(80);
        worker.print_log_tail(120);
    }
    let stopped = worker.terminate_and_wait(Duration::from_secs(30)).await?;
    result?;
    ensure!(
        stopped.success(),
        "the Python worker exited {stopped} on SIGTERM"
    );
    Ok(())
}
