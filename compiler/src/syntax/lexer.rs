//! The hand-written tokenizer that feeds both parsers.
//!
//! It turns a file into tokens and gives each a kind: one byte, the character that
//! stands for the token in the string pest parses (see `grammar.pest` and [`kind`]).
//! The descent parser reads the same kinds. The driver also needs its own view of
//! the tokens: to split a file into items, to find where to resume after a broken
//! statement, to describe the token an error is at, to collect comments and to cap
//! nesting depth before anything recurses.

/// Keywords of the language (design note 0001): the reserved ones first, then the
/// contextual ones (see [`RESERVED_COUNT`]). The lexer matches words with
/// [`keyword_kind`]; this list is its specification, checked by a test. Tools
/// (the language server) read it from here rather than keep their own.
pub const KEYWORDS: &[&str] = &[
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
    "repeat",
    "at_most",
    "until",
];

/// The first this many keywords are reserved: never a name. The others are
/// keywords only where the grammar expects them and names everywhere else, so that
/// a field can be called `type` and a parameter `input`. The reserved ones are
/// those that start items or statements wherever they appear, or are values and
/// operators inside expressions, where a name would make the grammar ambiguous.
pub const RESERVED_COUNT: usize = 18;

/// Words that can start a top-level item. Only `from`, `record`, `enum`, `flow` and
/// `bindings` are reserved; see [`starts_item`] for the others.
pub(crate) const ITEM_KEYWORDS: &[&str] = &[
    "from", "record", "enum", "type", "remote", "call", "approval", "wait", "flow", "bindings",
];

/// Deepest bracket or type-argument nesting accepted; beyond it the grammar's
/// recursion (and every later pass over the tree) would risk the stack.
pub(crate) const MAX_NESTING: usize = 64;

/// Whether `word` is a reserved keyword, which can never be a name.
pub fn is_reserved(word: &str) -> bool {
    keyword_kind(word).is_some_and(kind::is_reserved)
}

