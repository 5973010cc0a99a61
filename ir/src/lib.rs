//! The flow IR: the contract between the compiler and the runtime.
//!
//! These types are the one definition of the IR. Its JSON Schema
//! (`ir/schema/ir.schema.json`) is generated from them and committed; a test
//! fails when it is stale. The JSON is canonical: fields in declaration order, maps
//! sorted by key, so the same sources always give the same bytes.

pub mod connector;
pub mod schedule;
pub mod suggest;

use std::collections::BTreeMap;
use std::io::{self, Write};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped on every change the runtime must know about.
pub const IR_VERSION: u32 = 2;

/// A compiled set of flows: what `eflowc compile` writes and the runtime deploys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub ir_version: u32,
    /// Sorted by name; every subflow a flow calls is in the same bundle.
    pub flows: Vec<Flow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub name: String,
    /// The module it was defined in: its file's path from the compiled
    /// directory without `.eflow`, e.g. `retraining` or `shared/catalog`.
    pub module: String,
    /// The flow's version: `sha256:<hex>` of this flow's canonical JSON with
    /// `hash` set to `""` and without `doc` and `source_map`, so it covers what
    /// the flow does and never where its text sits or what its comments say.
    pub hash: String,
    pub params: Vec<Param>,
    /// The result type; absent when the flow returns nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Type>,
    /// The whole run's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Each schedule starts runs with its own input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
    /// Steps, in source order.
    pub nodes: Vec<Node>,
    /// `when` conditions; nodes refer to them by index in `guards`.
    pub conditions: Vec<Expr>,
    /// The flow's result, evaluated when every node has finished or been skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Expr>,
    /// Every record and enum the flow's values use, by qualified name.
    pub types: BTreeMap<String, TypeDef>,
    /// Every step contract the flow calls, by qualified name (`std/ml.Train`).
    pub contracts: BTreeMap<String, Contract>,
    /// Environment → contract → binding.
    pub bindings: BTreeMap<String, BTreeMap<String, Binding>>,
    /// The flow's doc comment. Outside the hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// Where the flow and its steps were written. Outside the hash.
    #[serde(default, skip_serializing_if = "SourceMap::is_empty")]
    pub source_map: SourceMap,
}

/// What [`Flow`] holds outside its hash, serialised as its last fields.
#[derive(Serialize)]
struct Unhashed<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    doc: &'a Option<String>,
    #[serde(skip_serializing_if = "SourceMap::is_empty")]
    source_map: &'a SourceMap,
}

impl Flow {
    /// The content hash of this flow (its `hash` field is ignored).
    pub fn compute_hash(&self) -> String {
        let mut copy = self.clone();
        copy.seal();
        copy.hash
    }

    /// Set `hash` to the content hash.
    pub fn seal(&mut self) {
        self.seal_json();
    }

