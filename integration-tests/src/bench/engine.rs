//! The engine's runs: the throughput run (many diamonds started at once,
//! completions observed from the orchestrators' metrics, then read back from
//! the list endpoint) and the latency run (one diamond at a time, watched).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use futures::future::join_all;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::records::{causal_chain, segments, Link};
use super::stats::{in_flight, Percentiles};
use crate::ApiClient;

/// The finished-workflows counter every orchestrator serves.
pub const FINISHED_TOTAL: &str = "weft_workflows_finished_total";

/// Milliseconds since the epoch on this machine's clock (the one the
/// orchestrators stamp events with: all processes run here).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Finished workflows of `ty` summed over `apis`: `(completed, ended otherwise)`.
pub async fn finished(apis: &[ApiClient], ty: &str) -> Result<(u64, u64)> {
    let texts = join_all(apis.iter().map(ApiClient::metrics)).await;
    let (mut completed, mut other) = (0, 0);
    for text in texts {
        let (c, o) = finished_in(&text?, ty);
        completed += c;
        other += o;
    }
    Ok((completed, other))
}

/// `(completed, ended otherwise)` of `ty` in one `/metrics` text.
pub fn finished_in(text: &str, ty: &str) -> (u64, u64) {
    let want_type = format!("workflow_type=\"{ty}\"");
    let (mut completed, mut other) = (0.0, 0.0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(FINISHED_TOTAL) else {
            continue;
        };
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            continue;
        };
        if !labels.split(',').any(|l| l == want_type) {
            continue;
        }
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if labels.split(',').any(|l| l == "state=\"completed\"") {
            completed += v;
        } else {
            other += v;
        }
    }
    (completed as u64, other as u64)
}

/// What a throughput run measured.
#[derive(Debug)]
pub struct ThroughputRun {
    pub workflows: usize,
    /// Client clock when the first start request was sent.
    pub first_start_ms: i64,
    /// From the first start request until every start request was answered.
    pub start_phase: Duration,
    /// Round trips of the start requests, ms.
    pub start_requests: Percentiles,
    /// `(created_at_ms, updated_at_ms)` of every completed instance, by completion time.
    pub instances: Vec<(i64, i64)>,
    /// When the metrics first showed every workflow completed (from the first start).
    pub observed_after: Duration,
}

impl ThroughputRun {
    /// Completion times, sorted.
    pub fn done_ms(&self) -> Vec<i64> {
        self.instances.iter().map(|i| i.1).collect()
    }

    /// From the first start request to the last completion.
    pub fn wall_s(&self) -> f64 {
        let last = self.instances.iter().map(|i| i.1).max().unwrap_or(0);
        ((last - self.first_start_ms).max(1)) as f64 / 1000.0
    }

    pub fn latency(&self) -> Percentiles {
        Percentiles::of_ms(self.instances.iter().map(|(c, u)| u - c))
    }

    /// Mean and peak workflows in flight (created, not yet completed).
    pub fn in_flight(&self) -> (f64, usize) {
        in_flight(&self.instances)
    }
}

/// How often the orchestrators' finished counters are read during a throughput run.
const COUNTER_POLL: Duration = Duration::from_millis(50);

/// A throughput run stalls (fails) when no workflow completes for this long.
const STALL: Duration = Duration::from_secs(30);

