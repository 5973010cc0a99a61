//! Bindings: which connector carries out a step in an environment, and with what
//! configuration, checked against the connectors of `eflow_ir::connector`.

use std::collections::{BTreeMap, HashMap};

use super::sigs::ItemSig;
use super::{ModuleCx, World};
use crate::diagnostics::Code;
use crate::ir::{self, connector::KeyType};
use crate::names::SymbolKind;
use crate::semantics::Def;
use crate::syntax::ast::{Binding, BindingsDecl, ExprKind, Span, StepKind};
use crate::types::{DefId, Ty};

/// A configuration key a connector understands, typed for the checker.
pub struct ConfigKey {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub doc: &'static str,
}

impl ConfigKey {
    /// `` `url: String` (required) — where to POST the invocation ``, for docs.
    pub fn describe(&self) -> String {
        format!(
            "`{}: {}`{} — {}",
            self.name,
            self.ty,
            if self.required { " (required)" } else { "" },
            self.doc
        )
    }
}

/// A connector of `eflow_ir::connector::CATALOGUE`, with the compiler's types.
pub struct Connector {
    pub name: &'static str,
    pub kinds: Vec<StepKind>,
    pub doc: &'static str,
    pub keys: Vec<ConfigKey>,
}

/// Every connector the runtime knows: the IR's catalogue, the one definition
/// the runtime parses bindings with.
pub fn connectors() -> Vec<Connector> {
    ir::connector::CATALOGUE
        .iter()
        .map(|c| Connector {
            name: c.name,
            kinds: c.kinds.iter().map(|&k| step_kind(k)).collect(),
            doc: c.doc,
            keys: c
                .keys
                .iter()
                .map(|k| ConfigKey {
                    name: k.name,
                    ty: key_ty(k.ty),
                    required: k.required,
                    doc: k.doc,
                })
                .collect(),
        })
        .collect()
}

fn key_ty(ty: KeyType) -> Ty {
    match ty {
        KeyType::String => Ty::String,
        KeyType::Int => Ty::Int,
        KeyType::Float => Ty::Float,
        KeyType::Duration => Ty::Duration,
        KeyType::StringList => Ty::List(Box::new(Ty::String)),
        KeyType::StringMap => Ty::Map(Box::new(Ty::String), Box::new(Ty::String)),
    }
}

fn step_kind(kind: ir::StepKind) -> StepKind {
    match kind {
        ir::StepKind::Remote => StepKind::Remote,
        ir::StepKind::Call => StepKind::Call,
        ir::StepKind::Approval => StepKind::Approval,
        ir::StepKind::Wait => StepKind::Wait,
    }
}

/// One checked binding.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedBinding {
    pub env: String,
    pub step: DefId,
    pub connector: String,
    /// Configuration as JSON values, keys sorted.
    pub config: BTreeMap<String, serde_json::Value>,
    pub span: Span,
}

/// Check a `bindings` block. Returns the bindings that are valid, and every step a
/// binding was written for (valid or not), so a broken binding is not also
/// reported as missing.
pub fn check_bindings(
    cx: &ModuleCx,
    world: &World,
    decl: &BindingsDecl,
) -> (Vec<CheckedBinding>, Vec<(String, DefId)>) {
    let attempted = decl
        .entries
        .iter()
        .map(|b| &b.step)
        .chain(&decl.broken)
        .filter_map(|step| {
            cx.namespace
                .get(&step.name)
                .filter(|s| s.kind == SymbolKind::Step)
                .map(|s| (decl.env.name.clone(), s.def))
        })
        .collect();
    (check_block(cx, world, decl), attempted)
}

fn check_block(cx: &ModuleCx, world: &World, decl: &BindingsDecl) -> Vec<CheckedBinding> {
    let catalogue = connectors();
    let mut out = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for b in &decl.entries {
        resolve_names(cx, world, &catalogue, b);
        if let Some(prev) = seen.insert(&b.step.name, b.step.span) {
            cx.report(
                cx.error(
                    Code::Duplicate,
                    b.step.span,
                    format!("`{}` is bound twice in environment `{}`", b.step, decl.env),
                )
                .with_secondary(cx.file, prev, "first bound here")
                .with_help("keep one binding per step and environment"),
            );
            continue;
        }
        if let Some(c) = check_one(cx, world, &catalogue, &decl.env.name, b) {
            out.push(c);
        }
    }
    out
}

