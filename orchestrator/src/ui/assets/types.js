// Weft console: the workflow types page — every registered type with its
// analytics at a glance (started, in flight, success rate, duration
// percentiles, the bottleneck, insights as badges), refreshed every 5 s.
"use strict";

(function () {
  const W = window.W;
  const h = W.h;

  W.insightBadges = (report) =>
    (report.insights || []).map((i) =>
      h(
        "span",
        { class: `badge${i.kind === "bottleneck" ? " bottleneck" : ""}`, title: i.recommendation, dataset: { insight: i.kind } },
        `${i.kind}: ${i.subject}`
      )
    );

  function row(t, report) {
    const d = report ? report.completed_duration || {} : {};
    const cell = (v, cls = "num") => h("td", { class: cls }, v);
    return h(
      "tr",
      { dataset: { type: t.workflow_type } },
      h("td", {}, h("a", { href: `#/types/${W.enc(t.workflow_type)}`, class: "type-link" }, t.workflow_type), h("div", { class: "muted" }, t.description || "")),
      h("td", {}, h("a", { href: `#/definitions/${W.enc(t.workflow_type)}` }, `v${t.latest_version}`)),
      report ? [
        cell(W.fmtInt(report.started)),
        h("td", { class: "num", dataset: { field: "in_flight" } }, W.fmtInt(report.in_flight)),
        cell(W.fmtPct(report.success_rate)),
        cell(d.count ? W.fmtMs(d.p50_ms) : "–"),
        cell(d.count ? W.fmtMs(d.p95_ms) : "–"),
        cell(d.count ? W.fmtMs(d.p99_ms) : "–"),
        h("td", { dataset: { field: "bottleneck" } }, report.bottleneck ? h("span", { class: "badge bottleneck" }, report.bottleneck) : "–"),
        h("td", {}, W.insightBadges(report)),
      ] : h("td", { colspan: 8, class: "muted" }, "analytics unavailable")
    );
  }

  W.pages.types = function () {
    const view = document.getElementById("view");
    const body = h("tbody");
    const note = h("p", { class: "muted" });
    view.append(
      h("h1", {}, "Workflow types"),
      h(
        "table",
        { id: "types" },
        h(
          "thead",
          {},
          h("tr", {}, ["type", "definition", "started", "in flight", "success", "p50", "p95", "p99", "bottleneck", "insights"].map((c, i) => h("th", { class: i > 1 && i < 8 ? "num" : "" }, c)))
        ),
        body
      ),
      note
    );
    let timer = null;
    let stopped = false;
    async function load() {
      try {
        const list = await W.api("/v1/definitions");
        const reports = await Promise.all(
          list.types.map((t) => W.api(`/v1/analytics/${W.enc(t.workflow_type)}`).catch(() => null))
        );
        if (stopped) return;
        W.clear(body);
        list.types.forEach((t, i) => body.append(row(t, reports[i])));
        note.textContent = list.types.length
          ? `Durations are of completed instances. Updated ${new Date().toLocaleTimeString()}.`
          : "No workflow types yet: register a definition (weft def apply FILE).";
      } catch (e) {
        W.fail(e);
      }
      if (!stopped) timer = setTimeout(load, 5000);
    }
    load();
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  };
})();
