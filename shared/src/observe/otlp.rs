//! A [`Trace`] as an OTLP/JSON `ExportTraceServiceRequest`: the body an
//! OpenTelemetry collector accepts on `POST /v1/traces`, and what
//! `GET /v1/workflows/{type}/{id}/trace` returns. Span and trace ids are hex,
//! times are nanoseconds since the epoch as strings (the OTLP/JSON mapping).
//! A span still open ends at `open_until_ms` and carries `weft.open = true`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::trace::{Span, SpanKind, SpanStatus, Trace};

/// The instrumentation scope name on every span.
pub const SCOPE: &str = "weft";

/// `trace` as an OTLP/JSON export request from service `service`.
pub fn export_request(trace: &Trace, service: &str, open_until_ms: i64) -> Value {
    let spans: Vec<Value> = trace
        .spans
        .iter()
        .map(|s| span(&trace.trace_id, s, open_until_ms))
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [kv("service.name", service)]},
            "scopeSpans": [{
                "scope": {"name": SCOPE, "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    })
}

fn span(trace_id: &str, s: &Span, open_until_ms: i64) -> Value {
    let mut attributes: Vec<Value> = attrs(&s.attributes);
    attributes.push(kv("weft.span_kind", kind(s.kind)));
    let end = match s.end_ms {
        Some(end) => end,
        None => {
            attributes.push(json!({"key": "weft.open", "value": {"boolValue": true}}));
            open_until_ms.max(s.start_ms)
        }
    };
    let (code, message) = match &s.status {
        SpanStatus::Unset => (0, ""),
        SpanStatus::Ok => (1, ""),
        SpanStatus::Error(m) => (2, m.as_str()),
    };
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            json!({
                "timeUnixNano": nanos(e.at_ms),
                "name": e.name,
                "attributes": attrs(&e.attributes),
            })
        })
        .collect();
    let mut v = json!({
        "traceId": trace_id,
        "spanId": s.span_id,
        "name": s.name,
        // SPAN_KIND_INTERNAL: the engine's own work, not an RPC.
        "kind": 1,
        "startTimeUnixNano": nanos(s.start_ms),
        "endTimeUnixNano": nanos(end),
        "attributes": attributes,
        "events": events,
        "status": {"code": code, "message": message},
    });
    if let Some(p) = &s.parent_span_id {
        v["parentSpanId"] = Value::String(p.clone());
    }
    v
}

fn kind(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Workflow => "workflow",
        SpanKind::State => "state",
        SpanKind::Task => "task",
    }
}

fn attrs(map: &BTreeMap<String, String>) -> Vec<Value> {
    map.iter().map(|(k, v)| kv(k, v)).collect()
}

fn kv(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn nanos(ms: i64) -> String {
    (i128::from(ms.max(0)) * 1_000_000).to_string()
}
