//! `apply`: the pure state machine that folds one event into a run.
//!
//! No I/O, no clock, no randomness: `now_ms` is an argument and every consequence
//! is an `Effect` in the returned `Transition`. The same run, event and time always
//! give the same transition, which is what makes replay, batching and the property
//! tests possible.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use eflow_ir::{Backoff, Call, Flow, Join, Node, StepKind};
use serde_json::{Map, Value};

use crate::effect::{Effect, EffectKind, Timer};
use crate::eval::{EvalError, Need, Scope, eval};
use crate::event::{Event, EventKind, Outcome};
use crate::state::{
    Child, FanOut, INLINE_BYTES, NodeState, Parent, Repeat, Run, RunError, RunStatus, Slot,
    StepError, ValueRef, Values,
};
use crate::time::{format_rfc3339, parse_rfc3339};
use crate::validate::{FlowIndex, ValidatedBundle};
use crate::value;

/// The new state and what must happen because of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub run: Run,
    pub effects: Vec<Effect>,
}

/// Why an event was not applied. The state is unchanged; the worker records the
/// rejection and moves on (a `Duplicate` or `Stale` is the normal result of a
/// redelivery and is not an error). Serialisable: a worker's answer crosses
/// processes on the distributed bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rejection {
    /// This event was the last one applied.
    Duplicate,
    /// The run has finished: nothing changes it any more.
    Finished,
    /// Only `Started` (or a cancellation) applies to a run that has not started.
    NotStarted,
    /// The run's flow (at its version) is not in this bundle.
    UnknownFlow { flow: String, version: String },
    /// What the event names (an attempt, a timer, a child) is no longer awaited:
    /// a late completion of a timed-out attempt, a cancelled timer that fired
    /// anyway, a second copy of an event already applied.
    Stale { reason: String },
    /// The event does not fit the flow: an unknown node, an index on a plain node.
    Invalid { reason: String },
    /// `Started` with input that does not fit the flow's parameters.
    InvalidInput { errors: Vec<String> },
    /// A retry of a run that has not failed: only a failed run goes on.
    NotFailed { status: RunStatus },
    /// A retry of a failed run that cannot go on from where it failed: a
    /// subflow child (its parent moved on), a fan-out or `repeat` that did
    /// not finish, or a failure no step of the run could undo.
    NotRetryable { reason: String },
    /// The transition reads the joined lists of these fan-outs, or values kept
    /// by reference with these hashes, which the given `Values` lack: load them
    /// and apply the same event again.
    Needs {
        results: Vec<String>,
        values: Vec<String>,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Duplicate => f.write_str("duplicate event"),
            Rejection::Finished => f.write_str("the run has finished"),
            Rejection::NotStarted => f.write_str("the run has not started"),
            Rejection::UnknownFlow { flow, version } => {
                write!(f, "flow `{flow}` at version {version} is not deployed")
            }
            Rejection::Stale { reason } => write!(f, "stale event: {reason}"),
            Rejection::Invalid { reason } => write!(f, "invalid event: {reason}"),
            Rejection::InvalidInput { errors } => write!(f, "invalid input: {}", errors.join("; ")),
            Rejection::NotFailed { status } => {
                let now = match status {
                    RunStatus::Created => "has not started",
                    RunStatus::Running => "is running",
                    RunStatus::Succeeded => "has succeeded",
                    RunStatus::Failed => "has failed",
                    RunStatus::Cancelled => "was cancelled",
                };
                write!(f, "the run {now}: only a failed run can be retried")
            }
            Rejection::NotRetryable { reason } => write!(f, "the run cannot be retried: {reason}"),
            Rejection::Needs { results, values } => {
                write!(
                    f,
                    "needs the results of [{}] and the values [{}]",
                    results.join(", "),
                    values.join(", ")
                )
            }
        }
    }
}

/// Error codes the core itself produces.
pub mod codes {
    pub const TIMEOUT: &str = "Timeout";
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    pub const STATE_TOO_LARGE: &str = "StateTooLarge";
    pub const VALUE_TOO_LARGE: &str = "ValueTooLarge";
    pub const INVALID_INPUT: &str = "InvalidInput";
    pub const INVALID_OUTPUT: &str = "InvalidOutput";
    pub const EVAL_ERROR: &str = "EvalError";
    pub const CANCELLED: &str = "Cancelled";
    pub const JOIN_FAILED: &str = "JoinFailed";
}

/// How many children of a fan-out one transition starts at most; the timer
/// `FanOut` starts the next batch at once, so that no commit writes a million rows.
pub const START_BATCH: u32 = 1_000;

/// How many children of a fan-out without `parallel` run at once.
pub const DEFAULT_WINDOW: u32 = 10_000;

/// How far past its oldest unfinished child a fan-out starts children: its
/// state keeps a bit per child in between, so this bounds it (16 KB).
pub const MAX_SPAN: u32 = 65_536;

/// Folds `event` into `run` at time `now_ms` (milliseconds since the epoch).
/// `values` holds what the state refers to but does not hold (the joined lists
/// of decided fan-outs); a transition that reads one it lacks is
/// `Rejection::Needs`.
pub fn apply(
    bundle: &ValidatedBundle,
    run: &Run,
    event: &Event,
    now_ms: u64,
    values: &Values,
) -> Result<Transition, Rejection> {
    let unknown = || Rejection::UnknownFlow {
        flow: run.flow.clone(),
        version: run.version.clone(),
    };
    let f = bundle.flow(&run.flow).ok_or_else(unknown)?;
    if f.flow.hash != run.version || run.nodes.len() != f.flow.nodes.len() {
        return Err(unknown());
    }
    if run.last_event.as_deref() == Some(event.id.as_str()) {
        return Err(Rejection::Duplicate);
    }
    // A retry is the one event a finished (failed) run takes.
    let retry = matches!(event.kind, EventKind::RetryRequested { .. });
    if run.status.is_finished() && !retry {
        return Err(Rejection::Finished);
    }
    // A retry named for one the run has had already (`retry:N`, the id the
    // API gives the run's N-th retry) comes again: it must not retry the run
    // once more after it failed again.
    if retry && is_past_retry(&event.id, run.retries) {
        return Err(Rejection::Duplicate);
    }
    let mut cx = Cx {
        flow: f.flow,
        index: f.index,
        bundle,
        run: run.clone(),
        effects: Vec::new(),
        now: now_ms,
        values,
        kept: HashMap::new(),
        needs: RefCell::default(),
        filling: false,
        started: 0,
        failing: false,
    };
    match &event.kind {
        EventKind::Started { input, input_refs } => cx.start(input, input_refs)?,
        EventKind::RetryRequested { .. } => cx.retry()?,
        _ if cx.run.status == RunStatus::Created => {
            if let EventKind::CancelRequested { reason } = &event.kind {
                cx.cancel(reason);
            } else {
                return Err(Rejection::NotStarted);
            }
        }
        EventKind::StepCompleted {
            node,
            index,
            attempt,
            output,
            output_ref,
        } => {
            let at = cx.slot_at(node, *index, false)?;
            cx.expect_running(at, *attempt)?;
            let output = cx.given(output, output_ref.as_ref())?;
            cx.succeed(at, *attempt, output);
        }
        EventKind::StepFailed {
            node,
            index,
            attempt,
            error,
            retryable,
        } => {
            let at = cx.slot_at(node, *index, false)?;
            cx.expect_running(at, *attempt)?;
            let error = StepError::new(error.code.clone(), error.message.clone());
            cx.fail_attempt(at, *attempt, error, *retryable, true);
        }
        EventKind::ChildFinished {
            node,
            index,
            attempt,
            outcome,
        } => {
            let at = cx.slot_at(node, *index, true)?;
            cx.expect_running(at, *attempt)?;
            match outcome {
                Outcome::Succeeded { output, output_ref } => {
                    let output = cx.given(output, output_ref.as_ref())?;
                    cx.succeed(at, *attempt, output);
                }
                Outcome::Failed { error } => {
                    let error = StepError::new(error.code.clone(), error.message.clone());
                    cx.fail_attempt(at, *attempt, error, true, true);
                }
                Outcome::Cancelled => {
                    let error = StepError::new(codes::CANCELLED, "the child run was cancelled");
                    cx.fail_attempt(at, *attempt, error, false, true);
                }
            }
        }
        EventKind::TimerFired { timer } => cx.timer(timer)?,
        EventKind::CancelRequested { reason } => cx.cancel(reason),
    }
    let needs = cx.needs.take();
    if !needs.is_empty() {
        let (mut results, mut values) = (Vec::new(), Vec::new());
        for n in needs {
            match n {
                Need::Results(node) => results.push(node),
                Need::Value(hash) => values.push(hash),
            }
        }
        return Err(Rejection::Needs { results, values });
    }
    let seq = run.seq;
    cx.run.seq = seq + 1;
    cx.run.last_event = Some(event.id.clone());
    let effects = cx
        .effects
        .into_iter()
        .enumerate()
        .map(|(n, kind)| Effect {
            key: format!("{}:{seq}:{n}", run.id),
            kind,
        })
        .collect();
    Ok(Transition {
        run: cx.run,
        effects,
    })
}