/// Token kinds: the character standing for each token in the string pest parses.
/// Classes of tokens are digits, keywords are letters (in the order of `KEYWORDS`:
/// `a`-`r` the reserved ones, then `s`-`z` and `A`-`W`), and punctuation is itself,
/// or another sign for two-character operators.
pub(crate) mod kind {
    /// Past the end of the input: not a token.
    pub(crate) const END: u8 = 0;
    pub(crate) const INT: u8 = b'0';
    pub(crate) const FLOAT: u8 = b'1';
    /// Digits glued to letters: a duration, its units checked later.
    pub(crate) const DURATION: u8 = b'2';
    pub(crate) const STRING: u8 = b'3';
    pub(crate) const OPEN_STRING: u8 = b'4';
    /// A name starting with a lower-case letter or `_`.
    pub(crate) const LOWER: u8 = b'5';
    /// A name starting with an upper-case letter.
    pub(crate) const UPPER: u8 = b'6';
    /// Anything else (`@`, `&&`, a malformed number, …).
    pub(crate) const OTHER: u8 = b'7';
    pub(crate) const LPAREN: u8 = b'(';
    pub(crate) const RPAREN: u8 = b')';
    pub(crate) const LBRACE: u8 = b'{';
    pub(crate) const RBRACE: u8 = b'}';
    pub(crate) const LBRACKET: u8 = b'[';
    pub(crate) const RBRACKET: u8 = b']';
    pub(crate) const COMMA: u8 = b',';
    pub(crate) const COLON: u8 = b':';
    pub(crate) const DOT: u8 = b'.';
    pub(crate) const ASSIGN: u8 = b'=';
    pub(crate) const LT: u8 = b'<';
    pub(crate) const GT: u8 = b'>';
    pub(crate) const QUESTION: u8 = b'?';
    pub(crate) const MINUS: u8 = b'-';
    /// `->`
    pub(crate) const ARROW: u8 = b'^';
    /// `??`
    pub(crate) const COALESCE: u8 = b'$';
    /// `==`
    pub(crate) const EQ: u8 = b'#';
    /// `!=`
    pub(crate) const NE: u8 = b'!';
    /// `<=`
    pub(crate) const LE: u8 = b'&';
    /// `>=`
    pub(crate) const GE: u8 = b'|';
    pub(crate) const FROM: u8 = b'a';
    pub(crate) const IMPORT: u8 = b'b';
    pub(crate) const RECORD: u8 = b'c';
    pub(crate) const ENUM: u8 = b'd';
    pub(crate) const FLOW: u8 = b'e';
    pub(crate) const STEP: u8 = b'f';
    pub(crate) const BINDINGS: u8 = b'g';
    pub(crate) const LET: u8 = b'h';
    pub(crate) const WHEN: u8 = b'i';
    pub(crate) const ELSE: u8 = b'j';
    pub(crate) const FOR: u8 = b'k';
    pub(crate) const RETURN: u8 = b'l';
    pub(crate) const TRUE: u8 = b'm';
    pub(crate) const FALSE: u8 = b'n';
    pub(crate) const NONE: u8 = b'o';
    pub(crate) const AND: u8 = b'p';
    pub(crate) const OR: u8 = b'q';
    pub(crate) const NOT: u8 = b'r';
    pub(crate) const AS: u8 = b's';
    pub(crate) const TYPE: u8 = b't';
    pub(crate) const REMOTE: u8 = b'u';
    pub(crate) const CALL: u8 = b'v';
    pub(crate) const APPROVAL: u8 = b'w';
    pub(crate) const WAIT: u8 = b'x';
    pub(crate) const IN: u8 = b'y';
    pub(crate) const JOIN: u8 = b'z';
    pub(crate) const ALL: u8 = b'A';
    pub(crate) const ANY: u8 = b'B';
    pub(crate) const AT_LEAST: u8 = b'C';
    pub(crate) const DEADLINE: u8 = b'D';
    pub(crate) const SCHEDULE: u8 = b'E';
    pub(crate) const TIMEZONE: u8 = b'F';
    pub(crate) const OVERLAP: u8 = b'G';
    pub(crate) const CATCHUP: u8 = b'H';
    pub(crate) const WITHIN: u8 = b'I';
    pub(crate) const JITTER: u8 = b'J';
    pub(crate) const INPUT: u8 = b'K';
    pub(crate) const RETRY: u8 = b'L';
    pub(crate) const BACKOFF: u8 = b'M';
    pub(crate) const FIXED: u8 = b'N';
    pub(crate) const EXPONENTIAL: u8 = b'O';
    pub(crate) const NON_RETRYABLE: u8 = b'P';
    pub(crate) const TIMEOUT: u8 = b'Q';
    pub(crate) const AFTER: u8 = b'R';
    pub(crate) const PARALLEL: u8 = b'S';
    pub(crate) const RAISES: u8 = b'T';
    pub(crate) const REPEAT: u8 = b'U';
    pub(crate) const AT_MOST: u8 = b'V';
    pub(crate) const UNTIL: u8 = b'W';

    /// A reserved keyword: never a name.
    pub(crate) fn is_reserved(k: u8) -> bool {
        matches!(k, b'a'..=b'r')
    }

    /// A contextual keyword: a name wherever a name is expected.
    pub(crate) fn is_contextual(k: u8) -> bool {
        matches!(k, b's'..=b'z' | b'A'..=b'W')
    }

    /// The grammar's `any_name`: a name, or a contextual keyword used as one.
    pub(crate) fn is_name(k: u8) -> bool {
        k == LOWER || k == UPPER || is_contextual(k)
    }

    /// The grammar's `any_word`: any name or keyword (`run.flow`, `approval { … }`).
    pub(crate) fn is_word(k: u8) -> bool {
        k == LOWER || k == UPPER || k.is_ascii_alphabetic()
    }
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

/// Which bytes can continue a name, as a table: this is the lexer's inner loop.
const IDENT_CHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    table
};

fn is_ident_char(b: u8) -> bool {
    IDENT_CHAR[usize::from(b)]
}

/// The end of the run of name characters starting at `from`.
fn ident_end(bytes: &[u8], from: usize) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    from + rest
        .iter()
        .position(|&c| !is_ident_char(c))
        .unwrap_or(rest.len())
}

/// The byte order mark, the only whitespace outside ASCII.
const BOM: &[u8] = "\u{FEFF}".as_bytes();

/// The length of the whitespace character at `pos`, if there is one.
fn space_len(bytes: &[u8], pos: usize) -> Option<usize> {
    match bytes.get(pos)? {
        b' ' | b'\t' | b'\r' | b'\n' => Some(1),
        0xEF if bytes.get(pos..pos + 3) == Some(BOM) => Some(3),
        _ => None,
    }
}