fn check_one(
    cx: &ModuleCx,
    world: &World,
    catalogue: &[Connector],
    env: &str,
    b: &Binding,
) -> Option<CheckedBinding> {
    let step = match cx.lookup(&b.step.name) {
        Some(sym) if sym.kind == SymbolKind::Step => Some(sym.def),
        Some(sym) => {
            cx.report(
                cx.error(
                    Code::BindingUnknownStep,
                    b.step.span,
                    format!(
                        "`{}` is a {}; only steps are bound to connectors",
                        b.step,
                        sym.kind.describe()
                    ),
                )
                .with_help(if sym.kind == SymbolKind::Flow {
                    "a flow runs on the engine itself; bind the steps it calls"
                } else {
                    "name a step declared with `remote step`, `call step` or `approval step`"
                }),
            );
            None
        }
        None => {
            let candidates = cx
                .namespace
                .symbols
                .iter()
                .filter(|(_, s)| s.kind == SymbolKind::Step)
                .map(|(n, _)| n.as_str());
            cx.report(
                cx.error(
                    Code::BindingUnknownStep,
                    b.step.span,
                    format!("binding for unknown step `{}`", b.step),
                )
                .with_label("no step of this name here")
                .with_did_you_mean(&b.step.name, candidates, || {
                    format!("declare or import the step `{}` in this file", b.step)
                }),
            );
            None
        }
    };
    let Some(connector) = catalogue.iter().find(|c| c.name == b.connector.name) else {
        let help = || {
            format!(
                "the connectors are `{}`",
                catalogue
                    .iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>()
                    .join("`, `")
            )
        };
        cx.report(
            cx.error(
                Code::UnknownConnector,
                b.connector.span,
                format!("unknown connector `{}`", b.connector),
            )
            .with_label("not a connector")
            .with_did_you_mean(
                &b.connector.name,
                catalogue.iter().map(|c| c.name),
                help,
            ),
        );
        return None;
    };
    if let Some(def) = step
        && let ItemSig::Step(sig) = world.sig(def)
        && !connector.kinds.contains(&sig.kind)
    {
        let fitting: Vec<&str> = catalogue
            .iter()
            .filter(|c| c.kinds.contains(&sig.kind))
            .map(|c| c.name)
            .collect();
        cx.report(
            cx.error(
                Code::ConnectorKind,
                b.connector.span,
                format!(
                    "connector `{}` cannot carry out `{}`, {} {} step",
                    connector.name,
                    b.step,
                    article(sig.kind),
                    sig.kind.keyword()
                ),
            )
            .with_label(format!(
                "`{}` is {} {} step",
                b.step,
                article(sig.kind),
                sig.kind.keyword()
            ))
            .with_help(if fitting.is_empty() {
                "wait steps are carried out by the engine's timers and need no binding; remove it"
                    .to_string()
            } else {
                format!("use `{}`", fitting.join("` or `"))
            }),
        );
        return None;
    }
    let mut config = BTreeMap::new();
    let mut ok = true;
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for entry in &b.config {
        if let Some(prev) = seen.insert(&entry.key.name, entry.key.span) {
            cx.report(
                cx.error(
                    Code::InvalidConfig,
                    entry.key.span,
                    format!("`{}` is given twice", entry.key),
                )
                .with_secondary(cx.file, prev, "first given here")
                .with_help("remove one of them"),
            );
            ok = false;
            continue;
        }
        let Some(key) = connector.keys.iter().find(|k| k.name == entry.key.name) else {
            let help = || {
                format!(
                    "`{}` understands `{}`",
                    connector.name,
                    connector
                        .keys
                        .iter()
                        .map(|k| k.name)
                        .collect::<Vec<_>>()
                        .join("`, `")
                )
            };
            cx.report(
                cx.error(
                    Code::InvalidConfig,
                    entry.key.span,
                    format!(
                        "connector `{}` has no setting `{}`",
                        connector.name, entry.key
                    ),
                )
                .with_label("unknown setting")
                .with_did_you_mean(
                    &entry.key.name,
                    connector.keys.iter().map(|k| k.name),
                    help,
                ),
            );
            ok = false;
            continue;
        };
        match constant(&entry.value.kind, &key.ty) {
            Ok(v) => {
                if let Err(why) = ir::connector::check_value(connector.name, key.name, &v) {
                    cx.report(
                        cx.error(
                            Code::InvalidConfig,
                            entry.value.span,
                            format!("invalid `{}`: {why}", key.name),
                        )
                        .with_help(key.doc),
                    );
                    ok = false;
                }
                config.insert(key.name.to_string(), v);
            }
            // A literal that did not parse was reported where it was read.
            Err(_) if matches!(entry.value.kind, ExprKind::Error) => ok = false,
            Err(found) => {
                cx.report(
                    cx.error(
                        Code::InvalidConfig,
                        entry.value.span,
                        format!(
                            "`{}` of connector `{}` expects a `{}`, found {found}",
                            key.name, connector.name, key.ty
                        ),
                    )
                    .with_label(format!("expected `{}`", key.ty))
                    .with_help(key.doc),
                );
                ok = false;
            }
        }
    }
    let missing: Vec<&ConfigKey> = connector
        .keys
        .iter()
        .filter(|k| k.required && !seen.contains_key(k.name))
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|k| format!("`{}` ({})", k.name, k.doc))
            .collect();
        let example: Vec<String> = missing.iter().map(|k| format!("{}: …", k.name)).collect();
        cx.report(
            cx.error(
                Code::MissingConfig,
                b.connector.span,
                format!("connector `{}` needs {}", connector.name, names.join(", ")),
            )
            .with_label("configuration incomplete")
            .with_help(format!("add `{}` to its `{{ … }}`", example.join(", "))),
        );
        ok = false;
    }
    match (ok, step) {
        (true, Some(step)) => Some(CheckedBinding {
            env: env.to_string(),
            step,
            connector: connector.name.to_string(),
            config,
            span: b.span,
        }),
        _ => None,
    }
}

