//! Which partition of an events topic holds an instance: the same hash of the
//! record key (the instance id) that librdkafka's producer partitioner applies
//! when Weft's processes append events. Weft's producers use the Java client's
//! partitioner (`murmur2_random`: murmur2 of the key), so a record produced by
//! any client that follows Kafka's default lands where Weft expects it; a
//! deployment that overrides `kafka.properties.partitioner` gets that hash here too. The unit tests check each
//! hash against librdkafka itself, through its mock cluster. [`PartitionCounts`]
//! caches how many partitions each events topic has, from the broker's metadata.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer};
use weft_shared::config::KafkaSettings;

/// How long a topic's partition count is cached.
const COUNT_TTL: Duration = Duration::from_secs(30);

/// Partition counts of topics, from metadata, cached for [`COUNT_TTL`]. Ask
/// only about topics that exist (a metadata request may create a missing topic
/// on brokers that auto-create).
pub struct PartitionCounts {
    producer: FutureProducer,
    cache: Mutex<HashMap<String, (i32, Instant)>>,
}

impl PartitionCounts {
    pub fn new(producer: FutureProducer) -> Self {
        Self {
            producer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Partitions of `topic`; `None` if the broker does not say.
    pub async fn get(&self, topic: &str) -> Option<i32> {
        if let Some((n, at)) = self.cache.lock().expect("counts lock").get(topic) {
            if at.elapsed() < COUNT_TTL {
                return Some(*n);
            }
        }
        let (producer, t) = (self.producer.clone(), topic.to_owned());
        let n = tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&t), Duration::from_secs(5))
                .ok()?;
            let topic = md.topics().iter().find(|m| m.name() == t)?;
            let n = topic.partitions().len() as i32;
            (topic.error().is_none() && n > 0).then_some(n)
        })
        .await
        .ok()
        .flatten()?;
        self.cache
            .lock()
            .expect("counts lock")
            .insert(topic.to_owned(), (n, Instant::now()));
        Some(n)
    }
}

/// A keyed partitioner of librdkafka (the `partitioner` property).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioner {
    /// `consistent`, `consistent_random` (librdkafka's default): CRC-32.
    Crc32,
    /// `murmur2`, `murmur2_random` (the Java client's default): murmur2.
    Murmur2,
    /// `fnv1a`, `fnv1a_random` (Sarama's): FNV-1a.
    Fnv1a,
}

impl Partitioner {
    /// The partitioner the producers configured by `settings` use; `None` when
    /// keys do not decide the partition (`random`) or the name is unknown.
    pub fn from_settings(settings: &KafkaSettings) -> Option<Self> {
        match settings.properties.get("partitioner").map(String::as_str) {
            Some("consistent" | "consistent_random") => Some(Self::Crc32),
            None | Some("murmur2" | "murmur2_random") => Some(Self::Murmur2),
            Some("fnv1a" | "fnv1a_random") => Some(Self::Fnv1a),
            Some(_) => None,
        }
    }

    /// The partition of a record with the non-empty `key` among `partitions`.
    pub fn partition(self, key: &[u8], partitions: i32) -> i32 {
        let n = partitions.max(1) as u32;
        let p = match self {
            Self::Crc32 => crc32(key) % n,
            Self::Murmur2 => (murmur2(key) & 0x7fff_ffff) % n,
            Self::Fnv1a => fnv1a(key) % n,
        };
        p as i32
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and librdkafka's `rd_crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Kafka's murmur2 (seed `0x9747b28c`), as `Utils.murmur2` and `rd_murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = 0x9747_b28c_u32 ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// librdkafka's `rd_fnv1a`: 32-bit FNV-1a, negative results negated (as Sarama).
pub fn fnv1a(data: &[u8]) -> u32 {
    let mut h = 0x811C_9DC5_u32;
    for &b in data {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h as i32).wrapping_abs() as u32
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::config::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    use weft_shared::ids::InstanceId;

    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // From Kafka's UtilsTest.
        let java = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, want) in java {
            assert_eq!(murmur2(key.as_bytes()) as i32, want, "{key}");
        }
    }

    #[test]
    fn partitioner_follows_the_property() {
        let mut s = weft_shared::config::WeftConfig::default().kafka;
        assert_eq!(Partitioner::from_settings(&s), Some(Partitioner::Murmur2));
        s.properties
            .insert("partitioner".into(), "consistent_random".into());
        assert_eq!(Partitioner::from_settings(&s), Some(Partitioner::Crc32));
        s.properties.insert("partitioner".into(), "random".into());
        assert_eq!(Partitioner::from_settings(&s), None);
    }

    /// Produces instance-id keys through librdkafka with each partitioner and
    /// compares the partition it chose with ours.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn matches_librdkafka() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let partitions = 7;
        cluster
            .create_topic("events", partitions, 1)
            .expect("create topic");
        for (name, ours) in [
            ("consistent_random", Partitioner::Crc32),
            ("murmur2_random", Partitioner::Murmur2),
            ("fnv1a_random", Partitioner::Fnv1a),
        ] {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap_servers())
                .set("partitioner", name)
                .create()
                .expect("producer");
            for _ in 0..40 {
                let key = InstanceId::random().to_string();
                let delivered = producer
                    .send(
                        FutureRecord::to("events").key(&key).payload("x"),
                        Duration::from_secs(10),
                    )
                    .await
                    .expect("delivered");
                assert_eq!(
                    delivered.partition,
                    ours.partition(key.as_bytes(), partitions),
                    "{name}: key {key}"
                );
            }
            producer.flush(Duration::from_secs(5)).expect("flush");
        }
    }
}
