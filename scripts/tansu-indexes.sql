-- Indexes Tansu 0.6's SQLite schema lacks. Its `header` table has none, so each
-- fetched record's headers are found by scanning every header ever written: a
-- fetch slows down as topics grow, and a replay from offset 0 turns quadratic
-- (18 ms per record at 41k headers, 0.3 ms with the index). Applied by
-- scripts/broker.sh and the integration tests' broker after Tansu has created
-- its schema; idempotent. See docs/adr/0007-tansu-header-index.md.
create index if not exists weft_header_record on header (topition, offset_id);
