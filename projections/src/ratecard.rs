//! The rate card: what a priced message costs, by market × category, with
//! effective dates, in integer micro-units of one currency. Parsed from CSV
//! text; this crate reads no file. The format is documented in the crate
//! docs ([`crate`], "Rate card format").

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use crate::day::Day;

/// The header a rate card must start with (after comments).
pub const RATE_CARD_HEADER: [&str; 6] = [
    "market",
    "countries",
    "category",
    "effective_from",
    "currency",
    "rate_micros",
];

/// The `countries` value of the market that takes every country not listed
/// elsewhere, and messages whose country is unknown.
pub const OTHER_COUNTRIES: &str = "*";

/// Rows in one card; a larger card is refused.
pub const RATE_CARD_ROWS_MAX: usize = 100_000;

/// Why a rate card was refused. Lines count from 1, as an editor shows them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateCardError {
    #[error("rate card has no header line")]
    MissingHeader,
    #[error("rate card line {line}: header must be {expected:?}")]
    Header { line: usize, expected: String },
    #[error("rate card line {line}: expected {expected} fields, found {found}")]
    FieldCount {
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("rate card line {line}: unterminated quoted field")]
    Quote { line: usize },
    #[error("rate card line {line}: invalid {column} {value:?}: {problem}")]
    Field {
        line: usize,
        column: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("rate card line {line}: country {country} is already in market {market:?}")]
    CountryTwice {
        line: usize,
        country: String,
        market: String,
    },
    #[error(
        "rate card line {line}: market {market:?} was given other countries on an earlier line"
    )]
    MarketCountries { line: usize, market: String },
    #[error(
        "rate card line {line}: market {market:?} has no countries (give them on its first line)"
    )]
    MarketWithoutCountries { line: usize, market: String },
    #[error("rate card line {line}: a second rate for {market:?} × {category} from {from}")]
    DuplicateRate {
        line: usize,
        market: String,
        category: String,
        from: String,
    },
    #[error("rate card line {line}: currency {found} differs from {expected} on earlier lines")]
    MixedCurrency {
        line: usize,
        expected: String,
        found: String,
    },
    #[error("rate card has more than {RATE_CARD_ROWS_MAX} rows")]
    TooManyRows,
    #[error("rate card has no rates")]
    Empty,
}

/// The price of one priced unit (a message under PMP, a conversation under
/// CBP) as the card gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    pub market: String,
    pub category: String,
    /// The first day this rate applies.
    pub since: Day,
    pub micros: i64,
}

/// A parsed rate card. Immutable; lookups are pure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateCard {
    currency: String,
    markets: BTreeMap<String, String>,
    other_market: Option<String>,
    rates: BTreeMap<(String, String), BTreeMap<Day, i64>>,
}

/// Meta writes some categories with a hyphen, SDKs with an underscore, and
/// both in any case: one spelling for all.
pub fn normalize_category(category: &str) -> String {
    category.trim().to_ascii_lowercase().replace('-', "_")
}