/// The event to apply and log in place of `event` when it carries a step
/// output larger than one value may be, so that no log ever holds it: a
/// completion whose output is larger than `limits.value_bytes` becomes the
/// attempt's `ValueTooLarge` failure, not retried, naming the output's size
/// and the limit; the output of a step that declares none (which `apply` does
/// not keep) becomes `null`. `None`: apply and log `event` as it is.
pub fn refuse_oversized(bundle: &ValidatedBundle, run: &Run, event: &Event) -> Option<Event> {
    let EventKind::StepCompleted {
        node,
        index,
        attempt,
        output,
        output_ref: None,
    } = &event.kind
    else {
        return None;
    };
    let limit = bundle.limits.value_bytes;
    let size = crate::state::encoded_size(output);
    if size <= limit {
        return None;
    }
    let f = bundle.flow(&run.flow)?;
    let declares_output = f
        .index
        .nodes
        .get(node)
        .is_some_and(|&n| f.flow.nodes[n].output.is_some());
    let kind = if declares_output {
        EventKind::StepFailed {
            node: node.clone(),
            index: *index,
            attempt: *attempt,
            error: StepError::new(
                codes::VALUE_TOO_LARGE,
                format!(
                    "the output is {size} bytes, more than the {limit} bytes one value may be: return references (URIs), not data"
                ),
            ),
            retryable: false,
        }
    } else {
        EventKind::StepCompleted {
            node: node.clone(),
            index: *index,
            attempt: *attempt,
            output: Value::Null,
            output_ref: None,
        }
    };
    Some(Event::new(event.id.clone(), kind))
}

/// `event` as the run's log keeps it after transition `t`: a value larger
/// than `INLINE_BYTES` that the run now keeps by reference is written as its
/// reference (`input_refs` of `started`, `output_ref` of a completion), so
/// the log does not hold it a second time. Applying the logged event to the
/// run as it was gives the same transition, given the values.
pub fn as_logged<'e>(event: &'e Event, t: &Transition) -> std::borrow::Cow<'e, Event> {
    use std::borrow::Cow;
    let kept = |output: &Value| -> Option<ValueRef> {
        if crate::state::encoded_size(output) <= INLINE_BYTES {
            return None;
        }
        let (r, _) = ValueRef::of(output);
        let named = t.effects.iter().any(|e| match &e.kind {
            EffectKind::StoreValue { value_ref, .. } | EffectKind::ReferValue { value_ref } => {
                value_ref.hash == r.hash
            }
            _ => false,
        });
        (named || t.run.refers_to(&r.hash)).then_some(r)
    };
    let kind = match &event.kind {
        EventKind::Started { input, input_refs } => {
            let moved: Vec<&String> = input
                .keys()
                .filter(|k| t.run.input_refs.contains_key(*k) && !t.run.input.contains_key(*k))
                .collect();
            if moved.is_empty() {
                return Cow::Borrowed(event);
            }
            let mut input = input.clone();
            let mut refs = input_refs.clone();
            for k in moved {
                input.remove(k);
                if let Some(r) = t.run.input_refs.get(k) {
                    refs.insert(k.clone(), r.clone());
                }
            }
            EventKind::Started {
                input,
                input_refs: refs,
            }
        }
        EventKind::StepCompleted {
            node,
            index,
            attempt,
            output,
            output_ref: None,
        } => match kept(output) {
            Some(r) => EventKind::StepCompleted {
                node: node.clone(),
                index: *index,
                attempt: *attempt,
                output: Value::Null,
                output_ref: Some(r),
            },
            None => return Cow::Borrowed(event),
        },
        EventKind::ChildFinished {
            node,
            index,
            attempt,
            outcome:
                Outcome::Succeeded {
                    output,
                    output_ref: None,
                },
        } => match kept(output) {
            Some(r) => EventKind::ChildFinished {
                node: node.clone(),
                index: *index,
                attempt: *attempt,
                outcome: Outcome::Succeeded {
                    output: Value::Null,
                    output_ref: Some(r),
                },
            },
            None => return Cow::Borrowed(event),
        },
        _ => return Cow::Borrowed(event),
    };
    Cow::Owned(Event::new(event.id.clone(), kind))
}

/// A slot address: a node and, for a fan-out, the child's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    node: usize,
    index: Option<u32>,
}

/// One transition in the making.
struct Cx<'a> {
    flow: &'a Flow,
    index: &'a FlowIndex,
    bundle: &'a ValidatedBundle,
    run: Run,
    effects: Vec<EffectKind>,
    now: u64,
    values: &'a Values,
    /// Values this transition kept by reference, which it may read again
    /// (a fan-out over an input kept as the run starts), by hash.
    kept: HashMap<String, Arc<Value>>,
    /// What an evaluation read that `values` lacks.
    needs: RefCell<BTreeSet<Need>>,
    /// A fan-out is starting children: a child that ends at once does not start more.
    filling: bool,
    /// Children this transition started, of every fan-out: at most `START_BATCH`.
    started: u32,
    /// The run is failing: the `join all` fan-outs it stops are kept for a retry.
    failing: bool,
}

/// Whether `id` names a retry the run has had: `retry:N` with N at most
/// `retries`. Other ids (tests', tools') are not judged by their form.
fn is_past_retry(id: &str, retries: u32) -> bool {
    id.strip_prefix("retry:")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n <= retries)
}

fn stale<T>(reason: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection::Stale {
        reason: reason.into(),
    })
}

fn invalid<T>(reason: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection::Invalid {
        reason: reason.into(),
    })
}

