//! A child process under test: one of our binaries or the broker, with its
//! stdout and stderr captured to a log file, and the ways tests end it —
//! `kill9()` (a crash), `terminate()` (SIGTERM, a graceful stop) — and bring it
//! back (`restart()`). Dropping a [`Process`] kills it; if the thread is
//! panicking (a failed assertion), the tail of its log is printed first.
//!
//! A process is only allowed to stop when the test stopped it. One that exited
//! on its own, or whose log shows a panic (`panicked at`), fails the test:
//! [`Process::check`] says so, `start()` and `restart()` refuse to bring it back
//! silently, and dropping it panics (unless the test already failed) — so a
//! crash nobody asked for fails the test that did not cause it.
//!
//! Environment knobs: `WEFT_TEST_SHOW_LOGS=1` prints every log tail on drop,
//! `WEFT_TEST_LOG_TAIL=N` sets how many lines (default 40).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What to run: program, arguments, environment, working directory.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    cwd: Option<PathBuf>,
}

impl ProcessSpec {
    /// `name` labels the process in messages and names its log file (`<name>.log`).
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable (on top of the test's own environment).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes one variable from the environment the process inherits.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Runs the process in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// A running (or stopped) child process with a log file.
#[derive(Debug)]
pub struct Process {
    spec: ProcessSpec,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// The test stopped it (`kill9`, `terminate`) since it was last started.
    stopped_by_test: bool,
    /// Panics in its log are expected (a test that makes it panic on purpose).
    panics_allowed: bool,
}

/// How the harness marks each start of a process in its log.
const START_MARKER: &str = "=== weft-test: start #";

/// What a log line of a Rust panic contains.
pub const PANIC_MARKER: &str = "panicked at";

impl Process {
    /// Starts `spec`, appending its output to `<log_dir>/<name>.log`.
    pub fn spawn(spec: ProcessSpec, log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{}.log", spec.name));
        let mut p = Self {
            spec,
            log_path,
            child: None,
            starts: 0,
            stopped_by_test: false,
            panics_allowed: false,
        };
        p.launch()?;
        Ok(p)
    }

    fn launch(&mut self) -> Result<()> {
        self.launch_with(&[])
    }

    /// Launches with `extra` arguments after the spec's (this start only).
    fn launch_with(&mut self, extra: &[&str]) -> Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        self.starts += 1;
        writeln!(
            log,
            "{START_MARKER}{} of {}: {} {}",
            self.starts,
            self.spec.name,
            self.spec.command_line(),
            extra.join(" ")
        )?;
        let stderr = log.try_clone()?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        for k in &self.spec.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.spec.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.spec.command_line()))?;
        self.child = Some(child);
        self.stopped_by_test = false;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The OS process id while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_running() {
            self.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    /// How many times it has been started (1 after `spawn`).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Whether the process is alive (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit status if it has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it. If it had already
    /// exited, that exit is taken as the test's doing too.
    pub fn kill9(&mut self) {
        self.stopped_by_test = true;
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a graceful stop request) and returns at once.
    pub fn terminate(&mut self) -> Result<()> {
        let Some(pid) = self.pid() else { return Ok(()) };
        self.stopped_by_test = true;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running `kill -TERM`")?;
        if !status.success() && self.is_running() {
            bail!("kill -TERM {pid} ({}) failed: {status}", self.spec.name);
        }
        Ok(())
    }

    /// Sends SIGTERM and waits up to `grace` for it to exit. If it does not, it is
    /// killed with SIGKILL and an error says so.
    pub async fn terminate_and_wait(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.terminate()?;
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill9();
                bail!(
                    "{} did not exit within {grace:?} of SIGTERM; killed it\n{}",
                    self.spec.name,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts it again (with the same command line and log file) if it is not
    /// running. Fails if it exited on its own (see [`check`](Self::check)).
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.check()?;
        self.launch()
    }

    /// Starts it once with `extra` arguments appended (later starts use the
    /// spec's arguments alone) if it is not running. Fails if it exited on its own.
    pub fn start_with(&mut self, extra: &[&str]) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.check()?;
        self.launch_with(extra)
    }

    /// Kills it (SIGKILL), then starts it again. Fails, starting nothing, if it
    /// had already exited on its own or its log shows a panic: a restart must
    /// not hide a crash.
    pub fn restart(&mut self) -> Result<()> {
        self.check()?;
        self.kill9();
        self.launch()
    }

    /// Panics in the log are expected from now on (the exit check stays).
    pub fn allow_panics(&mut self) {
        self.panics_allowed = true;
    }

    /// The exit status if it exited without the test stopping it.
    pub fn unexpected_exit(&mut self) -> Option<ExitStatus> {
        if self.stopped_by_test {
            return None;
        }
        self.try_exit_status()
    }

    /// The lines of its log that show a panic.
    pub fn panics(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(PANIC_MARKER))
            .map(str::to_owned)
            .collect()
    }

    /// Fails if the process exited without the test stopping it, or if its
    /// log shows a panic (unless [`allow_panics`](Self::allow_panics)); the
    /// error carries the tail of the log.
    pub fn check(&mut self) -> Result<()> {
        if let Some(status) = self.unexpected_exit() {
            bail!(
                "{} exited on its own ({status}); nothing in the test stopped it\n{}",
                self.spec.name,
                self.log_tail(tail_lines().max(60))
            );
        }
        if !self.panics_allowed {
            let panics = self.panics();
            if !panics.is_empty() {
                bail!(
                    "{} panicked: {}\n{}",
                    self.spec.name,
                    panics.join(" | "),
                    self.log_tail(tail_lines().max(60))
                );
            }
        }
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The log of the current (latest) start only.
    pub fn current_log(&self) -> String {
        let log = self.log();
        match log.rfind(START_MARKER) {
            Some(at) => log[at..].to_owned(),
            None => log,
        }
    }

    /// The last `lines` lines of the log, headed by the process name and log path.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        format!(
            "----- {} (last {} of {} lines of {}) -----\n{}\n----- end of {} -----",
            self.spec.name,
            tail.len(),
            all.len(),
            self.log_path.display(),
            tail.join("\n"),
            self.spec.name
        )
    }

    /// Prints the tail of the log to stderr (the test output).
    pub fn print_log_tail(&self, lines: usize) {
        eprintln!("{}", self.log_tail(lines));
    }
}

/// Whether logs should be printed on drop even when the test passed.
pub(crate) fn show_logs_always() -> bool {
    std::env::var("WEFT_TEST_SHOW_LOGS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// How many log lines to print.
pub(crate) fn tail_lines() -> usize {
    std::env::var("WEFT_TEST_LOG_TAIL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tail(tail_lines());
            self.kill9();
            return;
        }
        if show_logs_always() {
            self.print_log_tail(tail_lines());
        }
        let check = self.check();
        self.kill9();
        if let Err(e) = check {
            panic!("{e:#}");
        }
    }
}
