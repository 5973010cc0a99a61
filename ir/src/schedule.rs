//! Cron expressions and time zones: the one parser the compiler checks with and the
//! runtime's scheduler fires with.
//!
//! Cron syntax is croner's: 5 fields (minute hour day-of-month month day-of-week),
//! or 6 with seconds first, or 7 with a year last; `*`, lists, ranges, steps, names
//! of months and days, `?`, `L`, `W` and `#`. Day-of-month and day-of-week combine
//! with OR, as in Vixie cron. Quartz's day-of-month forms croner lacks, `L-n` and
//! `LW`, are matched here ([`DaysOfMonth`]), also in lists with the others
//! (`1W,15,LW`).

use chrono::{Datelike, NaiveDate, Weekday};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    /// croner's pattern. When [`CronExpr::days`] is set, its day-of-month and
    /// day-of-week fields are both `*`: it finds the times, `days` the dates.
    pub cron: Cron,
    /// The dates, when the day-of-month field uses `L-n` or `LW`.
    pub days: Option<DaysOfMonth>,
    /// The hour field is a wildcard or a step (`*`, `*/2`, `8-18/2`): the
    /// expression fires by elapsed time, in both passes of a repeated hour.
    pub interval: bool,
}

impl CronExpr {
    /// Whether the expression's date fields match this date (month and year
    /// included).
    pub fn date_matches(&self, year: i32, month: u32, day: u32) -> bool {
        let p = &self.cron.pattern;
        p.year_match(year).unwrap_or(false)
            && p.month_match(month).unwrap_or(false)
            && match &self.days {
                Some(days) => days.matches(year, month, day),
                None => p.day_match(year, month, day).unwrap_or(false),
            }
    }
}

