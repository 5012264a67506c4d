use std::path::Path;

use twinlog_auditlog::{AppendBatch, AuditLog};

/// Record `i` of the test logs: distinct, of varying length.
pub fn record(i: u64) -> Vec<u8> {
    let mut r = format!("record {i:06} ").into_bytes();
    r.extend(std::iter::repeat_n(b'x', usize::try_from(i % 37).unwrap()));
    r
}

/// Appends records `log.size()..log.size() + count`, `per_batch` at a time.
pub fn append_records(log: &mut AuditLog, count: u64, per_batch: u64) {
    let end = log.size() + count;
    while log.size() < end {
        let from = log.size();
        let to = (from + per_batch).min(end);
        let appended = log
            .append(AppendBatch {
                leaves: (from..to).map(record).collect(),
                side_writes: Vec::new(),
            })
            .expect("append");
        assert_eq!(appended.first_seq, from);
        assert_eq!(appended.tree_size, to);
    }
}

/// A new log at `dir/log` holding `count` records appended `per_batch` at a time.
pub fn new_log(dir: &Path, count: u64, per_batch: u64) -> AuditLog {
    let mut log = AuditLog::create(&dir.join("log"), None).expect("create log");
    append_records(&mut log, count, per_batch);
    log
}

/// Flips one bit of a hash.
pub fn flip(hash: &mut [u8; 32], byte: usize) {
    hash[byte % 32] ^= 0x01;
}
