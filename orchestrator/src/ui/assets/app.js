// Weft console: the router. Pages are hash routes, so the server serves one
// document and any link can be bookmarked or shared:
//   #/                              workflow types with their analytics
//   #/types/{type}?state=&after=    instances of a type
//   #/instances/{type}/{id}         one instance
//   #/definitions/{type}?a=&b=      versions of a definition and a diff
//   #/nodes                         workers and orchestrator replicas
"use strict";

(function () {
  const W = window.W;
  let current = null; // the page shown: {stop()} to end its timers and streams

  const routes = [
    [/^\/$/, () => W.pages.types()],
    [/^\/types\/([^/]+)$/, (m, q) => W.pages.instances(decodeURIComponent(m[1]), q)],
    [/^\/instances\/([^/]+)\/([^/]+)$/, (m, q) => W.pages.instance(decodeURIComponent(m[1]), decodeURIComponent(m[2]), q)],
    [/^\/definitions\/([^/]+)$/, (m, q) => W.pages.definitions(decodeURIComponent(m[1]), q)],
    [/^\/nodes$/, () => W.pages.nodes()],
  ];

  W.pages = W.pages || {};

  W.route = function route() {
    if (current && current.stop) current.stop();
    current = null;
    W.showBanner("");
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const q = new URLSearchParams(query || "");
    document.querySelectorAll("[data-nav]").forEach((a) => {
      a.classList.toggle("active", (a.dataset.nav === "nodes") === path.startsWith("/nodes"));
    });
    const view = W.clear(document.getElementById("view"));
    delete view.dataset.loaded;
    for (const [re, page] of routes) {
      const m = path.match(re);
      if (m) {
        current = page(m, q) || null;
        return;
      }
    }
    view.append(W.h("p", { class: "error" }, `No page ${path}. `, W.h("a", { href: "#/" }, "Workflow types")));
  };

  // Navigates to a hash with new query parameters (and renders it).
  W.go = (path, params) => {
    location.hash = `#${path}${W.qs(params || {})}`;
  };

  // Renders an API error into the view (or the banner).
  W.fail = function fail(e, where) {
    if (e && e.name === "AbortError") return;
    const msg = e && e.status ? `${e.status}: ${e.message}` : String(e && e.message ? e.message : e);
    const el = where || document.getElementById("view");
    if (where) W.fill(where, W.h("p", { class: "error" }, msg));
    else W.showBanner(msg);
    return el;
  };

  window.addEventListener("hashchange", W.route);
  window.addEventListener("DOMContentLoaded", () => {
    W.initToken();
    W.route();
  });
})();
