//! Schedules' overlap policy with API authentication on, across two
//! orchestrator replicas (issue 18 item 2), on the real binaries and a real
//! broker. Runs of type `nap` sleep 3 s; two schedules fire every second:
//!
//! - `overlap: skip`: runs never overlap (each starts after the previous one
//!   ended, from their timestamps) and ticks are recorded as skipped;
//! - `overlap: cancel_previous`: each run is cancelled, with a reason naming
//!   the schedule, when the next tick starts.
//!
//! Each schedule's name is chosen so that it is driven by one replica while
//! the ids its ticks would have had before runs were placed on the
//! schedule's own partition (`schedule:<name>:<tick>`) all land on the other
//! replica's partitions: the previous run was then only visible through the
//! other replica's API, which answered 401 (a replica has no credential), and
//! both policies acted as if the previous run had ended.

mod issue18;
mod security;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde_json::json;
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};
use weft_orchestrator::partitioner::Partitioner;
use weft_shared::event::now_ms;
use weft_shared::ids::InstanceId;

use security::support::{random_secret, sha256_hex};

const TYPE: &str = "nap";
const DEF: &str =
    "type: nap\ntasks:\n  - name: doze\n    handler: sleep\n    parameters: {ms: 3000}\n";
const TOPIC: &str = "weft.nap.events";
const EVERY_MS: i64 = 1_000;
/// Ticks after the schedule is created whose old-scheme ids must all be remote.
const REMOTE_TICKS: i64 = 8;
const DEADLINE: Duration = Duration::from_secs(45);
const POLL: Duration = Duration::from_millis(250);

