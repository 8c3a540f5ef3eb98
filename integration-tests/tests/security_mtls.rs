//! The API over TLS with client certificates (mTLS, ADR 0015) and its
//! connection timeouts, on the real binaries and broker. Two orchestrator
//! replicas serve https with a CA made in the test
//! (scripts/tls-test-material.sh) and require client certificates: a
//! certificate whose subject the policy grants a role is that caller, via
//! reqwest and via the CLI (`--ca-cert`, `--client-cert`, `--client-key` and
//! their environment variables); no client certificate, or one of another
//! CA, is refused; a subject without the role gets 403 naming it. A request
//! reaching the replica that does not own the instance is forwarded over
//! TLS (the replica presents its own certificate and names the caller) and
//! the owner applies the caller's roles. A caller's rate budget is charged
//! once, by the replica serving the request: signals forwarded to the owner
//! use the owner's budget, not the entry replica's. A client that sends its
//! TLS handshake, or (plain HTTP) its headers, a byte at a time is cut off
//! after `api.header_timeout_ms`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use weft_integration_tests::python::repo_root;
use weft_integration_tests::{wait_until, ApiClient, ClusterOptions, TestCluster};

const PAY: &str =
    "type: pay\ntasks:\n  - name: a\n    handler: sleep\n    parameters: {ms: 120000}\n";
/// Starts and signals per caller and minute.
const BUDGET: usize = 8;

/// A CA with a server certificate and client certificates for `names`.
fn material(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    let status = std::process::Command::new(repo_root().join("scripts/tls-test-material.sh"))
        .arg(dir)
        .args(names)
        .status()
        .context("running scripts/tls-test-material.sh")?;
    ensure!(status.success(), "tls-test-material.sh failed: {status}");
    Ok(dir.to_path_buf())
}

/// An https client trusting `ca`, presenting `client` (`<dir>/client-<name>.crt`) if given.
fn client(ca: &Path, identity: Option<(&Path, &str)>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
        .timeout(Duration::from_secs(30));
    if let Some((dir, name)) = identity {
        let mut pem = std::fs::read(dir.join(format!("client-{name}.crt")))?;
        pem.extend(std::fs::read(dir.join(format!("client-{name}.key")))?);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

/// Status and body text of a request, or the transport error's text.
async fn status(req: reqwest::RequestBuilder) -> std::result::Result<(u16, String), String> {
    match req.send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            Ok((s, r.text().await.unwrap_or_default()))
        }
        Err(e) => {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            Err(text)
        }
    }
}

