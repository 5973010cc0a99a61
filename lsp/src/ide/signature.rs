//! Signature help: the contract of the step or flow whose call the cursor is in.

use eflow_compiler::analysis::FileId;
use eflow_compiler::semantics::DefId;

use super::Db;
use super::lex::{TokKind, is_keyword, tokenize};
use super::render;

pub struct SignatureHelp {
    pub label: String,
    pub doc: Option<String>,
    /// Each parameter's text (a substring of `label`) and documentation.
    pub params: Vec<(String, String)>,
    pub active: Option<usize>,
}

pub fn signature_help(db: Db, file: FileId, text: &str, offset: usize) -> Option<SignatureHelp> {
    let toks: Vec<_> = tokenize(text)
        .into_iter()
        .filter(|t| !t.is_trivia() && t.end <= offset)
        .collect();
    // The innermost unclosed `(` before the cursor, preceded by a name.
    let mut depth = 0i32;
    let mut open = None;
    for (i, t) in toks.iter().enumerate().rev() {
        match t.text(text) {
            ")" | "}" | "]" => depth += 1,
            "(" | "{" | "[" => {
                if depth == 0 {
                    if t.text(text) == "(" {
                        open = Some(i);
                    }
                    break;
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    let open = open?;
    let callee = toks.get(open.checked_sub(1)?)?;
    let name = callee.text(text);
    if callee.kind != TokKind::Word || is_keyword(name) {
        return None;
    }
    let before = open
        .checked_sub(2)
        .and_then(|i| toks.get(i))
        .map(|t| t.text(text));
    if matches!(before, Some("step" | "flow")) {
        return None;
    }
    let sym = db.module(file)?.namespace.get(name)?;
    if !sym.kind.is_callable() {
        return None;
    }
    let def: DefId = sym.def;
    let (label, params) = render::call_signature(db, def)?;
    // The argument being written: its name if typed, else the next one not given.
    let mut current: Option<&str> = None;
    let mut given = Vec::new();
    let mut d = 0i32;
    let mut seg_start = true;
    for i in open + 1..toks.len() {
        let s = toks[i].text(text);
        match s {
            "(" | "{" | "[" => d += 1,
            ")" | "}" | "]" => d -= 1,
            "," if d == 0 => {
                seg_start = true;
                current = None;
                continue;
            }
            _ => {}
        }
        if d == 0 && seg_start && toks[i].kind == TokKind::Word {
            if toks.get(i + 1).is_some_and(|n| n.text(text) == ":") {
                current = Some(s);
                given.push(s);
            }
            seg_start = false;
        }
    }
    let names: Vec<&str> = params
        .iter()
        .map(|(p, _)| p.split(':').next().unwrap_or("").trim())
        .collect();
    let active = match current {
        Some(c) => names.iter().position(|n| *n == c),
        None => names.iter().position(|n| !given.contains(n)),
    };
    Some(SignatureHelp {
        label,
        doc: db.doc(def).map(str::to_string),
        params,
        active,
    })
}