/// The wait before attempt `failed + 1`: fixed, or doubling from the initial
/// delay after the first failure, capped at the maximum.
pub fn backoff_ms(backoff: &Backoff, failed: u32) -> u64 {
    match *backoff {
        Backoff::Fixed { delay_ms } => delay_ms,
        Backoff::Exponential { initial_ms, max_ms } => {
            let shift = failed.saturating_sub(1).min(63);
            initial_ms.saturating_mul(1u64 << shift).min(max_ms)
        }
    }
}

impl<'a> Cx<'a> {
    fn node(&self, at: At) -> &'a Node {
        // `at.node` always comes from the flow's own index.
        &self.flow.nodes[at.node]
    }

    fn node_id(&self, at: At) -> String {
        self.node(at).id.clone()
    }

    fn scope<'s>(&'s self, item: Option<&'s Value>) -> Scope<'s> {
        Scope {
            flow: self.flow,
            nodes: &self.index.nodes,
            run: &self.run,
            item,
            values: self.values,
            kept: &self.kept,
            needs: &self.needs,
        }
    }

    /// The slot at `at`; `None` for a node not started, or a child that is done
    /// (its outcome is counted, not kept).
    fn slot(&self, at: At) -> Option<Slot> {
        match (self.run.nodes.get(at.node)?, at.index) {
            (NodeState::Single(s), None) => Some(s.clone()),
            (NodeState::FanOut(fo), Some(i)) => match fo.child(i) {
                Child::NotStarted => Some(Slot::Pending),
                Child::Active(s) => Some(s),
                Child::Done => None,
            },
            // Only the iteration that is out has a slot.
            (NodeState::Repeat(r), Some(i)) if r.iteration == i => Some(r.slot.clone()),
            _ => None,
        }
    }

    fn set_slot(&mut self, at: At, slot: Slot) {
        match (self.run.nodes.get_mut(at.node), at.index) {
            (Some(n), None) => *n = NodeState::Single(slot),
            (Some(NodeState::FanOut(fo)), Some(i)) => fo.set(i, slot),
            (Some(NodeState::Repeat(r)), Some(i)) if r.iteration == i => r.slot = slot,
            _ => {}
        }
    }

    /// Resolves an event's node and index to a slot of this flow.
    fn slot_at(&self, node: &str, index: Option<u32>, child: bool) -> Result<At, Rejection> {
        let Some(&n) = self.index.nodes.get(node) else {
            return invalid(format!("`{}` has no node `{node}`", self.flow.name));
        };
        let ir = &self.flow.nodes[n];
        if ir.repeat.is_some() && index.is_none() {
            return invalid(format!(
                "`{node}` is a `repeat`: the event needs the iteration as its index"
            ));
        }
        match (&ir.fan_out, index) {
            (Some(_), None) => {
                return invalid(format!("`{node}` is a fan-out: the event needs an index"));
            }
            (None, Some(_)) if ir.repeat.is_some() => {}
            (None, Some(_)) => {
                return invalid(format!("`{node}` is not a fan-out: the event has an index"));
            }
            _ => {}
        }
        let is_flow = matches!(ir.call, Call::Flow { .. });
        if is_flow != child {
            return invalid(if child {
                format!("`{node}` calls a step, not a subflow")
            } else {
                format!("`{node}` calls a subflow: its result comes as `child_finished`")
            });
        }
        if !child && self.kind(ir) == Some(StepKind::Wait) {
            return invalid(format!(
                "`{node}` is a wait step: it completes when its timer fires"
            ));
        }
        Ok(At { node: n, index })
    }

    fn expect_running(&self, at: At, attempt: u32) -> Result<(), Rejection> {
        match self.slot(at) {
            Some(Slot::Running(a)) if a == attempt => Ok(()),
            Some(Slot::Running(a)) => {
                stale(format!("attempt {attempt} is over; attempt {a} is running"))
            }
            Some(other) => stale(format!("no attempt is running ({})", slot_name(&other))),
            None if self.node(at).repeat.is_some() => {
                stale("that iteration of the `repeat` is not the one that is out")
            }
            None if at.index.is_some() => stale("the child is done"),
            None => stale("the node has not started"),
        }
    }

    /// The attempt numbers earlier retries of the run used up at `at`'s node;
    /// 0 for a node never started again, and for fan-out children and
    /// `repeat` iterations, which a retry never starts again.
    fn attempt_base(&self, at: At) -> u32 {
        if at.index.is_some() {
            return 0;
        }
        let id = &self.node(at).id;
        self.run.attempt_base.get(id).copied().unwrap_or(0)
    }

    fn kind(&self, n: &Node) -> Option<StepKind> {
        match &n.call {
            Call::Step { contract, .. } => self.flow.contracts.get(contract).map(|c| c.kind),
            Call::Flow { .. } => None,
        }
    }

    // ----- starting -----

    fn start(
        &mut self,
        input: &Map<String, Value>,
        refs: &BTreeMap<String, ValueRef>,
    ) -> Result<(), Rejection> {
        if self.run.status != RunStatus::Created {
            return Err(Rejection::Duplicate);
        }
        // Parameters given by reference are checked like the others: load them.
        let mut given: Vec<(&str, &Value)> = input.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut missing = Vec::new();
        for (name, r) in refs {
            match self.values.stored.get(&r.hash) {
                Some(v) => given.push((name.as_str(), &**v)),
                None => missing.push(r.hash.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(Rejection::Needs {
                results: Vec::new(),
                values: missing,
            });
        }
        let mut errors = crate::input::check_params(self.flow, given)
            .err()
            .unwrap_or_default();
        errors.extend(
            refs.keys()
                .filter(|name| input.contains_key(*name))
                .map(|name| format!("`{name}` is given both inline and by reference")),
        );
        self.run.started_at = self.now;
        self.run.status = RunStatus::Running;
        if !errors.is_empty() {
            if self.run.parent.is_none() {
                return Err(Rejection::InvalidInput { errors });
            }
            // A child cannot be refused: its parent waits for it. It fails instead.
            self.finish_failed(codes::INVALID_INPUT, errors.join("; "), None);
            return Ok(());
        }
        let mut inline = Map::new();
        for (name, v) in input {
            if crate::state::encoded_size(v) > INLINE_BYTES {
                let r = self.keep(v.clone());
                self.run.input_refs.insert(name.clone(), r);
            } else {
                inline.insert(name.clone(), v.clone());
            }
        }
        self.run.input = Arc::new(inline);
        for (name, r) in refs {
            self.run.input_refs.insert(name.clone(), r.clone());
            self.effects.push(EffectKind::ReferValue {
                value_ref: r.clone(),
            });
        }
        if let Some(t) = self.flow.timeout_ms {
            let due = self.now.saturating_add(t);
            self.run.deadline = Some(due);
            self.effects.push(EffectKind::SetTimer {
                timer: Timer::Deadline,
                due_at: due,
            });
        }
        self.advance();
        Ok(())
    }

    /// A failed run goes on from where it failed: every node that failed or
    /// was cancelled by the failure is pending again, with its attempts
    /// numbered past those it used (so an answer to an old attempt is stale
    /// and a subflow call starts a new child), and the run advances: those
    /// nodes start again, the others keep their outputs. A `join all`
    /// fan-out goes on from where it stood (`Run::stopped`): its succeeded
    /// children keep their stored results, the failed and stopped ones start
    /// again, then the cursor goes on. The flow's timeout counts again from
    /// now. Refused, changing nothing, for a run that has not failed, a
    /// subflow child (its parent learnt the failure and moved on: retry the
    /// parent), a `join any`/`join at_least` fan-out or a `repeat` left
    /// unfinished (their state keeps counters, not which child failed), and
    /// a failure no node holds (the result's evaluation), which would only
    /// happen again.
    fn retry(&mut self) -> Result<(), Rejection> {
        if self.run.status != RunStatus::Failed {
            return Err(Rejection::NotFailed {
                status: self.run.status,
            });
        }
        let refuse = |reason: String| Err(Rejection::NotRetryable { reason });
        if let Some(p) = &self.run.parent {
            return refuse(format!(
                "it is a subflow child of run {}, which has learnt that it failed; retry that run instead: it starts a new child",
                p.run
            ));
        }
        let mut again = Vec::new();
        for (j, n) in self.run.nodes.iter().enumerate() {
            let node = &self.flow.nodes[j];
            let redo = matches!(
                n,
                NodeState::Single(Slot::Failed(_) | Slot::Cancelled)
                    | NodeState::FanOut(_)
                    | NodeState::Repeat(_)
            );
            if !redo {
                continue;
            }
            if node.fan_out.is_some() && !self.run.stopped.contains_key(&node.id) {
                return refuse(format!(
                    "the fan-out `{}` failed or was stopped, and a retry starts a fan-out's failed children again only for `join all` (the counters of `join any` and `join at_least` do not say which children failed); start a new run",
                    node.id
                ));
            }
            if node.repeat.is_some() {
                return refuse(format!(
                    "the `repeat` `{}` failed or was stopped, and a retry does not start a loop again; start a new run",
                    node.id
                ));
            }
            again.push(j);
        }
        if again.is_empty() {
            let code = self.run.error.as_ref().map_or("", |e| e.code.as_str());
            return refuse(format!(
                "no step failed: the run failed with {code} after its steps, which a retry would meet again; start a new run"
            ));
        }
        let mut fan_outs = Vec::new();
        for j in again {
            let node = &self.flow.nodes[j];
            let used = node.retry.as_ref().map_or(1, |r| r.max_attempts.max(1));
            let base = self.run.attempt_base.entry(node.id.clone()).or_default();
            *base = base.saturating_add(used);
            let base = *base;
            // A `join all` goes on from where it stood, its succeeded children
            // kept (their results are stored); the others start again.
            self.run.nodes[j] = match self.run.stopped.remove(&node.id) {
                Some(mut fo) => {
                    fo.base = base;
                    fan_outs.push(j);
                    NodeState::FanOut(fo)
                }
                None => NodeState::Pending,
            };
        }
        self.run.stopped.clear();
        self.run.status = RunStatus::Running;
        self.run.error = None;
        self.run.retries = self.run.retries.saturating_add(1);
        if let Some(t) = self.flow.timeout_ms {
            let due = self.now.saturating_add(t);
            self.run.deadline = Some(due);
            self.effects.push(EffectKind::SetTimer {
                timer: Timer::Deadline,
                due_at: due,
            });
        }
        for j in fan_outs {
            let (open, first) = match &self.run.nodes[j] {
                NodeState::FanOut(fo) => (fo.open_children(), fo.base + 1),
                _ => continue,
            };
            for i in open {
                if !self.start_child(j, i, first) {
                    return Ok(());
                }
            }
            self.join(j);
            if self.run.status != RunStatus::Running {
                return Ok(());
            }
        }
        self.advance();
        Ok(())
    }

    /// Starts every node whose dependencies are settled, skipping those whose
    /// guards say so, until nothing changes; then finishes the run if all nodes are.
    fn advance(&mut self) {
        loop {
            if self.run.status != RunStatus::Running {
                return;
            }
            let mut progressed = false;
            for j in 0..self.run.nodes.len() {
                if !matches!(self.run.nodes[j], NodeState::Pending) {
                    continue;
                }
                let ready = self.index.deps[j]
                    .iter()
                    .all(|&d| self.run.nodes.get(d).is_some_and(NodeState::is_settled));
                if !ready {
                    continue;
                }
                progressed = true;
                match self.guards_pass(j) {
                    Ok(true) => self.start_node(j),
                    Ok(false) => self.run.nodes[j] = NodeState::Skipped,
                    Err(e) => {
                        let err = StepError::new(codes::EVAL_ERROR, format!("condition: {e}"));
                        self.run.nodes[j] = NodeState::Single(Slot::Failed(err.clone()));
                        self.node_failed(j, err);
                    }
                }
                if self.run.status != RunStatus::Running {
                    return;
                }
            }
            if !progressed {
                break;
            }
        }
        if self.run.nodes.iter().all(NodeState::is_settled) {
            self.finish_succeeded();
        }
    }

    /// Every guard holds. A false guard wins over another's evaluation error: a
    /// condition nested in a skipped `when` may read values that are absent.
    fn guards_pass(&self, j: usize) -> Result<bool, EvalError> {
        let node = &self.flow.nodes[j];
        let mut first_err = None;
        for g in &node.guards {
            let Some(cond) = self.flow.conditions.get(g.condition) else {
                continue;
            };
            match eval(cond, &self.scope(None)).as_deref() {
                Ok(Value::Bool(b)) if *b == g.value => {}
                Ok(Value::Bool(_)) => return Ok(false),
                Ok(other) => {
                    first_err.get_or_insert(EvalError(format!(
                        "a condition must be a Bool, got {}",
                        value::kind_of(other)
                    )));
                }
                Err(e) => {
                    first_err.get_or_insert(e.clone());
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    fn start_node(&mut self, j: usize) {
        let node = &self.flow.nodes[j];
        if node.repeat.is_some() {
            self.start_iteration(j, 0, None);
            return;
        }
        let Some(fo) = &node.fan_out else {
            let at = At {
                node: j,
                index: None,
            };
            self.start_attempt(at, self.attempt_base(at) + 1);
            return;
        };
        let len = match eval(&fo.over, &self.scope(None)).as_deref() {
            Ok(Value::Array(items)) => items.len(),
            Ok(other) => {
                let kind = value::kind_of(other);
                self.fail_node_now(
                    j,
                    StepError::new(
                        codes::EVAL_ERROR,
                        format!("a fan-out needs a list, got {kind}"),
                    ),
                );
                return;
            }
            Err(e) => {
                self.fail_node_now(j, StepError::new(codes::EVAL_ERROR, e.0.clone()));
                return;
            }
        };
        if u32::try_from(len).is_err() {
            self.fail_node_now(
                j,
                StepError::new(codes::INVALID_INPUT, "the fan-out list is too long"),
            );
            return;
        }
        // `join at_least k`: `k` is read once, as the fan-out starts.
        let mut need = 0;
        if let Join::AtLeast { k } = &fo.join {
            match eval(k, &self.scope(None)).as_deref() {
                Ok(v) if v.as_u64().is_some_and(|k| k >= 1) => {
                    need = u32::try_from(v.as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
                }
                Ok(v) => {
                    let err = StepError::new(
                        codes::EVAL_ERROR,
                        format!("`join at_least k` needs k ≥ 1, got {v}"),
                    );
                    self.fail_node_now(j, err);
                    return;
                }
                Err(e) => {
                    let err = StepError::new(codes::EVAL_ERROR, format!("`at_least`: {e}"));
                    self.fail_node_now(j, err);
                    return;
                }
            }
        }
        let mut state = FanOut::new(len as u32);
        state.need = need;
        self.run.nodes[j] = NodeState::FanOut(state);
        // Decided before any child starts when it can be (an empty list, a
        // `k` larger than the list); else the first batch starts.
        self.join(j);
    }

    fn fail_node_now(&mut self, j: usize, err: StepError) {
        self.run.nodes[j] = NodeState::Single(Slot::Failed(err.clone()));
        self.node_failed(j, err);
    }

    /// Starts children of fan-out `j` from its cursor while fewer than its window
    /// (`parallel`, else `DEFAULT_WINDOW`) are active, at most `START_BATCH` in
    /// this transition; when the window has room for more, the `FanOut` timer
    /// starts the next batch at once.
    fn fill_fan_out(&mut self, j: usize) {
        if self.filling {
            return;
        }
        self.filling = true;
        let window = self.flow.nodes[j]
            .fan_out
            .as_ref()
            .and_then(|f| f.parallel)
            .map_or(DEFAULT_WINDOW, |p| u32::try_from(p).unwrap_or(u32::MAX));
        while let NodeState::FanOut(fo) = &self.run.nodes[j] {
            if fo.active() >= window || fo.next >= fo.len || fo.next - fo.low >= MAX_SPAN {
                break;
            }
            if self.started >= START_BATCH {
                self.continue_fan_out(j);
                break;
            }
            let (i, first) = (fo.next, fo.base + 1);
            if !self.start_child(j, i, first) {
                break;
            }
        }
        self.filling = false;
    }

    /// Starts child `i` of fan-out `j` at attempt `first`, counted against
    /// this transition's `START_BATCH`; false once the run is no longer
    /// running (a child that failed at once failed it).
    fn start_child(&mut self, j: usize, i: u32, first: u32) -> bool {
        self.start_attempt(
            At {
                node: j,
                index: Some(i),
            },
            first,
        );
        self.started += 1;
        self.run.status == RunStatus::Running
    }

    /// Sets fan-out `j`'s `FanOut` timer, due now, unless it is set.
    fn continue_fan_out(&mut self, j: usize) {
        let seq = self.run.seq;
        let NodeState::FanOut(fo) = &mut self.run.nodes[j] else {
            return;
        };
        if fo.timer.is_none() {
            fo.timer = Some(seq);
            self.effects.push(EffectKind::SetTimer {
                timer: Timer::FanOut {
                    node: self.flow.nodes[j].id.clone(),
                    seq,
                },
                due_at: self.now,
            });
        }
    }

    /// The current element of a fan-out: the list is re-evaluated rather than
    /// stored, as every value it reads is settled and never changes.
    fn item(&self, at: At) -> Result<Option<Value>, EvalError> {
        if let NodeState::Repeat(r) = &self.run.nodes[at.node] {
            return Ok(Some(r.last.as_deref().cloned().unwrap_or(Value::Null)));
        }
        let Some(i) = at.index else { return Ok(None) };
        let Some(fo) = &self.node(at).fan_out else {
            return Ok(None);
        };
        match eval(&fo.over, &self.scope(None))?.as_ref() {
            Value::Array(items) => Ok(items.get(i as usize).cloned()),
            other => Err(EvalError(format!(
                "a fan-out needs a list, got {}",
                value::kind_of(other)
            ))),
        }
    }

    fn inputs(&self, at: At) -> Result<Map<String, Value>, EvalError> {
        let item = self.item(at)?;
        let node = self.node(at);
        let scope = Scope {
            flow: self.flow,
            nodes: &self.index.nodes,
            run: &self.run,
            item: item.as_ref(),
            values: self.values,
            kept: &self.kept,
            needs: &self.needs,
        };
        let mut out = Map::new();
        for (name, e) in &node.inputs {
            out.insert(name.clone(), eval(e, &scope)?.into_owned());
        }
        Ok(out)
    }

    fn start_attempt(&mut self, at: At, attempt: u32) {
        let inputs = match self.inputs(at) {
            Ok(i) => i,
            Err(e) => {
                self.set_slot(at, Slot::Running(attempt));
                let err = StepError::new(codes::EVAL_ERROR, format!("inputs: {e}"));
                self.fail_attempt(at, attempt, err, false, false);
                return;
            }
        };
        self.set_slot(at, Slot::Running(attempt));
        let node = self.node(at);
        let id = node.id.clone();
        if let Some(t) = node.timeout_ms {
            self.effects.push(EffectKind::SetTimer {
                timer: Timer::Timeout {
                    node: id.clone(),
                    index: at.index,
                    attempt,
                },
                due_at: self.now.saturating_add(t),
            });
        }
        match &node.call {
            Call::Flow { name } => {
                let version = self
                    .bundle
                    .flow(name)
                    .map(|c| c.flow.hash.clone())
                    .unwrap_or_default();
                self.effects.push(EffectKind::StartChild {
                    child: self.child_id(at, attempt),
                    flow: name.clone(),
                    version,
                    parent: Parent {
                        run: self.run.id.clone(),
                        node: id,
                        index: at.index,
                        attempt,
                    },
                    input: inputs,
                });
            }
            Call::Step { contract, .. } => match self.kind(node) {
                Some(StepKind::Approval) => self.effects.push(EffectKind::RequestApproval {
                    node: id,
                    index: at.index,
                    attempt,
                    contract: contract.clone(),
                    inputs,
                }),
                Some(StepKind::Wait) => self.start_wait(at, attempt, &inputs),
                _ => self.effects.push(EffectKind::Invoke {
                    node: id,
                    index: at.index,
                    attempt,
                    contract: contract.clone(),
                    inputs,
                }),
            },
        }
    }

    /// `duration` counts from now; `time` is a moment, and one in the past wakes at once.
    fn start_wait(&mut self, at: At, attempt: u32, inputs: &Map<String, Value>) {
        let due = if let Some(d) = inputs.get("duration") {
            d.as_u64().map(|d| self.now.saturating_add(d))
        } else {
            inputs
                .get("time")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
                .map(|t| u64::try_from(t).unwrap_or(0))
        };
        let Some(due) = due else {
            let err = StepError::new(
                codes::INVALID_INPUT,
                "a wait needs a `duration` (ms) or a `time` (RFC 3339)",
            );
            self.fail_attempt(at, attempt, err, false, true);
            return;
        };
        if due <= self.now {
            let woke = Value::String(format_rfc3339(self.now));
            self.succeed(at, attempt, woke);
            return;
        }
        self.effects.push(EffectKind::SetTimer {
            timer: Timer::Wait {
                node: self.node_id(at),
                index: at.index,
                attempt,
            },
            due_at: due,
        });
    }

    /// `{parent}.{node}.{attempt}`, or `{parent}.{node}.{index}.{attempt}` in a
    /// fan-out: deterministic, so a redelivered `StartChild` names the same run,
    /// and unambiguous, as node ids never start with a digit.
    fn child_id(&self, at: At, attempt: u32) -> String {
        match at.index {
            Some(i) => format!("{}.{}.{i}.{attempt}", self.run.id, self.node(at).id),
            None => format!("{}.{}.{attempt}", self.run.id, self.node(at).id),
        }
    }

    // ----- finishing attempts -----

    fn succeed(&mut self, at: At, attempt: u32, output: Value) {
        let node = self.node(at);
        let expected = match (&node.output, &node.fan_out) {
            (Some(t), Some(fo)) if fo.join != Join::Any => match t {
                eflow_ir::Type::List { item } => Some(item.as_ref()),
                other => Some(other),
            },
            (t, _) => t.as_ref(),
        };
        // A step without an output keeps nothing: `after` only needs it finished.
        let output = if expected.is_some() {
            output
        } else {
            Value::Null
        };
        if let Some(ty) = expected
            && let Err(es) = value::check(&output, ty, &self.flow.types, "output")
        {
            let err = StepError::new(codes::INVALID_OUTPUT, es.join("; "));
            self.fail_attempt(at, attempt, err, false, true);
            return;
        }
        self.cancel_timeout(at, attempt);
        if node.repeat.is_some() {
            self.iteration_succeeded(at, attempt, output);
            return;
        }
        if let Some(i) = at.index {
            // A child's output goes to the results (`join any` keeps the first).
            let any = node.fan_out.as_ref().is_some_and(|f| f.join == Join::Any);
            if any {
                let first_yet =
                    matches!(&self.run.nodes[at.node], NodeState::FanOut(fo) if fo.first.is_none());
                if first_yet {
                    let kept = self.kept(output);
                    if let NodeState::FanOut(fo) = &mut self.run.nodes[at.node] {
                        fo.first = Some(kept);
                    }
                }
            } else {
                self.effects.push(EffectKind::StoreResult {
                    node: node.id.clone(),
                    index: i,
                    output,
                });
            }
            self.set_slot(at, Slot::Succeeded(Arc::new(Value::Null)));
            self.slot_done(at);
            return;
        }
        let kept = self.kept(output);
        self.set_slot(at, kept);
        if let Some(err) = self.state_too_large(at) {
            self.set_slot(at, Slot::Running(attempt));
            self.fail_attempt(at, attempt, err, false, false);
            return;
        }
        self.slot_done(at);
    }

    /// The `StateTooLarge` error when what the run gathers inline is over the
    /// limit, naming the step whose output made it so. Its input, bounded by
    /// the request that gave it, is not counted (nor walked: it is set
    /// aside); outputs past `INLINE_BYTES` are kept by reference, so only
    /// very many small outputs can reach it.
    fn state_too_large(&mut self, at: At) -> Option<StepError> {
        let input = std::mem::take(&mut self.run.input);
        let gathered = self.run.encoded_size();
        self.run.input = input;
        (gathered > self.bundle.limits.state_bytes).then(|| {
            StepError::new(
                codes::STATE_TOO_LARGE,
                format!(
                    "the output of `{}` would make the run's state {gathered} bytes, more than the {} bytes it may hold besides its input: every output over {INLINE_BYTES} bytes is kept by reference, so this run keeps too many small outputs; split the flow into subflows",
                    self.node(at).id,
                    self.bundle.limits.state_bytes
                ),
            )
        })
    }

    // ----- repeat -----

    /// Starts iteration `i` of `repeat` node `j`, given the previous
    /// iteration's output `last`.
    fn start_iteration(&mut self, j: usize, i: u32, last: Option<Arc<Value>>) {
        self.run.nodes[j] = NodeState::Repeat(Repeat {
            iteration: i,
            slot: Slot::Pending,
            last,
        });
        self.start_attempt(
            At {
                node: j,
                index: Some(i),
            },
            1,
        );
    }

    /// Iteration `at.index` of a `repeat` produced `output`: the loop ends with it
    /// when `until` holds or the bound is reached, else the next iteration starts
    /// with it. Only this output is kept, never the earlier ones.
    fn iteration_succeeded(&mut self, at: At, attempt: u32, output: Value) {
        let Some(r) = &self.node(at).repeat else {
            return;
        };
        let j = at.node;
        let i = at.index.unwrap_or(0);
        let output = Arc::new(output);
        let stop = match &r.until {
            None => Ok(false),
            Some(u) => match eval(u, &self.scope(Some(&output))).as_deref() {
                Ok(Value::Bool(b)) => Ok(*b),
                Ok(other) => Err(format!(
                    "an `until` condition must be a Bool, got {}",
                    value::kind_of(other)
                )),
                Err(e) => Err(e.0.clone()),
            },
        };
        let previous = match &self.run.nodes[j] {
            NodeState::Repeat(state) => state.last.clone(),
            _ => None,
        };
        let stop = match stop {
            Ok(stop) => stop || i + 1 >= r.max,
            Err(e) => {
                let err = StepError::new(codes::EVAL_ERROR, format!("until: {e}"));
                self.fail_node_now(j, err);
                return;
            }
        };
        self.run.nodes[j] = if stop {
            // The loop's value follows the rule of every output: by reference
            // past `INLINE_BYTES`.
            NodeState::Single(self.kept((*output).clone()))
        } else {
            NodeState::Repeat(Repeat {
                iteration: i,
                slot: Slot::Pending,
                last: Some(output.clone()),
            })
        };
        if let Some(err) = self.state_too_large(at) {
            self.run.nodes[j] = NodeState::Repeat(Repeat {
                iteration: i,
                slot: Slot::Running(attempt),
                last: previous,
            });
            self.fail_attempt(at, attempt, err, false, false);
            return;
        }
        if stop {
            self.advance();
        } else {
            self.start_iteration(j, i + 1, Some(output));
        }
    }

    fn cancel_timeout(&mut self, at: At, attempt: u32) {
        if self.node(at).timeout_ms.is_some() {
            self.effects.push(EffectKind::CancelTimer {
                timer: Timer::Timeout {
                    node: self.node_id(at),
                    index: at.index,
                    attempt,
                },
            });
        }
    }

    /// The attempt failed: retry it if the policy allows, else the slot fails.
    fn fail_attempt(
        &mut self,
        at: At,
        attempt: u32,
        error: StepError,
        retryable: bool,
        cancel_timeout: bool,
    ) {
        if cancel_timeout {
            self.cancel_timeout(at, attempt);
        }
        let node = self.node(at);
        // The policy counts the attempts since the run last started the slot:
        // a retry of the run numbers them on from a multiple of the policy's
        // attempts (`attempt_base`, `FanOut::base`).
        let nth = node.retry.as_ref().map_or(attempt, |r| {
            attempt.saturating_sub(1) % r.max_attempts.max(1) + 1
        });
        if let Some(r) = &node.retry
            && retryable
            && nth < r.max_attempts
            && !r.non_retryable.iter().any(|n| n == &error.code)
        {
            let due = self.now.saturating_add(backoff_ms(&r.backoff, nth));
            self.set_slot(at, Slot::RetryWait(attempt));
            self.effects.push(EffectKind::SetTimer {
                timer: Timer::Retry {
                    node: node.id.clone(),
                    index: at.index,
                    attempt,
                },
                due_at: due,
            });
            return;
        }
        self.set_slot(at, Slot::Failed(error));
        self.slot_done(at);
    }

    /// A slot reached a final state: decide the fan-out, or move the run on.
    fn slot_done(&mut self, at: At) {
        if self.node(at).repeat.is_some() {
            // An iteration that failed for good fails the loop, and the run.
            if let Some(Slot::Failed(err)) = self.slot(at) {
                self.fail_node_now(at.node, err);
            }
            return;
        }
        if at.index.is_some() {
            self.join(at.node);
            return;
        }
        if let Some(Slot::Failed(err)) = self.slot(at) {
            self.node_failed(at.node, err);
        } else {
            self.advance();
        }
    }

    /// Decides fan-out `j` under its join policy if it can be decided, else
    /// starts more children. A joined list of stored results is decided by the
    /// `FanOut` timer (`collect`), in a transition of its own, so that every
    /// result is committed before a later step reads the list.
    fn join(&mut self, j: usize) {
        self.decide(j, false);
    }

    fn decide(&mut self, j: usize, collect: bool) {
        let Some(fo) = &self.flow.nodes[j].fan_out else {
            return;
        };
        let NodeState::FanOut(state) = &self.run.nodes[j] else {
            return;
        };
        let total = u64::from(state.len);
        let ok = u64::from(state.succeeded);
        let failed = u64::from(state.failed);
        let last_failed = state.last_failure.clone();
        let k = u64::from(state.need);
        let joined = || Slot::Results(state.succeeded);
        let decided: Option<Result<Slot, StepError>> = match fo.join {
            // The child's own error, so that queries by error code find it.
            Join::All if failed > 0 => Some(Err(match &last_failed {
                Some((i, e)) => StepError::new(
                    e.code.clone(),
                    with_detail(format!("child {i} failed"), &e.message),
                ),
                None => StepError::new(codes::JOIN_FAILED, "a child was cancelled"),
            })),
            Join::All if ok == total => Some(Ok(joined())),
            Join::Any if ok > 0 => Some(Ok(state
                .first
                .clone()
                .unwrap_or_else(|| Slot::Succeeded(Arc::new(Value::Null))))),
            Join::Any if failed == total => Some(Err(StepError::new(
                codes::JOIN_FAILED,
                match &last_failed {
                    Some((i, e)) => with_detail(
                        format!("every child failed; child {i} with {}", e.code),
                        &e.message,
                    ),
                    None => "there was nothing to fan out over".into(),
                },
            ))),
            Join::AtLeast { .. } if ok + (total - ok - failed) < k => Some(Err(StepError::new(
                codes::JOIN_FAILED,
                if k > total {
                    format!("there are {total} children: at least {k} had to succeed")
                } else {
                    format!("{failed} of {total} children failed: at least {k} had to succeed")
                },
            ))),
            Join::AtLeast { .. } if ok + failed == total => Some(Ok(joined())),
            _ => None,
        };
        match decided {
            None => self.fill_fan_out(j),
            Some(Ok(Slot::Results(n))) if n > 0 && !collect => self.continue_fan_out(j),
            Some(result) => {
                if result.is_err() {
                    let failed = last_failed.as_ref().map(|(i, _)| *i);
                    self.keep_for_retry(j, failed);
                }
                self.cancel_slots(j);
                match result {
                    Ok(slot) => {
                        self.run.nodes[j] = NodeState::Single(slot);
                        self.advance();
                    }
                    Err(e) => self.fail_node_now(j, e),
                }
            }
        }
    }

    /// Node `j` failed for good: the run fails (no partial results).
    fn node_failed(&mut self, j: usize, err: StepError) {
        let id = self.flow.nodes[j].id.clone();
        let message = with_detail(format!("`{id}` failed with {}", err.code), &err.message);
        self.finish_failed(&err.code, message, Some(id));
    }

    // ----- timers -----

    fn timer(&mut self, timer: &Timer) -> Result<(), Rejection> {
        match timer {
            Timer::Deadline => {
                if self.run.deadline.is_none() {
                    return stale("the run has no deadline");
                }
                let limit = self.flow.timeout_ms.unwrap_or(0);
                // The deadline timer itself fired: nothing to cancel for it.
                self.run.deadline = None;
                self.finish_failed(
                    codes::DEADLINE_EXCEEDED,
                    format!("the run did not finish within its timeout of {limit} ms"),
                    None,
                );
            }
            Timer::Retry {
                node,
                index,
                attempt,
            } => {
                let at = self.slot_at_any(node, *index)?;
                match self.slot(at) {
                    Some(Slot::RetryWait(a)) if a == *attempt => {}
                    _ => {
                        return stale(format!(
                            "`{}` is not waiting to retry attempt {attempt}",
                            timer.id()
                        ));
                    }
                }
                self.start_attempt(at, attempt + 1);
                if at.index.is_some() {
                    self.join(at.node);
                }
            }
            Timer::Timeout {
                node,
                index,
                attempt,
            } => {
                let at = self.slot_at_any(node, *index)?;
                self.expect_running(at, *attempt)?;
                self.abandon(at, *attempt, false);
                let limit = self.node(at).timeout_ms.unwrap_or(0);
                let err = StepError::new(
                    codes::TIMEOUT,
                    format!("attempt {attempt} took longer than {limit} ms"),
                );
                self.fail_attempt(at, *attempt, err, true, false);
            }
            Timer::Wait {
                node,
                index,
                attempt,
            } => {
                let at = self.slot_at_any(node, *index)?;
                if self.kind(self.node(at)) != Some(StepKind::Wait) {
                    return invalid(format!("`{node}` is not a wait step"));
                }
                self.expect_running(at, *attempt)?;
                let woke = Value::String(format_rfc3339(self.now));
                self.succeed(at, *attempt, woke);
            }
            Timer::FanOut { node, seq } => {
                let Some(&j) = self.index.nodes.get(node) else {
                    return invalid(format!("`{}` has no node `{node}`", self.flow.name));
                };
                let NodeState::FanOut(fo) = &mut self.run.nodes[j] else {
                    return stale(format!("`{node}` is not fanning out"));
                };
                if fo.timer != Some(*seq) {
                    return stale(format!("`{}` is not the fan-out's timer", timer.id()));
                }
                fo.timer = None;
                self.decide(j, true);
            }
        }
        Ok(())
    }

    fn slot_at_any(&self, node: &str, index: Option<u32>) -> Result<At, Rejection> {
        let Some(&n) = self.index.nodes.get(node) else {
            return invalid(format!("`{}` has no node `{node}`", self.flow.name));
        };
        let indexed = self.flow.nodes[n].fan_out.is_some() || self.flow.nodes[n].repeat.is_some();
        if indexed != index.is_some() {
            return invalid(format!("the index does not fit `{node}`"));
        }
        Ok(At { node: n, index })
    }

    // ----- ending -----

    /// Tells the outside world that a running attempt is no longer wanted.
    fn abandon(&mut self, at: At, attempt: u32, with_timeout: bool) {
        if with_timeout {
            self.cancel_timeout(at, attempt);
        }
        let node = self.node(at);
        let id = node.id.clone();
        match &node.call {
            Call::Flow { .. } => self.effects.push(EffectKind::CancelChild {
                child: self.child_id(at, attempt),
            }),
            Call::Step { .. } if self.kind(node) == Some(StepKind::Wait) => {
                self.effects.push(EffectKind::CancelTimer {
                    timer: Timer::Wait {
                        node: id,
                        index: at.index,
                        attempt,
                    },
                });
            }
            Call::Step { .. } => self.effects.push(EffectKind::CancelStep {
                node: id,
                index: at.index,
                attempt,
            }),
        }
    }

    /// Cancels one active slot: its attempt or its retry timer.
    fn cancel_slot(&mut self, at: At) {
        match self.slot(at) {
            Some(Slot::Running(a)) => self.abandon(at, a, true),
            Some(Slot::RetryWait(a)) => {
                self.effects.push(EffectKind::CancelTimer {
                    timer: Timer::Retry {
                        node: self.node_id(at),
                        index: at.index,
                        attempt: a,
                    },
                });
            }
            _ => return,
        }
        self.set_slot(at, Slot::Cancelled);
    }

    /// Cancels fan-out `j`'s active children; those never started never start.
    fn cancel_slots(&mut self, j: usize) {
        if self.failing {
            self.keep_for_retry(j, None);
        }
        let active: Vec<u32> = match &self.run.nodes[j] {
            NodeState::FanOut(fo) => fo.active_children().map(|(i, _)| i).collect(),
            _ => return,
        };
        for i in active {
            self.cancel_slot(At {
                node: j,
                index: Some(i),
            });
        }
        if let NodeState::FanOut(fo) = &self.run.nodes[j]
            && let Some(seq) = fo.timer
        {
            let node = self.flow.nodes[j].id.clone();
            self.effects.push(EffectKind::CancelTimer {
                timer: Timer::FanOut { node, seq },
            });
        }
    }

    /// Keeps `join all` fan-out `j` as it stands for a retry of the run
    /// (`Run::stopped`): its child `failed`, which failed it, and its active
    /// children not done, so that a retry starts only those again. Not kept
    /// when a child was cancelled (its counters cannot say which), nor for
    /// the other joins, whose counters do not say which children failed.
    fn keep_for_retry(&mut self, j: usize, failed: Option<u32>) {
        let node = &self.flow.nodes[j];
        if node.fan_out.as_ref().is_none_or(|f| f.join != Join::All) {
            return;
        }
        let NodeState::FanOut(fo) = &self.run.nodes[j] else {
            return;
        };
        let mut kept = fo.clone();
        if let Some(i) = failed {
            kept.reopen(i);
            kept.failed = kept.failed.saturating_sub(1);
        }
        if kept.failed > 0 {
            return;
        }
        kept.last_failure = None;
        kept.slots.clear();
        kept.timer = None;
        self.run.stopped.insert(node.id.clone(), kept);
    }

    /// Cancels everything still going: attempts, children, timers.
    fn cancel_all(&mut self) {
        for j in 0..self.run.nodes.len() {
            match &self.run.nodes[j] {
                NodeState::Single(s) if s.is_active() => self.cancel_slot(At {
                    node: j,
                    index: None,
                }),
                NodeState::FanOut(_) => self.cancel_slots(j),
                NodeState::Repeat(r) if r.slot.is_active() => self.cancel_slot(At {
                    node: j,
                    index: Some(r.iteration),
                }),
                _ => {}
            }
        }
        if self.run.deadline.take().is_some() {
            self.effects.push(EffectKind::CancelTimer {
                timer: Timer::Deadline,
            });
        }
    }

    fn cancel(&mut self, reason: &str) {
        self.cancel_all();
        self.run.status = RunStatus::Cancelled;
        let message = if reason.is_empty() {
            "cancelled".to_string()
        } else {
            reason.to_string()
        };
        self.run.error = Some(RunError {
            code: codes::CANCELLED.into(),
            message,
            node: None,
        });
        self.effects.push(EffectKind::Finished {
            status: RunStatus::Cancelled,
            error: self.run.error.clone(),
        });
        self.notify_parent(Outcome::Cancelled);
    }

    fn finish_failed(&mut self, code: &str, message: String, node: Option<String>) {
        self.failing = true;
        self.cancel_all();
        self.failing = false;
        let error = RunError {
            code: code.into(),
            message,
            node,
        };
        self.run.status = RunStatus::Failed;
        self.run.error = Some(error.clone());
        self.effects.push(EffectKind::Finished {
            status: RunStatus::Failed,
            error: Some(error.clone()),
        });
        self.notify_parent(Outcome::Failed {
            error: StepError::new(error.code, error.message),
        });
    }

    fn finish_succeeded(&mut self) {
        let result = match &self.flow.result {
            None => Ok(Value::Null),
            Some(e) => eval(e, &self.scope(None)).map(Cow::into_owned),
        };
        let result = match result {
            Ok(v) => v,
            Err(e) => {
                self.finish_failed(codes::EVAL_ERROR, format!("result: {e}"), None);
                return;
            }
        };
        if let Some(ty) = &self.flow.output
            && let Err(es) = value::check(&result, ty, &self.flow.types, "result")
        {
            self.finish_failed(codes::INVALID_OUTPUT, es.join("; "), None);
            return;
        }
        if self.run.deadline.take().is_some() {
            self.effects.push(EffectKind::CancelTimer {
                timer: Timer::Deadline,
            });
        }
        self.run.status = RunStatus::Succeeded;
        if crate::state::encoded_size(&result) > INLINE_BYTES {
            self.run.result_ref = Some(self.keep(result.clone()));
        } else {
            self.run.result = (!result.is_null()).then(|| result.clone());
        }
        self.effects.push(EffectKind::Finished {
            status: RunStatus::Succeeded,
            error: None,
        });
        // A large result goes to the parent by reference: the same tenant's
        // value, which the parent loads when it reads it.
        let outcome = match &self.run.result_ref {
            Some(r) => Outcome::Succeeded {
                output: Value::Null,
                output_ref: Some(r.clone()),
            },
            None => Outcome::Succeeded {
                output: result,
                output_ref: None,
            },
        };
        self.notify_parent(outcome);
    }

    /// The output an event gives: inline, or a value kept by reference that
    /// must be loaded (`Needs`). One given by reference is referred to by this
    /// run from now on (it may have been stored by another run, a child).
    fn given(&mut self, output: &Value, r: Option<&ValueRef>) -> Result<Value, Rejection> {
        let Some(r) = r else {
            return Ok(output.clone());
        };
        let Some(v) = self.values.stored.get(&r.hash) else {
            return Err(Rejection::Needs {
                results: Vec::new(),
                values: vec![r.hash.clone()],
            });
        };
        if !self.run.refers_to(&r.hash) && !self.kept.contains_key(&r.hash) {
            self.effects.push(EffectKind::ReferValue {
                value_ref: r.clone(),
            });
            self.kept.insert(r.hash.clone(), v.clone());
        }
        Ok((**v).clone())
    }

    /// Keeps `value` beside the state (in the same commit as this transition)
    /// and answers its reference.
    fn keep(&mut self, value: Value) -> ValueRef {
        let (r, _) = ValueRef::of(&value);
        if self.kept.contains_key(&r.hash) || self.run.refers_to(&r.hash) {
            // Kept before, for this run: stored once.
            return r;
        }
        let value = Arc::new(value);
        self.kept.insert(r.hash.clone(), value.clone());
        self.effects.push(EffectKind::StoreValue {
            value_ref: r.clone(),
            value,
        });
        r
    }

    /// A succeeded slot holding `output`: inline, or by reference when it is
    /// larger than `INLINE_BYTES`.
    fn kept(&mut self, output: Value) -> Slot {
        if crate::state::encoded_size(&output) > INLINE_BYTES {
            Slot::Stored(self.keep(output))
        } else {
            Slot::Succeeded(Arc::new(output))
        }
    }

    fn notify_parent(&mut self, outcome: Outcome) {
        if let Some(parent) = &self.run.parent {
            self.effects.push(EffectKind::NotifyParent {
                parent: parent.clone(),
                outcome,
            });
        }
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

fn slot_name(s: &Slot) -> &'static str {
    match s {
        Slot::Pending => "pending",
        Slot::Running(_) => "running",
        Slot::RetryWait(_) => "waiting to retry",
        Slot::Succeeded(_) | Slot::Stored(_) | Slot::Results(_) => "succeeded",
        Slot::Failed(_) => "failed",
        Slot::Cancelled => "cancelled",
    }
}