/// A day-of-month field with Quartz's forms, and the day-of-week field it is
/// combined with (OR) when that one is not `*` or `?`.
#[derive(Debug, Clone)]
pub struct DaysOfMonth {
    parts: Vec<DayOfMonth>,
    /// The expression with `?` for its day of month: matches the day-of-week field.
    weekdays: Option<Box<Cron>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfMonth {
    /// Every day from `first` to `last`, every `step`th.
    Days { first: u32, last: u32, step: u32 },
    /// `L`, `L-n`: `n` days before the last day of the month.
    Last(u32),
    /// `LW`: the last weekday (Monday to Friday) of the month.
    LastWeekday,
    /// `nW`: the weekday nearest day `n`, in the same month.
    NearestWeekday(u32),
}

impl DaysOfMonth {
    pub fn matches(&self, year: i32, month: u32, day: u32) -> bool {
        let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
            return false;
        };
        let last = days_in_month(year, month);
        let weekday = |d: u32| {
            NaiveDate::from_ymd_opt(year, month, d)
                .is_some_and(|x| !matches!(x.weekday(), Weekday::Sat | Weekday::Sun))
        };
        let on = self.parts.iter().any(|part| match *part {
            DayOfMonth::Days { first, last, step } => {
                (first..=last).contains(&day) && (day - first).is_multiple_of(step)
            }
            DayOfMonth::Last(n) => last.checked_sub(n) == Some(day),
            DayOfMonth::LastWeekday => (1..=last).rev().find(|&d| weekday(d)) == Some(day),
            DayOfMonth::NearestWeekday(n) => {
                n <= last && nearest_weekday(year, month, n, last) == Some(day)
            }
        });
        on || self.weekdays.as_ref().is_some_and(|w| {
            w.pattern
                .day_match(date.year(), date.month(), date.day())
                .unwrap_or(false)
        })
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    (28..=31)
        .rev()
        .find(|&d| NaiveDate::from_ymd_opt(year, month, d).is_some())
        .unwrap_or(28)
}

/// The weekday nearest day `n` of the month, never in another month: a Saturday
/// moves to the Friday before (the Monday after on the 1st), a Sunday to the
/// Monday after (the Friday before on the last day).
fn nearest_weekday(year: i32, month: u32, n: u32, last: u32) -> Option<u32> {
    let date = NaiveDate::from_ymd_opt(year, month, n)?;
    Some(match date.weekday() {
        Weekday::Sat if n == 1 => 3,
        Weekday::Sat => n - 1,
        Weekday::Sun if n == last => n - 2,
        Weekday::Sun => n + 1,
        _ => n,
    })
}

/// Whether a day-of-month field uses a form croner lacks.
fn quartz_days(field: &str) -> bool {
    field.split(',').any(|part| {
        let upper = part.to_ascii_uppercase();
        upper == "LW" || upper.starts_with("L-")
    })
}

/// The day-of-month field `field` with Quartz's forms, or what is wrong with it.
fn parse_days(field: &str) -> Result<Vec<DayOfMonth>, String> {
    let bad =
        |part: &str, why: &str| format!("the day-of-month field `{field}` has `{part}`: {why}");
    let day = |part: &str, v: &str| -> Result<u32, String> {
        match v.parse::<u32>() {
            Ok(n) if (1..=31).contains(&n) => Ok(n),
            _ => Err(bad(part, "a day is a number from 1 to 31")),
        }
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let upper = part.to_ascii_uppercase();
        let parsed = if upper == "L" {
            DayOfMonth::Last(0)
        } else if upper == "LW" {
            DayOfMonth::LastWeekday
        } else if let Some(n) = upper.strip_prefix("L-") {
            match n.parse::<u32>() {
                Ok(n) if n <= 30 => DayOfMonth::Last(n),
                _ => {
                    return Err(bad(
                        part,
                        "`L-n` is `n` days before the last day, `n` from 0 to 30",
                    ));
                }
            }
        } else if let Some(n) = upper.strip_suffix('W') {
            DayOfMonth::NearestWeekday(day(part, n)?)
        } else {
            let (range, step) = match upper.split_once('/') {
                Some((r, s)) => match s.parse::<u32>() {
                    Ok(s) if s >= 1 => (r, s),
                    _ => return Err(bad(part, "a step is a whole number from 1")),
                },
                None => (upper.as_str(), 1),
            };
            let (first, last) = match range {
                "*" | "?" => (1, 31),
                r => match r.split_once('-') {
                    Some((a, b)) => (day(part, a)?, day(part, b)?),
                    None if step > 1 => (day(part, r)?, 31),
                    None => (day(part, r)?, day(part, r)?),
                },
            };
            if first > last {
                return Err(bad(part, "a range goes from the smaller day to the larger"));
            }
            DayOfMonth::Days { first, last, step }
        };
        out.push(parsed);
    }
    Ok(out)
}

/// Whether the hour field makes the expression an interval (a wildcard or a step).
fn interval_hours(field: &str) -> bool {
    field.contains('*') || field.contains('/')
}

pub const OVERLAP_POLICIES: &[&str] = &["skip", "buffer_one", "allow_all", "cancel_running"];
pub const CATCHUP_POLICIES: &[&str] = &["skip", "once", "all"];

/// Names for common schedules, and the 5-field expression each stands for.
pub const NICKNAMES: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Parse a cron expression; the error says what is wrong, for a person.
pub fn parse_cron(expr: &str) -> Result<CronExpr, String> {
    let expr = match expr.trim() {
        name if name.starts_with('@') => {
            let lower = name.to_ascii_lowercase();
            NICKNAMES
                .iter()
                .find(|(n, _)| *n == lower)
                .map(|(_, e)| *e)
                .ok_or_else(|| {
                    let names: Vec<&str> = NICKNAMES.iter().map(|(n, _)| *n).collect();
                    let hint = crate::suggest::did_you_mean(&lower, names.iter().copied())
                        .unwrap_or_else(|| {
                            format!("use one of {}, or write the cron fields", names.join(", "))
                        });
                    format!("`{name}` is not a schedule name: {hint}")
                })?
        }
        e => e,
    };
    let fields = expr.split_whitespace().count();
    if !(5..=7).contains(&fields) {
        return Err(format!(
            "expected 5, 6 or 7 fields separated by spaces, found {fields}"
        ));
    }
    if let Some(problem) = field_problem(expr) {
        return Err(problem);
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let hour = usize::from(fields.len() >= 6) + 1;
    let (dom, dow) = (hour + 1, hour + 3);
    let interval = interval_hours(fields[hour]);
    if !quartz_days(fields[dom]) {
        return Ok(CronExpr {
            cron: croner(expr)?,
            days: None,
            interval,
        });
    }
    let parts = parse_days(fields[dom])?;
    let with = |day_of_month: &str, day_of_week: &str| {
        let mut f = fields.clone();
        f[dom] = day_of_month;
        f[dow] = day_of_week;
        croner(&f.join(" "))
    };
    let weekdays = match fields[dow] {
        "*" | "?" => None,
        _ => Some(Box::new(with("?", fields[dow])?)),
    };
    Ok(CronExpr {
        cron: with("*", "*")?,
        days: Some(DaysOfMonth { parts, weekdays }),
        interval,
    })
}

fn croner(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Optional)
        .build()
        .parse(expr)
        .map_err(|e| lowercase_first(&e.to_string()))
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A precise message for the first field that is plainly wrong, naming the field:
/// croner's own errors do not say which field they are about.
fn field_problem(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    // The 5-field form; seconds come first in the 6- and 7-field forms, a year last
    // in the 7-field form.
    const SECOND: (&str, u32, u32) = ("second", 0, 59);
    const YEAR: (&str, u32, u32) = ("year", 1970, 2099);
    const FIVE: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day-of-month", 1, 31),
        ("month", 1, 12),
        ("day-of-week", 0, 7),
    ];
    let mut names: Vec<(&str, u32, u32)> = Vec::with_capacity(7);
    if fields.len() >= 6 {
        names.push(SECOND);
    }
    names.extend(FIVE);
    if fields.len() >= 7 {
        names.push(YEAR);
    }
    for (field, &(name, lo, hi)) in fields.iter().zip(&names) {
        for part in field.split(',') {
            if name == "day-of-month" && part.to_ascii_uppercase().starts_with("L-") {
                // `L-n`: checked with the other Quartz forms, by `parse_days`.
                continue;
            }
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(step) = step
                && step.parse::<u32>().map_or(true, |n| n == 0)
            {
                return Some(format!(
                    "the {name} field `{field}` has step `/{step}`; a step is a whole number from 1"
                ));
            }
            let special = matches!(name, "day-of-month" | "day-of-week");
            let value_ok = |v: &str| -> Result<(), String> {
                let upper = v.to_ascii_uppercase();
                if upper == "*" || (upper == "?" && special) {
                    return Ok(());
                }
                if name == "month" && MONTHS.contains(&upper.as_str()) {
                    return Ok(());
                }
                if name == "day-of-week" {
                    let base = upper.trim_end_matches('L');
                    let base = base.split('#').next().unwrap_or(base);
                    if DAYS.contains(&base) {
                        return Ok(());
                    }
                    if let Some(d) = upper
                        .strip_suffix('L')
                        .or_else(|| upper.split('#').next().filter(|_| upper.contains('#')))
                        && (d.is_empty()
                            || d.parse::<u32>().is_ok_and(|n| n <= 7)
                            || DAYS.contains(&d))
                    {
                        return Ok(());
                    }
                }
                if name == "day-of-month"
                    && (upper == "L"
                        || upper == "LW"
                        || upper
                            .strip_suffix('W')
                            .is_some_and(|d| d.parse::<u32>().is_ok_and(|n| (1..=31).contains(&n))))
                {
                    return Ok(());
                }
                match upper.parse::<u32>() {
                    Ok(n) if (lo..=hi).contains(&n) => Ok(()),
                    Ok(n) => Err(format!(
                        "the {name} field `{field}` has {n}, outside {lo}–{hi}"
                    )),
                    Err(_) => Err(match name {
                        "month" => {
                            format!("the month field `{field}` has `{v}`: use 1–12 or JAN–DEC")
                        }
                        "day-of-week" => format!(
                            "the day-of-week field `{field}` has `{v}`: use 0–7 (0 and 7 are Sunday) or SUN–SAT"
                        ),
                        _ => format!(
                            "the {name} field `{field}` has `{v}`, which is not a number from {lo} to {hi}"
                        ),
                    }),
                }
            };
            let ends: Vec<&str> = if range.contains('-') && !range.starts_with('-') {
                range.splitn(2, '-').collect()
            } else {
                vec![range]
            };
            for v in ends {
                if let Err(e) = value_ok(v) {
                    return Some(e);
                }
            }
        }
    }
    None
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_lowercase()
            .chain(c)
            .collect::<String>()
            .trim_end_matches('.')
            .to_string(),
        None => String::new(),
    }
}

