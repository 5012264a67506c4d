//! The CRM views: contacts, conversations with their timelines, the
//! customer-service window and the bot/human handoff.

use std::collections::{BTreeMap, BTreeSet};

use twinlog_proto::v1::{
    audit_record::Fact, message, personal, AddressBookChange, AuditRecord, Channel, ContactRow,
    ContactSynced, ConversationRow, ConversationSnapshot, Direction, Handler, IdentityLinkRow,
    IdentityValues, Message, MessageRecorded, PendingRevision as SnapshotRevision, PendingStatuses,
    Personal, Provenance, RevisionEntry, RevisionKind, RevisionRecorded, StatusEntry,
    StatusRecorded, TimelineMessage, ViewsSnapshot,
};

use crate::change::{Change, Handoff};
use crate::{status_rank, Changes, Config, STATUS_RANK_FAILED};

/// A conversation: one business number × one customer.
pub type ConversationId = (String, Vec<u8>);

/// A conversation's summary row and its timeline, ordered by (message
/// timestamp, seq).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub row: ConversationRow,
    timeline: BTreeMap<(i64, u64), TimelineMessage>,
}

impl Conversation {
    /// The messages, oldest first.
    pub fn timeline(&self) -> impl Iterator<Item = &TimelineMessage> {
        self.timeline.values()
    }

    /// Whether the customer-service window is open at `now` (unix seconds).
    pub fn window_open(&self, now: i64) -> bool {
        now < self.row.window_until
    }
}

/// A revision whose original message is not known yet.
#[derive(Debug, Clone, PartialEq)]
struct PendingRevision {
    customer: Vec<u8>,
    entry: RevisionEntry,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Crm {
    pub(crate) contacts: BTreeMap<Vec<u8>, ContactRow>,
    pub(crate) conversations: BTreeMap<ConversationId, Conversation>,
    /// message key → (conversation, timeline position)
    messages: BTreeMap<Vec<u8>, (ConversationId, (i64, u64))>,
    orphan_statuses: BTreeMap<Vec<u8>, Vec<StatusEntry>>,
    orphan_revisions: BTreeMap<Vec<u8>, Vec<PendingRevision>>,
    /// (human_until, conversation): when each human handoff ends.
    handoff_ends: BTreeSet<(i64, ConversationId)>,
    pub(crate) forgotten: BTreeSet<Vec<u8>>,
}

impl Crm {
    /// Hands conversations back to the bot whose quiet period ended by `now`.
    pub(crate) fn expire_handoffs(&mut self, now: i64, seq: u64, out: &mut Changes) {
        while let Some((until, id)) = self.handoff_ends.first().cloned() {
            if until > now {
                break;
            }
            self.handoff_ends.pop_first();
            if let Some(c) = self.conversations.get_mut(&id) {
                c.row.handler = Handler::Bot as i32;
                c.row.handler_since = until;
                c.row.human_until = 0;
                c.row.updated_seq = seq;
                out.push(Change::Conversation {
                    number: id.0.clone(),
                    customer: id.1.clone(),
                });
                out.push(Change::Handoff(Handoff {
                    number: id.0,
                    customer: id.1,
                    handler: Handler::Bot,
                    previous: Handler::Human,
                    at: until,
                    human_until: 0,
                }));
            }
        }
    }

    pub(crate) fn apply(
        &mut self,
        config: &Config,
        record: &AuditRecord,
        personal: Option<&Personal>,
        out: &mut Changes,
    ) {
        let seq = record.seq;
        for link in &record.links {
            let time = crate::record_time(record);
            let contact = self.contact(&link.customer, seq, time, out);
            contact.identity_links.push(IdentityLinkRow {
                kind: link.kind,
                identity: link.identity.clone(),
                seq,
                timestamp: time,
            });
        }
        match &record.fact {
            Some(Fact::MessageRecorded(m)) => self.message(config, record, m, personal, out),
            Some(Fact::RevisionRecorded(r)) => self.revision(config, record, r, personal, out),
            Some(Fact::StatusRecorded(s)) => self.status(record, s, out),
            Some(Fact::MediaEnriched(e)) => {
                let owner = self.messages.get(&e.message_key).map(|(id, _)| &id.1);
                let content =
                    personal_message(personal).filter(|_| owner == Some(&record.customer));
                if let Some(m) = self.timeline_message(&e.message_key, seq, out) {
                    m.r#type.clone_from(&e.r#type);
                    m.media_pending = false;
                    if content.is_some() {
                        m.content = content;
                    }
                }
            }
            Some(Fact::ContactSynced(c)) => self.contact_synced(record, c, personal, out),
            Some(Fact::CustomerErased(e)) => self.erase(&e.customer, seq, out),
            _ => {}
        }
        let country_changed = !record.customer_country.is_empty()
            && self
                .contacts
                .get(&record.customer)
                .is_none_or(|c| c.country != record.customer_country);
        if !record.customer.is_empty() && country_changed {
            let time = crate::record_time(record);
            let contact = self.contact(&record.customer, seq, time, out);
            if contact.country != record.customer_country {
                contact.country.clone_from(&record.customer_country);
            }
        }
    }

