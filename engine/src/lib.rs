//! The deterministic core of twinlog. This crate owns the coexistence rules:
//! `decide` turns one normalised ingest event into the audit facts it
//! produces (or a duplicate, or a rejection), and `evolve` folds one audit
//! record into the engine's state. It does no IO, reads no clock and no
//! randomness, and keeps every collection ordered, so the same inputs give
//! the same facts, byte for byte. Time enters only through the events
//! themselves and through explicit clock ticks.
//!
//! The engine never sees a key. Personal values are replaced by *tags*
//! (keyed pseudonyms) computed by a [`Tagger`] the caller supplies, and the
//! personal content of each fact is handed back as a plaintext [`Personal`]
//! for the caller to seal before the record is hashed. `evolve` reads only the
//! clear part of a record, so replaying the log rebuilds the state without
//! any key, even after customers have been forgotten.

mod decide;
mod memo;
mod record;
mod state;

pub use decide::{decide, decide_forget, reject};
pub use memo::{MemoTagger, TagCache};
pub use record::{ClearPart, Record};
pub use state::{evolve, MessageState, NumberState, State, WabaState};

use twinlog_proto::v1::{
    personal, Identity, IngestEvent, Message, MessageStatus, Personal, Source,
};

/// A 16-byte keyed pseudonym of a personal value (a phone, a BSUID, a wamid).
pub type Tag = [u8; 16];

/// Computes tags. The caller keys it (HMAC-SHA256 with the log's pseudonym
/// key); the engine only requires that it is a deterministic function.
pub trait Tagger {
    /// The tag of `value` within `domain` (domains keep a phone and a wamid
    /// with the same text apart).
    fn tag(&self, domain: &str, value: &[u8]) -> Tag;
}

impl<T: Tagger + ?Sized> Tagger for &T {
    fn tag(&self, domain: &str, value: &[u8]) -> Tag {
        (**self).tag(domain, value)
    }
}

/// An ISO 3166-1 alpha-2 country code, as two ASCII capitals.
pub type Country = [u8; 2];

/// A country code given as text, if it is two ASCII capitals.
pub fn country_code(text: &str) -> Option<Country> {
    match text.as_bytes() {
        &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some([a, b]),
        _ => None,
    }
}

/// Tag domains. One meaning per word.
pub mod domain {
    /// A customer's phone number.
    pub const PHONE: &str = "phone";
    /// A business-scoped user id.
    pub const BSUID: &str = "bsuid";
    /// A WhatsApp message id.
    pub const WAMID: &str = "wamid";
    /// A natural (deduplication) key that is not a bare wamid.
    pub const KEY: &str = "key";
    /// The pseudo-customer under which a number's unattributed content is sealed.
    pub const NUMBER: &str = "number";
}

/// Limits and timings of the coexistence rules. All durations are seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// History older than this before onboarding is not imported (Meta: 180 days).
    pub history_age_s_max: i64,
    /// History media older than this before onboarding never gets its media (Meta: 14 days).
    pub history_media_age_s_max: i64,
    /// The one-time `smb_app_data` syncs must happen within this after `PARTNER_APP_INSTALLED`.
    pub sync_window_s: i64,
    /// Heartbeat: warn after this long without app-side activity.
    pub heartbeat_warning_s: i64,
    /// Heartbeat: critical after this long (Meta advises opening the app every 13 days).
    pub heartbeat_critical_s: i64,
    /// Heartbeat: a `PRIMARY_INACTIVITY` disconnect is due after this long (about 14 days).
    pub heartbeat_expiry_s: i64,
    /// Messages in one history chunk; a larger chunk is rejected whole.
    pub history_chunk_messages_max: usize,
}

const DAY_S: i64 = 86_400;

impl Default for Config {
    fn default() -> Self {
        Config {
            history_age_s_max: 180 * DAY_S,
            history_media_age_s_max: 14 * DAY_S,
            sync_window_s: DAY_S,
            heartbeat_warning_s: 10 * DAY_S,
            heartbeat_critical_s: 13 * DAY_S,
            heartbeat_expiry_s: 14 * DAY_S,
            history_chunk_messages_max: 100_000,
        }
    }
}

