//! Items and statements: the layout of everything above expressions.

use super::MAX_WIDTH;
use super::expr::{Slot, duration_text, width};
use super::out::Out;
use crate::syntax::ast::*;

/// The printer: the output with its comments, and the source for literals as written.
pub(super) struct P<'a> {
    pub(super) o: Out<'a>,
    pub(super) src: &'a str,
}

/// Whether the tree holds a node that failed to parse (always with a diagnostic, so
/// this is a second line of defence).
pub(super) fn has_error_node(file: &File) -> bool {
    fn stmts(body: &[Stmt]) -> bool {
        body.iter().any(|s| match &s.kind {
            StmtKind::Error => true,
            StmtKind::When(w) => stmts(&w.then_body) || w.else_body.as_deref().is_some_and(stmts),
            _ => false,
        })
    }
    file.items.iter().any(|i| match &i.kind {
        ItemKind::Error => true,
        ItemKind::Flow(f) => stmts(&f.body),
        _ => false,
    })
}

pub(super) fn print_file(src: &str, file: &File) -> String {
    let mut p = P {
        o: Out::new(src, &file.comments),
        src,
    };
    let mut prev_import: Option<bool> = None;
    for item in &file.items {
        let start = doc_start(&item.doc, item.span);
        let import = matches!(item.kind, ItemKind::Import(_));
        if let Some(prev_import) = prev_import {
            // Items are kept apart by a blank line; where the author put one (before
            // or after the comments in between), that one serves.
            let together = prev_import && import;
            if !together && !p.o.blank_ahead(start) {
                p.o.blank();
            }
        }
        p.o.leading(start, 0, true);
        p.o.blank_if_written(start);
        p.item(item);
        prev_import = Some(import);
    }
    let mut text = p.o.finish();
    // Exactly one newline at the end, none for an empty file.
    while text.ends_with("\n\n") {
        text.pop();
    }
    if text.trim().is_empty() {
        text.clear();
    }
    text
}

/// Where a node begins when its doc comment counts.
fn doc_start(doc: &Option<Doc>, span: Span) -> usize {
    doc.as_ref().map_or(span.start, |d| d.span.start) as usize
}

fn ty(t: &TypeExpr) -> String {
    let mut s = String::new();
    ty_into(t, &mut s);
    s
}

fn ty_into(t: &TypeExpr, s: &mut String) {
    match &t.kind {
        TypeExprKind::Named { name, args } => {
            s.push_str(&name.name);
            if !args.is_empty() {
                s.push('<');
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    ty_into(a, s);
                }
                s.push('>');
            }
        }
        TypeExprKind::Optional(inner) => {
            ty_into(inner, s);
            s.push('?');
        }
    }
}

fn generics(g: &[Ident]) -> String {
    if g.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = g.iter().map(|i| i.name.as_str()).collect();
    format!("<{}>", names.join(", "))
}

fn names(ids: &[Ident]) -> String {
    let names: Vec<&str> = ids.iter().map(|i| i.name.as_str()).collect();
    names.join(", ")
}

fn import_name(n: &ImportName) -> String {
    match &n.alias {
        Some(a) => format!("{} as {}", n.name.name, a.name),
        None => n.name.name.clone(),
    }
}

fn import_name_span(n: &ImportName) -> (usize, usize) {
    let end = n.alias.as_ref().map_or(n.name.span.end, |a| a.span.end);
    (n.name.span.start as usize, end as usize)
}

fn option_text(o: &StepOption) -> String {
    match &o.kind {
        StepOptionKind::Retry(n) => format!("retry {}", n.value),
        StepOptionKind::Backoff(Backoff::Fixed(d)) => {
            format!("backoff fixed({})", duration_text(d.millis))
        }
        StepOptionKind::Backoff(Backoff::Exponential { initial, max }) => format!(
            "backoff exponential({}, {})",
            duration_text(initial.millis),
            duration_text(max.millis)
        ),
        StepOptionKind::NonRetryable(ids) => format!("non_retryable {}", names(ids)),
        StepOptionKind::Timeout(d) => format!("timeout {}", duration_text(d.millis)),
        StepOptionKind::After(ids) => format!("after {}", names(ids)),
        StepOptionKind::Parallel(n) => format!("parallel {}", n.value),
    }
}

