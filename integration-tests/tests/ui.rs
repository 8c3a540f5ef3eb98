//! The web console (`/ui`) in a real browser: Debian's headless Chromium,
//! driven over WebDriver, against a real cluster. The test runs workflows,
//! then clicks through the console and checks what the DOM shows against what
//! the API says: the analytics of a type (counts, success rate, the
//! bottleneck), the instances with a state filter and cursor paging, one
//! instance's DAG coloured by task state, its history (a causation link
//! found), the state at an early sequence (slider), the trace waterfall, live
//! updates while a signal arrives, a signal and a cancel sent through the
//! buttons (with their confirmation), actions hidden after a 403, the bearer
//! token on every request, secrets never rendered, the diff of two definition
//! versions and the nodes page, and the DAG and waterfall of a decision, a
//! group and a saga (`ui/shapes.rs`), and a dead letter redriven with its
//! button (`ui/dead.rs`) — all in `console_in_a_browser`. With API
//! authentication on, the console asks for a token on a 401 and hides the
//! actions a reader's token may not take (`ui/auth.rs`); an instance with
//! 100,000 events opens a page at a time within 2 s (`ui/large.rs`).
//! Screenshots go to `<target>/ui-artifacts/`.

#[path = "ui/actions.rs"]
mod actions;
#[path = "ui/auth.rs"]
mod auth;
#[path = "ui/browser.rs"]
mod browser;
#[path = "ui/dead.rs"]
mod dead;
#[path = "ui/large.rs"]
mod large;
#[path = "ui/shapes.rs"]
mod shapes;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use browser::Browser;
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};

pub(crate) const T: Duration = Duration::from_secs(30);
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// `charge` sleeps far longer than anything else: the bottleneck.
const SHOP: &str = "type: uishop
description: Validate, reserve and charge in parallel, ship.
tasks:
  - {name: validate, handler: noop}
  - {name: reserve, handler: sleep, depends_on: [validate], parameters: {ms: 50}}
  - {name: charge, handler: sleep, depends_on: [validate], parameters: {ms: 3000}}
  - {name: ship, handler: noop, depends_on: [reserve, charge]}
";
pub(crate) const HOLD: &str = "type: uihold
tasks:
  - {name: prepare, handler: noop}
  - {name: approval, type: wait, depends_on: [prepare], parameters: {signal: approved}}
  - {name: finish, handler: noop, depends_on: [approval]}
";
const CARD: &str = "4111-SECRET-CARD";
const TOKEN_VALUE: &str = "tok-SECRET-VALUE";

pub(crate) async fn start(api: &ApiClient, ty: &str, input: Value) -> Result<String> {
    let v = api.start(ty, input, None).await?;
    Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
}

pub(crate) async fn wait_state(api: &ApiClient, ty: &str, id: &str, state: &str) -> Result<Value> {
    wait_for(&format!("{ty} {id} is {state}"), T, POLL, || async {
        let v = api.get(ty, id).await?;
        anyhow::Ok((v["state"] == state).then_some(v))
    })
    .await
}

