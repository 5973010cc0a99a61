//! Semantic tokens: every word coloured by what it refers to, not by its spelling,
//! so a step, a type, a parameter and a field look different even though the
//! grammar cannot tell them apart.

use eflow_compiler::semantics::ItemSig;
use eflow_compiler::syntax::ast::Span;

use super::Db;
use super::lex::{TokKind, is_keyword, tokenize};
use eflow_compiler::semantics::{Def, Resolution};

/// Token types, in the order of the legend the server announces.
pub const TYPES: &[&str] = &[
    "namespace",
    "type",
    "struct",
    "enum",
    "enumMember",
    "typeParameter",
    "parameter",
    "variable",
    "property",
    "function",
    "keyword",
    "comment",
    "string",
    "number",
    "operator",
    "macro",
];

/// Token modifiers, as bits in this order.
pub const MODIFIERS: &[&str] = &["declaration", "documentation", "defaultLibrary"];

const NAMESPACE: u32 = 0;
const TYPE: u32 = 1;
const STRUCT: u32 = 2;
const ENUM: u32 = 3;
const ENUM_MEMBER: u32 = 4;
const TYPE_PARAMETER: u32 = 5;
const PARAMETER: u32 = 6;
const VARIABLE: u32 = 7;
const PROPERTY: u32 = 8;
const FUNCTION: u32 = 9;
const KEYWORD: u32 = 10;
const COMMENT: u32 = 11;
const STRING: u32 = 12;
const NUMBER: u32 = 13;
const OPERATOR: u32 = 14;
const MACRO: u32 = 15;

const DECLARATION: u32 = 1;
const DOCUMENTATION: u32 = 2;
const DEFAULT_LIBRARY: u32 = 4;

/// (span, type, modifiers) for every token worth colouring, in order.
pub fn tokens(db: Db, text: &str, resolved: &[Resolution]) -> Vec<(Span, u32, u32)> {
    let mut occ = resolved.iter().peekable();
    let mut out = Vec::new();
    for t in tokenize(text) {
        let span = Span::new(t.start, t.end);
        let s = t.text(text);
        let kind = match t.kind {
            TokKind::Comment => Some((COMMENT, 0)),
            TokKind::DocComment => Some((COMMENT, DOCUMENTATION)),
            TokKind::Str { .. } => Some((STRING, 0)),
            TokKind::Number => Some((NUMBER, 0)),
            TokKind::Punct => {
                matches!(s, "??" | "==" | "!=" | "<=" | ">=" | "->").then_some((OPERATOR, 0))
            }
            TokKind::Word => {
                while occ
                    .peek()
                    .is_some_and(|o| (o.span.start as usize) < t.start)
                {
                    occ.next();
                }
                let found = occ.peek().filter(|o| o.span == span);
                match found {
                    Some(o) => classify(db, &o.def)
                        .map(|(ty, m)| (ty, m | if o.decl { DECLARATION } else { 0 })),
                    None if is_keyword(s) => Some((KEYWORD, 0)),
                    None => None,
                }
            }
        };
        if let Some((ty, mods)) = kind {
            out.push((span, ty, mods));
        }
    }
    out
}

fn classify(db: Db, def: &Def) -> Option<(u32, u32)> {
    let std = |file: eflow_compiler::analysis::FileId| {
        if db.module(file).is_some_and(|m| m.is_std) {
            DEFAULT_LIBRARY
        } else {
            0
        }
    };
    Some(match def {
        Def::Item(d) => {
            let ty = match db.sig(*d)? {
                ItemSig::Record(_) => STRUCT,
                ItemSig::Enum(_) => ENUM,
                ItemSig::Alias(_) => TYPE,
                ItemSig::Step(_) | ItemSig::Flow(_) => FUNCTION,
                ItemSig::None => return None,
            };
            (ty, std(d.file))
        }
        Def::Field { record, .. } => (PROPERTY, std(record.file)),
        Def::Variant { en, .. } => (ENUM_MEMBER, std(en.file)),
        Def::Param { owner, .. } => (PARAMETER, std(owner.file)),
        Def::Local { .. } | Def::ForVar { .. } | Def::LoopVar { .. } => (VARIABLE, 0),
        Def::Generic { .. } => (TYPE_PARAMETER, 0),
        Def::ErrorName { .. } => (ENUM_MEMBER, 0),
        Def::Module(_) => (NAMESPACE, 0),
        Def::Env(_) => (NAMESPACE, 0),
        Def::Run => (VARIABLE, DEFAULT_LIBRARY),
        Def::RunField(_) => (PROPERTY, DEFAULT_LIBRARY),
        Def::Builtin(_) => (TYPE, DEFAULT_LIBRARY),
        Def::Connector(_) => (MACRO, DEFAULT_LIBRARY),
        Def::ConnectorKey { .. } => (PROPERTY, DEFAULT_LIBRARY),
    })
}