/// A configuration value: a literal of the key's type.
fn constant(e: &ExprKind, ty: &Ty) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let found = |e: &ExprKind| -> String {
        match e {
            ExprKind::Int(_) => "an Int".into(),
            ExprKind::Float(_) => "a Float".into(),
            ExprKind::Str(_) => "a String".into(),
            ExprKind::Bool(_) => "a Bool".into(),
            ExprKind::Duration(_) => "a Duration".into(),
            ExprKind::None => "`none`".into(),
            ExprKind::List(_) => "a list".into(),
            ExprKind::Map(_) => "a map".into(),
            ExprKind::Record { .. } => "a record".into(),
            ExprKind::Path(_) => "a name (configuration takes literal values only)".into(),
            _ => "an expression (configuration takes literal values only)".into(),
        }
    };
    match (ty, e) {
        (Ty::String, ExprKind::Str(s)) => Ok(Value::String(s.clone())),
        (Ty::Int, ExprKind::Int(i)) => Ok(Value::from(*i)),
        (Ty::Float, ExprKind::Int(i)) => Ok(Value::from(*i as f64)),
        (Ty::Float, ExprKind::Float(f)) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| "a number that is not finite".to_string()),
        (Ty::Bool, ExprKind::Bool(b)) => Ok(Value::Bool(*b)),
        (Ty::Duration, ExprKind::Duration(ms)) => Ok(Value::from(*ms)),
        (Ty::List(t), ExprKind::List(items)) => items
            .iter()
            .map(|i| constant(&i.kind, t))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Ty::Map(_, v), ExprKind::Map(entries)) => {
            let mut m = serde_json::Map::new();
            for (k, val) in entries {
                let ExprKind::Str(k) = &k.kind else {
                    return Err(format!("a map key that is {}", found(&k.kind)));
                };
                m.insert(k.clone(), constant(&val.kind, v)?);
            }
            Ok(Value::Object(m))
        }
        (_, other) => Err(found(other)),
    }
}

fn article(kind: StepKind) -> &'static str {
    if kind == StepKind::Approval {
        "an"
    } else {
        "a"
    }
}

/// Record what a binding's names refer to: its step, its connector, the
/// connector's settings and the names in their values.
fn resolve_names(cx: &ModuleCx, world: &World, catalogue: &[Connector], b: &Binding) {
    if let Some(sym) = cx.namespace.get(&b.step.name) {
        cx.resolve(b.step.span, Def::Item(sym.def), None);
    }
    let connector = catalogue.iter().find(|c| c.name == b.connector.name);
    if connector.is_some() {
        cx.resolve(
            b.connector.span,
            Def::Connector(b.connector.name.clone()),
            None,
        );
    }
    for entry in &b.config {
        if let Some(key) = connector.and_then(|c| c.keys.iter().find(|k| k.name == entry.key.name))
        {
            cx.resolve(
                entry.key.span,
                Def::ConnectorKey {
                    connector: b.connector.name.clone(),
                    key: entry.key.name.clone(),
                },
                Some(key.ty.clone()),
            );
        }
        super::sigs::constant_names(cx, world, &entry.value);
    }
}
