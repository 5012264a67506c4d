//! Kafka's default partitioner: `toPositive(murmur2(key)) % partitions`,
//! with the murmur2 variant of Kafka's `Utils.murmur2` (seed `0x9747b28c`).
//! librdkafka's `partitioner=murmur2_random` computes the same for non-null
//! keys, so the embedded bus and Kafka agree on every key's partition.

/// Kafka's `Utils.murmur2` of `data`, as the same 32 bits (Java's `int`
/// reinterpreted as `u32`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java's `int length`: a Java array never exceeds `i32::MAX` bytes, so
    // for every key Kafka can hash the truncation is exact. Keys are at most
    // `KEY_BYTES_MAX` bytes anyway.
    let length = data.len() as u32;
    let mut h = SEED ^ length;

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
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
    h ^= h >> 15;
    h
}

/// The partition of a record keyed `key` in a topic of `partitions`
/// partitions: `(murmur2(key) & 0x7fff_ffff) % partitions`, exactly Kafka's
/// Java default partitioner for a non-null key.
///
/// Panics if `partitions` is 0: a bus always has at least one partition.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a bus has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The first key of the form `shard-{partition}-{n}` (n = 0, 1, ...) that
/// [`partition_for`] sends to `partition`: the key of records that must
/// reach one partition whatever they are about (audit records, clock
/// ticks). Deterministic, so every process finds the same key.
///
/// Panics if `partition >= partitions`.
pub fn key_for_partition(partition: u32, partitions: u32) -> Vec<u8> {
    assert!(
        partition < partitions,
        "partition {partition} of {partitions}"
    );
    // murmur2 spreads keys evenly, so a partition is hit within a few times
    // `partitions` tries; the loop ends because n grows without bound.
    (0u64..)
        .map(|n| format!("shard-{partition}-{n}").into_bytes())
        .find(|key| partition_for(key, partitions) == partition)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_for_partition_reaches_its_partition() {
        for partitions in [1, 2, 3, 12, 64, 1024] {
            for partition in 0..partitions {
                let key = key_for_partition(partition, partitions);
                assert_eq!(partition_for(&key, partitions), partition);
            }
        }
        assert_eq!(key_for_partition(0, 1), b"shard-0-0");
    }

    /// `(key, Utils.murmur2(key) as Java int, partition of 12, partition of
    /// 64)`. Produced by Kafka 4.4.0's own classes: a single-file Java
    /// program (`tests/vectors/Murmur.java`) calling
    /// `org.apache.kafka.common.utils.Utils.murmur2` on the
    /// UTF-8 bytes of each key and `Utils.toPositive(h) % n`, run with
    /// `java -cp "$HOME/.cache/twinlog/kafka-4.4.0/*" Murmur.java` (OpenJDK
    /// 17).
    const KAFKA_VECTORS: &[(&str, i32, u32, u32)] = &[
        ("", 275646681, 9, 25),
        ("a", -1563381124, 4, 60),
        ("ab", 316155434, 2, 42),
        ("abc", 479470107, 3, 27),
        ("abcd", -1323649548, 8, 52),
        ("abcde", 461995741, 1, 29),
        ("1", -1993445489, 3, 15),
        ("106540352242922", -727951304, 0, 56),
        ("123456789012345", 1369888448, 8, 0),
        ("987654321098765", -770032756, 4, 12),
        ("twinlog", 613886458, 10, 58),
        ("phone_number_id", -344515862, 6, 42),
    ];

    #[test]
    fn murmur2_matches_kafka_utils_murmur2() {
        for &(key, java, p12, p64) in KAFKA_VECTORS {
            assert_eq!(
                murmur2(key.as_bytes()),
                u32::from_ne_bytes(java.to_ne_bytes()),
                "murmur2({key:?})"
            );
            assert_eq!(partition_for(key.as_bytes(), 12), p12, "{key:?} of 12");
            assert_eq!(partition_for(key.as_bytes(), 64), p64, "{key:?} of 64");
            assert_eq!(partition_for(key.as_bytes(), 1), 0);
        }
    }
}
