//! The eflow compiler: from `.eflow` sources to checked, canonical flow IR.
//!
//! Layers, each a function of the one before: [`syntax`] (text → tree with spans),
//! `names` (each module's names and imports), `check` (signatures, types, flow
//! bodies, bindings), `graph` (the flow DAG), [`lower`] (checked flows to the [`ir`]).
//! [`fmt`] formats syntax trees. The `eflowc` CLI and the language server are thin
//! front ends over [`analysis`]; what the checker resolved and typed is read
//! through the semantic model, [`semantics`], not through the private layers.
//! [`bundles`] reads what a command is given (IR files or sources) as one bundle;
//! [`diff`] says what changed between two and whom it breaks.

pub mod analysis;
pub mod bundles;
pub(crate) mod check;
pub mod diagnostics;
pub mod diff;
pub mod fmt;
pub(crate) mod graph;
pub mod lower;
pub(crate) mod names;
pub mod semantics;
pub(crate) mod source;
pub(crate) mod stdlib;
use eflow_ir::suggest;
pub mod syntax;
pub(crate) mod types;

pub use analysis::{Analysis, FsLoader, Loader};
/// The IR this compiler lowers into: the crate `eflow-ir`, the runtime's contract.
pub use eflow_ir as ir;
