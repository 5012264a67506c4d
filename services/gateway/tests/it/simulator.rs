//! The simulator answers as Meta documents: wamids, 190, 100, 130429,
//! 131056, 131047, and signed status webhooks with PMP pricing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use twinlog_gateway::simulator::{self, SimConfig, SimWebhook, Simulator, StatusDelays};

use crate::support::{error_code, template, text, Receiver, Server};

const NUMBER: &str = "106540352242922";
const TOKEN: &str = "sim-token";

struct Sim {
    sim: Simulator,
    server: Server,
    client: reqwest::Client,
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        let (router, sim) = simulator::router(config).expect("start simulator");
        let server = Server::start(router).await;
        Sim {
            sim,
            server,
            client: reqwest::Client::new(),
        }
    }

    /// POSTs a send as a Cloud API client would; returns status and body.
    async fn send_as(&self, token: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(self.server.url(&format!("/v24.0/{NUMBER}/messages")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("post to simulator");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json answer"))
    }

    async fn send(&self, body: &Value) -> (u16, Value) {
        self.send_as(TOKEN, body).await
    }

    async fn stop(self) {
        self.server.stop().await;
        self.sim.shutdown().await;
    }
}

fn assert_meta_error(body: &Value, code: i64) {
    let e = &body["error"];
    assert_eq!(e["code"], json!(code), "{body}");
    assert_eq!(e["type"], json!("OAuthException"));
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(e["error_data"]["messaging_product"], json!("whatsapp"));
    assert!(e["error_data"]["details"].is_string());
    assert!(e["fbtrace_id"].as_str().is_some_and(|t| !t.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sends_get_unique_wamids_and_templates_are_accepted() {
    let s = Sim::start(SimConfig::default()).await;
    let mut wamids = BTreeSet::new();
    for i in 0..5 {
        let to = format!("1650555000{i}");
        s.sim.inbound(NUMBER, &to);
        let (status, body) = s.send(&text(&to, "hello")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["messaging_product"], json!("whatsapp"));
        assert_eq!(body["contacts"][0], json!({"input": to, "wa_id": to}));
        let wamid = body["messages"][0]["id"].as_str().expect("wamid");
        assert!(wamid.starts_with("wamid."), "{wamid}");
        assert!(body["messages"][0].get("message_status").is_none());
        wamids.insert(wamid.to_owned());
    }
    assert_eq!(wamids.len(), 5, "wamids must be unique");

    let (status, body) = s.send(&template("16505559999", "order_update")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["message_status"], json!("accepted"));

    let accepted = s.sim.accepted();
    assert_eq!(accepted.len(), 6);
    assert!(wamids.contains(&accepted[0].wamid));
    assert_eq!(s.sim.stats().accepted, 6);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_190() {
    let s = Sim::start(SimConfig::default()).await;
    s.sim.inbound(NUMBER, "16505551234");
    let (status, body) = s.send_as("not-the-token", &text("16505551234", "hi")).await;
    assert_eq!(status, 401);
    assert_meta_error(&body, 190);

    // No Authorization header at all.
    let resp = s
        .client
        .post(s.server.url(&format!("/v24.0/{NUMBER}/messages")))
        .json(&text("16505551234", "hi"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(s.sim.stats().errors_with(190), 2);
    assert_eq!(s.sim.stats().accepted, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_parameters_are_100() {
    let s = Sim::start(SimConfig::default()).await;
    let to = "16505551234";
    s.sim.inbound(NUMBER, to);
    let bad = [
        json!({"to": to, "type": "text", "text": {"body": "no product"}}),
        json!({"messaging_product": "sms", "to": to, "type": "text", "text": {"body": "x"}}),
        json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": "no recipient"}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "text"}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": ""}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "image", "image": {"caption": "no id or link"}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "template", "template": {"name": "x"}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "hologram", "hologram": {}}),
        json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "x".repeat(4097)}}),
        json!(["not", "an", "object"]),
    ];
    for body in &bad {
        let (status, answer) = s.send(body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_meta_error(&answer, 100);
    }
    assert_eq!(
        s.sim.stats().errors_with(100),
        u64::try_from(bad.len()).expect("count")
    );
    // Text without `type` is Meta's default and valid.
    let (status, answer) = s
        .send(&json!({"messaging_product": "whatsapp", "to": to, "text": {"body": "default type"}}))
        .await;
    assert_eq!(status, 200, "{answer}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_20_per_second_hits_130429() {
    let s = Sim::start(SimConfig::default()).await;
    // Templates to distinct customers: no window and no pair limit involved.
    let sends = (0..60).map(|i| {
        let body = template(&format!("1650556{i:04}"), "promo");
        let client = s.client.clone();
        let url = s.server.url(&format!("/v24.0/{NUMBER}/messages"));
        async move {
            let resp = client
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .expect("post");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("json");
            (status, body)
        }
    });
    let results = futures_join_all(sends).await;
    let limited = results
        .iter()
        .filter(|(status, body)| *status == 400 && error_code(body) == 130429)
        .count();
    let ok = results.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(ok + limited, 60, "only successes and 130429s expected");
    assert!(limited > 0, "a burst of 60 at once must exceed 20 msg/s");
    assert!(ok >= 20, "the first second's 20 pass, got {ok}");
    for (status, body) in &results {
        if *status == 400 {
            assert_meta_error(body, 130429);
        }
    }
    assert_eq!(
        s.sim.stats().errors_with(130429),
        u64::try_from(limited).expect("count")
    );
    s.stop().await;
}

/// Runs futures concurrently on the runtime and collects their outputs in order.
pub async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pair_rate_allows_a_burst_of_45_then_131056() {
    let config = SimConfig {
        // Throughput out of the way: only the pair rate is under test.
        number_rate_per_s: 1000,
        ..SimConfig::default()
    };
    let s = Sim::start(config).await;
    let to = "16505551234";
    for i in 0..45 {
        let (status, body) = s.send(&template(to, "promo")).await;
        assert_eq!(status, 200, "send {i}: {body}");
    }
    let (status, body) = s.send(&template(to, "promo")).await;
    assert_eq!(status, 400);
    assert_meta_error(&body, 131056);
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("pair rate limit hit")));
    // Another customer of the same number is not affected.
    let (status, _) = s.send(&template("16505550000", "promo")).await;
    assert_eq!(status, 200);
    // One interval later (sim clock) the pair may send one more.
    s.sim.advance(Duration::from_millis(6_000));
    let (status, body) = s.send(&template(to, "promo")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.send(&template(to, "promo")).await;
    assert_eq!(status, 400);
    assert_meta_error(&body, 131056);
    assert_eq!(s.sim.stats().errors_with(131056), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_form_needs_the_24_hour_window() {
    let s = Sim::start(SimConfig::default()).await;
    let to = "16505551234";
    let (status, body) = s.send(&text(to, "never wrote")).await;
    assert_eq!(status, 400);
    assert_meta_error(&body, 131047);
    assert_eq!(
        body["error"]["message"],
        json!("(#131047) Re-engagement message")
    );

    // The customer writes (the HTTP hook): the window opens.
    let resp = s
        .client
        .post(s.server.url("/sim/inbound"))
        .json(&json!({"phone_number_id": NUMBER, "from": to}))
        .send()
        .await
        .expect("inbound");
    assert_eq!(resp.status().as_u16(), 200);
    let (status, body) = s.send(&text(to, "inside the window")).await;
    assert_eq!(status, 200, "{body}");

    // 23 h later still open; past 24 h closed; templates always pass.
    s.sim.advance(Duration::from_secs(23 * 3600));
    let (status, _) = s.send(&text(to, "23 h later")).await;
    assert_eq!(status, 200);
    s.sim.advance(Duration::from_secs(3600 + 1));
    let (status, body) = s.send(&text(to, "24 h later")).await;
    assert_eq!(status, 400);
    assert_meta_error(&body, 131047);
    let (status, body) = s.send(&template(to, "reengage")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.sim.stats().errors_with(131047), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_webhooks_arrive_signed_in_order_with_pmp_pricing() {
    let secret = "app-secret";
    let receiver = Receiver::new(secret);
    let hook_server = Server::start(receiver.router()).await;
    let config = SimConfig {
        webhook: Some(SimWebhook {
            url: hook_server.url("/webhook"),
            app_secret: secret.to_owned(),
        }),
        status_delays: StatusDelays {
            sent_ms: 5,
            delivered_ms: 15,
            read_ms: Some(25),
        },
        template_categories: BTreeMap::from([("order_update".to_owned(), "utility".to_owned())]),
        failing_recipients: BTreeSet::from(["16505550404".to_owned()]),
        ..SimConfig::default()
    };
    let s = Sim::start(config).await;
    let (free_to, paid_to, utility_to, failing_to) =
        ("16505551111", "16505552222", "16505553333", "16505550404");
    s.sim.inbound(NUMBER, free_to);
    s.sim.inbound(NUMBER, utility_to);
    let mut wamid_of = BTreeMap::new();
    for (to, body) in [
        (free_to, text(free_to, "in window")),
        (paid_to, template(paid_to, "promo")),
        (utility_to, template(utility_to, "order_update")),
        (failing_to, template(failing_to, "promo")),
    ] {
        let (status, answer) = s.send(&body).await;
        assert_eq!(status, 200, "{answer}");
        wamid_of.insert(
            answer["messages"][0]["id"]
                .as_str()
                .expect("wamid")
                .to_owned(),
            to,
        );
    }
    // 3 statuses for each of 3 messages, 1 failed.
    let received = receiver.wait_for(10).await;
    assert!(
        received.iter().all(|r| r.signature_valid),
        "every webhook is signed"
    );

    let mut statuses: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in &received {
        let body = &r.body;
        assert_eq!(body["object"], json!("whatsapp_business_account"));
        let change = &body["entry"][0]["changes"][0];
        assert_eq!(change["field"], json!("messages"));
        let value = &change["value"];
        assert_eq!(value["messaging_product"], json!("whatsapp"));
        assert_eq!(value["metadata"]["phone_number_id"], json!(NUMBER));
        assert!(value["metadata"]["display_phone_number"].is_string());
        for st in value["statuses"].as_array().expect("statuses") {
            let ts = st["timestamp"].as_str().expect("timestamp is a string");
            assert!(ts.parse::<i64>().is_ok_and(|t| t > 1_600_000_000), "{ts}");
            let id = st["id"].as_str().expect("id").to_owned();
            assert_eq!(st["recipient_id"], json!(wamid_of[&id]));
            statuses.entry(id).or_default().push(st.clone());
        }
    }
    assert_eq!(statuses.len(), 4);
    for (wamid, list) in &statuses {
        let to = wamid_of[wamid];
        let kinds: Vec<&str> = list.iter().filter_map(|s| s["status"].as_str()).collect();
        if to == failing_to {
            assert_eq!(kinds, ["failed"]);
            assert!(list[0].get("pricing").is_none());
            assert_eq!(list[0]["errors"][0]["code"], json!(131026));
            continue;
        }
        assert_eq!(kinds, ["sent", "delivered", "read"], "order for {to}");
        let expected = match to {
            t if t == free_to => {
                json!({"billable": false, "pricing_model": "PMP", "type": "free_customer_service", "category": "service"})
            }
            t if t == utility_to => {
                json!({"billable": false, "pricing_model": "PMP", "type": "free_customer_service", "category": "utility"})
            }
            _ => {
                json!({"billable": true, "pricing_model": "PMP", "type": "regular", "category": "marketing"})
            }
        };
        assert_eq!(list[0]["pricing"], expected, "sent of {to}");
        assert_eq!(list[1]["pricing"], expected, "delivered of {to}");
        assert!(list[2].get("pricing").is_none(), "read carries no pricing");
    }
    let stats = s.sim.stats();
    assert_eq!(stats.webhooks_delivered, 10);
    assert_eq!(stats.webhooks_failed, 0);
    s.stop().await;
    hook_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_rejects_the_signature_counts_failed_webhooks() {
    // The receiver checks a different secret: every webhook fails its check.
    let receiver = Receiver::new("the-right-secret");
    let hook_server = Server::start(receiver.router()).await;
    let config = SimConfig {
        webhook: Some(SimWebhook {
            url: hook_server.url("/webhook"),
            app_secret: "a-wrong-secret".to_owned(),
        }),
        status_delays: StatusDelays {
            sent_ms: 0,
            delivered_ms: 0,
            read_ms: None,
        },
        ..SimConfig::default()
    };
    let s = Sim::start(config).await;
    let (status, _) = s.send(&template("16505551234", "promo")).await;
    assert_eq!(status, 200);
    // sent + delivered, each tried WEBHOOK_ATTEMPTS_MAX times.
    let attempts = usize::try_from(2 * simulator::WEBHOOK_ATTEMPTS_MAX).expect("count");
    let received = receiver.wait_for(attempts).await;
    assert!(received.iter().all(|r| !r.signature_valid));
    let failed = crate::support::eventually(|| {
        let st = s.sim.stats();
        (st.webhooks_failed == 2).then_some(st)
    })
    .await;
    assert!(
        failed.is_some(),
        "two webhooks counted as failed: {:?}",
        s.sim.stats()
    );
    s.stop().await;
    hook_server.stop().await;
}
