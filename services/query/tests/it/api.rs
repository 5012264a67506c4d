//! The query API over real HTTP: views, auth, pagination, the change feed
//! and the OpenAPI contract.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{customer, expected_rows, number, read_events, Harness, ADMIN, PN1_ONLY};

const CUSTOMERS: u32 = 6;
const ROUNDS: u32 = 3;
/// North America marketing, PMP (example rate card).
const MARKETING_MICROS: i64 = 25_000;

fn cid(p: u32, c: u32) -> String {
    URL_SAFE_NO_PAD.encode(customer(p, c))
}

fn group<'a>(summary: &'a Value, key: &str) -> &'a Value {
    summary["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["key"] == key))
        .unwrap_or_else(|| panic!("no group {key} in {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_http_match_the_records() {
    let h = Harness::start(CUSTOMERS, ROUNDS).await;
    // The store holds exactly the rows of views rebuilt from the records.
    assert_eq!(
        h.worker.store.rows().expect("rows"),
        expected_rows(&h.items),
        "stored rows differ from rebuilt views"
    );

    let numbers = h.json("/v1/numbers", ADMIN).await;
    let ids: Vec<&str> = numbers["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|n| n["phone_number_id"].as_str())
        .collect();
    assert_eq!(ids, ["PN1", "PN2"]);
    let pn2 = h.json("/v1/numbers/PN2", ADMIN).await;
    assert_eq!(pn2["phone_number_id"], "PN2");

    let conversations = h.walk("/v1/conversations", 100, ADMIN).await;
    assert_eq!(
        conversations.len(),
        usize::try_from(2 * CUSTOMERS).unwrap_or(0)
    );
    let of_pn1 = h.walk("/v1/conversations?number=PN1", 100, ADMIN).await;
    assert_eq!(of_pn1.len(), usize::try_from(CUSTOMERS).unwrap_or(0));
    assert!(of_pn1.iter().all(|c| c["phone_number_id"] == "PN1"));

    // Customer 0 of PN1: per round an inbound, an app echo and an API send.
    let path = format!("/v1/conversations/PN1/{}/messages", cid(0, 0));
    let timeline = h.walk(&path, 100, ADMIN).await;
    let channels: Vec<&str> = timeline
        .iter()
        .filter_map(|m| m["channel"].as_str())
        .collect();
    assert_eq!(
        channels,
        ["CHANNEL_CUSTOMER", "CHANNEL_APP", "CHANNEL_API"]
            .repeat(usize::try_from(ROUNDS).unwrap_or(0))
    );
    assert_eq!(timeline[0]["content"]["text"]["body"], "hello 0");
    assert_eq!(timeline[0]["edited"], true, "customer 0 edited its message");
    assert_eq!(timeline[2]["status"], "delivered");
    let row = h
        .json(&format!("/v1/conversations/PN1/{}", cid(0, 0)), ADMIN)
        .await;
    assert_eq!(row["messages"], (3 * ROUNDS).to_string());

    // Handoff: even customers' last echo is recent, so a human holds them.
    let handoff = h.walk("/v1/handoff", 100, ADMIN).await;
    let human: BTreeSet<String> = handoff
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["phone_number_id"].as_str().unwrap_or(""),
                c["customer"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        human.len(),
        usize::try_from(CUSTOMERS).unwrap_or(0),
        "{human:?}"
    );
    assert!(handoff
        .iter()
        .all(|c| c["handler"] == "HANDLER_HUMAN" && c.get("human_until").is_some()));
    let bots = h.walk("/v1/handoff?handler=bot", 100, ADMIN).await;
    assert_eq!(bots.len(), usize::try_from(CUSTOMERS).unwrap_or(0));

    // Billing: app free, API paid.
    let summary = h.json("/v1/billing/summary?group_by=channel", ADMIN).await;
    let api_messages = u64::from(2 * CUSTOMERS * ROUNDS);
    let app_messages = u64::from(2 * (CUSTOMERS / 2) * ROUNDS);
    let api = group(&summary, "api");
    assert_eq!(api["messages"], api_messages);
    assert_eq!(api["billable"], api_messages);
    assert_eq!(
        api["cost_micros"].as_i64(),
        i64::try_from(api_messages)
            .ok()
            .map(|n| n * MARKETING_MICROS)
    );
    assert_eq!(api["currency"], "USD");
    let app = group(&summary, "app");
    assert_eq!(app["messages"], app_messages);
    assert_eq!(app["billable"], 0);
    assert_eq!(app["cost_micros"], 0);
    assert_eq!(group(&summary, "customer")["cost_micros"], 0);
    assert_eq!(summary["total"]["cost_micros"], api["cost_micros"]);
    let empty = h
        .json("/v1/billing/summary?group_by=day&from=2030-01-01", ADMIN)
        .await;
    assert_eq!(empty["groups"], json!([]));

    let entries = h.walk("/v1/billing/entries?number=PN2", 100, ADMIN).await;
    let kinds: BTreeSet<&str> = entries.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(
        kinds.contains("LEDGER_ENTRY_KIND_PENDING") && kinds.contains("LEDGER_ENTRY_KIND_POSTED"),
        "{kinds:?}"
    );
    assert!(entries.iter().all(|e| e["phone_number_id"] == "PN2"));

    let contact = h.json(&format!("/v1/contacts/{}", cid(1, 4)), ADMIN).await;
    assert_eq!(contact["in_address_book"], true);

    // Ops endpoints.
    assert_eq!(h.get("/healthz", None).await.status(), 200);
    assert_eq!(h.get("/readyz", None).await.status(), 200);
    let metrics = h.get("/metrics", None).await.text().await.expect("metrics");
    let applied = format!("twinlog_projector_records_applied_total {}", h.items.len());
    assert!(metrics.contains(&applied), "{metrics}");
    assert!(metrics.contains("twinlog_projector_audit_to_view_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_no_data_and_limited_tokens_see_only_their_numbers() {
    let h = Harness::start(CUSTOMERS, 2).await;
    let conversation = format!("/v1/conversations/PN2/{}", cid(1, 0));
    let paths = [
        "/v1/numbers",
        "/v1/numbers/PN1",
        "/v1/contacts",
        "/v1/conversations",
        conversation.as_str(),
        "/v1/handoff",
        "/v1/billing/summary",
        "/v1/billing/entries",
        "/v1/billing/savings",
        "/v1/changes",
        "/v1/audit/0/records/0",
        "/v1/audit/0/checkpoint",
    ];
    for path in paths {
        for token in [None, Some("wrong-token")] {
            let resp = h.get(path, token).await;
            assert_eq!(resp.status(), 401, "{path} with {token:?}");
            let body: Value = resp.json().await.expect("a JSON error");
            assert!(
                body.get("items").is_none() && body["error"].is_string(),
                "{body}"
            );
        }
    }

    let numbers = h.walk("/v1/numbers", 10, PN1_ONLY).await;
    assert_eq!(numbers.len(), 1);
    assert_eq!(numbers[0]["phone_number_id"], "PN1");
    assert_eq!(h.get("/v1/numbers/PN2", Some(PN1_ONLY)).await.status(), 404);
    assert_eq!(h.get(&conversation, Some(PN1_ONLY)).await.status(), 404);
    assert_eq!(
        h.get(&format!("{conversation}/messages"), Some(PN1_ONLY))
            .await
            .status(),
        404
    );
    assert_eq!(
        h.get(&format!("/v1/contacts/{}", cid(1, 0)), Some(PN1_ONLY))
            .await
            .status(),
        404
    );
    assert_eq!(
        h.get(&format!("/v1/contacts/{}", cid(0, 0)), Some(PN1_ONLY))
            .await
            .status(),
        200
    );

    let conversations = h.walk("/v1/conversations", 4, PN1_ONLY).await;
    assert_eq!(conversations.len(), usize::try_from(CUSTOMERS).unwrap_or(0));
    assert!(conversations.iter().all(|c| c["phone_number_id"] == "PN1"));
    assert!(h
        .walk("/v1/conversations?number=PN2", 4, PN1_ONLY)
        .await
        .is_empty());
    let contacts = h.walk("/v1/contacts", 4, PN1_ONLY).await;
    let pn1_customers: BTreeSet<String> = (0..CUSTOMERS)
        .map(|c| base64::engine::general_purpose::STANDARD.encode(customer(0, c)))
        .collect();
    let seen: BTreeSet<String> = contacts
        .iter()
        .filter_map(|c| c["customer"].as_str().map(String::from))
        .collect();
    assert_eq!(seen, pn1_customers);
    for list in ["/v1/billing/entries", "/v1/billing/savings", "/v1/handoff"] {
        let rows = h.walk(list, 50, PN1_ONLY).await;
        assert!(rows.iter().all(|r| r["phone_number_id"] == "PN1"), "{list}");
    }
    let summary = h
        .json("/v1/billing/summary?group_by=number", PN1_ONLY)
        .await;
    let keys: Vec<&Value> = summary["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| &g["key"])
        .collect();
    assert_eq!(keys, [&json!("PN1")]);
    // Partition 1's record is PN2's: invisible; partition 0's is PN1's.
    assert_eq!(
        h.get("/v1/audit/0/records/3", Some(PN1_ONLY))
            .await
            .status(),
        200
    );

    // The change feed: only PN1's events, and all of them.
    let mut resp = h.get("/v1/changes", Some(PN1_ONLY)).await;
    let events = read_events(&mut resp, usize::MAX, Duration::from_millis(1500)).await;
    let mut admin = h.get("/v1/changes", Some(ADMIN)).await;
    let all = read_events(&mut admin, usize::MAX, Duration::from_millis(1500)).await;
    let pn1: Vec<u64> = all
        .iter()
        .filter(|(_, d)| d["phone_number_id"] == "PN1")
        .map(|(id, _)| *id)
        .collect();
    assert!(!pn1.is_empty());
    assert_eq!(events.iter().map(|(id, _)| *id).collect::<Vec<_>>(), pn1);
    let _ = number(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_have_no_gaps_or_repeats() {
    let h = Harness::start(CUSTOMERS, ROUNDS).await;
    let messages = format!("/v1/conversations/PN1/{}/messages", cid(0, 2));
    for list in [
        "/v1/numbers",
        "/v1/contacts",
        "/v1/conversations",
        "/v1/conversations?number=PN2&handler=human",
        "/v1/billing/entries",
        "/v1/billing/entries?number=PN1&from=2025-07-31&to=2025-07-31",
        "/v1/billing/savings",
        messages.as_str(),
    ] {
        let whole = h.walk(list, 1000, ADMIN).await;
        assert!(!whole.is_empty(), "{list} is empty");
        for limit in [1, 2, 7] {
            let paged = h.walk(list, limit, ADMIN).await;
            assert_eq!(paged, whole, "{list} in pages of {limit}");
        }
        let distinct: BTreeSet<String> = whole.iter().map(Value::to_string).collect();
        assert_eq!(distinct.len(), whole.len(), "{list} repeats a row");
    }
    assert_eq!(
        h.get("/v1/contacts?limit=0", Some(ADMIN)).await.status(),
        400
    );
    assert_eq!(
        h.get("/v1/contacts?limit=1001", Some(ADMIN)).await.status(),
        400
    );
    let numbers_cursor = h.json("/v1/numbers?limit=1", ADMIN).await["next_cursor"].clone();
    let foreign = format!(
        "/v1/contacts?cursor={}",
        numbers_cursor.as_str().unwrap_or("")
    );
    assert_eq!(
        h.get(&foreign, Some(ADMIN)).await.status(),
        400,
        "a cursor of another list"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_resumes_after_last_event_id() {
    let h = Harness::start(CUSTOMERS, 2).await;
    let total = h.worker.store.last_event_id();
    let total_usize = usize::try_from(total).unwrap_or(0);
    assert!(total > 20);
    let mut full = h.get("/v1/changes", Some(ADMIN)).await;
    assert_eq!(
        full.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let everything = read_events(&mut full, total_usize, Duration::from_secs(10)).await;
    assert_eq!(
        everything.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );

    let mut first = h.get("/v1/changes", Some(ADMIN)).await;
    let head = read_events(&mut first, 13, Duration::from_secs(10)).await;
    drop(first);
    let last = head.last().map(|(id, _)| *id).expect("some events");
    let resp = h
        .client
        .get(format!("{}/v1/changes", h.base))
        .bearer_auth(ADMIN)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .expect("reconnect");
    let mut resp = resp;
    let tail = read_events(&mut resp, total_usize - head.len(), Duration::from_secs(10)).await;
    let mut union = head.clone();
    union.extend(tail);
    assert_eq!(
        union, everything,
        "the resumed feed lost or repeated a change"
    );
    // Nothing more is sent until something changes.
    assert!(read_events(&mut resp, 1, Duration::from_millis(300))
        .await
        .is_empty());

    let mut after = h
        .get(&format!("/v1/changes?after={}", total - 1), Some(ADMIN))
        .await;
    let one = read_events(&mut after, 2, Duration::from_millis(500)).await;
    assert_eq!(one.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [total]);
}

/// A validator of `schema` resolving `#/components/...` in `doc`.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Value::Object(m) = &mut root {
        m.insert("components".into(), doc["components"].clone());
    }
    jsonschema::validator_for(&root).expect("a valid schema")
}

fn check(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let v = validator(doc, schema);
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{instance}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_validates_against_the_openapi_document() {
    let h = Harness::start(CUSTOMERS, 2).await;
    let doc = h.json("/openapi.json", ADMIN).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let c = cid(0, 0);
    let calls = [
        ("/v1/numbers", "/v1/numbers".to_string()),
        ("/v1/numbers/{id}", "/v1/numbers/PN1".to_string()),
        ("/v1/contacts", "/v1/contacts".to_string()),
        ("/v1/contacts/{id}", format!("/v1/contacts/{c}")),
        ("/v1/conversations", "/v1/conversations?limit=3".to_string()),
        (
            "/v1/conversations/{number}/{customer}",
            format!("/v1/conversations/PN1/{c}"),
        ),
        (
            "/v1/conversations/{number}/{customer}/messages",
            format!("/v1/conversations/PN1/{c}/messages"),
        ),
        ("/v1/handoff", "/v1/handoff".to_string()),
        (
            "/v1/billing/summary",
            "/v1/billing/summary?group_by=category&from=2025-07-01".to_string(),
        ),
        ("/v1/billing/entries", "/v1/billing/entries".to_string()),
        ("/v1/billing/savings", "/v1/billing/savings".to_string()),
        (
            "/v1/audit/{partition}/records/{seq}",
            "/v1/audit/0/records/5".to_string(),
        ),
        (
            "/v1/audit/{partition}/checkpoint",
            "/v1/audit/0/checkpoint".to_string(),
        ),
    ];
    let mut covered = BTreeSet::new();
    for (template, url) in &calls {
        let op = &doc["paths"][*template]["get"];
        let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{template} has no JSON 200 schema");
        let body = h.json(url, ADMIN).await;
        check(&doc, schema, &body, url);
        covered.insert(template.to_string());
    }
    // A 401 and a 404 answer as documented.
    let error = &doc["paths"]["/v1/numbers"]["get"]["responses"]["401"]["content"]
        ["application/json"]["schema"];
    let resp = h.get("/v1/numbers", None).await;
    check(&doc, error, &resp.json().await.expect("JSON"), "401");
    let resp = h.get("/v1/numbers/PN9", Some(ADMIN)).await;
    assert_eq!(resp.status(), 404);
    check(&doc, error, &resp.json().await.expect("JSON"), "404");
    // The change feed's events.
    let feed = &doc["paths"]["/v1/changes"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"]["contentSchema"];
    let mut resp = h.get("/v1/changes", Some(ADMIN)).await;
    let events = read_events(&mut resp, 200, Duration::from_secs(5)).await;
    assert!(!events.is_empty());
    for (_, data) in &events {
        check(&doc, feed, data, "change event");
    }
    covered.insert("/v1/changes".into());
    // Every documented /v1 route was called.
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .filter(|p| p.starts_with("/v1/"))
        .cloned()
        .collect();
    assert_eq!(documented, covered);
    // A proof that checks: the leaf hash is SHA-256(0x00 || record).
    let record = h.json("/v1/audit/0/records/5", ADMIN).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(record["record_base64"].as_str().unwrap_or(""))
        .expect("base64");
    let mut leaf = vec![0u8];
    leaf.extend_from_slice(&bytes);
    use sha2::Digest as _;
    assert_eq!(
        record["proof"]["leaf_hash"],
        hex::encode(sha2::Sha256::digest(&leaf))
    );
    assert_eq!(record["record"]["seq"], "5");
}
