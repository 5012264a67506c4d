//! twinlog-simulate's tests: the generator is deterministic, its bodies are
//! what the normaliser accepts, the real engine's log equals the prediction,
//! and `run` signs, paces and retries as it says, against a local server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use twinlog::pipeline::decode;
use twinlog::{AppendReport, Twinlog};
use twinlog_gateway::send::{parse_send, to_message, Strictness};
use twinlog_normalize::{normalize, IngestContext, WEBHOOK_BODY_BYTES_MAX};
use twinlog_proto::v1::{ingest_event::Kind, ApiSend, Envelope, Identity, IngestEvent, Source};
use twinlog_simulate::{
    generate, run, tally, Delivery, RecordCounts, RunReport, Scenario, SimulateError, Target,
    Traffic,
};

const START: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn scenario(seed: u64, gateway: bool) -> Scenario {
    Scenario {
        seed,
        numbers: 3,
        customers_per_number: 25,
        events: 600,
        start_unix_s: START,
        duplicate_per_mille: 40,
        reorder_window: 8,
        group_per_mille: 30,
        sends_via_gateway: gateway,
    }
}

// ---------------------------------------------------------------------------
// The generator.

#[test]
#[ignore = "prints a scenario's prediction"]
fn print_expected() {
    let t = generate(&scenario(1, false));
    println!(
        "{}",
        serde_json::to_string_pretty(&t.expected).expect("json")
    );
    let largest = t
        .deliveries
        .iter()
        .map(|d| match d {
            Delivery::Webhook { body, .. } | Delivery::Send { body, .. } => body.len(),
        })
        .max();
    println!("deliveries {} largest {largest:?}", t.deliveries.len());
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = generate(&scenario(7, false));
    let b = generate(&scenario(7, false));
    assert_eq!(a, b);
    let c = generate(&scenario(8, false));
    assert_ne!(a.deliveries, c.deliveries);
    let d = generate(&scenario(7, true));
    assert_ne!(a.deliveries, d.deliveries);
}

#[test]
fn every_body_normalises_into_the_events_expected() {
    for gateway in [false, true] {
        let t = generate(&scenario(11, gateway));
        let mut seen = BTreeSet::new();
        let (mut events, mut duplicate_events, mut sends) = (0u64, 0u64, 0u64);
        let mut fields = BTreeMap::new();
        for d in &t.deliveries {
            match d {
                Delivery::Webhook {
                    body, duplicate, ..
                } => {
                    assert!(
                        body.len() < WEBHOOK_BODY_BYTES_MAX,
                        "body of {} bytes",
                        body.len()
                    );
                    let out = normalize(
                        body,
                        &IngestContext {
                            ingest_time_ms: START * 1000,
                        },
                    )
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
                    for e in &out {
                        assert!(
                            !matches!(e.kind, Some(Kind::Unknown(_))),
                            "unknown event from {}: {e:?}",
                            String::from_utf8_lossy(body)
                        );
                        let field = e.envelope.as_ref().map(|e| e.field.clone());
                        *fields.entry(field.unwrap_or_default()).or_insert(0u64) += 1;
                    }
                    let n = out.len() as u64;
                    let first = seen.insert(body.clone());
                    assert_eq!(*duplicate, !first, "duplicate flag");
                    if first {
                        events += n;
                    } else {
                        duplicate_events += n;
                    }
                }
                Delivery::Send { body, .. } => {
                    sends += 1;
                    parse_send(body, Strictness::Meta)
                        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
                }
            }
        }
        assert_eq!(events + sends, t.expected.events);
        assert_eq!(duplicate_events, t.expected.duplicate_events);
        assert_eq!(sends, t.expected.sends);
        assert_eq!(seen.len() as u64, t.expected.unique_bodies);
        assert!(
            t.expected.duplicate_deliveries > 0,
            "no re-delivery generated"
        );
        // Every kind of traffic is there.
        for field in [
            "messages",
            "smb_message_echoes",
            "history",
            "smb_app_state_sync",
            "account_update",
        ] {
            assert!(fields.get(field).copied().unwrap_or(0) > 0, "no {field}");
        }
        assert_eq!(sends > 0, gateway);
    }
}

/// Folds the traffic through the normaliser and the real engine, the gateway
/// standing in for `Send`s as it records them (a made-up wamid).
fn fold(traffic: &Traffic) -> (AppendReport, RecordCounts) {
    fold_with(traffic, 0, false)
}

