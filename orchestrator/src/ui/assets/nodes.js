// Weft console: the nodes of the cluster as the node registry (the
// `weft.nodes` topic) tells them — workers and orchestrator replicas, their
// health, partitions, load and when each was last heard from. Refreshed every 3 s.
"use strict";

(function () {
  const W = window.W;
  const h = W.h;
  const PARTITION = "weft.partition.";

  // "topic: 0, 1, 2 (live)" per topic and state, from the partition labels.
  function partitions(labels) {
    const groups = {};
    for (const [k, v] of Object.entries(labels || {})) {
      if (!k.startsWith(PARTITION)) continue;
      const scope = k.slice(PARTITION.length);
      const cut = scope.lastIndexOf("/");
      const key = `${scope.slice(0, cut)} (${v.split("@")[0]})`;
      (groups[key] = groups[key] || []).push(Number(scope.slice(cut + 1)));
    }
    return Object.keys(groups)
      .sort()
      .map((key) => {
        const [topic, state] = key.split(" ");
        return `${topic}: ${groups[key].sort((a, b) => a - b).join(", ")} ${state}`;
      });
  }

  W.pages.nodes = function () {
    const view = document.getElementById("view");
    const body = h("tbody");
    const note = h("p", { class: "muted" });
    view.append(
      h("h1", {}, "Nodes"),
      h(
        "table",
        { id: "nodes" },
        h("thead", {}, h("tr", {}, ["node", "role", "health", "heard", "started", "partitions", "load", "capabilities"].map((c) => h("th", {}, c)))),
        body
      ),
      note
    );
    let timer = null;
    let stopped = false;
    async function load() {
      try {
        const r = await W.api("/v1/nodes");
        if (stopped) return;
        W.clear(body);
        for (const n of r.nodes) {
          const parts = partitions(n.labels);
          body.append(
            h(
              "tr",
              { dataset: { node: n.node_id, role: n.role, health: n.health } },
              h("td", { class: "mono" }, n.node_id, n.labels && n.labels.version ? h("div", { class: "muted" }, `v${n.labels.version}`) : null),
              h("td", {}, n.role),
              h("td", {}, h("span", { class: `state state-${n.stale ? "paused" : n.health === "healthy" ? "completed" : n.health === "draining" ? "cancelled" : "retrying"}` }, n.stale ? `${n.health}, silent` : n.health)),
              h("td", {}, W.fmtAgo(n.heartbeat_at_ms)),
              h("td", {}, W.fmtTime(n.started_at_ms)),
              h("td", { class: "mono" }, parts.length ? parts.map((p) => h("div", {}, p)) : "–"),
              h("td", {}, Object.entries(n.current_load || {}).map(([k, v]) => h("div", {}, `${k}: ${v}`))),
              h("td", {}, (n.capabilities || []).join(", ") || "–")
            )
          );
        }
        if (!r.nodes.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No node has announced itself yet.")));
        note.textContent = `From the node registry (${r.topic}); silent: not heard from for ${W.fmtMs(r.stale_after_ms)}. Updated ${new Date().toLocaleTimeString()}.`;
      } catch (e) {
        W.fail(e, body);
      }
      if (!stopped) timer = setTimeout(load, 3000);
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
