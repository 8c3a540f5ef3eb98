//! The CLI shows checkpoints and measured resource usage (issue 18 item 4,
//! ADR 0023), on Tansu with an orchestrator and a worker running the
//! built-ins. `work` (`steps`) checkpoints after each of 5 steps and fails
//! once; `burn` (`shell`) busy-loops for a few hundred ms. Then:
//!
//! - `weft get` prints, for each task, the CPU time, wall time, peak memory
//!   and scope the API's instance view holds, and `work`'s checkpoint count and
//!   last checkpoint; `weft get --json` is the API's view itself;
//! - `weft analytics` prints, per task, the measured attempts, CPU and wall
//!   summaries and peak memory of the API's report.
//!
//! The expected cells are computed from the API's answers, so the CLI must
//! print what the server measured, not something that merely looks right.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use weft_integration_tests::cli::weft;
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};

const DEADLINE: Duration = Duration::from_secs(60);

/// A pure-CPU shell loop: a few hundred ms of CPU on any machine.
const BUSY: &str = "i=0; while [ $i -lt 250000 ]; do i=$((i+1)); done";

fn definition(dir: &str) -> String {
    format!(
        r#"
type: ckcli
tasks:
  - name: work
    handler: steps
    parameters: {{steps: 5, fail_at: 2, dir: "{dir}"}}
    retry: {{max_attempts: 3, backoff: fixed, base_delay: 50ms}}
  - name: burn
    handler: shell
    depends_on: [work]
    parameters: {{command: "{BUSY}"}}
"#
    )
}

/// The CLI's documented formats: `850ms`, `1.2s` (under a minute here).
fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `812 KiB`, `3.1 MiB`.
fn fmt_kb(kb: u64) -> String {
    if kb < 1024 {
        format!("{kb} KiB")
    } else {
        format!("{:.1} MiB", kb as f64 / 1024.0)
    }
}

fn task<'a>(v: &'a Value, list: &str, name: &str) -> Result<&'a Value> {
    v[list]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .with_context(|| format!("task {name} in {v}"))
}

/// The line of `text` whose first word is `first`, after the line starting with `after`.
fn row<'a>(text: &'a str, after: &str, first: &str) -> Result<&'a str> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with(after))
        .find(|l| l.split_whitespace().next() == Some(first))
        .with_context(|| format!("a '{first}' line after '{after}' in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weft_get_and_analytics_show_usage_and_checkpoints() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = ClusterOptions::new(1, 1).env("WEFT_WORKER_ENABLE_SHELL", "true");
    let cluster = TestCluster::start(opts).await?;
    let result = body(&cluster.api(), &dir.path().display().to_string()).await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}

async fn body(api: &ApiClient, dir: &str) -> Result<()> {
    api.register_definition(&definition(dir)).await?;
    let started = api.start("ckcli", json!({}), None).await?;
    let id = started["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned();
    let done = wait_for(
        "ckcli completes",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            let v = api.get("ckcli", &id).await?;
            ensure!(v["state"] != "failed", "workflow failed: {v}");
            anyhow::Ok((v["state"] == "completed").then_some(v))
        },
    )
    .await?;

    // weft get: the usage columns and the checkpoint, as the API has them.
    let text = weft(api, &["get", "ckcli", &id], DEADLINE)
        .await?
        .ok()?
        .to_owned();
    let header = row(&text, "tasks:", "NAME")?;
    ensure!(
        header.split_whitespace().collect::<Vec<_>>()
            == ["NAME", "STATE", "ATTEMPT", "CPU", "WALL", "PEAK", "MEM", "MEASURED", "ERROR"],
        "{text}"
    );
    for name in ["work", "burn"] {
        let t = task(&done, "tasks", name)?;
        let usage = &t["resource_usage"];
        let ms = |k: &str| usage[k].as_u64().map_or("-".to_owned(), fmt_ms);
        let peak = usage["peak_rss_kb"].as_u64().map_or("-".to_owned(), fmt_kb);
        let want = format!(
            "{name} completed {} {} {} {peak} {}",
            t["attempt"],
            ms("cpu_ms"),
            ms("wall_ms"),
            t["usage_scope"].as_str().context("usage_scope")?
        );
        let got = row(&text, "tasks:", name)?;
        ensure!(
            got.split_whitespace().collect::<Vec<_>>().join(" ") == want,
            "weft get, task {name}: '{got}', expected '{want}'\n{text}"
        );
    }
    let burn = &task(&done, "tasks", "burn")?["resource_usage"];
    ensure!(
        burn["cpu_ms"].as_u64() >= Some(50) && burn["peak_rss_kb"].as_u64() > Some(0),
        "burn measured: {burn}"
    );
    let ckpt = row(&text, "checkpoints:", "work")?;
    ensure!(
        ckpt.trim() == r#"work  5 saved, last {"next_step":5}"#,
        "weft get, checkpoints: '{ckpt}'\n{text}"
    );
    let raw = weft(api, &["get", "ckcli", &id, "--json"], DEADLINE).await?;
    let raw: Value = serde_json::from_str(raw.ok()?)?;
    ensure!(
        raw["tasks"] == done["tasks"],
        "weft get --json is the API's view: {raw}"
    );

    // weft analytics: per task, what the workers measured.
    let r = api.send(Method::GET, "/v1/analytics/ckcli", None).await?;
    ensure!(r.status.is_success(), "{r:?}");
    let text = weft(api, &["analytics", "ckcli"], DEADLINE)
        .await?
        .ok()?
        .to_owned();
    for name in ["work", "burn"] {
        let t = task(&r.body, "tasks", name)?;
        let (cpu, wall) = (&t["cpu"], &t["wall"]);
        let n = |v: &Value| v["count"].as_u64().unwrap_or_default();
        let pair = |v: &Value| {
            if n(v) == 0 {
                return "-".to_owned();
            }
            let p = |k: &str| fmt_ms(v[k].as_u64().unwrap_or_default());
            format!("{}/{}", p("p50_ms"), p("p95_ms"))
        };
        let avg = if n(cpu) == 0 {
            "-".to_owned()
        } else {
            fmt_ms(cpu["avg_ms"].as_f64().unwrap_or_default().round() as u64)
        };
        let want = format!(
            "{name} {} {avg} {} {} {}",
            n(cpu).max(n(wall)),
            pair(cpu),
            pair(wall),
            match t["peak_rss_kb"].as_u64().context("peak_rss_kb")? {
                0 => "-".to_owned(),
                kb => fmt_kb(kb),
            }
        );
        let got = row(&text, "usage, as the workers measured it:", name)?;
        ensure!(
            got.split_whitespace().collect::<Vec<_>>().join(" ") == want,
            "weft analytics, task {name}: '{got}', expected '{want}'\n{text}"
        );
    }
    let burn = task(&r.body, "tasks", "burn")?;
    ensure!(
        burn["cpu"]["count"] == 1 && burn["wall"]["count"] == 1,
        "burn: {burn}"
    );
    ensure!(
        task(&r.body, "tasks", "work")?["wall"]["count"] == 2,
        "both attempts of work measured: {}",
        r.body
    );
    Ok(())
}
