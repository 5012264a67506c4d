//! The OpenAPI 3.1 document of the query API. The row schemas are derived
//! from the `.proto` files at build time (see `build.rs`), as `pbjson`
//! writes them; the envelopes and routes are written here.

use serde_json::{json, Map, Value};

const VIEW_SCHEMAS: &str = include_str!(concat!(env!("OUT_DIR"), "/view_schemas.json"));

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn page_of(row: &str) -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": { "type": "array", "items": schema_ref(row) },
            "next_cursor": { "type": "string", "description": "opaque; pass as `cursor` for the next page; absent on the last page" }
        },
        "additionalProperties": false
    })
}

fn param(name: &str, location: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "in": location,
        "required": location == "path",
        "description": description,
        "schema": schema
    })
}

fn string_param(name: &str, location: &str, description: &str) -> Value {
    param(name, location, description, json!({"type": "string"}))
}

fn paging() -> Vec<Value> {
    vec![
        param(
            "limit",
            "query",
            "rows per page, 1 to 1000 (default 100)",
            json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        ),
        string_param("cursor", "query", "the previous page's next_cursor"),
    ]
}

fn day_range() -> Vec<Value> {
    vec![
        param(
            "from",
            "query",
            "first day, YYYY-MM-DD (UTC), inclusive",
            json!({"type": "string", "format": "date"}),
        ),
        param(
            "to",
            "query",
            "last day, YYYY-MM-DD (UTC), inclusive",
            json!({"type": "string", "format": "date"}),
        ),
    ]
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref("Error") } }
    })
}

/// A GET operation answering `schema` as JSON (or `media`).
fn get(summary: &str, parameters: Vec<Value>, media: &str, schema: Value) -> Value {
    json!({
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {
                "200": { "description": "OK", "content": { media: { "schema": schema } } },
                "400": error_response("a bad parameter"),
                "401": error_response("no or unknown bearer token"),
                "404": error_response("not found, or not visible to this token")
            }
        }
    })
}

fn customer_param() -> Value {
    string_param(
        "customer",
        "path",
        "customer id, base64url without padding (or standard base64)",
    )
}

