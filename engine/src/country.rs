//! The customer's country, for billing markets: Meta prices an API message
//! by the recipient's country calling code. It is derived from the phone
//! number with `phonenumber` (libphonenumber's metadata, so `+1 416…` is
//! Canada and `+1 650…` the United States), else from the two-letter prefix
//! of a BSUID (`US.13491208655302741918`). A pure function of its input.

use std::str::FromStr;

use phonenumber::country::Id;

/// An ISO 3166-1 alpha-2 code, as two ASCII capitals.
pub type Country = [u8; 2];

/// The country of a phone number given as Meta does (digits of the E.164
/// number, without `+`; a leading `+` is accepted too). `None` for an
/// empty, invalid or non-geographic number.
pub fn of_phone(phone: &str) -> Option<Country> {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    if digits.is_empty() || digits.len() > 17 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut e164 = String::with_capacity(digits.len() + 1);
    e164.push('+');
    e164.push_str(digits);
    let number = phonenumber::parse(None, &e164).ok()?;
    of_id(number.country().id()?)
}

/// The country of a BSUID, from its prefix (`US.…`; a parent BSUID
/// `US.ENT.…` too). `None` when the prefix is not a known country.
pub fn of_bsuid(bsuid: &str) -> Option<Country> {
    let (prefix, rest) = bsuid.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    of_id(Id::from_str(prefix).ok()?)
}

fn of_id(id: Id) -> Option<Country> {
    match id.as_ref().as_bytes() {
        &[a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Some([a, b]),
        _ => None,
    }
}

/// The code as text.
pub fn as_str(country: &Country) -> &str {
    // Two ASCII capitals, checked in `of_id`.
    std::str::from_utf8(country).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(p: &str) -> Option<&'static str> {
        of_phone(p).map(|c| match &c {
            b"US" => "US",
            b"CA" => "CA",
            b"GB" => "GB",
            b"DE" => "DE",
            b"BR" => "BR",
            b"IN" => "IN",
            b"NG" => "NG",
            b"ZA" => "ZA",
            _ => "other",
        })
    }

    #[test]
    fn phones_give_their_country() {
        assert_eq!(phone("16505551234"), Some("US"));
        assert_eq!(phone("+14165551234"), Some("CA"), "+1 shares a code");
        assert_eq!(phone("442079460123"), Some("GB"));
        assert_eq!(phone("4915123456789"), Some("DE"));
        assert_eq!(phone("5511987654321"), Some("BR"));
        assert_eq!(phone("919876543210"), Some("IN"));
        assert_eq!(phone("2348031234567"), Some("NG"));
        assert_eq!(phone("27821234567"), Some("ZA"));
    }

    #[test]
    fn bad_phones_give_none() {
        for p in ["", "+", "abc", "1650-555", "999", "0", &"1".repeat(40)] {
            assert_eq!(of_phone(p), None, "{p:?}");
        }
    }

    #[test]
    fn bsuids_give_their_prefix() {
        assert_eq!(of_bsuid("US.13491208655302741918"), Some(*b"US"));
        assert_eq!(of_bsuid("US.ENT.11815799212886844830"), Some(*b"US"));
        assert_eq!(of_bsuid("BR.1"), Some(*b"BR"));
        for b in [
            "",
            "user.abc",
            "ZZ.1",
            "US.",
            "us.1",
            "USA.1",
            "13491208655302741918",
        ] {
            assert_eq!(of_bsuid(b), None, "{b:?}");
        }
    }
}
