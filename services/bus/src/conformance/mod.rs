//! The conformance suite: what every [`Bus`] must do, written once. Enabled
//! by the `conformance` feature; the embedded bus's tests run it, and the
//! Kafka bus's tests will run the same functions.
//!
//! Each check panics with a message on failure. The checks work on a bus
//! that already holds records (they measure from [`Bus::end_offset`]), but
//! assume that nothing else publishes while they run, and that the bus has
//! at least 2 partitions. [`run_all`] runs them all in turn;
//! [`fresh_bus_is_empty`] is for a bus just created.
//!
//! The checks need a multi-threaded tokio runtime
//! (`#[tokio::test(flavor = "multi_thread")]`).

pub mod broker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    partition_for, Bus, BusError, BusRecord, OutRecord, Position, Topic, KEY_BYTES_MAX,
    PAYLOAD_BYTES_MAX, PUBLISH_BYTES_MAX, PUBLISH_RECORDS_MAX, READ_RECORDS_MAX,
};

/// A wait long enough that a check never times out on a healthy bus.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs every check except [`fresh_bus_is_empty`].
pub async fn run_all<B: Bus>(bus: Arc<B>) {
    round_trip(&*bus).await;
    offsets_are_contiguous(&*bus).await;
    same_key_same_partition_in_every_topic(&*bus).await;
    read_wakes_on_publish(Arc::clone(&bus)).await;
    read_past_end_waits_then_returns_empty(&*bus).await;
    concurrent_publishers_lose_and_duplicate_nothing(Arc::clone(&bus), 8, 500).await;
    big_payload_round_trips(&*bus, 2 * 1024 * 1024).await;
    limits_are_errors(&*bus).await;
}

/// Every topic-partition of a new bus ends at 0.
pub async fn fresh_bus_is_empty<B: Bus>(bus: &B) {
    for topic in Topic::ALL {
        for partition in 0..bus.partitions() {
            let end = bus.end_offset(topic, partition).await.expect("end_offset");
            assert_eq!(end, 0, "fresh bus: end of {topic} partition {partition}");
        }
    }
}

/// A key per partition index `0..n`: `key_for_partition(p)` lands on `p`.
pub fn keys_by_partition(partitions: u32) -> Vec<Vec<u8>> {
    let mut keys: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut n: u64 = 100_000_000_000_000;
    while keys.len() < partitions as usize {
        let key = n.to_string().into_bytes();
        keys.entry(partition_for(&key, partitions)).or_insert(key);
        n += 1;
    }
    keys.into_values().collect()
}

fn record(topic: Topic, key: &[u8], payload: Vec<u8>, timestamp_ms: i64) -> OutRecord {
    OutRecord {
        topic,
        key: key.to_vec(),
        payload,
        timestamp_ms,
    }
}

/// Reads `from..to` of a topic-partition, whatever the per-read caps.
pub async fn read_range<B: Bus>(
    bus: &B,
    topic: Topic,
    partition: u32,
    from: u64,
    to: u64,
) -> Vec<BusRecord> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < to {
        let got = bus
            .read(topic, partition, offset, READ_RECORDS_MAX, PATIENCE)
            .await
            .expect("read");
        assert!(
            !got.is_empty(),
            "read of {topic} partition {partition} at {offset} (end {to}) returned nothing"
        );
        for r in got {
            assert_eq!(
                (r.topic, r.partition, r.offset),
                (topic, partition, offset),
                "read returned a record out of place"
            );
            offset += 1;
            out.push(r);
        }
    }
    out
}

async fn ends<B: Bus>(bus: &B) -> BTreeMap<(Topic, u32), u64> {
    let mut ends = BTreeMap::new();
    for topic in Topic::ALL {
        for partition in 0..bus.partitions() {
            let end = bus.end_offset(topic, partition).await.expect("end_offset");
            ends.insert((topic, partition), end);
        }
    }
    ends
}

