//! The gateway in front of the simulator, recording on the embedded bus.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use twinlog_bus::EmbeddedBus;
use twinlog_gateway::simulator::{self, SimConfig, Simulator};
use twinlog_gateway::{Gateway, GatewayConfig};
use twinlog_proto::v1::message::Content;

use crate::simulator::futures_join_all;
use crate::support::{
    api_send, api_send_events, error_code, eventually, open_bus, text, wait_for_events, Server,
};

const NUMBER: &str = "106540352242922";
const TOKEN: &str = "sim-token";

/// A simulator, a gateway in front of it, and the bus it records on.
struct Rig {
    _dir: TempDir,
    bus: Arc<EmbeddedBus>,
    sim: Simulator,
    sim_server: Server,
    gateway: Arc<Gateway<EmbeddedBus>>,
    gateway_server: Server,
    client: reqwest::Client,
    registry: Registry,
}

impl Rig {
    async fn start(sim_config: SimConfig, gateway_config: GatewayConfig) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let bus = open_bus(dir.path());
        let (sim_router, sim) = simulator::router(sim_config).expect("start simulator");
        let sim_server = Server::start(sim_router).await;
        let mut registry = Registry::default();
        let config = GatewayConfig {
            graph_base_url: sim_server.url("/v24.0"),
            access_token: TOKEN.to_owned(),
            ..gateway_config
        };
        let gateway =
            Arc::new(Gateway::new(config, Arc::clone(&bus), &mut registry).expect("gateway"));
        let gateway_server = Server::start(Arc::clone(&gateway).router()).await;
        Rig {
            _dir: dir,
            bus,
            sim,
            sim_server,
            gateway,
            gateway_server,
            client: reqwest::Client::new(),
            registry,
        }
    }

    fn url(&self, number: &str) -> String {
        self.gateway_server.url(&format!("/v1/messages/{number}"))
    }

    async fn send(&self, number: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .client
            .post(self.url(number))
            .json(body)
            .send()
            .await
            .expect("post to gateway");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.expect("json answer"))
    }

    /// Sends every body concurrently; returns (status, headers, body) in order.
    async fn send_all(
        &self,
        number: &str,
        bodies: Vec<Value>,
    ) -> Vec<(u16, reqwest::header::HeaderMap, Value)> {
        let url = self.url(number);
        futures_join_all(bodies.into_iter().map(|body| {
            let client = self.client.clone();
            let url = url.clone();
            async move {
                let resp = client.post(url).json(&body).send().await.expect("post");
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                (status, headers, resp.json().await.expect("json answer"))
            }
        }))
        .await
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode");
        out
    }

    async fn stop(self) {
        self.gateway_server.stop().await;
        self.gateway.shutdown().await;
        self.sim_server.stop().await;
        self.sim.shutdown().await;
    }
}

