//! The syntax layer: the pest grammar, the syntax tree and the parser that builds it.

pub mod ast;
mod errors;
mod grammar;
mod lexer;
mod literals;
pub mod parser;

pub use parser::parse;
