//! API authentication and authorization (ADR 0015) on the real binaries: two
//! orchestrator replicas with `auth.enabled`, a policy of hashed tokens and
//! namespaces, and a JWKS of an Ed25519 key made by `openssl`. Without
//! credentials: 401; a wrong token, an expired JWT or one signed by another
//! key: 401; a role too weak: 403 naming the role and the type; replicas
//! forward the caller's credentials, so the owner checks them again; every
//! state-changing call leaves one audit line, at the replica that served it;
//! the CLI authenticates from --token, WEFT_TOKEN and --token-file; starts
//! over a caller's rate limit get 429 while another caller goes on; oversized
//! bodies and headers get 413 / 431 and a body that does not arrive 408.

mod security;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::json;
use weft_integration_tests::{wait_until, ApiClient, ApiResponse, ClusterOptions, TestCluster};

use security::support::*;

const PAY: &str = "type: pay\ntasks:\n  - name: a\n    handler: noop\n";
const OPS: &str =
    "type: ops\ntasks:\n  - name: a\n    handler: sleep\n    parameters: {ms: 60000}\n";

struct Callers {
    alice: String,
    bob: String,
    carol: String,
    root: String,
}

async fn call(
    api: &ApiClient,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> Result<ApiResponse> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let ct = if path == "/v1/definitions" {
        "application/yaml"
    } else {
        "application/json"
    };
    api.send_with(method, path, &headers, body.map(|b| (ct, b.to_owned())))
        .await
}

fn expect(r: &ApiResponse, status: u16, contains: &[&str]) -> Result<()> {
    let text = r.body.to_string();
    ensure!(
        r.status.as_u16() == status,
        "expected {status}, got {} {text}",
        r.status
    );
    for c in contains {
        ensure!(text.contains(c), "answer {text} lacks '{c}'");
    }
    Ok(())
}

