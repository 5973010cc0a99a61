//! A flow's version (its hash) covers what the flow does, never where its text
//! sits: over every example, layout (spaces, blank lines, comments, doc comments)
//! and `eflowc fmt` leave every hash as it was, and every change of a literal in a
//! flow (a retry count, a step's input, a default, a schedule) changes that flow's
//! hash and no other's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use eflow_compiler::analysis::{Analysis, FsLoader, Loader};
use eflow_compiler::fmt::format_source;
use proptest::prelude::*;

#[path = "support/layout.rs"]
mod layout;
use layout::{filler, mutate};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The files of `examples/`, by path, with their text.
fn example_files() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    eflow_compiler::analysis::collect_eflow_files(&examples(), &mut files).expect("examples");
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            (p, text)
        })
        .collect()
}

/// Reads `examples/` from disk, except one file, whose text is given.
struct Overlay<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Loader for Overlay<'_> {
    fn read(&self, path: &Path) -> io::Result<String> {
        if path == self.path {
            Ok(self.text.to_string())
        } else {
            FsLoader.read(path)
        }
    }
}

/// Each flow's hash when `examples/` is compiled with `path` holding `text`, or
/// the codes of the errors.
fn versions(path: &Path, text: &str) -> Result<BTreeMap<String, String>, Vec<String>> {
    let loader = Overlay { path, text };
    let analysis = Analysis::from_paths(&[examples()], &loader).map_err(|e| vec![e.to_string()])?;
    match eflow_compiler::lower::emit(&analysis, None) {
        Ok(bundle) => Ok(bundle.flows.into_iter().map(|f| (f.name, f.hash)).collect()),
        Err(diags) => Err(diags.iter().map(|d| d.code.to_string()).collect()),
    }
}

fn baseline() -> &'static BTreeMap<String, String> {
    static BASE: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let (path, text) = &example_files()[0];
        versions(path, text).expect("the examples compile")
    })
}

fn example_file() -> impl Strategy<Value = (PathBuf, String)> {
    prop::sample::select(example_files())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
    ))]

    /// Spaces, blank lines, comments and doc comments anywhere between the tokens
    /// of any example, then `eflowc fmt`: every flow keeps its version.
    #[test]
    fn layout_and_formatting_never_change_a_version(
        (path, text) in example_file(),
        picks in prop::collection::vec((any::<prop::sample::Index>(), filler()), 1..40),
    ) {
        let mutated = mutate(&text, &picks);
        match versions(&path, &mutated) {
            Ok(v) => prop_assert_eq!(&v, baseline(), "{}:\n{}", path.display(), mutated),
            // A comment inserted where it ends a line that must not end there.
            Err(_) => prop_assume!(false),
        }
        let formatted = format_source(&mutated).map_err(|n| TestCaseError::fail(format!("{n} syntax errors")))?;
        prop_assert_eq!(&versions(&path, &formatted).expect("formatted compiles"), baseline());
    }
}

/// Formatting every example as it is (they are formatted: a no-op) and with
/// every line indented and every blank line doubled keeps every version.
#[test]
fn reflowed_examples_keep_their_versions() {
    for (path, text) in example_files() {
        let reflowed: String = text
            .lines()
            .map(|l| match l {
                "" => "\n\n".to_string(),
                l if l.starts_with(' ') => format!("  {l}   // moved\n"),
                l => format!("{l}\n"),
            })
            .collect();
        let formatted = format_source(&reflowed).expect("formats");
        assert_eq!(&versions(&path, &formatted).expect("compiles"), baseline());
        assert_eq!(
            &versions(&path, &reflowed).expect("compiles"),
            baseline(),
            "{}",
            path.display()
        );
    }
}

/// A literal of a flow: its byte range and the flow's name.
struct Literal {
    start: usize,
    end: usize,
    flow: String,
}

/// Every number, duration and string literal inside a `flow` item, outside
/// comments.
fn flow_literals(text: &str) -> Vec<Literal> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut flow: Option<String> = None;
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        if line_start && b[i].is_ascii_alphabetic() {
            // An item begins with a keyword in column 0.
            let line = text[i..].lines().next().unwrap_or("");
            flow = line.strip_prefix("flow ").map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            });
        }
        line_start = false;
        match b[i] {
            b'\n' => {
                line_start = true;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                if let Some(f) = &flow {
                    out.push(Literal {
                        start,
                        end: i,
                        flow: f.clone(),
                    });
                }
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                if let Some(f) = &flow {
                    out.push(Literal {
                        start,
                        end: i,
                        flow: f.clone(),
                    });
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The literal changed: a string gets one more character; a number's last digit
/// goes up by one (`3` → `4`, `0.8` → `0.9`, `10d` → `11d`, `9` → `0`).
fn changed(literal: &str) -> String {
    if let Some(inner) = literal.strip_suffix('"') {
        return format!("{inner}x\"");
    }
    let last = literal.rfind(|c: char| c.is_ascii_digit()).unwrap_or(0);
    let d = literal.as_bytes()[last] - b'0';
    format!(
        "{}{}{}",
        &literal[..last],
        (d + 1) % 10,
        &literal[last + 1..]
    )
}

/// Every literal of every flow of every example, changed one at a time: when the
/// examples still compile, the flow holding it has a new version and every other
/// flow keeps its own.
#[test]
fn every_change_of_behaviour_makes_a_new_version() {
    let base = baseline();
    let mut compiled = 0;
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for (path, text) in example_files() {
        for lit in flow_literals(&text) {
            let before = &text[lit.start..lit.end];
            let after = changed(before);
            let mutated = format!("{}{after}{}", &text[..lit.start], &text[lit.end..]);
            let Ok(v) = versions(&path, &mutated) else {
                continue;
            };
            compiled += 1;
            let line = text[..lit.start].rsplit('\n').next().unwrap_or("").trim();
            for kind in ["retry", "timeout", "(", ":", "schedule", "input"] {
                if line.contains(kind) {
                    *kinds.entry(kind).or_default() += 1;
                }
            }
            let moved: BTreeSet<&str> = v
                .iter()
                .filter(|(name, hash)| base.get(*name) != Some(hash))
                .map(|(name, _)| name.as_str())
                .collect();
            assert_eq!(
                moved,
                BTreeSet::from([lit.flow.as_str()]),
                "{}: `{before}` → `{after}` in flow {} (line `{line}`)",
                path.display(),
                lit.flow
            );
        }
    }
    assert!(compiled > 50, "only {compiled} changes compiled");
    for kind in ["retry", "timeout", "(", ":"] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 0,
            "no change on a `{kind}` line: {kinds:?}"
        );
    }
}
