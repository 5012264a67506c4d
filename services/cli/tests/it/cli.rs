//! The command line on a log: append, show, proofs, tampering, forget, kill -9.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use twinlog_auditlog::verify_proof::{verify_consistency, verify_inclusion};
use twinlog_auditlog::{ConsistencyProof, InclusionProof};

fn twinlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinlog"))
        .args(args)
        .env_remove("TWINLOG_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("the twinlog binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = twinlog(args);
    assert!(
        out.status.success(),
        "twinlog {:?} failed: {}",
        &args[..args.len().min(6)],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/webhooks");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/webhooks")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A log with every fixture appended.
fn folded_log() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log").to_string_lossy().into_owned();
    let mut args = vec!["append", "--log", &log, "--ingest-time-ms", "1763400000000"];
    let files: Vec<String> = fixtures()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    args.extend(files.iter().map(String::as_str));
    let out = ok(&args);
    let report: serde_json::Value =
        serde_json::from_str(out.trim()).expect("append prints a JSON report");
    assert!(
        report["records"].as_u64().expect("records") > 40,
        "{report}"
    );
    (dir, log)
}

#[test]
fn every_command_has_help() {
    let top = ok(&["--help"]);
    for command in [
        "init",
        "append",
        "tick",
        "normalize",
        "show",
        "verify",
        "proof",
        "checkpoint",
        "forget",
        "up",
        "ingest",
        "engine",
        "topics",
        "reprocess",
    ] {
        assert!(top.contains(command), "{command} missing from --help");
        let help = ok(&[command, "--help"]);
        assert!(help.contains("Usage: twinlog"), "{command} --help: {help}");
    }
    for sub in ["inclusion", "consistency"] {
        assert!(ok(&["proof", sub, "--help"]).contains("--log"));
    }
}

