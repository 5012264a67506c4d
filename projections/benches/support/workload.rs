//! The projection bench's workload, shared by `benches/project.rs` and
//! `examples/project_instructions.rs` (which runs it once, for callgrind).

use twinlog_projections::{Config, ProjectionInput, Views};
use twinlog_proto::v1::{
    audit_record::Fact, message, personal, AuditRecord, Channel, ContactSynced, InputKind, Message,
    MessageRecorded, Personal, Pricing, Provenance, StatusEffect, StatusRecorded, Text,
};

pub const RECORDS: usize = 100_000;
const CUSTOMERS: u32 = 5_000;
const START: i64 = 1_754_000_000; // 2025-07-31

fn tag(kind: u8, id: u32) -> Vec<u8> {
    let mut t = vec![kind; 12];
    t.extend_from_slice(&id.to_be_bytes());
    t
}

pub fn records() -> Vec<(AuditRecord, Option<Personal>)> {
    let mut out = Vec::with_capacity(RECORDS);
    let mut seq = 0u64;
    let mut push =
        |fact: Fact, customer: u32, at: i64, kind: InputKind, personal: Option<Personal>| {
            out.push((
                AuditRecord {
                    format: 1,
                    seq,
                    phone_number_id: format!("PN{}", customer % 4),
                    display_phone_number: "15550001234".to_string(),
                    waba_id: "WABA1".to_string(),
                    customer: tag(0xC0, customer),
                    meta_timestamp: at,
                    ingest_time_ms: at * 1000,
                    input_kind: kind as i32,
                    customer_country: "US".to_string(),
                    fact: Some(fact),
                    ..AuditRecord::default()
                },
                personal,
            ));
            seq += 1;
        };
    let body = |s: &str| {
        Some(Personal {
            customer: None,
            content: Some(personal::Content::Message(Message {
                r#type: "text".to_string(),
                content: Some(message::Content::Text(Text {
                    body: s.to_string(),
                    preview_url: false,
                })),
                ..Message::default()
            })),
        })
    };
    let pricing = Some(Pricing {
        billable: Some(true),
        pricing_model: "PMP".to_string(),
        r#type: "regular".to_string(),
        category: "marketing".to_string(),
    });
    for i in 0..u32::try_from(RECORDS).unwrap_or(u32::MAX) {
        let m = i;
        let c = i.wrapping_mul(2_654_435_761) % CUSTOMERS;
        let at = START + i64::from(i) * 2;
        let msg = |m: u32, channel: Channel| {
            Fact::MessageRecorded(MessageRecorded {
                message_key: tag(0x3A, m),
                channel: channel as i32,
                provenance: Provenance::Live as i32,
                r#type: "text".to_string(),
                timestamp: at,
                ..MessageRecorded::default()
            })
        };
        match i % 10 {
            0..=3 => push(
                msg(m, Channel::Customer),
                c,
                at,
                InputKind::Inbound,
                body("hello"),
            ),
            4 | 5 => push(msg(m, Channel::App), c, at, InputKind::Echo, body("staff")),
            6 => push(
                Fact::ContactSynced(ContactSynced {
                    action: "add".to_string(),
                    timestamp: at,
                    named: true,
                }),
                c,
                at,
                InputKind::ContactSync,
                None,
            ),
            _ => {
                push(
                    msg(m, Channel::Api),
                    c,
                    at,
                    InputKind::ApiSend,
                    body("offer"),
                );
                for (status, p) in [
                    ("sent", pricing.clone()),
                    ("delivered", pricing.clone()),
                    ("read", None),
                ] {
                    push(
                        Fact::StatusRecorded(StatusRecorded {
                            message_key: tag(0x3A, m),
                            status: status.to_string(),
                            timestamp: at + 1,
                            effect: StatusEffect::Advanced as i32,
                            pricing: p,
                            ..StatusRecorded::default()
                        }),
                        c,
                        at + 1,
                        InputKind::Status,
                        None,
                    );
                }
            }
        }
    }
    out.truncate(RECORDS);
    out
}

/// Every record folded into fresh views.
#[inline(never)]
pub fn project_once(config: &Config, recs: &[(AuditRecord, Option<Personal>)]) -> Views {
    let mut views = Views::default();
    for (record, personal) in recs {
        views.apply(
            config,
            ProjectionInput {
                record,
                personal: personal.as_ref(),
            },
        );
    }
    views
}
