// Weft console: the versions of a workflow definition, one of them in full,
// and a line diff between any two (of their stored JSON form).
"use strict";

(function () {
  const W = window.W;
  const h = W.h;
  const MAX_LINES = 4000;

  // Line diff by longest common subsequence: [[op, line]], op one of " ", "+", "-".
  W.diffLines = function diffLines(a, b) {
    if (a.length > MAX_LINES || b.length > MAX_LINES) return null;
    const n = a.length;
    const m = b.length;
    const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--)
      for (let j = m - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    const out = [];
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) out.push([" ", a[i++]]), j++;
      else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(["-", a[i++]]);
      else out.push(["+", b[j++]]);
    }
    while (i < n) out.push(["-", a[i++]]);
    while (j < m) out.push(["+", b[j++]]);
    return out;
  };

  const lines = (def) => JSON.stringify(W.redact(def), null, 2).split("\n");

  W.pages.definitions = function (ty, q) {
    const view = document.getElementById("view");
    view.append(h("h1", {}, "Definition ", h("a", { href: `#/types/${W.enc(ty)}`, class: "mono" }, ty)));
    (async () => {
      let entry;
      try {
        const list = await W.api("/v1/definitions");
        entry = list.types.find((t) => t.workflow_type === ty);
        if (!entry) throw new W.ApiError(404, `unknown workflow type '${ty}'`);
      } catch (e) {
        return W.fail(e, view);
      }
      const latest = entry.latest_version;
      const b = Number(q.get("b")) || latest;
      const a = Number(q.get("a")) || Math.max(1, b - 1);
      const pick = (name, value) =>
        h(
          "select",
          { id: `version-${name}`, onchange: (ev) => W.go(`/definitions/${W.enc(ty)}`, { a: name === "a" ? ev.target.value : a, b: name === "b" ? ev.target.value : b }) },
          entry.versions.map((v) => h("option", { value: v.version, selected: v.version === value }, `v${v.version}`))
        );
      view.append(
        h(
          "table",
          { id: "versions" },
          h("thead", {}, h("tr", {}, ["version", "registered", "tasks", "description"].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            entry.versions
              .slice()
              .reverse()
              .map((v) =>
                h(
                  "tr",
                  { class: v.version === b ? "selected" : "", dataset: { version: v.version } },
                  h("td", {}, h("a", { href: `#/definitions/${W.enc(ty)}?a=${Math.max(1, v.version - 1)}&b=${v.version}` }, `v${v.version}`), v.version === latest ? " (latest)" : ""),
                  h("td", {}, W.fmtTime(v.registered_at_ms)),
                  h("td", { class: "num" }, v.tasks),
                  h("td", {}, v.description)
                )
              )
          )
        ),
        h("h2", {}, "Diff ", pick("a", a), " → ", pick("b", b))
      );
      const diffBox = h("div", { class: "diff", id: "diff" }, "Loading…");
      const full = h("div", {});
      view.append(diffBox, h("h2", {}, `v${b} in full`), full);
      try {
        const [da, db] = await Promise.all([a, b].map((v) => W.api(`/v1/definitions/${W.enc(ty)}/${v}`)));
        full.append(W.json(db));
        const d = W.diffLines(lines(da), lines(db));
        W.clear(diffBox);
        if (!d) return diffBox.append("Too large to diff here.");
        const changed = d.filter(([op]) => op !== " ").length;
        diffBox.dataset.changes = String(changed);
        if (a === b) diffBox.append(h("div", { class: "same" }, "(the same version)"));
        else if (!changed) diffBox.append(h("div", { class: "same" }, "(no difference)"));
        // Unchanged runs longer than 6 lines are folded to their ends.
        let run = [];
        const flush = () => {
          if (run.length > 6) {
            run.slice(0, 3).forEach((l) => diffBox.append(h("div", { class: "same" }, `  ${l}`)));
            diffBox.append(h("div", { class: "same" }, `  … ${run.length - 6} unchanged lines`));
            run.slice(-3).forEach((l) => diffBox.append(h("div", { class: "same" }, `  ${l}`)));
          } else run.forEach((l) => diffBox.append(h("div", { class: "same" }, `  ${l}`)));
          run = [];
        };
        for (const [op, l] of d) {
          if (op === " ") run.push(l);
          else {
            flush();
            diffBox.append(h("div", { class: op === "+" ? "add" : "del" }, `${op} ${l}`));
          }
        }
        flush();
      } catch (e) {
        W.fail(e, diffBox);
      }
    })();
    return null;
  };
})();