impl RateCard {
    /// Parses a rate card from CSV text.
    pub fn parse(text: &str) -> Result<RateCard, RateCardError> {
        let mut card = RateCard::default();
        let mut countries_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut header_seen = false;
        let mut rows = 0usize;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields = split_csv_line(raw, line)?;
            if !header_seen {
                let names: Vec<&str> = fields.iter().map(|f| f.trim()).collect();
                if names != RATE_CARD_HEADER {
                    return Err(RateCardError::Header {
                        line,
                        expected: RATE_CARD_HEADER.join(","),
                    });
                }
                header_seen = true;
                continue;
            }
            rows += 1;
            if rows > RATE_CARD_ROWS_MAX {
                return Err(RateCardError::TooManyRows);
            }
            if fields.len() != RATE_CARD_HEADER.len() {
                return Err(RateCardError::FieldCount {
                    line,
                    expected: RATE_CARD_HEADER.len(),
                    found: fields.len(),
                });
            }
            card.add_row(line, &fields, &mut countries_of)?;
        }
        if !header_seen {
            return Err(RateCardError::MissingHeader);
        }
        if card.rates.is_empty() {
            return Err(RateCardError::Empty);
        }
        Ok(card)
    }

    fn add_row(
        &mut self,
        line: usize,
        fields: &[String],
        countries_of: &mut BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(), RateCardError> {
        let field_err =
            |column: &'static str, value: &str, problem: &'static str| RateCardError::Field {
                line,
                column,
                value: value.to_string(),
                problem,
            };
        let market = fields[0].trim().to_string();
        if market.is_empty() {
            return Err(field_err("market", &market, "must not be empty"));
        }
        let countries = self.parse_countries(line, &fields[1])?;
        match (countries_of.entry(market.clone()), countries) {
            (Entry::Vacant(_), None) => {
                return Err(RateCardError::MarketWithoutCountries { line, market })
            }
            (Entry::Vacant(slot), Some(set)) => {
                for country in &set {
                    if country == OTHER_COUNTRIES {
                        if let Some(other) = &self.other_market {
                            return Err(RateCardError::CountryTwice {
                                line,
                                country: country.clone(),
                                market: other.clone(),
                            });
                        }
                        self.other_market = Some(market.clone());
                    } else if let Some(other) = self.markets.get(country) {
                        return Err(RateCardError::CountryTwice {
                            line,
                            country: country.clone(),
                            market: other.clone(),
                        });
                    } else {
                        self.markets.insert(country.clone(), market.clone());
                    }
                }
                slot.insert(set);
            }
            (Entry::Occupied(known), Some(set)) if *known.get() != set => {
                return Err(RateCardError::MarketCountries { line, market })
            }
            (Entry::Occupied(_), _) => {}
        }
        let category = normalize_category(&fields[2]);
        if category.is_empty()
            || !category
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(field_err("category", &fields[2], "expected letters and _"));
        }
        let from: Day = fields[3]
            .trim()
            .parse()
            .map_err(|_| field_err("effective_from", &fields[3], "expected YYYY-MM-DD"))?;
        let currency = fields[4].trim();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(field_err("currency", currency, "expected an ISO 4217 code"));
        }
        if self.currency.is_empty() {
            self.currency = currency.to_string();
        } else if self.currency != currency {
            return Err(RateCardError::MixedCurrency {
                line,
                expected: self.currency.clone(),
                found: currency.to_string(),
            });
        }
        let micros_text = fields[5].trim();
        let micros: i64 = micros_text
            .parse()
            .ok()
            .filter(|m: &i64| *m >= 0 && micros_text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                field_err(
                    "rate_micros",
                    micros_text,
                    "expected a non-negative integer",
                )
            })?;
        let dated = self
            .rates
            .entry((market.clone(), category.clone()))
            .or_default();
        if dated.insert(from, micros).is_some() {
            return Err(RateCardError::DuplicateRate {
                line,
                market,
                category,
                from: from.to_string(),
            });
        }
        Ok(())
    }

    fn parse_countries(
        &self,
        line: usize,
        field: &str,
    ) -> Result<Option<BTreeSet<String>>, RateCardError> {
        let mut set = BTreeSet::new();
        for code in field.split_whitespace() {
            let valid = code == OTHER_COUNTRIES
                || (code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()));
            if !valid {
                return Err(RateCardError::Field {
                    line,
                    column: "countries",
                    value: code.to_string(),
                    problem: "expected ISO 3166-1 alpha-2 codes or *",
                });
            }
            set.insert(code.to_string());
        }
        Ok((!set.is_empty()).then_some(set))
    }

    /// The card's currency (ISO 4217).
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The market of a country (ISO alpha-2; "" when unknown): its own
    /// market, else the `*` market, else none.
    pub fn market_of(&self, country: &str) -> Option<&str> {
        self.markets
            .get(country)
            .or(self.other_market.as_ref())
            .map(String::as_str)
    }

    /// The rate for a message to `country` in `category` on `day`: the
    /// market's row with the latest `effective_from` not after `day`.
    pub fn rate(&self, country: &str, category: &str, day: Day) -> Option<Rate> {
        let market = self.market_of(country)?;
        let category = normalize_category(category);
        let dated = self.rates.get(&(market.to_string(), category.clone()))?;
        let (since, micros) = dated.range(..=day).next_back()?;
        Some(Rate {
            market: market.to_string(),
            category,
            since: *since,
            micros: *micros,
        })
    }
}

