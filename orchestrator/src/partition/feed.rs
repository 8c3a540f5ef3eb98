//! Offset continuity between the events consumer and a partition processor.
//!
//! A processor folds a record only if it follows the *stored offset* (the
//! offset after the last record folded into the projection). Offsets of one
//! partition are not contiguous (transaction markers and compaction leave
//! holes), so the consumer tells the processor what it handed over before each
//! record: [`Fed::prev_next`], the offset right after the previous record of
//! the same partition in this assignment (or the offset the partition was
//! assigned or sought to). A record whose `prev_next` is the stored offset
//! follows it, whatever holes lie between; a record below it was already
//! folded; anything else means records were lost on the way (a processor that
//! died with a buffer, a hand-off that read the stored offset too early), and
//! the processor asks the consumer to seek back to the stored offset.

use rdkafka::message::{Message, OwnedMessage};

/// `prev_next` of a record whose predecessor is unknown: it follows only a
/// stored offset equal to its own offset.
pub const UNKNOWN: i64 = -1;

/// One record handed to a partition processor.
#[derive(Debug)]
pub struct Fed {
    pub msg: OwnedMessage,
    /// The offset after the record handed over before this one (see the module doc).
    pub prev_next: i64,
}

impl Fed {
    pub fn offset(&self) -> i64 {
        self.msg.offset()
    }
}

/// What a processor does with a record, given its stored offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It follows the stored offset: fold it.
    Apply,
    /// It is below the stored offset: already folded, drop it.
    Behind,
    /// Records between the stored offset and it were not handed over: drop it
    /// and seek back to the stored offset.
    Gap,
}

/// Judges a record at `offset`, handed over after `prev_next`, against the
/// stored offset `expected`.
pub fn judge(expected: i64, offset: i64, prev_next: i64) -> Verdict {
    if offset < expected {
        Verdict::Behind
    } else if offset == expected || prev_next == expected {
        Verdict::Apply
    } else {
        Verdict::Gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_records_follow() {
        assert_eq!(judge(5, 5, 5), Verdict::Apply);
        assert_eq!(judge(5, 5, UNKNOWN), Verdict::Apply);
    }

    #[test]
    fn a_hole_the_consumer_skipped_is_not_a_gap() {
        // Offsets 5 and 6 are transaction markers: the consumer handed over 4, then 7.
        assert_eq!(judge(5, 7, 5), Verdict::Apply);
    }

    #[test]
    fn records_below_the_stored_offset_are_behind() {
        assert_eq!(judge(10, 3, 3), Verdict::Behind);
        assert_eq!(judge(10, 9, UNKNOWN), Verdict::Behind);
    }

    #[test]
    fn a_lost_buffer_is_a_gap() {
        // The previous processor died holding 5..=8; the consumer goes on at 9.
        assert_eq!(judge(5, 9, 9), Verdict::Gap);
        assert_eq!(judge(5, 9, UNKNOWN), Verdict::Gap);
        // A hand-off that read the stored offset before the old processor drained.
        assert_eq!(judge(12, 14, 10), Verdict::Gap);
    }
}
