//! The per-reason DLQ metric: `weft_dlq_records{workflow_type, reason, state}`,
//! the dead-lettered sources of each type (copies of one source count once)
//! by reason class ([`super::reason_class`]) and whether they were redriven
//! (`state` = `dead` | `redriven`). A background task re-reads every type's
//! DLQ topic every [`EVERY`] (a DLQ is small); any replica serves it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntGaugeVec, Opts, Registry as Prometheus};
use tokio::sync::watch;
use weft_shared::config::KafkaSettings;
use weft_shared::Topics;

use super::read::read_topic_async;
use super::{entries, reason_class, Redrive};
use crate::definitions::Registry;

/// The metric's name.
pub const DLQ_RECORDS: &str = "weft_dlq_records";
/// How often the DLQ topics are counted.
pub const EVERY: Duration = Duration::from_secs(10);

/// The gauge, registered in `prometheus`.
pub fn gauge(prometheus: &Prometheus) -> IntGaugeVec {
    let g = IntGaugeVec::new(
        Opts::new(
            DLQ_RECORDS,
            "dead-lettered records (one per source) by workflow type, reason class and state (dead, redriven)",
        ),
        &["workflow_type", "reason", "state"],
    )
    .expect("a valid gauge");
    prometheus
        .register(Box::new(g.clone()))
        .expect("weft_dlq_records is registered once");
    g
}

/// Counts `(reason class, state) -> sources` of one DLQ topic.
pub async fn count(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<BTreeMap<(String, &'static str), i64>, super::Error> {
    let records = read_topic_async(settings, topic, None).await?;
    let mut out = BTreeMap::new();
    for e in entries(&records) {
        let state = match e.redrive {
            Redrive::Done { .. } => "redriven",
            _ => "dead",
        };
        *out.entry((reason_class(&e.reason), state)).or_insert(0) += 1;
    }
    Ok(out)
}

/// Keeps the gauge up to date until `stop` turns true.
pub async fn run(
    gauge: IntGaugeVec,
    registry: Arc<Registry>,
    settings: KafkaSettings,
    topics: Topics,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let types: Vec<String> = registry.catalog().types().map(str::to_owned).collect();
        for ty in types {
            match count(&settings, &topics.dlq(&ty)).await {
                Ok(counts) => {
                    for state in ["dead", "redriven"] {
                        // Classes that went away read 0 rather than a stale value.
                        for m in gauge_labels(&gauge, &ty, state) {
                            gauge.with_label_values(&[&ty, &m, state]).set(0);
                        }
                    }
                    for ((class, state), n) in counts {
                        gauge.with_label_values(&[&ty, &class, state]).set(n);
                    }
                }
                Err(e) => {
                    tracing::debug!(workflow_type = %ty, error = %e, "dlq not counted this round")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The reason classes the gauge has for a type and state.
fn gauge_labels(gauge: &IntGaugeVec, ty: &str, state: &str) -> Vec<String> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for mf in gauge.collect() {
        for m in mf.get_metric() {
            let labels: BTreeMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("workflow_type") == Some(&ty) && labels.get("state") == Some(&state) {
                if let Some(r) = labels.get("reason") {
                    out.push((*r).to_owned());
                }
            }
        }
    }
    out
}
