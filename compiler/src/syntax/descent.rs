//! The parser proper: recursive descent over the token kinds, building the syntax
//! tree as it goes.
//!
//! pest is the specification (`grammar.pest`) and what explains syntax errors, but
//! running it on every file cost more than the rest of checking: each rule attempt
//! goes through its call tracking, stack guard and error bookkeeping, and its pairs
//! must then be walked again to build the tree. This parser does the same job in one
//! pass with none of that. It follows the grammar rule for rule, with PEG semantics
//! (ordered choice, greedy repetition, backtracking on failure), so that it accepts
//! exactly what the grammar accepts and stops at the same token; the driver runs
//! pest only on input this parser rejected, to say why. A test compares the two on
//! generated inputs.
//!
//! Every function returns `None` on failure, leaving the cursor anywhere. Where the
//! grammar tries something else after a failure (`?`, `*`, ordered choice), the call
//! goes through [`Parser::attempt`], which also drops what the failed branch
//! reported or took: literal diagnostics and doc comments.

use super::ast::*;
use super::grammar::Rule;
use super::lexer::Token;
use super::lexer::kind::{self as k, is_name, is_word};
use super::literals;
use super::parser::Parser;
use crate::diagnostics::{Code, Diagnostic, Fix};

/// Deepest expression tree accepted. Brackets are capped at
/// [`super::lexer::MAX_NESTING`] before parsing; this also bounds long operator
/// chains and prefix runs (`not not not …`), which later passes walk recursively.
const MAX_EXPR_DEPTH: usize = 256;

/// The statements the driver parses one at a time: all but `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Simple {
    Let,
    Return,
    Deadline,
    Schedule,
}

impl Simple {
    /// The grammar's entry rule for the statement, followed by the start of the
    /// next one (`let_stmt`, …).
    pub(super) fn rule(self) -> Rule {
        match self {
            Simple::Let => Rule::let_stmt,
            Simple::Return => Rule::return_stmt,
            Simple::Deadline => Rule::deadline_stmt,
            Simple::Schedule => Rule::schedule_stmt,
        }
    }
}

/// A flow's signature, and the `{` that opens its body.
pub(super) struct FlowHead {
    pub(super) name: Ident,
    pub(super) params: Vec<Param>,
    pub(super) output: Option<TypeExpr>,
    pub(super) open: Token,
}

/// What [`Parser::attempt`] restores.
struct Mark {
    pos: usize,
    diags: usize,
    docs: usize,
    broken: usize,
    deep_reported: bool,
}

fn logic_op(kind: u8) -> Option<BinOp> {
    match kind {
        k::COALESCE => Some(BinOp::Coalesce),
        k::OR => Some(BinOp::Or),
        k::AND => Some(BinOp::And),
        _ => None,
    }
}

fn cmp_op(kind: u8) -> Option<BinOp> {
    match kind {
        k::EQ => Some(BinOp::Eq),
        k::NE => Some(BinOp::Ne),
        k::LT => Some(BinOp::Lt),
        k::LE => Some(BinOp::Le),
        k::GT => Some(BinOp::Gt),
        k::GE => Some(BinOp::Ge),
        _ => None,
    }
}

/// Binding strength of the operators that chain: `??` loosest, then `or`, `and`.
fn precedence(op: BinOp) -> u8 {
    match op {
        BinOp::Coalesce => 1,
        BinOp::Or => 2,
        _ => 3,
    }
}

impl<'t> Parser<'t> {
    // -----------------------------------------------------------------------
    // The cursor.

    fn peek(&self) -> u8 {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> u8 {
        let i = self.pos + ahead;
        if i < self.end {
            self.kinds.get(i).copied().unwrap_or(k::END)
        } else {
            k::END
        }
    }

    fn eat(&mut self, kind: u8) -> bool {
        let hit = self.peek() == kind;
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// The index of the next token if it is of `kind`, which is consumed.
    fn expect(&mut self, kind: u8) -> Option<usize> {
        let i = self.pos;
        self.eat(kind).then_some(i)
    }

    /// A token that `accept`s, as a name.
    fn ident_if(&mut self, accept: fn(u8) -> bool) -> Option<Ident> {
        if accept(self.peek()) {
            self.pos += 1;
            Some(self.ident(self.pos - 1))
        } else {
            None
        }
    }

    /// The grammar's `any_name`: a name, or a contextual keyword used as one.
    fn name(&mut self) -> Option<Ident> {
        self.ident_if(is_name)
    }

    fn token_span(&self, i: usize) -> Span {
        self.toks
            .get(i)
            .map_or(Span::new(self.text.len(), self.text.len()), |t| {
                Span::new(t.start, t.end)
            })
    }

    /// From the token `first` to the last one consumed.
    fn span_from(&self, first: usize) -> Span {
        let start = self.token_span(first);
        if self.pos > first {
            start.to(self.token_span(self.pos - 1))
        } else {
            Span::new(start.start as usize, start.start as usize)
        }
    }

    fn lexeme(&self, i: usize) -> &'t str {
        self.toks.get(i).map_or("", |t| t.text(self.text))
    }

    fn ident(&self, i: usize) -> Ident {
        Ident {
            name: self.lexeme(i).to_string(),
            span: self.token_span(i),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            pos: self.pos,
            diags: self.diags.len(),
            docs: self.used_docs.len(),
            broken: self.broken.len(),
            deep_reported: self.deep_reported,
        }
    }

    fn reset(&mut self, m: Mark) {
        self.pos = m.pos;
        self.diags.truncate(m.diags);
        self.used_docs.truncate(m.docs);
        self.broken.truncate(m.broken);
        self.deep_reported = m.deep_reported;
    }

    /// Run `f`; if it fails, undo everything it did.
    pub(super) fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let m = self.mark();
        let r = f(self);
        if r.is_none() {
            self.reset(m);
        }
        r
    }

