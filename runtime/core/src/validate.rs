//! Validation of a deployed bundle: the runtime never trusts the IR a client sends.
//!
//! The compiler already checked all of this, but a bundle can be hand-edited,
//! produced by another version of `eflowc` or hostile. Everything `apply` relies
//! on is checked here once, at deploy time, so that `apply` can look things up
//! without re-checking and without panicking. Errors name the place with a path
//! (`flows[2].nodes[5].inputs.data`) and say what to do.

use std::collections::{HashMap, HashSet};

use eflow_ir::connector::Connector;
use eflow_ir::{
    Backoff, Bundle, Call, Expr, Flow, IR_VERSION, Join, MAX_REPEAT, Node, Repeat, StepKind,
};

use crate::state::DEFAULT_STATE_LIMIT;
use crate::value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Limits the core enforces on every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A step output that would make the encoded state larger (besides the
    /// run's input, and values kept by reference) fails the step with
    /// `StateTooLarge`.
    pub state_bytes: usize,
    /// A step output larger than this fails the step with `ValueTooLarge`
    /// before any log holds it.
    pub value_bytes: usize,
}

/// The default of [`Limits::value_bytes`]: 64 MiB.
pub const DEFAULT_VALUE_LIMIT: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            state_bytes: DEFAULT_STATE_LIMIT,
            value_bytes: DEFAULT_VALUE_LIMIT,
        }
    }
}

/// A bundle that passed validation, with the lookups `apply` needs.
#[derive(Debug, Clone)]
pub struct ValidatedBundle {
    bundle: Bundle,
    flows: HashMap<String, FlowIndex>,
    pub limits: Limits,
}

/// Lookups for one flow, computed once at deploy time.
#[derive(Debug, Clone)]
pub struct FlowIndex {
    /// Position in the bundle's `flows`.
    pos: usize,
    /// Node id → position in `nodes`.
    pub nodes: HashMap<String, usize>,
    /// `depends_on` as positions.
    pub deps: Vec<Vec<usize>>,
    /// Environment → contract → its binding, typed: parsed here once, so what
    /// carries out a step is never guessed from a string later.
    connectors: HashMap<String, HashMap<String, Connector>>,
}

/// A flow of a validated bundle with its lookups.
#[derive(Debug, Clone, Copy)]
pub struct FlowRef<'a> {
    pub flow: &'a Flow,
    pub index: &'a FlowIndex,
}

impl<'a> FlowRef<'a> {
    /// The connector bound to `contract` in environment `env`.
    pub fn connector(&self, env: &str, contract: &str) -> Option<&'a Connector> {
        self.index.connectors.get(env)?.get(contract)
    }
}

impl ValidatedBundle {
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn flow(&self, name: &str) -> Option<FlowRef<'_>> {
        let index = self.flows.get(name)?;
        let flow = self.bundle.flows.get(index.pos)?;
        Some(FlowRef { flow, index })
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

pub fn validate(bundle: &Bundle) -> Result<ValidatedBundle, Vec<ValidationError>> {
    let mut v = Validator { errors: Vec::new() };
    if bundle.ir_version != IR_VERSION {
        v.err(
            "ir_version",
            format!(
                "this runtime reads IR version {IR_VERSION}, the bundle is version {}: compile it with a matching eflowc",
                bundle.ir_version
            ),
        );
        return Err(v.errors);
    }
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, f) in bundle.flows.iter().enumerate() {
        if by_name.insert(&f.name, i).is_some() {
            v.err(
                format!("flows[{i}].name"),
                format!(
                    "two flows are named `{}`: flows are deployed by name, rename one",
                    f.name
                ),
            );
        }
    }
    let mut flows = HashMap::new();
    for (i, f) in bundle.flows.iter().enumerate() {
        if let Some(index) = v.flow(bundle, &by_name, i, f) {
            flows.insert(f.name.clone(), index);
        }
    }
    v.subflow_cycles(bundle, &by_name);
    if v.errors.is_empty() {
        Ok(ValidatedBundle {
            bundle: bundle.clone(),
            flows,
            limits: Limits::default(),
        })
    } else {
        Err(v.errors)
    }
}

