//! Parsing `.eflow` text into the syntax tree, recovering after errors.
//!
//! The lexer turns the file into tokens, and pest parses a string of one character
//! per token (see `grammar.pest`); pair positions are token indices, mapped back
//! to bytes here. pest stops at its first error, so the grammar is never run on a
//! whole file: the lexer splits the file into top-level items and pest parses each
//! one on its own. A flow is first parsed in one go; if that fails, its body is
//! walked statement by statement. A broken item or statement becomes an `Error`
//! node with one diagnostic and parsing goes on with the next one, so one run
//! reports every independent mistake. Comments never reach pest: the lexer
//! collects them, and doc comments are attached by position.

use std::collections::HashMap;

use pest::Parser as _;
use pest::iterators::Pair;

use super::errors::{self, Ctx, Site};
use super::grammar::{EflowParser, Rule};
use super::lexer::{self, Chunk, ITEM_KEYWORDS, TokKind, Token};
use super::literals;
use crate::diagnostics::{self, Code, Diagnostic};
use crate::source::FileId;
use crate::syntax::ast::*;

/// Deepest expression tree accepted. Brackets are capped at
/// [`lexer::MAX_NESTING`] before pest runs; this also bounds long operator chains
/// and prefix runs (`not not not …`), which later passes walk recursively.
const MAX_EXPR_DEPTH: usize = 256;

/// Files at least this large are parsed on several threads, a share of the items
/// each: items parse independently, and pest's per-rule overhead makes a single
/// thread the bottleneck on generated, very large files.
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// Parse one file. Always returns a tree; syntax errors come back as diagnostics.
pub fn parse(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    let scan = lexer::scan(text);
    let docs = DocMap::new(text, &scan.doc_lines);
    let run = |chunks: &[Chunk]| {
        let mut p = Parser {
            file,
            text,
            toks: &scan.tokens,
            token_str: &scan.token_str,
            base: 0,
            diags: Vec::new(),
            docs: &docs,
            used_docs: Vec::new(),
            deep_reported: false,
        };
        let items: Vec<Item> = chunks.iter().map(|c| p.item(c)).collect();
        (items, p.diags, p.used_docs)
    };
    let threads = if text.len() >= PARALLEL_MIN_BYTES {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    } else {
        1
    };
    let results = if threads <= 1 || scan.chunks.len() < 2 {
        vec![run(&scan.chunks)]
    } else {
        let per = scan.chunks.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = scan
                .chunks
                .chunks(per)
                .map(|group| s.spawn(|| run(group)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        let d = Diagnostic::new(
                            Code::Syntax,
                            file,
                            Span::default(),
                            "internal parser error: a parsing thread failed",
                        );
                        (Vec::new(), vec![d], Vec::new())
                    })
                })
                .collect()
        })
    };
    let mut items = Vec::with_capacity(scan.chunks.len());
    let mut diags = Vec::new();
    let mut used = std::collections::HashSet::new();
    for (i, d, u) in results {
        items.extend(i);
        diags.extend(d);
        used.extend(u);
    }
    let mut comments: Vec<Comment> = scan
        .comments
        .iter()
        .map(|&(s, e)| comment(text, s, e))
        .collect();
    // Doc comments that document nothing are kept as comments, for the formatter.
    let stray = docs.leftover_lines(&scan.doc_lines, &used);
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
struct DocMap {
    by_target: HashMap<usize, (Doc, std::ops::Range<usize>)>,
}

impl DocMap {
    fn new(text: &str, lines: &[(usize, usize)]) -> DocMap {
        let mut by_target = HashMap::new();
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
            by_target.insert(
                target,
                (
                    Doc {
                        text: body,
                        span: Span::new(lines[first].0, end),
                    },
                    first..last + 1,
                ),
            );
        }
        DocMap { by_target }
    }

    fn get(&self, start: u32) -> Option<&Doc> {
        self.by_target.get(&(start as usize)).map(|(d, _)| d)
    }

    /// The lines of blocks whose target was never taken.
    fn leftover_lines(
        &self,
        lines: &[(usize, usize)],
        used: &std::collections::HashSet<u32>,
    ) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = self
            .by_target
            .iter()
            .filter(|&(target, _)| !used.contains(&(*target as u32)))
            .flat_map(|(_, (_, r))| lines[r.clone()].iter().copied())
            .collect();
        out.sort_unstable();
        out
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

struct Parser<'t> {
    file: FileId,
    /// The file as written: for messages, comments and docs.
    text: &'t str,
    /// The file's tokens, and one character per token: what pest parses.
    toks: &'t [Token],
    token_str: &'t str,
    /// Index of the first token of the input the current pest pairs come from.
    base: usize,
    diags: Vec<Diagnostic>,
    docs: &'t DocMap,
    /// Targets of the doc blocks attached so far.
    used_docs: Vec<u32>,
    /// One "too deep" report per item or statement is enough.
    deep_reported: bool,
}

type P<'i> = Pair<'i, Rule>;

/// Marker for a tree shape the grammar guarantees; seeing it means a bug here.
struct Malformed;

type R<T> = Result<T, Malformed>;

fn next<'i>(it: &mut impl Iterator<Item = P<'i>>, rule: Rule) -> R<P<'i>> {
    for p in it.by_ref() {
        if p.as_rule() == rule {
            return Ok(p);
        }
    }
    Err(Malformed)
}

impl<'t> Parser<'t> {
    // -----------------------------------------------------------------------
    // Driving: items and statements.

