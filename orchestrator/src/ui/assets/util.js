// Weft console: DOM helpers, formatting, and the redaction of secret values.
// Everything is built with textContent, never innerHTML: data from the API is
// never interpreted as markup.
"use strict";

const W = (window.W = window.W || {});
// The pages, by name; each file adds its own, app.js routes to them.
W.pages = W.pages || {};

// A script error shows in the banner rather than leaving a blank page.
window.addEventListener("error", (e) => W.showBanner && W.showBanner(`console error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => W.showBanner && W.showBanner(`console error: ${e.reason && e.reason.message ? e.reason.message : e.reason}`));

// h("div", {class: "x", onclick: fn}, child, "text", [more]) → an element.
W.h = function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  W.append(el, children);
  return el;
};

W.append = function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
};

const SVG_NS = "http://www.w3.org/2000/svg";
W.svg = function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  W.append(el, children);
  return el;
};

// Replaces el's children (null/false skipped, arrays flattened).
W.fill = (el, ...children) => W.append(W.clear(el), children);

W.clear = function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
};

W.stateBadge = (state) => W.h("span", { class: `state state-${state}`, dataset: { state } }, state);

W.fmtMs = function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} m ${Math.round((ms % 60000) / 1000)} s`;
  return `${Math.floor(ms / 3600000)} h ${Math.round((ms % 3600000) / 60000)} m`;
};

W.fmtTime = function fmtTime(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
};

W.fmtAgo = function fmtAgo(ms) {
  if (!ms) return "–";
  return `${W.fmtMs(Math.max(0, Date.now() - ms))} ago`;
};

W.fmtPct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)} %`);
W.fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

// Keys whose values are never shown: the workflow context's `secrets`, and
// anything that looks like a credential wherever it appears.
const SECRET_KEY = /secret|passw|pwd|token|api[_-]?key|credential|authori[sz]ation|private[_-]?key|cookie/i;
W.REDACTED = "•••••• (hidden)";

W.redact = function redact(value, depth = 0) {
  if (depth > 64) return W.REDACTED;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = SECRET_KEY.test(k) ? W.REDACTED : redact(v, depth + 1);
    }
    return out;
  }
  return value;
};

// A <pre> with the value as indented JSON, secrets hidden.
W.json = (value) => W.h("pre", { class: "json" }, JSON.stringify(W.redact(value), null, 2));

// Route parameters as a query string (empty values left out).
W.qs = function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => p.append(k, x));
    else p.set(k, v);
  }
  const s = p.toString();
  return s ? `?${s}` : "";
};

W.enc = encodeURIComponent;

// Asks the user to confirm; with `name`, also for a name, with `body`, also
// for a JSON object. Resolves to {name, data} (data parsed), or null when
// cancelled.
W.confirm = function confirm(text, { body = false, name = false, yes = "Confirm" } = {}) {
  const $ = (id) => document.getElementById(id);
  const dlg = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-body-label").hidden = !body;
  $("confirm-name-label").hidden = !name;
  $("confirm-error").textContent = "";
  $("confirm-yes").textContent = yes;
  $("confirm-body").value = "{}";
  $("confirm-name").value = "";
  let result = null;
  return new Promise((resolve) => {
    const yesBtn = $("confirm-yes");
    const onYes = (ev) => {
      try {
        const n = $("confirm-name").value.trim();
        if (name && !n) throw new Error("a name is required");
        let data = {};
        if (body) {
          data = JSON.parse($("confirm-body").value || "{}");
          if (!data || typeof data !== "object" || Array.isArray(data)) throw new Error("the data must be a JSON object");
        }
        result = { name: n, data };
      } catch (e) {
        ev.preventDefault();
        $("confirm-error").textContent = e.message;
      }
    };
    yesBtn.addEventListener("click", onYes);
    dlg.addEventListener(
      "close",
      () => {
        yesBtn.removeEventListener("click", onYes);
        resolve(dlg.returnValue === "ok" ? result : null);
      },
      { once: true }
    );
    dlg.returnValue = "";
    dlg.showModal();
  });
};

W.showBanner = function showBanner(text) {
  const b = document.getElementById("banner");
  b.textContent = text || "";
  b.hidden = !text;
};