/// Splits one CSV line (RFC 4180 quoting, no line breaks inside fields).
fn split_csv_line(raw: &str, line: usize) -> Result<Vec<String>, RateCardError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = raw.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            }
            '"' if at_start && field.trim().is_empty() => {
                field.clear();
                quoted = true;
                at_start = false;
            }
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            c => {
                field.push(c);
                if !c.is_whitespace() {
                    at_start = false;
                }
            }
        }
    }
    if quoted {
        return Err(RateCardError::Quote { line });
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "\
# comment
market,countries,category,effective_from,currency,rate_micros
North America,US CA,marketing,2025-07-01,USD,25000
North America,,marketing,2026-01-01,USD,26000
\"Rest, of World\",*,marketing,2025-07-01,USD,30000
";

    fn day(s: &str) -> Day {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn looks_up_the_latest_row_in_force() {
        let card = RateCard::parse(CARD).expect("valid card");
        assert_eq!(card.currency(), "USD");
        let rate = |c: &str, d: &str| card.rate(c, "MARKETING", day(d)).map(|r| r.micros);
        assert_eq!(rate("US", "2025-06-30"), None);
        assert_eq!(rate("US", "2025-07-01"), Some(25_000));
        assert_eq!(rate("CA", "2025-12-31"), Some(25_000));
        assert_eq!(rate("CA", "2026-01-01"), Some(26_000));
        assert_eq!(rate("BR", "2026-01-01"), Some(30_000));
        assert_eq!(rate("", "2026-01-01"), Some(30_000));
        assert_eq!(card.market_of("FR"), Some("Rest, of World"));
    }

    #[test]
    fn names_the_line_of_a_bad_row() {
        let bad = |row: &str| {
            RateCard::parse(&format!("{}\n{row}\n", RATE_CARD_HEADER.join(","))).unwrap_err()
        };
        assert!(matches!(
            bad("NA,US,marketing,2025-07-01,USD,-5"),
            RateCardError::Field {
                line: 2,
                column: "rate_micros",
                ..
            }
        ));
        assert!(matches!(
            bad("NA,US,marketing,2025-13-01,USD,5"),
            RateCardError::Field {
                line: 2,
                column: "effective_from",
                ..
            }
        ));
        assert!(matches!(
            bad("NA,US,marketing,2025-07-01,USD"),
            RateCardError::FieldCount {
                line: 2,
                found: 5,
                ..
            }
        ));
        assert!(matches!(
            bad("NA,usa,marketing,2025-07-01,USD,5"),
            RateCardError::Field {
                line: 2,
                column: "countries",
                ..
            }
        ));
        assert!(matches!(
            bad("\"NA,US,marketing,2025-07-01,USD,5"),
            RateCardError::Quote { line: 2 }
        ));
        assert!(matches!(
            bad("NA,,marketing,2025-07-01,USD,5"),
            RateCardError::MarketWithoutCountries { line: 2, .. }
        ));
        let twice = format!(
            "{}\nA,US,marketing,2025-07-01,USD,1\nB,US,marketing,2025-07-01,USD,1\n",
            RATE_CARD_HEADER.join(",")
        );
        assert!(matches!(
            RateCard::parse(&twice),
            Err(RateCardError::CountryTwice { line: 3, .. })
        ));
        let mixed = format!(
            "{}\nA,US,marketing,2025-07-01,USD,1\nA,,utility,2025-07-01,EUR,1\n",
            RATE_CARD_HEADER.join(",")
        );
        assert!(matches!(
            RateCard::parse(&mixed),
            Err(RateCardError::MixedCurrency { line: 3, .. })
        ));
        assert_eq!(
            RateCard::parse("# nothing\n"),
            Err(RateCardError::MissingHeader)
        );
        assert!(matches!(
            RateCard::parse("a,b\n"),
            Err(RateCardError::Header { line: 1, .. })
        ));
    }

    #[test]
    fn the_shipped_example_parses() {
        let card = RateCard::parse(include_str!("../ratecards/example.csv")).expect("example");
        assert_eq!(card.currency(), "USD");
        assert!(card.rate("DE", "marketing", day("2025-07-01")).is_some());
        assert!(card.rate("US", "service", day("2026-10-01")).is_some());
    }
}
