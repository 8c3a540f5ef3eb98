// Weft console: one instance — its state, the DAG coloured by task state,
// the state at any sequence (a slider over the history), the trace as a
// waterfall, the history a page at a time, actions with confirmation, and
// live updates over the instance's /watch stream.
"use strict";

(function () {
  const W = window.W;
  const h = W.h;
  // A trace is built from the whole history: above this many events it loads on request.
  const TRACE_AUTO_MAX = 5000;
  const ACTIVE = new Set(["pending", "initializing", "running", "retrying", "waiting_for_dependency", "compensating"]);
  const TERMINAL = new Set(["completed", "failed", "cancelled", "timeout", "compensated"]);

  W.pages.instance = function (ty, id) {
    const view = document.getElementById("view");
    const base = `/v1/workflows/${W.enc(ty)}/${W.enc(id)}`;
    let inst = null; // the current state
    let shown = null; // the state drawn: current, or at the slider's sequence
    let def = null;
    let selected = null;
    let stream = null;
    let history = null;
    let stopped = false;
    const timers = {};
    const later = (key, ms, fn) => {
      clearTimeout(timers[key]);
      timers[key] = setTimeout(fn, ms);
    };

    const title = h("h1", {}, h("a", { href: `#/types/${W.enc(ty)}` }, ty), " / ", h("span", { class: "mono", id: "instance-id" }, id), " ");
    const stateEl = h("span", { id: "instance-state" });
    const liveEl = h("span", { class: "live off", id: "live", title: "live updates" });
    const summary = h("dl", { class: "kv", id: "summary" });
    const actions = h("div", { class: "actions", id: "actions" });
    const dagBox = h("div", { id: "dag-box" });
    const taskBox = h("div", { class: "card", id: "task-detail" }, h("p", { class: "muted" }, "Click a task for its details."));
    const slider = h("input", { type: "range", min: 1, max: 1, value: 1, id: "seq-slider" });
    const sliderLabel = h("span", { id: "seq-label", class: "muted" }, "live");
    const liveBtn = h("button", { type: "button", id: "seq-live", hidden: true, onclick: () => backToLive() }, "Back to live");
    const inputBox = h("div", {});
    const traceBox = h("div", { id: "trace-box" }, h("p", { class: "muted" }, "Loading the trace…"));
    const historyBox = h("div", {});
    view.append(
      h("div", { class: "row" }, title, stateEl, liveEl),
      h("div", { class: "cols" }, h("div", { class: "card" }, summary), h("div", { class: "card" }, h("b", {}, "Actions"), " ", actions)),
      h("h2", {}, "Tasks"),
      h("div", { class: "slider card" }, h("b", {}, "State at"), slider, sliderLabel, liveBtn),
      h("div", { class: "cols" }, h("div", {}, dagBox, W.dagLegend()), taskBox),
      h("h2", {}, "Input"),
      inputBox,
      h("h2", {}, "Trace"),
      traceBox,
      historyBox
    );

    function renderSummary() {
      W.fill(stateEl, W.stateBadge(inst.state));
      const s = inst;
      const kv = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
      W.fill(summary, 
        ...kv("definition", h("a", { href: `#/definitions/${W.enc(ty)}?a=${s.definition_version}` }, `v${s.definition_version}`)),
        ...kv("created", W.fmtTime(s.created_at_ms)),
        ...kv("updated", W.fmtTime(s.updated_at_ms)),
        ...kv("duration", W.fmtMs((TERMINAL.has(s.state) ? s.updated_at_ms : Date.now()) - s.created_at_ms)),
        ...kv("events", h("span", { id: "event-count" }, W.fmtInt(s.sequence_number))),
        ...(s.error ? kv("error", h("span", { class: "error" }, `${s.error.error_type}: ${s.error.message}`)) : [])
      );
      renderActions();
    }

    function renderActions() {
      W.clear(actions);
      actions.hidden = !W.canAct;
      const st = inst.state;
      const act = (label, idAttr, verb, opts) =>
        h("button", { type: "button", id: idAttr, class: opts.danger ? "danger" : "", onclick: () => run(label, verb, opts) }, label);
      if (TERMINAL.has(st)) return actions.append(h("span", { class: "muted" }, `none: the workflow is ${st}`));
      actions.append(
        act("Cancel", "action-cancel", "cancel", { danger: true }),
        st === "paused" ? act("Resume", "action-resume", "resume", {}) : act("Pause", "action-pause", "pause", {}),
        act("Signal…", "action-signal", "signals", { signal: true })
      );
    }

    async function run(label, verb, opts) {
      let path = `${base}/${verb}`;
      let body = {};
      if (opts.signal) {
        const answer = await W.confirm(`Send a signal to ${ty} ${id}?`, { name: true, body: true, yes: "Send" });
        if (!answer) return;
        path = `${base}/signals/${W.enc(answer.name)}`;
        body = answer.data;
      } else {
        const ok = await W.confirm(`${label} ${ty} ${id}?${verb === "cancel" ? " Running tasks are cancelled; this cannot be undone." : ""}`, { yes: label });
        if (!ok) return;
      }
      try {
        await W.act(path, body);
        W.showBanner("");
        later("refresh", 200, refresh);
      } catch (e) {
        W.showBanner(`${label} refused: ${e.status || ""} ${e.message}`);
      }
    }

    function renderDag() {
      if (!def) return;
      const byName = Object.fromEntries((shown.tasks || []).map((t) => [t.name, t]));
      W.fill(dagBox, W.dag(def, byName, (name) => ((selected = name), renderDag()), selected));
      const t = selected && byName[selected];
      if (!t) return;
      const kv = (k, v) => [h("dt", {}, k), h("dd", {}, v === null || v === undefined || v === "" ? "–" : v)];
      W.fill(taskBox, 
        h("h2", {}, selected, " ", W.stateBadge(t.state)),
        h(
          "dl",
          { class: "kv" },
          ...kv("attempt", t.attempt),
          ...kv("node", t.node_id),
          ...kv("scheduled", W.fmtTime(t.scheduled_at_ms)),
          ...kv("started", W.fmtTime(t.started_at_ms)),
          ...kv("finished", W.fmtTime(t.finished_at_ms)),
          ...kv("queued", t.started_at_ms && t.scheduled_at_ms ? W.fmtMs(t.started_at_ms - t.scheduled_at_ms) : null),
          ...kv("ran", t.finished_at_ms && t.started_at_ms ? W.fmtMs(t.finished_at_ms - t.started_at_ms) : null)
        ),
        t.error ? h("p", { class: "error" }, `${t.error.error_type}: ${t.error.message}`) : null,
        t.output ? [h("b", {}, "Output"), W.json(t.output)] : null
      );
    }

    function renderSlider() {
      slider.max = String(Math.max(1, inst.sequence_number));
      if (shown === inst) slider.value = slider.max;
    }

    slider.addEventListener("input", () => {
      const at = Number(slider.value);
      sliderLabel.textContent = `event ${at} of ${inst.sequence_number}…`;
      later("slider", 150, async () => {
        if (at >= inst.sequence_number) return backToLive();
        try {
          shown = await W.api(`${base}/state${W.qs({ at })}`);
          sliderLabel.textContent = `after event ${at} of ${W.fmtInt(inst.sequence_number)} (${shown.state}, ${W.fmtTime(shown.updated_at_ms)})`;
          liveBtn.hidden = false;
          renderDag();
        } catch (e) {
          W.fail(e);
        }
      });
    });

    function backToLive() {
      shown = inst;
      sliderLabel.textContent = "live (the current state)";
      liveBtn.hidden = true;
      renderSlider();
      renderDag();
    }

    async function loadTrace(force) {
      if (inst.sequence_number > TRACE_AUTO_MAX && !force) {
        W.fill(traceBox, 
          h("p", { class: "muted" }, `The trace is built from the whole history (${W.fmtInt(inst.sequence_number)} events). `, h("button", { type: "button", id: "trace-load", onclick: () => loadTrace(true) }, "Build it"))
        );
        return;
      }
      try {
        const trace = await W.api(`${base}/trace?format=spans`);
        const comp = new Set((def ? def.tasks : []).map((t) => t.compensation).filter(Boolean));
        W.fill(traceBox, W.waterfall(trace, comp));
      } catch (e) {
        W.fail(e, traceBox);
      }
    }

    async function refresh() {
      if (stopped) return;
      try {
        const live = shown === inst;
        inst = await W.api(base);
        if (live || !shown) shown = inst;
        renderSummary();
        renderSlider();
        renderDag();
        if (inst.sequence_number <= TRACE_AUTO_MAX) later("trace", 700, () => loadTrace(false));
      } catch (e) {
        W.fail(e);
      }
    }

    (async function start() {
      try {
        inst = await W.api(base);
        shown = inst;
        def = await W.api(`/v1/definitions/${W.enc(ty)}/${inst.definition_version}`).catch(() => null);
        if (!def) def = { tasks: inst.tasks.map((t) => ({ name: t.name, task_type: "compute", dependencies: [] })) };
      } catch (e) {
        return W.fail(e, view);
      }
      if (stopped) return;
      renderSummary();
      renderSlider();
      backToLive();
      W.fill(inputBox, W.json(inst.input));
      history = W.historyView(base, inst.sequence_number);
      historyBox.append(history.el);
      loadTrace(false);
      await history.ready;
      view.dataset.loaded = "true";
      // Milliseconds since the document's navigation began (for the large-history test).
      view.dataset.loadedMs = String(Math.round(performance.now()));
      if (TERMINAL.has(inst.state)) return;
      stream = W.stream(
        `${base}/watch`,
        inst.sequence_number + 1,
        (name, data) => {
          if (name === "event") history.onEvent(data);
          later("refresh", 250, refresh);
        },
        (on) => liveEl.classList.toggle("off", !on)
      );
    })();

    return {
      stop() {
        stopped = true;
        Object.values(timers).forEach(clearTimeout);
        if (stream) stream.stop();
      },
    };
  };

  W.isActive = (s) => ACTIVE.has(s);
})();
