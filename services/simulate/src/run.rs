//! The shell: delivers generated traffic over HTTP. Webhooks are POSTed
//! signed, as Meta does; sends go to the gateway. At most
//! `Target::concurrency` requests are in flight, each number's messages
//! (app echoes and API sends) are spaced evenly at `number_rate_per_s` by a
//! per-number pacer, and 503/429 answers are retried after their
//! `Retry-After`, up to [`ATTEMPTS_MAX`] attempts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hmac::{Hmac, Mac};
use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{
    Delivery, RunReport, SimulateError, Target, Traffic, ATTEMPTS_MAX, BARRIER_GAP_MS,
    CONCURRENCY_MAX, GATEWAY_RESPONSE_BYTES_MAX, REQUEST_TIMEOUT_MS, RETRY_AFTER_S_MAX,
    RETRY_BACKOFF_MS_BASE,
};

/// `sha256=<hex HMAC-SHA256(app_secret, body)>`, the `X-Hub-Signature-256` value.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Spaces one number's messages evenly: each takes the next free slot, one
/// interval after the previous one (a GCRA with a burst of one).
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(rate_per_s: u32) -> Pacer {
        Pacer {
            interval: Duration::from_nanos(1_000_000_000 / u64::from(rate_per_s.max(1))),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the slots of `messages` messages.
    async fn wait(&self, messages: u32) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = (*next).max(Instant::now());
            *next = at + self.interval * messages.max(1);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

struct Shared {
    client: reqwest::Client,
    webhook_url: String,
    gateway_url: String,
    app_secret: String,
    pacers: BTreeMap<String, Pacer>,
    report: Mutex<RunReport>,
    progress: ProgressBar,
}

impl Shared {
    fn report(&self) -> MutexGuard<'_, RunReport> {
        // A panic while holding the lock leaves counters, not invariants.
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answered(&self, status: StatusCode) {
        *self.report().by_status.entry(status.as_u16()).or_default() += 1;
    }
}

/// How long to wait before retrying a 503/429: its `Retry-After` in
/// seconds (at most [`RETRY_AFTER_S_MAX`]), else a doubling backoff.
fn retry_delay(headers: &HeaderMap, attempt: u32) -> Duration {
    let header = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match header {
        Some(s) => Duration::from_secs(s.min(RETRY_AFTER_S_MAX)),
        None => Duration::from_millis(RETRY_BACKOFF_MS_BASE << attempt.min(8)),
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS
}

/// Delivers the traffic in order: POSTs each webhook signed to
/// `webhook_url`, each send to the gateway. A delivery marked `barrier`
/// starts only after every earlier one has finished. The progress bar
/// counts finished deliveries.
///
/// A paced delivery holds its concurrency slot while it waits for its
/// number's pacer, so `concurrency` bounds waiting and in-flight requests
/// together.
pub async fn run(
    traffic: &Traffic,
    target: &Target,
    progress: &ProgressBar,
) -> Result<RunReport, SimulateError> {
    if target.concurrency == 0 || target.concurrency > CONCURRENCY_MAX {
        return Err(SimulateError::InvalidTarget {
            detail: format!("concurrency must be 1 to {CONCURRENCY_MAX}"),
        });
    }
    if target.number_rate_per_s == 0 {
        return Err(SimulateError::InvalidTarget {
            detail: "number_rate_per_s must be at least 1".to_owned(),
        });
    }
    let sends = traffic
        .deliveries
        .iter()
        .filter(|d| matches!(d, Delivery::Send { .. }))
        .count() as u64;
    let gateway_url = match (&target.gateway_url, sends) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, 0) => String::new(),
        (None, sends) => return Err(SimulateError::NoGateway { sends }),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .build()
        .map_err(|source| SimulateError::HttpClient { source })?;
    let mut pacers = BTreeMap::new();
    for d in &traffic.deliveries {
        let number = match d {
            Delivery::Webhook { number, .. } => number,
            Delivery::Send {
                phone_number_id, ..
            } => phone_number_id,
        };
        if !pacers.contains_key(number) {
            pacers.insert(number.clone(), Pacer::new(target.number_rate_per_s));
        }
    }
    if let Some(meta_url) = &target.meta_url {
        open_windows(&client, meta_url.trim_end_matches('/'), traffic).await?;
    }
    progress.set_length(traffic.deliveries.len() as u64);
    let shared = Arc::new(Shared {
        client,
        webhook_url: target.webhook_url.clone(),
        gateway_url,
        app_secret: target.app_secret.clone(),
        pacers,
        report: Mutex::new(RunReport::default()),
        progress: progress.clone(),
    });
    let slots = Arc::new(Semaphore::new(target.concurrency));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for d in &traffic.deliveries {
        if matches!(d, Delivery::Webhook { barrier: true, .. }) {
            while let Some(done) = tasks.join_next().await {
                done.map_err(|source| SimulateError::Task { source })?;
            }
            // A later ingest millisecond than everything before: the engine
            // merges topics by (ingest ms, topic rank, offset), and `sync`
            // (history) ranks before `inbound` and `app-echo`.
            tokio::time::sleep(Duration::from_millis(BARRIER_GAP_MS)).await;
        }
        // The semaphore is never closed.
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|source| SimulateError::Task { source })?;
        }
        let shared = Arc::clone(&shared);
        let d = d.clone();
        tasks.spawn(async move {
            match d {
                Delivery::Webhook {
                    body,
                    number,
                    sends,
                    ..
                } => webhook(&shared, body, &number, sends).await,
                Delivery::Send {
                    phone_number_id,
                    body,
                } => send(&shared, body, &phone_number_id).await,
            }
            shared.progress.inc(1);
            drop(permit);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|source| SimulateError::Task { source })?;
    }
    let mut report = shared.report().clone();
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

async fn webhook(shared: &Shared, body: Vec<u8>, number: &str, sends: u32) {
    let signature = signature(&shared.app_secret, &body);
    let pacer = (sends > 0).then(|| shared.pacers.get(number)).flatten();
    shared.report().posted += 1;
    for attempt in 0..ATTEMPTS_MAX {
        if let Some(p) = pacer {
            p.wait(sends).await;
        }
        let answer = shared
            .client
            .post(&shared.webhook_url)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", &signature)
            .body(body.clone())
            .send()
            .await;
        let delay = match answer {
            Ok(response) => {
                let status = response.status();
                shared.answered(status);
                if status == StatusCode::OK {
                    shared.report().acknowledged += 1;
                    return;
                }
                if !retryable(status) {
                    tracing::warn!(message = "webhook refused", status = status.as_u16(), %number);
                    break;
                }
                retry_delay(response.headers(), attempt)
            }
            Err(error) => {
                // Meta retries a delivery that got no answer.
                shared.report().transport_errors += 1;
                tracing::warn!(message = "webhook POST failed", %error, %number);
                retry_delay(&HeaderMap::new(), attempt)
            }
        };
        if attempt + 1 == ATTEMPTS_MAX {
            break;
        }
        shared.report().retried += 1;
        tokio::time::sleep(delay).await;
    }
    shared.report().failed += 1;
}

async fn send(shared: &Shared, body: Vec<u8>, number: &str) {
    let url = format!("{}/v1/messages/{number}", shared.gateway_url);
    let pacer = shared.pacers.get(number);
    for attempt in 0..ATTEMPTS_MAX {
        if let Some(p) = pacer {
            p.wait(1).await;
        }
        let answer = shared
            .client
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let mut response = match answer {
            Ok(r) => r,
            Err(error) => {
                // Not retried: the gateway may have sent the message.
                shared.report().transport_errors += 1;
                tracing::warn!(message = "send POST failed", %error, %number);
                break;
            }
        };
        let status = response.status();
        shared.answered(status);
        if status.is_success() {
            let mut read = Vec::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                if read.len() + chunk.len() > GATEWAY_RESPONSE_BYTES_MAX {
                    break;
                }
                read.extend_from_slice(&chunk);
            }
            let wamid = serde_json::from_slice::<serde_json::Value>(&read)
                .ok()
                .and_then(|v| {
                    v.pointer("/messages/0/id")
                        .and_then(|id| id.as_str())
                        .map(|id| !id.is_empty())
                })
                .unwrap_or(false);
            let mut report = shared.report();
            report.sends_ok += 1;
            if wamid {
                report.wamids_from_gateway += 1;
            }
            return;
        }
        if !retryable(status) || attempt + 1 == ATTEMPTS_MAX {
            tracing::warn!(message = "send refused", status = status.as_u16(), %number);
            break;
        }
        shared.report().retried += 1;
        tokio::time::sleep(retry_delay(response.headers(), attempt)).await;
    }
    shared.report().sends_failed += 1;
}

/// The (number, customer) pairs of every customer message in the traffic's
/// webhooks (`messages` field, `messages[]`), in order, once each.
fn writers(traffic: &Traffic) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for d in &traffic.deliveries {
        let Delivery::Webhook { body, .. } = d else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            continue;
        };
        let entries = v["entry"].as_array().cloned().unwrap_or_default();
        for entry in entries {
            for change in entry["changes"].as_array().cloned().unwrap_or_default() {
                if change["field"] != "messages" {
                    continue;
                }
                let value = &change["value"];
                let number = value["metadata"]["phone_number_id"]
                    .as_str()
                    .unwrap_or_default();
                for m in value["messages"].as_array().cloned().unwrap_or_default() {
                    let from = m["from"].as_str().filter(|f| !f.is_empty());
                    let customer = from.or(m["from_user_id"].as_str()).unwrap_or_default();
                    if number.is_empty() || customer.is_empty() {
                        continue;
                    }
                    let pair = (number.to_owned(), customer.to_owned());
                    if seen.insert(pair.clone()) {
                        out.push(pair);
                    }
                }
            }
        }
    }
    out
}

/// Tells a Graph API simulator who writes during the run.
async fn open_windows(
    client: &reqwest::Client,
    meta_url: &str,
    traffic: &Traffic,
) -> Result<(), SimulateError> {
    for (number, customer) in writers(traffic) {
        let body = serde_json::json!({ "phone_number_id": number, "from": customer });
        let answer = client
            .post(format!("{meta_url}/sim/inbound"))
            .json(&body)
            .send()
            .await
            .map_err(|source| SimulateError::MetaSimulator {
                detail: source.to_string(),
            })?;
        if !answer.status().is_success() {
            return Err(SimulateError::MetaSimulator {
                detail: format!("POST /sim/inbound answered {}", answer.status()),
            });
        }
    }
    Ok(())
}
