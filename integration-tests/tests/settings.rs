//! Settings as a new user sets them, with the real binaries on Tansu (a broker
//! without transactions): `kafka.transactions = "auto"` and the `ledger`
//! built-in's documented `WEFT_LEDGER_DIR`. Both processes start, log that
//! transactions resolved to `off` and why, an `exactly_once` definition is
//! refused, and a workflow whose `ledger` task names no `dir` completes with its
//! effect in `WEFT_LEDGER_DIR`. `--dump-config` shows no secret.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::StatusCode;
use serde_json::json;
use weft_integration_tests::paths::bin_path;
use weft_integration_tests::{wait_until, ClusterOptions, TestCluster};

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

const LEDGER: &str = r#"
type: settings_ledger
tasks:
  - name: charge
    type: effect
    handler: ledger
"#;

const EXACTLY_ONCE: &str = r#"
type: settings_eo
tasks:
  - name: charge
    handler: noop
    semantics: exactly_once
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_transactions_resolve_off_on_tansu_and_the_ledger_dir_setting_works() -> Result<()> {
    let ledger = tempfile::tempdir()?;
    let opts = ClusterOptions::new(1, 1)
        .env("WEFT_KAFKA_TRANSACTIONS", "auto")
        .env("WEFT_LEDGER_DIR", ledger.path().display().to_string());
    let cluster = TestCluster::start(opts).await?;
    let api = cluster.api();
    let result = async {
        for node in [cluster.orchestrator(0), &cluster.workers()[0]] {
            let log = node.process().log();
            ensure!(
                log.lines()
                    .any(|l| l.contains("kafka transactions unavailable")
                        && l.contains("kafka.transactions=auto")
                        && l.contains("resolved=off")
                        && l.contains("reason=")),
                "{} logged no transactions choice:\n{log}",
                node.node_id()
            );
        }
        let r = api
            .send(
                reqwest::Method::POST,
                "/v1/definitions",
                Some(("application/yaml", EXACTLY_ONCE.to_owned())),
            )
            .await?;
        ensure!(
            r.status == StatusCode::BAD_REQUEST
                && r.body.to_string().contains("kafka.transactions=Off"),
            "exactly_once accepted with transactions resolved off: {} {}",
            r.status,
            r.body
        );
        api.register_definition(LEDGER).await?;
        let started = api.start("settings_ledger", json!({}), None).await?;
        let id = started["instance_id"].as_str().context("id")?.to_owned();
        wait_until("the ledger workflow completes", DEADLINE, POLL, || async {
            api.get("settings_ledger", &id)
                .await
                .is_ok_and(|w| w["state"] == "completed")
        })
        .await?;
        let entries = std::fs::read_to_string(ledger.path().join("ledger.log"))?;
        ensure!(
            entries.lines().count() == 1 && entries.contains(&id),
            "the effect is not in WEFT_LEDGER_DIR once: {entries:?}"
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

#[test]
fn dump_config_shows_no_secret() -> Result<()> {
    for bin in ["weft-orchestrator", "weft-worker"] {
        let mut cmd = std::process::Command::new(bin_path(bin));
        // Only this test's settings: the binaries reject unknown WEFT_* variables.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WEFT_") {
                cmd.env_remove(name);
            }
        }
        let out = cmd
            .args(["--set", "kafka.properties.sasl.password=hunter2-sasl"])
            .args(["--set", "kafka.properties.sasl.username=alice"])
            .env("WEFT_KAFKA_PROPERTY_SSL_KEY_PASSWORD", "hunter2-key")
            .arg("--dump-config")
            .output()
            .with_context(|| format!("running {bin}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "{bin} --dump-config failed: {out:?}");
        ensure!(
            !text.contains("hunter2") && text.contains("<redacted>") && text.contains("alice"),
            "{bin} --dump-config:\n{text}"
        );
    }
    Ok(())
}