/// The document.
pub fn openapi() -> Value {
    let mut schemas: Map<String, Value> = serde_json::from_str(VIEW_SCHEMAS).unwrap_or_default();
    let number_param = string_param("number", "query", "only this phone_number_id");
    let conversation_filters = {
        let mut p = vec![
            number_param.clone(),
            string_param("customer", "query", "only this customer id (base64url)"),
            param(
                "handler",
                "query",
                "only conversations handled by",
                json!({"type": "string", "enum": ["bot", "human"]}),
            ),
        ];
        p.extend(paging());
        p
    };
    let mut billing = vec![number_param.clone()];
    billing.extend(day_range());
    let mut billing_paged = billing.clone();
    billing_paged.extend(paging());
    let mut summary = billing.clone();
    summary.push(param(
        "group_by",
        "query",
        "how to group the totals (default number)",
        json!({"type": "string", "enum": ["number", "day", "channel", "category"]}),
    ));
    let mut messages = vec![
        string_param("number", "path", "the business phone_number_id"),
        customer_param(),
    ];
    messages.extend(paging());
    let totals = json!({
        "type": "object",
        "required": ["currency", "messages", "billable", "cost_micros"],
        "properties": {
            "currency": {"type": "string"},
            "messages": {"type": "integer", "minimum": 0},
            "billable": {"type": "integer", "minimum": 0},
            "cost_micros": {"type": "integer"},
            "key": {"type": "string"}
        },
        "additionalProperties": false
    });
    let extra = json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "string"}}, "additionalProperties": false
        },
        "NumberHealthPage": page_of("NumberHealth"),
        "ContactRowPage": page_of("ContactRow"),
        "ConversationRowPage": page_of("ConversationRow"),
        "TimelineMessagePage": page_of("TimelineMessage"),
        "LedgerEntryPage": page_of("LedgerEntry"),
        "SavingsPage": page_of("Savings"),
        "BillingTotals": totals,
        "BillingSummary": {
            "type": "object",
            "required": ["group_by", "groups", "total"],
            "properties": {
                "group_by": {"type": "string", "enum": ["number", "day", "channel", "category"]},
                "from": {"type": "string"},
                "to": {"type": "string"},
                "groups": {"type": "array", "items": schema_ref("BillingTotals")},
                "total": schema_ref("BillingTotals")
            },
            "additionalProperties": false
        },
        "ChangeFeedItem": {
            "description": "the data of one `change` server-sent event; its SSE id is `id`",
            "type": "object",
            "required": ["id", "partition", "phone_number_id", "change"],
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "partition": {"type": "integer", "minimum": 0},
                "phone_number_id": {"type": "string"},
                "change": schema_ref("ChangeEvent")
            },
            "additionalProperties": false
        },
        "InclusionProof": {
            "type": "object",
            "required": ["leaf_index", "tree_size", "leaf_hash", "root_hash", "inclusion_path"],
            "properties": {
                "leaf_index": {"type": "integer", "minimum": 0},
                "tree_size": {"type": "integer", "minimum": 1},
                "leaf_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "root_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "inclusion_path": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}
            },
            "additionalProperties": false
        },
        "AuditRecordWithProof": {
            "type": "object",
            "required": ["partition", "seq", "record", "record_base64", "proof"],
            "properties": {
                "partition": {"type": "integer", "minimum": 0},
                "seq": {"type": "string", "pattern": "^[0-9]+$"},
                "record": schema_ref("AuditRecord"),
                "record_base64": {"type": "string", "contentEncoding": "base64", "description": "the leaf: the record's exact bytes"},
                "proof": schema_ref("InclusionProof")
            },
            "additionalProperties": false
        },
        "SignedCheckpoint": {
            "type": "object",
            "required": ["partition", "size", "note"],
            "properties": {
                "partition": {"type": "integer", "minimum": 0},
                "size": {"type": "string", "pattern": "^[0-9]+$"},
                "note": {"type": "string", "description": "C2SP signed note of a tlog-checkpoint"}
            },
            "additionalProperties": false
        }
    });
    if let Value::Object(extra) = extra {
        schemas.extend(extra);
    }
    let paths = json!({
        "/v1/numbers": get("Number health, by phone_number_id", paging(), "application/json", schema_ref("NumberHealthPage")),
        "/v1/numbers/{id}": get("One number's health", vec![string_param("id", "path", "phone_number_id")], "application/json", schema_ref("NumberHealth")),
        "/v1/contacts": get("Contacts, by customer id", paging(), "application/json", schema_ref("ContactRowPage")),
        "/v1/contacts/{id}": get("One contact", vec![string_param("id", "path", "customer id, base64url")], "application/json", schema_ref("ContactRow")),
        "/v1/conversations": get("Conversations (number x customer) with window and handoff state", conversation_filters.clone(), "application/json", schema_ref("ConversationRowPage")),
        "/v1/conversations/{number}/{customer}": get("One conversation", vec![string_param("number", "path", "the business phone_number_id"), customer_param()], "application/json", schema_ref("ConversationRow")),
        "/v1/conversations/{number}/{customer}/messages": get("A conversation's timeline, oldest first", messages, "application/json", schema_ref("TimelineMessagePage")),
        "/v1/handoff": get("Conversations by handler; human (the default) lists those staff took over", conversation_filters, "application/json", schema_ref("ConversationRowPage")),
        "/v1/billing/summary": get("Message counts, billable counts and cost, grouped", summary, "application/json", schema_ref("BillingSummary")),
        "/v1/billing/entries": get("Ledger entries, in order of creation per partition", billing_paged.clone(), "application/json", schema_ref("LedgerEntryPage")),
        "/v1/billing/savings": get("What app-side traffic would have cost through the API", billing_paged, "application/json", schema_ref("SavingsPage")),
        "/v1/changes": get(
            "The change feed (server-sent events named `change`); resumes after Last-Event-ID",
            vec![
                string_param("Last-Event-ID", "header", "resume after this event id"),
                param("after", "query", "resume after this event id (when no Last-Event-ID)", json!({"type": "integer", "minimum": 0})),
            ],
            "text/event-stream",
            json!({"type": "string", "description": "each event's data is a ChangeFeedItem", "contentSchema": schema_ref("ChangeFeedItem")})
        ),
        "/v1/audit/{partition}/records/{seq}": get(
            "An audit record with its inclusion proof",
            vec![
                param("partition", "path", "audit shard", json!({"type": "integer", "minimum": 0})),
                param("seq", "path", "record seq", json!({"type": "integer", "minimum": 0})),
                param("tree_size", "query", "prove in this tree size (default: the current size)", json!({"type": "integer", "minimum": 1})),
            ],
            "application/json",
            schema_ref("AuditRecordWithProof")
        ),
        "/v1/audit/{partition}/checkpoint": get(
            "The latest signed checkpoint of an audit shard",
            vec![param("partition", "path", "audit shard", json!({"type": "integer", "minimum": 0}))],
            "application/json",
            schema_ref("SignedCheckpoint")
        ),
        "/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {"type": "object"} } } } } } },
        "/metrics": { "get": { "summary": "Prometheus metrics (OpenMetrics text)", "security": [], "responses": { "200": { "description": "OK", "content": { "application/openmetrics-text": { "schema": {"type": "string"} } } } } } },
        "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "OK", "content": { "text/plain": { "schema": {"type": "string"} } } } } } },
        "/readyz": { "get": { "summary": "Ready once the worker caught up at start", "security": [], "responses": {
            "200": { "description": "ready", "content": { "text/plain": { "schema": {"type": "string"} } } },
            "503": { "description": "catching up", "content": { "text/plain": { "schema": {"type": "string"} } } }
        } } }
    });
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "twinlog query API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read API over twinlog's views. Rows use the canonical protobuf JSON of views.proto (original field names, 64-bit integers as strings, bytes as base64, enums by name, default values left out)."
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas
        },
        "paths": paths
    })
}
