//! Coexistence eligibility: whether onboarding a business number to
//! Coexistence is supported in its market on a given day. The country comes
//! from the number's calling code (libphonenumber's metadata, through the
//! `phonenumber` crate); the answer comes from a dated table of changes, so
//! a question about a past day gets the answer of that day.

use std::str::FromStr;

use crate::day::Day;

/// One change of the table: from `since`, `countries` are (un)supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketRule {
    pub since: &'static str,
    pub countries: &'static [&'static str],
    pub supported: bool,
    pub note: &'static str,
}

const EU_EEA: &[&str] = &[
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", // EU
    "IS", "LI", "NO", // EEA
];

/// The dated table, oldest first. Later rows override earlier ones for the
/// countries they name. Countries no row names are supported.
pub const MARKET_RULES: &[MarketRule] = &[
    MarketRule {
        since: "2025-09-13",
        countries: EU_EEA,
        supported: false,
        note: "EU/EEA not supported (list of 2025-09-13)",
    },
    MarketRule {
        since: "2025-09-13",
        countries: &["GB", "AU", "JP", "NG", "PH", "RU", "KR", "ZA", "TR"],
        supported: false,
        note: "not supported (list of 2025-09-13)",
    },
    MarketRule {
        since: "2025-09-13",
        countries: &["CU", "IR", "KP", "SY"],
        supported: false,
        note: "excluded from the WhatsApp Business Platform",
    },
    MarketRule {
        since: "2026-02-01",
        countries: EU_EEA,
        supported: true,
        note: "EU/EEA supported from 2026-02-01 (only NG and ZA still unsupported)",
    },
    MarketRule {
        since: "2026-02-01",
        countries: &["GB", "AU", "JP", "PH", "RU", "KR", "TR"],
        supported: true,
        note: "supported from 2026-02-01 (only NG and ZA still unsupported)",
    },
];

/// The answer for one number on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligibility {
    /// ISO 3166-1 alpha-2 of the number.
    pub country: String,
    pub supported: bool,
    /// The table row that decided; `None` when no row names the country
    /// (or the day is before the first row), which means supported.
    pub rule_since: Option<Day>,
    pub note: String,
}

/// Why a number has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EligibilityError {
    #[error("phone number {0:?} is not an international number with a known calling code")]
    Unparsable(String),
    #[error("phone number {0:?} has a calling code shared by no single country")]
    NoCountry(String),
}

/// The country (ISO alpha-2) of an international number: `+` and
/// separators are optional (`15551234567`, `+44 20 7946 0958`).
pub fn country_of_number(number: &str) -> Result<String, EligibilityError> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let plausible = !digits.is_empty()
        && digits.len() <= 17
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
    if !plausible {
        return Err(EligibilityError::Unparsable(number.to_string()));
    }
    let parsed = phonenumber::parse(None, format!("+{digits}"))
        .map_err(|_| EligibilityError::Unparsable(number.to_string()))?;
    let id = parsed
        .country()
        .id()
        .ok_or_else(|| EligibilityError::NoCountry(number.to_string()))?;
    Ok(id.as_ref().to_string())
}

/// Whether Coexistence onboarding is supported for `number` on `on`.
pub fn eligibility(number: &str, on: Day) -> Result<Eligibility, EligibilityError> {
    let country = country_of_number(number)?;
    Ok(eligibility_of_country(&country, on))
}

/// Whether Coexistence onboarding is supported in `country` on `on`.
pub fn eligibility_of_country(country: &str, on: Day) -> Eligibility {
    let mut answer = Eligibility {
        country: country.to_string(),
        supported: true,
        rule_since: None,
        note: "no restriction listed".to_string(),
    };
    for rule in MARKET_RULES {
        let Ok(since) = Day::from_str(rule.since) else {
            continue;
        };
        if since <= on && rule.countries.contains(&country) {
            answer.supported = rule.supported;
            answer.rule_since = Some(since);
            answer.note = rule.note.to_string();
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(s: &str) -> Day {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn the_table_is_dated() {
        // Germany: unsupported on the 2025-09-13 list, supported from 2026-02-01.
        let de = |d| eligibility("+49 30 901820", on(d)).map(|e| e.supported);
        assert_eq!(de("2025-10-01"), Ok(false));
        assert_eq!(de("2026-02-01"), Ok(true));
        // Nigeria stays unsupported.
        assert_eq!(
            eligibility("2348031234567", on("2026-06-01")).map(|e| e.supported),
            Ok(false)
        );
        // +1 416 is Canada, +1 650 the United States: both always supported.
        let ca = eligibility("14165550100", on("2025-10-01"));
        assert_eq!(ca.as_ref().map(|e| e.country.as_str()), Ok("CA"));
        assert_eq!(ca.map(|e| e.supported), Ok(true));
        assert_eq!(
            eligibility("+1 650 555 0100", on("2025-10-01")).map(|e| e.country),
            Ok("US".to_string())
        );
        // The rows the table seeds are all valid days.
        assert!(MARKET_RULES.iter().all(|r| r.since.parse::<Day>().is_ok()));
    }

    #[test]
    fn bad_numbers_are_errors_not_panics() {
        assert!(matches!(
            eligibility("not a number", on("2026-01-01")),
            Err(EligibilityError::Unparsable(_))
        ));
        assert!(eligibility("", on("2026-01-01")).is_err());
        assert!(eligibility("+999999999999999999999", on("2026-01-01")).is_err());
    }
}