/// Waits until the approval task of a `uihold` instance waits for its signal.
pub(crate) async fn wait_waiting(api: &ApiClient, id: &str) -> Result<()> {
    wait_for(
        &format!("uihold {id} waits for its signal"),
        T,
        POLL,
        || async {
            let v = api.get("uihold", id).await?;
            let waiting = v["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["name"] == "approval" && t["state"] == "waiting_for_dependency");
            anyhow::Ok(waiting.then_some(()))
        },
    )
    .await
}

/// The `data-state` of every DAG node, by task name.
pub(crate) const DAG_STATES: &str = "return Object.fromEntries([...document.querySelectorAll('#dag g.node')].map(g => [g.dataset.task, g.dataset.state]))";

/// Opens an instance page and waits until it has loaded.
pub(crate) async fn open_instance(b: &Browser, base: &str, ty: &str, id: &str) -> Result<()> {
    b.goto(&format!("{base}/ui#/instances/{ty}/{id}")).await?;
    b.wait_eval(
        &format!("the page of {id} loaded"),
        T,
        "return document.getElementById('view').dataset.loaded === 'true' && document.querySelectorAll('#dag g.node').length > 0",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_in_a_browser() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let api = cluster.api();
    let base = api.base_url().to_owned();
    api.register_definition(SHOP).await?;
    api.register_definition(HOLD).await?;
    api.register_definition(shapes::ROUTING).await?;
    api.register_definition(shapes::SAGA).await?;
    // Tasks queue until the worker is assigned the new types' task topics:
    // wait for that (the node registry says so), or `validate` would be the bottleneck.
    for ty in ["uishop", "uihold"] {
        wait_for(
            &format!("the worker holds {ty}'s task partitions"),
            T,
            POLL,
            || async {
                let r = api.send(reqwest::Method::GET, "/v1/nodes", None).await?;
                let held = r.body["nodes"].as_array().into_iter().flatten().any(|n| {
                    n["role"] == "worker"
                        && n["labels"].as_object().is_some_and(|l| {
                            l.keys().any(|k| {
                                k.starts_with("weft.partition.") && k.contains(&format!(".{ty}."))
                            })
                        })
                });
                anyhow::Ok(held.then_some(()))
            },
        )
        .await?;
    }
    let input = json!({"customer": "ada", "secrets": {"card": CARD}, "api_token": TOKEN_VALUE});
    let mut shop = Vec::new();
    for _ in 0..3 {
        shop.push(start(&api, "uishop", input.clone()).await?);
    }
    for id in &shop {
        wait_state(&api, "uishop", id, "completed").await?;
    }
    let report = wait_for("uishop analytics count 3 completed", T, POLL, || async {
        let r = api
            .send(reqwest::Method::GET, "/v1/analytics/uishop", None)
            .await?;
        anyhow::Ok((r.body["finished"]["completed"] == 3).then_some(r.body))
    })
    .await?;
    ensure!(
        report["bottleneck"] == "charge",
        "the API's bottleneck: {report}"
    );

    let b = Browser::start().await?;
    let result = click_through(&b, &api, &base, &shop, &report, &cluster).await;
    if result.is_err() {
        let _ = b.screenshot("failure").await;
    }
    b.close().await;
    result
}

async fn click_through(
    b: &Browser,
    api: &ApiClient,
    base: &str,
    shop: &[String],
    report: &Value,
    cluster: &TestCluster,
) -> Result<()> {
    // Types: the analytics at a glance.
    b.goto(&format!("{base}/ui")).await?;
    let row = b
        .wait_eval(
            "the uishop row shows 3 started",
            T,
            "const r = document.querySelector('tr[data-type=uishop]'); if (!r) return null;
             const cells = [...r.cells].map(c => c.textContent.trim());
             return cells[2] === '3' ? cells : null",
        )
        .await?;
    ensure!(row[3] == "0", "in flight: {row}");
    ensure!(row[4] == "100.0 %", "success rate: {row}");
    ensure!(
        row[8] == report["bottleneck"].as_str().unwrap_or("?"),
        "bottleneck cell: {row}"
    );
    b.screenshot("types").await?;

    // Instances: a click on the type, the live counts, a state filter, pages.
    b.click("tr[data-type=uishop] a.type-link").await?;
    let ids = b
        .wait_eval(
            "the uishop instances are listed",
            T,
            "const rows = [...document.querySelectorAll('#instances tr[data-instance]')];
             return rows.length === 3 && document.querySelector('[data-count=completed] b') ? rows.map(r => [r.dataset.instance, r.dataset.state]) : null",
        )
        .await?;
    let listed: BTreeSet<String> = ids
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            ensure!(p[1] == "completed", "listed as {}", p[1]);
            Ok(p[0].as_str().unwrap_or_default().to_owned())
        })
        .collect::<Result<_>>()?;
    ensure!(
        listed == shop.iter().cloned().collect(),
        "listed {listed:?}, started {shop:?}"
    );
    let completed = b
        .eval(
            "return document.querySelector('[data-count=completed] b').textContent",
            json!([]),
        )
        .await?;
    ensure!(completed == "3", "completed count {completed}");
    b.screenshot("instances").await?;
    b.click("#filter input[value=failed]").await?;
    b.click("#filter button[type=submit]").await?;
    b.wait_eval("the failed filter shows none", T, "return location.hash.includes('state=failed') && document.querySelector('#instances td.muted')?.textContent === 'No instances match.'").await?;
    b.goto(&format!("{base}/ui#/types/uishop?limit=2")).await?;
    let first = b.wait_eval("a first page of 2", T, "const r = [...document.querySelectorAll('#instances tr[data-instance]')]; return r.length === 2 && document.getElementById('next-page') ? r.map(x => x.dataset.instance) : null").await?;
    b.click("#next-page").await?;
    let second = b.wait_eval("a second page of 1", T, "const r = [...document.querySelectorAll('#instances tr[data-instance]')]; return r.length === 1 && document.getElementById('prev-page') ? r.map(x => x.dataset.instance) : null").await?;
    let mut paged: Vec<String> = first
        .as_array()
        .into_iter()
        .chain(second.as_array())
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    paged.sort();
    let mut want = shop.to_vec();
    want.sort();
    ensure!(paged == want, "pages {paged:?}, instances {want:?}");
    let pager = b
        .eval(
            "return document.querySelector('.pager').textContent",
            json!([]),
        )
        .await?;
    ensure!(
        pager
            .as_str()
            .is_some_and(|t| t.contains("page 2") && !t.contains("null")),
        "pager: {pager}"
    );

    instance_page(b, api, base, &shop[0]).await?;
    shapes::decisions_groups_and_sagas(b, api, base).await?;
    dead::redrive(b, api, base, &cluster.bootstrap(), &shop[0]).await?;
    actions::live_and_actions(b, api, base).await?;
    definitions_and_nodes(b, api, base, cluster).await
}

