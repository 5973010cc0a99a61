//! The semantic changes between two bundles and whom each breaks: what `eflowc diff
//! OLD NEW` prints. Modelled on `buf breaking`: a change is breaking when someone
//! outside the new bundle, who worked with the old one, stops working: API callers
//! and schedules starting a flow, flows calling it, remote systems implementing a
//! step contract, the systems a binding calls. Everything else is compatible.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use eflow_ir::{Bundle, Call, Contract, Flow, Type, TypeDef};

use crate::analysis::{SourceFile, Sources};
use crate::bundles::{self, Given};
use crate::diagnostics::{Code, Diagnostic, Label};
use crate::syntax::ast::Span;

/// One side of a diff: its bundle, and where each flow is written (in its source
/// file, or in the IR file that holds it), to show the changes there.
pub struct Side {
    pub bundle: Bundle,
    /// Shown name and text of each file a place points into.
    files: Vec<(String, String)>,
    /// Flow → (index in `files`, byte range of its name).
    places: BTreeMap<String, (usize, Span)>,
}

impl Side {
    /// Reads a folder or file of sources (compiled here) or of IR.
    pub fn read(path: &Path) -> Result<Side, bundles::Error> {
        let paths = [path.to_path_buf()];
        match bundles::classify(&paths)? {
            Given::Sources(paths) => Side::sources(&paths),
            Given::Ir(files) => Side::ir(&files),
        }
    }

    fn sources(paths: &[PathBuf]) -> Result<Side, bundles::Error> {
        let (analysis, bundle) = bundles::analyse(paths)?;
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        let mut places = BTreeMap::new();
        for f in &bundle.flows {
            let Some(loc) = &f.source_map.flow else {
                continue;
            };
            let Some((id, src)) = analysis
                .sources
                .iter()
                .find(|(id, _)| analysis.module(*id).name == f.module)
            else {
                continue;
            };
            let i = *index.entry(id).or_insert_with(|| {
                files.push((src.name.clone(), src.text.clone()));
                files.len() - 1
            });
            let start = src
                .text
                .split_inclusive('\n')
                .take(loc.line.saturating_sub(1) as usize)
                .map(str::len)
                .sum::<usize>()
                + loc.column.saturating_sub(1) as usize;
            let span = span(start, f.name.len());
            places.insert(f.name.clone(), (i, span));
        }
        Ok(Side {
            bundle,
            files,
            places,
        })
    }

    fn ir(paths: &[PathBuf]) -> Result<Side, bundles::Error> {
        let bundle = bundles::read_ir(paths)?;
        let mut files = Vec::new();
        let mut places = BTreeMap::new();
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|source| bundles::Error::Read {
                path: p.display().to_string(),
                source,
            })?;
            files.push((p.display().to_string(), text));
        }
        for f in &bundle.flows {
            let quoted = serde_json::to_string(&f.name).unwrap_or_default();
            let found = files.iter().enumerate().find_map(|(i, (_, text))| {
                [format!("\"name\":{quoted}"), format!("\"name\": {quoted}")]
                    .iter()
                    .find_map(|needle| text.find(needle.as_str()))
                    .map(|at| {
                        (
                            i,
                            span(at, text[at..].find(&quoted).unwrap_or(0) + quoted.len()),
                        )
                    })
            });
            if let Some(place) = found {
                places.insert(f.name.clone(), place);
            }
        }
        Ok(Side {
            bundle,
            files,
            places,
        })
    }
}

fn span(start: usize, len: usize) -> Span {
    let start = u32::try_from(start).unwrap_or(u32::MAX);
    Span {
        start,
        end: start.saturating_add(u32::try_from(len).unwrap_or(0)),
    }
}

/// The changes from `old` to `new` as diagnostics, each at its flow in the new
/// side (in the old one for a removed flow), with the files they point into.
pub fn report(old: &Side, new: &Side) -> (Vec<Diagnostic>, Sources) {
    let mut sources = Sources::default();
    let mut add = |side: &Side| -> Vec<crate::analysis::FileId> {
        side.files
            .iter()
            .map(|(name, text)| sources.add(SourceFile::new(name.clone(), None, text.clone())))
            .collect()
    };
    let (new_ids, old_ids) = (add(new), add(old));
    if sources.is_empty() {
        sources.add(SourceFile::new("<bundle>", None, ""));
    }
    let place = |flow: &str| {
        new.places
            .get(flow)
            .map(|&(i, s)| (new_ids[i], s))
            .or_else(|| old.places.get(flow).map(|&(i, s)| (old_ids[i], s)))
            .unwrap_or((crate::analysis::FileId(0), Span { start: 0, end: 0 }))
    };
    let diags = diff(&old.bundle, &new.bundle)
        .into_iter()
        .map(|c| {
            let (file, span) = place(&c.flow);
            Diagnostic {
                code: c.code,
                severity: c.code.severity(),
                message: c.message,
                primary: Label {
                    file,
                    span,
                    message: String::new(),
                },
                secondary: Vec::new(),
                help: c.breaks,
                fixes: Vec::new(),
            }
        })
        .collect();
    (diags, sources)
}

