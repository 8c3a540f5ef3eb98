//! The orchestrator's RocksDB projections: instance states, each instance's
//! history by sequence number, applied idempotency keys, secondary indexes for
//! queries (by type, state and creation time), snapshots every N events, the
//! outbox of records waiting to be published, per-partition offsets and
//! per-partition analytics aggregates.
//! Everything in it is derived from the topics; a partition's changes and its
//! offset are written in one `WriteBatch`, so the projection is always exactly
//! "the topic up to the stored offset".

mod archive;
mod convert;
mod index;
mod keys;
mod outbox;
mod snapshot;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB};
use weft_shared::avro::AvroRecord;
use weft_shared::fsm::InstanceState;
use weft_shared::ids::InstanceId;
use weft_shared::observe::analytics::TypeStats;
use weft_shared::{WorkflowDefinition, WorkflowEvent, WorkflowSnapshot};

pub use convert::{from_snapshot, to_snapshot};
pub use index::{cursor_after, Page, Previous, Query};
pub use keys::ALL_CFS;
pub use outbox::{OutboxKind, OutboxRecord};
pub use snapshot::{DEFAULT_SNAPSHOT_EVERY, SNAPSHOTS_KEPT, SNAPSHOT_LADDER};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("stored instance state is corrupt: {0}")]
    CorruptState(String),
    #[error("stored event is corrupt: {0}")]
    CorruptEvent(#[from] weft_shared::avro::CodecError),
    #[error(transparent)]
    CorruptOutbox(#[from] outbox::CorruptOutbox),
    #[error("stored snapshot is corrupt: {0}")]
    CorruptSnapshot(String),
    #[error("stored history cannot be folded: {0}")]
    Fold(#[from] weft_shared::fsm::EvolveError),
    #[error("invalid cursor '{0}': pass back the next_cursor of a previous page")]
    BadCursor(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A key (or the part of it after a scanned prefix) and its value.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Starts the idempotency value of an input key that is in no history (see
/// [`Batch::put_input_key`]); an applied key's value is its sequence number.
const INPUT_KEY_MARK: &[u8] = b"\xffinput:";

/// Handle to the projection database (cheap to clone).
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    /// A snapshot is taken when an instance's `last_seq` crosses a multiple of this (0: never).
    snapshot_every: u64,
}

/// The block cache all column families share.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Options of column family `name`: LZ4 blocks from one shared cache, and
/// bloom filters where reads are point lookups that often miss (a new
/// instance, an idempotency key not seen yet), so those stay one memory probe
/// however large the store grows.
fn cf_options(name: &str, cache: &rocksdb::Cache) -> Options {
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(cache);
    if matches!(name, keys::CF_INSTANCES | keys::CF_IDEMPOTENCY) {
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
    }
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_block_based_table_factory(&table);
    opts
}

impl Store {
    /// Opens (or creates) the database at `path`. Index column families that
    /// are missing from an existing database are rebuilt from its instances.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let existing = DB::list_cf(&Options::default(), path).unwrap_or_default();
        let backfill = existing.iter().any(|c| c == keys::CF_INSTANCES)
            && keys::INDEX_CFS
                .iter()
                .any(|c| !existing.iter().any(|e| e == c));
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = keys::ALL_CFS
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n, &cache)));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let store = Self {
            db: Arc::new(db),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        };
        if backfill {
            index::backfill(&store)?;
        }
        Ok(store)
    }

    /// Sets the snapshot interval in events per instance (0 disables snapshots).
    pub fn with_snapshot_every(mut self, every: u64) -> Self {
        self.snapshot_every = every;
        self
    }

    /// The snapshot interval in events per instance.
    pub fn snapshot_every(&self) -> u64 {
        self.snapshot_every
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family opened at start")
    }

    /// The state of one instance.
    pub fn instance(&self, ty: &str, id: InstanceId) -> Result<Option<InstanceState>> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(keys::CF_INSTANCES), keys::instance(ty, id))?
        else {
            return Ok(None);
        };
        decode_state(&bytes).map(Some)
    }

    /// Whether `key` was already applied to the instance.
    pub fn seen(&self, ty: &str, id: InstanceId, key: &str) -> Result<bool> {
        Ok(self.seen_as(ty, id, key)?.is_some())
    }

    /// The event type of the record that first used `key` for the instance
    /// (applied, rejected or stale), `Some("")` when an older store did not
    /// keep it, `None` if the key is unused.
    pub fn seen_as(&self, ty: &str, id: InstanceId, key: &str) -> Result<Option<String>> {
        let Some(v) = self.db.get_pinned_cf(
            self.cf(keys::CF_IDEMPOTENCY),
            keys::idempotency(ty, id, key),
        )?
        else {
            return Ok(None);
        };
        let tail = if v.starts_with(INPUT_KEY_MARK) {
            &v[INPUT_KEY_MARK.len()..]
        } else {
            v.get(8..).unwrap_or_default()
        };
        Ok(Some(String::from_utf8_lossy(tail).into_owned()))
    }

    /// Events `from..=to` of an instance's history (at most `limit`).
    pub fn events(
        &self,
        ty: &str,
        id: InstanceId,
        from: u64,
        to: Option<u64>,
        limit: usize,
    ) -> Result<Vec<WorkflowEvent>> {
        let start = keys::event(ty, id, from.max(1));
        let end = match to {
            Some(to) => keys::event(ty, id, to.saturating_add(1)),
            None => keys::prefix_end(&keys::instance(ty, id)),
        };
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(keys::CF_EVENTS),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if k.as_ref() >= end.as_slice() || out.len() >= limit {
                break;
            }
            out.push(WorkflowEvent::decode(&v)?);
        }
        Ok(out)
    }

    /// The next offset to consume from a partition, if any was stored.
    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        let v = self
            .db
            .get_cf(self.cf(keys::CF_META), keys::offset(topic, partition))?;
        Ok(v.and_then(|b| b.as_slice().try_into().ok())
            .map(i64::from_be_bytes))
    }

    /// The analytics aggregates of a partition (empty when none were stored).
    pub fn analytics(&self, topic: &str, partition: i32) -> Result<TypeStats> {
        let v = self
            .db
            .get_cf(self.cf(keys::CF_META), keys::analytics(topic, partition))?;
        v.map_or_else(|| Ok(TypeStats::default()), |b| decode_stats(&b))
    }

    /// The analytics aggregates of every partition of `topic` this store has
    /// (owned now or before), by partition.
    pub fn analytics_of_topic(&self, topic: &str) -> Result<Vec<(i32, TypeStats)>> {
        let mut scope = keys::ANALYTICS_PREFIX.to_vec();
        scope.extend_from_slice(topic.as_bytes());
        scope.push(0);
        let mut out = Vec::new();
        for (rest, v) in self.scan_prefix(keys::CF_META, &scope)? {
            let partition = rest[..]
                .try_into()
                .map(i32::from_be_bytes)
                .map_err(|_| Error::CorruptState("analytics key".into()))?;
            out.push((partition, decode_stats(&v)?));
        }
        Ok(out)
    }

    /// The pending outbox records of a partition, in order.
    pub fn outbox(&self, topic: &str, partition: i32) -> Result<Vec<(u64, OutboxRecord)>> {
        let scope = keys::partition_scope(topic, partition);
        let mut out = Vec::new();
        for (rest, v) in self.scan_prefix(keys::CF_OUTBOX, &scope)? {
            let seq = u64::from_be_bytes(
                rest[..]
                    .try_into()
                    .map_err(|_| Error::CorruptState("outbox key".into()))?,
            );
            out.push((seq, OutboxRecord::decode(&v)?));
        }
        Ok(out)
    }

    /// Every `(key after prefix, value)` of `cf` whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let end = keys::prefix_end(prefix);
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if k.as_ref() >= end.as_slice() {
                break;
            }
            out.push((k[prefix.len()..].into(), v));
        }
        Ok(out)
    }

    /// A new batch of changes.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            wb: WriteBatch::default(),
            written: HashMap::new(),
        }
    }

    /// A digest of the projection for comparing a rebuilt projection with a
    /// live one: every column family a rebuild must reproduce — instances,
    /// histories, idempotency keys, both list indexes, durable timers, the
    /// outbox (empty at rest on both sides) and the analytics of the meta
    /// column family. Left out: the stored offsets (a live store may have read
    /// further than it applied) and the snapshots, a cache whose entries depend
    /// on how records were batched (a batch crossing two multiples of the
    /// interval stores one).
    pub fn digest(&self) -> Result<(u64, String)> {
        let mut count = 0u64;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &cf in keys::ALL_CFS {
            if cf == keys::CF_SNAPSHOTS {
                continue;
            }
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (k, v) = item?;
                if cf == keys::CF_META && !k.starts_with(keys::ANALYTICS_PREFIX) {
                    continue; // offsets differ between a live and a rebuilt store
                }
                count += 1;
                for b in cf
                    .as_bytes()
                    .iter()
                    .chain(k.iter())
                    .chain([0u8].iter())
                    .chain(v.iter())
                {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        Ok((count, format!("{h:016x}")))
    }
}

/// Changes to apply atomically.
pub struct Batch<'a> {
    store: &'a Store,
    wb: WriteBatch,
    /// Instances written by this batch, with what they became (a second write
    /// of one instance must replace the first one's index entries).
    written: HashMap<Vec<u8>, Previous>,
}