    /// Set `hash` to the content hash and return this flow's canonical JSON (compact,
    /// `hash` included): the bytes hashed followed by the unhashed last fields, so
    /// the flow is serialised only once.
    pub fn seal_json(&mut self) -> Vec<u8> {
        /// Where the hash goes: `hash` is the third field, after two strings, whose
        /// quotes are escaped, so this is its first occurrence.
        const EMPTY_HASH: &[u8] = br#","hash":"""#;
        self.hash.clear();
        let doc = self.doc.take();
        let source_map = std::mem::take(&mut self.source_map);
        let mut json = Vec::with_capacity(8 * 1024);
        // Serializing plain data into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut json, &*self);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(&json);
        let mut hex = String::with_capacity(71);
        hex.push_str("sha256:");
        for b in digest {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        if let Some(at) = json.windows(EMPTY_HASH.len()).position(|w| w == EMPTY_HASH) {
            let quote = at + EMPTY_HASH.len() - 1;
            json.splice(quote..quote, hex.bytes());
        }
        self.hash = hex;
        self.doc = doc;
        self.source_map = source_map;
        if self.doc.is_some() || !self.source_map.is_empty() {
            let tail = serde_json::to_vec(&Unhashed {
                doc: &self.doc,
                source_map: &self.source_map,
            })
            .unwrap_or_default();
            // `{...}` + `{"doc":...}` → `{...,"doc":...}`.
            json.pop();
            json.push(b',');
            json.extend_from_slice(&tail[1..]);
        }
        json
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Type,
    /// The value used when a run is started without this parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// A type, fully resolved: aliases expanded, records and enums by qualified name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Type {
    Bool,
    Int,
    Float,
    String,
    /// Milliseconds, as an integer.
    Duration,
    /// RFC 3339 text.
    Timestamp,
    List {
        item: Box<Type>,
    },
    Map {
        key: Box<Type>,
        value: Box<Type>,
    },
    Optional {
        inner: Box<Type>,
    },
    Record {
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<Type>,
    },
    Enum {
        name: String,
    },
    /// A type parameter of a generic contract or record.
    Param {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TypeDef {
    Record {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        generics: Vec<String>,
        fields: Vec<Field>,
    },
    Enum {
        variants: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Type,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Remote,
    Call,
    Approval,
    Wait,
}

/// What a step does, without how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub kind: StepKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generics: Vec<String>,
    pub params: Vec<ContractParam>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Type>,
    /// Error names the step may fail with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raises: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContractParam {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Type,
    /// May be left out of a call.
    pub optional: bool,
}

/// How a contract is carried out in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// `http`, `sim` (simulated compute), `registry` or `approval`.
    // The closed set is `connector::CATALOGUE`; `connector::Connector::from_binding`
    // types a binding. (A plain comment: doc comments go into the committed schema.)
    pub connector: String,
    pub config: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// 5, 6 or 7 fields; see `eflow_ir::schedule`.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    pub overlap: Overlap,
    pub catchup: Catchup,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// Values for the flow's parameters in scheduled runs.
    pub input: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    Skip,
    BufferOne,
    AllowAll,
    CancelRunning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    Skip,
    Once,
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The `let` name, unique in the flow.
    pub id: String,
    pub call: Call,
    /// Argument expressions by parameter name.
    pub inputs: BTreeMap<String, Expr>,
    /// Set when the node runs `call` once per element of a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOut>,
    /// Set when the node runs `call` again and again, each iteration given the
    /// previous one's output, until a condition holds or a bound is reached. A
    /// node has at most one of `fan_out` and `repeat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
    /// The node runs only if every guard's condition has the given value; otherwise
    /// it is skipped and its output is absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<Guard>,
    /// Nodes that must finish (or be skipped) first, by id, in node order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The node's value (after the join, for a fan-out); absent if it produces nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Type>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    /// A step contract by qualified name.
    Step {
        contract: String,
        /// For generic contracts: each type parameter's inferred type.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        type_args: BTreeMap<String, Type>,
    },
    /// A subflow, by name, in the same bundle.
    Flow { name: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOut {
    /// The list to fan out over.
    pub over: Expr,
    /// The name `item` expressions refer to.
    pub item: String,
    pub join: Join,
    /// At most this many children at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u64>,
}

/// The most iterations a `repeat` may be given.
pub const MAX_REPEAT: u32 = 100;

/// A bounded loop: `call` runs for iteration 0, 1, … and the node's output is
/// the last iteration's output. `item` expressions (in the node's inputs and in
/// `until`) read the latest iteration's output: `null` in the first
/// iteration's inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// The name `item` expressions refer to.
    pub var: String,
    /// At most this many iterations, 1 to `MAX_REPEAT`: the bound is a constant.
    pub max: u32,
    /// Evaluated after each iteration with `item` the output just produced: `true`
    /// ends the loop. Without it, the loop runs `max` iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Join {
    All,
    Any,
    /// At least `k` children must succeed: an `Int` expression over parameters
    /// and earlier outputs (not the item), evaluated when the fan-out starts.
    AtLeast {
        k: Expr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Index into `conditions`.
    pub condition: usize,
    pub value: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts, at least 1.
    pub max_attempts: u32,
    pub backoff: Backoff,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_retryable: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backoff {
    Fixed {
        delay_ms: u64,
    },
    /// Doubles from `initial_ms` up to `max_ms`.
    Exponential {
        initial_ms: u64,
        max_ms: u64,
    },
}

/// An expression, evaluated by the runtime over the run's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expr {
    /// A constant: numbers, strings, booleans, `null` for `none`, durations in
    /// milliseconds, enum values as their name.
    Literal(serde_json::Value),
    /// A flow parameter, then fields.
    Param {
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
    },
    /// A node's output, then fields; `null` if the node was skipped.
    Node {
        id: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
    },
    /// The node's variable, then fields: the current element of a fan-out, or
    /// the latest output of a `repeat` (`null` before its first iteration).
    Item {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
    },
    /// A field of the run: `id`, `tenant`, `flow`, `version`, `started_at`.
    Run {
        field: String,
    },
    List(Vec<Expr>),
    /// Entries in source order.
    Map(Vec<(Expr, Expr)>),
    Record {
        #[serde(rename = "type")]
        ty: String,
        fields: BTreeMap<String, Expr>,
    },
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BinOp {
    /// `??`: the left value if present, else the right.
    Coalesce,
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Where a flow and its nodes were written: for people reading errors and
/// histories, outside the flow's hash, so formatting never makes a new version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceMap {
    /// Where the flow's name was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<SourceLoc>,
    /// Where each node's name was written, by node id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, SourceLoc>,
}

impl SourceMap {
    pub fn is_empty(&self) -> bool {
        self.flow.is_none() && self.nodes.is_empty()
    }
}

/// A place in a source file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceLoc {
    /// The file's path from the compiled directory (`retraining.eflow`).
    pub file: String,
    pub line: u32,
    pub column: u32,
}

/// The JSON Schema of [`Bundle`], as committed in `ir/schema/ir.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Bundle);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

impl Bundle {
    /// Canonical JSON, pretty (two-space indented, newline-terminated): for people
    /// (`eflowc compile --pretty`) and snapshots.
    pub fn to_pretty_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// [`Bundle::to_pretty_json`], written to `w`.
    pub fn write_pretty_json(&self, w: &mut (impl Write + ?Sized)) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, self)?;
        w.write_all(b"\n")
    }

    /// The flow named `name` and every subflow it calls, for `--out-dir`.
    pub fn subset(&self, name: &str) -> Bundle {
        let wanted = with_subflows(
            &self.flows,
            name,
            |f| &f.name,
            |f| {
                f.nodes
                    .iter()
                    .filter_map(|n| match &n.call {
                        Call::Flow { name } => Some(name.as_str()),
                        Call::Step { .. } => None,
                    })
                    .collect()
            },
        );
        Bundle {
            ir_version: self.ir_version,
            flows: wanted.into_iter().map(|i| self.flows[i].clone()).collect(),
        }
    }
}

/// A bundle as its canonical JSON, each flow serialised once, when it was sealed
/// ([`Flow::seal_json`]); of the flows themselves, only what `--out-dir` needs is
/// kept.
#[derive(Debug, Clone)]
pub struct SealedBundle {
    pub ir_version: u32,
    /// Sorted by name, as in [`Bundle::flows`].
    pub flows: Vec<SealedFlow>,
}

#[derive(Debug, Clone)]
pub struct SealedFlow {
    pub name: String,
    /// The subflows it calls, by name.
    pub calls: Vec<String>,
    /// The flow's canonical JSON, `hash` included.
    pub json: Box<[u8]>,
}

impl SealedFlow {
    pub fn new(mut flow: Flow) -> SealedFlow {
        let json = flow.seal_json().into_boxed_slice();
        let mut calls = Vec::new();
        for n in flow.nodes {
            if let Call::Flow { name } = n.call
                && !calls.contains(&name)
            {
                calls.push(name);
            }
        }
        SealedFlow {
            name: flow.name,
            calls,
            json,
        }
    }
}

impl SealedBundle {
    /// Canonical JSON, compact and newline-terminated: the same bytes as
    /// `serde_json::to_writer(w, &bundle)` followed by a newline.
    pub fn write_json(&self, w: &mut (impl Write + ?Sized)) -> io::Result<()> {
        write!(w, r#"{{"ir_version":{},"flows":["#, self.ir_version)?;
        for (i, f) in self.flows.iter().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            w.write_all(&f.json)?;
        }
        w.write_all(b"]}\n")
    }

    /// The flow named `name` and every subflow it calls, for `--out-dir`.
    pub fn subset(&self, name: &str) -> SealedBundle {
        let wanted = with_subflows(
            &self.flows,
            name,
            |f| &f.name,
            |f| f.calls.iter().map(String::as_str).collect(),
        );
        SealedBundle {
            ir_version: self.ir_version,
            flows: wanted.into_iter().map(|i| self.flows[i].clone()).collect(),
        }
    }
}

/// The indices of the flow named `name` and of every subflow it calls, directly or
/// not, in bundle order.
fn with_subflows<F>(
    flows: &[F],
    name: &str,
    name_of: impl Fn(&F) -> &String,
    calls_of: impl Fn(&F) -> Vec<&str>,
) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| (name_of(f).as_str(), i))
        .collect();
    let mut wanted: Vec<usize> = index.get(name).copied().into_iter().collect();
    let mut next = 0;
    while next < wanted.len() {
        for called in calls_of(&flows[wanted[next]]) {
            if let Some(&i) = index.get(called)
                && !wanted.contains(&i)
            {
                wanted.push(i);
            }
        }
        next += 1;
    }
    wanted.sort_unstable();
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow whose name and module hold the text the hash is spliced after.
    fn awkward_flow() -> Flow {
        Flow {
            name: r#"F","hash":""#.into(),
            module: r#"m/"hash":"""#.into(),
            hash: "sha256:stale".into(),
            params: Vec::new(),
            output: None,
            timeout_ms: None,
            schedules: Vec::new(),
            nodes: Vec::new(),
            conditions: Vec::new(),
            result: None,
            types: BTreeMap::new(),
            contracts: BTreeMap::new(),
            bindings: BTreeMap::new(),
            doc: Some(r#","hash":"""#.into()),
            source_map: SourceMap {
                flow: Some(loc(1)),
                nodes: BTreeMap::from([("n".into(), loc(2))]),
            },
        }
    }

    fn loc(line: u32) -> SourceLoc {
        SourceLoc {
            file: "f.eflow".into(),
            line,
            column: 1,
        }
    }

    #[test]
    fn sealed_json_is_the_flows_canonical_json_with_its_hash() {
        let mut f = awkward_flow();
        let json = f.seal_json();
        assert!(f.hash.starts_with("sha256:") && f.hash.len() == 71);
        assert_eq!(
            String::from_utf8_lossy(&json),
            serde_json::to_string(&f).unwrap_or_default()
        );
        assert_eq!(f.hash, f.compute_hash());
        let mut blank = f.clone();
        blank.hash.clear();
        blank.doc = None;
        blank.source_map = SourceMap::default();
        let digest = Sha256::digest(serde_json::to_vec(&blank).unwrap_or_default());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(f.hash, format!("sha256:{hex}"));
    }

    #[test]
    fn the_doc_and_the_source_map_are_outside_the_hash() {
        let f = awkward_flow();
        let mut moved = f.clone();
        moved.doc = None;
        moved.source_map.flow = Some(loc(40));
        moved.source_map.nodes.clear();
        assert_eq!(f.compute_hash(), moved.compute_hash());
        let mut bare = f.clone();
        bare.doc = None;
        bare.source_map = SourceMap::default();
        let json = bare.seal_json();
        assert_eq!(
            String::from_utf8_lossy(&json),
            serde_json::to_string(&bare).unwrap_or_default()
        );
        assert_eq!(bare.hash, f.compute_hash());
        let mut other = f.clone();
        other.timeout_ms = Some(1);
        assert_ne!(other.compute_hash(), f.compute_hash());
    }
}
