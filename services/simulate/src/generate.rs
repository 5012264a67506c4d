//! The traffic generator: per number, an onboarding and then conversations,
//! each body built as Meta shapes it and counted into the prediction as it is
//! made; then the numbers merged by Meta time, re-deliveries inserted, and
//! bodies shuffled within windows.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::rng::Rng;
use crate::{
    Delivery, Expected, RecordCounts, Scenario, Traffic, CUSTOMERS_PER_NUMBER_MAX, EVENTS_MAX,
    NUMBERS_MAX, REORDER_WINDOW_MAX,
};

const DAY_S: i64 = 86_400;
/// Oldest history message generated, before onboarding: inside Meta's 180
/// days with a margin, so none is `too_old`.
const HISTORY_AGE_S_MAX: i64 = 175 * DAY_S;
/// History media newer than this (before onboarding) get their follow-up;
/// Meta serves media up to 14 days old. The 2 days of margin cover an engine
/// whose day 0 is the history's ingest time (see the crate docs).
const HISTORY_MEDIA_AGE_S_MAX: i64 = 12 * DAY_S;
/// Placeholders are not generated between the two limits, so no follow-up
/// lands near the engine's 14-day line.
const HISTORY_MEDIA_GAP_S_MAX: i64 = 15 * DAY_S;
/// Threads in one history chunk.
const CHUNK_THREADS_MAX: usize = 8;
/// Messages of one customer in history.
const HISTORY_MESSAGES_MAX: i64 = 12;
/// Contacts in one `smb_app_state_sync` body.
const CONTACTS_PER_BODY_MAX: usize = 50;
/// Recipients of one campaign.
const CAMPAIGN_RECIPIENTS_MAX: u64 = 30;
/// Campaign sends per second of Meta time.
const CAMPAIGN_RATE_PER_S: i64 = 10;
/// Delay (in deliveries) of a re-delivery after its original, at most.
const DUPLICATE_DELAY_MAX: i64 = 24;

/// Dependency levels: within a reorder window, lower levels go first.
const LEVEL_LIVE: u8 = 0;
const LEVEL_HISTORY: u8 = 1;
const LEVEL_MEDIA: u8 = 2;

const COUNTRIES: &[(&str, &str)] = &[
    ("1", "US"),
    ("44", "GB"),
    ("49", "DE"),
    ("34", "ES"),
    ("55", "BR"),
    ("52", "MX"),
    ("91", "IN"),
    ("33", "FR"),
];
const FIRST_NAMES: &[&str] = &[
    "Sheena", "Pablo", "Amara", "Lukas", "Priya", "Mateo", "Chloé", "Kenji", "Fatima", "Oliver",
    "Lucía", "Noah", "Aisha", "João", "Emma", "Ravi",
];
const LAST_NAMES: &[&str] = &[
    "Nelson",
    "Morales",
    "Okafor",
    "Schmidt",
    "Sharma",
    "García",
    "Dubois",
    "Tanaka",
    "Haddad",
    "Smith",
    "Fernández",
    "Silva",
    "Rossi",
    "Kowalski",
];
const CUSTOMER_TEXTS: &[&str] = &[
    "Hi! Do you still have the blue one in stock?",
    "Does it come in another color?",
    "What time do you open on Saturday?",
    "Can I change my delivery address?",
    "I'd like to book a table for 4 tonight",
    "Thanks, that's perfect 🙏",
    "Is there a discount for two?",
    "My order hasn't arrived yet, order #4471",
    "¿Hacen envíos a Valencia?",
    "Obrigado! Chegou tudo certinho",
    "How much is shipping to Berlin?",
    "Ok see you tomorrow",
];
const STAFF_TEXTS: &[&str] = &[
    "Hi! Yes, we have it in blue, green and red.",
    "We open at 9 on Saturdays.",
    "Sure, send me the new address and I'll update it.",
    "Booked for 8pm, see you then!",
    "Let me check with the warehouse and get back to you.",
    "Your order left our store this morning 📦",
    "Yes: 10% off when you buy two.",
    "Claro, enviamos a toda España.",
];
const BOT_TEXTS: &[&str] = &[
    "Thanks for your message! An agent will reply shortly.",
    "Your order #4471 is out for delivery and should arrive today.",
    "Our opening hours are Mon–Sat 9:00–19:00.",
    "You can track your parcel here: https://example.com/track/4471",
];
const TEMPLATES: &[(&str, &str)] = &[
    ("spring_sale", "marketing"),
    ("new_arrivals", "marketing"),
    ("order_update", "utility"),
    ("appointment_reminder", "utility"),
];
const EMOJIS: &[&str] = &["👍", "❤️", "😂", "🙏", "😮"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ident {
    Phone,
    PhoneAndBsuid,
    Bsuid,
}

struct Customer {
    ident: Ident,
    /// "" for BSUID-only customers.
    phone: String,
    /// "" for phone-only customers.
    bsuid: String,
    first: &'static str,
    last: &'static str,
    country: &'static str,
    /// In the app's address book.
    synced: bool,
}

impl Customer {
    fn full_name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }

    fn username(&self) -> String {
        format!("@{}{}", self.first.to_lowercase(), self.last.len())
    }

    /// A `value.contacts[]` entry that matches this customer's items.
    fn contact(&self) -> Value {
        let mut profile = Map::new();
        if self.ident != Ident::Bsuid {
            profile.insert("name".into(), json!(self.full_name()));
        }
        if self.ident != Ident::Phone {
            profile.insert("username".into(), json!(self.username()));
            profile.insert("country_code".into(), json!(self.country));
        }
        let mut c = Map::new();
        c.insert("profile".into(), Value::Object(profile));
        c.insert("wa_id".into(), json!(self.phone));
        if !self.bsuid.is_empty() {
            c.insert("user_id".into(), json!(self.bsuid));
        }
        Value::Object(c)
    }

    /// The sender keys of a message from this customer.
    fn from(&self, m: &mut Map<String, Value>) {
        m.insert("from".into(), json!(self.phone));
        if !self.bsuid.is_empty() {
            m.insert("from_user_id".into(), json!(self.bsuid));
        }
    }

    /// The recipient keys of a business message to this customer.
    fn to(&self, m: &mut Map<String, Value>) {
        m.insert("to".into(), json!(self.phone));
        if !self.bsuid.is_empty() {
            m.insert("to_user_id".into(), json!(self.bsuid));
        }
    }
}

