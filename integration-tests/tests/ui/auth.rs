//! The console with API authentication on (part of `ui.rs`): the page itself
//! needs no token, the API answers 401 and the console opens its token panel;
//! with a reader's token it shows the type and the instance but its cancel is
//! refused (403) and the actions are hidden; with an operator's token the
//! cancel goes through. Tokens are bearer tokens of the auth policy (ADR 0015).

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::json;
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};

use crate::browser::Browser;
use crate::{open_instance, HOLD, POLL, T};

const ADMIN: &str = "ui-admin-token-0123456789";
const VIEWER: &str = "ui-viewer-token-0123456789";

fn sha256_hex(s: &str) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running sha256sum")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(s.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned())
}

async fn as_admin(
    api: &ApiClient,
    method: Method,
    path: &str,
    body: Option<(&str, String)>,
) -> Result<serde_json::Value> {
    let auth = format!("Bearer {ADMIN}");
    let r = api
        .send_with(method, path, &[("Authorization", &auth)], body)
        .await?;
    ensure!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
    Ok(r.body)
}

/// Types `token` into the token panel and saves it.
async fn paste_token(b: &Browser, token: &str) -> Result<()> {
    b.eval(
        "const p = document.getElementById('token-panel'); p.hidden = false; document.getElementById('token-input').value = arguments[0];",
        json!([token]),
    )
    .await?;
    b.click("#token-form button[type=submit]").await
}

pub async fn run() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let policy = format!(
        "[[tokens]]\nname = \"ui-admin\"\nsha256 = \"{}\"\nroles = [\"admin:*\"]\n\n[[tokens]]\nname = \"ui-viewer\"\nsha256 = \"{}\"\nroles = [\"reader:*\"]\n",
        sha256_hex(ADMIN)?,
        sha256_hex(VIEWER)?
    );
    let policy_file = scratch.path().join("policy.toml");
    std::fs::write(&policy_file, policy)?;
    let cluster = TestCluster::start(
        ClusterOptions::new(1, 1)
            .env("WEFT_AUTH_ENABLED", "true")
            .env("WEFT_AUTH_POLICY_FILE", policy_file.display().to_string()),
    )
    .await?;
    let api = cluster.api();
    let base = api.base_url().to_owned();
    as_admin(
        &api,
        Method::POST,
        "/v1/definitions",
        Some(("application/yaml", HOLD.to_owned())),
    )
    .await?;
    let started = as_admin(
        &api,
        Method::POST,
        "/v1/workflows/uihold",
        Some(("application/json", json!({"input": {}}).to_string())),
    )
    .await?;
    let id = started["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned();
    let path = format!("/v1/workflows/uihold/{id}");
    let state = || async {
        anyhow::Ok(
            as_admin(&api, Method::GET, &path, None).await?["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    wait_for("the instance runs", T, POLL, || async {
        anyhow::Ok((state().await? == "running").then_some(()))
    })
    .await?;

    let b = Browser::start().await?;
    let result = async {
        // No token: the page loads, the API says 401, the token panel opens.
        b.goto(&format!("{base}/ui")).await?;
        b.wait_eval(
            "the token panel opens on a 401",
            T,
            "return !document.getElementById('token-panel').hidden && document.getElementById('token-note').textContent.includes('401') && !document.querySelector('tr[data-type]')",
        )
        .await?;
        b.screenshot("auth-token-asked").await?;

        // A reader sees the type and the instance, but may not cancel it.
        paste_token(&b, VIEWER).await?;
        b.wait_eval(
            "the reader sees the type",
            T,
            "return !!document.querySelector('tr[data-type=uihold]')",
        )
        .await?;
        open_instance(&b, &base, "uihold", &id).await?;
        b.click("#action-cancel").await?;
        b.click("#confirm-yes").await?;
        b.wait_eval(
            "the actions are hidden after the 403",
            T,
            "return document.getElementById('actions').hidden && document.getElementById('banner').textContent.includes('403')",
        )
        .await?;
        let banner = b
            .eval(
                "return document.getElementById('banner').textContent",
                json!([]),
            )
            .await?;
        ensure!(
            banner.as_str().is_some_and(|t| t.contains("ui-viewer")),
            "the refusal names the caller: {banner}"
        );
        ensure!(
            state().await? == "running",
            "the reader's cancel reached the workflow"
        );

        // An admin's token shows the actions again, and the cancel goes through.
        paste_token(&b, ADMIN).await?;
        b.wait_eval(
            "the actions are back",
            T,
            "return document.getElementById('view').dataset.loaded === 'true' && !document.getElementById('actions').hidden && !!document.getElementById('action-cancel')",
        )
        .await?;
        b.click("#action-cancel").await?;
        b.click("#confirm-yes").await?;
        wait_for("the instance is cancelled", T, POLL, || async {
            anyhow::Ok((state().await? == "cancelled").then_some(()))
        })
        .await?;
        b.wait_eval(
            "the page shows it cancelled",
            T,
            "return document.querySelector('#instance-state [data-state]')?.dataset.state === 'cancelled'",
        )
        .await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = b.screenshot("auth-failure").await;
    }
    b.close().await;
    result
}
