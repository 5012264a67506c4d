//! Given/when/then support for engine tests: event builders, a readable
//! tagger, and a world that runs `decide` + `evolve` the way the log does.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use twinlog_engine::{decide, evolve, reject, Config, Input, State, Step, Tag, Tagger};
use twinlog_proto::v1::{
    audit_record::Fact as F, ingest_event::Kind, message::Content, AccountUpdate, ApiSend,
    AuditRecord, ClockTick, ContactSync, Context, Edit, Envelope, HistoryChunk, HistoryDeclined,
    Identity, IngestEvent, Media, MediaPlaceholder, Message, MessageStatus, MetaError, Pricing,
    Revoke, Source, System, Text,
};

pub const NUMBER: &str = "106540352242922";
pub const DISPLAY: &str = "15550783881";
pub const WABA: &str = "102290129340398";
pub const CUSTOMER: &str = "16505551234";
pub const DAY_S: i64 = 86_400;
/// 2025-11-17T09:00:00Z, the fixtures' onboarding day.
pub const T0: i64 = 1_763_370_000;

/// HMAC-SHA256 under a fixed key, remembering each value so snapshots can
/// print `#wamid:wamid.IN1` instead of bytes.
#[derive(Default)]
pub struct ReadableTagger {
    names: RefCell<BTreeMap<Tag, String>>,
}

impl Tagger for ReadableTagger {
    fn tag(&self, domain: &str, value: &[u8]) -> Tag {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"engine-test-key").expect("any key length");
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        let out = mac.finalize().into_bytes();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&out[..16]);
        let readable = if domain == "key" {
            "key".to_string()
        } else {
            format!("{domain}:{}", String::from_utf8_lossy(value))
        };
        self.names.borrow_mut().insert(tag, readable);
        tag
    }
}

impl ReadableTagger {
    pub fn name(&self, bytes: &[u8]) -> String {
        match Tag::try_from(bytes) {
            Ok(t) => self
                .names
                .borrow()
                .get(&t)
                .cloned()
                .unwrap_or_else(|| "?".into()),
            Err(_) => String::new(),
        }
    }
}

pub struct World {
    pub state: State,
    pub config: Config,
    pub tagger: ReadableTagger,
    pub records: Vec<AuditRecord>,
    pub offset: i64,
}

/// What one input came to, for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Appended(Vec<AuditRecord>),
    Duplicate,
    Idle,
    Rejected(String, Vec<AuditRecord>),
}

impl Outcome {
    pub fn records(&self) -> &[AuditRecord] {
        match self {
            Outcome::Appended(r) | Outcome::Rejected(_, r) => r,
            _ => &[],
        }
    }
}

pub fn given(events: Vec<IngestEvent>) -> World {
    let mut world = World {
        state: State::default(),
        config: Config::default(),
        tagger: ReadableTagger::default(),
        records: Vec::new(),
        offset: 0,
    };
    for e in events {
        world.when(e);
    }
    world
}

impl World {
    pub fn when(&mut self, event: IngestEvent) -> Outcome {
        let source = Source {
            topic: "test".into(),
            partition: 0,
            offset: self.offset,
        };
        self.offset += 1;
        let input = Input {
            event: &event,
            source: &source,
        };
        let (step, rejected) = match decide(&self.state, &self.config, &self.tagger, input) {
            Ok(step) => (step, None),
            Err(r) => (
                reject(&self.state, &self.config, &self.tagger, input, &r),
                Some(r.reason.to_string()),
            ),
        };
        match step {
            Step::Append(facts) => {
                let mut out = Vec::new();
                for f in facts {
                    let mut record = f.record;
                    record.seq = self.records.len() as u64;
                    evolve(&mut self.state, &record);
                    let record = record.to_audit_record(None);
                    self.records.push(record.clone());
                    out.push(record);
                }
                match rejected {
                    Some(reason) => Outcome::Rejected(reason, out),
                    None => Outcome::Appended(out),
                }
            }
            Step::Duplicate => Outcome::Duplicate,
            Step::Idle => Outcome::Idle,
        }
    }

    pub fn tagger_tag(&self, domain: &str, value: &str) -> Tag {
        self.tagger.tag(domain, value.as_bytes())
    }

    /// One line per outcome, with tags shown by name: the snapshot format.
    pub fn describe(&self, outcome: &Outcome) -> String {
        match outcome {
            Outcome::Duplicate => "duplicate\n".into(),
            Outcome::Idle => "idle\n".into(),
            Outcome::Appended(records) => self.describe_records("appended", records),
            Outcome::Rejected(reason, records) => {
                self.describe_records(&format!("rejected {reason}"), records)
            }
        }
    }