fn text_of(content: &Option<Content>) -> &str {
    match content {
        Some(Content::Text(t)) => &t.body,
        other => panic!("expected text content, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sends_are_paced_below_20_per_second_and_recorded_in_full() {
    let rig = Rig::start(SimConfig::default(), GatewayConfig::default()).await;
    let customers: Vec<String> = (0..10).map(|i| format!("1650555{i:04}")).collect();
    for c in &customers {
        rig.sim.inbound(NUMBER, c);
    }
    let bodies: Vec<Value> = (0..50)
        .map(|i| {
            let mut body = text(&customers[i % 10], &format!("message {i}: ünïcode ✓"));
            body["biz_opaque_callback_data"] = json!(format!("cb-{i}"));
            body
        })
        .collect();
    let results = rig.send_all(NUMBER, bodies.clone()).await;

    let mut wamid_to_text = BTreeMap::new();
    for ((status, headers, answer), body) in results.iter().zip(&bodies) {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(headers["twinlog-recorded"], "true");
        assert!(headers.contains_key("twinlog-request-id"));
        let wamid = answer["messages"][0]["id"].as_str().expect("wamid");
        wamid_to_text.insert(wamid.to_owned(), body["text"]["body"].clone());
    }
    assert_eq!(wamid_to_text.len(), 50, "50 distinct wamids");

    let stats = rig.sim.stats();
    assert_eq!(stats.errors_with(130429), 0, "the gateway paced the sends");
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(stats.accepted, 50);
    let sim_wamids: BTreeSet<String> = rig.sim.accepted().into_iter().map(|s| s.wamid).collect();
    assert_eq!(sim_wamids, wamid_to_text.keys().cloned().collect());

    // Every send is on the bus, with the simulator's wamid and the full content.
    let events = api_send_events(&rig.bus).await;
    assert_eq!(events.len(), 50);
    let mut request_ids = BTreeSet::new();
    for event in &events {
        let envelope = event.envelope.as_ref().expect("envelope");
        assert_eq!(envelope.phone_number_id, NUMBER);
        assert_eq!(envelope.field, "api_send");
        let send = api_send(event);
        let message = send.message.as_ref().expect("message");
        assert_eq!(message.wamid, send.wamid);
        assert_eq!(message.r#type, "text");
        assert_eq!(
            Some(&envelope.customer.as_ref().expect("customer").phone),
            Some(&message.to)
        );
        // The billing market, derived once at the gateway (+1 650: the US).
        assert_eq!(envelope.customer.as_ref().expect("customer").country, "US");
        assert_eq!(json!(text_of(&message.content)), wamid_to_text[&send.wamid]);
        assert!(message.extra_json.contains("biz_opaque_callback_data"));
        assert_eq!(
            envelope.body_sha256,
            Sha256::digest(send.request_json.as_bytes()).to_vec()
        );
        let request: Value = serde_json::from_str(&send.request_json).expect("request_json");
        assert_eq!(request["text"]["body"], wamid_to_text[&send.wamid]);
        assert!(send.sent_at_ms > 0);
        request_ids.insert(send.request_id.clone());
    }
    assert_eq!(request_ids.len(), 50);

    let gw = rig.gateway.stats();
    assert_eq!((gw.admitted, gw.sent, gw.graph_retries), (50, 50, 0));
    assert!(
        gw.number_rate_waits > 0,
        "50 at once must wait for the rate"
    );
    assert_eq!(gw.queue_depth, 0);
    let metrics = rig.metrics();
    assert!(
        metrics.contains("twinlog_gateway_sends_total{outcome=\"sent\"} 50"),
        "{metrics}"
    );
    assert!(
        metrics.contains("twinlog_gateway_graph_latency_seconds_count 50"),
        "{metrics}"
    );
    assert!(metrics.contains("twinlog_gateway_rate_limit_waits_total{limit=\"number\"}"));
    assert!(metrics.contains(&format!(
        "twinlog_gateway_queue_depth{{phone_number_id=\"{NUMBER}\"}} 0"
    )));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_number_override_of_5_per_second_is_honoured() {
    let slow = "200000000000005";
    let sim_config = SimConfig {
        number_rate_overrides: BTreeMap::from([(slow.to_owned(), 5)]),
        ..SimConfig::default()
    };
    let gateway_config = GatewayConfig {
        number_rate_overrides: BTreeMap::from([(slow.to_owned(), 5)]),
        ..GatewayConfig::default()
    };
    let rig = Rig::start(sim_config, gateway_config).await;
    let bodies: Vec<Value> = (0..15)
        .map(|i| crate::support::template(&format!("1650557{i:04}"), "promo"))
        .collect();
    let results = rig.send_all(slow, bodies).await;
    assert!(results.iter().all(|(status, _, _)| *status == 200));
    let stats = rig.sim.stats();
    assert_eq!(stats.errors_with(130429), 0, "paced at 5/s for this number");
    assert_eq!(stats.accepted, 15);
    let gw = rig.gateway.stats();
    assert_eq!(gw.graph_retries, 0);
    assert!(gw.number_rate_waits >= 10);
    assert_eq!(wait_for_events(&rig.bus, 15).await.len(), 15);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let sim_config = SimConfig {
        response_delay_ms: 300,
        ..SimConfig::default()
    };
    let gateway_config = GatewayConfig {
        queue_depth_max: 2,
        retry_after_s: 7,
        number_rate_overrides: BTreeMap::from([(NUMBER.to_owned(), 1)]),
        ..GatewayConfig::default()
    };
    let rig = Rig::start(sim_config, gateway_config).await;
    let bodies: Vec<Value> = (0..8)
        .map(|i| crate::support::template(&format!("1650558{i:04}"), "promo"))
        .collect();
    let results = rig.send_all(NUMBER, bodies).await;
    let full: Vec<_> = results.iter().filter(|(s, _, _)| *s == 429).collect();
    let ok = results.iter().filter(|(s, _, _)| *s == 200).count();
    assert_eq!(ok + full.len(), 8);
    assert!(
        !full.is_empty(),
        "8 at once into a queue of 2 must overflow"
    );
    for (_, headers, body) in &full {
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(body["error"]["code"], json!("queue_full"));
    }
    let gw = rig.gateway.stats();
    assert_eq!(gw.queue_full, u64::try_from(full.len()).expect("count"));
    assert_eq!(gw.sent, u64::try_from(ok).expect("count"));
    assert_eq!(rig.sim.stats().accepted, gw.sent);
    assert_eq!(api_send_events(&rig.bus).await.len(), ok);
    assert!(rig.metrics().contains(&format!(
        "twinlog_gateway_sends_total{{outcome=\"queue_full\"}} {}",
        full.len()
    )));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_does_not_lose_its_send() {
    let sim_config = SimConfig {
        response_delay_ms: 2_000,
        ..SimConfig::default()
    };
    let rig = Rig::start(sim_config, GatewayConfig::default()).await;
    let body = crate::support::template("16505551234", "promo");
    let client = rig.client.clone();
    let url = rig.url(NUMBER);
    let request = tokio::spawn(async move { client.post(url).json(&body).send().await });
    // Once the gateway admitted the send, the client goes away.
    let admitted = eventually(|| (rig.gateway.stats().admitted == 1).then_some(())).await;
    assert!(admitted.is_some(), "the gateway admitted the send");
    assert_eq!(
        rig.gateway.stats().sent,
        0,
        "the Graph call is still pending"
    );
    request.abort();
    assert!(
        request.await.is_err_and(|e| e.is_cancelled()),
        "the client gave up"
    );

    let events = wait_for_events(&rig.bus, 1).await;
    assert_eq!(
        events.len(),
        1,
        "the send reached the bus after the client left"
    );
    let accepted = rig.sim.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(api_send(&events[0]).wamid, accepted[0].wamid);
    let sent = eventually(|| (rig.gateway.stats().sent == 1).then_some(())).await;
    assert!(sent.is_some());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_131047_is_returned_unchanged_and_nothing_is_published() {
    let rig = Rig::start(SimConfig::default(), GatewayConfig::default()).await;
    // The customer never wrote: free-form text is refused by "Meta".
    let (status, headers, answer) = rig.send(NUMBER, &text("16505551234", "hello?")).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&answer), 131047);
    assert_eq!(answer["error"]["type"], json!("OAuthException"));
    assert_eq!(
        answer["error"]["message"],
        json!("(#131047) Re-engagement message")
    );
    assert!(!headers.contains_key("twinlog-recorded"));
    assert_eq!(rig.sim.stats().errors_with(131047), 1);
    assert!(api_send_events(&rig.bus).await.is_empty());
    let gw = rig.gateway.stats();
    assert_eq!((gw.graph_errors, gw.sent, gw.graph_retries), (1, 0, 0));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_400_and_never_reach_the_graph_api() {
    let rig = Rig::start(SimConfig::default(), GatewayConfig::default()).await;
    let cases = [
        (
            NUMBER,
            json!({"to": "1", "type": "text", "text": {"body": "x"}}),
        ),
        (
            NUMBER,
            json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}),
        ),
        (
            NUMBER,
            json!({"messaging_product": "whatsapp", "to": "1", "type": "image"}),
        ),
        ("not-a-number", text("16505551234", "x")),
    ];
    for (number, body) in &cases {
        let (status, _, answer) = rig.send(number, body).await;
        assert_eq!(status, 400, "{body}");
        let code = answer["error"]["code"].as_str().expect("code");
        assert!(code == "invalid_send" || code == "invalid_phone_number_id");
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let sim = rig.sim.stats();
    assert_eq!((sim.accepted, sim.errors.len()), (0, 0));
    assert_eq!(rig.gateway.stats().invalid, 4);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_held_by_the_pair_rate_does_not_block_the_others() {
    let sim_config = SimConfig {
        pair_interval_ms: 1_000,
        // Slack over the gateway's burst of 1 for network jitter.
        pair_burst: 2,
        ..SimConfig::default()
    };
    let gateway_config = GatewayConfig {
        pair_interval_ms: 1_000,
        pair_burst: 1,
        ..GatewayConfig::default()
    };
    let rig = Rig::start(sim_config, gateway_config).await;
    let busy = "16505550001";
    let mut bodies: Vec<Value> = (0..3)
        .map(|_| crate::support::template(busy, "promo"))
        .collect();
    bodies.extend((2..6).map(|i| crate::support::template(&format!("165055500{i:02}"), "promo")));
    let url = rig.url(NUMBER);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    futures_join_all(bodies.into_iter().enumerate().map(|(i, body)| {
        let client = rig.client.clone();
        let url = url.clone();
        let order = Arc::clone(&order);
        async move {
            let resp = client.post(url).json(&body).send().await.expect("post");
            assert_eq!(resp.status().as_u16(), 200);
            order.lock().expect("order").push(i);
        }
    }))
    .await;
    let order = order.lock().expect("order").clone();
    // The busy customer's third message needs two pair intervals; the
    // other four customers go out at once.
    // Which of the busy customer's sends is third depends on arrival order.
    let last_busy = (0..3)
        .filter_map(|busy| order.iter().position(|i| *i == busy))
        .max()
        .expect("busy sends");
    for other in 3..7 {
        let pos = order.iter().position(|i| *i == other).expect("other send");
        assert!(
            pos < last_busy,
            "customer {other} waited for another's pair rate: {order:?}"
        );
    }
    assert_eq!(rig.sim.stats().errors_with(131056), 0);
    let gw = rig.gateway.stats();
    assert!(gw.pair_rate_waits >= 2, "{gw:?}");
    assert_eq!(gw.sent, 7);
    // The busy customer's messages reached Meta in order.
    let busy_order: Vec<String> = rig
        .sim
        .accepted()
        .into_iter()
        .filter(|s| s.customer == busy)
        .map(|s| s.wamid)
        .collect();
    assert_eq!(busy_order.len(), 3);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_rate_limit_errors_are_retried() {
    // The gateway believes in a looser pair rate than "Meta" enforces.
    let sim_config = SimConfig {
        pair_interval_ms: 300,
        pair_burst: 2,
        ..SimConfig::default()
    };
    let gateway_config = GatewayConfig {
        pair_interval_ms: 300,
        pair_burst: 45,
        ..GatewayConfig::default()
    };
    let rig = Rig::start(sim_config, gateway_config).await;
    let to = "16505551234";
    let bodies: Vec<Value> = (0..4)
        .map(|_| crate::support::template(to, "promo"))
        .collect();
    let results = rig.send_all(NUMBER, bodies).await;
    assert!(results.iter().all(|(s, _, _)| *s == 200), "{results:?}");
    assert!(rig.sim.stats().errors_with(131056) >= 1);
    let gw = rig.gateway.stats();
    assert!(gw.graph_retries >= 1);
    assert_eq!((gw.sent, gw.graph_errors), (4, 0));
    assert_eq!(api_send_events(&rig.bus).await.len(), 4);
    assert!(rig
        .metrics()
        .contains("twinlog_gateway_rate_limit_waits_total{limit=\"graph_131056\"}"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_admitted_sends_then_refuses_new_ones() {
    let sim_config = SimConfig {
        response_delay_ms: 300,
        ..SimConfig::default()
    };
    let rig = Rig::start(sim_config, GatewayConfig::default()).await;
    let url = rig.url(NUMBER);
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let client = rig.client.clone();
            let url = url.clone();
            let body = crate::support::template(&format!("1650559{i:04}"), "promo");
            tokio::spawn(async move { client.post(url).json(&body).send().await })
        })
        .collect();
    let admitted = eventually(|| (rig.gateway.stats().admitted == 5).then_some(())).await;
    assert!(admitted.is_some());
    rig.gateway.shutdown().await;
    // Everything admitted is done and recorded by the time shutdown returns.
    assert_eq!(api_send_events(&rig.bus).await.len(), 5);
    assert_eq!(rig.gateway.stats().queue_depth, 0);
    for c in clients {
        let resp = c.await.expect("join").expect("answer");
        assert_eq!(resp.status().as_u16(), 200);
    }
    let (status, headers, _) = rig
        .send(NUMBER, &crate::support::template("16505550000", "promo"))
        .await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_content_type_is_recorded_with_its_content() {
    let rig = Rig::start(SimConfig::default(), GatewayConfig::default()).await;
    let to = "16505551234";
    rig.sim.inbound(NUMBER, to);
    let sends = [
        json!({"messaging_product": "whatsapp", "to": to, "type": "image",
               "image": {"link": "https://example.com/a.jpg", "caption": "a cat"},
               "context": {"message_id": "wamid.original"}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "location",
               "location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin", "address": "Mitte"}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "reaction",
               "reaction": {"message_id": "wamid.original", "emoji": "👍"}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "interactive",
               "interactive": {"type": "button", "body": {"text": "Pick"},
                               "action": {"buttons": [{"type": "reply", "reply": {"id": "y", "title": "Yes"}}]}}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "template",
               "template": {"name": "order_update", "language": {"code": "de"},
                            "components": [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}]}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "contacts",
               "contacts": [{"name": {"formatted_name": "Ada Lovelace", "first_name": "Ada"},
                             "phones": [{"phone": "+4930123", "type": "WORK", "wa_id": "4930123"}]}]}),
    ];
    for body in &sends {
        let (status, _, answer) = rig.send(NUMBER, body).await;
        assert_eq!(status, 200, "{body} -> {answer}");
    }
    let events = api_send_events(&rig.bus).await;
    assert_eq!(events.len(), sends.len());
    let mut by_type = BTreeMap::new();
    for e in &events {
        let m = api_send(e).message.clone().expect("message");
        by_type.insert(m.r#type.clone(), m);
    }
    match &by_type["image"].content {
        Some(Content::Media(m)) => {
            assert_eq!(
                (m.kind.as_str(), m.link.as_str(), m.caption.as_str()),
                ("image", "https://example.com/a.jpg", "a cat")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        by_type["image"].context.as_ref().expect("context").id,
        "wamid.original"
    );
    match &by_type["location"].content {
        Some(Content::Location(l)) => {
            assert_eq!(
                (l.latitude, l.longitude, l.name.as_str()),
                (52.52, 13.405, "Berlin")
            );
        }
        other => panic!("{other:?}"),
    }
    match &by_type["reaction"].content {
        Some(Content::Reaction(r)) => assert_eq!(
            (r.message_id.as_str(), r.emoji.as_str()),
            ("wamid.original", "👍")
        ),
        other => panic!("{other:?}"),
    }
    match &by_type["interactive"].content {
        Some(Content::Interactive(i)) => {
            assert_eq!(i.r#type, "button");
            let raw: Value = serde_json::from_str(&i.raw_json).expect("raw_json");
            assert_eq!(raw["action"]["buttons"][0]["reply"]["title"], json!("Yes"));
        }
        other => panic!("{other:?}"),
    }
    match &by_type["template"].content {
        Some(Content::Template(t)) => {
            assert_eq!(
                (t.name.as_str(), t.language.as_str()),
                ("order_update", "de")
            );
            let components: Value = serde_json::from_str(&t.components_json).expect("components");
            assert_eq!(components[0]["parameters"][0]["text"], json!("42"));
        }
        other => panic!("{other:?}"),
    }
    match &by_type["contacts"].content {
        Some(Content::Contacts(c)) => {
            assert_eq!(c.cards[0].formatted_name, "Ada Lovelace");
            assert_eq!(c.cards[0].phones[0].wa_id, "4930123");
        }
        other => panic!("{other:?}"),
    }
    rig.stop().await;
}

/// The embedded bus, refusing its first `failures` publishes as overloaded.
struct FlakyBus {
    inner: Arc<EmbeddedBus>,
    failures: std::sync::atomic::AtomicU32,
}

impl twinlog_bus::Bus for FlakyBus {
    async fn publish(
        &self,
        records: Vec<twinlog_bus::OutRecord>,
    ) -> Result<Vec<twinlog_bus::Position>, twinlog_bus::BusError> {
        let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(twinlog_bus::BusError::Overloaded {
                what: "the test's patience",
            });
        }
        self.inner.publish(records).await
    }

    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    async fn read(
        &self,
        topic: twinlog_bus::Topic,
        partition: u32,
        offset: u64,
        max: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<twinlog_bus::BusRecord>, twinlog_bus::BusError> {
        self.inner.read(topic, partition, offset, max, wait).await
    }

    async fn end_offset(
        &self,
        topic: twinlog_bus::Topic,
        partition: u32,
    ) -> Result<u64, twinlog_bus::BusError> {
        self.inner.end_offset(topic, partition).await
    }
}

/// A gateway on a [`FlakyBus`] in front of a simulator: sends one
/// template and returns the answer's status, headers, the gateway's stats
/// and the events on the bus.
async fn send_through_flaky_bus(
    failures: u32,
) -> (
    u16,
    reqwest::header::HeaderMap,
    twinlog_gateway::GatewayStats,
    usize,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = open_bus(dir.path());
    let bus = Arc::new(FlakyBus {
        inner: Arc::clone(&inner),
        failures: std::sync::atomic::AtomicU32::new(failures),
    });
    let (sim_router, sim) = simulator::router(SimConfig::default()).expect("simulator");
    let sim_server = Server::start(sim_router).await;
    let config = GatewayConfig {
        graph_base_url: sim_server.url("/v24.0"),
        access_token: TOKEN.to_owned(),
        ..GatewayConfig::default()
    };
    let gateway = Arc::new(Gateway::new(config, bus, &mut Registry::default()).expect("gateway"));
    let server = Server::start(Arc::clone(&gateway).router()).await;
    let resp = reqwest::Client::new()
        .post(server.url(&format!("/v1/messages/{NUMBER}")))
        .json(&crate::support::template("16505551234", "promo"))
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let answer: Value = resp.json().await.expect("json");
    assert!(
        answer["messages"][0]["id"].is_string(),
        "Meta's answer: {answer}"
    );
    server.stop().await;
    gateway.shutdown().await;
    sim_server.stop().await;
    sim.shutdown().await;
    let stats = gateway.stats();
    let events = api_send_events(&inner).await.len();
    (status, headers, stats, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_after_meta_accepted_is_retried() {
    let (status, headers, stats, events) = send_through_flaky_bus(2).await;
    assert_eq!(status, 200);
    assert_eq!(headers["twinlog-recorded"], "true");
    assert_eq!(
        (stats.sent, stats.publish_retries, stats.sent_unrecorded),
        (1, 2, 0)
    );
    assert_eq!(events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_keeps_failing_still_answers_meta_s_success_marked_unrecorded() {
    let attempts = twinlog_gateway::gateway::PUBLISH_ATTEMPTS_MAX;
    let (status, headers, stats, events) = send_through_flaky_bus(attempts).await;
    // Meta sent the message: the client must not retry it.
    assert_eq!(status, 200);
    assert_eq!(headers["twinlog-recorded"], "false");
    assert_eq!((stats.sent, stats.sent_unrecorded), (0, 1));
    assert_eq!(stats.publish_retries, u64::from(attempts - 1));
    assert_eq!(events, 0);
}
