//! `decide`: every coexistence rule lives here. It reads the state, never
//! changes it, and returns the facts an input produces.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use twinlog_proto::v1::{
    audit_record::Fact as F, ingest_event::Kind, message::Content, personal, AccountUpdate,
    AccountUpdated, Channel, ContactSync, ContactSynced, CustomerErased, Envelope,
    HeartbeatChanged, HeartbeatLevel, HistoryChunk, HistoryChunkRecorded, HistoryDeclinedRecorded,
    Identity, IdentityKind, IdentityLink, IngestEvent, InputKind, MediaEnriched, Message,
    MessageRecorded, MessageStatus, OutOfScope, Personal, Provenance, Rejected, RevisionKind,
    RevisionRecorded, StatusEffect, StatusRecorded, SyncWindowClosed, SyncWindowOpened,
    UnknownRecorded, WebhookErrorsRecorded,
};

use crate::state::best_rank;
use crate::{
    country_code, domain, status_rank, Config, Country, Fact, Input, PersonalContent, Record,
    Rejection, Sealable, State, Step, Tag, Tagger, STATUS_RANK_FAILED,
};

/// The current audit record format.
pub const RECORD_FORMAT: u32 = 1;

/// Decides what one input adds to the log. Pure: the same state, config,
/// tagger and input always give the same answer.
pub fn decide<'a, T: Tagger>(
    state: &State,
    config: &Config,
    tagger: &T,
    input: Input<'a>,
) -> Result<Step<'a>, Rejection> {
    let event = input.event;
    let Some(kind) = &event.kind else {
        return Err(Rejection::new("missing_kind", "the event has no kind"));
    };
    let cx = Cx::new(state, config, tagger, input);
    let decided = || match kind {
        Kind::Tick(tick) => Ok(cx.tick(tick.now_ms)),
        Kind::AccountUpdate(a) => cx.account_update(a),
        Kind::Unknown(_) | Kind::WebhookErrors(_) => cx.unattributed(kind),
        _ if cx.envelope_number().is_empty() => Err(Rejection::new(
            "missing_phone_number_id",
            "a per-number event carries no metadata.phone_number_id",
        )),
        Kind::Inbound(m) => {
            cx.live_message(Cow::Borrowed(m), InputKind::Inbound, Channel::Customer)
        }
        Kind::Echo(m) => cx.live_message(Cow::Borrowed(m), InputKind::Echo, Channel::App),
        Kind::ApiSend(send) => match &send.message {
            Some(m) if m.wamid.is_empty() => {
                // The wamid comes back from the Graph API, outside the send body.
                let mut m = m.clone();
                m.wamid.clone_from(&send.wamid);
                cx.live_message(Cow::Owned(m), InputKind::ApiSend, Channel::Api)
            }
            Some(m) => cx.live_message(Cow::Borrowed(m), InputKind::ApiSend, Channel::Api),
            None => Err(Rejection::new(
                "missing_message",
                "an API send without its message",
            )),
        },
        Kind::Status(s) => cx.status(s),
        Kind::HistoryChunk(h) => cx.history_chunk(h),
        Kind::HistoryMedia(m) => cx.history_media(m),
        Kind::HistoryDeclined(d) => {
            let key = cx.delivery_key("history_declined");
            if state.seen.contains(&key) {
                return Ok(Step::Duplicate);
            }
            let code = d.errors.first().map(|e| e.code).unwrap_or_default();
            let content = PersonalContent::owned(Personal {
                content: Some(personal::Content::RawJson(errors_json(&d.errors))),
                ..Personal::default()
            });
            let fact = cx.fact(
                InputKind::HistoryDeclined,
                key,
                None,
                F::HistoryDeclined(HistoryDeclinedRecorded { error_code: code }),
                Some(cx.number_sealable(content)),
            );
            Ok(Step::Append(vec![fact]))
        }
        Kind::ContactSync(c) => cx.contact_sync(c),
    };
    let mut step = decided()?;
    if let Step::Append(facts) = &mut step {
        cx.fill_countries(facts);
    }
    Ok(step)
}

/// The record of a refused input: the refusal itself is evidence. Its
/// natural key is the input's delivery key, so a re-delivery of the same
/// refused input adds nothing.
pub fn reject<'a, T: Tagger>(
    state: &State,
    config: &Config,
    tagger: &T,
    input: Input<'a>,
    rejection: &Rejection,
) -> Step<'a> {
    let cx = Cx::new(state, config, tagger, input);
    // The refused input's own natural key where it has one, so that a
    // re-delivery is a duplicate even if the rules would now accept it.
    let key = cx
        .natural_key()
        .unwrap_or_else(|| cx.delivery_key("rejected"));
    if state.seen.contains(&key) {
        return Step::Duplicate;
    }
    let content = PersonalContent::owned(Personal {
        customer: input
            .event
            .envelope
            .as_ref()
            .and_then(|e| e.customer.clone()),
        content: Some(personal::Content::RawJson(event_json(input.event))),
    });
    let customer = cx.existing_customer();
    let sealable = match customer {
        Some(c) => Sealable { key_id: c, content },
        None => cx.number_sealable(content),
    };
    let fact = cx.fact(
        input_kind_of(input.event),
        key,
        customer,
        F::Rejected(Rejected {
            reason: rejection.reason.to_string(),
            detail: rejection.detail.clone(),
        }),
        Some(sealable),
    );
    Step::Append(vec![fact])
}