impl P<'_> {
    fn join_text(&self, j: &Join) -> String {
        match &j.policy {
            JoinPolicy::All => "all".to_string(),
            JoinPolicy::Any => "any".to_string(),
            JoinPolicy::AtLeast(k) => format!("at_least {}", self.flat(k, Slot::TOP)),
        }
    }

    fn doc(&mut self, doc: &Option<Doc>, indent: usize) {
        match doc {
            Some(d) => self.o.doc(d, indent),
            None => self.o.guard_stray_doc(indent),
        }
    }

    fn slice(&self, span: Span) -> &str {
        self.src
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }

    // -----------------------------------------------------------------------
    // Items.

    fn item(&mut self, item: &Item) {
        self.doc(&item.doc, 0);
        self.o.begin(0);
        let end = item.span.end as usize;
        match &item.kind {
            ItemKind::Import(i) => self.import(i, item.span),
            ItemKind::Record(r) => {
                self.o.push("record ");
                self.o.push(&r.name.name);
                self.o.push(&generics(&r.generics));
                self.o.push(" {");
                let after = r.generics.last().unwrap_or(&r.name).span.end as usize;
                let open = self.o.find(after, "{", &[">"]);
                self.body(
                    open,
                    &r.fields,
                    end,
                    0,
                    |f| (doc_start(&f.doc, f.span), f.span.end as usize),
                    |p, f, inner| {
                        p.doc(&f.doc, inner);
                        p.o.begin(inner);
                        p.o.push(&f.name.name);
                        p.o.push(": ");
                        p.o.push(&ty(&f.ty));
                        p.o.push(",");
                    },
                );
            }
            ItemKind::Enum(e) => {
                self.o.push("enum ");
                self.o.push(&e.name.name);
                self.o.push(" {");
                let open = self.o.find(e.name.span.end as usize, "{", &[]);
                self.body(
                    open,
                    &e.variants,
                    end,
                    0,
                    |v| (doc_start(&v.doc, v.name.span), v.name.span.end as usize),
                    |p, v, inner| {
                        p.doc(&v.doc, inner);
                        p.o.begin(inner);
                        p.o.push(&v.name.name);
                        p.o.push(",");
                    },
                );
            }
            ItemKind::Alias(a) => {
                self.o.push("type ");
                self.o.push(&a.name.name);
                self.o.push(&generics(&a.generics));
                self.o.push(" = ");
                self.o.push(&ty(&a.ty));
            }
            ItemKind::Step(s) => {
                self.o.push(s.kind.keyword());
                self.o.push(" step ");
                self.o.push(&s.name.name);
                self.o.push(&generics(&s.generics));
                let mut tail = String::new();
                if let Some(out) = &s.output {
                    tail.push_str(" -> ");
                    tail.push_str(&ty(out));
                }
                if !s.raises.is_empty() {
                    tail.push_str(" raises ");
                    tail.push_str(&names(&s.raises));
                }
                let after = s.generics.last().unwrap_or(&s.name).span.end as usize;
                self.params(&s.params, after, &tail);
                self.o.push(&tail);
            }
            ItemKind::Flow(f) => {
                self.o.push("flow ");
                self.o.push(&f.name.name);
                let mut tail = String::new();
                if let Some(out) = &f.output {
                    tail.push_str(" -> ");
                    tail.push_str(&ty(out));
                }
                tail.push_str(" {");
                self.params(&f.params, f.name.span.end as usize, &tail);
                self.o.push(&tail);
                let head_end = match (&f.output, f.params.last()) {
                    (Some(out), _) => out.span.end,
                    (None, Some(p)) => p.span.end,
                    (None, None) => f.name.span.end,
                } as usize;
                let open = self.o.find(head_end, "{", &["(", ")", ","]);
                let close = end.saturating_sub(1);
                self.block(open, &f.body, close, 0);
            }
            ItemKind::Bindings(b) => {
                self.o.push("bindings ");
                self.o.push(&b.env.name);
                self.o.push(" {");
                let open = self.o.find(b.env.span.end as usize, "{", &[]);
                self.body(
                    open,
                    &b.entries,
                    end,
                    0,
                    |e| (doc_start(&e.doc, e.span), e.span.end as usize),
                    |p, e, inner| {
                        p.doc(&e.doc, inner);
                        p.o.begin(inner);
                        p.binding(e, inner);
                    },
                );
            }
            ItemKind::Error => {
                let text = self.slice(item.span).to_string();
                self.o.push(&text);
            }
        }
        self.o.trailing(end);
        self.o.end();
    }

    fn import(&mut self, i: &Import, span: Span) {
        let head = format!("from {} import", self.string(&i.path.value, i.path.span));
        let list: Vec<String> = i.names.iter().map(import_name).collect();
        let flat = format!("{head} {}", list.join(", "));
        let kw = self.o.find(i.path.span.end as usize, "import", &[]);
        let from = kw.map_or(span.start, |k| (k + 6) as u32);
        if !self.o.has_comment(from, span.end) && width(&flat) <= MAX_WIDTH {
            self.o.push(&flat);
            return;
        }
        self.o.push(&head);
        if let Some(k) = kw {
            self.o.trailing(k + 6);
        }
        self.o.end_open();
        for (n, text) in i.names.iter().zip(&list) {
            let (s, e) = import_name_span(n);
            self.o.leading(s, 4, false);
            self.o.begin(4);
            self.o.push(text);
            self.o.push(",");
            self.o.trailing(e);
            self.o.end();
        }
    }

    /// The parameter list of a step or flow, `tail` being the rest of its line.
    fn params(&mut self, params: &[Param], after: usize, tail: &str) {
        let open = self.o.find(after, "(", &[">"]);
        let close = match (open, params.last()) {
            (_, Some(last)) => self.o.find(last.span.end as usize, ")", &[","]),
            (Some(o), None) => self.o.find(o + 1, ")", &[]),
            (None, None) => None,
        };
        let flat: Vec<String> = params.iter().map(|p| self.param_flat(p)).collect();
        let flat = format!("({})", flat.join(", "));
        let commented = match (open, close) {
            (Some(o), Some(c)) => self.o.has_comment(o as u32, c as u32),
            _ => false,
        };
        let documented = params.iter().any(|p| p.doc.is_some());
        let long = self.o.col() + width(&flat) + width(tail) > MAX_WIDTH;
        if !commented && (params.is_empty() || !(documented || long)) {
            self.o.push(&flat);
            return;
        }
        self.o.push("(");
        let end = close.unwrap_or_else(|| params.last().map_or(after, |p| p.span.end as usize));
        self.group(
            open.map(|o| o + 1),
            params,
            end,
            0,
            |p| (doc_start(&p.doc, p.span), p.span.end as usize),
            |p, param, inner| {
                p.doc(&param.doc, inner);
                p.o.begin(inner);
                p.o.push(&param.name.name);
                p.o.push(": ");
                p.o.push(&ty(&param.ty));
                if let Some(d) = &param.default {
                    p.o.push(" = ");
                    p.expr(d, inner, 1, Slot::TOP);
                }
                p.o.push(",");
            },
        );
        self.o.push(")");
    }

    fn param_flat(&self, p: &Param) -> String {
        let mut s = format!("{}: {}", p.name.name, ty(&p.ty));
        if let Some(d) = &p.default {
            s.push_str(" = ");
            s.push_str(&self.flat(d, Slot::TOP));
        }
        s
    }

    fn binding(&mut self, b: &Binding, indent: usize) {
        let head = format!("{} = {} {{", b.step.name, b.connector.name);
        let open = self.o.find(b.connector.span.end as usize, "{", &[]);
        let end = b.span.end as usize;
        let entries: Vec<String> = b
            .config
            .iter()
            .map(|c| format!("{}: {}", c.key.name, self.flat(&c.value, Slot::TOP)))
            .collect();
        let flat = if entries.is_empty() {
            format!("{head}}}")
        } else {
            format!("{head} {} }}", entries.join(", "))
        };
        let commented = self
            .o
            .has_comment(open.map_or(b.span.start, |o| o as u32), b.span.end);
        let fits = entries.len() <= 2 && self.o.col() + width(&flat) <= MAX_WIDTH;
        if !commented && (entries.is_empty() || fits) {
            self.o.push(&flat);
            return;
        }
        self.o.push(&head);
        self.group(
            open.map(|o| o + 1),
            &b.config,
            end,
            indent,
            |c| (c.span.start as usize, c.span.end as usize),
            |p, c, inner| p.entry(&c.key.name, &c.value, inner),
        );
        self.o.push("}");
    }

    /// A `{ … }` body of an item (fields, variants, bindings) after its `{`: `}` at
    /// once when there is nothing inside, not even a comment.
    #[allow(clippy::too_many_arguments)]
    fn body<T>(
        &mut self,
        open: Option<usize>,
        items: &[T],
        end: usize,
        indent: usize,
        span: impl Fn(&T) -> (usize, usize),
        print: impl FnMut(&mut Self, &T, usize),
    ) {
        let from = open.map_or(end, |o| o + 1);
        if items.is_empty() && !self.o.has_comment(from as u32, end as u32) {
            self.o.push("}");
            return;
        }
        self.group(open.map(|o| o + 1), items, end, indent, span, print);
        self.o.push("}");
    }

    // -----------------------------------------------------------------------
    // Calls.

    /// `head(name: value, …)`, on one line if it fits and holds no comment.
    fn args(&mut self, head: &str, after: usize, args: &[Arg], end: usize, indent: usize) {
        let open = self.o.find(after, "(", &[]);
        let list: Vec<String> = args
            .iter()
            .map(|a| format!("{}: {}", a.name.name, self.flat(&a.value, Slot::TOP)))
            .collect();
        let flat = format!("{head}({})", list.join(", "));
        let commented = self
            .o
            .has_comment(open.map_or(after, |o| o) as u32, end as u32);
        if !commented && (args.is_empty() || self.o.col() + width(&flat) <= MAX_WIDTH) {
            self.o.push(&flat);
            return;
        }
        self.o.push(head);
        self.o.push("(");
        self.group(
            open.map(|o| o + 1),
            args,
            end,
            indent,
            |a| (a.span.start as usize, a.span.end as usize),
            |p, a, inner| p.entry(&a.name.name, &a.value, inner),
        );
        self.o.push(")");
    }

    fn call(&mut self, c: &Call, indent: usize) {
        self.args(
            &c.callee.name,
            c.callee.span.end as usize,
            &c.args,
            c.span.end as usize,
            indent,
        );
    }

    // -----------------------------------------------------------------------
    // Statements.

    /// A block's statements after its `{` (already printed; `open` is its offset),
    /// up to the `}` at `close`, which this prints.
    fn block(&mut self, open: Option<usize>, body: &[Stmt], close: usize, indent: usize) {
        let from = open.map_or(close, |o| o + 1);
        if body.is_empty() && !self.o.has_comment(from as u32, close as u32) {
            self.o.push("}");
            return;
        }
        self.group(
            open.map(|o| o + 1),
            body,
            close,
            indent,
            |s| (s.span.start as usize, s.span.end as usize),
            |p, s, inner| p.stmt(s, inner),
        );
        self.o.push("}");
    }

    fn stmt(&mut self, st: &Stmt, indent: usize) {
        let end = st.span.end as usize;
        self.o.begin(indent);
        match &st.kind {
            StmtKind::Let(l) => {
                self.o.push("let ");
                self.o.push(&l.name.name);
                self.o.push(" = ");
                match &l.value {
                    StepExpr::Call(c) => self.call(c, indent),
                    StepExpr::ForEach(f) => self.for_each(f, indent),
                    StepExpr::Repeat(r) => self.repeat(r, indent),
                }
                self.o.trailing(l.value.span().end as usize);
                self.o.end();
                for opt in &l.options {
                    self.o.leading(opt.span.start as usize, indent + 4, false);
                    self.o.begin(indent + 4);
                    self.o.push(&option_text(opt));
                    self.o.trailing(opt.span.end as usize);
                    self.o.end();
                }
            }
            StmtKind::When(w) => {
                self.o.push("when ");
                self.condition(&w.cond, indent);
                self.o.push(" {");
                let open = self.o.find(w.cond.span.end as usize, "{", &[")"]);
                let then_from = w
                    .then_body
                    .last()
                    .map(|s| s.span.end as usize)
                    .or(open.map(|o| o + 1))
                    .unwrap_or(end);
                let then_close = self.o.find(then_from, "}", &[]);
                match &w.else_body {
                    None => self.block(open, &w.then_body, end.saturating_sub(1), indent),
                    Some(else_body) => {
                        let close = then_close.unwrap_or(then_from);
                        self.block(open, &w.then_body, close, indent);
                        self.o.push(" else {");
                        let else_open = self
                            .o
                            .find(close + 1, "else", &[])
                            .and_then(|e| self.o.find(e + 4, "{", &[]));
                        self.block(else_open, else_body, end.saturating_sub(1), indent);
                    }
                }
            }
            StmtKind::Return(e) => {
                self.o.push("return ");
                self.expr(e, indent, 0, Slot::TOP);
            }
            StmtKind::Deadline(d) => {
                self.o.push("deadline ");
                self.o.push(&duration_text(d.millis));
            }
            StmtKind::Schedule(s) => {
                self.o.push("schedule ");
                let cron = self.string(&s.cron.value, s.cron.span);
                self.o.push(&cron);
                self.o.trailing(s.cron.span.end as usize);
                self.o.end();
                for c in &s.clauses {
                    self.o.leading(c.span.start as usize, indent + 4, false);
                    self.o.begin(indent + 4);
                    self.clause(c, indent + 4);
                    self.o.trailing(c.span.end as usize);
                    self.o.end();
                }
            }
            StmtKind::Error => {
                let text = self.slice(st.span).to_string();
                self.o.push(&text);
            }
        }
        self.o.trailing(end);
        self.o.end();
    }

    fn for_each(&mut self, f: &ForEach, indent: usize) {
        self.o.push("for ");
        self.o.push(&f.var.name);
        self.o.push(" in ");
        let join = format!(" join {} {{", self.join_text(&f.join));
        self.expr(&f.over, indent, width(&join), Slot::TOP);
        self.o.push(&join);
        let open = self.o.find(f.join.span.end as usize, "{", &[]);
        if let Some(o) = open {
            self.o.trailing(o + 1);
        }
        self.o.end_open();
        let inner = indent + 4;
        self.o.leading(f.body.span.start as usize, inner, true);
        self.o.begin(inner);
        self.call(&f.body, inner);
        self.o.trailing(f.body.span.end as usize);
        self.o.end();
        self.o.leading(f.span.end as usize, inner, true);
        self.o.begin_closer(indent);
        self.o.push("}");
    }

    /// `repeat m at_most 5 {`, the call on its own line, then `} until cond`.
    fn repeat(&mut self, r: &Repeat, indent: usize) {
        self.o.push("repeat ");
        self.o.push(&r.var.name);
        self.o.push(&format!(" at_most {} {{", r.max.value));
        let open = self.o.find(r.max.span.end as usize, "{", &[]);
        if let Some(o) = open {
            self.o.trailing(o + 1);
        }
        self.o.end_open();
        let inner = indent + 4;
        self.o.leading(r.body.span.start as usize, inner, true);
        self.o.begin(inner);
        self.call(&r.body, inner);
        self.o.trailing(r.body.span.end as usize);
        self.o.end();
        let close = self
            .o
            .find(r.body.span.end as usize, "}", &[])
            .map_or(r.span.end as usize, |c| c + 1);
        self.o.leading(close, inner, true);
        self.o.begin_closer(indent);
        self.o.push("}");
        if let Some(until) = &r.until {
            self.o.push(" until ");
            self.expr(until, indent, 0, Slot::TOP);
        }
    }

    fn clause(&mut self, c: &ScheduleClause, indent: usize) {
        match &c.kind {
            ScheduleClauseKind::Timezone(s) => {
                let tz = self.string(&s.value, s.span);
                self.o.push("timezone ");
                self.o.push(&tz);
            }
            ScheduleClauseKind::Overlap(p) => {
                self.o.push("overlap ");
                self.o.push(&p.name);
            }
            ScheduleClauseKind::Catchup { policy, within } => {
                self.o.push("catchup ");
                self.o.push(&policy.name);
                if let Some(d) = within {
                    self.o.push(" within ");
                    self.o.push(&duration_text(d.millis));
                }
            }
            ScheduleClauseKind::Jitter(d) => {
                self.o.push("jitter ");
                self.o.push(&duration_text(d.millis));
            }
            ScheduleClauseKind::Input(args) => {
                let after = c.span.start as usize + "input".len();
                self.args("input", after, args, c.span.end as usize, indent);
            }
        }
    }
}
