//! Schedules (issue 18 item 2), with the real binaries on a real broker and two
//! orchestrator replicas: a schedule every 2 s (`weft schedule create`)
//! starts exactly one instance per tick while the replica driving it is
//! SIGKILLed and comes back: the other replica takes the schedule over, fires
//! the ticks missed meanwhile (`--catchup all`), and no tick starts twice nor
//! is left out. Its next run times are visible; paused, it starts nothing;
//! resumed, it fires from then on, not the paused time. A cron schedule's next
//! runs follow its time zone. Deleted, it is gone from every replica.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use weft_integration_tests::cli::weft;
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};
use weft_orchestrator::partitioner::Partitioner;

mod issue18;

const DEF: &str = "type: tick\ntasks:\n  - name: only\n    handler: noop\n";
const EVERY_MS: i64 = 2_000;
const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// `tick_ms -> instance ids` of every `tick` instance.
async fn ticks(api: &ApiClient) -> Result<BTreeMap<i64, Vec<String>>> {
    let v = api.list("type=tick&limit=1000").await?;
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for i in v["items"].as_array().context("items")? {
        let id = i["instance_id"].as_str().context("id")?.to_owned();
        let inst = api.get("tick", &id).await?;
        let t = inst["input"]["weft_schedule"]["tick_ms"]
            .as_i64()
            .with_context(|| format!("no tick in {inst}"))?;
        out.entry(t).or_default().push(id);
    }
    Ok(out)
}

