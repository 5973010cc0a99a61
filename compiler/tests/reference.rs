//! The language reference's examples of diagnostics are true: every fenced
//! ```` ```eflow ```` block in `docs/language.md` marked `<!-- eflowc: CODE -->` on
//! the line before it is a whole program that gives exactly the codes marked
//! (`<!-- eflowc: E0206, W0001 -->` for several), no more, no fewer.

use std::path::{Path, PathBuf};

use eflow_compiler::diagnostics::Code;
use eflow_compiler::{Analysis, FsLoader};

/// A marked example: its line in the reference, the codes marked, its program.
struct Example {
    line: usize,
    codes: Vec<String>,
    program: String,
}

/// Every marked example of `text`; a marker not followed by an `eflow` block, or
/// naming no code, is an error.
fn marked_examples(text: &str) -> Result<Vec<Example>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut examples = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix("<!-- eflowc:") else {
            continue;
        };
        let Some(codes) = rest.strip_suffix("-->") else {
            return Err(format!(
                "line {}: a marker is `<!-- eflowc: CODE -->`",
                i + 1
            ));
        };
        let codes: Vec<String> = codes
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if codes.is_empty() || codes.iter().any(|c| Code::parse(c).is_none()) {
            return Err(format!("line {}: `{line}` names no known code", i + 1));
        }
        if lines.get(i + 1).map(|l| l.trim_end()) != Some("```eflow") {
            return Err(format!(
                "line {}: the marker is not right before a ```eflow block",
                i + 1
            ));
        }
        let mut program = String::new();
        let mut closed = false;
        for l in &lines[i + 2..] {
            if l.trim_end() == "```" {
                closed = true;
                break;
            }
            program.push_str(l);
            program.push('\n');
        }
        if !closed {
            return Err(format!("line {}: the block is not closed", i + 1));
        }
        examples.push(Example {
            line: i + 1,
            codes,
            program,
        });
    }
    Ok(examples)
}

/// The distinct codes a program gets, sorted.
fn codes_of(program: &str) -> Vec<String> {
    let a = Analysis::from_texts(
        vec![(PathBuf::from("example.eflow"), program.to_string())],
        &FsLoader,
    );
    let mut codes: Vec<String> = a
        .diagnostics()
        .iter()
        .map(|d| d.code.as_str().to_string())
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

#[test]
fn every_marked_example_in_the_reference_gives_exactly_its_codes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/language.md");
    let text = std::fs::read_to_string(&path).expect("the reference is readable");
    let examples = marked_examples(&text).unwrap_or_else(|e| panic!("docs/language.md {e}"));
    // Every example the reference gives of a diagnostic is marked: this many at least.
    assert!(
        examples.len() >= 19,
        "only {} marked examples",
        examples.len()
    );
    let mut wrong = Vec::new();
    for ex in &examples {
        let mut want = ex.codes.clone();
        want.sort();
        want.dedup();
        let got = codes_of(&ex.program);
        if got != want {
            wrong.push(format!(
                "docs/language.md:{}: marked {want:?}, gives {got:?}:\n{}",
                ex.line, ex.program
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_marker_that_is_wrong_fails() {
    // The checker itself: a block giving another code, or none, is caught; a
    // marker without its block is an error.
    let text = "<!-- eflowc: E0003 -->\n```eflow\nflow F() {\n    deadline 1.5h\n}\n```\n\n<!-- eflowc: E0001 -->\n```eflow\nflow F() {}\n```\n";
    let examples = marked_examples(text).expect("well formed");
    assert_eq!(examples.len(), 2);
    assert_eq!(codes_of(&examples[0].program), vec!["E0002"]);
    assert_eq!(codes_of(&examples[1].program), Vec::<String>::new());
    assert!(marked_examples("<!-- eflowc: E0003 -->\ntext\n").is_err());
    assert!(marked_examples("<!-- eflowc: E9999 -->\n```eflow\n```\n").is_err());
    assert!(marked_examples("<!-- eflowc: E0003 -->\n```eflow\nflow F() {}\n").is_err());
}
