//! The query API (axum): REST reads of the view store, the change feed
//! (server-sent events), audit records with inclusion proofs, the OpenAPI
//! document, `/metrics`, `/healthz` and `/readyz`. See [`crate::openapi`]
//! for every route, parameter and response.
//!
//! Every `/v1` route needs a bearer token ([`Auth`]); a token limited to
//! some numbers sees only their rows (others are absent: 404 or left out
//! of pages), and only their change events.
//!
//! Pages: `?limit=` (1 to [`PAGE_ROWS_MAX`], default
//! [`PAGE_ROWS_DEFAULT`]) and `?cursor=` (opaque: the `next_cursor` of the
//! previous page). Rows come in key order and a cursor is the key of the
//! last row returned, so walking the pages returns every row that exists
//! throughout the walk exactly once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use prometheus_client::registry::Registry;
use prost::Message as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::error;
use twinlog_projections::Day;
use twinlog_proto::v1::{
    AuditRecord, BillingAggregate, Channel, ContactRow, ConversationRow, Handler, LedgerEntry,
    NumberHealth, Savings, TimelineMessage,
};

use crate::audit::{AuditReadError, AuditReader};
use crate::auth::{Auth, Scope};
use crate::error::StoreError;
use crate::keys;
use crate::projector::Readiness;
use crate::store::{Page, Store};

/// Most rows in one page.
pub const PAGE_ROWS_MAX: usize = 1000;
/// Rows in a page when `limit` is not given.
pub const PAGE_ROWS_DEFAULT: usize = 100;
/// Most change feeds streaming at once; past it `/v1/changes` answers 503.
pub const SSE_STREAMS_MAX: usize = 64;
/// Change events read from the store at a time for one feed.
pub const SSE_EVENTS_PER_READ: usize = 256;
/// Most billing aggregate rows one summary adds up; past it, 422.
pub const SUMMARY_ROWS_MAX: usize = 1_000_000;
/// Most numbers one contact's visibility check reads.
const CONTACT_NUMBERS_MAX: usize = 1024;

/// What the routes share.
#[derive(Clone)]
pub struct ApiState {
    store: Store,
    auth: Arc<Auth>,
    ready: Readiness,
    audit: Option<Arc<dyn AuditReader>>,
    registry: Option<Arc<Registry>>,
    streams: Arc<Semaphore>,
}

impl ApiState {
    /// Reads `store`, checks tokens against `auth`, answers `/readyz` from
    /// `ready`.
    pub fn new(store: Store, auth: Auth, ready: Readiness) -> ApiState {
        ApiState {
            store,
            auth: Arc::new(auth),
            ready,
            audit: None,
            registry: None,
            streams: Arc::new(Semaphore::new(SSE_STREAMS_MAX)),
        }
    }

    /// Serves `/v1/audit/...` from `audit` (404 without).
    pub fn with_audit(mut self, audit: Arc<dyn AuditReader>) -> ApiState {
        self.audit = Some(audit);
        self
    }

    /// Serves `/metrics` from `registry` (404 without).
    pub fn with_registry(mut self, registry: Arc<Registry>) -> ApiState {
        self.registry = Some(registry);
        self
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    v1_router(state.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(state),
    )
}

/// The `/v1` routes and `/openapi.json` alone, for a host that serves its
/// own `/metrics`, `/healthz` and `/readyz` (as `twinlog up` does).
pub fn v1_router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/numbers", get(numbers))
        .route("/v1/numbers/{id}", get(number))
        .route("/v1/contacts", get(contacts))
        .route("/v1/contacts/{id}", get(contact))
        .route("/v1/conversations", get(conversations))
        .route("/v1/conversations/{number}/{customer}", get(conversation))
        .route(
            "/v1/conversations/{number}/{customer}/messages",
            get(messages),
        )
        .route("/v1/handoff", get(handoff))
        .route("/v1/billing/summary", get(billing_summary))
        .route("/v1/billing/entries", get(billing_entries))
        .route("/v1/billing/savings", get(savings))
        .route("/v1/changes", get(changes))
        .route("/v1/audit/{partition}/records/{seq}", get(audit_record))
        .route("/v1/audit/{partition}/checkpoint", get(checkpoint))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(v1)
        .route("/openapi.json", get(openapi_json))
        .with_state(state)
}

