//! Lowering checked flows to the IR.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::analysis::Analysis;
use crate::check::flow::{self, Callee, CheckedFlow, TExpr, TExprKind};
use crate::check::sigs::ItemSig;
use crate::diagnostics::{Code, Diagnostic};
use crate::ir::{
    Backoff, BinOp, Binding, Bundle, Call, Catchup, Contract, ContractParam, Expr, FanOut, Field,
    Flow, Guard, IR_VERSION, Join, Node, Overlap, Param, Repeat, Retry, Schedule, SealedBundle,
    SealedFlow, SourceLoc, SourceMap, StepKind, Type, TypeDef,
};
use crate::source::FileId;
use crate::syntax::ast::{self, JoinPolicy};
use crate::types::{DefId, Ty};

/// Default backoff when a step sets `retry` but no `backoff`.
pub const DEFAULT_BACKOFF: Backoff = Backoff::Exponential {
    initial_ms: 10_000,
    max_ms: 600_000,
};

/// The flows defined in `files` (all roots when `None`) and every subflow they call.
/// Call only when the analysis has no errors.
pub fn emit(analysis: &Analysis, files: Option<&[FileId]>) -> Result<Bundle, Vec<Diagnostic>> {
    let (lower, flows) = prepare(analysis, files)?;
    Ok(Bundle {
        ir_version: IR_VERSION,
        flows: flows
            .into_iter()
            .map(|f| {
                let mut flow = lower.flow(f);
                flow.seal();
                flow
            })
            .collect(),
    })
}

/// [`emit`] as canonical JSON: each flow is serialised once, to hash it, and
/// dropped as soon as it is, so that the whole IR is never held at once.
pub fn emit_sealed(
    analysis: &Analysis,
    files: Option<&[FileId]>,
) -> Result<SealedBundle, Vec<Diagnostic>> {
    let (lower, flows) = prepare(analysis, files)?;
    Ok(SealedBundle {
        ir_version: IR_VERSION,
        flows: flows
            .into_iter()
            .map(|f| SealedFlow::new(lower.flow(f)))
            .collect(),
    })
}

