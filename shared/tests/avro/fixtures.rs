//! Test values of every Avro record: `full_*` sets every optional field and
//! puts every `WorkflowData` variant in some map; `minimal_*` leaves every
//! collection empty and every option unset. All values are fixed (no random
//! ids, no clock) so that their encodings can be compared with golden files.

use std::collections::BTreeMap;

use weft_shared::control::{ControlAction, TaskControl, TaskHeartbeat};
use weft_shared::data::Scalar;
use weft_shared::model::{
    BackoffStrategy, CompensationAction, DependencyCondition, ErrorInfo, ExecutionSemantics,
    IsolationLevel, RetryConfiguration, TaskConfiguration, TaskDependency, TaskPriority,
    TaskResult, TaskType, TimeoutConfiguration, WorkflowContext,
};
use weft_shared::node::{HealthStatus, NodeRecord};
use weft_shared::{
    CorrelationId, DataMap, EventId, ExecutionId, InstanceId, TaskDispatch, TaskId, TaskState,
    WorkflowData, WorkflowDefinition, WorkflowEvent, WorkflowEventType, WorkflowSnapshot,
    WorkflowState,
};

pub const T0: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z

pub fn instance() -> InstanceId {
    InstanceId::for_idempotency_key("orders", "order-42")
}

fn event_id(n: u32) -> EventId {
    EventId::derived(&[b"fixture", &n.to_be_bytes()])
}

