//! What only the embedded bus promises.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use twinlog_bus::conformance::{big_payload_round_trips, keys_by_partition, read_range};
use twinlog_bus::{partition_for, Bus, BusError, EmbeddedBus, EmbeddedConfig, OutRecord, Topic};

use crate::open;

fn record(topic: Topic, key: &[u8], payload: Vec<u8>, timestamp_ms: i64) -> OutRecord {
    OutRecord {
        topic,
        key: key.to_vec(),
        payload,
        timestamp_ms,
    }
}

/// Everything published is there after a drop and reopen, and offsets go
/// on from where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_reopen_and_offsets_continue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = keys_by_partition(4);
    let mut published = Vec::new();
    {
        let bus = open(dir.path(), 4);
        for round in 0..20usize {
            let records: Vec<OutRecord> = Topic::ALL
                .into_iter()
                .enumerate()
                .map(|(i, topic)| {
                    let size = if round % 7 == 0 { 10_000 + i } else { 10 + i };
                    let payload = vec![u8::try_from(round).expect("small"); size];
                    record(topic, &keys[(round + i) % 4], payload, round as i64)
                })
                .collect();
            let positions = bus.publish(records.clone()).await.expect("publish");
            published.extend(positions.into_iter().zip(records));
        }
    }
    let bus = open(dir.path(), 4);
    for (p, r) in &published {
        let got = bus
            .read(p.topic, p.partition, p.offset, 1, Duration::ZERO)
            .await
            .expect("read");
        assert_eq!(got.len(), 1, "{p:?} after reopen");
        assert_eq!((&got[0].key, &got[0].payload), (&r.key, &r.payload));
        assert_eq!(got[0].timestamp_ms, r.timestamp_ms);
    }
    let (last, _) = published
        .iter()
        .rfind(|(p, _)| p.topic == Topic::Status && p.partition == 1)
        .expect("some record on status/1");
    let next = bus
        .publish(vec![record(Topic::Status, &keys[1], b"next".to_vec(), 1)])
        .await
        .expect("publish after reopen");
    assert_eq!(next[0].offset, last.offset + 1);
    assert_eq!(
        bus.end_offset(Topic::Status, 1).await.expect("end"),
        last.offset + 2
    );
}

#[test]
fn reopen_with_another_partition_count_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(open(dir.path(), 4));
    let config = |partitions| EmbeddedConfig {
        partitions,
        ..EmbeddedConfig::default()
    };
    let err = EmbeddedBus::open(dir.path(), config(6))
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            BusError::PartitionCountMismatch {
                stored: 4,
                requested: 6,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("created with 4 partitions, not 6"),
        "{err}"
    );
    let err = EmbeddedBus::open(dir.path(), config(0))
        .err()
        .expect("refused");
    assert!(matches!(err, BusError::InvalidConfig { .. }), "{err}");
    let bus = EmbeddedBus::open(dir.path(), config(4)).expect("same count opens");
    assert_eq!(bus.partitions(), 4);
}

/// Concurrent single-record publishes share flushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_coalesces_flushes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bus = open(dir.path(), 4);
    let tasks = 8;
    let per_task = 200;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let bus = Arc::clone(&bus);
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let payload = format!("{task}/{i}").into_bytes();
                let key = format!("10654035224292{task}").into_bytes();
                bus.publish(vec![record(Topic::Inbound, &key, payload, 1)])
                    .await
                    .expect("publish");
            }
        }));
    }
    for h in handles {
        h.await.expect("publisher");
    }
    let stats = bus.stats();
    assert_eq!(stats.publishes, tasks * per_task);
    assert_eq!(stats.records, tasks * per_task);
    assert!(
        stats.flushes < stats.publishes,
        "group commit: {} flushes for {} publishes",
        stats.flushes,
        stats.publishes
    );
    eprintln!(
        "group commit: {} flushes for {} publishes",
        stats.flushes, stats.publishes
    );
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Big payloads are stored in small chunks, so sled writes no blob file
/// (blobs are not fsynced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_payloads_leave_no_sled_blobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let bus = open(dir.path(), 2);
        big_payload_round_trips(&*bus, 2 * 1024 * 1024).await;
        big_payload_round_trips(&*bus, twinlog_bus::PAYLOAD_BYTES_MAX).await;
        // Many medium records fill whole sled leaves with full-size values.
        for _ in 0..20 {
            let records = (0..50)
                .map(|i| record(Topic::Sync, b"1", vec![i; 4096], 1))
                .collect();
            bus.publish(records).await.expect("publish");
        }
    }
    let blobs = files_under(&dir.path().join("db").join("blobs"));
    assert!(blobs.is_empty(), "sled wrote blob files: {blobs:?}");
    let bus = open(dir.path(), 2);
    let partition = partition_for(b"1", 2);
    let end = bus.end_offset(Topic::Sync, partition).await.expect("end");
    assert!(end >= 1000);
}

/// Flooding the bus with publishes gives each either its positions or
/// `Overloaded`: never a panic, never unbounded memory; what was
/// acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_is_acknowledged_or_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bus = open(dir.path(), 2);
    let mut handles = Vec::new();
    for i in 0..3000u32 {
        let bus = Arc::clone(&bus);
        handles.push(tokio::spawn(async move {
            let payload = i.to_be_bytes().to_vec();
            bus.publish(vec![record(Topic::Status, b"7", payload, 1)])
                .await
        }));
    }
    let mut acked = 0u64;
    let mut refused = 0u64;
    for h in handles {
        match h.await.expect("task") {
            Ok(_) => acked += 1,
            Err(e) if e.is_overload() => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    eprintln!("flood: {acked} acknowledged, {refused} refused");
    let partition = partition_for(b"7", 2);
    assert_eq!(
        bus.end_offset(Topic::Status, partition).await.expect("end"),
        acked
    );
    assert_eq!(
        read_range(&*bus, Topic::Status, partition, 0, acked)
            .await
            .len() as u64,
        acked
    );
}
