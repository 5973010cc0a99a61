//! The flow graph: dependency cycles, unreachable and unused steps, and subflows that
//! call themselves.

use std::collections::{BTreeSet, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::check::flow::{Callee, CheckedFlow, TExprKind};
use crate::diagnostics::{Code, Diagnostic};
use crate::source::FileId;
use crate::types::{DefId, Ty};

/// Check one flow's graph.
pub fn check_flow_graph(file: FileId, flow: &CheckedFlow, out: &mut Vec<Diagnostic>) {
    let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(flow.nodes.len(), flow.nodes.len());
    let idx: Vec<NodeIndex> = (0..flow.nodes.len()).map(|i| g.add_node(i)).collect();
    for (i, n) in flow.nodes.iter().enumerate() {
        for &d in &n.deps {
            g.add_edge(idx[d], idx[i], ());
        }
    }
    for scc in tarjan_scc(&g) {
        let self_loop = scc.len() == 1 && flow.nodes[g[scc[0]]].deps.contains(&g[scc[0]]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().map(|&n| g[n]).collect();
        let path = cycle_path(flow, &members);
        let first = &flow.nodes[path[0]];
        let names: Vec<&str> = path
            .iter()
            .chain(path.first())
            .map(|&i| flow.nodes[i].name.as_str())
            .collect();
        let mut d = Diagnostic::new(
            Code::Cycle,
            file,
            first.name_span,
            format!(
                "steps depend on each other in a cycle: {}",
                names.join(" → ")
            ),
        )
        .with_label(format!(
            "`{}` waits for `{}`",
            first.name,
            flow.nodes[*path.last().unwrap_or(&path[0])].name
        ));
        for w in path.windows(2) {
            d = d.with_secondary(
                file,
                flow.nodes[w[1]].name_span,
                format!(
                    "`{}` waits for `{}`",
                    flow.nodes[w[1]].name, flow.nodes[w[0]].name
                ),
            );
        }
        d.help = Some("a flow is a graph without cycles: remove one of these dependencies (an argument, an `after` or a `when` condition)".into());
        out.push(d);
    }

    if flow.broken {
        return;
    }
    for (i, n) in flow.nodes.iter().enumerate() {
        if flow.used_nodes.contains(&i)
            || flow.unreachable.contains(&i)
            || const_false(flow, n)
            || n.name.starts_with('_')
            || matches!(n.output, Ty::Unit | Ty::Error)
        {
            continue;
        }
        out.push(
            Diagnostic::new(
                Code::UnusedOutput,
                file,
                n.name_span,
                format!("the output of `{}` is never used", n.name),
            )
            .with_label(format!("`{}` is `{}`", n.name, n.output))
            .with_help(format!(
                "pass it to a step or return it; if the step runs only for its effect, name it `_{}`",
                n.name
            )),
        );
    }
    for p in &flow.params {
        if !p.name.starts_with('_') && !flow.used_params.contains(&p.name) {
            out.push(
                Diagnostic::new(
                    Code::UnusedParam,
                    file,
                    p.span,
                    format!("parameter `{}` is never used", p.name),
                )
                .with_help(format!(
                    "remove it, or name it `_{}` to keep it in the signature",
                    p.name
                )),
            );
        }
    }

    // A step under a condition that is the constant `false` can never run.
    for n in &flow.nodes {
        for g in &n.guards {
            if let TExprKind::Bool(b) = flow.conds[g.when].expr.kind
                && b != g.branch
            {
                out.push(
                    Diagnostic::new(
                        Code::Unreachable,
                        file,
                        n.name_span,
                        format!("`{}` can never run: its condition is always {}", n.name, b),
                    )
                    .with_secondary(file, flow.conds[g.when].span, "this condition")
                    .with_help("remove the step, or change the condition"),
                );
                break;
            }
        }
    }
}

fn const_false(flow: &CheckedFlow, n: &crate::check::flow::Node) -> bool {
    n.guards
        .iter()
        .any(|g| matches!(flow.conds[g.when].expr.kind, TExprKind::Bool(b) if b != g.branch))
}

/// One cycle through the strongly connected `members`, as node indices in order.
fn cycle_path(flow: &CheckedFlow, members: &BTreeSet<usize>) -> Vec<usize> {
    let Some(&start) = members.iter().next() else {
        return Vec::new();
    };
    // Walk dependencies inside the component until a node repeats.
    let mut path = vec![start];
    let mut pos: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut cur = start;
    loop {
        let Some(&next) = flow.nodes[cur].deps.iter().find(|d| members.contains(d)) else {
            return path;
        };
        if let Some(&p) = pos.get(&next) {
            let mut cycle = path.split_off(p);
            cycle.reverse();
            return cycle;
        }
        pos.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}

/// A flow that calls itself, directly or through other flows, would never end.
/// Reports, for each flow of one module that is on a cycle of calls, its call into
/// the cycle. `calls` maps every flow of the workspace to the flows it calls.
pub fn check_recursion(
    file: FileId,
    flows: &[CheckedFlow],
    calls: &HashMap<DefId, Vec<DefId>>,
    name_of: impl Fn(DefId) -> String,
    out: &mut Vec<Diagnostic>,
) {
    for f in flows {
        let Some(first_calls) = calls.get(&f.def) else {
            continue;
        };
        // Breadth-first from f's callees until f is found again.
        let mut parent: HashMap<DefId, DefId> = HashMap::new();
        let mut queue: std::collections::VecDeque<DefId> = std::collections::VecDeque::new();
        for &c in first_calls {
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(c) {
                e.insert(f.def);
                queue.push_back(c);
            }
        }
        let mut found = None;
        while let Some(cur) = queue.pop_front() {
            if cur == f.def {
                found = Some(cur);
                break;
            }
            for &next in calls.get(&cur).map(Vec::as_slice).unwrap_or(&[]) {
                if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(next) {
                    e.insert(cur);
                    queue.push_back(next);
                }
            }
        }
        if found.is_none() {
            continue;
        }
        // The cycle, from f back to f.
        let mut path = vec![f.def];
        let mut cur = parent[&f.def];
        while cur != f.def && path.len() <= parent.len() {
            path.push(cur);
            cur = parent[&cur];
        }
        path.push(f.def);
        let len = path.len();
        path[1..len - 1].reverse();
        let callee = path.get(1).copied().unwrap_or(f.def);
        let Some(n) = f
            .nodes
            .iter()
            .find(|n| n.call.callee == Callee::Flow(callee))
        else {
            continue;
        };
        let names: Vec<String> = path.iter().map(|d| name_of(*d)).collect();
        out.push(
            Diagnostic::new(
                Code::RecursiveFlow,
                file,
                n.call.callee_span,
                if path.len() == 2 {
                    format!("flow `{}` calls itself", f.name)
                } else {
                    format!("flows call each other in a cycle: {}", names.join(" → "))
                },
            )
            .with_label(format!("`{}` calls `{}` here", f.name, n.call.callee_name))
            .with_help("a run of a subflow must end before its caller does; fan out over a list instead of recursing"),
        );
    }
}
