//! Shared test helpers: compile `.eflow` snippets, drive runs with a compact script, render transcripts.

// Test scaffolding: a malformed script is a bug in the test and should panic there.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;

use eflow_compiler::analysis::{Analysis, FsLoader};
use eflow_core::{
    Effect, EffectKind, Event, EventKind, Outcome, Rejection, Run, StepError, Timer,
    ValidatedBundle, Values, apply, validate,
};
use eflow_ir::{self as ir, Bundle};
use serde_json::Value;

/// Small flows, one per behaviour, shared by the scenario and property tests.
pub const FLOWS: &str = r#"
from "std/approval" import Approve
from "std/time" import Wait, WaitUntil

record Data { uri: String }
record Score { value: Float }

remote step Fetch(name: String) -> Data raises NotFound
remote step Train(data: Data) -> Data raises OutOfMemory
remote step Eval(data: Data) -> Score
call step Publish(data: Data)

flow Pipeline(name: String, label: String = "y") -> Data {
    deadline 1h
    let a = Fetch(name: name)
    let b = Train(data: a)
        retry 3
        backoff exponential(1s, 3s)
        non_retryable OutOfMemory
        timeout 10s
    return b
}

flow Fixed() -> Data {
    let a = Fetch(name: "x")
        retry 3
        backoff fixed(5s)
    return a
}

flow Guarded(min: Float = 0.5) -> Data? {
    let a = Fetch(name: "x")
    let s = Eval(data: a)
    when s.value >= min {
        let p = Train(data: a)
    } else {
        let q = Publish(data: a)
    }
    return p
}

flow Approved() -> Bool {
    let a = Fetch(name: "x")
    let d = Approve(subject: a, summary: "ok?")
    return d.approved
}

flow Waiting(d: Duration = 1h) -> Timestamp {
    let w = Wait(duration: d)
    return w
}

flow WaitingUntil(t: Timestamp) -> Timestamp {
    let w = WaitUntil(time: t)
    return w
}

flow FanAll(names: List<String>) -> List<Data> {
    let xs = for n in names join all {
        Fetch(name: n)
    }
        parallel 2
    return xs
}

flow FanAny(names: List<String>) -> Data {
    let x = for n in names join any {
        Fetch(name: n)
    }
    return x
}

flow FanAtLeast(names: List<String>) -> List<Data> {
    let xs = for n in names join at_least 2 {
        Fetch(name: n)
    }
        retry 2
        backoff fixed(1s)
    return xs
}

flow FanNeed(names: List<String>, need: Int) -> List<Data> {
    let xs = for n in names join at_least need {
        Fetch(name: n)
    }
    return xs
}

flow Child(name: String) -> Data {
    deadline 1d
    let a = Fetch(name: name)
    return a
}

flow Parent(names: List<String>) -> List<Data> {
    let xs = for n in names join all {
        Child(name: n)
    }
    return xs
}

flow CallOne() -> Data {
    let c = Child(name: "x")
        timeout 1m
    return c
}
"#;

/// Compiles one module (imports of `std/...` work) into a bundle.
pub fn compile_bundle(src: &str) -> Bundle {
    let analysis =
        Analysis::from_texts(vec![(PathBuf::from("t.eflow"), src.to_string())], &FsLoader);
    let errors: Vec<_> = analysis
        .diagnostics()
        .into_iter()
        .filter(|d| d.severity == eflow_compiler::diagnostics::Severity::Error)
        .collect();
    assert!(errors.is_empty(), "snippet does not compile: {errors:#?}");
    eflow_compiler::lower::emit(&analysis, None).expect("emit")
}

pub fn compile(src: &str) -> ValidatedBundle {
    validate(&compile_bundle(src)).expect("compiled IR validates")
}

/// The examples, compiled as `eflowc compile examples` does.
pub fn examples() -> ValidatedBundle {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let analysis = Analysis::from_paths(&[root], &FsLoader).expect("examples are readable");
    validate(&eflow_compiler::lower::emit(&analysis, None).expect("emit"))
        .expect("examples validate")
}

