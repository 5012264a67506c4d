//! The fold bench's workload, shared by `benches/fold.rs` and
//! `examples/fold_instructions.rs` (which runs it once, for callgrind).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use twinlog_engine::{decide, evolve, Config, Input, MemoTagger, State, Step, Tag, Tagger};
use twinlog_proto::v1::{
    ingest_event::Kind, message::Content, Envelope, Identity, IngestEvent, Message, Source, Text,
};

/// HMAC-SHA256 from a pre-keyed state, as the vault's pseudonymizer does.
pub struct Pseudo(pub Hmac<Sha256>);
impl Tagger for Pseudo {
    fn tag(&self, domain: &str, value: &[u8]) -> Tag {
        let mut mac = self.0.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        let out = mac.finalize().into_bytes();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&out[..16]);
        tag
    }
}

pub const EVENTS: usize = 10_000;

/// Inbound texts from 500 customers, each a new message.
pub fn events() -> Vec<(IngestEvent, Source)> {
    (0..EVENTS)
        .map(|i| {
            let phone = format!("1650555{:04}", i % 500);
            let event = IngestEvent {
                envelope: Some(Envelope {
                    phone_number_id: "106540352242922".into(),
                    display_phone_number: "15550783881".into(),
                    waba_id: "102290129340398".into(),
                    customer: Some(Identity {
                        phone: phone.clone(),
                        profile_name: "Sheena Nelson".into(),
                        ..Identity::default()
                    }),
                    meta_timestamp: 1_763_380_800 + i as i64,
                    ingest_time_ms: 1_763_380_800_000 + i as i64,
                    body_sha256: Sha256::digest(i.to_be_bytes()).to_vec(),
                    field: "messages".into(),
                    ..Envelope::default()
                }),
                kind: Some(Kind::Inbound(Message {
                    wamid: format!("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTBCMkM{i:08}"),
                    r#type: "text".into(),
                    timestamp: 1_763_380_800 + i as i64,
                    from: phone,
                    content: Some(Content::Text(Text {
                        body: "Does it come in another color? I would like blue.".into(),
                        preview_url: false,
                    })),
                    ..Message::default()
                })),
            };
            let source = Source {
                topic: "inbound".into(),
                partition: 0,
                offset: i as i64,
            };
            (event, source)
        })
        .collect()
}

impl Pseudo {
    pub fn new() -> Self {
        Pseudo(Hmac::new_from_slice(&[7; 32]).expect("any key length"))
    }
}

/// `decide` + `evolve` + encoding and leaf-hashing each record, over all
/// inputs, from `state`.
#[inline(never)]
pub fn fold_once(
    mut state: State,
    config: &Config,
    tagger: &Pseudo,
    inputs: &[(IngestEvent, Source)],
) -> State {
    // A memo of identity tags, cold at the start of each fold.
    let tagger = MemoTagger::new(tagger);
    let mut seq = 0u64;
    for (event, source) in inputs {
        let step = decide(&state, config, &tagger, Input { event, source });
        if let Ok(Step::Append(facts)) = step {
            for f in facts {
                let mut record = f.record;
                record.seq = seq;
                seq += 1;
                let leaf = record.encode(None);
                let mut h = Sha256::new();
                h.update([0u8]);
                h.update(&leaf);
                std::hint::black_box(h.finalize());
                evolve(&mut state, &record);
            }
        }
    }
    state
}
