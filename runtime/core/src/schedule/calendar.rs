//! When a cron expression fires, as instants: croner matches local calendar times,
//! this module turns them into instants across daylight saving time.
//!
//! croner is only asked about *local* times, which it is given as UTC values so
//! that its own DST handling never runs. (Asked with a zone, croner 3.0 fires an
//! hourly-in-the-repeated-hour job out of order, can return an instant before the
//! one it was asked to search after, and moves a fixed-time job whose date does
//! not match into a spring-forward gap; the tests pin our behaviour instead.)
//!
//! Every local time that matches the expression is resolved to one instant:
//!
//! - a time that exists once is that instant;
//! - a time repeated when the clocks go back is its first occurrence;
//! - a time skipped when the clocks go forward is the first instant after the gap.
//!
//! This resolution never decreases as the local time increases, so the fire times
//! are its image of the matching local times, in order, with duplicates (several
//! skipped times landing on the same instant) counted once. Both searches below
//! turn an instant into the first local time that resolves after it and then ask
//! croner for one match: a single step, whatever the zone does.
//!
//! An *interval* (a wildcard or a step in the hour field, `*/30 * * * *`) fires
//! by elapsed time: a repeated time also fires at its second occurrence, as in
//! Spring and croniter. Those second occurrences lie within the length of the
//! repeated period of the search's starting point (a second occurrence before the
//! next first occurrence is of a time whose first occurrence was at or before it),
//! so the searches look for them only in the repeated periods near it.
//!
//! Dates come from croner, except for Quartz's `L-n` and `LW`
//! ([`eflow_ir::schedule::DaysOfMonth`]): croner then finds the times on any day,
//! and a day that does not match is skipped whole.

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use eflow_ir::schedule::{CronExpr, parse_cron, parse_timezone};

/// Fire times end with this year: croner stops searching at 5000.
const LAST_YEAR: i32 = 4999;

/// A cron expression read in a time zone: the nominal fire times of a schedule.
#[derive(Debug, Clone)]
pub struct Calendar {
    cron: CronExpr,
    tz: Tz,
    /// No date of any year from 1970 to [`LAST_YEAR`] matches (`30 2`, or
    /// `29 2 ? 2025-2099/4`): the searches answer at once instead of letting croner
    /// walk day by day to the year 5000.
    never: bool,
}

impl Calendar {
    /// Parse `cron` (5, 6 or 7 fields, see `eflow_ir::schedule`) and the IANA
    /// zone `tz`; the error says which one is wrong and how.
    pub fn new(cron: &str, tz: &str) -> Result<Calendar, String> {
        let parsed =
            parse_cron(cron).map_err(|e| format!("invalid cron expression `{cron}`: {e}"))?;
        let zone = parse_timezone(tz).map_err(|e| format!("unknown time zone `{tz}`: {e}"))?;
        let never = !fires_in_some_year(&parsed);
        Ok(Calendar {
            cron: parsed,
            tz: zone,
            never,
        })
    }

