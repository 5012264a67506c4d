//! RFC 6962 hashing and proofs against published vectors, checked through the
//! log (tlog_tiles underneath) and through the independent verifier.

use std::path::PathBuf;

use base64::Engine as _;
use twinlog_auditlog::verify_proof::{self, EMPTY_ROOT};
use twinlog_auditlog::{AppendBatch, AuditLog, ConsistencyProof, InclusionProof};

// Source: github.com/transparency-dev/merkle, testonly/constants.go
// (LeafInputs, NodeHashes level 0, RootHashes) and proof/verify_test.go
// (inclusionProofs, consistencyProofs), Apache-2.0, Google LLC.
const LEAF_INPUTS: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];
const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];
/// Roots of the trees of sizes 0..=8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
/// `(leaf index, tree size, path)`; verify_test.go numbers leaves from 1,
/// converted here to 0-based indexes.
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];
/// `(first size, second size, path)`.
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn h(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn path(p: &[&str]) -> Vec<[u8; 32]> {
    p.iter().map(|s| h(s)).collect()
}

fn tlog_path(p: &[[u8; 32]]) -> Vec<tlog_tiles::Hash> {
    p.iter().map(|h| tlog_tiles::Hash(*h)).collect()
}

/// A log holding the eight reference leaves, appended one per batch.
fn reference_log(dir: &std::path::Path) -> AuditLog {
    let mut log = AuditLog::create(&dir.join("log"), Some("example.com/vectors")).unwrap();
    for leaf in LEAF_INPUTS {
        log.append(AppendBatch {
            leaves: vec![hex::decode(leaf).unwrap()],
            side_writes: Vec::new(),
        })
        .unwrap();
    }
    log
}

#[test]
fn leaf_hashes_and_roots_match_the_reference_tree() {
    let dir = tempfile::tempdir().unwrap();
    let log = reference_log(dir.path());
    for (leaf, want) in LEAF_INPUTS.iter().zip(LEAF_HASHES) {
        let data = hex::decode(leaf).unwrap();
        assert_eq!(tlog_tiles::record_hash(&data).0, h(want));
        assert_eq!(verify_proof::leaf_hash(&data), h(want));
    }
    assert_eq!(EMPTY_ROOT, h(ROOTS[0]));
    for (size, want) in (0u64..).zip(ROOTS) {
        assert_eq!(log.root(size).unwrap(), h(want), "root at size {size}");
    }
}

#[test]
fn inclusion_vectors_verify_and_the_log_emits_them_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = reference_log(dir.path());
    for (leaf_index, tree_size, want) in INCLUSION {
        let i = usize::try_from(leaf_index).unwrap();
        let proof = InclusionProof {
            leaf_index,
            tree_size,
            leaf_hash: h(LEAF_HASHES[i]),
            root_hash: h(ROOTS[usize::try_from(tree_size).unwrap()]),
            inclusion_path: path(want),
        };
        verify_proof::verify_inclusion(&proof)
            .unwrap_or_else(|e| panic!("vector ({leaf_index}, {tree_size}): {e}"));
        tlog_tiles::check_record(
            &tlog_path(&proof.inclusion_path),
            tree_size,
            tlog_tiles::Hash(proof.root_hash),
            leaf_index,
            tlog_tiles::Hash(proof.leaf_hash),
        )
        .unwrap();
        // The log's path is the RFC 9162 audit path, element for element.
        assert_eq!(log.prove_inclusion(leaf_index, tree_size).unwrap(), proof);
    }
}

#[test]
fn consistency_vectors_verify_and_the_log_emits_them_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = reference_log(dir.path());
    for (first, second, want) in CONSISTENCY {
        let proof = ConsistencyProof {
            first_size: first,
            second_size: second,
            first_root: h(ROOTS[usize::try_from(first).unwrap()]),
            second_root: h(ROOTS[usize::try_from(second).unwrap()]),
            consistency_path: path(want),
        };
        verify_proof::verify_consistency(&proof)
            .unwrap_or_else(|e| panic!("vector ({first}, {second}): {e}"));
        tlog_tiles::check_tree(
            &tlog_path(&proof.consistency_path),
            second,
            tlog_tiles::Hash(proof.second_root),
            first,
            tlog_tiles::Hash(proof.first_root),
        )
        .unwrap();
        assert_eq!(log.prove_consistency(first, second).unwrap(), proof);
    }
}

