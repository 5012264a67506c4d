//! An independent verifier for the log's proofs and checkpoints.
//!
//! Written from RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency),
//! with its own SHA-256 hashing, and deliberately without `tlog_tiles`, so that
//! a bug in the code that builds the proofs is not repeated in the code that
//! checks them. Pure functions: no IO, no state.
//!
//! Checkpoints are C2SP signed notes (signature checked with `signed_note`)
//! whose text is a C2SP tlog-checkpoint, parsed here by hand.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use signed_note::{Note, StandardVerifier, Verifier as _, VerifierList};

use crate::error::{CheckpointError, ProofError};
use crate::proof::{ConsistencyProof, HashBytes, InclusionProof};

/// Root of the empty tree: `SHA-256("")` (RFC 9162 §2.1.1).
pub const EMPTY_ROOT: HashBytes = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Leaf hash of a record: `SHA-256(0x00 || record)`.
pub fn leaf_hash(record: &[u8]) -> HashBytes {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(record);
    h.finalize().into()
}

/// Interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &HashBytes, right: &HashBytes) -> HashBytes {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2): that `leaf_hash` is the
/// leaf at `leaf_index` in the tree of `tree_size` with root `root_hash`.
///
/// It does not check that `leaf_hash` is the hash of any given record; compare
/// it with [`leaf_hash`] of the record first.
pub fn verify_inclusion(proof: &InclusionProof) -> Result<(), ProofError> {
    // Step 1.
    if proof.leaf_index >= proof.tree_size {
        return Err(ProofError::LeafIndexOutOfRange {
            leaf_index: proof.leaf_index,
            tree_size: proof.tree_size,
        });
    }
    // Steps 2 and 3.
    let mut f = proof.leaf_index;
    let mut s = proof.tree_size - 1;
    let mut r = proof.leaf_hash;
    // Step 4.
    for p in &proof.inclusion_path {
        if s == 0 {
            return Err(ProofError::PathTooLong);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 5.
    if s != 0 {
        return Err(ProofError::PathTooShort);
    }
    if r != proof.root_hash {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2): that the tree of
/// `first_size` with root `first_root` is a prefix of the tree of
/// `second_size` with root `second_root`.
///
/// The RFC covers `0 < first < second`. The edge cases follow the usual
/// convention: equal sizes need an empty path and equal roots; a first size
/// of 0 needs an empty path and the empty-tree root.
pub fn verify_consistency(proof: &ConsistencyProof) -> Result<(), ProofError> {
    let (m, n) = (proof.first_size, proof.second_size);
    if m > n {
        return Err(ProofError::SizesOutOfOrder {
            first: m,
            second: n,
        });
    }
    if m == n || m == 0 {
        if !proof.consistency_path.is_empty() {
            return Err(ProofError::PathNotEmpty);
        }
        if m == 0 && proof.first_root != EMPTY_ROOT {
            return Err(ProofError::FirstRootMismatch);
        }
        if m == n && proof.first_root != proof.second_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // Step 1.
    if proof.consistency_path.is_empty() {
        return Err(ProofError::PathTooShort);
    }
    // Step 2: a power-of-two first tree is a complete subtree the verifier
    // already knows, so the path leaves it out.
    let mut path: Vec<&HashBytes> = Vec::with_capacity(proof.consistency_path.len() + 1);
    if m.is_power_of_two() {
        path.push(&proof.first_root);
    }
    path.extend(proof.consistency_path.iter());
    // Steps 3 and 4.
    let mut f = m - 1;
    let mut s = n - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // Step 5.
    let mut fr = *path[0];
    let mut sr = *path[0];
    // Step 6.
    for c in &path[1..] {
        if s == 0 {
            return Err(ProofError::PathTooLong);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 7.
    if s != 0 {
        return Err(ProofError::PathTooShort);
    }
    if fr != proof.first_root {
        return Err(ProofError::FirstRootMismatch);
    }
    if sr != proof.second_root {
        return Err(ProofError::SecondRootMismatch);
    }
    Ok(())
}

/// What a verified checkpoint says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: HashBytes,
    /// Extension lines after the root, each ending in `\n`; empty for ours.
    pub extension: String,
}

/// Checks that `note` is a C2SP signed note with a valid Ed25519 signature by
/// `verifier_key` (`<name>+<hex key id>+<base64 key>`), and that its text is a
/// C2SP tlog-checkpoint whose origin is the key name.
pub fn verify_checkpoint(
    note: &[u8],
    verifier_key: &str,
) -> Result<CheckpointInfo, CheckpointError> {
    let verifier =
        StandardVerifier::new(verifier_key).map_err(|e| CheckpointError::VerifierKey {
            reason: e.to_string(),
        })?;
    let key_name = verifier.name().to_owned();
    let parsed = Note::from_bytes(note).map_err(|e| CheckpointError::Signature {
        reason: e.to_string(),
    })?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| CheckpointError::Signature {
            reason: e.to_string(),
        })?;
    let info = parse_checkpoint_text(parsed.text())?;
    if info.origin != key_name {
        return Err(CheckpointError::OriginMismatch {
            origin: info.origin,
            key_name,
        });
    }
    Ok(info)
}

/// Parses a C2SP tlog-checkpoint body: origin, decimal size, base64 root, then
/// optional non-empty extension lines; every line ends in `\n`.
pub fn parse_checkpoint_text(text: &[u8]) -> Result<CheckpointInfo, CheckpointError> {
    let malformed = |reason: &str| CheckpointError::Malformed {
        reason: reason.to_owned(),
    };
    let text = std::str::from_utf8(text).map_err(|_| malformed("not UTF-8"))?;
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| malformed("does not end in a newline"))?;
    let mut lines = body.split('\n');
    let origin = lines.next().unwrap_or_default();
    if origin.is_empty() {
        return Err(malformed("empty origin line"));
    }
    let size_line = lines.next().ok_or_else(|| malformed("no size line"))?;
    let tree_size: u64 = size_line
        .parse()
        .map_err(|_| malformed("size is not a decimal number"))?;
    if tree_size.to_string() != size_line {
        return Err(malformed("size is not in canonical decimal"));
    }
    let root_line = lines.next().ok_or_else(|| malformed("no root line"))?;
    let root = base64::engine::general_purpose::STANDARD
        .decode(root_line)
        .map_err(|_| malformed("root is not base64"))?;
    let root_hash = HashBytes::try_from(root.as_slice())
        .map_err(|_| malformed("root is not a 32-byte hash"))?;
    let mut extension = String::new();
    for line in lines {
        if line.is_empty() {
            return Err(malformed("empty extension line"));
        }
        extension.push_str(line);
        extension.push('\n');
    }
    Ok(CheckpointInfo {
        origin: origin.to_owned(),
        tree_size,
        root_hash,
        extension,
    })
}
