//! The `weft-worker` binary as a new user starts it, against librdkafka's mock
//! cluster (which has transactions): with `WEFT_LEDGER_DIR` set, as the
//! `ledger` built-in documents, and `kafka.transactions = "auto"`. The worker
//! starts (the variable is no unknown setting), detects transactions and logs
//! the choice, and runs an `exactly_once` ledger task — possible only with
//! transactions on — whose effect lands in the documented directory.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowEventType};

use common::*;

/// Kills the worker process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("address").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_starts_with_the_documented_ledger_dir_and_detects_transactions(
) -> anyhow::Result<()> {
    let topics = Topics::default();
    let Mock {
        cluster: _cluster,
        bootstrap,
        producer,
    } = mock_cluster(3, &{
        // The transactions probe runs a transaction on the definitions topic.
        let mut t = control_topics(&topics);
        t.push((topics.definitions(), 1));
        t
    })?;
    let dir = tempfile::tempdir()?;
    let ledger_dir = dir.path().join("ledger");
    std::fs::create_dir_all(&ledger_dir)?;
    let log_path = dir.path().join("worker.log");
    let log = std::fs::File::create(&log_path)?;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-worker"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WEFT_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(["--bootstrap", &bootstrap, "--types", "orders"])
        .args(["--node-id", "binary-worker", "--http-addr", &free_addr()])
        .args(["--set", &format!("worker.group_id=workers-{}", uuid_like())])
        .env("WEFT_LEDGER_DIR", &ledger_dir)
        .env("WEFT_KAFKA_TRANSACTIONS", "auto")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut worker = Killed(cmd.spawn().context("starting weft-worker")?);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The choice is logged with the setting and the resolved mode.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = read_log();
        if text.contains("kafka transactions detected") {
            assert!(
                text.contains("kafka.transactions=auto") && text.contains("resolved=on"),
                "{text}"
            );
            break;
        }
        if let Some(status) = worker.0.try_wait()? {
            bail!("weft-worker exited ({status}) with WEFT_LEDGER_DIR set:\n{text}");
        }
        if Instant::now() > deadline {
            bail!("weft-worker logged no transactions choice:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A ledger task without `dir` uses WEFT_LEDGER_DIR; exactly_once needs transactions on.
    let d = dispatch("ledger", ExecutionSemantics::ExactlyOnce);
    produce_dispatch(&producer, &topics.tasks("orders"), &d).await?;
    let read = read_until(&bootstrap, &topics.events("orders"), |recs| {
        has(recs, &d, WorkflowEventType::TaskCompleted)
            || has(recs, &d, WorkflowEventType::TaskFailed)
    })
    .await;
    let events = match read {
        Ok(events) => events,
        Err(e) => bail!("{e}; worker log:\n{}", read_log()),
    };
    assert!(
        has(&events, &d, WorkflowEventType::TaskCompleted),
        "the ledger task did not complete; worker log:\n{}",
        read_log()
    );
    let ledger = std::fs::read_to_string(ledger_dir.join("ledger.log"))?;
    assert_eq!(
        ledger.lines().collect::<Vec<_>>(),
        [d.idempotency_key.as_str()]
    );
    assert!(
        worker.0.try_wait()?.is_none(),
        "the worker is still running"
    );
    Ok(())
}