enum Payload {
    Webhook {
        bytes: Vec<u8>,
        /// Normalised events the body yields.
        events: u64,
        sends: u32,
    },
    Send {
        bytes: Vec<u8>,
    },
}

struct Body {
    /// Meta time of the delivery, unix seconds: the merge order.
    at: i64,
    level: u8,
    /// Local indices of the bodies this one must follow.
    deps: Vec<usize>,
    payload: Payload,
}

/// A simulated Cloud API message (its wamid is known only without the gateway).
enum ApiKind<'a> {
    BotText(&'a str),
    BotButtons,
    Template(&'a str, &'a str),
}

struct NumberGen<'s> {
    s: &'s Scenario,
    idx: u32,
    rng: Rng,
    pnid: String,
    display: String,
    waba: String,
    owner: String,
    partner_app: String,
    customers: Vec<Customer>,
    now: i64,
    wamid_counter: u64,
    bodies: Vec<Body>,
    budget: u64,
    used: u64,
    rec: RecordCounts,
    /// Recent app echoes (wamid, customer, is text), for edits, revokes and reactions.
    echoes: Vec<(String, usize, bool)>,
}

fn to_bytes(v: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn ts(t: i64) -> Value {
    Value::String(t.to_string())
}

impl<'s> NumberGen<'s> {
    fn new(s: &'s Scenario, idx: u32, budget: u64) -> Self {
        let mut rng = Rng::derive(s.seed, u64::from(idx) + 1);
        let mut ids = Rng::derive(s.seed, 0);
        let base = ids.range(1_000_000_000, 9_999_999_999);
        let base2 = ids.range(1_000_000_000, 9_999_999_999);
        let base3 = ids.range(0, 9_999_999);
        let base4 = ids.range(1_000_000_000, 9_999_999_999);
        let partner = ids.range(100_000_000_000_000, 999_999_999_999_999);
        let phone_base = ids.below(900_000_000);
        let cpn = u64::from(s.customers_per_number);
        let mut customers = Vec::new();
        for c in 0..cpn {
            let (cc, iso) = rng.pick(COUNTRIES);
            let unique = 100_000_000 + (phone_base + u64::from(idx) * cpn + c) % 900_000_000;
            let ident = match rng.below(100) {
                0..60 => Ident::Phone,
                60..85 => Ident::PhoneAndBsuid,
                _ => Ident::Bsuid,
            };
            let bsuid = format!(
                "{iso}.{}",
                10_000_000_000_000_000_000u64 + rng.below(8_000_000_000_000_000_000)
            );
            customers.push(Customer {
                ident,
                phone: if ident == Ident::Bsuid {
                    String::new()
                } else {
                    format!("{cc}{unique}")
                },
                bsuid: if ident == Ident::Phone {
                    String::new()
                } else {
                    bsuid
                },
                first: rng.pick(FIRST_NAMES),
                last: rng.pick(LAST_NAMES),
                country: iso,
                synced: false,
            });
        }
        // Numbers onboard within the first hours, one after another.
        let now = s.start_unix_s + i64::from(idx) * 600 + rng.range(0, 300);
        NumberGen {
            s,
            idx,
            rng,
            pnid: format!("1{:04}{base}", idx),
            display: format!("1555{:07}", (base3 + i64::from(idx)) % 10_000_000),
            waba: format!("2{:04}{base2}", idx),
            owner: format!("3{:04}{base4}", idx),
            partner_app: partner.to_string(),
            customers,
            now,
            wamid_counter: 0,
            bodies: Vec::new(),
            budget,
            used: 0,
            rec: RecordCounts::default(),
            echoes: Vec::new(),
        }
    }

    /// A unique wamid: base64 of the customer id (as Meta embeds the
    /// phone), Meta's fixed bytes, the seed, the number and a counter.
    fn wamid(&mut self, c: Option<usize>) -> String {
        self.wamid_counter += 1;
        let who = c
            .and_then(|c| self.customers.get(c))
            .map(|c| {
                if c.phone.is_empty() {
                    c.bsuid.clone()
                } else {
                    c.phone.clone()
                }
            })
            .unwrap_or_default();
        let mut raw = who.into_bytes();
        raw.extend_from_slice(&[0x15, 0x02, 0x00, 0x12, 0x18, 0x14]);
        raw.extend_from_slice(
            format!(
                "{:016X}{:04X}{:08X}",
                self.s.seed, self.idx, self.wamid_counter
            )
            .as_bytes(),
        );
        raw.push(0x00);
        format!(
            "wamid.{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    fn tick(&mut self, lo: i64, hi: i64) -> i64 {
        self.now += self.rng.range(lo, hi);
        self.now
    }

    fn value(&self) -> Map<String, Value> {
        let mut v = Map::new();
        v.insert("messaging_product".into(), json!("whatsapp"));
        v.insert(
            "metadata".into(),
            json!({"display_phone_number": self.display, "phone_number_id": self.pnid}),
        );
        v
    }

    fn envelope(&self, field: &str, value: Map<String, Value>) -> Value {
        json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": self.waba, "changes": [{"field": field, "value": Value::Object(value)}]}]
        })
    }

    fn push(&mut self, at: i64, level: u8, deps: Vec<usize>, payload: Payload) -> usize {
        self.used += match &payload {
            Payload::Webhook { events, .. } => *events,
            Payload::Send { .. } => 1,
        };
        self.bodies.push(Body {
            at,
            level,
            deps,
            payload,
        });
        self.bodies.len() - 1
    }

    fn push_webhook(
        &mut self,
        at: i64,
        field: &str,
        value: Map<String, Value>,
        events: u64,
        sends: u32,
    ) -> usize {
        let bytes = to_bytes(&self.envelope(field, value));
        self.push(
            at,
            LEVEL_LIVE,
            Vec::new(),
            Payload::Webhook {
                bytes,
                events,
                sends,
            },
        )
    }

    // -- onboarding ---------------------------------------------------------

    fn onboarding(&mut self) {
        let t0 = self.now;
        // PARTNER_APP_INSTALLED: day 0 of history, the 24 h sync window opens.
        let install = json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": self.waba,
                "time": t0,
                "changes": [{"field": "account_update", "value": {
                    "event": "PARTNER_APP_INSTALLED",
                    "waba_info": {"waba_id": self.waba, "owner_business_id": self.owner, "partner_app_id": self.partner_app}
                }}]
            }]
        });
        let install = self.push(
            t0,
            LEVEL_LIVE,
            Vec::new(),
            Payload::Webhook {
                bytes: to_bytes(&install),
                events: 1,
                sends: 0,
            },
        );
        self.rec.account_updates += 1;
        self.rec.sync_windows_opened += 1;

        // The one-time contact sync, in bodies of up to CONTACTS_PER_BODY_MAX.
        let mut synced = Vec::new();
        for c in 0..self.customers.len() {
            if self.rng.percent(70) {
                self.customers[c].synced = true;
                synced.push(c);
            }
        }
        let first = t0 + self.rng.range(60, 240);
        for (at, group) in (first..).zip(synced.chunks(CONTACTS_PER_BODY_MAX)) {
            let items: Vec<Value> = group
                .iter()
                .map(|&c| self.contact_item(c, "add", at))
                .collect();
            let n = items.len() as u64;
            let mut v = self.value();
            v.insert("state_sync".into(), Value::Array(items));
            self.push_webhook(at, "smb_app_state_sync", v, n, 0);
            self.rec.contact_syncs += n;
        }

        // A few conversations between onboarding and the history request:
        // live first, then repeated by history's phase 0.
        let mut overlap: Vec<(usize, Value, usize)> = Vec::new();
        let early = self.rng.below(3).min(self.customers.len() as u64);
        let mut at = t0 + self.rng.range(300, 600);
        for _ in 0..early {
            let c = self.rng.index(self.customers.len());
            let wamid = self.wamid(Some(c));
            let body = self.rng.pick(CUSTOMER_TEXTS);
            let (live, hist) = self.text_inbound(c, &wamid, at, body);
            let id = self.push_webhook(at, "messages", live, 1, 0);
            self.rec.inbound_messages += 1;
            overlap.push((c, hist, id));
            at += self.rng.range(30, 240);
            let wamid = self.wamid(Some(c));
            let body = self.rng.pick(STAFF_TEXTS);
            let (live, hist) = self.text_echo(c, &wamid, at, body);
            let id = self.push_webhook(at, "smb_message_echoes", live, 1, 1);
            self.rec.echoes += 1;
            self.echoes.push((wamid, c, true));
            overlap.push((c, hist, id));
            at += self.rng.range(30, 240);
        }

        let history_at = t0 + 1800;
        if self.rng.percent(10) {
            // The business declined to share its history.
            let mut v = self.value();
            v.insert(
                "history".into(),
                json!([{"errors": [{
                    "code": 2593109,
                    "title": "History sync is turned off by the business from the WhatsApp Business App",
                    "message": "History sync is turned off by the business from the WhatsApp Business App",
                    "error_data": {"details": "History sharing is turned off by the business"}
                }]}]),
            );
            let id = self.push_webhook(history_at, "history", v, 1, 0);
            self.bodies[id].level = LEVEL_HISTORY;
            self.bodies[id].deps = vec![install];
            self.rec.history_declined += 1;
            self.now = history_at + 600;
        } else {
            let end = self.history(t0, history_at, install, overlap);
            self.now = end + 600;
        }
    }

    fn contact_item(&self, c: usize, action: &str, at: i64) -> Value {
        let cu = &self.customers[c];
        let mut contact = Map::new();
        if action == "add" {
            contact.insert("full_name".into(), json!(cu.full_name()));
            contact.insert("first_name".into(), json!(cu.first));
        }
        contact.insert("phone_number".into(), json!(cu.phone));
        if !cu.bsuid.is_empty() {
            contact.insert("user_id".into(), json!(cu.bsuid));
            if action == "add" {
                contact.insert("username".into(), json!(cu.username()));
                contact.insert("country_code".into(), json!(cu.country));
            }
        }
        json!({"type": "contact", "contact": Value::Object(contact), "action": action, "metadata": {"timestamp": ts(at)}})
    }

    /// A text from the customer: the live `messages` value and the same
    /// message as history shows it.
    fn text_inbound(
        &self,
        c: usize,
        wamid: &str,
        at: i64,
        body: &str,
    ) -> (Map<String, Value>, Value) {
        let cu = &self.customers[c];
        let mut m = Map::new();
        cu.from(&mut m);
        m.insert("id".into(), json!(wamid));
        m.insert("timestamp".into(), ts(at));
        m.insert("type".into(), json!("text"));
        m.insert("text".into(), json!({"body": body}));
        let mut h = m.clone();
        h.insert("history_context".into(), json!({"status": "READ"}));
        let mut v = self.value();
        v.insert("contacts".into(), json!([cu.contact()]));
        v.insert("messages".into(), json!([Value::Object(m)]));
        (v, Value::Object(h))
    }

    /// A text from the app: the live `smb_message_echoes` value and the
    /// history form.
    fn text_echo(&self, c: usize, wamid: &str, at: i64, body: &str) -> (Map<String, Value>, Value) {
        let mut m = Map::new();
        m.insert("from".into(), json!(self.display));
        self.customers[c].to(&mut m);
        m.insert("id".into(), json!(wamid));
        m.insert("timestamp".into(), ts(at));
        m.insert("type".into(), json!("text"));
        m.insert("text".into(), json!({"body": body}));
        let mut h = m.clone();
        h.insert("history_context".into(), json!({"status": "DELIVERED"}));
        let v = self.echo_value(c, Value::Object(m));
        (v, Value::Object(h))
    }

    fn echo_value(&self, c: usize, echo: Value) -> Map<String, Value> {
        let cu = &self.customers[c];
        let mut v = self.value();
        if cu.ident != Ident::Phone {
            v.insert("contacts".into(), json!([cu.contact()]));
        }
        v.insert("message_echoes".into(), json!([echo]));
        v
    }

    /// History chunks (phases 0 to 2, out of order) and media follow-ups.
    /// Returns the Meta time of the last body.
    fn history(
        &mut self,
        t0: i64,
        history_at: i64,
        install: usize,
        overlap: Vec<(usize, Value, usize)>,
    ) -> i64 {
        // Per phase: threads (customer, messages); placeholders to enrich.
        let mut phases: [Vec<(usize, Vec<Value>)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        // (phase, customer, wamid, timestamp, sent by the business)
        let mut followups: Vec<(usize, usize, String, i64, bool)> = Vec::new();
        let mut overlap_deps: Vec<usize> = Vec::new();
        for c in 0..self.customers.len() {
            let mut msgs: Vec<(i64, Value, bool)> = Vec::new(); // (ts, msg, overlap)
            for (oc, m, id) in &overlap {
                if *oc == c {
                    let t = m
                        .get("timestamp")
                        .and_then(Value::as_str)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(t0);
                    msgs.push((t, m.clone(), true));
                    overlap_deps.push(*id);
                }
            }
            if msgs.is_empty() && !self.rng.percent(60) {
                continue;
            }
            let n = self
                .rng
                .range(if msgs.is_empty() { 2 } else { 0 }, HISTORY_MESSAGES_MAX);
            for _ in 0..n {
                let age = self.rng.range(120, HISTORY_AGE_S_MAX);
                let t = t0 - age;
                let wamid = self.wamid(Some(c));
                let outgoing = self.rng.percent(50);
                let placeholder = self.rng.percent(25)
                    && !(HISTORY_MEDIA_AGE_S_MAX..HISTORY_MEDIA_GAP_S_MAX).contains(&age);
                let cu = &self.customers[c];
                let mut m = Map::new();
                if outgoing {
                    m.insert("from".into(), json!(self.display));
                    cu.to(&mut m);
                } else {
                    cu.from(&mut m);
                }
                m.insert("id".into(), json!(wamid));
                m.insert("timestamp".into(), ts(t));
                if placeholder {
                    m.insert("type".into(), json!("media_placeholder"));
                } else {
                    let text = if outgoing {
                        self.rng.pick(STAFF_TEXTS)
                    } else {
                        self.rng.pick(CUSTOMER_TEXTS)
                    };
                    m.insert("type".into(), json!("text"));
                    m.insert("text".into(), json!({"body": text}));
                }
                let status = match (outgoing, self.rng.below(3)) {
                    (false, _) => "READ",
                    (true, 0) => "DELIVERED",
                    (true, 1) => "READ",
                    (true, _) => {
                        if placeholder {
                            "PLAYED"
                        } else {
                            "SENT"
                        }
                    }
                };
                m.insert("history_context".into(), json!({"status": status}));
                msgs.push((t, Value::Object(m), false));
            }
            msgs.sort_by_key(|(t, _, _)| *t);
            let mut per_phase: [Vec<Value>; 3] = [Vec::new(), Vec::new(), Vec::new()];
            for (t, m, is_overlap) in msgs {
                let age = t0 - t;
                let phase = if age < DAY_S {
                    0
                } else if age < 90 * DAY_S {
                    1
                } else {
                    2
                };
                if is_overlap {
                    self.rec.history_duplicates += 1;
                } else {
                    self.rec.history_messages += 1;
                }
                let is_placeholder =
                    m.get("type").and_then(Value::as_str) == Some("media_placeholder");
                if is_placeholder && age <= HISTORY_MEDIA_AGE_S_MAX {
                    let wamid = m
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    followups.push((phase, c, wamid, t, m.get("to").is_some()));
                }
                per_phase[phase].push(m);
            }
            for (p, list) in per_phase.into_iter().enumerate() {
                if !list.is_empty() {
                    phases[p].push((c, list));
                }
            }
        }

        // Chunks: per phase, up to CHUNK_THREADS_MAX threads each.
        struct Chunk {
            phase: usize,
            order: usize,
            threads: Vec<(usize, Vec<Value>)>,
        }
        let mut chunks: Vec<Chunk> = Vec::new();
        for (p, threads) in phases.into_iter().enumerate() {
            let mut order = 0;
            let mut threads = threads.into_iter().peekable();
            while threads.peek().is_some() {
                order += 1;
                let take: Vec<_> = threads.by_ref().take(CHUNK_THREADS_MAX).collect();
                chunks.push(Chunk {
                    phase: p,
                    order,
                    threads: take,
                });
            }
        }
        // Sometimes the final progress-100 comes as a chunk without threads.
        let empty_final = chunks.is_empty() || self.rng.percent(25);
        let total = chunks.len() + usize::from(empty_final);
        // Chunks "may not be delivered sequentially".
        let mut delivery: Vec<usize> = (0..total).collect();
        self.rng.shuffle(&mut delivery);
        // The chunk that holds each (phase, customer) thread.
        let mut chunk_of: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        let mut last_at = history_at;
        for (slot, &j) in delivery.iter().enumerate() {
            let at = history_at + 30 * slot as i64;
            last_at = last_at.max(at);
            let progress = if j + 1 == total {
                100
            } else {
                (100 * (j + 1) / total) as i64
            };
            let (phase, order, threads) = match chunks.get(j) {
                Some(ch) => (ch.phase, ch.order, ch.threads.as_slice()),
                None => (2, 0, &[][..]),
            };
            let order = if threads.is_empty() {
                chunks.iter().filter(|c| c.phase == 2).count() + 1
            } else {
                order
            };
            let thread_values: Vec<Value> = threads
                .iter()
                .map(|(c, msgs)| {
                    let cu = &self.customers[*c];
                    let mut t = Map::new();
                    t.insert("id".into(), json!(cu.phone));
                    if cu.ident != Ident::Phone {
                        t.insert(
                            "context".into(),
                            json!({"wa_id": cu.phone, "user_id": cu.bsuid, "username": cu.username(), "country_code": cu.country}),
                        );
                    }
                    t.insert("messages".into(), Value::Array(msgs.clone()));
                    Value::Object(t)
                })
                .collect();
            let records = thread_values.len().max(1) as u64;
            let mut v = self.value();
            v.insert(
                "history".into(),
                json!([{"metadata": {"phase": phase, "chunk_order": order, "progress": progress}, "threads": thread_values}]),
            );
            let mut deps = vec![install];
            if phase == 0 {
                deps.extend(overlap_deps.iter().copied());
            }
            let id = self.push_webhook(at, "history", v, records, 0);
            self.bodies[id].level = LEVEL_HISTORY;
            self.bodies[id].deps = deps;
            self.rec.history_chunks += records;
            if progress >= 100 {
                self.rec.history_complete += records;
            }
            for (c, _) in threads {
                chunk_of.insert((phase, *c), id);
            }
        }
        // Media follow-ups, after every chunk.
        let mut at = last_at + 60;
        for (phase, c, wamid, t, outgoing) in followups {
            let Some(&chunk) = chunk_of.get(&(phase, c)) else {
                continue;
            };
            let cu = &self.customers[c];
            let mut m = Map::new();
            if outgoing {
                m.insert("from".into(), json!(self.display));
                cu.to(&mut m);
            } else {
                cu.from(&mut m);
            }
            m.insert("id".into(), json!(wamid));
            m.insert("timestamp".into(), ts(t));
            m.insert("type".into(), json!("image"));
            let media_id = self.rng.range(1_000_000_000_000_000, 9_999_999_999_999_999);
            let sha = format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
            m.insert(
                "image".into(),
                json!({"mime_type": "image/jpeg", "sha256": sha, "id": media_id.to_string()}),
            );
            let mut v = self.value();
            let key = if outgoing {
                "message_echoes"
            } else {
                "messages"
            };
            v.insert(key.into(), json!([Value::Object(m)]));
            let id = self.push_webhook(at, "history", v, 1, 0);
            self.bodies[id].level = LEVEL_MEDIA;
            self.bodies[id].deps = vec![chunk];
            self.rec.media_enriched += 1;
            at += self.rng.range(1, 20);
        }
        at
    }

    // -- live traffic -------------------------------------------------------

    fn live(&mut self) {
        while self.used < self.budget {
            let c = self.rng.index(self.customers.len());
            if self.rng.per_mille(self.s.group_per_mille) {
                self.group();
            } else {
                match self.rng.below(100) {
                    0..45 => self.app_conversation(c),
                    45..75 => self.bot_conversation(c),
                    75..85 => self.contact_change(c),
                    85..88 => self.campaign(),
                    _ => self.customer_only(c),
                }
            }
            self.tick(5, 900);
        }
    }

    fn inbound(&mut self, c: usize, at: i64, m: Map<String, Value>) -> usize {
        let mut v = self.value();
        v.insert("contacts".into(), json!([self.customers[c].contact()]));
        v.insert("messages".into(), json!([Value::Object(m)]));
        self.push_webhook(at, "messages", v, 1, 0)
    }

    /// A customer's message of a random type; returns its wamid and whether it is text.
    fn customer_message(&mut self, c: usize) -> (String, bool) {
        let at = self.tick(1, 120);
        let wamid = self.wamid(Some(c));
        let mut m = Map::new();
        self.customers[c].from(&mut m);
        m.insert("id".into(), json!(wamid));
        m.insert("timestamp".into(), ts(at));
        let roll = self.rng.below(100);
        let is_text = roll < 65;
        match roll {
            0..65 => {
                m.insert("type".into(), json!("text"));
                m.insert(
                    "text".into(),
                    json!({"body": self.rng.pick(CUSTOMER_TEXTS)}),
                );
            }
            65..80 => {
                m.insert("type".into(), json!("image"));
                let mut img = self.media("image/jpeg");
                if self.rng.percent(50) {
                    img.insert("caption".into(), json!("this one"));
                }
                m.insert("image".into(), Value::Object(img));
            }
            80..86 => {
                m.insert("type".into(), json!("location"));
                let lat = 40.0 + self.rng.below(1_000_000) as f64 / 100_000.0;
                let lon = -3.0 - self.rng.below(1_000_000) as f64 / 100_000.0;
                m.insert(
                    "location".into(),
                    json!({"latitude": lat, "longitude": lon, "name": "Home", "address": "Calle Mayor 1, Madrid"}),
                );
            }
            86..94 => {
                m.insert("type".into(), json!("audio"));
                let mut a = self.media("audio/ogg; codecs=opus");
                a.insert("voice".into(), json!(true));
                m.insert("audio".into(), Value::Object(a));
            }
            _ => {
                m.insert("type".into(), json!("document"));
                let mut d = self.media("application/pdf");
                d.insert("filename".into(), json!("invoice-4471.pdf"));
                m.insert("document".into(), Value::Object(d));
            }
        }
        self.inbound(c, at, m);
        self.rec.inbound_messages += 1;
        (wamid, is_text)
    }

    fn media(&mut self, mime: &str) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("mime_type".into(), json!(mime));
        o.insert(
            "sha256".into(),
            json!(format!(
                "{:016x}{:016x}",
                self.rng.next_u64(),
                self.rng.next_u64()
            )),
        );
        o.insert(
            "id".into(),
            json!(self
                .rng
                .range(1_000_000_000_000_000, 9_999_999_999_999_999)
                .to_string()),
        );
        o
    }

    fn customer_revision(&mut self, c: usize, original: &str, edit: bool) {
        let at = if edit {
            self.now + self.rng.range(20, 14 * 60)
        } else {
            self.now + self.rng.range(20, 2 * DAY_S)
        };
        let wamid = self.wamid(Some(c));
        let mut m = Map::new();
        self.customers[c].from(&mut m);
        m.insert("id".into(), json!(wamid));
        m.insert("timestamp".into(), ts(at));
        if edit {
            m.insert("type".into(), json!("edit"));
            m.insert(
                "edit".into(),
                json!({"original_message_id": original, "message": {"context": {"id": "M0"}, "type": "text", "text": {"body": self.rng.pick(CUSTOMER_TEXTS)}}}),
            );
            self.rec.customer_edits += 1;
        } else {
            m.insert("type".into(), json!("revoke"));
            m.insert("revoke".into(), json!({"original_message_id": original}));
            self.rec.customer_revokes += 1;
        }
        self.inbound(c, at, m);
    }

    fn echo(&mut self, c: usize) -> String {
        let at = self.tick(5, 600);
        let wamid = self.wamid(Some(c));
        let roll = self.rng.below(100);
        let mut m = Map::new();
        m.insert("from".into(), json!(self.display));
        self.customers[c].to(&mut m);
        m.insert("id".into(), json!(wamid));
        m.insert("timestamp".into(), ts(at));
        let is_text = roll < 75;
        match roll {
            0..75 => {
                m.insert("type".into(), json!("text"));
                m.insert("text".into(), json!({"body": self.rng.pick(STAFF_TEXTS)}));
            }
            75..90 => {
                m.insert("type".into(), json!("image"));
                let mut img = self.media("image/jpeg");
                img.insert("caption".into(), json!("Here it is in blue"));
                img.insert(
                    "url".into(),
                    json!(format!(
                        "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid={}",
                        img.get("id").and_then(Value::as_str).unwrap_or_default()
                    )),
                );
                m.insert("image".into(), Value::Object(img));
            }
            _ => {
                m.insert("type".into(), json!("document"));
                let mut d = self.media("application/pdf");
                d.insert("filename".into(), json!("catalogue.pdf"));
                m.insert("document".into(), Value::Object(d));
            }
        }
        let v = self.echo_value(c, Value::Object(m));
        self.push_webhook(at, "smb_message_echoes", v, 1, 1);
        self.rec.echoes += 1;
        self.echoes.push((wamid.clone(), c, is_text));
        if self.echoes.len() > 64 {
            self.echoes.remove(0);
        }
        wamid
    }

    fn echo_revision(&mut self, c: usize, original: &str, edit: bool) {
        let at = self.now + self.rng.range(10, 15 * 60);
        let wamid = self.wamid(Some(c));
        let mut m = Map::new();
        m.insert("from".into(), json!(self.display));
        self.customers[c].to(&mut m);
        m.insert("id".into(), json!(wamid));
        m.insert("timestamp".into(), ts(at));
        if edit {
            m.insert("type".into(), json!("edit"));
            m.insert(
                "edit".into(),
                json!({"original_message_id": original, "message": {"type": "text", "text": {"body": self.rng.pick(STAFF_TEXTS)}}}),
            );
            self.rec.app_edits += 1;
        } else {
            m.insert("type".into(), json!("revoke"));
            m.insert("revoke".into(), json!({"original_message_id": original}));
            self.rec.app_revokes += 1;
        }
        let v = self.echo_value(c, Value::Object(m));
        self.push_webhook(at, "smb_message_echoes", v, 1, 1);
    }

    fn reaction(&mut self, c: usize, to: &str) {
        let at = self.tick(5, 300);
        let wamid = self.wamid(Some(c));
        let mut m = Map::new();
        self.customers[c].from(&mut m);
        m.insert("id".into(), json!(wamid));
        m.insert("timestamp".into(), ts(at));
        m.insert("type".into(), json!("reaction"));
        m.insert(
            "reaction".into(),
            json!({"message_id": to, "emoji": self.rng.pick(EMOJIS)}),
        );
        self.inbound(c, at, m);
        self.rec.inbound_messages += 1;
    }

    fn app_conversation(&mut self, c: usize) {
        for _ in 0..self.rng.range(1, 2) {
            let (wamid, is_text) = self.customer_message(c);
            if is_text && self.rng.percent(5) {
                self.customer_revision(c, &wamid, true);
            } else if self.rng.percent(3) {
                self.customer_revision(c, &wamid, false);
            }
        }
        let mut last = String::new();
        for _ in 0..self.rng.range(1, 2) {
            last = self.echo(c);
        }
        if self.rng.percent(10) {
            self.echo_revision(c, &last, true);
        } else if self.rng.percent(5) {
            self.echo_revision(c, &last, false);
        }
        if self.rng.percent(15) {
            self.reaction(c, &last);
        }
    }

    fn bot_conversation(&mut self, c: usize) {
        self.customer_message(c);
        let at = self.tick(1, 5);
        if self.rng.percent(30) {
            let sent = self.api_message(c, at, ApiKind::BotButtons);
            let at = self.tick(10, 300);
            let wamid = self.wamid(Some(c));
            let mut m = Map::new();
            self.customers[c].from(&mut m);
            m.insert("id".into(), json!(wamid));
            m.insert("timestamp".into(), ts(at));
            if let Some(sent) = sent {
                m.insert("context".into(), json!({"from": self.display, "id": sent}));
            }
            m.insert("type".into(), json!("interactive"));
            let (id, title) = if self.rng.percent(50) {
                ("track-order", "Track my order")
            } else {
                ("talk-to-agent", "Talk to an agent")
            };
            m.insert(
                "interactive".into(),
                json!({"type": "button_reply", "button_reply": {"id": id, "title": title}}),
            );
            self.inbound(c, at, m);
            self.rec.inbound_messages += 1;
        }
        let at = self.tick(1, 5);
        let text = self.rng.pick(BOT_TEXTS);
        self.api_message(c, at, ApiKind::BotText(text));
    }

    fn contact_change(&mut self, c: usize) {
        let at = self.tick(1, 60);
        let action = if self.customers[c].synced && self.rng.percent(30) {
            self.customers[c].synced = false;
            "remove"
        } else {
            self.customers[c].synced = true;
            "add"
        };
        let item = self.contact_item(c, action, at);
        let mut v = self.value();
        v.insert("state_sync".into(), json!([item]));
        self.push_webhook(at, "smb_app_state_sync", v, 1, 0);
        self.rec.contact_syncs += 1;
    }

    fn campaign(&mut self) {
        let (name, category) = self.rng.pick(TEMPLATES);
        let mut who: Vec<usize> = (0..self.customers.len()).collect();
        self.rng.shuffle(&mut who);
        let k = self.rng.range(5, CAMPAIGN_RECIPIENTS_MAX as i64) as usize;
        let start = self.tick(1, 60);
        for (i, &c) in who.iter().take(k).enumerate() {
            let at = start + i as i64 / CAMPAIGN_RATE_PER_S;
            self.api_message(c, at, ApiKind::Template(name, category));
        }
        self.now = start + k as i64 / CAMPAIGN_RATE_PER_S + 1;
    }

    fn customer_only(&mut self, c: usize) {
        let recent = self
            .echoes
            .iter()
            .rev()
            .find(|(_, ec, _)| *ec == c)
            .map(|(w, _, _)| w.clone());
        match recent {
            Some(w) if self.rng.percent(50) => self.reaction(c, &w),
            _ => {
                self.customer_message(c);
            }
        }
    }

    fn group(&mut self) {
        let at = self.tick(1, 60);
        let group_id = format!("120363{:012}@g.us", self.rng.below(1_000_000_000_000));
        let participant = format!(
            "{}{}",
            self.rng.pick(COUNTRIES).0,
            self.rng.range(100_000_000, 999_999_999)
        );
        if self.rng.percent(50) {
            let wamid = self.wamid(None);
            let mut v = self.value();
            v.insert(
                "contacts".into(),
                json!([{"profile": {"name": "Group member"}, "wa_id": participant}]),
            );
            v.insert(
                "messages".into(),
                json!([{"from": participant, "group_id": group_id, "id": wamid, "timestamp": ts(at), "type": "text", "text": {"body": "See you all at 8!"}}]),
            );
            self.push_webhook(at, "messages", v, 1, 0);
            self.rec.out_of_scope_messages += 1;
        } else {
            let wamid = self.wamid(None);
            let mut v = self.value();
            v.insert(
                "statuses".into(),
                json!([{
                    "id": wamid, "status": "read", "timestamp": ts(at),
                    "recipient_id": group_id, "recipient_type": "group", "recipient_participant_id": participant,
                    "pricing": {"billable": false, "pricing_model": "PMP", "type": "free_group_customer_service", "category": "group_service"}
                }]),
            );
            self.push_webhook(at, "messages", v, 1, 0);
            self.rec.out_of_scope_statuses += 1;
        }
    }

    /// A Cloud API message: a [`Payload::Send`] for the gateway, or (without
    /// the gateway) only its status webhooks. Returns the wamid when known.
    fn api_message(&mut self, c: usize, at: i64, kind: ApiKind<'_>) -> Option<String> {
        let cu = &self.customers[c];
        let (pricing_type, category, billable) = match kind {
            ApiKind::BotText(_) | ApiKind::BotButtons => {
                ("free_customer_service", "service", false)
            }
            ApiKind::Template(_, cat) => ("regular", cat, true),
        };
        if self.s.sends_via_gateway {
            let mut b = Map::new();
            b.insert("messaging_product".into(), json!("whatsapp"));
            b.insert("recipient_type".into(), json!("individual"));
            if cu.phone.is_empty() {
                b.insert("recipient".into(), json!(cu.bsuid));
            } else {
                b.insert("to".into(), json!(cu.phone));
            }
            match kind {
                ApiKind::BotText(text) => {
                    b.insert("type".into(), json!("text"));
                    b.insert("text".into(), json!({"preview_url": false, "body": text}));
                }
                ApiKind::BotButtons => {
                    b.insert("type".into(), json!("interactive"));
                    b.insert("interactive".into(), buttons());
                }
                ApiKind::Template(name, _) => {
                    b.insert("type".into(), json!("template"));
                    b.insert(
                        "template".into(),
                        json!({"name": name, "language": {"code": "en_US"}, "components": [{"type": "body", "parameters": [{"type": "text", "text": cu.first}]}]}),
                    );
                }
            }
            let bytes = to_bytes(&Value::Object(b));
            self.push(at, LEVEL_LIVE, Vec::new(), Payload::Send { bytes });
            self.rec.api_sends += 1;
            return None;
        }
        let wamid = self.wamid(Some(c));
        let pricing = json!({"billable": billable, "pricing_model": "PMP", "type": pricing_type, "category": category});
        let mut statuses: Vec<(i64, &str, bool)> = Vec::new();
        if self.rng.percent(4) {
            // Undeliverable: sometimes `sent` first, always `failed`, never priced.
            if self.rng.percent(50) {
                statuses.push((at + 1, "sent", false));
            }
            statuses.push((at + self.rng.range(2, 30), "failed", false));
        } else {
            statuses.push((at + 1, "sent", true));
            let delivered = at + self.rng.range(2, 20);
            let read = self
                .rng
                .percent(70)
                .then(|| delivered + self.rng.range(0, 3600));
            let skip_delivered = read.is_some() && self.rng.percent(10);
            let price_on_read = read.is_some() && (skip_delivered || self.rng.percent(30));
            if !skip_delivered {
                statuses.push((delivered, "delivered", !price_on_read));
            }
            if let Some(r) = read {
                statuses.push((r, "read", price_on_read));
            }
        }
        for (t, status, priced) in statuses {
            let cu = &self.customers[c];
            let mut st = Map::new();
            st.insert("id".into(), json!(wamid));
            st.insert("status".into(), json!(status));
            st.insert("timestamp".into(), ts(t));
            st.insert("recipient_id".into(), json!(cu.phone));
            if !cu.bsuid.is_empty() {
                st.insert("recipient_user_id".into(), json!(cu.bsuid));
            }
            if priced {
                st.insert("pricing".into(), pricing.clone());
                self.rec.statuses_priced += 1;
            }
            if status == "failed" {
                let (code, title) = if self.rng.percent(50) {
                    (
                        131049,
                        "This message was not delivered to maintain healthy ecosystem engagement.",
                    )
                } else {
                    (131026, "Message undeliverable")
                };
                st.insert(
                    "errors".into(),
                    json!([{"code": code, "title": title, "message": title, "error_data": {"details": title}}]),
                );
            }
            let mut v = self.value();
            if cu.ident == Ident::Bsuid && status != "failed" {
                v.insert("contacts".into(), json!([cu.contact()]));
            }
            v.insert("statuses".into(), json!([Value::Object(st)]));
            self.push_webhook(t, "messages", v, 1, 0);
            self.rec.statuses += 1;
            // Without the gateway the engine never hears of the message.
            self.rec.statuses_orphaned += 1;
            *self
                .rec
                .statuses_by_status
                .entry(status.to_owned())
                .or_default() += 1;
        }
        Some(wamid)
    }
}

