//! Explanations of the diagnostic codes; rendering tests join them in the next change.

use eflow_compiler::diagnostics::Code;
use eflow_compiler::diagnostics::explain::{explanation, render_explain};
use eflow_compiler::source::FileId;

// --- Explanations -------------------------------------------------------------------

/// The fenced `eflow` blocks of an explanation.
fn eflow_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```eflow") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unclosed block in:\n{text}");
    blocks
}

#[test]
fn every_code_is_explained_with_an_example_and_its_fix() {
    for &code in Code::ALL {
        let text = explanation(code);
        assert!(!text.trim().is_empty(), "{code}");
        assert!(text.contains("Example"), "{code}: no example");
        assert!(text.contains("Fixed"), "{code}: no fixed version");
        let blocks = eflow_blocks(text);
        assert_eq!(blocks.len(), 2, "{code}: an example and a fixed version");
        assert_ne!(blocks[0], blocks[1], "{code}");
        assert!(!text.contains("```\n```"), "{code}");
    }
}

#[test]
fn fixed_examples_parse_cleanly() {
    for &code in Code::ALL {
        let blocks = eflow_blocks(explanation(code));
        let (_, errors) = eflow_compiler::syntax::parse(FileId(0), &blocks[1]);
        assert!(
            errors.is_empty(),
            "{code}: fixed example does not parse: {errors:?}"
        );
    }
}

#[test]
fn explain_output() {
    let text = render_explain(Code::TypeMismatch);
    assert!(
        text.starts_with("E0200: type mismatch\n\nA value has a different type"),
        "{text}"
    );
    assert!(text.ends_with("```\n"));
    for &code in Code::ALL {
        let text = render_explain(code);
        assert!(text.starts_with(&format!("{}: {}\n\n", code.as_str(), code.title())));
    }
}
