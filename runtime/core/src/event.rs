//! The events that drive a run: everything that happens to it comes in as one of these.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::effect::Timer;
use std::collections::BTreeMap;

use crate::state::{StepError, ValueRef};

/// An event for one run. The id is unique per run (the event log's key); the
/// engine derives ids of events it makes itself from what they answer, e.g.
/// the timer or the child, so that a redelivery carries the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// Start the run with these parameter values (missing ones take their default).
    Started {
        #[serde(default)]
        input: Map<String, Value>,
        /// Parameters given by reference: values uploaded before
        /// (`POST /v1/tenants/{id}/values`), by hash.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        input_refs: BTreeMap<String, ValueRef>,
    },
    /// A connector reports an attempt's output (remote and call steps, approvals).
    StepCompleted {
        node: String,
        /// The child's position, for a fan-out over steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
        #[serde(default)]
        output: Value,
        /// The output, kept by reference: how the log writes an output larger
        /// than `INLINE_BYTES` (then `output` is `null`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_ref: Option<ValueRef>,
    },
    /// A connector reports that an attempt failed; `retryable: false` means the
    /// remote system knows that trying again cannot help.
    StepFailed {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
        error: StepError,
        retryable: bool,
    },
    TimerFired {
        timer: Timer,
    },
    /// A subflow child run (of a call or a fan-out) finished.
    ChildFinished {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
        outcome: Outcome,
    },
    CancelRequested {
        #[serde(default)]
        reason: String,
    },
    /// Someone asked a failed run to go on from where it failed (a redrive):
    /// its failed and cancelled steps start again as new attempts, the steps
    /// that succeeded keep their outputs. Applies only to a failed top-level
    /// run; `by` is the caller's name, recorded for the log.
    RetryRequested {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        by: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
}

/// How a child run ended, as its parent learns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded {
        #[serde(default)]
        output: Value,
        /// As in `StepCompleted`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_ref: Option<ValueRef>,
    },
    Failed {
        error: StepError,
    },
    Cancelled,
}

impl Event {
    pub fn new(id: impl Into<String>, kind: EventKind) -> Self {
        Self {
            id: id.into(),
            kind,
        }
    }
}
