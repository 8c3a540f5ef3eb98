//! Measuring what an attempt used: wall time of the handler always; CPU time
//! and peak memory either of the handler's own child process, when it ran one
//! and reported its `rusage` (the `shell` kind does, via [`wait_child`]), or
//! else of the whole worker process (the CPU the process used while the
//! attempt ran, and its resident-memory high-water mark): in-process handlers
//! share the process's threads, so nothing finer is honest. The scope says
//! which (`weft.usage.scope`: `child` or `process`; ADR 0023).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use weft_shared::usage::{
    Usage, CPU_MS, MAX_METRICS, PEAK_RSS_KB, SCOPE_CHILD, SCOPE_PROCESS, WALL_MS,
};

/// What a child process of a handler used (see [`wait_child`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildUsage {
    /// User + system CPU time, ms.
    pub cpu_ms: i64,
    /// Peak resident memory, KiB (0: unknown).
    pub peak_rss_kb: i64,
}

/// What the handler reported while it ran: child usage, metrics.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reports(Arc<Mutex<Reported>>);

#[derive(Debug, Default)]
struct Reported {
    child: Option<ChildUsage>,
    metrics: BTreeMap<String, f64>,
}

impl Reports {
    fn lock(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a child's usage (CPU added up, memory the larger).
    pub(crate) fn child(&self, u: ChildUsage) {
        let mut r = self.lock();
        let c = r.child.get_or_insert_with(ChildUsage::default);
        c.cpu_ms += u.cpu_ms;
        c.peak_rss_kb = c.peak_rss_kb.max(u.peak_rss_kb);
    }

    /// Sets a metric; ignored when not finite or past [`MAX_METRICS`] names.
    pub(crate) fn metric(&self, name: &str, value: f64) {
        let mut r = self.lock();
        if value.is_finite() && (r.metrics.len() < MAX_METRICS || r.metrics.contains_key(name)) {
            r.metrics.insert(name.to_owned(), value);
        }
    }
}

/// The measurement of one attempt, from before its handler starts.
pub(crate) struct Meter {
    began: Instant,
    cpu_us: i64,
}

impl Meter {
    pub(crate) fn start() -> Self {
        Self {
            began: Instant::now(),
            cpu_us: process_cpu_us(),
        }
    }

    /// What the attempt used, given what its handler reported.
    pub(crate) fn finish(&self, reports: &Reports) -> Usage {
        let wall_ms = i64::try_from(self.began.elapsed().as_millis()).unwrap_or(i64::MAX);
        let r = reports.lock();
        let mut resources = BTreeMap::from([(WALL_MS.to_owned(), wall_ms)]);
        let scope = match (r.child, own_usage()) {
            (Some(c), _) => {
                resources.insert(CPU_MS.to_owned(), c.cpu_ms);
                // 0: the child ended before its memory could be sampled (unknown, not zero)
                if c.peak_rss_kb > 0 {
                    resources.insert(PEAK_RSS_KB.to_owned(), c.peak_rss_kb);
                }
                SCOPE_CHILD
            }
            (None, Some((cpu_us, maxrss_kb))) => {
                resources.insert(CPU_MS.to_owned(), (cpu_us - self.cpu_us).max(0) / 1000);
                resources.insert(PEAK_RSS_KB.to_owned(), maxrss_kb);
                SCOPE_PROCESS
            }
            (None, None) => "",
        };
        Usage {
            resources,
            metrics: r.metrics.clone(),
            scope: scope.to_owned(),
        }
    }
}

/// The CPU time (user + system, with `children`: plus that of the children
/// it waited for) of process `who` (`self` or a pid) in ms, from `/proc/<who>/stat`.
fn proc_cpu_ms(who: &str, children: bool) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<i64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    if f.len() < 4 {
        return None;
    }
    let ticks = f[0] + f[1] + if children { f[2] + f[3] } else { 0 };
    let hz = i64::try_from(rustix::param::clock_ticks_per_second())
        .ok()
        .filter(|h| *h > 0)
        .unwrap_or(100);
    Some(ticks * 1000 / hz)
}

