//! Completion that knows where the cursor is.
//!
//! The context comes from the tokens before the cursor, not from the syntax tree:
//! the text being typed rarely parses. What the names mean comes from the last
//! analysis, and for a flow that no longer parses, from the last time it did
//! ([`FlowMemory`]), so completion keeps working in the middle of an edit.

use std::collections::{HashMap, HashSet};

use eflow_compiler::analysis::FileId;
use eflow_compiler::ir::schedule::{CATCHUP_POLICIES, OVERLAP_POLICIES};
use eflow_compiler::semantics::ItemSig;
use eflow_compiler::semantics::RUN_FIELDS;
use eflow_compiler::semantics::SymbolKind;
use eflow_compiler::semantics::connectors;
use eflow_compiler::semantics::{DefId, PRIMITIVES, Ty};
use eflow_compiler::syntax::ast::{self, Span, StepKind};

use super::Db;
use super::hover::builtin_doc;
use super::lex::{Tok, TokKind, is_keyword, tokenize};
use super::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Keyword,
    Snippet,
    Step,
    Flow,
    Record,
    Enum,
    Alias,
    Builtin,
    Variant,
    Field,
    Param,
    Local,
    Value,
    Connector,
    Key,
    Module,
    ErrorName,
    TypeParam,
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub label: String,
    pub kind: Kind,
    pub detail: Option<String>,
    /// Markdown.
    pub doc: Option<String>,
    /// Text to insert instead of the label; a snippet when `snippet` is set.
    pub insert: Option<String>,
    pub snippet: bool,
    /// Replace this span instead of the word at the cursor.
    pub replace: Option<Span>,
    /// Other edits, e.g. the import the completed name needs.
    pub edits: Vec<(Span, String)>,
    /// Lower sorts first.
    pub rank: u8,
}

impl Completion {
    fn new(label: impl Into<String>, kind: Kind) -> Self {
        Completion {
            label: label.into(),
            kind,
            detail: None,
            doc: None,
            insert: None,
            snippet: false,
            replace: None,
            edits: Vec::new(),
            rank: 5,
        }
    }
    fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
    fn doc(mut self, d: impl Into<String>) -> Self {
        let d = d.into();
        if !d.is_empty() {
            self.doc = Some(d);
        }
        self
    }
    fn snippet(mut self, s: impl Into<String>) -> Self {
        self.insert = Some(s.into());
        self.snippet = true;
        self
    }
    fn insert(mut self, s: impl Into<String>) -> Self {
        self.insert = Some(s.into());
        self
    }
    fn rank(mut self, r: u8) -> Self {
        self.rank = r;
        self
    }
}

/// What a flow looked like the last time it was checked: its parameters and
/// `let`s with their types, for completion while it does not parse.
#[derive(Debug, Clone, Default)]
pub struct FlowInfo {
    pub params: Vec<(String, Ty)>,
    pub lets: Vec<(String, Ty, String)>,
    /// Fan-out variables and their element types.
    pub items: Vec<(String, Ty)>,
}

/// The last good [`FlowInfo`] of every flow, by module name and flow name.
#[derive(Debug, Clone, Default)]
pub struct FlowMemory {
    flows: HashMap<(String, String), FlowInfo>,
}

impl FlowMemory {
    /// Remember the flows of every workspace module that checked without a
    /// broken statement.
    pub fn remember(&mut self, db: Db) {
        for m in db.analysis.modules.iter().filter(|m| !m.is_std) {
            for f in m.flows.iter().filter(|f| !f.broken) {
                self.flows
                    .insert((m.name.clone(), f.name.to_string()), flow_info(f));
            }
        }
    }

    fn get(&self, module: &str, flow: &str) -> Option<&FlowInfo> {
        self.flows.get(&(module.to_string(), flow.to_string()))
    }
}

fn flow_info(f: &eflow_compiler::semantics::CheckedFlow) -> FlowInfo {
    FlowInfo {
        params: f
            .params
            .iter()
            .map(|p| (p.name.clone(), p.ty.clone()))
            .collect(),
        lets: f
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.output.clone(), n.call.callee_name.clone()))
            .collect(),
        items: f
            .nodes
            .iter()
            .filter_map(|n| {
                if let Some(r) = &n.repeat {
                    // In the loop's call: the previous iteration's output.
                    return Some((r.var.clone(), n.output.clone().optional()));
                }
                let fo = n.fan_out.as_ref()?;
                let elem = match &fo.over.ty {
                    Ty::List(t) => (**t).clone(),
                    _ => Ty::Error,
                };
                Some((fo.var.clone(), elem))
            })
            .collect(),
    }
}

/// Where the cursor is, as far as completion cares.
#[derive(Debug, PartialEq)]
enum Context {
    TopLevel,
    ImportPath {
        in_string: bool,
    },
    ImportNames {
        path: String,
    },
    Types,
    Statement {
        after_let: bool,
    },
    Callables,
    ArgNames {
        callee: String,
        given: Vec<String>,
    },
    Values {
        expected: Option<Ty>,
    },
    Fields {
        segments: Vec<String>,
    },
    RecordFields {
        record: String,
        given: Vec<String>,
    },
    JoinPolicy,
    ErrorNames {
        callee: Option<String>,
    },
    Locals,
    Policies(&'static [&'static str]),
    Backoff,
    BindingEntries {
        given: Vec<String>,
    },
    Connectors {
        step: Option<String>,
    },
    ConfigKeys {
        connector: String,
        given: Vec<String>,
    },
    Nothing,
}

pub struct Request<'a> {
    pub db: Db<'a>,
    pub memory: &'a FlowMemory,
    pub file: FileId,
    /// The editor's current text, which may be newer than the analysis.
    pub text: &'a str,
    pub offset: usize,
    pub snippets: bool,
}

pub fn complete(req: &Request) -> Vec<Completion> {
    let cx = Cursor::new(req.text, req.offset);
    let Some(cx) = cx else {
        return Vec::new();
    };
    let context = cx.context(req);
    let mut out = Vec::new();
    let scope = Scope::new(req, &cx);
    match context {
        Context::Nothing => {}
        Context::TopLevel => top_level(req, &mut out),
        Context::ImportPath { in_string } => import_paths(req, &cx, in_string, &mut out),
        Context::ImportNames { path } => import_names(req, &path, &mut out),
        Context::Types => types(req, &cx, &mut out),
        Context::Statement { after_let } => statements(req, after_let, &mut out),
        Context::Callables => callables(req, &scope, &mut out),
        Context::ArgNames { callee, given } => arg_names(req, &scope, &callee, &given, &mut out),
        Context::Values { expected } => values(req, &scope, expected.as_ref(), &mut out),
        Context::Fields { segments } => fields(req, &scope, &segments, &mut out),
        Context::RecordFields { record, given } => record_fields(req, &record, &given, &mut out),
        Context::JoinPolicy => {
            for (k, d) in [
                (
                    "all",
                    "every child must succeed; a list of outputs in input order",
                ),
                ("any", "the first success wins; the others are cancelled"),
                ("at_least", "at least k children must succeed"),
            ] {
                out.push(Completion::new(k, Kind::Keyword).doc(d));
            }
        }
        Context::ErrorNames { callee } => error_names(req, callee.as_deref(), &mut out),
        Context::Locals => {
            for (name, ty) in scope.lets() {
                out.push(Completion::new(name, Kind::Local).detail(ty.to_string()));
            }
        }
        Context::Policies(list) => {
            for p in list {
                out.push(Completion::new(*p, Kind::Keyword));
            }
        }
        Context::Backoff => {
            out.push(
                Completion::new("exponential", Kind::Snippet)
                    .detail("exponential(initial, max)")
                    .doc("wait `initial` after the first failure, longer after each next one, never more than `max`")
                    .snippet("exponential(${1:10s}, ${2:10m})"),
            );
            out.push(
                Completion::new("fixed", Kind::Snippet)
                    .detail("fixed(delay)")
                    .doc("wait the same delay between attempts")
                    .snippet("fixed(${1:1m})"),
            );
        }
        Context::BindingEntries { given } => binding_entries(req, &given, &mut out),
        Context::Connectors { step } => connector_names(req, step.as_deref(), &mut out),
        Context::ConfigKeys { connector, given } => config_keys(&connector, &given, &mut out),
    }
    if !req.snippets {
        for c in &mut out {
            if c.snippet {
                c.insert = c.insert.as_deref().map(strip_snippet);
                c.snippet = false;
            }
        }
    }
    out
}