/// Published records read back with key, payload (empty, binary, inline
/// and chunk-sized) and timestamp intact, at the positions `publish`
/// returned, on the partition of their key.
pub async fn round_trip<B: Bus>(bus: &B) {
    let keys = keys_by_partition(bus.partitions());
    let payloads: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"{\"object\":\"whatsapp_business_account\"}".to_vec(),
        (0..=255u8).collect(),
        vec![0xab; 4096],
        vec![0xcd; 4097],
        (0..20_000u32).map(|i| (i % 251) as u8).collect(),
    ];
    let mut records = Vec::new();
    for (i, topic) in Topic::ALL.into_iter().enumerate() {
        for (j, payload) in payloads.iter().enumerate() {
            let key = &keys[(i + j) % keys.len()];
            let ts = 1_700_000_000_000 + (i * 100 + j) as i64;
            records.push(record(topic, key, payload.clone(), ts));
        }
    }
    let positions = bus.publish(records.clone()).await.expect("publish");
    assert_eq!(positions.len(), records.len(), "one position per record");
    for (r, p) in records.iter().zip(&positions) {
        assert_eq!(p.topic, r.topic);
        assert_eq!(p.partition, partition_for(&r.key, bus.partitions()));
        let got = bus
            .read(p.topic, p.partition, p.offset, 1, PATIENCE)
            .await
            .expect("read");
        assert_eq!(got.len(), 1, "read one record at {p:?}");
        let got = &got[0];
        assert_eq!(got.position(), *p);
        assert_eq!(got.key, r.key, "key at {p:?}");
        assert_eq!(got.payload, r.payload, "payload at {p:?}");
        assert_eq!(got.timestamp_ms, r.timestamp_ms, "timestamp at {p:?}");
    }
}

/// Within a topic-partition, offsets follow each other from the end before
/// the publish, across publishes; `end_offset` moves by the number
/// published; `read` honours `max`.
pub async fn offsets_are_contiguous<B: Bus>(bus: &B) {
    let key = keys_by_partition(bus.partitions()).remove(1);
    let partition = partition_for(&key, bus.partitions());
    let topic = Topic::Status;
    let start = bus.end_offset(topic, partition).await.expect("end_offset");
    let mut expected = start;
    for batch in [1usize, 3, 10, 1, 7] {
        let records: Vec<OutRecord> = (0..batch)
            .map(|i| record(topic, &key, format!("{expected}+{i}").into_bytes(), 1))
            .collect();
        let positions = bus.publish(records).await.expect("publish");
        for p in positions {
            assert_eq!(
                p,
                Position {
                    topic,
                    partition,
                    offset: expected
                },
                "contiguous offsets"
            );
            expected += 1;
        }
    }
    assert_eq!(
        bus.end_offset(topic, partition).await.expect("end_offset"),
        expected
    );
    let got = bus
        .read(topic, partition, start, 5, PATIENCE)
        .await
        .expect("read");
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        (start..start + 5).collect::<Vec<_>>(),
        "read max 5"
    );
    let all = read_range(bus, topic, partition, start, expected).await;
    assert_eq!(all.len() as u64, expected - start);
}

