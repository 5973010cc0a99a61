//! Parsing `.eflow` text into the syntax tree, recovering after errors.
//!
//! The lexer turns the file into tokens and splits it into top-level items. Each
//! item is parsed by the descent parser (`descent.rs`), which builds the tree as it
//! goes; that is the whole story for a file without syntax errors. When it rejects
//! an item, the driver here recovers: a flow is walked statement by statement, so
//! one syntax error costs one item or one statement and one run reports every
//! independent mistake; a broken piece becomes an `Error` node. To say what is
//! wrong, the driver runs pest on the rejected piece: the pest grammar
//! (`grammar.pest`) is the specification the descent parser follows, and pest's
//! record of what it expected where it failed makes the messages ("expected `:`,
//! found `=`"). pest is several times slower, so it runs only where there is an
//! error. Comments never reach either parser: the lexer collects them, and doc
//! comments are attached by position.

use pest::Parser as _;

use super::descent::Simple;
use super::errors::{self, Ctx, Site};
use super::grammar::{EflowParser, Rule};
use super::lexer::{self, Chunk, ITEM_KEYWORDS, TokKind, Token};
use crate::diagnostics::{self, Code, Diagnostic};
use crate::source::FileId;
use crate::syntax::ast::*;

/// Parse one file. Always returns a tree; syntax errors come back as diagnostics.
pub fn parse(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    let scan = lexer::scan(text);
    let docs = DocMap::new(text, &scan.doc_lines);
    let mut p = Parser::new(file, text, &scan, &docs);
    let items: Vec<Item> = scan.chunks.iter().map(|c| p.item(c)).collect();
    let Parser {
        mut diags,
        mut used_docs,
        ..
    } = p;
    let mut comments: Vec<Comment> = scan
        .comments
        .iter()
        .map(|&(s, e)| comment(text, s, e))
        .collect();
    // Doc comments that document nothing are kept as comments, for the formatter.
    used_docs.sort_unstable();
    let stray = docs.leftover_lines(&scan.doc_lines, &used_docs);
    if !stray.is_empty() {
        comments.extend(stray.iter().map(|&(s, e)| comment(text, s, e)));
        comments.sort_by_key(|c| c.span.start);
    }
    diagnostics::sort(&mut diags);
    (File { items, comments }, diags)
}

fn comment(text: &str, start: usize, end: usize) -> Comment {
    Comment {
        text: text.get(start + 2..end).unwrap_or("").to_string(),
        span: Span::new(start, end),
    }
}

/// Doc comment blocks (consecutive `///` lines), keyed by the offset of the token
/// they precede: a node takes its doc by its start offset.
pub(super) struct DocMap {
    /// By target, which grows with the blocks' positions: searched, not hashed,
    /// since every field and parameter asks.
    blocks: Vec<(usize, Doc, std::ops::Range<usize>)>,
}

impl DocMap {
    pub(super) fn new(text: &str, lines: &[(usize, usize)]) -> DocMap {
        let mut blocks = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let first = i;
            while i + 1 < lines.len() && only_space(text, lines[i].1, lines[i + 1].0) {
                i += 1;
            }
            let last = i;
            i += 1;
            let mut body = String::new();
            for (k, &(s, e)) in lines[first..=last].iter().enumerate() {
                if k > 0 {
                    body.push('\n');
                }
                let line = text.get(s + 3..e).unwrap_or("");
                body.push_str(line.strip_prefix(' ').unwrap_or(line));
            }
            let end = lines[last].1;
            let target = skip_space(text, end);
            let doc = Doc {
                text: body,
                span: Span::new(lines[first].0, end),
            };
            blocks.push((target, doc, first..last + 1));
        }
        // Already in order (a block's target comes before the next block); a stable
        // sort keeps it that way whatever happens.
        blocks.sort_by_key(|b| b.0);
        DocMap { blocks }
    }

    pub(super) fn get(&self, start: u32) -> Option<&Doc> {
        let i = self
            .blocks
            .binary_search_by_key(&(start as usize), |b| b.0)
            .ok()?;
        self.blocks.get(i).map(|b| &b.1)
    }

    /// The lines of blocks whose target was never taken; `used` is sorted.
    fn leftover_lines(&self, lines: &[(usize, usize)], used: &[u32]) -> Vec<(usize, usize)> {
        self.blocks
            .iter()
            .filter(|b| used.binary_search(&(b.0 as u32)).is_err())
            .flat_map(|b| lines.get(b.2.clone()).unwrap_or_default().iter().copied())
            .collect()
    }
}

