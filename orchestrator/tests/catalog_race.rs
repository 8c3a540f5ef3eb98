//! Version assignment across replicas, on librdkafka's mock cluster: registries
//! of two "replicas" (each its own follower of `weft.definitions`) register
//! different contents of one type at the same time, round after round. Every
//! registrant must learn the version its content really has, distinct contents
//! must get distinct versions, and both replicas must end with the same catalog
//! (the one a replica rebuilding from the topic folds).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use weft_orchestrator::definitions::Registry;
use weft_shared::config::WeftConfig;
use weft_shared::fsm::DefinitionLookup;
use weft_shared::kafka::{client_config, Role};
use weft_shared::model::TaskConfiguration;
use weft_shared::{Topics, WorkflowDefinition};

const DEADLINE: Duration = Duration::from_secs(60);
const ROUNDS: usize = 4;

fn definition(content: &str) -> WorkflowDefinition {
    let mut task = TaskConfiguration::new("only", "noop");
    task.description = content.to_owned();
    let mut d = WorkflowDefinition::new("race", vec![task]);
    d.description = content.to_owned();
    d
}

/// A replica's registry, following the topic; returns once it has read it.
async fn replica(bootstrap: &str) -> Arc<Registry> {
    let mut settings = WeftConfig::default().kafka;
    settings.bootstrap = bootstrap.to_owned();
    settings.partitions = 1;
    let producer: FutureProducer = client_config(&settings, Role::Producer)
        .create()
        .expect("producer");
    let registry = Registry::new(settings, Topics::default(), producer);
    // The mock cluster cannot create topics: the test creates them.
    registry.disable_topic_creation();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(registry.clone().follow(tx));
    tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("the definitions were loaded in time")
        .expect("the follower runs");
    registry
}