/// [`fold`], receiving everything `late_ms` after the scenario's start, and
/// without the `account_update`s when `no_install` (as a shard would that
/// does not hold the number's WABA key).
fn fold_with(traffic: &Traffic, late_ms: i64, no_install: bool) -> (AppendReport, RecordCounts) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = Twinlog::init(dir.path()).expect("init log");
    let mut inputs = Vec::new();
    for (i, d) in traffic.deliveries.iter().enumerate() {
        let offset = i as i64;
        let ingest_time_ms = START * 1000 + late_ms + offset * 10;
        let source = Source {
            topic: "sim".into(),
            partition: 0,
            offset,
        };
        match d {
            Delivery::Webhook { body, .. } => {
                for e in normalize(body, &IngestContext { ingest_time_ms }).expect("normalises") {
                    if no_install && matches!(e.kind, Some(Kind::AccountUpdate(_))) {
                        continue;
                    }
                    inputs.push((e, source.clone()));
                }
            }
            Delivery::Send {
                phone_number_id,
                body,
            } => {
                let (value, send) = parse_send(body, Strictness::Meta).expect("valid send");
                let wamid = format!("wamid.gateway-{i}");
                let sent_at_s = ingest_time_ms / 1000;
                let message = to_message(&value, &send, &wamid, sent_at_s);
                let event = IngestEvent {
                    envelope: Some(Envelope {
                        phone_number_id: phone_number_id.clone(),
                        customer: Some(Identity {
                            phone: send.to.clone(),
                            bsuid: send.recipient.clone(),
                            ..Identity::default()
                        }),
                        meta_timestamp: sent_at_s,
                        ingest_time_ms,
                        body_sha256: Sha256::digest(body).to_vec(),
                        field: "api_send".into(),
                        ..Envelope::default()
                    }),
                    kind: Some(Kind::ApiSend(ApiSend {
                        wamid,
                        request_id: format!("req-{i}"),
                        sent_at_ms: ingest_time_ms,
                        message: Some(message),
                        request_json: String::from_utf8_lossy(body).into_owned(),
                    })),
                };
                inputs.push((event, source));
            }
        }
    }
    let report = log.append(&inputs).expect("append");
    let size = log.log().size();
    let records: Vec<_> = log
        .log()
        .records(0, size)
        .map(|r| {
            let (seq, bytes) = r.expect("read record");
            decode(seq, &bytes).expect("decode record")
        })
        .collect();
    (report, tally(&records))
}

fn check_fold(s: &Scenario) {
    let t = generate(s);
    let (report, counts) = fold(&t);
    let e = &t.expected;
    assert_eq!(report.rejections, BTreeMap::new(), "seed {}", s.seed);
    assert_eq!(report.rejected, e.rejected, "seed {}", s.seed);
    assert_eq!(report.appended, e.events, "seed {}", s.seed);
    assert_eq!(report.duplicates, e.duplicate_events, "seed {}", s.seed);
    assert_eq!(report.idle, 0);
    assert_eq!(report.records, e.records.total, "seed {}", s.seed);
    assert_eq!(counts, e.records, "seed {}", s.seed);
}

#[test]
fn the_engine_log_equals_the_prediction() {
    for seed in [1, 2, 3] {
        check_fold(&scenario(seed, false));
    }
}

#[test]
fn the_engine_log_equals_the_prediction_with_the_gateway() {
    let s = scenario(4, true);
    let t = generate(&s);
    assert!(t.expected.records.api_sends > 0);
    assert_eq!(
        t.expected.records.statuses, 0,
        "gateway sends' statuses are the simulator's"
    );
    check_fold(&s);
}

#[test]
fn the_prediction_holds_when_day_0_is_the_ingest_time_within_2_days() {
    // This seed has media follow-ups 12 to 13 days before its install: a
    // 13-day margin would have them rejected as older than 14 days here.
    let t = generate(&Scenario {
        customers_per_number: 60,
        ..scenario(16, false)
    });
    let numbers = t.expected.records.account_updates;
    let mut want = t.expected.records.clone();
    want.account_updates = 0;
    want.sync_windows_opened = 0;
    want.total -= 2 * numbers;
    assert!(want.media_enriched > 0);
    // Delivered 47 hours after the start: every number installed within
    // the first hour, so day 0 moves by up to 2 days.
    let (report, counts) = fold_with(&t, 47 * 3_600_000, true);
    assert_eq!(report.rejected, 0, "{:?}", report.rejections);
    assert_eq!(counts, want);
}

