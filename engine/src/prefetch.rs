//! Asks the CPU to start loading an input's heap data before the fold needs
//! it. A fold reads each input once, and an input is a dozen small heap
//! strings scattered over a batch that does not fit in the cache, so without
//! a hint each string costs a miss the moment `decide` reaches it. A hint
//! changes no result: it only moves when memory is read.

use twinlog_proto::v1::{ingest_event::Kind, message::Content, IngestEvent, Message, Source};

#[inline(always)]
fn hint(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is a
        // hint that never faults and reads nothing into the program (the
        // pointer is a live slice's anyway).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

fn message(m: &Message) {
    hint(m.wamid.as_bytes());
    hint(m.r#type.as_bytes());
    hint(m.from.as_bytes());
    hint(m.to.as_bytes());
    if let Some(Content::Text(t)) = &m.content {
        hint(t.body.as_bytes());
    }
}

/// Prefetches the heap data of the input the fold will take next: call it
/// with input `i + 1` before deciding input `i`.
pub fn prefetch(event: &IngestEvent, source: &Source) {
    hint(source.topic.as_bytes());
    if let Some(e) = &event.envelope {
        hint(e.phone_number_id.as_bytes());
        hint(e.display_phone_number.as_bytes());
        hint(e.waba_id.as_bytes());
        hint(&e.body_sha256);
        if let Some(c) = &e.customer {
            hint(c.phone.as_bytes());
            hint(c.bsuid.as_bytes());
            hint(c.country.as_bytes());
        }
    }
    match &event.kind {
        Some(Kind::Inbound(m) | Kind::Echo(m)) => message(m),
        Some(Kind::ApiSend(s)) => {
            if let Some(m) = &s.message {
                message(m);
            }
        }
        Some(Kind::Status(s)) => {
            hint(s.wamid.as_bytes());
            hint(s.status.as_bytes());
        }
        _ => {}
    }
}