impl Batch<'_> {
    /// Writes an instance's state and keeps its index entries; `previous` is
    /// what is stored now (`None`: a new instance). When `last_seq` crossed a
    /// multiple of the snapshot interval, a snapshot is stored too (with the
    /// tasks of `definition`, if given) and returned, to be published.
    pub fn put_instance(
        &mut self,
        previous: Option<Previous>,
        s: &InstanceState,
        definition: Option<&WorkflowDefinition>,
    ) -> Result<Option<WorkflowSnapshot>> {
        let key = keys::instance(&s.workflow_type, s.instance_id);
        let previous = self
            .written
            .insert(key.clone(), Previous::of(s))
            .or(previous);
        let mut v = vec![keys::STATE_ENCODING_V1];
        v.extend(serde_json::to_vec(s).expect("instance state serialises"));
        self.wb.put_cf(self.store.cf(keys::CF_INSTANCES), key, v);
        index::put(self, previous, s);
        snapshot::maybe_take(self, previous, s, definition)
    }

    /// Appends a history event and marks its idempotency key applied.
    pub fn put_event(&mut self, e: &WorkflowEvent) {
        let (ty, id) = (&e.workflow_type, e.instance_id);
        self.wb.put_cf(
            self.store.cf(keys::CF_EVENTS),
            keys::event(ty, id, e.sequence_number),
            e.encode(),
        );
        let mut v = e.sequence_number.to_be_bytes().to_vec();
        v.extend_from_slice(e.event_type.as_str().as_bytes());
        self.wb.put_cf(
            self.store.cf(keys::CF_IDEMPOTENCY),
            keys::idempotency(ty, id, &e.idempotency_key),
            v,
        );
    }

    /// Marks the idempotency key of an input that was decided but not appended
    /// (rejected or stale), so a redelivery of it is a duplicate.
    pub fn put_input_key(&mut self, ty: &str, id: InstanceId, key: &str, event_type: &str) {
        let mut v = INPUT_KEY_MARK.to_vec();
        v.extend_from_slice(event_type.as_bytes());
        self.wb.put_cf(
            self.store.cf(keys::CF_IDEMPOTENCY),
            keys::idempotency(ty, id, key),
            v,
        );
    }

    pub fn put_outbox(&mut self, topic: &str, partition: i32, seq: u64, r: &OutboxRecord) {
        self.wb.put_cf(
            self.store.cf(keys::CF_OUTBOX),
            keys::outbox(topic, partition, seq),
            r.encode(),
        );
    }

    pub fn delete_outbox(&mut self, topic: &str, partition: i32, seq: u64) {
        self.wb.delete_cf(
            self.store.cf(keys::CF_OUTBOX),
            keys::outbox(topic, partition, seq),
        );
    }

    pub fn set_offset(&mut self, topic: &str, partition: i32, next: i64) {
        self.wb.put_cf(
            self.store.cf(keys::CF_META),
            keys::offset(topic, partition),
            next.to_be_bytes(),
        );
    }

    /// Stores a partition's analytics aggregates (with the offset they are at).
    pub fn put_analytics(&mut self, topic: &str, partition: i32, stats: &TypeStats) {
        self.wb.put_cf(
            self.store.cf(keys::CF_META),
            keys::analytics(topic, partition),
            serde_json::to_vec(stats).expect("analytics serialise"),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.wb.is_empty()
    }

    /// Writes every change atomically.
    pub fn commit(self) -> Result<()> {
        self.store.db.write(self.wb)?;
        Ok(())
    }
}

fn decode_stats(bytes: &[u8]) -> Result<TypeStats> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptState(format!("analytics: {e}")))
}

fn decode_state(bytes: &[u8]) -> Result<InstanceState> {
    match bytes.split_first() {
        Some((&keys::STATE_ENCODING_V1, rest)) => {
            serde_json::from_slice(rest).map_err(|e| Error::CorruptState(e.to_string()))
        }
        _ => Err(Error::CorruptState("unknown state encoding version".into())),
    }
}
