//! Kafka with SASL and TLS against Tansu, on the real binaries: a Tansu
//! broker that requires client authentication (`--authentication`) with a
//! SCRAM-SHA-512 user made by `tansu user create`.
//!
//! - Over `SASL_PLAINTEXT`, an orchestrator, a worker and the CLI run a
//!   workflow; an orchestrator and a worker given a wrong password stop at once
//!   with an error naming the broker, the mechanism and the user — not a hang —
//!   and print no password.
//! - Over `SASL_SSL`, the same broker also serves TLS (`--cert`, `--key`) with a
//!   certificate from a CA made in the test (scripts/tls-test-material.sh);
//!   orchestrator and worker trust that CA (`ssl.ca.location`) and a workflow
//!   runs. A client trusting another CA, and one with a wrong password over
//!   TLS, stop at start with an error naming the broker.
//!
//! TLS needs Weft's patches 0005 and 0006 on Tansu 0.6.0
//! (scripts/tansu-patches/): upstream's CLI refuses `--cert` together with
//! `--key`, and its listener builds a TLS acceptor but serves plain TCP.
//! Tansu also accepts any password for SASL `PLAIN` (tansu-auth-0.6.0
//! src/lib.rs:171-190 checks only that one is present), so SCRAM is the
//! mechanism that proves anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use weft_integration_tests::cluster::SCRIPT_ONLY_ENV;
use weft_integration_tests::paths::{bin_path, free_addr, free_port, tansu_bin};
use weft_integration_tests::python::repo_root;
use weft_integration_tests::{ApiClient, Process, ProcessSpec};

const USER: &str = "weft";

/// A Tansu on `port`: without authentication (`tls` is then ignored) to create
/// the user, else requiring it, over TLS with `tls`/server.{crt,key} if given.
fn tansu(dir: &Path, port: u16, authentication: bool, tls: Option<&Path>) -> ProcessSpec {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut spec = ProcessSpec::new(
        if authentication {
            "broker"
        } else {
            "broker-setup"
        },
        tansu_bin(),
    )
    .args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ])
    .args(["--storage-engine", "sqlite://tansu.db"])
    .env("RUST_LOG", "warn")
    .current_dir(dir);
    if authentication {
        spec = spec.arg("--authentication");
        if let Some(tls) = tls {
            spec = spec
                .arg("--cert")
                .arg(tls.join("server.crt"))
                .arg("--key")
                .arg(tls.join("server.key"));
        }
    }
    spec
}

/// A throw-away CA and a server certificate for 127.0.0.1 it signed, in `dir`.
fn tls_material(dir: &Path) -> Result<PathBuf> {
    let status = std::process::Command::new(repo_root().join("scripts/tls-test-material.sh"))
        .arg(dir)
        .status()
        .context("running scripts/tls-test-material.sh")?;
    ensure!(status.success(), "tls-test-material.sh failed: {status}");
    Ok(dir.to_path_buf())
}