/// The first offset at or after `pos` that is not whitespace or inside a comment.
pub(crate) fn skip_trivia(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    loop {
        if let Some(n) = space_len(bytes, pos) {
            pos += n;
        } else if bytes.get(pos) == Some(&b'/') && bytes.get(pos + 1) == Some(&b'/') {
            pos = line_end(bytes, pos);
        } else {
            return pos;
        }
    }
}

/// Whether a `>=` just lexed would close type arguments: walking back from it over
/// names, commas, `?` and nested `<…>` reaches a `<` right after a name that
/// follows `:`, `->`, `<`, `,` or `type` (as `type M<T>=`). Comparisons never
/// look like that: `when a < b and c >= d` has `when` before `a`.
fn closes_type_args(kinds: &[u8]) -> bool {
    let mut need = 1usize;
    let mut i = kinds.len();
    while i > 0 {
        i -= 1;
        match kinds[i] {
            kind::GT => need += 1,
            kind::LT => {
                need -= 1;
                if need == 0 {
                    let name = i.checked_sub(1).map(|j| kinds[j]);
                    let before = i.checked_sub(2).map(|j| kinds[j]);
                    return matches!(name, Some(kind::UPPER | kind::LOWER))
                        && matches!(
                            before,
                            Some(kind::COLON | kind::ARROW | kind::LT | kind::COMMA | kind::TYPE)
                        );
                }
            }
            kind::UPPER | kind::LOWER | kind::COMMA | kind::QUESTION => {}
            _ => return false,
        }
    }
    false
}

