//! Rendering diagnostics: human (miette), JSON, SARIF 2.1.0 and GitHub workflow commands.
//!
//! Every format shows the same stable code (`E0200`): in the terminal header, as the
//! JSON `code`, the SARIF `ruleId` and the GitHub annotation `title`. Spans are
//! clamped to their file before use, so a stale or wrong span degrades the output
//! instead of panicking; a [`FileId`] that is not in the [`Sources`] is shown as
//! `<unknown file>`.
//!
//! Positions are 1-based; columns count Unicode scalar values (characters), and end
//! positions are exclusive (the column just after the last character), as in SARIF.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, SourceCode};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::explain;
use super::{Code, Diagnostic, Edit, Fix, Label, Severity};
use crate::source::{FileId, LineCol, SourceFile, Sources};

/// The output formats of `eflowc check --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Format {
    /// Annotated source snippets for people.
    #[default]
    Human,
    /// One JSON document for scripts (see [`render`] for its shape).
    Json,
    /// SARIF 2.1.0, for GitHub code scanning and other SARIF viewers.
    Sarif,
    /// GitHub Actions workflow commands (`::error file=…::…`), for inline annotations.
    Github,
}

impl Format {
    pub const ALL: &'static [Format] =
        &[Format::Human, Format::Json, Format::Sarif, Format::Github];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Human => "human",
            Format::Json => "json",
            Format::Sarif => "sarif",
            Format::Github => "github",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .iter()
            .copied()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown format `{s}` (expected human, json, sarif or github)"))
    }
}

/// Where SARIF viewers send people who want to know more about the tool.
pub const INFORMATION_URI: &str = "https://github.com/eflow-lang/eflow";

/// GitHub code scanning rejects a SARIF run with more results than this.
pub const MAX_SARIF_RESULTS: usize = 25_000;

/// GitHub shows at most this many annotations of each severity per step.
pub const GITHUB_ANNOTATION_LIMIT: usize = 10;

/// Bumped only when the JSON output changes incompatibly.
pub const JSON_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// ANSI colours in the human format. Other formats never contain escapes.
    pub color: bool,
    /// Terminal width the human format wraps to; fixed so output is reproducible.
    pub width: usize,
    /// `tool.driver.version` in SARIF.
    pub tool_version: String,
    /// `tool.driver.informationUri` in SARIF.
    pub information_uri: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            color: false,
            width: 100,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            information_uri: INFORMATION_URI.to_string(),
        }
    }
}

/// Render `diags`, in the order given, in one of the formats.
///
/// - **human**: miette's graphical reports, one per diagnostic, with the primary and
///   same-file secondary labels in one snippet and one extra snippet per other file;
///   then a summary line (`error: 3 errors and 1 warning`). Empty when there are no
///   diagnostics.
/// - **json**: one pretty-printed JSON object (2-space indent, trailing newline):
///
///   ```text
///   { "version": 1,
///     "diagnostics": [ { "code": "E0200", "severity": "error" | "warning",
///                        "message": "…", "file": "src/a.eflow",
///                        "span": { "start": 10, "end": 14 },   // byte offsets, clamped
///                        "line": 2, "column": 5, "end_line": 2, "end_column": 9,
///                        "label": "…" | null,                 // primary label text
///                        "labels": [ { "file", "span", "line", "column",
///                                      "end_line", "end_column", "message" } ],
///                        "help": "…" | null,
///                        "fixes": [ { "title": "Change `x` to `y`",
///                                     "preferred": true,   // safe to apply unseen
///                                     "edits": [ { "file", "span", "line", "column",
///                                                  "end_line", "end_column",
///                                                  "text": "…" } ] } ] } ],
///     "summary": { "errors": 1, "warnings": 0 } }
///   ```
/// - **sarif**: one SARIF 2.1.0 log with one run, at most [`MAX_SARIF_RESULTS`]
///   results (errors kept first); rules only for the codes that occur.
/// - **github**: every diagnostic in plain `path:line:col: error[E0200]: message`
///   form (with commands disabled around it, so text from sources cannot inject
///   workflow commands), then one `::error`/`::warning` command per diagnostic, then
///   a summary line.
pub fn render(
    format: Format,
    diags: &[Diagnostic],
    sources: &Sources,
    opts: &RenderOptions,
) -> String {
    match format {
        Format::Human => render_human(diags, sources, opts),
        Format::Json => render_json(diags, sources),
        Format::Sarif => render_sarif(diags, sources, opts),
        Format::Github => render_github(diags, sources),
    }
}

