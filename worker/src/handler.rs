//! Task handlers: the [`Handler`] trait (implemented for every
//! `Fn(TaskContext) -> Future<Output = Result<DataMap, TaskError>>`), the
//! serde-typed adapter behind `WorkerBuilder::typed_handler`, and the registry
//! mapping handler names to handlers. The registry also holds the worker's
//! secrets [`Keyring`]: the handler [`Registry::resolve`] returns opens the
//! secrets a task's definition names before the task's handler runs.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_shared::data::{from_data_map, to_data_map, DataMap};
use weft_shared::secrets::{self, Envelope, Keyring, SecretsError};
use weft_shared::TaskDispatch;

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
    keyring: Arc<Keyring>,
}

impl Registry {
    /// The keys secrets are opened with (none by default: a task that names
    /// secrets then fails, or goes to the DLQ, see [`Registry::check_secrets`]).
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.keyring = Arc::new(keyring);
    }

    /// Why the record of `d` cannot run on this worker and goes to the DLQ:
    /// the task names secrets, and the instance's envelope is sealed with a
    /// key id this worker does not hold. Installing the key and replaying the
    /// DLQ record runs it. Every other secrets failure fails the attempt.
    pub fn check_secrets(&self, d: &TaskDispatch) -> Result<(), String> {
        if secrets::requested_names(&d.parameters).is_empty() {
            return Ok(());
        }
        let Some(Ok(env)) = secrets::sealed_in(&d.input).map(Envelope::parse) else {
            return Ok(());
        };
        if self.keyring.get(&env.key_id).is_some() {
            return Ok(());
        }
        let e = SecretsError::UnknownKeyId {
            key_id: env.key_id,
            known: self.keyring.describe(),
        };
        Err(format!("{}: {e}", e.kind()))
    }

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

    /// The handler for `name` behind the opening of the task's secrets, or
    /// terminal `unknown_handler` listing the registered ones.
    pub fn resolve(&self, name: &str) -> Result<Arc<dyn Handler>, TaskError> {
        let inner = self.lookup(name)?;
        Ok(Arc::new(Unseal {
            inner,
            keyring: Arc::clone(&self.keyring),
        }))
    }

    fn lookup(&self, name: &str) -> Result<Arc<dyn Handler>, TaskError> {
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

/// Opens the secrets the task's `secrets` parameter names into
/// [`TaskContext::secrets`], then runs the handler. A task that names
/// secrets the instance cannot give fails, terminally, with the reason's
/// kind (`secrets_missing`, `secrets_unknown_key_id`, `secrets_decrypt_failed`, ...).
struct Unseal {
    inner: Arc<dyn Handler>,
    keyring: Arc<Keyring>,
}

impl Handler for Unseal {
    fn call(&self, mut ctx: TaskContext) -> HandlerFuture {
        let names = secrets::requested_names(&ctx.parameters);
        let sealed = ctx.sealed.take();
        if names.is_empty() {
            return self.inner.call(ctx);
        }
        let Some(sealed) = sealed else {
            return Box::pin(async move {
                Err(TaskError::terminal(
                    "secrets_missing",
                    format!(
                        "the task names secrets ({}) but the instance was started without secrets",
                        names.join(", ")
                    ),
                ))
            });
        };
        let opened = secrets::open(
            &self.keyring,
            &ctx.workflow_type,
            &ctx.instance_id.to_string(),
            &sealed,
            &names,
        );
        match opened {
            Ok(s) => {
                ctx.secrets = s;
                self.inner.call(ctx)
            }
            Err(e) => {
                tracing::warn!(kind = e.kind(), reason = %e, "the task's secrets do not open");
                Box::pin(async move { Err(TaskError::terminal(e.kind(), e.to_string())) })
            }
        }
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

    fn probe() -> Arc<dyn Handler> {
        Arc::new(|ctx: TaskContext| async move {
            let shown: Vec<String> = ctx
                .secrets
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose()))
                .collect();
            Ok::<_, TaskError>(DataMap::from([(
                "seen".to_owned(),
                weft_shared::data::WorkflowData::List(shown),
            )]))
        })
    }

    fn sealed_ctx(ring: &Keyring, names: &[&str]) -> TaskContext {
        let mut ctx = TaskContext::for_test(
            "probe",
            DataMap::new(),
            DataMap::from([(
                "secrets".to_owned(),
                WorkflowData::List(names.iter().map(|s| s.to_string()).collect()),
            )]),
        );
        let all = BTreeMap::from([
            ("token".to_owned(), "T0KEN".to_owned()),
            ("other".to_owned(), "0THER".to_owned()),
        ]);
        ctx.sealed = Some(
            secrets::seal(ring, &ctx.workflow_type, &ctx.instance_id.to_string(), &all).unwrap(),
        );
        ctx
    }

    fn ring(id: &str, b: u8) -> Keyring {
        let mut r = Keyring::default();
        r.insert(id, [b; secrets::KEY_BYTES]).unwrap();
        r
    }

    #[tokio::test]
    async fn a_task_sees_only_the_secrets_its_definition_names() {
        let mut r = Registry::default();
        r.insert("probe", probe());
        r.set_keyring(ring("k1", 1));
        let h = r.resolve("probe").unwrap();
        let out = h
            .call(sealed_ctx(&ring("k1", 1), &["token"]))
            .await
            .unwrap();
        assert_eq!(out["seen"], WorkflowData::List(vec!["token=T0KEN".into()]));
        // Naming none: nothing is opened.
        let out = h.call(sealed_ctx(&ring("k1", 1), &[])).await.unwrap();
        assert_eq!(out["seen"], WorkflowData::List(vec![]));
        // Naming one the instance lacks, or having none at all: terminal failures.
        let err = h
            .call(sealed_ctx(&ring("k1", 1), &["nope"]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "secrets_invalid");
        let mut bare = sealed_ctx(&ring("k1", 1), &["token"]);
        bare.sealed = None;
        let err = h.call(bare).await.unwrap_err();
        assert_eq!(err.error_type, "secrets_missing");
        // Sealed with a key this worker holds under another id, or another key under the same id.
        let err = h
            .call(sealed_ctx(&ring("k2", 1), &["token"]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "secrets_unknown_key_id");
        assert!(!err.retryable);
        let err = h
            .call(sealed_ctx(&ring("k1", 9), &["token"]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "secrets_decrypt_failed");
        assert!(!err.message.contains("T0KEN"));
    }

    #[test]
    fn an_unknown_key_id_of_a_task_that_names_secrets_is_a_dlq_reason() {
        let mut r = Registry::default();
        r.set_keyring(ring("k1", 1));
        let mut d = crate::events::tests::dispatch("probe");
        assert_eq!(r.check_secrets(&d), Ok(()));
        let env = secrets::seal(
            &ring("gone", 3),
            "t",
            "i",
            &BTreeMap::from([("a".to_owned(), "b".to_owned())]),
        )
        .unwrap();
        d.input.insert(secrets::SECRETS_KEY.to_owned(), env.into());
        assert_eq!(r.check_secrets(&d), Ok(()), "a task naming no secrets runs");
        d.parameters.insert("secrets".to_owned(), "a".into());
        assert_eq!(
            r.check_secrets(&d).unwrap_err(),
            "secrets_unknown_key_id: unknown key id 'gone' (this process holds: k1)"
        );
        r.set_keyring(ring("gone", 3));
        assert_eq!(r.check_secrets(&d), Ok(()));
    }

    #[test]
    fn the_envelope_is_taken_out_of_the_input() {
        let mut d = crate::events::tests::dispatch("probe");
        d.input
            .insert(secrets::SECRETS_KEY.to_owned(), "wsec1.k.a.b".into());
        d.input.insert("x".to_owned(), 1i64.into());
        let ctx = TaskContext::from_dispatch(&d, "n", Default::default());
        assert!(!ctx.input.contains_key(secrets::SECRETS_KEY));
        assert!(!ctx.merged_input().contains_key(secrets::SECRETS_KEY));
        assert_eq!(ctx.sealed.as_deref(), Some("wsec1.k.a.b"));
    }
}