    fn describe_records(&self, what: &str, records: &[AuditRecord]) -> String {
        let mut out = format!("{what} {}\n", records.len());
        for r in records {
            let mut json = match &r.fact {
                Some(f) => fact_json(f),
                None => serde_json::Value::Null,
            };
            rename_tags(&mut json, self);
            let customer = if r.customer.is_empty() {
                String::new()
            } else {
                format!(" customer={}", self.tagger.name(&r.customer))
            };
            let links: Vec<String> = r
                .links
                .iter()
                .map(|l| {
                    format!(
                        "{}->{}",
                        self.tagger.name(&l.identity),
                        self.tagger.name(&l.customer)
                    )
                })
                .collect();
            let links = if links.is_empty() {
                String::new()
            } else {
                format!(" links=[{}]", links.join(","))
            };
            out.push_str(&format!("  {json}{customer}{links}\n"));
        }
        out
    }
}

fn fact_json(fact: &F) -> serde_json::Value {
    let record = AuditRecord {
        fact: Some(fact.clone()),
        ..AuditRecord::default()
    };
    // A record holding only its fact serialises as {"<fact name>": {...}}.
    serde_json::to_value(&record).expect("records serialize")
}

/// Replaces base64 tags in a fact's JSON by their readable names.
fn rename_tags(v: &mut serde_json::Value, world: &World) {
    use base64::Engine;
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k.ends_with("_key") || k == "reply_to" || k == "customer" {
                    if let serde_json::Value::String(s) = val {
                        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&*s) {
                            *s = world.tagger.name(&bytes);
                        }
                    }
                } else {
                    rename_tags(val, world);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| rename_tags(i, world)),
        _ => {}
    }
}

pub fn fact_of(r: &AuditRecord) -> &F {
    r.fact.as_ref().expect("a record has a fact")
}

// ---- event builders -------------------------------------------------------

fn envelope(field: &str, ts: i64, customer: Identity) -> Envelope {
    Envelope {
        phone_number_id: NUMBER.into(),
        display_phone_number: DISPLAY.into(),
        waba_id: WABA.into(),
        customer: Some(customer),
        meta_timestamp: ts,
        ingest_time_ms: ts * 1000 + 500,
        body_sha256: vec![ts as u8; 32],
        field: field.into(),
        ..Envelope::default()
    }
}

pub fn phone(p: &str) -> Identity {
    Identity {
        phone: p.into(),
        ..Identity::default()
    }
}

pub fn text(wamid: &str, ts: i64, body: &str) -> Message {
    Message {
        wamid: wamid.into(),
        r#type: "text".into(),
        timestamp: ts,
        content: Some(Content::Text(Text {
            body: body.into(),
            preview_url: false,
        })),
        ..Message::default()
    }
}

pub fn inbound_as(id: Identity, m: Message) -> IngestEvent {
    let mut m = m;
    m.from = id.phone.clone();
    m.from_user_id = id.bsuid.clone();
    IngestEvent {
        envelope: Some(envelope("messages", m.timestamp, id)),
        kind: Some(Kind::Inbound(m)),
    }
}

pub fn inbound(m: Message) -> IngestEvent {
    inbound_as(phone(CUSTOMER), m)
}

pub fn echo(m: Message) -> IngestEvent {
    let mut m = m;
    m.from = DISPLAY.into();
    m.to = CUSTOMER.into();
    IngestEvent {
        envelope: Some(envelope("smb_message_echoes", m.timestamp, phone(CUSTOMER))),
        kind: Some(Kind::Echo(m)),
    }
}

pub fn edit(wamid: &str, original: &str, ts: i64, body: &str) -> Message {
    Message {
        wamid: wamid.into(),
        r#type: "edit".into(),
        timestamp: ts,
        content: Some(Content::Edit(Box::new(Edit {
            original_wamid: original.into(),
            message: Some(Box::new(text("", ts, body))),
        }))),
        ..Message::default()
    }
}

pub fn revoke(wamid: &str, original: &str, ts: i64) -> Message {
    Message {
        wamid: wamid.into(),
        r#type: "revoke".into(),
        timestamp: ts,
        content: Some(Content::Revoke(Revoke {
            original_wamid: original.into(),
        })),
        ..Message::default()
    }
}

pub fn status(wamid: &str, status: &str, ts: i64) -> IngestEvent {
    let s = MessageStatus {
        wamid: wamid.into(),
        status: status.into(),
        timestamp: ts,
        recipient_id: CUSTOMER.into(),
        pricing: (status == "sent" || status == "delivered").then(|| Pricing {
            billable: Some(true),
            pricing_model: "PMP".into(),
            r#type: "regular".into(),
            category: "marketing".into(),
        }),
        errors: if status == "failed" {
            vec![MetaError {
                code: 131049,
                ..MetaError::default()
            }]
        } else {
            Vec::new()
        },
        ..MessageStatus::default()
    };
    IngestEvent {
        envelope: Some(envelope("messages", ts, phone(CUSTOMER))),
        kind: Some(Kind::Status(s)),
    }
}

pub fn api_send(wamid: &str, ts: i64, body: &str) -> IngestEvent {
    let mut m = text(wamid, ts, body);
    m.to = CUSTOMER.into();
    IngestEvent {
        envelope: Some(envelope("api_send", ts, phone(CUSTOMER))),
        kind: Some(Kind::ApiSend(ApiSend {
            wamid: wamid.into(),
            request_id: format!("req-{wamid}"),
            sent_at_ms: ts * 1000,
            message: Some(m),
            request_json: String::new(),
        })),
    }
}

