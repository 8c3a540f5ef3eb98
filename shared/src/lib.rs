//! Weft's shared library: the domain model of the workflow-orchestration
//! protocol, the pure workflow and task state machines, workflow definitions,
//! the Avro wire contract, topic naming, Kafka plumbing and configuration.
//! Both binaries and the worker SDK build on it; nothing here keeps state.

pub mod avro;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod data;
pub mod definition;
pub mod dispatch;
pub mod event;
pub mod fsm;
pub mod ids;
pub mod kafka;
pub mod kafka_check;
pub mod lanes;
pub mod model;
pub mod node;
pub mod observe;
pub mod secrets;
pub mod snapshot;
pub mod state;
pub mod telemetry;
pub mod topics;
pub mod transactions;
pub mod usage;

pub use data::{DataMap, WorkflowData};
pub use definition::WorkflowDefinition;
pub use dispatch::TaskDispatch;
pub use event::{WorkflowEvent, WorkflowEventType};
pub use ids::{CorrelationId, EventId, ExecutionId, InstanceId, TaskId};
pub use snapshot::WorkflowSnapshot;
pub use state::{TaskState, WorkflowState};
pub use topics::Topics;
