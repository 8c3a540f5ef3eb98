//! `weft-bench`'s table, printed from the report's JSON (so the table and the
//! file always agree), and the targets checked against it.

use std::fmt::Write as _;

use serde_json::Value;

/// A figure at `path` (`/`-separated keys) of `v`, as a number.
pub fn num(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path)?.as_f64()
}

pub(super) fn fmt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// The first line of `s`, at most 300 characters (the JSON keeps all of it).
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

/// The targets: `(what, JSON path, comparison, target)`.
const TARGETS: &[(&str, &str, Cmp, f64)] = &[
    (
        "workflows/s (SQLite)",
        "/sqlite/throughput/workflows_per_s",
        Cmp::AtLeast,
        400.0,
    ),
    (
        "tasks/s (SQLite)",
        "/sqlite/throughput/tasks_per_s",
        Cmp::AtLeast,
        1600.0,
    ),
    (
        "engine msgs/s / raw bulk msgs/s",
        "/sqlite/throughput/messages_vs_raw_bulk",
        Cmp::AtLeast,
        0.5,
    ),
    (
        "late / early window (flat within 15 %)",
        "/sqlite/throughput/late_to_early",
        Cmp::Within,
        0.15,
    ),
    (
        "latency p50 ms, one at a time",
        "/sqlite/latency/client_ms/p50",
        Cmp::AtMost,
        40.0,
    ),
    (
        "latency p99 ms, one at a time",
        "/sqlite/latency/client_ms/p99",
        Cmp::AtMost,
        80.0,
    ),
];

#[derive(Clone, Copy, Debug)]
enum Cmp {
    AtLeast,
    AtMost,
    /// `|x − 1| ≤ target`.
    Within,
}

/// `[(what, value, target text, met)]` of the report.
pub fn targets(report: &Value) -> Vec<(String, Option<f64>, String, Option<bool>)> {
    TARGETS
        .iter()
        .map(|(what, path, cmp, target)| {
            let v = num(report, path);
            let (text, met) = match cmp {
                Cmp::AtLeast => (format!(">= {target}"), v.map(|v| v >= *target)),
                Cmp::AtMost => (format!("<= {target}"), v.map(|v| v <= *target)),
                Cmp::Within => (
                    format!("1 +/- {target}"),
                    v.map(|v| (v - 1.0).abs() <= *target),
                ),
            };
            ((*what).to_owned(), v, text, met)
        })
        .collect()
}

