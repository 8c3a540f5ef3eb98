//! The Weft worker SDK. A worker joins the consumer group of the task topics,
//! runs a handler for each task dispatch with bounded concurrency, and appends
//! `task.started` and `task.completed` / `task.failed` to the workflow's events
//! topic, committing offsets as each task's execution semantics require.
//! While a handler runs it publishes task heartbeats (when the task has a
//! heartbeat timeout), enforces the attempt's deadline, honours cancel
//! control records from the orchestrator (the handler's `ctx.cancel` fires;
//! no result is published), and drops duplicate dispatches of one attempt.
//!
//! ```no_run
//! use weft_worker::{TaskContext, TaskError, Worker};
//! # async fn example(config: weft_shared::config::WeftConfig) -> Result<(), Box<dyn std::error::Error>> {
//! #[derive(serde::Deserialize)]
//! struct Charge { amount: i64 }
//! #[derive(serde::Serialize)]
//! struct Receipt { charged: i64 }
//!
//! let worker = Worker::builder(config)
//!     .typed_handler::<Charge, Receipt, _, _>("charge", |ctx: TaskContext, input: Charge| async move {
//!         // ctx.idempotency_key is stable across attempts: pass it to the payment API
//!         let _ = ctx.idempotency_key;
//!         Ok::<_, TaskError>(Receipt { charged: input.amount })
//!     })
//!     .with_builtins()
//!     .build()?;
//! worker.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod attempts;
pub mod builtins;
mod capacity;
mod checkpoint;
mod claims;
mod consumer;
mod context;
mod control;
mod error;
mod events;
mod execute;
mod handler;
mod heartbeat;
mod lanes;
pub mod metrics;
mod offsets;
mod orphans;
mod publish;
mod results;
mod runtime;
mod server;
mod supervise;
mod task_heartbeat;
mod unowned;
mod usage;
mod worker;

pub use context::TaskContext;
pub use error::{TaskError, WorkerError};
pub use events::{
    attempt_event, checkpoint_event, AttemptEvent, META_ATTEMPT, META_EXECUTION_ID, META_TASK,
    SOURCE_KIND_INPUT,
};
pub use handler::{Handler, HandlerFuture, Registry, Typed};
pub use heartbeat::HEARTBEAT_INTERVAL;
pub use metrics::Metrics;
pub use offsets::{OffsetTracker, Position, Ticket};
pub use server::router;
pub use supervise::{DEADLINE_GRACE, SHUTDOWN_ABORT_AFTER};
pub use task_heartbeat::MIN_INTERVAL as MIN_TASK_HEARTBEAT_INTERVAL;
pub use usage::ChildUsage;
pub use worker::{Worker, WorkerBuilder};
