//! Pure folds from audit records to the views that CRMs, finance and
//! operations read: contacts, conversations, handoff, number health and the
//! per-channel billing ledger. Like the engine, this crate does no IO, reads
//! no clock and no randomness. It is empty until the read-side work lands.