/// A snippet's text with its tab stops removed, for clients without snippets.
fn strip_snippet(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            match chars.peek() {
                Some('{') => {
                    chars.next();
                    while let Some(&d) = chars.peek() {
                        if d.is_ascii_digit() {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    if chars.peek() == Some(&'|') {
                        // A choice: keep the first.
                        chars.next();
                        let mut first = true;
                        for d in chars.by_ref() {
                            if d == '}' {
                                break;
                            }
                            if d == ',' || d == '|' {
                                first = false;
                            } else if first {
                                out.push(d);
                            }
                        }
                        continue;
                    }
                    if chars.peek() == Some(&':') {
                        chars.next();
                    }
                    let mut depth = 1;
                    for d in chars.by_ref() {
                        if d == '{' {
                            depth += 1;
                        } else if d == '}' {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        out.push(d);
                    }
                    continue;
                }
                Some(d) if d.is_ascii_digit() => {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                    continue;
                }
                _ => {}
            }
        }
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The tokens around the cursor.
struct Cursor<'t> {
    text: &'t str,
    /// Tokens before the word being completed, comments left out.
    before: Vec<Tok>,
    /// The string literal the cursor is in, if any.
    in_string: Option<Tok>,
    /// Start of the item the cursor is in (index into `before`).
    item_start: Option<usize>,
    /// Unclosed brackets before the cursor (indices into `before`).
    open: Vec<usize>,
}

impl<'t> Cursor<'t> {
    fn new(text: &'t str, offset: usize) -> Option<Cursor<'t>> {
        let offset = offset.min(text.len());
        let mut before = Vec::new();
        let mut in_string = None;
        for t in tokenize(text) {
            if t.start >= offset {
                break;
            }
            if t.is_trivia() {
                if t.end >= offset && text[t.start..offset].find('\n').is_none() {
                    // Inside a comment: nothing to complete.
                    return None;
                }
                continue;
            }
            let inside = offset <= t.end;
            match t.kind {
                TokKind::Str { closed } if inside && (offset < t.end || !closed) => {
                    in_string = Some(t);
                    break;
                }
                TokKind::Word | TokKind::Number if inside => break,
                _ => before.push(t),
            }
        }
        let mut cx = Cursor {
            text,
            before,
            in_string,
            item_start: None,
            open: Vec::new(),
        };
        cx.scan_brackets();
        Some(cx)
    }

    fn tok(&self, i: usize) -> &'t str {
        self.before.get(i).map_or("", |t| t.text(self.text))
    }

    /// The text of the `back`-th token before the cursor (0 is the last).
    fn last(&self, back: usize) -> &'t str {
        if back >= self.before.len() {
            return "";
        }
        self.tok(self.before.len() - 1 - back)
    }

    fn at_line_start(&self, t: &Tok) -> bool {
        let line_start = self.text[..t.start].rfind('\n').map_or(0, |i| i + 1);
        line_start == t.start
    }

    fn scan_brackets(&mut self) {
        let items = [
            "from", "record", "enum", "type", "remote", "call", "approval", "wait", "flow",
            "bindings",
        ];
        let mut open: Vec<usize> = Vec::new();
        for (i, t) in self.before.iter().enumerate() {
            let s = t.text(self.text);
            if t.kind == TokKind::Word
                && items.contains(&s)
                && (open.is_empty() || self.at_line_start(t))
            {
                // `call` and `approval` also appear inside bindings; only a line
                // start or the top level makes them an item.
                if !(open.is_empty()
                    && !self.at_line_start(t)
                    && self.item_start.is_some()
                    && matches!(s, "approval" | "call" | "wait" | "type"))
                {
                    self.item_start = Some(i);
                    open.clear();
                    continue;
                }
            }
            match s {
                "(" | "{" | "[" => open.push(i),
                "<" => {
                    let prev = i
                        .checked_sub(1)
                        .map(|p| self.before[p].text(self.text))
                        .unwrap_or("");
                    if prev.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                        open.push(i);
                    }
                }
                ")" | "}" | "]" | ">" => {
                    let want = match s {
                        ")" => "(",
                        "}" => "{",
                        "]" => "[",
                        _ => "<",
                    };
                    if let Some(pos) = open.iter().rposition(|&o| self.tok(o) == want) {
                        open.truncate(pos);
                    }
                }
                _ => {}
            }
        }
        self.open = open;
    }

    fn item_keyword(&self) -> &'t str {
        self.item_start.map_or("", |i| self.tok(i))
    }

    /// The name the current item declares.
    fn item_name(&self) -> Option<&'t str> {
        let i = self.item_start?;
        let k = if matches!(self.tok(i), "remote" | "call" | "approval" | "wait") {
            2
        } else {
            1
        };
        let t = self.before.get(i + k)?;
        (t.kind == TokKind::Word).then(|| t.text(self.text))
    }

    /// Tokens after an opener up to the cursor that sit directly in it (not in a
    /// nested bracket), split at commas; the last segment is the current one.
    fn segments(&self, opener: usize) -> Vec<Vec<usize>> {
        let mut segs = vec![Vec::new()];
        let mut depth = 0i32;
        for i in opener + 1..self.before.len() {
            let s = self.tok(i);
            match s {
                "(" | "{" | "[" => depth += 1,
                ")" | "}" | "]" => depth -= 1,
                "," if depth == 0 => {
                    segs.push(Vec::new());
                    continue;
                }
                _ => {}
            }
            if depth == 0 && !matches!(s, ")" | "}" | "]") {
                if let Some(last) = segs.last_mut() {
                    last.push(i);
                }
            } else if depth == 0 {
                // The closer of a nested bracket: keep the segment non-empty.
                if let Some(last) = segs.last_mut() {
                    last.push(i);
                }
            }
        }
        segs
    }

    /// Names given before `:` in the segments of an argument or field list.
    fn given_names(&self, opener: usize) -> Vec<String> {
        self.segments(opener)
            .iter()
            .filter(|s| s.len() >= 2 && self.tok(s[1]) == ":")
            .map(|s| self.tok(s[0]).to_string())
            .collect()
    }

    fn context(&self, req: &Request) -> Context {
        if let Some(s) = self.in_string {
            return match self.last(0) {
                "from" => Context::ImportPath { in_string: true },
                _ => {
                    let _ = s;
                    Context::Nothing
                }
            };
        }
        // After a dot: fields of what comes before.
        if self.last(0) == "." {
            let mut segments = Vec::new();
            let mut k = self.before.len() - 1;
            while let Some(w) = k.checked_sub(1).and_then(|i| self.before.get(i)) {
                if w.kind != TokKind::Word {
                    break;
                }
                segments.push(w.text(self.text).to_string());
                if k >= 2 && self.tok(k - 2) == "." {
                    k -= 2;
                } else {
                    break;
                }
            }
            segments.reverse();
            if segments.is_empty() {
                return Context::Nothing;
            }
            return Context::Fields { segments };
        }
        let item = self.item_keyword();
        let Some(&opener) = self.open.last() else {
            return self.top_level_context(item);
        };
        let open_text = self.tok(opener);
        let before_open = opener.checked_sub(1).map_or("", |i| self.tok(i));
        match open_text {
            "<" => Context::Types,
            "[" => Context::Values { expected: None },
            "(" => self.paren_context(req, opener, before_open, item),
            _ => self.brace_context(req, opener, before_open, item),
        }
    }

    fn top_level_context(&self, item: &str) -> Context {
        match self.last(0) {
            "->" => Context::Types,
            "=" if item == "type" => Context::Types,
            "from" => Context::ImportPath { in_string: false },
            "import" => Context::ImportNames {
                path: self.import_path().unwrap_or_default(),
            },
            "," if item == "from" => Context::ImportNames {
                path: self.import_path().unwrap_or_default(),
            },
            "raises" | "as" => Context::Nothing,
            "," if !item.is_empty()
                && self
                    .before
                    .iter()
                    .rev()
                    .take_while(|t| t.text(self.text) != ")")
                    .any(|t| t.text(self.text) == "raises") =>
            {
                Context::Nothing
            }
            _ => {
                // Right after an item's name or keyword, a new name is being typed.
                if matches!(
                    self.last(0),
                    "record" | "enum" | "type" | "flow" | "step" | "bindings"
                ) {
                    return Context::Nothing;
                }
                Context::TopLevel
            }
        }
    }

    fn import_path(&self) -> Option<String> {
        let i = self.item_start?;
        let t = self.before.get(i + 1)?;
        let s = t.text(self.text);
        Some(s.trim_matches('"').to_string())
    }

    fn paren_context(
        &self,
        req: &Request,
        opener: usize,
        before_open: &str,
        item: &str,
    ) -> Context {
        let decl = {
            // `step Name(` or `step Name<T>(` or `flow Name(`
            let mut k = opener;
            if before_open == ">" {
                while k > 0 && self.tok(k - 1) != "<" {
                    k -= 1;
                }
                k = k.saturating_sub(1);
            }
            k >= 2 && matches!(self.tok(k - 2), "step" | "flow")
        };
        let segs = self.segments(opener);
        let current: Vec<&str> = segs
            .last()
            .map(|s| s.iter().map(|&i| self.tok(i)).collect())
            .unwrap_or_default();
        if decl {
            return match current.as_slice() {
                [_, ":", rest @ ..] if !rest.contains(&"=") => Context::Types,
                [_, ":", .., "="] => Context::Values { expected: None },
                [_, ":", ..] => Context::Values { expected: None },
                _ => Context::Nothing,
            };
        }
        match before_open {
            "fixed" | "exponential" => return Context::Nothing,
            "input" => {
                let flow = self.item_name().unwrap_or("").to_string();
                return match current.as_slice() {
                    [name, ":", ..] => Context::Values {
                        expected: flow_param_type(req, &flow, name),
                    },
                    _ => Context::ArgNames {
                        callee: format!("input:{flow}"),
                        given: self.given_names(opener),
                    },
                };
            }
            _ => {}
        }
        let callee_tok = opener.checked_sub(1).and_then(|i| self.before.get(i));
        if let Some(t) = callee_tok
            && t.kind == TokKind::Word
            && !is_keyword(before_open)
        {
            let _ = item;
            return match current.as_slice() {
                [name, ":", ..] => Context::Values {
                    expected: param_type(req, before_open, name),
                },
                _ => Context::ArgNames {
                    callee: before_open.to_string(),
                    given: self.given_names(opener),
                },
            };
        }
        Context::Values { expected: None }
    }

    fn brace_context(
        &self,
        req: &Request,
        opener: usize,
        before_open: &str,
        item: &str,
    ) -> Context {
        let depth = self.open.len();
        match item {
            "bindings" if depth == 1 => {
                let segs_given = self.binding_steps(opener);
                return match (self.last(0), self.last(1)) {
                    ("=", step) => Context::Connectors {
                        step: Some(step.to_string()),
                    },
                    _ => Context::BindingEntries { given: segs_given },
                };
            }
            "bindings" if depth == 2 => {
                let segs = self.segments(opener);
                let current: Vec<&str> = segs
                    .last()
                    .map(|s| s.iter().map(|&i| self.tok(i)).collect())
                    .unwrap_or_default();
                return match current.as_slice() {
                    [_, ":", ..] => Context::Values { expected: None },
                    _ => Context::ConfigKeys {
                        connector: before_open.to_string(),
                        given: self.given_names(opener),
                    },
                };
            }
            "record" => {
                return match self.last(0) {
                    ":" => Context::Types,
                    _ if self.last(1) == ":" => Context::Types,
                    _ => Context::Nothing,
                };
            }
            "enum" => return Context::Nothing,
            _ => {}
        }
        if item != "flow" {
            return Context::Values { expected: None };
        }
        // Inside a flow: the body, a `when` block, a fan-out body, a record or
        // map literal.
        let before_before = opener.checked_sub(2).map_or("", |i| self.tok(i));
        let is_record = before_open
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
            && before_before != "."
            && depth > 1
            && !self.is_when_block(opener);
        if is_record {
            let segs = self.segments(opener);
            let current: Vec<&str> = segs
                .last()
                .map(|s| s.iter().map(|&i| self.tok(i)).collect())
                .unwrap_or_default();
            return match current.as_slice() {
                [field, ":", ..] => Context::Values {
                    expected: record_field_type(req, before_open, field),
                },
                _ => Context::RecordFields {
                    record: before_open.to_string(),
                    given: self.given_names(opener),
                },
            };
        }
        let join = matches!(before_open, "all" | "any")
            || (before_open.chars().all(|c| c.is_ascii_digit()) && before_before == "at_least");
        if join && depth > 1 {
            return Context::Callables;
        }
        if depth > 1 && matches!(before_open, ":" | "=" | "," | "(" | "[" | "??") {
            return Context::Values { expected: None };
        }
        if depth > 1
            && !self.is_when_block(opener)
            && before_open != "else"
            && !self.is_block_opener(opener)
        {
            return Context::Values { expected: None };
        }
        self.statement_context()
    }

    /// `{` right after a `when` condition.
    fn is_when_block(&self, opener: usize) -> bool {
        let mut k = opener;
        let mut depth = 0i32;
        while k > 0 {
            k -= 1;
            match self.tok(k) {
                ")" | "]" | "}" => depth += 1,
                "(" | "[" | "{" => {
                    if depth == 0 {
                        return false;
                    }
                    depth -= 1;
                }
                "when" if depth == 0 => return true,
                "let" | "return" | "schedule" | "deadline" if depth == 0 => return false,
                _ => {}
            }
        }
        false
    }

    /// The `{` that opens the flow body (after the header).
    fn is_block_opener(&self, opener: usize) -> bool {
        self.open.first() == Some(&opener)
    }

    fn binding_steps(&self, opener: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut depth = 0;
        for i in opener + 1..self.before.len() {
            match self.tok(i) {
                "{" => depth += 1,
                "}" => depth -= 1,
                "=" if depth == 0 && i > 0 => out.push(self.tok(i - 1).to_string()),
                _ => {}
            }
        }
        out
    }

    fn statement_context(&self) -> Context {
        let l0 = self.last(0);
        let l2 = self.last(2);
        if l0 == "=" && l2 == "let" {
            return Context::Callables;
        }
        match l0 {
            "in" | "when" | "until" | "return" | "and" | "or" | "not" | "==" | "!=" | "<"
            | "<=" | ">" | ">=" | "??" | "-" => {
                return Context::Values { expected: None };
            }
            "join" => return Context::JoinPolicy,
            "overlap" => return Context::Policies(OVERLAP_POLICIES),
            "catchup" => return Context::Policies(CATCHUP_POLICIES),
            "backoff" => return Context::Backoff,
            "retry" | "timeout" | "parallel" | "jitter" | "within" | "timezone" | "at_least"
            | "let" | "for" | "repeat" | "at_most" | "schedule" => {
                return Context::Nothing;
            }
            _ => {}
        }
        // A list after `non_retryable` or `after`.
        let mut k = self.before.len();
        let mut expect_word = false;
        while k > 0 {
            let t = self.tok(k - 1);
            if !expect_word && (t == "non_retryable" || t == "after") {
                return if t == "after" {
                    Context::Locals
                } else {
                    Context::ErrorNames {
                        callee: self.let_callee(),
                    }
                };
            }
            if expect_word {
                if self.before[k - 1].kind != TokKind::Word {
                    break;
                }
            } else if t != "," {
                break;
            }
            expect_word = !expect_word;
            k -= 1;
        }
        let after_let = self.in_let_statement();
        Context::Statement { after_let }
    }

    /// The callee of the `let` the cursor is in.
    fn let_callee(&self) -> Option<String> {
        let k = self
            .before
            .iter()
            .rposition(|t| t.text(self.text) == "let")?;
        let rest = &self.before[k..];
        let eq = rest.iter().position(|t| t.text(self.text) == "=")?;
        let mut i = eq + 1;
        if matches!(
            rest.get(i).map(|t| t.text(self.text)),
            Some("for" | "repeat")
        ) {
            // for x in e join p { Callee(   or   repeat x at_most n { Callee(
            i = rest.iter().position(|t| t.text(self.text) == "{")? + 1;
        }
        rest.get(i).map(|t| t.text(self.text).to_string())
    }

    /// The last statement before the cursor is a `let` with a complete call, so
    /// step options may follow.
    fn in_let_statement(&self) -> bool {
        let starts = ["let", "when", "return", "deadline", "schedule", "{", "}"];
        let Some(k) = self
            .before
            .iter()
            .rposition(|t| starts.contains(&t.text(self.text)) && t.text(self.text) != "timeout")
        else {
            return false;
        };
        self.tok(k) == "let"
            || (self.tok(k) == "}"
                && self.last(0) == "}"
                && self.before[..k]
                    .iter()
                    .rev()
                    .take(20)
                    .any(|t| matches!(t.text(self.text), "join" | "at_most")))
    }
}