async fn weft_cli(api: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(i32, String, String)> {
    let mut cmd = tokio::process::Command::new(weft_integration_tests::paths::bin_path("weft"));
    cmd.arg("--api")
        .arg(api)
        .args(args)
        .env_remove("WEFT_API")
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_TOKEN_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out =
        tokio::time::timeout(Duration::from_secs(30), cmd.kill_on_drop(true).output()).await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_are_authenticated_authorized_limited_and_audited() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let c = Callers {
        alice: random_secret("alice-"),
        bob: random_secret("bob-"),
        carol: random_secret("carol-"),
        root: random_secret("root-"),
    };
    let policy = format!(
        r#"
[namespaces]
payments = ["pay"]
operations = ["ops"]

[[tokens]]
name = "alice"
sha256 = "{}"
roles = ["operator:payments", "reader:operations"]

[[tokens]]
name = "bob"
sha256 = "{}"
roles = ["reader:payments"]

[[tokens]]
name = "carol"
sha256 = "{}"
roles = ["operator:operations"]

[[tokens]]
name = "root"
sha256 = "{}"
roles = ["admin:*"]
"#,
        sha256_hex(&c.alice)?,
        sha256_hex(&c.bob)?,
        sha256_hex(&c.carol)?,
        sha256_hex(&c.root)?
    );
    let policy_file = scratch.path().join("policy.toml");
    std::fs::write(&policy_file, policy)?;
    let sso = SigningKey::generate(scratch.path(), "sso-1")?;
    // Another key under the same kid: a forgery.
    std::fs::create_dir_all(scratch.path().join("rogue"))?;
    let rogue = SigningKey::generate(&scratch.path().join("rogue"), "sso-1")?;
    let jwks_file = scratch.path().join("jwks.json");
    std::fs::write(&jwks_file, json!({"keys": [sso.jwk()]}).to_string())?;

    let cluster = TestCluster::start(
        ClusterOptions::new(2, 1)
            .env("WEFT_AUTH_ENABLED", "true")
            .env("WEFT_AUTH_POLICY_FILE", policy_file.display().to_string())
            .env("WEFT_AUTH_JWKS_FILE", jwks_file.display().to_string())
            .env("WEFT_AUTH_JWT_ISSUER", "https://sso.example")
            .env("WEFT_API_RATE_LIMIT_PER_MINUTE", "20")
            .env("WEFT_API_BODY_TIMEOUT_MS", "1000")
            .env("WEFT_API_MAX_BODY_BYTES", "65536"),
    )
    .await?;
    let api = cluster.api_at(0);
    let api1 = cluster.api_at(1);
    let result = async {
        // Definitions: admin only.
        expect(&call(&api, None, Method::POST, "/v1/definitions", Some(PAY)).await?, 401, &["authentication required"])?;
        expect(&call(&api, Some(&c.alice), Method::POST, "/v1/definitions", Some(PAY)).await?, 403, &["'alice' lacks role 'admin'", "'pay'"])?;
        for d in [PAY, OPS] {
            let r = call(&api, Some(&c.root), Method::POST, "/v1/definitions", Some(d)).await?;
            ensure!(r.status.is_success(), "root registers: {} {}", r.status, r.body);
        }

        // Starting: operator on the type.
        let start = json!({"input": {}}).to_string();
        expect(&call(&api, None, Method::POST, "/v1/workflows/pay", Some(&start)).await?, 401, &["authentication required"])?;
        expect(&call(&api, Some("not-a-token"), Method::POST, "/v1/workflows/pay", Some(&start)).await?, 401, &["not valid"])?;
        expect(&call(&api, Some(&c.bob), Method::POST, "/v1/workflows/pay", Some(&start)).await?, 403, &["'bob' lacks role 'operator' on workflow type 'pay'", "payments"])?;
        expect(&call(&api, Some(&c.alice), Method::POST, "/v1/workflows/ops", Some(&start)).await?, 403, &["'alice' lacks role 'operator'", "'ops'"])?;
        let r = call(&api, Some(&c.alice), Method::POST, "/v1/workflows/pay", Some(&start)).await?;
        expect(&r, 202, &[])?;
        let pay_id = r.body["instance_id"].as_str().context("id")?.to_owned();

        // Reading: reader on the type, through either replica (one forwards, with the caller's credentials).
        let path = format!("/v1/workflows/pay/{pay_id}");
        wait_until("the pay instance completes", Duration::from_secs(60), Duration::from_millis(200), || async {
            call(&api, Some(&c.bob), Method::GET, &path, None).await.is_ok_and(|r| r.body["state"] == "completed")
        })
        .await?;
        let mut served = std::collections::BTreeSet::new();
        for a in [&api, &api1] {
            let url = format!("{}{path}", a.base_url());
            let resp = reqwest::Client::new().get(&url).bearer_auth(&c.bob).send().await?;
            ensure!(resp.status() == 200, "bob reads through {}: {}", a.base_url(), resp.status());
            served.insert(resp.headers().get("x-weft-served-by").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned());
            expect(&call(a, None, Method::GET, &path, None).await?, 401, &[])?;
            expect(&call(a, Some(&c.carol), Method::GET, &path, None).await?, 403, &["'carol' lacks role 'reader' on workflow type 'pay'"])?;
        }
        ensure!(served.len() == 1, "both replicas should be answered by the owner: {served:?}");

        // JWT: a valid one, an expired one, one of another key, one of another issuer.
        let claims = |exp: i64, iss: &str| json!({"sub": "sso-user", "iss": iss, "exp": exp, "roles": ["operator:operations", "reader:payments"]});
        let good = sso.sign(&claims(now_s() + 600, "https://sso.example"))?;
        let r = call(&api1, Some(&good), Method::POST, "/v1/workflows/ops", Some(&start)).await?;
        expect(&r, 202, &[])?;
        let ops_id = r.body["instance_id"].as_str().context("id")?.to_owned();
        expect(&call(&api1, Some(&good), Method::POST, "/v1/workflows/pay", Some(&start)).await?, 403, &["'sso-user' lacks role 'operator'"])?;
        let expired = sso.sign(&claims(now_s() - 600, "https://sso.example"))?;
        expect(&call(&api, Some(&expired), Method::GET, &path, None).await?, 401, &["Expired"])?;
        let forged = rogue.sign(&claims(now_s() + 600, "https://sso.example"))?;
        expect(&call(&api, Some(&forged), Method::GET, &path, None).await?, 401, &["JWT"])?;
        let other_iss = sso.sign(&claims(now_s() + 600, "https://evil.example"))?;
        expect(&call(&api, Some(&other_iss), Method::GET, &path, None).await?, 401, &["JWT rejected"])?;

        // Cancel the ops instance through both replicas' APIs: one audit line, at the owner.
        let cancel = format!("/v1/workflows/ops/{ops_id}/cancel");
        wait_until("the ops instance runs", Duration::from_secs(60), Duration::from_millis(200), || async {
            call(&api, Some(&c.carol), Method::GET, &format!("/v1/workflows/ops/{ops_id}"), None).await.is_ok_and(|r| r.body["state"] == "running")
        })
        .await?;
        expect(&call(&api, Some(&c.bob), Method::POST, &cancel, Some("{}")).await?, 403, &["'bob' lacks role 'operator' on workflow type 'ops'"])?;
        let r = call(&api1, Some(&c.carol), Method::POST, &cancel, Some("{}")).await?;
        ensure!(r.status.is_success(), "carol cancels: {} {}", r.status, r.body);
        let line = format!("instance_id={ops_id}");
        wait_until("the cancel's audit line", Duration::from_secs(10), Duration::from_millis(100), || async {
            cluster.orchestrators().iter().any(|o| o.process().log().lines().any(|l| l.contains("weft::audit") && l.contains(&line) && l.contains("/cancel")))
        })
        .await?;
        let audits: Vec<String> = cluster
            .orchestrators()
            .iter()
            .flat_map(|o| o.process().log().lines().filter(|l| l.contains("weft::audit") && l.contains(&line) && l.contains("/cancel")).map(str::to_owned).collect::<Vec<_>>())
            .collect();
        ensure!(audits.len() == 1, "one audit line per call, got {audits:#?}");
        ensure!(
            audits[0].contains("caller=carol") && audits[0].contains("auth=token"), "audit line: {}", audits[0]);
        let all_logs: String = cluster.orchestrators().iter().map(|o| o.process().log()).collect();
        ensure!(all_logs.contains("caller=alice") && all_logs.contains("caller=sso-user"), "starts are audited");
        for t in [&c.alice, &c.bob, &c.carol, &c.root] {
            ensure!(!all_logs.contains(t.as_str()), "a token is in a log");
        }

        // The CLI: --token, WEFT_TOKEN, --token-file; none is a clear error.
        let base = api.base_url().to_owned();
        let token_file = scratch.path().join("token");
        std::fs::write(&token_file, format!("{}\n", c.alice))?;
        let tf = token_file.display().to_string();
        for (args, env) in [
            (vec!["--token", c.alice.as_str(), "start", "pay"], vec![]),
            (vec!["start", "pay"], vec![("WEFT_TOKEN", c.alice.as_str())]),
            (vec!["--token-file", tf.as_str(), "start", "pay"], vec![]),
            (vec!["start", "pay"], vec![("WEFT_TOKEN_FILE", tf.as_str())]),
        ] {
            let (code, out, err) = weft_cli(&base, &args, &env).await?;
            ensure!(code == 0 && out.trim().len() == 36, "weft {args:?} {env:?}: {code} {out} {err}");
        }
        let (code, _, err) = weft_cli(&base, &["start", "pay"], &[]).await?;
        ensure!(code != 0 && err.contains("authentication required"), "no token: {code} {err}");
        let (code, _, err) = weft_cli(&base, &["--token", c.bob.as_str(), "start", "pay"], &[]).await?;
        ensure!(code != 0 && err.contains("lacks role 'operator'"), "bob: {code} {err}");

        // Rate limit: carol's starts run out, alice's do not.
        let mut limited = None;
        for _ in 0..25 {
            let r = call(&api, Some(&c.carol), Method::POST, "/v1/workflows/ops", Some(&start)).await?;
            if r.status.as_u16() == 429 {
                limited = Some(r);
                break;
            }
            ensure!(r.status.as_u16() == 202, "carol's start: {} {}", r.status, r.body);
        }
        let limited = limited.context("20 starts a minute were not enforced")?;
        expect(&limited, 429, &["'carol'", "rate_limit_per_minute"])?;
        expect(&call(&api, Some(&c.alice), Method::POST, "/v1/workflows/pay", Some(&start)).await?, 202, &[])?;

        // Size and time limits.
        // Each on a connection of its own: the server closes one whose request it refused unread.
        let big = format!("{{\"input\": {{\"x\": \"{}\"}}}}", "y".repeat(70_000));
        let fresh = ApiClient::new(api.base_url());
        expect(&call(&fresh, Some(&c.alice), Method::POST, "/v1/workflows/pay", Some(&big)).await?, 413, &["max_body_bytes"])?;
        let long = "z".repeat(20_000);
        let fresh = ApiClient::new(api.base_url());
        let r = fresh.send_with(Method::GET, &path, &[("authorization", &format!("Bearer {}", c.bob)), ("x-padding", &long)], None).await?;
        expect(&r, 431, &["max_header_bytes"])?;
        let addr = cluster.orchestrator(0).http_addr();
        let alice = c.alice.clone();
        let slow = tokio::task::spawn_blocking(move || -> Result<(String, Duration)> {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            let begun = Instant::now();
            write!(s, "POST /v1/workflows/pay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"input\"")?;
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf)?;
            Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), begun.elapsed()))
        })
        .await??;
        ensure!(slow.0.starts_with("HTTP/1.1 408"), "a body that never arrives: {:?}", slow.0);
        ensure!(slow.1 < Duration::from_secs(5), "408 after {:?}", slow.1);
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}
