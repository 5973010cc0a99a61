//! Values of literal tokens: durations, integers and strings with their escapes.
//!
//! The grammar accepts these tokens loosely (a duration is any digits followed by
//! letters, a string may contain any backslash pair) so that a bad literal is
//! reported precisely here, with its own diagnostic code, instead of as a syntax error.

/// Units of a duration, longest spelling first so that `ms` is not read as `m`.
const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

pub(crate) const DURATION_HELP: &str = "a duration is one or more `<number><unit>` groups without spaces, \
     with units `ms`, `s`, `m`, `h`, `d` or `w`: `30s`, `1h30m`, `500ms`, `7d`";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// Digits only, e.g. `timeout 5`.
    MissingUnit,
    UnknownUnit(String),
    /// `1.5h`: durations are exact, so a fraction is refused rather than rounded.
    Fraction,
    TooLarge,
}

impl DurationError {
    pub(crate) fn message(&self, text: &str) -> String {
        match self {
            DurationError::MissingUnit => format!("duration `{text}` has no unit"),
            DurationError::UnknownUnit(unit) => {
                format!("invalid duration `{text}`: unknown unit `{unit}`")
            }
            DurationError::Fraction => {
                format!("invalid duration `{text}`: durations have no fractions")
            }
            DurationError::TooLarge => format!("duration `{text}` is too large"),
        }
    }
}

/// Milliseconds of a duration such as `1h30m`.
pub(crate) fn parse_duration(text: &str) -> Result<u64, DurationError> {
    if text.contains('.') {
        return Err(DurationError::Fraction);
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    let mut groups = 0;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let unit_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[digits_start..unit_start];
        let unit = &text[unit_start..i];
        if digits.is_empty() {
            // Only possible for a token not starting with a digit; report the letters.
            return Err(DurationError::UnknownUnit(unit.to_string()));
        }
        if unit.is_empty() {
            return Err(DurationError::MissingUnit);
        }
        let Some(&(_, factor)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(DurationError::UnknownUnit(unit.to_string()));
        };
        let n: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
        total = n
            .checked_mul(factor)
            .and_then(|ms| total.checked_add(ms))
            .ok_or(DurationError::TooLarge)?;
        groups += 1;
    }
    if groups == 0 {
        return Err(DurationError::MissingUnit);
    }
    Ok(total)
}

/// The value of an integer literal's digits, negated when a `-` was folded into it.
/// `None` when it does not fit in an `i64`.
pub(crate) fn parse_int(digits: &str, negative: bool) -> Option<i64> {
    let magnitude: u64 = digits.parse().ok()?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// An invalid escape, as byte offsets into the literal token (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EscapeError {
    pub start: usize,
    pub end: usize,
    pub message: String,
}

pub(crate) const ESCAPE_HELP: &str =
    "valid escapes are `\\\"`, `\\\\`, `\\n`, `\\t`, `\\r` and `\\u{…}` with 1 to 6 hex digits";

/// The value of a string token (with its quotes). An invalid escape is kept as
/// written, so the value is still usable after the error is reported.
pub(crate) fn unescape(token: &str) -> (String, Vec<EscapeError>) {
    let inner_start = usize::from(token.starts_with('"'));
    let inner_end = if token.len() > inner_start && token.ends_with('"') {
        token.len() - 1
    } else {
        token.len()
    };
    let inner = token.get(inner_start..inner_end).unwrap_or("");
    let mut value = String::with_capacity(inner.len());
    let mut errors = Vec::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            value.push(c);
            continue;
        }
        let Some((j, e)) = chars.next() else {
            errors.push(EscapeError {
                start: inner_start + i,
                end: inner_start + i + 1,
                message: "incomplete escape `\\` at the end of the string".to_string(),
            });
            value.push('\\');
            break;
        };
        let simple = match e {
            '"' => Some('"'),
            '\\' => Some('\\'),
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            _ => None,
        };
        if let Some(ch) = simple {
            value.push(ch);
            continue;
        }
        if e == 'u' {
            let rest = &inner[j + 1..];
            match unicode_escape(rest) {
                Ok((ch, used)) => {
                    value.push(ch);
                    // Skip the `{…}` part that `unicode_escape` consumed.
                    while chars.peek().is_some_and(|&(k, _)| k < j + 1 + used) {
                        chars.next();
                    }
                }
                Err(used) => {
                    let end = j + 1 + used;
                    errors.push(EscapeError {
                        start: inner_start + i,
                        end: inner_start + end,
                        message: format!("invalid unicode escape `{}`", &inner[i..end]),
                    });
                    value.push_str(&inner[i..end]);
                    while chars.peek().is_some_and(|&(k, _)| k < end) {
                        chars.next();
                    }
                }
            }
            continue;
        }
        let end = j + e.len_utf8();
        errors.push(EscapeError {
            start: inner_start + i,
            end: inner_start + end,
            message: format!("invalid escape `{}`", &inner[i..end]),
        });
        value.push_str(&inner[i..end]);
    }
    (value, errors)
}

/// Decode `{HEX}` at the start of `rest`. Ok: the char and the bytes used; Err: the
/// bytes that belong to the (invalid) escape.
fn unicode_escape(rest: &str) -> Result<(char, usize), usize> {
    if !rest.starts_with('{') {
        return Err(0);
    }
    let Some(close) = rest.find('}') else {
        let hex_len = rest[1..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len() - 1);
        return Err(1 + hex_len);
    };
    let hex = &rest[1..close];
    let valid = !hex.is_empty() && hex.len() <= 6 && hex.chars().all(|c| c.is_ascii_hexdigit());
    let ch = valid
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
        .and_then(char::from_u32);
    ch.map(|c| (c, close + 1)).ok_or(close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("2w"), Ok(1_209_600_000));
        assert_eq!(parse_duration("5"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit("x".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999w"),
            Err(DurationError::TooLarge)
        );
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int("9223372036854775807", false), Some(i64::MAX));
        assert_eq!(parse_int("9223372036854775808", true), Some(i64::MIN));
        assert_eq!(parse_int("9223372036854775808", false), None);
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r#""a\"b\\c\n""#).0, "a\"b\\c\n");
        assert_eq!(unescape(r#""\u{1F600}!""#).0, "\u{1F600}!");
        let (v, e) = unescape(r#""a\qb""#);
        assert_eq!(v, "a\\qb");
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].start, e[0].end), (2, 4));
        let (v, e) = unescape(r#""\u{zz}x""#);
        assert_eq!(v, "\\u{zz}x");
        assert_eq!(e.len(), 1);
        let (_, e) = unescape(r#""\u{110000}""#);
        assert_eq!(e.len(), 1);
        let (_, e) = unescape(r#""\u{12""#);
        assert_eq!(e.len(), 1);
    }
}