/// The names a flow's body can use at the cursor.
struct Scope<'a> {
    flow: Option<FlowInfo>,
    /// The fan-out variable whose `for` the cursor is in.
    item: Option<(String, Ty)>,
    #[allow(dead_code)]
    db: Db<'a>,
}

impl<'a> Scope<'a> {
    fn new(req: &Request<'a>, cx: &Cursor) -> Scope<'a> {
        let flow = (cx.item_keyword() == "flow")
            .then(|| cx.item_name())
            .flatten()
            .and_then(|name| current_flow(req, name));
        // `for x in … {` or `repeat x at_most n {` before the cursor, still open.
        let item = cx.open.iter().rev().find_map(|&o| {
            let k = cx.before[..o]
                .iter()
                .rposition(|t| matches!(t.text(cx.text), "for" | "repeat"))?;
            let var = cx.tok(k + 1).to_string();
            if !matches!(cx.tok(k + 2), "in" | "at_most")
                || cx.before[k..o].iter().any(|t| t.text(cx.text) == "let")
            {
                return None;
            }
            let ty = flow
                .as_ref()
                .and_then(|f| {
                    f.items
                        .iter()
                        .find(|(n, _)| *n == var)
                        .map(|(_, t)| t.clone())
                })
                .unwrap_or(Ty::Error);
            Some((var, ty))
        });
        Scope {
            flow,
            item,
            db: req.db,
        }
    }

    fn lets(&self) -> Vec<(String, Ty)> {
        self.flow
            .as_ref()
            .map(|f| {
                f.lets
                    .iter()
                    .map(|(n, t, _)| (n.clone(), t.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every value name with its type: the fan-out variable, parameters, `let`s.
    fn values(&self) -> Vec<(String, Ty, Kind)> {
        let mut out = Vec::new();
        if let Some((n, t)) = &self.item {
            out.push((n.clone(), t.clone(), Kind::Local));
        }
        if let Some(f) = &self.flow {
            out.extend(
                f.params
                    .iter()
                    .map(|(n, t)| (n.clone(), t.clone(), Kind::Param)),
            );
            out.extend(
                f.lets
                    .iter()
                    .map(|(n, t, _)| (n.clone(), t.clone(), Kind::Local)),
            );
        }
        out
    }

    fn type_of(&self, name: &str) -> Option<Ty> {
        self.values()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, t, _)| t)
    }
}

/// The flow named `name` in the request's file: as checked now, completed with
/// what it was the last time it checked cleanly.
fn current_flow(req: &Request, name: &str) -> Option<FlowInfo> {
    let m = req.db.module(req.file)?;
    let now = m.flows.iter().find(|f| &*f.name == name).map(flow_info);
    let before = req.memory.get(&m.name, name);
    match (now, before) {
        (Some(mut now), Some(before)) => {
            for l in &before.lets {
                if !now.lets.iter().any(|x| x.0 == l.0) {
                    now.lets.push(l.clone());
                }
            }
            for i in &before.items {
                if !now.items.iter().any(|x| x.0 == i.0) {
                    now.items.push(i.clone());
                }
            }
            Some(now)
        }
        (Some(now), None) => Some(now),
        (None, before) => before.cloned(),
    }
}

fn lookup(req: &Request, name: &str) -> Option<(DefId, SymbolKind)> {
    let sym = req.db.module(req.file)?.namespace.get(name)?;
    Some((sym.def, sym.kind))
}

fn param_type(req: &Request, callee: &str, param: &str) -> Option<Ty> {
    let (def, _) = lookup(req, callee)?;
    let params = match req.db.sig(def)? {
        ItemSig::Step(s) => &s.params,
        ItemSig::Flow(f) => &f.params,
        _ => return None,
    };
    params
        .iter()
        .find(|p| p.name == param)
        .map(|p| p.ty.clone())
}

fn flow_param_type(req: &Request, flow: &str, param: &str) -> Option<Ty> {
    let (def, _) = lookup(req, flow)?;
    match req.db.sig(def)? {
        ItemSig::Flow(f) => f
            .params
            .iter()
            .find(|p| p.name == param)
            .map(|p| p.ty.clone()),
        _ => None,
    }
}

fn record_field_type(req: &Request, record: &str, field: &str) -> Option<Ty> {
    let (def, _) = lookup(req, record)?;
    req.db.record(def)?.field(field).map(|f| f.ty.clone())
}

fn kind_of(kind: SymbolKind) -> Kind {
    match kind {
        SymbolKind::Record => Kind::Record,
        SymbolKind::Enum => Kind::Enum,
        SymbolKind::Alias => Kind::Alias,
        SymbolKind::Step => Kind::Step,
        SymbolKind::Flow => Kind::Flow,
    }
}

fn item_doc(db: Db, def: DefId) -> String {
    let mut parts = Vec::new();
    if let Some(d) = render::declaration(db, def) {
        parts.push(format!("```eflow\n{d}\n```"));
    }
    if let Some(doc) = db.doc(def) {
        parts.push(doc.to_string());
    }
    parts.push(format!("*from `{}`*", render::module_name(db, def)));
    parts.join("\n\n")
}

fn short_detail(db: Db, def: DefId) -> String {
    match db.sig(def) {
        Some(ItemSig::Step(s)) => {
            let sig = render::call_signature(db, def)
                .map(|(s, _)| s)
                .unwrap_or_default();
            format!("{} step {sig}", s.kind.keyword())
        }
        Some(ItemSig::Flow(_)) => format!(
            "flow {}",
            render::call_signature(db, def)
                .map(|(s, _)| s)
                .unwrap_or_default()
        ),
        Some(ItemSig::Record(_)) => format!("record ({})", render::module_name(db, def)),
        Some(ItemSig::Enum(_)) => format!("enum ({})", render::module_name(db, def)),
        Some(ItemSig::Alias(a)) => format!("= {}", a.ty),
        _ => String::new(),
    }
}

/// The edit that imports `name` from `target` into the request's file.
fn import_edit(req: &Request, target: FileId, name: &str) -> Option<(Span, String)> {
    add_import(req.db, req.file, target, name)
}

/// The edit that imports `name` from module `target` into `file`: added to an
/// existing import of that module, or as a new import after the others.
pub fn add_import(db: Db, file: FileId, target: FileId, name: &str) -> Option<(Span, String)> {
    let edit = db.analysis.import_edit(file, target, name)?;
    Some((edit.span, edit.text))
}

/// Items other modules declare that this file could import, by kind.
fn importable(
    req: &Request,
    want: impl Fn(SymbolKind) -> bool,
) -> Vec<(DefId, SymbolKind, String)> {
    let Some(m) = req.db.module(req.file) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for other in &req.db.analysis.modules {
        if other.file == req.file || req.db.is_hidden(other.file) {
            continue;
        }
        for (name, sym) in req.db.analysis.semantics().own_items(other.file) {
            if !want(sym.kind) || m.namespace.get(&name).is_some() || !seen.insert(name.clone()) {
                continue;
            }
            out.push((sym.def, sym.kind, name));
        }
    }
    out
}

fn top_level(req: &Request, out: &mut Vec<Completion>) {
    let items: &[(&str, &str, &str)] = &[
        (
            "from",
            "from \"${1:std/ml}\" import ${2:Dataset}",
            "import names from another module",
        ),
        (
            "record",
            "record ${1:Name} {\n    ${2:field}: ${3:String},\n}",
            "a record type",
        ),
        (
            "enum",
            "enum ${1:Name} {\n    ${2:Variant},\n}",
            "an enum type",
        ),
        (
            "type",
            "type ${1:Name} = ${2:Map<String, String>}",
            "a type alias",
        ),
        (
            "remote step",
            "remote step ${1:Name}(${2:input}: ${3:Dataset}) -> ${4:Dataset}",
            "a step that starts work elsewhere and completes by callback",
        ),
        (
            "call step",
            "call step ${1:Name}(${2:input}: ${3:String}) -> ${4:String}",
            "a synchronous request",
        ),
        (
            "approval step",
            "approval step ${1:Name}(${2:subject}: ${3:String}) -> ${4:Decision}",
            "waits for a person's decision",
        ),
        (
            "wait step",
            "wait step ${1:Name}(${2:duration}: Duration) -> Timestamp",
            "waits for a duration or until a moment",
        ),
        (
            "flow",
            "flow ${1:Name}(${2}) {\n    $0\n}",
            "a flow: typed parameters, steps wired by their outputs",
        ),
        (
            "bindings",
            "bindings ${1:dev} {\n    $0\n}",
            "which connector carries out each step in an environment",
        ),
    ];
    for (label, snip, doc) in items {
        out.push(
            Completion::new(*label, Kind::Keyword)
                .doc(*doc)
                .snippet(*snip)
                .rank(1),
        );
    }
    let _ = req;
}

fn import_paths(req: &Request, cx: &Cursor, in_string: bool, out: &mut Vec<Completion>) {
    let mut paths: Vec<(String, FileId)> = Vec::new();
    for m in &req.db.analysis.modules {
        if m.file == req.file || req.db.is_hidden(m.file) {
            continue;
        }
        if let Some(p) = req.db.import_path(req.file, m.file) {
            paths.push((p, m.file));
        }
    }
    paths.sort();
    paths.dedup_by(|a, b| a.0 == b.0);
    for (p, file) in paths {
        let std = p.starts_with("std/");
        let mut c = Completion::new(p.clone(), Kind::Module)
            .detail(if std {
                "standard library"
            } else {
                "workspace module"
            })
            .rank(if std { 2 } else { 1 });
        let names: Vec<String> = req
            .db
            .module(file)
            .map(|_| {
                req.db
                    .analysis
                    .semantics()
                    .own_items(file)
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect()
            })
            .unwrap_or_default();
        c = c.doc(format!("defines `{}`", names.join("`, `")));
        if let Some(s) = cx.in_string {
            // Replace the string's content typed so far.
            c.replace = Some(Span::new(
                s.start + 1,
                s.end.min(cx.text.len()).max(s.start + 1),
            ));
            if matches!(s.kind, TokKind::Str { closed: true }) {
                c.replace = Some(Span::new(s.start + 1, s.end - 1));
            }
            c.insert = Some(p);
        } else if !in_string {
            c.insert = Some(format!("\"{p}\""));
        }
        out.push(c);
    }
}

fn import_names(req: &Request, path: &str, out: &mut Vec<Completion>) {
    let Some(m) = req.db.module(req.file) else {
        return;
    };
    let target = req.db.analysis.modules.iter().find(|t| {
        t.file != req.file
            && req
                .db
                .import_path(req.file, t.file)
                .is_some_and(|p| p == path.trim_end_matches(".eflow"))
    });
    let Some(target) = target else {
        return;
    };
    let already: HashSet<String> = m
        .ast
        .items
        .iter()
        .filter_map(|i| match &i.kind {
            ast::ItemKind::Import(imp) if imp.path.value == path => {
                Some(imp.names.iter().map(|n| n.name.name.clone()))
            }
            _ => None,
        })
        .flatten()
        .collect();
    for (name, sym) in req.db.analysis.semantics().own_items(target.file) {
        if already.contains(&name) {
            continue;
        }
        out.push(
            Completion::new(name, kind_of(sym.kind))
                .detail(short_detail(req.db, sym.def))
                .doc(item_doc(req.db, sym.def)),
        );
    }
}

fn types(req: &Request, cx: &Cursor, out: &mut Vec<Completion>) {
    for (name, _) in PRIMITIVES {
        out.push(
            Completion::new(*name, Kind::Builtin)
                .doc(builtin_doc(name))
                .rank(2),
        );
    }
    out.push(
        Completion::new("List", Kind::Builtin)
            .doc(builtin_doc("List"))
            .snippet("List<$1>")
            .rank(2),
    );
    out.push(
        Completion::new("Map", Kind::Builtin)
            .doc(builtin_doc("Map"))
            .snippet("Map<${1:String}, $2>")
            .rank(2),
    );
    // Type parameters of the item being declared: `record R<T, U>`, `step S<T>`.
    if let Some(start) = cx.item_start {
        let mut k = start;
        while k < cx.before.len() && cx.tok(k) != "<" && !matches!(cx.tok(k), "(" | "{") {
            k += 1;
        }
        if cx.tok(k) == "<" {
            let mut j = k + 1;
            while j < cx.before.len() && cx.tok(j) != ">" {
                if cx.before[j].kind == TokKind::Word {
                    out.push(
                        Completion::new(cx.tok(j), Kind::TypeParam)
                            .detail("type parameter")
                            .rank(0),
                    );
                }
                j += 1;
            }
        }
    }
    if let Some(m) = req.db.module(req.file) {
        for (name, sym) in &m.namespace.symbols {
            if sym.kind.is_type() {
                out.push(
                    Completion::new(name.clone(), kind_of(sym.kind))
                        .detail(short_detail(req.db, sym.def))
                        .doc(item_doc(req.db, sym.def))
                        .rank(1),
                );
            }
        }
    }
    for (def, kind, name) in importable(req, SymbolKind::is_type) {
        let mut c = Completion::new(name.clone(), kind_of(kind))
            .detail(format!(
                "import from \"{}\"",
                render::module_name(req.db, def)
            ))
            .doc(item_doc(req.db, def))
            .rank(3);
        c.edits.extend(import_edit(req, def.file, &name));
        out.push(c);
    }
}

fn statements(req: &Request, after_let: bool, out: &mut Vec<Completion>) {
    let stmts: &[(&str, &str, &str)] = &[
        (
            "let",
            "let ${1:name} = $0",
            "run a step or subflow and name its output",
        ),
        (
            "when",
            "when ${1:condition} {\n    $0\n}",
            "run statements only if a condition holds",
        ),
        ("return", "return $0", "the flow's result"),
        (
            "deadline",
            "deadline ${1:30d}",
            "the longest the whole run may take",
        ),
        (
            "schedule",
            "schedule \"${1:0 3 * * MON}\"\n    timezone \"${2:UTC}\"",
            "start runs of this flow on a cron schedule",
        ),
        (
            "else",
            "else {\n    $0\n}",
            "statements for when the condition is false",
        ),
    ];
    for (k, snip, doc) in stmts {
        out.push(
            Completion::new(*k, Kind::Keyword)
                .doc(*doc)
                .snippet(*snip)
                .rank(2),
        );
    }
    if after_let {
        let options: &[(&str, &str, &str)] = &[
            ("retry", "retry ${1:3}", "at most N attempts in all"),
            (
                "backoff",
                "backoff exponential(${1:10s}, ${2:10m})",
                "how long to wait between attempts",
            ),
            (
                "non_retryable",
                "non_retryable $0",
                "errors not worth another attempt",
            ),
            ("after", "after $0", "start only after these steps finished"),
            (
                "parallel",
                "parallel ${1:10}",
                "fan-outs: at most N children at a time",
            ),
            (
                "timeout",
                "timeout ${1:1h}",
                "how long each attempt may take",
            ),
        ];
        for (k, snip, doc) in options {
            out.push(
                Completion::new(*k, Kind::Keyword)
                    .detail("step option")
                    .doc(*doc)
                    .snippet(*snip)
                    .rank(1),
            );
        }
    }
    let _ = req;
}

/// `Name(p: ${1:value}, …)` for the parameters that must be given, each filled with
/// a value of a fitting type when the flow has one.
fn call_snippet(req: &Request, scope: &Scope, def: DefId, name: &str) -> String {
    let params = match req.db.sig(def) {
        Some(ItemSig::Step(s)) => &s.params,
        Some(ItemSig::Flow(f)) => &f.params,
        _ => return format!("{name}($0)"),
    };
    let values = scope.values();
    let required: Vec<String> = params
        .iter()
        .filter(|p| !p.omittable)
        .enumerate()
        .map(|(i, p)| {
            let fitting = values
                .iter()
                .filter(|(_, t, _)| *t != Ty::Error && !p.ty.has_params() && t.flows_into(&p.ty))
                .map(|(n, _, _)| n.as_str())
                .find(|n| *n == p.name)
                .or_else(|| {
                    values
                        .iter()
                        .find(|(_, t, _)| {
                            *t != Ty::Error && !p.ty.has_params() && t.flows_into(&p.ty)
                        })
                        .map(|(n, _, _)| n.as_str())
                });
            format!("{}: ${{{}:{}}}", p.name, i + 1, fitting.unwrap_or(&p.name))
        })
        .collect();
    if required.is_empty() {
        format!("{name}($0)")
    } else {
        format!("{name}({})", required.join(", "))
    }
}

fn callables(req: &Request, scope: &Scope, out: &mut Vec<Completion>) {
    if let Some(m) = req.db.module(req.file) {
        for (name, sym) in &m.namespace.symbols {
            if sym.kind.is_callable() {
                out.push(
                    Completion::new(name.clone(), kind_of(sym.kind))
                        .detail(short_detail(req.db, sym.def))
                        .doc(item_doc(req.db, sym.def))
                        .snippet(call_snippet(req, scope, sym.def, name))
                        .rank(1),
                );
            }
        }
    }
    for (def, kind, name) in importable(req, SymbolKind::is_callable) {
        let mut c = Completion::new(name.clone(), kind_of(kind))
            .detail(format!(
                "import from \"{}\" — {}",
                render::module_name(req.db, def),
                short_detail(req.db, def)
            ))
            .doc(item_doc(req.db, def))
            .snippet(call_snippet(req, scope, def, &name))
            .rank(3);
        c.edits.extend(import_edit(req, def.file, &name));
        out.push(c);
    }
    out.push(
        Completion::new("for", Kind::Keyword)
            .doc("fan out: one call per element of a list")
            .snippet("for ${1:x} in ${2:list} join ${3|all,any,at_least 1|} {\n    $0\n}")
            .rank(2),
    );
    out.push(
        Completion::new("repeat", Kind::Keyword)
            .doc("a bounded loop: the call again with the previous iteration's output, until a condition holds")
            .snippet("repeat ${1:m} at_most ${2:5} {\n    $0\n} until ${3:cond}")
            .rank(2),
    );
}

fn arg_names(
    req: &Request,
    scope: &Scope,
    callee: &str,
    given: &[String],
    out: &mut Vec<Completion>,
) {
    let (params, def): (Vec<(String, Ty, bool)>, Option<DefId>) =
        if let Some(flow) = callee.strip_prefix("input:") {
            let Some((def, _)) = lookup(req, flow) else {
                return;
            };
            match req.db.sig(def) {
                Some(ItemSig::Flow(f)) => (
                    f.params
                        .iter()
                        .map(|p| (p.name.clone(), p.ty.clone(), p.omittable))
                        .collect(),
                    Some(def),
                ),
                _ => return,
            }
        } else {
            let Some((def, _)) = lookup(req, callee) else {
                return;
            };
            match req.db.sig(def) {
                Some(ItemSig::Step(s)) => (
                    s.params
                        .iter()
                        .map(|p| (p.name.clone(), p.ty.clone(), p.omittable))
                        .collect(),
                    Some(def),
                ),
                Some(ItemSig::Flow(f)) => (
                    f.params
                        .iter()
                        .map(|p| (p.name.clone(), p.ty.clone(), p.omittable))
                        .collect(),
                    Some(def),
                ),
                _ => return,
            }
        };
    let docs: HashMap<String, String> = def
        .and_then(|d| req.db.item(d))
        .map(|item| {
            let ps = match &item.kind {
                ast::ItemKind::Step(s) => &s.params[..],
                ast::ItemKind::Flow(f) => &f.params[..],
                _ => &[],
            };
            ps.iter()
                .filter_map(|p| Some((p.name.name.clone(), p.doc.as_ref()?.text.clone())))
                .collect()
        })
        .unwrap_or_default();
    let values = scope.values();
    for (name, ty, omittable) in params {
        if given.contains(&name) {
            continue;
        }
        let fitting = values
            .iter()
            .find(|(n, t, _)| *n == name && t.flows_into(&ty))
            .or_else(|| {
                values
                    .iter()
                    .find(|(_, t, _)| *t != Ty::Error && !ty.has_params() && t.flows_into(&ty))
            })
            .map(|(n, _, _)| n.clone());
        let snip = match fitting {
            Some(v) => format!("{name}: ${{1:{v}}}"),
            None => format!("{name}: $0"),
        };
        out.push(
            Completion::new(name.clone(), Kind::Param)
                .detail(format!(
                    "{ty}{}",
                    if omittable { " (optional)" } else { "" }
                ))
                .doc(docs.get(&name).cloned().unwrap_or_default())
                .snippet(snip)
                .rank(if omittable { 2 } else { 0 }),
        );
    }
}

fn values(req: &Request, scope: &Scope, expected: Option<&Ty>, out: &mut Vec<Completion>) {
    let fits = |t: &Ty| expected.is_some_and(|e| *t != Ty::Error && t.flows_into(e));
    for (name, ty, kind) in scope.values() {
        out.push(
            Completion::new(name, kind)
                .detail(ty.to_string())
                .rank(if fits(&ty) { 0 } else { 2 }),
        );
    }
    if scope.flow.is_some() {
        out.push(
            Completion::new("run", Kind::Value)
                .detail("the current run")
                .doc("`run.id`, `run.tenant`, `run.flow`, `run.version`, `run.started_at`")
                .rank(3),
        );
    }
    match expected.map(Ty::unwrap_optional) {
        Some(Ty::Enum { def, name }) => {
            if let Some(ItemSig::Enum(e)) = req.db.sig(*def) {
                for v in &e.variants {
                    out.push(
                        Completion::new(format!("{name}.{v}"), Kind::Variant)
                            .detail(name.to_string())
                            .rank(0),
                    );
                }
            }
        }
        Some(Ty::Record { def, name, .. }) => {
            if let Some(r) = req.db.record(*def) {
                let fields: Vec<String> = r
                    .fields
                    .iter()
                    .filter(|f| !f.ty.is_optional())
                    .enumerate()
                    .map(|(i, f)| format!("{}: ${}", f.name, i + 1))
                    .collect();
                out.push(
                    Completion::new(format!("{name} {{ … }}"), Kind::Record)
                        .detail(format!("a new `{name}`"))
                        .snippet(format!("{name} {{ {} }}", fields.join(", ")))
                        .rank(1),
                );
            }
        }
        Some(Ty::Bool) => {
            for b in ["true", "false"] {
                out.push(Completion::new(b, Kind::Keyword).rank(1));
            }
        }
        Some(Ty::List(_)) => out.push(Completion::new("[]", Kind::Value).insert("[$0]").rank(3)),
        _ => {}
    }
    if expected.is_some_and(Ty::is_optional) {
        out.push(
            Completion::new("none", Kind::Keyword)
                .detail("no value")
                .rank(1),
        );
    }
    if expected.is_none() {
        for k in ["true", "false", "none", "not"] {
            out.push(Completion::new(k, Kind::Keyword).rank(4));
        }
        if let Some(m) = req.db.module(req.file) {
            for (name, sym) in &m.namespace.symbols {
                if matches!(sym.kind, SymbolKind::Enum | SymbolKind::Record) {
                    out.push(
                        Completion::new(name.clone(), kind_of(sym.kind))
                            .detail(short_detail(req.db, sym.def))
                            .rank(4),
                    );
                }
            }
        }
    }
}

fn fields(req: &Request, scope: &Scope, segments: &[String], out: &mut Vec<Completion>) {
    let Some(first) = segments.first() else {
        return;
    };
    if first == "run" && segments.len() == 1 && scope.type_of("run").is_none() {
        for (n, t, d) in RUN_FIELDS {
            out.push(
                Completion::new(*n, Kind::Field)
                    .detail(t.to_string())
                    .doc(*d),
            );
        }
        return;
    }
    let mut ty = match scope.type_of(first) {
        Some(t) => t,
        None => {
            // An enum: its variants.
            if let Some((def, SymbolKind::Enum)) = lookup(req, first)
                && let Some(ItemSig::Enum(e)) = req.db.sig(def)
                && segments.len() == 1
            {
                let docs: HashMap<String, String> = match req.db.item(def).map(|i| &i.kind) {
                    Some(ast::ItemKind::Enum(decl)) => decl
                        .variants
                        .iter()
                        .filter_map(|v| Some((v.name.name.clone(), v.doc.as_ref()?.text.clone())))
                        .collect(),
                    _ => HashMap::new(),
                };
                for v in &e.variants {
                    out.push(
                        Completion::new(v.clone(), Kind::Variant)
                            .detail(e.name.to_string())
                            .doc(docs.get(v).cloned().unwrap_or_default()),
                    );
                }
            }
            return;
        }
    };
    for seg in &segments[1..] {
        let Some((_, next)) = resolve_field(req.db, &ty, seg) else {
            return;
        };
        ty = next;
    }
    let base = ty.unwrap_optional().clone();
    let Ty::Record { def, args, .. } = &base else {
        return;
    };
    let Some(def) = live_record(req.db, *def, &base) else {
        return;
    };
    let Some(sig) = req.db.record(def) else {
        return;
    };
    let docs = field_docs(req.db, def);
    let map = sig.instantiate(args);
    for f in &sig.fields {
        out.push(
            Completion::new(f.name.clone(), Kind::Field)
                .detail(f.ty.subst(&map).to_string())
                .doc(docs.get(&f.name).cloned().unwrap_or_default()),
        );
    }
}

/// Each field's doc comment, by field name.
fn field_docs(db: Db, def: DefId) -> HashMap<String, String> {
    match db.item(def).map(|i| &i.kind) {
        Some(ast::ItemKind::Record(r)) => r
            .fields
            .iter()
            .filter_map(|f| Some((f.name.name.clone(), f.doc.as_ref()?.text.clone())))
            .collect(),
        _ => HashMap::new(),
    }
}

/// A record type remembered from an older analysis may name an item by an index
/// that moved: find it again by name.
fn live_record(db: Db, def: DefId, ty: &Ty) -> Option<DefId> {
    let Ty::Record { name, .. } = ty else {
        return None;
    };
    if db.item_name(def).is_some_and(|n| *n.name == **name) && db.record(def).is_some() {
        return Some(def);
    }
    db.items_named(name)
        .into_iter()
        .find(|d| db.record(*d).is_some())
}

fn resolve_field(db: Db, ty: &Ty, field: &str) -> Option<(DefId, Ty)> {
    let base = ty.unwrap_optional();
    if let Ty::Record { def, name, args } = base {
        let def = live_record(db, *def, base)?;
        return db.field_type(
            &Ty::Record {
                def,
                name: name.clone(),
                args: args.clone(),
            },
            field,
        );
    }
    None
}

fn record_fields(req: &Request, record: &str, given: &[String], out: &mut Vec<Completion>) {
    let Some((def, _)) = lookup(req, record) else {
        return;
    };
    let Some(sig) = req.db.record(def) else {
        return;
    };
    let docs = field_docs(req.db, def);
    for f in &sig.fields {
        if given.contains(&f.name) {
            continue;
        }
        out.push(
            Completion::new(f.name.clone(), Kind::Field)
                .detail(f.ty.to_string())
                .doc(docs.get(&f.name).cloned().unwrap_or_default())
                .snippet(format!("{}: $0", f.name))
                .rank(if f.ty.is_optional() { 2 } else { 0 }),
        );
    }
}

fn error_names(req: &Request, callee: Option<&str>, out: &mut Vec<Completion>) {
    if let Some(c) = callee
        && let Some((def, SymbolKind::Step)) = lookup(req, c)
        && let Some(ItemSig::Step(s)) = req.db.sig(def)
    {
        for r in &s.raises {
            out.push(
                Completion::new(r.clone(), Kind::ErrorName)
                    .detail(format!("raised by {c}"))
                    .rank(0),
            );
        }
    }
    out.push(
        Completion::new("Timeout", Kind::ErrorName)
            .detail("an attempt outlived its timeout")
            .rank(1),
    );
}

fn binding_entries(req: &Request, given: &[String], out: &mut Vec<Completion>) {
    let Some(m) = req.db.module(req.file) else {
        return;
    };
    for (name, sym) in &m.namespace.symbols {
        if sym.kind != SymbolKind::Step || given.contains(name) {
            continue;
        }
        let Some(ItemSig::Step(s)) = req.db.sig(sym.def) else {
            continue;
        };
        let snip = match s.kind {
            StepKind::Wait => continue,
            StepKind::Approval => {
                format!("{name} = approval {{ approvers: [${{1:\"me@example.com\"}}] }}")
            }
            StepKind::Call | StepKind::Remote => {
                format!("{name} = ${{1|sim,http|}} {{ ${{2:duration: 1m}} }}")
            }
        };
        out.push(
            Completion::new(name.clone(), Kind::Step)
                .detail(short_detail(req.db, sym.def))
                .doc(item_doc(req.db, sym.def))
                .snippet(snip)
                .rank(0),
        );
    }
}

fn connector_names(req: &Request, step: Option<&str>, out: &mut Vec<Completion>) {
    let kind = step
        .and_then(|s| lookup(req, s))
        .and_then(|(def, _)| match req.db.sig(def) {
            Some(ItemSig::Step(s)) => Some(s.kind),
            _ => None,
        });
    for c in connectors() {
        let fits = kind.is_none_or(|k| c.kinds.contains(&k));
        let required: Vec<String> = c
            .keys
            .iter()
            .filter(|k| k.required)
            .enumerate()
            .map(|(i, k)| {
                let placeholder = match k.ty {
                    Ty::String => format!("\"${{{}}}\"", i + 1),
                    _ => format!("${{{}}}", i + 1),
                };
                format!("{}: {placeholder}", k.name)
            })
            .collect();
        let keys: Vec<String> = c
            .keys
            .iter()
            .map(|k| format!("- {}", k.describe()))
            .collect();
        out.push(
            Completion::new(c.name, Kind::Connector)
                .detail(if fits {
                    "connector"
                } else {
                    "connector (not for this kind of step)"
                })
                .doc(format!("{}\n\n{}", c.doc, keys.join("\n")))
                .snippet(if required.is_empty() {
                    format!("{} {{ $0 }}", c.name)
                } else {
                    format!("{} {{ {} }}", c.name, required.join(", "))
                })
                .rank(if fits { 0 } else { 3 }),
        );
    }
}

fn config_keys(connector: &str, given: &[String], out: &mut Vec<Completion>) {
    let Some(c) = connectors().into_iter().find(|c| c.name == connector) else {
        return;
    };
    for k in &c.keys {
        if given.iter().any(|g| g == k.name) {
            continue;
        }
        out.push(
            Completion::new(k.name, Kind::Key)
                .detail(format!(
                    "{}{}",
                    k.ty,
                    if k.required { " (required)" } else { "" }
                ))
                .doc(k.doc)
                .snippet(format!("{}: $0", k.name))
                .rank(if k.required { 0 } else { 1 }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_lose_their_tab_stops() {
        assert_eq!(
            strip_snippet("Train(features: ${1:features}, spec: ${2:spec})"),
            "Train(features: features, spec: spec)"
        );
        assert_eq!(strip_snippet("let ${1:name} = $0"), "let name = ");
        assert_eq!(strip_snippet("List<$1>"), "List<>");
        assert_eq!(
            strip_snippet("A = ${1|sim,http|} { ${2:duration: 1m} }"),
            "A = sim { duration: 1m }"
        );
    }
}
