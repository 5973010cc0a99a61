//! Property tests of `apply`: idempotence, nothing after the end, termination, bounded state, no panics.

#![allow(clippy::unwrap_used)] // test scaffolding: a missing example flow is a test bug

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use common::{FLOWS, compile, examples, fake_value};
use eflow_core::{
    EffectKind, Event, EventKind, NodeState, Outcome, Rejection, Run, Slot, StepError, Timer,
    Transition, ValidatedBundle, Values, apply,
};
use eflow_ir::{Call, Join, StepKind, Type};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn bundles() -> &'static [ValidatedBundle] {
    static B: OnceLock<Vec<ValidatedBundle>> = OnceLock::new();
    B.get_or_init(|| vec![compile(FLOWS), examples()])
}

/// Every (bundle, flow) pair to pick from.
fn flows() -> &'static [(usize, String)] {
    static F: OnceLock<Vec<(usize, String)>> = OnceLock::new();
    F.get_or_init(|| {
        bundles()
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.bundle().flows.iter().map(move |f| (i, f.name.clone())))
            .collect()
    })
}

/// A valid input: the parameters without default, with made-up values of their type.
fn input(b: &ValidatedBundle, flow: &str, seed: u64) -> Map<String, Value> {
    let f = b.flow(flow).unwrap().flow;
    f.params
        .iter()
        .filter(|p| p.default.is_none())
        .map(|p| (p.name.clone(), fake_value(&p.ty, &f.types, seed)))
        .collect()
}

/// The events the outside world could deliver now, derived from the state.
fn possible(b: &ValidatedBundle, run: &Run, seed: u64) -> Vec<EventKind> {
    let f = b.flow(&run.flow).unwrap().flow;
    let mut out = Vec::new();
    for (j, (node, state)) in f.nodes.iter().zip(&run.nodes).enumerate() {
        let _ = j;
        let slots: Vec<(Option<u32>, Slot)> = match state {
            NodeState::Single(s) => vec![(None, s.clone())],
            NodeState::FanOut(fo) => fo.active_children().map(|(i, s)| (Some(i), s)).collect(),
            // A `repeat`: its iteration that is out.
            NodeState::Repeat(r) => vec![(Some(r.iteration), r.slot.clone())],
            _ => continue,
        };
        let out_ty = match (&node.output, &node.fan_out) {
            (Some(Type::List { item }), Some(fo)) if fo.join != Join::Any => {
                Some(item.as_ref().clone())
            }
            (t, _) => t.clone(),
        };
        let output = out_ty
            .map(|t| fake_value(&t, &f.types, seed))
            .unwrap_or(Value::Null);
        let kind = match &node.call {
            Call::Step { contract, .. } => f.contracts.get(contract).map(|c| c.kind),
            Call::Flow { .. } => None,
        };
        let raises: Vec<String> = match &node.call {
            Call::Step { contract, .. } => f
                .contracts
                .get(contract)
                .map(|c| c.raises.clone())
                .unwrap_or_default(),
            Call::Flow { .. } => vec![],
        };
        let code = raises
            .get(seed as usize % (raises.len() + 1))
            .cloned()
            .unwrap_or_else(|| "Lost".into());
        for (index, slot) in slots {
            let id = node.id.clone();
            match slot {
                Slot::Running(a) => {
                    let attempt = a;
                    match kind {
                        None => {
                            out.push(EventKind::ChildFinished {
                                node: id.clone(),
                                index,
                                attempt,
                                outcome: Outcome::Succeeded {
                                    output: output.clone(),
                                    output_ref: None,
                                },
                            });
                            out.push(EventKind::ChildFinished {
                                node: id.clone(),
                                index,
                                attempt,
                                outcome: Outcome::Failed {
                                    error: StepError::new(code.clone(), ""),
                                },
                            });
                        }
                        Some(StepKind::Wait) => {
                            out.push(EventKind::TimerFired {
                                timer: Timer::Wait {
                                    node: id.clone(),
                                    index,
                                    attempt,
                                },
                            });
                        }
                        Some(_) => {
                            out.push(EventKind::StepCompleted {
                                node: id.clone(),
                                index,
                                attempt,
                                output: output.clone(),
                                output_ref: None,
                            });
                            out.push(EventKind::StepFailed {
                                node: id.clone(),
                                index,
                                attempt,
                                error: StepError::new(code.clone(), "boom"),
                                retryable: !seed.is_multiple_of(4),
                            });
                        }
                    }
                    if node.timeout_ms.is_some() {
                        out.push(EventKind::TimerFired {
                            timer: Timer::Timeout {
                                node: id.clone(),
                                index,
                                attempt,
                            },
                        });
                    }
                }
                Slot::RetryWait(a) => out.push(EventKind::TimerFired {
                    timer: Timer::Retry {
                        node: id.clone(),
                        index,
                        attempt: a,
                    },
                }),
                _ => {}
            }
        }
    }
    out
}

