//! Opening a shard on Kafka with key escrow: the local directory when it is
//! current, otherwise a rebuild from the topics.
//!
//! A shard's local directory is current when it holds every record of the
//! audit topic's partition and its vault's ratchet is not behind the keys
//! topic's. Otherwise the shard is *restored*: a log is created with the
//! signing key from the keys topic (same origin, same verifier key), a vault
//! with the key material from the keys topic (same pseudonym key, ratchet
//! state, live customer keys and tombstones), and the audit topic's records
//! are appended to it byte for byte, each checked to carry its own offset as
//! `seq`. The restored tree must have, at the size of the checkpoint on the
//! keys topic, that signed checkpoint's root (and, when a stale local copy
//! existed, that copy's root at its size). The engine state is then rebuilt
//! by `evolve`, as at any open.
//!
//! The input offsets are rebuilt from the records' `source`: for each input
//! topic, the largest offset of this partition that produced a record, plus
//! one. Inputs after that which produced no record (a duplicate, a tick
//! that fired nothing) are read and folded again. That keeps the log exactly
//! once: a duplicate's natural key is in the dedup index, rebuilt from the
//! records and only growing, so it is a duplicate again; a tick is folded
//! again at a state that may hold records of inputs newer than it, so it may
//! fire a timer that, in the dead engine's run, a later tick would have
//! fired. The timer's record is still appended once (the state records what
//! fired), only its `source` names the earlier tick. Every input that
//! produced a record is past the rebuilt offsets, and is never folded twice.
//!
//! The topic is the truth. A local copy whose record at the last seq both
//! hold differs from the topic's committed record forked from it: records
//! of an engine that was fenced (see `crate::runner`, "Fencing"), appended
//! locally but never committed, while the new owner committed others. It
//! is moved aside to `DATA/shards/<p>.forked-<unix ms>` (kept as evidence,
//! counted in `twinlog_engine_forks_set_aside_total`) and the shard is
//! restored from the topics. A local copy ahead of the topic that agrees
//! with it is kept: its further records are republished.
//!
//! The restore is built beside the shard (`DATA/shards/<p>.restoring`) and
//! moved into place only once checked; a stale copy is removed (its KEK file
//! zeroed first).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use twinlog_auditlog::verify_proof::verify_checkpoint;
use twinlog_auditlog::{AppendBatch, AuditLog, HashBytes};
use twinlog_bus::{Bus, Topic};
use twinlog_proto::v1::AuditRecord;
use twinlog_vault::KeyMaterial;

use crate::escrow::Escrow;
use crate::pipeline::{Twinlog, KEYS_DIR};
use crate::runner::{
    check_against_topic, offset_key, retry, RunnerError, RunnerMetrics, Shard,
    READ_RECORDS_PER_TOPIC_MAX,
};

/// Most records re-appended per append (one fsync) during a restore.
pub const RESTORE_APPEND_RECORDS_MAX: usize = 16_384;
/// Most record bytes re-appended per append during a restore.
pub const RESTORE_APPEND_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How often a restore logs its progress.
const RESTORE_LOG_EVERY: Duration = Duration::from_secs(5);

