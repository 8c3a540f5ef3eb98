//! A parent's compensation compensates a child (issue 18 item 1), with the
//! real binaries on a real broker: a trip books a hotel as a child workflow
//! (`book`, a `workflow` task whose compensation `unbook` is itself a
//! `workflow` task), then its payment fails for good. The saga runs `unbook`,
//! which starts a compensating child of another type that names the parent and
//! its compensation task; the trip ends `compensated`, the booking child
//! stays `completed`, and exactly one compensating child ran.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use weft_integration_tests::{wait_for, wait_until, ClusterOptions, TestCluster};

mod issue18;

use issue18::task;

const HOTEL: &str = "type: hotel\ntasks:\n  - name: reserve\n    handler: noop\n";
const UNHOTEL: &str = "type: unhotel\ntasks:\n  - name: release\n    handler: noop\n";
const TRIP: &str = "\
type: trip
tasks:
  - {name: book, handler: workflow, parameters: {workflow_type: hotel, input: {room: 12}}, compensation: unbook}
  - {name: pay, handler: fail, depends_on: [book], parameters: {retryable: false}}
  - {name: unbook, handler: workflow, parameters: {workflow_type: unhotel, input: {room: 12}}}
";
const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parents_compensation_runs_a_compensating_child() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let result = scenario(&cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn scenario(cluster: &TestCluster) -> Result<()> {
    let api = cluster.api_at(0);
    for def in [HOTEL, UNHOTEL, TRIP] {
        api.register_definition(def).await?;
    }
    let trip = api.start("trip", json!({ "who": "ada" }), None).await?["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned();

    let done = wait_for("the trip to end", DEADLINE, POLL, || async {
        let v = api.get("trip", &trip).await?;
        let state = v["state"].as_str().unwrap_or_default();
        anyhow::Ok(
            ["compensated", "completed", "failed", "cancelled"]
                .contains(&state)
                .then_some(v),
        )
    })
    .await?;
    ensure!(
        done["state"] == "compensated",
        "the trip is compensated: {done}"
    );

    // The booking child ran and stays completed: compensation is the parent's act.
    let book = task(&done, "book").context("book")?;
    let hotel = book["output"]["child_instance_id"]
        .as_str()
        .context("book's child")?
        .to_owned();
    let booked = api.get("hotel", &hotel).await?;
    ensure!(booked["state"] == "completed", "{booked}");

    // Exactly one compensating child, completed, naming the parent and `unbook`.
    wait_until(
        "the compensating child is listed",
        DEADLINE,
        POLL,
        || async {
            issue18::instance_ids(&api, "unhotel")
                .await
                .is_ok_and(|v| !v.is_empty())
        },
    )
    .await?;
    let undo = issue18::instance_ids(&api, "unhotel").await?;
    ensure!(undo.len() == 1, "one compensating child: {undo:?}");
    let undone = api.get("unhotel", &undo[0]).await?;
    ensure!(undone["state"] == "completed", "{undone}");
    let parent = &undone["input"]["weft_parent"];
    ensure!(
        parent["instance_id"] == trip.as_str()
            && parent["workflow_type"] == "trip"
            && parent["task"] == "unbook",
        "the compensating child names its parent and the compensation task: {undone}"
    );
    ensure!(undone["input"]["room"] == 12, "{undone}");
    let unbook = task(&done, "unbook").context("unbook")?;
    ensure!(
        unbook["output"]["child_instance_id"] == undo[0].as_str()
            && unbook["output"]["child_state"] == "completed",
        "unbook completed with its child: {unbook}"
    );

    // The history: book compensated after pay failed for good, and the saga completed.
    let events = api.events("trip", &trip).await?;
    let types: Vec<&str> = events["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    ensure!(
        types.contains(&"compensation.started") && types.last() == Some(&"compensation.completed"),
        "{types:?}"
    );
    Ok(())
}
