// Weft console: an instance's trace (GET .../trace?format=spans) as a
// waterfall: the workflow, each state it was in, and every task attempt, with
// the attempt's time in the queue (hatched: scheduled → started) apart from
// its run time, retries as separate attempts, compensation tasks marked.
"use strict";

(function () {
  const W = window.W;
  const h = W.h;
  // Rows drawn at most: a history of pauses and resumes has a state span per input.
  const MAX_ROWS = 400;

  // trace: the spans document; compensations: names of compensation tasks.
  W.waterfall = function waterfall(trace, compensations) {
    const spans = trace.spans || [];
    if (!spans.length) return h("p", { class: "muted" }, "No spans yet.");
    const now = Date.now();
    const t0 = Math.min(...spans.map((s) => s.start_ms));
    const t1 = Math.max(...spans.map((s) => s.end_ms || now), t0 + 1);
    const span = t1 - t0;
    const pct = (ms) => `${(100 * (ms - t0)) / span}%`;
    const width = (a, b) => `${Math.max(0.15, (100 * (b - a)) / span)}%`;
    const rows = spans.slice(0, MAX_ROWS).map((s) => {
      const end = s.end_ms || now;
      const a = s.attributes || {};
      const track = h("div", { class: "wf-track" });
      const status = s.status && s.status.code;
      const cls = `wf-bar ${s.kind === "state" ? "state" : status === "error" ? "error" : status === "ok" ? "ok" : ""}${s.end_ms ? "" : " open"}`;
      let runFrom = s.start_ms;
      if (s.kind === "task" && a["task.queue_ms"]) {
        const q = Number(a["task.queue_ms"]);
        const qbar = h("div", { class: "wf-bar queue", title: `queued ${W.fmtMs(q)}` });
        qbar.style.left = pct(s.start_ms);
        qbar.style.width = width(s.start_ms, Math.min(end, s.start_ms + q));
        track.append(qbar);
        runFrom = Math.min(end, s.start_ms + q);
      }
      const bar = h("div", { class: cls, title: `${s.name}: ${W.fmtMs(end - s.start_ms)}${status === "error" ? ` — ${s.status.message}` : ""}` });
      bar.style.left = pct(runFrom);
      bar.style.width = width(runFrom, end);
      track.append(bar);
      const task = a["task.name"];
      const attempt = Number(a["task.attempt"] || 0);
      const label = [
        s.name,
        attempt > 1 ? ` (attempt ${attempt}, retry)` : attempt === 1 ? " (attempt 1)" : "",
        task && compensations.has(task) ? " [compensation]" : "",
      ].join("");
      const detail =
        s.kind === "task"
          ? `${a["task.queue_ms"] ? `q ${W.fmtMs(Number(a["task.queue_ms"]))} · ` : ""}${a["task.run_ms"] ? `run ${W.fmtMs(Number(a["task.run_ms"]))}` : s.end_ms ? W.fmtMs(end - s.start_ms) : "running"}`
          : W.fmtMs(end - s.start_ms);
      return h(
        "div",
        { class: `wf-row kind-${s.kind}`, dataset: { span: s.name, outcome: a["task.outcome"] || "" } },
        h("div", { class: "label", title: `${label}${a["task.node_id"] ? ` on ${a["task.node_id"]}` : ""}` }, label),
        track,
        h("div", { class: "muted num" }, detail)
      );
    });
    return h(
      "div",
      { class: "waterfall", id: "waterfall" },
      h("div", { class: "muted" }, `${W.fmtTime(t0)} → ${W.fmtMs(span)}${spans[0].end_ms ? "" : " (running)"} · hatched: waiting for a worker, solid: running`),
      rows,
      spans.length > MAX_ROWS
        ? h("div", { class: "muted", id: "waterfall-more" }, `… and ${W.fmtInt(spans.length - MAX_ROWS)} more spans (the whole trace: GET …/trace)`)
        : null
    );
  };
})();
