//! The console's live view and actions (part of `ui.rs`): a page follows the
//! watch stream while the API signals the instance; pause, resume, a signal
//! with data and a cancel go through the buttons and their confirmation
//! dialog; a pasted token is sent on every request, and a 403 on an action
//! hides the actions.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use weft_integration_tests::ApiClient;

use crate::browser::Browser;
use crate::{open_instance, start, wait_state, wait_waiting, DAG_STATES, T};

pub async fn live_and_actions(b: &Browser, api: &ApiClient, base: &str) -> Result<()> {
    let (live, signalled, cancelled) = (
        start(api, "uihold", json!({})).await?,
        start(api, "uihold", json!({})).await?,
        start(api, "uihold", json!({})).await?,
    );
    for id in [&live, &signalled, &cancelled] {
        wait_waiting(api, id).await?;
    }
    // Live: the page follows the watch stream while the API signals.
    open_instance(b, base, "uihold", &live).await?;
    b.wait_eval(
        "the stream is live",
        T,
        "return !document.getElementById('live').classList.contains('off')",
    )
    .await?;
    let st = b.eval(DAG_STATES, json!([])).await?;
    ensure!(
        st["approval"] == "waiting_for_dependency" && st["finish"] == "pending",
        "DAG {st}"
    );
    let r = api
        .control("uihold", &live, "signals/approved", json!({}), None)
        .await?;
    ensure!(r.status.is_success(), "signal: {}", r.body);
    b.wait_eval("the page shows the workflow completed, without a reload", T, "return document.querySelector('#instance-state [data-state]')?.dataset.state === 'completed' && document.querySelector('#dag g[data-task=finish]')?.dataset.state === 'completed'").await?;
    let last = wait_state(api, "uihold", &live, "completed").await?["sequence_number"].clone();
    b.wait_eval(
        "the history shows the last event",
        T,
        &format!("return !!document.querySelector(\"#history tr.event[data-seq='{last}']\")"),
    )
    .await?;

    // Pause and resume through the buttons, each after its confirmation.
    open_instance(b, base, "uihold", &signalled).await?;
    for (button, state, next) in [
        ("pause", "paused", "resume"),
        ("resume", "running", "pause"),
    ] {
        b.click(&format!("#action-{button}")).await?;
        b.wait_eval(
            "the confirmation is open",
            T,
            "return document.getElementById('confirm').open",
        )
        .await?;
        b.click("#confirm-yes").await?;
        wait_state(api, "uihold", &signalled, state).await?;
        b.wait_eval(
            &format!("the page shows {state} and offers {next}"),
            T,
            &format!("return document.querySelector('#instance-state [data-state]')?.dataset.state === '{state}' && !!document.getElementById('action-{next}')"),
        )
        .await?;
    }

    // A signal with data through the button and its dialog.
    b.click("#action-signal").await?;
    b.eval("document.getElementById('confirm-name').value = 'approved'; document.getElementById('confirm-body').value = '{\"by\": \"ui\"}';", json!([])).await?;
    b.click("#confirm-yes").await?;
    wait_state(api, "uihold", &signalled, "completed").await?;
    b.wait_eval("the signalled instance shows completed", T, "return document.querySelector('#instance-state [data-state]')?.dataset.state === 'completed'").await?;

    // A token pasted is sent on every request; a 403 on an action hides the actions.
    open_instance(b, base, "uihold", &cancelled).await?;
    b.eval(
        "window.__auth = []; const real = window.fetch;
         window.fetch = (url, init) => { window.__auth.push([String(url), (init && init.headers && init.headers.Authorization) || null]);
           if (init && init.method === 'POST' && window.__refuse) return Promise.resolve(new Response(JSON.stringify({error: 'role viewer cannot cancel'}), {status: 403}));
           return real(url, init); };
         window.__refuse = true;",
        json!([]),
    )
    .await?;
    b.click("#token-button").await?;
    b.eval(
        "document.getElementById('token-input').value = 'ui-test-token';",
        json!([]),
    )
    .await?;
    b.click("#token-form button[type=submit]").await?;
    b.wait_eval("the page reloaded with the token", T, "return document.getElementById('view').dataset.loaded === 'true' && !!document.getElementById('action-cancel')").await?;
    b.click("#action-cancel").await?;
    b.click("#confirm-yes").await?;
    b.wait_eval("the actions are hidden after a 403", T, "return document.getElementById('actions').hidden && document.getElementById('banner').textContent.includes('403')").await?;
    let sent = b.eval("return window.__auth", json!([])).await?;
    let sent = sent.as_array().context("requests")?;
    ensure!(
        !sent.is_empty() && sent.iter().all(|r| r[1] == "Bearer ui-test-token"),
        "requests without the token: {sent:?}"
    );
    ensure!(
        api.get("uihold", &cancelled).await?["state"] == "running",
        "the refused cancel reached the API"
    );

    // Cancel for real (a fresh document: no 403 remembered, no token).
    b.eval("localStorage.removeItem('weft.token')", json!([]))
        .await?;
    b.goto(&format!("{base}/ui/index.html#/")).await?;
    open_instance(b, base, "uihold", &cancelled).await?;
    b.click("#action-cancel").await?;
    b.wait_eval(
        "the confirmation is open",
        T,
        "return document.getElementById('confirm').open",
    )
    .await?;
    b.click("#confirm-yes").await?;
    wait_state(api, "uihold", &cancelled, "cancelled").await?;
    b.wait_eval("the page shows cancelled", T, "return document.querySelector('#instance-state [data-state]')?.dataset.state === 'cancelled' && document.querySelector('#dag g[data-task=approval]')?.dataset.state === 'cancelled'").await?;
    b.screenshot("cancelled").await?;
    Ok(())
}