/// Whether a cron expression is valid, remembering answers: a workspace repeats
/// the same few expressions, and parsing one builds croner's bit sets.
pub fn check_cron(expr: &str) -> Result<(), String> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static SEEN: RefCell<HashMap<String, Result<(), String>>> = RefCell::new(HashMap::new());
    }
    SEEN.with(|seen| {
        if let Some(r) = seen.borrow().get(expr) {
            return r.clone();
        }
        let r = parse_cron(expr).map(|_| ());
        let mut seen = seen.borrow_mut();
        if seen.len() > 4096 {
            seen.clear();
        }
        seen.insert(expr.to_string(), r.clone());
        r
    })
}

/// Parse an IANA time zone name; the error is a help line with the closest name.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        if let Some(zone) = usual_zone(name) {
            // `PST` is closest to `EST` by spelling, a zone five hours away: an
            // abbreviation gets the zone people mean by it, never a look-alike.
            return format!(
                "`{name}` is an abbreviation, not a time zone: write the place, e.g. `{zone}`, \
                 which follows its daylight saving time"
            );
        }
        match timezone_suggestion(name) {
            Some(zone) => format!("did you mean `{zone}`?"),
            None => {
                "use an IANA name such as `Europe/Berlin`, `America/New_York` or `UTC`".to_string()
            }
        }
    })
}

