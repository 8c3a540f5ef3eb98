//! The health and liveness part of the [`registry_suite`](super::registry_suite):
//! `draining`, `degraded` and `unhealthy` nodes are never capable; a node
//! turns `unhealthy` (silent) once not heard from for `unhealthy_after`, comes
//! back with a heartbeat, is gone after `gone_after` (its registration then
//! unknown to heartbeats) and is known again once it registers again.

use std::collections::BTreeMap;

use weft_shared::event::now_ms;
use weft_shared::node::HealthStatus as H;

use super::registry::{
    amounts, beat, eventually, ids, node_when, strings, task, Nodes, REGISTRY_DEADLINE,
};
use crate::protocol::{NodeMetadata, WorkflowNodeRegistry};

pub(super) async fn health<R: WorkflowNodeRegistry + ?Sized>(reg: &R, n: &Nodes) {
    let (gpu, cpu) = (n.gpu.as_str(), n.cpu.as_str());
    let render = strings(&["render"]);
    let plain = task(&[], &[], &[]);
    let find = || async {
        let found = reg.find_capable_nodes(&render, &BTreeMap::new(), &[]).await;
        ids(&found.expect("find"))
    };
    // Draining: never capable, even preferred and idle.
    beat(
        reg,
        &[
            (cpu, H::Draining, 0, &[]),
            (gpu, H::Healthy, 3, &["a", "b", "c"]),
        ],
    )
    .await;
    assert_eq!(find().await, vec![gpu]);
    assert_eq!(
        reg.assign_task_to_node(&plain, Some(cpu))
            .await
            .expect("assign")
            .as_deref(),
        Some(gpu)
    );
    for h in [H::Degraded, H::Unhealthy] {
        beat(reg, &[(gpu, h, 0, &[])]).await;
        assert_eq!(find().await, Vec::<String>::new(), "{h} is not capable");
        assert_eq!(
            reg.assign_task_to_node(&plain, Some(gpu))
                .await
                .expect("assign"),
            None
        );
    }
    beat(reg, &[(cpu, H::Healthy, 0, &[]), (gpu, H::Healthy, 0, &[])]).await;
    assert_eq!(find().await, vec![cpu, gpu]);
}

pub(super) async fn silence<R: WorkflowNodeRegistry + ?Sized>(reg: &R, n: &Nodes) {
    let liveness = reg.liveness();
    let gpu = n.gpu.as_str();
    let wants_gpu = strings(&["gpu"]);
    let gpu_task = task(&["gpu"], &[], &[]);
    let capable = || async {
        let found = reg
            .find_capable_nodes(&wants_gpu, &BTreeMap::new(), &[])
            .await;
        ids(&found.expect("find"))
    };
    let long = liveness.gone_after + REGISTRY_DEADLINE;
    for round in 0..2 {
        let last = node_when(reg, gpu, "heard from", |v| !v.silent).await;
        let heard_at = last.record.heartbeat_at_ms;
        let silent = eventually(reg, "silent", long, |views| {
            views
                .iter()
                .find(|v| v.record.node_id == gpu && v.silent)
                .cloned()
        })
        .await;
        let quiet_ms = now_ms() - heard_at;
        assert!(
            quiet_ms > liveness.unhealthy_after.as_millis() as i64,
            "silent after {quiet_ms} ms, before {:?}",
            liveness.unhealthy_after
        );
        assert_eq!(
            (silent.health, silent.record.health),
            (H::Unhealthy, H::Healthy)
        );
        assert!(silent.heartbeat_age_ms > liveness.unhealthy_after.as_millis() as i64);
        assert_eq!(
            capable().await,
            Vec::<String>::new(),
            "a silent node is not capable"
        );
        assert_eq!(
            reg.assign_task_to_node(&gpu_task, Some(gpu))
                .await
                .expect("assign"),
            None
        );
        if round == 0 {
            // A heartbeat of a silent (not gone) node brings it back.
            beat(reg, &[(gpu, H::Healthy, 0, &[])]).await;
            assert_eq!(capable().await, vec![gpu]);
        }
    }
    let heard_at = reg
        .nodes()
        .await
        .expect("nodes")
        .iter()
        .find(|v| v.record.node_id == gpu)
        .map(|v| v.record.heartbeat_at_ms);
    eventually(reg, "gone", long, |views| {
        views.iter().all(|v| v.record.node_id != gpu).then_some(())
    })
    .await;
    if let Some(heard_at) = heard_at {
        let quiet_ms = now_ms() - heard_at;
        assert!(
            quiet_ms > liveness.gone_after.as_millis() as i64,
            "gone after {quiet_ms} ms, before {:?}",
            liveness.gone_after
        );
    }
    let known = reg
        .update_node_heartbeat(gpu, H::Healthy, BTreeMap::new(), vec![])
        .await
        .expect("heartbeat");
    assert!(!known, "a gone registration is unknown");
    assert_eq!(
        reg.assign_task_to_node(&gpu_task, None)
            .await
            .expect("assign"),
        None
    );
    // Registering again makes it known and capable.
    let again = NodeMetadata::worker(gpu).label("region", "eu");
    reg.register_workflow_node(again, wants_gpu.clone(), amounts(&[("slots", 1)]))
        .await
        .expect("register again");
    node_when(reg, gpu, "registered again", |v| !v.silent).await;
    assert_eq!(capable().await, vec![gpu]);
    assert_eq!(
        reg.assign_task_to_node(&gpu_task, None)
            .await
            .expect("assign")
            .as_deref(),
        Some(gpu)
    );
}
