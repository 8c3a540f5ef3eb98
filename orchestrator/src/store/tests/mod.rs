//! Store tests on a temporary RocksDB: the query indexes, snapshots and
//! reconstruction, and a 100,000-event instance.

pub(crate) use crate::protocol::conformance::history;
mod analytics;
mod digest;
mod long_history;
mod query;
mod snapshots;
