//! Invariant 3: copies of one vault, given the same inputs in the same order,
//! seal into byte-identical values (forgets included).

mod common;

use common::customer;
use proptest::prelude::*;
use twinlog_vault::{ForgetOutcome, Tag, Vault};

#[derive(Debug, Clone)]
enum Op {
    Seal {
        customer: u8,
        natural_key: Vec<u8>,
        aad: u64,
        plaintext: Vec<u8>,
    },
    Forget {
        customer: u8,
    },
}

/// Applies `ops` and returns everything it produced, as bytes.
fn run(vault: &mut Vault, ops: &[Op]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Seal {
                customer: c,
                natural_key,
                aad,
                plaintext,
            } => {
                let sealed = vault
                    .seal(&customer(*c), natural_key, &aad.to_be_bytes(), plaintext)
                    .unwrap();
                assert_eq!(
                    vault
                        .open_sealed(&sealed, &aad.to_be_bytes())
                        .unwrap()
                        .as_deref(),
                    Some(plaintext.as_slice())
                );
                out.push(twinlog_proto::encode(&sealed));
            }
            Op::Forget { customer: c } => {
                let outcome = vault.forget(&customer(*c)).unwrap();
                out.push(format!("{outcome:?}").into_bytes());
            }
        }
    }
    out
}

fn fixed_ops() -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..40u8 {
        ops.push(Op::Seal {
            customer: i % 5,
            natural_key: format!("wamid.{i}").into_bytes(),
            aad: u64::from(i),
            plaintext: format!("message body number {i} for customer {}", i % 5).into_bytes(),
        });
        if i == 20 {
            ops.push(Op::Forget { customer: 2 });
        }
        if i == 30 {
            ops.push(Op::Forget { customer: 7 });
        }
    }
    ops
}

#[test]
fn copied_directories_seal_identically() {
    let base = tempfile::tempdir().unwrap();
    let one = base.path().join("one");
    let two = base.path().join("two");
    let three = base.path().join("three");
    {
        let (mut vault, db) = common::create(&one);
        // Some history before the copy, so the copies share warm customers.
        run(&mut vault, &fixed_ops()[..10]);
        db.flush().unwrap();
    }
    common::copy_dir(&one, &two);
    common::copy_dir(&one, &three);

    let ops = fixed_ops();
    let out_one = {
        let (mut vault, _db) = common::open(&one);
        run(&mut vault, &ops[10..])
    };
    let out_two = {
        let (mut vault, _db) = common::open(&two);
        run(&mut vault, &ops[10..])
    };
    assert_eq!(out_one, out_two);
    assert!(out_one.iter().any(|o| o.starts_with(b"Forgotten")));

    // A copy that is reopened half-way (cold cache, rotated KEK) agrees too.
    let out_three = {
        let (mut vault, db) = common::open(&three);
        let mut out = run(&mut vault, &ops[10..25]);
        db.flush().unwrap();
        drop(vault);
        drop(db);
        let (mut vault, _db) = common::open(&three);
        out.extend(run(&mut vault, &ops[25..]));
        out
    };
    assert_eq!(out_one, out_three);
}

#[test]
fn independent_vaults_do_not_agree() {
    // Sanity: the agreement above comes from the shared key material.
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (mut va, _da) = common::create(a.path());
    let (mut vb, _db) = common::create(b.path());
    let ops = fixed_ops();
    assert_ne!(run(&mut va, &ops[..3]), run(&mut vb, &ops[..3]));
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0u8..6, proptest::collection::vec(any::<u8>(), 0..24), any::<u64>(),
               proptest::collection::vec(any::<u8>(), 0..96))
            .prop_map(|(customer, natural_key, aad, plaintext)| Op::Seal {
                customer,
                natural_key,
                aad,
                plaintext,
            }),
        1 => (0u8..6).prop_map(|customer| Op::Forget { customer }),
    ]
}

fn seeded(seed: [u8; 32]) -> (tempfile::TempDir, Vault, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let vault = Vault::create_from_seed(
        &common::keys_dir(dir.path()),
        db.open_tree("vault").unwrap(),
        &seed,
    )
    .unwrap();
    (dir, vault, db)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn same_seed_same_ops_same_bytes(
        seed in any::<[u8; 32]>(),
        ops in proptest::collection::vec(op_strategy(), 1..60),
    ) {
        let (_d1, mut v1, _db1) = seeded(seed);
        let (_d2, mut v2, _db2) = seeded(seed);
        prop_assert_eq!(run(&mut v1, &ops), run(&mut v2, &ops));
        // Forgotten customers agree too.
        let f1: Vec<Tag> = v1.forgotten().unwrap();
        let f2: Vec<Tag> = v2.forgotten().unwrap();
        prop_assert_eq!(f1, f2);
    }
}

#[test]
fn forget_outcomes_are_deterministic_too() {
    let (_d, mut v, _db) = seeded([1; 32]);
    assert_eq!(v.forget(&customer(1)).unwrap(), ForgetOutcome::NeverKeyed);
}
