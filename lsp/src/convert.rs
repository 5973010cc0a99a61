//! Between the compiler's byte offsets and the protocol's positions (0-based lines,
//! UTF-16 columns), and from compiler diagnostics to protocol diagnostics.

use eflow_compiler::diagnostics::{Code, Diagnostic as CDiagnostic, Severity};
use eflow_compiler::syntax::ast::Span;
use lsp_types::{
    DiagnosticRelatedInformation, DiagnosticSeverity, DiagnosticTag, Location, NumberOrString,
    Position, Range, Url,
};

/// Where each line of a text starts, for offset ⇄ position conversion.
pub struct LineIndex<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { text, starts }
    }

    /// The position of a byte offset; offsets past the end or inside a character
    /// are clamped, never rejected.
    pub fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let col: usize = self.text[start..offset].chars().map(char::len_utf16).sum();
        Position::new(line as u32, col as u32)
    }

    /// The byte offset of a position; a column past the line's end means its end,
    /// a line past the last means the end of the text.
    pub fn offset(&self, pos: Position) -> usize {
        let Some(&start) = self.starts.get(pos.line as usize) else {
            return self.text.len();
        };
        let mut units = 0u32;
        for (i, c) in self.text[start..].char_indices() {
            if units >= pos.character || c == '\n' {
                return start + i;
            }
            units += c.len_utf16() as u32;
        }
        self.text.len()
    }

    pub fn range(&self, span: Span) -> Range {
        Range::new(
            self.position(span.start as usize),
            self.position(span.end as usize),
        )
    }

    pub fn span(&self, range: Range) -> Span {
        let start = self.offset(range.start);
        let end = self.offset(range.end).max(start);
        Span::new(start, end)
    }
}

/// Where the text of a file comes from for conversions, and its address.
pub trait FileMap {
    fn text(&self, file: eflow_compiler::analysis::FileId) -> &str;
    fn url(&self, file: eflow_compiler::analysis::FileId) -> Option<Url>;
}

/// The protocol form of one compiler diagnostic: the same code and message; the
/// help line appended, since editors show no separate help; secondary labels as
/// related information.
pub fn diagnostic(map: &dyn FileMap, index: &LineIndex, d: &CDiagnostic) -> lsp_types::Diagnostic {
    let mut message = d.message.clone();
    if !d.primary.message.is_empty() {
        message.push_str(&format!(" ({})", d.primary.message));
    }
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    let related: Vec<DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .filter_map(|l| {
            let uri = map.url(l.file)?;
            let text = map.text(l.file);
            let range = LineIndex::new(text).range(l.span);
            Some(DiagnosticRelatedInformation {
                location: Location::new(uri, range),
                message: if l.message.is_empty() {
                    "see here".to_string()
                } else {
                    l.message.clone()
                },
            })
        })
        .collect();
    let unnecessary = matches!(
        d.code,
        Code::UnusedOutput | Code::UnusedImport | Code::UnusedParam
    );
    lsp_types::Diagnostic {
        range: index.range(d.primary.span),
        severity: Some(match d.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(d.code.as_str().to_string())),
        code_description: None,
        source: Some("eflow".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        tags: unnecessary.then(|| vec![DiagnosticTag::UNNECESSARY]),
        data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_columns_round_trip() {
        let text = "a😀b\nçx\n";
        let ix = LineIndex::new(text);
        // 😀 is two UTF-16 units and four bytes.
        assert_eq!(ix.position(5), Position::new(0, 3));
        assert_eq!(ix.offset(Position::new(0, 3)), 5);
        assert_eq!(ix.offset(Position::new(1, 1)), 9);
        assert_eq!(ix.position(9), Position::new(1, 1));
        // Clamped, never out of bounds.
        assert_eq!(ix.offset(Position::new(0, 99)), 6);
        assert_eq!(ix.offset(Position::new(99, 0)), text.len());
        assert_eq!(ix.position(2), Position::new(0, 1));
        assert_eq!(ix.position(999), Position::new(2, 0));
    }
}
