//! A real browser for the web console's tests: Debian's headless Chromium
//! driven by its `chromedriver` over the W3C WebDriver protocol (plain JSON
//! over HTTP, spoken here with `reqwest`; no client library needed).
//! `scripts/browser.sh` installs both (`make setup` calls it).
//!
//! [`Browser::start`] runs `chromedriver` on a free port and opens a session
//! with a fresh profile and the flags a container needs (`--headless
//! --no-sandbox --disable-gpu ...`). Pages are checked through
//! [`Browser::eval`] (a script run in the page, returning JSON) and clicked
//! with [`Browser::click`]; [`Browser::wait_eval`] polls a script with a
//! deadline. [`Browser::screenshot`] saves a PNG under the artifacts directory,
//! [`artifacts_dir`]: `<target>/ui-artifacts` (`WEFT_UI_ARTIFACTS` moves it).
//! Paths: `WEFT_CHROMIUM` (else `/usr/lib/chromium/chromium`, then `chromium`
//! on `PATH`) and `WEFT_CHROMEDRIVER` (else `chromedriver` on `PATH`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use weft_integration_tests::paths::{bin_dir, free_addr};

/// The key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's flags for a container: no sandbox, no GPU, nothing phoning home.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1250",
];

/// Where screenshots go: `WEFT_UI_ARTIFACTS`, else `<target>/ui-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEFT_UI_ARTIFACTS") {
        return PathBuf::from(dir);
    }
    let profile = bin_dir();
    profile.parent().unwrap_or(&profile).join("ui-artifacts")
}

fn find(env: &str, candidates: &[&str]) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() && p.is_file() {
            return Ok(p.to_path_buf());
        }
        if !p.is_absolute() {
            for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
                if dir.join(c).is_file() {
                    return Ok(dir.join(c));
                }
            }
        }
    }
    bail!(
        "{} not found (looked for {candidates:?}): run scripts/browser.sh (make setup does), or set {env}",
        candidates.last().unwrap_or(&"it")
    )
}

/// One headless Chromium session; the driver is killed on drop.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: TempDir,
    artifacts: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a Chromium session with a fresh profile.
    pub async fn start() -> Result<Self> {
        let chromium = find("WEFT_CHROMIUM", &["/usr/lib/chromium/chromium", "chromium"])?;
        let chromedriver = find("WEFT_CHROMEDRIVER", &["chromedriver"])?;
        let artifacts = artifacts_dir();
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        let profile = tempfile::Builder::new()
            .prefix("weft-chromium-")
            .tempdir()?;
        let addr = free_addr();
        let log = std::fs::File::create(artifacts.join("chromedriver.log"))?;
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={}", addr.port()))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()?;
        let base = format!("http://{addr}");
        let started = Instant::now();
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("chromedriver did not become ready on {base} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let Some(session) = resp["value"]["sessionId"].as_str() else {
            bail!(
                "chromedriver could not start {}: {resp}",
                chromium.display()
            );
        };
        Ok(Self {
            http,
            session: session.to_owned(),
            base,
            driver,
            _profile: profile,
            artifacts,
        })
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("WebDriver {path}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("WebDriver {method} {path}: {status}: {}", v["value"]);
        }
        Ok(v["value"].clone())
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page
    /// and returns what it returns.
    pub async fn eval(&self, script: &str, args: Value) -> Result<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null`/`false`,
    /// and returns that; fails after `deadline` naming `what`.
    pub async fn wait_eval(&self, what: &str, deadline: Duration, script: &str) -> Result<Value> {
        let started = Instant::now();
        loop {
            let last = match self.eval(script, json!([])).await {
                Ok(v) if !(v.is_null() || v == false) => return Ok(v),
                Ok(v) => v,
                Err(e) => json!(e.to_string()),
            };
            if started.elapsed() > deadline {
                let shot = self.screenshot("timeout").await.ok();
                bail!("timed out after {deadline:?} waiting until {what} (last: {last}; screenshot: {shot:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching the CSS selector `css`; retried for
    /// a few seconds while the element is missing, re-rendered or covered.
    pub async fn click(&self, css: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.click_once(css).await {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(5) => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn click_once(&self, css: &str) -> Result<()> {
        let el = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .with_context(|| format!("finding {css}"))?;
        let Some(id) = el[ELEMENT_KEY].as_str() else {
            bail!("no element id for {css}: {el}");
        };
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/click"), None)
            .await
            .with_context(|| format!("clicking {css}"))
            .map(drop)
    }

    /// Saves a screenshot of the window as `<artifacts>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await?;
        let png = base64_decode(b64.as_str().unwrap_or_default())?;
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        println!("screenshot: {}", path.display());
        Ok(path)
    }

    /// Ends the session (Chromium exits) and stops the driver.
    pub async fn close(mut self) {
        let _ = self.cmd(reqwest::Method::DELETE, "", None).await;
        let _ = self.driver.kill().await;
    }
}

/// Standard base64 (the WebDriver screenshot encoding).
fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("screenshot is not base64 (byte {c})"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(super::base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(
            super::base64_decode("AAECAwQFBgcICQ==").unwrap(),
            (0..10).collect::<Vec<u8>>()
        );
        assert!(super::base64_decode("a$").is_err());
    }
}
