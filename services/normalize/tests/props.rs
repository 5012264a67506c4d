//! Property tests: no input makes `normalize` panic, and its JSON reader agrees
//! with serde_json on what is well-formed JSON.

use proptest::prelude::*;
use serde_json::Value;
use twinlog_normalize::{normalize, IngestContext, NormalizeError};

const CTX: IngestContext = IngestContext { ingest_time_ms: 7 };

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("whatsapp_business_account"),
            Just("messages"),
            Just("history"),
            Just("smb_message_echoes"),
            Just("smb_app_state_sync"),
            Just("account_update"),
            Just("text"),
            Just("edit"),
            Just("1763380800"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let key = prop_oneof![
            Just("object".to_owned()),
            Just("entry".to_owned()),
            Just("id".to_owned()),
            Just("time".to_owned()),
            Just("changes".to_owned()),
            Just("field".to_owned()),
            Just("value".to_owned()),
            Just("messages".to_owned()),
            Just("statuses".to_owned()),
            Just("history".to_owned()),
            Just("threads".to_owned()),
            Just("type".to_owned()),
            Just("timestamp".to_owned()),
            Just("contacts".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON node of `v`, by a path of child positions.
fn node_count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(node_count).sum(),
        Value::Object(o) => o.values().map(node_count).sum(),
        _ => 0,
    }
}

/// Replaces the `n`-th node (pre-order) with `with`.
fn replace_nth(v: &mut Value, n: &mut usize, with: &Value) -> bool {
    if *n == 0 {
        *v = with.clone();
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| replace_nth(c, n, with)),
        Value::Object(o) => o.values_mut().any(|c| replace_nth(c, n, with)),
        _ => false,
    }
}

fn fixtures() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/webhooks");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = normalize(&bytes, &CTX);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let _ = normalize(v.to_string().as_bytes(), &CTX);
        let wrapped = serde_json::json!({"object": "whatsapp_business_account", "entry": [
            {"id": "1", "changes": [{"field": "messages", "value": v.clone()}]}]});
        let _ = normalize(wrapped.to_string().as_bytes(), &CTX);
    }

    /// A real fixture with one node swapped for an arbitrary value: normalises or
    /// errors, never panics; when it normalises, every change is represented and
    /// every event carries the hash.
    #[test]
    fn mutated_fixtures_never_panic(pick in any::<prop::sample::Index>(), node in any::<prop::sample::Index>(), v in arb_json()) {
        let all = fixtures();
        let mut doc = all[pick.index(all.len())].clone();
        let mut n = node.index(node_count(&doc));
        replace_nth(&mut doc, &mut n, &v);
        let body = doc.to_string();
        if let Ok(events) = normalize(body.as_bytes(), &CTX) {
            // Every change yields at least one event.
            let changes: usize = doc["entry"].as_array().map_or(0, |entries| {
                entries.iter().map(|e| e["changes"].as_array().map_or(0, Vec::len)).sum()
            });
            prop_assert!(events.len() >= changes);
            for e in events {
                let env = e.envelope.unwrap();
                prop_assert_eq!(env.body_sha256.len(), 32);
                prop_assert_eq!(env.ingest_time_ms, 7);
            }
        }
    }

    /// Our reader and serde_json agree on well-formedness (depth kept shallow).
    #[test]
    fn agrees_with_serde_json_on_syntax(s in r#"[ \t\n{}\[\]:,"\\a-z0-9.eE+\-]{0,40}"#) {
        let serde_ok = serde_json::from_str::<Value>(&s).is_ok();
        let ours = normalize(s.as_bytes(), &CTX);
        let syntax_err = matches!(ours, Err(NormalizeError::InvalidJson { .. } | NormalizeError::Empty));
        prop_assert_eq!(serde_ok, !syntax_err, "{:?} -> {:?}", s, ours);
    }
}
