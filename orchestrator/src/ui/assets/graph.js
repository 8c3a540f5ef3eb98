// Weft console: the task DAG of an instance as SVG, each task coloured by its
// state. Columns are the longest path from a root; edges are dependencies
// (solid), group membership (dashed: `parallel`/`sequential` groups list
// their members in parameters.tasks) and compensation (dotted, to the task
// that undoes this one). Decision tasks have a thick border, skipped branches
// are struck through.
"use strict";

(function () {
  const W = window.W;
  const NODE_W = 168;
  const NODE_H = 34;
  const COL_GAP = 56;
  const ROW_GAP = 14;
  const PAD = 12;
  const LIGHT = new Set(["pending", "scheduled", "skipped", "retrying", "waiting_for_dependency"]);

  // The edges of a definition: [from, to, kind].
  W.dagEdges = function dagEdges(def) {
    const names = new Set(def.tasks.map((t) => t.name));
    const edges = [];
    for (const t of def.tasks) {
      for (const d of t.dependencies || []) if (names.has(d.task_name)) edges.push([d.task_name, t.name, "dep"]);
      const members = t.parameters && Array.isArray(t.parameters.tasks) ? t.parameters.tasks : [];
      if (t.task_type === "parallel" || t.task_type === "sequential") {
        let prev = null;
        for (const m of members) {
          if (!names.has(m)) continue;
          // Members of a sequential group run one after another.
          edges.push([t.task_type === "sequential" && prev ? prev : t.name, m, "member"]);
          prev = m;
        }
      }
      if (t.compensation && names.has(t.compensation)) edges.push([t.name, t.compensation, "compensation"]);
    }
    return edges;
  };

  // Column of each task: the longest path to it (bounded, so a malformed
  // definition cannot loop).
  function columns(def, edges) {
    const col = Object.fromEntries(def.tasks.map((t) => [t.name, 0]));
    for (let round = 0; round < def.tasks.length + 1; round++) {
      let changed = false;
      for (const [a, b] of edges) {
        if (col[b] < col[a] + 1) {
          col[b] = col[a] + 1;
          changed = true;
        }
      }
      if (!changed) break;
    }
    return col;
  }

  // Draws `def`'s DAG with the task states of `instance` (tasks by name).
  // onSelect(name) is called when a task is clicked.
  W.dag = function dag(def, tasksByName, onSelect, selected) {
    const edges = W.dagEdges(def);
    const col = columns(def, edges);
    const rows = {};
    const pos = {};
    for (const t of def.tasks) {
      const c = col[t.name];
      rows[c] = (rows[c] || 0) + 1;
      pos[t.name] = { x: PAD + c * (NODE_W + COL_GAP), y: PAD + (rows[c] - 1) * (NODE_H + ROW_GAP) };
    }
    const ncols = Math.max(...Object.values(col), 0) + 1;
    const nrows = Math.max(...Object.values(rows), 1);
    const width = PAD * 2 + ncols * NODE_W + (ncols - 1) * COL_GAP;
    const height = PAD * 2 + nrows * NODE_H + (nrows - 1) * ROW_GAP;
    const root = W.svg("svg", { class: "dag", id: "dag", width, height, viewBox: `0 0 ${width} ${height}` });
    for (const [a, b, kind] of edges) {
      const p = pos[a];
      const q = pos[b];
      const x1 = p.x + NODE_W;
      const y1 = p.y + NODE_H / 2;
      const x2 = q.x;
      const y2 = q.y + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      root.append(W.svg("path", { class: `edge ${kind}`, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }
    for (const t of def.tasks) {
      const st = (tasksByName[t.name] || {}).state || "pending";
      const attempt = (tasksByName[t.name] || {}).attempt || 0;
      const p = pos[t.name];
      const group = t.task_type === "parallel" || t.task_type === "sequential";
      const cls = ["node", `st-${st}`, group ? "group" : "", t.task_type === "decision" ? "decision" : "", st === "skipped" ? "skipped" : "", selected === t.name ? "selected" : ""].join(" ");
      const label = `${t.task_type === "decision" ? "◆ " : group ? "▣ " : ""}${t.name}`;
      const g = W.svg(
        "g",
        { class: cls, "data-task": t.name, "data-state": st, transform: `translate(${p.x},${p.y})`, onclick: () => onSelect && onSelect(t.name) },
        W.svg("title", {}, `${t.name} (${t.task_type}): ${st}${attempt > 1 ? `, attempt ${attempt}` : ""}`),
        W.svg("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
        W.svg("text", { x: 8, y: 14, class: LIGHT.has(st) ? "dark" : "" }, label.length > 22 ? `${label.slice(0, 21)}…` : label),
        W.svg("text", { x: 8, y: 28, class: LIGHT.has(st) ? "dark" : "" }, `${st}${attempt > 1 ? ` · #${attempt}` : ""}`)
      );
      root.append(g);
    }
    return root;
  };

  W.dagLegend = () =>
    W.h(
      "div",
      { class: "legend muted" },
      ["pending", "scheduled", "running", "retrying", "completed", "failed", "skipped", "cancelled", "timeout"].map((s) => W.h("span", {}, W.stateBadge(s))),
      W.h("span", {}, "◆ decision  ▣ group (dashed: members)  dotted: compensation")
    );
})();
