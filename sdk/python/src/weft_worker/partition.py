"""The partition of a keyed record, as Weft's producers choose it.

Weft's producers use librdkafka's ``murmur2_random`` partitioner, which is the
Java client's default: ``(murmur2(key) & 0x7fffffff) % partitions`` for a
non-empty key. Records about one instance are keyed by its id, so they all
land on one partition, and the orchestrator that owns that partition sees
them in order. A producer of events must use the same partitioner
(``"partitioner": "murmur2_random"`` in confluent-kafka, or the Java client's
default); this module computes it, for clients that cannot configure it."""

from __future__ import annotations

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed ``0x9747b28c``) as an unsigned 32-bit value, as
    ``org.apache.kafka.common.utils.Utils.murmur2`` (which returns it signed)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest >= 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a record with the non-empty ``key`` among ``partitions``."""
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