// ---------------------------------------------------------------------------------
// Positions shared by all formats.

const UNKNOWN_FILE: &str = "<unknown file>";

/// `Sources::get` indexes directly; a diagnostic from a stale analysis must not take
/// the renderer down with it.
fn file_of(sources: &Sources, id: FileId) -> Option<&SourceFile> {
    ((id.0 as usize) < sources.len()).then(|| sources.get(id))
}

/// Byte range of a span inside `text`: within bounds, on character boundaries, and
/// never inverted.
///
/// An empty span at the very end of a file that ends with a newline ("expected `}`",
/// or a span past the end) moves to the end of the last line: the line after the
/// final newline does not exist in editors or on GitHub, so nothing could show it.
fn clamp(text: &str, start: u32, end: u32) -> (usize, usize) {
    let len = text.len();
    if start as usize >= len && end as usize >= len {
        let trimmed = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t));
        let at = trimmed.map_or(len, str::len);
        return (at, at);
    }
    let mut start = (start as usize).min(len);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (end as usize).clamp(start, len);
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// A label resolved against its file.
struct Place<'a> {
    file: &'a str,
    /// Clamped byte offsets.
    start: usize,
    end: usize,
    begin: LineCol,
    finish: LineCol,
}

fn place<'a>(sources: &'a Sources, label: &Label) -> Place<'a> {
    match file_of(sources, label.file) {
        Some(file) => {
            let (start, end) = clamp(&file.text, label.span.start, label.span.end);
            Place {
                file: &file.name,
                start,
                end,
                begin: file.line_col(start as u32),
                finish: file.line_col(end as u32),
            }
        }
        None => {
            let origin = LineCol { line: 1, col: 1 };
            Place {
                file: UNKNOWN_FILE,
                start: 0,
                end: 0,
                begin: origin,
                finish: origin,
            }
        }
    }
}

fn counts(diags: &[Diagnostic]) -> (usize, usize) {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    (errors, diags.len() - errors)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

// ---------------------------------------------------------------------------------
// Human.

/// Source text for miette without copying it once per diagnostic.
#[derive(Debug)]
struct MietteSource<'a> {
    name: &'a str,
    text: &'a str,
}

impl SourceCode for MietteSource<'_> {
    fn read_span<'b>(
        &'b self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'b> + 'b>, miette::MietteError> {
        let inner = self
            .text
            .read_span(span, context_lines_before, context_lines_after)?;
        // miette counts columns in bytes; every other format counts characters, and
        // the header location must agree with them on lines with non-ASCII text.
        let start = inner.span().offset();
        let line_start = self
            .text
            .get(..start)
            .map_or(0, |t| t.rfind('\n').map_or(0, |i| i + 1));
        let column = self
            .text
            .get(line_start..start)
            .map_or(inner.column(), |t| t.chars().count());
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.to_string(),
            inner.data(),
            *inner.span(),
            inner.line(),
            column,
            inner.line_count(),
        )))
    }
}

/// Our [`Diagnostic`] seen through miette's trait. miette gives a report one source,
/// so labels in other files become `related` reports, one per file.
#[derive(Debug)]
struct Report<'a> {
    message: String,
    code: Option<Code>,
    severity: miette::Severity,
    help: Option<&'a str>,
    source: Option<MietteSource<'a>>,
    labels: Vec<LabeledSpan>,
    related: Vec<Report<'a>>,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.code
            .map(|c| Box::new(c.as_str()) as Box<dyn fmt::Display>)
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.help.map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(
                self.related.iter().map(|r| r as &dyn miette::Diagnostic),
            ))
        }
    }
}

