//! Cron expressions and time zones: the one parser the compiler checks with and the
//! runtime's scheduler fires with.
//!
//! Cron syntax is croner's: 5 fields (minute hour day-of-month month day-of-week),
//! or 6 with seconds first, or 7 with a year last; `*`, lists, ranges, steps, names
//! of months and days, `?`, `L`, `W` and `#`. Day-of-month and day-of-week combine
//! with OR, as in Vixie cron.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

pub const OVERLAP_POLICIES: &[&str] = &["skip", "buffer_one", "allow_all", "cancel_running"];
pub const CATCHUP_POLICIES: &[&str] = &["skip", "once", "all"];

/// Parse a cron expression; the error says what is wrong, for a person.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=7).contains(&fields) {
        return Err(format!(
            "expected 5, 6 or 7 fields separated by spaces, found {fields}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Optional)
        .build()
        .parse(expr)
        .map_err(|e| lowercase_first(&e.to_string()))
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect::<String>().trim_end_matches('.').to_string(),
        None => String::new(),
    }
}

/// Parse an IANA time zone name; the error is a help line with the closest name.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        crate::suggest::did_you_mean(name, names)
            .unwrap_or_else(|| "use an IANA name such as `Europe/Berlin`, `America/New_York` or `UTC`".to_string())
    })
}

/// The fire times strictly after `from`, at most `count` of them, in `tz`.
///
/// Daylight saving time: a local time skipped by a spring-forward gap fires at the
/// first valid instant after the gap; a local time repeated by a fall-back fires
/// once, at its first occurrence.
pub fn next_fire_times(cron: &Cron, tz: Tz, from: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let start = tz.from_utc_datetime(&from.naive_utc());
    cron.iter_after(start)
        .take(count)
        .map(|t| t.with_timezone(&Utc))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}: {:?}", parse_cron(ok).err());
        }
        for bad in ["", "* * *", "61 * * * *", "0 3 * * MOO", "a b c d e"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggests_time_zones() {
        assert!(parse_timezone("Europe/Berlin").is_ok());
        let err = parse_timezone("Europe/Berlinn").unwrap_err();
        assert!(err.contains("Europe/Berlin"), "{err}");
    }
}