/// The zone to write instead of `name`, which is not one: the zone an abbreviation
/// usually stands for, else the closest name.
pub fn timezone_suggestion(name: &str) -> Option<&'static str> {
    if name.parse::<Tz>().is_ok() {
        return None;
    }
    usual_zone(name).or_else(|| {
        crate::suggest::closest(name, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
    })
}

/// Abbreviations of time zones, and the IANA zone they usually stand for.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("PST", "America/Los_Angeles"),
    ("PDT", "America/Los_Angeles"),
    ("PT", "America/Los_Angeles"),
    ("MST", "America/Denver"),
    ("MDT", "America/Denver"),
    ("MT", "America/Denver"),
    ("CST", "America/Chicago"),
    ("CDT", "America/Chicago"),
    ("CT", "America/Chicago"),
    ("EST", "America/New_York"),
    ("EDT", "America/New_York"),
    ("ET", "America/New_York"),
    ("AKST", "America/Anchorage"),
    ("AKDT", "America/Anchorage"),
    ("HST", "Pacific/Honolulu"),
    ("BST", "Europe/London"),
    ("CET", "Europe/Paris"),
    ("CEST", "Europe/Paris"),
    ("EET", "Europe/Athens"),
    ("EEST", "Europe/Athens"),
    ("WET", "Europe/Lisbon"),
    ("WEST", "Europe/Lisbon"),
    ("MSK", "Europe/Moscow"),
    ("IST", "Asia/Kolkata"),
    ("JST", "Asia/Tokyo"),
    ("KST", "Asia/Seoul"),
    ("SGT", "Asia/Singapore"),
    ("HKT", "Asia/Hong_Kong"),
    ("AEST", "Australia/Sydney"),
    ("AEDT", "Australia/Sydney"),
    ("NZST", "Pacific/Auckland"),
    ("NZDT", "Pacific/Auckland"),
];

/// The zone an abbreviation such as `PST` usually stands for.
fn usual_zone(name: &str) -> Option<&'static str> {
    let upper = name.trim().to_ascii_uppercase();
    ABBREVIATIONS
        .iter()
        .find(|(a, _)| *a == upper)
        .map(|(_, zone)| *zone)
}

/// Why a zone [`parse_timezone`] gave is still a poor choice, if it is: a fixed offset or a
/// legacy name (`EST`, `EST5EDT`, `Etc/GMT+5`, `Japan`) rather than a place
/// (`Area/Location`) whose rules, daylight saving included, the zone database
/// keeps up to date. `UTC` is fine.
/// The place's zone to use instead of the legacy or fixed-offset `zone`, when
/// one is known (`EST` → `America/New_York`); what `zone_warning` names.
pub fn place_for(zone: Tz) -> Option<&'static str> {
    usual_zone(zone.name())
}

