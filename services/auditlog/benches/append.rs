//! Durable append with group commit, against raw sled writes of the same
//! record bytes with one flush per batch: one key per record (the baseline
//! of the product issue), one value per batch (the floor for segments), and
//! values of `SEGMENT_BYTES_MAX` (the floor for segments that stay inline in
//! sled's fsynced log). Prints records/s of each and the ratios.
//!
//! `cargo bench -p twinlog-auditlog --bench append -- --warm-up-time 1 --measurement-time 5`

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use twinlog_auditlog::{AppendBatch, AuditLog, SEGMENT_BYTES_MAX};

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

/// How raw sled stores a batch of records.
#[derive(Clone, Copy)]
enum Layout {
    /// One key per record, `r` + seq.
    PerRecord,
    /// One value per batch: the records back to back.
    OneValue,
    /// Values of up to `SEGMENT_BYTES_MAX` bytes of records back to back.
    Chunked,
}

/// Raw sled: the same record bytes, one batch and one flush per batch, no
/// hashing, no signature.
struct SledStore {
    root: tempfile::TempDir,
    generation: u32,
    layout: Layout,
    db: sled::Db,
    tree: sled::Tree,
    size: u64,
}

fn open_sled(dir: &Path) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new().path(dir).open().expect("open sled");
    let tree = db.open_tree("raw").expect("open tree");
    (db, tree)
}

fn key(seq: u64) -> [u8; 9] {
    let mut key = [b'r'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

impl SledStore {
    fn new(layout: Layout) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let (db, tree) = open_sled(&root.path().join("db-0"));
        SledStore {
            root,
            generation: 0,
            layout,
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
        let leaves: Vec<Vec<u8>> = (self.size..self.size + count).map(record).collect();
        let start = Instant::now();
        let mut b = sled::Batch::default();
        match self.layout {
            Layout::PerRecord => {
                for (seq, leaf) in (self.size..).zip(leaves) {
                    b.insert(&key(seq), leaf);
                }
            }
            Layout::OneValue => b.insert(&key(self.size), leaves.concat()),
            Layout::Chunked => {
                let per_value = (SEGMENT_BYTES_MAX / RECORD_BYTES).max(1);
                for (seq, chunk) in (self.size..)
                    .step_by(per_value)
                    .zip(leaves.chunks(per_value))
                {
                    b.insert(&key(seq), chunk.concat());
                }
            }
        }
        self.tree.apply_batch(b).expect("apply");
        self.db.flush().expect("flush");
        self.size += count;
        start.elapsed()
    }
}

const RAW: [(&str, Layout); 3] = [
    ("sled_per_record", Layout::PerRecord),
    ("sled_one_value", Layout::OneValue),
    ("sled_6k_values", Layout::Chunked),
];

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for count in BATCH_COUNTS {
        group.throughput(Throughput::Elements(count));
        let mut log = LogStore::new();
        group.bench_function(BenchmarkId::new("auditlog", count), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| log.append(count)).sum())
        });
        for (name, layout) in RAW {
            let mut raw = SledStore::new(layout);
            group.bench_function(BenchmarkId::new(name, count), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| raw.append(count)).sum())
            });
        }
    }
    group.finish();
}

/// A plain timed run of all stores, interleaved batch by batch so that they
/// share the machine's load, with the ratios printed in one place.
fn report_ratio() {
    const BATCHES: u32 = 20;
    println!();
    println!(
        "records/s over {BATCHES} batches each ({RECORD_BYTES}-byte records, one fsync per batch):"
    );
    for count in BATCH_COUNTS {
        let mut log = LogStore::new();
        let mut raws: Vec<SledStore> = RAW.iter().map(|&(_, l)| SledStore::new(l)).collect();
        log.append(count);
        for raw in &mut raws {
            raw.append(count);
        }
        let mut t_log = Duration::ZERO;
        let mut t_raw = [Duration::ZERO; RAW.len()];
        for _ in 0..BATCHES {
            t_log += log.append(count);
            for (t, raw) in t_raw.iter_mut().zip(&mut raws) {
                *t += raw.append(count);
            }
        }
        let records = f64::from(BATCHES) * count as f64;
        let log_rate = records / t_log.as_secs_f64();
        println!("  batch {count:>6}: auditlog        {log_rate:>10.0} rec/s");
        for ((name, _), t) in RAW.iter().zip(t_raw) {
            let rate = records / t.as_secs_f64();
            println!(
                "  batch {count:>6}: {name:<15} {rate:>10.0} rec/s, auditlog/{name} = {:.2}",
                log_rate / rate
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_append(&mut c);
    c.final_summary();
    report_ratio();
}
