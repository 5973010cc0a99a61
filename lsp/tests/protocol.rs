//! Protocol-level tests: the real `eflow-lsp` binary, real JSON-RPC over stdio, one
//! scripted client per test. Every feature, and documents that do not parse.

mod support;

use serde_json::{Value, json};
use support::{Client, Fixture, at, editor_caps, labels, pos};

const SHARED: &str = r#"from "std/ml" import Features

/// Where the training data comes from.
record Source {
    /// The catalog table.
    table: String,
    /// Rows, when counted.
    rows: Int?,
}

/// Loads the features of a source.
call step Load(
    /// What to load.
    source: Source,
) -> Features raises NotFound
"#;

const MAIN: &str = r#"from "std/ml" import Model, Train, TrainingSpec
from "./shared" import Load, Source

/// Trains one model.
flow Retrain(source: Source, spec: TrainingSpec) -> Model {
    let data = Load(source: source)
        retry 3
        non_retryable NotFound
    let model = Train(features: data, spec: spec)
    return model
}

bindings dev {
    Load = sim { duration: 1s }
    Train = sim { duration: 1m }
}
"#;

fn workspace() -> Fixture {
    Fixture::new(&[("main.eflow", MAIN), ("shared.eflow", SHARED)])
}

fn start(fx: &Fixture) -> Client {
    Client::start(
        fx.dir.path(),
        editor_caps(),
        json!({ "diagnosticsDelayMs": 0 }),
    )
}

