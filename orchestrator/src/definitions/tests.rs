//! The start rule of ADR 0011 on hand-built catalogs: what a `workflow.created`
//! resolves to, and when that answer is final.

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_shared::fsm::{meta, DefinitionLookup};
use weft_shared::ids::InstanceId;
use weft_shared::model::TaskConfiguration;
use weft_shared::{WorkflowDefinition, WorkflowEvent, WorkflowEventType};

use super::*;

fn def(version: u32, registered_at_ms: i64) -> WorkflowDefinition {
    let mut d = WorkflowDefinition::new("t", vec![TaskConfiguration::new("a", "noop")]);
    d.version = version;
    d.registered_at_ms = registered_at_ms;
    d.description = format!("v{version}");
    d
}

/// Versions registered at the given times, complete as of `complete`.
fn catalog(registered: &[i64], complete: i64) -> Catalog {
    let mut versions = BTreeMap::new();
    for (i, at) in registered.iter().enumerate() {
        let v = u32::try_from(i + 1).unwrap();
        versions.insert(
            v,
            Arc::new(Entry {
                def: Arc::new(def(v, *at)),
                registration: format!("t:{v}:0:n{v}"),
            }),
        );
    }
    Catalog {
        by_type: Arc::new(BTreeMap::from([("t".to_owned(), versions)])),
        complete_as_of_ms: complete,
    }
}

fn created(at_ms: i64, pin: Option<&str>) -> WorkflowEvent {
    let mut e = WorkflowEvent::new(
        WorkflowEventType::WorkflowCreated,
        "t",
        InstanceId::random(),
        "start-1",
        at_ms,
    );
    if let Some(v) = pin {
        e.metadata.insert(meta::DEFINITION_VERSION.into(), v.into());
    }
    e
}

fn version(d: Option<&WorkflowDefinition>) -> Option<u32> {
    d.map(|d| d.version)
}

#[test]
fn a_pinned_start_runs_its_version_when_it_was_visible_at_the_start() {
    let c = catalog(&[1_000, 50_000], i64::MIN);
    assert_eq!(
        version(c.resolve_start("t", StartPin::Version(2), 60_000)),
        Some(2)
    );
    // Registered within the clock-skew tolerance after the start: still visible.
    assert_eq!(
        version(c.resolve_start("t", StartPin::Version(2), 50_000 - MAX_CLOCK_SKEW_MS)),
        Some(2)
    );
    // Registered later than that: the start cannot have known it.
    assert_eq!(
        c.resolve_start("t", StartPin::Version(2), 50_000 - MAX_CLOCK_SKEW_MS - 1),
        None
    );
    assert_eq!(c.resolve_start("t", StartPin::Version(3), 60_000), None);
    assert_eq!(c.resolve_start("other", StartPin::Version(1), 60_000), None);
}

#[test]
fn an_unpinned_start_runs_the_newest_version_visible_at_its_timestamp() {
    let c = catalog(&[1_000, 50_000, 90_000], i64::MIN);
    assert_eq!(version(c.latest_at("t", 60_000)), Some(2));
    assert_eq!(
        version(c.latest_at("t", 90_000 - MAX_CLOCK_SKEW_MS)),
        Some(3)
    );
    assert_eq!(version(c.latest_at("t", 10_000)), Some(1));
    // No fallback to the first version: before it was registered there is none.
    assert_eq!(c.latest_at("t", 1_000 - MAX_CLOCK_SKEW_MS - 1), None);
}

#[test]
fn a_covered_pin_is_decidable_at_once_anything_else_after_the_settle_time() {
    let c = catalog(&[1_000, 50_000], 20_000);
    assert!(c.start_decidable("t", StartPin::Version(2), 10_000));
    assert!(c.decidable(&created(10_000, Some("2"))));
    // Not covered: only once the catalog is complete past T + START_SETTLE_MS.
    assert!(!c.start_decidable("t", StartPin::Version(3), 10_000));
    assert!(!c.decidable(&created(10_000, None)));
    let t = 20_000 - START_SETTLE_MS;
    assert!(c.start_decidable("t", StartPin::Version(3), t));
    assert!(c.start_decidable("t", StartPin::Latest, t));
    assert!(!c.start_decidable("t", StartPin::Latest, t + 1));
    // An unparsable pin is decided as the decider reads it: unpinned.
    assert_eq!(StartPin::of(&created(0, Some("x"))), Some(StartPin::Latest));
    // Other events never wait.
    let mut other = created(10_000, Some("9"));
    other.event_type = WorkflowEventType::TaskCompleted;
    assert!(c.decidable(&other));
    assert_eq!(StartPin::of(&other), None);
}

#[test]
fn the_view_for_a_start_hides_versions_registered_after_it() {
    let c = catalog(&[1_000, 50_000], i64::MIN);
    let start = created(10_000, Some("2"));
    assert_eq!(c.lookup_for(&start).get("t", 2), None);
    assert_eq!(version(c.lookup_for(&start).get("t", 1)), Some(1));
    // A running instance keeps its version whatever the event's time.
    let mut result = start.clone();
    result.event_type = WorkflowEventType::TaskCompleted;
    assert_eq!(version(c.lookup_for(&result).get("t", 2)), Some(2));
}

#[test]
fn registration_keys_are_unique_and_name_type_and_version() {
    let d = def(7, 1);
    let (k1, k2) = (registration_key(&d), registration_key(&d));
    assert_ne!(k1, k2, "two registrations of one content share no key");
    assert!(k1.starts_with("t:7:"), "{k1}");
    assert!(key_matches(&k1, &d));
    assert!(!key_matches(&k1, &def(8, 1)));
    // Records of the old format (`<type>@<version>`) are read as they are.
    assert!(key_matches("t@7", &d));
    assert!(key_matches("", &d));
    assert!(!key_matches("t:7", &d));
}

#[test]
fn content_ignores_what_the_registry_assigns() {
    let (a, mut b) = (def(1, 10), def(2, 20));
    b.description = a.description.clone();
    assert!(same_content(&a, &b));
    assert_eq!(content_hash(&a), content_hash(&b));
    b.description = "other".into();
    assert!(!same_content(&a, &b));
    assert_ne!(content_hash(&a), content_hash(&b));
}
