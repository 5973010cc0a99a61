//! The language server over the shipped examples, as an editor sees them: every
//! file opens without a diagnostic (the same verdict as `eflowc check examples/`),
//! its outline lists its flows, and hovering a flow's name shows its signature.

use eflow_tests::{LanguageServer, eflowc, repo, uri};
use serde_json::{Value, json};

/// The zero-based line and column of the first `flow NAME` in `text`.
fn first_flow(text: &str) -> Option<(usize, usize, String)> {
    text.lines().enumerate().find_map(|(line, l)| {
        let rest = l.strip_prefix("flow ")?;
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        Some((line, 5, name))
    })
}

#[test]
fn every_example_is_clean_outlined_and_hoverable_in_the_editor() {
    let examples = repo().join("examples");
    let check = eflowc(&repo(), &["check", "examples/"]);
    assert!(check.status.success(), "eflowc check examples/ is clean");

    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eflow"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the examples are there: {files:?}");

    let mut ls = LanguageServer::start(&examples);
    let mut flows_seen = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable example");
        let file = uri(path);
        ls.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": file, "languageId": "eflow", "version": 1, "text": text } }),
        );
        let diags = ls.diagnostics(&file);
        assert!(diags.is_empty(), "{}: {diags:?}", path.display());

        let symbols = ls.request(
            "textDocument/documentSymbol",
            json!({ "textDocument": { "uri": file } }),
        );
        let names: Vec<&str> = symbols
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
            .unwrap_or_default();
        if let Some((line, character, name)) = first_flow(&text) {
            flows_seen += 1;
            assert!(
                names.contains(&name.as_str()),
                "{}: outline {names:?} lacks {name}",
                path.display()
            );
            let hover = ls.request(
                "textDocument/hover",
                json!({ "textDocument": { "uri": file }, "position": { "line": line, "character": character } }),
            );
            let shown = match &hover["contents"] {
                Value::Object(m) => m
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                other => other.to_string(),
            };
            assert!(
                shown.contains(&name),
                "{}: hover on {name} shows {shown:?}",
                path.display()
            );
        }
    }
    assert!(flows_seen >= 5, "the examples hold flows");
    ls.request("shutdown", Value::Null);
    ls.notify("exit", Value::Null);
}
