//! Durable append with group commit, against raw sled inserts of the same
//! bytes with one flush per batch. Prints records/s of both and their ratio.
//!
//! `cargo bench -p twinlog-auditlog -- --warm-up-time 1 --measurement-time 5`

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use twinlog_auditlog::{AppendBatch, AuditLog};

const RECORD_BYTES: usize = 300;
const BATCH_COUNTS: [u64; 2] = [1_000, 10_000];
/// A fresh store is started once one grows past this many records.
const STORE_RECORDS_MAX: u64 = 2_000_000;

fn record(seq: u64) -> Vec<u8> {
    let mut r = vec![b'x'; RECORD_BYTES];
    r[..8].copy_from_slice(&seq.to_be_bytes());
    r
}

fn batch(from: u64, count: u64) -> AppendBatch {
    AppendBatch {
        leaves: (from..from + count).map(record).collect(),
        side_writes: vec![(b"bench/offset".to_vec(), Some(from.to_be_bytes().to_vec()))],
    }
}

/// The audit log: one sled batch and one flush per append.
struct LogStore {
    root: tempfile::TempDir,
    generation: u32,
    log: AuditLog,
}

impl LogStore {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::create(&root.path().join("log-0"), None).expect("create log");
        LogStore {
            root,
            generation: 0,
            log,
        }
    }

    /// Appends one batch of `count` records; returns the time of the append.
    fn append(&mut self, count: u64) -> Duration {
        if self.log.size() >= STORE_RECORDS_MAX {
            self.generation += 1;
            let dir = self.root.path().join(format!("log-{}", self.generation));
            self.log = AuditLog::create(&dir, None).expect("create log");
        }
        let b = batch(self.log.size(), count);
        let start = Instant::now();
        self.log.append(b).expect("append");
        start.elapsed()
    }
}

/// Raw sled: the same record bytes under the same keys, one batch and one
/// flush per batch, no hashing, no signature.
struct SledStore {
    root: tempfile::TempDir,
    generation: u32,
    db: sled::Db,
    tree: sled::Tree,
    size: u64,
}

fn open_sled(dir: &Path) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new().path(dir).open().expect("open sled");
    let tree = db.open_tree("raw").expect("open tree");
    (db, tree)
}

impl SledStore {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let (db, tree) = open_sled(&root.path().join("db-0"));
        SledStore {
            root,
            generation: 0,
            db,
            tree,
            size: 0,
        }
    }

    fn append(&mut self, count: u64) -> Duration {
        if self.size >= STORE_RECORDS_MAX {
            self.generation += 1;
            let (db, tree) = open_sled(&self.root.path().join(format!("db-{}", self.generation)));
            self.db = db;
            self.tree = tree;
            self.size = 0;
        }
        let leaves: Vec<(u64, Vec<u8>)> = (self.size..self.size + count)
            .map(|s| (s, record(s)))
            .collect();
        let start = Instant::now();
        let mut b = sled::Batch::default();
        for (seq, leaf) in leaves {
            let mut key = [b'r'; 9];
            key[1..].copy_from_slice(&seq.to_be_bytes());
            b.insert(&key, leaf);
        }
        self.tree.apply_batch(b).expect("apply");
        self.db.flush().expect("flush");
        self.size += count;
        start.elapsed()
    }
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for count in BATCH_COUNTS {
        group.throughput(Throughput::Elements(count));
        let mut log = LogStore::new();
        group.bench_function(BenchmarkId::new("auditlog", count), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| log.append(count)).sum())
        });
        let mut raw = SledStore::new();
        group.bench_function(BenchmarkId::new("sled_raw", count), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| raw.append(count)).sum())
        });
    }
    group.finish();
}

/// A plain timed run of both stores, so the ratio is printed in one place.
fn report_ratio() {
    println!();
    println!("records/s over 20 batches each ({RECORD_BYTES}-byte records, one fsync per batch):");
    for count in BATCH_COUNTS {
        let mut log = LogStore::new();
        let mut raw = SledStore::new();
        log.append(count);
        raw.append(count);
        let (mut t_log, mut t_raw) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..20 {
            t_log += log.append(count);
            t_raw += raw.append(count);
        }
        let records = 20.0 * count as f64;
        let log_rate = records / t_log.as_secs_f64();
        let raw_rate = records / t_raw.as_secs_f64();
        println!(
            "  batch {count:>6}: auditlog {log_rate:>10.0} rec/s, raw sled {raw_rate:>10.0} rec/s, auditlog/raw = {:.2}",
            log_rate / raw_rate
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_append(&mut c);
    c.final_summary();
    report_ratio();
}