/// Decides an operator's `forget`: the erasure record holds the customer's
/// pseudonymous id and nothing else.
pub fn decide_forget<'a>(
    state: &State,
    customer: &Tag,
    source: &'a twinlog_proto::v1::Source,
) -> Step<'a> {
    let _ = state;
    let record = Record {
        format: RECORD_FORMAT,
        seq: 0,
        source,
        body_sha256: &[],
        phone_number_id: Cow::Borrowed(""),
        customer: Some(*customer),
        meta_timestamp: 0,
        ingest_time_ms: 0,
        input_kind: InputKind::Operator as i32,
        fact_index: 0,
        fact_count: 1,
        links: Vec::new(),
        natural_key: None,
        waba_id: Cow::Borrowed(""),
        display_phone_number: Cow::Borrowed(""),
        entry_index: 0,
        change_index: 0,
        item_index: 0,
        customer_country: None,
        fact: F::CustomerErased(CustomerErased {
            customer: customer.to_vec(),
            reason: "forget".to_string(),
        }),
    };
    Step::Append(vec![Fact {
        record,
        personal: None,
    }])
}

fn input_kind_of(event: &IngestEvent) -> InputKind {
    match &event.kind {
        Some(Kind::Inbound(_)) => InputKind::Inbound,
        Some(Kind::Status(_)) => InputKind::Status,
        Some(Kind::Echo(_)) => InputKind::Echo,
        Some(Kind::HistoryChunk(_)) => InputKind::HistoryChunk,
        Some(Kind::HistoryMedia(_)) => InputKind::HistoryMedia,
        Some(Kind::HistoryDeclined(_)) => InputKind::HistoryDeclined,
        Some(Kind::ContactSync(_)) => InputKind::ContactSync,
        Some(Kind::AccountUpdate(_)) => InputKind::AccountUpdate,
        Some(Kind::ApiSend(_)) => InputKind::ApiSend,
        Some(Kind::Tick(_)) => InputKind::Tick,
        Some(Kind::WebhookErrors(_)) => InputKind::WebhookErrors,
        Some(Kind::Unknown(_)) => InputKind::Unknown,
        None => InputKind::Unspecified,
    }
}

fn errors_json(errors: &[twinlog_proto::v1::MetaError]) -> String {
    serde_json::to_string(errors).unwrap_or_default()
}

fn event_json(event: &IngestEvent) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

/// The context of one decision.
struct Cx<'s, 'a, T> {
    state: &'s State,
    config: &'s Config,
    tagger: &'s T,
    input: Input<'a>,
    /// The countries of the customers this input resolved, in order.
    countries: RefCell<Vec<(Tag, Country)>>,
}

/// Who a customer is and what identity facts this input teaches.
struct Resolved {
    customer: Option<Tag>,
    links: Vec<IdentityLink>,
}

impl<'s, 'a, T: Tagger> Cx<'s, 'a, T> {
    fn new(state: &'s State, config: &'s Config, tagger: &'s T, input: Input<'a>) -> Self {
        Cx {
            state,
            config,
            tagger,
            input,
            countries: RefCell::new(Vec::new()),
        }
    }