/// The offset of the `\n` ending the line that contains `pos` (or the text's end).
fn line_end(bytes: &[u8], pos: usize) -> usize {
    bytes
        .get(pos..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        .map_or(bytes.len(), |i| pos + i)
}

/// The token starting exactly at `pos` (which must be past any trivia).
pub(crate) fn token_at(text: &str, pos: usize) -> Token {
    lex_one(text, pos).0
}

/// The token starting exactly at `pos`, and its [`kind`]. At the end of the text, an
/// `Eof` token of kind [`kind::END`].
fn lex_one(text: &str, pos: usize) -> (Token, u8) {
    let bytes = text.as_bytes();
    let Some(&b) = bytes.get(pos) else {
        let eof = Token {
            kind: TokKind::Eof,
            start: text.len(),
            end: text.len(),
        };
        return (eof, kind::END);
    };
    let mut end = pos + 1;
    let (tok_kind, k) = if b.is_ascii_alphabetic() || b == b'_' {
        end = ident_end(bytes, end);
        // Keywords are all lower-case.
        let k = if b.is_ascii_uppercase() {
            kind::UPPER
        } else {
            keyword_kind(&text[pos..end]).unwrap_or(kind::LOWER)
        };
        (TokKind::Word, k)
    } else if b.is_ascii_digit() {
        let (numeric, glued) = number_end(bytes, pos);
        end = glued;
        let is_float = bytes[pos..numeric]
            .iter()
            .any(|&c| matches!(c, b'.' | b'e' | b'E'));
        let k = if numeric == end {
            if is_float { kind::FLOAT } else { kind::INT }
        } else if !is_float && bytes[numeric..end].iter().all(|&c| is_ident_char(c)) {
            kind::DURATION
        } else {
            kind::OTHER
        };
        (TokKind::Number, k)
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
        let k = if closed {
            kind::STRING
        } else {
            kind::OPEN_STRING
        };
        (TokKind::Str { closed }, k)
    } else {
        let two = match bytes.get(pos + 1) {
            Some(&c) => match (b, c) {
                (b'-', b'>') => Some(kind::ARROW),
                (b'=', b'=') => Some(kind::EQ),
                (b'!', b'=') => Some(kind::NE),
                (b'<', b'=') => Some(kind::LE),
                (b'>', b'=') => Some(kind::GE),
                (b'?', b'?') => Some(kind::COALESCE),
                // Not eflow, but one token each, for the messages about them.
                (b'&', b'&') | (b'|', b'|') | (b':', b':') => Some(kind::OTHER),
                _ => None,
            },
            None => None,
        };
        let k = match two {
            Some(k) => {
                end = pos + 2;
                k
            }
            None => {
                end = pos + text[pos..].chars().next().map_or(1, char::len_utf8);
                match b {
                    b'(' | b')' | b'{' | b'}' | b'[' | b']' | b',' | b':' | b'.' | b'=' | b'<'
                    | b'>' | b'?' | b'-' => b,
                    _ => kind::OTHER,
                }
            }
        };
        (TokKind::Punct, k)
    };
    let tok = Token {
        kind: tok_kind,
        start: pos,
        end,
    };
    (tok, k)
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
    loop {
        end = ident_end(bytes, end);
        if bytes.get(end) != Some(&b'.') {
            break;
        }
        end += 1;
    }
    (numeric, end)
}

/// The kind of the keyword `word`, if it is one. A `match` rather than a search:
/// this runs for every word of every file.
pub(crate) fn keyword_kind(word: &str) -> Option<u8> {
    if !(2..=13).contains(&word.len()) {
        return None;
    }
    let k = match word {
        "from" => kind::FROM,
        "import" => kind::IMPORT,
        "record" => kind::RECORD,
        "enum" => kind::ENUM,
        "flow" => kind::FLOW,
        "step" => kind::STEP,
        "bindings" => kind::BINDINGS,
        "let" => kind::LET,
        "when" => kind::WHEN,
        "else" => kind::ELSE,
        "for" => kind::FOR,
        "return" => kind::RETURN,
        "true" => kind::TRUE,
        "false" => kind::FALSE,
        "none" => kind::NONE,
        "and" => kind::AND,
        "or" => kind::OR,
        "not" => kind::NOT,
        "as" => kind::AS,
        "type" => kind::TYPE,
        "remote" => kind::REMOTE,
        "call" => kind::CALL,
        "approval" => kind::APPROVAL,
        "wait" => kind::WAIT,
        "in" => kind::IN,
        "join" => kind::JOIN,
        "all" => kind::ALL,
        "any" => kind::ANY,
        "at_least" => kind::AT_LEAST,
        "deadline" => kind::DEADLINE,
        "schedule" => kind::SCHEDULE,
        "timezone" => kind::TIMEZONE,
        "overlap" => kind::OVERLAP,
        "catchup" => kind::CATCHUP,
        "within" => kind::WITHIN,
        "jitter" => kind::JITTER,
        "input" => kind::INPUT,
        "retry" => kind::RETRY,
        "backoff" => kind::BACKOFF,
        "fixed" => kind::FIXED,
        "exponential" => kind::EXPONENTIAL,
        "non_retryable" => kind::NON_RETRYABLE,
        "timeout" => kind::TIMEOUT,
        "after" => kind::AFTER,
        "parallel" => kind::PARALLEL,
        "raises" => kind::RAISES,
        "repeat" => kind::REPEAT,
        "at_most" => kind::AT_MOST,
        "until" => kind::UNTIL,
        _ => return None,
    };
    Some(k)
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
    /// Its tokens: indices into [`Scan::tokens`].
    pub toks: std::ops::Range<usize>,
    /// The first token past [`MAX_NESTING`], if any.
    pub too_deep: Option<(usize, usize)>,
}

#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub chunks: Vec<Chunk>,
    /// Every token of the file, in order.
    pub tokens: Vec<Token>,
    /// The [`kind`] of each token: what the parsers read.
    pub kinds: Vec<u8>,
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
    let bytes = text.as_bytes();
    // Most tokens are 2 to 8 bytes long; reserving up front avoids regrowing.
    let mut out = Scan {
        tokens: Vec::with_capacity(text.len() / 5),
        kinds: Vec::with_capacity(text.len() / 5),
        ..Scan::default()
    };
    let mut pos = 0;
    // Where each chunk starts: byte offset and token index.
    let mut starts: Vec<(usize, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut angle = 0usize;
    let mut too_deep: Vec<Option<(usize, usize)>> = Vec::new();
    let mut first_on_line = true;
    loop {
        // Trivia, recording comments.
        loop {
            match bytes.get(pos) {
                Some(b' ' | b'\t' | b'\r') => {
                    // Indentation comes in runs.
                    pos += 1;
                    while matches!(bytes.get(pos), Some(b' ')) {
                        pos += 1;
                    }
                }
                Some(b'\n') => {
                    first_on_line = true;
                    pos += 1;
                }
                Some(b'/') if bytes.get(pos + 1) == Some(&b'/') => {
                    let line_end = line_end(bytes, pos);
                    let mut end = line_end;
                    if bytes[end - 1] == b'\r' {
                        end -= 1;
                    }
                    let is_doc =
                        bytes.get(pos + 2) == Some(&b'/') && bytes.get(pos + 3) != Some(&b'/');
                    if is_doc {
                        out.doc_lines.push((pos, end));
                    } else {
                        out.comments.push((pos, end));
                    }
                    pos = line_end;
                }
                Some(0xEF) if bytes.get(pos..pos + 3) == Some(BOM) => pos += 3,
                _ => break,
            }
        }
        let (tok, k) = lex_one(text, pos);
        if tok.kind == TokKind::Eof {
            break;
        }
        let index = out.tokens.len();
        if k == kind::GE && closes_type_args(&out.kinds) {
            // `List<Int>=[]`, `type M<T>=…`: a `>` closing type arguments, then `=`.
            let gt = Token {
                kind: TokKind::Punct,
                start: tok.start,
                end: tok.start + 1,
            };
            let assign = Token {
                kind: TokKind::Punct,
                start: tok.start + 1,
                end: tok.end,
            };
            out.tokens.extend([gt, assign]);
            out.kinds.extend([kind::GT, kind::ASSIGN]);
            first_on_line = false;
            angle = 0;
            pos = tok.end;
            continue;
        }
        out.tokens.push(tok);
        out.kinds.push(k);
        if first_on_line {
            first_on_line = false;
            let column0 = tok.start == 0 || bytes[tok.start - 1] == b'\n';
            let item_start = starts.is_empty()
                || (tok.kind == TokKind::Word
                    && (depth == 0 || column0)
                    && starts_item(text, tok, depth == 0));
            if item_start {
                starts.push((tok.start, index));
                too_deep.push(None);
                depth = 0;
                angle = 0;
            }
        }
        match k {
            kind::LPAREN | kind::LBRACKET | kind::LBRACE => depth += 1,
            kind::RPAREN | kind::RBRACKET | kind::RBRACE => depth = depth.saturating_sub(1),
            _ => {}
        }
        // Type arguments nest with `<`; anything that cannot appear inside a type
        // ends the run, so comparisons do not add up.
        match k {
            kind::LT => angle += 1,
            kind::GT => angle = angle.saturating_sub(1),
            kind::COMMA | kind::QUESTION => {}
            kind::AND | kind::OR | kind::NOT => angle = 0,
            _ if tok.kind == TokKind::Word => {}
            _ => angle = 0,
        }
        if (depth > MAX_NESTING || angle > MAX_NESTING)
            && let Some(slot @ None) = too_deep.last_mut()
        {
            *slot = Some((tok.start, tok.end));
        }
        pos = tok.end;
    }
    out.chunks.reserve(starts.len());
    for (i, &(start, first)) in starts.iter().enumerate() {
        let (end, last) = starts
            .get(i + 1)
            .copied()
            .unwrap_or((text.len(), out.tokens.len()));
        out.chunks.push(Chunk {
            start,
            end,
            toks: first..last,
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
        assert_eq!(scan(text).kinds, b"h5=6(5:0,5:1,5:2,5:3)^$#7");
        let chars = (b'a'..=b'z').chain(b'A'..=b'W');
        assert_eq!(chars.clone().count(), KEYWORDS.len());
        for (i, (k, c)) in KEYWORDS.iter().zip(chars).enumerate() {
            assert_eq!(keyword_kind(k), Some(c), "{k}");
            assert_eq!(is_reserved(k), i < RESERVED_COUNT, "{k}");
            assert_eq!(kind::is_reserved(c), i < RESERVED_COUNT, "{k}");
            assert_eq!(kind::is_contextual(c), i >= RESERVED_COUNT, "{k}");
        }
    }

    /// The grammar's `kw_*` rules use the lexer's characters, and its `soft_kw`
    /// range is the contextual keywords.
    #[test]
    fn grammar_agrees_on_token_characters() {
        let grammar = include_str!("grammar.pest");
        for k in KEYWORDS {
            let c = char::from(keyword_kind(k).unwrap_or(0));
            let prefix = format!("kw_{k} ");
            let line = grammar.lines().find(|l| l.starts_with(&prefix));
            assert!(
                line.is_some_and(|l| l.contains(&format!("{{ \"{c}\" }}"))),
                "{k}: {line:?}"
            );
        }
        assert!(grammar.contains("soft_kw  = _{ 's'..'z' | 'A'..'W' }"));
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