/// Opens shard `partition` in `dir`, restoring it from the audit and keys
/// topics when the directory is missing or behind them, and turns its key
/// escrow on.
pub async fn open_shard<B: Bus>(
    bus: &B,
    escrow: &Arc<Escrow>,
    dir: &Path,
    partition: u32,
    publish_audit: bool,
    metrics: Option<&RunnerMetrics>,
) -> Result<Shard, RunnerError> {
    let end = retry(partition, "find the end of the audit topic", || {
        bus.end_offset(Topic::Audit, partition)
    })
    .await?;
    let material = escrow.material(partition).await?;
    let local = if dir.join("log.json").exists() {
        Some(tokio::task::block_in_place(|| {
            Shard::open(dir, partition, publish_audit)
        })?)
    } else {
        None
    };
    let Some(signer) = material.signer.as_ref() else {
        // Nothing escrowed yet: a new shard, or one that ran without escrow.
        return match local {
            Some(shard) => Ok(shard.with_escrow(Arc::clone(escrow))),
            None if end == 0 => {
                Ok(
                    tokio::task::block_in_place(|| Shard::open(dir, partition, publish_audit))?
                        .with_escrow(Arc::clone(escrow)),
                )
            }
            None => Err(RunnerError::Restore {
                partition,
                reason: format!(
                    "the audit topic holds {end} records of it, but the keys topic has no key \
                     material for it (did its engine run without --master-key-file, or with \
                     another topic prefix?)"
                ),
            }),
        };
    };
    let mut stale = None;
    if let Some(shard) = local {
        let log = shard.twinlog().log();
        let same_log = log.signer_key().map_err(|e| {
            restore_error(partition, format!("cannot read the local signing key: {e}"))
        })? == signer.as_str();
        if !same_log {
            return Err(restore_error(
                partition,
                format!(
                    "the local log in {} is not the one whose keys are on the keys topic (another \
                     origin); move it away, or point the engine at the right topic prefix",
                    dir.display()
                ),
            ));
        }
        let size = log.size();
        let behind_keys = match &material.ratchet {
            Some((index, _)) => *index > shard.twinlog_ratchet_index(),
            None => false,
        };
        // The topic is the truth: a local copy whose record at the last
        // seq both hold differs from the topic's forked from the committed
        // history (a fenced engine's records) and is set aside.
        let common = size.min(end);
        let forked = if common > 0 {
            match check_against_topic(bus, shard.twinlog(), partition, common - 1).await {
                Ok(()) => false,
                Err(RunnerError::Forked { .. }) => true,
                Err(error) => return Err(error),
            }
        } else {
            false
        };
        if forked {
            drop(shard);
            let aside = set_aside(dir, partition)?;
            tracing::error!(
                message = "the local copy of the audit shard forked from the audit topic's committed \
                           history (records of an engine that was fenced); it is set aside and the shard \
                           restored from the topics",
                partition,
                local_records = size,
                audit_records = end,
                aside = %aside.display()
            );
            if let Some(m) = metrics {
                m.forks_set_aside.inc();
            }
            restore(bus, &material, signer, dir, partition, end, None, metrics).await?;
            let shard = tokio::task::block_in_place(|| Shard::open(dir, partition, publish_audit))?;
            return Ok(shard.with_escrow(Arc::clone(escrow)));
        }
        if size >= end && !behind_keys {
            return Ok(shard.with_escrow(Arc::clone(escrow)));
        }
        let root = log
            .root(size)
            .map_err(|e| restore_error(partition, format!("cannot read the local root: {e}")))?;
        tracing::info!(
            message = "audit shard is behind the topics; restoring it",
            partition,
            local_records = size,
            audit_records = end,
            behind_keys
        );
        stale = Some((size, root));
        drop(shard);
    }
    restore(bus, &material, signer, dir, partition, end, stale, metrics).await?;
    let shard = tokio::task::block_in_place(|| Shard::open(dir, partition, publish_audit))?;
    Ok(shard.with_escrow(Arc::clone(escrow)))
}

fn restore_error(partition: u32, reason: String) -> RunnerError {
    RunnerError::Restore { partition, reason }
}

