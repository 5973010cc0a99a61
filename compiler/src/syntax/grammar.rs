//! The pest parser generated from `grammar.pest`, kept private to the syntax layer.

#[derive(pest_derive::Parser)]
#[grammar = "syntax/grammar.pest"]
pub(crate) struct EflowParser;