/// One run of a schedule, as the API shows it.
#[derive(Debug)]
struct Run {
    id: String,
    tick_ms: i64,
    state: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

/// A client of replica `i` that sends `token`.
fn client(cluster: &TestCluster, i: usize, token: &str) -> Result<ApiClient> {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()?;
    Ok(ApiClient::with_http(cluster.api_url(i), http))
}

/// The partitions of [`TOPIC`] replica `api` owns.
async fn owned(api: &ApiClient) -> Result<BTreeSet<i32>> {
    let r = api.send(Method::GET, "/readyz", None).await?;
    let prefix = format!("{TOPIC}/");
    Ok(r.body["partitions"]
        .as_object()
        .context("readyz partitions")?
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
        .collect())
}

/// A schedule name (`<stem>-<i>`) that hashes to a partition in `mine`
/// while the ids of its next [`REMOTE_TICKS`] ticks under the previous id
/// scheme all hash to partitions outside it.
fn cross_replica_name(stem: &str, mine: &BTreeSet<i32>, partitions: i32) -> Result<String> {
    let p = Partitioner::Murmur2;
    let first = (now_ms() / EVERY_MS + 1) * EVERY_MS;
    for i in 0..5_000_000u32 {
        let name = format!("{stem}-{i}");
        if !mine.contains(&p.partition(name.as_bytes(), partitions)) {
            continue;
        }
        let remote = (0..REMOTE_TICKS + 2).all(|k| {
            let key = format!("schedule:{name}:{}", first + k * EVERY_MS);
            let id = InstanceId::for_idempotency_key(TYPE, &key).to_string();
            !mine.contains(&p.partition(id.as_bytes(), partitions))
        });
        if remote {
            return Ok(name);
        }
    }
    bail!("no name for {stem} whose old-scheme tick ids are all remote")
}

async fn create(api: &ApiClient, name: &str, overlap: &str) -> Result<()> {
    let body =
        json!({"name": name, "workflow_type": TYPE, "every": "1s", "overlap": overlap}).to_string();
    let r = api
        .send(
            Method::POST,
            "/v1/schedules",
            Some(("application/json", body)),
        )
        .await?;
    ensure!(r.status.is_success(), "create {name}: {r:?}");
    Ok(())
}

/// The runs of schedule `name`, oldest first.
async fn runs(api: &ApiClient, name: &str) -> Result<Vec<Run>> {
    let v = api.list(&format!("type={TYPE}&limit=1000")).await?;
    let mut out = Vec::new();
    for i in v["items"].as_array().context("items")? {
        let id = i["instance_id"].as_str().context("id")?.to_owned();
        let inst = api.get(TYPE, &id).await?;
        if inst["input"]["weft_schedule"]["name"] != name {
            continue;
        }
        let num = |f: &str| inst[f].as_i64().with_context(|| format!("{f} of {inst}"));
        out.push(Run {
            tick_ms: inst["input"]["weft_schedule"]["tick_ms"]
                .as_i64()
                .context("tick")?,
            state: inst["state"].as_str().context("state")?.to_owned(),
            created_at_ms: num("created_at_ms")?,
            updated_at_ms: num("updated_at_ms")?,
            id,
        });
    }
    out.sort_by_key(|r| r.tick_ms);
    Ok(out)
}

fn ended(state: &str) -> bool {
    state
        .parse::<weft_shared::state::WorkflowState>()
        .is_ok_and(|s| s.is_terminal())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_policies_hold_across_replicas_with_api_auth() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let root = random_secret("root-");
    let policy = format!(
        "[[tokens]]\nname = \"root\"\nsha256 = \"{}\"\nroles = [\"admin:*\"]\n",
        sha256_hex(&root)?
    );
    let policy_file = scratch.path().join("policy.toml");
    std::fs::write(&policy_file, policy)?;
    let cluster = TestCluster::start(
        ClusterOptions::new(2, 1)
            .env("WEFT_AUTH_ENABLED", "true")
            .env("WEFT_AUTH_POLICY_FILE", policy_file.display().to_string()),
    )
    .await?;
    let result = scenario(&cluster, &root).await;
    if result.is_err() {
        cluster.print_logs(120);
    }
    result
}

async fn scenario(cluster: &TestCluster, token: &str) -> Result<()> {
    let (a, b) = (client(cluster, 0, token)?, client(cluster, 1, token)?);
    // Authentication is on: a replica's peers refuse a call without credentials.
    let anon = ApiClient::new(cluster.api_url(1));
    let r = anon.send(Method::GET, "/v1/schedules", None).await?;
    ensure!(r.status == StatusCode::UNAUTHORIZED, "{r:?}");
    a.register_definition(DEF).await?;
    issue18::wait_spread(cluster, &[a.clone(), b.clone()], TYPE).await?;
    let partitions = weft_integration_tests::broker::high_watermarks(&cluster.bootstrap(), TOPIC)
        .await?
        .len() as i32;
    let (own_a, own_b) = (owned(&a).await?, owned(&b).await?);
    ensure!(own_a.is_disjoint(&own_b) && own_a.len() + own_b.len() == partitions as usize);

    // `skip` driven by replica 0, `cancel_previous` by replica 1; both created through the other.
    let skip = cross_replica_name("skip", &own_a, partitions)?;
    let cancel = cross_replica_name("cancel", &own_b, partitions)?;
    create(&b, &skip, "skip").await?;
    create(&a, &cancel, "cancel_previous").await?;

    // Wait for three `skip` runs (two of them ended) and four `cancel_previous` runs.
    wait_for("both schedules ran a few times", DEADLINE, POLL, || async {
        let (s, c) = (runs(&a, &skip).await?, runs(&b, &cancel).await?);
        let enough = s.len() >= 3 && s[..2].iter().all(|r| ended(&r.state)) && c.len() >= 4;
        anyhow::Ok(enough.then_some(()))
    })
    .await?;
    for (api, name) in [(&a, &skip), (&b, &cancel)] {
        let r = api
            .send(Method::POST, &format!("/v1/schedules/{name}/pause"), None)
            .await?;
        ensure!(r.status.is_success(), "pause {name}: {r:?}");
    }

    // skip: no two runs at once, and ticks were skipped.
    let s = runs(&b, &skip).await?;
    overlap_free(&s)?;
    on_partition_of(&s, &skip, partitions)?;
    let progress = issue18::schedule(&b, &skip).await?["progress"].clone();
    ensure!(
        progress["skipped"].as_u64().is_some_and(|n| n >= 1),
        "no tick of {skip} was skipped: {progress}"
    );

    // cancel_previous: a run the next tick found running was cancelled by the
    // schedule (a run that ended before the next tick, the machine being slow,
    // is no overlap either).
    let c = wait_for("the cancels are applied", DEADLINE, POLL, || async {
        let c = runs(&a, &cancel).await?;
        let done = c
            .split_last()
            .is_some_and(|(_, older)| older.iter().all(|r| ended(&r.state)));
        anyhow::Ok(done.then_some(c))
    })
    .await?;
    on_partition_of(&c, &cancel, partitions)?;
    let mut cancelled = 0;
    for w in c.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        if prev.state != "cancelled" {
            ensure!(
                prev.updated_at_ms <= next.created_at_ms,
                "run {} (tick {}) of {cancel} was not cancelled when the next tick started: {prev:?}, next {next:?}",
                prev.id,
                prev.tick_ms
            );
            continue;
        }
        cancelled += 1;
        let history = a.events(TYPE, &prev.id).await?;
        let reason = history["events"]
            .as_array()
            .context("events")?
            .iter()
            .find(|e| e["event_type"] == "workflow.cancelled")
            .map(|e| e["data"].to_string())
            .with_context(|| format!("no workflow.cancelled in {}", prev.id))?;
        ensure!(
            reason.contains(cancel.as_str()) && reason.contains("cancel_previous"),
            "the cancel of {} does not name the schedule: {reason}",
            prev.id
        );
    }
    ensure!(
        cancelled >= 2,
        "{cancelled} runs of {cancel} cancelled by the next tick: {c:?}"
    );
    Ok(())
}

/// Every run is on the partition the schedule's name hashes to (its driver's).
fn on_partition_of(runs: &[Run], name: &str, partitions: i32) -> Result<()> {
    let p = Partitioner::Murmur2;
    let want = p.partition(name.as_bytes(), partitions);
    for r in runs {
        let got = p.partition(r.id.as_bytes(), partitions);
        ensure!(
            got == want,
            "run {} of {name} is on partition {got}, not the schedule's {want}",
            r.id
        );
    }
    Ok(())
}

/// Each run started after the previous one ended.
fn overlap_free(runs: &[Run]) -> Result<()> {
    for w in runs.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        ensure!(
            ended(&prev.state) && prev.updated_at_ms <= next.created_at_ms,
            "runs overlap: {prev:?} was {} when {next:?} started",
            prev.state
        );
    }
    Ok(())
}