/// What the engine keeps beside the runs: the fan-outs' stored results, and the
/// joined lists loaded for `apply`.
#[derive(Default)]
struct World {
    results: BTreeMap<String, BTreeMap<u32, Value>>,
    /// The value table: hash → value.
    stored: BTreeMap<String, Value>,
    values: Values,
}

impl World {
    /// `apply` as the engine's worker calls it: loading what a transition
    /// needs and applying again, then keeping the results it stores.
    fn apply(
        &mut self,
        b: &ValidatedBundle,
        run: &Run,
        ev: &Event,
        now: u64,
    ) -> Result<Transition, Rejection> {
        loop {
            match apply(b, run, ev, now, &self.values) {
                Err(Rejection::Needs { results, values }) => {
                    for hash in values {
                        let v = self.stored.get(&hash).expect("a needed value was stored");
                        self.values.stored.insert(hash, Arc::new(v.clone()));
                    }
                    for node in results {
                        let list = self
                            .results
                            .get(&node)
                            .map(|r| r.values().cloned().collect())
                            .unwrap_or_default();
                        self.values
                            .results
                            .insert(node, Arc::new(Value::Array(list)));
                    }
                }
                Ok(t) => {
                    for e in &t.effects {
                        if let EffectKind::StoreResult {
                            node,
                            index,
                            output,
                        } = &e.kind
                        {
                            let kept = self
                                .results
                                .entry(node.clone())
                                .or_default()
                                .insert(*index, output.clone());
                            assert!(kept.is_none(), "{node}[{index}] stored twice");
                        }
                        if let EffectKind::StoreValue { value_ref, value } = &e.kind {
                            self.stored
                                .insert(value_ref.hash.clone(), (**value).clone());
                        }
                    }
                    return Ok(t);
                }
                Err(r) => return Err(r),
            }
        }
    }
}