pub fn zone_warning(zone: Tz) -> Option<String> {
    let name = zone.name();
    if matches!(name, "UTC" | "Etc/UTC") {
        return None;
    }
    if name.contains('/') && !name.starts_with("Etc/") {
        return None;
    }
    let place = usual_zone(name)
        .map(|zone| format!("`{zone}`"))
        .unwrap_or_else(|| "a place such as `America/New_York` or `Europe/Berlin`".into());
    Some(format!(
        "`{name}` is a fixed offset or a legacy zone name: runs fire by it all year, \
         so where the clocks change they fire an hour off for half the year; use {place}, \
         or `UTC` if that is what is meant"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abbreviation_is_told_its_place_and_every_place_is_a_zone() {
        for (abbreviation, zone) in ABBREVIATIONS {
            let parsed = parse_timezone(zone).unwrap_or_else(|e| panic!("{zone}: {e}"));
            assert_eq!(zone_warning(parsed), None, "{zone}");
            if let Err(help) = parse_timezone(abbreviation) {
                assert!(help.contains(zone), "{abbreviation}: {help}");
            }
        }
        let help = parse_timezone("pst").err().unwrap_or_default();
        assert!(help.contains("America/Los_Angeles"), "{help}");
        assert!(!help.contains("EST"), "no look-alike: {help}");
    }

    #[test]
    fn fixed_offsets_and_legacy_names_are_warned_about_places_are_not() {
        let warning = |name: &str| {
            zone_warning(parse_timezone(name).unwrap_or_else(|e| panic!("{name}: {e}")))
        };
        for name in ["EST", "MST", "HST", "EST5EDT", "Etc/GMT+5", "Japan", "GMT"] {
            assert!(warning(name).is_some(), "{name}");
        }
        for name in ["UTC", "Etc/UTC", "Europe/Berlin", "America/New_York"] {
            assert_eq!(warning(name), None, "{name}");
        }
        // An unknown zone is an error, not a warning.
        assert!(parse_timezone("Nowhere/Land").is_err());
        let why = warning("EST").unwrap_or_default();
        assert!(why.contains("America/New_York"), "{why}");
    }

    #[test]
    fn accepts_the_documented_forms() {
        for ok in [
            "0 3 * * MON",
            "*/15 * * * *",
            "0 0 12 ? * WED",
            "0 0 12 L * ?",
            "0 9 15W * *",
            "0 9 * * FRI#3",
            "0 0 0 1 JAN * 2030",
            "0 4 L-2 * ?",
            "0 18 LW * ?",
            "0 9 1W,15,LW * ?",
            "0 0 9 L-0,L-30,1-5/2 * ? 2030",
            "0 9 LW * MON",
            "@daily",
            "@Hourly",
            " @yearly ",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}: {:?}", parse_cron(ok).err());
        }
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "0 3 * * MOO",
            "a b c d e",
            "*/0 * * * *",
            "0 0 L-31 * ?",
            "0 0 LW,0 * ?",
            "0 0 LW,5-2 * ?",
        ] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_cron("0 3 * * MOO").unwrap_err(),
            "the day-of-week field `MOO` has `MOO`: use 0–7 (0 and 7 are Sunday) or SUN–SAT"
        );
        assert_eq!(
            parse_cron("0 25 * * *").unwrap_err(),
            "the hour field `25` has 25, outside 0–23"
        );
    }

    #[test]
    fn an_interval_is_a_wildcard_or_a_step_in_the_hour_field() {
        for (cron, interval) in [
            ("*/30 * * * *", true),
            ("0 */2 * * *", true),
            ("0 8-18/2 * * *", true),
            ("0 0 * * * ?", true),
            ("@hourly", true),
            ("30 1 * * *", false),
            ("0 9-17 * * *", false),
            ("0 0 1,2 * * ?", false),
            ("@daily", false),
        ] {
            assert_eq!(parse_cron(cron).unwrap().interval, interval, "{cron}");
        }
    }

    #[test]
    fn schedule_names_stand_for_their_expressions() {
        for (name, expr) in NICKNAMES {
            assert_eq!(
                format!("{:?}", parse_cron(name).unwrap().cron.pattern),
                format!("{:?}", parse_cron(expr).unwrap().cron.pattern),
                "{name}"
            );
        }
        assert_eq!(
            parse_cron("@dialy").unwrap_err(),
            "`@dialy` is not a schedule name: did you mean `@daily`?"
        );
        assert!(
            parse_cron("@reboot")
                .unwrap_err()
                .contains("use one of @yearly")
        );
    }

    #[test]
    fn suggests_time_zones() {
        assert!(parse_timezone("Europe/Berlin").is_ok());
        let err = parse_timezone("Europe/Berlinn").unwrap_err();
        assert!(err.contains("Europe/Berlin"), "{err}");
    }
}