async fn port_open(port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        ensure!(
            Instant::now() < deadline,
            "nothing listens on {port} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A broker requiring SCRAM, with user `weft` / `password`, over TLS with
/// `tls`'s certificate if given. Tansu's `user create` talks to the broker,
/// which refuses it unauthenticated, so the user is made on the same storage
/// before authentication is turned on.
async fn secure_broker(dir: &Path, password: &str, tls: Option<&Path>) -> Result<(Process, u16)> {
    let port = free_port();
    let mut setup = Process::spawn(tansu(dir, port, false, None), dir)?;
    port_open(port, Duration::from_secs(30)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = tokio::process::Command::new(tansu_bin())
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{port}"),
                "--mechanism",
                "scram512",
                USER,
                password,
            ])
            .output()
            .await?;
        if out.status.success() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "tansu user create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    setup.terminate_and_wait(Duration::from_secs(10)).await?;
    let broker = Process::spawn(tansu(dir, port, true, tls), dir)?;
    port_open(port, Duration::from_secs(30)).await?;
    Ok((broker, port))
}

/// An orchestrator or worker authenticating as `weft` with `password`: over
/// `SASL_SSL` trusting the CA certificate `ca` if given, else `SASL_PLAINTEXT`.
fn weft(
    bin: &str,
    name: &str,
    dir: &Path,
    port: u16,
    password: &str,
    http: SocketAddr,
    ca: Option<&Path>,
) -> ProcessSpec {
    let protocol = if ca.is_some() {
        "SASL_SSL"
    } else {
        "SASL_PLAINTEXT"
    };
    let mut spec = ProcessSpec::new(name, bin_path(bin))
        .args(["--bootstrap", &format!("127.0.0.1:{port}")])
        .args(["--http-addr", &http.to_string()])
        .args(["--node-id", name])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("WEFT_KAFKA_PROPERTY_SECURITY_PROTOCOL", protocol)
        .env("WEFT_KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-512")
        .env("WEFT_KAFKA_PROPERTY_SASL_USERNAME", USER)
        .env("WEFT_KAFKA_PROPERTY_SASL_PASSWORD", password);
    if let Some(ca) = ca {
        spec = spec.env("WEFT_KAFKA_PROPERTY_SSL_CA_LOCATION", ca);
    }
    for var in SCRIPT_ONLY_ENV {
        spec = spec.env_remove(var);
    }
    if bin == "weft-orchestrator" {
        spec = spec.arg("--data-dir").arg(dir.join(format!("{name}-data")));
    }
    spec
}

async fn wait_ready(p: &mut Process, url: &str) -> Result<()> {
    let api = ApiClient::new(url);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api.is_ready().await {
        if let Some(status) = p.try_exit_status() {
            bail!("{} exited ({status})\n{}", p.name(), p.log_tail(40));
        }
        ensure!(
            Instant::now() < deadline,
            "{} not ready\n{}",
            p.name(),
            p.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Waits for `p` to exit and returns its log; fails if it runs on past `within`.
async fn exits(p: &mut Process, within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        if p.try_exit_status().is_some() {
            // Its exit is what the test waits for.
            p.kill9();
            return Ok(p.log());
        }
        if Instant::now() > deadline {
            let log = p.log_tail(30);
            p.kill9();
            bail!("{} still runs after {within:?}:\n{log}", p.name());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a two-task workflow with the CLI through an orchestrator and a worker
/// connected over SASL (TLS when `ca` is given); returns both, still running.
async fn workflow_runs(
    dir: &Path,
    port: u16,
    password: &str,
    ca: Option<&Path>,
) -> Result<[Process; 2]> {
    let logs = dir.join("logs");
    let (orch_addr, worker_addr) = (free_addr(), free_addr());
    let api_url = format!("http://{orch_addr}");
    let orch_spec = weft(
        "weft-orchestrator",
        "orchestrator-0",
        dir,
        port,
        password,
        orch_addr,
        ca,
    );
    let worker_spec = weft(
        "weft-worker",
        "worker-0",
        dir,
        port,
        password,
        worker_addr,
        ca,
    );
    let mut orch = Process::spawn(orch_spec, &logs)?;
    let mut worker = Process::spawn(worker_spec, &logs)?;
    let result = async {
        wait_ready(&mut orch, &api_url).await?;
        wait_ready(&mut worker, &format!("http://{worker_addr}")).await?;
        let api = ApiClient::new(&api_url);
        api.register_definition("type: sasl\ntasks:\n  - name: a\n    handler: noop\n  - name: b\n    handler: noop\n    depends_on: [a]\n").await?;
        let input = json!({"n": 1}).to_string();
        let run = weft_integration_tests::cli::weft(&api, &["start", "sasl", "--input", &input, "--wait", "--timeout", "60s"], Duration::from_secs(90)).await?;
        run.ok().context("the workflow over SASL")?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        for p in [&orch, &worker] {
            p.print_log_tail(40);
        }
        return Err(e);
    }
    Ok([orch, worker])
}

/// Starts orchestrator and worker with `password` and `ca`; both must stop
/// within seconds with an error containing `expected`, printing no password.
async fn both_stop_at_start(
    dir: &Path,
    port: u16,
    password: &str,
    ca: Option<&Path>,
    expected: &str,
    secrets: &[&str],
) -> Result<()> {
    for (bin, name) in [
        ("weft-orchestrator", "orchestrator-bad"),
        ("weft-worker", "worker-bad"),
    ] {
        let spec = weft(bin, name, dir, port, password, free_addr(), ca);
        let mut bad = Process::spawn(spec, &dir.join("logs"))?;
        let begun = Instant::now();
        let log = exits(&mut bad, Duration::from_secs(45)).await?;
        ensure!(log.contains(expected), "{name}: no '{expected}' in\n{log}");
        for secret in secrets {
            ensure!(!log.contains(secret), "{name}: a password is in the log");
        }
        ensure!(
            begun.elapsed() < Duration::from_secs(30),
            "{name} took {:?} to give up",
            begun.elapsed()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_runs_over_sasl_scram_and_a_wrong_password_stops_start_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let (mut broker, port) = secure_broker(dir, &password, None).await?;
    let result = async {
        let running = workflow_runs(dir, port, &password, None).await?;
        let wrong = "not-the-password";
        let expected = format!("cannot authenticate to the Kafka broker at 127.0.0.1:{port} (SASL_PLAINTEXT, SASL mechanism SCRAM-SHA-512, user 'weft')");
        both_stop_at_start(dir, port, wrong, None, &expected, &[wrong, &password]).await?;
        for p in &running {
            ensure!(!p.log().contains(&password), "{} logged the password", p.name());
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        broker.print_log_tail(40);
    }
    broker.kill9();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_runs_over_sasl_ssl_and_an_untrusted_ca_or_wrong_password_stops_start_up(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let dir = dir.path();
    let tls = tls_material(&dir.join("tls"))?;
    let other = tls_material(&dir.join("other-ca"))?;
    let (ca, other_ca) = (tls.join("ca.crt"), other.join("ca.crt"));
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let (mut broker, port) = secure_broker(dir, &password, Some(&tls)).await?;
    let result = async {
        let running = workflow_runs(dir, port, &password, Some(&ca)).await?;

        // A client that trusts another CA: the handshake fails, start-up stops.
        let expected = format!("TLS to the Kafka broker at 127.0.0.1:{port} (SASL_SSL) failed");
        both_stop_at_start(dir, port, &password, Some(&other_ca), &expected, &[&password]).await?;

        // The right CA and a wrong password: authentication fails over TLS.
        let wrong = "not-the-password";
        let expected = format!("cannot authenticate to the Kafka broker at 127.0.0.1:{port} (SASL_SSL, SASL mechanism SCRAM-SHA-512, user 'weft')");
        both_stop_at_start(dir, port, wrong, Some(&ca), &expected, &[wrong, &password]).await?;

        for p in &running {
            ensure!(!p.log().contains(&password), "{} logged the password", p.name());
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        broker.print_log_tail(40);
    }
    broker.kill9();
    result
}
