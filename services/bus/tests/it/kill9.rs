//! kill -9 of a publishing process loses nothing acknowledged, duplicates
//! nothing, and leaves no hole.
//!
//! The test binary re-invokes itself (this same test, with
//! `TWINLOG_BUS_KILL9_DIR` set) as the child. The child publishes numbered
//! records from several tasks in a loop and prints one line per
//! acknowledged record: `ack <rank> <partition> <offset> <round> <task> <n>`.
//! The parent SIGKILLs it, three rounds on the same bus, then reopens the
//! bus and checks it against the acknowledgements.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use twinlog_bus::conformance::read_range;
use twinlog_bus::{Bus, OutRecord, Position, Topic};

use crate::open;

const DIR_ENV: &str = "TWINLOG_BUS_KILL9_DIR";
const ROUND_ENV: &str = "TWINLOG_BUS_KILL9_ROUND";
const PARTITIONS: u32 = 4;
const TASKS: usize = 4;
const ROUNDS: u32 = 3;
/// Acknowledged records to wait for before a kill.
const ACKS_BEFORE_KILL: usize = 1500;

#[test]
fn kill9_loses_nothing() {
    match std::env::var(DIR_ENV) {
        Ok(dir) => child(&dir),
        Err(_) => parent(),
    }
}

/// The payload of record `n` of `task` in `round`; every 37th is big enough
/// to be chunked.
fn payload(round: u32, task: usize, n: u64) -> Vec<u8> {
    let mut p = format!("{round} {task} {n} ").into_bytes();
    let size = if n % 37 == 0 { 9000 } else { 100 };
    p.resize(size, b'.');
    p
}

fn parse_payload(p: &[u8]) -> (u32, usize, u64) {
    let text = String::from_utf8_lossy(p);
    let mut words = text.split(' ');
    let mut next = || words.next().expect("payload word").to_owned();
    let round = next().parse().expect("round");
    let task = next().parse().expect("task");
    let n = next().parse().expect("n");
    assert_eq!(p.to_vec(), payload(round, task, n), "payload intact");
    (round, task, n)
}

fn child(dir: &str) {
    let round: u32 = std::env::var(ROUND_ENV)
        .expect("round")
        .parse()
        .expect("round number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let bus = open(std::path::Path::new(dir), PARTITIONS);
        let stdout = Arc::new(Mutex::new(std::io::stdout()));
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let bus = Arc::clone(&bus);
            let stdout = Arc::clone(&stdout);
            handles.push(tokio::spawn(async move {
                let key = format!("1065403522429{task}").into_bytes();
                let mut n: u64 = 0;
                loop {
                    let batch = 1 + n % 3;
                    let records: Vec<OutRecord> = (n..n + batch)
                        .map(|i| OutRecord {
                            topic: Topic::ALL[(i % 5) as usize],
                            key: key.clone(),
                            payload: payload(round, task, i),
                            timestamp_ms: i as i64,
                        })
                        .collect();
                    let positions = bus.publish(records).await.expect("publish");
                    let mut lines = String::new();
                    for (i, p) in (n..).zip(positions) {
                        lines.push_str(&format!(
                            "ack {} {} {} {round} {task} {i}\n",
                            p.topic.rank(),
                            p.partition,
                            p.offset
                        ));
                    }
                    let mut out = stdout.lock().expect("stdout");
                    out.write_all(lines.as_bytes()).expect("write stdout");
                    out.flush().expect("flush stdout");
                    n += batch;
                }
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
    });
}

type Ack = (Position, u32, usize, u64);

fn parse_ack(line: &str) -> Option<Ack> {
    let rest = line.strip_prefix("ack ")?;
    let w: Vec<&str> = rest.split(' ').collect();
    let topic = Topic::from_rank(w[0].parse().ok()?)?;
    Some((
        Position {
            topic,
            partition: w[1].parse().ok()?,
            offset: w[2].parse().ok()?,
        },
        w[3].parse().ok()?,
        w[4].parse().ok()?,
        w[5].parse().ok()?,
    ))
}

fn parent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acks: Vec<Ack> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["kill9::kill9_loses_nothing", "--exact", "--nocapture"])
            .env(DIR_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let lines = Arc::new(Mutex::new(Vec::<Ack>::new()));
        let reader = {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(ack) = parse_ack(&line) {
                        lines.lock().expect("lines").push(ack);
                    }
                }
            })
        };
        let started = Instant::now();
        while lines.lock().expect("lines").len() < ACKS_BEFORE_KILL {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "child made too little progress"
            );
            if let Some(status) = child.try_wait().expect("child status") {
                panic!("child exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Kill at a point that varies from round to round.
        std::thread::sleep(Duration::from_millis(3 + 7 * u64::from(round)));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap child");
        reader.join().expect("reader thread");
        let round_acks = std::mem::take(&mut *lines.lock().expect("lines"));
        eprintln!(
            "round {round}: {} records acknowledged before SIGKILL",
            round_acks.len()
        );
        acks.extend(round_acks);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bus = open(dir.path(), PARTITIONS);
        // Everything on the bus, by position; read_range checks that the
        // offsets of each topic-partition are contiguous from 0.
        let mut stored: BTreeMap<Position, (u32, usize, u64)> = BTreeMap::new();
        for topic in Topic::ALL {
            for partition in 0..PARTITIONS {
                let end = bus.end_offset(topic, partition).await.expect("end");
                for r in read_range(&*bus, topic, partition, 0, end).await {
                    stored.insert(r.position(), parse_payload(&r.payload));
                }
            }
        }
        // Every acknowledged record is there, where it was acknowledged.
        for (p, round, task, n) in &acks {
            assert_eq!(
                stored.get(p),
                Some(&(*round, *task, *n)),
                "acknowledged record at {p:?} lost"
            );
        }
        // Per (round, task), the stored numbers are exactly 0..m: no
        // duplicate, no hole; at most one unacknowledged batch (<= 3
        // records, in flight at the kill) beyond the acknowledged ones.
        let mut numbers: BTreeMap<(u32, usize), Vec<u64>> = BTreeMap::new();
        for (round, task, n) in stored.values() {
            numbers.entry((*round, *task)).or_default().push(*n);
        }
        let mut acked_max: BTreeMap<(u32, usize), u64> = BTreeMap::new();
        for (_, round, task, n) in &acks {
            let m = acked_max.entry((*round, *task)).or_default();
            *m = (*m).max(*n);
        }
        for ((round, task), mut ns) in numbers {
            ns.sort_unstable();
            let m = ns.len() as u64;
            assert_eq!(
                ns,
                (0..m).collect::<Vec<_>>(),
                "round {round} task {task}: duplicate or hole"
            );
            let acked = acked_max.get(&(round, task)).map_or(0, |a| a + 1);
            assert!(
                m >= acked && m <= acked + 3,
                "round {round} task {task}: {m} stored, {acked} acknowledged"
            );
        }
        eprintln!(
            "{} records stored, {} acknowledged, over {ROUNDS} kills",
            stored.len(),
            acks.len()
        );
    });
}