    /// The doc comment right before the node starting at `start`.
    fn take_doc(&mut self, start: u32) -> Option<Doc> {
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
        let end =
            lexer::prev_token_end(self.text, chunk.start, chunk.end).map_or(chunk.end, |t| t.1);
        let span = Span::new(chunk.start, end.max(chunk.start));
        Item {
            doc: self.take_doc(span.start),
            kind: ItemKind::Error,
            span,
        }
    }

    fn item(&mut self, chunk: &Chunk) -> Item {
        self.deep_reported = false;
        if let Some((s, e)) = chunk.too_deep {
            self.diags
                .push(errors::too_deep(self.file, Span::new(s, e)));
            return self.error_item(chunk);
        }
        let tok = lexer::next_token(&self.text[..chunk.end], chunk.start);
        let word = tok.text(self.text);
        if tok.kind != TokKind::Word || !ITEM_KEYWORDS.contains(&word) {
            self.diags
                .push(errors::bad_item_start(self.text, self.file, tok));
            return self.error_item(chunk);
        }
        if word == "flow" {
            return self.flow(chunk);
        }
        let (first, input) = self.input(chunk.start, chunk.end);
        match EflowParser::parse(Rule::item, input) {
            Ok(mut pairs) => {
                self.base = first;
                let built = pairs
                    .next()
                    .ok_or(Malformed)
                    .and_then(|item| item.into_inner().next().ok_or(Malformed))
                    .and_then(|decl| {
                        let span = self.span(&decl);
                        let doc = self.take_doc(span.start);
                        Ok(Item {
                            doc,
                            kind: self.decl(decl)?,
                            span,
                        })
                    });
                match built {
                    Ok(item) => item,
                    Err(Malformed) => self.internal(chunk),
                }
            }
            Err(e) => {
                let site = self.site(chunk.start, chunk.end, Ctx::Item);
                let at = self.error_pos(&e, first, chunk.end);
                self.diags.push(errors::from_pest(&site, &e, at));
                self.error_item(chunk)
            }
        }
    }

    fn internal(&mut self, chunk: &Chunk) -> Item {
        let span = Span::new(chunk.start, chunk.start);
        self.diags.push(Diagnostic::new(
            Code::Syntax,
            self.file,
            span,
            "internal parser error: unexpected syntax tree shape",
        ));
        self.error_item(chunk)
    }

