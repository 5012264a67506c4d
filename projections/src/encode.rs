//! Deterministic encodings of the views, and their digest. prost writes
//! fields in field-number order and the views iterate in key order, so
//! equal views give equal bytes.

use sha2::{Digest, Sha256};

use crate::Views;

/// The domain of the views digest (changes when the canonical encoding does).
const DIGEST_DOMAIN: &[u8] = b"twinlog views v1";

impl Views {
    /// SHA-256 over a canonical encoding of every view: for each section in
    /// a fixed order, its name, then each row as (length u64 BE, protobuf
    /// bytes), rows in key order. Equal for a view maintained record by
    /// record and one rebuilt from seq 0.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        self.canonical(&mut |chunk| hasher.update(chunk));
        hasher.finalize().into()
    }

    /// The canonical encoding that [`Views::digest`] hashes, as one buffer.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.canonical(&mut |chunk| out.extend_from_slice(chunk));
        out
    }

    fn canonical(&self, sink: &mut dyn FnMut(&[u8])) {
        let mut buf = Vec::new();
        let mut row = |sink: &mut dyn FnMut(&[u8]), m: &dyn Encode| {
            buf.clear();
            m.encode_into(&mut buf);
            sink(&u64::try_from(buf.len()).unwrap_or(u64::MAX).to_be_bytes());
            sink(&buf);
        };
        sink(DIGEST_DOMAIN);
        let through = self
            .applied_through()
            .map(|s| s.to_string())
            .unwrap_or_default();
        section(sink, "applied_through");
        sink(through.as_bytes());
        section(sink, "contacts");
        for c in self.contacts() {
            row(sink, c);
        }
        section(sink, "conversations");
        for c in self.conversations() {
            row(sink, &c.row);
            for m in c.timeline() {
                row(sink, m);
            }
        }
        section(sink, "numbers");
        for n in self.numbers() {
            row(sink, n);
        }
        section(sink, "ledger");
        for e in self.ledger_entries() {
            row(sink, e);
        }
        section(sink, "billing_aggregates");
        for a in self.billing_aggregates() {
            row(sink, a);
        }
        section(sink, "savings");
        for s in self.savings() {
            row(sink, s);
        }
    }
}

fn section(sink: &mut dyn FnMut(&[u8]), name: &str) {
    sink(&[0xff]);
    sink(name.as_bytes());
    sink(&[0]);
}

/// Object-safe protobuf encoding.
trait Encode {
    fn encode_into(&self, buf: &mut Vec<u8>);
}

impl<M: prost::Message> Encode for M {
    fn encode_into(&self, buf: &mut Vec<u8>) {
        // Encoding into a Vec cannot run out of room.
        let _ = self.encode(buf);
    }
}

/// The protobuf bytes of one row (contact, conversation summary, health,
/// ledger entry, billing aggregate, savings, change event), as the compacted
/// topics and the stores keep it.
pub fn encode_row<M: prost::Message>(row: &M) -> Vec<u8> {
    row.encode_to_vec()
}