    /// The first fire time strictly after `after_ms`, or `None` if there is none
    /// (a year in the past, a date that does not exist, or beyond the year 4999).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let x = i64::try_from(after_ms).ok()?;
        self.next_after_i(x)
            .and_then(|secs| u64::try_from(secs).ok())
            .map(|s| s * 1000)
    }

    /// The first fire time at or after `at_ms`.
    pub fn next_at_or_after(&self, at_ms: u64) -> Option<u64> {
        let x = i64::try_from(at_ms).ok()?;
        self.next_after_i(x - 1)
            .and_then(|secs| u64::try_from(secs).ok())
            .map(|s| s * 1000)
    }

    /// The last fire time at or before `at_ms`, or `None` if there is none since
    /// 1970.
    pub fn latest_at_or_before(&self, at_ms: u64) -> Option<u64> {
        if self.never {
            return None;
        }
        let x = i64::try_from(at_ms).unwrap_or(i64::MAX).min(max_ms() - 1);
        let limit = self.first_local_after(x)? - chrono::Duration::seconds(1);
        let first = self.previous_local(limit).map(|found| self.resolve(found));
        let second = if self.cron.interval {
            // A second occurrence after `first` is of a time whose first
            // occurrence was at or before it: near `first`.
            let around = first.unwrap_or(x.div_euclid(1000));
            let secs = x.div_euclid(1000);
            self.second_passes(around)
                .into_iter()
                .filter(|pass| pass.start <= secs)
                .filter_map(|pass| {
                    let until = (pass.local_end() - chrono::Duration::seconds(1))
                        .min(pass.local + chrono::Duration::seconds(secs - pass.start));
                    let found = self.previous_local(until)?;
                    (found >= pass.local).then(|| pass.start + (found - pass.local).num_seconds())
                })
                .max()
        } else {
            None
        };
        let secs = match (first, second) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        u64::try_from(secs).ok().map(|s| s * 1000)
    }

    /// The last `count` fire times at or before `at_ms`, newest first.
    pub fn latest(&self, at_ms: u64, count: usize) -> Vec<u64> {
        std::iter::successors(self.latest_at_or_before(at_ms), |&t| {
            t.checked_sub(1).and_then(|b| self.latest_at_or_before(b))
        })
        .take(count)
        .collect()
    }

    /// The instant `ms` as a clock on the wall of the calendar's zone reads
    /// it, with the zone's abbreviation and offset: `2026-03-29 03:00:00 CEST
    /// (+02:00)`.
    pub fn wall_clock(&self, ms: u64) -> String {
        let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
        let Some(utc) = DateTime::from_timestamp(secs, 0) else {
            return String::new();
        };
        utc.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M:%S %Z (%:z)")
            .to_string()
    }

    /// The fire times strictly after `after_ms`, in order.
    pub fn iter_after(&self, after_ms: u64) -> impl Iterator<Item = u64> + '_ {
        std::iter::successors(self.next_after(after_ms), |&t| self.next_after(t))
    }

    /// In whole seconds; `x` in milliseconds.
    fn next_after_i(&self, x: i64) -> Option<i64> {
        if self.never || x >= max_ms() {
            return None;
        }
        let first = self
            .first_local_after(x)
            .and_then(|from| self.next_local(from))
            .map(|found| self.resolve(found));
        if !self.cron.interval {
            return first;
        }
        let second = self
            .second_passes(x.div_euclid(1000))
            .into_iter()
            .filter_map(|pass| {
                // From the local time of `x` in this pass, or the pass's start.
                let secs = x.div_euclid(1000);
                let from = if secs >= pass.start {
                    pass.local + chrono::Duration::seconds(secs - pass.start + 1)
                } else {
                    pass.local
                };
                let found = self.next_local(from)?;
                let at = pass.start + (found - pass.local).num_seconds();
                (found < pass.local_end() && at * 1000 > x).then_some(at)
            })
            .min();
        match (first, second) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first matching local time at or after `from`.
    fn next_local(&self, mut from: NaiveDateTime) -> Option<NaiveDateTime> {
        loop {
            let found = self
                .cron
                .cron
                .find_next_occurrence(&Utc.from_utc_datetime(&from), true)
                .ok()?
                .naive_utc();
            if found.year() > LAST_YEAR {
                return None;
            }
            if self.day_matches(found) {
                return Some(found);
            }
            from = found.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
        }
    }

    /// The last matching local time at or before `until`.
    fn previous_local(&self, mut until: NaiveDateTime) -> Option<NaiveDateTime> {
        loop {
            let found = self
                .cron
                .cron
                .find_previous_occurrence(&Utc.from_utc_datetime(&until), true)
                .ok()?
                .naive_utc();
            if self.day_matches(found) {
                return Some(found);
            }
            until = found.date().and_hms_opt(0, 0, 0)? - chrono::Duration::seconds(1);
        }
    }

    /// Whether the day of a time croner found matches Quartz's day-of-month forms
    /// (always, without them: croner matched it).
    fn day_matches(&self, t: NaiveDateTime) -> bool {
        self.cron
            .days
            .as_ref()
            .is_none_or(|d| d.matches(t.year(), t.month(), t.day()))
    }

    /// The repeated periods (clocks going back) whose second pass could hold the
    /// next or latest fire time around `secs`: those beginning within a day and
    /// two hours of it. Found by stepping through offsets every 3 hours and
    /// bisecting where one decreases.
    fn second_passes(&self, secs: i64) -> Vec<SecondPass> {
        const REACH: i64 = 26 * 3600;
        const STEP: i64 = 3 * 3600;
        let mut out = Vec::new();
        let mut at = secs - REACH;
        while at < secs + REACH {
            let (before, after) = (self.offset(at), self.offset(at + STEP));
            if after < before {
                let (mut lo, mut hi) = (at, at + STEP);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset(mid) == before {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                out.push(SecondPass {
                    start: hi,
                    local: self.local(hi),
                    length: i64::from(before - after),
                });
            }
            at += STEP;
        }
        out
    }

    /// The instant a matching local time fires at, in seconds.
    fn resolve(&self, local: NaiveDateTime) -> i64 {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.timestamp(),
            LocalResult::Ambiguous(first, _) => first.timestamp(),
            LocalResult::None => self.gap_end(local),
        }
    }

    /// The first instant whose local time is after `local`, a time in a gap: the
    /// moment the clocks jumped. Found by bisection over two days, because chrono-tz
    /// does not expose its transitions; local time only decreases at a fall-back,
    /// and no zone has one within a day of a spring-forward.
    fn gap_end(&self, local: NaiveDateTime) -> i64 {
        let guess = local.and_utc().timestamp();
        // Offsets lie within ±16 h (local mean times included), so these bracket it.
        let (mut lo, mut hi) = (guess - 86_400, guess + 86_400);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.local(mid) > local {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// The smallest whole-second local time that resolves to an instant after `x`
    /// (milliseconds). The local time one second after `x`'s own, except when `x`
    /// lies in the second pass through a repeated hour: the times of that hour
    /// resolve to their first pass, before `x`, so the answer is the end of the hour.
    fn first_local_after(&self, x: i64) -> Option<NaiveDateTime> {
        let secs = x.div_euclid(1000);
        let next = self.local(secs) + chrono::Duration::seconds(1);
        match self.tz.from_local_datetime(&next) {
            LocalResult::Ambiguous(first, _) if first.timestamp() <= secs => {
                // The clocks went back between `first` and `secs`: find the instant.
                let before = self.offset(first.timestamp());
                let (mut lo, mut hi) = (first.timestamp(), secs);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset(mid) == before {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                Some(self.local(lo) + chrono::Duration::seconds(1))
            }
            _ => Some(next),
        }
    }

    fn local(&self, secs: i64) -> NaiveDateTime {
        let utc = DateTime::from_timestamp(secs, 0).unwrap_or_default();
        utc.with_timezone(&self.tz).naive_local()
    }

    fn offset(&self, secs: i64) -> i32 {
        let utc = DateTime::from_timestamp(secs, 0).unwrap_or_default();
        self.tz
            .offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc()
    }
}

/// The second pass through a repeated period: from the instant the clocks went
/// back, `length` seconds during which the local times from `local` repeat.
#[derive(Debug, Clone, Copy)]
struct SecondPass {
    start: i64,
    local: NaiveDateTime,
    length: i64,
}

impl SecondPass {
    fn local_end(&self) -> NaiveDateTime {
        self.local + chrono::Duration::seconds(self.length)
    }
}

/// 5000-01-01T00:00:00Z in milliseconds.
fn max_ms() -> i64 {
    NaiveDate::from_ymd_opt(LAST_YEAR + 1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(i64::MAX, |t| t.and_utc().timestamp_millis())
}

/// Whether some date from 1970 to [`LAST_YEAR`] matches the date fields.
///
/// Which days of a year match depends only on whether it is a leap year and on
/// the weekday of 1 January, so 14 kinds of year are checked, each at most once.
fn fires_in_some_year(cron: &CronExpr) -> bool {
    let p = &cron.cron.pattern;
    let mut kinds: [Option<bool>; 14] = [None; 14];
    for year in 1970..=LAST_YEAR {
        if !p.year_match(year).unwrap_or(false) {
            continue;
        }
        let Some(jan1) = NaiveDate::from_ymd_opt(year, 1, 1) else {
            continue;
        };
        let leap = NaiveDate::from_ymd_opt(year, 2, 29).is_some();
        let kind = usize::from(leap) * 7 + jan1.weekday().num_days_from_monday() as usize;
        let ok = *kinds[kind].get_or_insert_with(|| {
            (1..=12u32).any(|month| {
                (1..=31u32).any(|day| {
                    NaiveDate::from_ymd_opt(year, month, day).is_some()
                        && cron.date_matches(year, month, day)
                })
            })
        });
        if ok {
            return true;
        }
        if kinds.iter().all(|k| *k == Some(false)) {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64
    }

    fn at(ms: u64) -> String {
        DateTime::from_timestamp_millis(ms as i64)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    #[test]
    fn wall_clocks_and_the_latest_fire_times_follow_the_zone() {
        let c = Calendar::new("30 2 * * *", "Europe/Berlin").unwrap();
        // 02:30 does not exist on 2026-03-29: it fires when the clocks jump.
        assert_eq!(
            c.wall_clock(ms("2026-03-29T01:00:00Z")),
            "2026-03-29 03:00:00 CEST (+02:00)"
        );
        assert_eq!(
            c.wall_clock(ms("2026-01-10T01:30:00Z")),
            "2026-01-10 02:30:00 CET (+01:00)"
        );
        let latest: Vec<String> = c
            .latest(ms("2026-03-30T00:30:00Z"), 3)
            .into_iter()
            .map(at)
            .collect();
        assert_eq!(
            latest,
            [
                "2026-03-30T00:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-28T01:30:00Z"
            ]
        );
        let never = Calendar::new("0 0 30 2 *", "UTC").unwrap();
        assert!(never.latest(ms("2026-03-30T00:30:00Z"), 3).is_empty());
    }

    #[test]
    fn impossible_dates_never_fire_and_answer_at_once() {
        for cron in [
            "0 0 30 2 *",
            "0 0 31 4 *",
            "0 0 31 2,4,6,9,11 *",
            "0 0 0 30W 2 ?",
            "0 0 0 29 2 ? 2025-2099/4",
        ] {
            let c = Calendar::new(cron, "UTC").unwrap();
            assert!(c.never, "{cron}");
            assert_eq!(c.next_after(0), None, "{cron}");
            assert_eq!(c.latest_at_or_before(u64::MAX), None, "{cron}");
        }
        let leap = Calendar::new("0 0 29 2 *", "UTC").unwrap();
        assert!(!leap.never);
        assert_eq!(
            at(leap.next_after(ms("2097-01-01T00:00:00Z")).unwrap()),
            "2104-02-29T00:00:00Z",
            "2100 is not a leap year"
        );
    }

    #[test]
    fn the_end_of_time() {
        let c = Calendar::new("0 0 1 1 *", "UTC").unwrap();
        assert_eq!(
            at(c.next_after(ms("4998-06-01T00:00:00Z")).unwrap()),
            "4999-01-01T00:00:00Z"
        );
        assert_eq!(c.next_after(ms("4999-06-01T00:00:00Z")), None);
        assert_eq!(c.next_after(u64::MAX), None);
        assert_eq!(
            at(c.latest_at_or_before(u64::MAX).unwrap()),
            "4999-01-01T00:00:00Z"
        );
        assert_eq!(c.latest_at_or_before(0), Some(0));
        assert_eq!(c.next_at_or_after(0), Some(0));
    }

    #[test]
    fn a_gap_ends_where_the_clocks_jump() {
        let c = Calendar::new("30 2 * * *", "America/New_York").unwrap();
        let gap = NaiveDate::from_ymd_opt(2024, 3, 10)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(c.gap_end(gap) * 1000, ms("2024-03-10T07:00:00Z") as i64);
    }
}
