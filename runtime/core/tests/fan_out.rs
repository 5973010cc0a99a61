//! Fan-outs far wider than a batch and a window: the parent's bookkeeping stays
//! bounded by the window, children start in batches, each exactly once per
//! attempt, and the joined list holds every result in input order.

#![allow(clippy::unwrap_used)] // test scaffolding

mod common;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use common::compile;
use eflow_core::apply::{DEFAULT_WINDOW, MAX_SPAN, START_BATCH};
use eflow_core::state::encoded_size;
use eflow_core::{
    EffectKind, Event, EventKind, NodeState, Rejection, Run, StepError, Timer, Transition,
    ValidatedBundle, Values, apply,
};
use serde_json::{Value, json};

const SRC: &str = r#"
remote step Work(i: Int) -> Int
remote step Sum(values: List<Int>) -> Int

flow Wide(xs: List<Int>) -> Int {
    let ys = for x in xs join all {
        Work(i: x)
    }
        retry 3
        backoff fixed(1s)
    let total = Sum(values: ys)
    return total
}

flow Windowed(xs: List<Int>) -> Int {
    let ys = for x in xs join all {
        Work(i: x)
    }
        parallel 50
    let total = Sum(values: ys)
    return total
}
"#;

/// The engine around `apply`, in memory: stored results, loaded lists, due timers.
struct Engine<'a> {
    bundle: &'a ValidatedBundle,
    run: Run,
    now: u64,
    seq: u64,
    results: BTreeMap<u32, Value>,
    /// The value table: hash → value.
    stored: BTreeMap<String, Value>,
    values: Values,
    /// Out: (index, attempt) of each `Work` invocation.
    out: VecDeque<(u32, u32)>,
    /// Retry timers and when they are due.
    retries: VecDeque<(u64, Timer)>,
    fan_out_timers: VecDeque<Timer>,
    invoked: HashSet<(u32, u32)>,
    sum: Option<Value>,
    /// Measure the fan-out's encoded size after every transition.
    measure: bool,
    largest_fan_out: usize,
    /// The run's whole encoded state, the largest it was.
    largest_state: usize,
    most_started_at_once: usize,
}

impl<'a> Engine<'a> {
    fn new(bundle: &'a ValidatedBundle, flow: &str) -> Self {
        let f = bundle.flow(flow).unwrap();
        Self {
            bundle,
            run: Run::new("r", "t", f.flow, None),
            now: 1_000,
            seq: 0,
            results: BTreeMap::new(),
            stored: BTreeMap::new(),
            values: Values::default(),
            out: VecDeque::new(),
            retries: VecDeque::new(),
            fan_out_timers: VecDeque::new(),
            invoked: HashSet::new(),
            sum: None,
            measure: true,
            largest_fan_out: 0,
            largest_state: 0,
            most_started_at_once: 0,
        }
    }

    fn apply(&mut self, ev: &Event) -> Result<Transition, Rejection> {
        loop {
            match apply(self.bundle, &self.run, ev, self.now, &self.values) {
                Err(Rejection::Needs { results, values }) => {
                    for hash in values {
                        let v = self.stored.get(&hash).expect("a needed value was stored");
                        self.values.stored.insert(hash, Arc::new(v.clone()));
                    }
                    if !results.is_empty() {
                        assert_eq!(results, ["ys"]);
                        let list = self.results.values().cloned().collect();
                        self.values
                            .results
                            .insert("ys".into(), Arc::new(Value::Array(list)));
                    }
                }
                other => return other,
            }
        }
    }