async fn weft_cli(args: &[&str], env: &[(&str, &str)]) -> Result<(i32, String, String)> {
    let mut cmd = tokio::process::Command::new(weft_integration_tests::paths::bin_path("weft"));
    cmd.args(args);
    for v in [
        "WEFT_API",
        "WEFT_TOKEN",
        "WEFT_TOKEN_FILE",
        "WEFT_CA_CERT",
        "WEFT_CLIENT_CERT",
        "WEFT_CLIENT_KEY",
    ] {
        cmd.env_remove(v);
    }
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

/// Writes to `addr` a byte every 100 ms (after `head`, sent at once) until the
/// server closes the connection; returns how long that took, failing after `within`.
fn trickle(addr: std::net::SocketAddr, head: &[u8], within: Duration) -> Result<Duration> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let begun = Instant::now();
    s.write_all(head)?;
    let mut buf = [0u8; 1024];
    while begun.elapsed() < within {
        if s.write_all(b"a").is_err() {
            return Ok(begun.elapsed());
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(begun.elapsed()),
            // An answer (hyper may say 408) is fine; the close must follow.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(begun.elapsed()),
        }
    }
    bail!("the server kept a connection sending a byte every 100 ms open for {within:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mtls_callers_roles_forwarding_and_rate_budgets() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let tls = material(
        &scratch.path().join("tls"),
        &["alice", "bob", "carol", "weft-replica"],
    )?;
    let other = material(&scratch.path().join("other-ca"), &["alice"])?;
    let policy = r#"
[namespaces]
payments = ["pay"]

[[certificates]]
subject = "weft-client"
name = "deployer"
roles = ["admin:*"]

[[certificates]]
subject = "alice"
roles = ["operator:payments"]

[[certificates]]
subject = "carol"
roles = ["operator:payments"]

[[certificates]]
subject = "bob"
roles = ["reader:payments"]
"#;
    let policy_file = scratch.path().join("policy.toml");
    std::fs::write(&policy_file, policy)?;
    let p = |f: &str| tls.join(f).display().to_string();
    let ca = tls.join("ca.crt");
    let deployer = {
        // The default client certificate (CN=weft-client) of the script.
        let mut pem = std::fs::read(tls.join("client.crt"))?;
        pem.extend(std::fs::read(tls.join("client.key"))?);
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca)?)?)
            .identity(reqwest::Identity::from_pem(&pem)?)
            .timeout(Duration::from_secs(30))
            .build()?
    };
    let cluster = TestCluster::start(
        ClusterOptions::new(2, 1)
            .api_tls(deployer)
            .env("WEFT_AUTH_ENABLED", "true")
            .env("WEFT_AUTH_POLICY_FILE", policy_file.display().to_string())
            .env("WEFT_API_TLS_CERT_FILE", p("server.crt"))
            .env("WEFT_API_TLS_KEY_FILE", p("server.key"))
            .env("WEFT_API_TLS_CLIENT_CA_FILE", p("ca.crt"))
            .env(
                "WEFT_API_TLS_FORWARD_CERT_FILE",
                p("client-weft-replica.crt"),
            )
            .env(
                "WEFT_API_TLS_FORWARD_KEY_FILE",
                p("client-weft-replica.key"),
            )
            .env("WEFT_API_HEADER_TIMEOUT_MS", "1500")
            .env("WEFT_API_RATE_LIMIT_PER_MINUTE", BUDGET.to_string()),
    )
    .await?;
    let result = async {
        let (api0, api1) = (cluster.api_at(0), cluster.api_at(1));
        ensure!(
            api0.base_url().starts_with("https://"),
            "{}",
            api0.base_url()
        );
        let r = api0
            .send_with(
                reqwest::Method::POST,
                "/v1/definitions",
                &[],
                Some(("application/yaml", PAY.to_owned())),
            )
            .await?;
        ensure!(
            r.status.is_success(),
            "the deployer (admin by certificate) registers: {} {}",
            r.status,
            r.body
        );

        let alice = client(&ca, Some((&tls, "alice")))?;
        let bob = client(&ca, Some((&tls, "bob")))?;
        let carol = client(&ca, Some((&tls, "carol")))?;
        let start_url = format!("{}/v1/workflows/pay", api0.base_url());
        let start = json!({"input": {}});

        // alice (operator on payments by her certificate's subject) starts, via reqwest.
        let (s, body) = status(alice.post(&start_url).json(&start))
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(s == 202, "alice starts: {s} {body}");
        // bob may read but not start: 403 naming the role.
        let (s, body) = status(bob.post(&start_url).json(&start))
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            s == 403 && body.contains("'bob' lacks role 'operator'") && body.contains("'pay'"),
            "bob starts: {s} {body}"
        );
        // No client certificate: refused in the handshake (or 401).
        match status(client(&ca, None)?.post(&start_url).json(&start)).await {
            Err(_) => {}
            Ok((401, _)) => {}
            Ok((s, body)) => bail!("without a client certificate: {s} {body}"),
        }
        // A certificate of another CA (same subject, alice): refused in the handshake.
        let forged = client(&ca, Some((&other, "alice")))?;
        if let Ok((s, body)) = status(forged.post(&start_url).json(&start)).await {
            bail!("a certificate of another CA was accepted: {s} {body}");
        }
        ensure!(
            cluster
                .orchestrators()
                .iter()
                .any(|o| o.process().log().contains("API TLS handshake refused")),
            "the refused handshakes are logged"
        );

        // The CLI, with flags and with environment variables.
        let base = api0.base_url().to_owned();
        let (cc, ck) = (p("client-alice.crt"), p("client-alice.key"));
        let flags = [
            "--api",
            base.as_str(),
            "--ca-cert",
            &p("ca.crt"),
            "--client-cert",
            &cc,
            "--client-key",
            &ck,
            "start",
            "pay",
        ];
        let (code, out, err) = weft_cli(&flags, &[]).await?;
        ensure!(
            code == 0 && out.trim().len() == 36,
            "weft with flags: {code} {out} {err}"
        );
        let cli_id = out.trim().to_owned();
        let env = [
            ("WEFT_API", base.as_str()),
            ("WEFT_CA_CERT", ca.to_str().context("path")?),
            ("WEFT_CLIENT_CERT", cc.as_str()),
            ("WEFT_CLIENT_KEY", ck.as_str()),
        ];
        // Retried while the replicas still share the partitions out (503).
        let deadline = Instant::now() + Duration::from_secs(60);
        let (code, out, err) = loop {
            let got = weft_cli(&["get", "pay", &cli_id], &env).await?;
            if got.0 == 0 || !got.2.contains("try again shortly") || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        ensure!(
            code == 0 && out.contains(&cli_id),
            "weft get with environment variables: {code} {out} {err}"
        );
        let (code, _, err) = weft_cli(
            &[
                "--api",
                &base,
                "--ca-cert",
                &p("ca.crt"),
                "get",
                "pay",
                &cli_id,
            ],
            &[],
        )
        .await?;
        ensure!(
            code != 0,
            "weft without a client certificate succeeded: {err}"
        );
        let (code, _, err) = weft_cli(
            &[
                "--api",
                &base,
                "--ca-cert",
                &p("ca.crt"),
                "--client-cert",
                &cc,
                "get",
                "pay",
                &cli_id,
            ],
            &[],
        )
        .await?;
        ensure!(
            code != 0 && err.contains("--client-key"),
            "--client-cert alone: {code} {err}"
        );

        // Forwarding over TLS: the deployer starts instances (through both
        // replicas, each charging its own budget) until each replica owns one.
        for api in [&api0, &api1] {
            wait_until(
                "each replica owns a partition of weft.pay.events",
                Duration::from_secs(120),
                Duration::from_millis(300),
                || async {
                    let r = api
                        .send_with(reqwest::Method::GET, "/readyz", &[], None)
                        .await;
                    r.is_ok_and(|r| r.body["partitions"].to_string().contains("weft.pay.events"))
                },
            )
            .await?;
        }
        let mut owned: [Option<String>; 2] = [None, None];
        let mut n = 0;
        while owned.iter().any(Option::is_none) {
            ensure!(
                n < 2 * BUDGET,
                "no instance on each replica after {n} starts: {owned:?}"
            );
            let via = if n % 2 == 0 { &api0 } else { &api1 };
            n += 1;
            let r = via.start("pay", json!({}), None).await?;
            let id = r["instance_id"].as_str().context("instance_id")?.to_owned();
            let url = format!("{}/v1/workflows/pay/{id}", api0.base_url());
            let deadline = Instant::now() + Duration::from_secs(60);
            let served = loop {
                match bob.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        break r
                            .headers()
                            .get("x-weft-served-by")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                    }
                    _ if Instant::now() > deadline => {
                        bail!("instance {id} not readable within 60 s")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let i = match served.as_str() {
                "orchestrator-0" => 0,
                "orchestrator-1" => 1,
                other => bail!("served by '{other}'"),
            };
            owned[i].get_or_insert(id);
        }
        let remote = owned[1].clone().context("owned by 1")?;
        // bob reads it through replica 0, which forwards to replica 1 over https: bob's roles apply there.
        let url = format!("{}/v1/workflows/pay/{remote}", api0.base_url());
        let r = bob.get(&url).send().await?;
        ensure!(
            r.status() == 200,
            "bob reads through the non-owner: {}",
            r.status()
        );
        ensure!(
            r.headers()
                .get("x-weft-served-by")
                .is_some_and(|v| v == "orchestrator-1"),
            "forwarded to the owner"
        );
        // A list gathers the other replica's part with bob's identity too.
        let list = format!("{}/v1/workflows?type=pay&limit=1000", api0.base_url());
        let (s, body) = status(bob.get(&list)).await.map_err(anyhow::Error::msg)?;
        ensure!(s == 200, "bob lists through replica 0: {s} {body}");
        for id in owned.iter().flatten() {
            ensure!(body.contains(id.as_str()), "the list lacks {id}: {body}");
        }
        // bob may not cancel it: the owner answers 403 for bob (not for the forwarding replica).
        let (s, body) = status(bob.post(format!("{url}/cancel")).json(&json!({})))
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            s == 403 && body.contains("'bob' lacks role 'operator'"),
            "bob cancels through the non-owner: {s} {body}"
        );
        // A client cannot name a caller itself: the header is believed only from a replica's certificate.
        let (s, body) = status(
            bob.post(format!(
                "{}/v1/workflows/pay/{remote}/cancel",
                api1.base_url()
            ))
            .header("x-weft-forwarded-subject", "weft-client")
            .json(&json!({})),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        ensure!(
            s == 403 && body.contains("'bob'"),
            "bob naming another caller at the owner: {s} {body}"
        );
        let (s, body) = status(
            bob.post(format!("{url}/cancel"))
                .header("x-weft-forwarded-subject", "weft-client")
                .json(&json!({})),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        ensure!(
            s == 403 && body.contains("'bob'"),
            "bob naming another caller through the non-owner: {s} {body}"
        );

        // Rate budgets: carol's signals through replica 0 to replica 1's instance are charged once, by the owner.
        let signal = format!("{url}/signals/poke");
        for n in 0..BUDGET {
            let (s, body) = status(carol.post(&signal).json(&json!({"n": n})))
                .await
                .map_err(anyhow::Error::msg)?;
            ensure!((200..300).contains(&s), "carol's signal {n}: {s} {body}");
        }
        let (s, body) = status(carol.post(&signal).json(&json!({})))
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            s == 429 && body.contains("'carol'"),
            "carol's signal over the budget: {s} {body}"
        );
        let direct = format!("{}/v1/workflows/pay/{remote}/signals/poke", api1.base_url());
        let (s, body) = status(carol.post(&direct).json(&json!({})))
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(
            s == 429,
            "the owner's budget was spent by the forwarded signals: {s} {body}"
        );
        // Replica 0 charged none of them: carol's start there is within its budget.
        let (s, body) = status(carol.post(&start_url).json(&start))
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(s == 202, "carol starts at the entry replica: {s} {body}");

        // The audit line of a certificate caller.
        let logs: String = cluster
            .orchestrators()
            .iter()
            .map(|o| o.process().log())
            .collect();
        ensure!(
            logs.lines().any(|l| l.contains("weft::audit")
                && l.contains("caller=alice")
                && l.contains("auth=certificate")),
            "alice's start is audited as a certificate caller"
        );

        // A TLS handshake sent a byte at a time is cut off after api.header_timeout_ms.
        let addr = cluster.orchestrator(0).http_addr();
        let took = tokio::task::spawn_blocking(move || {
            // A handshake record header announcing 512 bytes, which then trickle.
            trickle(
                addr,
                &[0x16, 0x03, 0x01, 0x02, 0x00],
                Duration::from_secs(6),
            )
        })
        .await??;
        ensure!(
            took >= Duration::from_millis(1000),
            "closed after {took:?}: before the timeout"
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() -> Result<()> {
    let cluster =
        TestCluster::start(ClusterOptions::new(1, 0).env("WEFT_API_HEADER_TIMEOUT_MS", "1500"))
            .await?;
    let addr = cluster.orchestrator(0).http_addr();
    let took = tokio::task::spawn_blocking(move || {
        trickle(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            Duration::from_secs(6),
        )
    })
    .await??;
    ensure!(
        took >= Duration::from_millis(1000),
        "closed after {took:?}: before the timeout"
    );
    // Others are served meanwhile and after.
    let api: ApiClient = cluster.api();
    ensure!(api.is_ready().await, "a normal request is answered");
    Ok(())
}
