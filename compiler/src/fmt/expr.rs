//! Expressions and literals: flat renderings, breaking of bracketed groups, and the
//! parentheses precedence needs.

use std::fmt::Write as _;

use super::MAX_WIDTH;
use super::tree::P;
use crate::syntax::ast::*;

/// Where an expression is printed: what its parent requires of it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    /// The loosest precedence allowed here without parentheses (see [`prec`]).
    min: u8,
    /// In a `when` condition outside any bracket: a record literal needs parentheses,
    /// or its `{` would open the block.
    no_record: bool,
    /// Right after a prefix `-`: a number literal there needs parentheses, or the
    /// parser would fold the `-` into it.
    after_neg: bool,
}

impl Slot {
    pub(super) const TOP: Slot = Slot {
        min: 0,
        no_record: false,
        after_neg: false,
    };
    pub(super) const CONDITION: Slot = Slot {
        min: 0,
        no_record: true,
        after_neg: false,
    };

    fn child(self, min: u8) -> Slot {
        Slot {
            min,
            no_record: self.no_record,
            after_neg: false,
        }
    }
}

/// Binding strength, as the grammar nests expressions: `??` 1, `or` 2, `and` 3,
/// `not` 4, comparisons 5, prefix `-` 6, everything else 7.
fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary { op, .. } => match op {
            BinOp::Coalesce => 1,
            BinOp::Or => 2,
            BinOp::And => 3,
            _ => 5,
        },
        ExprKind::Unary {
            op: UnaryOp::Not, ..
        } => 4,
        ExprKind::Unary {
            op: UnaryOp::Neg, ..
        } => 6,
        _ => 7,
    }
}

/// The slots of a binary operator's operands. `??`, `or` and `and` group from the
/// left, so a right operand of the same operator needs parentheses; comparisons
/// take only prefix `-` and primaries.
fn operand_slots(op: BinOp, slot: Slot) -> (Slot, Slot) {
    match op {
        BinOp::Coalesce | BinOp::Or | BinOp::And => {
            let p = match op {
                BinOp::Coalesce => 1,
                BinOp::Or => 2,
                _ => 3,
            };
            (slot.child(p), slot.child(p + 1))
        }
        _ => (slot.child(6), slot.child(6)),
    }
}

fn neg_slot(slot: Slot) -> Slot {
    Slot {
        after_neg: true,
        ..slot.child(6)
    }
}

fn needs_parens(e: &Expr, slot: Slot) -> bool {
    prec(e) < slot.min
        || (slot.no_record && matches!(e.kind, ExprKind::Record { .. }))
        || (slot.after_neg
            && match e.kind {
                ExprKind::Int(v) => v >= 0,
                ExprKind::Float(v) => !v.is_sign_negative(),
                _ => false,
            })
}

/// The operands of a chain of `op` (which groups from the left): `a and b and c` is
/// `[a, b, c]`; a right operand that is itself an `op` (`a and (b and c)`) is one.
fn chain(e: &Expr, op: BinOp) -> Vec<&Expr> {
    let mut rights = Vec::new();
    let mut e = e;
    while let ExprKind::Binary { op: o, lhs, rhs } = &e.kind
        && *o == op
    {
        rights.push(&**rhs);
        e = lhs;
    }
    rights.push(e);
    rights.reverse();
    rights
}

pub(super) fn width(s: &str) -> usize {
    s.chars().count()
}

/// A float that reads back as the same value, always with a `.` or an exponent: the
/// shortest digits that round-trip, as a plain decimal from 0.01 up to 1e16 (`0.05`,
/// `1.0`), in scientific notation outside (`1e-3`, `2.5e-4`, `1e16`), the way small
/// rates are usually written.
pub(super) fn float_text(v: f64) -> String {
    let small = v != 0.0 && v.abs() < 1e-2;
    let s = if small {
        format!("{v:e}")
    } else {
        format!("{v:?}")
    };
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    }
}