#[test]
fn the_prediction_covers_every_rule_it_claims() {
    let t = generate(&Scenario {
        events: 3_000,
        ..scenario(5, false)
    });
    let r = &t.expected.records;
    for (what, n) in [
        ("inbound", r.inbound_messages),
        ("echoes", r.echoes),
        ("history messages", r.history_messages),
        ("history duplicates", r.history_duplicates),
        ("history chunks", r.history_chunks),
        ("history complete", r.history_complete),
        ("media enriched", r.media_enriched),
        ("customer edits", r.customer_edits),
        ("customer revokes", r.customer_revokes),
        ("app edits", r.app_edits),
        ("app revokes", r.app_revokes),
        ("statuses", r.statuses),
        ("priced statuses", r.statuses_priced),
        ("contact syncs", r.contact_syncs),
        ("group messages", r.out_of_scope_messages),
        ("group statuses", r.out_of_scope_statuses),
    ] {
        assert!(n > 0, "no {what} in {r:?}");
    }
    assert!(r.statuses_by_status.get("failed").copied().unwrap_or(0) > 0);
    assert_eq!(r.account_updates, 3);
    assert_eq!(r.sync_windows_opened, 3);
    let bsuid_only = t.deliveries.iter().any(|d| match d {
        Delivery::Webhook { body, .. } => {
            let text = String::from_utf8_lossy(body);
            text.contains("\"from\":\"\"") && text.contains("\"from_user_id\":\"")
        }
        Delivery::Send { .. } => false,
    });
    assert!(bsuid_only, "no BSUID-only customer with an empty phone");
    // The event count is close to what was asked.
    let asked = 3_000;
    assert!(t.expected.events >= asked && t.expected.events < asked + 200);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]
    #[test]
    fn the_engine_log_equals_the_prediction_for_any_seed(seed in any::<u64>(), gateway in any::<bool>()) {
        check_fold(&Scenario {
            seed,
            numbers: 2,
            customers_per_number: 12,
            events: 300,
            start_unix_s: START,
            duplicate_per_mille: 60,
            reorder_window: 12,
            group_per_mille: 20,
            sends_via_gateway: gateway,
        });
    }
}

// ---------------------------------------------------------------------------
// `run`, against a local server.

const SECRET: &str = "test-app-secret";

#[derive(Clone, Copy)]
enum Mode {
    Ok,
    /// 503 with `Retry-After: 1` on a body's first delivery, then 200.
    UnavailableFirst,
    /// 202 for webhooks (not an acknowledgement), 500 for nothing else.
    Accepted,
    /// 500: not retried.
    Broken,
}

struct Arrival {
    at: Instant,
    /// `webhook` or the send's phone_number_id.
    path: String,
    body: Vec<u8>,
    signed: bool,
}

struct Server {
    mode: Mode,
    arrivals: Mutex<Vec<Arrival>>,
    in_flight: Mutex<(u32, u32)>,
}

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn webhook(State(s): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    {
        let mut f = s.in_flight.lock().expect("lock");
        f.0 += 1;
        f.1 = f.1.max(f.0);
    }
    let expected = format!("sha256={}", hmac_hex(&body));
    let signed = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str())
        && headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/json");
    let first = {
        let mut a = s.arrivals.lock().expect("lock");
        let first = !a.iter().any(|x| x.body == body.as_ref());
        a.push(Arrival {
            at: Instant::now(),
            path: "webhook".into(),
            body: body.to_vec(),
            signed,
        });
        first
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.in_flight.lock().expect("lock").0 -= 1;
    match s.mode {
        Mode::Ok => StatusCode::OK.into_response(),
        Mode::UnavailableFirst if first => {
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")]).into_response()
        }
        Mode::UnavailableFirst => StatusCode::OK.into_response(),
        Mode::Accepted => StatusCode::ACCEPTED.into_response(),
        Mode::Broken => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn gateway(
    State(s): State<Arc<Server>>,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let n = {
        let mut a = s.arrivals.lock().expect("lock");
        a.push(Arrival {
            at: Instant::now(),
            path: number,
            body: body.to_vec(),
            signed: true,
        });
        a.len()
    };
    let answer = serde_json::json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": "x", "wa_id": "x"}],
        "messages": [{"id": format!("wamid.test-{n}")}]
    });
    (StatusCode::OK, answer.to_string()).into_response()
}

async fn serve(
    mode: Mode,
) -> (
    Arc<Server>,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let server = Arc::new(Server {
        mode,
        arrivals: Mutex::new(Vec::new()),
        in_flight: Mutex::new((0, 0)),
    });
    let app = Router::new()
        .route("/webhook", post(webhook))
        .route("/v1/messages/{number}", post(gateway))
        .with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    (server, format!("http://{addr}"), stop, task)
}

