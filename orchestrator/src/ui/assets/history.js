// Weft console: an instance's history, one page at a time (the API's
// from/to/limit; a page never reads more than PAGE events, so a history of
// 100,000 events opens as fast as one of ten). Rows open to the event's JSON
// (secrets hidden); its cause is a link that finds the causing event.
"use strict";

(function () {
  const W = window.W;
  const h = W.h;
  const PAGE = 50;
  // How many events a causation search reads backwards before giving up.
  const SEARCH_LIMIT = 20000;

  function task(ev) {
    const d = ev.data || {};
    return d.task_name || d.task || (ev.metadata && ev.metadata["weft.task"]) || "";
  }

  // base: the instance's API path. Returns {el, show(from), last(n), onEvent(ev)}.
  W.historyView = function historyView(base, lastSeq) {
    let last = lastSeq;
    let from = Math.max(1, last - PAGE + 1);
    let events = [];
    let following = true; // on the last page: new events are appended
    let open = null; // event_id whose details are open
    let flash = null;
    const body = h("tbody");
    const info = h("span", { class: "muted", id: "history-range" });
    const seqInput = h("input", { type: "number", min: 1, placeholder: "sequence", id: "history-goto" });
    const pager = h(
      "div",
      { class: "pager" },
      h("button", { type: "button", onclick: () => show(1) }, "⇤ First"),
      h("button", { type: "button", id: "history-prev", onclick: () => show(Math.max(1, from - PAGE)) }, "← Older"),
      h("button", { type: "button", id: "history-next", onclick: () => show(from + PAGE) }, "Newer →"),
      h("button", { type: "button", onclick: () => show(Math.max(1, last - PAGE + 1)) }, "Latest ⇥"),
      h(
        "form",
        { class: "row", onsubmit: (e) => (e.preventDefault(), seqInput.value && show(Math.max(1, Number(seqInput.value) - Math.floor(PAGE / 2)), Number(seqInput.value))) },
        seqInput,
        h("button", { type: "submit" }, "Go")
      ),
      info
    );
    const el = h(
      "section",
      { id: "history" },
      h("h2", {}, "History"),
      pager,
      h("table", { class: "history" }, h("thead", {}, h("tr", {}, ["seq", "time", "event", "task", "node", "event id"].map((c) => h("th", {}, c)))), body)
    );

    function render() {
      W.clear(body);
      for (const ev of events) {
        const row = h(
          "tr",
          { class: `event${flash === ev.sequence_number ? " flash" : ""}${open === ev.event_id ? " selected" : ""}`, dataset: { seq: ev.sequence_number, type: ev.event_type }, onclick: () => ((open = open === ev.event_id ? null : ev.event_id), render()) },
          h("td", { class: "num" }, ev.sequence_number),
          h("td", {}, W.fmtTime(ev.timestamp_ms)),
          h("td", { class: "mono" }, ev.event_type),
          h("td", {}, task(ev)),
          h("td", { class: "muted" }, ev.source_node_id || ""),
          h("td", { class: "mono muted" }, String(ev.event_id).slice(0, 8))
        );
        body.append(row);
        if (open === ev.event_id) body.append(h("tr", { class: "details" }, h("td", { colspan: 6 }, details(ev))));
      }
      if (!events.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No events in this range.")));
      const to = events.length ? events[events.length - 1].sequence_number : from;
      info.textContent = `events ${from}–${to} of ${W.fmtInt(last)}`;
    }

    function details(ev) {
      const cause = ev.causation_id
        ? h("button", { type: "button", class: "causation", onclick: (e) => (e.stopPropagation(), findCause(ev)) }, `caused by ${String(ev.causation_id).slice(0, 8)}…`)
        : h("span", { class: "muted" }, "no cause recorded (an input)");
      return h("div", {}, h("div", { class: "row" }, cause, h("span", { class: "muted" }, `chain of ${(ev.correlation_chain || []).length}`)), W.json(ev));
    }

    // The causing event is earlier in the same history: look in this page,
    // then read backwards a page at a time.
    async function findCause(ev) {
      const id = ev.causation_id;
      const here = events.find((e) => e.event_id === id);
      if (here) return show(Math.max(1, here.sequence_number - Math.floor(PAGE / 2)), here.sequence_number, id);
      let to = ev.sequence_number - 1;
      let read = 0;
      info.textContent = "looking for the cause…";
      while (to >= 1 && read < SEARCH_LIMIT) {
        const lo = Math.max(1, to - 999);
        const page = await W.api(`${base}/events${W.qs({ from: lo, to, limit: 1000 })}`);
        const hit = page.events.find((e) => e.event_id === id);
        if (hit) return show(Math.max(1, hit.sequence_number - Math.floor(PAGE / 2)), hit.sequence_number, id);
        read += page.events.length;
        to = lo - 1;
      }
      info.textContent = `cause ${id} is not among the ${W.fmtInt(read)} events before this one`;
    }

    async function show(start, highlight, openId) {
      from = Math.max(1, Math.min(start, Math.max(1, last - PAGE + 1)));
      try {
        const page = await W.api(`${base}/events${W.qs({ from, limit: PAGE })}`);
        events = page.events;
        following = !page.next_from && from + PAGE > last;
        flash = highlight || null;
        if (openId) open = openId;
        render();
      } catch (e) {
        W.fail(e, body);
      }
    }

    return {
      el,
      show,
      ready: show(from),
      // A new event from the live stream.
      onEvent(ev) {
        last = Math.max(last, ev.sequence_number);
        if (!following || events.some((e) => e.sequence_number === ev.sequence_number)) return render();
        events.push(ev);
        if (events.length > PAGE) {
          events.shift();
          from = events[0].sequence_number;
        }
        render();
      },
    };
  };
})();
