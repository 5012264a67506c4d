//! Bodies that must be refused: each gives the right error variant, naming where
//! the problem is, and nothing panics.

use expect_test::{expect, Expect};
use twinlog_normalize::{
    normalize, IngestContext, NormalizeError, JSON_DEPTH_MAX, WEBHOOK_BODY_BYTES_MAX,
};

const CTX: IngestContext = IngestContext { ingest_time_ms: 1 };

fn err(body: &[u8]) -> NormalizeError {
    match normalize(body, &CTX) {
        Ok(events) => panic!("accepted: {events:?}"),
        Err(e) => e,
    }
}

fn check(body: &str, expected: Expect) {
    expected.assert_eq(&err(body.as_bytes()).to_string());
}

/// A valid inbound text body from the shared fixtures, to be damaged.
fn inbound_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/webhooks/inbound_text.json"
    );
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn empty_body() {
    assert_eq!(err(b""), NormalizeError::Empty);
    check(
        "  \n",
        expect!["invalid JSON at line 2 column 1: EOF while parsing a value"],
    );
}

#[test]
fn truncated_json() {
    let body = inbound_text();
    let cut = &body[..body.len() / 2];
    let e = err(cut.as_bytes());
    assert!(matches!(e, NormalizeError::InvalidJson { .. }), "{e:?}");
    expect!["invalid JSON at line 18 column 32: EOF while parsing a string"]
        .assert_eq(&e.to_string());
    check(
        r#"{"object":"whatsapp_business_account","entry":[{"#,
        expect!["invalid JSON at line 1 column 49: EOF while parsing an object"],
    );
    check(
        "{\n  \"a\": 1,\n  \"b\" 2\n}",
        expect!["invalid JSON at line 3 column 7: expected `:`"],
    );
}

#[test]
fn non_utf8() {
    let mut body = inbound_text().into_bytes();
    body[40] = 0xFF;
    let e = err(&body);
    assert!(
        matches!(e, NormalizeError::NotUtf8 { offset: 40, .. }),
        "{e:?}"
    );
    expect!["body is not UTF-8: invalid byte at line 2 column 39 (byte offset 40)"]
        .assert_eq(&e.to_string());
}

#[test]
fn too_large() {
    let mut body = inbound_text().into_bytes();
    body.resize(WEBHOOK_BODY_BYTES_MAX + 1, b' ');
    let e = err(&body);
    assert_eq!(
        e,
        NormalizeError::TooLarge {
            len: 3_145_729,
            max: 3_145_728
        }
    );
    expect!["body is 3145729 bytes, above the 3145728-byte limit"].assert_eq(&e.to_string());
    // Exactly at the limit is fine (trailing whitespace is valid JSON).
    body.truncate(WEBHOOK_BODY_BYTES_MAX);
    assert_eq!(normalize(&body, &CTX).unwrap().len(), 1);
}

#[test]
fn nesting_ten_thousand_deep() {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let e = err(deep.as_bytes());
    match &e {
        NormalizeError::TooDeep { max, path } => {
            assert_eq!(*max, JSON_DEPTH_MAX);
            assert_eq!(path, &format!("${}", "[0]".repeat(JSON_DEPTH_MAX)));
        }
        other => panic!("{other:?}"),
    }
    // Also deep inside a real envelope, unterminated, and with objects.
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"x","value":{}"#,
        r#"{"a":"#.repeat(10_000)
    );
    let e = err(body.as_bytes());
    assert!(matches!(e, NormalizeError::TooDeep { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("nesting deeper than 64 at $.entry[0].changes[0].value.a.a.a"),
        "{e}"
    );
    // 64 levels are accepted by the parser (the body is then refused for its shape).
    let ok_depth = "[".repeat(JSON_DEPTH_MAX) + &"]".repeat(JSON_DEPTH_MAX);
    assert!(matches!(
        err(ok_depth.as_bytes()),
        NormalizeError::WrongType { .. }
    ));
}

#[test]
fn wrong_types() {
    check("[]", expect!["expected object at $, found array"]);
    check(
        r#"{"entry":[]}"#,
        expect!["missing required key at $.object"],
    );
    check(
        r#"{"object":"page","entry":[]}"#,
        expect![[r#"expected "whatsapp_business_account" at $.object, found "page""#]],
    );
    check(
        r#"{"object":"whatsapp_business_account"}"#,
        expect!["missing required key at $.entry"],
    );
    check(
        r#"{"object":"whatsapp_business_account","entry":"102290129340398"}"#,
        expect!["expected array at $.entry, found string"],
    );
    check(
        r#"{"object":"whatsapp_business_account","entry":[{"id":102290129340398,"changes":[]}]}"#,
        expect!["expected string at $.entry[0].id, found number"],
    );
    check(
        r#"{"object":"whatsapp_business_account","entry":[{"id":"1","time":true,"changes":[]}]}"#,
        expect!["expected an integer (number or decimal string) at $.entry[0].time, found true"],
    );
    check(
        r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"value":{}}]}]}"#,
        expect!["missing required key at $.entry[0].changes[0].field"],
    );
    check(
        r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":null}]}]}"#,
        expect!["missing required key at $.entry[0].changes[0].value"],
    );
    check(
        r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"history","value":[]}]}]}"#,
        expect!["expected object at $.entry[0].changes[0].value, found array"],
    );
}

#[test]
fn wrong_types_inside_items() {
    let body = inbound_text();
    let swap = |from: &str, to: &str| {
        assert!(body.contains(from), "{from}");
        err(body.replacen(from, to, 1).as_bytes()).to_string()
    };
    expect!["expected an integer (number or decimal string) at $.entry[0].changes[0].value.messages[0].timestamp, found true"]
        .assert_eq(&swap(r#""timestamp": "1763380800""#, r#""timestamp": true"#));
    expect![[r#"expected an integer (number or decimal string) at $.entry[0].changes[0].value.messages[0].timestamp, found "1763380800.5""#]]
        .assert_eq(&swap(r#""timestamp": "1763380800""#, r#""timestamp": "1763380800.5""#));
    expect!["expected an integer (number or decimal string) at $.entry[0].changes[0].value.messages[0].timestamp, found 1.7633808e9"]
        .assert_eq(&swap(r#""timestamp": "1763380800""#, r#""timestamp": 1.7633808e9"#));
    expect!["expected string at $.entry[0].changes[0].value.messages[0].id, found number"]
        .assert_eq(&swap(r#""id": "wamid.IN1""#, r#""id": 7"#));
    expect!["missing required key at $.entry[0].changes[0].value.messages[0].id"]
        .assert_eq(&swap(r#""id": "wamid.IN1","#, ""));
    expect!["expected string at $.entry[0].changes[0].value.messages[0].text.body, found object"]
        .assert_eq(&swap(
            r#""body": "Does it come in another color?""#,
            r#""body": {}"#,
        ));
    expect!["expected object at $.entry[0].changes[0].value.messages[0], found string"]
        .assert_eq(&swap(r#""messages": ["#, r#""messages": ["x","#));
    expect!["expected array at $.entry[0].changes[0].value.contacts, found string"]
        .assert_eq(&swap(r#""contacts": ["#, r#""contacts": "x", "was": ["#));
}

#[test]
fn overflowing_integer_is_refused() {
    let body = inbound_text().replacen(
        r#""timestamp": "1763380800""#,
        r#""timestamp": 99999999999999999999"#,
        1,
    );
    assert!(matches!(
        err(body.as_bytes()),
        NormalizeError::NotAnInteger { .. }
    ));
}
