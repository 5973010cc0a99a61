//! Flow bodies: every `let` becomes a typed node with its dependencies, every
//! expression a typed expression, and every mistake a diagnostic.
//!
//! The body is declarative: statement order does not matter, so names are collected
//! first and expressions checked after. A value defined inside `when` is optional
//! outside it; a condition may only use values that exist before it is evaluated.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::sigs::{FlowSig, ItemSig, ParamSig, StepSig, TypeResolver};
use super::{ModuleCx, World};
use crate::diagnostics::{Code, Fix};
use crate::names::SymbolKind;
use crate::semantics::Def;
use crate::source::FileId;
use crate::syntax::ast::{
    self, Arg, BinOp, Call, Expr, ExprKind, FlowDecl, Ident, JoinPolicy, Span, StepExpr, StepKind,
    StepOptionKind, Stmt, StmtKind, UnaryOp,
};
use crate::types::{DefId, Ty};

#[derive(Debug, Clone, PartialEq)]
pub struct CheckedFlow {
    pub def: DefId,
    pub name: Arc<str>,
    pub name_span: Span,
    pub doc: Option<String>,
    pub params: Vec<ParamSig>,
    /// Default values, parallel to `params`.
    pub defaults: Vec<Option<TExpr>>,
    pub output: Ty,
    pub nodes: Vec<Node>,
    /// `when` conditions; a [`Guard`] refers to one by index.
    pub conds: Vec<Cond>,
    pub ret: Option<TExpr>,
    /// The flow's `deadline`, in milliseconds (the IR's flow `timeout_ms`).
    pub timeout_ms: Option<u64>,
    pub schedules: Vec<CheckedSchedule>,
    /// Parameters and nodes referred to anywhere, even in expressions that failed
    /// to check, so a typo elsewhere does not also make them look unused.
    pub used_params: BTreeSet<String>,
    pub used_nodes: BTreeSet<usize>,
    /// Nodes already reported as never able to run.
    pub unreachable: BTreeSet<usize>,
    /// The body has statements that failed to parse: diagnostics that would only
    /// repeat that (unused values, a missing return) are left out.
    pub broken: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    pub when: usize,
    /// `true` inside the `when` block, `false` inside its `else`.
    pub branch: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub expr: TExpr,
    /// The guards around the `when` itself.
    pub guards: Vec<Guard>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub name_span: Span,
    pub span: Span,
    pub guards: Vec<Guard>,
    pub call: NodeCall,
    pub fan_out: Option<FanOut>,
    pub repeat: Option<RepeatLoop>,
    /// The node's value where it is defined (optional outside its `when`).
    pub output: Ty,
    /// Nodes whose completion this one waits for: data, `after` and its conditions.
    pub deps: BTreeSet<usize>,
    pub after: Vec<usize>,
    pub options: Options,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callee {
    Step(DefId),
    Flow(DefId),
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeCall {
    pub callee: Callee,
    pub callee_name: String,
    pub callee_span: Span,
    pub args: Vec<(String, TExpr)>,
    /// For a generic step: what each type parameter was inferred to be.
    pub type_args: Vec<(Arc<str>, Ty)>,
    /// The step kind, or `None` for a subflow.
    pub step_kind: Option<StepKind>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FanOut {
    pub var: String,
    pub over: TExpr,
    pub join: JoinPolicy,
    /// `join at_least k`: `k`, an `Int` over parameters and earlier outputs.
    pub k: Option<TExpr>,
}

/// A bounded loop: the call runs at most `max` times, `var` being the previous
/// iteration's output, until `until` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatLoop {
    pub var: String,
    pub max: u32,
    pub until: Option<TExpr>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    pub retry: Option<u32>,
    pub backoff: Option<Backoff>,
    pub non_retryable: Vec<String>,
    pub timeout_ms: Option<u64>,
    pub parallel: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Fixed { delay_ms: u64 },
    Exponential { initial_ms: u64, max_ms: u64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckedSchedule {
    pub cron: String,
    pub timezone: String,
    pub overlap: String,
    pub catchup: String,
    pub catchup_within_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    pub input: Vec<(String, TExpr)>,
    pub span: Span,
}

/// A typed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct TExpr {
    pub kind: TExprKind,
    pub ty: Ty,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TExprKind {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Duration(u64),
    None,
    /// A flow parameter, then fields.
    Param(String, Vec<String>),
    /// A node's output, then fields.
    Node(usize, Vec<String>),
    /// The current element of a fan-out, then fields.
    Item(Vec<String>),
    /// A field of the built-in `run`.
    Run(String),
    Variant {
        enum_name: Arc<str>,
        variant: String,
    },
    List(Vec<TExpr>),
    Map(Vec<(TExpr, TExpr)>),
    Record {
        ty: Ty,
        fields: Vec<(String, TExpr)>,
    },
    Not(Box<TExpr>),
    Neg(Box<TExpr>),
    Binary(BinOp, Box<TExpr>, Box<TExpr>),
    Error,
}

impl TExpr {
    fn error(span: Span) -> TExpr {
        TExpr {
            kind: TExprKind::Error,
            ty: Ty::Error,
            span,
        }
    }

    /// Every node this expression reads.
    pub fn nodes(&self, out: &mut BTreeSet<usize>) {
        match &self.kind {
            TExprKind::Node(i, _) => {
                out.insert(*i);
            }
            TExprKind::List(items) => items.iter().for_each(|e| e.nodes(out)),
            TExprKind::Map(entries) => entries.iter().for_each(|(k, v)| {
                k.nodes(out);
                v.nodes(out)
            }),
            TExprKind::Record { fields, .. } => fields.iter().for_each(|(_, e)| e.nodes(out)),
            TExprKind::Not(e) | TExprKind::Neg(e) => e.nodes(out),
            TExprKind::Binary(_, l, r) => {
                l.nodes(out);
                r.nodes(out)
            }
            _ => {}
        }
    }

    /// Every parameter this expression reads.
    pub fn params<'e>(&'e self, out: &mut Vec<&'e str>) {
        match &self.kind {
            TExprKind::Param(p, _) => out.push(p),
            TExprKind::List(items) => items.iter().for_each(|e| e.params(out)),
            TExprKind::Map(entries) => entries.iter().for_each(|(k, v)| {
                k.params(out);
                v.params(out)
            }),
            TExprKind::Record { fields, .. } => fields.iter().for_each(|(_, e)| e.params(out)),
            TExprKind::Not(e) | TExprKind::Neg(e) => e.params(out),
            TExprKind::Binary(_, l, r) => {
                l.params(out);
                r.params(out)
            }
            _ => {}
        }
    }
}

/// Checked arguments by parameter name.
type Args = Vec<(String, TExpr)>;

/// The fields of the built-in `run` value.
pub const RUN_FIELDS: &[(&str, Ty, &str)] = &[
    ("id", Ty::String, "the run's id"),
    ("tenant", Ty::String, "the tenant the run belongs to"),
    ("flow", Ty::String, "the flow's name"),
    (
        "version",
        Ty::Int,
        "the deployed flow version the run started on",
    ),
    ("started_at", Ty::Timestamp, "when the run started"),
];

/// Where an expression is evaluated: which guards hold there.
#[derive(Clone)]
struct Site<'g> {
    guards: &'g [Guard],
    /// Set when checking a `when` condition: the `when` it belongs to.
    condition_of: Option<usize>,
    /// The fan-out variable and its element type, inside a fan-out body.
    item: Option<(&'g Ident, &'g Ty)>,
    /// The node whose inputs are being checked, if any.
    node: Option<usize>,
    /// Paths known not to be `none` here besides those of `guards`: what the left
    /// side of an `and` (or `or`) tested, for its right side.
    narrowed: Vec<Vec<String>>,
}

enum Availability {
    /// Always there when this site runs.
    Definite,
    /// Only when the `when` branches it is defined in were taken.
    Conditional,
    /// Never at the same time as this site: opposite branches.
    Exclusive(Guard),
}

struct Pending<'a> {
    let_stmt: &'a ast::LetStmt,
    span: Span,
    guards: Vec<Guard>,
}

struct FlowCx<'a, 'w> {
    cx: &'a ModuleCx<'w>,
    def: DefId,
    world: &'a World<'a>,
    types: &'a TypeResolver<'a, 'w>,
    sig: &'a FlowSig,
    lets: Vec<Pending<'a>>,
    names: HashMap<&'a str, usize>,
    conds: Vec<(&'a Expr, Vec<Guard>, Span)>,
    /// Per `when`, the paths its condition proves are not `none`: in its `else`
    /// block (`[0]`) and in its block (`[1]`).
    narrows: Vec<[Vec<Vec<String>>; 2]>,
    node_types: Vec<Ty>,
    used_params: BTreeSet<String>,
    used_nodes: BTreeSet<usize>,
    broken: bool,
    /// A `return` was found inside a `when` (reported as misplaced).
    misplaced_return: bool,
    /// Expressions of statements reported as misplaced or repeated: the names
    /// they read count as used, so that the one mistake is the one diagnostic.
    rejected: Vec<&'a Expr>,
    unreachable: BTreeSet<usize>,
    missing_args: Vec<MissingArgs>,
    /// References to `let`s, resolved once every step's output type is known.
    local_refs: Vec<LocalRef>,
}

/// A path that starts with a `let`'s name.
struct LocalRef {
    name: Ident,
    rest: Vec<Ident>,
    /// The type of the whole path.
    ty: Ty,
}

/// A call reported for missing arguments, waiting for its fix.
struct MissingArgs {
    /// Its diagnostic, by index in the module's list.
    diag: usize,
    /// Where arguments go, and whether after another argument.
    at: (u32, bool),
    params: Vec<ParamSig>,
}

impl MissingArgs {
    /// Fill each missing parameter with the flow's value of the same name and a
    /// fitting type, else its first value of a fitting type, else the parameter's
    /// name (for the user to replace).
    fn fix(&self, file: FileId, flow_params: &[ParamSig], nodes: &[Node]) -> Fix {
        let values: Vec<(&str, &Ty)> = flow_params
            .iter()
            .map(|p| (p.name.as_str(), &p.ty))
            .chain(nodes.iter().map(|n| (n.name.as_str(), &n.output)))
            .collect();
        let args: Vec<String> = self
            .params
            .iter()
            .map(|p| {
                let value = values
                    .iter()
                    .find(|(n, t)| *n == p.name && t.flows_into(&p.ty))
                    .or_else(|| {
                        values.iter().find(|(_, t)| {
                            **t != Ty::Error && !p.ty.has_params() && t.flows_into(&p.ty)
                        })
                    })
                    .map_or(p.name.as_str(), |(n, _)| n);
                format!("{}: {value}", p.name)
            })
            .collect();
        let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        let (at, after_arg) = self.at;
        Fix::edit(
            format!(
                "Add missing argument{} `{}`",
                if names.len() == 1 { "" } else { "s" },
                names.join("`, `")
            ),
            file,
            Span { start: at, end: at },
            if after_arg {
                format!(", {}", args.join(", "))
            } else {
                args.join(", ")
            },
        )
    }
}

impl<'a, 'w> FlowCx<'a, 'w> {
    /// A checker of the body (or the constants) of item `def` with signature `sig`.
    fn new(
        cx: &'a ModuleCx<'w>,
        def: DefId,
        world: &'a World<'a>,
        types: &'a TypeResolver<'a, 'w>,
        sig: &'a FlowSig,
    ) -> Self {
        FlowCx {
            cx,
            def,
            world,
            types,
            sig,
            lets: Vec::new(),
            names: HashMap::new(),
            conds: Vec::new(),
            narrows: Vec::new(),
            node_types: Vec::new(),
            used_params: BTreeSet::new(),
            used_nodes: BTreeSet::new(),
            broken: false,
            misplaced_return: false,
            rejected: Vec::new(),
            unreachable: BTreeSet::new(),
            missing_args: Vec::new(),
            local_refs: Vec::new(),
        }
    }
}

/// Types a step's parameter defaults against their parameters, as a flow's
/// are: each must be a constant of the parameter's type. The defaults, by
/// parameter name, are what a call that leaves them out passes.
pub fn check_step_defaults(
    cx: &ModuleCx,
    world: &World,
    types: &TypeResolver,
    def: DefId,
    decl: &ast::StepDecl,
) -> Vec<(String, TExpr)> {
    let ItemSig::Step(step) = world.sig(def) else {
        return Vec::new();
    };
    let sig = FlowSig {
        name: step.name.clone(),
        params: Vec::new(),
        output: Ty::Unit,
    };
    let mut fcx = FlowCx::new(cx, def, world, types, &sig);
    let mut out = Vec::new();
    for p in &decl.params {
        let Some(d) = &p.default else { continue };
        let Some(ty) = step
            .params
            .iter()
            .find(|q| q.name == p.name.name)
            .map(|q| q.ty.clone())
        else {
            continue;
        };
        let site = Site {
            guards: &[],
            condition_of: None,
            item: None,
            node: None,
            narrowed: Vec::new(),
        };
        let e = fcx.expr_no_refs(d, &ty, &site, "a parameter default");
        fcx.expect(&e, &ty, "this parameter's default", Some(p.ty.span));
        if e.ty.flows_into(&ty) {
            out.push((p.name.name.clone(), e));
        }
    }
    out
}

pub fn check_flow(
    cx: &ModuleCx,
    world: &World,
    types: &TypeResolver,
    def: DefId,
    doc: Option<String>,
    decl: &FlowDecl,
) -> Option<CheckedFlow> {
    let ItemSig::Flow(sig) = world.sig(def) else {
        return None;
    };
    let mut fcx = FlowCx::new(cx, def, world, types, sig);
    let mut ret = None;
    let mut deadline = None;
    let mut schedule = Vec::new();
    fcx.collect(&decl.body, &[], &mut ret, &mut deadline, &mut schedule);

    for (i, p) in fcx.lets.iter().enumerate() {
        let name = &p.let_stmt.name;
        if let Some(param) = sig.params.iter().find(|q| q.name == name.name) {
            cx.report(
                cx.error(
                    Code::Duplicate,
                    name.span,
                    format!("`{}` is already a parameter of this flow", name.name),
                )
                .with_label("defined again here")
                .with_secondary(cx.file, param.span, "the parameter")
                .with_help("give the step's output another name"),
            );
        }
        if let Some(&prev) = fcx.names.get(name.name.as_str()) {
            cx.report(super::sigs::duplicate(
                cx.file,
                name,
                fcx.lets[prev].let_stmt.name.span,
                "step",
            ));
            continue;
        }
        fcx.names.insert(&name.name, i);
    }

    for e in std::mem::take(&mut fcx.rejected) {
        fcx.mention(e);
    }

    // Output types first, so references can be typed in any order.
    fcx.node_types = fcx.lets.iter().map(|p| fcx.output_type(p)).collect();

    let conds: Vec<Cond> = (0..fcx.conds.len())
        .map(|w| {
            let (expr, guards, span) = fcx.conds[w].clone();
            let site = Site {
                guards: &guards,
                condition_of: Some(w),
                item: None,
                node: None,
                narrowed: Vec::new(),
            };
            let texpr = fcx.expr(expr, Some(&Ty::Bool), &site);
            if !texpr.ty.flows_into(&Ty::Bool) {
                cx.report(
                    cx.error(
                        Code::ConditionNotBool,
                        expr.span,
                        format!("a `when` condition must be a Bool, found `{}`", texpr.ty),
                    )
                    .with_label(format!("this is `{}`", texpr.ty))
                    .with_help("compare it with something, e.g. `eval.score >= 0.8`"),
                );
            }
            Cond {
                expr: texpr,
                guards,
                span,
            }
        })
        .collect();

    let nodes: Vec<Node> = (0..fcx.lets.len()).map(|i| fcx.node(i, &conds)).collect();

    let defaults = decl
        .params
        .iter()
        .map(|p| {
            let sig_ty = sig
                .params
                .iter()
                .find(|q| q.name == p.name.name)
                .map(|q| q.ty.clone())
                .unwrap_or(Ty::Error);
            p.default.as_ref().map(|d| {
                let site = Site {
                    guards: &[],
                    condition_of: None,
                    item: None,
                    node: None,
                    narrowed: Vec::new(),
                };
                let e = fcx.expr_no_refs(d, &sig_ty, &site, "a parameter default");
                fcx.expect(&e, &sig_ty, "this parameter's default", Some(p.ty.span));
                e
            })
        })
        .collect();

    let ret = match (ret, &sig.output) {
        (None, Ty::Unit) => None,
        (None, _) if fcx.broken || fcx.misplaced_return => None,
        (None, out) => {
            cx.report(
                cx.error(
                    Code::MissingReturn,
                    decl.name.span,
                    format!(
                        "flow `{}` declares a result of type `{out}` but never returns one",
                        decl.name
                    ),
                )
                .with_label("declares a result")
                .with_help(
                    "add `return <value>` to the flow's body, or remove `-> …` from its signature",
                ),
            );
            None
        }
        (Some(e), Ty::Unit) => {
            cx.report(
                cx.error(
                    Code::MissingReturn,
                    e.span,
                    format!(
                        "flow `{}` has no result type but returns a value",
                        decl.name
                    ),
                )
                .with_label("returned here")
                .with_help("declare the result type: `flow Name(…) -> Type { … }`"),
            );
            None
        }
        (Some(e), out) => {
            let site = Site {
                guards: &[],
                condition_of: None,
                item: None,
                node: None,
                narrowed: Vec::new(),
            };
            let out = out.clone();
            let t = fcx.expr(e, Some(&out), &site);
            fcx.expect(
                &t,
                &out,
                "the flow's result",
                decl.output.as_ref().map(|o| o.span),
            );
            Some(t)
        }
    };

    let schedules = schedule
        .into_iter()
        .filter_map(|s| fcx.schedule(s, &decl.params))
        .collect();

    for m in &fcx.missing_args {
        let fix = m.fix(cx.file, &sig.params, &nodes);
        cx.diags.borrow_mut()[m.diag].fixes.push(fix);
    }
    for n in &nodes {
        cx.declare(
            n.name_span,
            Def::Local {
                flow: def,
                name: n.name.clone(),
            },
            Some(n.output.clone()),
        );
    }
    for r in std::mem::take(&mut fcx.local_refs) {
        let declared = nodes
            .iter()
            .find(|n| n.name == r.name.name)
            .map(|n| &n.output);
        let ty = if r.rest.is_empty() {
            Some(r.ty)
        } else {
            declared.map(|t| t.unwrap_optional().clone())
        };
        cx.resolve(
            r.name.span,
            Def::Local {
                flow: def,
                name: r.name.name.clone(),
            },
            ty.clone(),
        );
        if let Some(t) = ty {
            fcx.resolve_fields(t, &r.rest);
        }
    }

    Some(CheckedFlow {
        def,
        name: sig.name.clone(),
        name_span: decl.name.span,
        doc,
        params: sig.params.clone(),
        defaults,
        output: sig.output.clone(),
        nodes,
        conds,
        ret,
        timeout_ms: deadline,
        schedules,
        used_params: fcx.used_params,
        used_nodes: fcx.used_nodes,
        unreachable: fcx.unreachable,
        broken: fcx.broken,
    })
}

impl<'a, 'w> FlowCx<'a, 'w> {
    fn collect(
        &mut self,
        body: &'a [Stmt],
        guards: &[Guard],
        ret: &mut Option<&'a Expr>,
        deadline: &mut Option<u64>,
        schedule: &mut Vec<&'a ast::Schedule>,
    ) {
        let cx = self.cx;
        let top = guards.is_empty();
        let misplaced = |span: Span, what: &str| {
            cx.report(
                cx.error(
                    Code::MisplacedStatement,
                    span,
                    format!("`{what}` must be at the top level of the flow, not inside `when`"),
                )
                .with_label("inside a `when` block")
                .with_help(format!("move `{what}` out of the `when` block")),
            )
        };
        for stmt in body {
            match &stmt.kind {
                StmtKind::Let(l) => self.lets.push(Pending {
                    let_stmt: l,
                    span: stmt.span,
                    guards: guards.to_vec(),
                }),
                StmtKind::When(w) => {
                    let id = self.conds.len();
                    self.conds.push((&w.cond, guards.to_vec(), w.cond.span));
                    let (mut otherwise, mut then) = (Vec::new(), Vec::new());
                    narrowed_by(&w.cond, false, &mut otherwise);
                    narrowed_by(&w.cond, true, &mut then);
                    self.narrows.push([otherwise, then]);
                    let mut inner = guards.to_vec();
                    inner.push(Guard {
                        when: id,
                        branch: true,
                    });
                    self.collect(&w.then_body, &inner, ret, deadline, schedule);
                    if let Some(else_body) = &w.else_body {
                        inner.pop();
                        inner.push(Guard {
                            when: id,
                            branch: false,
                        });
                        self.collect(else_body, &inner, ret, deadline, schedule);
                    }
                }
                StmtKind::Return(e) => {
                    if !top {
                        misplaced(stmt.span, "return");
                        // The flow does return, in the wrong place: that is the
                        // one mistake, not also a missing `return` or unused values.
                        self.misplaced_return = true;
                        self.rejected.push(e);
                    } else if let Some(prev) = ret {
                        self.rejected.push(e);
                        cx.report(
                            cx.error(Code::MissingReturn, stmt.span, "a flow returns once")
                                .with_label("second `return`")
                                .with_secondary(cx.file, prev.span, "first `return`")
                                .with_help("keep one `return`; to choose between values use `??` or a `when` with optional outputs"),
                        );
                    } else {
                        *ret = Some(e);
                    }
                }
                StmtKind::Deadline(d) => {
                    if !top {
                        misplaced(stmt.span, "deadline");
                    } else if deadline.is_some() {
                        cx.report(
                            cx.error(
                                Code::DuplicateOption,
                                stmt.span,
                                "a flow's deadline is set twice",
                            )
                            .with_label("second `deadline`")
                            .with_help("keep one `deadline`"),
                        );
                    } else if d.millis == 0 && !d.invalid {
                        cx.report(
                            cx.error(
                                Code::InvalidOption,
                                d.span,
                                "a flow deadline must be longer than zero",
                            )
                            .with_help("write a duration such as `30d`"),
                        );
                    } else {
                        *deadline = Some(d.millis);
                    }
                }
                StmtKind::Schedule(s) => {
                    if !top {
                        misplaced(stmt.span, "schedule");
                        for c in &s.clauses {
                            if let ast::ScheduleClauseKind::Input(args) = &c.kind {
                                self.rejected.extend(args.iter().map(|a| &a.value));
                            }
                        }
                    } else {
                        schedule.push(s);
                    }
                }
                StmtKind::Error => self.broken = true,
            }
        }
    }

