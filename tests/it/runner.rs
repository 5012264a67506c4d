//! The engine runner over a bus: every published event is folded exactly
//! once, offsets survive a restart, the audit topic mirrors each shard, and
//! the embedded and Kafka buses give the same outcomes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use twinlog::runner::{Shard, StepReport};
use twinlog::AppendReport;
use twinlog_bus::conformance::broker;
use twinlog_bus::{Bus, EmbeddedBus, EmbeddedConfig, KafkaBus, OutRecord, Topic};
use twinlog_normalize::{normalize, IngestContext};
use twinlog_tests::fixtures;

const INGEST_MS: i64 = 1_763_400_000_000;

/// Every fixture, normalised, as bus records; ingest times step by 1 ms so
/// the merge has an order to follow.
fn fixture_records() -> Vec<OutRecord> {
    let mut out = Vec::new();
    for (i, (name, body)) in fixtures().iter().enumerate() {
        let ingest_time_ms = INGEST_MS + i64::try_from(i).expect("few fixtures");
        let events = normalize(body, &IngestContext { ingest_time_ms })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.extend(events.iter().map(twinlog_ingest::out_record));
    }
    out
}

async fn publish_all<B: Bus>(bus: &B, records: &[OutRecord]) {
    for chunk in records.chunks(500) {
        bus.publish(chunk.to_vec()).await.expect("publish");
    }
}

/// Steps every shard until none has anything left; sums their reports.
async fn drain<B: Bus>(bus: &B, shards: &mut [Shard]) -> AppendReport {
    let mut total = AppendReport::default();
    loop {
        let mut idle = true;
        for shard in shards.iter_mut() {
            let StepReport { report, .. } = shard
                .step(bus, Duration::from_millis(5), None)
                .await
                .expect("step");
            if report.inputs > 0 {
                idle = false;
            }
            total.inputs += report.inputs;
            total.appended += report.appended;
            total.duplicates += report.duplicates;
            total.rejected += report.rejected;
            total.idle += report.idle;
            total.records += report.records;
        }
        let mut lag = 0;
        for shard in shards.iter() {
            lag += shard.lag(bus).await.expect("lag");
        }
        if idle && lag == 0 {
            return total;
        }
    }
}

fn open_shards(dir: &Path, partitions: u32) -> Vec<Shard> {
    (0..partitions)
        .map(|p| Shard::open(&dir.join(p.to_string()), p, true).expect("open shard"))
        .collect()
}

/// The audit topic's partition of a shard holds exactly the shard's
/// records, in order, at offset = seq.
async fn assert_audit_topic_mirrors<B: Bus>(bus: &B, shard: &Shard) {
    let size = shard.twinlog().log().size();
    let end = bus
        .end_offset(Topic::Audit, shard.partition())
        .await
        .expect("end offset");
    assert_eq!(end, size, "shard {}: audit topic length", shard.partition());
    let mut offset = 0;
    while offset < size {
        let records = bus
            .read(
                Topic::Audit,
                shard.partition(),
                offset,
                1024,
                Duration::from_secs(5),
            )
            .await
            .expect("read audit topic");
        assert!(!records.is_empty(), "audit topic ends early at {offset}");
        for r in records {
            let leaf = shard
                .twinlog()
                .log()
                .record(r.offset)
                .expect("read record")
                .expect("record present");
            assert_eq!(r.payload, leaf, "audit record {} differs", r.offset);
            offset = r.offset + 1;
        }
    }
}

/// The outcome counts of folding the records in order with no bus, as the
/// reference the runner must reproduce.
fn direct_fold(records: &[OutRecord]) -> AppendReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut t = twinlog::Twinlog::init(dir.path()).expect("init");
    let inputs: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let event = prost::Message::decode(r.payload.as_slice()).expect("decode");
            let source = twinlog_proto::v1::Source {
                topic: r.topic.suffix().into(),
                partition: 0,
                offset: i64::try_from(i).expect("offset"),
            };
            (event, source)
        })
        .collect();
    t.append(&inputs).expect("fold")
}

