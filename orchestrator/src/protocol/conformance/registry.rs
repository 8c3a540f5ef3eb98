//! The [`WorkflowNodeRegistry`] conformance suite: registration and the view,
//! capability, label and resource matching, exclusions, heartbeats (load,
//! active tasks, health; unknown registrations), the choice of a node for a
//! task (preferred when capable and healthy, else least loaded, ties by node
//! id, none when nobody is capable), and liveness (unhealthy after
//! `unhealthy_after` of silence, gone after `gone_after`).
//!
//! It runs on a registry whose view holds no other nodes, and waits for each
//! write to show in the view (a Kafka registry reads its records back), so
//! `unhealthy_after` must exceed a read-back by far (a second on a real
//! broker). The silence checks make it last about `unhealthy_after + gone_after`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weft_shared::event::now_ms;
use weft_shared::lanes::CAPABILITIES_CONSTRAINT;
use weft_shared::model::TaskConfiguration;
use weft_shared::node::HealthStatus as H;
use weft_shared::WorkflowData;

use super::registry_liveness::{health, silence};
use crate::protocol::{Error, NodeMetadata, NodeView, WorkflowNodeRegistry};

/// How long the suite waits for a write to show in the view.
pub const REGISTRY_DEADLINE: Duration = Duration::from_secs(30);

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) fn amounts(items: &[(&str, i64)]) -> BTreeMap<String, i64> {
    items.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

pub(super) fn ids(views: &[NodeView]) -> Vec<String> {
    views.iter().map(|v| v.record.node_id.clone()).collect()
}

/// A task needing `capabilities`, `resources` and the `selector` pairs.
pub(super) fn task(
    capabilities: &[&str],
    resources: &[(&str, i64)],
    selector: &[(&str, &str)],
) -> TaskConfiguration {
    let mut t = TaskConfiguration::new("render", "render");
    if !capabilities.is_empty() {
        t.constraints.insert(
            CAPABILITIES_CONSTRAINT.into(),
            WorkflowData::List(strings(capabilities)),
        );
    }
    t.resource_requirements = amounts(resources);
    if !selector.is_empty() {
        let pairs = selector
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        t.node_selector = Some(pairs.collect());
    }
    t
}

/// Polls the view until `check` answers; panics after `deadline`.
pub(super) async fn eventually<R, T>(
    reg: &R,
    what: &str,
    deadline: Duration,
    mut check: impl FnMut(&[NodeView]) -> Option<T>,
) -> T
where
    R: WorkflowNodeRegistry + ?Sized,
{
    let until = Instant::now() + deadline;
    loop {
        let views = reg.nodes().await.expect("nodes");
        if let Some(t) = check(&views) {
            return t;
        }
        assert!(
            Instant::now() < until,
            "{what}: not seen within {deadline:?}; the view: {views:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The view of `node` once `check` holds for it.
pub(super) async fn node_when<R>(
    reg: &R,
    node: &str,
    what: &str,
    check: impl Fn(&NodeView) -> bool,
) -> NodeView
where
    R: WorkflowNodeRegistry + ?Sized,
{
    eventually(
        reg,
        &format!("{node}: {what}"),
        REGISTRY_DEADLINE,
        |views| {
            views
                .iter()
                .find(|v| v.record.node_id == node && check(v))
                .cloned()
        },
    )
    .await
}

pub(super) struct Nodes {
    pub gpu: String,
    pub cpu: String,
    pub orch: String,
    pub nobody: String,
}

/// Runs the suite.
pub async fn registry_suite<R: WorkflowNodeRegistry + ?Sized>(reg: &R) {
    let p = format!("conf-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let n = Nodes {
        gpu: format!("{p}-gpu"),
        cpu: format!("{p}-cpu"),
        orch: format!("{p}-orch"),
        nobody: format!("{p}-nobody"),
    };
    registers(reg, &n).await;
    matches(reg, &n).await;
    heartbeats_and_assignment(reg, &n).await;
    health(reg, &n).await;
    silence(reg, &n).await;
}

async fn registers<R: WorkflowNodeRegistry + ?Sized>(reg: &R, n: &Nodes) {
    let before = now_ms();
    let gpu = NodeMetadata::worker(&n.gpu).label("region", "eu");
    let caps = strings(&["render", "gpu"]);
    let capacity = amounts(&[("slots", 4), ("cpu", 8), ("memory_mb", 16_384)]);
    let id = reg
        .register_workflow_node(gpu.clone(), caps.clone(), capacity.clone())
        .await
        .expect("register");
    assert_eq!(id, n.gpu, "the registration id is the node id");
    let cpu = NodeMetadata::worker(&n.cpu).label("region", "us");
    let cpu_capacity = amounts(&[("concurrency", 2), ("cpu", 2)]);
    let cpu_caps = strings(&["render", "tier=fast"]);
    assert_eq!(
        reg.register_workflow_node(cpu, cpu_caps, cpu_capacity)
            .await
            .expect("register"),
        n.cpu
    );
    let orch = NodeMetadata {
        role: "orchestrator".into(),
        ..NodeMetadata::worker(&n.orch)
    };
    reg.register_workflow_node(orch, strings(&["render", "gpu"]), BTreeMap::new())
        .await
        .expect("register");
    for (bad, capacity) in [
        (NodeMetadata::worker(" "), BTreeMap::new()),
        (
            NodeMetadata {
                role: String::new(),
                ..NodeMetadata::worker("x")
            },
            BTreeMap::new(),
        ),
        (NodeMetadata::worker("x"), amounts(&[("cpu", -1)])),
    ] {
        let refused = reg
            .register_workflow_node(bad.clone(), vec![], capacity)
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidNode(_))),
            "{bad:?} is refused: {refused:?}"
        );
    }
    let after = now_ms();

    let all = eventually(reg, "the three registrations", REGISTRY_DEADLINE, |views| {
        (views.len() >= 3).then(|| views.to_vec())
    })
    .await;
    // By role, then node id.
    assert_eq!(
        ids(&all),
        vec![n.orch.clone(), n.cpu.clone(), n.gpu.clone()]
    );
    let v = &all[2];
    assert_eq!(v.record.role, "worker");
    assert_eq!(v.record.capabilities, caps);
    assert_eq!(v.record.capacity_limits, capacity);
    assert_eq!(v.record.labels, gpu.labels);
    assert!(v.record.current_load.is_empty() && v.record.active_tasks.is_empty());
    assert_eq!(
        (v.record.health, v.health, v.silent),
        (H::Healthy, H::Healthy, false)
    );
    let at = v.record.heartbeat_at_ms;
    assert!(
        (before..=after).contains(&at),
        "heartbeat at {at}, registered in {before}..={after}"
    );
    assert!((before..=after).contains(&v.record.started_at_ms));
    assert!(v.heartbeat_age_ms >= 0 && v.load() == 0.0);
}

/// Capabilities, resources, excluded nodes, and the nodes found.
type FindCase = (
    &'static [&'static str],
    &'static [(&'static str, i64)],
    Vec<String>,
    Vec<String>,
);