/// The whole table.
pub fn table(r: &Value) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "\n=== weft-bench: diamond workflows (A -> (B, C) -> D, no-op tasks) ==="
    );
    let _ = writeln!(
        w,
        "machine   {} CPUs, {}; load average before: {}; build profile: {}",
        r["machine"]["nproc"],
        r["machine"]["cpu"].as_str().unwrap_or("?"),
        r["machine"]["load_average_before"].as_str().unwrap_or("?"),
        r["machine"]["profile"].as_str().unwrap_or("?"),
    );
    let st = &r["settings"];
    let _ = writeln!(
        w,
        "settings  {} orchestrator(s), {} worker(s), {} workflows ({} on the memory engine), \
         {} in flight, {} start requests at once, {} latency runs, {} round-trip runs, {} chains, \
         {} raw records",
        st["orchestrators"],
        st["workers"],
        st["workflows"],
        st["memory_workflows"],
        st["in_flight"],
        st["concurrency"],
        st["latency_runs"],
        st["rtt_runs"],
        st["chains"],
        st["raw_messages"],
    );
    let sq = &r["sqlite"];
    let _ = writeln!(
        w,
        "broker    Tansu {} ({}), {} partitions per topic",
        r["tansu"]["version"].as_str().unwrap_or("?"),
        r["tansu"]["sqlite_bin"].as_str().unwrap_or("?"),
        sq["partitions"]
    );

    let _ = writeln!(
        w,
        "\n-- throughput ({} workflows, {} in flight) --",
        st["workflows"], st["in_flight"]
    );
    let _ = writeln!(w, "{:<44} {:>12} {:>12}", "", "SQLite", "memory");
    let me = &r["memory"];
    let row = |w: &mut String, label: &str, path: &str, d: usize| {
        let _ = writeln!(
            w,
            "{label:<44} {:>12} {:>12}",
            fmt(num(sq, path), d),
            fmt(num(me, path), d)
        );
    };
    row(
        w,
        "workflows/s (first start -> last completed)",
        "/throughput/workflows_per_s",
        1,
    );
    row(w, "tasks/s", "/throughput/tasks_per_s", 1);
    row(w, "early window workflows/s", "/throughput/early/per_s", 1);
    row(w, "late window workflows/s", "/throughput/late/per_s", 1);
    row(w, "late / early", "/throughput/late_to_early", 3);
    row(
        w,
        "engine records (events + tasks topics)/wf",
        "/throughput/records_per_workflow",
        2,
    );
    row(w, "engine messages/s", "/throughput/messages_per_s", 0);
    row(
        w,
        "raw bulk produce -> consume msgs/s",
        "/raw_bulk/messages_per_s",
        0,
    );
    row(
        w,
        "engine msgs/s / raw bulk msgs/s",
        "/throughput/messages_vs_raw_bulk",
        3,
    );
    row(
        w,
        "latency under load p50 ms",
        "/throughput/latency_ms/p50",
        0,
    );
    row(
        w,
        "latency under load p99 ms",
        "/throughput/latency_ms/p99",
        0,
    );
    row(
        w,
        "workflows in flight, mean",
        "/throughput/in_flight_mean",
        0,
    );
    row(
        w,
        "workflows in flight, peak",
        "/throughput/in_flight_peak",
        0,
    );
    row(
        w,
        "start requests: seconds for all",
        "/throughput/start_phase_s",
        2,
    );
    row(
        w,
        "start request p99 ms",
        "/throughput/start_requests_ms/p99",
        1,
    );
    if let Some(e) = sq["throughput"]["early"].as_object() {
        let _ = writeln!(
            w,
            "(windows by completion order: completions {}..{} and {}..{}; wall time and windows \
             from event timestamps)",
            e["from"], e["to"], sq["throughput"]["late"]["from"], sq["throughput"]["late"]["to"]
        );
    }
    if let Some(reason) = me["skipped"].as_str() {
        let _ = writeln!(w, "memory engine: skipped: {reason}");
    }
    if let Some(reason) = sq["failed"].as_str() {
        let _ = writeln!(w, "SQLite run: FAILED: {}", first_line(reason));
    }
    if let Some(reason) = me["failed"].as_str() {
        let _ = writeln!(w, "memory engine: FAILED: {}", first_line(reason));
    }

    let _ = writeln!(w, "\n-- cost during the throughput run --");
    let _ = writeln!(
        w,
        "{:<26} {:>22} {:>10} {:>22} {:>10}",
        "process", "SQLite cpu s/1000 wf", "RSS MiB", "memory cpu s/1000 wf", "RSS MiB"
    );
    let names: Vec<String> = sq["cost"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for name in names {
        let p = |run: &Value, k: &str| num(&run["cost"][&name], &format!("/{k}"));
        let _ = writeln!(
            w,
            "{name:<26} {:>22} {:>10} {:>22} {:>10}",
            fmt(p(sq, "cpu_s_per_1000_workflows"), 2),
            fmt(p(sq, "rss_mib"), 0),
            fmt(p(me, "cpu_s_per_1000_workflows"), 2),
            fmt(p(me, "rss_mib"), 0)
        );
    }
    let _ = writeln!(
        w,
        "(CPU: utime + stime from /proc/<pid>/stat, first start -> all completed \
        seen; RSS: VmRSS at that moment)"
    );
    for (label, run) in [("SQLite", sq), ("memory", me)] {
        for h in run["batch"]["histograms"].as_array().into_iter().flatten() {
            let _ = writeln!(
                w,
                "batches ({label}): {} mean {} over {} batches",
                h["name"].as_str().unwrap_or("?"),
                h["mean"],
                h["batches"]
            );
        }
        if let Some(rpb) = num(run, "/batch/records_per_batch") {
            let _ = writeln!(
                w,
                "batches ({label}): {rpb:.2} records consumed per batch \
                (processed counters / batch count)"
            );
        }
    }

    let _ = writeln!(w, "\n-- latency, one diamond at a time (SQLite) --");
    let l = &sq["latency"];
    let _ = writeln!(
        w,
        "start request sent -> completed seen     p50 {} ms  p99 {} ms  max {} ms ({} runs, \
         watched with GET .../watch)",
        fmt(num(l, "/client_ms/p50"), 1),
        fmt(num(l, "/client_ms/p99"), 1),
        fmt(num(l, "/client_ms/max"), 1),
        l["runs"]
    );
    let _ = writeln!(
        w,
        "created -> last task completed (stamps)  p50 {} ms  p99 {} ms",
        fmt(num(l, "/server_ms/p50"), 0),
        fmt(num(l, "/server_ms/p99"), 0)
    );
    let _ = writeln!(
        w,
        "broker round trip, 1 record              p50 {} ms  p99 {} ms  (produce -> consume, \
         Weft's client settings)",
        fmt(num(sq, "/broker_rtt_ms/p50"), 2),
        fmt(num(sq, "/broker_rtt_ms/p99"), 2)
    );
    let _ = writeln!(
        w,
        "round trips on the critical path         {} (causal links of the history, \
         {}..{} over the runs)",
        l["hops"], l["hops_min"], l["hops_max"]
    );
    let _ = writeln!(
        w,
        "floor = round trips x round trip p50     {} ms",
        fmt(num(sq, "/floor_ms"), 1)
    );
    for span in l["spans"].as_array().into_iter().flatten() {
        let _ = writeln!(
            w,
            "  {:<44} {} round trip(s)  p50 {:>5} ms  p99 {:>5} ms",
            span["span"].as_str().unwrap_or("?"),
            span["round_trips"],
            span["p50_ms"],
            span["p99_ms"]
        );
    }
    let _ = writeln!(
        w,
        "  (spans between events their producer stamps; a decision carries its input's \
         timestamp, so the last round trip shows no time of its own)"
    );
    if let Some(per) = l["events_per_workflow"].as_object() {
        let list: Vec<String> = per.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(w, "history events per workflow: {}", list.join(", "));
    }

    let _ = writeln!(
        w,
        "\n-- fair raw baseline: produce -> consume -> produce chain (SQLite) --"
    );
    let c = &sq["chain"];
    let rec = &sq["records"];
    let _ = writeln!(
        w,
        "depth {} round trips, {} partitions, Weft's client settings; values sampled from Weft's \
        topics (mean {} / {} bytes), headers {}",
        c["depth"],
        sq["partitions"],
        rec["events"]["mean_value_bytes"],
        rec["tasks"]["mean_value_bytes"],
        rec["events"]["headers"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    let _ = writeln!(
        w,
        "one chain at a time       p50 {} ms  p99 {} ms",
        fmt(num(c, "/latency_ms/p50"), 1),
        fmt(num(c, "/latency_ms/p99"), 1)
    );
    let _ = writeln!(
        w,
        "chains/s                  {}  ({} chains, {} in flight)",
        fmt(num(c, "/throughput/per_s"), 1),
        c["throughput"]["chains"],
        c["throughput"]["window"]
    );
    let _ = writeln!(
        w,
        "engine / chain            workflows/s {}   latency p50 {}x",
        fmt(
            ratio(
                num(sq, "/throughput/workflows_per_s"),
                num(c, "/throughput/per_s")
            ),
            3
        ),
        fmt(
            ratio(num(l, "/client_ms/p50"), num(c, "/latency_ms/p50")),
            1
        )
    );
    let _ = writeln!(
        w,
        "engine / raw bulk         msgs/s {}",
        fmt(num(sq, "/throughput/messages_vs_raw_bulk"), 3)
    );

    let _ = writeln!(w, "\n-- issue 12 targets --");
    for (what, v, target, met) in targets(r) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        };
        let _ = writeln!(
            w,
            "{what:<44} {:>10}  target {target:<10} {verdict}",
            fmt(v, 3)
        );
    }
    if num(r, "/settings/workflows").is_some_and(|n| n < 20_000.0) {
        let _ = writeln!(
            w,
            "(the throughput targets are for 20,000 workflows: --workflows 20000)"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_judge_each_figure() {
        let r = json!({ "sqlite": {
            "throughput": { "workflows_per_s": 450.0, "late_to_early": 0.8, "messages_vs_raw_bulk": 0.5 },
            "latency": { "client_ms": { "p50": 41.0 } },
        }});
        let t = targets(&r);
        assert_eq!(t[0].3, Some(true));
        assert_eq!(t[1].3, None); // tasks/s absent
        assert_eq!(t[2].3, Some(true));
        assert_eq!(t[3].3, Some(false)); // 20 % slower at the end
        assert_eq!(t[4].3, Some(false));
    }
}