fn codes(diags: &[Value]) -> Vec<String> {
    diags
        .iter()
        .map(|d| d["code"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn diagnostics_are_pushed_on_open_and_cleared_when_fixed() {
    let fx = workspace();
    let mut c = start(&fx);
    let uri = fx.uri("main.eflow");
    let broken = MAIN.replace("spec: TrainingSpec)", "spec: TrainingSpek)");
    c.open(&uri, &broken);
    let diags = loop {
        let d = c.diagnostics(&uri);
        if !d.is_empty() {
            break d;
        }
    };
    assert_eq!(codes(&diags), ["E0101"], "{diags:?}");
    let d = &diags[0];
    assert_eq!(d["source"], "eflow");
    assert_eq!(d["severity"], 1);
    let message = d["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("unknown type `TrainingSpek`"),
        "{message}"
    );
    assert!(
        message.contains("help: did you mean `TrainingSpec`?"),
        "{message}"
    );
    assert_eq!(d["range"]["start"], pos(&broken, "TrainingSpek", 0));

    // Fixed by an incremental edit: the diagnostics are cleared.
    let range = json!({ "start": pos(&broken, "TrainingSpek", 10), "end": pos(&broken, "TrainingSpek", 12) });
    c.change_range(&uri, 2, range, "ec");
    let diags = c.diagnostics(&uri);
    assert!(diags.is_empty(), "{diags:?}");
    c.shutdown();
}

#[test]
fn multi_span_errors_carry_related_information() {
    let fx = workspace();
    let mut c = start(&fx);
    let uri = fx.uri("main.eflow");
    let text = MAIN.replace(
        "    return model",
        "    let model = Train(features: data, spec: spec)\n    return model",
    );
    c.open(&uri, &text);
    let diags = c.diagnostics(&uri);
    let dup = diags
        .iter()
        .find(|d| d["code"] == "E0102")
        .unwrap_or_else(|| panic!("{diags:?}"));
    let related = dup["relatedInformation"]
        .as_array()
        .expect("related information");
    assert_eq!(related[0]["location"]["uri"], uri.as_str());
    assert_eq!(related[0]["message"], "first defined here");
    c.shutdown();
}

#[test]
fn errors_in_other_files_are_pushed_too_and_follow_edits() {
    let fx = workspace();
    let mut c = start(&fx);
    let shared = fx.uri("shared.eflow");
    let main = fx.uri("main.eflow");
    c.open(&shared, SHARED);
    let _ = c.diagnostics(&shared);
    // Renaming the step in `shared` breaks the import in `main`.
    c.change_full(
        &shared,
        2,
        &SHARED.replace("call step Load(", "call step Fetch("),
    );
    let diags = c.wait_for("textDocument/publishDiagnostics", |p| {
        p["uri"] == main.as_str() && !p["diagnostics"].as_array().is_none_or(Vec::is_empty)
    });
    let codes = codes(diags["diagnostics"].as_array().expect("list"));
    assert!(codes.contains(&"E0104".to_string()), "{codes:?}");
    c.change_full(&shared, 3, SHARED);
    // Cleared once the step is back: the first push for `main` after the fix.
    let diags = c.wait_for("textDocument/publishDiagnostics", |p| {
        p["uri"] == main.as_str()
    });
    assert_eq!(diags["diagnostics"], json!([]));
    c.shutdown();
}

#[test]
fn diagnostics_can_be_pulled() {
    let fx = workspace();
    let mut caps = editor_caps();
    caps["textDocument"]["diagnostic"] = json!({ "dynamicRegistration": false });
    let mut c = Client::start(fx.dir.path(), caps, json!({}));
    let uri = fx.uri("main.eflow");
    let broken = MAIN.replace("source: source)", "source: sourc)");
    c.open(&uri, &broken);
    let report = c.request(
        "textDocument/diagnostic",
        json!({ "textDocument": { "uri": uri } }),
    );
    assert_eq!(report["kind"], "full");
    let found = codes(report["items"].as_array().expect("items"));
    assert!(found.contains(&"E0100".to_string()), "{found:?}");
    let id = report["resultId"].clone();
    let again = c.request(
        "textDocument/diagnostic",
        json!({ "textDocument": { "uri": uri }, "previousResultId": id }),
    );
    assert_eq!(again["kind"], "unchanged");
    // A client that pulls gets no pushed duplicates.
    assert!(
        !c.backlog
            .iter()
            .any(|m| m["method"] == "textDocument/publishDiagnostics")
    );
    c.shutdown();
}

#[test]
fn hover_shows_types_contracts_and_stdlib_fields() {
    let fx = workspace();
    let mut c = start(&fx);
    let uri = fx.uri("main.eflow");
    c.open(&uri, MAIN);
    let h = c.request("textDocument/hover", at(&uri, pos(MAIN, "let model", 5)));
    let v = h["contents"]["value"].as_str().expect("markdown");
    assert!(v.contains("let model: Model"), "{v}");

    // A step call: its contract and doc comment.
    let h = c.request("textDocument/hover", at(&uri, pos(MAIN, "Load(source", 1)));
    let v = h["contents"]["value"].as_str().expect("markdown");
    assert!(
        v.contains("call step Load(source: Source) -> Features raises NotFound"),
        "{v}"
    );
    assert!(v.contains("Loads the features of a source."), "{v}");
    assert!(v.contains("What to load."), "{v}");

    // A stdlib type: its fields.
    let h = c.request(
        "textDocument/hover",
        at(&uri, pos(MAIN, "TrainingSpec)", 2)),
    );
    let v = h["contents"]["value"].as_str().expect("markdown");
    assert!(v.contains("record TrainingSpec"), "{v}");
    assert!(v.contains("framework: String"), "{v}");
    assert!(v.contains("std/ml"), "{v}");

    // A field in a path, a parameter, an argument name.
    let text = MAIN;
    let h = c.request("textDocument/hover", at(&uri, pos(text, "spec: spec)", 7)));
    assert!(
        h["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("(parameter) spec: TrainingSpec"),
        "{h}"
    );
    let h = c.request(
        "textDocument/hover",
        at(&uri, pos(text, "features: data", 1)),
    );
    assert!(
        h["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("(parameter) features: Features"),
        "{h}"
    );
    // Nothing to say about a keyword.
    let h = c.request("textDocument/hover", at(&uri, pos(text, "flow", 1)));
    assert!(h.is_null(), "{h}");
    c.shutdown();
}

#[test]
fn hover_on_fields_variants_and_run() {
    let text = r#"from "std/ml" import Evaluation, ModelVersion, Stage, RegisterModel, Model

flow F(model: Model, eval: Evaluation) -> ModelVersion? {
    when eval.passed and run.tenant != "" {
        let v = RegisterModel(name: "m", model: model, evaluation: eval, stage: Stage.Staging)
    }
    return v
}

bindings dev {
    RegisterModel = registry { kind: "model" }
}
"#;
    let fx = Fixture::new(&[("f.eflow", text)]);
    let mut c = start(&fx);
    let uri = fx.uri("f.eflow");
    c.open(&uri, text);
    let value = |c: &mut Client, needle: &str, delta: usize| hover(c, &uri, text, needle, delta);
    assert!(value(&mut c, "passed", 1).contains("Evaluation.passed: Bool"));
    assert!(value(&mut c, "tenant", 1).contains("run.tenant: String"));
    assert!(value(&mut c, "Staging", 1).contains("Stage.Staging"));
    // `v` outside its `when` is optional.
    assert!(
        value(&mut c, "return v", 7).contains("let v: ModelVersion?"),
        "{}",
        value(&mut c, "return v", 7)
    );
    assert!(value(&mut c, "registry", 1).contains("connector registry"));
    assert!(value(&mut c, "kind:", 1).contains("registry.kind: String"));
    c.shutdown();
}

/// The hover text at `needle` (plus `delta`) in `text`.
fn hover(c: &mut Client, uri: &str, text: &str, needle: &str, delta: usize) -> String {
    let h = c.request("textDocument/hover", at(uri, pos(text, needle, delta)));
    h["contents"]["value"].as_str().unwrap_or("").to_string()
}

/// Inside `when x != none`, hover shows `x` as the checker sees it there: not
/// optional.
#[test]
fn hover_shows_a_narrowed_value_as_it_is_there() {
    let text = r#"remote step Use(n: Int) -> Int

flow F(limit: Int?) -> Int? {
    when limit != none {
        let u = Use(n: limit)
    }
    return limit
}
"#;
    let fx = Fixture::new(&[("f.eflow", text)]);
    let mut c = start(&fx);
    let uri = fx.uri("f.eflow");
    c.open(&uri, text);
    let value = |c: &mut Client, needle: &str, delta: usize| hover(c, &uri, text, needle, delta);
    let inside = value(&mut c, "n: limit", 4);
    assert!(
        inside.contains("Int") && !inside.contains("Int?"),
        "narrowed inside the `when`: {inside}"
    );
    let outside = value(&mut c, "return limit", 8);
    assert!(outside.contains("Int?"), "optional outside: {outside}");
    c.shutdown();
}

/// A `repeat`'s variable is the previous iteration's output in the call
/// (optional) and the iteration just finished in `until`; go to definition finds
/// its declaration, and completion offers it inside the loop and `repeat` as a
/// statement.
#[test]
fn the_loop_variable_hovers_as_it_is_where_it_is_used() {
    let text = r#"record Score { auc: Float }

remote step Refine(previous: Score?) -> Score

flow F() -> Score {
    let best = repeat s at_most 5 {
        Refine(previous: s)
    } until s.auc >= 0.9
    return best
}
"#;
    let fx = Fixture::new(&[("f.eflow", text)]);
    let mut c = start(&fx);
    let uri = fx.uri("f.eflow");
    c.open(&uri, text);
    let value = |c: &mut Client, needle: &str, delta: usize| hover(c, &uri, text, needle, delta);
    let in_call = value(&mut c, "previous: s)", 10);
    assert!(
        in_call.contains("s: Score?") && in_call.contains("repeat"),
        "optional in the call: {in_call}"
    );
    let in_until = value(&mut c, "until s.auc", 6);
    assert!(
        in_until.contains("s: Score") && !in_until.contains("Score?"),
        "present in `until`: {in_until}"
    );
    let loop_value = value(&mut c, "let best", 4);
    assert!(
        loop_value.contains("Score") && loop_value.contains("loop"),
        "the loop's value: {loop_value}"
    );
    let d = c.request(
        "textDocument/definition",
        at(&uri, pos(text, "until s.auc", 6)),
    );
    let d = if d.is_array() { d[0].clone() } else { d };
    assert_eq!(d["range"]["start"], pos(text, "repeat s", 7), "{d}");
    let hints = c.request(
        "textDocument/inlayHint",
        json!({ "textDocument": { "uri": uri }, "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 100, "character": 0 } } }),
    );
    let hints: Vec<&str> = hints
        .as_array()
        .expect("hints")
        .iter()
        .filter_map(|h| h["label"].as_str())
        .collect();
    assert_eq!(
        hints,
        [": Score", ": Score?"],
        "the loop's value, its variable"
    );

    let typing = text.replace("Refine(previous: s)", "Refine(previous: )");
    c.change_full(&uri, 2, &typing);
    let r = c.request(
        "textDocument/completion",
        at(&uri, pos(&typing, "previous: )", 10)),
    );
    assert!(labels(&r).contains(&"s".to_string()), "{:?}", labels(&r));
    let statement = text.replace("    return best", "    let again = \n    return best");
    c.change_full(&uri, 3, &statement);
    let r = c.request(
        "textDocument/completion",
        at(&uri, pos(&statement, "again = ", 8)),
    );
    assert!(
        labels(&r).contains(&"repeat".to_string()),
        "{:?}",
        labels(&r)
    );
    c.shutdown();
}

#[test]
fn completion_knows_where_the_cursor_is() {
    let fx = workspace();
    let mut c = start(&fx);
    let uri = fx.uri("main.eflow");
    c.open(&uri, MAIN);

    // Fields of an output.
    let text = MAIN.replace(
        "    return model",
        "    let x = Load(source: Source { table: data.hol })\n    return model",
    );
    c.change_full(&uri, 2, &text);
    let r = c.request(
        "textDocument/completion",
        at(&uri, pos(&text, "data.hol", 5)),
    );
    let l = labels(&r);
    assert!(
        l.contains(&"holdout".to_string()) && l.contains(&"label".to_string()),
        "{l:?}"
    );
    let item = r["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["label"] == "holdout")
        .cloned()
        .expect("holdout");
    assert_eq!(item["detail"], "Dataset");
    assert!(
        item["documentation"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("evaluated on"),
        "{item}"
    );

    // Fields of a record literal, without those given.
    let r = c.request(
        "textDocument/completion",
        at(&uri, pos(&text, "{ table", 2)),
    );
    let l = labels(&r);
    assert!(l.contains(&"rows".to_string()), "{l:?}");

    // Parameters of a step, with types; a snippet for the value.
    let text = MAIN.replace("    return model", "    let e = Load(\n    return model");
    c.change_full(&uri, 3, &text);
    let r = c.request(
        "textDocument/completion",
        at(&uri, pos(&text, "Load(\n", 5)),
    );
    let item = r["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["label"] == "source")
        .cloned()
        .expect("source");
    assert_eq!(item["detail"], "Source");
    assert_eq!(item["insertTextFormat"], 2);
    assert!(
        item["textEdit"]["newText"]
            .as_str()
            .unwrap_or("")
            .starts_with("source: ${1:source}"),
        "{item}"
    );

    // Steps and flows after `let x =`, with call snippets and auto-import.
    let text = MAIN.replace("    return model", "    let e = \n    return model");
    c.change_full(&uri, 4, &text);
    let r = c.request(
        "textDocument/completion",
        at(&uri, pos(&text, "let e = ", 8)),
    );
    let items = r["items"].as_array().expect("items");
    let train = items.iter().find(|i| i["label"] == "Train").expect("Train");
    assert_eq!(
        train["textEdit"]["newText"],
        "Train(features: ${1:data}, spec: ${2:spec})"
    );
    let evaluate = items
        .iter()
        .find(|i| i["label"] == "Evaluate")
        .expect("Evaluate from std/ml");
    let edit = &evaluate["additionalTextEdits"][0];
    assert_eq!(edit["newText"], ", Evaluate");
    assert!(items.iter().any(|i| i["label"] == "for"));

    // Types after `:` in a record.
    let text = format!("{MAIN}\nrecord R {{\n    a: \n}}\n");
    c.change_full(&uri, 5, &text);
    let r = c.request(
        "textDocument/completion",
        at(&uri, pos(&text, "    a: ", 7)),
    );
    let l = labels(&r);
    for want in ["Int", "String", "List", "Source", "Model", "Dataset"] {
        assert!(l.contains(&want.to_string()), "{want} missing from {l:?}");
    }

    // Keywords at the top level.
    let text = format!("{MAIN}\n\n");
    c.change_full(&uri, 6, &text);
    let end = json!({ "line": text.lines().count() + 1, "character": 0 });
    let l = labels(&c.request("textDocument/completion", at(&uri, end)));
    for want in ["flow", "record", "bindings", "remote step", "from"] {
        assert!(l.contains(&want.to_string()), "{want} missing from {l:?}");
    }

    // Import paths and imported names.
    let text = format!("from \"\"\n{MAIN}");
    c.change_full(&uri, 7, &text);
    let l = labels(&c.request(
        "textDocument/completion",
        at(&uri, json!({ "line": 0, "character": 6 })),
    ));
    assert!(
        l.contains(&"std/ml".to_string()) && l.contains(&"./shared".to_string()),
        "{l:?}"
    );
    let text = format!("from \"std/approval\" import \n{MAIN}");
    c.change_full(&uri, 8, &text);
    let l = labels(&c.request(
        "textDocument/completion",
        at(&uri, json!({ "line": 0, "character": 27 })),
    ));
    assert!(
        l.contains(&"Approve".to_string()) && l.contains(&"Decision".to_string()),
        "{l:?}"
    );

    // Connectors in bindings, and their keys.
    let text = MAIN.replace("    Train = sim { duration: 1m }", "    Train = ");
    c.change_full(&uri, 9, &text);
    let l = labels(&c.request(
        "textDocument/completion",
        at(&uri, pos(&text, "Train = \n", 8)),
    ));
    assert!(
        l.contains(&"sim".to_string()) && l.contains(&"http".to_string()),
        "{l:?}"
    );
    let text = MAIN.replace("    Train = sim { duration: 1m }", "    Train = http { ");
    c.change_full(&uri, 10, &text);
    let l = labels(&c.request(
        "textDocument/completion",
        at(&uri, pos(&text, "http { ", 7)),
    ));
    assert!(
        l.contains(&"url".to_string()) && l.contains(&"headers".to_string()),
        "{l:?}"
    );

    // Error names after `non_retryable`, step options after a call.
    let text = MAIN.replace("non_retryable NotFound", "non_retryable ");
    c.change_full(&uri, 11, &text);
    let l = labels(&c.request(
        "textDocument/completion",
        at(&uri, pos(&text, "non_retryable ", 14)),
    ));
    assert!(
        l.contains(&"NotFound".to_string()) && l.contains(&"Timeout".to_string()),
        "{l:?}"
    );
    c.shutdown();
}

#[test]
fn definition_and_references_across_files_and_into_stdlib() {
    let fx = workspace();
    let mut c = start(&fx);
    let main = fx.uri("main.eflow");
    let shared = fx.uri("shared.eflow");
    c.open(&main, MAIN);

    let d = c.request(
        "textDocument/definition",
        at(&main, pos(MAIN, "Load(source", 1)),
    );
    assert_eq!(d["uri"], shared.as_str());
    assert_eq!(d["range"]["start"], pos(SHARED, "Load(", 0));

    // Into the standard library, which is written out so the editor can open it.
    let d = c.request(
        "textDocument/definition",
        at(&main, pos(MAIN, "Train(features", 1)),
    );
    let std_uri = d["uri"].as_str().expect("uri");
    assert!(std_uri.ends_with("/std/ml.eflow"), "{std_uri}");
    let path = url::Url::parse(std_uri)
        .expect("url")
        .to_file_path()
        .expect("path");
    let std_text = std::fs::read_to_string(path).expect("stdlib written out");
    assert_eq!(d["range"]["start"], pos(&std_text, "remote step Train", 12));

    // A local name.
    let d = c.request(
        "textDocument/definition",
        at(&main, pos(MAIN, "features: data", 11)),
    );
    assert_eq!(d["range"]["start"], pos(MAIN, "data = ", 0));

    // References of a record across files, with and without the declaration.
    let refs = c.request(
        "textDocument/references",
        json!({ "textDocument": { "uri": shared }, "position": pos(SHARED, "Source {", 1), "context": { "includeDeclaration": true } }),
    );
    let refs = refs.as_array().expect("locations");
    let in_main = refs.iter().filter(|r| r["uri"] == main.as_str()).count();
    let in_shared = refs.iter().filter(|r| r["uri"] == shared.as_str()).count();
    assert_eq!((in_main, in_shared), (2, 2), "{refs:?}");

    // Highlights in one file.
    let h = c.request(
        "textDocument/documentHighlight",
        at(&main, pos(MAIN, "let data", 5)),
    );
    assert_eq!(h.as_array().map(Vec::len), Some(2));
    c.shutdown();
}

#[test]
fn rename_across_the_workspace() {
    let fx = workspace();
    let mut c = start(&fx);
    let main = fx.uri("main.eflow");
    let shared = fx.uri("shared.eflow");
    c.open(&main, MAIN);
    let prep = c.request(
        "textDocument/prepareRename",
        at(&main, pos(MAIN, "Load(source", 1)),
    );
    assert_eq!(prep["start"], pos(MAIN, "Load(source", 0));

    let e = c.request(
        "textDocument/rename",
        json!({ "textDocument": { "uri": main }, "position": pos(MAIN, "Load(source", 1), "newName": "Fetch" }),
    );
    let changes = &e["changes"];
    // Import, call and binding in main; the declaration in shared.
    assert_eq!(
        changes[main.as_str()].as_array().map(Vec::len),
        Some(3),
        "{e}"
    );
    assert_eq!(
        changes[shared.as_str()].as_array().map(Vec::len),
        Some(1),
        "{e}"
    );

    // A variable: only its flow.
    let e = c.request(
        "textDocument/rename",
        json!({ "textDocument": { "uri": main }, "position": pos(MAIN, "let data", 5), "newName": "features" }),
    );
    assert_eq!(
        e["changes"][main.as_str()].as_array().map(Vec::len),
        Some(2),
        "{e}"
    );

    // A field: its declaration and its uses.
    let e = c.request(
        "textDocument/rename",
        json!({ "textDocument": { "uri": shared }, "position": pos(SHARED, "table:", 1), "newName": "name" }),
    );
    assert_eq!(
        e["changes"][shared.as_str()].as_array().map(Vec::len),
        Some(1),
        "{e}"
    );

    // The standard library and keywords cannot be renamed; bad names are refused.
    let r = c.request_raw(
        "textDocument/prepareRename",
        at(&main, pos(MAIN, "Train(features", 1)),
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("standard library"),
        "{r}"
    );
    let r = c.request_raw(
        "textDocument/rename",
        json!({ "textDocument": { "uri": main }, "position": pos(MAIN, "let data", 5), "newName": "let" }),
    );
    assert!(r["error"].is_object(), "{r}");
    c.shutdown();
}

#[test]
fn outline_and_workspace_symbols() {
    let fx = workspace();
    let mut c = start(&fx);
    let main = fx.uri("main.eflow");
    c.open(&main, MAIN);
    let syms = c.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": main } }),
    );
    let names: Vec<&str> = syms
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"Retrain") && names.contains(&"dev"),
        "{names:?}"
    );
    let retrain = syms
        .as_array()
        .expect("symbols")
        .iter()
        .find(|s| s["name"] == "Retrain")
        .expect("Retrain");
    let children: Vec<&str> = retrain["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(children, ["source", "spec", "data", "model"]);

    let found = c.request("workspace/symbol", json!({ "query": "src" }));
    let names: Vec<&str> = found
        .as_array()
        .expect("symbols")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"Source"), "{names:?}");
    let found = c.request("workspace/symbol", json!({ "query": "TrainingSp" }));
    assert!(
        found
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "TrainingSpec")),
        "{found}"
    );
    c.shutdown();
}

#[test]
fn formatting_uses_the_compilers_formatter() {
    let fx = workspace();
    let mut c = start(&fx);
    let main = fx.uri("main.eflow");
    c.open(&main, MAIN);
    let edits = c.request("textDocument/formatting", json!({ "textDocument": { "uri": main }, "options": { "tabSize": 4, "insertSpaces": true } }));
    let expected = eflow_compiler::fmt::format_source(MAIN).expect("formats");
    let edits = edits.as_array().expect("edits");
    if expected == MAIN {
        assert!(edits.is_empty());
    } else {
        assert_eq!(edits[0]["newText"], expected.as_str());
    }
    c.shutdown();
}

#[test]
fn semantic_tokens_signature_help_and_inlay_hints() {
    let fx = workspace();
    let mut c = start(&fx);
    let main = fx.uri("main.eflow");
    c.open(&main, MAIN);
    let legend = c.request(
        "textDocument/semanticTokens/full",
        json!({ "textDocument": { "uri": main } }),
    );
    let data = legend["data"].as_array().expect("data");
    assert!(!data.is_empty() && data.len().is_multiple_of(5));
    // The first token is `from`, a keyword (index 10 in the legend).
    assert_eq!(
        &data[..5],
        &[json!(0), json!(0), json!(4), json!(10), json!(0)]
    );

    let text = MAIN.replace(
        "Train(features: data, spec: spec)",
        "Train(features: data, ",
    );
    c.change_full(&main, 2, &text);
    let h = c.request(
        "textDocument/signatureHelp",
        at(&main, pos(&text, "data, ", 6)),
    );
    let sig = &h["signatures"][0];
    assert!(
        sig["label"]
            .as_str()
            .unwrap_or("")
            .starts_with("Train(features: Features, spec: TrainingSpec)"),
        "{h}"
    );
    assert_eq!(h["activeParameter"], 1);

    c.change_full(&main, 3, MAIN);
    let hints = c.request(
        "textDocument/inlayHint",
        json!({ "textDocument": { "uri": main }, "range": { "start": { "line": 0, "character": 0 }, "end": { "line": 100, "character": 0 } } }),
    );
    let labels: Vec<&str> = hints
        .as_array()
        .expect("hints")
        .iter()
        .filter_map(|h| h["label"].as_str())
        .collect();
    assert_eq!(labels, [": Features", ": Model"]);
    c.shutdown();
}

fn actions(c: &mut Client, uri: &str, text: &str, needle: &str) -> Vec<Value> {
    let p = pos(text, needle, 0);
    let r = c.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri }, "range": { "start": p, "end": p }, "context": { "diagnostics": [] } }),
    );
    r.as_array().cloned().unwrap_or_default()
}