pub fn history_text(wamid: &str, ts: i64, outgoing: bool, body: &str) -> Message {
    let mut m = text(wamid, ts, body);
    if outgoing {
        m.from = DISPLAY.into();
        m.to = CUSTOMER.into();
    } else {
        m.from = CUSTOMER.into();
    }
    m.history_status = "READ".into();
    m
}

pub fn placeholder(wamid: &str, ts: i64) -> Message {
    Message {
        wamid: wamid.into(),
        r#type: "media_placeholder".into(),
        timestamp: ts,
        from: DISPLAY.into(),
        to: CUSTOMER.into(),
        history_status: "DELIVERED".into(),
        content: Some(Content::MediaPlaceholder(MediaPlaceholder {})),
        ..Message::default()
    }
}

pub fn history_chunk(phase: i64, order: i64, progress: i64, messages: Vec<Message>) -> IngestEvent {
    let mut e = envelope("history", T0, phone(CUSTOMER));
    e.body_sha256 = vec![(phase * 16 + order) as u8; 32];
    IngestEvent {
        envelope: Some(e),
        kind: Some(Kind::HistoryChunk(HistoryChunk {
            phase,
            chunk_order: order,
            progress,
            thread_index: 0,
            thread_count: 1,
            thread_id: CUSTOMER.into(),
            messages,
        })),
    }
}

pub fn history_media(wamid: &str, ts: i64) -> IngestEvent {
    let m = Message {
        wamid: wamid.into(),
        r#type: "image".into(),
        timestamp: ts,
        from: DISPLAY.into(),
        to: CUSTOMER.into(),
        content: Some(Content::Media(Media {
            kind: "image".into(),
            id: "9002".into(),
            caption: "Tracking label".into(),
            ..Media::default()
        })),
        ..Message::default()
    };
    let mut e = envelope("history", T0, phone(CUSTOMER));
    e.ingest_time_ms = (T0 + 3600) * 1000;
    IngestEvent {
        envelope: Some(e),
        kind: Some(Kind::HistoryMedia(m)),
    }
}

pub fn history_declined() -> IngestEvent {
    let mut e = envelope("history", T0 + 60, Identity::default());
    e.customer = None;
    IngestEvent {
        envelope: Some(e),
        kind: Some(Kind::HistoryDeclined(HistoryDeclined {
            errors: vec![MetaError {
                code: 2593109,
                title: "History sync is turned off by the business from the WhatsApp Business App"
                    .into(),
                ..MetaError::default()
            }],
        })),
    }
}

pub fn contact(action: &str, phone_number: &str, name: &str, ts: i64) -> IngestEvent {
    let mut e = envelope("smb_app_state_sync", ts, phone(phone_number));
    e.customer = Some(phone(phone_number));
    IngestEvent {
        envelope: Some(e),
        kind: Some(Kind::ContactSync(ContactSync {
            r#type: "contact".into(),
            action: action.into(),
            full_name: name.into(),
            phone_number: phone_number.into(),
            timestamp: ts,
            ..ContactSync::default()
        })),
    }
}

pub fn account(event: &str, time: i64) -> IngestEvent {
    let mut a = AccountUpdate {
        event: event.into(),
        entry_time: time,
        entry_id: WABA.into(),
        value_json: format!("{{\"event\":\"{event}\"}}"),
        ..AccountUpdate::default()
    };
    if event == "PARTNER_APP_INSTALLED" {
        a.entry_id = "2949482758682047".into();
        a.waba_id = WABA.into();
    }
    if event == "PARTNER_REMOVED" {
        a.phone_number = DISPLAY.into();
        a.disconnection_reason = "PRIMARY_INACTIVITY".into();
        a.disconnection_initiated_by = "SYSTEM".into();
    }
    IngestEvent {
        envelope: Some(Envelope {
            waba_id: a.entry_id.clone(),
            meta_timestamp: time,
            ingest_time_ms: time * 1000,
            body_sha256: vec![7; 32],
            field: "account_update".into(),
            ..Envelope::default()
        }),
        kind: Some(Kind::AccountUpdate(a)),
    }
}

pub fn tick(now_s: i64) -> IngestEvent {
    IngestEvent {
        envelope: Some(Envelope::default()),
        kind: Some(Kind::Tick(ClockTick {
            now_ms: now_s * 1000,
        })),
    }
}

pub fn system_user_id_change(new_bsuid: &str, ts: i64) -> IngestEvent {
    let m = Message {
        wamid: format!("wamid.SYS{ts}"),
        r#type: "system".into(),
        timestamp: ts,
        content: Some(Content::System(System {
            r#type: "user_changed_user_id".into(),
            user_id: new_bsuid.into(),
            ..System::default()
        })),
        ..Message::default()
    };
    inbound(m)
}

pub fn reply(m: Message, to: &str) -> Message {
    Message {
        context: Some(Context {
            id: to.into(),
            from: DISPLAY.into(),
            ..Context::default()
        }),
        ..m
    }
}
