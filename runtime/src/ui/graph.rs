//! A flow's graph drawn on the server as SVG: a simple layered layout (each
//! step one layer below the deepest step it depends on, each layer ordered
//! by the mean place of its steps' dependencies), computed once per flow
//! version and kept, then coloured per run with each step's status. A
//! fan-out is one node that says how many of its children are done, so a
//! run over a million children draws as fast as one over two.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use eflow_ir::{Call, Flow};

use super::values::escape;
use crate::api::model::StepView;

const NODE_W: u32 = 190;
const NODE_H: u32 = 52;
const H_GAP: u32 = 30;
const V_GAP: u32 = 44;
const PAD: u32 = 12;
/// The longest step name drawn whole in a node.
const MAX_LABEL: usize = 24;
/// How many flow versions' layouts are kept; past it the cache starts again.
const CACHED_LAYOUTS: usize = 512;

/// Where each step of a flow sits.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub nodes: Vec<Placed>,
    /// (from, to) as indices into `nodes`: `to` depends on `from`.
    pub edges: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub id: String,
    /// What it calls: a contract's or subflow's name, without its module.
    pub calls: String,
    pub fan_out: bool,
    pub layer: u32,
    pub x: u32,
    pub y: u32,
}

/// Each step's layer: 0 without dependencies, else one below its deepest
/// dependency. Dependencies on unknown steps are ignored, and a cycle (which
/// validation refuses before a flow is deployed) cannot loop.
fn layers(deps: &[Vec<usize>]) -> Vec<u32> {
    fn visit(i: usize, deps: &[Vec<usize>], memo: &mut [Option<u32>], on_path: &mut [bool]) -> u32 {
        if let Some(l) = memo[i] {
            return l;
        }
        if on_path[i] {
            return 0;
        }
        on_path[i] = true;
        let l = deps[i]
            .iter()
            .map(|&d| visit(d, deps, memo, on_path) + 1)
            .max()
            .unwrap_or(0);
        on_path[i] = false;
        memo[i] = Some(l);
        l
    }
    let mut memo = vec![None; deps.len()];
    let mut on_path = vec![false; deps.len()];
    (0..deps.len())
        .map(|i| visit(i, deps, &mut memo, &mut on_path))
        .collect()
}

/// The layered layout of `flow`.
pub fn layout(flow: &Flow) -> Layout {
    let index: HashMap<&str, usize> = flow
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = flow
        .nodes
        .iter()
        .map(|n| {
            n.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let layer = layers(&deps);
    let depth = layer.iter().copied().max().map_or(0, |m| m + 1) as usize;
    // Each layer in source order, then ordered by the mean place of each
    // step's dependencies in the layers above (one pass, top down).
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, &l) in layer.iter().enumerate() {
        rows[l as usize].push(i);
    }
    let mut place = vec![0f64; flow.nodes.len()];
    for row in &mut rows {
        let key = |i: usize| -> f64 {
            if deps[i].is_empty() {
                i as f64
            } else {
                deps[i].iter().map(|&d| place[d]).sum::<f64>() / deps[i].len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = row.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *row = keyed.into_iter().map(|(_, i)| i).collect();
        for (k, &i) in row.iter().enumerate() {
            place[i] = k as f64;
        }
    }
    let widest = rows.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let width = PAD * 2 + widest * NODE_W + widest.saturating_sub(1) * H_GAP;
    let height = PAD * 2 + depth as u32 * NODE_H + (depth as u32).saturating_sub(1) * V_GAP;
    let mut xy = vec![(0u32, 0u32); flow.nodes.len()];
    for (l, row) in rows.iter().enumerate() {
        let n = row.len() as u32;
        let row_width = n * NODE_W + n.saturating_sub(1) * H_GAP;
        let left = PAD + (width - PAD * 2 - row_width) / 2;
        for (k, &i) in row.iter().enumerate() {
            xy[i] = (
                left + k as u32 * (NODE_W + H_GAP),
                PAD + l as u32 * (NODE_H + V_GAP),
            );
        }
    }
    let nodes = flow
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let calls = match &n.call {
                Call::Step { contract, .. } => contract,
                Call::Flow { name } => name,
            };
            Placed {
                id: n.id.clone(),
                calls: calls.rsplit(['.', '/']).next().unwrap_or(calls).to_string(),
                fan_out: n.fan_out.is_some(),
                layer: layer[i],
                x: xy[i].0,
                y: xy[i].1,
            }
        })
        .collect();
    let edges = deps
        .iter()
        .enumerate()
        .flat_map(|(to, ds)| ds.iter().map(move |&from| (from, to)))
        .collect();
    Layout {
        width,
        height,
        nodes,
        edges,
    }
}

/// Layouts by flow version: a flow version never changes, so neither does its layout.
#[derive(Default)]
pub struct Layouts {
    cache: Mutex<HashMap<String, Arc<Layout>>>,
}

impl Layouts {
    pub fn get(&self, flow: &Flow) -> Arc<Layout> {
        if let Some(l) = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&flow.hash).cloned())
        {
            return l;
        }
        let l = Arc::new(layout(flow));
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHED_LAYOUTS {
                c.clear();
            }
            c.insert(flow.hash.clone(), l.clone());
        }
        l
    }
}

/// What a node says of its step in this run: its status, and for a fan-out
/// how many of its children are done.
fn state_of(step: Option<&StepView>, fan_out: bool) -> (String, String) {
    let Some(s) = step else {
        return ("pending".into(), "pending".into());
    };
    let mut text = s.status.replace('_', " ");
    if fan_out && let Some(children) = &s.children {
        let n: u32 = children.values().sum();
        let done: u32 = ["succeeded", "failed"]
            .iter()
            .filter_map(|k| children.get(*k))
            .sum();
        text = format!("{done} of {n} done");
        if let Some(f) = children.get("failed") {
            text.push_str(&format!(", {f} failed"));
        }
    } else if let Some(a) = s.attempt.filter(|a| *a > 1) {
        text.push_str(&format!(", attempt {a}"));
    }
    (s.status.clone(), text)
}

