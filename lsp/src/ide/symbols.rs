//! Document symbols (the outline) and workspace symbols.

use eflow_compiler::analysis::Module;
use eflow_compiler::semantics::DefId;
use eflow_compiler::syntax::ast::{self, Span};

use super::Db;
use super::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    Module,
    Record,
    Enum,
    Alias,
    Step,
    Flow,
    Field,
    Variant,
    Param,
    Local,
    Bindings,
    Binding,
}

#[derive(Debug, Clone)]
pub struct Symbol {
    pub name: String,
    pub detail: Option<String>,
    pub kind: SymbolKind,
    /// The whole declaration.
    pub span: Span,
    /// Its name.
    pub name_span: Span,
    pub children: Vec<Symbol>,
}

fn leaf(name: &ast::Ident, kind: SymbolKind, span: Span, detail: Option<String>) -> Symbol {
    Symbol {
        name: name.name.clone(),
        detail,
        kind,
        span: span.to(name.span),
        name_span: name.span,
        children: Vec::new(),
    }
}

/// The outline of one file: its items, with fields, variants, parameters, `let`s
/// and bindings below them. Items that failed to parse are left out.
pub fn document_symbols(db: Db, module: &Module) -> Vec<Symbol> {
    let mut out = Vec::new();
    for (i, item) in module.ast.items.iter().enumerate() {
        let def = DefId {
            file: module.file,
            item: i as u32,
        };
        let ty = |t: &ast::TypeExpr| render::snippet(db, module.file, t.span);
        let sym = match &item.kind {
            ast::ItemKind::Import(imp) => {
                for n in &imp.names {
                    let local = n.local();
                    out.push(leaf(
                        local,
                        SymbolKind::Module,
                        n.name.span.to(local.span),
                        Some(format!("from \"{}\"", imp.path.value)),
                    ));
                }
                continue;
            }
            ast::ItemKind::Record(r) => Symbol {
                children: r
                    .fields
                    .iter()
                    .map(|f| leaf(&f.name, SymbolKind::Field, f.span, Some(ty(&f.ty))))
                    .collect(),
                ..leaf(
                    &r.name,
                    SymbolKind::Record,
                    item.span,
                    Some("record".into()),
                )
            },
            ast::ItemKind::Enum(e) => Symbol {
                children: e
                    .variants
                    .iter()
                    .map(|v| leaf(&v.name, SymbolKind::Variant, v.name.span, None))
                    .collect(),
                ..leaf(&e.name, SymbolKind::Enum, item.span, Some("enum".into()))
            },
            ast::ItemKind::Alias(a) => leaf(
                &a.name,
                SymbolKind::Alias,
                item.span,
                Some(format!("= {}", ty(&a.ty))),
            ),
            ast::ItemKind::Step(s) => Symbol {
                children: s
                    .params
                    .iter()
                    .map(|p| leaf(&p.name, SymbolKind::Param, p.span, Some(ty(&p.ty))))
                    .collect(),
                ..leaf(
                    &s.name,
                    SymbolKind::Step,
                    item.span,
                    render::call_signature(db, def).map(|(s, _)| s),
                )
            },
            ast::ItemKind::Flow(f) => {
                let checked = db.flow(def);
                let mut children: Vec<Symbol> = f
                    .params
                    .iter()
                    .map(|p| leaf(&p.name, SymbolKind::Param, p.span, Some(ty(&p.ty))))
                    .collect();
                lets(&f.body, checked, &mut children);
                Symbol {
                    children,
                    ..leaf(
                        &f.name,
                        SymbolKind::Flow,
                        item.span,
                        render::call_signature(db, def).map(|(s, _)| s),
                    )
                }
            }
            ast::ItemKind::Bindings(b) => Symbol {
                children: b
                    .entries
                    .iter()
                    .map(|e| {
                        leaf(
                            &e.step,
                            SymbolKind::Binding,
                            e.span,
                            Some(e.connector.name.clone()),
                        )
                    })
                    .collect(),
                ..leaf(
                    &b.env,
                    SymbolKind::Bindings,
                    item.span,
                    Some("bindings".into()),
                )
            },
            ast::ItemKind::Error => continue,
        };
        out.push(sym);
    }
    out
}

fn lets(
    body: &[ast::Stmt],
    checked: Option<&eflow_compiler::semantics::CheckedFlow>,
    out: &mut Vec<Symbol>,
) {
    for s in body {
        match &s.kind {
            ast::StmtKind::Let(l) => {
                let ty = checked
                    .and_then(|c| c.nodes.iter().find(|n| n.name_span == l.name.span))
                    .map(|n| n.output.to_string());
                out.push(leaf(&l.name, SymbolKind::Local, s.span, ty));
            }
            ast::StmtKind::When(w) => {
                lets(&w.then_body, checked, out);
                if let Some(e) = &w.else_body {
                    lets(e, checked, out);
                }
            }
            _ => {}
        }
    }
}

/// Whether every character of `query` appears in `name` in order, ignoring case.
pub fn fuzzy_match(query: &str, name: &str) -> bool {
    let mut chars = name.chars().map(|c| c.to_ascii_lowercase());
    query
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .all(|q| chars.any(|c| c == q))
}

/// Top-level items of every module matching a query; workspace modules first.
pub fn workspace_symbols(
    db: Db,
    query: &str,
) -> Vec<(eflow_compiler::analysis::FileId, Symbol, String)> {
    let mut out = Vec::new();
    let mut modules: Vec<&Module> = db
        .analysis
        .modules
        .iter()
        .filter(|m| !db.is_hidden(m.file))
        .collect();
    modules.sort_by_key(|m| m.is_std);
    for m in modules {
        for s in document_symbols(db, m) {
            if s.kind == SymbolKind::Module {
                continue;
            }
            if fuzzy_match(query, &s.name) {
                out.push((m.file, s, m.name.clone()));
            }
        }
        if out.len() > 500 {
            break;
        }
    }
    out
}
