//! Partition boundaries: the step of a partitioned table and the grid its partitions sit on.
//!
//! Boundaries are computed on "local" wall-clock timestamps (no time zone): for a `date` or
//! `timestamp` column that is the column's own value, for a `timestamptz` column the value
//! seen in the parent's configured time zone (UTC for sub-day steps, so that an hour is
//! always an hour and no local hour is repeated or skipped when clocks change). PostgreSQL
//! converts the local boundary back to an instant when it creates the partition, so a daily
//! partition across a DST change covers 23 or 25 hours, as a calendar day does.
//!
//! Every step has a fixed grid, independent of when maintenance runs: hours are counted
//! from the Unix epoch, days likewise (weeks start on Monday), months from year 0. So
//! partitions made ahead, partitions made to rescue rows from the default partition and
//! partitions made on another day always line up.

use chrono::{Datelike, Duration, Months, NaiveDate, NaiveDateTime, Timelike};

/// How far one partition reaches. Months and days follow the calendar; hours are absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Hours(u32),
    Days(u32),
    Months(u32),
}

/// Why an interval cannot be a partition step (the caller turns it into an ERROR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRule {
    TooSmall,
    TooLarge,
    Mixed,
}

pub const STEP_RULE: &str =
    "a step is a whole number of hours (1 to 24), days (1 to 366) or months (1 to 12), not a mix";

impl Step {
    /// Reads a PostgreSQL interval (months, days, microseconds).
    pub fn from_interval(months: i32, days: i32, micros: i64) -> Result<Step, StepRule> {
        const HOUR: i64 = 3_600_000_000;
        if months < 0 || days < 0 || micros < 0 {
            return Err(StepRule::TooSmall);
        }
        match (months, days, micros) {
            (0, 0, 0) => Err(StepRule::TooSmall),
            (m, 0, 0) if m <= 12 => Ok(Step::Months(m as u32)),
            (_, 0, 0) => Err(StepRule::TooLarge),
            (0, d, 0) if d <= 366 => Ok(Step::Days(d as u32)),
            (0, _, 0) => Err(StepRule::TooLarge),
            (0, 0, us) if us < HOUR => Err(StepRule::TooSmall),
            (0, 0, us) if us % HOUR != 0 => Err(StepRule::Mixed),
            (0, 0, us) if us / HOUR <= 24 => Ok(Step::Hours((us / HOUR) as u32)),
            (0, 0, _) => Err(StepRule::TooLarge),
            _ => Err(StepRule::Mixed),
        }
    }

    pub fn is_sub_day(self) -> bool {
        matches!(self, Step::Hours(_))
    }

    /// The grid boundary at or before `t`.
    pub fn align(self, t: NaiveDateTime) -> NaiveDateTime {
        match self {
            Step::Hours(h) => {
                let hours = t.and_utc().timestamp().div_euclid(3600);
                let aligned = hours - hours.rem_euclid(i64::from(h));
                epoch()
                    .checked_add_signed(Duration::hours(aligned))
                    .unwrap_or(t)
            }
            Step::Days(d) => {
                // Weeks (and multiples) start on Monday; 1970-01-05 was a Monday.
                let origin = if d % 7 == 0 {
                    NaiveDate::from_ymd_opt(1970, 1, 5)
                } else {
                    NaiveDate::from_ymd_opt(1970, 1, 1)
                }
                .unwrap_or_default();
                let days = (t.date() - origin).num_days();
                let aligned = days - days.rem_euclid(i64::from(d));
                origin
                    .checked_add_signed(Duration::days(aligned))
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .unwrap_or(t)
            }
            Step::Months(m) => {
                let months = i64::from(t.year()) * 12 + i64::from(t.month0());
                let aligned = months - months.rem_euclid(i64::from(m));
                let (year, month0) = (aligned.div_euclid(12), aligned.rem_euclid(12));
                NaiveDate::from_ymd_opt(year as i32, month0 as u32 + 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .unwrap_or(t)
            }
        }
    }

    /// The first grid boundary after `t` (`t` itself need not be on the grid).
    pub fn next_boundary(self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = self.align(t);
        match self {
            Step::Hours(h) => start.checked_add_signed(Duration::hours(i64::from(h))),
            Step::Days(d) => start.checked_add_signed(Duration::days(i64::from(d))),
            Step::Months(m) => start.checked_add_months(Months::new(m)),
        }
    }

    /// `n` steps after the grid boundary at or before `t`.
    pub fn advance(self, t: NaiveDateTime, n: u32) -> Option<NaiveDateTime> {
        let mut at = self.align(t);
        for _ in 0..n {
            at = self.next_boundary(at)?;
        }
        Some(at)
    }

    /// The partition name suffix for a partition starting at `lower`: `p20260101`, or
    /// `p20260101_1300` when the step is below a day or the bound is not at midnight.
    pub fn suffix(self, lower: NaiveDateTime) -> String {
        let with_time = self.is_sub_day() || lower.time().num_seconds_from_midnight() != 0;
        let day = format!("p{:04}{:02}{:02}", lower.year(), lower.month(), lower.day());
        if with_time {
            format!("{day}_{:02}{:02}", lower.hour(), lower.minute())
        } else {
            day
        }
    }
}

fn epoch() -> NaiveDateTime {
    chrono::DateTime::UNIX_EPOCH.naive_utc()
}

/// Parses the `YYYY-MM-DD HH24:MI:SS.US` text the catalog queries produce.
pub fn parse_local(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()
}

/// The text PostgreSQL reads back as the same `timestamp`.
pub fn format_local(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.f").to_string()
}

/// A partition's range on the local timeline; `None` is unbounded (MINVALUE / MAXVALUE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub lower: Option<NaiveDateTime>,
    pub upper: Option<NaiveDateTime>,
}

