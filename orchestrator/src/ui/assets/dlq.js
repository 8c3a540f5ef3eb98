// Weft console: the dead letters of a workflow type (GET /v1/dlq/{type}),
// one row per source with its reason, copies and redrive state; a record's
// headers and decoded value on request (secrets hidden), and a redrive back to
// its topic (as it is) behind a confirmation. Read when the page opens and on
// "Refresh": the DLQ topic is read whole, so it is not polled.
"use strict";

(function () {
  const W = window.W;
  const h = W.h;
  const LIMIT = 50;

  W.dlqPanel = function dlqPanel(ty) {
    const base = `/v1/dlq/${W.enc(ty)}`;
    const body = h("tbody");
    const note = h("span", { class: "muted" });
    const details = h("div", { id: "dlq-detail" });
    const el = h(
      "section",
      { id: "dlq" },
      h("h2", {}, "Dead letters ", h("button", { type: "button", id: "dlq-refresh", onclick: () => load() }, "Refresh"), " ", note),
      h("table", {}, h("thead", {}, h("tr", {}, ["record", "time", "reason", "source", "copies", "redrive", ""].map((c) => h("th", {}, c)))), body),
      details
    );

    async function show(item) {
      try {
        const full = await W.api(`${base}/${item.partition}/${item.offset}`);
        W.fill(details, h("h2", {}, `Record ${item.partition}/${item.offset}`), W.json(full));
      } catch (e) {
        W.fail(e, details);
      }
    }

    async function redrive(item) {
      const ok = await W.confirm(`Redrive DLQ record ${item.partition}/${item.offset} of ${ty} back to ${item.source} as it is? It is sent once; if it is refused again it comes back as a new dead letter.`, { yes: "Redrive" });
      if (!ok) return;
      try {
        const r = await W.act(`${base}/${item.partition}/${item.offset}/redrive`, {});
        W.showBanner("");
        note.textContent = `redrive: ${r && r.outcome ? r.outcome : "sent"}`;
        load();
      } catch (e) {
        W.showBanner(`Redrive refused: ${e.status || ""} ${e.message}`);
      }
    }

    async function load() {
      try {
        const r = await W.api(`${base}${W.qs({ state: "all", limit: LIMIT })}`);
        W.clear(body);
        for (const it of r.items) {
          const state = it.redrive ? it.redrive.state : "none";
          body.append(
            h(
              "tr",
              { dataset: { dlq: `${it.partition}/${it.offset}`, redrive: state } },
              h("td", { class: "mono" }, `${it.partition}/${it.offset}`),
              h("td", {}, W.fmtTime(it.timestamp_ms)),
              h("td", {}, it.reason),
              h("td", { class: "mono muted" }, it.source),
              h("td", { class: "num" }, it.copies),
              h("td", {}, state === "done" ? `redriven to ${it.redrive.to}` : state),
              h(
                "td",
                { class: "actions" },
                h("button", { type: "button", class: "dlq-show", onclick: () => show(it) }, "Show"),
                state === "none" && W.canAct ? h("button", { type: "button", class: "dlq-redrive", onclick: () => redrive(it) }, "Redrive…") : null
              )
            )
          );
        }
        if (!r.items.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No dead letters.")));
        const classes = Object.entries(r.by_reason || {}).map(([k, n]) => `${k}: ${n}`).join("; ");
        note.textContent = `${r.total} in ${r.topic}${r.total > LIMIT ? ` (the first ${LIMIT} shown)` : ""}${classes ? ` — ${classes}` : ""}`;
      } catch (e) {
        W.fail(e, body);
      }
    }
    load();
    return el;
  };
})();
