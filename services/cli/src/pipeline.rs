//! normalised events → `decide` → seal → encode → one group-committed append.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;
use twinlog_auditlog::{AppendBatch, AuditLog, LogError};
use twinlog_engine::{
    decide, decide_forget, domain, evolve, reject, Config, Fact, Input, MemoTagger, Record, State,
    Step, Tag, TagCache, Tagger,
};
use twinlog_proto::v1::{audit_record::Fact as F, AuditRecord, IngestEvent, Personal, Source};
use twinlog_vault::{ForgetOutcome, KeyMaterial, Pseudonymizer, Vault, VaultError};

/// Inputs folded into one append (one fsync). A larger call is split.
pub const APPEND_BATCH_INPUTS_MAX: usize = 10_000;
/// The sled tree, inside the log's db, that holds the vault.
const VAULT_TREE: &str = "vault";
/// The keys directory of a log (signing key, the vault's KEK).
pub const KEYS_DIR: &str = "keys";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("failed to open the vault tree in {path}")]
    VaultTree {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("record {seq} does not decode as an audit record")]
    Decode {
        seq: u64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("record {seq} is missing from the log")]
    MissingRecord { seq: u64 },
    #[error("sealed content of record {seq} does not decode")]
    Personal {
        seq: u64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("no customer is known by that phone number or BSUID")]
    UnknownCustomer,
    #[error("an earlier append failed; reopen the log before appending again")]
    Poisoned,
}

/// The engine's tagger, keyed by the vault's pseudonym key.
#[derive(Clone)]
pub struct VaultTagger(Pseudonymizer);

impl Tagger for VaultTagger {
    fn tag(&self, domain: &str, value: &[u8]) -> Tag {
        self.0.tag(domain, value)
    }
}

/// What one call to [`Twinlog::append`] did. Each input ends in exactly one
/// of: appended, duplicate, rejected (itself recorded), or idle (a tick that
/// fired nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppendReport {
    pub inputs: u64,
    pub appended: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub idle: u64,
    pub records: u64,
    pub tree_size: u64,
    #[serde(serialize_with = "hex_serialize")]
    pub root: [u8; 32],
    /// Rejection reasons, in order, with their counts.
    pub rejections: std::collections::BTreeMap<String, u64>,
}

fn hex_serialize<S: serde::Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

/// One record as `twinlog show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordView {
    pub seq: u64,
    pub outcome: &'static str,
    /// The record's clear part, in the protobuf JSON mapping.
    pub record: serde_json::Value,
    /// The sealed content, decrypted; `{"erased": true}` once its customer is forgotten.
    pub personal: serde_json::Value,
    /// The exact bytes hashed into the tree, base64.
    pub leaf: String,
    /// `SHA-256(0x00 || leaf)`, hex.
    pub leaf_hash: String,
}

/// An open twinlog: the audit log, its vault, and the engine state rebuilt
/// from the log's records.
pub struct Twinlog {
    log: AuditLog,
    vault: Vault,
    state: State,
    config: Config,
    tagger: VaultTagger,
    /// Identity tags already computed, kept across batches.
    tag_cache: TagCache,
    poisoned: bool,
}

impl Twinlog {
    /// Creates a new log in `dir`: its signing key and its key material.
    pub fn init(dir: &Path) -> Result<Twinlog, PipelineError> {
        let log = AuditLog::create(dir, None)?;
        let tree = vault_tree(&log, dir)?;
        let vault = Vault::create(&dir.join(KEYS_DIR), tree)?;
        Ok(Self::assemble(log, vault, State::default()))
    }