fn label(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL {
        escape(s)
    } else {
        let cut: String = s.chars().take(MAX_LABEL - 1).collect();
        format!("{}…", escape(&cut))
    }
}

/// The layout drawn as SVG with each step's status in this run.
pub fn svg(layout: &Layout, steps: &[StepView], title: &str) -> String {
    let by_id: HashMap<&str, &StepView> = steps.iter().map(|s| (s.id.as_str(), s)).collect();
    draw(layout, title, |n| {
        state_of(by_id.get(n.id.as_str()).copied(), n.fan_out)
    })
}

/// The layout drawn as SVG with what each step calls: a flow version's
/// graph, outside any run.
pub fn flow_svg(layout: &Layout, title: &str) -> String {
    draw(layout, title, |n| {
        ("step".to_string(), format!("calls {}", n.calls))
    })
}

/// The layout as SVG; `state` gives each node its class (`st-…`) and its
/// second line.
fn draw(layout: &Layout, title: &str, state: impl Fn(&Placed) -> (String, String)) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-labelledby=\"graph-title\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><title id=\"graph-title\">{t}</title>",
        w = layout.width.max(1),
        h = layout.height.max(1),
        t = escape(title),
    );
    out.push_str("<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" class=\"arrowhead\"/></marker></defs>");
    for &(from, to) in &layout.edges {
        let (a, b) = (&layout.nodes[from], &layout.nodes[to]);
        let (x1, y1) = (a.x + NODE_W / 2, a.y + NODE_H);
        let (x2, y2) = (b.x + NODE_W / 2, b.y);
        let mid = (y1 + y2) / 2;
        let _ = write!(
            out,
            "<path class=\"edge\" d=\"M {x1} {y1} C {x1} {mid}, {x2} {mid}, {x2} {y2}\" marker-end=\"url(#arrow)\"/>"
        );
    }
    for n in &layout.nodes {
        let (status, text) = state(n);
        let kind = if n.fan_out { " fan-out" } else { "" };
        let _ = write!(
            out,
            "<g class=\"node st-{st}{kind}\"><title>{id}: {text}</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/><text x=\"{tx}\" y=\"{y1}\" class=\"name\">{name}</text><text x=\"{tx}\" y=\"{y2}\" class=\"state\">{prefix}{state}</text></g>",
            st = escape(&status),
            id = escape(&n.id),
            text = escape(&text),
            x = n.x,
            y = n.y,
            tx = n.x + 10,
            y1 = n.y + 21,
            y2 = n.y + 40,
            name = label(&n.id),
            prefix = if n.fan_out { "fan-out: " } else { "" },
            state = escape(&text),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn flow(nodes: &[(&str, &[&str], bool)]) -> Flow {
        let nodes: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(id, deps, fan)| {
                let mut n = serde_json::json!({
                    "id": id,
                    "call": {"step": {"contract": "std/ml.Train"}},
                    "inputs": {},
                    "depends_on": deps,
                });
                if *fan {
                    n["fan_out"] = serde_json::json!({"over": {"literal": []}, "item": "x", "join": {"policy": "all"}});
                }
                n
            })
            .collect();
        let f = serde_json::json!({
            "name": "F", "module": "m", "hash": "sha256:00", "params": [],
            "nodes": nodes, "conditions": [], "types": {}, "contracts": {}, "bindings": {},
        });
        serde_json::from_value(f).expect("a flow")
    }

    #[test]
    fn steps_sit_one_layer_below_their_deepest_dependency() {
        let f = flow(&[
            ("a", &[], false),
            ("b", &["a"], false),
            ("c", &["a"], false),
            ("d", &["b", "c", "a"], false),
        ]);
        let l = layout(&f);
        let layer: BTreeMap<&str, u32> = l.nodes.iter().map(|n| (n.id.as_str(), n.layer)).collect();
        assert_eq!(
            layer,
            BTreeMap::from([("a", 0), ("b", 1), ("c", 1), ("d", 2)])
        );
        assert_eq!(l.edges.len(), 5);
        // b and c share a row, side by side, neither over the other.
        let (b, c) = (&l.nodes[1], &l.nodes[2]);
        assert_eq!(b.y, c.y);
        assert!(b.x + NODE_W <= c.x || c.x + NODE_W <= b.x);
        assert_eq!(l.nodes[0].calls, "Train");
    }

    #[test]
    fn a_fan_out_is_one_node_with_k_of_n() {
        let f = flow(&[("each", &[], true)]);
        let l = layout(&f);
        let step = StepView {
            id: "each".into(),
            status: "fan_out".into(),
            attempt: None,
            output: None,
            output_ref: None,
            error: None,
            children: Some(BTreeMap::from([
                ("running".to_string(), 997u32),
                ("succeeded".to_string(), 2),
                ("failed".to_string(), 1),
            ])),
            iteration: None,
        };
        let svg = svg(&l, &[step], "graph of F");
        assert_eq!(svg.matches("<rect").count(), 1, "{svg}");
        assert!(svg.contains("3 of 1000 done, 1 failed"), "{svg}");
    }

    #[test]
    fn names_are_escaped_and_a_cycle_cannot_loop() {
        let f = flow(&[("<a>", &["b"], false), ("b", &["<a>"], false)]);
        let l = layout(&f);
        let s = svg(&l, &[], "<t>");
        assert!(!s.contains("<a>") && !s.contains("<t>"), "{s}");
    }
}