/// Waits until the instances cover `n` ticks in all; returns them.
async fn wait_ticks(api: &ApiClient, n: usize) -> Result<BTreeMap<i64, Vec<String>>> {
    wait_for(&format!("{n} ticks started"), DEADLINE, POLL, || async {
        let t = ticks(api).await?;
        anyhow::Ok((t.len() >= n).then_some(t))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_start_per_tick_across_replicas_and_a_kill() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(2, 1)).await?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}

async fn scenario(cluster: &mut TestCluster) -> Result<()> {
    let (a, b) = (cluster.api_at(0), cluster.api_at(1));
    a.register_definition(DEF).await?;
    issue18::wait_spread(cluster, &[a.clone(), b.clone()], "tick").await?;

    // A cron schedule in a time zone: 02:00 in Paris is 00:00 or 01:00 UTC.
    let out = weft(
        &b,
        &[
            "schedule",
            "create",
            "nightly",
            "--type",
            "tick",
            "--cron",
            "0 2 * * *",
            "--tz",
            "Europe/Paris",
            "--paused",
        ],
        DEADLINE,
    )
    .await?;
    out.ok()?;
    let n = issue18::schedule(&a, "nightly").await?;
    ensure!(
        n["next_runs_ms"].as_array().is_some_and(Vec::is_empty),
        "a paused schedule runs never: {n}"
    );
    weft(&a, &["schedule", "resume", "nightly"], DEADLINE)
        .await?
        .ok()?;
    let n = issue18::schedule(&b, "nightly").await?;
    let next: Vec<i64> = n["next_runs_ms"]
        .as_array()
        .context("next")?
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    ensure!(next.len() == 5, "{n}");
    for t in &next {
        let utc_hour = (t / 3_600_000) % 24;
        ensure!(
            t % 3_600_000 == 0 && (utc_hour == 0 || utc_hour == 1),
            "02:00 Paris is not {t}"
        );
    }
    weft(&a, &["schedule", "delete", "nightly"], DEADLINE)
        .await?
        .ok()?;

    // Every 2 s, catching up every missed tick.
    let out = weft(
        &a,
        &[
            "schedule",
            "create",
            "every2",
            "--type",
            "tick",
            "--every",
            "2s",
            "--catchup",
            "all",
            "--catchup-limit",
            "100",
        ],
        DEADLINE,
    )
    .await?;
    ensure!(out.ok()?.contains("every2"), "{out:?}");
    let s = issue18::schedule(&b, "every2").await?;
    let next: Vec<i64> = s["next_runs_ms"]
        .as_array()
        .context("next")?
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    ensure!(
        next.len() == 5
            && next.iter().all(|t| t % EVERY_MS == 0)
            && next.windows(2).all(|w| w[1] - w[0] == EVERY_MS),
        "{s}"
    );
    let first = wait_ticks(&a, 3).await?;

    // Kill the replica that drives it (the owner of the partition its name hashes to).
    let partitions =
        weft_integration_tests::broker::high_watermarks(&cluster.bootstrap(), "weft.tick.events")
            .await?
            .len() as i32;
    let scope = format!(
        "weft.tick.events/{}",
        Partitioner::Murmur2.partition(b"every2", partitions)
    );
    let mut driver = None;
    for (i, api) in [&a, &b].into_iter().enumerate() {
        let r = api.send(Method::GET, "/readyz", None).await?;
        if r.body["partitions"].get(&scope).is_some() {
            driver = Some(i);
        }
    }
    let driver = driver.context("no replica owns the schedule's partition")?;
    let survivor = cluster.api_at(1 - driver);
    cluster.kill_orchestrator(driver);
    let killed_at = weft_shared::event::now_ms();
    // The survivor takes it over and catches up the ticks missed meanwhile.
    let after = wait_for("ticks after the kill", DEADLINE, POLL, || async {
        let t = ticks(&survivor).await?;
        anyhow::Ok(
            t.keys()
                .filter(|k| **k > killed_at + 3 * EVERY_MS)
                .count()
                .ge(&2)
                .then_some(t),
        )
    })
    .await?;
    ensure!(after.len() > first.len());
    cluster.orchestrator_mut(driver).process_mut().start()?;
    cluster.wait_ready(driver).await?;
    let back = cluster.api_at(driver);
    let seen = ticks(&back).await?.len();
    let all = wait_ticks(&back, seen + 3).await?;

    // Exactly one instance per tick, and no tick left out, through the kill.
    let keys: Vec<i64> = all.keys().copied().collect();
    for (t, ids) in &all {
        ensure!(
            ids.len() == 1,
            "tick {t} started {} instances: {ids:?}",
            ids.len()
        );
    }
    for w in keys.windows(2) {
        ensure!(
            w[1] - w[0] == EVERY_MS,
            "a tick is missing between {} and {} (ticks {keys:?})",
            w[0],
            w[1]
        );
    }
    // Some ticks were due while nobody drove the schedule: started late, by the catch-up.
    let mut late = 0;
    for (t, ids) in all.range(killed_at..) {
        let created = back.get("tick", &ids[0]).await?["created_at_ms"]
            .as_i64()
            .context("created_at_ms")?;
        if created - t > 2 * EVERY_MS {
            late += 1;
        }
    }
    ensure!(late >= 1, "no tick was caught up after the kill");
    let progress = issue18::schedule(&back, "every2").await?["progress"].clone();
    ensure!(
        progress["started"]
            .as_u64()
            .is_some_and(|n| n as usize >= all.len()),
        "{progress}"
    );

    // Paused: nothing starts. Resumed: ticks from then on, not the paused time.
    weft(&survivor, &["schedule", "pause", "every2"], DEADLINE)
        .await?
        .ok()?;
    let paused_at = weft_shared::event::now_ms();
    let count = ticks(&survivor).await?.len();
    wait_until("three ticks pass while paused", DEADLINE, POLL, || async {
        weft_shared::event::now_ms() > paused_at + 3 * EVERY_MS + 500
    })
    .await?;
    let during: Vec<i64> = ticks(&survivor)
        .await?
        .into_keys()
        .filter(|t| *t > paused_at + EVERY_MS)
        .collect();
    ensure!(
        during.is_empty(),
        "ticks started while paused: {during:?} (count before {count})"
    );
    let resumed_at = weft_shared::event::now_ms();
    weft(&back, &["schedule", "resume", "every2"], DEADLINE)
        .await?
        .ok()?;
    let resumed = wait_for("a tick after the resume", DEADLINE, POLL, || async {
        let t = ticks(&survivor).await?;
        anyhow::Ok(t.keys().any(|k| *k > resumed_at).then_some(t))
    })
    .await?;
    let skipped: Vec<i64> = resumed
        .keys()
        .copied()
        .filter(|t| *t > paused_at + EVERY_MS && *t <= resumed_at)
        .collect();
    ensure!(
        skipped.is_empty(),
        "the paused time was caught up: {skipped:?}"
    );

    // Deleted: gone from every replica, nothing more starts.
    weft(&survivor, &["schedule", "delete", "every2"], DEADLINE)
        .await?
        .ok()?;
    for api in [&survivor, &back] {
        wait_until("the schedule is gone", DEADLINE, POLL, || async {
            api.send(Method::GET, "/v1/schedules/every2", None)
                .await
                .is_ok_and(|r| r.status == StatusCode::NOT_FOUND)
        })
        .await?;
    }
    Ok(())
}
