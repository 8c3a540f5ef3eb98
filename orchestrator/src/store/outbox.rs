//! Outbox records: derived records (decided events, task dispatches, DLQ
//! copies, snapshots) written to RocksDB in the same batch as the projection that decided
//! them, and deleted once the broker acknowledged them. A crash between the two
//! loses nothing: the partition's next owner publishes what is left.

/// What an outbox record is, for duplicate detection during replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxKind {
    /// A decided event; `ident` is its idempotency key.
    Event = 1,
    /// A task dispatch; `ident` is its attempt key.
    Dispatch = 2,
    /// A record sent to the DLQ; `ident` is its source position.
    Dlq = 3,
    /// A snapshot for the compacted snapshots topic; `ident` names the
    /// instance. Never read back, so never struck during replay.
    Snapshot = 4,
    /// A control record for workers (cancel an attempt) on the tasks topic;
    /// `ident` names the attempt. Never read back, so never struck.
    Control = 5,
    /// An input forwarded from the wrong partition of its events topic to the
    /// one its key hashes to; `ident` is its source position. Never struck
    /// (the copy keeps the input's idempotency key, so a second copy is a
    /// duplicate where it lands).
    Forward = 6,
}

/// One record waiting to be published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    pub kind: OutboxKind,
    pub ident: String,
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// A stored outbox record that cannot be read back (corruption or a foreign version).
#[derive(Debug, thiserror::Error)]
#[error("corrupt outbox record: {0}")]
pub struct CorruptOutbox(&'static str);

const VERSION: u8 = 1;

impl OutboxRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, self.kind as u8];
        for field in [
            self.ident.as_bytes(),
            self.topic.as_bytes(),
            &self.key,
            &self.payload,
        ] {
            put(&mut out, field);
        }
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (k, v) in &self.headers {
            put(&mut out, k.as_bytes());
            put(&mut out, v.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptOutbox> {
        let mut r = Reader(bytes);
        if r.take(1)? != [VERSION] {
            return Err(CorruptOutbox("unknown version"));
        }
        let kind = match r.take(1)?[0] {
            1 => OutboxKind::Event,
            2 => OutboxKind::Dispatch,
            3 => OutboxKind::Dlq,
            4 => OutboxKind::Snapshot,
            5 => OutboxKind::Control,
            6 => OutboxKind::Forward,
            _ => return Err(CorruptOutbox("unknown kind")),
        };
        let ident = r.string()?;
        let topic = r.string()?;
        let key = r.field()?.to_vec();
        let payload = r.field()?.to_vec();
        let n = r.u32()?;
        let mut headers = Vec::with_capacity(n as usize);
        for _ in 0..n {
            headers.push((r.string()?, r.string()?));
        }
        Ok(Self {
            kind,
            ident,
            topic,
            key,
            payload,
            headers,
        })
    }
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptOutbox> {
        if self.0.len() < n {
            return Err(CorruptOutbox("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, CorruptOutbox> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn field(&mut self) -> Result<&'a [u8], CorruptOutbox> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, CorruptOutbox> {
        String::from_utf8(self.field()?.to_vec()).map_err(|_| CorruptOutbox("invalid utf-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let r = OutboxRecord {
            kind: OutboxKind::Dispatch,
            ident: "i:a:1".into(),
            topic: "weft.t.tasks".into(),
            key: b"k".to_vec(),
            payload: vec![0xc3, 0x01, 7],
            headers: vec![("weft-event-type".into(), "task.scheduled".into())],
        };
        let bytes = r.encode();
        assert_eq!(OutboxRecord::decode(&bytes).unwrap(), r);
        assert!(OutboxRecord::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