/// Drives one run with a script and records what happened.
pub struct Driver<'a> {
    pub bundle: &'a ValidatedBundle,
    pub run: Run,
    pub now: u64,
    pub seq: u64,
    pub log: String,
    pub last: Option<Event>,
    /// The fan-outs' stored results, as the engine keeps them: node → index → output.
    pub results: BTreeMap<String, BTreeMap<u32, Value>>,
    /// The values kept by reference, as the engine's value table holds them: hash → value.
    pub stored: BTreeMap<String, Value>,
    /// The joined lists and values loaded for `apply`, as the engine's worker keeps them.
    pub values: Values,
}

impl<'a> Driver<'a> {
    pub fn new(bundle: &'a ValidatedBundle, flow: &str) -> Self {
        let f = bundle.flow(flow).expect("flow in bundle");
        Self {
            bundle,
            run: Run::new("r1", "acme", f.flow, None),
            now: 1_000,
            seq: 0,
            log: String::new(),
            last: None,
            results: BTreeMap::new(),
            stored: BTreeMap::new(),
            values: Values::default(),
        }
    }

    pub fn child(mut self, parent: eflow_core::Parent) -> Self {
        self.run.parent = Some(parent);
        self
    }

    /// Runs a script, one command per line:
    /// `start {json}`, `at MS`, `ok NODE[I] ATTEMPT {json}`, `fail NODE[I] ATTEMPT CODE [fatal]`,
    /// `child NODE[I] ATTEMPT ok {json} | fail CODE | cancelled`,
    /// `fire deadline | retry NODE[I] A | timeout NODE[I] A | wait NODE[I] A | fan_out NODE SEQ`,
    /// `cancel REASON`, `retry_run REASON` (a retry of the failed run, asked
    /// by `ops`), `again` (redeliver the last event).
    pub fn script(&mut self, script: &str) -> &mut Self {
        for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
            self.step(line);
        }
        self
    }

    pub fn step(&mut self, line: &str) {
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        let kind = match cmd {
            "at" => {
                self.now = rest.parse().expect("at MS");
                return;
            }
            "again" => {
                let ev = self.last.clone().expect("an event before `again`");
                writeln!(self.log, "> again").unwrap();
                self.deliver(ev);
                return;
            }
            "start" => EventKind::Started {
                input: serde_json::from_str(if rest.is_empty() { "{}" } else { rest })
                    .expect("input json"),
                input_refs: Default::default(),
            },
            "ok" => {
                let mut p = rest.splitn(3, ' ');
                let (node, index) = slot(p.next().unwrap());
                EventKind::StepCompleted {
                    node,
                    index,
                    attempt: p.next().unwrap().parse().unwrap(),
                    output: serde_json::from_str(p.next().unwrap_or("null")).expect("output json"),
                    output_ref: None,
                }
            }
            "fail" => {
                let p: Vec<&str> = rest.split(' ').collect();
                let (node, index) = slot(p[0]);
                EventKind::StepFailed {
                    node,
                    index,
                    attempt: p[1].parse().unwrap(),
                    error: StepError::new(p[2], ""),
                    retryable: p.get(3) != Some(&"fatal"),
                }
            }
            "child" => {
                let p: Vec<&str> = rest.splitn(4, ' ').collect();
                let (node, index) = slot(p[0]);
                let outcome = match p[2] {
                    "ok" => Outcome::Succeeded {
                        output: serde_json::from_str(p.get(3).copied().unwrap_or("null")).unwrap(),
                        output_ref: None,
                    },
                    "fail" => Outcome::Failed {
                        error: StepError::new(p[3], ""),
                    },
                    _ => Outcome::Cancelled,
                };
                EventKind::ChildFinished {
                    node,
                    index,
                    attempt: p[1].parse().unwrap(),
                    outcome,
                }
            }
            "fire" => {
                let p: Vec<&str> = rest.split(' ').collect();
                let timer = if p[0] == "deadline" {
                    Timer::Deadline
                } else if p[0] == "fan_out" {
                    Timer::FanOut {
                        node: p[1].to_string(),
                        seq: p[2].parse().unwrap(),
                    }
                } else {
                    let (node, index) = slot(p[1]);
                    let attempt = p[2].parse().unwrap();
                    match p[0] {
                        "retry" => Timer::Retry {
                            node,
                            index,
                            attempt,
                        },
                        "timeout" => Timer::Timeout {
                            node,
                            index,
                            attempt,
                        },
                        "wait" => Timer::Wait {
                            node,
                            index,
                            attempt,
                        },
                        other => panic!("unknown timer {other}"),
                    }
                };
                EventKind::TimerFired { timer }
            }
            "cancel" => EventKind::CancelRequested {
                reason: rest.to_string(),
            },
            "retry_run" => EventKind::RetryRequested {
                by: "ops".to_string(),
                reason: rest.to_string(),
            },
            other => panic!("unknown command {other}"),
        };
        writeln!(self.log, "> {line}").unwrap();
        self.seq += 1;
        let ev = Event::new(format!("e{}", self.seq), kind);
        self.deliver(ev);
    }

    /// Applies `ev` as the engine's worker does: loads the joined lists a
    /// transition needs and applies it again, keeps the results it stores, and
    /// fires a `FanOut` timer due now at once.
    fn deliver(&mut self, ev: Event) {
        let mut due_now = Vec::new();
        loop {
            match apply(self.bundle, &self.run, &ev, self.now, &self.values) {
                Ok(t) => {
                    for e in &t.effects {
                        writeln!(self.log, "  {}", render(e)).unwrap();
                        match &e.kind {
                            EffectKind::StoreResult {
                                node,
                                index,
                                output,
                            } => {
                                self.results
                                    .entry(node.clone())
                                    .or_default()
                                    .insert(*index, output.clone());
                            }
                            // Stored, not loaded: a later transition that reads
                            // it must ask for it, as after a restart.
                            EffectKind::StoreValue { value_ref, value } => {
                                self.stored
                                    .insert(value_ref.hash.clone(), (**value).clone());
                            }
                            EffectKind::SetTimer {
                                timer: timer @ Timer::FanOut { .. },
                                due_at,
                            } if *due_at <= self.now => due_now.push(timer.clone()),
                            _ => {}
                        }
                    }
                    self.run = t.run;
                }
                Err(Rejection::Needs { results, values }) => {
                    for hash in values {
                        writeln!(self.log, "  (loads the value {})", short(&hash)).unwrap();
                        let v = self.stored.get(&hash).expect("a needed value was stored");
                        self.values.stored.insert(hash, Arc::new(v.clone()));
                    }
                    for node in results {
                        writeln!(self.log, "  (loads the results of {node})").unwrap();
                        let list = self
                            .results
                            .get(&node)
                            .map(|r| r.values().cloned().collect())
                            .unwrap_or_default();
                        self.values
                            .results
                            .insert(node, Arc::new(Value::Array(list)));
                    }
                    continue;
                }
                Err(r) => writeln!(self.log, "  rejected: {}", render_rejection(&r)).unwrap(),
            }
            break;
        }
        self.last = Some(ev);
        for timer in due_now {
            writeln!(self.log, "> (fires {})", timer.id()).unwrap();
            self.seq += 1;
            let next = Event::new(format!("e{}", self.seq), EventKind::TimerFired { timer });
            let last = self.last.take();
            self.deliver(next);
            self.last = last;
        }
    }

    /// The transcript and the final state.
    pub fn finish(&self) -> String {
        let mut out = self.log.clone();
        let mut run = serde_json::to_value(&self.run).unwrap();
        if let Some(o) = run.as_object_mut() {
            // Always the same in these tests; noise in every snapshot.
            o.remove("version");
            o.remove("id");
            o.remove("tenant");
            o.remove("flow");
        }
        writeln!(out, "= {}", serde_json::to_string(&run).unwrap()).unwrap();
        out
    }
}