/// Rebuilds shard `partition` in `dir` from the audit topic's first `end`
/// records and `material`. `stale`: the size and root of a local copy that
/// the restored tree must extend.
#[allow(clippy::too_many_arguments)]
async fn restore<B: Bus>(
    bus: &B,
    material: &KeyMaterial,
    signer: &str,
    dir: &Path,
    partition: u32,
    end: u64,
    stale: Option<(u64, HashBytes)>,
    metrics: Option<&RunnerMetrics>,
) -> Result<(), RunnerError> {
    let started = Instant::now();
    let tmp = restoring_dir(dir);
    let io = |source| RunnerError::RestoreIo {
        partition,
        dir: tmp.clone(),
        source,
    };
    if tmp.exists() {
        // An earlier restore that did not finish.
        std::fs::remove_dir_all(&tmp).map_err(io)?;
    }
    let mut log = tokio::task::block_in_place(|| Twinlog::create_restored(&tmp, signer, material))
        .map_err(|e| restore_error(partition, format!("cannot create the log: {e}")))?;
    tracing::info!(
        message = "restoring audit shard from the topics",
        partition,
        records = end,
        origin = log.origin(),
        customer_keys = material.keys.len(),
        forgotten = material.forgotten.len()
    );

    let mut next = [0u64; 5];
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0usize;
    let mut seq = 0u64;
    let mut logged = Instant::now();
    while seq < end {
        let records = retry(partition, "read the audit topic", || {
            bus.read(
                Topic::Audit,
                partition,
                seq,
                READ_RECORDS_PER_TOPIC_MAX,
                Duration::from_secs(1),
            )
        })
        .await?;
        for record in records {
            if seq >= end {
                break;
            }
            if record.offset != seq {
                return Err(restore_error(
                    partition,
                    format!(
                        "the audit topic returned offset {} for {seq}",
                        record.offset
                    ),
                ));
            }
            let decoded: AuditRecord =
                prost::Message::decode(record.payload.as_slice()).map_err(|e| {
                    restore_error(
                        partition,
                        format!("audit record {seq} does not decode: {e}"),
                    )
                })?;
            if decoded.seq != seq {
                return Err(restore_error(
                    partition,
                    format!(
                        "the audit topic holds record seq {} at offset {seq}: a gap or a duplicate",
                        decoded.seq
                    ),
                ));
            }
            if let Some(source) = &decoded.source {
                let topic = Topic::INPUTS.iter().find(|t| t.suffix() == source.topic);
                if let (Some(topic), Ok(offset)) = (topic, u64::try_from(source.offset)) {
                    if u32::try_from(source.partition).ok() == Some(partition) {
                        let i = usize::from(topic.rank());
                        next[i] = next[i].max(offset + 1);
                    }
                }
            }
            bytes += record.payload.len();
            leaves.push(record.payload);
            seq += 1;
        }
        let last = seq >= end;
        if last || leaves.len() >= RESTORE_APPEND_RECORDS_MAX || bytes >= RESTORE_APPEND_BYTES_MAX {
            let side_writes = if last {
                Topic::INPUTS
                    .iter()
                    .filter(|t| next[usize::from(t.rank())] > 0)
                    .map(|t| {
                        (
                            offset_key(*t),
                            Some(next[usize::from(t.rank())].to_be_bytes().to_vec()),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let n = leaves.len() as u64;
            let batch = AppendBatch {
                leaves: std::mem::take(&mut leaves),
                side_writes,
            };
            tokio::task::block_in_place(|| log.append(batch))
                .map_err(|e| restore_error(partition, format!("cannot append: {e}")))?;
            bytes = 0;
            if let Some(m) = metrics {
                m.restored_records.inc_by(n);
            }
        }
        if logged.elapsed() >= RESTORE_LOG_EVERY {
            tracing::info!(
                message = "restoring audit shard",
                partition,
                done = seq,
                total = end
            );
            logged = Instant::now();
        }
    }
    check_roots(&log, material, partition, end, stale)?;
    let root = log
        .root(end)
        .map_err(|e| restore_error(partition, e.to_string()))?;
    drop(log);
    replace(dir, &tmp, partition)?;
    if let Some(m) = metrics {
        m.restores.inc();
    }
    tracing::info!(
        message = "audit shard restored",
        partition,
        records = end,
        root = %hex::encode(root),
        ?next,
        seconds = started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The restored tree must have the root of the signed checkpoint on the
/// keys topic, and extend a stale local copy.
fn check_roots(
    log: &AuditLog,
    material: &KeyMaterial,
    partition: u32,
    end: u64,
    stale: Option<(u64, HashBytes)>,
) -> Result<(), RunnerError> {
    let root_at = |size: u64| {
        log.root(size).map_err(|e| {
            restore_error(partition, format!("cannot compute the root at {size}: {e}"))
        })
    };
    match &material.checkpoint {
        Some(note) => {
            let info = verify_checkpoint(note, log.verifier_key()).map_err(|e| {
                restore_error(
                    partition,
                    format!("the escrowed checkpoint does not verify: {e}"),
                )
            })?;
            if info.tree_size > end {
                return Err(restore_error(
                    partition,
                    format!(
                        "a signed checkpoint of {} records exists but the audit topic holds only {end}: \
                         records are missing from the audit topic",
                        info.tree_size
                    ),
                ));
            }
            if root_at(info.tree_size)? != info.root_hash {
                return Err(restore_error(
                    partition,
                    format!(
                        "the restored tree's root at {} differs from the signed checkpoint's",
                        info.tree_size
                    ),
                ));
            }
            tracing::info!(
                message = "restored tree matches the signed checkpoint",
                partition,
                checkpoint_size = info.tree_size
            );
        }
        None if end > 0 => tracing::warn!(
            message = "no escrowed checkpoint to check the restored tree against",
            partition
        ),
        None => {}
    }
    if let Some((size, root)) = stale {
        if size <= end && root_at(size)? != root {
            return Err(restore_error(
                partition,
                format!(
                    "the local copy's root at {size} differs from the audit topic's: the histories forked; \
                     the local copy is kept, the restore is left in {}",
                    restoring_dir(log.dir()).display()
                ),
            ));
        }
    }
    Ok(())
}

/// Moves a forked local copy to `DATA/shards/<p>.forked-<unix ms>`, kept
/// as evidence (with its keys: an operator examines it, then removes it).
fn set_aside(dir: &Path, partition: u32) -> Result<PathBuf, RunnerError> {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".forked-{}", crate::runner::now_ms()));
    let aside = dir.with_file_name(name);
    std::fs::rename(dir, &aside).map_err(|source| RunnerError::RestoreIo {
        partition,
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(aside)
}

fn restoring_dir(dir: &Path) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".restoring");
    dir.with_file_name(name)
}

/// Moves the restored directory into place; a stale copy is removed, its
/// KEK file zeroed first so that its wrapped keys are useless.
fn replace(dir: &Path, tmp: &Path, partition: u32) -> Result<(), RunnerError> {
    let io = |source| RunnerError::RestoreIo {
        partition,
        dir: dir.to_path_buf(),
        source,
    };
    if dir.exists() {
        let kek = dir.join(KEYS_DIR).join(twinlog_vault::KEK_FILE_NAME);
        if let Ok(len) = std::fs::metadata(&kek).map(|m| m.len()) {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(&kek)
                .map_err(io)?;
            file.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])
                .and_then(|()| file.sync_all())
                .map_err(io)?;
        }
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    std::fs::rename(tmp, dir).map_err(io)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}