/// An API failure, as `{"error": "..."}`.
#[derive(Debug)]
enum ApiError {
    Unauthorized,
    NotFound(String),
    BadRequest(String),
    TooLarge(String),
    Unavailable(String),
    Internal,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        error!(message = "view store read failed", %error);
        ApiError::Internal
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a bearer token is required".into(),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::TooLarge(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

async fn authenticate(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.check(authorization).cloned() {
        Some(scope) => {
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

/// Runs a store read on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::Internal)?
}

fn json_of<M: serde::Serialize>(row: &M) -> Result<Value, ApiError> {
    serde_json::to_value(row).map_err(|error| {
        error!(message = "a view row does not serialise", %error);
        ApiError::Internal
    })
}

fn page_json<M: serde::Serialize>(page: Page<M>) -> ApiResult {
    let items = page
        .items
        .iter()
        .map(|(_, row)| json_of(row))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = json!({ "items": items });
    if let Some(next) = page.next {
        out["next_cursor"] = json!(URL_SAFE_NO_PAD.encode(next));
    }
    Ok(Json(out))
}

fn limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(PAGE_ROWS_DEFAULT),
        Some(n) if (1..=PAGE_ROWS_MAX).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit {n} is not between 1 and {PAGE_ROWS_MAX}"
        ))),
    }
}

/// The key a cursor names; it must lie under `prefix`.
fn cursor(cursor: Option<&str>, prefix: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(c) = cursor else { return Ok(None) };
    match URL_SAFE_NO_PAD.decode(c) {
        Ok(key) if key.starts_with(prefix) => Ok(Some(key)),
        _ => Err(ApiError::BadRequest(
            "the cursor does not belong to this list".into(),
        )),
    }
}

/// A customer id from a path or query: base64url (no padding) or standard
/// base64, as the rows show it.
fn customer_id(id: &str) -> Result<Vec<u8>, ApiError> {
    URL_SAFE_NO_PAD
        .decode(id)
        .or_else(|_| STANDARD.decode(id))
        .map_err(|_| ApiError::BadRequest(format!("customer id {id:?} is not base64")))
}

fn day(value: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    value
        .map(|v| {
            v.parse::<Day>()
                .map(|d| d.to_string())
                .map_err(|_| ApiError::BadRequest(format!("{name} {v:?} is not a YYYY-MM-DD day")))
        })
        .transpose()
}

fn in_range(day: &str, from: Option<&str>, to: Option<&str>) -> bool {
    from.is_none_or(|f| day >= f) && to.is_none_or(|t| day <= t)
}