fn only_space(text: &str, from: usize, to: usize) -> bool {
    text.get(from..to)
        .is_some_and(|s| s.chars().all(|c| c.is_whitespace() || c == '\u{FEFF}'))
}

fn skip_space(text: &str, from: usize) -> usize {
    let rest = text.get(from..).unwrap_or("");
    from + rest.len() - rest.trim_start().len()
}

/// The parser's state, shared by the driver (here) and the descent parser.
pub(super) struct Parser<'t> {
    pub(super) file: FileId,
    /// The file as written: for names, literals, messages and docs.
    pub(super) text: &'t str,
    /// The file's tokens, and the kind of each (see `lexer::kind`).
    pub(super) toks: &'t [Token],
    pub(super) kinds: &'t [u8],
    /// The descent parser's cursor, and the end of its input: token indices.
    pub(super) pos: usize,
    pub(super) end: usize,
    pub(super) diags: Vec<Diagnostic>,
    pub(super) docs: &'t DocMap,
    /// Targets of the doc blocks attached so far.
    pub(super) used_docs: Vec<u32>,
    /// One "too deep" report per item or statement is enough.
    pub(super) deep_reported: bool,
    /// Salvaging a declaration that did not parse: broken fields, parameters
    /// and binding entries are skipped and listed in `broken` (the rule and
    /// the tokens), each to be reported on its own.
    pub(super) salvage: bool,
    pub(super) broken: Vec<(Rule, usize, usize)>,
}

