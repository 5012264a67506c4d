//! A seeded simulation: fixture traffic with duplicates, reordering and
//! restarts, folded in random batches. Whatever the faults, the log verifies
//! and equals the fault-free fold of the same deliveries, byte for byte.
//! A failure prints its seed; `SIM_SEED=<seed>` replays it.

use twinlog::Twinlog;
use twinlog_tests::{copy_dir, fixtures, inputs};

/// A small, dependency-free PRNG (splitmix64): the seed is the whole story.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let all = fixtures();
    // Deliveries: each body at least once, some several times, in random order.
    let mut bodies: Vec<&[u8]> = all.iter().map(|(_, b)| b.as_slice()).collect();
    for _ in 0..rng.below(40) {
        let i = rng.below(all.len());
        bodies.push(all[i].1.as_slice());
    }
    for i in (1..bodies.len()).rev() {
        let j = rng.below(i + 1);
        bodies.swap(i, j);
    }
    let deliveries = inputs(
        &bodies,
        1_763_400_000_000 + i64::try_from(rng.below(1 << 20)).unwrap_or(0),
    );

    let root = tempfile::tempdir().expect("temp dir");
    let faulty = root.path().join("faulty");
    let clean = root.path().join("clean");
    drop(Twinlog::init(&faulty).expect("init"));
    copy_dir(&faulty, &clean).expect("copy");

    // The fault-free fold: one batch.
    let mut c = Twinlog::open(&clean, &mut |_, _| {}).expect("open clean");
    c.append(&deliveries).expect("append clean");

    // The faulty fold: random batch sizes, a restart (reopen) between some batches.
    let mut t = Twinlog::open(&faulty, &mut |_, _| {}).expect("open faulty");
    let mut at = 0;
    while at < deliveries.len() {
        let n = 1 + rng.below(12);
        let end = (at + n).min(deliveries.len());
        t.append(&deliveries[at..end]).expect("append batch");
        at = end;
        if rng.below(4) == 0 {
            drop(t);
            t = Twinlog::open(&faulty, &mut |_, _| {}).expect("reopen after restart");
        }
    }
    t.log()
        .verify(&mut |_, _| {})
        .expect("the faulty fold verifies");
    assert_eq!(t.log().size(), c.log().size(), "same number of records");
    assert_eq!(
        t.log().checkpoint().expect("a"),
        c.log().checkpoint().expect("b"),
        "same signed root"
    );
    assert_eq!(t.state(), c.state(), "same engine state");
}

#[test]
fn simulated_traffic_with_faults_folds_like_the_fault_free_run() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a u64")],
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            (0..4).map(|i| base.wrapping_add(i)).collect()
        }
    };
    for seed in seeds {
        let result = std::panic::catch_unwind(|| run(seed));
        if let Err(panic) = result {
            eprintln!("simulation failed with seed {seed}; replay with SIM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}
