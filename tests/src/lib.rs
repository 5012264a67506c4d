//! Support for twinlog's end-to-end tests: where the fixtures are, and how to
//! fold them. The tests themselves live in `it/`, one test binary.

use std::path::{Path, PathBuf};

use twinlog_normalize::{normalize, IngestContext};
use twinlog_proto::v1::{IngestEvent, Source};

/// The repository's own webhook fixtures.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks")
}

/// The shared fixtures beside the repository, when present (CI has them).
pub fn shared_fixtures_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/webhooks");
    dir.is_dir().then_some(dir)
}

/// Every `*.json` in a folder, sorted by name.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The repository's fixtures, as (name, body), sorted by name.
pub fn fixtures() -> Vec<(String, Vec<u8>)> {
    json_files(&fixtures_dir())
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let body =
                std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (name, body)
        })
        .collect()
}

/// Normalises bodies into inputs with sources numbered from `offset`.
pub fn inputs(bodies: &[&[u8]], ingest_time_ms: i64) -> Vec<(IngestEvent, Source)> {
    let mut out = Vec::new();
    for body in bodies {
        let events = normalize(body, &IngestContext { ingest_time_ms })
            .unwrap_or_else(|e| panic!("fixture does not normalise: {e}"));
        for event in events {
            let offset = i64::try_from(out.len()).unwrap_or(i64::MAX);
            out.push((
                event,
                Source {
                    topic: "test".into(),
                    partition: 0,
                    offset,
                },
            ));
        }
    }
    out
}

/// Copies a directory tree (a log, with its keys), as an operator would.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    // Keep the owner-only permissions of keys directories.
    let mode = std::fs::metadata(from)?.permissions();
    std::fs::set_permissions(to, mode)
}

/// Every byte of every file under `dir`.
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
