//! The customer's country, for billing markets: Meta prices an API message
//! by the recipient's country. It is derived here, once, at ingest, from the
//! phone number with `phonenumber` (libphonenumber's metadata, so `+1 416…`
//! is Canada and `+1 650…` the United States), else from the two-letter
//! prefix of a BSUID (`US.13491208655302741918`). The result travels in the
//! event (`Identity.country`), so the engine copies it and a replay of the
//! input topics gives the same records whatever the library's version.
//!
//! Telling apart the countries that share a calling code (`+1`, `+7`,
//! `+44`…) runs libphonenumber's patterns, about 30 µs for a `+1` number, so
//! answers are memoised per phone: a pure function, so the memo changes no
//! answer.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use phonenumber::country::Id;

/// Phones remembered; a full memo is emptied and refilled.
const MEMO_ENTRIES_MAX: usize = 1 << 16;

/// Loads libphonenumber's metadata now (about 150 ms, once per process), so
/// that the first webhook does not wait for it. Services call it at start.
pub fn load_country_metadata() {
    let _ = country_of("16505550100", "");
}

/// The ISO 3166-1 alpha-2 code of a customer's country, or `""` when
/// neither the phone nor the BSUID names one.
pub fn country_of(phone: &str, bsuid: &str) -> String {
    of_phone(phone)
        .or_else(|| of_bsuid(bsuid))
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .unwrap_or_default()
}

/// The country of a phone number given as Meta does (digits of the E.164
/// number, without `+`; a leading `+` is accepted too). `None` for an
/// empty, invalid or non-geographic number.
fn of_phone(phone: &str) -> Option<[u8; 2]> {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if digits.is_empty() || digits.len() > 17 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    static MEMO: OnceLock<Mutex<HashMap<String, Option<[u8; 2]>>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Mutex::default);
    if let Some(known) = memo.lock().ok().and_then(|m| m.get(digits).copied()) {
        return known;
    }
    let country = parse(digits);
    if let Ok(mut m) = memo.lock() {
        if m.len() >= MEMO_ENTRIES_MAX {
            m.clear();
        }
        m.insert(digits.to_owned(), country);
    }
    country
}

fn parse(digits: &str) -> Option<[u8; 2]> {
    let number = phonenumber::parse(None, format!("+{digits}")).ok()?;
    of_id(number.country().id()?)
}

/// The country of a BSUID, from its prefix (`US.…`; a parent BSUID
/// `US.ENT.…` too). `None` when the prefix is not a known country.
fn of_bsuid(bsuid: &str) -> Option<[u8; 2]> {
    let (prefix, rest) = bsuid.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    of_id(Id::from_str(prefix).ok()?)
}

fn of_id(id: Id) -> Option<[u8; 2]> {
    match id.as_ref().as_bytes() {
        &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some([a, b]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_give_their_country() {
        for (phone, country) in [
            ("16505551234", "US"),
            ("+14165551234", "CA"),
            ("18765550123", "JM"),
            ("442079460123", "GB"),
            ("4915123456789", "DE"),
            ("5511987654321", "BR"),
            ("919876543210", "IN"),
            ("2348031234567", "NG"),
            ("27821234567", "ZA"),
        ] {
            assert_eq!(country_of(phone, ""), country, "{phone}");
            // Memoised: the same answer again.
            assert_eq!(country_of(phone, ""), country, "{phone}");
        }
    }

    #[test]
    fn the_phone_wins_over_the_bsuid() {
        assert_eq!(country_of("16505551234", "BR.1"), "US");
        assert_eq!(country_of("", "BR.1"), "BR");
        assert_eq!(country_of("999", "BR.1"), "BR", "an invalid phone");
    }

    #[test]
    fn bad_phones_give_nothing() {
        for p in ["", "+", "abc", "1650-555", "999", "0", &"1".repeat(40)] {
            assert_eq!(country_of(p, ""), "", "{p:?}");
        }
    }

    #[test]
    fn bsuids_give_their_prefix() {
        assert_eq!(country_of("", "US.13491208655302741918"), "US");
        assert_eq!(country_of("", "US.ENT.11815799212886844830"), "US");
        for b in ["", "user.abc", "ZZ.1", "US.", "us.1", "USA.1", "1349120865"] {
            assert_eq!(country_of("", b), "", "{b:?}");
        }
    }
}