struct Validator {
    errors: Vec<ValidationError>,
}

/// Where an expression is used decides what it may refer to.
struct ExprCtx<'a> {
    flow: &'a Flow,
    nodes: &'a HashMap<String, usize>,
    /// The nodes finished before it is evaluated; `None` means all of them.
    visible: Option<&'a HashSet<usize>>,
    item: bool,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn flow(
        &mut self,
        bundle: &Bundle,
        by_name: &HashMap<&str, usize>,
        fi: usize,
        f: &Flow,
    ) -> Option<FlowIndex> {
        let before = self.errors.len();
        let p = format!("flows[{fi}]");
        if f.hash != f.compute_hash() {
            self.err(
                format!("{p}.hash"),
                format!(
                    "the hash of `{}` does not match its content: the IR was edited after compiling; recompile it with eflowc",
                    f.name
                ),
            );
        }
        if f.timeout_ms == Some(0) {
            self.err(
                format!("{p}.timeout_ms"),
                "a flow timeout must be longer than 0 ms",
            );
        }
        let mut params = HashSet::new();
        for (j, prm) in f.params.iter().enumerate() {
            if !params.insert(prm.name.as_str()) {
                self.err(
                    format!("{p}.params[{j}]"),
                    format!("the parameter `{}` is declared twice", prm.name),
                );
            }
            if let Some(d) = &prm.default
                && let Err(es) = value::check(d, &prm.ty, &f.types, &prm.name)
            {
                for e in es {
                    self.err(
                        format!("{p}.params[{j}].default"),
                        format!("the default does not fit its type: {e}"),
                    );
                }
            }
        }
        for (k, sch) in f.schedules.iter().enumerate() {
            if let Err(e) = crate::schedule::Compiled::new(sch) {
                self.err(format!("{p}.schedules[{k}]"), e);
            }
        }
        let mut nodes = HashMap::new();
        for (j, n) in f.nodes.iter().enumerate() {
            if nodes.insert(n.id.clone(), j).is_some() {
                self.err(
                    format!("{p}.nodes[{j}].id"),
                    format!(
                        "the node id `{}` is used twice: ids must be unique in a flow",
                        n.id
                    ),
                );
            }
        }
        let mut deps = Vec::with_capacity(f.nodes.len());
        for (j, n) in f.nodes.iter().enumerate() {
            let mut d = Vec::new();
            for (k, id) in n.depends_on.iter().enumerate() {
                match nodes.get(id) {
                    Some(&x) if x == j => self.err(
                        format!("{p}.nodes[{j}].depends_on[{k}]"),
                        format!("`{id}` depends on itself"),
                    ),
                    Some(&x) if !d.contains(&x) => d.push(x),
                    Some(_) => {}
                    None => self.err(
                        format!("{p}.nodes[{j}].depends_on[{k}]"),
                        format!(
                            "`{}` depends on `{id}`, which is not a node of `{}`",
                            n.id, f.name
                        ),
                    ),
                }
            }
            deps.push(d);
        }
        let order = self.topo(&p, f, &deps)?;
        // Ancestors in topological order: each node's set is its deps' sets plus the deps.
        let mut ancestors: Vec<HashSet<usize>> = vec![HashSet::new(); f.nodes.len()];
        for &j in &order {
            let mut set = HashSet::new();
            for &d in &deps[j] {
                set.insert(d);
                set.extend(ancestors[d].iter().copied());
            }
            ancestors[j] = set;
        }
        for (j, n) in f.nodes.iter().enumerate() {
            self.node(bundle, by_name, f, &p, j, n, &nodes, &ancestors[j]);
        }
        for (c, cond) in f.conditions.iter().enumerate() {
            let cx = ExprCtx {
                flow: f,
                nodes: &nodes,
                visible: None,
                item: false,
            };
            self.expr(&cx, &format!("{p}.conditions[{c}]"), cond);
        }
        if let Some(r) = &f.result {
            let cx = ExprCtx {
                flow: f,
                nodes: &nodes,
                visible: None,
                item: false,
            };
            self.expr(&cx, &format!("{p}.result"), r);
        }
        if f.output.is_some() && f.result.is_none() {
            self.err(
                format!("{p}.result"),
                "the flow declares an output type but no result expression",
            );
        }
        let connectors = self.bindings(&p, f);
        (self.errors.len() == before).then_some(FlowIndex {
            pos: fi,
            nodes,
            deps,
            connectors,
        })
    }

    /// Every binding parsed into its connector: a name the runtime does not
    /// know is an error here, never a guess, and so is a connector that cannot
    /// carry out the kind of step it is bound to.
    fn bindings(&mut self, p: &str, f: &Flow) -> HashMap<String, HashMap<String, Connector>> {
        let mut out = HashMap::new();
        for (env, bindings) in &f.bindings {
            let mut typed = HashMap::new();
            for (contract, b) in bindings {
                let bp = format!("{p}.bindings.{env}.{contract}");
                let c = match Connector::from_binding(b) {
                    Ok(c) => c,
                    Err(e) => {
                        self.err(bp, e.to_string());
                        continue;
                    }
                };
                if let Some(kind) = f.contracts.get(contract).map(|c| c.kind)
                    && !c.carries_out(kind)
                {
                    self.err(
                        bp,
                        format!(
                            "connector `{}` cannot carry out `{contract}`, {} step: use `{}`",
                            c.name(),
                            kind_word(kind),
                            fitting(kind)
                        ),
                    );
                    continue;
                }
                typed.insert(contract.clone(), c);
            }
            out.insert(env.clone(), typed);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        bundle: &Bundle,
        by_name: &HashMap<&str, usize>,
        f: &Flow,
        p: &str,
        j: usize,
        n: &eflow_ir::Node,
        nodes: &HashMap<String, usize>,
        visible: &HashSet<usize>,
    ) {
        let np = format!("{p}.nodes[{j}]");
        // The parameters the call accepts: (name, required).
        let accepted: Option<Vec<(&str, bool)>> = match &n.call {
            Call::Step { contract, .. } => {
                match f.contracts.get(contract) {
                    Some(c) => {
                        if c.kind == StepKind::Wait
                            && !n.inputs.contains_key("duration")
                            && !n.inputs.contains_key("time")
                        {
                            self.err(format!("{np}.inputs"), format!("the wait step `{contract}` needs a `duration` or a `time` input"));
                        }
                        Some(
                            c.params
                                .iter()
                                .map(|x| (x.name.as_str(), !x.optional))
                                .collect(),
                        )
                    }
                    None => {
                        self.err(format!("{np}.call"), format!("the contract `{contract}` is not in the flow's `contracts`: recompile the bundle"));
                        None
                    }
                }
            }
            Call::Flow { name } => match by_name
                .get(name.as_str())
                .and_then(|&i| bundle.flows.get(i))
            {
                Some(child) => Some(
                    child
                        .params
                        .iter()
                        .map(|x| (x.name.as_str(), x.default.is_none()))
                        .collect(),
                ),
                None => {
                    self.err(format!("{np}.call"), format!("the subflow `{name}` is not in the bundle: compile the bundle with every flow it calls"));
                    None
                }
            },
        };
        if let Some(acc) = accepted {
            for name in n.inputs.keys() {
                if !acc.iter().any(|(a, _)| a == name) {
                    self.err(
                        format!("{np}.inputs.{name}"),
                        format!("`{}` takes no input `{name}`", n.id),
                    );
                }
            }
            for (a, required) in acc {
                if required && !n.inputs.contains_key(a) {
                    self.err(
                        format!("{np}.inputs"),
                        format!("`{}` needs the input `{a}`", n.id),
                    );
                }
            }
        }
        let cx = ExprCtx {
            flow: f,
            nodes,
            visible: Some(visible),
            item: n.fan_out.is_some() || n.repeat.is_some(),
        };
        for (name, e) in &n.inputs {
            self.expr(&cx, &format!("{np}.inputs.{name}"), e);
        }
        for (g, guard) in n.guards.iter().enumerate() {
            match f.conditions.get(guard.condition) {
                Some(cond) => {
                    let cx = ExprCtx { item: false, ..cx };
                    self.expr(&cx, &format!("{np}.guards[{g}]"), cond);
                }
                None => self.err(
                    format!("{np}.guards[{g}].condition"),
                    format!(
                        "there is no condition {} (the flow has {})",
                        guard.condition,
                        f.conditions.len()
                    ),
                ),
            }
        }
        if let Some(fo) = &n.fan_out {
            let over = ExprCtx { item: false, ..cx };
            self.expr(&over, &format!("{np}.fan_out.over"), &fo.over);
            if let Join::AtLeast { k } = &fo.join {
                self.expr(&over, &format!("{np}.fan_out.join.k"), k);
                if let Expr::Literal(v) = k
                    && v.as_i64().is_none_or(|n| n < 1)
                {
                    self.err(
                        format!("{np}.fan_out.join.k"),
                        "`join at_least k` needs k ≥ 1; use `join all` on an empty requirement",
                    );
                }
            }
            if fo.parallel == Some(0) {
                self.err(
                    format!("{np}.fan_out.parallel"),
                    "`parallel` must be at least 1",
                );
            }
        }
        if let Some(r) = &n.repeat {
            self.repeat(&cx, &np, n, r);
        }
        if let Some(r) = &n.retry {
            if r.max_attempts == 0 {
                self.err(
                    format!("{np}.retry.max_attempts"),
                    "`retry N` counts all attempts and needs N ≥ 1",
                );
            }
            if let Backoff::Exponential { initial_ms, max_ms } = r.backoff
                && initial_ms > max_ms
            {
                self.err(
                    format!("{np}.retry.backoff"),
                    "the exponential backoff starts above its maximum: swap the two durations",
                );
            }
        }
        if n.timeout_ms == Some(0) {
            self.err(
                format!("{np}.timeout_ms"),
                "a step timeout must be longer than 0 ms",
            );
        }
    }

    /// A `repeat`: one loop per node, a constant bound in range, an output to
    /// carry from one iteration to the next, and an `until` over what the node
    /// may read and its variable.
    fn repeat(&mut self, cx: &ExprCtx<'_>, np: &str, n: &Node, r: &Repeat) {
        if n.fan_out.is_some() {
            self.err(
                format!("{np}.repeat"),
                format!(
                    "`{}` both fans out and repeats: a node does one or the other",
                    n.id
                ),
            );
        }
        if !(1..=MAX_REPEAT).contains(&r.max) {
            self.err(
                format!("{np}.repeat.max"),
                format!(
                    "a `repeat` takes 1 to {MAX_REPEAT} iterations, not {}",
                    r.max
                ),
            );
        }
        if n.output.is_none() {
            self.err(
                format!("{np}.repeat"),
                format!("`{}` repeats a call without an output: there is nothing to carry to the next iteration", n.id),
            );
        }
        if let Some(u) = &r.until {
            self.expr(cx, &format!("{np}.repeat.until"), u);
        }
    }

    fn expr(&mut self, cx: &ExprCtx<'_>, path: &str, e: &Expr) {
        match e {
            Expr::Literal(_) => {}
            Expr::Param { name, .. } => {
                if !cx.flow.params.iter().any(|p| &p.name == name) {
                    self.err(
                        path,
                        format!("`{name}` is not a parameter of `{}`", cx.flow.name),
                    );
                }
            }
            Expr::Node { id, .. } => {
                match cx.nodes.get(id) {
                    None => self.err(path, format!("`{id}` is not a node of `{}`", cx.flow.name)),
                    Some(x) => {
                        if cx.visible.is_some_and(|v| !v.contains(x)) {
                            self.err(path, format!("uses `{id}` without depending on it: add `{id}` to `depends_on`"));
                        }
                    }
                }
            }
            Expr::Item { .. } => {
                if !cx.item {
                    self.err(
                        path,
                        "the item is only available in the inputs of a fan-out or a `repeat` and in its `until`",
                    );
                }
            }
            Expr::Run { field } => {
                if !matches!(
                    field.as_str(),
                    "id" | "tenant" | "flow" | "version" | "started_at"
                ) {
                    self.err(path, format!("`run` has no field `{field}`; it has id, tenant, flow, version, started_at"));
                }
            }
            Expr::List(xs) => {
                for (i, x) in xs.iter().enumerate() {
                    self.expr(cx, &format!("{path}[{i}]"), x);
                }
            }
            Expr::Map(entries) => {
                for (i, (k, x)) in entries.iter().enumerate() {
                    self.expr(cx, &format!("{path}[{i}].key"), k);
                    self.expr(cx, &format!("{path}[{i}].value"), x);
                }
            }
            Expr::Record { fields, .. } => {
                for (name, x) in fields {
                    self.expr(cx, &format!("{path}.{name}"), x);
                }
            }
            Expr::Not(x) | Expr::Neg(x) => self.expr(cx, path, x),
            Expr::Binary { left, right, .. } => {
                self.expr(cx, path, left);
                self.expr(cx, path, right);
            }
        }
    }

    /// Kahn's algorithm; on a cycle, reports the nodes on it.
    fn topo(&mut self, p: &str, f: &Flow, deps: &[Vec<usize>]) -> Option<Vec<usize>> {
        let n = deps.len();
        let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut dependents = vec![Vec::new(); n];
        for (j, d) in deps.iter().enumerate() {
            for &x in d {
                dependents[x].push(j);
            }
        }
        let mut ready: Vec<usize> = (0..n).filter(|&j| indegree[j] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(j) = ready.pop() {
            order.push(j);
            for &k in &dependents[j] {
                indegree[k] -= 1;
                if indegree[k] == 0 {
                    ready.push(k);
                }
            }
        }
        if order.len() == n {
            return Some(order);
        }
        let stuck: Vec<&str> = (0..n)
            .filter(|&j| indegree[j] > 0)
            .filter_map(|j| f.nodes.get(j).map(|x| x.id.as_str()))
            .collect();
        self.err(
            format!("{p}.nodes"),
            format!(
                "dependency cycle among {}: a step cannot wait for itself",
                stuck.join(", ")
            ),
        );
        None
    }

    /// A subflow that calls itself, directly or not, would never finish.
    fn subflow_cycles(&mut self, bundle: &Bundle, by_name: &HashMap<&str, usize>) {
        let calls: Vec<Vec<usize>> = bundle
            .flows
            .iter()
            .map(|f| {
                f.nodes
                    .iter()
                    .filter_map(|n| match &n.call {
                        Call::Flow { name } => by_name.get(name.as_str()).copied(),
                        Call::Step { .. } => None,
                    })
                    .collect()
            })
            .collect();
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let mut mark = vec![0u8; calls.len()];
        for start in 0..calls.len() {
            if mark[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            mark[start] = 1;
            while let Some(&mut (f, ref mut next)) = stack.last_mut() {
                if let Some(&g) = calls[f].get(*next) {
                    *next += 1;
                    match mark[g] {
                        0 => {
                            mark[g] = 1;
                            stack.push((g, 0));
                        }
                        1 => {
                            let name = bundle.flows.get(g).map(|x| x.name.as_str()).unwrap_or("?");
                            self.err(format!("flows[{g}]"), format!("`{name}` calls itself through its subflows: a run would never finish"));
                            mark[g] = 2;
                        }
                        _ => {}
                    }
                } else {
                    mark[f] = 2;
                    stack.pop();
                }
            }
        }
    }
}

fn kind_word(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Remote => "a remote",
        StepKind::Call => "a call",
        StepKind::Approval => "an approval",
        StepKind::Wait => "a wait",
    }
}

/// The connectors that carry out steps of `kind`, for a message.
fn fitting(kind: StepKind) -> String {
    eflow_ir::connector::CATALOGUE
        .iter()
        .filter(|c| c.kinds.contains(&kind))
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join("` or `")
}