/// One key's records land on the same partition index in every topic,
/// and it is `partition_for(key)`.
pub async fn same_key_same_partition_in_every_topic<B: Bus>(bus: &B) {
    let keys: Vec<Vec<u8>> = ["106540352242922", "123456789012345", "1", "abc", "twinlog"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .chain(keys_by_partition(bus.partitions()))
        .collect();
    let records: Vec<OutRecord> = keys
        .iter()
        .flat_map(|key| {
            Topic::ALL
                .into_iter()
                .map(move |topic| record(topic, key, key.clone(), 2))
        })
        .collect();
    let positions = bus.publish(records).await.expect("publish");
    for (key, row) in keys.iter().zip(positions.chunks(Topic::ALL.len())) {
        let expected = partition_for(key, bus.partitions());
        for (topic, p) in Topic::ALL.into_iter().zip(row) {
            assert_eq!(p.topic, topic);
            assert_eq!(
                p.partition,
                expected,
                "key {:?} in {topic}",
                String::from_utf8_lossy(key)
            );
        }
    }
}

/// A `read` waiting at the end returns as soon as another task publishes,
/// long before its wait is over.
pub async fn read_wakes_on_publish<B: Bus>(bus: Arc<B>) {
    let key = keys_by_partition(bus.partitions()).remove(0);
    let partition = partition_for(&key, bus.partitions());
    let topic = Topic::AppEcho;
    let end = bus.end_offset(topic, partition).await.expect("end_offset");
    let reader = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            let started = Instant::now();
            let got = bus
                .read(topic, partition, end, 10, PATIENCE)
                .await
                .expect("read");
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let published_at = Instant::now();
    bus.publish(vec![record(topic, &key, b"wake".to_vec(), 3)])
        .await
        .expect("publish");
    let (got, waited) = reader.await.expect("reader task");
    assert_eq!(got.len(), 1, "the reader got the record");
    assert_eq!(got[0].payload, b"wake");
    assert_eq!(got[0].offset, end);
    assert!(
        waited < Duration::from_secs(5) && published_at.elapsed() < Duration::from_secs(5),
        "the reader woke on publish (waited {waited:?})"
    );
}

/// At or past the end, `read` waits for `wait` and returns nothing; with no
/// wait it returns nothing at once.
pub async fn read_past_end_waits_then_returns_empty<B: Bus>(bus: &B) {
    let topic = Topic::Sync;
    let partition = bus.partitions() - 1;
    let end = bus.end_offset(topic, partition).await.expect("end_offset");
    for offset in [end, end + 10] {
        let started = Instant::now();
        let got = bus
            .read(topic, partition, offset, 10, Duration::from_millis(100))
            .await
            .expect("read");
        let waited = started.elapsed();
        assert!(got.is_empty(), "nothing at {offset}");
        assert!(
            waited >= Duration::from_millis(90),
            "read waited ({waited:?})"
        );
        assert!(waited < Duration::from_secs(5), "read gave up ({waited:?})");
        let got = bus
            .read(topic, partition, offset, 10, Duration::ZERO)
            .await
            .expect("read");
        assert!(got.is_empty());
    }
}

/// `tasks` publishers, each publishing `per_task` numbered records in
/// batches of 1 to 4 over all topics and two keys, at once: every record is
/// on the bus exactly once, where `publish` said, each publisher's records
/// in its order.
pub async fn concurrent_publishers_lose_and_duplicate_nothing<B: Bus>(
    bus: Arc<B>,
    tasks: usize,
    per_task: usize,
) {
    let before = ends(&*bus).await;
    let keys = keys_by_partition(bus.partitions());
    let mut handles = Vec::new();
    for task in 0..tasks {
        let bus = Arc::clone(&bus);
        let keys = [
            keys[task % keys.len()].clone(),
            keys[(task + 1) % keys.len()].clone(),
        ];
        handles.push(tokio::spawn(async move {
            let mut acked: Vec<(Position, Vec<u8>)> = Vec::new();
            let mut n = 0;
            while n < per_task {
                let batch = (1 + n % 4).min(per_task - n);
                let records: Vec<OutRecord> = (n..n + batch)
                    .map(|i| {
                        let topic = Topic::ALL[i % Topic::ALL.len()];
                        let payload = format!("task {task} record {i}").into_bytes();
                        record(topic, &keys[i % 2], payload, i as i64)
                    })
                    .collect();
                let payloads: Vec<Vec<u8>> = records.iter().map(|r| r.payload.clone()).collect();
                let positions = loop {
                    match bus.publish(records.clone()).await {
                        Ok(p) => break p,
                        // A full queue is allowed; nothing was written.
                        Err(e) if e.is_overload() => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        Err(e) => panic!("publish failed: {e}"),
                    }
                };
                acked.extend(positions.into_iter().zip(payloads));
                n += batch;
            }
            acked
        }));
    }
    let mut acked: BTreeMap<Position, Vec<u8>> = BTreeMap::new();
    for h in handles {
        for (p, payload) in h.await.expect("publisher task") {
            assert!(
                acked.insert(p, payload).is_none(),
                "position {p:?} given twice"
            );
        }
    }
    assert_eq!(acked.len(), tasks * per_task);
    let after = ends(&*bus).await;
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut last_of_task: BTreeMap<(Topic, u32, usize), usize> = BTreeMap::new();
    for ((topic, partition), end) in &after {
        let start = before[&(*topic, *partition)];
        for r in read_range(&*bus, *topic, *partition, start, *end).await {
            let payload = acked
                .get(&r.position())
                .unwrap_or_else(|| panic!("record at {:?} was never acknowledged", r.position()));
            assert_eq!(&r.payload, payload, "payload at {:?}", r.position());
            assert!(seen.insert(r.payload.clone()), "duplicate record");
            let text = String::from_utf8(r.payload).expect("utf-8");
            let mut words = text.split(' ');
            let task: usize = words.nth(1).and_then(|w| w.parse().ok()).expect("task");
            let i: usize = words.nth(1).and_then(|w| w.parse().ok()).expect("i");
            if let Some(prev) = last_of_task.insert((*topic, *partition, task), i) {
                assert!(prev < i, "task {task}'s records out of order");
            }
        }
    }
    assert_eq!(seen.len(), tasks * per_task, "every record exactly once");
}

/// A payload of `bytes` bytes round-trips intact.
pub async fn big_payload_round_trips<B: Bus>(bus: &B, bytes: usize) {
    let payload: Vec<u8> = (0..bytes)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let key = keys_by_partition(bus.partitions()).remove(0);
    let positions = bus
        .publish(vec![
            record(Topic::Sync, &key, payload.clone(), 4),
            record(Topic::Sync, &key, b"after".to_vec(), 5),
        ])
        .await
        .expect("publish");
    let got = read_range(
        bus,
        Topic::Sync,
        positions[0].partition,
        positions[0].offset,
        positions[1].offset + 1,
    )
    .await;
    assert_eq!(got.len(), 2);
    assert!(got[0].payload == payload, "big payload intact");
    assert_eq!(got[0].timestamp_ms, 4);
    assert_eq!(got[1].payload, b"after");
}

/// Every limit is an error, not a panic, and a refused publish writes
/// nothing.
pub async fn limits_are_errors<B: Bus>(bus: &B) {
    let before = ends(bus).await;
    let key = b"106540352242922".to_vec();
    let small = record(Topic::Inbound, &key, b"x".to_vec(), 6);

    let too_many = vec![small.clone(); PUBLISH_RECORDS_MAX + 1];
    let e = bus.publish(too_many).await.expect_err("too many records");
    assert!(matches!(e, BusError::TooManyRecords { .. }), "{e}");

    let mut big = vec![small.clone(), small.clone()];
    big[1].payload = vec![0; PAYLOAD_BYTES_MAX + 1];
    let e = bus.publish(big).await.expect_err("payload too large");
    assert!(
        matches!(e, BusError::PayloadTooLarge { index: 1, .. }),
        "{e}"
    );

    let n = PUBLISH_BYTES_MAX / PAYLOAD_BYTES_MAX + 1;
    let heavy = vec![record(Topic::Inbound, &key, vec![0; PAYLOAD_BYTES_MAX], 6); n];
    let e = bus.publish(heavy).await.expect_err("publish too large");
    assert!(matches!(e, BusError::PublishTooLarge { .. }), "{e}");

    let mut long_key = small.clone();
    long_key.key = vec![b'1'; KEY_BYTES_MAX + 1];
    let e = bus
        .publish(vec![long_key])
        .await
        .expect_err("key too large");
    assert!(matches!(e, BusError::KeyTooLarge { .. }), "{e}");

    let mut negative = small.clone();
    negative.timestamp_ms = -1;
    let e = bus
        .publish(vec![negative])
        .await
        .expect_err("negative time");
    assert!(matches!(e, BusError::NegativeTimestamp { .. }), "{e}");
    assert!(e.is_limit());

    let partitions = bus.partitions();
    let e = bus
        .read(Topic::Inbound, partitions, 0, 1, Duration::ZERO)
        .await
        .expect_err("unknown partition");
    assert!(matches!(e, BusError::UnknownPartition { .. }), "{e}");
    let e = bus
        .end_offset(Topic::Inbound, partitions)
        .await
        .expect_err("unknown partition");
    assert!(matches!(e, BusError::UnknownPartition { .. }), "{e}");

    assert_eq!(ends(bus).await, before, "a refused publish wrote nothing");

    assert!(bus.publish(Vec::new()).await.expect("empty").is_empty());
    let got = bus
        .read(Topic::Inbound, 0, 0, 0, Duration::ZERO)
        .await
        .expect("read of max 0");
    assert!(got.is_empty());

    // A huge `max` is clamped.
    let partition = partition_for(&key, partitions);
    let start = bus
        .end_offset(Topic::Inbound, partition)
        .await
        .expect("end_offset");
    let count = READ_RECORDS_MAX + 5;
    let mut left = count;
    while left > 0 {
        let n = left.min(PUBLISH_RECORDS_MAX);
        bus.publish(vec![small.clone(); n]).await.expect("publish");
        left -= n;
    }
    let got = bus
        .read(Topic::Inbound, partition, start, usize::MAX, PATIENCE)
        .await
        .expect("read");
    assert!(!got.is_empty() && got.len() <= READ_RECORDS_MAX, "clamped");
}