/// One change, on one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `B…` when breaking, [`Code::Compatible`] when not.
    pub code: Code,
    /// The flow changed (of the new bundle, or of the old one when removed).
    pub flow: String,
    /// What changed, one sentence.
    pub message: String,
    /// Who breaks and what to do, for a breaking change.
    pub breaks: Option<String>,
}

impl Change {
    pub fn is_breaking(&self) -> bool {
        self.code != Code::Compatible
    }

    fn breaking(code: Code, flow: &str, message: String, breaks: String) -> Change {
        Change {
            code,
            flow: flow.to_string(),
            message,
            breaks: Some(breaks),
        }
    }

    fn compatible(flow: &str, message: String) -> Change {
        Change {
            code: Code::Compatible,
            flow: flow.to_string(),
            message,
            breaks: None,
        }
    }
}

/// Every change from `old` to `new`, by flow name, breaking ones first within a flow.
pub fn diff(old: &Bundle, new: &Bundle) -> Vec<Change> {
    let olds: BTreeMap<&str, &Flow> = old.flows.iter().map(|f| (f.name.as_str(), f)).collect();
    let news: BTreeMap<&str, &Flow> = new.flows.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut out = Vec::new();
    for (name, o) in &olds {
        let Some(n) = news.get(name) else {
            out.push(removed(o, &old.flows));
            continue;
        };
        if o.hash == n.hash {
            continue;
        }
        let mut changes = Vec::new();
        inputs(o, n, &mut changes);
        result(o, n, &mut changes);
        contracts(o, n, &mut changes);
        bindings(o, n, &mut changes);
        if changes.is_empty() {
            changes.push(Change::compatible(
                name,
                format!(
                    "flow `{name}` has a new version ({} → {})",
                    short(&o.hash),
                    short(&n.hash)
                ),
            ));
        }
        changes.sort_by_key(|c| !c.is_breaking());
        out.extend(changes);
    }
    for name in news.keys().filter(|n| !olds.contains_key(*n)) {
        out.push(Change::compatible(name, format!("flow `{name}` is new")));
    }
    out
}

fn short(hash: &str) -> &str {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    &hex[..hex.len().min(12)]
}

