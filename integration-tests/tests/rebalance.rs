//! Multi-replica orchestrators on a real broker, with real processes: two
//! replicas in one group share the events partitions; while a steady stream of
//! workflows runs, a third replica joins (empty data dir) and then one of the
//! first two is SIGKILLed. Every workflow completes, no decision is recorded
//! twice, the partitions end up spread over the survivors, the joining
//! replica's `/readyz` answers 503 naming the partitions it replays before it
//! answers 200, requests about an instance that reach a replica which does not
//! own it are answered by the owner through forwarding (a cancel of a completed
//! instance: 409 from the owner), starts are refused only with 503 while
//! ownership moves, and every replica lists every instance (paged, merged over
//! the replicas).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

const TYPE: &str = "rebalance";
const DEFINITION: &str = r#"
type: rebalance
tasks:
  - name: first
    handler: sleep
    parameters: {ms: 300}
  - name: second
    handler: sleep
    depends_on: [first]
    parameters: {ms: 200}
  - name: done
    handler: noop
    depends_on: [second]
"#;
const WORKFLOWS: usize = 150;
/// One start every PACE: the stream runs for about 18 s.
const PACE: Duration = Duration::from_millis(120);
const POLL: Duration = Duration::from_millis(100);

/// URLs of the replicas the test treats as alive.
type Targets = Arc<Mutex<Vec<String>>>;

/// One answer of a replica's `/readyz`.
#[derive(Clone, Debug)]
struct Probe {
    status: StatusCode,
    ready: bool,
    /// The partitions it named as replaying.
    replaying: BTreeSet<String>,
    /// `replaying` is exactly the owned partitions not live.
    consistent: bool,
}

/// Every `/readyz` answer, by replica URL, in order.
type Readiness = Arc<Mutex<BTreeMap<String, Vec<Probe>>>>;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("http client")
}

/// Every instance id `base` lists, 40 per page; `None` on a 503.
async fn list_all(http: &reqwest::Client, base: &str) -> Result<Option<BTreeSet<String>>> {
    let mut listed = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{base}/v1/workflows?type={TYPE}&limit=40{cursor}");
        let (status, _, body) = call(http, Method::GET, &url, None).await?;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Ok(None);
        }
        ensure!(status == StatusCode::OK, "{url}: {status} {body}");
        let items = body["items"].as_array().context("items")?;
        ensure!(items.len() <= 40, "{url}: a page of {}", items.len());
        for item in items {
            let id = item["instance_id"].as_str().context("instance_id")?;
            ensure!(listed.insert(id.to_owned()), "{url}: {id} listed twice");
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return Ok(Some(listed)),
        }
    }
}

