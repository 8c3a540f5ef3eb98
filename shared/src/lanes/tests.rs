//! Lane naming round trips and capability matching.

use super::*;
use crate::model::TaskConfiguration;

fn task() -> TaskConfiguration {
    let mut t = TaskConfiguration::new("render", "render");
    t.constraints.insert(
        CAPABILITIES_CONSTRAINT.to_owned(),
        WorkflowData::List(vec!["gpu".into(), "cuda_12".into()]),
    );
    t.node_selector = Some(BTreeMap::from([("region".into(), "eu-west".into())]));
    t.resource_requirements = BTreeMap::from([("cpu".into(), 2), ("slots".into(), 1)]);
    t.priority = TaskPriority::High;
    t
}

#[test]
fn a_task_names_its_lane_and_the_lane_parses_back() {
    let req = Requirements::of_task(&task()).unwrap();
    assert!(req.urgent);
    assert_eq!(
        req.suffix(),
        "urgent.cap-cuda_12.cap-gpu.res-cpu--2.sel-region--eu-west"
    );
    assert_eq!(
        Requirements::parse_suffix(&req.suffix()).as_ref(),
        Some(&req)
    );
    assert_eq!(req.amount("cpu"), 2);
    assert_eq!(req.amount(SLOTS), 1);
    assert_eq!(req.amount("memory_mb"), 0);
}

#[test]
fn the_default_lane_is_the_plain_task_topic() {
    let t = TaskConfiguration::new("a", "noop");
    let req = Requirements::of_task(&t).unwrap();
    assert_eq!(req, Requirements::default());
    assert_eq!(req.topic("weft.x.tasks"), "weft.x.tasks");
    let mut urgent = req.clone();
    urgent.urgent = true;
    assert_eq!(urgent.topic("weft.x.tasks"), "weft.x.tasks.urgent");
    assert!(!urgent.is_constrained());
}

#[test]
fn only_canonical_suffixes_parse() {
    for bad in [
        "cap-gpu.urgent",
        "cap-b.cap-a",
        "res-cpu--0",
        "res-cpu--x",
        "sel-region",
        "cap-",
        "cap-a--b",
        "other",
    ] {
        assert_eq!(Requirements::parse_suffix(bad), None, "{bad}");
    }
}

#[test]
fn bad_names_and_amounts_are_refused_with_the_reason() {
    let mut t = TaskConfiguration::new("a", "noop");
    t.node_selector = Some(BTreeMap::from([("zone".into(), "a=b".into())]));
    let e = Requirements::of_task(&t).unwrap_err();
    assert!(e.to_string().contains("'a=b'"), "{e}");
    let mut t = TaskConfiguration::new("a", "noop");
    t.resource_requirements.insert("cpu".into(), 0);
    assert!(matches!(
        Requirements::of_task(&t),
        Err(LaneError::BadAmount { .. })
    ));
    let mut t = TaskConfiguration::new("a", "noop");
    t.constraints
        .insert(CAPABILITIES_CONSTRAINT.into(), WorkflowData::Int(3));
    assert_eq!(Requirements::of_task(&t), Err(LaneError::BadCapabilities));
    let long = Requirements::new((0..40).map(|i| format!("capability_{i}")), BTreeMap::new());
    assert!(matches!(
        long.checked_topic("weft.t.tasks"),
        Err(LaneError::TooLong { .. })
    ));
}

#[test]
fn a_node_satisfies_what_it_has_enough_of() {
    let node = NodeCapabilities {
        capabilities: ["gpu", "cuda_12", "render"]
            .into_iter()
            .map(String::from)
            .collect(),
        labels: BTreeMap::from([("region".into(), "eu-west".into())]),
        capacity: BTreeMap::from([("cpu".into(), 4), ("concurrency".into(), 8)]),
    };
    let req = Requirements::of_task(&task()).unwrap();
    assert!(node.satisfies(&req));
    assert_eq!(node.capacity_of(SLOTS), 8);
    let mut more = req.clone();
    more.resources.insert("cpu".into(), 5);
    assert!(!node.satisfies(&more));
    let mut elsewhere = req.clone();
    elsewhere.capabilities.remove("region=eu-west");
    elsewhere.capabilities.insert("region=us".into());
    assert!(!node.satisfies(&elsewhere));
    let mut unknown = req;
    unknown.resources.insert("fpga".into(), 1);
    assert!(!node.satisfies(&unknown));
    assert!(node.satisfies(&Requirements::default()));
}
