//! Personal content is encrypted before it is hashed: never in clear on disk,
//! unreadable after `forget`, and the tree still verifies.

use twinlog::Twinlog;
use twinlog_tests::{all_bytes, contains, inputs};

const SECRET_BODY: &str = "ZEBRA-PLUM-5519 please call me back at the shop";
const SECRET_PHONE: &str = "19998887766";
const SECRET_NAME: &str = "Quintessa Vandermolen";

fn body(wamid: &str, text: &str) -> Vec<u8> {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"{SECRET_NAME}"}},"wa_id":"{SECRET_PHONE}"}}],"messages":[{{"from":"{SECRET_PHONE}","id":"{wamid}","timestamp":"1763380800","type":"text","text":{{"body":"{text}"}}}}]}}}}]}}]}}"#
    )
    .into_bytes()
}

fn assert_nowhere_in_clear(dir: &std::path::Path, needles: &[&str]) {
    let files = all_bytes(dir);
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        for needle in needles {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{needle:?} found in clear in {}",
                path.display()
            );
        }
    }
}

#[test]
fn personal_content_is_never_on_disk_in_clear_and_forget_makes_it_unreadable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut t = Twinlog::init(dir.path()).expect("init");
    let first = body("wamid.SECRET1", SECRET_BODY);
    let other = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Other"},"wa_id":"16505550000"}],"messages":[{"from":"16505550000","id":"wamid.OTHER","timestamp":"1763380900","type":"text","text":{"body":"someone else"}}]}}]}]}"#;
    t.append(&inputs(&[&first, other], 1_763_400_000_000))
        .expect("append");
    let seq = (0..t.log().size())
        .find(|s| {
            t.show(*s)
                .expect("show")
                .personal
                .to_string()
                .contains(SECRET_BODY)
        })
        .expect("the message reads back while its customer is known");
    drop(t);
    assert_nowhere_in_clear(
        dir.path(),
        &[SECRET_BODY, SECRET_PHONE, SECRET_NAME, "wamid.SECRET1"],
    );

    let mut t = Twinlog::open(dir.path(), &mut |_, _| {}).expect("reopen");
    let erased_at = t
        .forget(SECRET_PHONE)
        .expect("forget")
        .expect("an erasure record");
    assert_eq!(t.forget(SECRET_PHONE).expect("forget again"), None);
    let erasure = t.show(erased_at).expect("show erasure");
    assert!(!erasure.record.to_string().contains(SECRET_PHONE));
    assert_eq!(
        erasure.personal,
        serde_json::Value::Null,
        "an erasure record holds no personal data"
    );
    let view = t.show(seq).expect("show");
    assert_eq!(view.personal, serde_json::json!({ "erased": true }));
    // Other customers stay readable.
    assert!((0..t.log().size()).any(|s| t
        .show(s)
        .expect("show")
        .personal
        .to_string()
        .contains("someone else")));
    t.log()
        .verify(&mut |_, _| {})
        .expect("the tree still verifies after forget");
    drop(t);
    assert_nowhere_in_clear(dir.path(), &[SECRET_BODY, SECRET_PHONE, SECRET_NAME]);

    // The forget survives a reopen; unknown customers are refused.
    let mut t = Twinlog::open(dir.path(), &mut |_, _| {}).expect("reopen");
    assert_eq!(
        t.show(seq).expect("show").personal,
        serde_json::json!({ "erased": true })
    );
    assert!(matches!(
        t.forget("10000000000"),
        Err(twinlog::PipelineError::UnknownCustomer)
    ));
}