    /// `x ~ (comma ~ x)*`: a comma repeats `x` only if another `x` follows.
    fn sep1<T>(&mut self, mut f: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut out = vec![f(self)?];
        while self.peek() == k::COMMA {
            let m = self.mark();
            self.pos += 1;
            match f(self) {
                Some(x) => out.push(x),
                None => {
                    self.reset(m);
                    break;
                }
            }
        }
        Some(out)
    }

    /// `(x ~ (comma ~ x)* ~ comma?)? ~ close`: the bracketed lists of the grammar,
    /// where a trailing comma is allowed.
    fn list<T>(&mut self, close: u8, mut f: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let out = match self.attempt(|p| p.sep1(&mut f)) {
            Some(out) => {
                self.eat(k::COMMA);
                out
            }
            None => Vec::new(),
        };
        self.expect(close)?;
        Some(out)
    }

    /// The elements (`rule`) of a comma-separated list up to `close`: fields of
    /// a record, parameters. Like [`Self::list`]; but when salvaging, a broken
    /// element is skipped to the next `,` or `close` outside brackets and
    /// remembered in `broken`, so the rest of the declaration is kept.
    fn elements<T>(
        &mut self,
        rule: Rule,
        close: u8,
        mut f: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        if !self.salvage {
            return self.list(close, f);
        }
        let mut out = Vec::new();
        loop {
            if self.eat(close) {
                return Some(out);
            }
            let start = self.pos;
            if start >= self.end {
                return None;
            }
            match self.attempt(&mut f) {
                Some(x) if matches!(self.peek(), k::COMMA) || self.peek() == close => out.push(x),
                // A whole element followed by junk: the item's own message
                // ("expected `,` or `}`") says it best.
                Some(_) => return None,
                None => {
                    self.pos = start;
                    self.skip_element(close)?;
                    // An empty element (`a: Int,, b: Int`) is the comma itself.
                    let stop = self.pos.max(start + 1);
                    self.broken.push((rule, start, stop));
                }
            }
            if !self.eat(k::COMMA) && self.peek() != close {
                return None;
            }
        }
    }

    /// Moves to the next `,` or `close` outside brackets; `None` if the
    /// brackets close first or the input ends.
    fn skip_element(&mut self, close: u8) -> Option<()> {
        let mut depth = 0u32;
        while self.pos < self.end {
            let t = self.peek();
            if depth == 0 && (t == k::COMMA || t == close) {
                return Some(());
            }
            match t {
                k::LPAREN | k::LBRACKET | k::LBRACE => depth += 1,
                k::RPAREN | k::RBRACKET | k::RBRACE => depth = depth.checked_sub(1)?,
                _ => {}
            }
            self.pos += 1;
        }
        None
    }