    /// Opens the log in `dir` and rebuilds the engine state by `evolve` over
    /// every record. `progress(done, total)` is called as it goes.
    pub fn open(dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Twinlog, PipelineError> {
        let log = AuditLog::open(dir)?;
        let tree = vault_tree(&log, dir)?;
        let vault = Vault::open(&dir.join(KEYS_DIR), tree)?;
        let total = log.size();
        let mut state = State::default();
        for item in log.records(0, total) {
            let (seq, bytes) = item?;
            let record = decode(seq, &bytes)?;
            evolve(&mut state, &record);
            if seq % 4096 == 0 || seq + 1 == total {
                progress(seq + 1, total);
            }
        }
        let mut t = Self::assemble(log, vault, state);
        t.reconcile_erasures()?;
        Ok(t)
    }

    /// A forget destroys the key first and records the erasure second; a
    /// crash between the two leaves a forgotten customer without its record.
    /// Appends the missing erasure records.
    fn reconcile_erasures(&mut self) -> Result<(), PipelineError> {
        for customer in self.vault.forgotten()? {
            if !self.state.erased.contains_key(&customer) {
                tracing::warn!(message = "recording an erasure that a crash interrupted");
                self.append_erasure(&customer)?;
            }
        }
        Ok(())
    }

    fn append_erasure(&mut self, customer: &Tag) -> Result<u64, PipelineError> {
        let source = Source {
            topic: "operator".into(),
            partition: 0,
            offset: 0,
        };
        let seq = self.log.size();
        let mut leaves = Vec::new();
        if let Step::Append(facts) = decide_forget(&self.state, customer, &source) {
            for (i, fact) in facts.into_iter().enumerate() {
                let (record, leaf) = seal(&mut self.vault, fact, seq + i as u64)?;
                evolve(&mut self.state, &record);
                leaves.push(leaf);
            }
        }
        self.log.append(AppendBatch {
            leaves,
            side_writes: Vec::new(),
        })?;
        Ok(seq)
    }

    /// Creates, in `dir`, an empty log that signs with `signer_key` (so it
    /// has the original's origin and verifier key) and a vault that holds
    /// `material` (so it seals and opens as the original's): the first step
    /// of restoring a shard. The caller appends the original's records to
    /// the returned log, closes it, and opens the directory with
    /// [`Twinlog::open`].
    pub fn create_restored(
        dir: &Path,
        signer_key: &str,
        material: &KeyMaterial,
    ) -> Result<AuditLog, PipelineError> {
        let log = AuditLog::create_with_signer_key(dir, signer_key)?;
        let tree = vault_tree(&log, dir)?;
        Vault::restore(&dir.join(KEYS_DIR), tree, material)?;
        Ok(log)
    }

    /// Opens the log in `dir`, creating it first if there is none.
    pub fn open_or_init(
        dir: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Twinlog, PipelineError> {
        if dir.join("log.json").exists() {
            Self::open(dir, progress)
        } else {
            Self::init(dir)
        }
    }

    fn assemble(log: AuditLog, vault: Vault, state: State) -> Twinlog {
        let tagger = VaultTagger(vault.pseudonymizer());
        Twinlog {
            log,
            vault,
            state,
            config: Config::default(),
            tagger,
            tag_cache: TagCache::default(),
            poisoned: false,
        }
    }

    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// A side value written by [`Twinlog::append_with`].
    pub fn side_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PipelineError> {
        Ok(self.log.side_get(key)?)
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The vault: the key escrow takes its changes.
    pub fn vault_mut(&mut self) -> &mut Vault {
        &mut self.vault
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn tagger(&self) -> &VaultTagger {
        &self.tagger
    }

    /// Folds inputs into the log: each through `decide` (or `reject`), each
    /// fact sealed and evolved, then one durable append per
    /// [`APPEND_BATCH_INPUTS_MAX`] inputs.
    pub fn append(
        &mut self,
        inputs: &[(IngestEvent, Source)],
    ) -> Result<AppendReport, PipelineError> {
        self.append_with(inputs, Vec::new())
    }

    /// [`Twinlog::append`], writing `side_writes` (the runner's input
    /// offsets) in the same sled batch as the records of the last
    /// [`APPEND_BATCH_INPUTS_MAX`] inputs, even when they produce no record.
    /// A runner that keeps its batches within that limit commits its
    /// offsets atomically with everything they produced.
    pub fn append_with(
        &mut self,
        inputs: &[(IngestEvent, Source)],
        side_writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<AppendReport, PipelineError> {
        if self.poisoned {
            return Err(PipelineError::Poisoned);
        }
        let mut report = AppendReport::default();
        let chunks: Vec<&[(IngestEvent, Source)]> = if inputs.is_empty() {
            vec![inputs]
        } else {
            inputs.chunks(APPEND_BATCH_INPUTS_MAX).collect()
        };
        let last = chunks.len() - 1;
        let mut side_writes = Some(side_writes);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let side = if i == last {
                side_writes.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            self.append_batch(chunk, side, &mut report)
                .inspect_err(|_| {
                    // The in-memory state ran ahead of the disk: refuse to go on.
                    self.poisoned = true;
                })?;
        }
        report.tree_size = self.log.size();
        report.root = self.log.root(report.tree_size)?;
        Ok(report)
    }

    fn append_batch(
        &mut self,
        inputs: &[(IngestEvent, Source)],
        side_writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        report: &mut AppendReport,
    ) -> Result<(), PipelineError> {
        let base = self.log.size();
        let mut leaves = Vec::with_capacity(inputs.len());
        let tagger = MemoTagger::with_cache(&self.tagger, std::mem::take(&mut self.tag_cache));
        for (event, source) in inputs {
            report.inputs += 1;
            let input = Input { event, source };
            let step = match decide(&self.state, &self.config, &tagger, input) {
                Ok(step) => {
                    if matches!(step, Step::Append(_)) {
                        report.appended += 1;
                    }
                    step
                }
                Err(rejection) => {
                    tracing::warn!(
                        message = "input rejected",
                        reason = rejection.reason,
                        detail = %rejection.detail,
                        offset = source.offset,
                    );
                    report.rejected += 1;
                    *report
                        .rejections
                        .entry(rejection.reason.to_string())
                        .or_default() += 1;
                    reject(&self.state, &self.config, &tagger, input, &rejection)
                }
            };
            match step {
                Step::Append(facts) => {
                    for fact in facts {
                        let seq = base + leaves.len() as u64;
                        let (record, leaf) = seal(&mut self.vault, fact, seq)?;
                        evolve(&mut self.state, &record);
                        leaves.push(leaf);
                    }
                }
                Step::Duplicate => report.duplicates += 1,
                Step::Idle => report.idle += 1,
            }
        }
        self.tag_cache = tagger.into_cache();
        report.records += leaves.len() as u64;
        if !leaves.is_empty() || !side_writes.is_empty() {
            self.log.append(AppendBatch {
                leaves,
                side_writes,
            })?;
        }
        Ok(())
    }

    /// The customer known by a phone number or a BSUID.
    pub fn customer_by_identity(&self, identity: &str) -> Option<Tag> {
        let phone = identity.trim_start_matches('+');
        [
            self.tagger.tag(domain::BSUID, identity.as_bytes()),
            self.tagger.tag(domain::PHONE, phone.as_bytes()),
        ]
        .iter()
        .find_map(|t| self.state.customer_of(t).copied())
    }

    /// Crypto-shreds a customer: destroys the key (durably, with a KEK
    /// rotation), then appends an erasure record that holds only the
    /// customer's pseudonymous id. Returns the erasure record's seq, or
    /// `None` when the customer was already forgotten.
    pub fn forget(&mut self, identity: &str) -> Result<Option<u64>, PipelineError> {
        let customer = self
            .customer_by_identity(identity)
            .ok_or(PipelineError::UnknownCustomer)?;
        match self.vault.forget(&customer)? {
            ForgetOutcome::AlreadyForgotten { .. } => Ok(None),
            _ => Ok(Some(self.append_erasure(&customer)?)),
        }
    }

    /// Reads one record: clear part, decrypted content, and leaf bytes.
    pub fn show(&self, seq: u64) -> Result<RecordView, PipelineError> {
        let bytes = self
            .log
            .record(seq)?
            .ok_or(PipelineError::MissingRecord { seq })?;
        let record = decode(seq, &bytes)?;
        let personal = match &record.sealed {
            None => serde_json::Value::Null,
            Some(sealed) => match self.vault.open_sealed(sealed, &seq.to_be_bytes())? {
                None => serde_json::json!({ "erased": true }),
                Some(plain) => {
                    let p: Personal = prost::Message::decode(plain.as_slice())
                        .map_err(|source| PipelineError::Personal { seq, source })?;
                    serde_json::to_value(&p).unwrap_or(serde_json::Value::Null)
                }
            },
        };
        let outcome = match record.fact {
            Some(F::Rejected(_)) => "rejected",
            _ => "appended",
        };
        Ok(RecordView {
            seq,
            outcome,
            record: serde_json::to_value(&record).unwrap_or(serde_json::Value::Null),
            personal,
            leaf: base64::engine::general_purpose::STANDARD.encode(&bytes),
            leaf_hash: hex::encode(twinlog_auditlog::verify_proof::leaf_hash(&bytes)),
        })
    }
}

/// Gives a fact its seq, seals its personal content under its key, and
/// encodes the leaf. The nonce comes from the seq and the key id; the seq is
/// bound in as associated data, so sealed content cannot be moved to another
/// record. The leaf is encoded from the borrowed record: the same bytes as
/// the equivalent `AuditRecord` (checked in debug builds).
fn seal<'a>(
    vault: &mut Vault,
    fact: Fact<'a>,
    seq: u64,
) -> Result<(Record<'a>, Vec<u8>), PipelineError> {
    let mut record = fact.record;
    record.seq = seq;
    let sealed = match fact.personal {
        Some(p) => {
            let plaintext = p.content.encode();
            let mut natural_key = seq.to_be_bytes().to_vec();
            natural_key.extend_from_slice(&p.key_id);
            Some(vault.seal(&p.key_id, &natural_key, &seq.to_be_bytes(), &plaintext)?)
        }
        None => None,
    };
    let leaf = record.encode(sealed.as_ref());
    debug_assert_eq!(
        leaf,
        prost::Message::encode_to_vec(&record.to_audit_record(sealed)),
        "the leaf is the encoding of the equivalent AuditRecord"
    );
    Ok((record, leaf))
}

fn vault_tree(log: &AuditLog, dir: &Path) -> Result<sled::Tree, PipelineError> {
    log.db()
        .open_tree(VAULT_TREE)
        .map_err(|source| PipelineError::VaultTree {
            path: dir.to_path_buf(),
            source,
        })
}

/// Decodes one stored record.
pub fn decode(seq: u64, bytes: &[u8]) -> Result<AuditRecord, PipelineError> {
    prost::Message::decode(bytes).map_err(|source| PipelineError::Decode { seq, source })
}