fn slot(s: &str) -> (String, Option<u32>) {
    match s.split_once('[') {
        Some((n, i)) => (
            n.to_string(),
            Some(i.trim_end_matches(']').parse().unwrap()),
        ),
        None => (s.to_string(), None),
    }
}

fn at(node: &str, index: &Option<u32>, attempt: u32) -> String {
    match index {
        Some(i) => format!("{node}[{i}]#{attempt}"),
        None => format!("{node}#{attempt}"),
    }
}

/// A hash as transcripts show it: its first 12 hex digits.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(7 + 12)]
}

fn j(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

pub fn render(e: &Effect) -> String {
    match &e.kind {
        EffectKind::Invoke {
            node,
            index,
            attempt,
            contract,
            inputs,
        } => {
            format!(
                "invoke {} {contract} {}",
                at(node, index, *attempt),
                j(inputs)
            )
        }
        EffectKind::RequestApproval {
            node,
            index,
            attempt,
            inputs,
            ..
        } => {
            format!(
                "request_approval {} {}",
                at(node, index, *attempt),
                j(inputs)
            )
        }
        EffectKind::CancelStep {
            node,
            index,
            attempt,
        } => format!("cancel_step {}", at(node, index, *attempt)),
        EffectKind::SetTimer { timer, due_at } => format!("set_timer {} at {due_at}", timer.id()),
        EffectKind::CancelTimer { timer } => format!("cancel_timer {}", timer.id()),
        EffectKind::StartChild {
            child, flow, input, ..
        } => format!("start_child {child} {flow} {}", j(input)),
        EffectKind::CancelChild { child } => format!("cancel_child {child}"),
        EffectKind::NotifyParent { parent, outcome } => {
            format!(
                "notify_parent {} {}",
                at(
                    &format!("{}/{}", parent.run, parent.node),
                    &parent.index,
                    parent.attempt
                ),
                j(outcome)
            )
        }
        EffectKind::StoreResult {
            node,
            index,
            output,
        } => format!("store_result {node}[{index}] {}", j(output)),
        EffectKind::ReferValue { value_ref } => format!("refer_value {}", short(&value_ref.hash)),
        EffectKind::StoreValue { value_ref, value } => format!(
            "store_value {} ({} bytes, {})",
            short(&value_ref.hash),
            value_ref.bytes,
            match &**value {
                Value::Array(a) => format!("a list of {}", a.len()),
                Value::Object(o) => format!("{} fields", o.len()),
                _ => "a scalar".to_string(),
            }
        ),
        EffectKind::Finished { status, error } => match error {
            Some(e) => format!("finished {} {}", j(status), j(e)),
            None => format!("finished {}", j(status)),
        },
    }
}

pub fn render_rejection(r: &Rejection) -> String {
    r.to_string()
}

/// A value of `ty` for simulated outputs; `seed` picks booleans and enum variants.
pub fn fake_value(
    ty: &ir::Type,
    types: &std::collections::BTreeMap<String, ir::TypeDef>,
    seed: u64,
) -> Value {
    use ir::{Type, TypeDef};
    match ty {
        Type::Bool => Value::Bool(seed.is_multiple_of(2)),
        Type::Int => Value::from(seed % 100),
        Type::Float => Value::from((seed % 100) as f64 / 100.0),
        Type::String => Value::from(format!("s{}", seed % 10)),
        Type::Duration => Value::from(seed % 10_000),
        Type::Timestamp => Value::from("2025-01-01T00:00:00Z"),
        Type::List { item } => Value::Array(
            (0..(seed % 3))
                .map(|i| fake_value(item, types, seed / 3 + i))
                .collect(),
        ),
        Type::Map { .. } => Value::Object(Default::default()),
        Type::Optional { inner } => {
            if seed.is_multiple_of(3) {
                Value::Null
            } else {
                fake_value(inner, types, seed / 3)
            }
        }
        Type::Enum { name } => match types.get(name) {
            Some(TypeDef::Enum { variants }) if !variants.is_empty() => {
                Value::from(variants[(seed as usize) % variants.len()].clone())
            }
            _ => Value::Null,
        },
        Type::Record { name, args } => match types.get(name) {
            Some(TypeDef::Record { generics, fields }) => {
                let mut m = serde_json::Map::new();
                for (k, f) in fields.iter().enumerate() {
                    let fty = match &f.ty {
                        Type::Param { name } => generics
                            .iter()
                            .position(|g| g == name)
                            .and_then(|i| args.get(i))
                            .cloned()
                            .unwrap_or(Type::Int),
                        t => t.clone(),
                    };
                    m.insert(
                        f.name.clone(),
                        fake_value(&fty, types, seed.wrapping_mul(31).wrapping_add(k as u64)),
                    );
                }
                Value::Object(m)
            }
            _ => Value::Null,
        },
        Type::Param { .. } => Value::from(1),
    }
}