fn buttons() -> Value {
    json!({
        "type": "button",
        "body": {"text": "How can we help?"},
        "action": {"buttons": [
            {"type": "reply", "reply": {"id": "track-order", "title": "Track my order"}},
            {"type": "reply", "reply": {"id": "talk-to-agent", "title": "Talk to an agent"}}
        ]}
    })
}

fn clamp(s: &Scenario) -> Scenario {
    Scenario {
        numbers: s.numbers.min(NUMBERS_MAX),
        customers_per_number: s.customers_per_number.clamp(1, CUSTOMERS_PER_NUMBER_MAX),
        events: s.events.min(EVENTS_MAX),
        start_unix_s: s.start_unix_s.max(200 * DAY_S),
        duplicate_per_mille: s.duplicate_per_mille.min(1000),
        reorder_window: s.reorder_window.min(REORDER_WINDOW_MAX),
        group_per_mille: s.group_per_mille.min(1000),
        ..s.clone()
    }
}

fn add(total: &mut RecordCounts, r: &RecordCounts) {
    total.inbound_messages += r.inbound_messages;
    total.echoes += r.echoes;
    total.api_sends += r.api_sends;
    total.history_messages += r.history_messages;
    total.history_media_messages += r.history_media_messages;
    total.customer_edits += r.customer_edits;
    total.customer_revokes += r.customer_revokes;
    total.app_edits += r.app_edits;
    total.app_revokes += r.app_revokes;
    total.media_enriched += r.media_enriched;
    total.statuses += r.statuses;
    for (k, v) in &r.statuses_by_status {
        *total.statuses_by_status.entry(k.clone()).or_default() += v;
    }
    total.statuses_orphaned += r.statuses_orphaned;
    total.statuses_priced += r.statuses_priced;
    total.history_chunks += r.history_chunks;
    total.history_duplicates += r.history_duplicates;
    total.history_too_old += r.history_too_old;
    total.history_complete += r.history_complete;
    total.history_declined += r.history_declined;
    total.contact_syncs += r.contact_syncs;
    total.account_updates += r.account_updates;
    total.sync_windows_opened += r.sync_windows_opened;
    total.out_of_scope_messages += r.out_of_scope_messages;
    total.out_of_scope_statuses += r.out_of_scope_statuses;
    total.rejected += r.rejected;
    total.unknown += r.unknown;
    total.other += r.other;
}