async fn instance_page(b: &Browser, api: &ApiClient, base: &str, id: &str) -> Result<()> {
    open_instance(b, base, "uishop", id).await?;
    let states = b.eval(DAG_STATES, json!([])).await?;
    ensure!(
        states
            == json!({"validate": "completed", "reserve": "completed", "charge": "completed", "ship": "completed"}),
        "DAG {states}"
    );
    let inst = api.get("uishop", id).await?;
    let seq = inst["sequence_number"].as_u64().context("seq")?;
    let rows = b
        .eval(
            "return document.querySelectorAll('#history tr.event').length",
            json!([]),
        )
        .await?;
    ensure!(
        rows == json!(seq.min(50)),
        "history rows {rows}, events {seq}"
    );
    let spans = b
        .wait_eval("the waterfall shows the tasks", T, "const s = [...document.querySelectorAll('#waterfall .wf-row')].map(r => r.dataset.span); return s.includes('task charge') ? s : null")
        .await?;
    for t in ["validate", "reserve", "charge", "ship"] {
        ensure!(
            spans
                .as_array()
                .is_some_and(|s| s.contains(&json!(format!("task {t}")))),
            "spans {spans}"
        );
    }
    // Secrets are never rendered; their keys are, with the value hidden.
    let html = b
        .eval("return document.documentElement.outerHTML", json!([]))
        .await?;
    let html = html.as_str().unwrap_or_default();
    ensure!(
        !html.contains(CARD) && !html.contains(TOKEN_VALUE),
        "a secret is on the page"
    );
    ensure!(
        html.contains("hidden") && html.contains("customer"),
        "the input is not shown"
    );
    b.screenshot("instance").await?;

    // A causation link finds the causing event in the history.
    let events = api.events("uishop", id).await?;
    let events = events["events"].as_array().context("events")?;
    let (effect, cause) = events
        .iter()
        .find_map(|e| {
            let c = e["causation_id"].as_str()?;
            let cause = events.iter().find(|x| x["event_id"] == c)?;
            Some((
                e["sequence_number"].clone(),
                cause["sequence_number"].clone(),
            ))
        })
        .context("an event whose cause is in the history")?;
    b.click(&format!("#history tr.event[data-seq='{effect}']"))
        .await?;
    b.click("#history button.causation").await?;
    b.wait_eval(
        &format!("event {cause} is highlighted"),
        T,
        &format!("return !!document.querySelector(\"#history tr.flash[data-seq='{cause}']\")"),
    )
    .await?;

    // The slider shows the state after the first event: nothing has run.
    b.eval("const s = document.getElementById('seq-slider'); s.value = '1'; s.dispatchEvent(new Event('input'));", json!([])).await?;
    b.wait_eval("the DAG shows the state after event 1", T, "return document.getElementById('seq-label').textContent.startsWith('after event 1 ') && [...document.querySelectorAll('#dag g.node')].every(g => g.dataset.state === 'pending')").await?;
    b.click("#seq-live").await?;
    b.wait_eval("back to the current state", T, "return [...document.querySelectorAll('#dag g.node')].every(g => g.dataset.state === 'completed')").await?;
    Ok(())
}

async fn definitions_and_nodes(
    b: &Browser,
    api: &ApiClient,
    base: &str,
    cluster: &TestCluster,
) -> Result<()> {
    let v2 = api
        .register_definition(&SHOP.replace("ms: 3000", "ms: 3500"))
        .await?;
    ensure!(v2["version"] == 2, "{v2}");
    b.goto(&format!("{base}/ui#/definitions/uishop")).await?;
    let diff = b
        .wait_eval("the diff of v1 and v2", T, "const d = document.getElementById('diff'); if (!d || !d.dataset.changes) return null; return {add: [...d.querySelectorAll('.add')].map(x => x.textContent), del: [...d.querySelectorAll('.del')].map(x => x.textContent), versions: document.querySelectorAll('#versions tr[data-version]').length}")
        .await?;
    ensure!(diff["versions"] == 2, "{diff}");
    let has = |k: &str, s: &str| {
        diff[k]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x.as_str().is_some_and(|x| x.contains(s))))
    };
    ensure!(has("add", "3500") && has("del", "3000"), "diff {diff}");
    b.screenshot("definition-diff").await?;

    b.goto(&format!("{base}/ui#/nodes")).await?;
    let orch = cluster.orchestrator(0).node_id().to_owned();
    let nodes = b
        .wait_eval("the nodes page lists the orchestrator and the worker", T, "const r = [...document.querySelectorAll('#nodes tr[data-node]')].map(x => [x.dataset.node, x.dataset.role, x.dataset.health]); return r.some(x => x[1] === 'worker') && r.some(x => x[1] === 'orchestrator') ? r : null")
        .await?;
    ensure!(
        nodes
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n[0] == orch.as_str() && n[2] == "healthy")),
        "nodes {nodes}, orchestrator {orch}"
    );
    b.screenshot("nodes").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_history_opens_a_page_at_a_time() -> Result<()> {
    large::run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_asks_for_a_token_and_hides_what_the_role_cannot_do() -> Result<()> {
    auth::run().await
}
