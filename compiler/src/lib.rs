//! The eflow compiler: from `.eflow` sources to checked, canonical flow IR.
//!
//! Layers, each a function of the one before: [`syntax`] (text → tree with spans),
//! [`names`] (modules, imports, symbols), [`types`] (type checking), [`graph`] (the
//! flow DAG), [`ir`] (the IR and its emission). [`fmt`] formats syntax trees. The
//! `eflowc` CLI and the language server are thin front ends over [`analysis`].

pub mod diagnostics;
pub mod source;
pub mod syntax;
