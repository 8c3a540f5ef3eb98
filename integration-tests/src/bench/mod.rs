//! `weft-bench`'s parts (docs/benchmarks.md explains every figure):
//!
//! - [`run`]: one engine run on one broker storage, phase by phase;
//! - [`engine`]: the throughput run (completions seen in the orchestrators'
//!   counters, then read back from the list endpoint) and the one-at-a-time run;
//! - [`chain`]: the fair raw baseline, a produce → consume → produce chain with
//!   Weft's settings, headers and records;
//! - [`records`]: samples of Weft's records; the causal chain of a history;
//! - [`procstat`]: CPU seconds and resident memory from `/proc`;
//! - [`scrape`]: batch figures from `/metrics`;
//! - [`stats`]: percentiles, windows, in-flight counts;
//! - [`report`]: the table and the targets;
//! - [`files`]: the JSON files and the comparison with an earlier report;
//! - [`lanes`]: where and when tasks ran (issue 15: routing, priority, resources, spread);
//! - [`priority`]: the priority scenario (a backlog, then critical work);
//! - [`spread`]: tasks over three workers of unequal capacity;
//! - [`placement`]: both, as the placement phase, and its table lines.

pub mod chain;
pub mod engine;
pub mod files;
pub mod lanes;
pub mod placement;
pub mod priority;
pub mod procstat;
pub mod records;
pub mod report;
pub mod run;
pub mod scrape;
pub mod spread;
pub mod stats;
