// Weft console: the instances of one type — filter by state and creation
// time, page by cursor (the API's secondary indexes; a page never counts or
// loads the whole list), and live counts from the type's analytics.
"use strict";

(function () {
  const W = window.W;
  const h = W.h;
  const STATES = ["pending", "running", "paused", "retrying", "waiting_for_dependency", "compensating", "completed", "failed", "cancelled", "timeout", "compensated"];

  function counts(report) {
    const stat = (n, label, key) => h("div", { class: "stat", dataset: { count: key } }, h("b", {}, W.fmtInt(n)), h("span", {}, label));
    const finished = report.finished || {};
    return [
      stat(report.started, "started", "started"),
      stat(report.in_flight, "in flight", "in_flight"),
      Object.keys(finished).sort().map((s) => stat(finished[s], s, s)),
      h("div", { class: "stat" }, h("b", {}, W.fmtPct(report.success_rate)), h("span", {}, "success")),
      h(
        "div",
        { class: "stat" },
        h("b", { dataset: { field: "bottleneck" } }, report.bottleneck || "–"),
        h("span", {}, "bottleneck")
      ),
    ];
  }

  W.pages.instances = function (ty, q) {
    const view = document.getElementById("view");
    const states = q.getAll("state");
    const after = q.get("after") || "";
    const cursor = q.get("cursor") || "";
    const limit = q.get("limit") || "50";
    // The cursors of the pages before this one, to go back.
    const back = q.getAll("back");

    const stats = h("div", { class: "stats", id: "counts" });
    const insights = h("div", { class: "row" });
    const stateBoxes = STATES.map((s) =>
      h("label", { class: "inline" }, h("input", { type: "checkbox", value: s, checked: states.includes(s) }), s)
    );
    const afterInput = h("input", { type: "datetime-local", value: after, step: "1" });
    const form = h(
      "form",
      {
        class: "panel",
        id: "filter",
        onsubmit: (ev) => {
          ev.preventDefault();
          const chosen = stateBoxes.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value);
          W.go(`/types/${W.enc(ty)}`, { state: chosen, after: afterInput.value, limit });
        },
      },
      h("div", { class: "row" }, h("b", {}, "State"), stateBoxes),
      h("div", { class: "row" }, h("label", { class: "inline" }, "Created after", afterInput), h("button", { type: "submit" }, "Apply"), h("a", { href: `#/types/${W.enc(ty)}` }, "clear"))
    );
    const body = h("tbody");
    const pager = h("div", { class: "pager" });
    view.append(
      h("h1", {}, "Instances of ", h("span", { class: "mono" }, ty), " ", h("a", { href: `#/definitions/${W.enc(ty)}`, class: "muted" }, "definition")),
      stats,
      insights,
      form,
      h(
        "table",
        { id: "instances" },
        h("thead", {}, h("tr", {}, ["instance", "state", "version", "created", "updated", "events", "error"].map((c) => h("th", {}, c)))),
        body
      ),
      pager,
      W.dlqPanel(ty)
    );

    let stopped = false;
    let timer = null;
    async function loadCounts() {
      try {
        const report = await W.api(`/v1/analytics/${W.enc(ty)}`);
        if (stopped) return;
        W.fill(stats, ...counts(report).flat());
        W.fill(insights, ...W.insightBadges(report));
      } catch (e) {
        W.fail(e, stats);
      }
      if (!stopped) timer = setTimeout(loadCounts, 3000);
    }
    async function loadPage() {
      const params = { type: ty, state: states, limit, cursor };
      if (after) params.created_after = new Date(after).toISOString().replace(/\.\d+Z$/, "Z");
      try {
        const page = await W.api(`/v1/workflows${W.qs(params)}`);
        if (stopped) return;
        W.clear(body);
        for (const it of page.items) {
          body.append(
            h(
              "tr",
              { dataset: { instance: it.instance_id, state: it.state } },
              h("td", { class: "mono" }, h("a", { href: `#/instances/${W.enc(ty)}/${W.enc(it.instance_id)}` }, it.instance_id)),
              h("td", {}, W.stateBadge(it.state)),
              h("td", {}, `v${it.definition_version}`),
              h("td", {}, W.fmtTime(it.created_at_ms)),
              h("td", {}, W.fmtTime(it.updated_at_ms)),
              h("td", { class: "num" }, W.fmtInt(it.sequence_number)),
              h("td", { class: "error" }, it.error ? `${it.error.error_type}: ${it.error.message}` : "")
            )
          );
        }
        if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No instances match.")));
        const base = { state: states, after, limit };
        W.fill(pager, 
          back.length || cursor
            ? h("button", { type: "button", id: "prev-page", onclick: () => W.go(`/types/${W.enc(ty)}`, { ...base, cursor: back[back.length - 1] || "", back: back.slice(0, -1) }) }, "← Previous")
            : null,
          page.next_cursor
            ? h("button", { type: "button", id: "next-page", onclick: () => W.go(`/types/${W.enc(ty)}`, { ...base, cursor: page.next_cursor, back: [...back, cursor] }) }, "Next →")
            : h("span", { class: "muted" }, "last page"),
          h("span", { class: "muted" }, `page ${back.length + 1}, ${page.items.length} shown, oldest first`)
        );
      } catch (e) {
        W.fail(e);
      }
    }
    loadCounts();
    loadPage();
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  };
})();