    fn deliver(&mut self, kind: EventKind) {
        self.seq += 1;
        let ev = Event::new(format!("e{}", self.seq), kind);
        let t = self.apply(&ev).unwrap();
        let mut started = 0;
        for e in &t.effects {
            match &e.kind {
                EffectKind::Invoke {
                    node,
                    index,
                    attempt,
                    inputs,
                    ..
                } if node == "ys" => {
                    let i = index.unwrap();
                    assert!(
                        self.invoked.insert((i, *attempt)),
                        "child {i} attempt {attempt} invoked twice"
                    );
                    assert_eq!(inputs["i"], json!(i), "child {i} gets element {i}");
                    self.out.push_back((i, *attempt));
                    started += 1;
                }
                EffectKind::Invoke { node, inputs, .. } if node == "total" => {
                    self.sum = Some(inputs["values"].clone());
                }
                EffectKind::StoreResult {
                    node,
                    index,
                    output,
                } => {
                    assert_eq!(node, "ys");
                    let old = self.results.insert(*index, output.clone());
                    assert!(old.is_none(), "child {index}'s result stored twice");
                }
                EffectKind::StoreValue { value_ref, value } => {
                    self.stored
                        .insert(value_ref.hash.clone(), (**value).clone());
                }
                EffectKind::SetTimer { timer, due_at } => match timer {
                    Timer::FanOut { .. } => {
                        assert_eq!(*due_at, self.now, "a batch goes on at once");
                        self.fan_out_timers.push_back(timer.clone());
                    }
                    Timer::Retry { .. } => self.retries.push_back((*due_at, timer.clone())),
                    other => panic!("unexpected timer {other:?}"),
                },
                _ => {}
            }
        }
        self.most_started_at_once = self.most_started_at_once.max(started);
        if let Some(NodeState::FanOut(fo)) = t.run.nodes.first()
            && self.measure
        {
            self.largest_fan_out = self.largest_fan_out.max(encoded_size(fo));
            self.largest_state = self.largest_state.max(t.run.encoded_size());
        }
        self.run = t.run;
        // The same event again changes nothing.
        assert!(matches!(self.apply(&ev), Err(Rejection::Duplicate)));
    }

    /// Completes children in a scrambled order (a few fail once), 10 ms
    /// apart, fires the fan-out's timers at once and retries when due, until
    /// nothing is left to do.
    fn drive(&mut self, mut rng: u64) {
        loop {
            if self
                .retries
                .front()
                .is_some_and(|(due, _)| *due <= self.now)
            {
                let (_, timer) = self.retries.pop_front().unwrap();
                self.deliver(EventKind::TimerFired { timer });
                continue;
            }
            let pick = |rng: &mut u64| {
                *rng = rng
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *rng >> 33
            };
            if let Some(timer) = self.fan_out_timers.pop_front() {
                self.deliver(EventKind::TimerFired { timer });
            } else if !self.out.is_empty() {
                let k = pick(&mut rng) as usize % self.out.len().min(64);
                let (i, attempt) = self.out.remove(k).unwrap();
                self.now += 10;
                let kind = if attempt == 1 && pick(&mut rng) % 100 == 0 {
                    EventKind::StepFailed {
                        node: "ys".into(),
                        index: Some(i),
                        attempt,
                        error: StepError::new("Lost", ""),
                        retryable: true,
                    }
                } else {
                    EventKind::StepCompleted {
                        node: "ys".into(),
                        index: Some(i),
                        attempt,
                        output: json!(i),
                        output_ref: None,
                    }
                };
                self.deliver(kind);
            } else if let Some((due, timer)) = self.retries.pop_front() {
                self.now = self.now.max(due);
                self.deliver(EventKind::TimerFired { timer });
            } else {
                return;
            }
        }
    }
}

fn wide(n: u32) -> Value {
    json!({ "xs": (0..n).collect::<Vec<_>>() })
}

#[test]
fn a_fan_out_wider_than_its_window_keeps_bounded_bookkeeping_and_every_result_in_order() {
    let b = compile(SRC);
    let n = 2 * DEFAULT_WINDOW + 1_234;
    let mut e = Engine::new(&b, "Wide");
    e.deliver(EventKind::Started {
        input: wide(n).as_object().unwrap().clone(),
        input_refs: Default::default(),
    });
    e.drive(7);
    assert_eq!(
        e.results.len(),
        n as usize,
        "every child's result is stored"
    );
    let expected: Vec<Value> = (0..n).map(|i| json!(i)).collect();
    assert_eq!(
        e.sum,
        Some(Value::Array(expected)),
        "the joined list holds every result, in input order"
    );
    assert!(e.most_started_at_once <= START_BATCH as usize);
    // The fan-out's own state: a bitmap over its span (a hex digit per 4
    // children, the span at most `MAX_SPAN` and about the window here) and
    // the few children on a later attempt, never one entry per element.
    const { assert!(MAX_SPAN >= 2 * DEFAULT_WINDOW) };
    let bound = 2 * DEFAULT_WINDOW as usize / 4 + 4_096;
    assert!(
        e.largest_fan_out <= bound,
        "{} bytes of bookkeeping for {n} children",
        e.largest_fan_out
    );
    // The list itself is kept by reference: the whole state is the bookkeeping
    // and a few hundred bytes, not the list's 120 KB.
    assert!(
        e.largest_state <= e.largest_fan_out + 1_024,
        "the run's state reached {} bytes, its fan-out {}",
        e.largest_state,
        e.largest_fan_out
    );
    eprintln!(
        "{n} children: state at most {} bytes, fan-out {}",
        e.largest_state, e.largest_fan_out
    );
}

