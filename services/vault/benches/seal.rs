//! Seal throughput for a warm customer (key cached) with a 200-byte
//! plaintext, and tag throughput.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use twinlog_vault::Vault;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .open()
        .expect("open sled");
    let tree = db.open_tree("vault").expect("open tree");
    let mut vault = Vault::create(&dir.path().join("keys"), tree).expect("create vault");
    let customer = [0xC0u8; 16];
    let plaintext = [0x5Au8; 200];
    // Warm the customer: its key is derived, persisted and cached.
    vault
        .seal(&customer, b"warm-up", b"", &plaintext)
        .expect("seal");

    let mut group = c.benchmark_group("vault");
    group.throughput(Throughput::Elements(1));
    let mut seq = 0u64;
    group.bench_function("seal_200B_warm_customer", |b| {
        b.iter_batched(
            || {
                seq += 1;
                seq
            },
            |seq| {
                let natural_key = seq.to_be_bytes();
                vault
                    .seal(&customer, &natural_key, &natural_key, &plaintext)
                    .expect("seal")
            },
            BatchSize::SmallInput,
        )
    });
    let pseudonymizer = vault.pseudonymizer();
    group.bench_function("tag_phone", |b| {
        b.iter(|| pseudonymizer.tag("phone", std::hint::black_box(b"+15551234567")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
