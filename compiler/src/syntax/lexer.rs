//! The hand-written tokenizer that feeds the pest grammar.
//!
//! pest parses a string with one character per token (see `grammar.pest` and
//! [`token_char`]), not the source text: this lexer produces those tokens. The
//! driver also needs its own view of the tokens because pest stops at the first
//! error: to split a file into items, to find where to resume after a broken
//! statement, to describe the token an error is at, to collect comments and to cap
//! nesting depth before pest recurses.

/// Keywords of the language (design note 0001): the reserved ones first, then the
/// contextual ones (see [`RESERVED_COUNT`]). The lexer matches words with
/// `keyword_index`; this list is its specification, checked by a test.
#[cfg(test)]
pub(crate) const KEYWORDS: &[&str] = &[
    "from",
    "import",
    "record",
    "enum",
    "flow",
    "step",
    "bindings",
    "let",
    "when",
    "else",
    "for",
    "return",
    "true",
    "false",
    "none",
    "and",
    "or",
    "not",
    "as",
    "type",
    "remote",
    "call",
    "approval",
    "wait",
    "in",
    "join",
    "all",
    "any",
    "at_least",
    "deadline",
    "schedule",
    "timezone",
    "overlap",
    "catchup",
    "within",
    "jitter",
    "input",
    "retry",
    "backoff",
    "fixed",
    "exponential",
    "non_retryable",
    "timeout",
    "after",
    "parallel",
    "raises",
];

/// The first this many keywords are reserved: never a name. The others are
/// keywords only where the grammar expects them and names everywhere else, so that
/// a field can be called `type` and a parameter `input`. The reserved ones are
/// those that start items or statements wherever they appear, or are values and
/// operators inside expressions, where a name would make the grammar ambiguous.
pub(crate) const RESERVED_COUNT: usize = 18;

/// Words that can start a top-level item. Only `from`, `record`, `enum`, `flow` and
/// `bindings` are reserved; see [`starts_item`] for the others.
pub(crate) const ITEM_KEYWORDS: &[&str] = &[
    "from", "record", "enum", "type", "remote", "call", "approval", "wait", "flow", "bindings",
];

/// Deepest bracket or type-argument nesting accepted; beyond it the grammar's
/// recursion (and every later pass over the tree) would risk the stack.
pub(crate) const MAX_NESTING: usize = 64;

