//! Schedules (ADR 0017): cron expressions in a time zone, or fixed intervals,
//! that start workflows of a type with a given input.
//!
//! A schedule is a record in the compacted topic `<prefix>.schedules` (key
//! `schedule:<name>`, a JSON [`Spec`]; a tombstone deletes it); how far it
//! has fired is a record of its own (key `progress:<name>`, a [`Progress`]).
//! The topics stay the only state.
//!
//! **One start per tick.** The instance a tick starts has an id derived from
//! the schedule and the tick (`InstanceId::for_idempotency_key(type,
//! "schedule:<name>:<tick ms>[:<k>]")`, the first that lands on the
//! schedule's own partition, see [`placement`]) and its `workflow.created` a
//! derived event id and key, so however many replicas fire a tick, or fire it
//! again after a crash before its progress was recorded, the partition applies
//! one start and drops the others as duplicates. Normally one replica drives a
//! schedule (the owner of the events partition its name hashes to), see
//! [`runner`]; the overlap policy finds the previous run in that replica's own
//! projection ([`overlap`]).
//!
//! This module is the pure part: parsing and validating a spec, the ticks of
//! a spec, and which ticks to fire after a pause or downtime ([`plan`]).

mod firing;
pub mod overlap;
pub mod placement;
pub mod runner;

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tick is on time when it is at most this old; older due ticks were missed
/// (the catch-up policy decides about them).
pub const ON_TIME_MS: i64 = 30_000;
/// The most ticks `catchup: all` fires after downtime unless the spec says otherwise.
pub const DEFAULT_CATCHUP_LIMIT: u32 = 10;
/// Shortest interval.
pub const MIN_EVERY_MS: i64 = 1_000;

/// What to do with ticks missed while no replica could fire them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// Fire none of them.
    Skip,
    /// Fire the latest one.
    #[default]
    One,
    /// Fire each, oldest first, up to `catchup_limit` (the newest ones).
    All,
}

/// What to do when a tick comes while the previous run still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Start it anyway.
    #[default]
    Allow,
    /// Do not start it (the tick is recorded as skipped).
    Skip,
    /// Cancel the previous run, then start it.
    CancelPrevious,
}

/// A schedule as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub workflow_type: String,
    /// Start this version (default: the latest not deprecated, when the tick fires).
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub input: serde_json::Map<String, Value>,
    /// A cron expression: 5 fields (minute precision) or 6-7 (seconds first, year last).
    #[serde(default)]
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name), default `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// A fixed interval in ms (ticks at multiples of it since the epoch).
    #[serde(default)]
    pub every_ms: Option<i64>,
    #[serde(default)]
    pub catchup: Catchup,
    #[serde(default)]
    pub catchup_limit: Option<u32>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub paused: bool,
    /// Ticks after this are fired (set when the schedule is created, and on resume).
    pub start_after_ms: i64,
    pub updated_at_ms: i64,
}

/// How far a schedule has fired.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub last_tick_ms: i64,
    /// The instance the last started tick started.
    #[serde(default)]
    pub last_instance_id: Option<String>,
    /// Ticks started and skipped, over the schedule's life.
    #[serde(default)]
    pub started: u64,
    #[serde(default)]
    pub skipped: u64,
    /// Since when `overlap: skip` has been skipping ticks because it could not
    /// tell whether the previous run ended (see [`overlap::BLIND_SKIP_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blind_since_ms: Option<i64>,
}

/// Why a spec is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A spec's compiled timing.
pub enum Timing {
    Cron(Box<cron::Schedule>, chrono_tz::Tz),
    Every(i64),
}