/// A map holding every `WorkflowData` variant, with a nested map of every scalar.
pub fn every_variant() -> DataMap {
    let nested = BTreeMap::from([
        ("b".to_owned(), Scalar::Bool(false)),
        ("f".to_owned(), Scalar::Float(-0.25)),
        ("i".to_owned(), Scalar::Int(i64::MIN)),
        ("s".to_owned(), Scalar::Str("ünïcødé ✓".into())),
    ]);
    DataMap::from([
        ("amount".to_owned(), WorkflowData::Float(12.5)),
        ("count".to_owned(), WorkflowData::Int(i64::MAX)),
        ("customer".to_owned(), WorkflowData::Str("c-17".into())),
        ("express".to_owned(), WorkflowData::Bool(true)),
        (
            "items".to_owned(),
            WorkflowData::List(vec!["sku-1".into(), "sku-2".into(), String::new()]),
        ),
        ("address".to_owned(), WorkflowData::Map(nested)),
    ])
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn longs(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

pub fn full_event() -> WorkflowEvent {
    WorkflowEvent {
        event_id: event_id(3),
        event_type: WorkflowEventType::TaskCompleted,
        workflow_type: "orders".into(),
        instance_id: instance(),
        sequence_number: 7,
        causation_id: Some(event_id(2)),
        correlation_chain: vec![event_id(1), event_id(2)],
        timestamp_ms: T0 + 1_234,
        data: every_variant(),
        metadata: strings(&[
            ("weft.definition_version", "3"),
            ("weft.source_kind", "decision"),
        ]),
        idempotency_key: "order-42:charge:1".into(),
        source_node_id: "worker-1".into(),
    }
}

pub fn minimal_event() -> WorkflowEvent {
    WorkflowEvent {
        event_id: event_id(1),
        event_type: WorkflowEventType::WorkflowCreated,
        workflow_type: "orders".into(),
        instance_id: instance(),
        sequence_number: 0,
        causation_id: None,
        correlation_chain: Vec::new(),
        timestamp_ms: T0,
        data: DataMap::new(),
        metadata: BTreeMap::new(),
        idempotency_key: "order-42".into(),
        source_node_id: String::new(),
    }
}

fn full_timeouts() -> TimeoutConfiguration {
    TimeoutConfiguration {
        execution_timeout_ms: 30_000,
        heartbeat_timeout_ms: 5_000,
        response_timeout_ms: 10_000,
        cleanup_timeout_ms: 2_000,
        grace_period_ms: 500,
    }
}

fn full_retry() -> RetryConfiguration {
    RetryConfiguration {
        max_attempts: 5,
        backoff_strategy: BackoffStrategy::Custom,
        base_delay_ms: 100,
        max_delay_ms: 10_000,
        jitter: true,
        retry_on: vec!["io".into(), "http_status_503".into()],
        stop_on: vec!["fatal".into()],
        custom_delays_ms: vec![100, 500, 2_500],
    }
}

fn full_task() -> TaskConfiguration {
    TaskConfiguration {
        name: "charge".into(),
        task_type: TaskType::Effect,
        handler: "http".into(),
        description: "Charge the customer's card".into(),
        dependencies: vec![
            TaskDependency {
                task_name: "reserve".into(),
                condition: DependencyCondition::Completed,
            },
            TaskDependency {
                task_name: "audit".into(),
                condition: DependencyCondition::Finished,
            },
        ],
        parameters: every_variant(),
        constraints: DataMap::from([("region".to_owned(), WorkflowData::Str("eu".into()))]),
        timeout_config: full_timeouts(),
        retry_config: full_retry(),
        execution_semantics: ExecutionSemantics::ExactlyOnce,
        priority: TaskPriority::Critical,
        tags: vec!["payments".into()],
        resource_requirements: longs(&[("cpu_millis", 250), ("memory_mb", 128)]),
        node_selector: Some(strings(&[("zone", "eu-1a")])),
        compensation: Some("refund".into()),
    }
}

fn full_error(task: &str) -> ErrorInfo {
    ErrorInfo {
        error_type: "http_status_503".into(),
        message: "service unavailable".into(),
        retryable: true,
        task_name: Some(task.into()),
        attempt: Some(2),
        timestamp_ms: T0 + 5_000,
        details: strings(&[("status", "503"), ("url", "https://pay.example/charge")]),
    }
}

fn full_result() -> TaskResult {
    let task_id = TaskId::of(instance(), "charge");
    TaskResult {
        task_id,
        task_name: "charge".into(),
        execution_id: ExecutionId::of(task_id, 2),
        attempt: 2,
        state: TaskState::Failed,
        result_data: Some(every_variant()),
        error: Some(full_error("charge")),
        start_time_ms: T0 + 4_000,
        end_time_ms: Some(T0 + 5_000),
        duration_ms: Some(1_000),
        node_id: "worker-1".into(),
        resource_usage: longs(&[("cpu_millis", 90)]),
        metrics: BTreeMap::from([
            ("latency_ms".to_owned(), 987.5),
            ("retries".to_owned(), 1.0),
        ]),
        checkpoints: vec![every_variant(), DataMap::new()],
    }
}

fn full_context() -> WorkflowContext {
    WorkflowContext {
        workflow_type: "orders".into(),
        instance_id: instance(),
        correlation_id: CorrelationId::derived(&[b"fixture-correlation"]),
        isolation_level: IsolationLevel::Serializable,
        data: every_variant(),
        secrets: strings(&[("api_key", "vault:payments/api_key")]),
        capabilities: vec!["http".into(), "shell".into()],
        resource_limits: longs(&[("tasks", 10)]),
        timeout_config: full_timeouts(),
        retry_config: full_retry(),
    }
}

pub fn full_dispatch() -> TaskDispatch {
    let task_id = TaskId::of(instance(), "charge");
    TaskDispatch {
        workflow_type: "orders".into(),
        instance_id: instance(),
        definition_version: 3,
        task_id,
        task_name: "charge".into(),
        task_type: TaskType::Effect,
        handler: "http".into(),
        attempt: 2,
        execution_id: ExecutionId::of(task_id, 2),
        input: every_variant(),
        parameters: DataMap::from([(
            "url".to_owned(),
            WorkflowData::Str("https://pay.example".into()),
        )]),
        upstream: BTreeMap::from([
            ("reserve".to_owned(), every_variant()),
            ("audit".to_owned(), DataMap::new()),
        ]),
        execution_semantics: ExecutionSemantics::ExactlyOnce,
        priority: TaskPriority::High,
        timeout_config: full_timeouts(),
        idempotency_key: "order-42:charge".into(),
        scheduled_event_id: event_id(5),
        correlation_chain: vec![event_id(1), event_id(4)],
        scheduled_at_ms: T0 + 3_000,
        not_before_ms: T0 + 3_500,
        deadline_ms: T0 + 33_500,
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    }
}

pub fn minimal_dispatch() -> TaskDispatch {
    let task_id = TaskId::of(instance(), "a");
    TaskDispatch {
        workflow_type: "orders".into(),
        instance_id: instance(),
        definition_version: 1,
        task_id,
        task_name: "a".into(),
        task_type: TaskType::Compute,
        handler: "noop".into(),
        attempt: 1,
        execution_id: ExecutionId::of(task_id, 1),
        input: DataMap::new(),
        parameters: DataMap::new(),
        upstream: BTreeMap::new(),
        execution_semantics: ExecutionSemantics::AtLeastOnce,
        priority: TaskPriority::Normal,
        timeout_config: TimeoutConfiguration::default(),
        idempotency_key: "order-42:a".into(),
        scheduled_event_id: event_id(2),
        correlation_chain: Vec::new(),
        scheduled_at_ms: T0,
        not_before_ms: 0,
        deadline_ms: 0,
        traceparent: String::new(),
    }
}

pub fn full_snapshot() -> WorkflowSnapshot {
    WorkflowSnapshot {
        workflow_type: "orders".into(),
        instance_id: instance(),
        definition_version: 3,
        sequence_number: 12,
        state: WorkflowState::Compensating,
        context: full_context(),
        tasks: vec![TaskConfiguration::new("reserve", "noop"), full_task()],
        results: vec![full_result()],
        error_history: vec![
            full_error("charge"),
            ErrorInfo::new("timeout", "workflow timed out", false),
        ],
        compensation_log: vec![CompensationAction {
            task_name: "reserve".into(),
            compensation_task: "release".into(),
            state: TaskState::Running,
            attempt: 1,
            error: Some(full_error("release")),
            timestamp_ms: T0 + 6_000,
        }],
        created_at_ms: T0,
        updated_at_ms: T0 + 6_000,
        checkpoint_data: every_variant(),
        resource_usage: longs(&[("cpu_millis", 90), ("tasks", 2)]),
    }
}

pub fn minimal_snapshot() -> WorkflowSnapshot {
    WorkflowSnapshot {
        workflow_type: "orders".into(),
        instance_id: instance(),
        definition_version: 1,
        sequence_number: 1,
        state: WorkflowState::Pending,
        context: WorkflowContext {
            workflow_type: "orders".into(),
            instance_id: instance(),
            correlation_id: CorrelationId::derived(&[b"fixture-correlation"]),
            isolation_level: IsolationLevel::ReadCommitted,
            data: DataMap::new(),
            secrets: BTreeMap::new(),
            capabilities: Vec::new(),
            resource_limits: BTreeMap::new(),
            timeout_config: TimeoutConfiguration::default(),
            retry_config: RetryConfiguration::default(),
        },
        tasks: Vec::new(),
        results: Vec::new(),
        error_history: Vec::new(),
        compensation_log: Vec::new(),
        created_at_ms: T0,
        updated_at_ms: T0,
        checkpoint_data: DataMap::new(),
        resource_usage: BTreeMap::new(),
    }
}

pub fn full_definition() -> WorkflowDefinition {
    WorkflowDefinition {
        workflow_type: "orders".into(),
        version: 3,
        description: "Take an order from reservation to payment".into(),
        tasks: vec![TaskConfiguration::new("reserve", "noop"), full_task()],
        timeout_config: full_timeouts(),
        default_retry: full_retry(),
        default_input: every_variant(),
        tags: vec!["payments".into(), "critical-path".into()],
        metadata: strings(&[("owner", "team-orders")]),
        registered_at_ms: T0,
    }
}

pub fn minimal_definition() -> WorkflowDefinition {
    WorkflowDefinition::new("orders", Vec::new())
}

pub fn full_node() -> NodeRecord {
    NodeRecord {
        node_id: "worker-1".into(),
        role: "worker".into(),
        capabilities: vec!["http".into(), "noop".into()],
        capacity_limits: longs(&[("tasks", 16)]),
        current_load: longs(&[("tasks", 3)]),
        active_tasks: vec!["order-42:charge:2".into()],
        health: HealthStatus::Draining,
        labels: strings(&[("zone", "eu-1a")]),
        started_at_ms: T0,
        heartbeat_at_ms: T0 + 9_000,
    }
}

pub fn minimal_node() -> NodeRecord {
    NodeRecord {
        node_id: "n".into(),
        role: "orchestrator".into(),
        capabilities: Vec::new(),
        capacity_limits: BTreeMap::new(),
        current_load: BTreeMap::new(),
        active_tasks: Vec::new(),
        health: HealthStatus::Healthy,
        labels: BTreeMap::new(),
        started_at_ms: 0,
        heartbeat_at_ms: 0,
    }
}

fn attempt_2() -> (InstanceId, ExecutionId) {
    let task = TaskId::of(instance(), "charge");
    (instance(), ExecutionId::of(task, 2))
}

pub fn full_control() -> TaskControl {
    let (instance_id, execution_id) = attempt_2();
    TaskControl {
        action: ControlAction::Cancel,
        workflow_type: "orders".into(),
        instance_id,
        task_name: "charge".into(),
        attempt: 2,
        execution_id,
        grace_period_ms: 1_500,
        reason: "workflow cancelled: customer asked ✓".into(),
    }
}

pub fn minimal_control() -> TaskControl {
    TaskControl {
        grace_period_ms: 0,
        reason: String::new(),
        ..full_control()
    }
}

pub fn full_heartbeat() -> TaskHeartbeat {
    let (instance_id, execution_id) = attempt_2();
    TaskHeartbeat {
        workflow_type: "orders".into(),
        instance_id,
        task_name: "charge".into(),
        attempt: 2,
        execution_id,
        node_id: "worker-1".into(),
        at_ms: T0 + 4_000,
    }
}

pub fn minimal_heartbeat() -> TaskHeartbeat {
    TaskHeartbeat {
        node_id: String::new(),
        at_ms: 0,
        ..full_heartbeat()
    }
}
