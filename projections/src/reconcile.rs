//! Reconciliation of the ledger against Meta's own estimate: the Graph API's
//! `pricing_analytics` response (daily data points by country, pricing type,
//! pricing category and phone). Meta's figures are approximate until the
//! invoice, so a difference is a line to look at, not an error.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::day::Day;
use crate::ratecard::normalize_category;
use crate::{CountryTotal, Views};

/// Data points in one response; a larger response is refused.
pub const META_DATA_POINTS_MAX: usize = 1_000_000;

/// Why a `pricing_analytics` response was refused. `path` names the JSON
/// value, as `pricing_analytics.data[0].data_points[3].cost`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error("pricing_analytics response is not JSON: {0}")]
    Json(String),
    #[error("pricing_analytics response: {path}: {problem}")]
    Shape { path: String, problem: &'static str },
    #[error("pricing_analytics response has more than {META_DATA_POINTS_MAX} data points")]
    TooLarge,
}

/// One Meta data point, summed over pricing types and phones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaTotal {
    pub volume: u64,
    pub micros: i64,
}

/// Meta's figures by (day, country, category).
pub type MetaTotals = BTreeMap<(Day, String, String), MetaTotal>;

/// Parses a `pricing_analytics` response: the whole Graph API answer
/// (`{"pricing_analytics": {"data": [{"data_points": [...]}]}}`) or its
/// `pricing_analytics` object. `cost` (a decimal in the account currency)
/// becomes micro-units, rounded half away from zero, without floats.
pub fn parse_pricing_analytics(json: &str) -> Result<MetaTotals, ReconcileError> {
    let root: Value =
        serde_json::from_str(json).map_err(|e| ReconcileError::Json(e.to_string()))?;
    let (analytics, base) = match root.get("pricing_analytics") {
        Some(a) => (a, "pricing_analytics".to_string()),
        None => (&root, String::new()),
    };
    let at = |suffix: &str| {
        if base.is_empty() {
            suffix.to_string()
        } else {
            format!("{base}.{suffix}")
        }
    };
    let shape = |path: String, problem| ReconcileError::Shape { path, problem };
    let data = analytics
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| shape(at("data"), "expected an array"))?;
    let mut totals = MetaTotals::new();
    let mut count = 0usize;
    for (i, group) in data.iter().enumerate() {
        let points_path = at(&format!("data[{i}].data_points"));
        let points = group
            .get("data_points")
            .and_then(Value::as_array)
            .ok_or_else(|| shape(points_path.clone(), "expected an array"))?;
        for (j, point) in points.iter().enumerate() {
            count += 1;
            if count > META_DATA_POINTS_MAX {
                return Err(ReconcileError::TooLarge);
            }
            let path = format!("{points_path}[{j}]");
            let field = |name: &str| {
                point
                    .get(name)
                    .ok_or_else(|| shape(format!("{path}.{name}"), "missing"))
            };
            let start = field("start")?
                .as_i64()
                .ok_or_else(|| shape(format!("{path}.start"), "expected unix seconds"))?;
            let country = point
                .get("country")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_uppercase();
            let category = point
                .get("pricing_category")
                .and_then(Value::as_str)
                .map(normalize_category)
                .unwrap_or_default();
            let volume = match point.get("volume") {
                None => 0,
                Some(v) => v.as_u64().ok_or_else(|| {
                    shape(format!("{path}.volume"), "expected a non-negative integer")
                })?,
            };
            let micros = match point.get("cost") {
                None => 0,
                Some(v) => decimal_micros(v)
                    .ok_or_else(|| shape(format!("{path}.cost"), "expected a decimal number"))?,
            };
            let total = totals
                .entry((Day::of_unix(start), country, category))
                .or_default();
            total.volume += volume;
            total.micros += micros;
        }
    }
    Ok(totals)
}

/// A JSON number (or numeric string) as micro-units, from its decimal text.
fn decimal_micros(value: &Value) -> Option<i64> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    // Exponent forms (1e-5) come from serde_json for small floats.
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    // value = digits × 10^(exponent − len(frac)); micros = value × 10^6.
    let shift = exponent + 6 - i32::try_from(frac.len()).ok()?;
    let mut micros: i128 = 0;
    for b in digits.bytes() {
        micros = micros.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        if micros > i128::from(i64::MAX) * 10 {
            return None;
        }
    }
    if shift >= 0 {
        micros = micros.checked_mul(10i128.checked_pow(u32::try_from(shift).ok()?)?)?;
    } else {
        let divisor = 10i128.checked_pow(u32::try_from(-shift).ok()?)?;
        micros = (micros + divisor / 2) / divisor;
    }
    let micros = i64::try_from(micros).ok()?;
    Some(if negative { -micros } else { micros })
}

