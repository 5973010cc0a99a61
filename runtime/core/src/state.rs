//! The state record of a run: the fold of its events, small enough that millions fit on disk.
//!
//! Only what cannot be recomputed from the flow IR is kept: the inputs the caller
//! gave (defaults come from the IR when read), one compact entry per node, the
//! result or error. Fan-out items are not stored: the list is re-evaluated from
//! values that never change once its node started. A fan-out keeps counters and
//! a window, never an entry per element; its children's outputs are stored
//! beside the state (see `docs/design/0003-fan-out-at-scale.md`).

use std::collections::{BTreeMap, HashMap};
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
    /// Shared: every transition copies the run, and never changes its input.
    #[serde(default, skip_serializing_if = "no_input")]
    pub input: Arc<Map<String, Value>>,
    /// The parameters given whose values are larger than `INLINE_BYTES`: kept
    /// beside the state, by content, and named here (never in `input`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_refs: BTreeMap<String, ValueRef>,
    /// One per IR node, in the flow's node order.
    pub nodes: Vec<NodeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The result, when it is larger than `INLINE_BYTES` (then `result` is `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<ValueRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// The number of events applied; the sequence number of the next one.
    pub seq: u64,
    /// The id of the last applied event: a redelivery of it is a `Duplicate`.
    /// Older duplicates find what they name already consumed (see `Rejection::Stale`),
    /// and the event log's unique key on (run, event id) is the final guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<String>,
    /// How many times the run was retried after failing (`RetryRequested`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Per node id, the attempt numbers earlier retries used up: a node
    /// started again by a retry numbers its attempts from `base + 1`, so a
    /// late answer to an old attempt (a callback, a child's result) is stale,
    /// and a new subflow child gets a new run id. Only nodes a retry started
    /// again have an entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attempt_base: BTreeMap<String, u32>,
    /// Per node id, a `join all` fan-out as it stood when the run failed: its
    /// succeeded children counted and marked done, the child that failed and
    /// those the failure stopped not done. A retry goes on from it, starting
    /// only those again. Kept only while the run has failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stopped: BTreeMap<String, FanOut>,
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
    /// A fan-out in progress. Replaced by a `Single` slot holding the joined
    /// output (or the error) when it is decided.
    FanOut(FanOut),
    /// A `repeat` in progress. Replaced by a `Single` slot holding the last
    /// iteration's output (or the error) when it ends.
    Repeat(Repeat),
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
    /// Succeeded with an output larger than `INLINE_BYTES`, kept beside the
    /// state: the output is the stored value.
    Stored(ValueRef),
    /// A decided `join all` or `join at_least`: succeeded, and its output is the
    /// list of the fan-out's `count` stored results, in input order.
    Results(u32),
    Failed(StepError),
    Cancelled,
}

impl Slot {
    pub fn is_active(&self) -> bool {
        matches!(self, Slot::Running(_) | Slot::RetryWait(_))
    }
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Slot::Succeeded(_)
                | Slot::Stored(_)
                | Slot::Results(_)
                | Slot::Failed(_)
                | Slot::Cancelled
        )
    }
}

/// A fan-out in progress: a cursor, a window of active children and counters.
/// Its size grows with the window (`next - low`), never with `len`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanOut {
    /// The number of elements of the list.
    pub len: u32,
    /// Children `0..next` have started.
    pub next: u32,
    /// Every child below `low` is done.
    pub low: u32,
    /// Which children of `low..next` are done: bit `k` is child `low + k`.
    #[serde(default, with = "hex_bits", skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<u64>,
    /// Active children of `low..next` that are not running their first attempt;
    /// every other active child is `Running(base + 1)`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<u32, Slot>,
    #[serde(default)]
    pub succeeded: u32,
    /// Children that failed for good or were cancelled.
    #[serde(default)]
    pub failed: u32,
    /// The latest child to fail, and its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<(u32, StepError)>,
    /// `join any`: the first success (`Succeeded` or `Stored`), kept until the
    /// node is decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<Slot>,
    /// `join at_least k`: `k`, read as the fan-out started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub need: u32,
    /// The `FanOut` timer that is set and has not fired: the sequence number
    /// of the event that set it, which makes its id unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<u64>,
    /// The attempt numbers earlier runs of this fan-out used up (a retry of
    /// the run starts its children again from `base + 1`); 0 at first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub base: u32,
}

/// A `repeat` in progress: the iteration that is out, its slot, and the
/// previous iteration's output. Earlier iterations' outputs are not kept (they
/// are in the event log): the state stays the size of one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repeat {
    /// The iteration that is out, from 0.
    pub iteration: u32,
    pub slot: Slot,
    /// The previous iteration's output; absent during the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Arc<Value>>,
}

/// Where child `i` of a fan-out stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    NotStarted,
    Active(Slot),
    Done,
}

impl FanOut {
    pub fn new(len: u32) -> Self {
        Self {
            len,
            next: 0,
            low: 0,
            done: Vec::new(),
            slots: BTreeMap::new(),
            succeeded: 0,
            failed: 0,
            last_failure: None,
            first: None,
            need: 0,
            timer: None,
            base: 0,
        }
    }

    /// Children started and not done.
    pub fn active(&self) -> u32 {
        self.next - self.succeeded - self.failed
    }

    pub fn child(&self, i: u32) -> Child {
        if i >= self.next {
            Child::NotStarted
        } else if i < self.low || self.is_done(i) {
            Child::Done
        } else {
            Child::Active(
                self.slots
                    .get(&i)
                    .cloned()
                    .unwrap_or(Slot::Running(self.base + 1)),
            )
        }
    }

    fn is_done(&self, i: u32) -> bool {
        let k = (i - self.low) as usize;
        self.done
            .get(k / 64)
            .is_some_and(|w| w >> (k % 64) & 1 == 1)
    }

    /// The active children, in index order.
    pub fn active_children(&self) -> impl Iterator<Item = (u32, Slot)> + '_ {
        (self.low..self.next).filter_map(|i| match self.child(i) {
            Child::Active(s) => Some((i, s)),
            _ => None,
        })
    }

    /// Child `i` (started, or the next to start) is now in `slot`. A done slot
    /// is counted; its output is the caller's to keep.
    pub fn set(&mut self, i: u32, slot: Slot) {
        if i >= self.len || i < self.low || (i < self.next && self.is_done(i)) {
            return;
        }
        if i >= self.next {
            self.next = i + 1;
        }
        match slot {
            Slot::Running(a) if a == self.base + 1 => {
                self.slots.remove(&i);
            }
            Slot::Pending => {}
            Slot::Running(_) | Slot::RetryWait(_) => {
                self.slots.insert(i, slot);
            }
            Slot::Succeeded(_)
            | Slot::Stored(_)
            | Slot::Results(_)
            | Slot::Failed(_)
            | Slot::Cancelled => {
                self.slots.remove(&i);
                match slot {
                    Slot::Failed(e) => {
                        self.failed += 1;
                        self.last_failure = Some((i, e));
                    }
                    Slot::Cancelled => self.failed += 1,
                    _ => self.succeeded += 1,
                }
                let k = (i - self.low) as usize;
                if self.done.len() <= k / 64 {
                    self.done.resize(k / 64 + 1, 0);
                }
                self.done[k / 64] |= 1 << (k % 64);
                self.compact();
            }
        }
    }

    /// The children of `low..next` that are not done, in index order.
    pub fn open_children(&self) -> Vec<u32> {
        (self.low..self.next)
            .filter(|&i| !self.is_done(i))
            .collect()
    }

    /// Child `i`, done, is not done any more (a retry starts it again): the
    /// window reaches down to it if it has moved past. The caller counts it
    /// out of `succeeded` or `failed`.
    pub fn reopen(&mut self, i: u32) {
        if i >= self.next {
            return;
        }
        if i < self.low {
            let span = (self.next - i) as usize;
            let mut words = vec![0u64; span.div_ceil(64)];
            for k in 0..span {
                let c = i + k as u32;
                if c < self.low || self.is_done(c) {
                    words[k / 64] |= 1 << (k % 64);
                }
            }
            self.low = i;
            self.done = words;
        }
        let k = (i - self.low) as usize;
        if let Some(w) = self.done.get_mut(k / 64) {
            *w &= !(1u64 << (k % 64));
        }
        while self.done.last() == Some(&0) {
            self.done.pop();
        }
    }

    /// Moves `low` past the done children at the bottom of the window.
    fn compact(&mut self) {
        let mut shift = 0usize;
        for w in &self.done {
            let ones = w.trailing_ones() as usize;
            shift += ones;
            if ones < 64 {
                break;
            }
        }
        if shift == 0 {
            return;
        }
        self.low += shift as u32;
        let (words, bits) = (shift / 64, shift % 64);
        self.done.drain(..words.min(self.done.len()));
        if bits > 0 {
            for k in 0..self.done.len() {
                let hi = self.done.get(k + 1).copied().unwrap_or(0);
                self.done[k] = (self.done[k] >> bits) | (hi << (64 - bits));
            }
        }
        while self.done.last() == Some(&0) {
            self.done.pop();
        }
    }
}

/// A bitmap as hex digits, four bits each, lowest first: `"f1"` is bits 0–3 and 4.
mod hex_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(words: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(words.len() * 16);
        for w in words {
            for n in 0..16 {
                let d = (w >> (4 * n)) & 0xf;
                out.push(char::from_digit(d as u32, 16).unwrap_or('0'));
            }
        }
        let trimmed = out.trim_end_matches('0');
        s.serialize_str(trimmed)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let text = String::deserialize(d)?;
        let mut words = vec![0u64; text.len().div_ceil(16)];
        for (n, c) in text.chars().enumerate() {
            let digit = c
                .to_digit(16)
                .ok_or_else(|| serde::de::Error::custom(format!("`{c}` is not a hex digit")))?;
            words[n / 16] |= u64::from(digit) << (4 * (n % 16));
        }
        Ok(words)
    }
}

/// Values a run's state refers to but does not hold, loaded by the engine and
/// given to `apply`: the joined lists of decided fan-outs, by node id, and the
/// values kept by reference, by hash. They never change once written, so
/// `apply` stays a function of its inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    pub results: HashMap<String, Arc<Value>>,
    pub stored: HashMap<String, Arc<Value>>,
}

/// Values whose compact JSON is longer than this are kept beside the run's
/// state, by reference: a run input, a step's output, a run's result. The
/// state then grows by the reference (about 90 bytes), not by the value.
pub const INLINE_BYTES: usize = 2048;

/// A value kept beside the state, by its content. References stand only in
/// the state's own fields (`input_refs`, `Slot::Stored`, `result_ref`), never
/// inside a value, so no user data can be taken for one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValueRef {
    /// `sha256:` and the hex SHA-256 of the value's compact JSON.
    pub hash: String,
    /// The length of that JSON.
    pub bytes: u64,
}

impl ValueRef {
    /// The reference to `value` and its compact JSON, the bytes a store keeps.
    pub fn of(value: &Value) -> (ValueRef, Vec<u8>) {
        use sha2::{Digest, Sha256};
        let body = serde_json::to_vec(value).expect("a JSON value serializes infallibly");
        let digest = Sha256::digest(&body);
        let mut hash = String::with_capacity(7 + 64);
        hash.push_str("sha256:");
        for b in digest {
            hash.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            hash.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        let r = ValueRef {
            hash,
            bytes: body.len() as u64,
        };
        (r, body)
    }

    /// Whether `s` is a hash as `of` makes them: what an API may be given.
    pub fn is_hash(s: &str) -> bool {
        s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }
}

impl NodeState {
    /// Succeeded or skipped: later nodes may use it.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            NodeState::Skipped
                | NodeState::Single(Slot::Succeeded(_) | Slot::Stored(_) | Slot::Results(_))
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
            input: Arc::default(),
            input_refs: BTreeMap::new(),
            nodes: vec![NodeState::Pending; flow.nodes.len()],
            result: None,
            result_ref: None,
            error: None,
            seq: 0,
            last_event: None,
            retries: 0,
            attempt_base: BTreeMap::new(),
            stopped: BTreeMap::new(),
        }
    }

    /// Whether the state refers to the value with this hash.
    pub fn refers_to(&self, hash: &str) -> bool {
        let slot = |s: &Slot| matches!(s, Slot::Stored(r) if r.hash == hash);
        self.input_refs.values().any(|r| r.hash == hash)
            || self.result_ref.as_ref().is_some_and(|r| r.hash == hash)
            || self.nodes.iter().any(|n| match n {
                NodeState::Single(s) => slot(s),
                NodeState::FanOut(fo) => fo.first.as_ref().is_some_and(slot),
                _ => false,
            })
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

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn no_input(input: &Arc<Map<String, Value>>) -> bool {
    input.is_empty()
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