    /// The contact row of `customer`, created if new, marked changed.
    fn contact(
        &mut self,
        customer: &[u8],
        seq: u64,
        time: i64,
        out: &mut Changes,
    ) -> &mut ContactRow {
        out.push(Change::Contact {
            customer: customer.to_vec(),
        });
        if !self.contacts.contains_key(customer) {
            let row = ContactRow {
                customer: customer.to_vec(),
                first_seen: time,
                last_seen: time,
                ..ContactRow::default()
            };
            self.contacts.insert(customer.to_vec(), row);
        }
        let row = self
            .contacts
            .get_mut(customer)
            .expect("the contact row was just ensured");
        if time != 0 {
            if row.first_seen == 0 || time < row.first_seen {
                row.first_seen = time;
            }
            row.last_seen = row.last_seen.max(time);
        }
        row.updated_seq = seq;
        row
    }

    /// Learns the customer's identity values from the sealed part.
    fn learn_identity(
        &mut self,
        record: &AuditRecord,
        personal: Option<&Personal>,
        out: &mut Changes,
    ) {
        let Some(id) = personal.and_then(|p| p.customer.as_ref()) else {
            return;
        };
        if record.customer.is_empty() {
            return;
        }
        let seq = record.seq;
        let time = crate::record_time(record);
        let contact = self.contact(&record.customer, seq, time, out);
        let set = |field: &mut String, value: &str| {
            if !value.is_empty() && field != value {
                *field = value.to_string();
            }
        };
        set(&mut contact.phone, &id.phone);
        set(&mut contact.bsuid, &id.bsuid);
        set(&mut contact.username, &id.username);
        set(&mut contact.profile_name, &id.profile_name);
        let last = contact.identity_values.last();
        let changed = last.is_none_or(|v| {
            (!id.phone.is_empty() && v.phone != id.phone)
                || (!id.bsuid.is_empty() && v.bsuid != id.bsuid)
        });
        if changed && (!id.phone.is_empty() || !id.bsuid.is_empty()) {
            contact.identity_values.push(IdentityValues {
                phone: id.phone.clone(),
                bsuid: id.bsuid.clone(),
                seq,
                timestamp: time,
            });
        }
    }

    fn conversation(
        &mut self,
        record: &AuditRecord,
        time: i64,
        out: &mut Changes,
    ) -> (&mut Conversation, ConversationId) {
        let id = (record.phone_number_id.clone(), record.customer.clone());
        out.push(Change::Conversation {
            number: id.0.clone(),
            customer: id.1.clone(),
        });
        let forgotten = self.forgotten.contains(&record.customer);
        let c = self
            .conversations
            .entry(id.clone())
            .or_insert_with(|| Conversation {
                row: ConversationRow {
                    phone_number_id: id.0.clone(),
                    customer: id.1.clone(),
                    handler: Handler::Bot as i32,
                    handler_since: time,
                    forgotten,
                    ..ConversationRow::default()
                },
                timeline: BTreeMap::new(),
            });
        c.row.updated_seq = record.seq;
        (c, id)
    }

