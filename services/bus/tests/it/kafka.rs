//! The Kafka bus against a real Apache Kafka broker: the whole conformance
//! suite, the topics check, partition agreement with the embedded bus, and
//! a read-back with Kafka's own Java client.
//!
//! The broker comes from [`twinlog_bus::conformance::broker`]: under CI
//! without `KAFKA_BOOTSTRAP` every test panics.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use twinlog_bus::conformance as c;
use twinlog_bus::conformance::broker::{bootstrap, prefix, repo_root};
use twinlog_bus::keys::keys_topic_name;
use twinlog_bus::{partition_for, Bus, BusError, KafkaBus, KeysTopic, OutRecord, Topic};

use crate::open;

const PARTITIONS: u32 = 4;

async fn fresh() -> Arc<KafkaBus> {
    let bootstrap = bootstrap();
    let prefix = prefix();
    KafkaBus::create_topics(bootstrap, &prefix, PARTITIONS)
        .await
        .expect("create topics");
    let bus = KafkaBus::connect(bootstrap, &prefix)
        .await
        .expect("connect");
    assert_eq!(bus.partitions(), PARTITIONS);
    Arc::new(bus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_bus_is_empty() {
    c::fresh_bus_is_empty(&*fresh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip() {
    c::round_trip(&*fresh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_are_contiguous() {
    c::offsets_are_contiguous(&*fresh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_same_partition_in_every_topic() {
    c::same_key_same_partition_in_every_topic(&*fresh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_wakes_on_publish() {
    c::read_wakes_on_publish(fresh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_past_end_waits_then_returns_empty() {
    c::read_past_end_waits_then_returns_empty(&*fresh().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_lose_and_duplicate_nothing() {
    c::concurrent_publishers_lose_and_duplicate_nothing(fresh().await, 8, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_payload_round_trips() {
    c::big_payload_round_trips(&*fresh().await, 2 * 1024 * 1024).await;
}

/// A payload of exactly the limit goes through Kafka's message size limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payload_at_the_limit_round_trips() {
    c::big_payload_round_trips(&*fresh().await, twinlog_bus::PAYLOAD_BYTES_MAX).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_are_errors() {
    c::limits_are_errors(&*fresh().await).await;
}

/// All checks on one bus, twice, as on a shared cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_one_bus() {
    let bus = fresh().await;
    c::fresh_bus_is_empty(&*bus).await;
    c::run_all(Arc::clone(&bus)).await;
    c::run_all(Arc::clone(&bus)).await;
    let bus = Arc::into_inner(bus).expect("no other reference");
    assert!(bus.close(Duration::from_secs(30)).await, "close in time");
}

/// Creates topics `prefix` + suffix with the given partition counts.
async fn create_raw(prefix: &str, topics: &[(Topic, i32)]) {
    let named: Vec<(String, i32)> = topics.iter().map(|(t, n)| (t.name(prefix), *n)).collect();
    create_named(&named, "delete").await;
}

/// Creates the keys topic under `prefix` with `partitions` partitions and
/// the cleanup policy `policy`.
async fn create_keys_raw(prefix: &str, partitions: i32, policy: &str) {
    create_named(&[(keys_topic_name(prefix), partitions)], policy).await;
}

/// Creates topics by name, with their partition counts and a cleanup policy.
async fn create_named(topics: &[(String, i32)], policy: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let names: Vec<String> = topics.iter().map(|(name, _)| name.clone()).collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, n)| {
            NewTopic::new(name, *n, TopicReplication::Fixed(1)).set("cleanup.policy", policy)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin.create_topics(&new, &options).await.expect("create") {
        r.expect("topic created");
    }
    // Drop the admin client off the runtime's worker threads.
    std::thread::spawn(move || drop(admin));
    // Wait until the broker's metadata lists them all.
    let bootstrap = bootstrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let meta: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("metadata client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metadata = meta
                .fetch_metadata(None, Duration::from_secs(10))
                .expect("metadata");
            let listed = names.iter().all(|name| {
                metadata.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            });
            if listed {
                break;
            }
            assert!(Instant::now() < deadline, "topics {names:?} never listed");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::spawn(move || drop(meta));
    })
    .await
    .expect("metadata wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_clearly_when_topics_are_missing() {
    let prefix = prefix();
    let e = KafkaBus::connect(bootstrap(), &prefix)
        .await
        .err()
        .expect("no topics: connect fails");
    assert!(
        matches!(&e, BusError::TopicsMissing { missing, .. } if missing.len() == 7),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("twinlog topics create --partitions N"),
        "{text}"
    );
    assert!(text.contains(&Topic::Sync.name(&prefix)), "{text}");

    // Five of six, and no keys topic.
    let five: Vec<(Topic, i32)> = Topic::ALL[..5].iter().map(|t| (*t, 4)).collect();
    create_raw(&prefix, &five).await;
    let e = KafkaBus::connect(bootstrap(), &prefix)
        .await
        .err()
        .expect("one topic missing: connect fails");
    match &e {
        BusError::TopicsMissing { missing, .. } => assert_eq!(
            missing,
            &[Topic::Audit.name(&prefix), keys_topic_name(&prefix)],
            "{e}"
        ),
        other => panic!("expected TopicsMissing, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_topic_keeps_the_last_value_of_each_key_per_shard() {
    let bus = fresh().await;
    let keys = KeysTopic::connect(bootstrap(), bus.prefix())
        .await
        .expect("connect the keys topic");
    assert_eq!(keys.partitions(), PARTITIONS);
    let entry =
        |k: &str, v: Option<&str>| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
    keys.publish(
        1,
        vec![
            entry("1/ratchet", Some("r1")),
            entry("1/key/aa", Some("k-aa")),
            entry("1/key/bb", Some("k-bb")),
        ],
    )
    .await
    .expect("publish");
    keys.publish(
        1,
        vec![
            entry("1/ratchet", Some("r2")),
            entry("1/forgotten/aa", Some("f-aa")),
            entry("1/key/aa", None),
        ],
    )
    .await
    .expect("publish");
    keys.publish(2, vec![entry("2/ratchet", Some("other shard"))])
        .await
        .expect("publish");
    let live = keys.read(1).await.expect("read");
    let live: Vec<(String, String)> = live
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    assert_eq!(
        live,
        [
            ("1/forgotten/aa".to_owned(), "f-aa".to_owned()),
            ("1/key/bb".to_owned(), "k-bb".to_owned()),
            ("1/ratchet".to_owned(), "r2".to_owned()),
        ]
    );
    assert!(keys.read(0).await.expect("read").is_empty());
    assert!(keys.publish(PARTITIONS, Vec::new()).await.is_err());
    assert!(keys.close(Duration::from_secs(30)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_topic_that_is_not_compacted_is_refused() {
    let prefix = prefix();
    let all: Vec<(Topic, i32)> = Topic::ALL.iter().map(|t| (*t, 2)).collect();
    create_raw(&prefix, &all).await;
    create_keys_raw(&prefix, 2, "delete").await;
    // The bus itself only checks that it exists with the same count.
    KafkaBus::connect(bootstrap(), &prefix)
        .await
        .expect("the bus connects");
    let e = KeysTopic::connect(bootstrap(), &prefix)
        .await
        .expect_err("a keys topic with cleanup.policy=delete");
    let text = e.to_string();
    assert!(
        text.contains("cleanup.policy=delete") && text.contains("forget"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_fails_clearly_when_partition_counts_differ() {
    let prefix = prefix();
    let mut topics: Vec<(Topic, i32)> = Topic::ALL.iter().map(|t| (*t, 4)).collect();
    topics[2].1 = 2;
    create_raw(&prefix, &topics).await;
    create_keys_raw(&prefix, 4, "compact").await;
    let e = KafkaBus::connect(bootstrap(), &prefix)
        .await
        .err()
        .expect("counts differ: connect fails");
    assert!(matches!(e, BusError::TopicPartitionsDiffer { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("twinlog topics create --partitions N"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: 2", Topic::AppEcho.name(&prefix))),
        "{text}"
    );
    // create_topics on the same prefix leaves the topics and fails alike.
    let e = KafkaBus::create_topics(bootstrap(), &prefix, 4)
        .await
        .expect_err("create_topics over mismatched topics");
    assert!(matches!(e, BusError::TopicPartitionsDiffer { .. }), "{e}");
}

fn records_for(keys: &[Vec<u8>]) -> Vec<OutRecord> {
    keys.iter()
        .enumerate()
        .map(|(i, key)| OutRecord {
            topic: Topic::ALL[i % Topic::ALL.len()],
            key: key.clone(),
            payload: format!("payload {i}").into_bytes(),
            timestamp_ms: 1_764_000_000_000 + i as i64,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_same_partition_on_embedded_and_kafka() {
    let kafka = fresh().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded = open(dir.path(), PARTITIONS);
    let mut keys: Vec<Vec<u8>> = (0..200u64)
        .map(|i| (106_540_352_242_922 + i * 7919).to_string().into_bytes())
        .collect();
    keys.extend([
        b"".to_vec(),
        b"a".to_vec(),
        b"twinlog".to_vec(),
        vec![0xff; 255],
    ]);
    let records = records_for(&keys);
    let on_kafka = kafka.publish(records.clone()).await.expect("kafka publish");
    let on_embedded = embedded.publish(records).await.expect("embedded publish");
    for ((key, k), e) in keys.iter().zip(&on_kafka).zip(&on_embedded) {
        assert_eq!(k.partition, e.partition, "key {key:?}");
        assert_eq!(k.partition, partition_for(key, PARTITIONS), "key {key:?}");
    }
}

/// A consumer written against Kafka's own Java client (kafka-clients from
/// the broker's jar cache), which also computes Kafka's Java partitioner
/// for each key. The cached jars hold no console consumer (the kafka-tools
/// jar is not a runtime dependency of the broker), so the test uses the
/// client directly.
const JAVA_READER: &str = r#"
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.utils.Utils;

public class BusReader {
    public static void main(String[] a) {
        String bootstrap = a[0], topic = a[1];
        int partition = Integer.parseInt(a[2]), max = Integer.parseInt(a[3]), partitions = Integer.parseInt(a[4]);
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("enable.auto.commit", "false");
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        HexFormat hex = HexFormat.of();
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            TopicPartition tp = new TopicPartition(topic, partition);
            c.assign(List.of(tp));
            c.seek(tp, 0);
            int n = 0;
            long deadline = System.currentTimeMillis() + 30000;
            while (n < max && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    if (n >= max) break;
                    int javaPartition = Utils.toPositive(Utils.murmur2(r.key())) % partitions;
                    System.out.println(r.offset() + " " + hex.formatHex(r.key()) + " "
                        + hex.formatHex(r.value()) + " " + r.timestamp() + " " + javaPartition);
                    n++;
                }
            }
        }
    }
}
"#;

fn jar_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("TWINLOG_KAFKA_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    PathBuf::from(home).join(".cache/twinlog/kafka-4.4.0")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_records_read_back_with_kafkas_java_client() {
    let bus = fresh().await;
    let keys: Vec<Vec<u8>> = (0..40u64)
        .map(|i| (123_456_789_012_345 + i).to_string().into_bytes())
        .collect();
    let records: Vec<OutRecord> = records_for(&keys)
        .into_iter()
        .map(|mut r| {
            r.topic = Topic::Inbound;
            r
        })
        .collect();
    let positions = bus.publish(records.clone()).await.expect("publish");
    let partition = positions[0].partition;
    let expected: Vec<(&OutRecord, u64)> = records
        .iter()
        .zip(&positions)
        .filter(|(_, p)| p.partition == partition)
        .map(|(r, p)| (r, p.offset))
        .collect();

    let cache = jar_cache();
    assert!(
        cache.join("kafka-clients-4.4.0.jar").is_file(),
        "no kafka-clients jar in {}",
        cache.display()
    );
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(work.path().join("BusReader.java"), JAVA_READER).expect("write java");
    let classpath = format!("{}/*", cache.display());
    let javac = Command::new("javac")
        .args(["-nowarn", "-cp", &classpath, "-d"])
        .arg(work.path())
        .arg(work.path().join("BusReader.java"))
        .output()
        .expect("run javac (apt-get install openjdk-17-jdk-headless)");
    assert!(
        javac.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let log4j = repo_root().join("deploy/kafka/log4j2.properties");
    let java = Command::new("java")
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}:{classpath}", work.path().display()))
        .arg("BusReader")
        .arg(bootstrap())
        .arg(bus.topic_name(Topic::Inbound))
        .arg(partition.to_string())
        .arg(expected.len().to_string())
        .arg(PARTITIONS.to_string())
        .output()
        .expect("run java");
    let stdout = String::from_utf8_lossy(&java.stdout);
    assert!(
        java.status.success(),
        "java reader: {}",
        String::from_utf8_lossy(&java.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "java read {stdout}");
    for (line, (record, offset)) in lines.iter().zip(&expected) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 5, "{line}");
        assert_eq!(fields[0], offset.to_string(), "{line}");
        assert_eq!(fields[1], hex(&record.key), "key at {offset}");
        assert_eq!(fields[2], hex(&record.payload), "payload at {offset}");
        assert_eq!(
            fields[3],
            record.timestamp_ms.to_string(),
            "timestamp at {offset}"
        );
        assert_eq!(
            fields[4],
            partition.to_string(),
            "java's partitioner at {offset}"
        );
    }
}

fn audit_record(bus: &KafkaBus, partition: u32, seq: u64, body: &str) -> twinlog_bus::SeqRecord {
    twinlog_bus::SeqRecord {
        seq,
        record: OutRecord {
            topic: Topic::Audit,
            key: twinlog_bus::key_for_partition(partition, bus.partitions()),
            payload: body.as_bytes().to_vec(),
            timestamp_ms: 1_700_000_000_000,
        },
    }
}

/// The audit records of partition `p` from seq `from` to `end`, by as many
/// reads as it takes (a read returns what has arrived).
async fn read_audit(bus: &KafkaBus, p: u32, from: u64, end: u64) -> Vec<twinlog_bus::BusRecord> {
    let mut out: Vec<twinlog_bus::BusRecord> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while from + (out.len() as u64) < end {
        assert!(Instant::now() < deadline, "read {} of {end}", out.len());
        let next = from + out.len() as u64;
        out.extend(
            bus.read(Topic::Audit, p, next, 100, Duration::from_secs(1))
                .await
                .expect("read"),
        );
    }
    out
}

/// Two transactional producers of one shard: once the second has
/// initialised, the first one's commit fails as fenced and nothing it sent
/// becomes visible to a read_committed reader; the audit topic is read by
/// seq (logical offsets), whatever the markers between records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_shard_producer_fences_the_first() {
    use twinlog_bus::ShardProducer;
    let bus = fresh().await;
    let (boot, prefix) = (bootstrap(), bus.prefix().to_owned());
    let p = 2;
    let keys = KeysTopic::connect(boot, &prefix).await.expect("keys");
    let first = ShardProducer::init(boot, &prefix, p)
        .await
        .expect("init first");
    for seq in 0..3 {
        first
            .commit(
                &[(format!("k{seq}").into_bytes(), Some(b"v".to_vec()))],
                &[audit_record(&bus, p, seq, &format!("a{seq}"))],
            )
            .await
            .expect("the owner commits");
    }
    assert_eq!(bus.end_offset(Topic::Audit, p).await.expect("end"), 3);

    let second = ShardProducer::init(boot, &prefix, p)
        .await
        .expect("init second");
    let fenced = first
        .commit(
            &[(b"zombie".to_vec(), Some(b"z".to_vec()))],
            &[audit_record(&bus, p, 3, "zombie")],
        )
        .await
        .expect_err("the first producer must be fenced");
    assert!(fenced.is_fenced(), "not fenced: {fenced:?}");
    assert_eq!(
        fenced.to_string(),
        format!("shard {p} was taken over by another engine: fenced")
    );
    // Nothing of the zombie is visible.
    assert_eq!(bus.end_offset(Topic::Audit, p).await.expect("end"), 3);
    assert!(!keys
        .read(p)
        .await
        .expect("read keys")
        .contains_key(&b"zombie"[..]));

    // The new owner continues at seq 3, in two transactions.
    second
        .commit(
            &[],
            &[
                audit_record(&bus, p, 3, "b3"),
                audit_record(&bus, p, 4, "b4"),
            ],
        )
        .await
        .expect("the new owner commits");
    second
        .commit(&[(b"k9".to_vec(), None)], &[audit_record(&bus, p, 5, "b5")])
        .await
        .expect("the new owner commits again");
    assert_eq!(bus.end_offset(Topic::Audit, p).await.expect("end"), 6);
    let read = read_audit(&bus, p, 0, 6).await;
    let got: Vec<(u64, String)> = read
        .iter()
        .map(|r| (r.offset, String::from_utf8_lossy(&r.payload).into_owned()))
        .collect();
    let want: Vec<(u64, String)> = ["a0", "a1", "a2", "b3", "b4", "b5"]
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64, (*s).to_owned()))
        .collect();
    assert_eq!(got, want);
    // A cold read from the middle skips the markers before it.
    let tail = read_audit(&bus, p, 4, 6).await;
    assert_eq!(
        tail.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![4, 5]
    );
    let live = keys.read(p).await.expect("read keys");
    assert!(live.contains_key(&b"k0"[..]) && !live.contains_key(&b"k9"[..]));
    // Another partition saw none of it.
    assert_eq!(bus.end_offset(Topic::Audit, 0).await.expect("end"), 0);
    second.close(Duration::from_secs(10)).await;
    first.close(Duration::from_secs(10)).await;
}