fn removed(flow: &Flow, old: &[Flow]) -> Change {
    let name = flow.name.as_str();
    let mut whom = vec!["API callers that start it".to_string()];
    if !flow.schedules.is_empty() {
        whom.push(format!(
            "its {} schedule(s), which stop with it",
            flow.schedules.len()
        ));
    }
    let callers: BTreeSet<&str> = old
        .iter()
        .filter(|f| {
            f.nodes
                .iter()
                .any(|n| matches!(&n.call, Call::Flow { name: c } if c == name))
        })
        .map(|f| f.name.as_str())
        .collect();
    if !callers.is_empty() {
        whom.push(format!(
            "runs of {} deployed before, which call it",
            callers
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Change::breaking(
        Code::FlowRemoved,
        name,
        format!("flow `{name}` was removed"),
        format!("breaks {}", whom.join("; ")),
    )
}

const INPUT_BREAKS: &str = "breaks API callers and schedules' inputs that start it as before";

fn inputs(o: &Flow, n: &Flow, out: &mut Vec<Change>) {
    let name = n.name.as_str();
    for p in &n.params {
        match o.params.iter().find(|q| q.name == p.name) {
            None if p.default.is_none() => out.push(Change::breaking(
                Code::InputNarrowed,
                name,
                format!(
                    "flow `{name}` has a new parameter `{}` without a default",
                    p.name
                ),
                format!("{INPUT_BREAKS}; give `{}` a default", p.name),
            )),
            None => out.push(Change::compatible(
                name,
                format!(
                    "flow `{name}` has a new parameter `{}` with a default",
                    p.name
                ),
            )),
            Some(q) => {
                if !accepts(&p.ty, &n.types, &q.ty, &o.types) {
                    let how = if p.ty == q.ty {
                        format!("a type {} names changed", show(&p.ty))
                    } else {
                        format!("{} → {}", show(&q.ty), show(&p.ty))
                    };
                    out.push(Change::breaking(
                        Code::InputNarrowed,
                        name,
                        format!(
                            "parameter `{}` of flow `{name}` accepts fewer values: {how}",
                            p.name
                        ),
                        format!("{INPUT_BREAKS}; keep its type or widen it"),
                    ));
                } else if p.ty != q.ty || !same_defs(&p.ty, o, n) {
                    out.push(Change::compatible(
                        name,
                        format!(
                            "parameter `{}` of flow `{name}` accepts more values",
                            p.name
                        ),
                    ));
                }
                if q.default.is_some() && p.default.is_none() {
                    out.push(Change::breaking(
                        Code::InputNarrowed,
                        name,
                        format!("parameter `{}` of flow `{name}` lost its default", p.name),
                        format!("{INPUT_BREAKS}, without it; keep a default"),
                    ));
                }
            }
        }
    }
    for q in &o.params {
        if !n.params.iter().any(|p| p.name == q.name) {
            out.push(Change::breaking(
                Code::InputNarrowed,
                name,
                format!("parameter `{}` of flow `{name}` was removed", q.name),
                format!("{INPUT_BREAKS} with it"),
            ));
        }
    }
}

fn result(o: &Flow, n: &Flow, out: &mut Vec<Change>) {
    let name = n.name.as_str();
    let same = match (&o.output, &n.output) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b && (!mentions(a, &o.types) || same_defs(a, o, n)),
        _ => false,
    };
    if !same {
        let shown = |t: &Option<Type>| t.as_ref().map_or("nothing".to_string(), show);
        out.push(Change::breaking(
            Code::ResultChanged,
            name,
            format!(
                "flow `{name}` returns {} instead of {}",
                shown(&n.output),
                shown(&o.output)
            ),
            "breaks flows that call it as a subflow and API callers reading its runs' results"
                .into(),
        ));
    }
}

/// Whether the records and enums `ty` names are defined alike in both flows.
fn same_defs(ty: &Type, o: &Flow, n: &Flow) -> bool {
    let mut names = BTreeSet::new();
    named(ty, &o.types, &mut names);
    named(ty, &n.types, &mut names);
    names.iter().all(|t| o.types.get(t) == n.types.get(t))
}

fn contracts(o: &Flow, n: &Flow, out: &mut Vec<Change>) {
    let name = n.name.as_str();
    for (id, c) in &n.contracts {
        let Some(before) = o.contracts.get(id) else {
            continue;
        };
        if let Some(what) = contract_change(before, c, o, n) {
            out.push(Change::breaking(
                Code::ContractChanged,
                name,
                format!("step `{id}`, which flow `{name}` calls, {what}"),
                format!("breaks the remote systems implementing `{id}` until they change with it"),
            ));
        }
    }
}

fn contract_change(before: &Contract, after: &Contract, o: &Flow, n: &Flow) -> Option<String> {
    if before.kind != after.kind {
        return Some(format!(
            "is now a {:?} step, not {:?}",
            after.kind, before.kind
        ));
    }
    let mut inputs = Vec::new();
    for p in &after.params {
        match before.params.iter().find(|q| q.name == p.name) {
            None => inputs.push(format!("new input `{}`", p.name)),
            Some(q) if q.ty != p.ty || !same_defs(&p.ty, o, n) => {
                inputs.push(format!(
                    "input `{}`: {} → {}",
                    p.name,
                    show(&q.ty),
                    show(&p.ty)
                ));
            }
            Some(q) if q.optional != p.optional => {
                inputs.push(format!(
                    "input `{}` optional: {} → {}",
                    p.name, q.optional, p.optional
                ));
            }
            Some(_) => {}
        }
    }
    for q in &before.params {
        if !after.params.iter().any(|p| p.name == q.name) {
            inputs.push(format!("input `{}` removed", q.name));
        }
    }
    if !inputs.is_empty() {
        return Some(format!("has different inputs ({})", inputs.join(", ")));
    }
    let output_same = match (&before.output, &after.output) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b && same_defs(a, o, n),
        _ => false,
    };
    (!output_same).then(|| {
        let shown = |t: &Option<Type>| t.as_ref().map_or("nothing".to_string(), show);
        format!(
            "returns {} instead of {}",
            shown(&after.output),
            shown(&before.output)
        )
    })
}

fn bindings(o: &Flow, n: &Flow, out: &mut Vec<Change>) {
    let name = n.name.as_str();
    for (env, by_contract) in &n.bindings {
        let Some(before) = o.bindings.get(env) else {
            continue;
        };
        for (id, b) in by_contract {
            if let Some(was) = before.get(id)
                && was.connector != b.connector
            {
                out.push(Change::breaking(
                    Code::BindingMoved,
                    name,
                    format!(
                        "step `{id}` in environment `{env}` moved from connector `{}` to `{}`",
                        was.connector, b.connector
                    ),
                    format!(
                        "breaks runs of `{name}` in `{env}` waiting on `{}` when it is deployed, and the systems it called",
                        was.connector
                    ),
                ));
            }
        }
    }
}

/// Whether every value of `old` (read with `old_types`) is a value of `new`.
fn accepts(
    new: &Type,
    new_types: &BTreeMap<String, TypeDef>,
    old: &Type,
    old_types: &BTreeMap<String, TypeDef>,
) -> bool {
    let rec = |a: &Type, b: &Type| accepts(a, new_types, b, old_types);
    match (new, old) {
        (Type::Optional { inner: a }, Type::Optional { inner: b }) => rec(a, b),
        (Type::Optional { inner: a }, b) => rec(a, b),
        (Type::Float, Type::Int) => true,
        (Type::List { item: a }, Type::List { item: b }) => rec(a, b),
        (Type::Map { key: k, value: v }, Type::Map { key: j, value: w }) => rec(k, j) && rec(v, w),
        (Type::Enum { name: a }, Type::Enum { name: b }) if a == b => {
            match (new_types.get(a), old_types.get(b)) {
                (Some(TypeDef::Enum { variants: v }), Some(TypeDef::Enum { variants: w })) => {
                    w.iter().all(|x| v.contains(x))
                }
                (x, y) => x == y,
            }
        }
        (Type::Record { name: a, args: x }, Type::Record { name: b, args: y })
            if a == b && x.len() == y.len() =>
        {
            if !x.iter().zip(y).all(|(p, q)| rec(p, q)) {
                return false;
            }
            match (new_types.get(a), old_types.get(b)) {
                (
                    Some(TypeDef::Record { fields: nf, .. }),
                    Some(TypeDef::Record { fields: of, .. }),
                ) => nf
                    .iter()
                    .all(|f| match of.iter().find(|g| g.name == f.name) {
                        Some(g) => rec(&f.ty, &g.ty),
                        None => matches!(f.ty, Type::Optional { .. }),
                    }),
                (x, y) => x == y,
            }
        }
        (a, b) => a == b,
    }
}

/// Whether `ty` names a record or an enum.
fn mentions(ty: &Type, types: &BTreeMap<String, TypeDef>) -> bool {
    let mut names = BTreeSet::new();
    named(ty, types, &mut names);
    !names.is_empty()
}

/// The records and enums `ty` names, through their fields.
fn named(ty: &Type, types: &BTreeMap<String, TypeDef>, out: &mut BTreeSet<String>) {
    match ty {
        Type::List { item: t } | Type::Optional { inner: t } => named(t, types, out),
        Type::Map { key, value } => {
            named(key, types, out);
            named(value, types, out);
        }
        Type::Enum { name } => {
            out.insert(name.clone());
        }
        Type::Record { name, args } => {
            for a in args {
                named(a, types, out);
            }
            if out.insert(name.clone())
                && let Some(TypeDef::Record { fields, .. }) = types.get(name)
            {
                for f in fields {
                    named(&f.ty, types, out);
                }
            }
        }
        _ => {}
    }
}

/// A type as the language writes it.
pub fn show(ty: &Type) -> String {
    match ty {
        Type::Bool => "Bool".into(),
        Type::Int => "Int".into(),
        Type::Float => "Float".into(),
        Type::String => "String".into(),
        Type::Duration => "Duration".into(),
        Type::Timestamp => "Timestamp".into(),
        Type::List { item } => format!("List<{}>", show(item)),
        Type::Map { key, value } => format!("Map<{}, {}>", show(key), show(value)),
        Type::Optional { inner } => format!("{}?", show(inner)),
        Type::Record { name, args } if args.is_empty() => short_name(name).into(),
        Type::Record { name, args } => format!(
            "{}<{}>",
            short_name(name),
            args.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        Type::Enum { name } => short_name(name).into(),
        Type::Param { name } => name.clone(),
    }
}

fn short_name(qualified: &str) -> &str {
    qualified.rsplit('.').next().unwrap_or(qualified)
}
