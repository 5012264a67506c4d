//! The Apache Kafka broker that tests run against, shared by every test
//! binary of the workspace.
//!
//! The broker comes from `KAFKA_BOOTSTRAP` (the test command starts one).
//! Without it, under CI (`CI` set) every caller panics, so a Kafka test
//! can never pass empty; elsewhere the first caller starts a broker with
//! `deploy/kafka/kafka.sh start` and a watchdog process stops it
//! (`kafka.sh stop --clean DIR`) when the test process exits.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("deploy/kafka/kafka.sh").is_file())
        .expect("the repository root (with deploy/kafka/kafka.sh) above CARGO_MANIFEST_DIR")
        .to_path_buf()
}

/// A broker this process started, stopped by a watchdog when it exits.
struct Broker {
    bootstrap: String,
}

/// The bootstrap address of the broker the tests use.
pub fn bootstrap() -> &'static str {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    &BROKER
        .get_or_init(|| {
            if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
                if !b.is_empty() {
                    return Broker { bootstrap: b };
                }
            }
            if std::env::var_os("CI").is_some() {
                panic!(
                    "KAFKA_BOOTSTRAP is not set under CI: the test command (tests/run.sh) must start \
                     the broker with `deploy/kafka/kafka.sh start` and export KAFKA_BOOTSTRAP"
                );
            }
            start_broker()
        })
        .bootstrap
}

fn start_broker() -> Broker {
    let script = repo_root().join("deploy/kafka/kafka.sh");
    eprintln!(
        "KAFKA_BOOTSTRAP is not set: starting a broker with {}",
        script.display()
    );
    let out = Command::new(&script)
        .arg("start")
        .stderr(Stdio::inherit())
        .output()
        .expect("run kafka.sh start");
    assert!(
        out.status.success(),
        "kafka.sh start failed ({})",
        out.status
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 from kafka.sh");
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("kafka.sh start printed no {name}: {text:?}"))
            .to_owned()
    };
    let bootstrap = var("KAFKA_BOOTSTRAP");
    let dir = var("KAFKA_DIR");
    // The guard: a process of its own group (so a Ctrl-C on the tests does
    // not kill it first) that stops the broker once this process is gone.
    // It must outlive this process, so it is never waited for.
    let pid = std::process::id();
    #[allow(clippy::zombie_processes)]
    Command::new("bash")
        .arg("-c")
        .arg(r#"while kill -0 "$0" 2>/dev/null; do sleep 0.5; done; exec "$1" stop --clean "$2""#)
        .arg(pid.to_string())
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the broker's stop guard");
    Broker { bootstrap }
}

/// A topic prefix of its own for one test: `t-<random>.`.
pub fn prefix() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos(),
    );
    format!("t-{:016x}.", h.finish())
}