impl<'t> Parser<'t> {
    pub(super) fn new(
        file: FileId,
        text: &'t str,
        scan: &'t lexer::Scan,
        docs: &'t DocMap,
    ) -> Parser<'t> {
        Parser {
            file,
            text,
            toks: &scan.tokens,
            kinds: &scan.kinds,
            pos: 0,
            end: 0,
            diags: Vec::new(),
            docs,
            used_docs: Vec::new(),
            deep_reported: false,
            salvage: false,
            broken: Vec::new(),
        }
    }

    // -----------------------------------------------------------------------
    // Driving: items and statements.

    /// The doc comment right before the node starting at `start`.
    pub(super) fn take_doc(&mut self, start: u32) -> Option<Doc> {
        let doc = self.docs.get(start)?.clone();
        self.used_docs.push(start);
        Some(doc)
    }

    fn site(&self, base: usize, limit: usize, ctx: Ctx) -> Site<'t> {
        Site {
            text: self.text,
            file: self.file,
            base,
            limit,
            ctx,
        }
    }

    fn error_item(&mut self, chunk: &Chunk) -> Item {
        let end = chunk
            .toks
            .end
            .checked_sub(1)
            .and_then(|last| self.toks.get(last))
            .map_or(chunk.end, |t| t.end);
        let span = Span::new(chunk.start, end.max(chunk.start));
        Item {
            doc: self.take_doc(span.start),
            kind: ItemKind::Error,
            span,
        }
    }

    /// Run the descent parser `f` on the tokens `first..last`. On failure, nothing it
    /// did remains.
    fn descend<T>(
        &mut self,
        first: usize,
        last: usize,
        f: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        self.pos = first;
        self.end = last.min(self.kinds.len()).max(first);
        self.attempt(f)
    }

    /// The syntax error of the tokens `first..last`, which the descent parser
    /// rejected as `rule`: pest parses them again and says what it expected.
    fn grammar_error(&self, rule: Rule, first: usize, last: usize, site: &Site<'_>) -> Diagnostic {
        let input = self
            .kinds
            .get(first..last.max(first))
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("");
        match EflowParser::parse(rule, input) {
            Err(e) => {
                let at = self.error_pos(&e, first, site.limit);
                errors::from_pest(site, &e, at)
            }
            // The two parsers disagree: a bug, which the agreement tests are there
            // to catch. Still a diagnostic rather than a panic, and never silent.
            Ok(_) => Diagnostic::new(
                Code::Syntax,
                self.file,
                Span::new(site.base, site.base),
                "internal parser error: the parser rejected what the grammar accepts",
            )
            .with_help("please report this, with the file"),
        }
    }

    fn item(&mut self, chunk: &Chunk) -> Item {
        self.deep_reported = false;
        if let Some((s, e)) = chunk.too_deep {
            self.diags
                .push(errors::too_deep(self.file, Span::new(s, e)));
            return self.error_item(chunk);
        }
        let (first, last) = (chunk.toks.start, chunk.toks.end);
        let Some(&tok) = self.toks.get(first).filter(|_| first < last) else {
            // A chunk always has a token; this is only for safety.
            return self.error_item(chunk);
        };
        let word = tok.text(self.text);
        if tok.kind != TokKind::Word || !ITEM_KEYWORDS.contains(&word) {
            self.diags
                .push(errors::bad_item_start(self.text, self.file, tok));
            return self.error_item(chunk);
        }
        if word == "flow" {
            return self.flow(chunk);
        }
        if let Some(item) = self.descend(first, last, Self::item_rule) {
            return item;
        }
        if let Some(item) = self.salvaged(chunk, Self::item_rule) {
            return item;
        }
        let site = self.site(chunk.start, chunk.end, Ctx::Item);
        let d = self.grammar_error(Rule::item, first, last, &site);
        self.diags.push(d);
        self.error_item(chunk)
    }

    /// Parses the chunk again, skipping broken fields, parameters and binding
    /// entries, each reported on its own: one typo in a record must not
    /// take the whole record (and every use of it) down with it.
    fn salvaged<T>(&mut self, chunk: &Chunk, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let (first, last) = (chunk.toks.start, chunk.toks.end);
        self.salvage = true;
        self.broken.clear();
        let got = self.descend(first, last, f);
        self.salvage = false;
        let broken = std::mem::take(&mut self.broken);
        let got = got.filter(|_| !broken.is_empty())?;
        let site = self.site(chunk.start, chunk.end, Ctx::Item);
        for (rule, a, b) in broken {
            let d = self.grammar_error(rule, a, b, &site);
            self.diags.push(d);
        }
        Some(got)
    }

    fn flow(&mut self, chunk: &Chunk) -> Item {
        let (first, last) = (chunk.toks.start, chunk.toks.end);
        // The usual case: the whole flow in one go.
        if let Some((flow, end)) = self.descend(first, last, Self::flow_item) {
            let span = Span::new(chunk.start, end);
            return Item {
                doc: self.take_doc(span.start),
                kind: ItemKind::Flow(flow),
                span,
            };
        }
        // Something in it is broken: the header, then statement by statement.
        let head = self
            .descend(first, last, Self::flow_head)
            .or_else(|| self.salvaged(chunk, Self::flow_head));
        let Some(head) = head else {
            let site = self.site(chunk.start, chunk.end, Ctx::Item);
            let d = self.grammar_error(Rule::flow_head, first, last, &site);
            self.diags.push(d);
            return self.error_item(chunk);
        };
        let (open, head_end) = (head.open.start, head.open.end);
        let doc = self.take_doc(chunk.start as u32);
        let mut pos = head_end;
        let (body, close) = self.recover_block(&mut pos, chunk.end, open);
        let end = match close {
            Some(c) => {
                let rest = lexer::next_token(&self.text[..chunk.end], c + 1);
                if rest.kind != TokKind::Eof {
                    let site = self.site(chunk.start, chunk.end, Ctx::Item);
                    self.diags.push(errors::trailing(&site, rest));
                }
                c + 1
            }
            None => body.last().map_or(head_end, |s| s.span.end as usize),
        };
        Item {
            doc,
            kind: ItemKind::Flow(FlowDecl {
                name: head.name,
                params: head.params,
                output: head.output,
                body,
            }),
            span: Span::new(chunk.start, end),
        }
    }

    /// The statements of a block whose `{` is at `open`, from `*pos` up to its `}`.
    /// Returns them and the offset of the `}` (None when the item ends first).
    fn recover_block(
        &mut self,
        pos: &mut usize,
        end: usize,
        open: usize,
    ) -> (Vec<Stmt>, Option<usize>) {
        let mut stmts = Vec::new();
        loop {
            let view = &self.text[..end];
            let tok = lexer::next_token(view, *pos);
            let word = tok.text(view);
            match tok.kind {
                TokKind::Eof => {
                    let site = self.site(open, end, Ctx::Stmt);
                    self.diags
                        .push(errors::unclosed_block(&site, open, tok.start));
                    *pos = end;
                    return (stmts, None);
                }
                TokKind::Punct if word == "}" => {
                    *pos = tok.end;
                    return (stmts, Some(tok.start));
                }
                TokKind::Word if word == "when" => {
                    *pos = tok.start;
                    stmts.push(self.recover_when(pos, end));
                }
                // `deadline` and `schedule` are contextual: `schedule = F()` is a
                // `let` that lacks its keyword, reported below.
                TokKind::Word
                    if matches!(word, "let" | "return")
                        || (matches!(word, "deadline" | "schedule")
                            && !lexer::next_token(view, tok.end).is_punct(view, "=")) =>
                {
                    let which = match word {
                        "let" => Simple::Let,
                        "return" => Simple::Return,
                        "deadline" => Simple::Deadline,
                        _ => Simple::Schedule,
                    };
                    *pos = tok.start;
                    self.recover_simple(which, pos, end, &mut stmts);
                }
                _ => {
                    let next = lexer::next_token(view, tok.end);
                    self.diags
                        .push(errors::bad_stmt_start(self.text, self.file, tok, next));
                    stmts.push(self.skip_stmt(pos, end));
                }
            }
        }
    }

    /// Skip a broken statement starting at `*pos`; it becomes an `Error` node.
    fn skip_stmt(&mut self, pos: &mut usize, end: usize) -> Stmt {
        let start = lexer::skip_trivia(&self.text[..end], *pos);
        let (resume, last_end) = lexer::stmt_resume_point(&self.text[..end], start);
        *pos = resume.max(start + 1).min(end);
        Stmt {
            kind: StmtKind::Error,
            span: Span::new(start, last_end.max(start)),
        }
    }

    /// A `let`, `return`, `deadline` or `schedule` statement at `*pos`, pushed to
    /// `out` (with an `Error` node for anything broken).
    fn recover_simple(&mut self, which: Simple, pos: &mut usize, end: usize, out: &mut Vec<Stmt>) {
        let start = *pos;
        self.deep_reported = false;
        // The statement's input stops where the next statement starts. pest's error
        // constructor scans from the end of its input back to the error, so with many
        // errors in one long flow, that keeps parsing linear.
        let (limit, last_end) = lexer::stmt_resume_point(&self.text[..end], start);
        let limit = limit.max(start + 1).min(end);
        *pos = limit;
        let (first, last) = self.token_range(start, limit);
        if let Some(stmt) = self.descend(first, last, |p| p.simple_stmt(which, true)) {
            *pos = stmt.span.end as usize;
            out.push(stmt);
            return;
        }
        let site = self.site(start, limit, Ctx::Stmt);
        let diag = self.grammar_error(which.rule(), first, last, &site);
        let error_at = diag.primary.span.start;
        self.diags.push(diag);
        // A complete statement followed by junk: keep the statement, and skip the
        // junk as an `Error` node.
        let bare = self.descend(first, last, |p| {
            p.simple_stmt(which, false)
                .filter(|stmt| stmt.span.end <= error_at)
        });
        if let Some(stmt) = bare {
            let junk = lexer::skip_trivia(&self.text[..limit], stmt.span.end as usize);
            out.push(stmt);
            if junk < limit {
                out.push(Stmt {
                    kind: StmtKind::Error,
                    span: Span::new(junk, last_end.max(junk)),
                });
            }
            return;
        }
        out.push(Stmt {
            kind: StmtKind::Error,
            span: Span::new(start, last_end.max(start)),
        });
    }

    fn recover_when(&mut self, pos: &mut usize, end: usize) -> Stmt {
        let start = *pos;
        self.deep_reported = false;
        // Bounded like a simple statement's input (see `recover_simple`).
        let (limit, _) = lexer::stmt_resume_point(&self.text[..end], start);
        let limit = limit.max(start + 1).min(end);
        let (first, last) = self.token_range(start, limit);
        let Some((cond, open)) = self.descend(first, last, Self::when_head) else {
            let site = self.site(start, limit, Ctx::Stmt);
            let d = self.grammar_error(Rule::when_head, first, last, &site);
            self.diags.push(d);
            return self.skip_stmt(pos, end);
        };
        *pos = open.end;
        let open = open.start;
        let (then_body, close) = self.recover_block(pos, end, open);
        let Some(close) = close else {
            let stmt_end = then_body.last().map_or(open + 1, |s| s.span.end as usize);
            return Stmt {
                kind: StmtKind::When(WhenStmt {
                    cond,
                    then_body,
                    else_body: None,
                }),
                span: Span::new(start, stmt_end),
            };
        };
        let mut stmt_end = close + 1;
        let mut else_body = None;
        let next = lexer::next_token(&self.text[..end], *pos);
        if next.is_word(self.text, "else") {
            let else_limit = lexer::next_token(&self.text[..end], next.end).end;
            let (else_first, else_last) = self.token_range(next.start, else_limit);
            match self.descend(else_first, else_last, Self::else_head) {
                Some(brace) => {
                    *pos = brace.end;
                    let (body, close) = self.recover_block(pos, end, brace.start);
                    stmt_end = match close {
                        Some(c) => c + 1,
                        None => body.last().map_or(brace.end, |s| s.span.end as usize),
                    };
                    else_body = Some(body);
                }
                None => {
                    let site = self.site(next.start, else_limit, Ctx::Stmt);
                    let mut d = self.grammar_error(Rule::else_head, else_first, else_last, &site);
                    if d.help.is_none() {
                        d = d.with_help("write `else { when … { … } }` for another condition");
                    }
                    self.diags.push(d);
                    // The broken `else` part is skipped; the `when` itself stands.
                    *pos = next.start;
                    let _ = self.skip_stmt(pos, end);
                }
            }
        }
        Stmt {
            kind: StmtKind::When(WhenStmt {
                cond,
                then_body,
                else_body,
            }),
            span: Span::new(start, stmt_end),
        }
    }

    /// The tokens in bytes `from..to`, as a range of token indices.
    fn token_range(&self, from: usize, to: usize) -> (usize, usize) {
        let first = self.toks.partition_point(|t| t.start < from);
        let last = self.toks.partition_point(|t| t.start < to).max(first);
        (first, last)
    }

    /// The byte offset of a pest error in an input starting at token `first`;
    /// `limit` when the error is at the end of the input.
    fn error_pos(&self, e: &pest::error::Error<Rule>, first: usize, limit: usize) -> usize {
        let rel = match e.location {
            pest::error::InputLocation::Pos(p) => p,
            pest::error::InputLocation::Span((s, _)) => s,
        };
        self.toks
            .get(first + rel)
            .map_or(limit, |t| t.start.min(limit))
    }
}