/// The resident-memory high-water mark (`VmHWM`, KiB) of process `who`.
fn proc_hwm_kb(who: &str) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{who}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The worker process's CPU time so far (user + system, all threads), µs:
/// one `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, cheap enough for every attempt.
fn process_cpu_us() -> i64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec.saturating_mul(1_000_000) + t.tv_nsec / 1000
}

/// How long the worker's own `VmHWM` is reused before `/proc/self/status` is
/// read again: it is a process-wide high-water mark, and formatting that
/// file for every attempt cost the worker a third more CPU per task at a
/// thousand tasks a second.
const HWM_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The worker process's CPU time (µs) and peak resident memory (KiB, at most
/// [`HWM_FRESH_FOR`] old).
fn own_usage() -> Option<(i64, i64)> {
    static HWM: Mutex<Option<(Instant, i64)>> = Mutex::new(None);
    let mut cached = HWM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let kb = match *cached {
        Some((at, kb)) if at.elapsed() < HWM_FRESH_FOR => kb,
        _ => {
            let kb = proc_hwm_kb("self")?;
            *cached = Some((Instant::now(), kb));
            kb
        }
    };
    Some((process_cpu_us(), kb))
}

/// How often [`wait_child`] samples the child's memory while it runs.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Waits (blocking) for `child` to exit and reaps it: its exit status and
/// what it used. CPU time is exact (read from the exited, not yet reaped
/// child: its own and that of the descendants it waited for); peak memory is
/// the child's `VmHWM`, sampled every 20 ms while it runs.
/// `reaped` is set, under its lock, when the child is reaped: a killer that
/// holds the lock and sees it unset signals the child, never a reused pid.
pub(crate) fn wait_child(
    mut child: std::process::Child,
    reaped: &Mutex<bool>,
) -> std::io::Result<(std::process::ExitStatus, ChildUsage)> {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let raw = i32::try_from(child.id()).map_err(|_| std::io::Error::other("pid out of range"))?;
    let pid = Pid::from_raw(raw).ok_or_else(|| std::io::Error::other("pid 0"))?;
    let who = raw.to_string();
    let mut usage = ChildUsage::default();
    loop {
        if let Some(kb) = proc_hwm_kb(&who) {
            usage.peak_rss_kb = usage.peak_rss_kb.max(kb);
        }
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
        match waitid(WaitId::Pid(pid), opts) {
            Ok(Some(_)) => break,
            Ok(None) => std::thread::sleep(SAMPLE_EVERY),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Exited, not reaped yet: its /proc entry still holds its times.
    usage.cpu_ms = proc_cpu_ms(&who, true).unwrap_or(0);
    let mut reaped = reaped
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let status = child.wait()?;
    *reaped = true;
    Ok((status, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_scope_without_a_child_and_child_scope_with_one() {
        let meter = Meter::start();
        // burn a little CPU in this process
        let mut x = 0u64;
        let until = Instant::now() + std::time::Duration::from_millis(30);
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let reports = Reports::default();
        reports.metric("rows", 4.0);
        reports.metric("bad", f64::INFINITY);
        let u = meter.finish(&reports);
        assert_eq!(u.scope, SCOPE_PROCESS);
        assert!(u.resources[WALL_MS] >= 30, "{u:?}");
        assert!(u.resources[CPU_MS] >= 1, "{u:?}");
        assert!(u.resources[PEAK_RSS_KB] > 0, "{u:?}");
        assert_eq!(u.metrics, BTreeMap::from([("rows".to_owned(), 4.0)]));

        reports.child(ChildUsage {
            cpu_ms: 5,
            peak_rss_kb: 100,
        });
        reports.child(ChildUsage {
            cpu_ms: 7,
            peak_rss_kb: 50,
        });
        let u = meter.finish(&reports);
        assert_eq!(u.scope, SCOPE_CHILD);
        assert_eq!(u.resources[CPU_MS], 12);
        assert_eq!(u.resources[PEAK_RSS_KB], 100);
    }

    #[test]
    fn wait_child_reports_the_childs_cpu_and_memory() {
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done")
            .spawn()
            .unwrap();
        let (status, u) = wait_child(child, &Mutex::new(false)).unwrap();
        assert!(status.success());
        assert!(u.cpu_ms > 0, "{u:?}");
        assert!(u.peak_rss_kb > 0, "{u:?}");
    }
}