/// One (day, country, category) where the ledger and Meta disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    pub day: Day,
    pub country: String,
    pub category: String,
    pub ledger_volume: u64,
    pub meta_volume: u64,
    pub ledger_micros: i64,
    pub meta_micros: i64,
}

impl Discrepancy {
    /// Ledger minus Meta.
    pub fn cost_difference_micros(&self) -> i64 {
        self.ledger_micros - self.meta_micros
    }
}

/// Compares the ledger's delivered API messages with Meta's figures, over
/// the days Meta's response covers (Meta keeps a year; the ledger keeps
/// all). A line is reported when volumes differ or costs differ by more
/// than `tolerance_micros`.
pub fn reconcile(views: &Views, meta: &MetaTotals, tolerance_micros: i64) -> Vec<Discrepancy> {
    reconcile_totals(views.country_totals(), meta, tolerance_micros)
}

/// Per-day, per-country, per-category totals of the ledger: one shard's
/// [`Views::country_totals`], or several shards' added up with [`add_totals`].
pub type LedgerTotals = BTreeMap<(Day, String, String), CountryTotal>;

/// Adds one shard's totals into `sum` (a business's numbers may sit on
/// several shards; Meta reports them together).
pub fn add_totals(sum: &mut LedgerTotals, shard: &LedgerTotals) {
    for (key, t) in shard {
        let s = sum.entry(key.clone()).or_default();
        s.volume += t.volume;
        s.billable += t.billable;
        s.micros += t.micros;
    }
}

/// [`reconcile`] over ledger totals.
pub fn reconcile_totals(
    ledger: &LedgerTotals,
    meta: &MetaTotals,
    tolerance_micros: i64,
) -> Vec<Discrepancy> {
    let (Some(first), Some(last)) = (
        meta.keys().map(|k| k.0).min(),
        meta.keys().map(|k| k.0).max(),
    ) else {
        return Vec::new();
    };
    let keys: BTreeSet<&(Day, String, String)> = ledger
        .keys()
        .filter(|k| k.0 >= first && k.0 <= last)
        .chain(meta.keys())
        .collect();
    let mut out = Vec::new();
    for key in keys {
        let l = ledger.get(key).copied().unwrap_or_default();
        let m = meta.get(key).copied().unwrap_or_default();
        if l.volume != m.volume || (l.micros - m.micros).abs() > tolerance_micros {
            out.push(Discrepancy {
                day: key.0,
                country: key.1.clone(),
                category: key.2.clone(),
                ledger_volume: l.volume,
                meta_volume: m.volume,
                ledger_micros: l.micros,
                meta_micros: m.micros,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_become_micros_without_floats() {
        let m = |v: Value| decimal_micros(&v);
        assert_eq!(m(serde_json::json!(0.025)), Some(25_000));
        assert_eq!(m(serde_json::json!(1.5)), Some(1_500_000));
        assert_eq!(m(serde_json::json!(3)), Some(3_000_000));
        assert_eq!(m(serde_json::json!("0.0000005")), Some(1));
        assert_eq!(m(serde_json::json!(1e-5)), Some(10));
        assert_eq!(m(serde_json::json!("abc")), None);
        assert_eq!(m(serde_json::json!(null)), None);
    }

    #[test]
    fn a_bad_data_point_names_its_path() {
        let json =
            r#"{"pricing_analytics":{"data":[{"data_points":[{"start":1751328000,"cost":"x"}]}]}}"#;
        assert_eq!(
            parse_pricing_analytics(json),
            Err(ReconcileError::Shape {
                path: "pricing_analytics.data[0].data_points[0].cost".to_string(),
                problem: "expected a decimal number",
            })
        );
        assert!(matches!(
            parse_pricing_analytics("{"),
            Err(ReconcileError::Json(_))
        ));
        assert!(matches!(
            parse_pricing_analytics("{\"data\": 3}"),
            Err(ReconcileError::Shape { .. })
        ));
    }
}