    fn message(
        &mut self,
        config: &Config,
        record: &AuditRecord,
        m: &MessageRecorded,
        personal: Option<&Personal>,
        out: &mut Changes,
    ) {
        let seq = record.seq;
        self.learn_identity(record, personal, out);
        if !record.customer.is_empty() {
            self.contact(&record.customer, seq, m.timestamp, out);
        }
        let channel = Channel::try_from(m.channel).unwrap_or(Channel::Unspecified);
        let live = m.provenance == Provenance::Live as i32;
        let statuses = self
            .orphan_statuses
            .remove(&m.message_key)
            .unwrap_or_default();
        let revisions = self
            .orphan_revisions
            .remove(&m.message_key)
            .unwrap_or_default();
        let (c, id) = self.conversation(record, m.timestamp, out);
        let mut entry = TimelineMessage {
            message_key: m.message_key.clone(),
            direction: if channel == Channel::Customer {
                Direction::Inbound
            } else {
                Direction::Outbound
            } as i32,
            channel: m.channel,
            provenance: m.provenance,
            r#type: m.r#type.clone(),
            timestamp: m.timestamp,
            seq,
            content: personal_message(personal),
            status: m.joined_status.clone(),
            statuses: Vec::new(),
            revisions: Vec::new(),
            edited: false,
            deleted_by_sender: false,
            reply_to: m.reply_to.clone(),
            media_pending: m.media_pending,
            ephemeral: m.ephemeral,
        };
        for s in statuses {
            add_status(&mut entry, s);
        }
        for mut r in revisions {
            if r.customer != record.customer {
                r.entry.content = None;
            }
            add_revision(&mut entry, r.entry);
        }
        let row = &mut c.row;
        row.messages += 1;
        match channel {
            Channel::Customer => row.inbound += 1,
            Channel::App => row.outbound_app += 1,
            Channel::Api => row.outbound_api += 1,
            Channel::Unspecified => {}
        }
        if !live {
            row.from_history += 1;
        }
        if row.first_at == 0 || m.timestamp < row.first_at {
            row.first_at = m.timestamp;
        }
        if m.timestamp >= row.last_at {
            row.last_at = m.timestamp;
            row.last_type.clone_from(&m.r#type);
            row.last_channel = m.channel;
        }
        if live && channel == Channel::Customer {
            row.window_until = row.window_until.max(m.timestamp + config.window_s);
        }
        let position = (m.timestamp, seq);
        marks(row, (false, false), (entry.edited, entry.deleted_by_sender));
        c.timeline.insert(position, entry);
        self.messages
            .insert(m.message_key.clone(), (id.clone(), position));
        if live && channel == Channel::App {
            self.human_stepped_in(config, &id, m.timestamp, out);
        }
    }

    /// An app-side echo: staff answered from the phone, the bot steps back.
    fn human_stepped_in(
        &mut self,
        config: &Config,
        id: &ConversationId,
        at: i64,
        out: &mut Changes,
    ) {
        let Some(c) = self.conversations.get_mut(id) else {
            return;
        };
        let until = at + config.handoff_quiet_s;
        let previous = Handler::try_from(c.row.handler).unwrap_or(Handler::Unspecified);
        if previous == Handler::Human {
            if until <= c.row.human_until {
                return;
            }
            self.handoff_ends.remove(&(c.row.human_until, id.clone()));
        } else {
            c.row.handler = Handler::Human as i32;
            c.row.handler_since = at;
            out.push(Change::Handoff(Handoff {
                number: id.0.clone(),
                customer: id.1.clone(),
                handler: Handler::Human,
                previous,
                at,
                human_until: until,
            }));
        }
        c.row.human_until = until;
        self.handoff_ends.insert((until, id.clone()));
    }

    fn timeline_message(
        &mut self,
        key: &[u8],
        seq: u64,
        out: &mut Changes,
    ) -> Option<&mut TimelineMessage> {
        let (id, position) = self.messages.get(key)?;
        let c = self.conversations.get_mut(id)?;
        c.row.updated_seq = seq;
        out.push(Change::Conversation {
            number: id.0.clone(),
            customer: id.1.clone(),
        });
        c.timeline.get_mut(position)
    }

    fn revision(
        &mut self,
        config: &Config,
        record: &AuditRecord,
        r: &RevisionRecorded,
        personal: Option<&Personal>,
        out: &mut Changes,
    ) {
        let new_content = personal_message(personal).and_then(|m| match m.content {
            Some(message::Content::Edit(edit)) => edit.message.map(|b| *b),
            _ => None,
        });
        let entry = RevisionEntry {
            revision_key: r.revision_key.clone(),
            kind: r.kind,
            by: r.by,
            timestamp: r.timestamp,
            new_type: r.new_type.clone(),
            content: new_content,
            seq: record.seq,
        };
        let known = self.messages.get(&r.original_key).map(|(id, _)| id.clone());
        let mut entry = entry;
        match known {
            Some(id) => {
                if id.1 != record.customer {
                    // Sealed under another customer's key than the
                    // conversation's: a forget of either must not leave it.
                    entry.content = None;
                }
                let flags = self
                    .timeline_message(&r.original_key, record.seq, out)
                    .map(|m| {
                        let before = (m.edited, m.deleted_by_sender);
                        add_revision(m, entry);
                        (before, (m.edited, m.deleted_by_sender))
                    });
                if let (Some((before, after)), Some(c)) = (flags, self.conversations.get_mut(&id)) {
                    marks(&mut c.row, before, after);
                }
            }
            None => self
                .orphan_revisions
                .entry(r.original_key.clone())
                .or_default()
                .push(PendingRevision {
                    customer: record.customer.clone(),
                    entry,
                }),
        }
        let live_echo = record.input_kind == twinlog_proto::v1::InputKind::Echo as i32;
        if live_echo && r.by == Channel::App as i32 {
            let (_, id) = self.conversation(record, r.timestamp, out);
            self.human_stepped_in(config, &id, r.timestamp, out);
        }
    }

    fn status(&mut self, record: &AuditRecord, s: &StatusRecorded, out: &mut Changes) {
        let entry = StatusEntry {
            status: s.status.clone(),
            timestamp: s.timestamp,
            effect: s.effect,
            seq: record.seq,
            error_codes: s.error_codes.clone(),
        };
        match self.timeline_message(&s.message_key, record.seq, out) {
            Some(m) => add_status(m, entry),
            None => self
                .orphan_statuses
                .entry(s.message_key.clone())
                .or_default()
                .push(entry),
        }
    }

    fn contact_synced(
        &mut self,
        record: &AuditRecord,
        c: &ContactSynced,
        personal: Option<&Personal>,
        out: &mut Changes,
    ) {
        if record.customer.is_empty() {
            return;
        }
        self.learn_identity(record, personal, out);
        let contact = self.contact(&record.customer, record.seq, c.timestamp, out);
        if let Some(personal::Content::Contact(sync)) = personal.and_then(|p| p.content.as_ref()) {
            let name = if sync.full_name.is_empty() {
                &sync.first_name
            } else {
                &sync.full_name
            };
            if !name.is_empty() {
                contact.address_book_name.clone_from(name);
            }
        }
        match c.action.as_str() {
            "remove" => contact.in_address_book = false,
            _ => contact.in_address_book = true,
        }
        contact.address_book.push(AddressBookChange {
            action: c.action.clone(),
            timestamp: c.timestamp,
            seq: record.seq,
        });
    }

    /// Removes every personal value of `customer`; counts, statuses, types
    /// and billing stay.
    fn erase(&mut self, customer: &[u8], seq: u64, out: &mut Changes) {
        self.forgotten.insert(customer.to_vec());
        out.push(Change::CustomerErased {
            customer: customer.to_vec(),
        });
        let contact = self.contact(customer, seq, 0, out);
        contact.bsuid.clear();
        contact.phone.clear();
        contact.username.clear();
        contact.profile_name.clear();
        contact.address_book_name.clear();
        contact.identity_values.clear();
        contact.forgotten = true;
        for (id, c) in self
            .conversations
            .iter_mut()
            .filter(|(id, _)| id.1 == customer)
        {
            c.row.forgotten = true;
            c.row.updated_seq = seq;
            for m in c.timeline.values_mut() {
                m.content = None;
                for r in &mut m.revisions {
                    r.content = None;
                }
            }
            out.push(Change::Conversation {
                number: id.0.clone(),
                customer: id.1.clone(),
            });
        }
        for pending in self.orphan_revisions.values_mut().flatten() {
            if pending.customer == customer {
                pending.entry.content = None;
            }
        }
    }

    pub(crate) fn save(&self, s: &mut ViewsSnapshot) {
        s.contacts = self.contacts.values().cloned().collect();
        s.conversations = self
            .conversations
            .values()
            .map(|c| ConversationSnapshot {
                row: Some(c.row.clone()),
                timeline: c.timeline.values().cloned().collect(),
            })
            .collect();
        s.pending_statuses = self
            .orphan_statuses
            .iter()
            .map(|(k, v)| PendingStatuses {
                message_key: k.clone(),
                statuses: v.clone(),
            })
            .collect();
        s.pending_revisions = self
            .orphan_revisions
            .iter()
            .flat_map(|(k, v)| {
                v.iter().map(move |p| SnapshotRevision {
                    original_key: k.clone(),
                    customer: p.customer.clone(),
                    entry: Some(p.entry.clone()),
                })
            })
            .collect();
    }

    /// The CRM state of a snapshot; the indexes (message positions, handoff
    /// ends, forgotten customers) are derived from the rows.
    pub(crate) fn load(s: &ViewsSnapshot) -> Crm {
        let mut crm = Crm {
            contacts: s
                .contacts
                .iter()
                .map(|c| (c.customer.clone(), c.clone()))
                .collect(),
            ..Crm::default()
        };
        crm.forgotten = s
            .contacts
            .iter()
            .filter(|c| c.forgotten)
            .map(|c| c.customer.clone())
            .collect();
        for snap in &s.conversations {
            let row = snap.row.clone().unwrap_or_default();
            let id = (row.phone_number_id.clone(), row.customer.clone());
            if row.handler == Handler::Human as i32 {
                crm.handoff_ends.insert((row.human_until, id.clone()));
            }
            let mut c = Conversation {
                row,
                timeline: BTreeMap::new(),
            };
            for m in &snap.timeline {
                let position = (m.timestamp, m.seq);
                crm.messages
                    .insert(m.message_key.clone(), (id.clone(), position));
                c.timeline.insert(position, m.clone());
            }
            crm.conversations.insert(id, c);
        }
        for p in &s.pending_statuses {
            crm.orphan_statuses
                .insert(p.message_key.clone(), p.statuses.clone());
        }
        for p in &s.pending_revisions {
            crm.orphan_revisions
                .entry(p.original_key.clone())
                .or_default()
                .push(PendingRevision {
                    customer: p.customer.clone(),
                    entry: p.entry.clone().unwrap_or_default(),
                });
        }
        crm
    }

    pub(crate) fn window_until(&self, number: &str, customer: &[u8]) -> i64 {
        self.conversations
            .get(&(number.to_string(), customer.to_vec()))
            .map(|c| c.row.window_until)
            .unwrap_or(0)
    }
}

fn personal_message(personal: Option<&Personal>) -> Option<Message> {
    match personal?.content.as_ref()? {
        personal::Content::Message(m) => Some(m.clone()),
        _ => None,
    }
}

/// Keeps the conversation's edited/deleted counts as a message's marks change.
fn marks(row: &mut ConversationRow, before: (bool, bool), after: (bool, bool)) {
    let step = |count: &mut u64, was: bool, is: bool| match (was, is) {
        (false, true) => *count += 1,
        (true, false) => *count = count.saturating_sub(1),
        _ => {}
    };
    step(&mut row.edited, before.0, after.0);
    step(&mut row.deleted, before.1, after.1);
}

fn add_status(m: &mut TimelineMessage, entry: StatusEntry) {
    let rank = |s: &str| status_rank(s).unwrap_or(0);
    let current = rank(&m.status);
    let new = rank(&entry.status);
    if current != STATUS_RANK_FAILED && new > current {
        m.status.clone_from(&entry.status);
    }
    m.statuses.push(entry);
}

fn add_revision(m: &mut TimelineMessage, entry: RevisionEntry) {
    if entry.kind == RevisionKind::Revoke as i32 {
        m.deleted_by_sender = true;
        m.content = None;
    } else if entry.kind == RevisionKind::Edit as i32 && !m.deleted_by_sender {
        m.edited = true;
        if !entry.new_type.is_empty() {
            m.r#type.clone_from(&entry.new_type);
        }
        if entry.content.is_some() {
            m.content.clone_from(&entry.content);
        }
    }
    m.revisions.push(entry);
}
