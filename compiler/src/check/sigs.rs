//! Signatures: the resolved types of every item's declaration.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::ModuleCx;
use crate::diagnostics::{Code, Diagnostic};
use crate::names::SymbolKind;
use crate::semantics::Def;
use crate::source::FileId;
use crate::syntax::ast::{
    self, Expr, ExprKind, Ident, ItemKind, Param, Span, StepKind, TypeExpr, TypeExprKind,
};
use crate::types::{DefId, PRIMITIVES, Ty};

#[derive(Debug, Clone, PartialEq, Default)]
pub enum ItemSig {
    #[default]
    None,
    Record(RecordSig),
    Enum(EnumSig),
    Alias(AliasSig),
    Step(StepSig),
    Flow(FlowSig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordSig {
    pub name: Arc<str>,
    pub generics: Vec<Arc<str>>,
    pub fields: Vec<FieldSig>,
}

impl RecordSig {
    pub fn field(&self, name: &str) -> Option<&FieldSig> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Each type parameter bound to its argument in the instance `args`.
    pub fn instantiate(&self, args: &[Ty]) -> HashMap<Arc<str>, Ty> {
        self.generics
            .iter()
            .cloned()
            .zip(args.iter().cloned())
            .collect()
    }

    /// The type of field `name` in the instance of this record with `args`.
    pub fn field_type(&self, name: &str, args: &[Ty]) -> Option<Ty> {
        Some(self.field(name)?.ty.subst(&self.instantiate(args)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSig {
    pub name: String,
    pub ty: Ty,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnumSig {
    pub name: Arc<str>,
    pub variants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AliasSig {
    pub generics: Vec<Arc<str>>,
    pub ty: Ty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepSig {
    pub name: Arc<str>,
    pub kind: StepKind,
    pub generics: Vec<Arc<str>>,
    pub params: Vec<ParamSig>,
    pub output: Ty,
    pub raises: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowSig {
    pub name: Arc<str>,
    pub params: Vec<ParamSig>,
    pub output: Ty,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParamSig {
    pub name: String,
    pub ty: Ty,
    /// The parameter may be left out: it has a default or is optional.
    pub omittable: bool,
    pub span: Span,
}

/// Read access to every module, for resolving types.
pub type Scope<'a> = super::World<'a>;

/// Resolves type expressions of one module; aliases expand across modules.
pub struct TypeResolver<'a, 'b> {
    pub scope: &'a Scope<'a>,
    pub cx: &'a ModuleCx<'b>,
}

impl TypeResolver<'_, '_> {
    pub fn resolve(&self, te: &TypeExpr, generics: &[Arc<str>]) -> Ty {
        resolve(
            self.scope,
            self.cx.file,
            Some(self.cx),
            te,
            generics,
            &mut Vec::new(),
        )
    }
}

fn resolve(
    scope: &Scope,
    file: FileId,
    cx: Option<&ModuleCx>,
    te: &TypeExpr,
    generics: &[Arc<str>],
    stack: &mut Vec<DefId>,
) -> Ty {
    let report = |d: Diagnostic| {
        if let Some(cx) = cx {
            cx.report(d)
        }
    };
    let (name, args) = match &te.kind {
        TypeExprKind::Optional(inner) => {
            return resolve(scope, file, cx, inner, generics, stack).optional();
        }
        TypeExprKind::Named { name, args } => (name, args),
    };
    let resolved_args = |stack: &mut Vec<DefId>| -> Vec<Ty> {
        args.iter()
            .map(|a| resolve(scope, file, cx, a, generics, stack))
            .collect()
    };
    let arity = |expected: usize| -> bool {
        if args.len() == expected {
            return true;
        }
        report(
            Diagnostic::new(
                Code::TypeArity,
                file,
                te.span,
                format!(
                    "`{}` takes {} type argument{}, found {}",
                    name.name,
                    expected,
                    if expected == 1 { "" } else { "s" },
                    args.len()
                ),
            )
            .with_label(format!("expected {expected}")),
        );
        false
    };
    let record = |def: Def| {
        if let Some(cx) = cx {
            cx.resolve(name.span, def, None);
        }
    };
    if let Some(g) = generics.iter().find(|g| ***g == *name.name) {
        // The type parameter of the item the type is written in.
        if let Some(owner) = scope
            .ast(file)
            .items
            .iter()
            .position(|it| it.span.contains(name.span.start as usize))
        {
            record(Def::Generic {
                owner: DefId {
                    file,
                    item: owner as u32,
                },
                name: name.name.clone(),
            });
        }
        if !arity(0) {
            return Ty::Error;
        }
        return Ty::Param(g.clone());
    }
    if PRIMITIVES.iter().any(|(n, _)| *n == name.name)
        || matches!(name.name.as_str(), "List" | "Map")
    {
        record(Def::Builtin(name.name.clone()));
    }
    if let Some((_, ty)) = PRIMITIVES.iter().find(|(n, _)| *n == name.name) {
        if !arity(0) {
            return Ty::Error;
        }
        return ty.clone();
    }
    match name.name.as_str() {
        "List" => {
            if !arity(1) {
                return Ty::Error;
            }
            let mut a = resolved_args(stack);
            return Ty::List(Box::new(a.remove(0)));
        }
        "Map" => {
            if !arity(2) {
                return Ty::Error;
            }
            let mut a = resolved_args(stack);
            let v = a.remove(1);
            let k = a.remove(0);
            if !matches!(k, Ty::String | Ty::Int | Ty::Enum { .. } | Ty::Error) {
                report(
                    Diagnostic::new(
                        Code::InvalidMapKey,
                        file,
                        args[0].span,
                        format!("`{k}` cannot be a map key"),
                    )
                    .with_label("map keys must be String, Int or an enum")
                    .with_help("use `Map<String, …>` and turn the key into a string"),
                );
                return Ty::Error;
            }
            return Ty::Map(Box::new(k), Box::new(v));
        }
        _ => {}
    }
    let ns = scope.namespace(file);
    let Some(sym) = ns.get(&name.name) else {
        let mut candidates: Vec<&str> = ns
            .symbols
            .iter()
            .filter(|(_, s)| s.kind.is_type())
            .map(|(n, _)| n.as_str())
            .collect();
        candidates.extend(PRIMITIVES.iter().map(|(n, _)| *n));
        candidates.extend(["List", "Map"]);
        candidates.extend(generics.iter().map(|g| &**g));
        report(
            Diagnostic::new(
                Code::UnknownType,
                file,
                name.span,
                format!("unknown type `{}`", name.name),
            )
            .with_label("not defined or imported here")
            .with_did_you_mean(&name.name, candidates, || {
                format!(
                    "define it with `record {} {{ … }}` or import it with `from \"…\" import {}`",
                    name.name, name.name
                )
            }),
        );
        return Ty::Error;
    };
    record(Def::Item(sym.def));
    if let Some(cx) = cx
        && sym.import.is_some()
    {
        cx.used_imports.borrow_mut().insert(name.name.clone());
    }
    let def = sym.def;
    let decl = &scope.ast(def.file).items[def.item as usize].kind;
    match (sym.kind, decl) {
        (SymbolKind::Record, ItemKind::Record(r)) => {
            if !arity(r.generics.len()) {
                return Ty::Error;
            }
            Ty::Record {
                def,
                name: name_arc(&r.name),
                args: resolved_args(stack),
            }
        }
        (SymbolKind::Enum, ItemKind::Enum(e)) => {
            if !arity(0) {
                return Ty::Error;
            }
            Ty::Enum {
                def,
                name: name_arc(&e.name),
            }
        }
        (SymbolKind::Alias, ItemKind::Alias(a)) => {
            if !arity(a.generics.len()) {
                return Ty::Error;
            }
            if stack.contains(&def) {
                report(
                    Diagnostic::new(
                        Code::Cycle,
                        file,
                        name.span,
                        format!("type alias `{}` refers to itself", name.name),
                    )
                    .with_label("used here while it is being defined")
                    .with_help("a type alias is a new name for an existing type; use a `record` for a recursive type"),
                );
                return Ty::Error;
            }
            let args = resolved_args(stack);
            stack.push(def);
            let alias_generics: Vec<Arc<str>> = a.generics.iter().map(name_arc).collect();
            let target = resolve(scope, def.file, None, &a.ty, &alias_generics, stack);
            stack.pop();
            let map: HashMap<Arc<str>, Ty> = alias_generics.into_iter().zip(args).collect();
            target.subst(&map)
        }
        (kind, _) => {
            report(
                Diagnostic::new(
                    Code::NotAType,
                    file,
                    name.span,
                    format!("`{}` is a {}, not a type", name.name, kind.describe()),
                )
                .with_label("used as a type here")
                .with_secondary(
                    def.file,
                    sym.span,
                    format!("`{}` is defined here", name.name),
                ),
            );
            Ty::Error
        }
    }
}

pub fn name_arc(id: &Ident) -> Arc<str> {
    Arc::from(id.name.as_str())
}

/// Resolve the signature of every item of one module, reporting problems in the
/// declarations themselves (duplicate fields, unknown types, …).
pub fn module_sigs(scope: &Scope, cx: &ModuleCx) -> Vec<ItemSig> {
    let ast = scope.ast(cx.file);
    let tr = TypeResolver { scope, cx };
    let sigs: Vec<ItemSig> = ast
        .items
        .iter()
        .map(|item| match &item.kind {
            ItemKind::Record(r) => {
                let generics = generic_names(cx, &r.generics);
                let mut seen = HashMap::new();
                let mut fields = Vec::new();
                for f in &r.fields {
                    if let Some(prev) = seen.insert(f.name.name.as_str(), f.name.span) {
                        cx.report(duplicate(cx.file, &f.name, prev, "field"));
                        continue;
                    }
                    fields.push(FieldSig {
                        name: f.name.name.clone(),
                        ty: tr.resolve(&f.ty, &generics),
                        span: f.name.span,
                    });
                }
                ItemSig::Record(RecordSig {
                    name: name_arc(&r.name),
                    generics,
                    fields,
                })
            }
            ItemKind::Enum(e) => {
                let mut seen = HashMap::new();
                let mut variants = Vec::new();
                for v in &e.variants {
                    if let Some(prev) = seen.insert(v.name.name.as_str(), v.name.span) {
                        cx.report(duplicate(cx.file, &v.name, prev, "variant"));
                        continue;
                    }
                    variants.push(v.name.name.clone());
                }
                if variants.is_empty() {
                    cx.report(
                        cx.error(
                            Code::InvalidOption,
                            e.name.span,
                            format!("enum `{}` has no variants", e.name),
                        )
                        .with_help("list its values: `enum Stage { Staging, Production }`"),
                    );
                }
                ItemSig::Enum(EnumSig {
                    name: name_arc(&e.name),
                    variants,
                })
            }
            ItemKind::Alias(a) => {
                let generics = generic_names(cx, &a.generics);
                // Resolving reports unknown names; self-reference is caught by the
                // stack, which starts with this alias.
                let def = DefId {
                    file: cx.file,
                    item: ast
                        .items
                        .iter()
                        .position(|i| std::ptr::eq(i, item))
                        .unwrap_or(0) as u32,
                };
                let ty = resolve(scope, cx.file, Some(cx), &a.ty, &generics, &mut vec![def]);
                ItemSig::Alias(AliasSig { generics, ty })
            }
            ItemKind::Step(s) => {
                let generics = generic_names(cx, &s.generics);
                let params = param_sigs(cx, &tr, &s.params, &generics);
                let output = s
                    .output
                    .as_ref()
                    .map(|t| tr.resolve(t, &generics))
                    .unwrap_or(Ty::Unit);
                if let Some(t) = &s.output {
                    unused_generic_in_output(cx, &s.generics, &params, &output, t.span);
                }
                let mut raises = Vec::new();
                let mut seen = HashMap::new();
                for r in &s.raises {
                    if let Some(prev) = seen.insert(r.name.as_str(), r.span) {
                        cx.report(duplicate(cx.file, r, prev, "error name"));
                        continue;
                    }
                    raises.push(r.name.clone());
                }
                ItemSig::Step(StepSig {
                    name: name_arc(&s.name),
                    kind: s.kind,
                    generics,
                    params,
                    output,
                    raises,
                })
            }
            ItemKind::Flow(f) => {
                let params = param_sigs(cx, &tr, &f.params, &[]);
                let output = f
                    .output
                    .as_ref()
                    .map(|t| tr.resolve(t, &[]))
                    .unwrap_or(Ty::Unit);
                ItemSig::Flow(FlowSig {
                    name: name_arc(&f.name),
                    params,
                    output,
                })
            }
            ItemKind::Import(_) | ItemKind::Bindings(_) | ItemKind::Error => ItemSig::None,
        })
        .collect();
    for (i, (item, sig)) in ast.items.iter().zip(&sigs).enumerate() {
        declare_item(
            cx,
            DefId {
                file: cx.file,
                item: i as u32,
            },
            item,
            sig,
        );
    }
    sigs
}

/// Record what an item declares: its name, type parameters, fields, variants,
/// parameters and error names, with their types.
fn declare_item(cx: &ModuleCx, def: DefId, item: &ast::Item, sig: &ItemSig) {
    let generics = |gs: &[Ident]| {
        for g in gs {
            cx.declare(
                g.span,
                Def::Generic {
                    owner: def,
                    name: g.name.clone(),
                },
                None,
            );
        }
    };
    let params = |ps: &[Param], sigs: &[ParamSig]| {
        for p in ps {
            let ty = sigs
                .iter()
                .find(|s| s.name == p.name.name)
                .map(|s| s.ty.clone());
            cx.declare(
                p.name.span,
                Def::Param {
                    owner: def,
                    name: p.name.name.clone(),
                },
                ty,
            );
        }
    };
    match (&item.kind, sig) {
        (ItemKind::Record(r), _) => {
            cx.declare(r.name.span, Def::Item(def), None);
            generics(&r.generics);
            for f in &r.fields {
                let ty = match sig {
                    ItemSig::Record(s) => s.field(&f.name.name).map(|x| x.ty.clone()),
                    _ => None,
                };
                cx.declare(
                    f.name.span,
                    Def::Field {
                        record: def,
                        name: f.name.name.clone(),
                    },
                    ty,
                );
            }
        }
        (ItemKind::Enum(e), _) => {
            cx.declare(e.name.span, Def::Item(def), None);
            for v in &e.variants {
                cx.declare(
                    v.name.span,
                    Def::Variant {
                        en: def,
                        name: v.name.name.clone(),
                    },
                    Some(Ty::Enum {
                        def,
                        name: name_arc(&e.name),
                    }),
                );
            }
        }
        (ItemKind::Alias(a), _) => {
            cx.declare(a.name.span, Def::Item(def), None);
            generics(&a.generics);
        }
        (ItemKind::Step(s), sig) => {
            cx.declare(s.name.span, Def::Item(def), None);
            generics(&s.generics);
            match sig {
                ItemSig::Step(sig) => params(&s.params, &sig.params),
                _ => params(&s.params, &[]),
            }
            for r in &s.raises {
                cx.declare(
                    r.span,
                    Def::ErrorName {
                        step: def,
                        name: r.name.clone(),
                    },
                    None,
                );
            }
        }
        (ItemKind::Flow(f), sig) => {
            cx.declare(f.name.span, Def::Item(def), None);
            // Defaults are checked, and their names recorded, with the body.
            for p in &f.params {
                let ty = match sig {
                    ItemSig::Flow(sig) => sig
                        .params
                        .iter()
                        .find(|s| s.name == p.name.name)
                        .map(|s| s.ty.clone()),
                    _ => None,
                };
                cx.declare(
                    p.name.span,
                    Def::Param {
                        owner: def,
                        name: p.name.name.clone(),
                    },
                    ty,
                );
            }
        }
        (ItemKind::Bindings(b), _) => {
            cx.declare(b.env.span, Def::Env(b.env.name.clone()), None);
        }
        (ItemKind::Import(_) | ItemKind::Error, _) => {}
    }
}

/// Record the names in a constant outside a flow (a step parameter's default, a
/// binding's setting), which nothing else checks: enum values and record
/// literals.
pub(crate) fn constant_names(cx: &ModuleCx, scope: &Scope, e: &Expr) {
    match &e.kind {
        ExprKind::Path(segments) => {
            let Some(first) = segments.first() else {
                return;
            };
            let Some(sym) = cx.namespace.get(&first.name) else {
                return;
            };
            cx.resolve(first.span, Def::Item(sym.def), None);
            if let (Some(v), ItemSig::Enum(en)) = (segments.get(1), scope.sig(sym.def))
                && sym.kind == SymbolKind::Enum
                && en.variants.contains(&v.name)
            {
                cx.resolve(
                    v.span,
                    Def::Variant {
                        en: sym.def,
                        name: v.name.clone(),
                    },
                    Some(Ty::Enum {
                        def: sym.def,
                        name: en.name.clone(),
                    }),
                );
            }
        }
        ExprKind::Record { name, fields } => {
            let sym = cx.namespace.get(&name.name);
            if let Some(s) = sym {
                cx.resolve(name.span, Def::Item(s.def), None);
            }
            for f in fields {
                if let Some(s) = sym.filter(|s| s.kind == SymbolKind::Record)
                    && let ItemSig::Record(r) = scope.sig(s.def)
                    && let Some(field) = r.field(&f.name.name)
                {
                    cx.resolve(
                        f.name.span,
                        Def::Field {
                            record: s.def,
                            name: f.name.name.clone(),
                        },
                        Some(field.ty.clone()),
                    );
                }
                constant_names(cx, scope, &f.value);
            }
        }
        ExprKind::List(items) => items.iter().for_each(|i| constant_names(cx, scope, i)),
        ExprKind::Map(entries) => {
            for (k, v) in entries {
                constant_names(cx, scope, k);
                constant_names(cx, scope, v);
            }
        }
        ExprKind::Unary { expr, .. } => constant_names(cx, scope, expr),
        ExprKind::Binary { lhs, rhs, .. } => {
            constant_names(cx, scope, lhs);
            constant_names(cx, scope, rhs);
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

fn generic_names(cx: &ModuleCx, generics: &[Ident]) -> Vec<Arc<str>> {
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for g in generics {
        if let Some(prev) = seen.insert(g.name.as_str(), g.span) {
            cx.report(duplicate(cx.file, g, prev, "type parameter"));
            continue;
        }
        out.push(name_arc(g));
    }
    out
}

fn param_sigs(
    cx: &ModuleCx,
    tr: &TypeResolver,
    params: &[Param],
    generics: &[Arc<str>],
) -> Vec<ParamSig> {
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for p in params {
        if let Some(prev) = seen.insert(p.name.name.as_str(), p.name.span) {
            cx.report(duplicate(cx.file, &p.name, prev, "parameter"));
            continue;
        }
        let ty = tr.resolve(&p.ty, generics);
        out.push(ParamSig {
            name: p.name.name.clone(),
            omittable: p.default.is_some() || ty.is_optional(),
            ty,
            span: p.name.span,
        });
    }
    out
}

/// A type parameter that appears only in the output can never be inferred.
fn unused_generic_in_output(
    cx: &ModuleCx,
    generics: &[Ident],
    params: &[ParamSig],
    output: &Ty,
    span: Span,
) {
    let mut in_params = HashSet::new();
    for p in params {
        collect_params(&p.ty, &mut in_params);
    }
    let mut in_output = HashSet::new();
    collect_params(output, &mut in_output);
    for g in generics {
        if in_output.contains(g.name.as_str()) && !in_params.contains(g.name.as_str()) {
            cx.report(
                cx.error(
                    Code::CannotInfer,
                    span,
                    format!(
                        "type parameter `{}` appears in the output but in no parameter",
                        g.name
                    ),
                )
                .with_label("cannot be inferred from the arguments")
                .with_secondary(cx.file, g.span, "declared here")
                .with_help(format!(
                    "take a parameter of type `{}`, or use a concrete output type",
                    g.name
                )),
            );
        }
    }
}

fn collect_params<'t>(ty: &'t Ty, out: &mut HashSet<&'t str>) {
    match ty {
        Ty::Param(n) => {
            out.insert(n);
        }
        Ty::List(t) | Ty::Optional(t) => collect_params(t, out),
        Ty::Map(k, v) => {
            collect_params(k, out);
            collect_params(v, out);
        }
        Ty::Record { args, .. } => args.iter().for_each(|a| collect_params(a, out)),
        _ => {}
    }
}

pub fn duplicate(file: FileId, name: &Ident, previous: Span, what: &str) -> Diagnostic {
    Diagnostic::new(
        Code::Duplicate,
        file,
        name.span,
        format!("the {what} `{}` is defined twice", name.name),
    )
    .with_label("defined again here")
    .with_secondary(file, previous, "first defined here")
    .with_help(format!("rename or remove one of the two `{}`", name.name))
}
