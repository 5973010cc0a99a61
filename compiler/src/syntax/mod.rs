//! The syntax layer: the lexer, the parser that builds the syntax tree, and the pest
//! grammar that specifies it and explains syntax errors.

pub mod ast;
mod descent;
mod errors;
mod grammar;
mod lexer;
mod literals;
mod parser;

pub use lexer::{KEYWORDS, RESERVED_COUNT, is_reserved};
pub use parser::parse;
