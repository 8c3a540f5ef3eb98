//! Queries, state at a sequence, replay and the live `/watch` stream agree
//! with the stored history; the control endpoints check the instance's state;
//! the CLI's query, watch and control commands work end to end.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{wait_all_completed, DIAMOND};
use crate::support::{start, wait_state, weft, with_cluster, GATED, LONG, SLOW};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_replay_and_watch_agree_with_the_history() -> Result<()> {
    with_cluster(|api| async move {
        api.register_definition(DIAMOND).await?;
        api.register_definition(SLOW).await?;
        api.register_definition(GATED).await?;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(start(&api, "diamond").await?);
        }
        wait_all_completed(&api, &ids, Duration::from_secs(90)).await?;

        // Paging by cursor returns every instance once, oldest first.
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("type=diamond&state=completed&state=failed&limit=2&cursor={c}"),
                None => "type=diamond&state=completed,failed&limit=2".into(),
            };
            let page = api.list(&q).await?;
            let items = page["items"].as_array().context("items")?;
            ensure!(items.len() <= 2, "page larger than the limit: {page}");
            listed.extend(items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let listed_ids: Vec<&str> = listed
            .iter()
            .filter_map(|i| i["instance_id"].as_str())
            .collect();
        ensure!(
            listed_ids.iter().copied().collect::<BTreeSet<_>>()
                == ids.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            "listed {listed_ids:?}, started {ids:?}"
        );
        ensure!(
            listed_ids.len() == ids.len(),
            "an instance listed twice: {listed_ids:?}"
        );
        let created: Vec<i64> = listed
            .iter()
            .filter_map(|i| i["created_at_ms"].as_i64())
            .collect();
        ensure!(
            created.windows(2).all(|w| w[0] <= w[1]),
            "not oldest first: {created:?}"
        );
        ensure!(
            api.list("type=diamond&state=running").await?["items"] == json!([]),
            "completed instances listed as running"
        );
        let later = created.last().copied().unwrap_or(0) + 3_600_000;
        ensure!(
            api.list(&format!("type=diamond&created_after={later}"))
                .await?["items"]
                == json!([]),
            "created_after ignored"
        );
        ensure!(
            api.list("type=diamond&created_after=2000-01-01T00:00:00Z")
                .await?["items"]
                .as_array()
                .map(Vec::len)
                == Some(5),
            "created_after as RFC 3339"
        );

        // The state at every sequence is what replaying up to it folds to.
        let id = &ids[0];
        let history = api.events("diamond", id).await?;
        let last = history["events"].as_array().context("events")?.len() as u64;
        for at in 1..=last {
            let state = api
                .send(
                    Method::GET,
                    &format!("/v1/workflows/diamond/{id}/state?at={at}"),
                    None,
                )
                .await?
                .body;
            let replay = api
                .send(
                    Method::POST,
                    &format!("/v1/workflows/diamond/{id}/replay?to={at}"),
                    None,
                )
                .await?
                .body;
            ensure!(
                state["sequence_number"] == at && state == replay["state"],
                "state at {at} differs from the replay: {state} vs {}",
                replay["state"]
            );
        }
        ensure!(
            api.get("diamond", id).await?
                == api
                    .send(
                        Method::GET,
                        &format!("/v1/workflows/diamond/{id}/state"),
                        None
                    )
                    .await?
                    .body,
            "current state differs"
        );

        // Watching a live workflow: the whole history once, in order, then `end`.
        // The workflow cannot complete before the test signals it, and the test
        // signals it only after the stream's first frame arrived: so the stream
        // was attached while it ran, and its end came live.
        let gated = start(&api, "gated").await?;
        wait_state(&api, "gated", &gated, "running").await?;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn({
            let (api, gated) = (api.clone(), gated.clone());
            async move {
                api.watch_live("gated", &gated, first_tx, Duration::from_secs(60))
                    .await
            }
        });
        tokio::time::timeout(Duration::from_secs(30), first_rx)
            .await
            .context("no frame of the gated instance's stream within 30 s")??;
        ensure!(
            !watcher.is_finished(),
            "the stream ended before the workflow could"
        );
        let before = api.get("gated", &gated).await?;
        ensure!(
            before["state"] == "running",
            "not running while watched: {before}"
        );
        let r = api
            .control("gated", &gated, "signals/go", json!({}), None)
            .await?;
        ensure!(r.status == StatusCode::ACCEPTED, "{r:?}");
        let frames = watcher.await??;
        let (end, events) = frames.split_last().context("no frames")?;
        ensure!(
            end.0 == "end" && end.1["state"] == "completed",
            "last frame: {end:?}"
        );
        let seqs: Vec<u64> = events
            .iter()
            .filter_map(|(_, e)| e["sequence_number"].as_u64())
            .collect();
        ensure!(
            seqs == (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "sequence numbers {seqs:?}"
        );
        let stored = api.events("gated", &gated).await?;
        let stored: Vec<&Value> = stored["events"]
            .as_array()
            .context("events")?
            .iter()
            .collect();
        ensure!(
            events.iter().map(|(_, e)| e).collect::<Vec<_>>() == stored,
            "streamed events differ from the stored history"
        );
        ensure!(
            stored
                .last()
                .map(|e| e["event_type"] == "workflow.completed")
                == Some(true),
            "history does not end completed"
        );
        let tail = api
            .watch("diamond", id, Some(3), Duration::from_secs(10))
            .await?;
        ensure!(
            tail.first().map(|f| f.1["sequence_number"] == 3) == Some(true),
            "from=3 starts at {:?}",
            tail.first()
        );

        // The CLI's read commands.
        let out = weft(
            &api,
            &["list", "--type", "diamond", "--state", "completed"],
            Duration::from_secs(30),
        )
        .await?;
        ensure!(
            out.ok()?.lines().count() == 6 && out.stdout.contains(id.as_str()),
            "{out:#?}"
        );
        let out = weft(
            &api,
            &["state", "diamond", id, "--at", "1"],
            Duration::from_secs(30),
        )
        .await?;
        ensure!(out.ok()?.contains("sequence  1"), "{out:#?}");
        let out = weft(
            &api,
            &["replay", "diamond", id, "--from", "2", "--to", "4"],
            Duration::from_secs(30),
        )
        .await?;
        ensure!(out.ok()?.contains("state after event 4"), "{out:#?}");
        let out = weft(
            &api,
            &["history", "diamond", id, "--limit", "2"],
            Duration::from_secs(30),
        )
        .await?;
        ensure!(
            out.ok()?.lines().count() == 2 && out.stderr.contains("--from 3"),
            "{out:#?}"
        );
        let slow2 = start(&api, "slow").await?;
        let out = weft(&api, &["watch", "slow", &slow2], Duration::from_secs(60)).await?;
        ensure!(
            out.ok()?.contains("workflow.completed") && out.stderr.contains("ended: completed"),
            "{out:#?}"
        );
        let out = weft(
            &api,
            &["list", "--type", "diamond", "--state", "bogus"],
            Duration::from_secs(30),
        )
        .await?;
        ensure!(
            out.code == Some(1)
                && out.stderr.starts_with("error: ")
                && out.stderr.contains("'state'"),
            "{out:#?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_endpoints_and_commands_check_the_state() -> Result<()> {
    with_cluster(|api| async move {
        api.register_definition(LONG).await?;
        let id = start(&api, "long").await?;
        wait_state(&api, "long", &id, "running").await?;

        // Pause and resume, each refused when it makes no sense.
        let r = api.control("long", &id, "resume", json!({}), None).await?;
        ensure!(
            r.status == StatusCode::CONFLICT
                && r.body["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("not paused"),
            "{r:?}"
        );
        let out = weft(&api, &["pause", "long", &id], Duration::from_secs(30)).await?;
        ensure!(out.ok()?.starts_with("pause accepted: event "), "{out:#?}");
        wait_state(&api, "long", &id, "paused").await?;
        let r = api.control("long", &id, "pause", json!({}), None).await?;
        ensure!(
            r.status == StatusCode::CONFLICT
                && r.body["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("already paused"),
            "{r:?}"
        );
        let out = weft(&api, &["resume", "long", &id], Duration::from_secs(30)).await?;
        out.ok()?;
        wait_state(&api, "long", &id, "running").await?;

        // A signal with an idempotency key is appended once however often it is sent.
        let key = "approve-1";
        let a = api
            .control(
                "long",
                &id,
                "signals/approved",
                json!({"by": "ops"}),
                Some(key),
            )
            .await?;
        let b = api
            .control(
                "long",
                &id,
                "signals/approved",
                json!({"by": "ops"}),
                Some(key),
            )
            .await?;
        ensure!(
            a.status == StatusCode::ACCEPTED
                && b.status == StatusCode::ACCEPTED
                && a.body["event_id"].is_string()
                && a.body["event_id"] == b.body["event_id"],
            "{a:?} {b:?}"
        );
        // Another key is another signal.
        let c = api
            .control(
                "long",
                &id,
                "signals/approved",
                json!({"by": "audit"}),
                Some("approve-2"),
            )
            .await?;
        ensure!(
            c.status == StatusCode::ACCEPTED && c.body["event_id"] != a.body["event_id"],
            "{c:?}"
        );
        let out = weft(
            &api,
            &["signal", "long", &id, "approved", "--data", "[1]"],
            Duration::from_secs(30),
        )
        .await?;
        ensure!(
            out.code == Some(1) && out.stderr.contains("JSON object"),
            "{out:#?}"
        );

        // Cancel: accepted once, then refused naming the state; the CLI exits 1 with the message.
        let out = weft(
            &api,
            &["cancel", "long", &id, "--reason", "test"],
            Duration::from_secs(30),
        )
        .await?;
        out.ok()?;
        wait_state(&api, "long", &id, "cancelled").await?;
        let history = api.events("long", &id).await?;
        let cancelled = history["events"]
            .as_array()
            .context("events")?
            .iter()
            .find(|e| e["event_type"] == "workflow.cancelled")
            .context("no workflow.cancelled")?;
        ensure!(cancelled["data"]["reason"] == "test", "{cancelled}");
        // Applied before the cancel (one partition, in order): the keyed signal
        // once, the other once.
        let signals: Vec<&Value> = history["events"]
            .as_array()
            .context("events")?
            .iter()
            .filter(|e| e["metadata"]["weft.signal"] == "approved")
            .collect();
        let by: Vec<&Value> = signals.iter().map(|e| &e["data"]["by"]).collect();
        ensure!(
            by == [&json!("ops"), &json!("audit")],
            "signal events {signals:#?}"
        );
        let out = weft(&api, &["cancel", "long", &id], Duration::from_secs(30)).await?;
        ensure!(
            out.code == Some(1) && out.stderr.contains("already cancelled"),
            "{out:#?}"
        );
        let out = weft(&api, &["watch", "long", &id], Duration::from_secs(30)).await?;
        ensure!(
            out.ok()?.contains("workflow.cancelled") && out.stderr.contains("ended: cancelled"),
            "{out:#?}"
        );
        Ok(())
    })
    .await
}
