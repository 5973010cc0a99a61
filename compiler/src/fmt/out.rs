//! The output buffer: lines, indentation, blank lines, and the placing of comments.
//!
//! Comments are not in the tree, only in a sorted list with their offsets, so the
//! printer hands them out as it walks: before an element it flushes every comment
//! that starts before it (`leading`), and after an element it takes the next comment
//! if it was on the same line (`trailing`). Whatever is left inside an element when it
//! ends (a comment written in the middle of an expression) is moved above the line
//! being printed; nothing is ever dropped, and the order of comments never changes.

use crate::syntax::ast::{Comment, Doc};

/// What the last finished line was, for deciding about blank lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Nothing printed yet: no blank line at the top of the file.
    Nothing,
    Blank,
    /// A line that opened a block or a bracket: no blank line right after it.
    Opener,
    Other,
}

struct Line {
    indent: usize,
    text: String,
    /// The line starts with a closing bracket; a comment moved above it belongs to
    /// the bracket's contents, one level deeper.
    closer: bool,
}

pub(super) struct Out<'a> {
    src: &'a str,
    comments: &'a [Comment],
    next: usize,
    buf: String,
    last: Last,
    /// The last finished line is a `///` comment that documents nothing; a node
    /// printed right after it would take it as its doc comment.
    last_stray_doc: bool,
    line: Option<Line>,
    /// Where the current element begins in `buf` (before its doc comment): comments
    /// moved out of the element go there.
    anchor: usize,
    /// `anchor` was set by a doc comment for the line about to begin.
    anchor_held: bool,
}

fn is_stray_doc(c: &Comment) -> bool {
    c.text.starts_with('/') && !c.text.starts_with("//")
}