/// The checked flows to emit, sorted by name, and the lowering context.
fn prepare<'a>(
    analysis: &'a Analysis,
    files: Option<&[FileId]>,
) -> Result<(Lower<'a>, Vec<&'a CheckedFlow>), Vec<Diagnostic>> {
    let roots = files.unwrap_or(&analysis.roots);
    let mut wanted: Vec<DefId> = Vec::new();
    for &f in roots {
        wanted.extend(analysis.module(f).flows.iter().map(|fl| fl.def));
    }
    let mut seen: std::collections::HashSet<DefId> = wanted.iter().copied().collect();
    // Close over subflows.
    let mut i = 0;
    while i < wanted.len() {
        if let Some(f) = analysis.flow(wanted[i]) {
            for n in &f.nodes {
                if let Callee::Flow(d) = n.call.callee
                    && seen.insert(d)
                {
                    wanted.push(d);
                }
            }
        }
        i += 1;
    }
    let mut by_name: HashMap<&str, &CheckedFlow> = HashMap::new();
    let mut errors = Vec::new();
    for d in &wanted {
        let Some(f) = analysis.flow(*d) else { continue };
        if let Some(prev) = by_name.insert(&f.name, f) {
            errors.push(
                Diagnostic::new(
                    Code::Duplicate,
                    f.def.file,
                    f.name_span,
                    format!("two flows named `{}` would be deployed together", f.name),
                )
                .with_secondary(prev.def.file, prev.name_span, "the other one")
                .with_help("flows are deployed by name: rename one of them"),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let lower = Lower {
        a: analysis,
        bindings: analysis.bindings(),
    };
    let mut flows: Vec<&CheckedFlow> = by_name.into_values().collect();
    flows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((lower, flows))
}

struct Lower<'a> {
    a: &'a Analysis,
    bindings: BTreeMap<&'a str, HashMap<DefId, &'a crate::check::bindings::CheckedBinding>>,
}

impl Lower<'_> {
    fn qualified(&self, def: DefId) -> String {
        let m = self.a.module(def.file);
        let name = match &m.ast.items.get(def.item as usize).map(|i| &i.kind) {
            Some(ast::ItemKind::Record(r)) => r.name.name.as_str(),
            Some(ast::ItemKind::Enum(e)) => e.name.name.as_str(),
            Some(ast::ItemKind::Step(s)) => s.name.name.as_str(),
            Some(ast::ItemKind::Flow(f)) => f.name.name.as_str(),
            Some(ast::ItemKind::Alias(a)) => a.name.name.as_str(),
            _ => "?",
        };
        format!("{}.{}", m.name, name)
    }

    fn sig(&self, def: DefId) -> &ItemSig {
        self.a
            .module(def.file)
            .sigs
            .get(def.item as usize)
            .unwrap_or(&ItemSig::None)
    }

    fn ty(&self, t: &Ty, types: &mut BTreeMap<String, TypeDef>) -> Type {
        match t {
            Ty::Bool => Type::Bool,
            Ty::Int => Type::Int,
            Ty::Float => Type::Float,
            Ty::String | Ty::Error | Ty::Unit | Ty::None => Type::String,
            Ty::Duration => Type::Duration,
            Ty::Timestamp => Type::Timestamp,
            Ty::List(i) => Type::List {
                item: Box::new(self.ty(i, types)),
            },
            Ty::Map(k, v) => Type::Map {
                key: Box::new(self.ty(k, types)),
                value: Box::new(self.ty(v, types)),
            },
            Ty::Optional(i) => Type::Optional {
                inner: Box::new(self.ty(i, types)),
            },
            Ty::Record { def, args, .. } => {
                let name = self.qualified(*def);
                if !types.contains_key(&name)
                    && let ItemSig::Record(r) = self.sig(*def)
                {
                    // Insert first: records may refer to themselves.
                    types.insert(
                        name.clone(),
                        TypeDef::Record {
                            generics: Vec::new(),
                            fields: Vec::new(),
                        },
                    );
                    let fields = r
                        .fields
                        .iter()
                        .map(|f| Field {
                            name: f.name.clone(),
                            ty: self.ty(&f.ty, types),
                        })
                        .collect();
                    types.insert(
                        name.clone(),
                        TypeDef::Record {
                            generics: r.generics.iter().map(|g| g.to_string()).collect(),
                            fields,
                        },
                    );
                }
                Type::Record {
                    name,
                    args: args.iter().map(|a| self.ty(a, types)).collect(),
                }
            }
            Ty::Enum { def, .. } => {
                let name = self.qualified(*def);
                if let ItemSig::Enum(e) = self.sig(*def) {
                    types.entry(name.clone()).or_insert_with(|| TypeDef::Enum {
                        variants: e.variants.clone(),
                    });
                }
                Type::Enum { name }
            }
            Ty::Param(n) => Type::Param {
                name: n.to_string(),
            },
        }
    }

    fn out_ty(&self, t: &Ty, types: &mut BTreeMap<String, TypeDef>) -> Option<Type> {
        (!matches!(t, Ty::Unit)).then(|| self.ty(t, types))
    }

    fn loc(&self, file: FileId, offset: u32) -> SourceLoc {
        let src = self.a.sources.get(file);
        let lc = src.line_col(offset);
        let m = self.a.module(file);
        SourceLoc {
            // The module's path, like its name: the same wherever the compiler
            // runs, so that a flow's version does not depend on it.
            file: if m.is_std {
                src.name.clone()
            } else {
                format!("{}.eflow", m.name)
            },
            line: lc.line,
            column: lc.col,
        }
    }

    fn flow(&self, f: &CheckedFlow) -> Flow {
        let file = f.def.file;
        let mut types = BTreeMap::new();
        let mut contracts = BTreeMap::new();
        let params = f
            .params
            .iter()
            .zip(&f.defaults)
            .map(|(p, d)| Param {
                name: p.name.clone(),
                ty: self.ty(&p.ty, &mut types),
                default: d.as_ref().map(constant),
            })
            .collect();
        let output = self.out_ty(&f.output, &mut types);
        let mut used_steps = BTreeSet::new();
        let nodes = f
            .nodes
            .iter()
            .map(|n| {
                let call = match n.call.callee {
                    Callee::Step(def) => {
                        let name = self.qualified(def);
                        if let ItemSig::Step(s) = self.sig(def) {
                            contracts.entry(name.clone()).or_insert_with(|| Contract {
                                kind: match s.kind {
                                    ast::StepKind::Remote => StepKind::Remote,
                                    ast::StepKind::Call => StepKind::Call,
                                    ast::StepKind::Approval => StepKind::Approval,
                                    ast::StepKind::Wait => StepKind::Wait,
                                },
                                generics: s.generics.iter().map(|g| g.to_string()).collect(),
                                params: s
                                    .params
                                    .iter()
                                    .map(|p| ContractParam {
                                        name: p.name.clone(),
                                        ty: self.ty(&p.ty, &mut types),
                                        optional: p.omittable,
                                    })
                                    .collect(),
                                output: self.out_ty(&s.output, &mut types),
                                raises: s.raises.clone(),
                            });
                        }
                        used_steps.insert(def);
                        Call::Step {
                            contract: name,
                            type_args: n
                                .call
                                .type_args
                                .iter()
                                .map(|(g, t)| (g.to_string(), self.ty(t, &mut types)))
                                .collect(),
                        }
                    }
                    Callee::Flow(def) => Call::Flow {
                        name: self
                            .a
                            .flow(def)
                            .map(|sf| sf.name.to_string())
                            .unwrap_or_default(),
                    },
                    Callee::Error => Call::Flow {
                        name: String::new(),
                    },
                };
                let retryable = matches!(
                    n.call.step_kind,
                    Some(ast::StepKind::Remote | ast::StepKind::Call)
                );
                let retry = retryable.then(|| Retry {
                    max_attempts: n.options.retry.unwrap_or(1),
                    backoff: match n.options.backoff {
                        Some(flow::Backoff::Fixed { delay_ms }) => Backoff::Fixed { delay_ms },
                        Some(flow::Backoff::Exponential { initial_ms, max_ms }) => {
                            Backoff::Exponential { initial_ms, max_ms }
                        }
                        None => DEFAULT_BACKOFF,
                    },
                    non_retryable: n.options.non_retryable.clone(),
                });
                Node {
                    id: n.name.clone(),
                    call,
                    inputs: {
                        let mut inputs: BTreeMap<String, Expr> = n
                            .call
                            .args
                            .iter()
                            .map(|(k, v)| (k.clone(), self.expr(v, f)))
                            .collect();
                        // A step's default goes with every call that leaves it out.
                        if let Callee::Step(def) = n.call.callee {
                            for (name, d) in self.a.step_defaults(def) {
                                inputs
                                    .entry(name.clone())
                                    .or_insert_with(|| Expr::Literal(constant(d)));
                            }
                        }
                        inputs.into_iter().collect()
                    },
                    fan_out: n.fan_out.as_ref().map(|fo| FanOut {
                        over: self.expr(&fo.over, f),
                        item: fo.var.clone(),
                        join: match (&fo.join, &fo.k) {
                            (JoinPolicy::Any, _) => Join::Any,
                            (JoinPolicy::AtLeast(_), Some(k)) => {
                                Join::AtLeast { k: self.expr(k, f) }
                            }
                            _ => Join::All,
                        },
                        parallel: n.options.parallel,
                    }),
                    repeat: n.repeat.as_ref().map(|r| Repeat {
                        var: r.var.clone(),
                        max: r.max,
                        until: r.until.as_ref().map(|u| self.expr(u, f)),
                    }),
                    guards: n
                        .guards
                        .iter()
                        .map(|g| Guard {
                            condition: g.when,
                            value: g.branch,
                        })
                        .collect(),
                    depends_on: n.deps.iter().map(|&d| f.nodes[d].name.clone()).collect(),
                    retry,
                    timeout_ms: n.options.timeout_ms,
                    output: self.out_ty(&n.output, &mut types),
                }
            })
            .collect();
        let mut bindings = BTreeMap::new();
        let own = &self.a.module(file).bindings;
        for (env, by_step) in &self.bindings {
            let mut m = BTreeMap::new();
            for def in &used_steps {
                // The flow's own file's binding first: another file's only for a
                // step its file does not bind (a shared bindings file, say), so a
                // flow does not change with the files compiled beside it.
                let mine = own.iter().find(|b| b.env == *env && b.step == *def);
                if let Some(b) = mine.or_else(|| by_step.get(def).copied()) {
                    m.insert(
                        self.qualified(*def),
                        Binding {
                            connector: b.connector.clone(),
                            config: b.config.clone(),
                        },
                    );
                }
            }
            bindings.insert(env.to_string(), m);
        }
        let schedules = f
            .schedules
            .iter()
            .map(|s| Schedule {
                cron: s.cron.clone(),
                timezone: s.timezone.clone(),
                overlap: match s.overlap.as_str() {
                    "buffer_one" => Overlap::BufferOne,
                    "allow_all" => Overlap::AllowAll,
                    "cancel_running" => Overlap::CancelRunning,
                    _ => Overlap::Skip,
                },
                catchup: match s.catchup.as_str() {
                    "skip" => Catchup::Skip,
                    "all" => Catchup::All,
                    _ => Catchup::Once,
                },
                catchup_window_ms: s.catchup_within_ms,
                jitter_ms: s.jitter_ms,
                input: s
                    .input
                    .iter()
                    .map(|(k, v)| (k.clone(), constant(v)))
                    .collect(),
            })
            .collect();
        let source_map = SourceMap {
            flow: Some(self.loc(file, f.name_span.start)),
            nodes: f
                .nodes
                .iter()
                .map(|n| (n.name.clone(), self.loc(file, n.name_span.start)))
                .collect(),
        };
        Flow {
            name: f.name.to_string(),
            module: self.a.module(file).name.clone(),
            hash: String::new(),
            params,
            output,
            timeout_ms: f.timeout_ms,
            schedules,
            nodes,
            conditions: f.conds.iter().map(|c| self.expr(&c.expr, f)).collect(),
            result: f.ret.as_ref().map(|r| self.expr(r, f)),
            types,
            contracts,
            bindings,
            doc: f.doc.clone(),
            source_map,
        }
    }

    fn expr(&self, e: &TExpr, f: &CheckedFlow) -> Expr {
        match &e.kind {
            TExprKind::Param(name, path) => Expr::Param {
                name: name.clone(),
                path: path.clone(),
            },
            TExprKind::Node(i, path) => Expr::Node {
                id: f.nodes[*i].name.clone(),
                path: path.clone(),
            },
            TExprKind::Item(path) => Expr::Item { path: path.clone() },
            TExprKind::Run(field) => Expr::Run {
                field: field.clone(),
            },
            TExprKind::List(items) => Expr::List(items.iter().map(|i| self.expr(i, f)).collect()),
            TExprKind::Map(entries) => Expr::Map(
                entries
                    .iter()
                    .map(|(k, v)| (self.expr(k, f), self.expr(v, f)))
                    .collect(),
            ),
            TExprKind::Record { ty, fields } => Expr::Record {
                ty: match ty {
                    Ty::Record { def, .. } => self.qualified(*def),
                    _ => String::new(),
                },
                fields: fields
                    .iter()
                    .map(|(k, v)| (k.clone(), self.expr(v, f)))
                    .collect(),
            },
            TExprKind::Not(i) => Expr::Not(Box::new(self.expr(i, f))),
            TExprKind::Neg(i) => Expr::Neg(Box::new(self.expr(i, f))),
            TExprKind::Binary(op, l, r) => Expr::Binary {
                op: match op {
                    ast::BinOp::Coalesce => BinOp::Coalesce,
                    ast::BinOp::Or => BinOp::Or,
                    ast::BinOp::And => BinOp::And,
                    ast::BinOp::Eq => BinOp::Eq,
                    ast::BinOp::Ne => BinOp::Ne,
                    ast::BinOp::Lt => BinOp::Lt,
                    ast::BinOp::Le => BinOp::Le,
                    ast::BinOp::Gt => BinOp::Gt,
                    ast::BinOp::Ge => BinOp::Ge,
                },
                left: Box::new(self.expr(l, f)),
                right: Box::new(self.expr(r, f)),
            },
            _ => Expr::Literal(constant(e)),
        }
    }
}

/// The JSON value of a constant expression (defaults, schedule inputs, literals).
pub fn constant(e: &TExpr) -> serde_json::Value {
    use serde_json::Value;
    match &e.kind {
        TExprKind::Int(i) => Value::from(*i),
        TExprKind::Float(x) => serde_json::Number::from_f64(*x)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        TExprKind::Str(s) => Value::String(s.clone()),
        TExprKind::Bool(b) => Value::Bool(*b),
        TExprKind::Duration(ms) => Value::from(*ms),
        TExprKind::Variant { variant, .. } => Value::String(variant.clone()),
        TExprKind::List(items) => Value::Array(items.iter().map(constant).collect()),
        TExprKind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match constant(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, constant(v))
                })
                .collect(),
        ),
        TExprKind::Record { fields, .. } => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), constant(v)))
                .collect(),
        ),
        TExprKind::Neg(inner) => match constant(inner) {
            Value::Number(n) => n
                .as_i64()
                .and_then(i64::checked_neg)
                .map(Value::from)
                .or_else(|| {
                    n.as_f64()
                        .and_then(|x| serde_json::Number::from_f64(-x))
                        .map(Value::Number)
                })
                .unwrap_or(Value::Null),
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}
