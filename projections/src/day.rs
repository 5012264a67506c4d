//! Civil days (UTC) from unix seconds, without a clock or a date library.

use std::fmt;
use std::str::FromStr;

/// Seconds in a day.
pub const DAY_S: i64 = 86_400;

/// A UTC calendar day, as days since 1970-01-01. Ordered, so it can key a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Day(pub i64);

/// A day that does not parse as `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid day {0:?}: expected YYYY-MM-DD")]
pub struct DayError(pub String);

impl Day {
    /// The day of a unix time in seconds.
    pub fn of_unix(seconds: i64) -> Day {
        Day(seconds.div_euclid(DAY_S))
    }

    /// The day of year, month (1..=12), day of month (1..=31), if valid.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Day(days_from_civil(year, month, day)))
    }

    /// Year, month (1..=12), day of month.
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.0)
    }

    /// The unix time of the day's first second.
    pub fn start_unix(self) -> i64 {
        self.0 * DAY_S
    }

    /// Year and month, as a key for monthly counters.
    pub fn month(self) -> (i64, u32) {
        let (y, m, _) = self.ymd();
        (y, m)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Day {
    type Err = DayError;

    fn from_str(s: &str) -> Result<Day, DayError> {
        let err = || DayError(s.to_string());
        let mut parts = s.trim().splitn(3, '-');
        let mut next = || parts.next().ok_or_else(err);
        let (y, m, d) = (next()?, next()?, next()?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(err());
        }
        let year = y.parse::<i64>().map_err(|_| err())?;
        let month = m.parse::<u32>().map_err(|_| err())?;
        let day = d.parse::<u32>().map_err(|_| err())?;
        Day::from_ymd(year, month, day).ok_or_else(err)
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms (public domain), proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d in 1..=31 and m in 1..=12 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_known_days() {
        // 2025-07-01T00:00:00Z = 1751328000.
        let day = Day::of_unix(1_751_328_000);
        assert_eq!(day.to_string(), "2025-07-01");
        assert_eq!(day.start_unix(), 1_751_328_000);
        assert_eq!("2025-07-01".parse::<Day>(), Ok(day));
        assert_eq!(Day::of_unix(-1).to_string(), "1969-12-31");
        assert_eq!(
            "2024-02-29".parse::<Day>().map(|d| d.ymd()),
            Ok((2024, 2, 29))
        );
        assert!("2025-02-29".parse::<Day>().is_err());
        assert!("2025-7-1".parse::<Day>().is_err());
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let start = Day::from_ymd(1900, 1, 1).map(|d| d.0).unwrap_or_default();
        for n in start..start + 146_097 {
            let (y, m, d) = Day(n).ymd();
            assert_eq!(Day::from_ymd(y, m, d), Some(Day(n)));
        }
    }
}
