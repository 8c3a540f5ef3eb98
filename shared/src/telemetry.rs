//! Process telemetry shared by every Weft binary: structured logging set up
//! from [`LogSettings`] (overridable with the `WEFT_LOG` filter), and the
//! default node id a process announces in the node registry.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Environment variable holding a tracing filter (`info`, `weft_worker=debug,rdkafka=warn`, …);
/// when set it wins over `log.level`.
pub const LOG_ENV: &str = "WEFT_LOG";

/// Installs the global tracing subscriber: events at or above the filter from
/// `WEFT_LOG` (or `settings.level`) go to stderr as text or JSON lines.
///
/// Idempotent: when a global subscriber is already installed (a second call, a
/// test harness) this leaves it in place.
pub fn init_logging(settings: &LogSettings) {
    let filter = std::env::var(LOG_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_new(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only when a subscriber is already set, which is fine.
    let _ = match settings.format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The node id to announce: `configured` when set, else `<role>-<hostname>-<pid>`.
pub fn node_id_or_default(configured: &str, role: &str) -> String {
    let configured = configured.trim();
    if !configured.is_empty() {
        return configured.to_owned();
    }
    format!("{role}-{}-{}", hostname(), std::process::id())
}

/// The host name from the kernel, else `$HOSTNAME`, else `localhost`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().map(|s| s.trim().to_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_node_id_wins() {
        assert_eq!(node_id_or_default(" w-1 ", "worker"), "w-1");
    }

    #[test]
    fn default_node_id_names_role_host_and_pid() {
        let id = node_id_or_default("", "worker");
        assert!(id.starts_with("worker-"), "{id}");
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        assert!(id.len() > "worker--".len() + 1, "{id}");
    }
}