impl<'a> Out<'a> {
    pub(super) fn new(src: &'a str, comments: &'a [Comment]) -> Out<'a> {
        Out {
            src,
            comments,
            next: 0,
            buf: String::with_capacity(src.len() + src.len() / 8),
            last: Last::Nothing,
            last_stray_doc: false,
            line: None,
            anchor: 0,
            anchor_held: false,
        }
    }

    pub(super) fn finish(mut self) -> String {
        self.end();
        self.leading(usize::MAX, 0, true);
        self.buf
    }

    // -----------------------------------------------------------------------
    // Lines.

    /// Start a line at `indent`; ends any line in progress first.
    pub(super) fn begin(&mut self, indent: usize) {
        self.start(indent, false);
    }

    /// Start a line that begins with a closing bracket.
    pub(super) fn begin_closer(&mut self, indent: usize) {
        self.start(indent, true);
    }

    fn start(&mut self, indent: usize, closer: bool) {
        self.end();
        if !self.anchor_held {
            self.anchor = self.buf.len();
        }
        self.anchor_held = false;
        self.line = Some(Line {
            indent,
            text: String::new(),
            closer,
        });
    }

    pub(super) fn push(&mut self, s: &str) {
        if let Some(line) = &mut self.line {
            line.text.push_str(s);
        }
    }

    /// The column the next character would be printed at.
    pub(super) fn col(&self) -> usize {
        self.line
            .as_ref()
            .map_or(0, |l| l.indent + l.text.chars().count())
    }

    /// Finish the line in progress, if any.
    pub(super) fn end(&mut self) {
        if let Some(line) = self.line.take() {
            self.write_line(line.indent, line.text.trim_end());
            self.last = Last::Other;
            self.last_stray_doc = false;
        }
    }

    /// Finish a line that opened a block or bracket.
    pub(super) fn end_open(&mut self) {
        self.end();
        self.last = Last::Opener;
    }

    fn write_line(&mut self, indent: usize, text: &str) {
        if !text.is_empty() {
            self.buf.extend(std::iter::repeat_n(' ', indent));
            self.buf.push_str(text);
        }
        self.buf.push('\n');
    }

    /// One blank line, unless at the top of the file, after an opener or after
    /// another blank line.
    pub(super) fn blank(&mut self) {
        self.end();
        if self.last == Last::Other {
            self.buf.push('\n');
            self.last = Last::Blank;
        }
    }

    /// A blank line where the author left at least one before `pos`.
    pub(super) fn blank_if_written(&mut self, pos: usize) {
        if self.blank_before(pos) {
            self.blank();
        }
    }

    /// Whether the whitespace right before `pos` in the source holds an empty line.
    pub(super) fn blank_before(&self, pos: usize) -> bool {
        let bytes = self.src.as_bytes();
        let mut i = pos.min(bytes.len());
        let mut newlines = 0;
        while i > 0 && matches!(bytes[i - 1], b' ' | b'\t' | b'\r' | b'\n') {
            if bytes[i - 1] == b'\n' {
                newlines += 1;
            }
            i -= 1;
        }
        newlines >= 2
    }

    /// Whether the author left a blank line anywhere between the last thing printed
    /// and `pos`: before one of the comments still to print, or before `pos` itself.
    pub(super) fn blank_ahead(&self, pos: usize) -> bool {
        self.comments[self.next.min(self.comments.len())..]
            .iter()
            .take_while(|c| (c.span.start as usize) < pos)
            .any(|c| self.blank_before(c.span.start as usize))
            || self.blank_before(pos)
    }

    // -----------------------------------------------------------------------
    // Doc comments.

    /// Print a doc comment at `indent`; the next line begun is its node.
    pub(super) fn doc(&mut self, doc: &Doc, indent: usize) {
        self.end();
        self.guard_stray_doc(indent);
        self.anchor = self.buf.len();
        for line in doc.text.split('\n') {
            self.buf.extend(std::iter::repeat_n(' ', indent));
            self.buf.push_str("///");
            if !line.is_empty() {
                self.buf.push(' ');
                self.buf.push_str(line);
            }
            self.buf.push('\n');
        }
        self.last = Last::Other;
        self.last_stray_doc = false;
        self.anchor_held = true;
    }

    /// Before a node that takes doc comments: a `///` comment that documented nothing
    /// must not end up documenting it, so an empty `//` line goes between them.
    pub(super) fn guard_stray_doc(&mut self, indent: usize) {
        self.end();
        if self.last_stray_doc {
            self.write_line(indent, "//");
            self.last = Last::Other;
            self.last_stray_doc = false;
        }
    }

    // -----------------------------------------------------------------------
    // Comments.

    /// Whether a comment starts in `start..end`.
    pub(super) fn has_comment(&self, start: u32, end: u32) -> bool {
        let i = self.comments.partition_point(|c| c.span.start < start);
        self.comments.get(i).is_some_and(|c| c.span.start < end)
    }

    /// Print every comment not yet printed that starts before `pos`: on their own
    /// lines at `indent`, or, while a line is in progress, above that line. With
    /// `blanks`, a blank line the author left before a comment is kept.
    pub(super) fn leading(&mut self, pos: usize, indent: usize, blanks: bool) {
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start as usize >= pos {
                break;
            }
            self.next += 1;
            let text = format!("//{}", c.text.trim_end());
            match &self.line {
                Some(line) => {
                    let ind = line.indent + if line.closer { 4 } else { 0 };
                    let mut moved = " ".repeat(ind);
                    moved.push_str(&text);
                    moved.push('\n');
                    if is_stray_doc(c) {
                        moved.push_str(&" ".repeat(ind));
                        moved.push_str("//\n");
                    }
                    let at = self.anchor.min(self.buf.len());
                    self.buf.insert_str(at, &moved);
                    self.anchor = at + moved.len();
                    if at == self.buf.len() - moved.len() {
                        self.last = Last::Other;
                        self.last_stray_doc = false;
                    }
                }
                None => {
                    if blanks {
                        self.blank_if_written(c.span.start as usize);
                    }
                    self.write_line(indent, &text);
                    self.last = Last::Other;
                    self.last_stray_doc = is_stray_doc(c);
                    self.anchor = self.buf.len();
                }
            }
        }
    }

    /// After an element that ended at `end`: move comments left inside it above the
    /// line, then take a comment that followed it on the same line (past its comma).
    pub(super) fn trailing(&mut self, end: usize) {
        if self.line.is_none() {
            return;
        }
        self.leading(end, 0, false);
        let Some(c) = self.comments.get(self.next) else {
            return;
        };
        let start = c.span.start as usize;
        if start < end {
            return;
        }
        let between = self.src.get(end..start).unwrap_or("\n");
        if between
            .bytes()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b','))
        {
            self.next += 1;
            let text = format!(" //{}", c.text.trim_end());
            self.push(&text);
            if is_stray_doc(c) {
                // A trailing `///` is a plain comment wherever it goes next.
                self.last_stray_doc = false;
            }
        }
    }

    // -----------------------------------------------------------------------
    // Finding punctuation the tree has no span for.

    /// The offset of the first character at or after `pos` that is neither
    /// whitespace nor inside a comment.
    pub(super) fn skip_trivia(&self, mut pos: usize) -> usize {
        let bytes = self.src.as_bytes();
        while pos < bytes.len() {
            match bytes[pos] {
                b' ' | b'\t' | b'\r' | b'\n' => pos += 1,
                b'/' if bytes.get(pos + 1) == Some(&b'/') => {
                    while pos < bytes.len() && bytes[pos] != b'\n' {
                        pos += 1;
                    }
                }
                0xEF if self.src.get(pos..pos + 3) == Some("\u{FEFF}") => pos += 3,
                _ => break,
            }
        }
        pos
    }

    /// The offset of `want` (an ASCII punctuation mark or keyword) where the next
    /// token after `pos` is expected to be it, passing over tokens in `skip`.
    pub(super) fn find(&self, pos: usize, want: &str, skip: &[&str]) -> Option<usize> {
        let mut p = pos;
        for _ in 0..64 {
            p = self.skip_trivia(p);
            let rest = self.src.get(p..)?;
            if rest.starts_with(want) {
                return Some(p);
            }
            let s = skip.iter().find(|s| rest.starts_with(**s))?;
            p += s.len();
        }
        None
    }
}