fn miette_label(sources: &Sources, label: &Label, primary: bool) -> LabeledSpan {
    let p = place(sources, label);
    let text = (!label.message.is_empty()).then(|| label.message.clone());
    let span = (p.start, p.end - p.start);
    if primary {
        LabeledSpan::new_primary_with_span(text, span)
    } else {
        LabeledSpan::new_with_span(text, span)
    }
}

fn miette_source(sources: &Sources, id: FileId) -> Option<MietteSource<'_>> {
    file_of(sources, id).map(|f| MietteSource {
        name: &f.name,
        text: &f.text,
    })
}

fn report<'a>(diag: &'a Diagnostic, sources: &'a Sources) -> Report<'a> {
    let home = diag.primary.file;
    let mut labels = vec![miette_label(sources, &diag.primary, true)];
    // Other files in order of first mention, so the output follows the diagnostic.
    let mut others: Vec<(FileId, Vec<&Label>)> = Vec::new();
    for label in &diag.secondary {
        if label.file == home {
            labels.push(miette_label(sources, label, false));
        } else if let Some((_, group)) = others.iter_mut().find(|(f, _)| *f == label.file) {
            group.push(label);
        } else {
            others.push((label.file, vec![label]));
        }
    }
    let related = others
        .into_iter()
        .map(|(file, group)| match miette_source(sources, file) {
            Some(source) => Report {
                message: format!("see also {}", source.name),
                code: None,
                severity: miette::Severity::Advice,
                help: None,
                source: Some(source),
                labels: group
                    .iter()
                    .map(|l| miette_label(sources, l, false))
                    .collect(),
                related: Vec::new(),
            },
            // Without a source miette would draw these labels over the parent's
            // file; keep their text, which is all there is to show.
            None => Report {
                message: format!(
                    "see also {UNKNOWN_FILE}: {}",
                    group
                        .iter()
                        .map(|l| l.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                code: None,
                severity: miette::Severity::Advice,
                help: None,
                source: None,
                labels: Vec::new(),
                related: Vec::new(),
            },
        })
        .collect();
    Report {
        message: diag.message.clone(),
        code: Some(diag.code),
        severity: match diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        },
        help: diag.help.as_deref(),
        source: miette_source(sources, home),
        labels,
        related,
    }
}

fn render_human(diags: &[Diagnostic], sources: &Sources, opts: &RenderOptions) -> String {
    if diags.is_empty() {
        return String::new();
    }
    let theme = if opts.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(opts.width)
        .with_links(false)
        .with_urls(false);
    let mut out = String::new();
    for diag in diags {
        // Writing into a String only fails if miette itself reports an error; keep
        // going with the other diagnostics rather than lose them all.
        if handler
            .render_report(&mut out, &report(diag, sources))
            .is_err()
        {
            let _ = writeln!(
                out,
                "{}[{}]: {}",
                diag.severity.as_str(),
                diag.code,
                diag.message
            );
        }
        out.push('\n');
    }
    // miette pads some lines (`Advice: `, empty gutters); trailing blanks only make
    // logs and test expectations brittle.
    let mut out = out
        .lines()
        .fold(String::with_capacity(out.len()), |mut acc, line| {
            acc.push_str(line.trim_end_matches(' '));
            acc.push('\n');
            acc
        });
    let (errors, warnings) = counts(diags);
    let summary = match (errors, warnings) {
        (0, w) => format!("warning: {}", plural(w, "warning")),
        (e, 0) => format!("error: {}", plural(e, "error")),
        (e, w) => format!("error: {} and {}", plural(e, "error"), plural(w, "warning")),
    };
    out.push_str(&summary);
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------
// JSON.

#[derive(Serialize)]
struct JsonOutput<'a> {
    version: u32,
    diagnostics: Vec<JsonDiagnostic<'a>>,
    summary: JsonSummary,
}

#[derive(Serialize)]
struct JsonSummary {
    errors: usize,
    warnings: usize,
}

#[derive(Serialize)]
struct JsonSpan {
    start: usize,
    end: usize,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'static str,
    severity: &'static str,
    message: &'a str,
    #[serde(flatten)]
    at: JsonPlace<'a>,
    label: Option<&'a str>,
    labels: Vec<JsonLabel<'a>>,
    help: Option<&'a str>,
    fixes: Vec<JsonFix<'a>>,
}

#[derive(Serialize)]
struct JsonFix<'a> {
    title: &'a str,
    preferred: bool,
    edits: Vec<JsonEdit<'a>>,
}

