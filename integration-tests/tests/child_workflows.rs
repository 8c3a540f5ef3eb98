//! Child workflows (issue 18 item 1), with the real binaries on a real broker,
//! two orchestrator replicas and an orchestrator SIGKILLed mid-run: a parent's
//! `workflow` task starts an instance of another type (on whichever partition
//! and replica), waits for it and completes with its outputs; parent and child
//! name each other (the task's output, the child's `weft_parent` input and
//! `weft.parent_*` metadata); there is exactly one child per attempt; and
//! cancelling a parent cancels its running child.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::StatusCode;
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

mod issue18;

use issue18::task;

const KID: &str = "type: kid\ntasks:\n  - name: work\n    handler: sleep\n    parameters: {ms: 1500}\n  - name: tag\n    handler: noop\n    depends_on: [work]\n";
const MOM: &str = "type: mom\ntasks:\n  - name: spawn\n    handler: workflow\n    parameters: {workflow_type: kid, input: {color: blue}}\n  - name: after\n    handler: noop\n    depends_on: [spawn]\n";
const KID_LONG: &str =
    "type: kidlong\ntasks:\n  - name: work\n    handler: sleep\n    parameters: {ms: 120000}\n";
const MOM_LONG: &str = "type: momlong\ntasks:\n  - name: spawn\n    handler: workflow\n    parameters: {workflow_type: kidlong}\n";
const PARENTS: usize = 6;
const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

/// The instance, retried while its partition changes owner (503).
async fn state(api: &ApiClient, ty: &str, id: &str) -> Result<Value> {
    wait_for(&format!("a read of {ty} {id}"), DEADLINE, POLL, || async {
        api.get(ty, id).await.map(Some)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_run_across_replicas_and_a_kill_once_per_attempt() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(2, 1)).await?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}

async fn scenario(cluster: &mut TestCluster) -> Result<()> {
    let (a, b) = (cluster.api_at(0), cluster.api_at(1));
    for def in [KID, MOM, KID_LONG, MOM_LONG] {
        a.register_definition(def).await?;
    }
    for ty in ["kid", "mom", "kidlong", "momlong"] {
        issue18::wait_spread(cluster, &[a.clone(), b.clone()], ty).await?;
    }

    // Parents start their children; an orchestrator dies while they run.
    let mut moms = Vec::new();
    for n in 0..PARENTS {
        let v = b.start("mom", json!({ "n": n }), None).await?;
        moms.push(v["instance_id"].as_str().context("id")?.to_owned());
    }
    wait_until("children are running", DEADLINE, POLL, || async {
        issue18::instance_ids(&b, "kid")
            .await
            .is_ok_and(|k| k.len() >= PARENTS / 2)
    })
    .await?;
    cluster.kill_orchestrator(0);
    cluster.orchestrator_mut(0).process_mut().start()?;
    cluster.wait_ready(0).await?;
    let a = cluster.api_at(0);

    let mut children = BTreeSet::new();
    let mut attempts = 0;
    for (n, mom) in moms.iter().enumerate() {
        let done = wait_for(
            &format!("parent {mom} completes"),
            DEADLINE,
            POLL,
            || async {
                let v = state(&a, "mom", mom).await?;
                ensure!(v["state"] != "failed", "parent failed: {v}");
                anyhow::Ok((v["state"] == "completed").then_some(v))
            },
        )
        .await?;
        let spawn = task(&done, "spawn").context("spawn task")?;
        attempts += spawn["attempt"].as_u64().unwrap_or(1);
        let out = &spawn["output"];
        ensure!(
            out["child_workflow_type"] == "kid" && out["child_state"] == "completed",
            "{out}"
        );
        ensure!(
            out.get("slept_ms").is_some(),
            "the child's task outputs come back: {out}"
        );
        let child = out["child_instance_id"]
            .as_str()
            .context("child id")?
            .to_owned();
        let kid = state(&b, "kid", &child).await?;
        ensure!(kid["state"] == "completed", "{kid}");
        let parent = &kid["input"]["weft_parent"];
        ensure!(
            parent["instance_id"] == mom.as_str()
                && parent["workflow_type"] == "mom"
                && parent["task"] == "spawn",
            "the child names its parent: {kid}"
        );
        ensure!(
            kid["input"]["color"] == "blue" && kid["input"]["n"] == n,
            "input built from the parent's: {kid}"
        );
        let events = b.events("kid", &child).await?;
        let created = &events["events"][0];
        ensure!(
            created["metadata"]["weft.parent_instance"] == mom.as_str(),
            "{created}"
        );
        children.insert(child);
    }
    // One child per attempt: every child of `kid` belongs to one parent attempt.
    let all = wait_for("the children listed", DEADLINE, POLL, || async {
        issue18::instance_ids(&a, "kid").await.map(Some)
    })
    .await?;
    ensure!(
        all.len() as u64 == attempts && children.len() == PARENTS,
        "{} children for {attempts} attempts of {PARENTS} parents",
        all.len()
    );

    // Cancelling a parent cancels its running child.
    let v = a.start("momlong", json!({}), None).await?;
    let parent = v["instance_id"].as_str().context("id")?.to_owned();
    let child = wait_for("the long child runs", DEADLINE, POLL, || async {
        let Ok(ids) = issue18::instance_ids(&a, "kidlong").await else {
            return anyhow::Ok(None);
        };
        let Some(id) = ids.first().cloned() else {
            return anyhow::Ok(None);
        };
        anyhow::Ok((state(&a, "kidlong", &id).await?["state"] == "running").then_some(id))
    })
    .await?;
    let r = b
        .control(
            "momlong",
            &parent,
            "cancel",
            json!({ "reason": "test" }),
            None,
        )
        .await?;
    ensure!(r.status == StatusCode::ACCEPTED, "{r:?}");
    wait_until(
        "the child is cancelled with its parent",
        DEADLINE,
        POLL,
        || async {
            state(&a, "kidlong", &child)
                .await
                .is_ok_and(|v| v["state"] == "cancelled")
        },
    )
    .await?;
    Ok(())
}