impl Range {
    fn contains(&self, t: NaiveDateTime) -> bool {
        self.lower.is_none_or(|l| l <= t) && self.upper.is_none_or(|u| t < u)
    }
}

/// The ranges to create so that `[from, until)` is covered, given the partitions that
/// exist: grid cells, cut short where an existing partition begins. Cells are never
/// created for time an existing partition already covers.
pub fn missing_ranges(
    step: Step,
    existing: &[Range],
    from: NaiveDateTime,
    until: NaiveDateTime,
    limit: usize,
) -> Result<Vec<(NaiveDateTime, NaiveDateTime)>, usize> {
    let mut out = Vec::new();
    let mut t = from;
    while t < until {
        if let Some(r) = existing.iter().find(|r| r.contains(t)) {
            match r.upper {
                Some(u) => {
                    t = u;
                    continue;
                }
                None => break,
            }
        }
        let Some(mut upper) = step.next_boundary(t) else {
            break;
        };
        // Stop short of the next existing partition.
        for r in existing {
            if let Some(l) = r.lower {
                if l > t && l < upper {
                    upper = l;
                }
            }
        }
        out.push((t, upper));
        if out.len() > limit {
            return Err(out.len());
        }
        t = upper;
    }
    Ok(out)
}

/// The grid cell around `t`, cut to the gap between existing partitions (for a row found
/// in the default partition). `None` when `t` is covered already.
pub fn cell_for(
    step: Step,
    existing: &[Range],
    t: NaiveDateTime,
) -> Option<(NaiveDateTime, NaiveDateTime)> {
    if existing.iter().any(|r| r.contains(t)) {
        return None;
    }
    let mut lower = step.align(t);
    let mut upper = step.next_boundary(t)?;
    for r in existing {
        if let Some(u) = r.upper {
            if u > lower && u <= t {
                lower = u;
            }
        }
        if let Some(l) = r.lower {
            if l > t && l < upper {
                upper = l;
            }
        }
    }
    Some((lower, upper))
}

#[cfg(test)]
mod unit {
    use super::*;

    fn ts(s: &str) -> NaiveDateTime {
        parse_local(s).unwrap_or_else(|| panic!("bad test timestamp {s}"))
    }

    #[test]
    fn steps_from_intervals() {
        const H: i64 = 3_600_000_000;
        assert_eq!(Step::from_interval(1, 0, 0), Ok(Step::Months(1)));
        assert_eq!(Step::from_interval(12, 0, 0), Ok(Step::Months(12)));
        assert_eq!(Step::from_interval(13, 0, 0), Err(StepRule::TooLarge));
        assert_eq!(Step::from_interval(0, 7, 0), Ok(Step::Days(7)));
        assert_eq!(Step::from_interval(0, 0, 6 * H), Ok(Step::Hours(6)));
        assert_eq!(Step::from_interval(0, 0, H / 2), Err(StepRule::TooSmall));
        assert_eq!(Step::from_interval(0, 0, H + 1), Err(StepRule::Mixed));
        assert_eq!(Step::from_interval(1, 1, 0), Err(StepRule::Mixed));
        assert_eq!(Step::from_interval(0, -1, 0), Err(StepRule::TooSmall));
        assert_eq!(Step::from_interval(0, 0, 0), Err(StepRule::TooSmall));
    }