fn sum_records(r: &RecordCounts) -> u64 {
    r.inbound_messages
        + r.echoes
        + r.api_sends
        + r.history_messages
        + r.history_media_messages
        + r.customer_edits
        + r.customer_revokes
        + r.app_edits
        + r.app_revokes
        + r.media_enriched
        + r.statuses
        + r.history_chunks
        + r.history_declined
        + r.contact_syncs
        + r.account_updates
        + r.sync_windows_opened
        + r.out_of_scope_messages
        + r.out_of_scope_statuses
        + r.rejected
        + r.unknown
        + r.other
}

/// Generates the traffic of a scenario, and what it must produce. Pure: the
/// same scenario gives the same bytes. A scenario beyond the limits (see
/// [`Scenario::validate`]) is clamped to them.
pub fn generate(scenario: &Scenario) -> Traffic {
    let s = clamp(scenario);
    let n = u64::from(s.numbers);
    let mut gens: Vec<NumberGen> = Vec::new();
    for i in 0..s.numbers {
        let budget = s.events / n.max(1) + u64::from(u64::from(i) < s.events % n.max(1));
        let mut g = NumberGen::new(&s, i, budget);
        g.onboarding();
        g.live();
        gens.push(g);
    }

    // Merge the numbers by Meta time; ties by number, then creation order.
    let mut order: Vec<(i64, u32, usize)> = Vec::new();
    let mut offsets = Vec::new();
    let mut total_bodies = 0;
    for g in &gens {
        offsets.push(total_bodies);
        for (local, b) in g.bodies.iter().enumerate() {
            order.push((b.at, g.idx, local));
        }
        total_bodies += g.bodies.len();
    }
    order.sort();
    let mut bodies: Vec<Body> = Vec::with_capacity(total_bodies);
    let mut numbers: Vec<String> = Vec::with_capacity(total_bodies);
    let mut global = vec![0usize; total_bodies];
    // Global ids in creation order, so deps translate by offset.
    let mut expected = Expected::default();
    for (g, &off) in gens.iter_mut().zip(&offsets) {
        add(&mut expected.records, &g.rec);
        for b in g.bodies.drain(..) {
            let deps = b.deps.iter().map(|d| d + off).collect();
            bodies.push(Body { deps, ..b });
            numbers.push(g.pnid.clone());
        }
    }
    for (pos, &(_, num, local)) in order.iter().enumerate() {
        global[pos] = offsets[num as usize] + local;
    }
    let seq: Vec<usize> = global;

    // Re-deliveries: the same bytes again, a little later.
    let mut rng = Rng::derive(s.seed, u64::MAX);
    let mut out: Vec<usize> = Vec::with_capacity(seq.len());
    let mut delayed: Vec<(usize, usize)> = Vec::new();
    for gid in seq {
        out.push(gid);
        if matches!(bodies[gid].payload, Payload::Webhook { .. })
            && rng.per_mille(s.duplicate_per_mille)
        {
            let delay = usize::try_from(rng.range(1, DUPLICATE_DELAY_MAX)).unwrap_or(1);
            delayed.push((out.len() + delay, gid));
        }
        while let Some(i) = delayed.iter().position(|(due, _)| *due <= out.len()) {
            let (_, g) = delayed.remove(i);
            out.push(g);
        }
    }
    out.extend(delayed.into_iter().map(|(_, g)| g));

    // Reordering within windows; lower dependency levels first in a window.
    let w = usize::try_from(s.reorder_window).unwrap_or(0);
    if w > 1 {
        for window in out.chunks_mut(w) {
            rng.shuffle(window);
            window.sort_by_key(|g| bodies[*g].level);
        }
    }

    // Duplicates are the later copies; barriers where a dependency may
    // still be in flight.
    let mut first_pos: Vec<Option<usize>> = vec![None; bodies.len()];
    let mut last_barrier: Option<usize> = None;
    let mut deliveries = Vec::with_capacity(out.len());
    for (pos, &gid) in out.iter().enumerate() {
        let duplicate = first_pos[gid].is_some();
        let mut barrier = false;
        if !duplicate {
            first_pos[gid] = Some(pos);
            let dep_pos = bodies[gid].deps.iter().filter_map(|d| first_pos[*d]).max();
            if let Some(p) = dep_pos {
                if last_barrier.is_none_or(|b| b <= p) {
                    barrier = true;
                    last_barrier = Some(pos);
                }
            }
        }
        match &bodies[gid].payload {
            Payload::Webhook {
                bytes,
                events,
                sends,
            } => {
                expected.webhook_deliveries += 1;
                if duplicate {
                    expected.duplicate_deliveries += 1;
                    expected.duplicate_events += events;
                } else {
                    expected.unique_bodies += 1;
                    expected.events += events;
                }
                deliveries.push(Delivery::Webhook {
                    body: bytes.clone(),
                    number: numbers[gid].clone(),
                    duplicate,
                    sends: *sends,
                    barrier,
                });
            }
            Payload::Send { bytes } => {
                expected.sends += 1;
                expected.events += 1;
                deliveries.push(Delivery::Send {
                    phone_number_id: numbers[gid].clone(),
                    body: bytes.clone(),
                });
            }
        }
    }
    expected.records.total = sum_records(&expected.records);
    Traffic {
        deliveries,
        expected,
    }
}
