//! The log's proofs and checkpoints verify with the Go reference
//! implementations (transparency-dev/merkle and x/mod/sumdb/note) run from
//! `tests/interop/go`, and a tampered proof or note is rejected there.
//! Fails loudly when `go` is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::common::new_log;

fn go_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/go")
}

/// Runs the Go checker on `input`; returns (success, combined output).
fn run_go(input: &Path) -> (bool, String) {
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "the Go interop test needs `go` on PATH (Go 1.22 or later, with access to the Go module proxy): {other:?}"
        ),
    }
    let out = Command::new("go")
        .args(["run", "."])
        .arg(input)
        .current_dir(go_module_dir())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("run `go run .` in tests/interop/go");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn go_reference_implementations_accept_our_proofs_and_reject_tampered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = new_log(dir.path(), 40, 7);
    let size = log.size();

    let mut inclusion = Vec::new();
    for s in [1, 2, 3, 7, 8, 13, 21, 33, 40] {
        for seq in 0..s {
            inclusion.push(log.prove_inclusion(seq, s).unwrap());
        }
    }
    let mut consistency = Vec::new();
    for second in 1..=size {
        for first in 0..=second {
            consistency.push(log.prove_consistency(first, second).unwrap());
        }
    }
    let checkpoint = String::from_utf8(log.checkpoint().unwrap()).unwrap();
    let good = json!({
        "verifier_key": log.verifier_key(),
        "checkpoint": checkpoint,
        "inclusion": inclusion,
        "consistency": consistency,
    });
    let write = |name: &str, value: &serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        path
    };

    let (ok, out) = run_go(&write("good.json", &good));
    assert!(ok, "Go rejected the log's proofs:\n{out}");
    assert!(out.contains("ok: checkpoint"), "{out}");
    assert!(
        out.contains(&format!(
            "{} inclusion proofs (40 against the checkpoint)",
            inclusion.len()
        )),
        "{out}"
    );

    // A flipped byte in one inclusion path element.
    let mut bad = good.clone();
    let element = bad["inclusion"][50]["inclusion_path"][1]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = format!(
        "{}{}",
        if element.starts_with('0') { "1" } else { "0" },
        &element[1..]
    );
    bad["inclusion"][50]["inclusion_path"][1] = json!(flipped);
    let (ok, out) = run_go(&write("bad-inclusion.json", &bad));
    assert!(!ok, "Go accepted a tampered inclusion proof:\n{out}");

    // A consistency proof claimed for the wrong first size.
    let mut bad = good.clone();
    let i = consistency
        .iter()
        .position(|p| p.first_size == 5 && p.second_size == 40)
        .unwrap();
    bad["consistency"][i]["first_size"] = json!(6);
    let (ok, out) = run_go(&write("bad-consistency.json", &bad));
    assert!(!ok, "Go accepted a tampered consistency proof:\n{out}");

    // A checkpoint note whose text was changed after signing.
    let mut bad = good.clone();
    bad["checkpoint"] = json!(checkpoint.replacen("\n40\n", "\n41\n", 1));
    let (ok, out) = run_go(&write("bad-checkpoint.json", &bad));
    assert!(!ok, "Go accepted a tampered checkpoint:\n{out}");
}
