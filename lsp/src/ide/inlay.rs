//! Inlay hints: the inferred type of every `let` and fan-out variable, which the
//! source never spells out.

use eflow_compiler::analysis::Module;
use eflow_compiler::semantics::Ty;
use eflow_compiler::syntax::ast::{self, Span};

use super::Db;

pub struct InlayHint {
    pub offset: usize,
    pub label: String,
}

pub fn inlay_hints(db: Db, module: &Module, range: Span) -> Vec<InlayHint> {
    let mut out = Vec::new();
    for f in &module.flows {
        for n in &f.nodes {
            if !range.contains(n.name_span.end as usize) || n.output == Ty::Error {
                continue;
            }
            out.push(InlayHint {
                offset: n.name_span.end as usize,
                label: format!(": {}", n.output),
            });
            // The fan-out's element; a `repeat`'s previous output, as its call sees it.
            let var_ty = match (&n.fan_out, &n.repeat) {
                (Some(fo), _) => match &fo.over.ty {
                    Ty::List(elem) => Some((**elem).clone()),
                    _ => None,
                },
                (None, Some(_)) => Some(n.output.clone().optional()),
                (None, None) => None,
            };
            if let Some(ty) = var_ty
                && let Some(var) = for_var(module, n.span)
            {
                out.push(InlayHint {
                    offset: var.end as usize,
                    label: format!(": {ty}"),
                });
            }
        }
    }
    let _ = db;
    out.sort_by_key(|h| h.offset);
    out
}

/// The span of the `for x` (or `repeat x`) variable of the `let` statement at `span`.
fn for_var(module: &Module, span: Span) -> Option<Span> {
    fn find(body: &[ast::Stmt], span: Span) -> Option<Span> {
        for s in body {
            match &s.kind {
                ast::StmtKind::Let(l) if s.span == span => match &l.value {
                    ast::StepExpr::ForEach(f) => return Some(f.var.span),
                    ast::StepExpr::Repeat(r) => return Some(r.var.span),
                    ast::StepExpr::Call(_) => {}
                },
                ast::StmtKind::When(w) => {
                    if let Some(x) = find(&w.then_body, span)
                        .or_else(|| w.else_body.as_deref().and_then(|e| find(e, span)))
                    {
                        return Some(x);
                    }
                }
                _ => {}
            }
        }
        None
    }
    module.ast.items.iter().find_map(|i| match &i.kind {
        ast::ItemKind::Flow(f) if i.span.contains(span.start as usize) => find(&f.body, span),
        _ => None,
    })
}
