//! Runs the `weft` CLI binary against an orchestrator's API, with a deadline.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::ApiClient;

/// What a `weft` run printed and how it exited.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn ok(&self) -> Result<&str> {
        ensure!(self.code == Some(0), "weft failed: {self:#?}");
        Ok(&self.stdout)
    }
}

/// Runs the `weft` binary against `api` with `args`, at most `deadline`.
pub async fn weft(api: &ApiClient, args: &[&str], deadline: Duration) -> Result<CliRun> {
    let bin = crate::paths::bin_path("weft");
    let child = tokio::process::Command::new(&bin)
        .arg("--api")
        .arg(api.base_url())
        .args(args)
        .env_remove("WEFT_API")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(deadline, child)
        .await
        .with_context(|| format!("weft {args:?} did not exit within {deadline:?}"))??;
    Ok(CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