/// One input to the fold: a normalised event and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub event: &'a IngestEvent,
    pub source: &'a Source,
}

/// What an input leads to, when it is not rejected. Facts borrow the
/// input's personal content (`'a`) instead of copying it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// New facts, to be sealed and appended in this order.
    Append(Vec<Fact<'a>>),
    /// The input's natural key is already in the log: it adds nothing.
    Duplicate,
    /// A clock tick that fired no timer: nothing to record.
    Idle,
}

/// One audit fact before sealing: the clear record (its `seq` is filled in
/// by the log, its `sealed` part is the sealed `personal`) and the personal
/// content to seal with it. Both borrow the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact<'a> {
    pub record: Record<'a>,
    pub personal: Option<Sealable<'a>>,
}

/// Personal content and the key it is sealed under.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealable<'a> {
    /// The customer id, or a number's pseudo-customer for unattributed content.
    pub key_id: Tag,
    pub content: PersonalContent<'a>,
}

/// The plaintext of a [`Personal`], borrowed from the input where it can be.
/// [`PersonalContent::encode`] gives exactly the bytes of the equivalent
/// `Personal` message, without building it.
#[derive(Debug, Clone, PartialEq)]
pub enum PersonalContent<'a> {
    /// `Personal { customer, message }`.
    Message {
        customer: Option<&'a Identity>,
        message: &'a Message,
    },
    /// `Personal { customer, status }`.
    Status {
        customer: Option<&'a Identity>,
        status: &'a MessageStatus,
    },
    /// Anything else, built in full.
    Owned(Box<Personal>),
}

/// Field numbers of `Personal` (see `audit.proto`).
const PERSONAL_CUSTOMER: u32 = 1;
const PERSONAL_MESSAGE: u32 = 10;
const PERSONAL_STATUS: u32 = 11;

impl<'a> PersonalContent<'a> {
    pub(crate) fn owned(p: Personal) -> Self {
        PersonalContent::Owned(Box::new(p))
    }

    /// The protobuf encoding of the equivalent `Personal`: fields in number
    /// order, as prost writes them.
    pub fn encode(&self) -> Vec<u8> {
        use prost::encoding::message;
        let mut buf = Vec::new();
        match self {
            PersonalContent::Message {
                customer,
                message: m,
            } => {
                if let Some(c) = customer {
                    message::encode(PERSONAL_CUSTOMER, *c, &mut buf);
                }
                message::encode(PERSONAL_MESSAGE, *m, &mut buf);
            }
            PersonalContent::Status { customer, status } => {
                if let Some(c) = customer {
                    message::encode(PERSONAL_CUSTOMER, *c, &mut buf);
                }
                message::encode(PERSONAL_STATUS, *status, &mut buf);
            }
            PersonalContent::Owned(p) => return prost::Message::encode_to_vec(p.as_ref()),
        }
        buf
    }

    /// The equivalent `Personal`, built in full.
    pub fn to_personal(&self) -> Personal {
        match self {
            PersonalContent::Message { customer, message } => Personal {
                customer: customer.cloned(),
                content: Some(personal::Content::Message((*message).clone())),
            },
            PersonalContent::Status { customer, status } => Personal {
                customer: customer.cloned(),
                content: Some(personal::Content::Status((*status).clone())),
            },
            PersonalContent::Owned(p) => p.as_ref().clone(),
        }
    }
}

/// Why an input was refused. The refusal is itself recorded (see [`reject`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A stable code, such as `missing_wamid`.
    pub reason: &'static str,
    /// A description that holds no personal data.
    pub detail: String,
}

impl Rejection {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// Status order: sent < delivered < read < played; `failed` is terminal.
pub fn status_rank(status: &str) -> Option<u8> {
    match status {
        "sent" => Some(1),
        "delivered" => Some(2),
        "read" => Some(3),
        "played" => Some(4),
        "failed" => Some(STATUS_RANK_FAILED),
        _ => None,
    }
}

/// The rank of `failed`, above every other status.
pub const STATUS_RANK_FAILED: u8 = 100;
