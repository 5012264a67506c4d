//! Crash safety: a worker stopped anywhere (cleanly, or by kill -9) and
//! restarted stores what one uninterrupted run stores, and applies nothing
//! twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use twinlog_query::{Store, StoredChange};

use crate::support::{
    expected_rows, last_seqs, open_bus, open_store, publish, scenario, Item, MapOpener, Worker,
};

/// Every stored change event by partition, in order; checks that the ids
/// run 1, 2, 3, … without a gap.
fn events_by_partition(store: &Store) -> BTreeMap<u32, Vec<StoredChange>> {
    let mut out: BTreeMap<u32, Vec<StoredChange>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let events = store.events_after(after, 10_000).expect("events");
        if events.is_empty() {
            return out;
        }
        for (id, e) in events {
            assert_eq!(id, after + 1, "event ids have a gap");
            after = id;
            out.entry(e.partition).or_default().push(e);
        }
    }
}

type Stored = (BTreeMap<Vec<u8>, Vec<u8>>, BTreeMap<u32, Vec<StoredChange>>);

fn stored(store: &Store) -> Stored {
    (store.rows().expect("rows"), events_by_partition(store))
}

/// What one uninterrupted run stores.
async fn reference(items: &[Item]) -> Stored {
    let dir = tempfile::tempdir().expect("a temp dir");
    let bus = open_bus(&dir.path().join("bus"));
    publish(&bus, items).await;
    let worker = Worker::start(&dir.path().join("views"), bus, MapOpener::of(items));
    worker.wait_applied(&last_seqs(items)).await;
    let store = worker.stop().await;
    let out = stored(&store);
    let want = expected_rows(items);
    if out.0 != want {
        for (k, v) in &want {
            match out.0.get(k) {
                None => println!("missing {:?}", String::from_utf8_lossy(k)),
                Some(g) if g != v => println!("differs {:?}", String::from_utf8_lossy(k)),
                _ => {}
            }
        }
        for k in out.0.keys().filter(|k| !want.contains_key(*k)) {
            println!("extra {:?}", String::from_utf8_lossy(k));
        }
    }
    assert_eq!(out.0, want, "one run differs from a rebuild");
    out
}

/// Each partition's records cut in `n` consecutive parts.
fn thirds(items: &[Item], n: usize) -> Vec<Vec<Item>> {
    let mut parts = vec![Vec::new(); n];
    for p in [0, 1] {
        let of_p: Vec<&Item> = items.iter().filter(|i| i.partition == p).collect();
        let size = of_p.len().div_ceil(n);
        for (k, chunk) in of_p.chunks(size).enumerate() {
            parts[k].extend(chunk.iter().map(|i| (*i).clone()));
        }
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_anywhere_stores_what_one_run_stores() {
    let items = scenario(8, 60);
    assert!(items.iter().filter(|i| i.partition == 0).count() > 2 * twinlog_bus::READ_RECORDS_MAX);
    let (rows, events) = reference(&items).await;

    let dir = tempfile::tempdir().expect("a temp dir");
    let bus = open_bus(&dir.path().join("bus"));
    let views = dir.path().join("views");
    let mut published = Vec::new();
    let mut partial = 0;
    for part in thirds(&items, 3) {
        publish(&bus, &part).await;
        published.extend(part);
        let through = last_seqs(&published);
        for pause_ms in [0, 2, 5, 15, 40] {
            let worker = Worker::start_with(&views, bus.clone(), MapOpener::of(&items), 100);
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            let store = worker.stop().await;
            let applied: Vec<Option<u64>> = (0..2)
                .map(|p| store.applied_through(p).expect("applied_through"))
                .collect();
            if through.iter().any(|(p, t)| applied[*p as usize] < Some(*t)) {
                partial += 1;
            }
        }
        let worker = Worker::start(&views, bus.clone(), MapOpener::of(&items));
        worker.wait_applied(&through).await;
        worker.stop().await;
    }
    println!("{partial} stops left a partition behind");
    let store = open_store(&views);
    let (got_rows, got_events) = stored(&store);
    assert_eq!(got_rows, rows, "rows differ from one uninterrupted run");
    assert_eq!(
        got_events, events,
        "change events differ from one uninterrupted run"
    );
}

const CHILD_DIR: &str = "TWINLOG_QUERY_CHILD_DIR";
const KILL_CUSTOMERS: u32 = 10;
const KILL_ROUNDS: u32 = 60;

/// The worker process that `kill_9_anywhere_loses_and_repeats_nothing`
/// starts and kills; it runs until it applied every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of kill_9_anywhere_loses_and_repeats_nothing"]
async fn child_worker() {
    let dir = std::env::var(CHILD_DIR).expect("started by the kill -9 test");
    let dir = Path::new(&dir);
    let items = scenario(KILL_CUSTOMERS, KILL_ROUNDS);
    let bus = open_bus(&dir.join("bus"));
    let worker = Worker::start_with(&dir.join("views"), bus, MapOpener::of(&items), 50);
    worker.wait_applied(&last_seqs(&items)).await;
    worker.stop().await;
}

fn child(dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["crash::child_worker", "--exact", "--ignored", "--quiet"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child starts")
}

#[test]
fn kill_9_anywhere_loses_and_repeats_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let items = scenario(KILL_CUSTOMERS, KILL_ROUNDS);
    let (rows, events) = rt.block_on(reference(&items));
    let dir = tempfile::tempdir().expect("a temp dir");
    rt.block_on(async {
        let bus = open_bus(&dir.path().join("bus"));
        publish(&bus, &items).await;
    });
    let last = last_seqs(&items);
    let mut states = Vec::new();
    // A fresh process spends about a second (debug build) on its first
    // record (the phone-number metadata the eligibility rule loads), so the
    // kills spread over the time after it.
    for delay_ms in [1400, 1700, 2000, 2300, 2600, 2900] {
        let mut c = child(dir.path());
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL; an error only if it already ended by itself.
        let _ = c.kill();
        let status = c.wait().expect("the child is reaped");
        let store = open_store(&dir.path().join("views"));
        let applied: Vec<Option<u64>> = (0..2)
            .map(|p| store.applied_through(p).expect("applied_through"))
            .collect();
        states.push(applied);
        if status.success() {
            break; // it finished before its kill
        }
    }
    println!("applied_through after each kill: {states:?}");
    let started = std::time::Instant::now();
    let status = child(dir.path()).wait().expect("the last child ends");
    assert!(status.success(), "the last worker failed");
    println!("the last child ran {:?}", started.elapsed());
    let store = open_store(&dir.path().join("views"));
    for (p, t) in &last {
        assert_eq!(store.applied_through(*p).expect("applied"), Some(*t));
    }
    let (got_rows, got_events) = stored(&store);
    assert_eq!(got_rows, rows, "rows differ after kill -9s");
    assert_eq!(got_events, events, "change events differ after kill -9s");
}