async fn matches<R: WorkflowNodeRegistry + ?Sized>(reg: &R, n: &Nodes) {
    let (gpu, cpu) = (n.gpu.clone(), n.cpu.clone());
    let both = vec![cpu.clone(), gpu.clone()];
    let cases: Vec<FindCase> = vec![
        // Idle nodes: by node id; an orchestrator never, whatever it lists.
        (&[], &[], vec![], both.clone()),
        (&["render"], &[], vec![], both.clone()),
        (&["gpu"], &[], vec![], vec![gpu.clone()]),
        (&["tpu"], &[], vec![], vec![]),
        // key=value: a label or a listed capability.
        (&["region=eu"], &[], vec![], vec![gpu.clone()]),
        (&["tier=fast"], &[], vec![], vec![cpu.clone()]),
        (&["region=eu", "render"], &[], vec![], vec![gpu.clone()]),
        (&["gpu", "region=us"], &[], vec![], vec![]),
        // Resources: at least the amount; a missing one is 0; slots fall back on concurrency.
        (&[], &[("cpu", 2)], vec![], both.clone()),
        (&[], &[("cpu", 4)], vec![], vec![gpu.clone()]),
        (&[], &[("cpu", 9)], vec![], vec![]),
        (&[], &[("memory_mb", 1)], vec![], vec![gpu.clone()]),
        (&[], &[("slots", 2)], vec![], both.clone()),
        (&[], &[("slots", 3)], vec![], vec![gpu.clone()]),
        (
            &["render"],
            &[("cpu", 2)],
            vec![gpu.clone()],
            vec![cpu.clone()],
        ),
        (&["render"], &[], both.clone(), vec![]),
        (&[], &[], vec![n.nobody.clone()], both.clone()),
    ];
    for (caps, resources, exclude, want) in cases {
        let found = reg
            .find_capable_nodes(&strings(caps), &amounts(resources), &exclude)
            .await
            .expect("find");
        assert_eq!(
            ids(&found),
            want,
            "find {caps:?} {resources:?} excluding {exclude:?}"
        );
    }
}

