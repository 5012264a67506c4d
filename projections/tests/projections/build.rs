//! Builders of audit records, as the engine would append them, and the
//! given/when/then helper.

use twinlog_projections::{Change, Config, ProjectionInput, RateCard, Views};
use twinlog_proto::v1::{
    audit_record::Fact, message, personal, AuditRecord, Channel, ContactSync, ContactSynced,
    CustomerErased, Edit, Identity, IdentityKind, IdentityLink, InputKind, Message,
    MessageRecorded, Personal, Pricing, Provenance, RevisionKind, RevisionRecorded, Revoke,
    StatusEffect, StatusRecorded, Text,
};

/// The business number of most tests.
pub const NUMBER: &str = "PN1";

/// A 16-byte tag made from a small id.
pub fn tag(kind: u8, id: u32) -> Vec<u8> {
    let mut t = vec![kind; 12];
    t.extend_from_slice(&id.to_be_bytes());
    t
}

pub fn customer(id: u32) -> Vec<u8> {
    tag(0xC0, id)
}

pub fn key(id: u32) -> Vec<u8> {
    tag(0x3A, id)
}

/// One record and its decrypted personal part.
#[derive(Debug, Clone)]
pub struct Rec {
    pub record: AuditRecord,
    pub personal: Option<Personal>,
}

impl Rec {
    pub fn input(&self) -> ProjectionInput<'_> {
        ProjectionInput {
            record: &self.record,
            personal: self.personal.as_ref(),
        }
    }
}

/// Builds records with consecutive seqs.
#[derive(Debug, Default)]
pub struct Log {
    pub seq: u64,
    pub country: String,
}

pub fn text(body: &str) -> Message {
    Message {
        r#type: "text".to_string(),
        content: Some(message::Content::Text(Text {
            body: body.to_string(),
            preview_url: false,
        })),
        ..Message::default()
    }
}

fn identity(customer: u32) -> Identity {
    Identity {
        phone: format!("1555000{customer:04}"),
        bsuid: format!("US.{customer}"),
        profile_name: format!("Customer {customer}"),
        ..Identity::default()
    }
}

pub fn pricing(model: &str, ptype: &str, category: &str) -> Option<Pricing> {
    Some(Pricing {
        billable: Some(ptype == "regular"),
        pricing_model: model.to_string(),
        r#type: ptype.to_string(),
        category: category.to_string(),
    })
}

impl Log {
    pub fn new() -> Log {
        Log {
            seq: 0,
            country: "US".to_string(),
        }
    }

    fn record(
        &mut self,
        kind: InputKind,
        customer_id: Option<u32>,
        at: i64,
        fact: Fact,
    ) -> AuditRecord {
        let seq = self.seq;
        self.seq += 1;
        AuditRecord {
            format: 1,
            seq,
            phone_number_id: NUMBER.to_string(),
            display_phone_number: "15550001234".to_string(),
            waba_id: "WABA1".to_string(),
            customer: customer_id.map(customer).unwrap_or_default(),
            meta_timestamp: at,
            ingest_time_ms: at * 1000,
            input_kind: kind as i32,
            customer_country: if customer_id.is_some() {
                self.country.clone()
            } else {
                String::new()
            },
            fact: Some(fact),
            ..AuditRecord::default()
        }
    }

    fn message(
        &mut self,
        (kind, channel, provenance): (InputKind, Channel, Provenance),
        c: u32,
        m: u32,
        at: i64,
        body: &str,
    ) -> Rec {
        let fact = Fact::MessageRecorded(MessageRecorded {
            message_key: key(m),
            channel: channel as i32,
            provenance: provenance as i32,
            r#type: "text".to_string(),
            timestamp: at,
            ..MessageRecorded::default()
        });
        let mut record = self.record(kind, Some(c), at, fact);
        if provenance == Provenance::History {
            record.meta_timestamp = 0;
            record.ingest_time_ms = 0;
        }
        Rec {
            record,
            personal: Some(Personal {
                customer: Some(identity(c)),
                content: Some(personal::Content::Message(text(body))),
            }),
        }
    }

    /// A live message from customer `c`.
    pub fn inbound(&mut self, c: u32, m: u32, at: i64) -> Rec {
        self.message(
            (InputKind::Inbound, Channel::Customer, Provenance::Live),
            c,
            m,
            at,
            &format!("hello {m}"),
        )
    }

    /// An echo: staff wrote from the Business App.
    pub fn echo(&mut self, c: u32, m: u32, at: i64) -> Rec {
        self.message(
            (InputKind::Echo, Channel::App, Provenance::Live),
            c,
            m,
            at,
            &format!("staff {m}"),
        )
    }

    /// A send through the Cloud API (the send gateway).
    pub fn api(&mut self, c: u32, m: u32, at: i64) -> Rec {
        self.message(
            (InputKind::ApiSend, Channel::Api, Provenance::Live),
            c,
            m,
            at,
            &format!("api {m}"),
        )
    }

    /// A customer message imported from history.
    pub fn history_inbound(&mut self, c: u32, m: u32, at: i64) -> Rec {
        self.message(
            (
                InputKind::HistoryChunk,
                Channel::Customer,
                Provenance::History,
            ),
            c,
            m,
            at,
            "old",
        )
    }

    pub fn status(
        &mut self,
        c: u32,
        m: u32,
        status: &str,
        at: i64,
        pricing: Option<Pricing>,
    ) -> Rec {
        self.status_in(c, m, status, at, pricing, "")
    }

