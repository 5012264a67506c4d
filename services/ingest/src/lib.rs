//! twinlog's webhook ingestor. This crate owns the HTTP edge that Meta
//! delivers to (`GET`/`POST /webhook`): the signature check, the encrypted
//! raw-body store with its retention, the dead letters and their
//! reprocessing, and the mapping of normalised events onto the bus
//! ([`out_record`]). It acknowledges a body only once every event of it is
//! durably on the bus.

use twinlog_bus::{OutRecord, Topic};
use twinlog_proto::v1::{ingest_event::Kind, IngestEvent};

/// The input topic an event goes to.
pub fn topic_of(event: &IngestEvent) -> Topic {
    match &event.kind {
        Some(Kind::Inbound(_)) | Some(Kind::WebhookErrors(_)) => Topic::Inbound,
        Some(Kind::Status(_)) => Topic::Status,
        Some(Kind::Echo(_)) => Topic::AppEcho,
        Some(Kind::ApiSend(_)) => Topic::ApiSend,
        Some(Kind::HistoryChunk(_))
        | Some(Kind::HistoryMedia(_))
        | Some(Kind::HistoryDeclined(_))
        | Some(Kind::ContactSync(_))
        | Some(Kind::AccountUpdate(_))
        | Some(Kind::Tick(_))
        | Some(Kind::Unknown(_))
        | None => Topic::Sync,
    }
}

/// The bus key of an event: its business `phone_number_id`, or, for
/// account-level events that name no number (some `account_update`s), its
/// WABA id, so that every event of one number lands on one partition.
pub fn key_of(event: &IngestEvent) -> Vec<u8> {
    let envelope = event.envelope.as_ref();
    let number = envelope.map(|e| e.phone_number_id.as_str()).unwrap_or("");
    if !number.is_empty() {
        return number.as_bytes().to_vec();
    }
    envelope
        .map(|e| e.waba_id.as_bytes().to_vec())
        .unwrap_or_default()
}

/// The bus record of a normalised event: its topic, its key, its protobuf
/// encoding, and its ingest time as the record timestamp.
pub fn out_record(event: &IngestEvent) -> OutRecord {
    OutRecord {
        topic: topic_of(event),
        key: key_of(event),
        payload: prost::Message::encode_to_vec(event),
        timestamp_ms: event
            .envelope
            .as_ref()
            .map(|e| e.ingest_time_ms.max(0))
            .unwrap_or(0),
    }
}
