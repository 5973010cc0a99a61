//! Hover: what a name is, its type, and the documentation its declaration carries.

use eflow_compiler::semantics::ItemSig;
use eflow_compiler::semantics::RUN_FIELDS;
use eflow_compiler::semantics::Ty;
use eflow_compiler::semantics::connectors;
use eflow_compiler::syntax::ast::{self, Span};

use super::Db;
use super::render;
use eflow_compiler::analysis::FileId;
use eflow_compiler::semantics::{Def, Resolution};

pub struct Hover {
    pub span: Span,
    pub markdown: String,
}

fn code(s: &str) -> String {
    format!("```eflow\n{s}\n```")
}

pub fn hover(db: Db, file: FileId, offset: usize) -> Option<Hover> {
    let occ = db.analysis.semantics().definition_at(file, offset)?;
    let markdown = describe(db, occ)?;
    Some(Hover {
        span: occ.span,
        markdown,
    })
}

/// Markdown describing what an occurrence refers to.
pub fn describe(db: Db, occ: &Resolution) -> Option<String> {
    let ty = |t: &Option<Ty>| {
        t.as_ref()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "{unknown}".into())
    };
    let mut parts: Vec<String> = Vec::new();
    match &occ.def {
        Def::Item(def) => {
            let decl = render::declaration(db, *def)?;
            parts.push(code(&decl));
            if let Some(t) = occ.ty.as_ref().filter(|_| !occ.decl)
                && matches!(db.sig(*def), Some(ItemSig::Step(_) | ItemSig::Flow(_)))
                && *t != Ty::Error
            {
                parts.push(format!("Here it produces `{t}`."));
            }
            parts.push(format!("*from `{}`*", render::module_name(db, *def)));
            if let Some(doc) = db.doc(*def) {
                parts.push(doc.to_string());
            }
            let members = render::member_docs(db, *def);
            if !members.is_empty() {
                let what = match db.sig(*def) {
                    Some(ItemSig::Record(_)) => "Fields",
                    Some(ItemSig::Enum(_)) => "Values",
                    _ => "Parameters",
                };
                parts.push(format!("{what}:\n\n{members}"));
            }
            if let Some(ItemSig::Step(s)) = db.sig(*def) {
                parts.push(format!("A `{}` step.", s.kind.keyword()));
            }
        }
        Def::Field { record, name } => {
            let rec = db.item_name(*record)?;
            parts.push(code(&format!("{}.{name}: {}", rec.name, ty(&occ.ty))));
            if let Some(ast::ItemKind::Record(r)) = db.item(*record).map(|i| &i.kind)
                && let Some(doc) = r
                    .fields
                    .iter()
                    .find(|f| f.name.name == *name)
                    .and_then(|f| f.doc.as_ref())
            {
                parts.push(doc.text.clone());
            }
        }
        Def::Variant { en, name } => {
            let e = db.item_name(*en)?;
            parts.push(code(&format!("{}.{name}", e.name)));
            if let Some(ast::ItemKind::Enum(decl)) = db.item(*en).map(|i| &i.kind)
                && let Some(doc) = decl
                    .variants
                    .iter()
                    .find(|v| v.name.name == *name)
                    .and_then(|v| v.doc.as_ref())
            {
                parts.push(doc.text.clone());
            }
        }
        Def::Param { owner, name } => {
            let item = db.item(*owner)?;
            let params = match &item.kind {
                ast::ItemKind::Step(s) => &s.params,
                ast::ItemKind::Flow(f) => &f.params,
                _ => return None,
            };
            let p = params.iter().find(|p| p.name.name == *name)?;
            let mut line = format!("(parameter) {name}: {}", ty(&occ.ty));
            if let Some(d) = &p.default {
                line.push_str(&format!(" = {}", render::snippet(db, owner.file, d.span)));
            }
            parts.push(code(&line));
            let owner_name = db
                .item_name(*owner)
                .map(|n| n.name.clone())
                .unwrap_or_default();
            parts.push(format!("parameter of `{owner_name}`"));
            if let Some(doc) = &p.doc {
                parts.push(doc.text.clone());
            }
        }
        Def::Local { flow, name } => {
            parts.push(code(&format!("let {name}: {}", ty(&occ.ty))));
            if let Some(f) = db.flow(*flow)
                && let Some(n) = f.nodes.iter().find(|n| n.name == *name)
            {
                let how = if n.fan_out.is_some() {
                    "a fan-out over"
                } else if n.repeat.is_some() {
                    "the last iteration of a loop over"
                } else {
                    "the output of"
                };
                parts.push(format!("{how} `{}`", n.call.callee_name));
                if let eflow_compiler::semantics::Callee::Step(d)
                | eflow_compiler::semantics::Callee::Flow(d) = n.call.callee
                    && let Some(doc) = db.doc(d)
                {
                    parts.push(doc.lines().next().unwrap_or("").to_string());
                }
            }
        }
        Def::ForVar { file, decl } => {
            let name = db
                .text(*file)
                .get(decl.start as usize..decl.end as usize)
                .unwrap_or("");
            parts.push(code(&format!("{name}: {}", ty(&occ.ty))));
            parts.push("one element of the fan-out's list".to_string());
        }
        Def::LoopVar { file, decl } => {
            let name = db
                .text(*file)
                .get(decl.start as usize..decl.end as usize)
                .unwrap_or("");
            parts.push(code(&format!("{name}: {}", ty(&occ.ty))));
            parts.push(
                "the `repeat`'s latest output: in the call, the previous iteration's (`none` in the first); in `until`, the iteration just finished".to_string(),
            );
        }
        Def::Generic { owner, name } => {
            let o = db.item_name(*owner)?;
            parts.push(code(name));
            parts.push(format!("type parameter of `{}`", o.name));
        }
        Def::ErrorName { step, name } => {
            let s = db.item_name(*step)?;
            parts.push(code(name));
            parts.push(format!("an error `{}` may fail with (`raises`)", s.name));
        }
        Def::Module(file) => {
            let m = db.module(*file)?;
            parts.push(code(&format!("module \"{}\"", m.name)));
            let header: Vec<&str> = db
                .text(*file)
                .lines()
                .take_while(|l| l.starts_with("//"))
                .map(|l| l.trim_start_matches('/').trim())
                .collect();
            if !header.is_empty() {
                parts.push(header.join("\n"));
            }
        }
        Def::Env(name) => {
            parts.push(code(&format!("bindings {name}")));
            parts.push("an environment: which connector carries out each step there".into());
        }
        Def::Run => {
            parts.push(code("run"));
            let fields: Vec<String> = RUN_FIELDS
                .iter()
                .map(|(n, t, d)| format!("- `{n}: {t}` — {d}"))
                .collect();
            parts.push(format!("The current run.\n\n{}", fields.join("\n")));
        }
        Def::RunField(name) => {
            let (_, t, d) = RUN_FIELDS.iter().find(|(n, _, _)| n == name)?;
            parts.push(code(&format!("run.{name}: {t}")));
            parts.push(d.to_string());
        }
        Def::Builtin(name) => {
            parts.push(code(name));
            parts.push(builtin_doc(name).to_string());
        }
        Def::Connector(name) => {
            let c = connectors().into_iter().find(|c| c.name == name)?;
            parts.push(code(&format!("connector {name}")));
            parts.push(c.doc.to_string());
            let keys: Vec<String> = c
                .keys
                .iter()
                .map(|k| format!("- {}", k.describe()))
                .collect();
            parts.push(format!("Configuration:\n\n{}", keys.join("\n")));
        }
        Def::ConnectorKey { connector, key } => {
            let c = connectors().into_iter().find(|c| c.name == connector)?;
            let k = c.keys.iter().find(|k| k.name == key)?;
            parts.push(code(&format!("{connector}.{key}: {}", k.ty)));
            parts.push(format!(
                "{}{}",
                k.doc,
                if k.required { " (required)" } else { "" }
            ));
        }
    }
    Some(parts.join("\n\n"))
}

pub fn builtin_doc(name: &str) -> &'static str {
    match name {
        "Bool" => "`true` or `false`",
        "Int" => "a whole number; flows into `Float`",
        "Float" => "a number",
        "String" => "text",
        "Duration" => "a length of time: `30s`, `1h30m`, `7d`",
        "Timestamp" => "a moment in time, in UTC",
        "List" => "`List<T>`: an ordered list of values of type `T`",
        "Map" => "`Map<K, V>`: keys of type `String`, `Int` or an enum, to values of type `V`",
        "Timeout" => "the error every step fails with when an attempt outlives its `timeout`",
        _ => "built in",
    }
}