const DURATION_UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// A duration from its milliseconds, largest unit first, weeks written as days.
pub(super) fn duration_text(mut ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut s = String::new();
    for &(unit, factor) in DURATION_UNITS {
        let n = ms / factor;
        if n > 0 {
            let _ = write!(s, "{n}{unit}");
            ms %= factor;
        }
    }
    s
}

/// The value of the inside of a string token, or `None` if it is not one that
/// reads back exactly (an invalid escape, a bare quote or newline).
fn unescape(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\n' => return None,
            '\\' => match chars.next()? {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let mut hex = String::new();
                    loop {
                        match chars.next()? {
                            '}' => break,
                            h if h.is_ascii_hexdigit() && hex.len() < 6 => hex.push(h),
                            _ => return None,
                        }
                    }
                    let code = u32::from_str_radix(&hex, 16).ok()?;
                    out.push(char::from_u32(code)?);
                }
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// A string literal with the canonical escapes.
pub(super) fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{{{:x}}}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

impl P<'_> {
    /// A string literal as written when its escapes read back to `value`, so that
    /// `\u{2705}` stays readable; otherwise re-escaped.
    pub(super) fn string(&self, value: &str, span: Span) -> String {
        let written = self
            .src
            .get(span.start as usize..span.end as usize)
            .filter(|t| t.len() >= 2 && t.starts_with('"') && t.ends_with('"'));
        match written {
            Some(t) if unescape(&t[1..t.len() - 1]).as_deref() == Some(value) => t.to_string(),
            _ => escape(value),
        }
    }

    /// The expression on one line.
    pub(super) fn flat(&self, e: &Expr, slot: Slot) -> String {
        let mut s = String::new();
        self.flat_into(e, slot, &mut s);
        s
    }

    fn flat_into(&self, e: &Expr, slot: Slot, s: &mut String) {
        if needs_parens(e, slot) {
            s.push('(');
            self.flat_into(e, Slot::TOP, s);
            s.push(')');
            return;
        }
        match &e.kind {
            ExprKind::Int(v) => {
                let _ = write!(s, "{v}");
            }
            ExprKind::Float(v) => s.push_str(&float_text(*v)),
            ExprKind::Str(v) => s.push_str(&self.string(v, e.span)),
            ExprKind::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
            ExprKind::Duration(ms) => s.push_str(&duration_text(*ms)),
            ExprKind::None => s.push_str("none"),
            ExprKind::Path(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        s.push('.');
                    }
                    s.push_str(&p.name);
                }
            }
            ExprKind::List(items) => {
                s.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    self.flat_into(item, Slot::TOP, s);
                }
                s.push(']');
            }
            ExprKind::Map(entries) => {
                if entries.is_empty() {
                    s.push_str("{}");
                    return;
                }
                s.push_str("{ ");
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    self.flat_into(k, Slot::TOP, s);
                    s.push_str(": ");
                    self.flat_into(v, Slot::TOP, s);
                }
                s.push_str(" }");
            }
            ExprKind::Record { name, fields } => {
                s.push_str(&name.name);
                if fields.is_empty() {
                    s.push_str(" {}");
                    return;
                }
                s.push_str(" { ");
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    s.push_str(&f.name.name);
                    s.push_str(": ");
                    self.flat_into(&f.value, Slot::TOP, s);
                }
                s.push_str(" }");
            }
            ExprKind::Unary { op, expr } => match op {
                UnaryOp::Not => {
                    s.push_str("not ");
                    self.flat_into(expr, slot.child(4), s);
                }
                UnaryOp::Neg => {
                    s.push('-');
                    self.flat_into(expr, neg_slot(slot), s);
                }
            },
            ExprKind::Binary { op, lhs, rhs } => {
                let (ls, rs) = operand_slots(*op, slot);
                self.flat_into(lhs, ls, s);
                s.push(' ');
                s.push_str(op.symbol());
                s.push(' ');
                self.flat_into(rhs, rs, s);
            }
            ExprKind::Error => {
                let t = self
                    .src
                    .get(e.span.start as usize..e.span.end as usize)
                    .unwrap_or("");
                s.push_str(t);
            }
        }
    }

    /// Print an expression at the current column of a line indented `indent`, with
    /// `suffix` columns still to follow on its last line: on one line if it fits and
    /// holds no comment, otherwise with its bracketed groups broken.
    /// One `name: value,` line of a broken group (arguments, record fields,
    /// configuration entries).
    pub(super) fn entry(&mut self, name: &str, value: &Expr, indent: usize) {
        self.o.begin(indent);
        self.o.push(name);
        self.o.push(": ");
        self.expr(value, indent, 1, Slot::TOP);
        self.o.push(",");
    }

    pub(super) fn expr(&mut self, e: &Expr, indent: usize, suffix: usize, slot: Slot) {
        let flat = self.flat(e, slot);
        let fits = self.o.col() + width(&flat) + suffix <= MAX_WIDTH;
        let start = e.span.start as usize;
        let end = e.span.end as usize;
        // A group breaks for a comment between its brackets only: one before its
        // opening bracket is moved above the line, and must not decide the layout
        // it would no longer be part of after formatting.
        let open = match &e.kind {
            ExprKind::List(_) => self.o.find(start, "[", &["("]),
            ExprKind::Map(_) => self.o.find(start, "{", &["("]),
            ExprKind::Record { name, .. } => self.o.find(name.span.end as usize, "{", &[]),
            _ => None,
        };
        let keep_flat = match &e.kind {
            ExprKind::List(_) | ExprKind::Map(_) | ExprKind::Record { .. } => {
                !self.o.has_comment(open.unwrap_or(start) as u32, e.span.end)
            }
            ExprKind::Unary { .. } | ExprKind::Binary { .. } => {
                !self.o.has_comment(e.span.start, e.span.end)
            }
            _ => true,
        };
        let empty = match &e.kind {
            ExprKind::List(items) => items.is_empty(),
            ExprKind::Map(entries) => entries.is_empty(),
            ExprKind::Record { fields, .. } => fields.is_empty(),
            _ => false,
        };
        if (fits || empty) && keep_flat {
            self.o.push(&flat);
            return;
        }
        if needs_parens(e, slot) {
            self.o.push("(");
            self.expr(e, indent, suffix + 1, Slot::TOP);
            self.o.push(")");
            return;
        }
        let open = open.map(|p| p + 1);
        match &e.kind {
            ExprKind::List(items) => {
                self.o.push("[");
                self.group(
                    open,
                    items,
                    end,
                    indent,
                    |i| (i.span.start as usize, i.span.end as usize),
                    |p, item, inner| {
                        p.o.begin(inner);
                        p.expr(item, inner, 1, Slot::TOP);
                        p.o.push(",");
                    },
                );
                self.o.push("]");
            }
            ExprKind::Map(entries) => {
                self.o.push("{");
                self.group(
                    open,
                    entries,
                    end,
                    indent,
                    |(k, v)| (k.span.start as usize, v.span.end as usize),
                    |p, (k, v), inner| {
                        p.o.begin(inner);
                        p.expr(k, inner, 2, Slot::TOP);
                        p.o.push(": ");
                        p.expr(v, inner, 1, Slot::TOP);
                        p.o.push(",");
                    },
                );
                self.o.push("}");
            }
            ExprKind::Record { name, fields } => {
                self.o.push(&name.name);
                self.o.push(" {");
                self.group(
                    open,
                    fields,
                    end,
                    indent,
                    |f| (f.span.start as usize, f.span.end as usize),
                    |p, f, inner| p.entry(&f.name.name, &f.value, inner),
                );
                self.o.push("}");
            }
            ExprKind::Unary { op, expr } => match op {
                UnaryOp::Not => {
                    self.o.push("not ");
                    self.expr(expr, indent, suffix, slot.child(4));
                }
                UnaryOp::Neg => {
                    self.o.push("-");
                    self.expr(expr, indent, suffix, neg_slot(slot));
                }
            },
            ExprKind::Binary { op, lhs, rhs } => {
                let (ls, rs) = operand_slots(*op, slot);
                let rest = width(op.symbol()) + 2 + width(&self.flat(rhs, rs)) + suffix;
                self.expr(lhs, indent, rest, ls);
                self.o.push(" ");
                self.o.push(op.symbol());
                self.o.push(" ");
                self.expr(rhs, indent, suffix, rs);
            }
            _ => self.o.push(&flat),
        }
    }

    /// A `when` condition, after `when ` on a line indented `indent` and before ` {`.
    pub(super) fn condition(&mut self, cond: &Expr, indent: usize) {
        self.logic(cond, indent, indent + 4, " {".len(), Slot::CONDITION);
    }

    /// An expression at the current column of a line indented `indent`, `suffix`
    /// columns still to follow on its last line. When its loosest operator is `and`
    /// or `or` (outside parentheses), it is broken at the operators of that chain if
    /// the line would pass 100 columns, or if a comment sits between one of its
    /// operands and the next operator: the first operand stays where it is, each
    /// further one starts a line at `inner` with its operator. An operand that is
    /// itself such a chain (an `and` chain inside an `or` chain) gets the same chance
    /// on its line, its own lines 4 deeper still; any other operand (a comparison, a
    /// `not`, a parenthesised group) is printed like any expression.
    ///
    /// Comments in a broken chain: one right after an operand, on its line, stays at
    /// the end of that line; one on its own line before an operator goes on its own
    /// line before that operator's line; any other (inside an operand, after an
    /// operator, after the last operand) moves above the line holding it. So every
    /// comment ends up before an operator's line, where the next pass puts it back
    /// and which keeps the chain broken, or above the whole statement, where it no
    /// longer counts: the layout is stable.
    fn logic(&mut self, e: &Expr, indent: usize, inner: usize, suffix: usize, slot: Slot) {
        let op = match &e.kind {
            ExprKind::Binary { op, .. }
                if matches!(op, BinOp::And | BinOp::Or) && !needs_parens(e, slot) =>
            {
                *op
            }
            _ => return self.expr(e, indent, suffix, slot),
        };
        let operands = chain(e, op);
        // Where each operator after the first operand is: the next token after the
        // operand before it, past the `)` of redundant parentheses.
        let ops: Vec<usize> = operands
            .windows(2)
            .map(|w| {
                self.o
                    .find(w[0].span.end as usize, op.symbol(), &[")"])
                    .unwrap_or(w[1].span.start as usize)
            })
            .collect();
        let flat = self.flat(e, slot);
        let fits = self.o.col() + width(&flat) + suffix <= MAX_WIDTH;
        let commented = operands
            .iter()
            .zip(&ops)
            .any(|(o, &at)| self.o.has_comment(o.span.end, at as u32));
        if fits && !commented {
            return self.expr(e, indent, suffix, slot);
        }
        let (first, rest) = operand_slots(op, slot);
        for (i, o) in operands.iter().enumerate() {
            let suffix = if i + 1 == operands.len() { suffix } else { 0 };
            if i == 0 {
                self.logic(o, indent, inner + 4, suffix, first);
                continue;
            }
            self.o.trailing(operands[i - 1].span.end as usize);
            self.o.end();
            self.o.leading(ops[i - 1], inner, false);
            self.o.begin(inner);
            self.o.push(op.symbol());
            self.o.push(" ");
            self.logic(o, inner, inner + 4, suffix, rest);
        }
    }

    /// The elements of a broken group, one per line at `indent + 4`, after its
    /// opening bracket (already printed; `open` is the offset just past it in the
    /// source, when known) and up to its closing bracket, whose line this begins.
    /// `print` begins each element's line and prints it with its comma.
    pub(super) fn group<T>(
        &mut self,
        open: Option<usize>,
        items: &[T],
        end: usize,
        indent: usize,
        span: impl Fn(&T) -> (usize, usize),
        mut print: impl FnMut(&mut Self, &T, usize),
    ) {
        if let Some(open) = open {
            self.o.trailing(open);
        }
        self.o.end_open();
        let inner = indent + 4;
        for item in items {
            let (s, e) = span(item);
            self.o.leading(s, inner, true);
            self.o.blank_if_written(s);
            print(self, item, inner);
            self.o.trailing(e);
            self.o.end();
        }
        self.o.leading(end, inner, true);
        self.o.begin_closer(indent);
    }
}
