//! Declarations as text for hovers, completion details and signature help, written
//! the way the user wrote them (type names as in the source, aliases kept).

use eflow_compiler::semantics::DefId;
use eflow_compiler::syntax::ast::{self, Param};

use super::Db;

/// The source text of a node, squeezed onto one line.
pub fn snippet(db: Db, file: eflow_compiler::analysis::FileId, span: ast::Span) -> String {
    let text = db.text(file);
    let s = text
        .get(span.start as usize..span.end as usize)
        .unwrap_or("");
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn param_text(db: Db, def: DefId, p: &Param) -> String {
    let mut s = format!("{}: {}", p.name.name, snippet(db, def.file, p.ty.span));
    if let Some(d) = &p.default {
        let value = snippet(db, def.file, d.span);
        if value.len() <= 40 {
            s.push_str(&format!(" = {value}"));
        } else {
            s.push_str(" = …");
        }
    }
    s
}

fn generics(g: &[ast::Ident]) -> String {
    if g.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = g.iter().map(|i| i.name.as_str()).collect();
        format!("<{}>", names.join(", "))
    }
}

/// A declaration as it would be written, for a code block.
pub fn declaration(db: Db, def: DefId) -> Option<String> {
    let item = db.item(def)?;
    let out = match &item.kind {
        ast::ItemKind::Step(s) => {
            let mut out = format!(
                "{} step {}{}(",
                s.kind.keyword(),
                s.name.name,
                generics(&s.generics)
            );
            params_block(db, def, &s.params, &mut out);
            out.push(')');
            if let Some(o) = &s.output {
                out.push_str(&format!(" -> {}", snippet(db, def.file, o.span)));
            }
            if !s.raises.is_empty() {
                let r: Vec<&str> = s.raises.iter().map(|r| r.name.as_str()).collect();
                out.push_str(&format!(" raises {}", r.join(", ")));
            }
            out
        }
        ast::ItemKind::Flow(f) => {
            let mut out = format!("flow {}(", f.name.name);
            params_block(db, def, &f.params, &mut out);
            out.push(')');
            if let Some(o) = &f.output {
                out.push_str(&format!(" -> {}", snippet(db, def.file, o.span)));
            }
            out
        }
        ast::ItemKind::Record(r) => {
            let mut out = format!("record {}{} {{\n", r.name.name, generics(&r.generics));
            for f in &r.fields {
                out.push_str(&format!(
                    "    {}: {},\n",
                    f.name.name,
                    snippet(db, def.file, f.ty.span)
                ));
            }
            out.push('}');
            out
        }
        ast::ItemKind::Enum(e) => {
            let mut out = format!("enum {} {{\n", e.name.name);
            for v in &e.variants {
                out.push_str(&format!("    {},\n", v.name.name));
            }
            out.push('}');
            out
        }
        ast::ItemKind::Alias(a) => format!(
            "type {}{} = {}",
            a.name.name,
            generics(&a.generics),
            snippet(db, def.file, a.ty.span)
        ),
        _ => return None,
    };
    Some(out)
}

fn params_block(db: Db, def: DefId, params: &[Param], out: &mut String) {
    if params.is_empty() {
        return;
    }
    let one_line: Vec<String> = params.iter().map(|p| param_text(db, def, p)).collect();
    let joined = one_line.join(", ");
    if joined.len() <= 60 {
        out.push_str(&joined);
    } else {
        out.push('\n');
        for p in one_line {
            out.push_str(&format!("    {p},\n"));
        }
    }
}

/// `Train(features: Features, spec: TrainingSpec) -> Model`, for one-line details.
pub fn call_signature(db: Db, def: DefId) -> Option<(String, Vec<(String, String)>)> {
    let item = db.item(def)?;
    let (name, g, params, output) = match &item.kind {
        ast::ItemKind::Step(s) => (&s.name, &s.generics[..], &s.params, &s.output),
        ast::ItemKind::Flow(f) => (&f.name, &[][..], &f.params, &f.output),
        _ => return None,
    };
    let parts: Vec<String> = params.iter().map(|p| param_text(db, def, p)).collect();
    let docs = params
        .iter()
        .zip(&parts)
        .map(|(p, t)| {
            (
                t.clone(),
                p.doc.as_ref().map(|d| d.text.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let mut s = format!("{}{}({})", name.name, generics(g), parts.join(", "));
    if let Some(o) = output {
        s.push_str(&format!(" -> {}", snippet(db, def.file, o.span)));
    }
    Some((s, docs))
}

/// Markdown documentation of an item's parameters or fields, one bullet each.
pub fn member_docs(db: Db, def: DefId) -> String {
    let item = match db.item(def) {
        Some(i) => i,
        None => return String::new(),
    };
    let mut out = String::new();
    let mut line = |name: &str, ty: String, doc: Option<&ast::Doc>| {
        out.push_str(&format!("- `{name}: {ty}`"));
        if let Some(d) = doc {
            out.push_str(" — ");
            out.push_str(&d.text.replace('\n', " "));
        }
        out.push('\n');
    };
    match &item.kind {
        ast::ItemKind::Step(s) => {
            for p in &s.params {
                line(
                    &p.name.name,
                    snippet(db, def.file, p.ty.span),
                    p.doc.as_ref(),
                );
            }
        }
        ast::ItemKind::Flow(f) => {
            for p in &f.params {
                line(
                    &p.name.name,
                    snippet(db, def.file, p.ty.span),
                    p.doc.as_ref(),
                );
            }
        }
        ast::ItemKind::Record(r) => {
            for f in &r.fields {
                line(
                    &f.name.name,
                    snippet(db, def.file, f.ty.span),
                    f.doc.as_ref(),
                );
            }
        }
        ast::ItemKind::Enum(e) => {
            for v in &e.variants {
                out.push_str(&format!("- `{}`", v.name.name));
                if let Some(d) = &v.doc {
                    out.push_str(" — ");
                    out.push_str(&d.text.replace('\n', " "));
                }
                out.push('\n');
            }
        }
        _ => {}
    }
    out
}

/// The module an item is declared in, as imported: `std/ml`, `examples/retraining`.
pub fn module_name(db: Db, def: DefId) -> String {
    db.module(def.file)
        .map(|m| m.name.clone())
        .unwrap_or_default()
}
