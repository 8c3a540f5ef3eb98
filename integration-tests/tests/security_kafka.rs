//! Kafka with SASL against Tansu, on the real binaries: a Tansu broker that
//! requires client authentication (`--authentication`) with a SCRAM-SHA-512
//! user made by `tansu user create`; an orchestrator, a worker and the CLI run
//! a workflow over `SASL_PLAINTEXT`; an orchestrator and a worker given a wrong
//! password stop at once with an error naming the broker, the mechanism and
//! the user — not a hang — and print no password.
//!
//! Not `SASL_SSL`: Tansu 0.6.0 cannot serve TLS. Its CLI puts `--cert` and
//! `--key` in one clap group (tansu-cli-0.6.0 src/cli/broker.rs:97-103), so
//! they cannot be given together ("the argument '--cert' cannot be used with
//! '--key'"), while a server config needs both (line 266); and the listener
//! builds its `TlsAcceptor` into an unused variable and serves the plain TCP
//! stream anyway (tansu-broker-0.6.0 src/broker.rs:268: a TLS client gets
//! "early eof"). It also accepts
//! any password for SASL `PLAIN` (tansu-auth-0.6.0 src/lib.rs:171-190 checks
//! only that one is present), so SCRAM is the mechanism that proves anything.
//! docs/security.md says how TLS is set up against a real Kafka.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use weft_integration_tests::cluster::SCRIPT_ONLY_ENV;
use weft_integration_tests::paths::{bin_path, free_addr, free_port, tansu_bin};
use weft_integration_tests::{ApiClient, Process, ProcessSpec};

const USER: &str = "weft";

fn tansu(dir: &Path, port: u16, authentication: bool) -> ProcessSpec {
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
    }
    spec
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

/// A broker requiring SCRAM, with user `weft` / `password`. Tansu's
/// `user create` talks to the broker, which refuses it unauthenticated, so
/// the user is made on the same storage before authentication is turned on.
async fn secure_broker(dir: &Path, password: &str) -> Result<(Process, u16)> {
    let port = free_port();
    let mut setup = Process::spawn(tansu(dir, port, false), dir)?;
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
    let broker = Process::spawn(tansu(dir, port, true), dir)?;
    port_open(port, Duration::from_secs(30)).await?;
    Ok((broker, port))
}

fn weft(
    bin: &str,
    name: &str,
    dir: &Path,
    port: u16,
    password: &str,
    http: SocketAddr,
) -> ProcessSpec {
    let mut spec = ProcessSpec::new(name, bin_path(bin))
        .args(["--bootstrap", &format!("127.0.0.1:{port}")])
        .args(["--http-addr", &http.to_string()])
        .args(["--node-id", name])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("WEFT_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        .env("WEFT_KAFKA_PROPERTY_SASL_MECHANISM", "SCRAM-SHA-512")
        .env("WEFT_KAFKA_PROPERTY_SASL_USERNAME", USER)
        .env("WEFT_KAFKA_PROPERTY_SASL_PASSWORD", password);
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
            bail!(
                "{} still runs after {within:?} with a wrong password:\n{log}",
                p.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_runs_over_sasl_scram_and_a_wrong_password_stops_start_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let (mut broker, port) = secure_broker(dir.path(), &password).await?;
    let logs = dir.path().join("logs");

    let (orch_addr, worker_addr) = (free_addr(), free_addr());
    let api_url = format!("http://{orch_addr}");
    let worker_url = format!("http://{worker_addr}");
    let orch_spec = weft(
        "weft-orchestrator",
        "orchestrator-0",
        dir.path(),
        port,
        &password,
        orch_addr,
    );
    let worker_spec = weft(
        "weft-worker",
        "worker-0",
        dir.path(),
        port,
        &password,
        worker_addr,
    );
    let mut orch = Process::spawn(orch_spec, &logs)?;
    let mut worker = Process::spawn(worker_spec, &logs)?;
    let result = async {
        wait_ready(&mut orch, &api_url).await?;
        wait_ready(&mut worker, &worker_url).await?;
        let api = ApiClient::new(&api_url);
        api.register_definition("type: sasl\ntasks:\n  - name: a\n    handler: noop\n  - name: b\n    handler: noop\n    depends_on: [a]\n").await?;
        let run = weft_integration_tests::cli::weft(&api, &["start", "sasl", "--input", &json!({"n": 1}).to_string(), "--wait", "--timeout", "60s"], Duration::from_secs(90)).await?;
        run.ok().context("the workflow over SASL")?;

        // Wrong password: both binaries stop with the reason, quickly.
        for (bin, name) in [("weft-orchestrator", "orchestrator-bad"), ("weft-worker", "worker-bad")] {
            let mut bad = Process::spawn(weft(bin, name, dir.path(), port, "not-the-password", free_addr()), &logs)?;
            let begun = Instant::now();
            let log = exits(&mut bad, Duration::from_secs(45)).await?;
            let line = format!("cannot authenticate to the Kafka broker at 127.0.0.1:{port}");
            ensure!(log.contains(&line), "{name}: no clear error in\n{log}");
            ensure!(log.contains("SCRAM-SHA-512") && log.contains("user 'weft'"), "{name}: the error does not name mechanism and user:\n{log}");
            ensure!(!log.contains("not-the-password") && !log.contains(&password), "{name}: a password is in the log");
            ensure!(begun.elapsed() < Duration::from_secs(30), "{name} took {:?} to give up", begun.elapsed());
        }
        for p in [&orch, &worker] {
            ensure!(!p.log().contains(&password), "{} logged the password", p.name());
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        for p in [&orch, &worker, &broker] {
            p.print_log_tail(40);
        }
    }
    broker.kill9();
    result
}
