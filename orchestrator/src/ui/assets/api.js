// Weft console: the HTTP API client. Every request carries the bearer token
// the user pasted (kept in localStorage), a 401 opens the token panel, and a
// 403 on an action hides the actions (the token's role cannot take them).
"use strict";

(function () {
  const W = window.W;
  const TOKEN_KEY = "weft.token";

  W.token = () => localStorage.getItem(TOKEN_KEY) || "";
  W.setToken = (t) => (t ? localStorage.setItem(TOKEN_KEY, t) : localStorage.removeItem(TOKEN_KEY));
  // False once the API refused an action with 403: the actions are hidden.
  W.canAct = true;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }
  W.ApiError = ApiError;

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const t = W.token();
    if (t) h.Authorization = `Bearer ${t}`;
    return h;
  }

  // fetch + JSON; a non-2xx answer throws an ApiError with the API's message.
  W.api = async function api(path, { method = "GET", body, signal, headers: extra } = {}) {
    const init = { method, headers: headers(extra), signal };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, `cannot reach the orchestrator: ${e.message}`);
    }
    const served = resp.headers.get("x-weft-served-by");
    if (served) document.getElementById("served-by").textContent = `served by ${served}`;
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = { error: text };
    }
    if (resp.status === 401) {
      W.askToken("The API asks for a token (401). Paste one to continue.");
    }
    if (!resp.ok) {
      const msg = (data && data.error) || `${resp.status} ${resp.statusText}`;
      throw new ApiError(resp.status, msg);
    }
    return data;
  };

  // An action (POST); a 403 hides every action from then on.
  W.act = async function act(path, body) {
    try {
      return await W.api(path, { method: "POST", body: body || {} });
    } catch (e) {
      if (e.status === 403) {
        W.canAct = false;
        document.querySelectorAll(".actions").forEach((el) => (el.hidden = true));
      }
      throw e;
    }
  };

  // Follows a server-sent event stream with fetch (so the Authorization
  // header goes along, which EventSource cannot send). Calls onEvent(name,
  // data, id) per frame; reconnects from the last id it saw until stopped.
  // Returns {stop()}.
  W.stream = function stream(path, fromSeq, onEvent, onStatus) {
    let stopped = false;
    let next = fromSeq;
    let ctl = null;
    async function once() {
      ctl = new AbortController();
      const sep = path.includes("?") ? "&" : "?";
      const resp = await fetch(`${path}${sep}from=${next}`, {
        headers: headers({ Accept: "text/event-stream" }),
        signal: ctl.signal,
      });
      if (!resp.ok) throw new ApiError(resp.status, `watch: ${resp.status}`);
      onStatus && onStatus(true);
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let name = "message";
          let id = null;
          const data = [];
          for (const line of frame.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (!data.length) continue;
          let parsed = null;
          try {
            parsed = JSON.parse(data.join("\n"));
          } catch (_) {
            continue;
          }
          if (id !== null) next = Number(id) + 1;
          onEvent(name, parsed, id);
          if (name === "end") return true;
        }
      }
    }
    (async () => {
      while (!stopped) {
        try {
          if (await once()) break;
        } catch (e) {
          if (stopped) break;
        }
        onStatus && onStatus(false);
        if (stopped) break;
        await new Promise((r) => setTimeout(r, 1500));
      }
      onStatus && onStatus(false);
    })();
    return {
      stop() {
        stopped = true;
        if (ctl) ctl.abort();
      },
    };
  };

  W.askToken = function askToken(note) {
    document.getElementById("token-panel").hidden = false;
    document.getElementById("token-note").textContent = note || "";
    document.getElementById("token-input").focus();
  };

  W.initToken = function initToken() {
    const panel = document.getElementById("token-panel");
    document.getElementById("token-button").addEventListener("click", () => {
      panel.hidden = !panel.hidden;
      document.getElementById("token-note").textContent = W.token() ? "a token is saved" : "no token saved";
    });
    document.getElementById("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = document.getElementById("token-input");
      W.setToken(input.value.trim());
      input.value = "";
      W.canAct = true;
      panel.hidden = true;
      W.route();
    });
    document.getElementById("token-clear").addEventListener("click", () => {
      W.setToken("");
      W.canAct = true;
      panel.hidden = true;
      W.route();
    });
  };
})();