    /// Count the parameters and `let`s that `e` reads as used, without checking it.
    fn mention(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Path(p) => {
                if let Some(first) = p.first() {
                    if let Some(&i) = self.names.get(first.name.as_str()) {
                        self.used_nodes.insert(i);
                    } else if self.sig.params.iter().any(|q| q.name == first.name) {
                        self.used_params.insert(first.name.clone());
                    }
                }
            }
            ExprKind::List(items) => items.iter().for_each(|x| self.mention(x)),
            ExprKind::Map(entries) => entries.iter().for_each(|(k, v)| {
                self.mention(k);
                self.mention(v)
            }),
            ExprKind::Record { fields, .. } => fields.iter().for_each(|f| self.mention(&f.value)),
            ExprKind::Unary { expr, .. } => self.mention(expr),
            ExprKind::Binary { lhs, rhs, .. } => {
                self.mention(lhs);
                self.mention(rhs)
            }
            _ => {}
        }
    }

    fn callee(&self, call: &Call) -> (Callee, Option<&'a ItemSig>) {
        let cx = self.cx;
        let Some(sym) = cx.lookup(&call.callee.name) else {
            let candidates = cx
                .namespace
                .symbols
                .iter()
                .filter(|(_, s)| s.kind.is_callable())
                .map(|(n, _)| n.as_str());
            cx.report(
                cx.error(
                    Code::UnknownCallee,
                    call.callee.span,
                    format!("unknown step or flow `{}`", call.callee.name),
                )
                .with_label("not defined or imported here")
                .with_did_you_mean(&call.callee.name, candidates, || {
                    format!(
                        "declare it (`remote step {}(…) -> …`) or import it (`from \"…\" import {}`)",
                        call.callee.name, call.callee.name
                    )
                }),
            );
            return (Callee::Error, None);
        };
        match sym.kind {
            SymbolKind::Step => (Callee::Step(sym.def), Some(self.world.sig(sym.def))),
            SymbolKind::Flow => (Callee::Flow(sym.def), Some(self.world.sig(sym.def))),
            kind => {
                cx.report(
                    cx.error(
                        Code::NotCallable,
                        call.callee.span,
                        format!(
                            "`{}` is a {}, not a step or flow",
                            call.callee.name,
                            kind.describe()
                        ),
                    )
                    .with_label("called here")
                    .with_secondary(sym.def.file, sym.span, "defined here")
                    .with_help(if kind == SymbolKind::Record {
                        format!(
                            "to build a `{0}` value write `{0} {{ field: value }}` as an argument",
                            call.callee.name
                        )
                    } else {
                        "only steps and flows can be called".to_string()
                    }),
                );
                (Callee::Error, None)
            }
        }
    }