impl Spec {
    /// Checks the spec and compiles its timing.
    pub fn timing(&self) -> Result<Timing, Invalid> {
        valid_name(&self.name)?;
        match (&self.cron, self.every_ms) {
            (Some(expr), None) => {
                let tz: chrono_tz::Tz =
                    self.timezone
                        .as_deref()
                        .unwrap_or("UTC")
                        .parse()
                        .map_err(|_| {
                            Invalid(format!(
                                "timezone '{}' is not an IANA time zone (e.g. Europe/Paris)",
                                self.timezone.as_deref().unwrap_or("")
                            ))
                        })?;
                let fields = expr.split_whitespace().count();
                let full = if fields == 5 {
                    format!("0 {expr}")
                } else {
                    expr.clone()
                };
                let s = cron::Schedule::from_str(&full)
                    .map_err(|e| Invalid(format!("cron expression '{expr}': {e}")))?;
                Ok(Timing::Cron(Box::new(s), tz))
            }
            (None, Some(ms)) if ms >= MIN_EVERY_MS => {
                if self.timezone.is_some() {
                    return Err(Invalid("'timezone' applies to 'cron' only".into()));
                }
                Ok(Timing::Every(ms))
            }
            (None, Some(_)) => Err(Invalid(format!(
                "'every' must be at least {MIN_EVERY_MS} ms"
            ))),
            _ => Err(Invalid("give exactly one of 'cron' and 'every'".into())),
        }
    }

    pub fn catchup_limit(&self) -> u32 {
        self.catchup_limit.unwrap_or(DEFAULT_CATCHUP_LIMIT).max(1)
    }
}

/// `[a-z0-9_-]{1,100}`.
pub fn valid_name(name: &str) -> Result<(), Invalid> {
    let ok = (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "schedule name '{name}' is not [a-z0-9_-], 1 to 100 characters"
        )))
    }
}

impl Timing {
    /// Up to `limit` ticks strictly after `after_ms`, in order.
    pub fn ticks_after(&self, after_ms: i64, limit: usize) -> Vec<i64> {
        match self {
            Timing::Every(every) => {
                let first = (after_ms.div_euclid(*every) + 1) * every;
                (0..limit as i64).map(|i| first + i * every).collect()
            }
            Timing::Cron(s, tz) => {
                let Some(start) = Utc.timestamp_millis_opt(after_ms).single() else {
                    return Vec::new();
                };
                s.after(&start.with_timezone(tz))
                    .take(limit)
                    .map(|t| t.timestamp_millis())
                    .collect()
            }
        }
    }

    /// The ticks in `(after_ms, upto_ms]`, at most the newest `cap` of them,
    /// and how many there were in all (capped at a large bound).
    pub fn due(&self, after_ms: i64, upto_ms: i64, cap: usize) -> (Vec<i64>, usize) {
        const BOUND: usize = 100_000;
        let mut all = Vec::new();
        let mut from = after_ms;
        loop {
            let batch: Vec<i64> = self
                .ticks_after(from, 1000)
                .into_iter()
                .take_while(|t| *t <= upto_ms)
                .collect();
            let Some(last) = batch.last().copied() else {
                break;
            };
            let full = batch.len() == 1000;
            all.extend(batch);
            if all.len() > cap {
                all.drain(..all.len() - cap);
            }
            if !full || all.len() >= BOUND {
                break;
            }
            from = last;
        }
        let n = all.len();
        (all, n)
    }
}

