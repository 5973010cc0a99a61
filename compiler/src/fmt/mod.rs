//! The formatter behind `eflowc fmt`: prints a syntax tree back in the one house style.
//!
//! The printer works from the tree, not from the tokens, so the output depends only
//! on what was written and on the comments, never on the original layout (blank lines
//! between statements, fields and arguments excepted: one is kept where the author put
//! one or more). The style:
//!
//! - 4-space indentation, lines of at most 100 columns where a break is possible, one
//!   newline at the end of the file, no trailing spaces.
//! - One blank line between top-level items; consecutive `from … import` lines stay
//!   together (a blank line the author put between them is kept).
//! - An import on one line; over 100 columns, `import` ends the line and the names
//!   follow one per line with a trailing comma.
//! - `record` and `enum` bodies, `bindings` blocks: one field, variant or binding per
//!   line, fields and variants with a trailing comma. An empty body is `{}`.
//! - A parameter list (of a step or a flow), a call's arguments, `input(...)`, and a
//!   list, map or record literal stay on one line when it fits in 100 columns and
//!   holds no comment or doc comment; otherwise one element per line, indented 4,
//!   with a trailing comma, the closing bracket back on its own line. The outermost
//!   group breaks first; inner groups then get their own chance to fit.
//! - A binding's configuration is on one line only when it also has at most two
//!   entries.
//! - Step options each on their own line, 4 deeper than their `let`; schedule clauses
//!   each on their own line, 4 deeper than `schedule`.
//! - A fan-out always spans three lines: `for x in xs join all {`, the call, `}`.
//! - `when cond {`, `} else {`, `}`; an empty block is `{}`.
//! - A `when` condition whose loosest operator is `and` or `or` stays on the `when`
//!   line when `when cond {` fits in 100 columns and no comment follows one of its
//!   operands before the next operator; otherwise it breaks before each operator of
//!   that outermost chain: the first operand stays after `when`, each further one
//!   begins a line 4 deeper than the `when` with its operator, and ` {` ends the last
//!   line. An operand that is itself a chain of the other operator (`and` inside
//!   `or`) then gets its own chance to fit, and otherwise breaks the same way 4
//!   deeper still; any other operand, a parenthesised group included, stays on its
//!   line (its bracketed groups break as usual). Other expressions, and `??`, are
//!   not broken at operators.
//! - Operators with one space each side; parentheses only where precedence needs them
//!   (and around a record literal at the top of a `when` condition).
//! - Literals in canonical spelling: integers in decimal; floats in the shortest form
//!   that reads back as the same value, always with a `.` or an exponent (plain
//!   decimals from 0.01 up to 1e16, `1e-3`, `2.5e-4` and `1e16` style outside);
//!   durations from the largest unit down, days being the largest (`1h30m`, `14d`
//!   rather than `2w`, `1s500ms`, `0s`); strings as written when the written escapes
//!   are valid (so `\u{2705}` stays), otherwise re-escaped with `\"`, `\\`, `\n`, `\t`,
//!   `\r` and `\u{…}` for other control characters.
//! - Doc comments before their node, one `/// text` line per line. Plain `//` comments
//!   stay where they were relative to the code around them: on their own line before
//!   the element (statement, field, argument, option, …) they preceded, at the end of
//!   the line they ended, or inside an otherwise empty block. A comment written in the
//!   middle of an expression or a type, where no line can break, moves to its own line
//!   just above the line holding that expression. In a broken `when` condition a
//!   comment right after an operand stays at the end of that operand's line, and one
//!   on its own line before an operator stays on its own line before that operator's
//!   line; any other moves above the line holding it (before an operator's line or
//!   before the `when`), where the next pass leaves it.

mod expr;
mod out;
mod tree;

use crate::diagnostics::Severity;
use crate::source::FileId;
use crate::syntax::parse;

/// Columns a line may take before a group on it is broken over several lines.
pub const MAX_WIDTH: usize = 100;

/// Format one file. `Err(n)` when the file has `n` syntax errors: a broken tree
/// cannot be printed without losing what failed to parse, so the text is left alone.
pub fn format_source(text: &str) -> Result<String, usize> {
    let (file, diagnostics) = parse(FileId(0), text);
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        return Err(errors);
    }
    if tree::has_error_node(&file) {
        return Err(1);
    }
    Ok(tree::print_file(text, &file))
}
