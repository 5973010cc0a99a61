//! What every name in a file refers to: the one table behind hover, go to
//! definition, references, rename, highlighting and semantic tokens.
//!
//! Names are resolved the way the checker resolves them (a flow's fan-out variable,
//! then its parameters, then its `let`s, then `run`, then the module's names), and
//! types are read from the checked flows and signatures, never recomputed.

use std::collections::HashMap;

use eflow_compiler::analysis::Module;
use eflow_compiler::check::bindings::connectors;
use eflow_compiler::check::flow::{CheckedFlow, RUN_FIELDS, TExpr, TExprKind};
use eflow_compiler::check::sigs::{ItemSig, ParamSig};
use eflow_compiler::names::SymbolKind;
use eflow_compiler::source::FileId;
use eflow_compiler::syntax::ast::{self, Expr, ExprKind, Span, TypeExpr, TypeExprKind};
use eflow_compiler::types::{DefId, PRIMITIVES, Ty};

use super::Db;

/// Something a name can refer to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Def {
    /// A record, enum, alias, step or flow.
    Item(DefId),
    Field {
        record: DefId,
        name: String,
    },
    Variant {
        en: DefId,
        name: String,
    },
    /// A parameter of a step or flow.
    Param {
        owner: DefId,
        name: String,
    },
    /// A `let` of a flow.
    Local {
        flow: DefId,
        name: String,
    },
    /// A fan-out's `for x`, identified by where it is declared.
    ForVar {
        file: FileId,
        decl: Span,
    },
    /// A type parameter of a generic record, alias or step.
    Generic {
        owner: DefId,
        name: String,
    },
    /// An error name a step `raises`.
    ErrorName {
        step: DefId,
        name: String,
    },
    Module(FileId),
    /// A bindings environment, by name.
    Env(String),
    Run,
    RunField(String),
    /// `Int`, `List`, `Timeout`, …
    Builtin(String),
    Connector(String),
    ConnectorKey {
        connector: String,
        key: String,
    },
}

