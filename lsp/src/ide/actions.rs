//! Quick fixes for the common diagnostics: a misspelled name (the compiler's
//! `did you mean` help), a missing argument, a type or step to import, an unused
//! import.

use eflow_compiler::check::sigs::ItemSig;
use eflow_compiler::diagnostics::{Code, Diagnostic};
use eflow_compiler::source::FileId;
use eflow_compiler::syntax::ast::{self, Span};
use eflow_compiler::types::Ty;

use super::Db;
use super::completion::add_import;

pub struct Action {
    pub title: String,
    pub edits: Vec<(FileId, Span, String)>,
    pub preferred: bool,
    /// The diagnostic it fixes.
    pub fixes: Diagnostic,
}

/// Fixes for the diagnostics of `file` that touch `range`.
pub fn code_actions(db: Db, file: FileId, range: Span) -> Vec<Action> {
    let Some(module) = db.module(file) else {
        return Vec::new();
    };
    let mut diags: Vec<Diagnostic> = module.diagnostics.clone();
    diags.extend(
        db.analysis
            .diagnostics()
            .into_iter()
            .filter(|d| d.primary.file == file && !module.diagnostics.contains(d)),
    );
    let mut out = Vec::new();
    for d in diags {
        let s = d.primary.span;
        if s.end < range.start || s.start > range.end {
            continue;
        }
        let text = db.text(file);
        let written = text.get(s.start as usize..s.end as usize).unwrap_or("");
        if let Some(help) = &d.help
            && let Some(name) = did_you_mean(help)
            && is_ident(written)
        {
            out.push(Action {
                title: format!("Change `{written}` to `{name}`"),
                edits: vec![(file, s, name.to_string())],
                preferred: true,
                fixes: d.clone(),
            });
        }
        match d.code {
            Code::MissingArgument => {
                if let Some(a) = add_arguments(db, file, &d) {
                    out.push(a);
                }
            }
            Code::UnknownType | Code::UnknownCallee | Code::UnknownName => {
                for def in db.items_named(written) {
                    if def.file == file {
                        continue;
                    }
                    let fits = matches!(
                        (d.code, db.sig(def)),
                        (
                            Code::UnknownType,
                            Some(ItemSig::Record(_) | ItemSig::Enum(_) | ItemSig::Alias(_)),
                        ) | (
                            Code::UnknownCallee,
                            Some(ItemSig::Step(_) | ItemSig::Flow(_))
                        ) | (Code::UnknownName, Some(ItemSig::Enum(_)))
                    );
                    if !fits {
                        continue;
                    }
                    if let Some((span, edit)) = add_import(db, file, def.file, written) {
                        let from = db.import_path(file, def.file).unwrap_or_default();
                        out.push(Action {
                            title: format!("Import `{written}` from \"{from}\""),
                            edits: vec![(file, span, edit)],
                            preferred: true,
                            fixes: d.clone(),
                        });
                    }
                }
            }
            Code::UnusedImport => {
                if let Some(a) = remove_import(db, file, &d) {
                    out.push(a);
                }
            }
            _ => {}
        }
    }
    out
}

/// `did you mean `x`?` → `x`.
fn did_you_mean(help: &str) -> Option<&str> {
    let rest = help.strip_prefix("did you mean `")?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every call in a file with the flow it is in.
fn calls(module: &eflow_compiler::analysis::Module) -> Vec<(usize, &ast::Call)> {
    fn walk<'a>(i: usize, body: &'a [ast::Stmt], out: &mut Vec<(usize, &'a ast::Call)>) {
        for s in body {
            match &s.kind {
                ast::StmtKind::Let(l) => match &l.value {
                    ast::StepExpr::Call(c) => out.push((i, c)),
                    ast::StepExpr::ForEach(f) => out.push((i, &f.body)),
                },
                ast::StmtKind::When(w) => {
                    walk(i, &w.then_body, out);
                    if let Some(e) = &w.else_body {
                        walk(i, e, out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for (i, item) in module.ast.items.iter().enumerate() {
        if let ast::ItemKind::Flow(f) = &item.kind {
            walk(i, &f.body, &mut out);
        }
    }
    out
}

fn add_arguments(db: Db, file: FileId, d: &Diagnostic) -> Option<Action> {
    let module = db.module(file)?;
    let (flow_item, call) = calls(module)
        .into_iter()
        .find(|(_, c)| c.callee.span == d.primary.span)?;
    let sym = module.namespace.get(&call.callee.name)?;
    let params = match db.sig(sym.def)? {
        ItemSig::Step(s) => &s.params,
        ItemSig::Flow(f) => &f.params,
        _ => return None,
    };
    let flow = db.flow(eflow_compiler::types::DefId {
        file,
        item: flow_item as u32,
    });
    // Values of the flow that could fill a parameter: its own parameters and lets.
    let values: Vec<(String, Ty)> = flow
        .map(|f| {
            f.params
                .iter()
                .map(|p| (p.name.clone(), p.ty.clone()))
                .chain(f.nodes.iter().map(|n| (n.name.clone(), n.output.clone())))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<String> = params
        .iter()
        .filter(|p| !p.omittable && !call.args.iter().any(|a| a.name.name == p.name))
        .map(|p| {
            let value = values
                .iter()
                .find(|(n, t)| *n == p.name && t.flows_into(&p.ty))
                .or_else(|| {
                    values
                        .iter()
                        .find(|(_, t)| *t != Ty::Error && !p.ty.has_params() && t.flows_into(&p.ty))
                })
                .map_or(p.name.as_str(), |(n, _)| n.as_str());
            format!("{}: {value}", p.name)
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let text = db.text(file);
    let (at, insert) = match call.args.last() {
        Some(last) => (last.span.end, format!(", {}", missing.join(", "))),
        None => {
            // Just before the closing parenthesis.
            let end = call.span.end.saturating_sub(1);
            if text.get(end as usize..end as usize + 1) != Some(")") {
                return None;
            }
            (end, missing.join(", "))
        }
    };
    let names: Vec<&str> = missing
        .iter()
        .map(|m| m.split(':').next().unwrap_or(""))
        .collect();
    Some(Action {
        title: format!(
            "Add missing argument{} `{}`",
            if names.len() == 1 { "" } else { "s" },
            names.join("`, `")
        ),
        edits: vec![(file, Span { start: at, end: at }, insert)],
        preferred: true,
        fixes: d.clone(),
    })
}

fn remove_import(db: Db, file: FileId, d: &Diagnostic) -> Option<Action> {
    let module = db.module(file)?;
    let text = db.text(file);
    for item in &module.ast.items {
        let ast::ItemKind::Import(imp) = &item.kind else {
            continue;
        };
        let Some(pos) = imp
            .names
            .iter()
            .position(|n| n.local().span == d.primary.span)
        else {
            continue;
        };
        let n = &imp.names[pos];
        let name_span = n.name.span.to(n.local().span);
        let span = if imp.names.len() == 1 {
            // The whole line.
            let mut end = item.span.end as usize;
            if text.get(end..end + 1) == Some("\n") {
                end += 1;
            }
            Span::new(item.span.start as usize, end)
        } else if pos + 1 < imp.names.len() {
            Span {
                start: name_span.start,
                end: imp.names[pos + 1].name.span.start,
            }
        } else {
            Span {
                start: imp.names[pos - 1].local().span.end,
                end: name_span.end,
            }
        };
        return Some(Action {
            title: format!("Remove unused import `{}`", n.local().name),
            edits: vec![(file, span, String::new())],
            preferred: false,
            fixes: d.clone(),
        });
    }
    None
}