#[test]
fn quick_fixes_for_common_diagnostics() {
    let fx = workspace();
    let mut c = start(&fx);
    let main = fx.uri("main.eflow");

    // A misspelled name: the compiler's `did you mean`.
    let text = MAIN.replace("features: data,", "features: dta,");
    c.open(&main, &text);
    let a = actions(&mut c, &main, &text, "dta");
    let fix = a
        .iter()
        .find(|a| a["title"] == "Change `dta` to `data`")
        .unwrap_or_else(|| panic!("{a:?}"));
    assert_eq!(fix["kind"], "quickfix");
    assert_eq!(fix["edit"]["changes"][main.as_str()][0]["newText"], "data");
    assert_eq!(fix["diagnostics"][0]["code"], "E0100");

    // A missing argument.
    let text = MAIN.replace("Train(features: data, spec: spec)", "Train(features: data)");
    c.change_full(&main, 2, &text);
    let a = actions(&mut c, &main, &text, "Train(features");
    let fix = a
        .iter()
        .find(|a| a["title"] == "Add missing argument `spec`")
        .unwrap_or_else(|| panic!("{a:?}"));
    assert_eq!(
        fix["edit"]["changes"][main.as_str()][0]["newText"],
        ", spec: spec"
    );

    // A type to import.
    let text = MAIN.replace("-> Model {", "-> Dataset {");
    c.change_full(&main, 3, &text);
    let a = actions(&mut c, &main, &text, "Dataset {");
    let fix = a
        .iter()
        .find(|a| a["title"] == "Import `Dataset` from \"std/ml\"")
        .unwrap_or_else(|| panic!("{a:?}"));
    assert_eq!(
        fix["edit"]["changes"][main.as_str()][0]["newText"],
        ", Dataset"
    );

    // An unused import: the whole line goes.
    let text = MAIN.replace(
        "from \"./shared\"",
        "from \"std/approval\" import Approve\nfrom \"./shared\"",
    );
    c.change_full(&main, 4, &text);
    let a = actions(&mut c, &main, &text, "Approve");
    let fix = a
        .iter()
        .find(|a| a["title"] == "Remove unused import `Approve`")
        .unwrap_or_else(|| panic!("{a:?}"));
    let edit = &fix["edit"]["changes"][main.as_str()][0];
    assert_eq!(edit["newText"], "");
    assert_eq!(
        edit["range"]["start"],
        pos(&text, "from \"std/approval\"", 0)
    );
    assert_eq!(edit["range"]["end"], pos(&text, "from \"./shared\"", 0));
    c.shutdown();
}