    fn call_of(p: &Pending<'a>) -> &'a Call {
        match &p.let_stmt.value {
            StepExpr::Call(c) => c,
            StepExpr::ForEach(f) => &f.body,
            StepExpr::Repeat(r) => &r.body,
        }
    }

    /// The type a node's value has where it is defined, before any argument is checked
    /// (generic outputs are refined in [`Self::node`]).
    fn output_type(&self, p: &Pending<'a>) -> Ty {
        let call = Self::call_of(p);
        let out = match self.callee_quiet(call) {
            Some(ItemSig::Step(s)) => s.output.clone(),
            Some(ItemSig::Flow(f)) => f.output.clone(),
            _ => Ty::Error,
        };
        let out = if out.has_params() { Ty::Error } else { out };
        match &p.let_stmt.value {
            StepExpr::Call(_) | StepExpr::Repeat(_) => out,
            StepExpr::ForEach(f) => join_type(&f.join.policy, out),
        }
    }

    fn callee_quiet(&self, call: &Call) -> Option<&'a ItemSig> {
        let sym = self.cx.namespace.get(&call.callee.name)?;
        sym.kind.is_callable().then(|| self.world.sig(sym.def))
    }

    fn node(&mut self, i: usize, conds: &[Cond]) -> Node {
        let cx = self.cx;
        let p = &self.lets[i];
        let let_stmt = p.let_stmt;
        let guards = p.guards.clone();
        let span = p.span;
        let call = Self::call_of(p);
        let (callee, sig) = self.callee(call);

        let mut fan_out = None;
        let elem_ty;
        let item_name;
        if let StepExpr::ForEach(f) = &let_stmt.value {
            let site = Site {
                guards: &guards,
                condition_of: None,
                item: None,
                node: None,
                narrowed: Vec::new(),
            };
            let over = self.expr(&f.over, None, &site);
            elem_ty = match &over.ty {
                Ty::List(t) => (**t).clone(),
                Ty::Error => Ty::Error,
                other => {
                    let mut d = cx
                        .error(
                            Code::NotAList,
                            f.over.span,
                            format!("`for` needs a list to fan out over, found `{other}`"),
                        )
                        .with_label(format!("this is `{other}`"));
                    d.help = Some(if other.is_optional() {
                        "the value may be absent: give a default with `?? []`".to_string()
                    } else {
                        "fan out over a `List<…>`, e.g. a step output of type `List<Segment>`"
                            .to_string()
                    });
                    cx.report(d);
                    Ty::Error
                }
            };
            // `k` is read where the fan-out starts: not the fan-out's own variable.
            let k = match &f.join.policy {
                JoinPolicy::AtLeast(k) => {
                    let t = self.expr(k, Some(&Ty::Int), &site);
                    self.expect(&t, &Ty::Int, "`join at_least k`", None);
                    if let ExprKind::Int(n) = k.kind
                        && n < 1
                    {
                        cx.report(
                            cx.error(
                                Code::InvalidOption,
                                f.join.span,
                                format!("`join at_least {n}` waits for nothing"),
                            )
                            .with_help("use `join at_least 1` or more, `join any` or `join all`"),
                        );
                    }
                    Some(t)
                }
                _ => None,
            };
            if self.names.contains_key(f.var.name.as_str())
                || self.sig.params.iter().any(|q| q.name == f.var.name)
            {
                cx.report(
                    cx.error(
                        Code::Duplicate,
                        f.var.span,
                        format!("`{}` is already a name in this flow", f.var.name),
                    )
                    .with_help("give the fan-out variable a name of its own"),
                );
            }
            item_name = Some(&f.var);
            cx.declare(
                f.var.span,
                Def::ForVar {
                    file: cx.file,
                    decl: f.var.span,
                },
                matches!(over.ty, Ty::List(_)).then(|| elem_ty.clone()),
            );
            fan_out = Some(FanOut {
                var: f.var.name.clone(),
                over,
                join: f.join.policy.clone(),
                k,
            });
        } else if let StepExpr::Repeat(r) = &let_stmt.value {
            // The previous iteration's output: absent in the first iteration.
            elem_ty = match self.output_type(p) {
                Ty::Error | Ty::Unit => Ty::Error,
                t => t.optional(),
            };
            self.repeat_var(&r.var, &elem_ty);
            item_name = Some(&r.var);
        } else {
            elem_ty = Ty::Error;
            item_name = None;
        }

        let site = Site {
            guards: &guards,
            condition_of: None,
            item: item_name.map(|n| (n, &elem_ty)),
            node: Some(i),
            narrowed: Vec::new(),
        };
        let (args, type_args, out) = match sig {
            Some(ItemSig::Step(s)) => self.step_args(call, s, &site),
            Some(ItemSig::Flow(f)) => {
                let (args, _, out) = self.args(call, &f.params, &[], &f.output, &site);
                (args, Vec::new(), out)
            }
            _ => {
                // Still check the arguments' expressions for unknown names.
                for a in &call.args {
                    self.expr(&a.value, None, &site);
                }
                (Vec::new(), Vec::new(), Ty::Error)
            }
        };
        let output = match &fan_out {
            Some(f) => join_type(&f.join, out),
            None => out,
        };
        let repeat = match &let_stmt.value {
            StepExpr::Repeat(r) => Some(self.repeat(r, &output, &guards, i)),
            _ => None,
        };
        if let Callee::Step(d) | Callee::Flow(d) = callee {
            cx.resolve(call.callee.span, Def::Item(d), Some(output.clone()));
        }
        let step_kind = match sig {
            Some(ItemSig::Step(s)) => Some(s.kind),
            _ => None,
        };
        let options = self.options(let_stmt, sig, fan_out.is_some());

        let mut deps = BTreeSet::new();
        for (_, a) in &args {
            a.nodes(&mut deps);
        }
        if let Some(u) = repeat.as_ref().and_then(|r| r.until.as_ref()) {
            u.nodes(&mut deps);
        }
        if let Some(f) = &fan_out {
            f.over.nodes(&mut deps);
            if let Some(k) = &f.k {
                k.nodes(&mut deps);
            }
        }
        for g in &guards {
            conds[g.when].expr.nodes(&mut deps);
        }
        let mut after = Vec::new();
        for opt in &let_stmt.options {
            if let StepOptionKind::After(names) = &opt.kind {
                for n in names {
                    if self.names.contains_key(n.name.as_str()) {
                        cx.resolve(
                            n.span,
                            Def::Local {
                                flow: self.def,
                                name: n.name.clone(),
                            },
                            None,
                        );
                    }
                    match self.names.get(n.name.as_str()) {
                        Some(&j) if j == i => cx.report(
                            cx.error(
                                Code::Cycle,
                                n.span,
                                format!("`{}` cannot run after itself", n.name),
                            )
                            .with_help("remove it from `after`"),
                        ),
                        Some(&j) => {
                            self.used_nodes.insert(j);
                            after.push(j);
                            deps.insert(j);
                            if let Availability::Exclusive(g) = self.availability(j, &site) {
                                self.report_exclusive(&let_stmt.name, n, n.span, g);
                                self.unreachable.insert(i);
                            }
                        }
                        None => {
                            cx.report(
                                cx.error(
                                    Code::UnknownName,
                                    n.span,
                                    format!("no step named `{}` in this flow", n.name),
                                )
                                .with_label("unknown step")
                                .with_did_you_mean(
                                    &n.name,
                                    self.names.keys().copied(),
                                    || "`after` names other steps of this flow".to_string(),
                                ),
                            );
                        }
                    }
                }
            }
        }
        Node {
            name: let_stmt.name.name.clone(),
            name_span: let_stmt.name.span,
            span,
            guards,
            call: NodeCall {
                callee,
                callee_name: call.callee.name.clone(),
                callee_span: call.callee.span,
                args,
                type_args,
                step_kind,
            },
            fan_out,
            repeat,
            output,
            deps,
            after,
            options,
        }
    }

    /// Declares a `repeat`'s variable, of type `ty` in the loop's call.
    fn repeat_var(&self, var: &Ident, ty: &Ty) {
        let cx = self.cx;
        if self.names.contains_key(var.name.as_str())
            || self.sig.params.iter().any(|q| q.name == var.name)
        {
            cx.report(
                cx.error(
                    Code::Duplicate,
                    var.span,
                    format!("`{}` is already a name in this flow", var.name),
                )
                .with_help("give the loop variable a name of its own"),
            );
        }
        cx.declare(
            var.span,
            Def::LoopVar {
                file: cx.file,
                decl: var.span,
            },
            (*ty != Ty::Error).then(|| ty.clone()),
        );
    }

    /// A `repeat`'s bound and `until`, once its call's output type `out` is known.
    fn repeat(&mut self, r: &ast::Repeat, out: &Ty, guards: &[Guard], i: usize) -> RepeatLoop {
        let cx = self.cx;
        let max = r.max.value;
        if !(1..=i64::from(eflow_ir::MAX_REPEAT)).contains(&max) {
            cx.report(
                cx.error(
                    Code::RepeatBound,
                    r.max.span,
                    format!(
                        "`repeat … at_most {max}`: the bound must be 1 to {}",
                        eflow_ir::MAX_REPEAT
                    ),
                )
                .with_label("not a bound a loop can have")
                .with_help(format!(
                    "give the most iterations the loop may take, from 1 to {}; longer work belongs to a schedule",
                    eflow_ir::MAX_REPEAT
                )),
            );
        }
        if *out == Ty::Unit {
            cx.report(
                cx.error(
                    Code::RepeatWithoutOutput,
                    r.body.callee.span,
                    format!("`{}` produces nothing for the next iteration", r.body.callee.name),
                )
                .with_label("this has no output")
                .with_help("repeat a step or subflow that returns a value: each iteration is given the previous one's output"),
            );
        }
        // In `until`, the variable is the iteration just finished: present.
        let present = match out {
            Ty::Unit => Ty::Error,
            t => t.clone(),
        };
        let until = r.until.as_ref().map(|u| {
            let site = Site {
                guards,
                condition_of: None,
                item: Some((&r.var, &present)),
                node: Some(i),
                narrowed: Vec::new(),
            };
            let t = self.expr(u, Some(&Ty::Bool), &site);
            if !t.ty.flows_into(&Ty::Bool) {
                cx.report(
                    cx.error(
                        Code::ConditionNotBool,
                        u.span,
                        format!("an `until` condition must be a Bool, found `{}`", t.ty),
                    )
                    .with_label(format!("this is `{}`", t.ty))
                    .with_help(format!(
                        "compare the iteration's output with something, e.g. `{}.auc >= 0.9`",
                        r.var.name
                    )),
                );
            }
            t
        });
        RepeatLoop {
            var: r.var.name.clone(),
            max: u32::try_from(max.clamp(1, i64::from(eflow_ir::MAX_REPEAT))).unwrap_or(1),
            until,
        }
    }