/// Whether `word` is a reserved keyword, which can never be a name.
pub(crate) fn is_reserved(word: &str) -> bool {
    keyword_index(word).is_some_and(|i| i < RESERVED_COUNT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokKind {
    Word,
    Number,
    Str { closed: bool },
    Punct,
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub(crate) fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or("")
    }

    pub(crate) fn is_punct(&self, src: &str, p: &str) -> bool {
        self.kind == TokKind::Punct && self.text(src) == p
    }

    pub(crate) fn is_word(&self, src: &str, w: &str) -> bool {
        self.kind == TokKind::Word && self.text(src) == w
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{FEFF}')
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The first offset at or after `pos` that is not whitespace or inside a comment.
pub(crate) fn skip_trivia(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    while pos < bytes.len() {
        if bytes[pos] == b'/' && bytes.get(pos + 1) == Some(&b'/') {
            pos = line_end(text, pos);
            continue;
        }
        match text[pos..].chars().next() {
            Some(c) if is_space(c) => pos += c.len_utf8(),
            _ => break,
        }
    }
    pos
}

/// The offset of the `\n` ending the line that contains `pos` (or the text's end).
fn line_end(text: &str, pos: usize) -> usize {
    text.as_bytes()[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| pos + i)
}

/// The token starting exactly at `pos` (which must be past any trivia).
pub(crate) fn token_at(text: &str, pos: usize) -> Token {
    let bytes = text.as_bytes();
    let Some(&b) = bytes.get(pos) else {
        return Token {
            kind: TokKind::Eof,
            start: text.len(),
            end: text.len(),
        };
    };
    let mut end = pos + 1;
    let kind = if b.is_ascii_alphabetic() || b == b'_' {
        while end < bytes.len() && is_ident_char(bytes[end]) {
            end += 1;
        }
        TokKind::Word
    } else if b.is_ascii_digit() {
        end = number_end(bytes, pos).1;
        TokKind::Number
    } else if b == b'"' {
        let mut closed = false;
        while end < bytes.len() {
            match bytes[end] {
                b'"' => {
                    end += 1;
                    closed = true;
                    break;
                }
                b'\n' => break,
                b'\\' if bytes.get(end + 1).is_some_and(|&n| n != b'\n') => end += 2,
                _ => end += 1,
            }
        }
        // `end` may sit inside a multi-byte char after a `\` pair; move to a boundary.
        while end < bytes.len() && !text.is_char_boundary(end) {
            end += 1;
        }
        TokKind::Str { closed }
    } else {
        let two = text.get(pos..pos + 2).unwrap_or("");
        if matches!(
            two,
            "->" | "==" | "!=" | "<=" | ">=" | "??" | "&&" | "||" | "::"
        ) {
            end = pos + 2;
        } else {
            end = pos + text[pos..].chars().next().map_or(1, char::len_utf8);
        }
        TokKind::Punct
    };
    Token {
        kind,
        start: pos,
        end,
    }
}

/// Where the number token at `pos` ends, after the longest `digits[.digits][e[±]digits]`
/// prefix (returned first) and any letters, digits, `_` or `.` glued to it.
fn number_end(bytes: &[u8], pos: usize) -> (usize, usize) {
    let digits = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let is_digit_at = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
    let mut end = digits(pos);
    if bytes.get(end) == Some(&b'.') && is_digit_at(end + 1) {
        end = digits(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        if is_digit_at(end + 1 + sign) {
            end = digits(end + 1 + sign);
        }
    }
    let numeric = end;
    while end < bytes.len() && (is_ident_char(bytes[end]) || bytes[end] == b'.') {
        end += 1;
    }
    (numeric, end)
}

/// The character standing for a token in the token string that pest parses
/// (see `grammar.pest`): classes of tokens are digits, keywords are letters and
/// punctuation is itself, or another sign for two-character operators.
pub(crate) fn token_char(text: &str, tok: Token) -> char {
    let raw = tok.text(text);
    match tok.kind {
        TokKind::Eof => '7',
        TokKind::Str { closed: true } => '3',
        TokKind::Str { closed: false } => '4',
        TokKind::Word => match keyword_index(raw) {
            Some(i) => keyword_char(i),
            None if raw.as_bytes()[0].is_ascii_uppercase() => '6',
            None => '5',
        },
        TokKind::Number => {
            let bytes = text.as_bytes();
            let (numeric, end) = number_end(bytes, tok.start);
            let head = &text[tok.start..numeric];
            let tail = &text[numeric..end];
            let is_float = head.contains(['.', 'e', 'E']);
            if tail.is_empty() {
                if is_float { '1' } else { '0' }
            } else if !is_float && tail.bytes().all(is_ident_char) {
                // Digits glued to letters: a duration, its units checked later.
                '2'
            } else {
                '7'
            }
        }
        TokKind::Punct => match raw {
            "(" | ")" | "{" | "}" | "[" | "]" | "," | ":" | "." | "=" | "<" | ">" | "?" | "-" => {
                raw.chars().next().unwrap_or('7')
            }
            "->" => '^',
            "??" => '$',
            "==" => '#',
            "!=" => '!',
            "<=" => '&',
            ">=" => '|',
            _ => '7',
        },
    }
}

/// The position of `word` in `KEYWORDS`. A `match` rather than a search: this
/// runs for every word of every file.
fn keyword_index(word: &str) -> Option<usize> {
    let i = match word {
        "from" => 0,
        "import" => 1,
        "record" => 2,
        "enum" => 3,
        "flow" => 4,
        "step" => 5,
        "bindings" => 6,
        "let" => 7,
        "when" => 8,
        "else" => 9,
        "for" => 10,
        "return" => 11,
        "true" => 12,
        "false" => 13,
        "none" => 14,
        "and" => 15,
        "or" => 16,
        "not" => 17,
        "as" => 18,
        "type" => 19,
        "remote" => 20,
        "call" => 21,
        "approval" => 22,
        "wait" => 23,
        "in" => 24,
        "join" => 25,
        "all" => 26,
        "any" => 27,
        "at_least" => 28,
        "deadline" => 29,
        "schedule" => 30,
        "timezone" => 31,
        "overlap" => 32,
        "catchup" => 33,
        "within" => 34,
        "jitter" => 35,
        "input" => 36,
        "retry" => 37,
        "backoff" => 38,
        "fixed" => 39,
        "exponential" => 40,
        "non_retryable" => 41,
        "timeout" => 42,
        "after" => 43,
        "parallel" => 44,
        "raises" => 45,
        _ => return None,
    };
    Some(i)
}

/// The character of the `i`-th keyword of `KEYWORDS`: `a`–`z`, then `A`–`T`.
pub(crate) fn keyword_char(i: usize) -> char {
    let i = i as u8;
    char::from(if i < 26 { b'a' + i } else { b'A' + (i - 26) })
}

/// The next token at or after `pos`.
pub(crate) fn next_token(text: &str, pos: usize) -> Token {
    token_at(text, skip_trivia(text, pos))
}

/// One top-level piece of a file: an item, or text before the first item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub start: usize,
    pub end: usize,
    /// The first token past [`MAX_NESTING`], if any.
    pub too_deep: Option<(usize, usize)>,
}

#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub chunks: Vec<Chunk>,
    /// Every token of the file, in order.
    pub tokens: Vec<Token>,
    /// One character per token (see [`token_char`]): what pest parses.
    pub token_str: String,
    /// `//` comments that are not doc comments, as spans from `//` to the line's end
    /// (a trailing `\r` excluded).
    pub comments: Vec<(usize, usize)>,
    /// `///` lines, likewise.
    pub doc_lines: Vec<(usize, usize)>,
}

/// Split a file into item chunks and collect its comments, in one pass.
///
/// An item starts at an item keyword (see [`starts_item`]) that is the first token
/// on its line, at bracket depth 0, or at any depth when it is in column 0: a
/// missing `}` then costs only the item that lacks it.
pub(crate) fn scan(text: &str) -> Scan {
    let mut out = Scan::default();
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut starts: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut angle = 0usize;
    let mut too_deep: Vec<Option<(usize, usize)>> = Vec::new();
    let mut first_on_line = true;
    loop {
        // Trivia, recording comments.
        while pos < bytes.len() {
            if bytes[pos] == b'/' && bytes.get(pos + 1) == Some(&b'/') {
                let mut end = line_end(text, pos);
                if end > pos && bytes[end - 1] == b'\r' {
                    end -= 1;
                }
                let is_doc = bytes.get(pos + 2) == Some(&b'/') && bytes.get(pos + 3) != Some(&b'/');
                if is_doc {
                    out.doc_lines.push((pos, end));
                } else {
                    out.comments.push((pos, end));
                }
                pos = line_end(text, pos);
                continue;
            }
            match text[pos..].chars().next() {
                Some('\n') => {
                    first_on_line = true;
                    pos += 1;
                }
                Some(c) if is_space(c) => pos += c.len_utf8(),
                _ => break,
            }
        }
        let tok = token_at(text, pos);
        if tok.kind == TokKind::Eof {
            break;
        }
        out.tokens.push(tok);
        out.token_str.push(token_char(text, tok));
        let word = tok.text(text);
        let column0 = tok.start == 0 || bytes[tok.start - 1] == b'\n';
        let item_start = starts.is_empty()
            || (tok.kind == TokKind::Word
                && first_on_line
                && (depth == 0 || column0)
                && starts_item(text, tok, depth == 0));
        if item_start {
            starts.push(tok.start);
            too_deep.push(None);
            depth = 0;
            angle = 0;
        }
        first_on_line = false;
        match (tok.kind, word) {
            (TokKind::Punct, "(" | "[" | "{") => depth += 1,
            (TokKind::Punct, ")" | "]" | "}") => depth = depth.saturating_sub(1),
            _ => {}
        }
        // Type arguments nest with `<`; anything that cannot appear inside a type
        // ends the run, so comparisons do not add up.
        match (tok.kind, word) {
            (TokKind::Punct, "<") => angle += 1,
            (TokKind::Punct, ">") => angle = angle.saturating_sub(1),
            (TokKind::Punct, "," | "?") => {}
            (TokKind::Word, w) if !matches!(w, "and" | "or" | "not") => {}
            _ => angle = 0,
        }
        if (depth > MAX_NESTING || angle > MAX_NESTING)
            && let Some(slot @ None) = too_deep.last_mut()
        {
            *slot = Some((tok.start, tok.end));
        }
        pos = tok.end;
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        out.chunks.push(Chunk {
            start,
            end,
            too_deep: too_deep.get(i).copied().flatten(),
        });
    }
    out
}

/// Where to resume after a broken statement that starts at `from`: the next
/// statement keyword or the `}` closing the enclosing block, at the same depth.
/// A `}` closes any `(` or `[` left open inside the statement, so `A(` followed by
/// the block's `}` still ends the block there. Returns the resume offset and the
/// end of the last token skipped.
pub(crate) fn stmt_resume_point(text: &str, from: usize) -> (usize, usize) {
    let first = next_token(text, from);
    let mut last_end = first.end.max(from);
    let mut pos = first.end;
    let mut open: Vec<u8> = Vec::new();
    if first.kind == TokKind::Punct && matches!(first.text(text), "(" | "[" | "{") {
        open.push(first.text(text).as_bytes()[0]);
    }
    loop {
        let tok = next_token(text, pos);
        let word = tok.text(text);
        match tok.kind {
            TokKind::Eof => return (tok.start, last_end),
            TokKind::Punct if matches!(word, "(" | "[" | "{") => open.push(word.as_bytes()[0]),
            TokKind::Punct if matches!(word, ")" | "]" | "}") => {
                let opener = match word {
                    ")" => b'(',
                    "]" => b'[',
                    _ => b'{',
                };
                if let Some(i) = open.iter().rposition(|&o| o == opener) {
                    open.truncate(i);
                } else if word == "}" {
                    return (tok.start, last_end);
                }
            }
            TokKind::Word if open.is_empty() && starts_stmt(text, tok) => {
                return (tok.start, last_end);
            }
            _ => {}
        }
        last_end = tok.end;
        pos = tok.end;
    }
}

/// Whether the word `tok`, first on its line, starts a top-level item. The reserved
/// item keywords always do; the contextual ones only with what must follow them:
/// `type` a name and then `=` or `<`, a step kind the keyword `step`. So a field
/// `type: String` in column 0 of a record stays in the record. At bracket depth 0
/// (`loose`), where a line can start nothing but an item or the rest of one, `type`
/// or a step kind followed by any name is enough, so that a typo after it (`remote
/// stpe`) still costs only that item.
pub(crate) fn starts_item(text: &str, tok: Token, loose: bool) -> bool {
    let word = tok.text(text);
    match word {
        "from" | "record" | "enum" | "flow" | "bindings" => true,
        "type" | "remote" | "call" | "approval" | "wait" => {
            let next = next_token(text, tok.end);
            let next_word = next.text(text);
            if next.kind != TokKind::Word {
                return false;
            }
            if word == "type" {
                let after = next_token(text, next.end);
                !is_reserved(next_word)
                    && (loose || after.is_punct(text, "=") || after.is_punct(text, "<"))
            } else {
                next_word == "step" || (loose && !is_reserved(next_word))
            }
        }
        _ => false,
    }
}

/// Whether the word `tok` starts a statement. `deadline` and `schedule` are
/// contextual keywords, so inside a broken statement they count only when followed by
/// their duration or cron string.
pub(crate) fn starts_stmt(text: &str, tok: Token) -> bool {
    match tok.text(text) {
        "let" | "when" | "return" => true,
        "deadline" => next_token(text, tok.end).kind == TokKind::Number,
        "schedule" => matches!(next_token(text, tok.end).kind, TokKind::Str { .. }),
        _ => false,
    }
}

/// The innermost `{` in `text[from..]` that is never closed, if any.
pub(crate) fn unclosed_brace(text: &str, from: usize) -> Option<usize> {
    let mut open: Vec<usize> = Vec::new();
    let mut pos = from;
    loop {
        let tok = next_token(text, pos);
        match tok.kind {
            TokKind::Eof => return open.last().copied(),
            TokKind::Punct if tok.text(text) == "{" => open.push(tok.start),
            TokKind::Punct if tok.text(text) == "}" => {
                open.pop();
            }
            _ => {}
        }
        pos = tok.end;
    }
}

/// The end of the last token before `pos` (for labelling "after this").
pub(crate) fn prev_token_end(text: &str, from: usize, pos: usize) -> Option<(usize, usize)> {
    let mut p = from;
    let mut last = None;
    loop {
        let tok = next_token(text, p);
        if tok.kind == TokKind::Eof || tok.start >= pos {
            return last;
        }
        last = Some((tok.start, tok.end));
        p = tok.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_comments() {
        let text = "// hi\nrecord A { a: Int }\n/// doc\nflow F() {\n  let x = A()\n}\n";
        let s = scan(text);
        assert_eq!(s.chunks.len(), 2);
        assert_eq!(&text[s.chunks[0].start..s.chunks[0].start + 6], "record");
        assert_eq!(&text[s.chunks[1].start..s.chunks[1].start + 4], "flow");
        assert_eq!(s.comments, vec![(0, 5)]);
        assert_eq!(s.doc_lines.len(), 1);
    }

    #[test]
    fn column_zero_keyword_restarts_after_missing_brace() {
        let text = "flow F() {\n  let x = A()\nrecord B { b: Int }\n";
        assert_eq!(scan(text).chunks.len(), 2);
    }

    #[test]
    fn token_string() {
        let text = "let x = Foo(a: 1, b: 2.5e-3, c: 1h30m, d: \"s\") -> ?? == // c\n 1.5s";
        assert_eq!(scan(text).token_str, "h5=6(5:0,5:1,5:2,5:3)^$#7");
        assert_eq!(keyword_char(KEYWORDS.len() - 1), 'T');
        for (i, k) in KEYWORDS.iter().enumerate() {
            assert_eq!(keyword_index(k), Some(i), "{k}");
            assert_eq!(is_reserved(k), i < RESERVED_COUNT, "{k}");
        }
        // The grammar's `soft_kw` range starts right after the reserved ones.
        assert_eq!(keyword_char(RESERVED_COUNT - 1), 'r');
        assert_eq!(keyword_char(RESERVED_COUNT), 's');
    }

    #[test]
    fn contextual_item_keywords_need_their_follower() {
        let starts = |text: &str| scan(text).chunks.len();
        // In column 0 inside a record: fields, not items.
        assert_eq!(starts("record A {\ntype: String,\nwait: Int,\n}\n"), 1);
        assert_eq!(starts("record A {\ntype X = Int\n"), 2);
        assert_eq!(starts("record A {\ncall step S()\n"), 2);
        assert_eq!(starts("record A {\ncall S()\n"), 1);
        // At depth 0 a name after them is enough.
        assert_eq!(starts("record A {}\nremote stpe S()\ntype X\n"), 3);
        assert_eq!(starts("record A {}\ntype = 1\n"), 1);
    }

    #[test]
    fn strings_hide_comment_markers() {
        let s = scan("from \"a//b\" import X\n");
        assert!(s.comments.is_empty());
    }
}