#[test]
fn broken_documents_still_get_hover_completion_and_outline() {
    let fx = workspace();
    let mut c = start(&fx);
    let main = fx.uri("main.eflow");
    c.open(&main, MAIN);
    let _ = c.request("textDocument/hover", at(&main, pos(MAIN, "let model", 5)));

    // Half a statement, typed in the middle of the flow.
    let text = MAIN.replace(
        "    return model",
        "    let e = Load(source: Source { table: data.\n    return model",
    );
    c.change_full(&main, 2, &text);
    let l = labels(&c.request(
        "textDocument/completion",
        at(&main, pos(&text, "data.\n", 5)),
    ));
    assert!(l.contains(&"train".to_string()), "{l:?}");
    let h = c.request("textDocument/hover", at(&main, pos(&text, "let model", 5)));
    assert!(
        h["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("let model: Model"),
        "{h}"
    );
    let syms = c.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": main } }),
    );
    assert!(
        syms.as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "Retrain")),
        "{syms}"
    );

    // The flow's header broken: the flow is lost to the parser, but completion
    // remembers its names from the last time it parsed.
    let text = MAIN
        .replace(
            "flow Retrain(source: Source, spec: TrainingSpec) -> Model {",
            "flow Retrain(source: Source, spec: TrainingSpec -> Model {",
        )
        .replace(
            "    return model",
            "    let e = Train(features: data, spec: \n    return model",
        );
    c.change_full(&main, 3, &text);
    let r = c.request(
        "textDocument/completion",
        at(&main, pos(&text, "spec: \n", 6)),
    );
    let l = labels(&r);
    assert!(
        l.contains(&"spec".to_string()) && l.contains(&"model".to_string()),
        "{l:?}"
    );
    let diags = c.wait_for("textDocument/publishDiagnostics", |p| {
        p["uri"] == main.as_str() && p["version"] == 3
    });
    assert!(codes(diags["diagnostics"].as_array().expect("list")).contains(&"E0001".to_string()));

    // Garbage: every request still answers.
    let garbage = "}}}{{ flow ( let = . \"unterminated\n record { : } ç😀 @#$ ->";
    c.change_full(&main, 4, garbage);
    for method in [
        "textDocument/hover",
        "textDocument/completion",
        "textDocument/definition",
        "textDocument/signatureHelp",
    ] {
        for delta in [0, 3, 10, garbage.len() - 1] {
            let r = c.request_raw(method, at(&main, pos(garbage, "", delta)));
            assert!(r.get("error").is_none(), "{method}: {r}");
        }
    }
    let r = c.request_raw(
        "textDocument/semanticTokens/full",
        json!({ "textDocument": { "uri": main } }),
    );
    assert!(r.get("error").is_none(), "{r}");
    // Positions past the end are clamped, not rejected.
    let r = c.request_raw(
        "textDocument/hover",
        at(&main, json!({ "line": 999, "character": 999 })),
    );
    assert!(r.get("error").is_none(), "{r}");
    assert!(c.alive());
    c.shutdown();
}