    #[test]
    fn grid_alignment() {
        let t = ts("2026-05-20 13:45:10.5");
        assert_eq!(Step::Hours(1).align(t), ts("2026-05-20 13:00:00"));
        assert_eq!(Step::Hours(6).align(t), ts("2026-05-20 12:00:00"));
        assert_eq!(Step::Days(1).align(t), ts("2026-05-20 00:00:00"));
        assert_eq!(Step::Days(7).align(t), ts("2026-05-18 00:00:00")); // a Monday
        assert_eq!(Step::Months(1).align(t), ts("2026-05-01 00:00:00"));
        assert_eq!(Step::Months(3).align(t), ts("2026-04-01 00:00:00"));
        assert_eq!(Step::Months(12).align(t), ts("2026-01-01 00:00:00"));
    }

    #[test]
    fn calendar_steps() {
        // Month ends and leap years: boundaries are first days of months.
        let jan = ts("2028-01-31 10:00:00");
        assert_eq!(
            Step::Months(1).next_boundary(jan),
            Some(ts("2028-02-01 00:00:00"))
        );
        assert_eq!(
            Step::Months(1).advance(jan, 2),
            Some(ts("2028-03-01 00:00:00"))
        );
        assert_eq!(
            Step::Days(1).next_boundary(ts("2028-02-28 00:00:00")),
            Some(ts("2028-02-29 00:00:00"))
        );
        assert_eq!(
            Step::Days(1).next_boundary(ts("2027-02-28 00:00:00")),
            Some(ts("2027-03-01 00:00:00"))
        );
        assert_eq!(
            Step::Months(12).next_boundary(ts("2028-02-29 00:00:00")),
            Some(ts("2029-01-01 00:00:00"))
        );
    }

    #[test]
    fn names() {
        assert_eq!(Step::Days(1).suffix(ts("2026-01-01 00:00:00")), "p20260101");
        assert_eq!(
            Step::Hours(1).suffix(ts("2026-01-01 13:00:00")),
            "p20260101_1300"
        );
        assert_eq!(
            Step::Months(1).suffix(ts("2026-01-15 06:00:00")),
            "p20260115_0600"
        );
    }

    #[test]
    fn missing_ranges_fill_gaps_only() {
        let existing = [
            Range {
                lower: Some(ts("2026-01-01 00:00:00")),
                upper: Some(ts("2026-01-03 00:00:00")),
            },
            Range {
                lower: Some(ts("2026-01-05 12:00:00")),
                upper: Some(ts("2026-01-06 00:00:00")),
            },
        ];
        let got = missing_ranges(
            Step::Days(1),
            &existing,
            ts("2026-01-02 00:00:00"),
            ts("2026-01-07 00:00:00"),
            100,
        )
        .unwrap_or_default();
        assert_eq!(
            got,
            vec![
                (ts("2026-01-03 00:00:00"), ts("2026-01-04 00:00:00")),
                (ts("2026-01-04 00:00:00"), ts("2026-01-05 00:00:00")),
                (ts("2026-01-05 00:00:00"), ts("2026-01-05 12:00:00")),
                (ts("2026-01-06 00:00:00"), ts("2026-01-07 00:00:00")),
            ]
        );
        assert_eq!(
            missing_ranges(
                Step::Hours(1),
                &[],
                ts("2026-01-01 00:00:00"),
                ts("2026-02-01 00:00:00"),
                10
            ),
            Err(11)
        );
    }

    #[test]
    fn cells_for_default_rows() {
        let existing = [Range {
            lower: Some(ts("2026-01-01 00:00:00")),
            upper: Some(ts("2026-01-01 12:00:00")),
        }];
        assert_eq!(
            cell_for(Step::Days(1), &existing, ts("2026-01-01 15:00:00")),
            Some((ts("2026-01-01 12:00:00"), ts("2026-01-02 00:00:00")))
        );
        assert_eq!(
            cell_for(Step::Days(1), &existing, ts("2026-01-01 01:00:00")),
            None
        );
    }
}