/// The ticks to fire now, in order, given the last tick fired (or the
/// schedule's start), the time, and the catch-up policy: every on-time tick
/// (at most [`ON_TIME_MS`] old), and of the missed ones none (`skip`), the
/// latest (`one`) or the newest `catchup_limit` (`all`). The newest due tick
/// is always returned last, fired or not, so the caller can record progress
/// past the ticks it decided to skip: `(to fire, newest due)`.
pub fn plan(spec: &Spec, timing: &Timing, last_ms: i64, now_ms: i64) -> (Vec<i64>, Option<i64>) {
    let limit = spec.catchup_limit() as usize;
    let (due, _) = timing.due(last_ms, now_ms, limit.max(64));
    let Some(newest) = due.last().copied() else {
        return (Vec::new(), None);
    };
    let (missed, on_time): (Vec<i64>, Vec<i64>) =
        due.into_iter().partition(|t| now_ms - t > ON_TIME_MS);
    let mut fire = match spec.catchup {
        Catchup::Skip => Vec::new(),
        Catchup::One if on_time.is_empty() => missed.last().copied().into_iter().collect(),
        Catchup::One => Vec::new(),
        Catchup::All => {
            let skip = missed.len().saturating_sub(limit);
            missed[skip..].to_vec()
        }
    };
    fire.extend(on_time);
    (fire, Some(newest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(every_ms: Option<i64>, cron: Option<&str>, tz: Option<&str>, catchup: Catchup) -> Spec {
        Spec {
            name: "s".into(),
            workflow_type: "t".into(),
            version: None,
            input: Default::default(),
            cron: cron.map(str::to_owned),
            timezone: tz.map(str::to_owned),
            every_ms,
            catchup,
            catchup_limit: Some(3),
            overlap: Overlap::Allow,
            paused: false,
            start_after_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn intervals_tick_at_multiples() {
        let t = spec(Some(2000), None, None, Catchup::All).timing().unwrap();
        assert_eq!(t.ticks_after(3000, 3), vec![4000, 6000, 8000]);
        assert_eq!(t.ticks_after(4000, 1), vec![6000]);
        assert_eq!(t.due(1000, 9000, 10), (vec![2000, 4000, 6000, 8000], 4));
    }

    #[test]
    fn cron_ticks_follow_the_time_zone() {
        // 02:00 every day in Paris is 01:00 UTC in winter (CET, UTC+1).
        let s = spec(None, Some("0 2 * * *"), Some("Europe/Paris"), Catchup::One);
        let t = s.timing().unwrap();
        let jan1 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
        assert_eq!(
            t.ticks_after(jan1, 2),
            vec![jan1 + 3_600_000, jan1 + 86_400_000 + 3_600_000]
        );
        // ... and 00:00 UTC in summer (CEST, UTC+2).
        let jul1 = 1_719_792_000_000; // 2024-07-01T00:00:00Z
        assert_eq!(t.ticks_after(jul1 - 1, 1), vec![jul1]);
    }

    #[test]
    fn invalid_specs_say_why() {
        let err = |s: Spec| s.timing().err().unwrap().0;
        assert!(err(spec(None, None, None, Catchup::One)).contains("exactly one"));
        assert!(err(spec(Some(5), None, None, Catchup::One)).contains("at least"));
        assert!(err(spec(None, Some("nope"), None, Catchup::One)).contains("cron expression"));
        assert!(err(spec(
            None,
            Some("* * * * *"),
            Some("Mars/Base"),
            Catchup::One
        ))
        .contains("IANA"));
        let mut bad = spec(Some(1000), None, None, Catchup::One);
        bad.name = "Bad Name".into();
        assert!(err(bad).contains("schedule name"));
    }

    #[test]
    fn catch_up_policies_after_downtime() {
        let every = 10_000;
        let now = 1_000_000;
        // Down since 900_000: ticks 910k..=1000k are due; 970k..=1000k are on time (30 s).
        for (policy, want) in [
            (Catchup::Skip, vec![970_000, 980_000, 990_000, 1_000_000]),
            (Catchup::One, vec![970_000, 980_000, 990_000, 1_000_000]),
            (
                Catchup::All,
                vec![
                    940_000, 950_000, 960_000, 970_000, 980_000, 990_000, 1_000_000,
                ],
            ),
        ] {
            let s = spec(Some(every), None, None, policy);
            let (fire, newest) = plan(&s, &s.timing().unwrap(), 900_000, now);
            assert_eq!((fire, newest), (want, Some(1_000_000)), "{policy:?}");
        }
        // Nothing on time (every minute, the newest tick 45 s old): `one` fires
        // the latest missed tick only, `skip` none, `all` the newest three.
        let minute = 60_000;
        let late = 600_000 + 45_000;
        for (policy, want) in [
            (Catchup::One, vec![600_000]),
            (Catchup::Skip, vec![]),
            (Catchup::All, vec![480_000, 540_000, 600_000]),
        ] {
            let s = spec(Some(minute), None, None, policy);
            assert_eq!(
                plan(&s, &s.timing().unwrap(), 0, late),
                (want, Some(600_000)),
                "{policy:?}"
            );
        }
        let s = spec(Some(every), None, None, Catchup::Skip);
        // Nothing due.
        assert_eq!(
            plan(&s, &s.timing().unwrap(), now, now + 5_000),
            (vec![], None)
        );
    }
}