#[test]
fn normalize_prints_json_lines_and_refuses_bad_input_clearly() {
    let out = ok(&[
        "normalize",
        "--ingest-time-ms",
        "1",
        &fixture("status_delivered_read.json"),
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    assert_eq!(lines.len(), 2, "two statuses in one body");
    assert_eq!(lines[0]["status"]["status"], "delivered");
    assert_eq!(lines[1]["status"]["status"], "read");

    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        br#"{"object":"whatsapp_business_account","entry":"oops"}"#,
    )
    .expect("write");
    let out = twinlog(&["normalize", &bad.to_string_lossy()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("$.entry"),
        "the error names the JSON path: {stderr}"
    );
    assert!(out.stdout.is_empty());

    std::fs::write(
        &bad,
        br#"{"object":"whatsapp_business_account","entry":[{"id":"1","#,
    )
    .expect("write");
    let out = twinlog(&["normalize", &bad.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));
}

#[test]
fn append_show_checkpoint_and_proofs_agree_with_an_independent_verifier() {
    let (_dir, log) = folded_log();
    let verified = ok(&["verify", "--log", &log]);
    assert!(verified.starts_with("ok: "), "{verified}");

    let shown: serde_json::Value =
        serde_json::from_str(&ok(&["show", "--log", &log, "--seq", "0"])).expect("json");
    assert_eq!(shown["seq"], 0);
    assert!(shown["leaf"].as_str().is_some_and(|l| !l.is_empty()));
    assert!(["appended", "rejected"].contains(&shown["outcome"].as_str().unwrap_or("")));

    let note = ok(&["checkpoint", "--log", &log]);
    let vkey = ok(&["checkpoint", "--log", &log, "--verifier-key"]);
    let info = twinlog_auditlog::verify_proof::verify_checkpoint(note.as_bytes(), vkey.trim())
        .expect("the checkpoint verifies with the published verifier key");
    let size = info.tree_size;
    assert!(size > 40);

    for seq in [0, 1, size / 2, size - 1] {
        let json = ok(&[
            "proof",
            "inclusion",
            "--log",
            &log,
            "--seq",
            &seq.to_string(),
        ]);
        let proof: InclusionProof = serde_json::from_str(&json).expect("inclusion proof JSON");
        assert_eq!((proof.leaf_index, proof.tree_size), (seq, size));
        assert_eq!(
            proof.root_hash, info.root_hash,
            "proofs are against the signed root"
        );
        verify_inclusion(&proof).expect("inclusion proof verifies");
        // The leaf hash is the hash of the bytes `show` prints.
        let shown: serde_json::Value =
            serde_json::from_str(&ok(&["show", "--log", &log, "--seq", &seq.to_string()]))
                .expect("json");
        assert_eq!(
            shown["leaf_hash"].as_str(),
            Some(hex(&proof.leaf_hash).as_str())
        );
    }
    for from in [1, 7, size / 2, size] {
        let json = ok(&[
            "proof",
            "consistency",
            "--log",
            &log,
            "--from",
            &from.to_string(),
        ]);
        let proof: ConsistencyProof = serde_json::from_str(&json).expect("consistency proof JSON");
        verify_consistency(&proof).expect("consistency proof verifies");
        assert_eq!(proof.second_root, info.root_hash);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn verify_fails_naming(log: &str, expected: &str) {
    let out = twinlog(&["verify", "--log", log]);
    assert!(!out.status.success(), "verify passed on a tampered log");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in: {stderr}"
    );
}

#[test]
fn verify_names_the_first_bad_record_for_each_kind_of_tampering() {
    use twinlog_auditlog::tamper;
    // Each tampering goes through sled directly, as an attacker with disk access would.
    let (_d1, log) = folded_log();
    tamper::flip_record_byte(Path::new(&log), 5, 3).expect("flip a byte");
    verify_fails_naming(&log, "record 5");

    let (_d2, log) = folded_log();
    tamper::remove_record(Path::new(&log), 9).expect("remove a record");
    verify_fails_naming(&log, "record 9");

    let (_d3, log) = folded_log();
    tamper::swap_records(Path::new(&log), 3, 4).expect("swap two records");
    verify_fails_naming(&log, "record 3");

    // A record rewritten with every stored hash recomputed to match: only the
    // signed checkpoints can tell, and verify names the range.
    let (_d4, log) = folded_log();
    tamper::rewrite_record_and_hashes(Path::new(&log), 12, b"a forged record").expect("rewrite");
    verify_fails_naming(&log, "checkpoint at size");
}

#[test]
fn forget_from_the_command_line() {
    let (_dir, log) = folded_log();
    let out = ok(&["forget", "--log", &log, "16505551234"]);
    assert!(out.contains("erasure recorded at seq"), "{out}");
    let out = ok(&["forget", "--log", &log, "+16505551234"]);
    assert!(out.contains("already forgotten"), "{out}");
    assert!(ok(&["verify", "--log", &log]).starts_with("ok: "));
    let out = twinlog(&["forget", "--log", &log, "10000000000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no customer"));
}

#[test]
fn commands_on_a_missing_log_say_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope").to_string_lossy().into_owned();
    let out = twinlog(&["verify", "--log", &missing]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("twinlog init"), "{stderr}");
}

/// Writes `files` webhook bodies of `per_body` inbound messages each, from
/// 300 customers, into `dir`.
fn generated_bodies(dir: &Path, files: usize, per_body: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("mkdir");
    (0..files)
        .map(|f| {
            let messages: Vec<String> = (0..per_body)
                .map(|m| {
                    let n = f * per_body + m;
                    format!(
                        r#"{{"from":"1650555{:04}","id":"wamid.GEN{n:08}","timestamp":"{}","type":"text","text":{{"body":"message {n}"}}}}"#,
                        n % 300,
                        1_763_380_800 + n
                    )
                })
                .collect();
            let body = format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"messages":[{}]}}}}]}}]}}"#,
                messages.join(",")
            );
            let path = dir.join(format!("body-{f:05}.json"));
            std::fs::write(&path, body).expect("write body");
            path.to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn a_kill_9_during_append_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bodies = generated_bodies(&dir.path().join("bodies"), 2_500, 4);
    let clean = dir.path().join("clean").to_string_lossy().into_owned();
    ok(&["init", "--log", &clean]);
    let append_args = |log: &str| -> Vec<String> {
        let mut a: Vec<String> = [
            "append",
            "--log",
            log,
            "--ingest-time-ms",
            "1763400000000",
            "--batch-files",
            "50",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(bodies.iter().cloned());
        a
    };
    // The crashed copies start from the same initial log (same keys).
    let copies: Vec<String> = (0..3)
        .map(|i| {
            let copy = dir.path().join(format!("crashed-{i}"));
            copy_dir(Path::new(&clean), &copy);
            copy.to_string_lossy().into_owned()
        })
        .collect();
    let args = append_args(&clean);
    let started = std::time::Instant::now();
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let clean_run = started.elapsed();
    let clean_checkpoint = ok(&["checkpoint", "--log", &clean]);
    let size_of = |note: &str| -> u64 {
        note.lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .expect("size line")
    };
    let full = size_of(&clean_checkpoint);
    let mut interrupted = 0;

    for (i, log) in copies.iter().enumerate() {
        let args = append_args(log);
        let mut child = Command::new(env!("CARGO_BIN_EXE_twinlog"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn append");
        // Kill at 25%, 50% and 75% of a clean run: mid-batch or between batches.
        std::thread::sleep(clean_run.mul_f64(0.25 * (i as f64 + 1.0)));
        // SIGKILL: no destructor, no flush.
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let at_kill = size_of(&ok(&["checkpoint", "--log", log]));
        eprintln!("copy {i}: {at_kill} of {full} records durable at the kill");
        if at_kill < full {
            interrupted += 1;
        }
        // Resume: append everything again.
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok(&["verify", "--log", log]).starts_with("ok: "));
        assert_eq!(
            ok(&["checkpoint", "--log", log]),
            clean_checkpoint,
            "a crashed and resumed log equals the clean one, byte for byte (copy {i})"
        );
    }
    assert!(
        interrupted > 0,
        "no kill landed before the append finished: the test proved nothing"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
    // Keep owner-only directory modes: the vault refuses a keys dir others can read.
    let mode = std::fs::metadata(from).expect("metadata").permissions();
    std::fs::set_permissions(to, mode).expect("chmod");
}

#[test]
fn tick_fires_the_heartbeat_warning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log").to_string_lossy().into_owned();
    ok(&["append", "--log", &log, &fixture("echo_text.json")]);
    // The echo was sent at 1763380900; a warning is due 10 days later.
    let early: serde_json::Value =
        serde_json::from_str(ok(&["tick", "--log", &log, "--at", "1764244000"]).trim())
            .expect("json");
    assert_eq!(early["idle"], 1, "{early}");
    let due: serde_json::Value =
        serde_json::from_str(ok(&["tick", "--log", &log, "--at", "1764244900"]).trim())
            .expect("json");
    assert_eq!(due["records"], 1, "{due}");
    let size = due["tree_size"].as_u64().expect("size");
    let shown: serde_json::Value = serde_json::from_str(&ok(&[
        "show",
        "--log",
        &log,
        "--seq",
        &(size - 1).to_string(),
    ]))
    .expect("json");
    assert_eq!(
        shown["record"]["heartbeat_changed"]["level"], "HEARTBEAT_LEVEL_WARNING",
        "{shown}"
    );
}

#[test]
fn eligibility_follows_the_dated_table_of_markets() {
    let ask = |number: &str, on: &str| {
        let out = twinlog(&["eligibility", number, "--on", on]);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("eligibility prints JSON");
        (out.status.code(), json)
    };
    // The UK was on the 2025-09-13 list, and supported from 2026-02-01.
    let (code, json) = ask("+44 20 7946 0958", "2025-10-01");
    assert_eq!(
        (code, &json["country"], &json["supported"]),
        (Some(1), &"GB".into(), &false.into())
    );
    let (code, json) = ask("442079460958", "2026-03-01");
    assert_eq!((code, &json["supported"]), (Some(0), &true.into()));
    // South Africa stayed unsupported.
    let (code, json) = ask("27821234567", "2026-03-01");
    assert_eq!((code, &json["country"]), (Some(1), &"ZA".into()));
    // Not a number: an error that says what to give.
    let out = twinlog(&["eligibility", "12"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("international form"));
}

#[test]
fn billing_reconcile_compares_the_ledger_with_metas_pricing_analytics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log").to_string_lossy().into_owned();
    // One API marketing message to a US customer, delivered on 2025-11-17 (PMP).
    ok(&[
        "append",
        "--log",
        &log,
        &fixture("status_sent_pmp.json"),
        &fixture("status_delivered_read.json"),
        &fixture("inbound_text.json"),
    ]);
    let card =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../projections/ratecards/example.csv");
    let card = card.to_string_lossy();
    let reconcile = |volume: u64, cost: &str| {
        let meta = dir.path().join(format!("meta-{volume}.json"));
        std::fs::write(
            &meta,
            format!(
                r#"{{"pricing_analytics":{{"data":[{{"data_points":[{{"start":1763337600,"end":1763424000,"country":"US","pricing_type":"REGULAR","pricing_category":"MARKETING","volume":{volume},"cost":{cost}}}]}}]}}}}"#
            ),
        )
        .expect("write meta");
        let out = ok(&[
            "billing",
            "reconcile",
            "--log",
            &log,
            &meta.to_string_lossy(),
            "--rate-card",
            &card,
        ]);
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines"))
            .collect::<Vec<_>>()
    };
    // Meta agrees: one message at the card's North America marketing rate, $0.025.
    let lines = reconcile(1, "0.025");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["discrepancies"], 0);
    // Meta counts two: one line, the ledger 25,000 micro-units short.
    let lines = reconcile(2, "0.05");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (
            &lines[0]["day"],
            &lines[0]["country"],
            &lines[0]["category"]
        ),
        (&"2025-11-17".into(), &"US".into(), &"marketing".into())
    );
    assert_eq!(
        (&lines[0]["ledger_volume"], &lines[0]["meta_volume"]),
        (&1.into(), &2.into())
    );
    assert_eq!(lines[0]["difference_micros"], -25_000);
    assert_eq!(lines[1]["discrepancies"], 1);
}