/// Sends the heartbeats and waits until the view shows them.
pub(super) async fn beat<R: WorkflowNodeRegistry + ?Sized>(
    reg: &R,
    beats: &[(&str, H, i64, &[&str])],
) {
    let sent_at = now_ms();
    for (node, health, in_flight, tasks) in beats {
        let load = amounts(&[("in_flight", *in_flight)]);
        let known = reg
            .update_node_heartbeat(node, *health, load.clone(), strings(tasks))
            .await
            .expect("heartbeat");
        assert!(known, "{node} is registered");
    }
    for (node, health, in_flight, tasks) in beats {
        let v = node_when(
            reg,
            node,
            &format!("{health}, {in_flight} in flight"),
            |v| {
                v.record.heartbeat_at_ms >= sent_at
                    && v.record.health == *health
                    && v.record.current_load.get("in_flight") == Some(in_flight)
                    && v.record.active_tasks == strings(tasks)
            },
        )
        .await;
        assert!(!v.silent, "{node} is heard from: {v:?}");
        assert_eq!(v.health, *health);
    }
}

async fn heartbeats_and_assignment<R: WorkflowNodeRegistry + ?Sized>(reg: &R, n: &Nodes) {
    let (gpu, cpu) = (n.gpu.as_str(), n.cpu.as_str());
    let unknown = reg
        .update_node_heartbeat(&n.nobody, H::Healthy, BTreeMap::new(), vec![])
        .await
        .expect("heartbeat");
    assert!(
        !unknown,
        "a heartbeat of an unknown registration is refused"
    );
    assert!(reg
        .nodes()
        .await
        .expect("nodes")
        .iter()
        .all(|v| v.record.node_id != n.nobody));

    // gpu: 1 of 4 slots; cpu: 1 of 2 (concurrency): gpu is the less loaded.
    beat(
        reg,
        &[(gpu, H::Healthy, 1, &["t1"]), (cpu, H::Healthy, 1, &["t2"])],
    )
    .await;
    let found = reg
        .find_capable_nodes(&[], &BTreeMap::new(), &[])
        .await
        .expect("find");
    assert_eq!(ids(&found), vec![gpu, cpu], "least loaded first");
    assert_eq!(
        found.iter().map(NodeView::load).collect::<Vec<_>>(),
        vec![0.25, 0.5]
    );
    let none: &[(&str, &str)] = &[];
    let cases: Vec<(TaskConfiguration, Option<&str>, Option<&str>)> = vec![
        (task(&[], &[], none), None, Some(gpu)),
        // The preferred node when capable and healthy, even if busier.
        (task(&[], &[], none), Some(cpu), Some(cpu)),
        (task(&["render"], &[], none), Some(cpu), Some(cpu)),
        // Not capable, not a worker, unknown: the least loaded capable one.
        (task(&["gpu"], &[], none), Some(cpu), Some(gpu)),
        (task(&[], &[("cpu", 4)], none), Some(cpu), Some(gpu)),
        (task(&[], &[], &[("region", "us")]), Some(gpu), Some(cpu)),
        (task(&[], &[], &[("tier", "fast")]), None, Some(cpu)),
        (task(&[], &[], none), Some(n.orch.as_str()), Some(gpu)),
        (task(&[], &[], none), Some(n.nobody.as_str()), Some(gpu)),
        // Nobody capable.
        (task(&["tpu"], &[], none), Some(gpu), None),
        (task(&[], &[("cpu", 64)], none), None, None),
        (task(&["gpu"], &[], &[("region", "us")]), None, None),
    ];
    for (t, preferred, want) in cases {
        let got = reg
            .assign_task_to_node(&t, preferred)
            .await
            .expect("assign");
        assert_eq!(
            got.as_deref(),
            want,
            "assign {t:?} preferring {preferred:?}"
        );
    }
    let bad = task(&["not a name!"], &[], none);
    let refused = reg.assign_task_to_node(&bad, None).await;
    assert!(matches!(refused, Err(Error::InvalidTask(_))), "{refused:?}");

    // Equal loads (2 of 4, 1 of 2): by node id.
    beat(reg, &[(gpu, H::Healthy, 2, &["t1", "t3"])]).await;
    let found = reg
        .find_capable_nodes(&[], &BTreeMap::new(), &[])
        .await
        .expect("find");
    assert_eq!(ids(&found), vec![cpu, gpu]);
    let plain = task(&[], &[], none);
    assert_eq!(
        reg.assign_task_to_node(&plain, None)
            .await
            .expect("assign")
            .as_deref(),
        Some(cpu)
    );
}
