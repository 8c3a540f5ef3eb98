//! What a process cost, from Linux's `/proc`: CPU seconds (`utime + stime` of
//! `/proc/<pid>/stat`, in clock ticks) and resident memory (`VmRSS` of
//! `/proc/<pid>/status`). Threads are included; children are not.

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time so far, in seconds.
    pub cpu_s: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("parsing /proc/{pid}/stat: {stat}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib = vm_rss_kib(&status).unwrap_or(0);
    Ok(ProcSample {
        cpu_s: ticks as f64 / clock_ticks_per_second() as f64,
        rss_kib,
    })
}

/// This process (the load generator).
pub fn sample_self() -> Result<ProcSample> {
    sample(std::process::id())
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after
/// its last `)`.
pub fn cpu_ticks(stat: &str) -> Result<u64> {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        bail!("no ')' after the command name");
    };
    // rest starts at field 3 (state): utime is field 14, i.e. index 11 here.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.len() < 13 {
        bail!("only {} fields after the command name", fields.len());
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    Ok(utime + stime)
}

/// `VmRSS` in KiB from a `/proc/<pid>/status` text.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `getconf CLK_TCK` (100 on every usual Linux), read once.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces() {
        let stat = "1234 (weft (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0";
        assert_eq!(cpu_ticks(stat).unwrap(), 300);
        assert!(cpu_ticks("1234 weft S").is_err());
    }

    #[test]
    fn rss_from_status() {
        let status = "Name:\tweft\nVmPeak:\t 9000 kB\nVmRSS:\t   51234 kB\n";
        assert_eq!(vm_rss_kib(status), Some(51234));
    }

    #[test]
    fn this_process_reads_its_own_cpu_and_memory() {
        // Burn CPU until the tick counter moves (a loaded machine may need a while).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let s = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            let s = sample_self().unwrap();
            if s.cpu_s > 0.0 || std::time::Instant::now() > deadline {
                break s;
            }
        };
        assert!(s.cpu_s > 0.0 && s.rss_kib > 0, "{s:?} {x}");
    }
}