fn not_found(what: &str) -> ApiError {
    ApiError::NotFound(format!("no {what} here"))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn numbers(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let limit = limit(q.limit)?;
    let prefix = vec![keys::NUMBER];
    let after = cursor(q.cursor.as_deref(), &prefix)?;
    let page = blocking(move || {
        Ok(state
            .store
            .page(&prefix, after.as_deref(), limit, |_, n: &NumberHealth| {
                Ok(scope.sees(&n.phone_number_id))
            })?)
    })
    .await?;
    page_json(page)
}

async fn number(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> ApiResult {
    if !scope.sees(&id) {
        return Err(not_found("such number"));
    }
    let row = blocking(move || Ok(state.store.get::<NumberHealth>(&keys::number(&id))?)).await?;
    Ok(Json(json_of(
        &row.ok_or_else(|| not_found("such number"))?,
    )?))
}

/// Whether `scope` sees a contact: one of the numbers it talked to.
fn sees_contact(store: &Store, scope: &Scope, customer: &[u8]) -> Result<bool, StoreError> {
    if scope.is_all() {
        return Ok(true);
    }
    let index = keys::contact_numbers(customer);
    for key in store.keys_under(&index, CONTACT_NUMBERS_MAX)? {
        if let Some(number) = keys::parts(&key).get(1) {
            if scope.sees(&String::from_utf8_lossy(number)) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn contacts(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let limit = limit(q.limit)?;
    let prefix = vec![keys::CONTACT];
    let after = cursor(q.cursor.as_deref(), &prefix)?;
    let page = blocking(move || {
        let store = &state.store;
        Ok(
            store.page(&prefix, after.as_deref(), limit, |_, c: &ContactRow| {
                sees_contact(store, &scope, &c.customer)
            })?,
        )
    })
    .await?;
    page_json(page)
}

async fn contact(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> ApiResult {
    let customer = customer_id(&id)?;
    let row = blocking(move || {
        if !sees_contact(&state.store, &scope, &customer)? {
            return Ok(None);
        }
        Ok(state.store.get::<ContactRow>(&keys::contact(&customer))?)
    })
    .await?;
    Ok(Json(json_of(
        &row.ok_or_else(|| not_found("such contact"))?,
    )?))
}

#[derive(Deserialize)]
struct ConversationQuery {
    number: Option<String>,
    customer: Option<String>,
    handler: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn conversations(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<ConversationQuery>,
) -> ApiResult {
    conversation_page(state, scope, q, None).await
}

/// Conversations by who handles them: `?handler=human` (the default) lists
/// those a human took over; `bot` the others.
async fn handoff(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<ConversationQuery>,
) -> ApiResult {
    conversation_page(state, scope, q, Some(Handler::Human)).await
}

async fn conversation_page(
    state: ApiState,
    scope: Scope,
    q: ConversationQuery,
    default_handler: Option<Handler>,
) -> ApiResult {
    let limit = limit(q.limit)?;
    let handler = match q.handler.as_deref() {
        None => default_handler,
        Some("bot") => Some(Handler::Bot),
        Some("human") => Some(Handler::Human),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "handler {other:?} is not bot or human"
            )))
        }
    };
    let customer = q.customer.as_deref().map(customer_id).transpose()?;
    let prefix = match &q.number {
        Some(n) => keys::conversations_of(n),
        None => vec![keys::CONVERSATION],
    };
    let after = cursor(q.cursor.as_deref(), &prefix)?;
    let page = blocking(move || {
        Ok(state.store.page(
            &prefix,
            after.as_deref(),
            limit,
            |_, c: &ConversationRow| {
                Ok(scope.sees(&c.phone_number_id)
                    && customer.as_ref().is_none_or(|cu| *cu == c.customer)
                    && handler.is_none_or(|h| c.handler == h as i32))
            },
        )?)
    })
    .await?;
    page_json(page)
}

async fn conversation(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path((number, customer)): Path<(String, String)>,
) -> ApiResult {
    let customer = customer_id(&customer)?;
    if !scope.sees(&number) {
        return Err(not_found("such conversation"));
    }
    let row = blocking(move || {
        Ok(state
            .store
            .get::<ConversationRow>(&keys::conversation(&number, &customer))?)
    })
    .await?;
    Ok(Json(json_of(
        &row.ok_or_else(|| not_found("such conversation"))?,
    )?))
}

async fn messages(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path((number, customer)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult {
    let limit = limit(q.limit)?;
    let customer = customer_id(&customer)?;
    if !scope.sees(&number) {
        return Err(not_found("such conversation"));
    }
    let prefix = keys::timeline(&number, &customer);
    let after = cursor(q.cursor.as_deref(), &prefix)?;
    let page = blocking(move || {
        if !state
            .store
            .contains(&keys::conversation(&number, &customer))?
        {
            return Ok(None);
        }
        Ok(Some(state.store.page(
            &prefix,
            after.as_deref(),
            limit,
            |_, _: &TimelineMessage| Ok(true),
        )?))
    })
    .await?;
    page_json(page.ok_or_else(|| not_found("such conversation"))?)
}

#[derive(Deserialize)]
struct BillingQuery {
    number: Option<String>,
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Totals of one group of a billing summary.
#[derive(Default)]
struct Totals {
    currency: String,
    messages: u64,
    billable: u64,
    cost_micros: i64,
}

impl Totals {
    fn add(&mut self, a: &BillingAggregate) {
        if self.currency.is_empty() {
            self.currency.clone_from(&a.currency);
        }
        self.messages = self.messages.saturating_add(a.messages);
        self.billable = self.billable.saturating_add(a.billable);
        self.cost_micros = self.cost_micros.saturating_add(a.cost_micros);
    }

    fn json(&self) -> Value {
        json!({
            "currency": self.currency,
            "messages": self.messages,
            "billable": self.billable,
            "cost_micros": self.cost_micros,
        })
    }
}

/// The name of a channel in summaries: `app`, `api`, `customer`.
fn channel_name(channel: i32) -> &'static str {
    match Channel::try_from(channel) {
        Ok(Channel::App) => "app",
        Ok(Channel::Api) => "api",
        Ok(Channel::Customer) => "customer",
        _ => "unspecified",
    }
}

async fn billing_summary(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<BillingQuery>,
) -> ApiResult {
    let from = day(q.from.as_deref(), "from")?;
    let to = day(q.to.as_deref(), "to")?;
    let group_by = q.group_by.unwrap_or_else(|| "number".to_string());
    if !["number", "day", "channel", "category"].contains(&group_by.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "group_by {group_by:?} is not number, day, channel or category"
        )));
    }
    let prefix = match &q.number {
        Some(n) => keys::aggregates_of(n),
        None => vec![keys::AGGREGATE],
    };
    let rows = blocking(move || {
        Ok(state
            .store
            .all::<BillingAggregate>(&prefix, SUMMARY_ROWS_MAX)?)
    })
    .await?
    .ok_or_else(|| {
        ApiError::TooLarge(format!(
            "more than {SUMMARY_ROWS_MAX} aggregate rows: narrow the number or the days"
        ))
    })?;
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for a in rows.iter().filter(|a| {
        scope.sees(&a.phone_number_id) && in_range(&a.day, from.as_deref(), to.as_deref())
    }) {
        let key = match group_by.as_str() {
            "number" => a.phone_number_id.clone(),
            "day" => a.day.clone(),
            "channel" => channel_name(a.channel).to_string(),
            _ => a.category.clone(),
        };
        groups.entry(key).or_default().add(a);
        total.add(a);
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(key, t)| {
            let mut v = t.json();
            v["key"] = json!(key);
            v
        })
        .collect();
    let mut out = json!({ "group_by": group_by, "groups": groups, "total": total.json() });
    if let Some(f) = from {
        out["from"] = json!(f);
    }
    if let Some(t) = to {
        out["to"] = json!(t);
    }
    Ok(Json(out))
}

async fn billing_entries(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<BillingQuery>,
) -> ApiResult {
    dated_page(state, scope, q, keys::LEDGER, |e: &LedgerEntry| {
        (&e.phone_number_id, &e.day)
    })
    .await
}

async fn savings(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<BillingQuery>,
) -> ApiResult {
    dated_page(state, scope, q, keys::SAVINGS, |s: &Savings| {
        (&s.phone_number_id, &s.day)
    })
    .await
}

/// A page of rows of `kind` that have a number and a day, filtered by
/// `number`, `from` and `to`.
async fn dated_page<M>(
    state: ApiState,
    scope: Scope,
    q: BillingQuery,
    kind: u8,
    number_and_day: fn(&M) -> (&String, &String),
) -> ApiResult
where
    M: prost::Message + Default + serde::Serialize + Send + 'static,
{
    let limit = limit(q.limit)?;
    let from = day(q.from.as_deref(), "from")?;
    let to = day(q.to.as_deref(), "to")?;
    let prefix = vec![kind];
    let after = cursor(q.cursor.as_deref(), &prefix)?;
    let page = blocking(move || {
        Ok(state
            .store
            .page(&prefix, after.as_deref(), limit, |_, row: &M| {
                let (number, day) = number_and_day(row);
                Ok(scope.sees(number)
                    && q.number.as_ref().is_none_or(|n| n == number)
                    && in_range(day, from.as_deref(), to.as_deref()))
            })?)
    })
    .await?;
    page_json(page)
}

#[derive(Deserialize)]
struct ChangesQuery {
    after: Option<u64>,
}

/// The change feed: every durable change event after `Last-Event-ID` (or
/// `?after=`), then new ones as they are stored. Event ids are the store's
/// event numbers.
async fn changes(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    headers: HeaderMap,
    Query(q): Query<ChangesQuery>,
) -> Result<Response, ApiError> {
    let last = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID is not an event id".into()))?,
        ),
        None => None,
    };
    let mut after = last.or(q.after).unwrap_or(0);
    let permit =
        state.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::Unavailable(format!("{SSE_STREAMS_MAX} change feeds are open"))
        })?;
    let store = state.store.clone();
    let stream = async_stream::stream! {
        let _permit = permit;
        let mut watch = store.subscribe();
        loop {
            watch.borrow_and_update();
            let s = store.clone();
            let read = tokio::task::spawn_blocking(move || s.events_after(after, SSE_EVENTS_PER_READ)).await;
            let events = match read {
                Ok(Ok(events)) => events,
                Ok(Err(error)) => {
                    error!(message = "change feed read failed", %error);
                    break;
                }
                Err(_) => break,
            };
            if events.is_empty() {
                if watch.changed().await.is_err() {
                    break;
                }
                continue;
            }
            for (id, change) in events {
                after = id;
                if !scope.sees(&change.phone_number_id) {
                    continue;
                }
                let data = change_json(id, &change);
                yield Ok::<Event, Infallible>(Event::default().id(id.to_string()).event("change").data(data.to_string()));
            }
        }
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A change event as the feed sends it.
pub(crate) fn change_json(id: u64, change: &crate::store::StoredChange) -> Value {
    json!({
        "id": id.to_string(),
        "partition": change.partition,
        "phone_number_id": change.phone_number_id,
        "change": serde_json::to_value(&change.event).unwrap_or(Value::Null),
    })
}

fn audit_error(error: AuditReadError) -> ApiError {
    match error {
        AuditReadError::UnknownPartition { .. } | AuditReadError::OutOfRange { .. } => {
            ApiError::NotFound(error.to_string())
        }
        error => {
            error!(message = "audit log read failed", %error);
            ApiError::Internal
        }
    }
}

#[derive(Deserialize)]
struct ProofQuery {
    tree_size: Option<u64>,
}

async fn audit_record(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path((partition, seq)): Path<(u32, u64)>,
    Query(q): Query<ProofQuery>,
) -> ApiResult {
    let audit = state
        .audit
        .clone()
        .ok_or_else(|| ApiError::NotFound("the audit log is not served here".into()))?;
    let (bytes, proof) = blocking(move || {
        audit
            .record_with_proof(partition, seq, q.tree_size)
            .map_err(audit_error)
    })
    .await?;
    let record = AuditRecord::decode(bytes.as_slice()).map_err(|error| {
        error!(message = "audit record does not decode", partition, seq, %error);
        ApiError::Internal
    })?;
    if !record.phone_number_id.is_empty() && !scope.sees(&record.phone_number_id)
        || record.phone_number_id.is_empty() && !scope.is_all()
    {
        return Err(not_found("such record"));
    }
    Ok(Json(json!({
        "partition": partition,
        "seq": seq.to_string(),
        "record": json_of(&record)?,
        "record_base64": STANDARD.encode(&bytes),
        "proof": json_of(&proof)?,
    })))
}

async fn checkpoint(State(state): State<ApiState>, Path(partition): Path<u32>) -> ApiResult {
    let audit = state
        .audit
        .clone()
        .ok_or_else(|| ApiError::NotFound("the audit log is not served here".into()))?;
    let note = blocking(move || audit.checkpoint(partition).map_err(audit_error)).await?;
    let note = String::from_utf8(note).map_err(|_| ApiError::Internal)?;
    let size = note
        .lines()
        .nth(1)
        .and_then(|l| l.parse::<u64>().ok())
        .ok_or(ApiError::Internal)?;
    Ok(Json(json!({
        "partition": partition,
        "size": size.to_string(),
        "note": note,
    })))
}

async fn openapi_json() -> Json<Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(crate::openapi::openapi).clone())
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let Some(registry) = &state.registry else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "catching up\n").into_response()
    }
}