#[test]
fn parallel_bounds_the_children_running_at_once() {
    let b = compile(SRC);
    let mut e = Engine::new(&b, "Windowed");
    e.deliver(EventKind::Started {
        input: wide(500).as_object().unwrap().clone(),
        input_refs: Default::default(),
    });
    // Drive by hand: never more than 50 out at once.
    while let Some((i, attempt)) = e.out.pop_front() {
        assert!(e.out.len() < 50, "{} running", e.out.len() + 1);
        e.deliver(EventKind::StepCompleted {
            node: "ys".into(),
            index: Some(i),
            attempt,
            output: json!(i),
            output_ref: None,
        });
        while let Some(timer) = e.fan_out_timers.pop_front() {
            e.deliver(EventKind::TimerFired { timer });
        }
    }
    assert_eq!(e.results.len(), 500);
    assert!(e.sum.is_some(), "the next step got the joined list");
    assert!(e.largest_fan_out < 400, "{} bytes", e.largest_fan_out);
}

#[test]
fn a_fan_out_timer_that_fired_is_stale_and_starts_nothing_again() {
    let b = compile(SRC);
    let mut e = Engine::new(&b, "Wide");
    e.deliver(EventKind::Started {
        input: wide(START_BATCH + 10).as_object().unwrap().clone(),
        input_refs: Default::default(),
    });
    assert_eq!(e.out.len(), START_BATCH as usize);
    let timer = e.fan_out_timers.pop_front().expect("the next batch is due");
    e.deliver(EventKind::TimerFired {
        timer: timer.clone(),
    });
    assert_eq!(e.out.len(), START_BATCH as usize + 10);
    // A second delivery of the same timer, as after a crash between commit
    // and delete, under another event id: nothing starts twice.
    let again = Event::new("redelivered", EventKind::TimerFired { timer });
    assert!(matches!(e.apply(&again), Err(Rejection::Stale { .. })));
}

#[test]
fn a_stuck_child_holds_starts_at_the_span_and_they_go_on_when_it_ends() {
    let b = compile(SRC);
    let n = MAX_SPAN + 500;
    let mut e = Engine::new(&b, "Wide");
    e.measure = false;
    e.deliver(EventKind::Started {
        input: wide(n).as_object().unwrap().clone(),
        input_refs: Default::default(),
    });
    // Every child but the first completes as soon as it starts.
    let mut stuck = None;
    loop {
        if let Some(timer) = e.fan_out_timers.pop_front() {
            e.deliver(EventKind::TimerFired { timer });
            continue;
        }
        let Some((i, attempt)) = e.out.pop_front() else {
            break;
        };
        if i == 0 {
            stuck = Some(attempt);
            continue;
        }
        e.deliver(EventKind::StepCompleted {
            node: "ys".into(),
            index: Some(i),
            attempt,
            output: json!(i),
            output_ref: None,
        });
    }
    let Some(NodeState::FanOut(fo)) = e.run.nodes.first() else {
        panic!("still fanning out")
    };
    assert_eq!(fo.low, 0);
    assert_eq!(fo.next, MAX_SPAN, "starts stop at the span");
    e.deliver(EventKind::StepCompleted {
        node: "ys".into(),
        index: Some(0),
        attempt: stuck.unwrap(),
        output: json!(0),
        output_ref: None,
    });
    e.drive(3);
    assert_eq!(e.results.len(), n as usize);
    assert!(e.sum.is_some(), "the fan-out finished");
}
