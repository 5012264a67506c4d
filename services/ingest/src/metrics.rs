//! The ingestor's Prometheus metrics, all under `twinlog_ingest_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why a request was refused. The label value of
/// `twinlog_ingest_rejected_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reject {
    VerifyTokenMismatch,
    HandshakeMalformed,
    SignatureMissing,
    SignatureMalformed,
    SignatureMismatch,
    BodyTooLarge,
    BodyReadFailed,
    BodyReadTimeout,
    Busy,
}

impl Reject {
    pub(crate) const ALL: [Reject; 9] = [
        Reject::VerifyTokenMismatch,
        Reject::HandshakeMalformed,
        Reject::SignatureMissing,
        Reject::SignatureMalformed,
        Reject::SignatureMismatch,
        Reject::BodyTooLarge,
        Reject::BodyReadFailed,
        Reject::BodyReadTimeout,
        Reject::Busy,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Reject::VerifyTokenMismatch => "verify_token_mismatch",
            Reject::HandshakeMalformed => "handshake_malformed",
            Reject::SignatureMissing => "signature_missing",
            Reject::SignatureMalformed => "signature_malformed",
            Reject::SignatureMismatch => "signature_mismatch",
            Reject::BodyTooLarge => "body_too_large",
            Reject::BodyReadFailed => "body_read_failed",
            Reject::BodyReadTimeout => "body_read_timeout",
            Reject::Busy => "busy",
        }
    }
}

/// How a request ended. The label value of
/// `twinlog_ingest_requests_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// Handshake answered with the challenge.
    Verified,
    /// Stored, and every event published: 200.
    Published,
    /// Stored as a dead letter: 200.
    DeadLettered,
    /// Refused (see the reason counter): 4xx or 503.
    Rejected,
    /// The bus was overloaded: 503.
    BusOverloaded,
    /// The bus failed: 503.
    BusFailed,
    /// The raw-body store failed: 500.
    StoreFailed,
}

impl Outcome {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Published => "published",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Rejected => "rejected",
            Outcome::BusOverloaded => "bus_overloaded",
            Outcome::BusFailed => "bus_failed",
            Outcome::StoreFailed => "store_failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone)]
pub(crate) struct Metrics {
    requests: Family<OutcomeLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    pub(crate) dead_letters: Counter,
    pub(crate) reprocessed: Counter,
    pub(crate) events_published: Counter,
    pub(crate) body_bytes: Counter,
    pub(crate) publish_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            rejected: Family::default(),
            dead_letters: Counter::default(),
            reprocessed: Counter::default(),
            events_published: Counter::default(),
            body_bytes: Counter::default(),
            publish_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
        };
        // Every label value exists from the start, so a dashboard sees zeros.
        for reason in Reject::ALL {
            drop(m.rejected.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        let r = registry.sub_registry_with_prefix("twinlog_ingest");
        r.register(
            "requests",
            "Webhook requests by outcome: verified, published, dead_lettered, rejected, bus_overloaded, bus_failed, store_failed",
            m.requests.clone(),
        );
        r.register(
            "rejected",
            "Webhook requests refused, by reason",
            m.rejected.clone(),
        );
        r.register(
            "dead_letters",
            "Authentic bodies the normaliser or the bus limits refused, kept as dead letters",
            m.dead_letters.clone(),
        );
        r.register(
            "dead_letters_republished",
            "Dead letters that reprocessing normalised and published",
            m.reprocessed.clone(),
        );
        r.register(
            "events_published",
            "Normalised events published to the bus",
            m.events_published.clone(),
        );
        r.register(
            "body_bytes",
            "Bytes of authentic webhook bodies stored",
            m.body_bytes.clone(),
        );
        r.register(
            "publish_duration_seconds",
            "Time of one durable publish to the bus",
            m.publish_seconds.clone(),
        );
        m
    }

    pub(crate) fn outcome(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub(crate) fn outcome_count(&self, outcome: Outcome) -> u64 {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .get()
    }

    pub(crate) fn reject(&self, reason: Reject) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
        self.outcome(Outcome::Rejected);
    }

    pub(crate) fn rejected_count(&self, reason: Reject) -> u64 {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .get()
    }
}