fn ct_file(name: &str) -> serde_json::Value {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/vectors/ct-argon2020",
        name,
    ]
    .iter()
    .collect();
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn b64_hash(v: &serde_json::Value) -> [u8; 32] {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// Real proofs from a production CT log (see the README beside the files):
/// an RFC 6962 log's audit paths, in the order the RFC gives them.
#[test]
fn ct_log_proofs_verify_with_both_verifiers() {
    let sth = ct_file("sth.json");
    let tree_size = sth["tree_size"].as_u64().unwrap();
    let root = b64_hash(&sth["sha256_root_hash"]);
    let entry = base64::engine::general_purpose::STANDARD
        .decode(
            ct_file("entries-10000.json")["entries"][0]["leaf_input"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let audit_path: Vec<[u8; 32]> = ct_file("proof-by-hash-10000.json")["audit_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(b64_hash)
        .collect();
    let inclusion = InclusionProof {
        leaf_index: 10000,
        tree_size,
        leaf_hash: verify_proof::leaf_hash(&entry),
        root_hash: root,
        inclusion_path: audit_path.clone(),
    };
    verify_proof::verify_inclusion(&inclusion).unwrap();
    tlog_tiles::check_record(
        &tlog_path(&audit_path),
        tree_size,
        tlog_tiles::Hash(root),
        10000,
        tlog_tiles::record_hash(&entry),
    )
    .unwrap();
    let mut wrong = inclusion.clone();
    wrong.leaf_index = 10001;
    assert!(verify_proof::verify_inclusion(&wrong).is_err());

    let consistency_path: Vec<[u8; 32]> = ct_file("consistency-3654490-961984011.json")
        ["consistency"]
        .as_array()
        .unwrap()
        .iter()
        .map(b64_hash)
        .collect();
    let consistency = ConsistencyProof {
        first_size: 3_654_490,
        second_size: tree_size,
        first_root: b64_hash(&serde_json::json!(
            "AuIZ5V6sDUj1vn3Y1K85oOaQ7y+FJJKtyRTl1edIKBQ="
        )),
        second_root: root,
        consistency_path: consistency_path.clone(),
    };
    verify_proof::verify_consistency(&consistency).unwrap();
    tlog_tiles::check_tree(
        &tlog_path(&consistency_path),
        tree_size,
        tlog_tiles::Hash(root),
        3_654_490,
        tlog_tiles::Hash(consistency.first_root),
    )
    .unwrap();
    let mut wrong = consistency;
    wrong.first_size += 1;
    assert!(verify_proof::verify_consistency(&wrong).is_err());
}

#[test]
fn proof_json_uses_rfc_9162_names_and_lowercase_hex() {
    let dir = tempfile::tempdir().unwrap();
    let log = reference_log(dir.path());
    let json = serde_json::to_value(log.prove_inclusion(5, 8).unwrap()).unwrap();
    assert_eq!(json["leaf_index"], 5);
    assert_eq!(json["tree_size"], 8);
    assert_eq!(json["leaf_hash"], LEAF_HASHES[5]);
    assert_eq!(json["root_hash"], ROOTS[8]);
    assert_eq!(json["inclusion_path"][0], INCLUSION[2].2[0]);
    let back: InclusionProof = serde_json::from_value(json).unwrap();
    assert_eq!(back, log.prove_inclusion(5, 8).unwrap());

    let json = serde_json::to_value(log.prove_consistency(6, 8).unwrap()).unwrap();
    for field in [
        "first_size",
        "second_size",
        "first_root",
        "second_root",
        "consistency_path",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
    let back: ConsistencyProof = serde_json::from_value(json).unwrap();
    assert_eq!(back, log.prove_consistency(6, 8).unwrap());
}