/// `version -> description` of the type in a registry's catalog.
fn versions(r: &Registry) -> BTreeMap<u32, String> {
    let catalog = r.catalog();
    (1..=50)
        .filter_map(|v| catalog.get("race", v).map(|d| (v, d.description.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_registrations_get_distinct_versions_and_one_catalog() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topics = Topics::default();
    cluster
        .create_topic(&topics.definitions(), 1, 1)
        .expect("definitions topic");
    for t in [
        "race.events",
        "race.tasks",
        "race.dlq",
        "race.snapshots",
        "race.heartbeats",
    ] {
        cluster
            .create_topic(&format!("weft.{t}"), 1, 1)
            .expect("topic");
    }
    let a = replica(&bootstrap).await;
    let b = replica(&bootstrap).await;

    let (first, _) = a.register(definition("base")).await.expect("version 1");
    assert_eq!(first.version, 1);

    // Each registrant's own answer: content -> version.
    let mut learned: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..ROUNDS {
        // Both replicas know the latest version before the race.
        let latest = u32::try_from(2 * round + 1).unwrap();
        for r in [&a, &b] {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while r.catalog().latest("race").map(|d| d.version) != Some(latest) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: a replica never saw version {latest}: {:?}",
                    versions(r)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (x, y) = (format!("a-{round}"), format!("b-{round}"));
        let (ra, rb) = tokio::join!(a.register(definition(&x)), b.register(definition(&y)));
        let (da, created_a) = ra.expect("replica a registers");
        let (db, created_b) = rb.expect("replica b registers");
        assert!(created_a && created_b, "both contents are new");
        assert_ne!(
            da.version, db.version,
            "round {round}: two contents got the same version"
        );
        assert_eq!(da.description, x);
        assert_eq!(db.description, y);
        learned.insert(x, da.version);
        learned.insert(y, db.version);
    }

    // Both replicas converge on one catalog, and it matches what each registrant was told.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (va, vb) = (versions(&a), versions(&b));
        let complete = va.len() == 2 * ROUNDS + 1;
        if complete && va == vb {
            for (content, version) in &learned {
                assert_eq!(
                    va.get(version),
                    Some(content),
                    "the registrant of '{content}' was told version {version}; the catalog: {va:?}"
                );
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas' catalogs differ:\n a: {va:?}\n b: {vb:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The registrants did race: the topic holds records that lost their version.
    let records = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("consumer");
        let (_, high) = consumer
            .fetch_watermarks(&Topics::default().definitions(), 0, DEADLINE)
            .expect("watermarks");
        (high, bootstrap)
    })
    .await
    .expect("watermarks task");
    let (records, bootstrap) = records;
    eprintln!(
        "{records} registration records for {} versions",
        2 * ROUNDS + 1
    );
    assert!(
        records > i64::try_from(2 * ROUNDS + 1).unwrap(),
        "no registration lost a race: the test did not race"
    );

    // A third replica folding the topic from scratch gets the same catalog.
    let c = replica(&bootstrap).await;
    assert_eq!(
        versions(&c),
        versions(&a),
        "a rebuild folds another catalog"
    );
}

/// Records of the old format (key `<type>@<version>`, content assigned by a
/// replica's local catalog) are folded by the same rule: the first record for
/// a version wins, also when an old race left two; registering after them
/// continues the numbering with the new key format.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_format_records_are_folded_first_wins_and_numbering_continues() {
    use rdkafka::producer::FutureRecord;
    use weft_shared::avro::AvroRecord;

    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topics = Topics::default();
    cluster
        .create_topic(&topics.definitions(), 1, 1)
        .expect("definitions topic");
    let mut settings = WeftConfig::default().kafka;
    settings.bootstrap = bootstrap.clone();
    let producer: FutureProducer = client_config(&settings, Role::Producer)
        .create()
        .expect("producer");
    let old = |version: u32, content: &str, at: i64| {
        let mut d = definition(content);
        d.workflow_type = "legacy".into();
        d.version = version;
        d.registered_at_ms = at;
        d
    };
    for d in [
        old(1, "first", 10),
        old(1, "lost", 11),
        old(2, "second", 20),
    ] {
        let key = d.key();
        assert_eq!(key, format!("legacy@{}", d.version), "the old key format");
        let payload = d.encode();
        producer
            .send(
                FutureRecord::to(&topics.definitions())
                    .key(&key)
                    .payload(&payload),
                DEADLINE,
            )
            .await
            .expect("old record produced");
    }
    let a = replica(&bootstrap).await;
    let legacy = |r: &Registry| -> BTreeMap<u32, String> {
        let c = r.catalog();
        (1..=10)
            .filter_map(|v| c.get("legacy", v).map(|d| (v, d.description.clone())))
            .collect()
    };
    assert_eq!(
        legacy(&a),
        BTreeMap::from([(1, "first".to_owned()), (2, "second".to_owned())])
    );
    let mut next = definition("third");
    next.workflow_type = "legacy".into();
    let (d, created) = a.register(next).await.expect("registers after old records");
    assert!(created);
    assert_eq!(d.version, 3);
    assert!(
        d.registered_at_ms > 20,
        "registration times grow with the version"
    );
    let b = replica(&bootstrap).await;
    assert_eq!(legacy(&b), legacy(&a), "a rebuild folds the same catalog");
}

/// What a partition waits on: a start pinned to a version its replica has not
/// read yet becomes decidable as soon as the version is read (registered
/// through another replica); a start pinned to a version nobody registered is
/// decidable once the catalog is complete past its timestamp plus
/// `START_SETTLE_MS`, and then resolves to nothing on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_waits_for_the_catalog_to_be_final_for_it() {
    use weft_orchestrator::definitions::{StartPin, START_SETTLE_MS};
    use weft_shared::event::now_ms;
    use weft_shared::fsm::meta;
    use weft_shared::ids::InstanceId;
    use weft_shared::{WorkflowEvent, WorkflowEventType};

    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster
        .create_topic(&Topics::default().definitions(), 1, 1)
        .expect("definitions topic");
    let (a, b) = (replica(&bootstrap).await, replica(&bootstrap).await);
    let start = |pin: u32, at_ms: i64| {
        let mut e = WorkflowEvent::new(
            WorkflowEventType::WorkflowCreated,
            "race",
            InstanceId::random(),
            format!("start-{pin}-{at_ms}"),
            at_ms,
        );
        e.metadata
            .insert(meta::DEFINITION_VERSION.into(), pin.to_string());
        e
    };

    // Pinned to version 1 before anyone registered it: not decidable yet.
    let pinned = start(1, now_ms());
    assert!(!b.catalog().decidable(&pinned));
    let waiter = {
        let (b, pinned) = (b.clone(), pinned.clone());
        tokio::spawn(async move { b.decidable_catalog(&pinned, DEADLINE).await })
    };
    a.register(definition("base")).await.expect("registered");
    let catalog = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("the waiter returned in time")
        .expect("waiter task")
        .expect("decidable once the version is read");
    assert!(catalog.covers("race", 1));
    assert_eq!(
        catalog
            .resolve_start("race", StartPin::Version(1), pinned.timestamp_ms)
            .map(|d| d.description.clone()),
        Some("base".to_owned())
    );

    // Pinned to a version nobody registered, far enough in the past: decidable
    // at once, on both replicas, and rejected by both.
    let old = start(9, now_ms() - START_SETTLE_MS - 2_000);
    for r in [&a, &b] {
        let c = r
            .decidable_catalog(&old, DEADLINE)
            .await
            .expect("complete past the start");
        assert!(c.complete_as_of_ms() >= old.timestamp_ms + START_SETTLE_MS);
        assert!(c
            .resolve_start("race", StartPin::Version(9), old.timestamp_ms)
            .is_none());
    }
    // The same pin just now is not decidable until START_SETTLE_MS have passed.
    assert!(!b.catalog().decidable(&start(9, now_ms())));
}