impl Def {
    /// Whether rename may change it: things the user declared in a file.
    pub fn renamable(&self) -> bool {
        matches!(
            self,
            Def::Item(_)
                | Def::Field { .. }
                | Def::Variant { .. }
                | Def::Param { .. }
                | Def::Local { .. }
                | Def::ForVar { .. }
                | Def::Generic { .. }
                | Def::ErrorName { .. }
                | Def::Env(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    pub span: Span,
    pub def: Def,
    /// This is where it is declared.
    pub decl: bool,
    /// The type of the value named here, when it is a value.
    pub ty: Option<Ty>,
}

/// Every resolved name of one file, sorted by position.
#[derive(Debug, Clone, Default)]
pub struct FileIndex {
    pub occurrences: Vec<Occurrence>,
}

impl FileIndex {
    /// The name at an offset; a cursor just after a name still finds it.
    pub fn at(&self, offset: usize) -> Option<&Occurrence> {
        let inside = self
            .occurrences
            .iter()
            .find(|o| (o.span.start as usize) <= offset && offset < o.span.end as usize);
        inside.or_else(|| {
            self.occurrences
                .iter()
                .find(|o| o.span.end as usize == offset && !o.span.is_empty())
        })
    }
}

/// Build the index of one module.
pub fn index_file(db: Db, file: FileId) -> FileIndex {
    let Some(module) = db.module(file) else {
        return FileIndex::default();
    };
    let mut b = Builder {
        db,
        module,
        out: Vec::new(),
    };
    for (i, item) in module.ast.items.iter().enumerate() {
        b.item(i, item);
    }
    let mut occurrences = b.out;
    occurrences.sort_by_key(|o| (o.span.start, o.span.end));
    occurrences.dedup_by(|a, b| a.span == b.span && a.def == b.def);
    FileIndex { occurrences }
}

struct Builder<'a> {
    db: Db<'a>,
    module: &'a Module,
    out: Vec<Occurrence>,
}

/// What names mean inside one flow's body.
struct FlowScope<'a> {
    def: DefId,
    params: &'a [ParamSig],
    checked: Option<&'a CheckedFlow>,
    /// The type of every checked expression, by span.
    types: HashMap<Span, Ty>,
    /// `let` names and where they are declared.
    lets: HashMap<&'a str, Span>,
    /// The fan-out variable in scope: name, declaration, element type.
    item: Option<(&'a str, Span, Ty)>,
}

impl<'a> Builder<'a> {
    fn file(&self) -> FileId {
        self.module.file
    }

    fn push(&mut self, span: Span, def: Def, decl: bool, ty: Option<Ty>) {
        self.out.push(Occurrence {
            span,
            def,
            decl,
            ty,
        });
    }

    fn item(&mut self, i: usize, item: &'a ast::Item) {
        let def = DefId {
            file: self.file(),
            item: i as u32,
        };
        let sig = self.db.sig(def);
        match &item.kind {
            ast::ItemKind::Import(imp) => {
                let target = self.module.imports.get(&i).copied();
                if let Some(t) = target {
                    self.push(imp.path.span, Def::Module(t), false, None);
                }
                for n in &imp.names {
                    let found = target.and_then(|t| {
                        self.db
                            .items_named(&n.name.name)
                            .into_iter()
                            .find(|d| d.file == t)
                    });
                    if let Some(d) = found {
                        self.push(n.name.span, Def::Item(d), false, None);
                        if let Some(a) = &n.alias {
                            self.push(a.span, Def::Item(d), false, None);
                        }
                    }
                }
            }
            ast::ItemKind::Record(r) => {
                self.push(r.name.span, Def::Item(def), true, None);
                self.generics(def, &r.generics);
                let fields = match sig {
                    Some(ItemSig::Record(s)) => Some(s),
                    _ => None,
                };
                for f in &r.fields {
                    let ty = fields
                        .and_then(|s| s.field(&f.name.name))
                        .map(|x| x.ty.clone());
                    self.push(
                        f.name.span,
                        Def::Field {
                            record: def,
                            name: f.name.name.clone(),
                        },
                        true,
                        ty,
                    );
                    self.ty(&f.ty, def, &r.generics);
                }
            }
            ast::ItemKind::Enum(e) => {
                self.push(e.name.span, Def::Item(def), true, None);
                for v in &e.variants {
                    self.push(
                        v.name.span,
                        Def::Variant {
                            en: def,
                            name: v.name.name.clone(),
                        },
                        true,
                        Some(Ty::Enum {
                            def,
                            name: e.name.name.as_str().into(),
                        }),
                    );
                }
            }
            ast::ItemKind::Alias(a) => {
                self.push(a.name.span, Def::Item(def), true, None);
                self.generics(def, &a.generics);
                self.ty(&a.ty, def, &a.generics);
            }
            ast::ItemKind::Step(s) => {
                self.push(s.name.span, Def::Item(def), true, None);
                self.generics(def, &s.generics);
                let params = match sig {
                    Some(ItemSig::Step(sig)) => &sig.params[..],
                    _ => &[],
                };
                self.params(def, &s.params, params, &s.generics);
                if let Some(o) = &s.output {
                    self.ty(o, def, &s.generics);
                }
                for r in &s.raises {
                    self.push(
                        r.span,
                        Def::ErrorName {
                            step: def,
                            name: r.name.clone(),
                        },
                        true,
                        None,
                    );
                }
            }
            ast::ItemKind::Flow(f) => {
                self.push(f.name.span, Def::Item(def), true, None);
                let params = match sig {
                    Some(ItemSig::Flow(sig)) => &sig.params[..],
                    _ => &[],
                };
                self.params(def, &f.params, params, &[]);
                if let Some(o) = &f.output {
                    self.ty(o, def, &[]);
                }
                let checked = self.db.flow(def);
                let mut types = HashMap::new();
                if let Some(c) = checked {
                    collect_types(c, &mut types);
                }
                let mut lets = HashMap::new();
                collect_lets(&f.body, &mut lets);
                let mut scope = FlowScope {
                    def,
                    params,
                    checked,
                    types,
                    lets,
                    item: None,
                };
                self.stmts(&f.body, &mut scope);
            }
            ast::ItemKind::Bindings(b) => {
                self.push(b.env.span, Def::Env(b.env.name.clone()), true, None);
                let catalogue = connectors();
                for e in &b.entries {
                    if let Some(sym) = self.module.namespace.get(&e.step.name) {
                        self.push(e.step.span, Def::Item(sym.def), false, None);
                    }
                    let known = catalogue.iter().find(|c| c.name == e.connector.name);
                    if known.is_some() {
                        self.push(
                            e.connector.span,
                            Def::Connector(e.connector.name.clone()),
                            false,
                            None,
                        );
                    }
                    for c in &e.config {
                        if let Some(k) =
                            known.and_then(|k| k.keys.iter().find(|k| k.name == c.key.name))
                        {
                            self.push(
                                c.key.span,
                                Def::ConnectorKey {
                                    connector: e.connector.name.clone(),
                                    key: c.key.name.clone(),
                                },
                                false,
                                Some(k.ty.clone()),
                            );
                        }
                        self.const_expr(&c.value);
                    }
                }
            }
            ast::ItemKind::Error => {}
        }
    }

    fn generics(&mut self, owner: DefId, generics: &[ast::Ident]) {
        for g in generics {
            self.push(
                g.span,
                Def::Generic {
                    owner,
                    name: g.name.clone(),
                },
                true,
                None,
            );
        }
    }

    fn params(
        &mut self,
        owner: DefId,
        params: &'a [ast::Param],
        sigs: &[ParamSig],
        generics: &[ast::Ident],
    ) {
        for p in params {
            let ty = sigs
                .iter()
                .find(|s| s.name == p.name.name)
                .map(|s| s.ty.clone());
            self.push(
                p.name.span,
                Def::Param {
                    owner,
                    name: p.name.name.clone(),
                },
                true,
                ty,
            );
            self.ty(&p.ty, owner, generics);
            if let Some(d) = &p.default {
                self.const_expr(d);
            }
        }
    }

    fn ty(&mut self, te: &TypeExpr, owner: DefId, generics: &[ast::Ident]) {
        match &te.kind {
            TypeExprKind::Optional(inner) => self.ty(inner, owner, generics),
            TypeExprKind::Named { name, args } => {
                if generics.iter().any(|g| g.name == name.name) {
                    self.push(
                        name.span,
                        Def::Generic {
                            owner,
                            name: name.name.clone(),
                        },
                        false,
                        None,
                    );
                } else if PRIMITIVES.iter().any(|(n, _)| *n == name.name)
                    || matches!(name.name.as_str(), "List" | "Map")
                {
                    self.push(name.span, Def::Builtin(name.name.clone()), false, None);
                } else if let Some(sym) = self.module.namespace.get(&name.name) {
                    self.push(name.span, Def::Item(sym.def), false, None);
                }
                for a in args {
                    self.ty(a, owner, generics);
                }
            }
        }
    }

    /// An expression outside a flow body (a default, a binding's configuration):
    /// only enum variants and record literals have names in it.
    fn const_expr(&mut self, e: &'a Expr) {
        let mut scope = FlowScope {
            def: DefId {
                file: self.file(),
                item: u32::MAX,
            },
            params: &[],
            checked: None,
            types: HashMap::new(),
            lets: HashMap::new(),
            item: None,
        };
        self.expr(e, &mut scope);
    }

    fn stmts(&mut self, body: &'a [ast::Stmt], scope: &mut FlowScope<'a>) {
        for s in body {
            match &s.kind {
                ast::StmtKind::Let(l) => {
                    let ty = scope.checked.and_then(|c| {
                        c.nodes
                            .iter()
                            .find(|n| n.name_span == l.name.span)
                            .map(|n| n.output.clone())
                    });
                    self.push(
                        l.name.span,
                        Def::Local {
                            flow: scope.def,
                            name: l.name.name.clone(),
                        },
                        true,
                        ty,
                    );
                    let call = match &l.value {
                        ast::StepExpr::Call(c) => {
                            self.call(c, scope);
                            c
                        }
                        ast::StepExpr::ForEach(f) => {
                            self.expr(&f.over, scope);
                            let elem = match scope.types.get(&f.over.span) {
                                Some(Ty::List(t)) => Some((**t).clone()),
                                _ => None,
                            };
                            self.push(
                                f.var.span,
                                Def::ForVar {
                                    file: self.file(),
                                    decl: f.var.span,
                                },
                                true,
                                elem.clone(),
                            );
                            let saved = scope.item.take();
                            scope.item = Some((&f.var.name, f.var.span, elem.unwrap_or(Ty::Error)));
                            self.call(&f.body, scope);
                            scope.item = saved;
                            &f.body
                        }
                    };
                    let callee = self.module.namespace.get(&call.callee.name);
                    for o in &l.options {
                        match &o.kind {
                            ast::StepOptionKind::NonRetryable(names) => {
                                for n in names {
                                    if n.name == "Timeout" {
                                        self.push(
                                            n.span,
                                            Def::Builtin("Timeout".into()),
                                            false,
                                            None,
                                        );
                                    } else if let Some(sym) =
                                        callee.filter(|s| s.kind == SymbolKind::Step)
                                        && matches!(self.db.sig(sym.def), Some(ItemSig::Step(st)) if st.raises.contains(&n.name))
                                    {
                                        self.push(
                                            n.span,
                                            Def::ErrorName {
                                                step: sym.def,
                                                name: n.name.clone(),
                                            },
                                            false,
                                            None,
                                        );
                                    }
                                }
                            }
                            ast::StepOptionKind::After(names) => {
                                for n in names {
                                    if scope.lets.contains_key(n.name.as_str()) {
                                        self.push(
                                            n.span,
                                            Def::Local {
                                                flow: scope.def,
                                                name: n.name.clone(),
                                            },
                                            false,
                                            None,
                                        );
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                ast::StmtKind::When(w) => {
                    self.expr(&w.cond, scope);
                    self.stmts(&w.then_body, scope);
                    if let Some(e) = &w.else_body {
                        self.stmts(e, scope);
                    }
                }
                ast::StmtKind::Return(e) => self.expr(e, scope),
                ast::StmtKind::Schedule(sch) => {
                    for c in &sch.clauses {
                        if let ast::ScheduleClauseKind::Input(args) = &c.kind {
                            for a in args {
                                let ty = scope
                                    .params
                                    .iter()
                                    .find(|p| p.name == a.name.name)
                                    .map(|p| p.ty.clone());
                                if ty.is_some() {
                                    self.push(
                                        a.name.span,
                                        Def::Param {
                                            owner: scope.def,
                                            name: a.name.name.clone(),
                                        },
                                        false,
                                        ty,
                                    );
                                }
                                self.expr(&a.value, scope);
                            }
                        }
                    }
                }
                ast::StmtKind::Deadline(_) | ast::StmtKind::Error => {}
            }
        }
    }

    fn call(&mut self, call: &'a ast::Call, scope: &mut FlowScope<'a>) {
        let callee = self
            .module
            .namespace
            .get(&call.callee.name)
            .filter(|s| s.kind.is_callable());
        let params: &[ParamSig] = match callee.and_then(|s| self.db.sig(s.def)) {
            Some(ItemSig::Step(s)) => &s.params,
            Some(ItemSig::Flow(f)) => &f.params,
            _ => &[],
        };
        if let Some(sym) = callee {
            let output = scope.checked.and_then(|c| {
                c.nodes
                    .iter()
                    .find(|n| n.call.callee_span == call.callee.span)
                    .map(|n| n.output.clone())
            });
            self.push(call.callee.span, Def::Item(sym.def), false, output);
        }
        for a in &call.args {
            if let (Some(sym), Some(p)) = (callee, params.iter().find(|p| p.name == a.name.name)) {
                self.push(
                    a.name.span,
                    Def::Param {
                        owner: sym.def,
                        name: a.name.name.clone(),
                    },
                    false,
                    Some(p.ty.clone()),
                );
            }
            self.expr(&a.value, scope);
        }
    }

    fn expr(&mut self, e: &'a Expr, scope: &mut FlowScope<'a>) {
        match &e.kind {
            ExprKind::Path(segments) => self.path(e, segments, scope),
            ExprKind::List(items) => items.iter().for_each(|i| self.expr(i, scope)),
            ExprKind::Map(entries) => {
                for (k, v) in entries {
                    self.expr(k, scope);
                    self.expr(v, scope);
                }
            }
            ExprKind::Record { name, fields } => {
                let sym = self.module.namespace.get(&name.name);
                let record = match scope.types.get(&e.span) {
                    Some(Ty::Record { def, .. }) => Some(*def),
                    _ => sym.and_then(|s| match s.kind {
                        SymbolKind::Record => Some(s.def),
                        _ => None,
                    }),
                };
                if let Some(s) = sym {
                    self.push(
                        name.span,
                        Def::Item(s.def),
                        false,
                        scope.types.get(&e.span).cloned(),
                    );
                }
                let rec_ty = scope.types.get(&e.span).cloned();
                for f in fields {
                    if let Some(r) = record {
                        let ty = rec_ty
                            .as_ref()
                            .and_then(|t| self.db.field_type(t, &f.name.name))
                            .map(|(_, t)| t)
                            .or_else(|| {
                                self.db
                                    .record(r)
                                    .and_then(|s| s.field(&f.name.name))
                                    .map(|x| x.ty.clone())
                            });
                        if self
                            .db
                            .record(r)
                            .is_some_and(|s| s.field(&f.name.name).is_some())
                        {
                            self.push(
                                f.name.span,
                                Def::Field {
                                    record: r,
                                    name: f.name.name.clone(),
                                },
                                false,
                                ty,
                            );
                        }
                    }
                    self.expr(&f.value, scope);
                }
            }
            ExprKind::Unary { expr, .. } => self.expr(expr, scope),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.expr(lhs, scope);
                self.expr(rhs, scope);
            }
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Bool(_)
            | ExprKind::Duration(_)
            | ExprKind::None
            | ExprKind::Error => {}
        }
    }

    fn path(&mut self, e: &Expr, segments: &[ast::Ident], scope: &FlowScope<'a>) {
        let Some(first) = segments.first() else {
            return;
        };
        let rest = &segments[1..];
        let whole = scope.types.get(&e.span).cloned();
        // The type of the first segment alone: exact when it is the whole path.
        let exact = |declared: Option<Ty>| -> Option<Ty> {
            if rest.is_empty() {
                whole.clone().or(declared)
            } else {
                declared.map(|t| t.unwrap_optional().clone())
            }
        };
        let name = first.name.as_str();
        let base: Option<Ty>;
        if let Some((var, decl, ty)) = &scope.item
            && *var == name
        {
            base = exact(Some(ty.clone()));
            self.push(
                first.span,
                Def::ForVar {
                    file: self.file(),
                    decl: *decl,
                },
                false,
                base.clone(),
            );
        } else if let Some(p) = scope.params.iter().find(|p| p.name == name) {
            base = exact(Some(p.ty.clone()));
            self.push(
                first.span,
                Def::Param {
                    owner: scope.def,
                    name: name.to_string(),
                },
                false,
                base.clone(),
            );
        } else if scope.lets.contains_key(name) {
            let declared = scope.checked.and_then(|c| {
                c.nodes
                    .iter()
                    .find(|n| n.name == name)
                    .map(|n| n.output.clone())
            });
            base = exact(declared);
            self.push(
                first.span,
                Def::Local {
                    flow: scope.def,
                    name: name.to_string(),
                },
                false,
                base.clone(),
            );
        } else if name == "run" && scope.def.item != u32::MAX {
            self.push(first.span, Def::Run, false, None);
            if let Some(f) = rest.first()
                && let Some((n, ty, _)) = RUN_FIELDS.iter().find(|(n, _, _)| *n == f.name)
            {
                self.push(
                    f.span,
                    Def::RunField(n.to_string()),
                    false,
                    Some(ty.clone()),
                );
                self.fields(ty.clone(), &rest[1..]);
            }
            return;
        } else if let Some(sym) = self.module.namespace.get(name) {
            self.push(first.span, Def::Item(sym.def), false, None);
            if sym.kind == SymbolKind::Enum
                && let Some(v) = rest.first()
                && matches!(self.db.sig(sym.def), Some(ItemSig::Enum(en)) if en.variants.contains(&v.name))
            {
                let ty = self.db.item_name(sym.def).map(|n| Ty::Enum {
                    def: sym.def,
                    name: n.name.as_str().into(),
                });
                self.push(
                    v.span,
                    Def::Variant {
                        en: sym.def,
                        name: v.name.clone(),
                    },
                    false,
                    ty,
                );
            }
            return;
        } else {
            return;
        }
        if let Some(b) = base {
            self.fields(b, rest);
        }
    }

    fn fields(&mut self, mut ty: Ty, rest: &[ast::Ident]) {
        for f in rest {
            let Some((record, next)) = self.db.field_type(&ty, &f.name) else {
                return;
            };
            self.push(
                f.span,
                Def::Field {
                    record,
                    name: f.name.clone(),
                },
                false,
                Some(next.clone()),
            );
            ty = next;
        }
    }
}

fn collect_lets<'a>(body: &'a [ast::Stmt], out: &mut HashMap<&'a str, Span>) {
    for s in body {
        match &s.kind {
            ast::StmtKind::Let(l) => {
                out.entry(&l.name.name).or_insert(l.name.span);
            }
            ast::StmtKind::When(w) => {
                collect_lets(&w.then_body, out);
                if let Some(e) = &w.else_body {
                    collect_lets(e, out);
                }
            }
            _ => {}
        }
    }
}

/// The type of every expression the checker typed in a flow, by span.
pub fn collect_types(flow: &CheckedFlow, out: &mut HashMap<Span, Ty>) {
    fn walk(e: &TExpr, out: &mut HashMap<Span, Ty>) {
        out.insert(e.span, e.ty.clone());
        match &e.kind {
            TExprKind::List(items) => items.iter().for_each(|i| walk(i, out)),
            TExprKind::Map(entries) => entries.iter().for_each(|(k, v)| {
                walk(k, out);
                walk(v, out);
            }),
            TExprKind::Record { fields, .. } => fields.iter().for_each(|(_, v)| walk(v, out)),
            TExprKind::Not(x) | TExprKind::Neg(x) => walk(x, out),
            TExprKind::Binary(_, l, r) => {
                walk(l, out);
                walk(r, out);
            }
            _ => {}
        }
    }
    for d in flow.defaults.iter().flatten() {
        walk(d, out);
    }
    for n in &flow.nodes {
        for (_, a) in &n.call.args {
            walk(a, out);
        }
        if let Some(f) = &n.fan_out {
            walk(&f.over, out);
        }
    }
    for c in &flow.conds {
        walk(&c.expr, out);
    }
    if let Some(r) = &flow.ret {
        walk(r, out);
    }
    for s in &flow.schedules {
        for (_, v) in &s.input {
            walk(v, out);
        }
    }
}