    fn flow(&mut self, chunk: &Chunk) -> Item {
        let (first, input) = self.input(chunk.start, chunk.end);
        if let Ok(mut pairs) = EflowParser::parse(Rule::flow_item, input) {
            self.base = first;
            let (diags, docs) = (self.diags.len(), self.used_docs.len());
            let built = pairs
                .next()
                .ok_or(Malformed)
                .and_then(|p| self.whole_flow(p));
            if built.is_err() {
                // Never expected; if it happens, the slow path below reports afresh.
                self.diags.truncate(diags);
                self.used_docs.truncate(docs);
            }
            if let Ok(flow) = built {
                let span = Span::new(chunk.start, flow.1);
                return Item {
                    doc: self.take_doc(span.start),
                    kind: ItemKind::Flow(flow.0),
                    span,
                };
            }
        }
        let head = match EflowParser::parse(Rule::flow_head, input) {
            Ok(mut pairs) => pairs.next(),
            Err(e) => {
                let site = self.site(chunk.start, chunk.end, Ctx::Item);
                let at = self.error_pos(&e, first, chunk.end);
                self.diags.push(errors::from_pest(&site, &e, at));
                return self.error_item(chunk);
            }
        };
        self.base = first;
        let Some(head) = head else {
            return self.internal(chunk);
        };
        let head_end = self.span(&head).end as usize;
        let Ok((name, params, output, open)) = self.flow_head(head) else {
            return self.internal(chunk);
        };
        let doc = self.take_doc(chunk.start as u32);
        let mut pos = head_end;
        let (body, close) = self.block(&mut pos, chunk.end, open);
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
                name,
                params,
                output,
                body,
            }),
            span: Span::new(chunk.start, end),
        }
    }

    /// A flow parsed by `flow_item` in one go, and the end of its last token.
    fn whole_flow(&mut self, p: P<'_>) -> R<(FlowDecl, usize)> {
        let mut name = None;
        let mut params = Vec::new();
        let mut output = None;
        let mut body = None;
        let mut end = 0;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::type_name => name = Some(self.ident(&c)),
                Rule::params => params = self.params(c)?,
                Rule::ret_type => output = Some(self.ret_type(c)?),
                Rule::block => {
                    end = self.span(&c).end as usize;
                    body = Some(self.block_pairs(c)?);
                }
                _ => {}
            }
        }
        let flow = FlowDecl {
            name: name.ok_or(Malformed)?,
            params,
            output,
            body: body.ok_or(Malformed)?,
        };
        Ok((flow, end))
    }

    fn block_pairs(&mut self, p: P<'_>) -> R<Vec<Stmt>> {
        let mut out = Vec::new();
        for c in p.into_inner() {
            if matches!(c.as_rule(), Rule::lbrace | Rule::rbrace) {
                continue;
            }
            self.deep_reported = false;
            let span = self.span(&c);
            let kind = if c.as_rule() == Rule::when_stmt {
                let mut cond = None;
                let mut blocks = Vec::new();
                for w in c.into_inner() {
                    match w.as_rule() {
                        Rule::expr_nr => cond = Some(self.expr(w)?),
                        Rule::block => blocks.push(self.block_pairs(w)?),
                        _ => {}
                    }
                }
                let mut blocks = blocks.into_iter();
                StmtKind::When(WhenStmt {
                    cond: cond.ok_or(Malformed)?,
                    then_body: blocks.next().ok_or(Malformed)?,
                    else_body: blocks.next(),
                })
            } else {
                self.stmt(c)?
            };
            out.push(Stmt { kind, span });
        }
        Ok(out)
    }

    #[allow(clippy::type_complexity)]
    fn flow_head(&mut self, head: P<'_>) -> R<(Ident, Vec<Param>, Option<TypeExpr>, usize)> {
        let mut name = None;
        let mut params = Vec::new();
        let mut output = None;
        let mut open = None;
        for p in head.into_inner() {
            match p.as_rule() {
                Rule::type_name => name = Some(self.ident(&p)),
                Rule::params => params = self.params(p)?,
                Rule::ret_type => output = Some(self.ret_type(p)?),
                Rule::lbrace => open = Some(self.span(&p).start as usize),
                _ => {}
            }
        }
        Ok((
            name.ok_or(Malformed)?,
            params,
            output,
            open.ok_or(Malformed)?,
        ))
    }

    /// The statements of a block whose `{` is at `open`, from `*pos` up to its `}`.
    /// Returns them and the offset of the `}` (None when the item ends first).
    fn block(&mut self, pos: &mut usize, end: usize, open: usize) -> (Vec<Stmt>, Option<usize>) {
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
                    stmts.push(self.when_stmt(pos, end));
                }
                // `deadline` and `schedule` are contextual: `schedule = F()` is a
                // `let` that lacks its keyword, reported below.
                TokKind::Word
                    if matches!(word, "let" | "return")
                        || (matches!(word, "deadline" | "schedule")
                            && !lexer::next_token(view, tok.end).is_punct(view, "=")) =>
                {
                    let (rule, bare) = match word {
                        "let" => (Rule::let_stmt, Rule::let_bare),
                        "return" => (Rule::return_stmt, Rule::return_bare),
                        "deadline" => (Rule::deadline_stmt, Rule::deadline_bare),
                        _ => (Rule::schedule_stmt, Rule::schedule_bare),
                    };
                    *pos = tok.start;
                    self.simple_stmt(rule, bare, pos, end, &mut stmts);
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
    fn simple_stmt(
        &mut self,
        rule: Rule,
        bare: Rule,
        pos: &mut usize,
        end: usize,
        out: &mut Vec<Stmt>,
    ) {
        let start = *pos;
        self.deep_reported = false;
        // pest's error constructor scans from the end of its input back to the error,
        // so its input stops where the next statement starts: with many errors in one
        // long flow, that keeps parsing linear.
        let (limit, last_end) = lexer::stmt_resume_point(&self.text[..end], start);
        let limit = limit.max(start + 1).min(end);
        *pos = limit;
        let (first, input) = self.input(start, limit);
        let err = match EflowParser::parse(rule, input) {
            Ok(mut pairs) => {
                if let Some(pair) = pairs.next() {
                    self.base = first;
                    *pos = self.span(&pair).end as usize;
                    out.push(self.built_stmt(first, pair));
                    return;
                }
                None
            }
            Err(e) => Some(e),
        };
        let error_span = Span::new(start, last_end.max(start));
        let Some(e) = err else {
            out.push(Stmt {
                kind: StmtKind::Error,
                span: error_span,
            });
            return;
        };
        let site = self.site(start, limit, Ctx::Stmt);
        let at = self.error_pos(&e, first, limit);
        let diag = errors::from_pest(&site, &e, at);
        let error_at = diag.primary.span.start;
        self.diags.push(diag);
        // A complete statement followed by junk: keep the statement, and skip the
        // junk as an `Error` node.
        if let Ok(mut pairs) = EflowParser::parse(bare, input)
            && let Some(pair) = pairs.next()
        {
            let stmt = self.built_stmt(first, pair);
            if stmt.span.end <= error_at {
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
        }
        out.push(Stmt {
            kind: StmtKind::Error,
            span: error_span,
        });
    }

    fn built_stmt(&mut self, first: usize, pair: P<'_>) -> Stmt {
        self.base = first;
        let span = self.span(&pair);
        match self.stmt(pair) {
            Ok(kind) => Stmt { kind, span },
            Err(Malformed) => Stmt {
                kind: StmtKind::Error,
                span,
            },
        }
    }

    fn when_stmt(&mut self, pos: &mut usize, end: usize) -> Stmt {
        let start = *pos;
        self.deep_reported = false;
        // Bounded like a simple statement's input (see `simple_stmt`).
        let (limit, _) = lexer::stmt_resume_point(&self.text[..end], start);
        let limit = limit.max(start + 1).min(end);
        let (first, input) = self.input(start, limit);
        let head = match EflowParser::parse(Rule::when_head, input) {
            Ok(mut pairs) => pairs.next(),
            Err(e) => {
                let site = self.site(start, limit, Ctx::Stmt);
                let at = self.error_pos(&e, first, limit);
                self.diags.push(errors::from_pest(&site, &e, at));
                return self.skip_stmt(pos, end);
            }
        };
        self.base = first;
        let Some(head) = head else {
            return self.skip_stmt(pos, end);
        };
        *pos = self.span(&head).end as usize;
        let mut cond = None;
        let mut open = None;
        for p in head.into_inner() {
            match p.as_rule() {
                Rule::expr_nr => cond = self.expr(p).ok(),
                Rule::lbrace => open = Some(self.span(&p).start as usize),
                _ => {}
            }
        }
        let (Some(cond), Some(open)) = (cond, open) else {
            return self.skip_stmt(pos, end);
        };
        let (then_body, close) = self.block(pos, end, open);
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
            let (else_first, else_input) = self.input(next.start, else_limit);
            match EflowParser::parse(Rule::else_head, else_input) {
                Ok(_) => {
                    let brace = lexer::next_token(&self.text[..end], next.end);
                    *pos = brace.end;
                    let (body, close) = self.block(pos, end, brace.start);
                    stmt_end = match close {
                        Some(c) => c + 1,
                        None => body.last().map_or(brace.end, |s| s.span.end as usize),
                    };
                    else_body = Some(body);
                }
                Err(e) => {
                    let site = self.site(next.start, else_limit, Ctx::Stmt);
                    let at = self.error_pos(&e, else_first, else_limit);
                    let mut d = errors::from_pest(&site, &e, at);
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

    // -----------------------------------------------------------------------
    // Building tree nodes from pairs (positions are token indices from `self.base`).

    /// Index of the first token at or after byte `offset`.
    fn token_index(&self, offset: usize) -> usize {
        self.toks.partition_point(|t| t.start < offset)
    }

    /// pest's input for the tokens in bytes `from..to`, and its first token's index.
    fn input(&self, from: usize, to: usize) -> (usize, &'t str) {
        let first = self.token_index(from);
        let last = self.token_index(to).max(first);
        (first, self.token_str.get(first..last).unwrap_or(""))
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

    /// A pair's bytes: from its first token's start to its last token's end.
    fn span(&self, p: &P<'_>) -> Span {
        let first = self.base + p.as_span().start();
        let end = self.base + p.as_span().end();
        match (
            self.toks.get(first),
            end.checked_sub(1).and_then(|l| self.toks.get(l)),
        ) {
            (Some(a), Some(b)) if end > first => Span::new(a.start, b.end),
            (Some(a), _) => Span::new(a.start, a.start),
            _ => Span::new(self.text.len(), self.text.len()),
        }
    }

    /// The source text of a pair.
    fn lexeme(&self, p: &P<'_>) -> &'t str {
        let span = self.span(p);
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }

    fn ident(&self, p: &P<'_>) -> Ident {
        Ident {
            name: self.lexeme(p).to_string(),
            span: self.span(p),
        }
    }

    fn decl(&mut self, p: P<'_>) -> R<ItemKind> {
        Ok(match p.as_rule() {
            Rule::import_decl => ItemKind::Import(self.import(p)?),
            Rule::record_decl => {
                let mut name = None;
                let mut generics = Vec::new();
                let mut fields = Vec::new();
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::type_name => name = Some(self.ident(&c)),
                        Rule::generics => generics = self.generics(c),
                        Rule::field => fields.push(self.field(c)?),
                        _ => {}
                    }
                }
                ItemKind::Record(RecordDecl {
                    name: name.ok_or(Malformed)?,
                    generics,
                    fields,
                })
            }
            Rule::enum_decl => {
                let mut name = None;
                let mut variants = Vec::new();
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::type_name => name = Some(self.ident(&c)),
                        Rule::variant => {
                            let n = next(&mut c.into_inner(), Rule::variant_name)?;
                            let name = self.ident(&n);
                            variants.push(Variant {
                                doc: self.take_doc(name.span.start),
                                name,
                            });
                        }
                        _ => {}
                    }
                }
                ItemKind::Enum(EnumDecl {
                    name: name.ok_or(Malformed)?,
                    variants,
                })
            }
            Rule::alias_decl => {
                let mut name = None;
                let mut generics = Vec::new();
                let mut ty = None;
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::type_name => name = Some(self.ident(&c)),
                        Rule::generics => generics = self.generics(c),
                        Rule::type_expr => ty = Some(self.type_expr(c)?),
                        _ => {}
                    }
                }
                ItemKind::Alias(AliasDecl {
                    name: name.ok_or(Malformed)?,
                    generics,
                    ty: ty.ok_or(Malformed)?,
                })
            }
            Rule::step_decl => ItemKind::Step(self.step(p)?),
            Rule::bindings_decl => {
                let mut env = None;
                let mut entries = Vec::new();
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::env_name => env = Some(self.ident(&c)),
                        Rule::binding => entries.push(self.binding(c)?),
                        _ => {}
                    }
                }
                ItemKind::Bindings(BindingsDecl {
                    env: env.ok_or(Malformed)?,
                    entries,
                })
            }
            _ => return Err(Malformed),
        })
    }

    fn import(&mut self, p: P<'_>) -> R<Import> {
        let mut path = None;
        let mut names = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::string_lit => path = Some(self.str_lit(&c)),
                Rule::import_name => {
                    let mut parts = c.into_inner().filter(|x| x.as_rule() == Rule::name);
                    let name = self.ident(&parts.next().ok_or(Malformed)?);
                    let alias = parts.next().map(|a| self.ident(&a));
                    names.push(ImportName { name, alias });
                }
                _ => {}
            }
        }
        Ok(Import {
            path: path.ok_or(Malformed)?,
            names,
        })
    }

    fn generics(&self, p: P<'_>) -> Vec<Ident> {
        p.into_inner()
            .filter(|c| c.as_rule() == Rule::type_param)
            .map(|c| self.ident(&c))
            .collect()
    }

    fn field(&mut self, p: P<'_>) -> R<Field> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = self.ident(&next(&mut it, Rule::field_name)?);
        let ty = self.type_expr(next(&mut it, Rule::type_expr)?)?;
        Ok(Field {
            doc: self.take_doc(span.start),
            name,
            ty,
            span,
        })
    }

    fn type_expr(&mut self, p: P<'_>) -> R<TypeExpr> {
        let span = self.span(&p);
        let mut name = None;
        let mut args = Vec::new();
        let mut optional = false;
        let mut named_end = span.end;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::type_name => {
                    name = Some(self.ident(&c));
                    named_end = self.span(&c).end;
                }
                Rule::type_args => {
                    named_end = self.span(&c).end;
                    for a in c.into_inner() {
                        if a.as_rule() == Rule::type_expr {
                            args.push(self.type_expr(a)?);
                        }
                    }
                }
                Rule::question => optional = true,
                _ => {}
            }
        }
        let named = TypeExpr {
            kind: TypeExprKind::Named {
                name: name.ok_or(Malformed)?,
                args,
            },
            span: Span {
                start: span.start,
                end: named_end,
            },
        };
        Ok(if optional {
            TypeExpr {
                kind: TypeExprKind::Optional(Box::new(named)),
                span,
            }
        } else {
            named
        })
    }

    fn step(&mut self, p: P<'_>) -> R<StepDecl> {
        let mut kind = None;
        let mut name = None;
        let mut generics = Vec::new();
        let mut params = Vec::new();
        let mut output = None;
        let mut raises = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::step_kind => {
                    let span = self.span(&c);
                    let k = match c.into_inner().next().map(|k| k.as_rule()) {
                        Some(Rule::kw_remote) => StepKind::Remote,
                        Some(Rule::kw_call) => StepKind::Call,
                        Some(Rule::kw_approval) => StepKind::Approval,
                        Some(Rule::kw_wait) => StepKind::Wait,
                        _ => return Err(Malformed),
                    };
                    kind = Some((k, span));
                }
                Rule::step_name => name = Some(self.ident(&c)),
                Rule::generics => generics = self.generics(c),
                Rule::params => params = self.params(c)?,
                Rule::ret_type => output = Some(self.ret_type(c)?),
                Rule::raises_clause => {
                    raises = c
                        .into_inner()
                        .filter(|e| e.as_rule() == Rule::error_name)
                        .map(|e| self.ident(&e))
                        .collect();
                }
                _ => {}
            }
        }
        let (kind, kind_span) = kind.ok_or(Malformed)?;
        Ok(StepDecl {
            kind,
            kind_span,
            name: name.ok_or(Malformed)?,
            generics,
            params,
            output,
            raises,
        })
    }

    fn params(&mut self, p: P<'_>) -> R<Vec<Param>> {
        let mut out = Vec::new();
        for c in p.into_inner() {
            if c.as_rule() != Rule::param {
                continue;
            }
            let span = self.span(&c);
            let mut it = c.into_inner();
            let name = self.ident(&next(&mut it, Rule::param_name)?);
            let ty = self.type_expr(next(&mut it, Rule::type_expr)?)?;
            let default = match it.find(|x| x.as_rule() == Rule::expr) {
                Some(e) => Some(self.expr(e)?),
                None => None,
            };
            out.push(Param {
                doc: self.take_doc(span.start),
                name,
                ty,
                default,
                span,
            });
        }
        Ok(out)
    }

    fn ret_type(&mut self, p: P<'_>) -> R<TypeExpr> {
        self.type_expr(next(&mut p.into_inner(), Rule::type_expr)?)
    }

    fn binding(&mut self, p: P<'_>) -> R<Binding> {
        let span = self.span(&p);
        let mut step = None;
        let mut connector = None;
        let mut config = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::step_name => step = Some(self.ident(&c)),
                Rule::connector_name => connector = Some(self.ident(&c)),
                Rule::config => {
                    let span = self.span(&c);
                    let mut it = c.into_inner();
                    let key = self.ident(&next(&mut it, Rule::config_key)?);
                    let value = self.expr(next(&mut it, Rule::expr)?)?;
                    config.push(ConfigEntry { key, value, span });
                }
                _ => {}
            }
        }
        Ok(Binding {
            doc: self.take_doc(span.start),
            step: step.ok_or(Malformed)?,
            connector: connector.ok_or(Malformed)?,
            config,
            span,
        })
    }

    // -----------------------------------------------------------------------
    // Statements.

    fn stmt(&mut self, p: P<'_>) -> R<StmtKind> {
        Ok(match p.as_rule() {
            Rule::let_stmt | Rule::let_bare => {
                let mut name = None;
                let mut value = None;
                let mut options = Vec::new();
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::var_name => name = Some(self.ident(&c)),
                        Rule::call => value = Some(StepExpr::Call(self.call(c)?)),
                        Rule::for_each => value = Some(StepExpr::ForEach(self.for_each(c)?)),
                        Rule::step_option => options.push(self.step_option(c)?),
                        _ => {}
                    }
                }
                StmtKind::Let(LetStmt {
                    name: name.ok_or(Malformed)?,
                    value: value.ok_or(Malformed)?,
                    options,
                })
            }
            Rule::return_stmt | Rule::return_bare => {
                StmtKind::Return(self.expr(next(&mut p.into_inner(), Rule::expr)?)?)
            }
            Rule::deadline_stmt | Rule::deadline_bare => {
                let d = p.into_inner().nth(1).ok_or(Malformed)?;
                StmtKind::Deadline(self.duration(&d))
            }
            Rule::schedule_stmt | Rule::schedule_bare => {
                let mut cron = None;
                let mut clauses = Vec::new();
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::string_lit => cron = Some(self.str_lit(&c)),
                        Rule::schedule_clause => clauses.push(self.schedule_clause(c)?),
                        _ => {}
                    }
                }
                StmtKind::Schedule(Schedule {
                    cron: cron.ok_or(Malformed)?,
                    clauses,
                })
            }
            _ => return Err(Malformed),
        })
    }

    fn call(&mut self, p: P<'_>) -> R<Call> {
        let span = self.span(&p);
        let mut callee = None;
        let mut args = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::callee_name => callee = Some(self.ident(&c)),
                Rule::arg => args.push(self.arg(c)?),
                _ => {}
            }
        }
        Ok(Call {
            callee: callee.ok_or(Malformed)?,
            args,
            span,
        })
    }

    fn arg(&mut self, p: P<'_>) -> R<Arg> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = self.ident(&next(&mut it, Rule::arg_name)?);
        let value = self.expr(next(&mut it, Rule::expr)?)?;
        Ok(Arg { name, value, span })
    }

    fn for_each(&mut self, p: P<'_>) -> R<ForEach> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let var = self.ident(&next(&mut it, Rule::var_name)?);
        let over = self.expr(next(&mut it, Rule::expr)?)?;
        let join_pair = next(&mut it, Rule::join)?;
        let join_span = self.span(&join_pair);
        let mut jp = join_pair.into_inner();
        let policy = match jp.next().map(|k| k.as_rule()) {
            Some(Rule::kw_all) => JoinPolicy::All,
            Some(Rule::kw_any) => JoinPolicy::Any,
            Some(Rule::kw_at_least) => {
                let n = jp.next().ok_or(Malformed)?;
                match self.lexeme(&n).parse::<u64>() {
                    Ok(k) => JoinPolicy::AtLeast(k),
                    Err(_) => {
                        self.too_large(&n);
                        JoinPolicy::AtLeast(0)
                    }
                }
            }
            _ => return Err(Malformed),
        };
        let body = self.call(next(&mut it, Rule::call)?)?;
        Ok(ForEach {
            var,
            over,
            join: Join {
                policy,
                span: join_span,
            },
            body,
            span,
        })
    }

    fn step_option(&mut self, p: P<'_>) -> R<StepOption> {
        let span = self.span(&p);
        let inner = p.into_inner().next().ok_or(Malformed)?;
        let rule = inner.as_rule();
        let mut parts = inner.into_inner().skip(1);
        let kind = match rule {
            Rule::retry_opt => StepOptionKind::Retry(self.int(&parts.next().ok_or(Malformed)?)),
            Rule::parallel_opt => {
                StepOptionKind::Parallel(self.int(&parts.next().ok_or(Malformed)?))
            }
            Rule::timeout_opt => {
                StepOptionKind::Timeout(self.duration(&parts.next().ok_or(Malformed)?))
            }
            Rule::backoff_opt => {
                let b = parts.next().ok_or(Malformed)?;
                let fixed = b.as_rule() == Rule::backoff_fixed;
                let mut ds = b
                    .into_inner()
                    .filter(|d| matches!(d.as_rule(), Rule::duration_lit | Rule::int_lit));
                let first = self.duration(&ds.next().ok_or(Malformed)?);
                StepOptionKind::Backoff(if fixed {
                    Backoff::Fixed(first)
                } else {
                    let max = self.duration(&ds.next().ok_or(Malformed)?);
                    Backoff::Exponential {
                        initial: first,
                        max,
                    }
                })
            }
            Rule::non_retryable_opt => StepOptionKind::NonRetryable(
                parts
                    .filter(|x| x.as_rule() == Rule::error_name)
                    .map(|x| self.ident(&x))
                    .collect(),
            ),
            Rule::after_opt => StepOptionKind::After(
                parts
                    .filter(|x| x.as_rule() == Rule::name)
                    .map(|x| self.ident(&x))
                    .collect(),
            ),
            _ => return Err(Malformed),
        };
        Ok(StepOption { kind, span })
    }

    fn schedule_clause(&mut self, p: P<'_>) -> R<ScheduleClause> {
        let span = self.span(&p);
        let inner = p.into_inner().next().ok_or(Malformed)?;
        let rule = inner.as_rule();
        let mut parts = inner.into_inner().skip(1);
        let kind = match rule {
            Rule::tz_clause => {
                ScheduleClauseKind::Timezone(self.str_lit(&parts.next().ok_or(Malformed)?))
            }
            Rule::overlap_clause => {
                ScheduleClauseKind::Overlap(self.ident(&parts.next().ok_or(Malformed)?))
            }
            Rule::catchup_clause => {
                let policy = self.ident(&parts.next().ok_or(Malformed)?);
                let within = parts
                    .find(|d| matches!(d.as_rule(), Rule::duration_lit | Rule::int_lit))
                    .map(|d| self.duration(&d));
                ScheduleClauseKind::Catchup { policy, within }
            }
            Rule::jitter_clause => {
                ScheduleClauseKind::Jitter(self.duration(&parts.next().ok_or(Malformed)?))
            }
            Rule::input_clause => {
                let mut args = Vec::new();
                for a in parts {
                    if a.as_rule() == Rule::arg {
                        args.push(self.arg(a)?);
                    }
                }
                ScheduleClauseKind::Input(args)
            }
            _ => return Err(Malformed),
        };
        Ok(ScheduleClause { kind, span })
    }

    // -----------------------------------------------------------------------
    // Literals.

    fn str_lit(&mut self, p: &P<'_>) -> StrLit {
        let span = self.span(p);
        let (value, errs) = literals::unescape(self.lexeme(p));
        for e in errs {
            let s = span.start as usize;
            self.diags.push(
                Diagnostic::new(
                    Code::InvalidEscape,
                    self.file,
                    Span::new(s + e.start, s + e.end),
                    e.message,
                )
                .with_label("not a valid escape")
                .with_help(literals::ESCAPE_HELP),
            );
        }
        StrLit { value, span }
    }

    fn too_large(&mut self, p: &P<'_>) {
        let span = self.span(p);
        self.diags.push(
            Diagnostic::new(
                Code::InvalidNumber,
                self.file,
                span,
                format!("integer `{}` is too large", self.lexeme(p)),
            )
            .with_label("does not fit in 64 bits")
            .with_help(format!("integers range from {} to {}", i64::MIN, i64::MAX)),
        );
    }

    fn int(&mut self, p: &P<'_>) -> IntLit {
        let span = self.span(p);
        let value = match literals::parse_int(self.lexeme(p), false) {
            Some(v) => v,
            None => {
                self.too_large(p);
                0
            }
        };
        IntLit { value, span }
    }

    /// A duration where one is required; an integer there lacks its unit.
    fn duration(&mut self, p: &P<'_>) -> DurationLit {
        let span = self.span(p);
        let millis = self.duration_value(self.lexeme(p), span).unwrap_or(0);
        DurationLit { millis, span }
    }

    fn duration_value(&mut self, text: &str, span: Span) -> Option<u64> {
        match literals::parse_duration(text) {
            Ok(ms) => Some(ms),
            Err(e) => {
                self.diags.push(
                    Diagnostic::new(Code::InvalidDuration, self.file, span, e.message(text))
                        .with_label("not a valid duration")
                        .with_help(literals::DURATION_HELP),
                );
                None
            }
        }
    }

    // -----------------------------------------------------------------------
    // Expressions. Each builder returns the tree and its depth, so long chains and
    // prefix runs can be cut off before they get deep enough to hurt later passes.

    fn expr(&mut self, p: P<'_>) -> R<Expr> {
        Ok(self.expr_d(p)?.0)
    }

    fn node(&mut self, kind: ExprKind, span: Span, depth: usize) -> (Expr, usize) {
        if depth > MAX_EXPR_DEPTH {
            if !self.deep_reported {
                self.deep_reported = true;
                self.diags.push(errors::too_deep(self.file, span));
            }
            return (
                Expr {
                    kind: ExprKind::Error,
                    span,
                },
                1,
            );
        }
        (Expr { kind, span }, depth)
    }

    fn expr_d(&mut self, p: P<'_>) -> R<(Expr, usize)> {
        fn prec(op: BinOp) -> u8 {
            match op {
                BinOp::Coalesce => 1,
                BinOp::Or => 2,
                _ => 3,
            }
        }
        let mut operands: Vec<(Expr, usize)> = Vec::new();
        let mut ops: Vec<BinOp> = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::operand | Rule::operand_nr => operands.push(self.operand(c)?),
                Rule::logic_op => {
                    let op = match c.into_inner().next().map(|o| o.as_rule()) {
                        Some(Rule::op_coalesce) => BinOp::Coalesce,
                        Some(Rule::kw_or) => BinOp::Or,
                        Some(Rule::kw_and) => BinOp::And,
                        _ => return Err(Malformed),
                    };
                    while ops.last().is_some_and(|&top| prec(top) >= prec(op)) {
                        self.reduce(&mut operands, &mut ops)?;
                    }
                    ops.push(op);
                }
                _ => {}
            }
        }
        while !ops.is_empty() {
            self.reduce(&mut operands, &mut ops)?;
        }
        let result = operands.pop().ok_or(Malformed)?;
        if operands.is_empty() {
            Ok(result)
        } else {
            Err(Malformed)
        }
    }

    fn reduce(&mut self, operands: &mut Vec<(Expr, usize)>, ops: &mut Vec<BinOp>) -> R<()> {
        let op = ops.pop().ok_or(Malformed)?;
        let (rhs, rd) = operands.pop().ok_or(Malformed)?;
        let (lhs, ld) = operands.pop().ok_or(Malformed)?;
        let span = lhs.span.to(rhs.span);
        let kind = ExprKind::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        };
        operands.push(self.node(kind, span, 1 + ld.max(rd)));
        Ok(())
    }

    fn operand(&mut self, p: P<'_>) -> R<(Expr, usize)> {
        let mut nots: Vec<Span> = Vec::new();
        let mut negs: Vec<Span> = Vec::new();
        let mut lhs: Option<(Expr, usize)> = None;
        let mut cmp: Option<BinOp> = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::kw_not => nots.push(self.span(&c)),
                Rule::neg => negs.push(self.span(&c)),
                Rule::cmp_op => {
                    cmp = Some(match self.lexeme(&c) {
                        "==" => BinOp::Eq,
                        "!=" => BinOp::Ne,
                        "<" => BinOp::Lt,
                        "<=" => BinOp::Le,
                        ">" => BinOp::Gt,
                        ">=" => BinOp::Ge,
                        _ => return Err(Malformed),
                    });
                }
                _ => {
                    let e = self.negated_primary(c, std::mem::take(&mut negs))?;
                    lhs = Some(match (lhs.take(), cmp) {
                        (Some((l, ld)), Some(op)) => {
                            let (r, rd) = e;
                            let span = l.span.to(r.span);
                            let kind = ExprKind::Binary {
                                op,
                                lhs: Box::new(l),
                                rhs: Box::new(r),
                            };
                            self.node(kind, span, 1 + ld.max(rd))
                        }
                        _ => e,
                    });
                }
            }
        }
        let (mut e, mut d) = lhs.ok_or(Malformed)?;
        for s in nots.into_iter().rev() {
            let span = s.to(e.span);
            let kind = ExprKind::Unary {
                op: UnaryOp::Not,
                expr: Box::new(e),
            };
            (e, d) = self.node(kind, span, d + 1);
        }
        Ok((e, d))
    }

    /// A primary with its prefix `-`s. The `-` right before a number literal is
    /// folded into it, so `-3` is the literal -3 (and `i64::MIN` can be written).
    fn negated_primary(&mut self, p: P<'_>, mut negs: Vec<Span>) -> R<(Expr, usize)> {
        let is_number = matches!(p.as_rule(), Rule::int_lit | Rule::float_lit);
        let fold = if is_number { negs.pop() } else { None };
        let (mut e, mut d) = self.primary(p, fold.is_some())?;
        if let Some(s) = fold {
            e.span = s.to(e.span);
        }
        for s in negs.into_iter().rev() {
            let span = s.to(e.span);
            let kind = ExprKind::Unary {
                op: UnaryOp::Neg,
                expr: Box::new(e),
            };
            (e, d) = self.node(kind, span, d + 1);
        }
        Ok((e, d))
    }

    fn primary(&mut self, p: P<'_>, negative: bool) -> R<(Expr, usize)> {
        let span = self.span(&p);
        let leaf = |kind| Ok((Expr { kind, span }, 1));
        match p.as_rule() {
            Rule::int_lit => match literals::parse_int(self.lexeme(&p), negative) {
                Some(v) => leaf(ExprKind::Int(v)),
                None => {
                    self.too_large(&p);
                    leaf(ExprKind::Error)
                }
            },
            Rule::float_lit => match self.lexeme(&p).parse::<f64>() {
                Ok(v) if v.is_finite() => leaf(ExprKind::Float(if negative { -v } else { v })),
                _ => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::InvalidNumber,
                            self.file,
                            span,
                            format!("number `{}` is too large", self.lexeme(&p)),
                        )
                        .with_label("not a finite 64-bit float"),
                    );
                    leaf(ExprKind::Error)
                }
            },
            Rule::duration_lit => match self.duration_value(self.lexeme(&p), span) {
                Some(ms) => leaf(ExprKind::Duration(ms)),
                None => leaf(ExprKind::Error),
            },
            Rule::string_lit => {
                let s = self.str_lit(&p);
                leaf(ExprKind::Str(s.value))
            }
            Rule::kw_true => leaf(ExprKind::Bool(true)),
            Rule::kw_false => leaf(ExprKind::Bool(false)),
            Rule::kw_none => leaf(ExprKind::None),
            Rule::path => leaf(ExprKind::Path(
                p.into_inner()
                    .filter(|c| matches!(c.as_rule(), Rule::name | Rule::member_name))
                    .map(|c| self.ident(&c))
                    .collect(),
            )),
            Rule::record_lit => {
                let mut name = None;
                let mut fields = Vec::new();
                let mut depth = 0;
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::record_name => name = Some(self.ident(&c)),
                        Rule::field_init => {
                            let fspan = self.span(&c);
                            let mut it = c.into_inner();
                            let fname = self.ident(&next(&mut it, Rule::field_name)?);
                            let (value, d) = self.expr_d(next(&mut it, Rule::expr)?)?;
                            depth = depth.max(d);
                            fields.push(FieldInit {
                                name: fname,
                                value,
                                span: fspan,
                            });
                        }
                        _ => {}
                    }
                }
                let kind = ExprKind::Record {
                    name: name.ok_or(Malformed)?,
                    fields,
                };
                Ok(self.node(kind, span, depth + 1))
            }
            Rule::list_lit => {
                let mut items = Vec::new();
                let mut depth = 0;
                for c in p.into_inner() {
                    if c.as_rule() == Rule::expr {
                        let (e, d) = self.expr_d(c)?;
                        depth = depth.max(d);
                        items.push(e);
                    }
                }
                Ok(self.node(ExprKind::List(items), span, depth + 1))
            }
            Rule::map_lit => {
                let mut entries = Vec::new();
                let mut depth = 0;
                for c in p.into_inner() {
                    if c.as_rule() == Rule::map_entry {
                        let mut it = c.into_inner().filter(|x| x.as_rule() == Rule::expr);
                        let (k, kd) = self.expr_d(it.next().ok_or(Malformed)?)?;
                        let (v, vd) = self.expr_d(it.next().ok_or(Malformed)?)?;
                        depth = depth.max(kd).max(vd);
                        entries.push((k, v));
                    }
                }
                Ok(self.node(ExprKind::Map(entries), span, depth + 1))
            }
            Rule::paren_expr => {
                // No node for parentheses: the tree's shape already says what they
                // grouped. The span grows to cover them, for diagnostics.
                let (mut e, d) = self.expr_d(next(&mut p.into_inner(), Rule::expr)?)?;
                e.span = span;
                Ok((e, d))
            }
            _ => Err(Malformed),
        }
    }
}