    fn envelope(&self) -> &'a Envelope {
        static EMPTY: std::sync::OnceLock<Envelope> = std::sync::OnceLock::new();
        match &self.input.event.envelope {
            Some(e) => e,
            None => EMPTY.get_or_init(Envelope::default),
        }
    }

    fn envelope_number(&self) -> &'a str {
        &self.envelope().phone_number_id
    }

    fn identity(&self) -> &'a Identity {
        static EMPTY: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
        match &self.envelope().customer {
            Some(c) => c,
            None => EMPTY.get_or_init(Identity::default),
        }
    }

    fn tag(&self, domain: &str, value: &str) -> Tag {
        self.tagger.tag(domain, value.as_bytes())
    }

    fn wamid_tag(&self, wamid: &str) -> Tag {
        self.tag(domain::WAMID, wamid)
    }

    /// A natural key made of parts, tagged so no personal value shows.
    fn key(&self, parts: &[&[u8]]) -> Tag {
        let mut buf = Vec::new();
        for part in parts {
            buf.extend_from_slice(&(part.len() as u64).to_be_bytes());
            buf.extend_from_slice(part);
        }
        self.tagger.tag(domain::KEY, &buf)
    }

    /// The natural key the accepting path of `decide` gives this input, if
    /// the input carries what it is made of.
    fn natural_key(&self) -> Option<Tag> {
        let kind = self.input.event.kind.as_ref()?;
        let wamid = |w: &str| (!w.is_empty()).then(|| self.wamid_tag(w));
        match kind {
            Kind::Inbound(m) | Kind::Echo(m) => wamid(&m.wamid),
            Kind::ApiSend(send) => wamid(&send.wamid),
            Kind::Status(s) => {
                wamid(&s.wamid).map(|m| self.key(&[b"status", &m, s.status.as_bytes()]))
            }
            Kind::HistoryMedia(m) => wamid(&m.wamid).map(|m| self.key(&[b"media", &m])),
            Kind::HistoryChunk(_) => Some(self.delivery_key("history_chunk")),
            Kind::HistoryDeclined(_) => Some(self.delivery_key("history_declined")),
            Kind::WebhookErrors(_) => Some(self.delivery_key("webhook_errors")),
            Kind::Unknown(_) => Some(self.delivery_key("unknown")),
            Kind::ContactSync(_) | Kind::AccountUpdate(_) | Kind::Tick(_) => None,
        }
    }

    /// The key of this exact delivery: the raw body's hash and the event's place in it.
    fn delivery_key(&self, what: &str) -> Tag {
        let e = self.envelope();
        let place = [e.entry_index, e.change_index, e.item_index]
            .iter()
            .flat_map(|i| i.to_be_bytes())
            .collect::<Vec<u8>>();
        let extra = match &self.input.event.kind {
            Some(Kind::HistoryChunk(h)) => h.thread_index.to_be_bytes().to_vec(),
            _ => Vec::new(),
        };
        self.key(&[what.as_bytes(), &e.body_sha256, &place, &extra])
    }

    fn number_sealable(&self, content: PersonalContent<'a>) -> Sealable<'a> {
        Sealable {
            key_id: self.tag(domain::NUMBER, self.envelope_number()),
            content,
        }
    }

    /// The customer of the envelope, if known, without learning anything.
    fn existing_customer(&self) -> Option<Tag> {
        let id = self.identity();
        if !id.bsuid.is_empty() {
            let t = self.tag(domain::BSUID, &id.bsuid);
            return Some(*self.state.customer_of(&t).unwrap_or(&t));
        }
        if !id.phone.is_empty() {
            let t = self.tag(domain::PHONE, &id.phone);
            return Some(*self.state.customer_of(&t).unwrap_or(&t));
        }
        None
    }

    /// Resolves a customer from a phone and a BSUID, either of which may be
    /// empty. The BSUID wins when the two disagree; new pairings become links.
    /// Who an identity is. `country` is the one the ingestor derived, if
    /// any; otherwise the BSUID's prefix names it.
    fn resolve(
        &self,
        phone: &str,
        bsuid: &str,
        country: &str,
        pending: &BTreeMap<Tag, Tag>,
    ) -> Resolved {
        let lookup = |t: &Tag| {
            pending
                .get(t)
                .or_else(|| self.state.customer_of(t))
                .copied()
        };
        let phone_tag = (!phone.is_empty()).then(|| self.tag(domain::PHONE, phone));
        let bsuid_tag = (!bsuid.is_empty()).then(|| self.tag(domain::BSUID, bsuid));
        // Each identity is looked up once: the lookups do not change.
        let bsuid_known = bsuid_tag.as_ref().and_then(lookup);
        let phone_known = phone_tag.as_ref().and_then(lookup);
        let customer = bsuid_known.or(phone_known).or(bsuid_tag).or(phone_tag);
        let Some(customer) = customer else {
            return Resolved {
                customer: None,
                links: Vec::new(),
            };
        };
        let country = country_code(country).or_else(|| {
            bsuid
                .split_once('.')
                .and_then(|(prefix, _)| country_code(prefix))
        });
        if let Some(country) = country {
            let mut countries = self.countries.borrow_mut();
            if !countries.iter().any(|(c, _)| *c == customer) {
                countries.push((customer, country));
            }
        }
        let mut links = Vec::new();
        for (tag, known, kind) in [
            (bsuid_tag, bsuid_known, IdentityKind::Bsuid),
            (phone_tag, phone_known, IdentityKind::Phone),
        ] {
            if let Some(tag) = tag {
                if known != Some(customer) {
                    links.push(IdentityLink {
                        customer: customer.to_vec(),
                        identity: tag.to_vec(),
                        kind: kind as i32,
                    });
                }
            }
        }
        Resolved {
            customer: Some(customer),
            links,
        }
    }

    fn resolve_envelope(&self) -> Resolved {
        let id = self.identity();
        self.resolve(&id.phone, &id.bsuid, &id.country, &BTreeMap::new())
    }

    /// Gives each fact the country of its customer, as this input resolved
    /// it (the first country found for a customer wins).
    fn fill_countries(&self, facts: &mut [Fact<'a>]) {
        let countries = self.countries.borrow();
        if countries.is_empty() {
            return;
        }
        for f in facts {
            if let Some(customer) = f.record.customer {
                f.record.customer_country = countries
                    .iter()
                    .find(|(c, _)| *c == customer)
                    .map(|(_, country)| *country);
            }
        }
    }

    /// A clear record with the envelope's fields filled in.
    fn fact(
        &self,
        kind: InputKind,
        natural_key: Tag,
        customer: Option<Tag>,
        fact: F,
        personal: Option<Sealable<'a>>,
    ) -> Fact<'a> {
        let e = self.envelope();
        Fact {
            record: Record {
                format: RECORD_FORMAT,
                seq: 0,
                source: self.input.source,
                body_sha256: &e.body_sha256,
                phone_number_id: Cow::Borrowed(&e.phone_number_id),
                customer,
                meta_timestamp: e.meta_timestamp,
                ingest_time_ms: e.ingest_time_ms,
                input_kind: kind as i32,
                fact_index: 0,
                fact_count: 1,
                links: Vec::new(),
                natural_key: Some(natural_key),
                waba_id: Cow::Borrowed(&e.waba_id),
                display_phone_number: Cow::Borrowed(&e.display_phone_number),
                entry_index: e.entry_index,
                change_index: e.change_index,
                item_index: e.item_index,
                fact,
                customer_country: None,
            },
            personal,
        }
    }

    /// Numbers facts so each input's records say where they stand in it.
    fn number_facts(mut facts: Vec<Fact<'a>>) -> Step<'a> {
        let count = u32::try_from(facts.len()).unwrap_or(u32::MAX);
        for (i, f) in facts.iter_mut().enumerate() {
            f.record.fact_index = u32::try_from(i).unwrap_or(u32::MAX);
            f.record.fact_count = count;
        }
        Step::Append(facts)
    }

    /// A message of the input and the envelope's customer, borrowed: it is
    /// encoded only when sealed.
    fn personal_message(&self, m: Cow<'a, Message>) -> PersonalContent<'a> {
        let customer = self.envelope().customer.as_ref();
        match m {
            Cow::Borrowed(message) => PersonalContent::Message { customer, message },
            Cow::Owned(message) => PersonalContent::owned(Personal {
                customer: customer.cloned(),
                content: Some(personal::Content::Message(message)),
            }),
        }
    }

    fn sealable(&self, customer: Option<Tag>, content: PersonalContent<'a>) -> Sealable<'a> {
        match customer {
            Some(c) => Sealable { key_id: c, content },
            None => self.number_sealable(content),
        }
    }

    /// A live message: inbound, echo, or API send.
    fn live_message(
        &self,
        message: Cow<'a, Message>,
        kind: InputKind,
        channel: Channel,
    ) -> Result<Step<'a>, Rejection> {
        let m: &Message = &message;
        if m.wamid.is_empty() {
            return Err(Rejection::new("missing_wamid", "a message without an id"));
        }
        let key = self.wamid_tag(&m.wamid);
        if self.state.seen.contains(&key) {
            return Ok(Step::Duplicate);
        }
        let mut resolved = self.resolve_envelope();
        if resolved.customer.is_none() {
            // user_changed_user_id names the customer only by the old BSUID.
            if let Some(Content::System(s)) = &m.content {
                if !s.previous_user_id.is_empty() {
                    resolved = self.resolve("", &s.previous_user_id, "", &BTreeMap::new());
                }
            }
        }
        let content = self.personal_message(message.clone());
        let sealable = Some(self.sealable(resolved.customer, content));
        if !m.group_id.is_empty() {
            let fact = self.fact(
                kind,
                key,
                resolved.customer,
                F::OutOfScope(OutOfScope {
                    reason: "group".to_string(),
                    kind: kind as i32,
                }),
                sealable,
            );
            return Ok(Self::number_facts(vec![fact]));
        }
        let fact = match &m.content {
            Some(Content::Edit(edit)) => self.revision(
                key,
                &edit.original_wamid,
                RevisionKind::Edit,
                channel,
                m,
                edit_type(edit),
            ),
            Some(Content::Revoke(revoke)) => self.revision(
                key,
                &revoke.original_wamid,
                RevisionKind::Revoke,
                channel,
                m,
                String::new(),
            ),
            _ => {
                F::MessageRecorded(self.message_recorded(key, m, channel, Provenance::Live, 0, &[]))
            }
        };
        let mut fact = self.fact(kind, key, resolved.customer, fact, sealable);
        fact.record.links = resolved.links;
        self.system_links(m, resolved.customer, &mut fact.record.links);
        Ok(Self::number_facts(vec![fact]))
    }

    /// Identity changes announced by a system message.
    fn system_links(&self, m: &Message, customer: Option<Tag>, links: &mut Vec<IdentityLink>) {
        let (Some(Content::System(system)), Some(customer)) = (&m.content, customer) else {
            return;
        };
        let mut push = |domain: &str, value: &str, kind: IdentityKind| {
            if value.is_empty() {
                return;
            }
            let tag = self.tag(domain, value);
            if self.state.customer_of(&tag) != Some(&customer) {
                links.push(IdentityLink {
                    customer: customer.to_vec(),
                    identity: tag.to_vec(),
                    kind: kind as i32,
                });
            }
        };
        push(domain::BSUID, &system.user_id, IdentityKind::Bsuid);
        push(domain::PHONE, &system.wa_id, IdentityKind::Phone);
    }

    fn revision(
        &self,
        key: Tag,
        original_wamid: &str,
        kind: RevisionKind,
        by: Channel,
        m: &Message,
        new_type: String,
    ) -> F {
        let original = self.wamid_tag(original_wamid);
        let revision_number = self.state.revisions.get(&original).copied().unwrap_or(0) + 1;
        F::RevisionRecorded(RevisionRecorded {
            revision_key: key.to_vec(),
            original_key: original.to_vec(),
            kind: kind as i32,
            by: by as i32,
            timestamp: m.timestamp,
            original_known: self.state.messages.contains_key(&original),
            new_type,
            revision_number,
        })
    }

    fn message_recorded(
        &self,
        key: Tag,
        m: &Message,
        channel: Channel,
        provenance: Provenance,
        phase: i64,
        extra_orphans: &[u8],
    ) -> MessageRecorded {
        let mut orphans = self
            .state
            .orphan_statuses
            .get(&key)
            .cloned()
            .unwrap_or_default();
        orphans.extend_from_slice(extra_orphans);
        let joined = best_rank(&orphans);
        MessageRecorded {
            message_key: key.to_vec(),
            channel: channel as i32,
            provenance: provenance as i32,
            r#type: m.r#type.clone(),
            timestamp: m.timestamp,
            reply_to: m
                .context
                .as_ref()
                .filter(|c| !c.id.is_empty())
                .map(|c| self.wamid_tag(&c.id).to_vec())
                .unwrap_or_default(),
            media_pending: matches!(m.content, Some(Content::MediaPlaceholder(_))),
            history_status: m.history_status.clone(),
            history_phase: phase,
            statuses_joined: u32::try_from(orphans.len()).unwrap_or(u32::MAX),
            joined_status: rank_name(joined).to_string(),
            ephemeral: is_ephemeral(m),
        }
    }

    fn status(&self, s: &'a MessageStatus) -> Result<Step<'a>, Rejection> {
        if s.wamid.is_empty() {
            return Err(Rejection::new(
                "missing_wamid",
                "a status without a message id",
            ));
        }
        let message = self.wamid_tag(&s.wamid);
        let key = self.key(&[b"status", &message, s.status.as_bytes()]);
        if self.state.seen.contains(&key) {
            return Ok(Step::Duplicate);
        }
        let resolved = self.resolve_envelope();
        let content = PersonalContent::Status {
            customer: self.envelope().customer.as_ref(),
            status: s,
        };
        let sealable = Some(self.sealable(resolved.customer, content));
        if s.recipient_type == "group" {
            let fact = self.fact(
                InputKind::Status,
                key,
                resolved.customer,
                F::OutOfScope(OutOfScope {
                    reason: "group".to_string(),
                    kind: InputKind::Status as i32,
                }),
                sealable,
            );
            return Ok(Self::number_facts(vec![fact]));
        }
        let known = self.state.messages.get(&message);
        let current = known.map(|m| m.status_rank).unwrap_or(0);
        let effect = match (status_rank(&s.status), known) {
            (None, _) => StatusEffect::Unrecognised,
            (Some(_), None) => StatusEffect::Orphaned,
            (Some(_), Some(_)) if current == STATUS_RANK_FAILED => StatusEffect::AfterTerminal,
            (Some(rank), Some(_)) if rank > current => StatusEffect::Advanced,
            (Some(_), Some(_)) => StatusEffect::Stale,
        };
        let conversation = s.conversation.clone().unwrap_or_default();
        let fact = F::StatusRecorded(StatusRecorded {
            message_key: message.to_vec(),
            status: s.status.clone(),
            timestamp: s.timestamp,
            effect: effect as i32,
            previous_status: rank_name(current).to_string(),
            pricing: s.pricing.clone(),
            conversation_id: conversation.id,
            conversation_origin: conversation.origin_type,
            conversation_expiration: conversation.expiration_timestamp,
            error_codes: s.errors.iter().map(|e| e.code).collect(),
        });
        let mut fact = self.fact(InputKind::Status, key, resolved.customer, fact, sealable);
        fact.record.links = resolved.links;
        Ok(Self::number_facts(vec![fact]))
    }

    /// Day 0 of history: the account's onboarding, else the time this
    /// history reached twinlog (history arrives within a day of onboarding).
    fn history_reference(&self) -> i64 {
        let e = self.envelope();
        self.state
            .numbers
            .get(&e.phone_number_id)
            .map(|n| n.waba_id.clone())
            .or_else(|| Some(e.waba_id.clone()))
            .and_then(|w| self.state.wabas.get(&w))
            .and_then(|w| w.onboarded_at)
            .unwrap_or(e.ingest_time_ms.div_euclid(1000))
    }

    fn is_outgoing(&self, m: &Message) -> bool {
        let display = &self.envelope().display_phone_number;
        !m.to.is_empty() || !m.to_user_id.is_empty() || (!display.is_empty() && m.from == *display)
    }

    fn history_chunk(&self, h: &'a HistoryChunk) -> Result<Step<'a>, Rejection> {
        if h.messages.len() > self.config.history_chunk_messages_max {
            return Err(Rejection::new(
                "history_chunk_too_large",
                format!(
                    "{} messages, above the limit of {}",
                    h.messages.len(),
                    self.config.history_chunk_messages_max
                ),
            ));
        }
        let chunk_key = self.delivery_key("history_chunk");
        if self.state.seen.contains(&chunk_key) {
            return Ok(Step::Duplicate);
        }
        let envelope = self.envelope();
        let identity = self.identity();
        let thread_phone = if identity.phone.is_empty() {
            h.thread_id.clone()
        } else {
            identity.phone.clone()
        };
        let resolved = self.resolve(
            &thread_phone,
            &identity.bsuid,
            &identity.country,
            &BTreeMap::new(),
        );
        let reference = self.history_reference();
        let oldest = reference - self.config.history_age_s_max;
        let mut stats = HistoryChunkRecorded {
            phase: h.phase,
            chunk_order: h.chunk_order,
            progress: h.progress,
            thread_index: h.thread_index,
            thread_count: h.thread_count,
            messages_total: u32::try_from(h.messages.len()).unwrap_or(u32::MAX),
            complete: h.progress >= 100,
            ..HistoryChunkRecorded::default()
        };
        let mut facts = Vec::new();
        let mut taken = BTreeSet::new();
        let mut revisions: BTreeMap<Tag, u32> = BTreeMap::new();
        for m in &h.messages {
            if m.wamid.is_empty() {
                stats.rejected += 1;
                continue;
            }
            let key = self.wamid_tag(&m.wamid);
            if self.state.seen.contains(&key) || !taken.insert(key) {
                stats.duplicates += 1;
                continue;
            }
            if m.timestamp < oldest {
                stats.too_old += 1;
                continue;
            }
            stats.messages_imported += 1;
            let channel = if self.is_outgoing(m) {
                Channel::App
            } else {
                Channel::Customer
            };
            let fact = match &m.content {
                Some(Content::Edit(edit)) => {
                    let f = self.revision(
                        key,
                        &edit.original_wamid,
                        RevisionKind::Edit,
                        channel,
                        m,
                        edit_type(edit),
                    );
                    bump_revision(f, &mut revisions)
                }
                Some(Content::Revoke(revoke)) => {
                    let f = self.revision(
                        key,
                        &revoke.original_wamid,
                        RevisionKind::Revoke,
                        channel,
                        m,
                        String::new(),
                    );
                    bump_revision(f, &mut revisions)
                }
                _ => F::MessageRecorded(self.message_recorded(
                    key,
                    m,
                    channel,
                    Provenance::History,
                    h.phase,
                    &[],
                )),
            };
            let content = self.personal_message(Cow::Borrowed(m));
            let sealable = Some(self.sealable(resolved.customer, content));
            facts.push(self.fact(
                InputKind::HistoryChunk,
                key,
                resolved.customer,
                fact,
                sealable,
            ));
        }
        let chunk_content = PersonalContent::owned(Personal {
            customer: envelope.customer.clone(),
            content: Some(personal::Content::Chunk(HistoryChunk {
                messages: Vec::new(),
                ..h.clone()
            })),
        });
        let mut head = self.fact(
            InputKind::HistoryChunk,
            chunk_key,
            resolved.customer,
            F::HistoryChunkRecorded(stats),
            Some(self.sealable(resolved.customer, chunk_content)),
        );
        head.record.links = resolved.links;
        facts.insert(0, head);
        Ok(Self::number_facts(facts))
    }

    fn history_media(&self, m: &'a Message) -> Result<Step<'a>, Rejection> {
        if m.wamid.is_empty() {
            return Err(Rejection::new(
                "missing_wamid",
                "a history media message without an id",
            ));
        }
        let message = self.wamid_tag(&m.wamid);
        let key = self.key(&[b"media", &message]);
        if self.state.seen.contains(&key) {
            return Ok(Step::Duplicate);
        }
        let age = self.history_reference() - m.timestamp;
        if age > self.config.history_media_age_s_max {
            return Err(Rejection::new(
                "history_media_too_old",
                format!(
                    "media sent {age} s before onboarding, beyond the {} s Meta serves",
                    self.config.history_media_age_s_max
                ),
            ));
        }
        let resolved = self.resolve_envelope();
        let content = self.personal_message(Cow::Borrowed(m));
        let sealable = Some(self.sealable(resolved.customer, content));
        let fact = match self.state.messages.get(&message) {
            Some(known) if known.media_pending => F::MediaEnriched(MediaEnriched {
                message_key: message.to_vec(),
                r#type: m.r#type.clone(),
                media_age_s: age,
            }),
            Some(_) => return Ok(Step::Duplicate),
            None => {
                // The media arrived before its placeholder: record the message
                // itself; the placeholder will then be a duplicate.
                let channel = if self.is_outgoing(m) {
                    Channel::App
                } else {
                    Channel::Customer
                };
                let recorded =
                    self.message_recorded(message, m, channel, Provenance::History, 0, &[]);
                let mut fact = self.fact(
                    InputKind::HistoryMedia,
                    message,
                    resolved.customer,
                    F::MessageRecorded(recorded),
                    sealable,
                );
                fact.record.links = resolved.links;
                return Ok(Self::number_facts(vec![fact]));
            }
        };
        let mut fact = self.fact(
            InputKind::HistoryMedia,
            key,
            resolved.customer,
            fact,
            sealable,
        );
        fact.record.links = resolved.links;
        Ok(Self::number_facts(vec![fact]))
    }

    fn contact_sync(&self, c: &'a ContactSync) -> Result<Step<'a>, Rejection> {
        if c.phone_number.is_empty() && c.user_id.is_empty() {
            return Err(Rejection::new(
                "missing_contact_identity",
                "a contact sync item without phone_number or user_id",
            ));
        }
        let identity = if c.user_id.is_empty() {
            self.tag(domain::PHONE, &c.phone_number)
        } else {
            self.tag(domain::BSUID, &c.user_id)
        };
        let key = self.key(&[
            b"contact",
            &identity,
            c.action.as_bytes(),
            &c.timestamp.to_be_bytes(),
        ]);
        if self.state.seen.contains(&key) {
            return Ok(Step::Duplicate);
        }
        let resolved = self.resolve(&c.phone_number, &c.user_id, "", &BTreeMap::new());
        let content = PersonalContent::owned(Personal {
            customer: Some(twinlog_proto::v1::Identity {
                phone: c.phone_number.clone(),
                bsuid: c.user_id.clone(),
                username: c.username.clone(),
                country_code: c.country_code.clone(),
                profile_name: c.full_name.clone(),
                ..Default::default()
            }),
            content: Some(personal::Content::Contact(c.clone())),
        });
        let sealable = Some(self.sealable(resolved.customer, content));
        let mut fact = self.fact(
            InputKind::ContactSync,
            key,
            resolved.customer,
            F::ContactSynced(ContactSynced {
                action: c.action.clone(),
                timestamp: c.timestamp,
                named: !c.full_name.is_empty() || !c.first_name.is_empty(),
            }),
            sealable,
        );
        fact.record.links = resolved.links;
        Ok(Self::number_facts(vec![fact]))
    }

    fn account_update(&self, a: &'a AccountUpdate) -> Result<Step<'a>, Rejection> {
        if a.event.is_empty() {
            return Err(Rejection::new(
                "missing_event",
                "an account_update without an event",
            ));
        }
        let envelope = self.envelope();
        let time = if a.entry_time != 0 {
            a.entry_time
        } else {
            envelope.ingest_time_ms.div_euclid(1000)
        };
        let key = if a.entry_time != 0 {
            self.key(&[
                b"account",
                a.entry_id.as_bytes(),
                a.event.as_bytes(),
                &a.entry_time.to_be_bytes(),
            ])
        } else {
            self.delivery_key("account")
        };
        if self.state.seen.contains(&key) {
            return Ok(Step::Duplicate);
        }
        let waba_id = if a.waba_id.is_empty() {
            envelope.waba_id.clone()
        } else {
            a.waba_id.clone()
        };
        // The numbers it concerns: the one named, else all of the account's.
        let numbers: Vec<String> = match self.state.display_numbers.get(&a.phone_number) {
            Some(id) => vec![id.clone()],
            None if !envelope.phone_number_id.is_empty() => vec![envelope.phone_number_id.clone()],
            None => self
                .state
                .wabas
                .get(&waba_id)
                .map(|w| w.numbers.iter().cloned().collect())
                .unwrap_or_default(),
        };
        let mut head = self.fact(
            InputKind::AccountUpdate,
            key,
            None,
            F::AccountUpdated(AccountUpdated {
                event: a.event.clone(),
                waba_id: waba_id.clone(),
                entry_time: time,
                disconnection_reason: a.disconnection_reason.clone(),
                disconnection_initiated_by: a.disconnection_initiated_by.clone(),
                phone_number_ids: numbers.clone(),
            }),
            None,
        );
        head.record.waba_id = Cow::Owned(waba_id.clone());
        if numbers.len() == 1 {
            head.record.phone_number_id = Cow::Owned(numbers[0].clone());
        }
        if !a.value_json.is_empty() {
            let content = PersonalContent::owned(Personal {
                content: Some(personal::Content::RawJson(a.value_json.clone())),
                ..Personal::default()
            });
            head.personal = Some(Sealable {
                key_id: self.tag(domain::NUMBER, &head.record.phone_number_id),
                content,
            });
        }
        let mut facts = vec![head];
        let onboarded = self.state.wabas.get(&waba_id).and_then(|w| w.onboarded_at);
        if a.event == "PARTNER_APP_INSTALLED" && onboarded.is_none() {
            let mut window = self.fact(
                InputKind::AccountUpdate,
                [0; 16],
                None,
                F::SyncWindowOpened(SyncWindowOpened {
                    waba_id: waba_id.clone(),
                    opened_at: time,
                    deadline: time + self.config.sync_window_s,
                }),
                None,
            );
            window.record.natural_key = None;
            window.record.waba_id = Cow::Owned(waba_id.clone());
            facts.push(window);
        }
        Ok(Self::number_facts(facts))
    }

    /// Content that belongs to no customer and may name no number: webhook
    /// errors and unknown fields. Kept whole, sealed under the number's key.
    fn unattributed(&self, kind: &'a Kind) -> Result<Step<'a>, Rejection> {
        let state = self.state;
        let cx = self;
        match kind {
            Kind::WebhookErrors(w) => {
                let key = cx.delivery_key("webhook_errors");
                if state.seen.contains(&key) {
                    return Ok(Step::Duplicate);
                }
                let content = PersonalContent::owned(Personal {
                    content: Some(personal::Content::RawJson(errors_json(&w.errors))),
                    ..Personal::default()
                });
                let codes = w.errors.iter().map(|e| e.code).collect();
                let fact = cx.fact(
                    InputKind::WebhookErrors,
                    key,
                    None,
                    F::WebhookErrors(WebhookErrorsRecorded { codes }),
                    Some(cx.number_sealable(content)),
                );
                Ok(Step::Append(vec![fact]))
            }
            Kind::Unknown(u) => {
                let key = cx.delivery_key("unknown");
                if state.seen.contains(&key) {
                    return Ok(Step::Duplicate);
                }
                let content = PersonalContent::owned(Personal {
                    content: Some(personal::Content::RawJson(u.raw_json.clone())),
                    ..Personal::default()
                });
                let fact = cx.fact(
                    InputKind::Unknown,
                    key,
                    None,
                    F::UnknownRecorded(UnknownRecorded {
                        field: u.field.clone(),
                        reason: u.reason.clone(),
                    }),
                    Some(cx.number_sealable(content)),
                );
                Ok(Step::Append(vec![fact]))
            }
            _ => Err(Rejection::new("internal", "not an unattributed event")),
        }
    }

    /// A clock tick: closes sync windows whose deadline passed, and moves
    /// heartbeat levels. Facts come out in key order of the state's maps.
    fn tick(&self, now_ms: i64) -> Step<'a> {
        let now = now_ms.div_euclid(1000);
        if now < self.state.clock {
            return Step::Idle;
        }
        let only = self.envelope_number();
        let mut facts = Vec::new();
        let only_waba = self.state.numbers.get(only).map(|n| n.waba_id.clone());
        for (waba_id, waba) in &self.state.wabas {
            if !only.is_empty() && only_waba.as_ref() != Some(waba_id) {
                continue;
            }
            let Some(deadline) = waba.sync_deadline else {
                continue;
            };
            if now < deadline {
                continue;
            }
            let mut f = self.tick_fact(
                F::SyncWindowClosed(SyncWindowClosed {
                    waba_id: waba_id.clone(),
                    closed_at: now,
                    contacts_synced: waba.contacts_synced,
                    history_synced: waba.history_synced,
                    missed: !(waba.contacts_synced && waba.history_synced),
                }),
                now,
            );
            f.record.waba_id = Cow::Owned(waba_id.clone());
            facts.push(f);
        }
        for (id, number) in &self.state.numbers {
            if !only.is_empty() && *id != only {
                continue;
            }
            if !number.connected {
                continue;
            }
            let Some(baseline) = self.state.heartbeat_baseline(id) else {
                continue;
            };
            let idle = now - baseline;
            let level = if idle >= self.config.heartbeat_expiry_s {
                HeartbeatLevel::Expired
            } else if idle >= self.config.heartbeat_critical_s {
                HeartbeatLevel::Critical
            } else if idle >= self.config.heartbeat_warning_s {
                HeartbeatLevel::Warning
            } else {
                HeartbeatLevel::Ok
            };
            if level as i32 == number.heartbeat {
                continue;
            }
            let mut f = self.tick_fact(
                F::HeartbeatChanged(HeartbeatChanged {
                    level: level as i32,
                    previous: number.heartbeat,
                    last_activity: baseline,
                    checked_at: now,
                    seconds_left: baseline + self.config.heartbeat_expiry_s - now,
                }),
                now,
            );
            f.record.phone_number_id = Cow::Owned(id.clone());
            f.record.waba_id = Cow::Owned(number.waba_id.clone());
            facts.push(f);
        }
        if facts.is_empty() {
            Step::Idle
        } else {
            Self::number_facts(facts)
        }
    }

    fn tick_fact(&self, fact: F, now: i64) -> Fact<'a> {
        let mut f = self.fact(InputKind::Tick, [0; 16], None, fact, None);
        f.record.natural_key = None;
        f.record.meta_timestamp = now;
        f.record.phone_number_id = Cow::Borrowed("");
        f.record.display_phone_number = Cow::Borrowed("");
        f.record.waba_id = Cow::Borrowed("");
        f
    }
}

fn bump_revision(fact: F, local: &mut BTreeMap<Tag, u32>) -> F {
    match fact {
        F::RevisionRecorded(mut r) => {
            if let Ok(original) = Tag::try_from(r.original_key.as_slice()) {
                let extra = local.entry(original).or_default();
                r.revision_number += *extra;
                *extra += 1;
            }
            F::RevisionRecorded(r)
        }
        other => other,
    }
}

fn edit_type(edit: &twinlog_proto::v1::Edit) -> String {
    edit.message
        .as_ref()
        .map(|m| m.r#type.clone())
        .unwrap_or_default()
}

/// Disappearing or view-once content. Coexistence turns both off in 1:1
/// chats, but should either arrive it is kept like everything else, and marked.
fn is_ephemeral(m: &Message) -> bool {
    m.extra_json.contains("\"view_once\":true")
        || m.extra_json.contains("\"ephemeral\"")
        || m.extra_json.contains("\"disappearing\"")
}

fn rank_name(rank: u8) -> &'static str {
    match rank {
        0 => "",
        1 => "sent",
        2 => "delivered",
        3 => "read",
        4 => "played",
        STATUS_RANK_FAILED => "failed",
        _ => "unknown",
    }
}
