//! The effects a transition asks for: data for the outbox, carried out after the commit.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Outcome;
use crate::state::{Parent, RunError, RunStatus};

/// An effect with its idempotency key, `{run}:{seq}:{n}`: the run, the sequence
/// number of the event that caused it and its position among that event's
/// effects. A redelivered effect carries the same key, so a connector or a
/// store that has seen the key does nothing the second time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub key: String,
    #[serde(flatten)]
    pub kind: EffectKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EffectKind {
    /// Start an attempt of a remote or call step through its binding's connector.
    Invoke {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
        /// Qualified contract name: the binding is looked up by it.
        contract: String,
        inputs: Map<String, Value>,
    },
    /// Ask people for a decision; the approval service answers with `StepCompleted`
    /// (and expires the request itself, completing with its `Expired` outcome).
    RequestApproval {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
        contract: String,
        inputs: Map<String, Value>,
    },
    /// Tell the connector an attempt is no longer wanted (timed out, run ended).
    /// Best effort: a completion that still arrives is rejected as stale.
    CancelStep {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
    },
    SetTimer {
        timer: Timer,
        due_at: u64,
    },
    CancelTimer {
        timer: Timer,
    },
    /// Create and start the child run `child` of `flow` (at `version`), with `input`.
    StartChild {
        child: String,
        flow: String,
        version: String,
        parent: Parent,
        input: Map<String, Value>,
    },
    CancelChild {
        child: String,
    },
    /// Deliver `ChildFinished` to the parent run.
    NotifyParent {
        parent: Parent,
        outcome: Outcome,
    },
    /// Keep child `index`'s output among fan-out `node`'s results, in the same
    /// commit as the state that counts it.
    StoreResult {
        node: String,
        index: u32,
        output: Value,
    },
    /// Keep `value` beside the run's state, under `value_ref`, in the same
    /// commit as the state that refers to it (a value kept before is kept once).
    StoreValue {
        value_ref: crate::state::ValueRef,
        value: std::sync::Arc<Value>,
    },
    /// The run refers to a value stored before it started (an upload): the
    /// store records the reference, so the value stays while the run does.
    ReferValue {
        value_ref: crate::state::ValueRef,
    },
    /// The run ended: for history, quotas and schedules' overlap policies.
    Finished {
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<RunError>,
    },
}

/// A timer of a run: the timer store keys rows by (run, timer), so setting one
/// twice is one row and cancelling an absent one does nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timer {
    /// The flow's deadline.
    Deadline,
    /// Start the next attempt after a failed one.
    Retry {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
    },
    /// An attempt's `timeout`.
    Timeout {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
    },
    /// A wait step wakes up.
    Wait {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
    },
    /// Fan-out `node` goes on at once: the next batch of children starts, or its
    /// stored results are joined. `seq` is the sequence number of the event that
    /// set it: each one is a timer (and an event) of its own.
    FanOut { node: String, seq: u64 },
}

impl Timer {
    /// A stable text id, unique within the run: `retry:train:2`, `timeout:trials[3]:1`.
    pub fn id(&self) -> String {
        match self {
            Timer::Deadline => "deadline".into(),
            Timer::Retry {
                node,
                index,
                attempt,
            } => format!("retry:{}", slot_id(node, *index, *attempt)),
            Timer::Timeout {
                node,
                index,
                attempt,
            } => format!("timeout:{}", slot_id(node, *index, *attempt)),
            Timer::Wait {
                node,
                index,
                attempt,
            } => format!("wait:{}", slot_id(node, *index, *attempt)),
            Timer::FanOut { node, seq } => format!("fan_out:{node}:{seq}"),
        }
    }
}

/// A step as people and ids name it: `train`, or `trials[3]` for a child of a fan-out.
pub fn step_label(node: &str, index: Option<u32>) -> String {
    match index {
        Some(i) => format!("{node}[{i}]"),
        None => node.to_string(),
    }
}

/// One attempt of a step, for ids: `train:2`, `trials[3]:1`.
pub fn slot_id(node: &str, index: Option<u32>, attempt: u32) -> String {
    format!("{}:{attempt}", step_label(node, index))
}