#[derive(Serialize)]
struct JsonEdit<'a> {
    #[serde(flatten)]
    at: JsonPlace<'a>,
    text: &'a str,
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    #[serde(flatten)]
    at: JsonPlace<'a>,
    message: &'a str,
}

/// Where a label is: file, byte span and 1-based start and end.
#[derive(Serialize)]
struct JsonPlace<'a> {
    file: &'a str,
    span: JsonSpan,
    line: u32,
    column: u32,
    end_line: u32,
    end_column: u32,
}

fn json_place<'a>(sources: &'a Sources, label: &Label) -> JsonPlace<'a> {
    let p = place(sources, label);
    JsonPlace {
        file: p.file,
        span: JsonSpan {
            start: p.start,
            end: p.end,
        },
        line: p.begin.line,
        column: p.begin.col,
        end_line: p.finish.line,
        end_column: p.finish.col,
    }
}

/// Where an edit goes, as a label without text.
fn edit_label(e: &Edit) -> Label {
    Label {
        file: e.file,
        span: e.span,
        message: String::new(),
    }
}

fn render_json(diags: &[Diagnostic], sources: &Sources) -> String {
    let diagnostics = diags
        .iter()
        .map(|d| JsonDiagnostic {
            code: d.code.as_str(),
            severity: d.severity.as_str(),
            message: &d.message,
            at: json_place(sources, &d.primary),
            label: (!d.primary.message.is_empty()).then_some(d.primary.message.as_str()),
            labels: d
                .secondary
                .iter()
                .map(|l| JsonLabel {
                    at: json_place(sources, l),
                    message: &l.message,
                })
                .collect(),
            help: d.help.as_deref(),
            fixes: d
                .fixes
                .iter()
                .map(|f| JsonFix {
                    title: &f.title,
                    preferred: f.preferred,
                    edits: f
                        .edits
                        .iter()
                        .map(|e| JsonEdit {
                            at: json_place(sources, &edit_label(e)),
                            text: &e.text,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    let (errors, warnings) = counts(diags);
    let output = JsonOutput {
        version: JSON_FORMAT_VERSION,
        diagnostics,
        summary: JsonSummary { errors, warnings },
    };
    let mut out = serde_json::to_string_pretty(&output)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialise diagnostics: {e}\"}}"));
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------
// SARIF.

/// SARIF `level` for a severity.
fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// Characters a URI path keeps as they are (RFC 3986 unreserved, plus `/`).
fn uri_keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/')
}

fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if uri_keeps(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Display names are relative to the working directory, which is where code scanning
/// runs the tool: `%SRCROOT%`. A name that is absolute (a file outside the working
/// directory) becomes a `file:` URI instead, since it cannot be relative to the root.
fn artifact_location(name: &str) -> Value {
    let name = name.replace('\\', "/");
    let name = name.trim_start_matches("./");
    let bytes = name.as_bytes();
    let drive =
        bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'/';
    if drive {
        let (letter, rest) = name.split_at(2);
        json!({ "uri": format!("file:///{letter}{}", percent_encode(rest)) })
    } else if name.starts_with('/') {
        json!({ "uri": format!("file://{}", percent_encode(name)) })
    } else {
        json!({ "uri": percent_encode(name), "uriBaseId": "%SRCROOT%" })
    }
}

fn sarif_location(p: &Place<'_>) -> Value {
    json!({
        "physicalLocation": {
            "artifactLocation": artifact_location(p.file),
            "region": {
                "startLine": p.begin.line,
                "startColumn": p.begin.col,
                "endLine": p.finish.line,
                "endColumn": p.finish.col,
            },
        },
    })
}

/// A SARIF `fix`: one artifact change per edit.
fn sarif_fix(sources: &Sources, fix: &Fix) -> Value {
    let changes: Vec<Value> = fix
        .edits
        .iter()
        .map(|e| {
            let p = place(sources, &edit_label(e));
            json!({
                "artifactLocation": artifact_location(p.file),
                "replacements": [{
                    "deletedRegion": {
                        "startLine": p.begin.line,
                        "startColumn": p.begin.col,
                        "endLine": p.finish.line,
                        "endColumn": p.finish.col,
                    },
                    "insertedContent": { "text": e.text },
                }],
            })
        })
        .collect();
    json!({ "description": { "text": fix.title }, "artifactChanges": changes })
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Identifies a result across runs without its line number, so code scanning keeps
/// tracking an alert when code above it moves.
fn fingerprint(code: Code, file: &str, message: &str) -> String {
    let mut hash = Sha256::new();
    for part in [code.as_str(), file, message] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex(&hash.finalize()[..16])
}

/// The first paragraph of the explanation: what the code means.
fn summary_paragraph(code: Code) -> &'static str {
    let text = explain::explanation(code).trim();
    text.split("\n\n").next().unwrap_or(text).trim()
}

fn sarif_rule(code: Code) -> Value {
    let explanation = explain::explanation(code).trim();
    json!({
        "id": code.as_str(),
        "name": format!("{code:?}"),
        "shortDescription": { "text": code.title() },
        "fullDescription": { "text": summary_paragraph(code) },
        "help": { "text": explanation, "markdown": explanation },
        "defaultConfiguration": { "level": sarif_level(code.severity()) },
    })
}

/// Indices of the diagnostics to report, in their original order. Over the cap,
/// errors win over warnings: a warning is never worth hiding an error for.
fn sarif_selection(diags: &[Diagnostic]) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..diags.len()).collect();
    if keep.len() > MAX_SARIF_RESULTS {
        keep.sort_by_key(|&i| diags[i].severity);
        keep.truncate(MAX_SARIF_RESULTS);
        keep.sort_unstable();
    }
    keep
}

fn render_sarif(diags: &[Diagnostic], sources: &Sources, opts: &RenderOptions) -> String {
    let keep = sarif_selection(diags);
    let mut codes: Vec<Code> = keep.iter().map(|&i| diags[i].code).collect();
    codes.sort_unstable();
    codes.dedup();
    let rules: Vec<Value> = codes.iter().map(|&c| sarif_rule(c)).collect();

    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let results: Vec<Value> = keep
        .iter()
        .map(|&i| {
            let d = &diags[i];
            let p = place(sources, &d.primary);
            let mut location = sarif_location(&p);
            if !d.primary.message.is_empty() {
                location["message"] = json!({ "text": d.primary.message });
            }
            let related: Vec<Value> = d
                .secondary
                .iter()
                .enumerate()
                .map(|(n, l)| {
                    let mut loc = sarif_location(&place(sources, l));
                    loc["id"] = json!(n + 1);
                    if !l.message.is_empty() {
                        loc["message"] = json!({ "text": l.message });
                    }
                    loc
                })
                .collect();
            // GitHub shows only the message, not the rule's help; the hint belongs
            // with the alert.
            let text = match &d.help {
                Some(help) => format!("{}\n\nhelp: {help}", d.message),
                None => d.message.clone(),
            };
            let hash = fingerprint(d.code, p.file, &d.message);
            let occurrence = seen.entry(hash.clone()).or_insert(0);
            *occurrence += 1;
            let mut result = json!({
                "ruleId": d.code.as_str(),
                "ruleIndex": codes.binary_search(&d.code).unwrap_or_default(),
                "level": sarif_level(d.severity),
                "message": { "text": text },
                "locations": [location],
                "partialFingerprints": { "eflowcFingerprint/v1": format!("{hash}:{occurrence}") },
            });
            if !related.is_empty() {
                result["relatedLocations"] = Value::Array(related);
            }
            if !d.fixes.is_empty() {
                result["fixes"] = d.fixes.iter().map(|f| sarif_fix(sources, f)).collect();
            }
            result
        })
        .collect();

    let mut run = json!({
        "tool": {
            "driver": {
                "name": "eflowc",
                "version": opts.tool_version,
                "informationUri": opts.information_uri,
                "rules": rules,
            },
        },
        "columnKind": "unicodeCodePoints",
        "results": results,
    });
    let dropped = diags.len() - keep.len();
    if dropped > 0 {
        run["invocations"] = json!([{
            "executionSuccessful": true,
            "toolExecutionNotifications": [{
                "level": "warning",
                "message": {
                    "text": format!(
                        "{} of {} results were dropped: GitHub code scanning accepts at most {} results per run (errors were kept first)",
                        dropped,
                        diags.len(),
                        MAX_SARIF_RESULTS,
                    ),
                },
            }],
        }]);
    }
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [run],
    });
    let mut out = serde_json::to_string_pretty(&log).unwrap_or_default();
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------
// GitHub workflow commands.

/// Escaping for the data after `::` (the runner unescapes exactly these).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escaping for a `key=value` property, where `:` and `,` are delimiters.
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Plain text lines for the log: every diagnostic, including those past GitHub's
/// annotation limit.
fn plain_listing(diags: &[Diagnostic], sources: &Sources) -> String {
    let mut out = String::new();
    for d in diags {
        let p = place(sources, &d.primary);
        let message = d.message.replace("\r\n", "\n").replace('\n', "\n    ");
        let _ = writeln!(
            out,
            "{}:{}:{}: {}[{}]: {}",
            p.file,
            p.begin.line,
            p.begin.col,
            d.severity.as_str(),
            d.code,
            message
        );
        for l in &d.secondary {
            let q = place(sources, l);
            let _ = writeln!(
                out,
                "  {}:{}:{}: note: {}",
                q.file, q.begin.line, q.begin.col, l.message
            );
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "  help: {}", help.replace('\n', "\n    "));
        }
    }
    out
}

fn render_github(diags: &[Diagnostic], sources: &Sources) -> String {
    let mut out = String::new();
    if !diags.is_empty() {
        let listing = plain_listing(diags, sources);
        // Messages quote source text, and the runner treats any log line starting
        // with `::` as a command. Pausing command processing with a token derived from
        // the text itself keeps the listing inert: the text cannot contain the hash
        // of itself.
        let token = format!("eflowc-{}", hex(&Sha256::digest(listing.as_bytes())[..16]));
        let _ = writeln!(out, "::stop-commands::{token}");
        out.push_str(&listing);
        let _ = writeln!(out, "::{token}::");
    }
    for d in diags {
        let p = place(sources, &d.primary);
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        let _ = writeln!(
            out,
            "::{} file={},line={},col={},endLine={},endColumn={},title={}::{}",
            d.severity.as_str(),
            escape_property(p.file),
            p.begin.line,
            p.begin.col,
            p.finish.line,
            p.finish.col,
            escape_property(d.code.as_str()),
            escape_data(&message),
        );
    }
    let (errors, warnings) = counts(diags);
    if diags.is_empty() {
        out.push_str("eflowc: no problems found\n");
    } else {
        let _ = write!(
            out,
            "eflowc: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        );
        if errors > GITHUB_ANNOTATION_LIMIT || warnings > GITHUB_ANNOTATION_LIMIT {
            let _ = write!(
                out,
                " (GitHub shows at most {GITHUB_ANNOTATION_LIMIT} of each kind inline; see the full list in the log above)"
            );
        }
        out.push('\n');
    }
    out
}