fn target(base: &str, concurrency: usize, rate: u32) -> Target {
    Target {
        webhook_url: format!("{base}/webhook"),
        gateway_url: Some(base.to_owned()),
        app_secret: SECRET.into(),
        concurrency,
        number_rate_per_s: rate,
        meta_url: None,
    }
}

async fn run_against(
    mode: Mode,
    traffic: &Traffic,
    concurrency: usize,
    rate: u32,
) -> (RunReport, Arc<Server>) {
    let (server, base, stop, task) = serve(mode).await;
    let report = run(
        traffic,
        &target(&base, concurrency, rate),
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .expect("run");
    let _ = stop.send(());
    task.await.expect("server task");
    (report, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_arrives_signed_within_the_concurrency() {
    let traffic = generate(&Scenario {
        events: 250,
        ..scenario(21, true)
    });
    let (report, server) = run_against(Mode::Ok, &traffic, 4, 1_000).await;
    let e = &traffic.expected;
    assert_eq!(report.posted, e.webhook_deliveries);
    assert_eq!(report.acknowledged, e.webhook_deliveries);
    assert_eq!(report.failed, 0);
    assert_eq!(report.retried, 0);
    assert_eq!(report.sends_ok, e.sends);
    assert_eq!(report.wamids_from_gateway, e.sends);
    assert_eq!(report.sends_failed, 0);
    assert_eq!(
        report.by_status,
        BTreeMap::from([(200, e.webhook_deliveries + e.sends)])
    );
    let arrivals = server.arrivals.lock().expect("lock");
    assert!(
        arrivals.iter().all(|a| a.signed),
        "a body arrived unsigned or mis-signed"
    );
    // Exactly the bodies sent, as a multiset.
    let mut got: Vec<&[u8]> = arrivals
        .iter()
        .filter(|a| a.path == "webhook")
        .map(|a| a.body.as_slice())
        .collect();
    let mut want: Vec<&[u8]> = traffic
        .deliveries
        .iter()
        .filter_map(|d| match d {
            Delivery::Webhook { body, .. } => Some(body.as_slice()),
            Delivery::Send { .. } => None,
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let max_in_flight = server.in_flight.lock().expect("lock").1;
    assert!(max_in_flight <= 4, "{max_in_flight} webhooks in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_number_is_held_to_its_send_rate() {
    const RATE: u32 = 10;
    const SENDS: usize = 25;
    let send = |n: usize| {
        Delivery::Send {
        phone_number_id: format!("10000{}", n % 2),
        body: br#"{"messaging_product":"whatsapp","to":"16505551234","type":"text","text":{"body":"hi"}}"#.to_vec(),
    }
    };
    let traffic = Traffic {
        deliveries: (0..2 * SENDS).map(send).collect(),
        expected: Default::default(),
    };
    let (report, server) = run_against(Mode::Ok, &traffic, 16, RATE).await;
    assert_eq!(report.sends_ok, 2 * SENDS as u64);
    let arrivals = server.arrivals.lock().expect("lock");
    for number in ["100000", "100001"] {
        let times: Vec<Instant> = arrivals
            .iter()
            .filter(|a| a.path == number)
            .map(|a| a.at)
            .collect();
        assert_eq!(times.len(), SENDS);
        // No one-second window (starting at any arrival) holds more than
        // the rate, plus a margin for network jitter.
        let worst = times
            .iter()
            .map(|&t0| {
                times
                    .iter()
                    .filter(|&&t| t >= t0 && t < t0 + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(
            worst <= RATE as usize + 2,
            "{worst} sends of {number} in one second"
        );
        // Spread over at least (SENDS - 1) intervals, less the first request's latency.
        let span = times.iter().max().copied().zip(times.iter().min().copied());
        let span = span.map(|(a, b)| a - b).unwrap_or_default();
        assert!(
            span >= Duration::from_millis(2_000),
            "{span:?} for {SENDS} sends"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_gets_the_body_again_after_the_wait() {
    let traffic = generate(&Scenario {
        events: 10,
        numbers: 1,
        duplicate_per_mille: 0,
        ..scenario(31, false)
    });
    let n = traffic.expected.webhook_deliveries;
    let (report, server) = run_against(Mode::UnavailableFirst, &traffic, 8, 1_000).await;
    assert_eq!(report.posted, n);
    assert_eq!(report.acknowledged, n);
    assert_eq!(report.retried, n);
    assert_eq!(report.failed, 0);
    assert_eq!(report.by_status, BTreeMap::from([(200, n), (503, n)]));
    let arrivals = server.arrivals.lock().expect("lock");
    let mut by_body: BTreeMap<&[u8], Vec<Instant>> = BTreeMap::new();
    for a in arrivals.iter() {
        by_body.entry(a.body.as_slice()).or_default().push(a.at);
    }
    assert_eq!(by_body.len() as u64, n);
    for times in by_body.values() {
        assert_eq!(times.len(), 2, "each body twice: refused, then accepted");
        assert!(
            times[1] - times[0] >= Duration::from_millis(990),
            "retried after {:?}, before Retry-After",
            times[1] - times[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_200_acknowledges_and_other_errors_are_not_retried() {
    let traffic = generate(&Scenario {
        events: 10,
        numbers: 1,
        duplicate_per_mille: 0,
        ..scenario(41, false)
    });
    let n = traffic.expected.webhook_deliveries;
    for (mode, status) in [(Mode::Accepted, 202u16), (Mode::Broken, 500)] {
        let (report, server) = run_against(mode, &traffic, 8, 1_000).await;
        assert_eq!(report.acknowledged, 0);
        assert_eq!(report.failed, n);
        assert_eq!(report.retried, 0);
        assert_eq!(report.by_status, BTreeMap::from([(status, n)]));
        assert_eq!(server.arrivals.lock().expect("lock").len() as u64, n);
    }
}

#[tokio::test]
async fn sends_without_a_gateway_are_refused_before_anything_is_posted() {
    let traffic = generate(&Scenario {
        events: 600,
        ..scenario(51, true)
    });
    assert!(traffic.expected.sends > 0);
    let mut t = target("http://127.0.0.1:9", 4, 20);
    t.gateway_url = None;
    let err = run(&traffic, &t, &indicatif::ProgressBar::hidden()).await;
    assert!(
        matches!(err, Err(SimulateError::NoGateway { sends }) if sends == traffic.expected.sends)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_starts_after_every_earlier_delivery_finished() {
    let webhook = |i: usize, barrier: bool| Delivery::Webhook {
        body: format!("{{\"n\":{i}}}").into_bytes(),
        number: "100000".into(),
        duplicate: false,
        sends: 0,
        barrier,
    };
    let mut deliveries: Vec<Delivery> = (0..6).map(|i| webhook(i, false)).collect();
    deliveries.push(webhook(6, true));
    let traffic = Traffic {
        deliveries,
        expected: Default::default(),
    };
    let (report, server) = run_against(Mode::Ok, &traffic, 8, 1_000).await;
    assert_eq!(report.acknowledged, 7);
    let arrivals = server.arrivals.lock().expect("lock");
    let barrier = arrivals
        .iter()
        .find(|a| a.body == b"{\"n\":6}")
        .map(|a| a.at)
        .expect("barrier body arrived");
    // The server holds each request 5 ms: the barrier body can only arrive
    // after every earlier one was answered.
    for a in arrivals.iter().filter(|a| a.body != b"{\"n\":6}") {
        assert!(barrier >= a.at + Duration::from_millis(5));
    }
}

/// Replays one seed of the engine check: `SIM_SEED=<seed> cargo test -p
/// twinlog-simulate replay_sim_seed` (`SIM_GATEWAY=1` for gateway mode).
#[test]
fn replay_sim_seed() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) else {
        return;
    };
    let gateway = std::env::var("SIM_GATEWAY").is_ok_and(|v| v == "1");
    check_fold(&scenario(seed, gateway));
}

#[test]
fn scenarios_beyond_the_limits_are_refused_and_clamped() {
    assert!(Scenario::default().validate().is_ok());
    for bad in [
        Scenario {
            numbers: 0,
            ..Scenario::default()
        },
        Scenario {
            numbers: twinlog_simulate::NUMBERS_MAX + 1,
            ..Scenario::default()
        },
        Scenario {
            customers_per_number: 0,
            ..Scenario::default()
        },
        Scenario {
            duplicate_per_mille: 1001,
            ..Scenario::default()
        },
        Scenario {
            events: twinlog_simulate::EVENTS_MAX + 1,
            ..Scenario::default()
        },
        Scenario {
            start_unix_s: 0,
            ..Scenario::default()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(SimulateError::InvalidScenario { .. })),
            "{bad:?}"
        );
    }
    // generate clamps instead: one customer, and still a consistent prediction.
    check_fold(&Scenario {
        customers_per_number: 0,
        numbers: 1,
        events: 40,
        ..Scenario::default()
    });
}