/// `(status, x-weft-served-by, body)` of one request.
async fn call(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    forwarded_by: Option<&str>,
) -> Result<(StatusCode, String, Value)> {
    let mut req = http.request(method.clone(), url);
    if method == Method::POST {
        req = req.header("content-type", "application/json").body("{}");
    }
    if let Some(by) = forwarded_by {
        req = req.header("x-weft-forwarded-by", by);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let served_by = resp
        .headers()
        .get("x-weft-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, served_by, body))
}

/// Owned partitions (`scope -> live`) of the replica at `base`.
async fn owned(http: &reqwest::Client, base: &str) -> Result<BTreeMap<String, bool>> {
    let (_, _, v) = call(http, Method::GET, &format!("{base}/readyz"), None).await?;
    serde_json::from_value(v["partitions"].clone()).context("readyz partitions")
}

/// Waits until `bases` together own all `total` partitions, each partition
/// once, each replica at least one, all live.
async fn wait_spread(http: &reqwest::Client, bases: &[String], total: usize) -> Result<()> {
    wait_for(
        &format!("{} replicas sharing {total} live partitions", bases.len()),
        Duration::from_secs(60),
        POLL,
        || async {
            let (mut all, mut claims) = (BTreeSet::new(), 0);
            for b in bases {
                let mine = owned(http, b).await?;
                if mine.is_empty() || mine.values().any(|live| !live) {
                    return Ok(None);
                }
                claims += mine.len();
                all.extend(mine.into_keys());
            }
            anyhow::Ok((all.len() == total && claims == total).then_some(()))
        },
    )
    .await
}

/// Partitions of `topic`, from the broker's metadata.
fn partition_count(cluster: &TestCluster, topic: &str) -> Result<usize> {
    let consumer: BaseConsumer = cluster.broker().client_config().create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = md.topics().first().map_or(0, |t| t.partitions().len());
    ensure!(n > 0, "{topic} has no partitions");
    Ok(n)
}

/// Starts `WORKFLOWS` instances at a steady pace, each on the next replica in
/// `targets` (another one if that fails); reports how many are started.
async fn start_stream(
    targets: Targets,
    progress: watch::Sender<usize>,
    refused: Arc<AtomicUsize>,
) -> Result<Vec<String>> {
    let began = tokio::time::Instant::now();
    let mut ids = Vec::new();
    for i in 0..WORKFLOWS {
        tokio::time::sleep_until(began + PACE * i as u32).await;
        let key = format!("rebalance-{i}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempt = i;
        let id = loop {
            let base = {
                let t = targets.lock().expect("targets");
                t[attempt % t.len()].clone()
            };
            // The same idempotency key names the same instance: a retry is safe.
            // Only "not now" is retried: 503 (ownership moving) or no connection
            // (the replica was just killed); any other answer fails the test.
            let body = json!({ "input": { "i": i }, "idempotency_key": key }).to_string();
            let sent = ApiClient::new(&base)
                .send(
                    Method::POST,
                    &format!("/v1/workflows/{TYPE}"),
                    Some(("application/json", body)),
                )
                .await;
            let why = match sent {
                Ok(r) if r.status == StatusCode::ACCEPTED => {
                    break r.body["instance_id"].as_str().context("id")?.to_owned()
                }
                Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                    format!("503 {}", r.body)
                }
                Ok(r) => bail!("start {i} via {base}: {} {}", r.status, r.body),
                Err(e) => format!("{e:#}"),
            };
            ensure!(
                Instant::now() < deadline,
                "start {i} not accepted within 30 s: {why}"
            );
            eprintln!("start {i} via {base} not accepted, trying another replica: {why}");
            refused.fetch_add(1, Ordering::SeqCst);
            attempt += 1;
            tokio::time::sleep(POLL).await;
        };
        ids.push(id);
        progress.send_replace(ids.len());
    }
    Ok(ids)
}

/// One history: no idempotency key or event id twice (so no decision twice),
/// each task scheduled and completed once, one `workflow.completed`, at the end.
fn check_history(id: &str, events: &[Value]) -> Result<()> {
    let mut keys = BTreeSet::new();
    let mut event_ids = BTreeSet::new();
    for e in events {
        let key = e["idempotency_key"].as_str().unwrap_or_default();
        let kind = e["metadata"]["weft.source_kind"]
            .as_str()
            .unwrap_or("input");
        ensure!(
            keys.insert(key),
            "{id}: {kind} with idempotency key {key} twice: {e}"
        );
        ensure!(
            event_ids.insert(e["event_id"].as_str().unwrap_or_default()),
            "{id}: event id twice: {e}"
        );
    }
    let count = |t: &str| events.iter().filter(|e| e["event_type"] == t).count();
    ensure!(
        count("task.scheduled") == 3 && count("task.completed") == 3,
        "{id}: not 3 tasks scheduled and completed once each"
    );
    ensure!(
        count("workflow.completed") == 1,
        "{id}: not one workflow.completed"
    );
    ensure!(
        events
            .last()
            .is_some_and(|e| e["event_type"] == "workflow.completed"),
        "{id}: history does not end completed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_move_between_replicas_and_requests_reach_the_owner() -> Result<()> {
    let began = Instant::now();
    let mut cluster = TestCluster::start(ClusterOptions::new(2, 2)).await?;
    let result = scenario(&mut cluster).await;
    eprintln!("rebalance scenario took {:?}", began.elapsed());
    if let Err(e) = &result {
        cluster.print_logs(80);
        // A panic keeps the cluster's directory (logs, data) for a look.
        panic!("{e:#}");
    }
    result
}

async fn scenario(cluster: &mut TestCluster) -> Result<()> {
    let http = http();
    cluster.api().register_definition(DEFINITION).await?;
    let first = vec![cluster.api_url(0), cluster.api_url(1)];
    let topic = format!("weft.{TYPE}.events");
    let total = tokio::task::block_in_place(|| partition_count(cluster, &topic))?;
    wait_spread(&http, &first, total).await?;

    // Watch every replica's readiness: (status, replaying partitions) by node.
    let watched: Targets = Arc::new(Mutex::new(first.clone()));
    let readiness: Readiness = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn({
        let (http, watched, readiness, stop) = (
            http.clone(),
            watched.clone(),
            readiness.clone(),
            stop.clone(),
        );
        async move {
            while !stop.load(Ordering::SeqCst) {
                let bases = watched.lock().expect("watched").clone();
                for b in bases {
                    if let Ok((status, _, v)) =
                        call(&http, Method::GET, &format!("{b}/readyz"), None).await
                    {
                        let replaying: BTreeSet<String> = v["replaying"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|p| p.as_str().map(str::to_owned))
                            .collect();
                        let not_live: BTreeSet<String> = v["partitions"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(_, live)| **live == json!(false))
                            .map(|(p, _)| p.clone())
                            .collect();
                        readiness
                            .lock()
                            .expect("readiness")
                            .entry(b)
                            .or_default()
                            .push(Probe {
                                status,
                                ready: v["ready"] == json!(true),
                                consistent: replaying == not_live,
                                replaying,
                            });
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    let targets: Targets = Arc::new(Mutex::new(first.clone()));
    let (progress_tx, mut progress) = watch::channel(0usize);
    let refused = Arc::new(AtomicUsize::new(0));
    let starter = tokio::spawn(start_stream(targets.clone(), progress_tx, refused.clone()));
    let waited = Duration::from_secs(60);
    tokio::time::timeout(waited, progress.wait_for(|n| *n >= 30)).await??;

    // A third replica joins: the group hands it some partitions, which it replays from 0.
    let third = cluster.launch_orchestrator()?;
    let third_url = cluster.api_url(third);
    watched.lock().expect("watched").push(third_url.clone());
    cluster.wait_ready(third).await?;
    targets.lock().expect("targets").push(third_url.clone());
    let three = vec![first[0].clone(), first[1].clone(), third_url.clone()];
    wait_spread(&http, &three, total).await?;
    eprintln!("third replica owns {:?}", owned(&http, &third_url).await?);

    // SIGKILL one of the first two while workflows keep coming.
    tokio::time::timeout(waited, progress.wait_for(|n| *n >= 90)).await??;
    targets.lock().expect("targets").retain(|u| *u != first[0]);
    watched.lock().expect("watched").retain(|u| *u != first[0]);
    cluster.kill_orchestrator(0);
    let survivors = vec![first[1].clone(), third_url.clone()];
    let ids = starter.await??;
    wait_spread(&http, &survivors, total).await?;

    // Every workflow completes; asked through one survivor, which forwards as needed.
    let api = cluster.api_at(1);
    let mut pending: BTreeSet<String> = ids.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !pending.is_empty() {
        let mut done = Vec::new();
        for id in &pending {
            match api.get(TYPE, id).await {
                Ok(v) if v["state"] == "completed" => done.push(id.clone()),
                Ok(v) if v["state"] == "failed" || v["state"] == "cancelled" => {
                    bail!("{id} ended: {v}")
                }
                _ => {}
            }
        }
        pending.retain(|id| !done.contains(id));
        ensure!(
            Instant::now() < deadline,
            "{} of {WORKFLOWS} workflows not completed in time: {:?}",
            pending.len(),
            pending.iter().take(5).collect::<Vec<_>>()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for id in &ids {
        let h = api.events(TYPE, id).await?;
        check_history(id, h["events"].as_array().context("events")?)?;
    }

    // Requests about an instance reach its owner from either survivor.
    let node = |i: usize| cluster.orchestrator(i).node_id().to_owned();
    let nodes = [node(1), node(third)];
    let id = &ids[0];
    let (owner, other) = wait_for(
        "one survivor to own the instance",
        Duration::from_secs(20),
        POLL,
        || async {
            let mut served = Vec::new();
            for base in &survivors {
                let (status, by, _) = call(
                    &http,
                    Method::GET,
                    &format!("{base}/v1/workflows/{TYPE}/{id}"),
                    None,
                )
                .await?;
                served.push((status, by));
            }
            let ok = served
                .iter()
                .all(|(s, by)| *s == StatusCode::OK && *by == served[0].1);
            let owner = nodes.iter().position(|n| *n == served[0].1);
            anyhow::Ok(ok.then_some(owner).flatten().map(|o| (o, 1 - o)))
        },
    )
    .await?;
    let via = &survivors[other];
    let (status, by, body) = call(
        &http,
        Method::GET,
        &format!("{via}/v1/workflows/{TYPE}/{id}"),
        None,
    )
    .await?;
    ensure!(
        status == StatusCode::OK
            && by == nodes[owner]
            && by != nodes[other]
            && body["state"] == "completed",
        "GET via the non-owner {}: {status}, served by '{by}': {body}",
        nodes[other]
    );
    let (status, by, body) = call(
        &http,
        Method::POST,
        &format!("{via}/v1/workflows/{TYPE}/{id}/cancel"),
        None,
    )
    .await?;
    ensure!(
        by == nodes[owner]
            && status == StatusCode::CONFLICT
            && body["error"].as_str().unwrap_or_default().contains("completed"),
        "POST cancel of a completed instance via the non-owner {}: {status}, served by '{by}': {body}",
        nodes[other]
    );
    eprintln!("POST cancel via {} answered {status} by {by}", nodes[other]);
    // A forwarded request is never forwarded again.
    let (status, by, _) = call(
        &http,
        Method::GET,
        &format!("{via}/v1/workflows/{TYPE}/{id}"),
        Some("test"),
    )
    .await?;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE && by == nodes[other],
        "a forwarded request to the non-owner: {status}, served by '{by}'"
    );

    // Any replica lists every instance: its own partitions merged with its peers'.
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    for base in &survivors {
        let listed = wait_for(
            &format!("{base} to list every instance"),
            Duration::from_secs(30),
            POLL,
            || async {
                let Some(listed) = list_all(&http, base).await? else {
                    return anyhow::Ok(None); // 503: ownership is moving
                };
                anyhow::Ok((listed == all).then_some(listed))
            },
        )
        .await;
        ensure!(
            listed.is_ok(),
            "{base} lists {:?} instances of {}",
            list_all(&http, base).await?.map(|l| l.len()),
            all.len()
        );
    }

    // Readiness: the survivors are ready; replays seen on the way are reported.
    for base in &survivors {
        let api = ApiClient::new(base);
        wait_until(
            &format!("{base} ready"),
            Duration::from_secs(30),
            POLL,
            || api.is_ready(),
        )
        .await?;
    }
    stop.store(true, Ordering::SeqCst);
    monitor.await?;
    let readiness = readiness.lock().expect("readiness").clone();
    for (base, probes) in &readiness {
        // Ready means 200 and nothing in replay; `replaying` names exactly the partitions not live.
        let sound = |p: &Probe| {
            p.consistent
                && p.ready == (p.status == StatusCode::OK)
                && (!p.ready || p.replaying.is_empty())
        };
        ensure!(
            probes.iter().all(sound),
            "{base}: /readyz disagrees with itself: {:?}",
            probes.iter().find(|p| !sound(p))
        );
    }
    // The joining replica replayed the partitions it was given from offset 0, and said so.
    let third_probes = readiness
        .get(&third_url)
        .context("no probe of the third replica")?;
    let replayed: BTreeSet<&String> = third_probes
        .iter()
        .filter(|p| p.status == StatusCode::SERVICE_UNAVAILABLE)
        .flat_map(|p| &p.replaying)
        .collect();
    let seen_ready_after = third_probes
        .iter()
        .skip_while(|p| p.replaying.is_empty())
        .any(|p| p.status == StatusCode::OK);
    ensure!(
        !replayed.is_empty() && seen_ready_after,
        "the third replica never answered 503 naming partitions in replay, then 200 ({} probes)",
        third_probes.len()
    );
    eprintln!(
        "third replica replayed {replayed:?}; starts refused with 503 or no connection and retried: {}",
        refused.load(Ordering::SeqCst)
    );
    cluster.check_processes()?;
    Ok(())
}