/// What the timer store would hold after these effects.
fn track_timers(armed: &mut HashSet<Timer>, effects: &[eflow_core::Effect]) {
    for e in effects {
        match &e.kind {
            EffectKind::SetTimer { timer, .. } => {
                armed.insert(timer.clone());
            }
            EffectKind::CancelTimer { timer } => {
                armed.remove(timer);
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random but valid deliveries: every run terminates, every event applies once,
    /// a finished run takes nothing, the state stays under its limit, fired timers were set.
    #[test]
    fn runs_terminate_and_events_apply_once(pick in any::<usize>(), seeds in prop::collection::vec(any::<u64>(), 400), cancel_at in 0usize..2000) {
        let (bi, name) = &flows()[pick % flows().len()];
        let b = &bundles()[*bi];
        let f = b.flow(name).unwrap().flow;
        let mut run = Run::new("r", "t", f, None);
        let mut world = World::default();
        let start = Event::new("e0", EventKind::Started { input: input(b, name, seeds[0]), input_refs: Default::default() });
        let t = match world.apply(b, &run, &start, 1_000) {
            Ok(t) => t,
            Err(Rejection::InvalidInput { .. }) => return Ok(()),
            Err(r) => panic!("start rejected: {r}"),
        };
        let mut armed = HashSet::new();
        track_timers(&mut armed, &t.effects);
        run = t.run;
        let mut history = vec![start];
        let mut now = 1_000u64;
        for (step, &seed) in seeds.iter().enumerate() {
            if run.status.is_finished() {
                break;
            }
            now += seed % 10_000;
            let mut options = possible(b, &run, seed);
            options.extend(armed.iter().filter(|t| matches!(t, Timer::FanOut { .. })).map(|t| EventKind::TimerFired { timer: t.clone() }));
            if step == cancel_at {
                options = vec![EventKind::CancelRequested { reason: "test".into() }];
            } else if options.is_empty() {
                // Only the deadline can end a run that waits for nothing else.
                prop_assert!(armed.contains(&Timer::Deadline), "run is stuck: {}", serde_json::to_string(&run).unwrap());
                options.push(EventKind::TimerFired { timer: Timer::Deadline });
            }
            let kind = options.swap_remove(seed as usize % options.len());
            if let EventKind::TimerFired { timer } = &kind {
                prop_assert!(armed.contains(timer), "fired {} which was never set", timer.id());
            }
            let ev = Event::new(format!("e{}", step + 1), kind);
            let t = world.apply(b, &run, &ev, now).map_err(|r| TestCaseError::fail(format!("rejected {ev:?}: {r}")))?;
            // Applying it again is a no-op, and so is any earlier event.
            prop_assert_eq!(world.apply(b, &t.run, &ev, now), Err(Rejection::Duplicate));
            let old = &history[seed as usize % history.len()];
            prop_assert!(world.apply(b, &t.run, old, now).is_err(), "old event {old:?} applied again");
            prop_assert!(t.run.encoded_size() <= b.limits.state_bytes);
            let finishes = t.effects.iter().filter(|e| matches!(e.kind, EffectKind::Finished { .. })).count();
            prop_assert_eq!(finishes, usize::from(t.run.status.is_finished()));
            // A timer that fired is gone from the store.
            if let EventKind::TimerFired { timer } = &ev.kind {
                armed.remove(timer);
            }
            track_timers(&mut armed, &t.effects);
            history.push(ev);
            run = t.run;
        }
        prop_assert!(run.status.is_finished(), "run did not finish: {}", serde_json::to_string(&run).unwrap());
        // Nothing changes a finished run, and it leaves no timer behind.
        prop_assert!(armed.is_empty(), "timers left: {armed:?}");
        for kind in possible(b, &run, 1).into_iter().chain([EventKind::CancelRequested { reason: String::new() }, EventKind::TimerFired { timer: Timer::Deadline }]) {
            prop_assert_eq!(world.apply(b, &run, &Event::new("late", kind), now), Err(Rejection::Finished));
        }
        // A retry: of a run not failed it is refused; of a failed one it is
        // refused with a reason or starts attempts no event of before
        // answers, once (the deadline timer, one per run, aside: its row is
        // gone once it fired).
        let retry = Event::new("retry:1", EventKind::RetryRequested { by: "ops".into(), reason: String::new() });
        match world.apply(b, &run, &retry, now) {
            Err(Rejection::NotFailed { status }) => prop_assert!(run.status != eflow_core::RunStatus::Failed && status == run.status),
            Err(Rejection::NotRetryable { .. }) => prop_assert_eq!(run.status, eflow_core::RunStatus::Failed),
            Err(r) => prop_assert!(false, "retry rejected with {r}"),
            Ok(t) => {
                prop_assert_eq!(run.status, eflow_core::RunStatus::Failed);
                prop_assert_eq!(t.run.retries, 1);
                prop_assert!(t.run.error.is_none() || t.run.status.is_finished());
                prop_assert_eq!(world.apply(b, &t.run, &retry, now), Err(Rejection::Duplicate));
                for old in &history {
                    if matches!(&old.kind, EventKind::TimerFired { timer: Timer::Deadline }) {
                        continue;
                    }
                    prop_assert!(world.apply(b, &t.run, old, now).is_err(), "old event {old:?} applied after the retry");
                }
                // And the retried run finishes again (the world checks that
                // no fan-out result is stored twice).
                let mut armed = HashSet::new();
                track_timers(&mut armed, &t.effects);
                let mut run = t.run;
                for (step, &seed) in seeds.iter().enumerate() {
                    if run.status.is_finished() {
                        break;
                    }
                    now += seed % 10_000;
                    let mut options = possible(b, &run, seed);
                    options.extend(armed.iter().filter(|t| matches!(t, Timer::FanOut { .. })).map(|t| EventKind::TimerFired { timer: t.clone() }));
                    if options.is_empty() {
                        prop_assert!(armed.contains(&Timer::Deadline), "retried run is stuck: {}", serde_json::to_string(&run).unwrap());
                        options.push(EventKind::TimerFired { timer: Timer::Deadline });
                    }
                    let kind = options.swap_remove(seed as usize % options.len());
                    let ev = Event::new(format!("r{step}"), kind);
                    let t = world.apply(b, &run, &ev, now).map_err(|r| TestCaseError::fail(format!("rejected after the retry {ev:?}: {r}")))?;
                    prop_assert!(t.run.encoded_size() <= b.limits.state_bytes);
                    if let EventKind::TimerFired { timer } = &ev.kind {
                        armed.remove(timer);
                    }
                    track_timers(&mut armed, &t.effects);
                    run = t.run;
                }
                prop_assert!(run.status.is_finished(), "retried run did not finish: {}", serde_json::to_string(&run).unwrap());
                prop_assert!(armed.is_empty(), "timers left after the retry: {armed:?}");
            }
        }
    }

    /// Arbitrary events, well-formed or not, on a run in progress: `apply` answers, never panics.
    #[test]
    fn apply_never_panics(pick in any::<usize>(), steps in 0usize..6, seed in any::<u64>(), event in arb_event()) {
        let (bi, name) = &flows()[pick % flows().len()];
        let b = &bundles()[*bi];
        let f = b.flow(name).unwrap().flow;
        let mut run = Run::new("r", "t", f, None);
        let mut world = World::default();
        if let Ok(t) = world.apply(b, &run, &Event::new("s", EventKind::Started { input: input(b, name, seed), input_refs: Default::default() }), 0) {
            run = t.run;
        }
        for i in 0..steps {
            let mut opts = possible(b, &run, seed.wrapping_add(i as u64));
            if opts.is_empty() { break; }
            let k = opts.swap_remove((seed as usize).wrapping_add(i) % opts.len());
            if let Ok(t) = world.apply(b, &run, &Event::new(format!("p{i}"), k), 10) { run = t.run; }
        }
        let node_names: Vec<String> = f.nodes.iter().map(|n| n.id.clone()).collect();
        let event = retarget(event, &node_names, seed);
        let _ = world.apply(b, &run, &event, seed);
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "[a-z]{0,6}".prop_map(Value::from),
        Just(json!("2025-01-01T00:00:00Z")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_event() -> impl Strategy<Value = Event> {
    let node = "[a-z]{0,8}";
    let index = prop::option::of(0u32..5);
    let attempt = 0u32..5;
    let kind = prop_oneof![
        prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..3).prop_map(|m| {
            EventKind::Started {
                input: m.into_iter().collect(),
                input_refs: Default::default(),
            }
        }),
        (node, index.clone(), attempt.clone(), arb_json()).prop_map(
            |(node, index, attempt, output)| EventKind::StepCompleted {
                node,
                index,
                attempt,
                output,
                output_ref: None,
            }
        ),
        (
            node,
            index.clone(),
            attempt.clone(),
            "[A-Za-z]{0,10}",
            any::<bool>()
        )
            .prop_map(|(node, index, attempt, code, retryable)| {
                EventKind::StepFailed {
                    node,
                    index,
                    attempt,
                    error: StepError::new(code, ""),
                    retryable,
                }
            }),
        (node, index.clone(), attempt.clone(), arb_json(), 0u8..3).prop_map(
            |(node, index, attempt, output, k)| {
                let outcome = match k {
                    0 => Outcome::Succeeded {
                        output,
                        output_ref: None,
                    },
                    1 => Outcome::Failed {
                        error: StepError::new("X", ""),
                    },
                    _ => Outcome::Cancelled,
                };
                EventKind::ChildFinished {
                    node,
                    index,
                    attempt,
                    outcome,
                }
            }
        ),
        (node, index, attempt, 0u8..4).prop_map(|(node, index, attempt, k)| {
            EventKind::TimerFired {
                timer: match k {
                    0 => Timer::Deadline,
                    1 => Timer::Retry {
                        node,
                        index,
                        attempt,
                    },
                    2 => Timer::Timeout {
                        node,
                        index,
                        attempt,
                    },
                    _ => Timer::Wait {
                        node,
                        index,
                        attempt,
                    },
                },
            }
        }),
        "[a-z ]{0,10}".prop_map(|reason| EventKind::CancelRequested { reason }),
        "[a-z ]{0,10}".prop_map(|reason| EventKind::RetryRequested {
            by: "ops".into(),
            reason
        }),
    ];
    ("[a-z0-9]{1,4}", kind).prop_map(|(id, kind)| Event::new(id, kind))
}

/// Points half of the random events at real nodes, so that they reach deep code paths.
fn retarget(mut e: Event, nodes: &[String], seed: u64) -> Event {
    if nodes.is_empty() || seed.is_multiple_of(2) {
        return e;
    }
    let real = nodes[seed as usize % nodes.len()].clone();
    match &mut e.kind {
        EventKind::StepCompleted { node, .. }
        | EventKind::StepFailed { node, .. }
        | EventKind::ChildFinished { node, .. } => *node = real,
        EventKind::TimerFired {
            timer:
                Timer::Retry { node, .. } | Timer::Timeout { node, .. } | Timer::Wait { node, .. },
        } => *node = real,
        _ => {}
    }
    e
}
