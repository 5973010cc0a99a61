//! Quick fixes: the fixes the compiler attached to the diagnostics at a range
//! (a misspelled name, a missing argument, a name to import, an unused import).

use eflow_compiler::analysis::FileId;
use eflow_compiler::diagnostics::Diagnostic;
use eflow_compiler::syntax::ast::Span;

use super::Db;

pub struct Action {
    pub title: String,
    pub edits: Vec<(FileId, Span, String)>,
    pub preferred: bool,
    /// The diagnostic it fixes.
    pub fixes: Diagnostic,
}

/// Fixes for the diagnostics of `file` that touch `range`.
pub fn code_actions(db: Db, file: FileId, range: Span) -> Vec<Action> {
    let Some(module) = db.module(file) else {
        return Vec::new();
    };
    let mut diags: Vec<Diagnostic> = module.diagnostics.clone();
    diags.extend(
        db.analysis
            .diagnostics()
            .into_iter()
            .filter(|d| d.primary.file == file && !module.diagnostics.contains(d)),
    );
    let mut out = Vec::new();
    for d in diags {
        let s = d.primary.span;
        if s.end < range.start || s.start > range.end {
            continue;
        }
        for fix in &d.fixes {
            out.push(Action {
                title: fix.title.clone(),
                edits: fix
                    .edits
                    .iter()
                    .map(|e| (e.file, e.span, e.text.clone()))
                    .collect(),
                preferred: fix.preferred,
                fixes: d.clone(),
            });
        }
    }
    out
}
