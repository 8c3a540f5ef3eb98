//! Task handlers: the [`Handler`] trait (implemented for every
//! `Fn(TaskContext) -> Future<Output = Result<DataMap, TaskError>>`), the
//! serde-typed adapter behind `WorkerBuilder::typed_handler`, and the registry
//! mapping handler names to handlers.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_shared::data::{from_data_map, to_data_map, DataMap};

use crate::context::TaskContext;
use crate::error::TaskError;

/// The future a handler returns: the task's output, or why the attempt failed.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<DataMap, TaskError>> + Send + 'static>>;

/// Runs one task attempt.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, ctx: TaskContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<DataMap, TaskError>> + Send + 'static,
{
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// Adapts `Fn(TaskContext, In) -> Future<Output = Result<Out, TaskError>>` to
/// [`Handler`]: `In` is deserialized from the workflow input overlaid with the
/// task parameters (terminal `input_invalid` when it does not fit), `Out` must
/// serialize to a data map (terminal `output_invalid` otherwise).
pub struct Typed<In, Out, F> {
    f: Arc<F>,
    _types: PhantomData<fn(In) -> Out>,
}

impl<In, Out, F> Typed<In, Out, F> {
    pub fn new(f: F) -> Self {
        Self {
            f: Arc::new(f),
            _types: PhantomData,
        }
    }
}

impl<In, Out, F, Fut> Handler for Typed<In, Out, F>
where
    In: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + 'static,
    F: Fn(TaskContext, In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, TaskError>> + Send + 'static,
{
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        let f = Arc::clone(&self.f);
        Box::pin(async move {
            let input: In = from_data_map(&ctx.merged_input(), "input").map_err(|e| {
                TaskError::terminal("input_invalid", format!("task input does not fit: {e}"))
            })?;
            let output = f(ctx, input).await?;
            to_data_map(&output, "output").map_err(|e| {
                TaskError::terminal(
                    "output_invalid",
                    format!("task output is not workflow data: {e}"),
                )
            })
        })
    }
}

/// Handlers by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// Registers `handler` under `name`, replacing an earlier one.
    pub fn insert(&mut self, name: impl Into<String>, handler: Arc<dyn Handler>) {
        self.handlers.insert(name.into(), handler);
    }

    /// Registers `handler` under `name` unless that name is taken.
    pub fn insert_if_absent(&mut self, name: &str, handler: Arc<dyn Handler>) {
        self.handlers.entry(name.to_owned()).or_insert(handler);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// The handler for `name`, or terminal `unknown_handler` listing the registered ones.
    pub fn resolve(&self, name: &str) -> Result<Arc<dyn Handler>, TaskError> {
        self.get(name).cloned().ok_or_else(|| {
            TaskError::terminal(
                "unknown_handler",
                format!(
                    "no handler '{name}' is registered on this worker (registered: {})",
                    self.names().join(", ")
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use weft_shared::data::WorkflowData;

    #[derive(Deserialize)]
    struct ChargeIn {
        amount: i64,
        currency: String,
    }

    #[derive(Serialize)]
    struct ChargeOut {
        charged: i64,
        currency: String,
    }

    fn charge() -> impl Handler {
        Typed::<ChargeIn, ChargeOut, _>::new(|_ctx: TaskContext, i: ChargeIn| async move {
            Ok::<_, TaskError>(ChargeOut {
                charged: i.amount * 2,
                currency: i.currency,
            })
        })
    }

    #[tokio::test]
    async fn typed_input_merges_parameters_over_input() {
        let input = DataMap::from([
            ("amount".into(), 5i64.into()),
            ("currency".into(), "usd".into()),
        ]);
        let params = DataMap::from([("currency".into(), "eur".into())]);
        let out = charge()
            .call(TaskContext::for_test("charge", input, params))
            .await
            .unwrap();
        assert_eq!(out["charged"], WorkflowData::Int(10));
        assert_eq!(out["currency"], WorkflowData::Str("eur".into()));
    }

    #[tokio::test]
    async fn typed_input_that_does_not_fit_is_terminal_input_invalid() {
        let input = DataMap::from([("amount".into(), "lots".into())]);
        let err = charge()
            .call(TaskContext::for_test("charge", input, DataMap::new()))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "input_invalid");
        assert!(!err.retryable);
    }

    #[tokio::test]
    async fn output_that_is_not_a_data_map_is_terminal_output_invalid() {
        let h = Typed::<DataMap, i64, _>::new(|_ctx: TaskContext, _in: DataMap| async {
            Ok::<_, TaskError>(7)
        });
        let err = h
            .call(TaskContext::for_test("n", DataMap::new(), DataMap::new()))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "output_invalid");
        assert!(!err.retryable);
        let nested =
            Typed::<DataMap, serde_json::Value, _>::new(|_ctx: TaskContext, _in: DataMap| async {
                Ok::<_, TaskError>(serde_json::json!({"a": {"b": {"c": 1}}}))
            });
        let err = nested
            .call(TaskContext::for_test("n", DataMap::new(), DataMap::new()))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "output_invalid");
        assert!(err.message.contains("output.a.b"), "{}", err.message);
    }

    #[test]
    fn unknown_handler_names_the_registered_ones() {
        let mut r = Registry::default();
        r.insert(
            "noop",
            Arc::new(|_ctx: TaskContext| async { Ok::<_, TaskError>(DataMap::new()) }),
        );
        r.insert("charge", Arc::new(charge()));
        let err = r.resolve("refund").err().unwrap();
        assert_eq!(err.error_type, "unknown_handler");
        assert!(!err.retryable);
        assert!(
            err.message.contains("'refund'") && err.message.contains("charge, noop"),
            "{}",
            err.message
        );
    }
}
