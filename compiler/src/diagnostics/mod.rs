//! Diagnostics: what every layer reports, and the catalogue of their stable codes.
//!
//! A [`Diagnostic`] is plain data (code, severity, message, labelled spans, help).
//! Rendering to the terminal, JSON, SARIF and GitHub workflow commands lives in
//! [`render`]; the language server converts the same values to LSP diagnostics.

pub mod codes;
pub mod explain;
pub mod render;

pub use codes::Code;

use crate::source::FileId;
use crate::syntax::ast::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A span in a file with a short text saying what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub file: FileId,
    pub span: Span,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// One sentence, lowercase start, no trailing period.
    pub message: String,
    /// Where the problem is. Its message may be empty.
    pub primary: Label,
    /// Other places that explain it (where a type came from, the previous
    /// definition, the rest of a cycle), possibly in other files.
    pub secondary: Vec<Label>,
    /// What to do about it.
    pub help: Option<String>,
    /// Edits that fix it, set where it is reported; the language server offers
    /// them as quick fixes and `--format json` prints them.
    pub fixes: Vec<Fix>,
}

/// One way to fix a diagnostic: edits applied together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// What it does, for a menu: ``Change `x` to `y` ``.
    pub title: String,
    /// Disjoint edits, in any order.
    pub edits: Vec<Edit>,
    /// Safe to apply without looking (an editor's preferred quick fix).
    pub preferred: bool,
}

/// Replace the text at `span` in `file` with `text` (an empty span inserts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub file: FileId,
    pub span: Span,
    pub text: String,
}

impl Fix {
    /// A fix of one edit.
    pub fn edit(
        title: impl Into<String>,
        file: FileId,
        span: Span,
        text: impl Into<String>,
    ) -> Self {
        Fix {
            title: title.into(),
            edits: vec![Edit {
                file,
                span,
                text: text.into(),
            }],
            preferred: true,
        }
    }
}

impl Diagnostic {
    /// A diagnostic with the code's default severity.
    pub fn new(code: Code, file: FileId, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            primary: Label {
                file,
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            help: None,
            fixes: Vec::new(),
        }
    }

    /// Set the primary label's text.
    pub fn with_label(mut self, message: impl Into<String>) -> Self {
        self.primary.message = message.into();
        self
    }

    pub fn with_secondary(mut self, file: FileId, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label {
            file,
            span,
            message: message.into(),
        });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_fix(mut self, fix: Fix) -> Self {
        self.fixes.push(fix);
        self
    }

    /// For a misspelled name at the primary span: the help `did you mean `x`?`
    /// and the fix that writes `x` there, when a candidate is close enough;
    /// else the help `otherwise` gives.
    pub fn with_did_you_mean<'c>(
        mut self,
        written: &str,
        candidates: impl IntoIterator<Item = &'c str>,
        otherwise: impl FnOnce() -> String,
    ) -> Self {
        match crate::suggest::closest(written, candidates) {
            Some(name) => {
                let span = self.primary.span;
                self.with_replacement(written, name, span)
            }
            None => {
                self.help = Some(otherwise());
                self
            }
        }
    }

    /// Help "did you mean `name`?" and the fix that writes `name` over `written`
    /// at `span`: a did-you-mean always comes with the edit it suggests.
    pub fn with_replacement(mut self, written: &str, name: &str, span: Span) -> Self {
        self.help = Some(format!("did you mean `{name}`?"));
        self.fixes.push(Fix::edit(
            format!("Change `{written}` to `{name}`"),
            self.primary.file,
            span,
            name,
        ));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Sort diagnostics into the order users read them: by file, then position, then code.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (a.primary.file, a.primary.span.start, a.code, &a.message).cmp(&(
            b.primary.file,
            b.primary.span.start,
            b.code,
            &b.message,
        ))
    });
}
