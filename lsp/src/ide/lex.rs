//! A forgiving tokenizer for editor features.
//!
//! Completion and highlighting must work on text that does not parse (the user is
//! typing), so they look at tokens rather than at the syntax tree. It agrees with
//! the compiler on what a comment, a string, a word and a number are; it never fails.

/// Whether `word` is one of the language's keywords, reserved or contextual (the
/// compiler's list), for highlighting and for telling calls from statements.
pub fn is_keyword(word: &str) -> bool {
    eflow_compiler::syntax::KEYWORDS.contains(&word)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokKind {
    Word,
    Number,
    Str { closed: bool },
    Comment,
    DocComment,
    Punct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tok {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
}

impl Tok {
    pub fn text<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.start..self.end).unwrap_or("")
    }

    pub fn is_trivia(&self) -> bool {
        matches!(self.kind, TokKind::Comment | TokKind::DocComment)
    }
}

/// Every token of `text`, comments included, in order. Whitespace is skipped.
pub fn tokenize(text: &str) -> Vec<Tok> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let kind = if b.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            let doc = bytes.get(start + 2) == Some(&b'/') && bytes.get(start + 3) != Some(&b'/');
            if doc {
                TokKind::DocComment
            } else {
                TokKind::Comment
            }
        } else if b == b'"' {
            i += 1;
            let mut closed = false;
            while i < bytes.len() && bytes[i] != b'\n' {
                if bytes[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if bytes[i] == b'"' {
                    i += 1;
                    closed = true;
                    break;
                }
                i += 1;
            }
            i = i.min(bytes.len());
            TokKind::Str { closed }
        } else if b.is_ascii_alphabetic() || b == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            TokKind::Word
        } else if b.is_ascii_digit() {
            while i < bytes.len() {
                let c = bytes[i];
                let exponent_sign = (c == b'-' || c == b'+')
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                let fraction = c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if c.is_ascii_alphanumeric() || c == b'_' || exponent_sign || fraction {
                    i += 1;
                } else {
                    break;
                }
            }
            TokKind::Number
        } else {
            let two = text.get(i..i + 2).unwrap_or("");
            if matches!(two, "->" | "??" | "==" | "!=" | "<=" | ">=") {
                i += 2;
            } else {
                // One character, whatever its width in bytes.
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
            TokKind::Punct
        };
        out.push(Tok {
            kind,
            start,
            end: i,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(TokKind, &str)> {
        tokenize(text)
            .into_iter()
            .map(|t| (t.kind, t.text(text)))
            .collect()
    }

    #[test]
    fn words_numbers_strings_comments() {
        let toks = kinds("let x = F(a: 1h30m, b: 1e-3) // hi\n/// doc\n\"s\\\"x\" \"open");
        assert_eq!(
            toks,
            vec![
                (TokKind::Word, "let"),
                (TokKind::Word, "x"),
                (TokKind::Punct, "="),
                (TokKind::Word, "F"),
                (TokKind::Punct, "("),
                (TokKind::Word, "a"),
                (TokKind::Punct, ":"),
                (TokKind::Number, "1h30m"),
                (TokKind::Punct, ","),
                (TokKind::Word, "b"),
                (TokKind::Punct, ":"),
                (TokKind::Number, "1e-3"),
                (TokKind::Punct, ")"),
                (TokKind::Comment, "// hi"),
                (TokKind::DocComment, "/// doc"),
                (TokKind::Str { closed: true }, "\"s\\\"x\""),
                (TokKind::Str { closed: false }, "\"open"),
            ]
        );
    }

    #[test]
    fn never_splits_a_character() {
        let toks = kinds("é -> ?? ✓");
        assert_eq!(toks.len(), 4);
        assert_eq!(toks[0].1, "é");
        assert_eq!(toks[3].1, "✓");
    }
}