    /// A status with a CBP conversation id.
    pub fn status_in(
        &mut self,
        c: u32,
        m: u32,
        status: &str,
        at: i64,
        pricing: Option<Pricing>,
        conversation: &str,
    ) -> Rec {
        let fact = Fact::StatusRecorded(StatusRecorded {
            message_key: key(m),
            status: status.to_string(),
            timestamp: at,
            effect: StatusEffect::Advanced as i32,
            pricing,
            conversation_id: conversation.to_string(),
            ..StatusRecorded::default()
        });
        Rec {
            record: self.record(InputKind::Status, Some(c), at, fact),
            personal: None,
        }
    }

    pub fn revision(
        &mut self,
        c: u32,
        original: u32,
        revision: u32,
        (kind, by): (RevisionKind, Channel),
        at: i64,
        body: &str,
    ) -> Rec {
        let input = if by == Channel::App {
            InputKind::Echo
        } else {
            InputKind::Inbound
        };
        let fact = Fact::RevisionRecorded(RevisionRecorded {
            revision_key: key(revision),
            original_key: key(original),
            kind: kind as i32,
            by: by as i32,
            timestamp: at,
            new_type: if kind == RevisionKind::Edit {
                "text".to_string()
            } else {
                String::new()
            },
            ..RevisionRecorded::default()
        });
        let content = match kind {
            RevisionKind::Edit => message::Content::Edit(Box::new(Edit {
                original_wamid: format!("wamid.{original}"),
                message: Some(Box::new(text(body))),
            })),
            _ => message::Content::Revoke(Revoke {
                original_wamid: format!("wamid.{original}"),
            }),
        };
        Rec {
            record: self.record(input, Some(c), at, fact),
            personal: Some(Personal {
                customer: Some(identity(c)),
                content: Some(personal::Content::Message(Message {
                    r#type: if kind == RevisionKind::Edit {
                        "edit"
                    } else {
                        "revoke"
                    }
                    .to_string(),
                    content: Some(content),
                    ..Message::default()
                })),
            }),
        }
    }

    pub fn contact_sync(&mut self, c: u32, action: &str, name: &str, at: i64) -> Rec {
        let fact = Fact::ContactSynced(ContactSynced {
            action: action.to_string(),
            timestamp: at,
            named: !name.is_empty(),
        });
        Rec {
            record: self.record(InputKind::ContactSync, Some(c), at, fact),
            personal: Some(Personal {
                customer: Some(identity(c)),
                content: Some(personal::Content::Contact(ContactSync {
                    action: action.to_string(),
                    full_name: name.to_string(),
                    ..ContactSync::default()
                })),
            }),
        }
    }

    /// A new BSUID learned for customer `c` (as `links` of an inbound message).
    pub fn link(&mut self, rec: &mut Rec, c: u32, identity_id: u32) {
        rec.record.links.push(IdentityLink {
            customer: customer(c),
            identity: tag(0xB5, identity_id),
            kind: IdentityKind::Bsuid as i32,
        });
    }

    pub fn erase(&mut self, c: u32) -> Rec {
        let fact = Fact::CustomerErased(CustomerErased {
            customer: customer(c),
            reason: "forget".to_string(),
        });
        let mut record = self.record(InputKind::Operator, None, 0, fact);
        record.customer = customer(c);
        record.phone_number_id.clear();
        record.display_phone_number.clear();
        record.waba_id.clear();
        Rec {
            record,
            personal: None,
        }
    }

    /// Any record at `at`, only to move time forward.
    pub fn nudge(&mut self, at: i64) -> Rec {
        let fact = Fact::WebhookErrors(twinlog_proto::v1::WebhookErrorsRecorded { codes: vec![1] });
        Rec {
            record: self.record(InputKind::WebhookErrors, None, at, fact),
            personal: None,
        }
    }
}

/// Given/when/then over the views.
pub struct Scenario {
    pub config: Config,
    pub views: Views,
}

impl Scenario {
    pub fn new(config: Config) -> Scenario {
        Scenario {
            config,
            views: Views::default(),
        }
    }

    pub fn given(mut self, records: &[Rec]) -> Scenario {
        for r in records {
            self.views.apply(&self.config, r.input());
        }
        self
    }

    /// Applies one record and returns its changes.
    pub fn when(&mut self, record: &Rec) -> Vec<Change> {
        self.views.apply(&self.config, record.input())
    }
}

/// A small card whose numbers are easy to check by hand.
pub const TEST_CARD: &str = "\
market,countries,category,effective_from,currency,rate_micros
North America,US CA,marketing,2024-01-01,USD,25000
North America,,utility,2024-01-01,USD,4000
North America,,service,2024-01-01,USD,8800
North America,,marketing,2025-07-01,USD,25000
North America,,utility,2025-07-01,USD,3400
North America,,service,2026-10-01,USD,3400
Other,*,marketing,2024-01-01,USD,60000
";

pub fn test_config() -> Config {
    let card = RateCard::parse(TEST_CARD).unwrap_or_default();
    assert_eq!(card.currency(), "USD", "the test card parses");
    Config::new(card)
}

/// Unix seconds of a UTC day and time.
pub fn at(day: &str, hour: i64, minute: i64) -> i64 {
    let d: twinlog_projections::Day = day.parse().unwrap_or_default();
    assert_ne!(d.0, 0, "test day {day} parses");
    d.start_unix() + hour * 3600 + minute * 60
}