    fn step_args(
        &mut self,
        call: &Call,
        s: &StepSig,
        site: &Site,
    ) -> (Args, Vec<(Arc<str>, Ty)>, Ty) {
        let (args, map, out) = self.args(call, &s.params, &s.generics, &s.output, site);
        let type_args = s
            .generics
            .iter()
            .map(|g| (g.clone(), map.get(g).cloned().unwrap_or(Ty::Error)))
            .collect();
        (args, type_args, out)
    }

    /// Check a call's arguments against parameters; infer type parameters.
    fn args(
        &mut self,
        call: &Call,
        params: &[ParamSig],
        generics: &[Arc<str>],
        output: &Ty,
        site: &Site,
    ) -> (Args, HashMap<Arc<str>, Ty>, Ty) {
        let cx = self.cx;
        let mut given: HashMap<&str, &Arg> = HashMap::new();
        let mut typed = Vec::new();
        let mut map: HashMap<Arc<str>, Ty> = HashMap::new();
        // An argument for a generic parameter was reported as not fitting it: the
        // type parameters it would determine are not also "cannot infer".
        let mut wrong_generic = false;
        let owner = cx
            .namespace
            .get(&call.callee.name)
            .filter(|s| s.kind.is_callable());
        for a in &call.args {
            if let (Some(owner), Some(p)) = (owner, params.iter().find(|p| p.name == a.name.name)) {
                cx.resolve(
                    a.name.span,
                    Def::Param {
                        owner: owner.def,
                        name: p.name.clone(),
                    },
                    Some(p.ty.clone()),
                );
            }
            if let Some(prev) = given.insert(&a.name.name, a) {
                cx.report(
                    cx.error(
                        Code::DuplicateArgument,
                        a.name.span,
                        format!("argument `{}` is given twice", a.name),
                    )
                    .with_label("given again here")
                    .with_secondary(cx.file, prev.name.span, "first given here")
                    .with_help("remove one of them"),
                );
                continue;
            }
            let Some(param) = params.iter().find(|p| p.name == a.name.name) else {
                let expected: Vec<String> = params
                    .iter()
                    .map(|p| format!("`{}: {}`", p.name, p.ty))
                    .collect();
                cx.report(
                    cx.error(
                        Code::UnknownArgument,
                        a.name.span,
                        format!("`{}` has no parameter named `{}`", call.callee.name, a.name),
                    )
                    .with_label("unknown argument")
                    .with_did_you_mean(
                        &a.name.name,
                        params.iter().map(|p| p.name.as_str()),
                        || {
                            if expected.is_empty() {
                                format!("`{}` takes no arguments", call.callee.name)
                            } else {
                                format!("its parameters are {}", expected.join(", "))
                            }
                        },
                    ),
                );
                self.expr(&a.value, None, site);
                continue;
            };
            let expected = if param.ty.has_params() {
                None
            } else {
                Some(&param.ty)
            };
            let value = self.expr(&a.value, expected, site);
            if param.ty.has_params() {
                let mut alone = HashMap::new();
                let fits_alone = param.ty.infer(&value.ty, &mut alone) && {
                    let t = param.ty.subst(&alone);
                    has_error(&value.ty) || (!t.has_params() && value.ty.flows_into(&t))
                };
                if !fits_alone {
                    // Not of the parameter's shape, whatever its type arguments.
                    wrong_generic = true;
                    cx.report(
                        cx.error(
                            Code::TypeMismatch,
                            a.value.span,
                            format!(
                                "argument `{}` of `{}` expects `{}`, found `{}`",
                                a.name, call.callee.name, param.ty, value.ty
                            ),
                        )
                        .with_label(format!("this is `{}`", value.ty))
                        .with_help(format!(
                            "pass a `{}`, with any type for {}",
                            param.ty,
                            generics
                                .iter()
                                .map(|g| format!("`{g}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    );
                } else if !param.ty.infer(&value.ty, &mut map) {
                    wrong_generic = true;
                    let bound = param.ty.subst(&map);
                    cx.report(
                        cx.error(
                            Code::TypeMismatch,
                            a.value.span,
                            format!("argument `{}` is `{}`, which does not fit `{}` as inferred from the other arguments", a.name, value.ty, bound),
                        )
                        .with_label(format!("this is `{}`", value.ty))
                        .with_help("every argument that shares a type parameter must have compatible types"),
                    );
                }
            } else {
                self.expect_arg(&value, param, call);
            }
            typed.push((a.name.name.clone(), value));
        }
        // Generic parameters: check compatibility after inference.
        for (name, value) in &typed {
            if let Some(p) = params.iter().find(|p| &p.name == name)
                && p.ty.has_params()
            {
                let t = p.ty.subst(&map);
                if !t.has_params() && !value.ty.flows_into(&t) {
                    self.expect_arg(value, &ParamSig { ty: t, ..p.clone() }, call);
                }
            }
        }
        let missing: Vec<&ParamSig> = params
            .iter()
            .filter(|p| !p.omittable && !given.contains_key(p.name.as_str()))
            .collect();
        if !missing.is_empty() {
            let list: Vec<String> = missing
                .iter()
                .map(|p| format!("`{}: {}`", p.name, p.ty))
                .collect();
            let example: Vec<String> = missing.iter().map(|p| format!("{}: …", p.name)).collect();
            let mut d = cx
                .error(
                    Code::MissingArgument,
                    call.callee.span,
                    format!(
                        "`{}` is missing argument{} {}",
                        call.callee.name,
                        if missing.len() == 1 { "" } else { "s" },
                        list.join(", ")
                    ),
                )
                .with_label("called here")
                .with_help(format!("add {}", example.join(", ")));
            if let Some(sym) = cx.namespace.get(&call.callee.name) {
                d = d.with_secondary(sym.def.file, missing[0].span, "parameter declared here");
            }
            cx.report(d);
            // Its fix picks values by type, known for every step once the flow is checked.
            self.missing_args.push(MissingArgs {
                diag: cx.diags.borrow().len() - 1,
                at: match call.args.last() {
                    Some(last) => (last.span.end, true),
                    // Just before the closing parenthesis, which ends every call.
                    None => (call.span.end.saturating_sub(1), false),
                },
                params: missing.into_iter().cloned().collect(),
            });
        }
        let mut out = output.subst(&map);
        if out.has_params() && wrong_generic {
            out = Ty::Error;
        } else if out.has_params() {
            let unresolved: Vec<&str> = generics
                .iter()
                .filter(|g| !map.contains_key(*g))
                .map(|g| &**g)
                .collect();
            cx.report(
                cx.error(
                    Code::CannotInfer,
                    call.callee.span,
                    format!(
                        "cannot infer type parameter `{}` of `{}`",
                        unresolved.join("`, `"),
                        call.callee.name
                    ),
                )
                .with_label("called here")
                .with_help("pass the argument that determines it"),
            );
            out = Ty::Error;
        }
        (typed, map, out)
    }

    fn expect_arg(&self, value: &TExpr, param: &ParamSig, call: &Call) {
        if value.ty.flows_into(&param.ty) {
            return;
        }
        let sym = self.cx.namespace.get(&call.callee.name);
        let decl = sym.map(|s| (s.def.file, param.span));
        self.mismatch(
            value,
            &param.ty,
            &format!("argument `{}` of `{}`", param.name, call.callee.name),
            decl,
        );
    }

    /// Report that `value` does not fit `expected`; `what` says what expected it.
    fn expect(&self, value: &TExpr, expected: &Ty, what: &str, decl_span: Option<Span>) {
        if value.ty.flows_into(expected) {
            return;
        }
        self.mismatch(value, expected, what, decl_span.map(|s| (self.cx.file, s)));
    }

    fn mismatch(
        &self,
        value: &TExpr,
        expected: &Ty,
        what: &str,
        decl: Option<(crate::source::FileId, Span)>,
    ) {
        let cx = self.cx;
        let found = &value.ty;
        let (code, message, help) = if found.is_optional()
            && found.unwrap_optional().flows_into(expected)
        {
            (
                Code::MaybeAbsent,
                format!("{what} expects `{expected}`, but this value may be absent (`{found}`)"),
                "give a default with `?? value`, or move this step inside the same `when` block"
                    .to_string(),
            )
        } else {
            let help = match (found, expected) {
                // Only a parameter the user can edit can be declared otherwise.
                (Ty::Float, Ty::Int)
                    if what.starts_with("argument")
                        && decl.is_some_and(|(f, _)| !self.world.db.is_std(f)) =>
                {
                    "a Float does not flow into an Int: pass an Int, or declare the parameter as `Float`".to_string()
                }
                (Ty::Float, Ty::Int) => {
                    "a Float does not flow into an Int, and eflow never rounds: pass an Int"
                        .to_string()
                }
                (Ty::Record { name: a, .. }, Ty::Record { name: b, .. }) if a == b => {
                    "the type arguments differ; see the record's declaration".to_string()
                }
                (Ty::Record { .. }, Ty::Record { .. }) => {
                    "records are nominal: a value of one record type never flows into another, even with the same fields".to_string()
                }
                (Ty::Unit, _) => "this step produces nothing: it can only be used in `after`".to_string(),
                _ => format!("pass a value of type `{expected}`"),
            };
            (
                Code::TypeMismatch,
                format!("{what} expects `{expected}`, found `{found}`"),
                help,
            )
        };
        let mut d = cx
            .error(code, value.span, message)
            .with_label(format!("this is `{found}`"))
            .with_help(help);
        if let Some((file, span)) = decl {
            d = d.with_secondary(
                file,
                span,
                format!("`{expected}` is expected because of this"),
            );
        }
        if let TExprKind::Node(i, _) = &value.kind
            && let Some(p) = self.lets.get(*i)
        {
            d = d.with_secondary(
                cx.file,
                p.let_stmt.name.span,
                format!("`{}` is defined here", p.let_stmt.name),
            );
        }
        cx.report(d);
    }

    fn options(&self, let_stmt: &ast::LetStmt, sig: Option<&ItemSig>, fan_out: bool) -> Options {
        let cx = self.cx;
        let mut o = Options::default();
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        let kind = match sig {
            Some(ItemSig::Step(s)) => Some(s.kind),
            _ => None,
        };
        let raises: &[String] = match sig {
            Some(ItemSig::Step(s)) => &s.raises,
            _ => &[],
        };
        for opt in &let_stmt.options {
            let key = match &opt.kind {
                StepOptionKind::Retry(_) => "retry",
                StepOptionKind::Backoff(_) => "backoff",
                StepOptionKind::NonRetryable(_) => "non_retryable",
                StepOptionKind::Timeout(_) => "timeout",
                StepOptionKind::After(_) => "after",
                StepOptionKind::Parallel(_) => "parallel",
            };
            if let Some(prev) = seen.insert(key, opt.span) {
                cx.report(
                    cx.error(
                        Code::DuplicateOption,
                        opt.span,
                        format!("`{key}` is given twice"),
                    )
                    .with_label("given again here")
                    .with_secondary(cx.file, prev, "first given here")
                    .with_help(format!("keep one `{key}`")),
                );
                continue;
            }
            let not_for_kind = |what: &str| {
                if let Some(k @ (StepKind::Approval | StepKind::Wait)) = kind {
                    cx.report(
                        cx.error(
                            Code::InvalidOption,
                            opt.span,
                            format!("`{what}` does not apply to {} steps", k.keyword()),
                        )
                        .with_help(if k == StepKind::Approval {
                            "a person's decision is not retried; use `timeout` to bound how long to wait for it"
                        } else {
                            "a wait step cannot fail; remove this option"
                        }),
                    );
                    return true;
                }
                false
            };
            match &opt.kind {
                StepOptionKind::Retry(n) => {
                    if not_for_kind("retry") {
                        continue;
                    }
                    if n.value < 1 || n.value > 1000 {
                        cx.report(
                            cx.error(
                                Code::InvalidOption,
                                n.span,
                                format!("`retry {}` is out of range", n.value),
                            )
                            .with_label("the total number of attempts, from 1 to 1000")
                            .with_help("`retry 3` means: try at most three times in all"),
                        );
                    } else {
                        o.retry = Some(n.value as u32);
                    }
                }
                StepOptionKind::Backoff(b) => {
                    if not_for_kind("backoff") {
                        continue;
                    }
                    o.backoff = match b {
                        ast::Backoff::Fixed(d) => Some(Backoff::Fixed { delay_ms: d.millis }),
                        ast::Backoff::Exponential { initial, max } => {
                            if initial.invalid || max.invalid {
                                // Reported as E0002 already.
                                None
                            } else if initial.millis == 0 || initial.millis > max.millis {
                                cx.report(
                                    cx.error(
                                        Code::InvalidOption,
                                        opt.span,
                                        "exponential backoff needs 0 < initial delay ≤ maximum delay",
                                    )
                                    .with_help("e.g. `backoff exponential(30s, 1h)`: 30s, 1m, 2m, … up to 1h"),
                                );
                                None
                            } else {
                                Some(Backoff::Exponential {
                                    initial_ms: initial.millis,
                                    max_ms: max.millis,
                                })
                            }
                        }
                    };
                }
                StepOptionKind::NonRetryable(names) => {
                    if not_for_kind("non_retryable") {
                        continue;
                    }
                    for n in names {
                        if n.name == "Timeout" {
                            cx.resolve(n.span, Def::Builtin("Timeout".into()), None);
                        } else if raises.contains(&n.name)
                            && let Some(step) = cx
                                .namespace
                                .get(Self::call_name(let_stmt))
                                .filter(|s| s.kind == SymbolKind::Step)
                        {
                            cx.resolve(
                                n.span,
                                Def::ErrorName {
                                    step: step.def,
                                    name: n.name.clone(),
                                },
                                None,
                            );
                        }
                        if n.name == "Timeout" || raises.contains(&n.name) {
                            o.non_retryable.push(n.name.clone());
                            continue;
                        }
                        let mut candidates: Vec<&str> = raises.iter().map(String::as_str).collect();
                        candidates.push("Timeout");
                        cx.report(
                            cx.error(
                                Code::UnknownError,
                                n.span,
                                format!(
                                    "`{}` does not raise an error named `{}`",
                                    Self::call_name(let_stmt),
                                    n.name
                                ),
                            )
                            .with_label("unknown error name")
                            .with_did_you_mean(&n.name, candidates.iter().copied(), || {
                                if raises.is_empty() {
                                    format!(
                                        "`{}` declares no errors; add `raises {}` to its declaration, or use `Timeout`",
                                        Self::call_name(let_stmt),
                                        n.name
                                    )
                                } else {
                                    format!("its errors are `{}`", candidates.join("`, `"))
                                }
                            }),
                        );
                    }
                }
                StepOptionKind::Timeout(d) => {
                    if d.invalid {
                        // Reported as E0002 already.
                    } else if d.millis == 0 {
                        cx.report(
                            cx.error(
                                Code::InvalidOption,
                                d.span,
                                "a timeout must be longer than zero",
                            )
                            .with_help("write a duration such as `2h`"),
                        );
                    } else {
                        o.timeout_ms = Some(d.millis);
                    }
                }
                StepOptionKind::After(_) => {}
                StepOptionKind::Parallel(n) => {
                    if !fan_out {
                        cx.report(
                            cx.error(
                                Code::InvalidOption,
                                opt.span,
                                "`parallel` applies only to a `for` fan-out",
                            )
                            .with_help("remove it, or fan out with `for x in list join all { … }`"),
                        );
                    } else if n.value < 1 {
                        cx.report(
                            cx.error(Code::InvalidOption, n.span, "`parallel` must be at least 1")
                                .with_help("`parallel 50` runs at most 50 children at once"),
                        );
                    } else {
                        o.parallel = Some(n.value as u64);
                    }
                }
            }
        }
        o
    }

    fn call_name(l: &ast::LetStmt) -> &str {
        match &l.value {
            StepExpr::Call(c) => &c.callee.name,
            StepExpr::ForEach(f) => &f.body.callee.name,
            StepExpr::Repeat(r) => &r.body.callee.name,
        }
    }

    fn availability(&self, node: usize, site: &Site) -> Availability {
        let def = &self.lets[node].guards;
        for (k, g) in def.iter().enumerate() {
            match site.guards.get(k) {
                Some(s) if s == g => continue,
                Some(s) if s.when == g.when => return Availability::Exclusive(*g),
                _ => return Availability::Conditional,
            }
        }
        Availability::Definite
    }

    fn report_exclusive(&self, user: &Ident, used: &Ident, span: Span, g: Guard) {
        let cx = self.cx;
        let (_, _, cond_span) = self.conds[g.when];
        cx.report(
            cx.error(
                Code::Unreachable,
                span,
                format!(
                    "`{user}` can never run: it needs `{used}`, which exists only when the condition is {}, but `{user}` runs only when it is {}",
                    g.branch, !g.branch
                ),
            )
            .with_label(format!("`{used}` is never available here"))
            .with_secondary(cx.file, cond_span, "the condition")
            .with_help(format!("move `{user}` into the same branch as `{used}`")),
        );
    }

    /// Check an expression that may not refer to steps or parameters.
    fn expr_no_refs(&mut self, e: &Expr, expected: &Ty, site: &Site, what: &str) -> TExpr {
        let t = self.expr(e, Some(expected), site);
        let mut nodes = BTreeSet::new();
        t.nodes(&mut nodes);
        let mut params = Vec::new();
        t.params(&mut params);
        if !nodes.is_empty() || !params.is_empty() {
            self.cx.report(
                self.cx
                    .error(
                        Code::InvalidOption,
                        e.span,
                        format!("{what} must be a constant"),
                    )
                    .with_label("refers to a step or parameter")
                    .with_help("write a literal value here"),
            );
            return TExpr::error(e.span);
        }
        t
    }

    fn expr(&mut self, e: &Expr, expected: Option<&Ty>, site: &Site) -> TExpr {
        let cx = self.cx;
        let mk = |kind, ty| TExpr {
            kind,
            ty,
            span: e.span,
        };
        match &e.kind {
            ExprKind::Int(v) => {
                if expected == Some(&Ty::Float) || expected == Some(&Ty::Float.optional()) {
                    mk(TExprKind::Float(*v as f64), Ty::Float)
                } else {
                    mk(TExprKind::Int(*v), Ty::Int)
                }
            }
            ExprKind::Float(v) => mk(TExprKind::Float(*v), Ty::Float),
            ExprKind::Str(s) => mk(TExprKind::Str(s.clone()), Ty::String),
            ExprKind::Bool(b) => mk(TExprKind::Bool(*b), Ty::Bool),
            ExprKind::Duration(d) => mk(TExprKind::Duration(*d), Ty::Duration),
            ExprKind::None => mk(TExprKind::None, Ty::None),
            ExprKind::Error => TExpr::error(e.span),
            ExprKind::List(items) => {
                let elem_expected = match expected.map(Ty::unwrap_optional) {
                    Some(Ty::List(t)) => Some((**t).clone()),
                    _ => None,
                };
                let mut elem: Option<Ty> = elem_expected.clone();
                let mut out = Vec::new();
                for item in items {
                    let t = self.expr(item, elem_expected.as_ref(), site);
                    elem = match &elem {
                        None => Some(t.ty.clone()),
                        Some(prev) => match prev.join(&t.ty) {
                            Some(j) => Some(j),
                            None => {
                                cx.report(
                                    cx.error(
                                        Code::TypeMismatch,
                                        item.span,
                                        format!("list elements must have one type: expected `{prev}`, found `{}`", t.ty),
                                    )
                                    .with_label(format!("this is `{}`", t.ty))
                                    .with_help("make every element the same type"),
                                );
                                Some(prev.clone())
                            }
                        },
                    };
                    out.push(t);
                }
                let ty = match elem {
                    Some(t) => Ty::List(Box::new(t)),
                    // An empty list with nothing to say what it holds.
                    None => Ty::List(Box::new(Ty::Error)),
                };
                mk(TExprKind::List(out), ty)
            }
            ExprKind::Map(entries) => {
                let (kx, vx) = match expected.map(Ty::unwrap_optional) {
                    Some(Ty::Map(k, v)) => (Some((**k).clone()), Some((**v).clone())),
                    _ => (None, None),
                };
                let mut kt = kx.clone();
                let mut vt = vx.clone();
                let mut out = Vec::new();
                for (k, v) in entries {
                    let tk = self.expr(k, kx.as_ref(), site);
                    let tv = self.expr(v, vx.as_ref(), site);
                    for (slot, t, what) in [(&mut kt, &tk, "key"), (&mut vt, &tv, "value")] {
                        *slot = match slot.take() {
                            None => Some(t.ty.clone()),
                            Some(prev) => Some(prev.join(&t.ty).unwrap_or_else(|| {
                                cx.report(
                                    cx.error(
                                        Code::TypeMismatch,
                                        t.span,
                                        format!("map {what}s must have one type: expected `{prev}`, found `{}`", t.ty),
                                    )
                                    .with_label(format!("this is `{}`", t.ty)),
                                );
                                prev
                            })),
                        };
                    }
                    out.push((tk, tv));
                }
                let k = kt.unwrap_or(Ty::String);
                if !matches!(k, Ty::String | Ty::Int | Ty::Enum { .. } | Ty::Error) {
                    cx.report(
                        cx.error(
                            Code::InvalidMapKey,
                            e.span,
                            format!("`{k}` cannot be a map key"),
                        )
                        .with_help("map keys must be String, Int or an enum"),
                    );
                }
                mk(
                    TExprKind::Map(out),
                    Ty::Map(Box::new(k), Box::new(vt.unwrap_or(Ty::Error))),
                )
            }
            ExprKind::Record { name, fields } => {
                let t = self.record_lit(e, name, fields, expected, site);
                self.resolve_record_lit(name, fields, &t.ty);
                t
            }
            ExprKind::Unary { op, expr } => {
                let inner = self.expr(expr, None, site);
                match op {
                    UnaryOp::Not => {
                        if !inner.ty.flows_into(&Ty::Bool) {
                            self.bad_operand("not", &inner, "a Bool");
                        }
                        mk(TExprKind::Not(Box::new(inner)), Ty::Bool)
                    }
                    UnaryOp::Neg => {
                        let ty = inner.ty.clone();
                        if !matches!(ty, Ty::Int | Ty::Float | Ty::Error) {
                            self.bad_operand("-", &inner, "an Int or a Float");
                        }
                        mk(TExprKind::Neg(Box::new(inner)), ty)
                    }
                }
            }
            ExprKind::Binary { op, lhs, rhs } => self.binary(e, *op, lhs, rhs, expected, site),
            ExprKind::Path(segments) => {
                let refs = self.local_refs.len();
                let t = self.path(e, segments, site);
                if let Some(r) = self.local_refs.get_mut(refs) {
                    r.ty = t.ty.clone();
                }
                t
            }
        }
    }

    fn bad_operand(&self, op: &str, operand: &TExpr, wanted: &str) {
        let cx = self.cx;
        let mut d = cx
            .error(
                Code::InvalidOperands,
                operand.span,
                format!("`{op}` needs {wanted}, found `{}`", operand.ty),
            )
            .with_label(format!("this is `{}`", operand.ty));
        if operand.ty.is_optional() {
            d.code = Code::MaybeAbsent;
            d.help = Some("the value may be absent: give a default with `?? value`".into());
        }
        cx.report(d);
    }

    fn binary(
        &mut self,
        e: &Expr,
        op: BinOp,
        lhs: &Expr,
        rhs: &Expr,
        expected: Option<&Ty>,
        site: &Site,
    ) -> TExpr {
        let cx = self.cx;
        let l = self.expr(lhs, None, site);
        match op {
            BinOp::And | BinOp::Or => {
                // The right side is evaluated only when the left is true (`and`)
                // or false (`or`), so it may use what that proves.
                let mut inner = site.clone();
                narrowed_by(lhs, op == BinOp::And, &mut inner.narrowed);
                let r = self.expr(rhs, Some(&Ty::Bool), &inner);
                for side in [&l, &r] {
                    if !side.ty.flows_into(&Ty::Bool) {
                        self.bad_operand(op.symbol(), side, "Bool operands");
                    }
                }
                self.bin(e, op, l, r, Ty::Bool)
            }
            BinOp::Coalesce => {
                if let Some(d) = self.coalesce_precedence(e, lhs, rhs, &l, site) {
                    cx.report(d);
                    return TExpr::error(e.span);
                }
                let inner = match &l.ty {
                    Ty::Optional(t) => (**t).clone(),
                    Ty::None => expected.cloned().unwrap_or(Ty::Error),
                    Ty::Error => Ty::Error,
                    other => {
                        cx.report(
                            cx.error(
                                Code::InvalidOperands,
                                lhs.span,
                                format!(
                                    "the left side of `??` is `{other}`, which is never absent"
                                ),
                            )
                            .with_label("never absent")
                            .with_help("remove `?? …`: the default would never be used"),
                        );
                        other.clone()
                    }
                };
                let r = self.expr(rhs, Some(&inner), site);
                let ty = if r.ty.flows_into(&inner) {
                    if r.ty.is_optional() {
                        inner.optional()
                    } else {
                        inner
                    }
                } else if let Some(j) = inner.join(&r.ty) {
                    j
                } else {
                    self.mismatch(&r, &inner, "the default of `??`", None);
                    inner
                };
                self.bin(e, op, l, r, ty)
            }
            _ => {
                let r = self.expr(rhs, Some(&l.ty), site);
                match op {
                    BinOp::Eq | BinOp::Ne => {
                        if l.ty.join(&r.ty).is_none() {
                            cx.report(
                                cx.error(
                                    Code::InvalidOperands,
                                    e.span,
                                    format!("cannot compare `{}` with `{}`", l.ty, r.ty),
                                )
                                .with_label("these are never equal")
                                .with_help("compare values of the same type"),
                            );
                        }
                    }
                    _ => {
                        let ordered = |t: &Ty| {
                            matches!(
                                t,
                                Ty::Int | Ty::Float | Ty::Duration | Ty::Timestamp | Ty::Error
                            )
                        };
                        let numeric = |t: &Ty| matches!(t, Ty::Int | Ty::Float);
                        for side in [&l, &r] {
                            if !ordered(&side.ty) {
                                self.bad_operand(
                                    op.symbol(),
                                    side,
                                    "numbers, durations or timestamps",
                                );
                            }
                        }
                        if ordered(&l.ty)
                            && ordered(&r.ty)
                            && l.ty != r.ty
                            && !(numeric(&l.ty) && numeric(&r.ty))
                            && l.ty != Ty::Error
                            && r.ty != Ty::Error
                        {
                            cx.report(
                                cx.error(
                                    Code::InvalidOperands,
                                    e.span,
                                    format!("cannot compare `{}` with `{}`", l.ty, r.ty),
                                )
                                .with_help("compare values of the same type"),
                            );
                        }
                    }
                }
                self.bin(e, op, l, r, Ty::Bool)
            }
        }
    }

    /// `a ?? b >= c` reads as `a ?? (b >= c)`, since `??` binds loosest: when
    /// that cannot be meant (`a` is not an optional `Bool`), say so, with the
    /// parenthesised form as the fix, instead of two confusing type errors.
    fn coalesce_precedence(
        &mut self,
        e: &Expr,
        lhs: &Expr,
        rhs: &Expr,
        l: &TExpr,
        site: &Site,
    ) -> Option<crate::diagnostics::Diagnostic> {
        // The operand `b` that was meant as the fallback: the leftmost of the
        // right side, and the operator right after it.
        let (mut op, mut inner) = match &rhs.kind {
            ExprKind::Binary { op, lhs, .. } => (*op, &**lhs),
            _ => return None,
        };
        while let ExprKind::Binary { op: o, lhs, .. } = &inner.kind {
            (op, inner) = (*o, &**lhs);
        }
        if matches!(op, BinOp::Coalesce)
            || matches!(l.ty.unwrap_optional(), Ty::Bool | Ty::Error)
            || !matches!(l.ty, Ty::Optional(_))
        {
            return None;
        }
        // Still check the right side, for its names and their own mistakes.
        self.expr(rhs, None, site);
        let op = op.symbol();
        let cx = self.cx;
        let file = cx.file;
        Some(
            cx.error(
                Code::TypeMismatch,
                e.span,
                format!(
                    "`??` binds more loosely than `{op}`: this reads as `a ?? (b {op} …)`, a fallback of type `Bool` for a `{}`",
                    l.ty
                ),
            )
            .with_label(format!("the fallback here is the whole `… {op} …`"))
            .with_help(format!(
                "put the fallback in parentheses: `(a ?? b) {op} c`"
            ))
            .with_fix(Fix {
                title: format!("Put `??` in parentheses before `{op}`"),
                edits: vec![
                    crate::diagnostics::Edit {
                        file,
                        span: Span {
                            start: lhs.span.start,
                            end: lhs.span.start,
                        },
                        text: "(".into(),
                    },
                    crate::diagnostics::Edit {
                        file,
                        span: Span {
                            start: inner.span.end,
                            end: inner.span.end,
                        },
                        text: ")".into(),
                    },
                ],
                preferred: true,
            }),
        )
    }

    fn bin(&self, e: &Expr, op: BinOp, l: TExpr, r: TExpr, ty: Ty) -> TExpr {
        TExpr {
            kind: TExprKind::Binary(op, Box::new(l), Box::new(r)),
            ty,
            span: e.span,
        }
    }

    fn record_lit(
        &mut self,
        e: &Expr,
        name: &Ident,
        fields: &[ast::FieldInit],
        expected: Option<&Ty>,
        site: &Site,
    ) -> TExpr {
        let cx = self.cx;
        let te = ast::TypeExpr {
            kind: ast::TypeExprKind::Named {
                name: name.clone(),
                args: Vec::new(),
            },
            span: name.span,
        };
        // Resolve the name without type arguments; generic records get theirs from
        // the expected type or the fields.
        let (def, rname) = match cx.lookup(&name.name).map(|s| (s.kind, s.def)) {
            Some((SymbolKind::Record, def)) => match self.world.sig(def) {
                ItemSig::Record(r) => (def, r.name.clone()),
                _ => return TExpr::error(e.span),
            },
            Some((SymbolKind::Alias, _)) => match self.types.resolve(&te, &[]) {
                Ty::Record { def, name, .. } => (def, name),
                other => {
                    if other != Ty::Error {
                        cx.report(
                            cx.error(
                                Code::TypeMismatch,
                                name.span,
                                format!("`{}` is `{other}`, not a record", name),
                            )
                            .with_help("only records are built with `Name { field: value }`"),
                        );
                    }
                    return TExpr::error(e.span);
                }
            },
            _ => {
                // Reports unknown names and non-types.
                self.types.resolve(&te, &[]);
                for f in fields {
                    self.expr(&f.value, None, site);
                }
                return TExpr::error(e.span);
            }
        };
        let ItemSig::Record(sig) = self.world.sig(def) else {
            return TExpr::error(e.span);
        };
        let sig = sig.clone();
        let mut map: HashMap<Arc<str>, Ty> = HashMap::new();
        if let Some(Ty::Record { def: d, args, .. }) = expected.map(Ty::unwrap_optional)
            && *d == def
        {
            for (g, a) in sig.generics.iter().zip(args) {
                map.insert(g.clone(), a.clone());
            }
        }
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut out = Vec::new();
        for f in fields {
            if let Some(prev) = seen.insert(&f.name.name, f.name.span) {
                cx.report(
                    cx.error(
                        Code::DuplicateArgument,
                        f.name.span,
                        format!("field `{}` is given twice", f.name),
                    )
                    .with_secondary(cx.file, prev, "first given here")
                    .with_help("remove one of them"),
                );
                continue;
            }
            let Some(field) = sig.field(&f.name.name) else {
                cx.report(
                    cx.error(
                        Code::UnknownField,
                        f.name.span,
                        format!("`{}` has no field `{}`", sig.name, f.name),
                    )
                    .with_label("unknown field")
                    .with_secondary(
                        def.file,
                        self.item_name_span(def),
                        format!("`{}` is defined here", sig.name),
                    )
                    .with_did_you_mean(
                        &f.name.name,
                        sig.fields.iter().map(|x| x.name.as_str()),
                        || {
                            let names: Vec<&str> =
                                sig.fields.iter().map(|x| x.name.as_str()).collect();
                            format!("the fields of `{}` are `{}`", sig.name, names.join("`, `"))
                        },
                    ),
                );
                self.expr(&f.value, None, site);
                continue;
            };
            let expected_ty = field.ty.subst(&map);
            let v = self.expr(
                &f.value,
                if expected_ty.has_params() {
                    None
                } else {
                    Some(&expected_ty)
                },
                site,
            );
            if field.ty.has_params() {
                field.ty.infer(&v.ty, &mut map);
            }
            let t = field.ty.subst(&map);
            if !t.has_params() {
                self.expect(
                    &v,
                    &t,
                    &format!("field `{}` of `{}`", field.name, sig.name),
                    None,
                );
            }
            out.push((field.name.clone(), v));
        }
        // An optional field left out is `none`, written out so that the step
        // receiving the record sees every field.
        for f in &sig.fields {
            if f.ty.is_optional() && !seen.contains_key(f.name.as_str()) {
                out.push((
                    f.name.clone(),
                    TExpr {
                        kind: TExprKind::None,
                        ty: Ty::None,
                        span: Span {
                            start: e.span.end,
                            end: e.span.end,
                        },
                    },
                ));
            }
        }
        let missing: Vec<String> = sig
            .fields
            .iter()
            .filter(|f| !f.ty.is_optional() && !seen.contains_key(f.name.as_str()))
            .map(|f| format!("`{}: {}`", f.name, f.ty))
            .collect();
        if !missing.is_empty() {
            cx.report(
                cx.error(
                    Code::MissingField,
                    name.span,
                    format!(
                        "`{}` is missing field{} {}",
                        sig.name,
                        if missing.len() == 1 { "" } else { "s" },
                        missing.join(", ")
                    ),
                )
                .with_label("built here")
                .with_help("give every field that is not optional (`T?`) a value; an optional field left out is `none`"),
            );
        }
        let args: Vec<Ty> = sig
            .generics
            .iter()
            .map(|g| map.get(g).cloned().unwrap_or(Ty::Error))
            .collect();
        let ty = Ty::Record {
            def,
            name: rname,
            args,
        };
        TExpr {
            kind: TExprKind::Record {
                ty: ty.clone(),
                fields: out,
            },
            ty,
            span: e.span,
        }
    }

    fn item_name_span(&self, def: DefId) -> Span {
        let item = &self.world.ast(def.file).items[def.item as usize];
        match &item.kind {
            ast::ItemKind::Record(r) => r.name.span,
            ast::ItemKind::Enum(r) => r.name.span,
            ast::ItemKind::Alias(r) => r.name.span,
            ast::ItemKind::Step(r) => r.name.span,
            ast::ItemKind::Flow(r) => r.name.span,
            _ => item.span,
        }
    }

    fn path(&mut self, e: &Expr, segments: &[Ident], site: &Site) -> TExpr {
        let cx = self.cx;
        let Some(first) = segments.first() else {
            return TExpr::error(e.span);
        };
        let rest = &segments[1..];
        let name = first.name.as_str();
        let mk = |kind, ty| TExpr {
            kind,
            ty,
            span: e.span,
        };

        if let Some((var, ty)) = site.item
            && var.name == name
        {
            let looped = site
                .node
                .is_some_and(|i| matches!(self.lets[i].let_stmt.value, StepExpr::Repeat(_)));
            let def = if looped {
                Def::LoopVar {
                    file: cx.file,
                    decl: var.span,
                }
            } else {
                Def::ForVar {
                    file: cx.file,
                    decl: var.span,
                }
            };
            self.resolve_path_start(first, def, ty, rest);
            let ty = self.fields(ty.clone(), rest);
            return mk(TExprKind::Item(names(rest)), ty);
        }
        if let Some(p) = self.sig.params.iter().find(|p| p.name == name) {
            // Inside `when p != none`, `p` is shown (hover) as what it is there.
            let here = if rest.is_empty() && self.is_narrowed(site, first, &[]) {
                p.ty.unwrap_optional().clone()
            } else {
                p.ty.clone()
            };
            self.resolve_path_start(
                first,
                Def::Param {
                    owner: self.def,
                    name: name.to_string(),
                },
                &here,
                rest,
            );
            self.used_params.insert(p.name.clone());
            let ty = self.fields_at(p.ty.clone(), first, rest, site);
            return mk(TExprKind::Param(name.to_string(), names(rest)), ty);
        }
        if let Some(&i) = self.names.get(name) {
            self.local_refs.push(LocalRef {
                name: first.clone(),
                rest: rest.to_vec(),
                ty: Ty::Error,
            });
            self.used_nodes.insert(i);
            let base = self.node_types[i].clone();
            let base = match self.availability(i, site) {
                Availability::Definite => {
                    if let Some(w) = site.condition_of
                        && self.lets[i].guards.iter().any(|g| g.when == w)
                    {
                        cx.report(
                            cx.error(
                                Code::ConditionNotAvailable,
                                first.span,
                                format!("this condition uses `{name}`, which runs only after the condition holds"),
                            )
                            .with_label(format!("`{name}` is defined inside this `when`"))
                            .with_secondary(cx.file, self.lets[i].let_stmt.name.span, "defined here")
                            .with_help(format!("move `{name}` out of the `when` block so it runs before the condition")),
                        );
                        return TExpr::error(e.span);
                    } else {
                        base
                    }
                }
                Availability::Conditional => {
                    if let Some(w) = site.condition_of
                        && self.lets[i].guards.iter().any(|g| g.when == w)
                    {
                        cx.report(
                            cx.error(
                                Code::ConditionNotAvailable,
                                first.span,
                                format!("this condition uses `{name}`, which runs only after the condition holds"),
                            )
                            .with_label(format!("`{name}` may not exist when this condition is evaluated"))
                            .with_secondary(cx.file, self.lets[i].let_stmt.name.span, "defined here")
                            .with_help(format!("move `{name}` out of the `when` block so it runs before the condition")),
                        );
                        return TExpr::error(e.span);
                    } else {
                        base.optional()
                    }
                }
                Availability::Exclusive(g) => {
                    let user = self.site_name(site);
                    self.report_exclusive(&user, first, first.span, g);
                    if let Some(n) = site.node {
                        self.unreachable.insert(n);
                    }
                    Ty::Error
                }
            };
            if base == Ty::Unit && !rest.is_empty() {
                cx.report(
                    cx.error(
                        Code::UnknownField,
                        first.span,
                        format!("`{name}` produces nothing"),
                    )
                    .with_help("its step has no output; it can only be used in `after`"),
                );
                return TExpr::error(e.span);
            }
            let ty = self.fields_at(base, first, rest, site);
            return mk(TExprKind::Node(i, names(rest)), ty);
        }
        if name == "run" {
            cx.resolve(first.span, Def::Run, None);
            let Some(field) = rest.first() else {
                cx.report(
                    cx.error(Code::TypeMismatch, first.span, "`run` is not a value on its own")
                        .with_help("use one of its fields: `run.id`, `run.tenant`, `run.flow`, `run.version`, `run.started_at`"),
                );
                return TExpr::error(e.span);
            };
            let Some((_, ty, _)) = RUN_FIELDS.iter().find(|(n, _, _)| *n == field.name) else {
                cx.report(
                    cx.error(
                        Code::UnknownField,
                        field.span,
                        format!("`run` has no field `{}`", field.name),
                    )
                    .with_label("unknown field")
                    .with_did_you_mean(
                        &field.name,
                        RUN_FIELDS.iter().map(|(n, _, _)| *n),
                        || {
                            "its fields are `id`, `tenant`, `flow`, `version`, `started_at`"
                                .to_string()
                        },
                    ),
                );
                return TExpr::error(e.span);
            };
            cx.resolve(
                field.span,
                Def::RunField(field.name.clone()),
                Some(ty.clone()),
            );
            self.resolve_fields(ty.clone(), &rest[1..]);
            let ty = self.fields(ty.clone(), &rest[1..]);
            return mk(TExprKind::Run(field.name.clone()), ty);
        }
        if let Some(sym) = cx.lookup(name) {
            cx.resolve(first.span, Def::Item(sym.def), None);
            if sym.kind == SymbolKind::Enum
                && let ItemSig::Enum(en) = self.world.sig(sym.def)
            {
                let Some(variant) = rest.first() else {
                    cx.report(
                        cx.error(
                            Code::TypeMismatch,
                            first.span,
                            format!("`{name}` is an enum type, not a value"),
                        )
                        .with_help(format!(
                            "pick one of its values: `{name}.{}`",
                            en.variants.first().map(String::as_str).unwrap_or("…")
                        )),
                    );
                    return TExpr::error(e.span);
                };
                if !en.variants.contains(&variant.name) {
                    cx.report(
                        cx.error(
                            Code::UnknownVariant,
                            variant.span,
                            format!("`{name}` has no value `{}`", variant.name),
                        )
                        .with_label("unknown value")
                        .with_did_you_mean(
                            &variant.name,
                            en.variants.iter().map(String::as_str),
                            || format!("its values are `{}`", en.variants.join("`, `")),
                        ),
                    );
                    return TExpr::error(e.span);
                }
                cx.resolve(
                    variant.span,
                    Def::Variant {
                        en: sym.def,
                        name: variant.name.clone(),
                    },
                    Some(Ty::Enum {
                        def: sym.def,
                        name: en.name.clone(),
                    }),
                );
                if rest.len() > 1 {
                    cx.report(
                        cx.error(
                            Code::UnknownField,
                            rest[1].span,
                            format!("`{name}.{}` has no fields", variant.name),
                        )
                        .with_help("enum values have no fields"),
                    );
                }
                return mk(
                    TExprKind::Variant {
                        enum_name: en.name.clone(),
                        variant: variant.name.clone(),
                    },
                    Ty::Enum {
                        def: sym.def,
                        name: en.name.clone(),
                    },
                );
            }
            cx.report(
                cx.error(
                    Code::UnknownName,
                    first.span,
                    format!("`{name}` is a {}, not a value", sym.kind.describe()),
                )
                .with_label("used as a value here")
                .with_help(match sym.kind {
                    SymbolKind::Step | SymbolKind::Flow => {
                        format!("call it in a `let`: `let x = {name}(…)`, then use `x`")
                    }
                    SymbolKind::Record => format!("build a value with `{name} {{ field: value }}`"),
                    _ => "use a value of this type instead".to_string(),
                }),
            );
            return TExpr::error(e.span);
        }
        let mut candidates: Vec<&str> = self.sig.params.iter().map(|p| p.name.as_str()).collect();
        candidates.extend(self.names.keys().copied());
        if let Some((var, _)) = site.item {
            candidates.push(&var.name);
        }
        candidates.push("run");
        if self.broken {
            // Most likely defined by the statement that failed to parse.
            return TExpr::error(e.span);
        }
        cx.report(
            cx.error(
                Code::UnknownName,
                first.span,
                format!("unknown name `{name}`"),
            )
            .with_label("not defined in this flow")
            .with_did_you_mean(name, candidates.iter().copied(), || {
                "values are flow parameters, names defined with `let`, and `run`".to_string()
            }),
        );
        TExpr::error(e.span)
    }

    /// Record the first name of a path to a value declared as `declared`: the
    /// value's own type when the path is just the name, else the type its fields
    /// are read from.
    fn resolve_path_start(&self, first: &Ident, def: Def, declared: &Ty, rest: &[Ident]) {
        let ty = if rest.is_empty() {
            declared.clone()
        } else {
            declared.unwrap_optional().clone()
        };
        self.cx.resolve(first.span, def, Some(ty.clone()));
        self.resolve_fields(ty, rest);
    }

    /// Record each `.field` of a path read from a value of type `ty`, as far as
    /// the fields exist.
    fn resolve_fields(&self, mut ty: Ty, rest: &[Ident]) {
        for f in rest {
            let Ty::Record { def, args, .. } = ty.unwrap_optional() else {
                return;
            };
            let ItemSig::Record(sig) = self.world.sig(*def) else {
                return;
            };
            let Some(next) = sig.field_type(&f.name, args) else {
                return;
            };
            self.cx.resolve(
                f.span,
                Def::Field {
                    record: *def,
                    name: f.name.clone(),
                },
                Some(next.clone()),
            );
            ty = next;
        }
    }

    /// Record a record literal's name and fields, once its type is known.
    fn resolve_record_lit(&self, name: &Ident, fields: &[ast::FieldInit], ty: &Ty) {
        let cx = self.cx;
        let sym = cx.namespace.get(&name.name);
        if let Some(s) = sym {
            cx.resolve(name.span, Def::Item(s.def), Some(ty.clone()));
        }
        let record = match ty {
            Ty::Record { def, .. } => Some(*def),
            _ => sym.filter(|s| s.kind == SymbolKind::Record).map(|s| s.def),
        };
        let Some(record) = record else {
            return;
        };
        let ItemSig::Record(sig) = self.world.sig(record) else {
            return;
        };
        for f in fields {
            let Some(declared) = sig.field(&f.name.name) else {
                continue;
            };
            let field_ty = match ty {
                Ty::Record { def, args, .. } if *def == record => {
                    sig.field_type(&f.name.name, args)
                }
                _ => None,
            };
            cx.resolve(
                f.name.span,
                Def::Field {
                    record,
                    name: f.name.name.clone(),
                },
                Some(field_ty.unwrap_or_else(|| declared.ty.clone())),
            );
        }
    }

    fn site_name(&self, site: &Site) -> Ident {
        match site.node {
            Some(i) => self.lets[i].let_stmt.name.clone(),
            None => Ident {
                name: "this value".to_string(),
                span: Span::default(),
            },
        }
    }

    /// Whether the path `first.rest…` is known not to be `none` at `site`: a
    /// `when` around it, or the left side of its `and`, tested it with `!= none`.
    fn is_narrowed(&self, site: &Site, first: &Ident, rest: &[Ident]) -> bool {
        let same = |p: &Vec<String>| {
            p.len() == rest.len() + 1
                && p[0] == first.name
                && p[1..].iter().zip(rest).all(|(a, b)| *a == b.name)
        };
        site.narrowed.iter().any(same)
            || site
                .guards
                .iter()
                .any(|g| self.narrows[g.when][usize::from(g.branch)].iter().any(same))
    }

    /// The type of the path `first.rest…` to a value of type `ty`, where every
    /// prefix of it tested with `!= none` around `site` is not optional.
    fn fields_at(&self, ty: Ty, first: &Ident, rest: &[Ident], site: &Site) -> Ty {
        self.fields_narrowed(ty, rest, &|k| self.is_narrowed(site, first, &rest[..k]))
    }

    /// The type after following `.field` accesses.
    fn fields(&self, ty: Ty, rest: &[Ident]) -> Ty {
        self.fields_narrowed(ty, rest, &|_| false)
    }

    /// The type after following `.field` accesses, where `narrowed(k)` says that
    /// the value read after `k` of them is known not to be `none`.
    fn fields_narrowed(&self, mut ty: Ty, rest: &[Ident], narrowed: &dyn Fn(usize) -> bool) -> Ty {
        let cx = self.cx;
        for (k, f) in rest.iter().enumerate() {
            if narrowed(k) {
                ty = ty.unwrap_optional().clone();
            }
            ty = match &ty {
                Ty::Error => return Ty::Error,
                Ty::Record { def, args, name } => {
                    let ItemSig::Record(sig) = self.world.sig(*def) else {
                        return Ty::Error;
                    };
                    let Some(field) = sig.field(&f.name) else {
                        cx.report(
                            cx.error(
                                Code::UnknownField,
                                f.span,
                                format!("`{name}` has no field `{}`", f.name),
                            )
                            .with_label("unknown field")
                            .with_secondary(
                                def.file,
                                self.item_name_span(*def),
                                format!("`{name}` is defined here"),
                            )
                            .with_did_you_mean(
                                &f.name,
                                sig.fields.iter().map(|x| x.name.as_str()),
                                || {
                                    let names: Vec<&str> =
                                        sig.fields.iter().map(|x| x.name.as_str()).collect();
                                    format!("the fields of `{name}` are `{}`", names.join("`, `"))
                                },
                            ),
                        );
                        return Ty::Error;
                    };
                    field.ty.subst(&sig.instantiate(args))
                }
                Ty::Optional(_) => {
                    let prefix: Vec<&str> = rest[..k].iter().map(|i| i.name.as_str()).collect();
                    cx.report(
                        cx.error(
                            Code::MaybeAbsent,
                            f.span,
                            format!("cannot read `.{}` of a value that may be absent (`{ty}`)", f.name),
                        )
                        .with_label(format!("the value before `.{}` may be absent", f.name))
                        .with_help(if prefix.is_empty() {
                            "use the value inside the `when` block that produces it, or check it first with `when x != none`".to_string()
                        } else {
                            format!("`{}` is optional; use it where it is known to exist", prefix.join("."))
                        }),
                    );
                    return Ty::Error;
                }
                other => {
                    cx.report(
                        cx.error(
                            Code::UnknownField,
                            f.span,
                            format!("`{other}` has no fields"),
                        )
                        .with_label(format!("`.{}` on a `{other}`", f.name))
                        .with_help("only records have fields"),
                    );
                    return Ty::Error;
                }
            };
        }
        if narrowed(rest.len()) {
            ty = ty.unwrap_optional().clone();
        }
        ty
    }

    fn schedule(&mut self, s: &ast::Schedule, params: &[ast::Param]) -> Option<CheckedSchedule> {
        let cx = self.cx;
        let mut ok = true;
        let mut timezone = "UTC".to_string();
        let mut overlap = "skip".to_string();
        let mut catchup = "once".to_string();
        let mut within = None;
        let mut jitter = None;
        let mut input = Vec::new();
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        for c in &s.clauses {
            let key = match &c.kind {
                ast::ScheduleClauseKind::Timezone(_) => "timezone",
                ast::ScheduleClauseKind::Overlap(_) => "overlap",
                ast::ScheduleClauseKind::Catchup { .. } => "catchup",
                ast::ScheduleClauseKind::Jitter(_) => "jitter",
                ast::ScheduleClauseKind::Input(_) => "input",
            };
            if let Some(prev) = seen.insert(key, c.span) {
                cx.report(
                    cx.error(
                        Code::DuplicateOption,
                        c.span,
                        format!("`{key}` is given twice"),
                    )
                    .with_secondary(cx.file, prev, "first given here")
                    .with_help(format!("keep one `{key}`")),
                );
                ok = false;
                continue;
            }
            match &c.kind {
                ast::ScheduleClauseKind::Timezone(tz) => {
                    match eflow_ir::schedule::parse_timezone(&tz.value) {
                        Ok(zone) => {
                            if let Some(why) = eflow_ir::schedule::zone_warning(zone) {
                                let mut d = cx
                                    .error(
                                        Code::LegacyTimezone,
                                        tz.span,
                                        format!("`{}` is not a place's time zone", tz.value),
                                    )
                                    .with_label("a fixed offset or a legacy name")
                                    .with_help(why);
                                // The place the help names, written in.
                                if let Some(place) = eflow_ir::schedule::place_for(zone) {
                                    let file = d.primary.file;
                                    d = d.with_fix(Fix::edit(
                                        format!("Change `{}` to `{place}`", tz.value),
                                        file,
                                        tz.span,
                                        format!("\"{place}\""),
                                    ));
                                }
                                cx.report(d);
                            }
                            timezone = tz.value.clone();
                        }
                        Err(help) => {
                            let mut d = cx
                                .error(
                                    Code::UnknownTimezone,
                                    tz.span,
                                    format!("unknown time zone `{}`", tz.value),
                                )
                                .with_label("not an IANA time zone name")
                                .with_help(help);
                            // The zone the help names, written in.
                            if let Some(zone) = eflow_ir::schedule::timezone_suggestion(&tz.value) {
                                let file = d.primary.file;
                                d = d.with_fix(Fix::edit(
                                    format!("Change `{}` to `{zone}`", tz.value),
                                    file,
                                    tz.span,
                                    format!("\"{zone}\""),
                                ));
                            }
                            cx.report(d);
                            ok = false;
                        }
                    }
                }
                ast::ScheduleClauseKind::Overlap(id) => {
                    if let Some(v) =
                        self.one_of(id, "overlap", eflow_ir::schedule::OVERLAP_POLICIES)
                    {
                        overlap = v;
                    } else {
                        ok = false;
                    }
                }
                ast::ScheduleClauseKind::Catchup { policy, within: w } => {
                    if let Some(v) =
                        self.one_of(policy, "catchup", eflow_ir::schedule::CATCHUP_POLICIES)
                    {
                        match (v.as_str(), w) {
                            ("all", Some(d)) if d.millis > 0 => within = Some(d.millis),
                            ("all", _) => {
                                cx.report(
                                    cx.error(
                                        Code::InvalidOption,
                                        c.span,
                                        "`catchup all` needs a window",
                                    )
                                    .with_help(
                                        "say how far back to catch up: `catchup all within 7d`",
                                    ),
                                );
                                ok = false;
                            }
                            (_, Some(d)) => {
                                cx.report(
                                    cx.error(Code::InvalidOption, d.span, format!("`within` applies only to `catchup all`, not `catchup {v}`"))
                                        .with_help("remove `within …`"),
                                );
                                ok = false;
                            }
                            _ => {}
                        }
                        catchup = v;
                    } else {
                        ok = false;
                    }
                }
                ast::ScheduleClauseKind::Jitter(d) => jitter = Some(d.millis),
                ast::ScheduleClauseKind::Input(args) => {
                    let site = Site {
                        guards: &[],
                        condition_of: None,
                        item: None,
                        node: None,
                        narrowed: Vec::new(),
                    };
                    let mut given: HashMap<&str, Span> = HashMap::new();
                    for a in args {
                        if given.insert(&a.name.name, a.name.span).is_some() {
                            cx.report(
                                cx.error(
                                    Code::DuplicateArgument,
                                    a.name.span,
                                    format!("input `{}` is given twice", a.name),
                                )
                                .with_help("remove one of them"),
                            );
                            continue;
                        }
                        let Some(p) = self
                            .sig
                            .params
                            .iter()
                            .find(|p| p.name == a.name.name)
                            .cloned()
                        else {
                            cx.report(
                                cx.error(
                                    Code::UnknownArgument,
                                    a.name.span,
                                    format!("the flow has no parameter `{}`", a.name),
                                )
                                .with_label("unknown parameter")
                                .with_did_you_mean(
                                    &a.name.name,
                                    self.sig.params.iter().map(|p| p.name.as_str()),
                                    || {
                                        "`input(…)` gives values to the flow's parameters"
                                            .to_string()
                                    },
                                ),
                            );
                            continue;
                        };
                        cx.resolve(
                            a.name.span,
                            Def::Param {
                                owner: self.def,
                                name: p.name.clone(),
                            },
                            Some(p.ty.clone()),
                        );
                        let v = self.expr_no_refs(&a.value, &p.ty, &site, "a schedule input");
                        self.expect(&v, &p.ty, &format!("parameter `{}`", p.name), None);
                        input.push((a.name.name.clone(), v));
                    }
                }
            }
        }
        match eflow_ir::schedule::check_cron(&s.cron.value) {
            Ok(_) => {}
            Err(msg) => {
                cx.report(
                    cx.error(Code::InvalidCron, s.cron.span, format!("invalid cron expression: {msg}"))
                        .with_label("in this expression")
                        .with_help("5 fields `minute hour day-of-month month day-of-week`, optionally seconds first and a year last; e.g. `0 3 * * MON`, or a name such as `@daily`"),
                );
                ok = false;
            }
        }
        // Scheduled runs need a value for every parameter.
        let given: Vec<&str> = input.iter().map(|(n, _)| n.as_str()).collect();
        let missing: Vec<&ast::Param> = params
            .iter()
            .filter(|p| p.default.is_none() && !given.contains(&p.name.name.as_str()))
            .filter(|p| {
                self.sig
                    .params
                    .iter()
                    .any(|q| q.name == p.name.name && !q.ty.is_optional())
            })
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|p| format!("{}: …", p.name)).collect();
            cx.report(
                cx.error(
                    Code::MissingArgument,
                    s.cron.span,
                    format!(
                        "scheduled runs need a value for parameter{} `{}`",
                        if missing.len() == 1 { "" } else { "s" },
                        missing
                            .iter()
                            .map(|p| p.name.name.as_str())
                            .collect::<Vec<_>>()
                            .join("`, `")
                    ),
                )
                .with_secondary(cx.file, missing[0].name.span, "no default here")
                .with_help(format!(
                    "add `input({})` to the schedule, or give the parameter a default",
                    names.join(", ")
                )),
            );
            ok = false;
        }
        ok.then(|| CheckedSchedule {
            cron: s.cron.value.clone(),
            timezone,
            overlap,
            catchup,
            catchup_within_ms: within,
            jitter_ms: jitter,
            input,
            span: s.cron.span,
        })
    }

    fn one_of(&self, id: &Ident, what: &str, allowed: &[&str]) -> Option<String> {
        if allowed.contains(&id.name.as_str()) {
            return Some(id.name.clone());
        }
        let cx = self.cx;
        cx.report(
            cx.error(
                Code::InvalidOption,
                id.span,
                format!("unknown {what} policy `{}`", id.name),
            )
            .with_label(format!("one of `{}`", allowed.join("`, `")))
            .with_did_you_mean(&id.name, allowed.iter().copied(), || {
                format!("use one of `{}`", allowed.join("`, `"))
            }),
        );
        None
    }
}

/// The paths `cond` proves are not `none` when it is `holds`: `x != none` when
/// true, `x == none` when false, both sides of an `and` when true and of an `or`
/// when false, and `not` turns it around.
fn narrowed_by(cond: &Expr, holds: bool, out: &mut Vec<Vec<String>>) {
    match &cond.kind {
        ExprKind::Binary { op, lhs, rhs } => match (op, holds) {
            (BinOp::And, true) | (BinOp::Or, false) => {
                narrowed_by(lhs, holds, out);
                narrowed_by(rhs, holds, out);
            }
            (BinOp::Ne, true) | (BinOp::Eq, false) => {
                let path = match (&lhs.kind, &rhs.kind) {
                    (ExprKind::Path(p), ExprKind::None) | (ExprKind::None, ExprKind::Path(p)) => p,
                    _ => return,
                };
                out.push(path.iter().map(|i| i.name.clone()).collect());
            }
            _ => {}
        },
        ExprKind::Unary {
            op: UnaryOp::Not,
            expr,
        } => narrowed_by(expr, !holds, out),
        _ => {}
    }
}

/// Whether `ty` has a part that is not known (an empty `[]`, an error).
fn has_error(ty: &Ty) -> bool {
    match ty {
        Ty::Error | Ty::None => true,
        Ty::List(t) | Ty::Optional(t) => has_error(t),
        Ty::Map(k, v) => has_error(k) || has_error(v),
        Ty::Record { args, .. } => args.iter().any(has_error),
        _ => false,
    }
}

fn names(ids: &[Ident]) -> Vec<String> {
    ids.iter().map(|i| i.name.clone()).collect()
}

/// The type of a fan-out's value given its children's output type.
pub fn join_type(policy: &JoinPolicy, child: Ty) -> Ty {
    match (policy, child) {
        (_, Ty::Error) => Ty::Error,
        (JoinPolicy::Any, t) => t,
        (JoinPolicy::All | JoinPolicy::AtLeast(_), Ty::Unit) => Ty::Unit,
        (JoinPolicy::All | JoinPolicy::AtLeast(_), t) => Ty::List(Box::new(t)),
    }
}
