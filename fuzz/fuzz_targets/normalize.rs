//! Feeds arbitrary bytes to `twinlog_normalize::normalize`: it must return
//! `Ok` or `Err`, never panic, overflow the stack or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinlog_normalize::{normalize, IngestContext};

fuzz_target!(|data: &[u8]| {
    let ctx = IngestContext { ingest_time_ms: 0 };
    if let Ok(events) = normalize(data, &ctx) {
        for event in &events {
            // The envelope is always there and names the exact body.
            let envelope = event.envelope.as_ref().expect("envelope");
            assert_eq!(envelope.body_sha256.len(), 32);
        }
    }
});
