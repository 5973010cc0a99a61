//! The state record of a run: the fold of its events, small enough that millions fit on disk.
//!
//! Only what cannot be recomputed from the flow IR is kept: the inputs the caller
//! gave (defaults come from the IR when read), one compact entry per node, the
//! result or error. Fan-out items are not stored: the list is re-evaluated from
//! values that never change once its node started.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The default limit on a run's encoded state, in bytes.
pub const DEFAULT_STATE_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub tenant: String,
    /// The flow's name in its bundle.
    pub flow: String,
    /// The flow's content hash: a run stays on the version it started with.
    pub version: String,
    /// Set when this run is a subflow child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    pub status: RunStatus,
    /// Milliseconds since the epoch; 0 until started.
    #[serde(default)]
    pub started_at: u64,
    /// When the flow's deadline fires, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// The parameters the caller gave; the others take their IR default when read.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub input: Map<String, Value>,
    /// One per IR node, in the flow's node order.
    pub nodes: Vec<NodeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// The number of events applied; the sequence number of the next one.
    pub seq: u64,
    /// The id of the last applied event: a redelivery of it is a `Duplicate`.
    /// Older duplicates find what they name already consumed (see `Rejection::Stale`),
    /// and the event log's unique key on (run, event id) is the final guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<String>,
}

/// Where a subflow child reports back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub run: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub attempt: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Created by the engine, waiting for its `Started` event.
    Created,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Why a run failed, for people and for queries by error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// `DeadlineExceeded`, `InvalidInput`, a step's error name, …
    pub code: String,
    pub message: String,
    /// The node that failed, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A step's error as a connector (or the core) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// An error name from the contract's `raises`, or `Timeout`, `StateTooLarge`, …
    pub code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Messages are for people; longer ones are cut so that a chatty connector cannot
/// grow the state.
pub const MAX_ERROR_MESSAGE: usize = 512;

impl StepError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let mut cut = MAX_ERROR_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Self {
            code: code.into(),
            message,
        }
    }
}

/// One node of the flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Not started: waiting for its dependencies (or never started, in a run
    /// that ended first).
    Pending,
    /// A guard was false: its output is absent (`null`).
    Skipped,
    /// A fan-out in progress: one slot per element of the list. Replaced by a
    /// `Single` slot holding the joined output (or the error) when it is decided.
    FanOut(Vec<Slot>),
    /// A step or subflow call, or a decided fan-out. Serialized as the slot itself.
    #[serde(untagged)]
    Single(Slot),
}

/// One execution of a call: a plain node or one child of a fan-out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    Pending,
    /// The attempt (from 1) that is out.
    Running(u32),
    /// This attempt failed; the retry timer starts the next one.
    RetryWait(u32),
    /// Shared: a transition copies the run, and outputs are most of it.
    Succeeded(Arc<Value>),
    Failed(StepError),
    Cancelled,
}

impl Slot {
    pub fn is_active(&self) -> bool {
        matches!(self, Slot::Running(_) | Slot::RetryWait(_))
    }
    pub fn is_done(&self) -> bool {
        matches!(self, Slot::Succeeded(_) | Slot::Failed(_) | Slot::Cancelled)
    }
}

impl NodeState {
    /// Succeeded or skipped: later nodes may use it.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            NodeState::Skipped | NodeState::Single(Slot::Succeeded(_))
        )
    }
}

impl Run {
    /// A run of a flow with `node_count` nodes, waiting for its `Started` event.
    pub fn new(
        id: impl Into<String>,
        tenant: impl Into<String>,
        flow: &eflow_ir::Flow,
        parent: Option<Parent>,
    ) -> Self {
        Self {
            id: id.into(),
            tenant: tenant.into(),
            flow: flow.name.clone(),
            version: flow.hash.clone(),
            parent,
            status: RunStatus::Created,
            started_at: 0,
            deadline: None,
            input: Map::new(),
            nodes: vec![NodeState::Pending; flow.nodes.len()],
            result: None,
            error: None,
            seq: 0,
            last_event: None,
        }
    }

    /// The number of bytes of the run's compact JSON, without building it.
    pub fn encoded_size(&self) -> usize {
        encoded_size(self)
    }

    /// The compact JSON the stores keep. It cannot fail, so a state is never
    /// stored empty: serde_json fails only on a map whose keys are not strings or
    /// a `Serialize` impl that returns an error, and a run has neither (its maps
    /// are keyed by `String`, its impls derived).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a run's state serializes infallibly")
    }
}

/// The length of `v`'s compact JSON, counted as it is written.
pub fn encoded_size<T: Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Plain data into a writer that cannot fail: cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}