#[test]
fn a_panic_in_a_request_is_answered_with_an_error_and_the_server_goes_on() {
    let fx = workspace();
    let mut c = Client::start_with_env(
        fx.dir.path(),
        editor_caps(),
        json!({}),
        &[("EFLOW_LSP_DEBUG_PANIC", "1")],
    );
    let main = fx.uri("main.eflow");
    c.open(&main, MAIN);
    let r = c.request_raw("eflow/debugPanic", json!({}));
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("deliberate panic"),
        "{r}"
    );
    let h = c.request("textDocument/hover", at(&main, pos(MAIN, "let model", 5)));
    assert!(
        h["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("Model")
    );
    // Unknown methods are refused, not fatal.
    let r = c.request_raw("eflow/noSuchThing", json!({}));
    assert_eq!(r["error"]["code"], -32601);
    c.shutdown();
}

#[test]
fn incremental_edits_in_utf16_positions() {
    let text = "// Ünïcödé 😀 comment\nfrom \"std/ml\" import Model\n\nflow F(m: Model) -> Model {\n    return m\n}\n";
    let fx = Fixture::new(&[("u.eflow", text)]);
    let mut c = start(&fx);
    let uri = fx.uri("u.eflow");
    c.open(&uri, text);
    assert!(c.diagnostics(&uri).is_empty());
    // Replace `😀` (two UTF-16 units) on the first line with `x`, then break the
    // return on line 5 with a range edit.
    c.change_range(
        &uri,
        2,
        json!({ "start": { "line": 0, "character": 11 }, "end": { "line": 0, "character": 13 } }),
        "x",
    );
    c.change_range(
        &uri,
        3,
        json!({ "start": { "line": 4, "character": 11 }, "end": { "line": 4, "character": 12 } }),
        "q",
    );
    let diags = loop {
        let d = c.diagnostics(&uri);
        if !d.is_empty() {
            break d;
        }
    };
    let unknown = diags.iter().find(|d| d["code"] == "E0100").expect("E0100");
    assert_eq!(
        unknown["range"]["start"],
        json!({ "line": 4, "character": 11 })
    );
    let h = c.request(
        "textDocument/hover",
        at(&uri, json!({ "line": 3, "character": 8 })),
    );
    assert!(
        h["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("(parameter) m: Model"),
        "{h}"
    );
    c.shutdown();
}

#[test]
fn examples_are_clean_and_every_request_answers_on_every_line() {
    let fx = support::Fixture::examples();
    let mut c = start(&fx);
    let name = "retraining.eflow";
    let uri = fx.uri(name);
    let text = fx.text(name);
    c.open(&uri, &text);
    assert!(c.diagnostics(&uri).is_empty());
    for (line, l) in text.lines().enumerate().step_by(3) {
        let p = json!({ "line": line, "character": l.len() / 2 });
        for m in [
            "textDocument/hover",
            "textDocument/completion",
            "textDocument/definition",
            "textDocument/signatureHelp",
        ] {
            let r = c.request_raw(m, at(&uri, p.clone()));
            assert!(r.get("error").is_none(), "{m} at {p}: {r}");
        }
    }
    c.shutdown();
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

#[test]
fn mangled_examples_never_crash_or_hang_the_server() {
    let fx = support::Fixture::examples();
    let mut c = start(&fx);
    let name = "champion_challenger.eflow";
    let uri = fx.uri(name);
    let original = fx.text(name);
    c.open(&uri, &original);
    let pieces = [
        "{",
        "}",
        "(",
        ")",
        "<",
        ">",
        "\"",
        ".",
        ",",
        ":",
        "let x = ",
        "when ",
        "for a in b join all {",
        "record R<T> {",
        "flow F(",
        "Train(",
        "?? ",
        "😀",
        "\n",
        "///",
        "bindings b { A = sim {",
    ];
    let mut rng = Lcg(7);
    let mut text = original.clone();
    for version in 2..62 {
        // Cut a random piece, insert a random fragment.
        let mut cut = rng.next(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut end = (cut + rng.next(40)).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.replace_range(cut..end, pieces[rng.next(pieces.len())]);
        if version % 10 == 0 {
            text = original.clone();
        }
        c.change_full(&uri, version, &text);
        let lines = text.lines().count().max(1);
        for _ in 0..3 {
            let p = json!({ "line": rng.next(lines + 1), "character": rng.next(60) });
            for m in [
                "textDocument/hover",
                "textDocument/completion",
                "textDocument/definition",
                "textDocument/signatureHelp",
                "textDocument/documentHighlight",
            ] {
                let r = c.request_raw(m, at(&uri, p.clone()));
                assert!(
                    r.get("error").is_none(),
                    "{m} at {p} (version {version}): {r}"
                );
            }
            let r = c.request_raw(
                "textDocument/codeAction",
                json!({ "textDocument": { "uri": uri }, "range": { "start": p, "end": p }, "context": { "diagnostics": [] } }),
            );
            assert!(r.get("error").is_none(), "codeAction: {r}");
        }
        for m in [
            "textDocument/semanticTokens/full",
            "textDocument/documentSymbol",
        ] {
            let r = c.request_raw(m, json!({ "textDocument": { "uri": uri } }));
            assert!(r.get("error").is_none(), "{m} (version {version}): {r}");
        }
        let r = c.request_raw(
            "textDocument/inlayHint",
            json!({ "textDocument": { "uri": uri }, "range": { "start": { "line": 0, "character": 0 }, "end": { "line": lines, "character": 0 } } }),
        );
        assert!(r.get("error").is_none(), "inlayHint: {r}");
    }
    assert!(c.alive());
    c.shutdown();
}

#[test]
fn a_file_that_is_not_utf8_is_one_diagnostic_and_its_names_count_as_declared() {
    let main = "from \"./latin1\" import Score\n\nflow F() -> Float {\n    let s = Score()\n    return s\n}\n";
    let fx = Fixture::new(&[("main.eflow", main)]);
    std::fs::write(
        fx.dir.path().join("latin1.eflow"),
        b"// Mod\xe8le\nremote step Score() -> Float\n",
    )
    .expect("write");
    let mut c = start(&fx);
    let main_uri = fx.uri("main.eflow");
    let latin1 = fx.uri("latin1.eflow");
    c.open(&main_uri, main);
    assert_eq!(c.diagnostics(&main_uri), Vec::<Value>::new());
    let pushed = c.wait_for("textDocument/publishDiagnostics", |p| {
        p["uri"] == latin1.as_str()
    });
    let diags = pushed["diagnostics"].as_array().expect("list");
    assert_eq!(codes(diags), vec!["E0005"]);
    assert_eq!(
        diags[0]["range"]["start"],
        json!({ "line": 0, "character": 6 })
    );
    c.shutdown();
}
