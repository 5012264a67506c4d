//! Proof documents, in RFC 9162 terms, serialised as JSON with hashes in
//! lowercase hex. Paths are RFC 9162 audit paths: bottom-up, the sibling
//! nearest the leaf (or the first subtree) first.

use serde::{Deserialize, Serialize};

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type HashBytes = [u8; 32];

/// Proof that the record at `leaf_index` is in the tree of `tree_size`
/// records whose root is `root_hash` (RFC 9162 §2.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// `SHA-256(0x00 || record)`.
    #[serde(with = "hex_hash")]
    pub leaf_hash: HashBytes,
    #[serde(with = "hex_hash")]
    pub root_hash: HashBytes,
    #[serde(with = "hex_path")]
    pub inclusion_path: Vec<HashBytes>,
}

/// Proof that the tree of `first_size` records is a prefix of the tree of
/// `second_size` records (RFC 9162 §2.1.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub first_size: u64,
    pub second_size: u64,
    #[serde(with = "hex_hash")]
    pub first_root: HashBytes,
    #[serde(with = "hex_hash")]
    pub second_root: HashBytes,
    #[serde(with = "hex_path")]
    pub consistency_path: Vec<HashBytes>,
}

fn decode_hash<E: serde::de::Error>(s: &str) -> Result<HashBytes, E> {
    let bytes = hex::decode(s).map_err(E::custom)?;
    HashBytes::try_from(bytes.as_slice())
        .map_err(|_| E::custom(format!("hash {s:?} has {} bytes, want 32", bytes.len())))
}

mod hex_hash {
    use super::HashBytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &HashBytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashBytes, D::Error> {
        let s = String::deserialize(d)?;
        super::decode_hash(&s)
    }
}

mod hex_path {
    use super::HashBytes;
    use serde::{ser::SerializeSeq, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(path: &[HashBytes], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(path.len()))?;
        for hash in path {
            seq.serialize_element(&hex::encode(hash))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HashBytes>, D::Error> {
        let strings = Vec::<String>::deserialize(d)?;
        strings.iter().map(|s| super::decode_hash(s)).collect()
    }
}