/// Starts `n` diamonds with at most `in_flight` started and not yet seen
/// completed (closed loop: a new one starts as one completes) and at most
/// `concurrency` start requests open, spread over `apis`. Completions are seen
/// in the orchestrators' finished counters (read every 50 ms; fails on any
/// other end, when nothing completes for 30 s, or after `deadline`); then
/// every completed instance is read back from the list endpoint.
///
/// `on_all_completed` runs as soon as the counters show all `n` (for the
/// cost readings, before the list reads add their own work).
pub async fn throughput(
    apis: &[ApiClient],
    ty: &str,
    n: usize,
    in_flight: usize,
    concurrency: usize,
    deadline: Duration,
    on_all_completed: impl FnOnce(),
) -> Result<ThroughputRun> {
    let (base_completed, base_other) = finished(apis, ty).await?;
    let (seen_tx, seen_rx) = tokio::sync::watch::channel(0u64);
    let first_start_ms = now_ms();
    let t0 = Instant::now();
    let starting = async {
        let answers: Vec<(String, f64)> = stream::iter(0..n)
            .then(|i| {
                let mut seen = seen_rx.clone();
                async move {
                    // Gate: wait until fewer than `in_flight` are open.
                    while i as u64 >= *seen.borrow_and_update() + in_flight as u64 {
                        if seen.changed().await.is_err() {
                            break; // the watcher ended (it failed; try_join reports it)
                        }
                    }
                    i
                }
            })
            .map(|i| {
                let api = &apis[i % apis.len()];
                async move {
                    let sent = Instant::now();
                    let v = api
                        .start(ty, json!({ "n": i }), None)
                        .await
                        .with_context(|| format!("starting workflow {i}"))?;
                    let id = v["instance_id"]
                        .as_str()
                        .with_context(|| format!("no instance_id in the start answer {v}"))?
                        .to_owned();
                    Ok::<_, anyhow::Error>((id, sent.elapsed().as_secs_f64() * 1000.0))
                }
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        Ok::<_, anyhow::Error>((answers, t0.elapsed()))
    };
    let watching = async {
        let mut last_report = Instant::now();
        let (mut last_count, mut last_change) = (0, Instant::now());
        loop {
            tokio::time::sleep(COUNTER_POLL).await;
            let (completed, other) = finished(apis, ty).await?;
            let (completed, other) = (completed - base_completed, other - base_other);
            ensure!(
                other == 0,
                "{other} workflow(s) ended other than completed (see {FINISHED_TOTAL})"
            );
            let _ = seen_tx.send(completed);
            if completed >= n as u64 {
                return Ok::<_, anyhow::Error>(t0.elapsed());
            }
            if completed != last_count {
                (last_count, last_change) = (completed, Instant::now());
            }
            if last_change.elapsed() >= STALL {
                let until = last_change.duration_since(t0).as_secs_f64();
                bail!(
                    "stalled: {completed} of {n} workflows completed, none in the last \
                     {STALL:?} (the {completed} in {until:.1} s from the first start: {:.1}/s)",
                    completed as f64 / until.max(1e-3)
                );
            }
            ensure!(
                t0.elapsed() < deadline,
                "{completed} of {n} workflows completed within {deadline:?}"
            );
            if last_report.elapsed() >= Duration::from_secs(10) {
                println!(
                    "    {:>6.1} s: {completed} of {n} completed",
                    t0.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
        }
    };
    let ((answers, start_phase), observed_after) = tokio::try_join!(starting, watching)?;
    on_all_completed();

    let ids: HashSet<&str> = answers.iter().map(|(id, _)| id.as_str()).collect();
    ensure!(
        ids.len() == n,
        "{} distinct instance ids for {n} starts",
        ids.len()
    );
    let mut instances = read_completed(&apis[0], ty, &ids, deadline).await?;
    instances.sort_by_key(|i| i.1);
    Ok(ThroughputRun {
        workflows: n,
        first_start_ms,
        start_phase,
        start_requests: Percentiles::of(answers.iter().map(|(_, ms)| *ms)),
        instances,
        observed_after,
    })
}

/// Pages through `GET /v1/workflows?type=..&state=completed` until every id
/// of `ids` is there (the projection may trail the counters by a batch):
/// their `(created_at_ms, updated_at_ms)`.
async fn read_completed(
    api: &ApiClient,
    ty: &str,
    ids: &HashSet<&str>,
    deadline: Duration,
) -> Result<Vec<(i64, i64)>> {
    let t0 = Instant::now();
    loop {
        let mut found = Vec::with_capacity(ids.len());
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("type={ty}&state=completed&limit=1000");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = api.list(&q).await.context("listing completed workflows")?;
            for item in page["items"].as_array().into_iter().flatten() {
                if item["instance_id"]
                    .as_str()
                    .is_some_and(|id| ids.contains(id))
                {
                    let c = item["created_at_ms"].as_i64().context("created_at_ms")?;
                    let u = item["updated_at_ms"].as_i64().context("updated_at_ms")?;
                    found.push((c, u));
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => break,
            }
        }
        if found.len() == ids.len() {
            return Ok(found);
        }
        if t0.elapsed() > deadline {
            bail!(
                "the list endpoint shows {} of {} workflows completed",
                found.len(),
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One diamond run alone.
#[derive(Debug)]
pub struct Sequential {
    /// `workflow.created` → `workflow.completed`, event timestamps.
    pub server_ms: i64,
    /// Start request sent → the watch stream's `end` frame received.
    pub client_ms: f64,
    pub links: Vec<Link>,
    /// The history as the watch stream sent it.
    pub events: Vec<Value>,
}

/// Runs `runs` diamonds one after another, each watched to its end.
pub async fn sequential(
    apis: &[ApiClient],
    ty: &str,
    runs: usize,
    timeout: Duration,
) -> Result<Vec<Sequential>> {
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        let api = &apis[i % apis.len()];
        let sent = Instant::now();
        let v = api
            .start(ty, json!({ "n": i }), None)
            .await
            .context("starting a workflow")?;
        let id = v["instance_id"]
            .as_str()
            .with_context(|| format!("no instance_id in {v}"))?
            .to_owned();
        let frames = watch_to_end(apis, ty, &id, timeout).await?;
        let client_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let end = frames
            .iter()
            .find(|(name, _)| name == "end")
            .with_context(|| format!("the watch of {id} has no end frame"))?;
        ensure!(
            end.1["state"] == "completed",
            "workflow {id} ended {}",
            end.1
        );
        let events: Vec<Value> = frames
            .into_iter()
            .filter(|(name, _)| name == "event")
            .map(|(_, v)| v)
            .collect();
        let ts = |ty: &str| {
            events
                .iter()
                .find(|e| e["event_type"] == ty)
                .and_then(|e| e["timestamp_ms"].as_i64())
                .with_context(|| format!("no {ty} in the history of {id}"))
        };
        let server_ms = ts("workflow.completed")? - ts("workflow.created")?;
        let links = causal_chain(&events).with_context(|| format!("the history of {id}"))?;
        out.push(Sequential {
            server_ms,
            client_ms,
            links,
            events,
        });
    }
    Ok(out)
}

/// Watches `id` until the stream ends, on whichever orchestrator has it
/// (404 until its start is applied).
async fn watch_to_end(
    apis: &[ApiClient],
    ty: &str,
    id: &str,
    timeout: Duration,
) -> Result<Vec<(String, Value)>> {
    let t0 = Instant::now();
    let mut k = 0;
    loop {
        let api = &apis[k % apis.len()];
        k += 1;
        match api.watch(ty, id, None, timeout).await {
            Ok(frames) => return Ok(frames),
            // 404 until the start is applied; 503 while its partition replays.
            Err(e)
                if (format!("{e:#}").contains("404") || format!("{e:#}").contains("503"))
                    && t0.elapsed() < timeout =>
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(e.context(format!("watching {id}"))),
        }
    }
}

/// Per span of the causal chain between independently stamped events (see
/// [`segments`]): its label, round trips and times over `runs`.
pub fn link_profile(runs: &[Sequential]) -> Vec<(String, usize, Percentiles)> {
    let spans: Vec<Vec<Link>> = runs.iter().map(|r| segments(&r.links)).collect();
    let depth = spans.iter().map(Vec::len).max().unwrap_or(0);
    (0..depth)
        .map(|i| {
            let mut labels: BTreeMap<(String, usize), usize> = BTreeMap::new();
            let mut ms = Vec::new();
            for s in spans.iter().filter_map(|s| s.get(i)) {
                // B and C race: the label names the task that came last most often.
                *labels
                    .entry((format!("{} -> {}", s.cause, s.effect), s.hops))
                    .or_default() += 1;
                ms.push(s.ms);
            }
            let (label, hops) = labels
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map(|(l, _)| l)
                .unwrap_or_default();
            (label, hops, Percentiles::of_ms(ms))
        })
        .collect()
}

/// Event types per workflow over `runs`' histories.
pub fn events_per_workflow(runs: &[Sequential]) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in runs {
        for e in &r.events {
            *counts
                .entry(e["event_type"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    let n = runs.len().max(1) as f64;
    counts.into_iter().map(|(k, v)| (k, v as f64 / n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_counts_by_state_whatever_the_label_order() {
        let text = "# TYPE weft_workflows_finished_total counter\n\
            weft_workflows_finished_total{state=\"completed\",workflow_type=\"diamond\"} 12\n\
            weft_workflows_finished_total{workflow_type=\"diamond\",state=\"failed\"} 1\n\
            weft_workflows_finished_total{state=\"completed\",workflow_type=\"other\"} 5\n";
        assert_eq!(finished_in(text, "diamond"), (12, 1));
        assert_eq!(finished_in(text, "none"), (0, 0));
    }
}
