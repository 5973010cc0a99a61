//! Layout that means nothing: the gaps between a file's tokens and what may be
//! inserted there (spaces, blank lines, comments), shared by the formatter's and
//! the versions' property tests.

use proptest::prelude::*;

/// Offsets between two tokens of `text` (outside strings and comments), where
/// whitespace or a comment may be inserted without changing the meaning.
pub fn gaps(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(i.min(b.len()));
            }
            c if word(c) => {
                let number = c.is_ascii_digit();
                while i < b.len() && word(b[i]) {
                    i += 1;
                    // The sign of an exponent, `1e-3`, is part of the number.
                    if number
                        && matches!(b[i - 1], b'e' | b'E')
                        && matches!(b.get(i), Some(b'-' | b'+'))
                    {
                        i += 1;
                    }
                }
                out.push(i);
            }
            _ => {
                let two = text.get(i..i + 2).unwrap_or("");
                i += if matches!(two, "->" | "==" | "!=" | "<=" | ">=" | "??") {
                    2
                } else {
                    1
                };
                out.push(i);
            }
        }
    }
    out
}

/// What to insert in a gap. Every inserted newline is followed by a space, so no
/// keyword lands in column 0 (where the parser would take it for a new item).
pub fn filler() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("  ".to_string()),
        Just("\n ".to_string()),
        Just("\n\n\n  ".to_string()),
        Just("\t".to_string()),
        "[a-z ]{0,12}".prop_map(|t| format!(" // {t}\n ")),
        "[a-z ]{0,12}".prop_map(|t| format!("\n // {t}\n\n ")),
        Just(" //\n ".to_string()),
        "[a-z ]{0,8}".prop_map(|t| format!("\n /// {t}\n ")),
    ]
}

pub fn mutate(text: &str, picks: &[(prop::sample::Index, String)]) -> String {
    let g = gaps(text);
    if g.is_empty() {
        return text.to_string();
    }
    let mut at: Vec<(usize, &str)> = picks
        .iter()
        .map(|(i, s)| (g[i.index(g.len())], s.as_str()))
        .collect();
    at.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
    let mut out = text.to_string();
    for (p, s) in at {
        out.insert_str(p, s);
    }
    out
}