    /// Skips a broken binding entry (`Name = connector { … }`): up to the `}`
    /// closing its first `{`; `None` if there is none before the block ends.
    fn skip_binding(&mut self) -> Option<()> {
        let mut depth = 0u32;
        while self.pos < self.end {
            let t = self.peek();
            self.pos += 1;
            match t {
                k::LPAREN | k::LBRACKET | k::LBRACE => depth += 1,
                k::RPAREN | k::RBRACKET => depth = depth.checked_sub(1)?,
                k::RBRACE => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(());
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// `x?` for an `x` that starts with the token `first`.
    fn opt<T>(&mut self, first: u8, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        if self.peek() == first {
            self.attempt(f)
        } else {
            None
        }
    }

    // -----------------------------------------------------------------------
    // Entry rules: the driver runs these on a piece of a file.

    /// `item`: one declaration (not a flow) that is the whole input.
    pub(super) fn item_rule(&mut self) -> Option<Item> {
        let first = self.pos;
        let kind = match self.peek() {
            k::FROM => ItemKind::Import(self.import_decl()?),
            k::RECORD => ItemKind::Record(self.record_decl()?),
            k::ENUM => ItemKind::Enum(self.enum_decl()?),
            k::TYPE => ItemKind::Alias(self.alias_decl()?),
            k::REMOTE | k::CALL | k::APPROVAL | k::WAIT => ItemKind::Step(self.step_decl()?),
            k::BINDINGS => ItemKind::Bindings(self.bindings_decl()?),
            _ => return None,
        };
        if self.pos != self.end {
            return None;
        }
        let span = self.span_from(first);
        Some(Item {
            doc: self.take_doc(span.start),
            kind,
            span,
        })
    }

    /// `flow_item`: a whole flow that is the whole input, and its end in bytes.
    pub(super) fn flow_item(&mut self) -> Option<(FlowDecl, usize)> {
        let (name, params, output) = self.flow_signature()?;
        let (body, end) = self.block()?;
        if self.pos != self.end {
            return None;
        }
        let flow = FlowDecl {
            name,
            params,
            output,
            body,
        };
        Some((flow, end))
    }

    /// `flow_head`: a flow's signature and the `{` of its body.
    pub(super) fn flow_head(&mut self) -> Option<FlowHead> {
        let (name, params, output) = self.flow_signature()?;
        let open = self.expect(k::LBRACE)?;
        let open = *self.toks.get(open)?;
        Some(FlowHead {
            name,
            params,
            output,
            open,
        })
    }

    /// `let_stmt`, `return_stmt`, … (`checked`: followed by the start of another
    /// statement or the end) or their `*_bare` forms.
    pub(super) fn simple_stmt(&mut self, which: Simple, checked: bool) -> Option<Stmt> {
        let first = self.pos;
        let kind = match which {
            Simple::Let => self.let_stmt()?,
            Simple::Return => self.return_stmt()?,
            Simple::Deadline => self.deadline_stmt()?,
            Simple::Schedule => self.schedule_stmt()?,
        };
        let span = self.span_from(first);
        if checked && !self.at_stmt_end() {
            return None;
        }
        Some(Stmt { kind, span })
    }

    /// `when_head`: `when`, its condition and the `{` of its block, as a token.
    pub(super) fn when_head(&mut self) -> Option<(Expr, Token)> {
        self.expect(k::WHEN)?;
        let cond = self.expr(false)?;
        let open = self.expect(k::LBRACE)?;
        Some((cond, *self.toks.get(open)?))
    }

    /// `else_head`: `else` and the `{` of its block, as a token.
    pub(super) fn else_head(&mut self) -> Option<Token> {
        self.expect(k::ELSE)?;
        let open = self.expect(k::LBRACE)?;
        self.toks.get(open).copied()
    }

    // -----------------------------------------------------------------------
    // Items.

    fn import_decl(&mut self) -> Option<Import> {
        self.expect(k::FROM)?;
        let path = self.expect(k::STRING)?;
        let path = self.str_lit(path);
        self.expect(k::IMPORT)?;
        let names = self.sep1(Self::import_name)?;
        self.eat(k::COMMA);
        Some(Import { path, names })
    }

    fn import_name(&mut self) -> Option<ImportName> {
        let name = self.name()?;
        let alias = if self.peek() == k::AS && is_name(self.peek_at(1)) {
            self.pos += 2;
            Some(self.ident(self.pos - 1))
        } else {
            None
        };
        Some(ImportName { name, alias })
    }

    fn record_decl(&mut self) -> Option<RecordDecl> {
        self.expect(k::RECORD)?;
        let name = self.name()?;
        let generics = self.opt(k::LT, Self::generics).unwrap_or_default();
        self.expect(k::LBRACE)?;
        let fields = self.elements(Rule::field_entry, k::RBRACE, Self::field)?;
        Some(RecordDecl {
            name,
            generics,
            fields,
        })
    }

    fn field(&mut self) -> Option<Field> {
        let first = self.pos;
        let name = self.name()?;
        self.expect(k::COLON)?;
        let ty = self.type_expr()?;
        let span = self.span_from(first);
        Some(Field {
            doc: self.take_doc(span.start),
            name,
            ty,
            span,
        })
    }

    fn enum_decl(&mut self) -> Option<EnumDecl> {
        self.expect(k::ENUM)?;
        let name = self.name()?;
        self.expect(k::LBRACE)?;
        let variants = self.list(k::RBRACE, |p| {
            let name = p.name()?;
            Some(Variant {
                doc: p.take_doc(name.span.start),
                name,
            })
        })?;
        Some(EnumDecl { name, variants })
    }

    fn alias_decl(&mut self) -> Option<AliasDecl> {
        self.expect(k::TYPE)?;
        let name = self.name()?;
        let generics = self.opt(k::LT, Self::generics).unwrap_or_default();
        self.expect(k::ASSIGN)?;
        let ty = self.type_expr()?;
        Some(AliasDecl { name, generics, ty })
    }

    /// `<T, U>` after a declared name (no trailing comma).
    fn generics(&mut self) -> Option<Vec<Ident>> {
        self.expect(k::LT)?;
        let params = self.sep1(Self::name)?;
        self.expect(k::GT)?;
        Some(params)
    }

    fn type_expr(&mut self) -> Option<TypeExpr> {
        let first = self.pos;
        let name = self.name()?;
        let mut named_end = name.span.end;
        let args = match self.opt(k::LT, Self::type_args) {
            Some(args) => {
                named_end = self.token_span(self.pos - 1).end;
                args
            }
            None => Vec::new(),
        };
        let optional = self.eat(k::QUESTION);
        let span = self.span_from(first);
        let named = TypeExpr {
            kind: TypeExprKind::Named { name, args },
            span: Span {
                start: span.start,
                end: named_end,
            },
        };
        Some(if optional {
            TypeExpr {
                kind: TypeExprKind::Optional(Box::new(named)),
                span,
            }
        } else {
            named
        })
    }

    fn type_args(&mut self) -> Option<Vec<TypeExpr>> {
        self.expect(k::LT)?;
        let args = self.sep1(Self::type_expr)?;
        self.eat(k::COMMA);
        self.expect(k::GT)?;
        Some(args)
    }

    fn step_decl(&mut self) -> Option<StepDecl> {
        let kind = match self.peek() {
            k::REMOTE => StepKind::Remote,
            k::CALL => StepKind::Call,
            k::APPROVAL => StepKind::Approval,
            k::WAIT => StepKind::Wait,
            _ => return None,
        };
        let kind_span = self.token_span(self.pos);
        self.pos += 1;
        self.expect(k::STEP)?;
        let name = self.name()?;
        let generics = self.opt(k::LT, Self::generics).unwrap_or_default();
        let params = self.params()?;
        let output = self.opt(k::ARROW, Self::ret_type);
        let raises = self
            .opt(k::RAISES, |p| {
                p.pos += 1;
                p.sep1(Self::name)
            })
            .unwrap_or_default();
        Some(StepDecl {
            kind,
            kind_span,
            name,
            generics,
            params,
            output,
            raises,
        })
    }

    fn params(&mut self) -> Option<Vec<Param>> {
        self.expect(k::LPAREN)?;
        self.elements(Rule::param_entry, k::RPAREN, Self::param)
    }

    fn param(&mut self) -> Option<Param> {
        let first = self.pos;
        let name = self.name()?;
        self.expect(k::COLON)?;
        let ty = self.type_expr()?;
        let default = self.opt(k::ASSIGN, |p| {
            p.pos += 1;
            p.expr(true)
        });
        let span = self.span_from(first);
        Some(Param {
            doc: self.take_doc(span.start),
            name,
            ty,
            default,
            span,
        })
    }

    fn ret_type(&mut self) -> Option<TypeExpr> {
        self.expect(k::ARROW)?;
        self.type_expr()
    }

    fn bindings_decl(&mut self) -> Option<BindingsDecl> {
        self.expect(k::BINDINGS)?;
        let env = self.name()?;
        self.expect(k::LBRACE)?;
        let mut entries = Vec::new();
        let mut broken = Vec::new();
        loop {
            if let Some(b) = self.attempt(Self::binding) {
                entries.push(b);
            } else if self.salvage && self.peek() != k::RBRACE && self.pos < self.end {
                let start = self.pos;
                if is_name(self.peek()) {
                    broken.push(self.ident(start));
                }
                self.skip_binding()?;
                self.broken.push((Rule::binding_entry, start, self.pos));
            } else {
                break;
            }
        }
        self.expect(k::RBRACE)?;
        Some(BindingsDecl {
            env,
            entries,
            broken,
        })
    }

    fn binding(&mut self) -> Option<Binding> {
        let first = self.pos;
        let step = self.name()?;
        self.expect(k::ASSIGN)?;
        let connector = self.ident_if(is_word)?;
        self.expect(k::LBRACE)?;
        let config = self.list(k::RBRACE, |p| {
            let first = p.pos;
            let key = p.ident_if(is_word)?;
            p.expect(k::COLON)?;
            let value = p.expr(true)?;
            Some(ConfigEntry {
                key,
                value,
                span: p.span_from(first),
            })
        })?;
        let span = self.span_from(first);
        Some(Binding {
            doc: self.take_doc(span.start),
            step,
            connector,
            config,
            span,
        })
    }

    // -----------------------------------------------------------------------
    // Flows and statements.

    fn flow_signature(&mut self) -> Option<(Ident, Vec<Param>, Option<TypeExpr>)> {
        self.expect(k::FLOW)?;
        let name = self.name()?;
        let params = self.params()?;
        let output = self.opt(k::ARROW, Self::ret_type);
        Some((name, params, output))
    }

    /// `{ stmt* }`, and the end of its `}` in bytes.
    fn block(&mut self) -> Option<(Vec<Stmt>, usize)> {
        self.expect(k::LBRACE)?;
        let mut stmts = Vec::new();
        loop {
            let first = self.pos;
            self.deep_reported = false;
            let Some(kind) = self.attempt(Self::stmt) else {
                break;
            };
            let span = self.span_from(first);
            stmts.push(Stmt { kind, span });
        }
        let close = self.expect(k::RBRACE)?;
        Some((stmts, self.token_span(close).end as usize))
    }

    /// A statement inside a whole flow (`stmt`): not checked for what follows it;
    /// the enclosing block's `}` does that.
    fn stmt(&mut self) -> Option<StmtKind> {
        match self.peek() {
            k::LET => self.let_stmt(),
            k::WHEN => self.when_stmt(),
            k::RETURN => self.return_stmt(),
            k::DEADLINE => self.deadline_stmt(),
            k::SCHEDULE => self.schedule_stmt(),
            _ => None,
        }
    }

    /// `stmt_end`: where a statement may end.
    fn at_stmt_end(&self) -> bool {
        matches!(
            self.peek(),
            k::LET | k::WHEN | k::RETURN | k::DEADLINE | k::SCHEDULE | k::RBRACE | k::END
        )
    }

    fn when_stmt(&mut self) -> Option<StmtKind> {
        self.expect(k::WHEN)?;
        let cond = self.expr(false)?;
        let (then_body, _) = self.block()?;
        let else_body = self.opt(k::ELSE, |p| {
            p.pos += 1;
            p.block().map(|(b, _)| b)
        });
        Some(StmtKind::When(WhenStmt {
            cond,
            then_body,
            else_body,
        }))
    }

    fn let_stmt(&mut self) -> Option<StmtKind> {
        self.expect(k::LET)?;
        let name = self.name()?;
        self.expect(k::ASSIGN)?;
        // `for` is reserved, so it cannot be a callee: the choice is by one token.
        // `repeat` is contextual: `repeat(…)` calls a step named so.
        let value = if self.peek() == k::FOR {
            StepExpr::ForEach(self.for_each()?)
        } else if let Some(r) = self.opt(k::REPEAT, Self::repeat_loop) {
            StepExpr::Repeat(r)
        } else {
            StepExpr::Call(self.call()?)
        };
        let mut options = Vec::new();
        while let Some(o) = self.attempt(Self::step_option) {
            options.push(o);
        }
        Some(StmtKind::Let(LetStmt {
            name,
            value,
            options,
        }))
    }

    fn return_stmt(&mut self) -> Option<StmtKind> {
        self.expect(k::RETURN)?;
        Some(StmtKind::Return(self.expr(true)?))
    }

    fn deadline_stmt(&mut self) -> Option<StmtKind> {
        self.expect(k::DEADLINE)?;
        Some(StmtKind::Deadline(self.duration()?))
    }

    fn schedule_stmt(&mut self) -> Option<StmtKind> {
        self.expect(k::SCHEDULE)?;
        let cron = self.expect(k::STRING)?;
        let cron = self.str_lit(cron);
        let mut clauses = Vec::new();
        while let Some(c) = self.attempt(Self::schedule_clause) {
            clauses.push(c);
        }
        Some(StmtKind::Schedule(Schedule { cron, clauses }))
    }

    fn call(&mut self) -> Option<Call> {
        let first = self.pos;
        let callee = self.name()?;
        self.expect(k::LPAREN)?;
        let args = self.list(k::RPAREN, Self::arg)?;
        Some(Call {
            callee,
            args,
            span: self.span_from(first),
        })
    }

    fn arg(&mut self) -> Option<Arg> {
        let first = self.pos;
        let name = self.name()?;
        self.expect(k::COLON)?;
        let value = self.expr(true)?;
        Some(Arg {
            name,
            value,
            span: self.span_from(first),
        })
    }

    fn for_each(&mut self) -> Option<ForEach> {
        let first = self.pos;
        self.expect(k::FOR)?;
        let var = self.name()?;
        self.expect(k::IN)?;
        let over = self.expr(true)?;
        self.expect(k::JOIN)?;
        let join_first = self.pos;
        let policy = match self.peek() {
            k::ALL => {
                self.pos += 1;
                JoinPolicy::All
            }
            k::ANY => {
                self.pos += 1;
                JoinPolicy::Any
            }
            k::AT_LEAST => {
                self.pos += 1;
                // Not a record literal: the `{` that follows opens the body.
                let k = self.expr(false)?;
                JoinPolicy::AtLeast(Box::new(k))
            }
            _ => return None,
        };
        let join = Join {
            policy,
            span: self.span_from(join_first),
        };
        self.expect(k::LBRACE)?;
        let body = self.call()?;
        self.expect(k::RBRACE)?;
        Some(ForEach {
            var,
            over,
            join,
            body,
            span: self.span_from(first),
        })
    }

    fn repeat_loop(&mut self) -> Option<Repeat> {
        let first = self.pos;
        self.expect(k::REPEAT)?;
        let var = self.name()?;
        self.expect(k::AT_MOST)?;
        let max = self.int()?;
        self.expect(k::LBRACE)?;
        let body = self.call()?;
        self.expect(k::RBRACE)?;
        let until = self.opt(k::UNTIL, |p| {
            p.pos += 1;
            p.expr(true)
        });
        Some(Repeat {
            var,
            max,
            body,
            until,
            span: self.span_from(first),
        })
    }

    fn step_option(&mut self) -> Option<StepOption> {
        let first = self.pos;
        let keyword = self.peek();
        self.pos += 1;
        let kind = match keyword {
            k::RETRY => StepOptionKind::Retry(self.int()?),
            k::PARALLEL => StepOptionKind::Parallel(self.int()?),
            k::TIMEOUT => StepOptionKind::Timeout(self.duration()?),
            k::BACKOFF => {
                let fixed = match self.peek() {
                    k::FIXED => true,
                    k::EXPONENTIAL => false,
                    _ => return None,
                };
                self.pos += 1;
                self.expect(k::LPAREN)?;
                let first = self.duration()?;
                let backoff = if fixed {
                    Backoff::Fixed(first)
                } else {
                    self.expect(k::COMMA)?;
                    let max = self.duration()?;
                    Backoff::Exponential {
                        initial: first,
                        max,
                    }
                };
                self.expect(k::RPAREN)?;
                StepOptionKind::Backoff(backoff)
            }
            k::NON_RETRYABLE => StepOptionKind::NonRetryable(self.sep1(Self::name)?),
            k::AFTER => StepOptionKind::After(self.sep1(Self::name)?),
            _ => return None,
        };
        Some(StepOption {
            kind,
            span: self.span_from(first),
        })
    }

    fn schedule_clause(&mut self) -> Option<ScheduleClause> {
        let first = self.pos;
        let keyword = self.peek();
        self.pos += 1;
        let kind = match keyword {
            k::TIMEZONE => {
                let zone = self.expect(k::STRING)?;
                ScheduleClauseKind::Timezone(self.str_lit(zone))
            }
            k::OVERLAP => ScheduleClauseKind::Overlap(self.ident_if(is_word)?),
            k::CATCHUP => {
                let policy = self.ident_if(is_word)?;
                let within = self.opt(k::WITHIN, |p| {
                    p.pos += 1;
                    p.duration()
                });
                ScheduleClauseKind::Catchup { policy, within }
            }
            k::JITTER => ScheduleClauseKind::Jitter(self.duration()?),
            k::INPUT => {
                self.expect(k::LPAREN)?;
                ScheduleClauseKind::Input(self.list(k::RPAREN, Self::arg)?)
            }
            _ => return None,
        };
        Some(ScheduleClause {
            kind,
            span: self.span_from(first),
        })
    }

    // -----------------------------------------------------------------------
    // Literals.

    pub(super) fn str_lit(&mut self, i: usize) -> StrLit {
        let span = self.token_span(i);
        let (value, errs) = literals::unescape(self.lexeme(i));
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

    fn too_large(&mut self, i: usize) {
        let span = self.token_span(i);
        self.diags.push(
            Diagnostic::new(
                Code::InvalidNumber,
                self.file,
                span,
                format!("integer `{}` is too large", self.lexeme(i)),
            )
            .with_label("does not fit in 64 bits")
            .with_help(format!("integers range from {} to {}", i64::MIN, i64::MAX)),
        );
    }

    /// `int_lit`, where an integer is required.
    fn int(&mut self) -> Option<IntLit> {
        let i = self.expect(k::INT)?;
        let value = match literals::parse_int(self.lexeme(i), false) {
            Some(v) => v,
            None => {
                self.too_large(i);
                0
            }
        };
        Some(IntLit {
            value,
            span: self.token_span(i),
        })
    }

    /// `duration`, where one is required. An integer is accepted, to be told it lacks
    /// its unit rather than get a syntax error.
    /// A number with a fraction and a unit (`1.5h`) is taken too, to be told that
    /// durations have no fractions (E0002) rather than get a syntax error.
    fn duration(&mut self) -> Option<DurationLit> {
        let fraction = self.peek() == k::OTHER && {
            let text = self.lexeme(self.pos);
            text.starts_with(|c: char| c.is_ascii_digit())
                && text.contains('.')
                && text.ends_with(|c: char| c.is_ascii_alphabetic())
        };
        if !fraction && !matches!(self.peek(), k::DURATION | k::INT) {
            return None;
        }
        self.pos += 1;
        let i = self.pos - 1;
        let span = self.token_span(i);
        let millis = self.duration_value(self.lexeme(i), span);
        Some(DurationLit {
            millis: millis.unwrap_or(0),
            invalid: millis.is_none(),
            span,
        })
    }

    fn duration_value(&mut self, text: &str, span: Span) -> Option<u64> {
        // `1_000_000`: digit separators, which eflow does not have; not a unit `_`.
        let plain = text.replace('_', "");
        if plain.len() < text.len()
            && plain.starts_with(|c: char| c.is_ascii_digit())
            && (plain.bytes().all(|b| b.is_ascii_digit())
                || literals::parse_duration(&plain).is_ok())
        {
            self.diags.push(
                Diagnostic::new(
                    Code::InvalidNumber,
                    self.file,
                    span,
                    format!("`{text}`: numbers have no `_` separators"),
                )
                .with_label("`_` between digits")
                .with_help(format!("write `{plain}`"))
                .with_fix(Fix::edit(
                    format!("Write `{plain}`"),
                    self.file,
                    span,
                    plain.clone(),
                )),
            );
            return None;
        }
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
    // Expressions. Each returns the tree and its depth, so long chains and prefix
    // runs can be cut off before they get deep enough to hurt later passes.
    // `records` is false for a `when` condition (`expr_nr`), whose top level has no
    // record literals, so that `when x { … }` reads as intended.

    fn expr(&mut self, records: bool) -> Option<Expr> {
        Some(self.expr_d(records)?.0)
    }

    fn node(&mut self, kind: ExprKind, span: Span, depth: usize) -> (Expr, usize) {
        if depth > MAX_EXPR_DEPTH {
            if !self.deep_reported {
                self.deep_reported = true;
                self.diags.push(super::errors::too_deep(self.file, span));
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

    /// `operand ~ (logic_op ~ operand)*`, with `??` binding loosest, then `or`, then
    /// `and`, all to the left.
    fn expr_d(&mut self, records: bool) -> Option<(Expr, usize)> {
        let first = self.operand(records)?;
        if logic_op(self.peek()).is_none() {
            return Some(first);
        }
        let mut operands = vec![first];
        let mut ops: Vec<BinOp> = Vec::new();
        while let Some(op) = logic_op(self.peek()) {
            let m = self.mark();
            self.pos += 1;
            let Some(rhs) = self.operand(records) else {
                self.reset(m);
                break;
            };
            while ops
                .last()
                .is_some_and(|&top| precedence(top) >= precedence(op))
            {
                self.reduce(&mut operands, &mut ops)?;
            }
            ops.push(op);
            operands.push(rhs);
        }
        while !ops.is_empty() {
            self.reduce(&mut operands, &mut ops)?;
        }
        let result = operands.pop()?;
        operands.is_empty().then_some(result)
    }

    fn reduce(&mut self, operands: &mut Vec<(Expr, usize)>, ops: &mut Vec<BinOp>) -> Option<()> {
        let op = ops.pop()?;
        let (rhs, rd) = operands.pop()?;
        let (lhs, ld) = operands.pop()?;
        let span = lhs.span.to(rhs.span);
        let kind = ExprKind::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        };
        operands.push(self.node(kind, span, 1 + ld.max(rd)));
        Some(())
    }

    /// `kw_not* ~ neg* ~ primary ~ (cmp_op ~ neg* ~ primary)?`: comparisons do not
    /// chain, and `not` applies to the comparison.
    fn operand(&mut self, records: bool) -> Option<(Expr, usize)> {
        let nots = self.pos;
        while self.peek() == k::NOT {
            self.pos += 1;
        }
        let nots = nots..self.pos;
        let mut result = self.negated_primary(records)?;
        if let Some(op) = cmp_op(self.peek()) {
            let m = self.mark();
            self.pos += 1;
            match self.negated_primary(records) {
                Some((rhs, rd)) => {
                    let (lhs, ld) = result;
                    let span = lhs.span.to(rhs.span);
                    let kind = ExprKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    };
                    result = self.node(kind, span, 1 + ld.max(rd));
                }
                None => self.reset(m),
            }
        }
        let (mut e, mut d) = result;
        for i in nots.rev() {
            let span = self.token_span(i).to(e.span);
            let kind = ExprKind::Unary {
                op: UnaryOp::Not,
                expr: Box::new(e),
            };
            (e, d) = self.node(kind, span, d + 1);
        }
        Some((e, d))
    }

    /// A primary with its prefix `-`s. The `-` right before a number literal is
    /// folded into it, so `-3` is the literal -3 (and `i64::MIN` can be written).
    fn negated_primary(&mut self, records: bool) -> Option<(Expr, usize)> {
        let negs_first = self.pos;
        while self.peek() == k::MINUS {
            self.pos += 1;
        }
        let mut negs_end = self.pos;
        let fold = negs_end > negs_first && matches!(self.peek(), k::INT | k::FLOAT);
        let (mut e, mut d) = self.primary(records, fold)?;
        if fold {
            negs_end -= 1;
            e.span = self.token_span(negs_end).to(e.span);
        }
        for i in (negs_first..negs_end).rev() {
            let span = self.token_span(i).to(e.span);
            let kind = ExprKind::Unary {
                op: UnaryOp::Neg,
                expr: Box::new(e),
            };
            (e, d) = self.node(kind, span, d + 1);
        }
        Some((e, d))
    }

    /// `primary` (or `primary_nr` without `records`).
    fn primary(&mut self, records: bool, negative: bool) -> Option<(Expr, usize)> {
        let first = self.pos;
        let kind = self.peek();
        // A record literal is tried before a path (`Spec { … }` vs `Spec`).
        if records
            && kind == k::UPPER
            && self.peek_at(1) == k::LBRACE
            && let Some(record) = self.attempt(Self::record_lit)
        {
            return Some(record);
        }
        if is_name(kind) {
            let mut path = vec![self.ident(first)];
            self.pos += 1;
            while self.peek() == k::DOT && is_word(self.peek_at(1)) {
                self.pos += 2;
                path.push(self.ident(self.pos - 1));
            }
            return Some((
                Expr {
                    kind: ExprKind::Path(path),
                    span: self.span_from(first),
                },
                1,
            ));
        }
        let span = self.token_span(first);
        let leaf = |kind| Some((Expr { kind, span }, 1));
        match kind {
            k::INT => {
                self.pos += 1;
                match literals::parse_int(self.lexeme(first), negative) {
                    Some(v) => leaf(ExprKind::Int(v)),
                    None => {
                        self.too_large(first);
                        leaf(ExprKind::Error)
                    }
                }
            }
            k::FLOAT => {
                self.pos += 1;
                match self.lexeme(first).parse::<f64>() {
                    Ok(v) if v.is_finite() => leaf(ExprKind::Float(if negative { -v } else { v })),
                    _ => {
                        self.diags.push(
                            Diagnostic::new(
                                Code::InvalidNumber,
                                self.file,
                                span,
                                format!("number `{}` is too large", self.lexeme(first)),
                            )
                            .with_label("not a finite 64-bit float"),
                        );
                        leaf(ExprKind::Error)
                    }
                }
            }
            k::DURATION => {
                self.pos += 1;
                match self.duration_value(self.lexeme(first), span) {
                    Some(ms) => leaf(ExprKind::Duration(ms)),
                    None => leaf(ExprKind::Error),
                }
            }
            k::STRING => {
                self.pos += 1;
                let s = self.str_lit(first);
                leaf(ExprKind::Str(s.value))
            }
            k::TRUE => {
                self.pos += 1;
                leaf(ExprKind::Bool(true))
            }
            k::FALSE => {
                self.pos += 1;
                leaf(ExprKind::Bool(false))
            }
            k::NONE => {
                self.pos += 1;
                leaf(ExprKind::None)
            }
            k::LBRACKET => {
                self.pos += 1;
                let mut depth = 0;
                let items = self.list(k::RBRACKET, |p| {
                    let (e, d) = p.expr_d(true)?;
                    depth = depth.max(d);
                    Some(e)
                })?;
                Some(self.node(ExprKind::List(items), self.span_from(first), depth + 1))
            }
            k::LBRACE => {
                self.pos += 1;
                let mut depth = 0;
                let entries = self.list(k::RBRACE, |p| {
                    let (key, kd) = p.expr_d(true)?;
                    p.expect(k::COLON)?;
                    let (value, vd) = p.expr_d(true)?;
                    depth = depth.max(kd).max(vd);
                    Some((key, value))
                })?;
                Some(self.node(ExprKind::Map(entries), self.span_from(first), depth + 1))
            }
            k::LPAREN => {
                // No node for parentheses: the tree's shape already says what they
                // grouped. The span grows to cover them, for diagnostics.
                self.pos += 1;
                let (mut e, d) = self.expr_d(true)?;
                self.expect(k::RPAREN)?;
                e.span = self.span_from(first);
                Some((e, d))
            }
            _ => None,
        }
    }

    /// `Name { field: value, … }`.
    fn record_lit(&mut self) -> Option<(Expr, usize)> {
        let first = self.pos;
        let name = self.ident_if(|kind| kind == k::UPPER)?;
        self.expect(k::LBRACE)?;
        let mut depth = 0;
        let fields = self.list(k::RBRACE, |p| {
            let first = p.pos;
            let name = p.name()?;
            p.expect(k::COLON)?;
            let (value, d) = p.expr_d(true)?;
            depth = depth.max(d);
            Some(FieldInit {
                name,
                value,
                span: p.span_from(first),
            })
        })?;
        let kind = ExprKind::Record { name, fields };
        Some(self.node(kind, self.span_from(first), depth + 1))
    }
}

/// The descent parser against the grammar: on every piece of input the driver could
/// give them, both accept or both reject, and both stop at the same token.
#[cfg(test)]
mod agreement {
    use pest::Parser as _;
    use proptest::prelude::*;

    use super::super::grammar::EflowParser;
    use super::super::lexer::{self, kind as k};
    use super::super::parser::{DocMap, Parser};
    use super::*;
    use crate::source::FileId;
    use crate::syntax::lexer::KEYWORDS;

    /// Where pest's parse of `rule` over `kinds` ends, if it succeeds.
    fn pest_end(rule: Rule, kinds: &[u8]) -> Option<usize> {
        let input = std::str::from_utf8(kinds).ok()?;
        let mut pairs = EflowParser::parse(rule, input).ok()?;
        Some(pairs.next().map_or(0, |p| p.as_span().end()))
    }

    fn compare(
        p: &mut Parser<'_>,
        rule: Rule,
        first: usize,
        last: usize,
        f: impl FnOnce(&mut Parser<'_>) -> bool,
    ) -> Result<(), String> {
        p.pos = first;
        p.end = last;
        let ours = f(p).then(|| p.pos - first);
        let theirs = pest_end(rule, &p.kinds[first..last]);
        if ours == theirs {
            Ok(())
        } else {
            let input = String::from_utf8_lossy(&p.kinds[first..last]);
            Err(format!(
                "{rule:?} on {input:?}: descent {ours:?}, pest {theirs:?}"
            ))
        }
    }

    /// Every entry rule, on every item, and the statement rules at every token
    /// that could start them.
    fn agree(text: &str) -> Result<(), String> {
        let scan = lexer::scan(text);
        let docs = DocMap::new(text, &scan.doc_lines);
        let mut p = Parser::new(FileId(0), text, &scan, &docs);
        for chunk in &scan.chunks {
            if chunk.too_deep.is_some() {
                continue;
            }
            let (a, b) = (chunk.toks.start, chunk.toks.end);
            compare(&mut p, Rule::item, a, b, |p| p.item_rule().is_some())?;
            compare(&mut p, Rule::flow_item, a, b, |p| p.flow_item().is_some())?;
            compare(&mut p, Rule::flow_head, a, b, |p| p.flow_head().is_some())?;
            for i in a..b {
                let simple = match scan.kinds[i] {
                    k::LET => Some(Simple::Let),
                    k::RETURN => Some(Simple::Return),
                    k::DEADLINE => Some(Simple::Deadline),
                    k::SCHEDULE => Some(Simple::Schedule),
                    k::WHEN => {
                        compare(&mut p, Rule::when_head, i, b, |p| p.when_head().is_some())?;
                        None
                    }
                    k::ELSE => {
                        compare(&mut p, Rule::else_head, i, b, |p| p.else_head().is_some())?;
                        None
                    }
                    _ => None,
                };
                if let Some(s) = simple {
                    let bare = match s {
                        Simple::Let => Rule::let_bare,
                        Simple::Return => Rule::return_bare,
                        Simple::Deadline => Rule::deadline_bare,
                        Simple::Schedule => Rule::schedule_bare,
                    };
                    compare(&mut p, s.rule(), i, b, |p| p.simple_stmt(s, true).is_some())?;
                    compare(&mut p, bare, i, b, |p| p.simple_stmt(s, false).is_some())?;
                }
            }
        }
        Ok(())
    }

    /// A spelling for each token kind, so that random kind strings become text.
    fn spelling(kind: u8) -> &'static str {
        match kind {
            k::INT => "1",
            k::FLOAT => "1.5",
            k::DURATION => "5s",
            k::STRING => "\"s\"",
            k::OPEN_STRING => "\"s\n",
            k::LOWER => "x",
            k::UPPER => "X",
            k::ARROW => "->",
            k::COALESCE => "??",
            k::EQ => "==",
            k::NE => "!=",
            k::LE => "<=",
            k::GE => ">=",
            b'(' => "(",
            b')' => ")",
            b'{' => "{",
            b'}' => "}",
            b'[' => "[",
            b']' => "]",
            b',' => ",",
            b':' => ":",
            b'.' => ".",
            b'=' => "=",
            b'<' => "<",
            b'>' => ">",
            b'?' => "?",
            b'-' => "-",
            b'a'..=b'z' => KEYWORDS[usize::from(kind - b'a')],
            b'A'..=b'W' => KEYWORDS[26 + usize::from(kind - b'A')],
            _ => "@",
        }
    }

    const ALPHABET: &[u8] =
        b"01234567(){}[],:.=<>?-^$#!&|abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW";

    /// Corners of the grammar that real files seldom reach.
    const CORNERS: &str = r#"
from "a" import A as B, as as as, C,
type T<U, V> = Map<List<U?>, V,>?
record R<X> { a: A, }
enum E { }
enum F { A, B, }
call step S<T>() raises X
wait step W(a: Int = -3, b: Float = --1.5, c: Bool = not not true,)
flow G(a: Int) -> R {
    deadline 5
    schedule "x" timezone "y" overlap for catchup all within 1 jitter 2s input() input(a: 1,)
    let a = S(a: run.flow.for, b: X { c: 1, }, c: X, d: [], e: {}, f: [1, 2,], g: { "k": -x, },)
        after a, b non_retryable X, Y backoff fixed(1) backoff exponential(1s, 2)
        retry 1 parallel 2 timeout 3s
    let b = for x in (a ?? b) join at_least 3 { S() } parallel 1
    let c = repeat x at_most 3 { S(a: x) } until x.y >= 1 ?? X { a: 1 } retry 2
    let d = repeat at_most at_most 1 { until() } after c
    let e = repeat(repeat: until)
    when a == b and not c < -d or e >= f ?? g != h {
        when (X { a: 1 }) <= { 1: 2 } { return none } else { deadline 1s }
    } else {
        return false
    }
    return (a)
}
bindings b { S = for { for: 1, flow: X {}, } W = approval {} }
"#;

    /// Inputs that reach deep into the grammar: real files, cut into tokens.
    const SOURCES: &[&str] = &[
        CORNERS,
        include_str!("../../tests/corpus/ok/everything.eflow"),
        include_str!("../../tests/corpus/ok/contextual_keywords.eflow"),
        include_str!("../../tests/corpus/err/syntax.eflow"),
    ];

    fn words(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            let word = c.is_alphanumeric() || c == '_';
            match (start, word) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    out.push(&text[s..i]);
                    start = None;
                }
                _ => {}
            }
            if !word {
                out.push(&text[i..i + c.len_utf8()]);
            }
        }
        if let Some(s) = start {
            out.push(&text[s..]);
        }
        out
    }

    #[test]
    fn spellings_lex_to_their_kind() {
        for &kind in ALPHABET {
            let scan = lexer::scan(spelling(kind));
            assert_eq!(scan.kinds, [kind], "{:?}", char::from(kind));
        }
    }

    #[test]
    fn agree_on_the_sources() {
        for src in SOURCES {
            agree(src).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random token strings inside a flow body and as a whole item.
        #[test]
        fn agree_on_token_soup(
            picks in proptest::collection::vec(0..ALPHABET.len(), 0..40),
            wrap in 0usize..7,
        ) {
            let body: Vec<&str> = picks.iter().map(|&i| spelling(ALPHABET[i])).collect();
            let body = body.join(" ");
            let text = match wrap {
                0 => format!("flow F() {{\n    {body}\n}}\n"),
                1 => format!("flow F() {{\n    let a = A(x: {body})\n}}\n"),
                2 => format!("flow F() {{\n    return x.{body}\n}}\n"),
                3 => format!("record R {{ {body} }}\n"),
                4 => format!("bindings b {{ S = c {{ {body} }} }}\n"),
                5 => format!("remote step S({body})\n"),
                _ => body,
            };
            if let Err(e) = agree(&text) {
                prop_assert!(false, "{}\n{}", e, text);
            }
        }

        /// Real files with tokens deleted, inserted and moved.
        #[test]
        fn agree_on_mutated_sources(
            source in 0..SOURCES.len(),
            edits in proptest::collection::vec((0usize..3, any::<usize>(), any::<usize>()), 1..6),
        ) {
            let mut toks = words(SOURCES[source]);
            for (op, a, b) in edits {
                let n = toks.len().max(1);
                match op {
                    0 if !toks.is_empty() => {
                        toks.remove(a % n);
                    }
                    1 => toks.insert(a % (n + 1), spelling(ALPHABET[b % ALPHABET.len()])),
                    _ if !toks.is_empty() => {
                        let t = toks[a % n];
                        toks.insert(b % (n + 1), t);
                    }
                    _ => {}
                }
            }
            let text = toks.concat();
            if let Err(e) = agree(&text) {
                prop_assert!(false, "{}\n{}", e, text);
            }
        }
    }
}