async fn exactly_once_over<B: Bus>(bus: Arc<B>, dir: &Path) {
    let partitions = bus.partitions();
    let records = fixture_records();
    assert!(records.len() > 50, "{} records", records.len());
    publish_all(bus.as_ref(), &records).await;

    let mut shards = open_shards(dir, partitions);
    let first = drain(bus.as_ref(), &mut shards).await;
    assert_eq!(
        first.inputs,
        records.len() as u64,
        "every record folded once"
    );
    assert_eq!(
        first.inputs,
        first.appended + first.duplicates + first.rejected + first.idle
    );
    if partitions == 1 {
        // One shard sees everything: the same outcomes as a direct fold.
        let direct = direct_fold(&records);
        assert_eq!(
            (
                first.appended,
                first.duplicates,
                first.rejected,
                first.records
            ),
            (
                direct.appended,
                direct.duplicates,
                direct.rejected,
                direct.records
            )
        );
    }
    let sizes: Vec<u64> = shards.iter().map(|s| s.twinlog().log().size()).collect();
    assert_eq!(sizes.iter().sum::<u64>(), first.records);
    for shard in &shards {
        assert_audit_topic_mirrors(bus.as_ref(), shard).await;
        shard
            .twinlog()
            .log()
            .verify(&mut |_, _| {})
            .expect("shard verifies");
    }

    // Restart: the shards resume from their stored offsets and fold nothing.
    let offsets: Vec<[u64; 5]> = shards.iter().map(Shard::offsets).collect();
    drop(shards);
    let mut shards = open_shards(dir, partitions);
    assert_eq!(
        shards.iter().map(Shard::offsets).collect::<Vec<_>>(),
        offsets
    );
    let again = drain(bus.as_ref(), &mut shards).await;
    assert_eq!(again.inputs, 0, "nothing folded twice after a restart");

    // Meta redelivers everything: all duplicates, no new record.
    publish_all(bus.as_ref(), &records).await;
    let redelivered = drain(bus.as_ref(), &mut shards).await;
    assert_eq!(redelivered.inputs, records.len() as u64);
    assert_eq!(redelivered.appended, 0, "{redelivered:?}");
    assert_eq!(
        shards
            .iter()
            .map(|s| s.twinlog().log().size())
            .collect::<Vec<_>>(),
        sizes,
        "a redelivery appends nothing"
    );
    for shard in &shards {
        assert_audit_topic_mirrors(bus.as_ref(), shard).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_runner_folds_every_record_exactly_once() {
    for partitions in [1, 3] {
        let dir = tempfile::tempdir().expect("temp dir");
        let bus = EmbeddedBus::open(
            dir.path().join("bus"),
            EmbeddedConfig {
                partitions,
                ..EmbeddedConfig::default()
            },
        )
        .expect("open bus");
        exactly_once_over(Arc::new(bus), &dir.path().join("shards")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_runner_folds_every_record_exactly_once() {
    let bootstrap = broker::bootstrap();
    let prefix = broker::prefix();
    KafkaBus::create_topics(bootstrap, &prefix, 3)
        .await
        .expect("create topics");
    let bus = KafkaBus::connect(bootstrap, &prefix)
        .await
        .expect("connect");
    let dir = tempfile::tempdir().expect("temp dir");
    exactly_once_over(Arc::new(bus), &dir.path().join("shards")).await;
}

/// Two copies of one initial shard, fed the same bus, end with the same
/// root: the merge and the fold are deterministic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_shard_fold_a_bus_to_the_same_root() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bus = EmbeddedBus::open(
        dir.path().join("bus"),
        EmbeddedConfig {
            partitions: 1,
            ..EmbeddedConfig::default()
        },
    )
    .expect("open bus");
    publish_all(&bus, &fixture_records()).await;
    let a = dir.path().join("a");
    drop(Shard::open(&a, 0, false).expect("init shard"));
    let b = dir.path().join("b");
    twinlog_tests::copy_dir(&a, &b).expect("copy the shard");
    let mut roots = Vec::new();
    for d in [&a, &b] {
        let mut shards = vec![Shard::open(d, 0, false).expect("open")];
        drain(&bus, &mut shards).await;
        let log = shards[0].twinlog().log();
        roots.push((log.size(), log.root(log.size()).expect("root")));
    }
    assert!(roots[0].0 > 50);
    assert_eq!(roots[0], roots[1]);
}
