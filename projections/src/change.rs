//! What one applied record changed, as data: the rows a change feed, a
//! compacted topic or a bot must look at again.

use twinlog_proto::v1::{
    change_event, BillingAggregateKey, ChangeEvent, Channel, ConversationKey, Handler,
    HandoffChanged, SavingsKey,
};

use crate::day::Day;

/// One change of the views. Changes of one record come sorted and without
/// repeats, so the same record always gives the same list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// A contact row changed (created, renamed, linked, erased, …).
    Contact { customer: Vec<u8> },
    /// A conversation's summary row or timeline changed.
    Conversation { number: String, customer: Vec<u8> },
    /// Who handles a conversation changed: a bot must stop (human) or may
    /// resume (bot). Always comes with a `Conversation` change.
    Handoff(Handoff),
    /// A number's health row changed.
    NumberHealth { number: String },
    /// A ledger entry was appended.
    LedgerEntry { id: u64 },
    /// A billing aggregate row changed.
    BillingAggregate {
        number: String,
        day: Day,
        channel: Channel,
        category: String,
    },
    /// A savings row changed.
    Savings { number: String, day: Day },
    /// A customer's personal data was removed from the views.
    CustomerErased { customer: Vec<u8> },
}

/// A switch of handler, with when it happened (record time, unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handoff {
    pub number: String,
    pub customer: Vec<u8>,
    pub handler: Handler,
    pub previous: Handler,
    pub at: i64,
    /// When `handler` is human: when the conversation goes back to the bot.
    pub human_until: i64,
}

impl Change {
    /// The change as a protobuf change event of record `seq`.
    pub fn to_event(&self, seq: u64) -> ChangeEvent {
        use change_event::Change as C;
        let change = match self {
            Change::Contact { customer } => C::Contact(customer.clone()),
            Change::Conversation { number, customer } => C::Conversation(ConversationKey {
                phone_number_id: number.clone(),
                customer: customer.clone(),
            }),
            Change::Handoff(h) => C::Handoff(HandoffChanged {
                phone_number_id: h.number.clone(),
                customer: h.customer.clone(),
                handler: h.handler as i32,
                previous: h.previous as i32,
                at: h.at,
                human_until: h.human_until,
            }),
            Change::NumberHealth { number } => C::NumberHealth(number.clone()),
            Change::LedgerEntry { id } => C::LedgerEntry(*id),
            Change::BillingAggregate {
                number,
                day,
                channel,
                category,
            } => C::BillingAggregate(BillingAggregateKey {
                phone_number_id: number.clone(),
                day: day.to_string(),
                channel: *channel as i32,
                category: category.clone(),
            }),
            Change::Savings { number, day } => C::Savings(SavingsKey {
                phone_number_id: number.clone(),
                day: day.to_string(),
            }),
            Change::CustomerErased { customer } => C::CustomerErased(customer.clone()),
        };
        ChangeEvent {
            seq,
            change: Some(change),
        }
    }
}
