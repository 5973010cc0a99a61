//! Rules of the language that hold for every program of a kind, not one example:
//! narrowing by `!= none`, optional fields left out of record literals, the
//! environments a flow is checked in, one diagnostic per misplaced `return`, and
//! the bounds a `repeat` may have.

use std::path::{Path, PathBuf};

use eflow_compiler::diagnostics::{Code, Diagnostic};
use eflow_compiler::{Analysis, FsLoader};
use proptest::prelude::*;

fn check(text: &str) -> Vec<Diagnostic> {
    Analysis::from_texts(
        vec![(PathBuf::from("rule.eflow"), text.to_string())],
        &FsLoader,
    )
    .diagnostics()
}

fn codes(text: &str) -> Vec<Code> {
    check(text).iter().map(|d| d.code).collect()
}

fn errors(text: &str) -> Vec<Code> {
    check(text)
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.code)
        .collect()
}

const DECLS: &str = "
record Model {
    uri: String,
    score: Float,
    base: Model2?,
}

record Model2 {
    uri: String,
}

call step Find(name: String) -> Model?
remote step Train(name: String) -> Model
remote step Deploy(model: Model) -> String
remote step Derive(base: Model2) -> String
";

/// Ways to come by an optional value: `(statements before, the value, the step
/// that uses it, its parameter)`.
fn optionals() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        // A parameter `given: Model?`.
        ("", "given", "Deploy(model: given)"),
        // A step whose output is optional.
        (
            "let found = Find(name: name)\n",
            "found",
            "Deploy(model: found)",
        ),
        // A value defined inside another `when`.
        (
            "when go {\n let trained = Train(name: name)\n }\n",
            "trained",
            "Deploy(model: trained)",
        ),
        // An optional field of a value that is there.
        (
            "let surely = Train(name: name)\n",
            "surely.base",
            "Derive(base: surely.base)",
        ),
    ]
}

/// A condition and the branch of it where it proves `x` is not `none`.
fn tests_of(x: &str) -> Vec<(String, bool)> {
    vec![
        (format!("{x} != none"), true),
        (format!("none != {x}"), true),
        (format!("go and {x} != none"), true),
        (format!("{x} != none and go and not go"), true),
        (format!("not ({x} == none)"), true),
        (format!("{x} == none"), false),
        (format!("{x} == none or go"), false),
        (format!("not ({x} != none)"), false),
    ]
}

fn flow(pre: &str, cond: &str, then: &str, otherwise: &str, after: &str) -> String {
    format!(
        "{DECLS}
flow F(name: String, given: Model?, go: Bool) -> String? {{
{pre}when {cond} {{
{then}}} else {{
{otherwise}}}
{after}return name
}}
"
    )
}

#[test]
fn a_test_against_none_narrows_where_it_holds_and_nowhere_else() {
    for (pre, x, call) in optionals() {
        for (cond, holds) in tests_of(x) {
            let used = format!("let _used = {call}\n");
            let (then, otherwise) = if holds {
                (used.as_str(), "")
            } else {
                ("", used.as_str())
            };
            let narrowed = flow(pre, &cond, then, otherwise, "");
            let got = errors(&narrowed);
            assert!(
                got.is_empty(),
                "`{x}` should be narrowed by `{cond}`, got {got:?} in\n{narrowed}"
            );
            // The other branch and the rest of the flow still see it optional.
            let (then, otherwise) = if holds {
                ("", used.as_str())
            } else {
                (used.as_str(), "")
            };
            for program in [
                flow(pre, &cond, then, otherwise, ""),
                flow(pre, &cond, "", "", &used),
            ] {
                let got = codes(&program);
                assert!(
                    got.contains(&Code::MaybeAbsent),
                    "`{x}` should stay optional, got {got:?} in\n{program}"
                );
            }
        }
        // The right side of an `and` sees what its left side tested.
        let fields = if x.contains('.') {
            format!("{x}.uri != \"\"")
        } else {
            format!("{x}.score > 0.5")
        };
        let ok = flow(pre, &format!("{x} != none and {fields}"), "", "", "");
        assert_eq!(errors(&ok), Vec::<Code>::new(), "in\n{ok}");
        let wrong = flow(pre, &format!("{x} != none or {fields}"), "", "", "");
        assert!(codes(&wrong).contains(&Code::MaybeAbsent), "in\n{wrong}");
    }
}

#[test]
fn an_optional_field_left_out_of_a_record_literal_is_none() {
    let decls = "
record Spec {
    a: Int,
    b: String,
    c: Float?,
    d: List<String>?,
    e: Int?,
}

remote step Run(spec: Spec) -> Int
";
    let fields = [
        ("a", "1"),
        ("b", "\"x\""),
        ("c", "0.5"),
        ("d", "[]"),
        ("e", "2"),
    ];
    for mask in 0u32..(1 << fields.len()) {
        let given: Vec<_> = (0..fields.len()).filter(|i| mask & (1 << i) != 0).collect();
        let lit: Vec<String> = given
            .iter()
            .map(|&i| format!("{}: {}", fields[i].0, fields[i].1))
            .collect();
        let program = format!(
            "{decls}\nflow F() -> Int {{\n let r = Run(spec: Spec {{ {} }})\n return r\n}}\n",
            lit.join(", ")
        );
        let a = Analysis::from_texts(
            vec![(PathBuf::from("rule.eflow"), program.clone())],
            &FsLoader,
        );
        let got: Vec<Code> = a.diagnostics().iter().map(|d| d.code).collect();
        let required_missing = !(given.contains(&0) && given.contains(&1));
        assert_eq!(
            got.contains(&Code::MissingField),
            required_missing,
            "{got:?} in\n{program}"
        );
        if required_missing {
            continue;
        }
        assert_eq!(got, Vec::<Code>::new(), "in\n{program}");
        // The IR gives every field, the ones left out as `null`.
        let bundle = eflow_compiler::lower::emit(&a, None).expect("emits");
        let json =
            serde_json::to_value(&bundle.flows[0].nodes[0].inputs["spec"]).expect("serializes");
        for (i, (name, _)) in fields.iter().enumerate() {
            // A constant record is one literal; otherwise each field is an expression.
            let none = match json.get("literal") {
                Some(lit) => lit.get(name).map(serde_json::Value::is_null),
                None => json["record"]["fields"]
                    .get(name)
                    .map(|f| *f == serde_json::json!({ "literal": null })),
            };
            let Some(none) = none else {
                panic!("field `{name}` missing from {json}");
            };
            assert_eq!(none, !given.contains(&i), "field `{name}` in {json}");
        }
    }
}

/// The `W0003` warnings of checking `files` (names relative to `dir`) together,
/// as `(file, message)`.
fn missing_bindings(dir: &Path, files: &[&str]) -> Vec<(String, String)> {
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    let a = Analysis::from_paths(&paths, &FsLoader).expect("readable");
    a.diagnostics()
        .iter()
        .filter(|d| d.code == Code::MissingBinding)
        .map(|d| {
            let name = a.sources.get(d.primary.file).name.clone();
            let file = name.rsplit('/').next().unwrap_or(&name).to_string();
            (file, d.message.clone())
        })
        .collect()
}

const ENVS: [&str; 3] = ["dev", "staging", "prod"];
const STEPS: [&str; 3] = ["Fetch", "Fit", "Score"];

/// A project file: the steps its flow calls, and per environment the steps it binds.
#[derive(Debug, Clone)]
struct ProjectFile {
    calls: Vec<usize>,
    binds: Vec<(usize, Vec<usize>)>,
}

fn project_file() -> impl Strategy<Value = ProjectFile> {
    (
        proptest::collection::btree_set(0..STEPS.len(), 0..=STEPS.len()),
        proptest::collection::btree_map(
            0..ENVS.len(),
            proptest::collection::btree_set(0..STEPS.len(), 0..=STEPS.len()),
            0..=ENVS.len(),
        ),
    )
        .prop_map(|(calls, binds)| ProjectFile {
            calls: calls.into_iter().collect(),
            binds: binds
                .into_iter()
                .map(|(e, s)| (e, s.into_iter().collect()))
                .collect(),
        })
}

fn write_project(dir: &Path, files: &[ProjectFile]) -> Vec<String> {
    let steps: String = STEPS
        .iter()
        .map(|s| format!("remote step {s}() -> Int\n"))
        .collect();
    std::fs::write(dir.join("steps.eflow"), steps).expect("write");
    let mut names = Vec::new();
    for (k, f) in files.iter().enumerate() {
        let mut text = format!("from \"./steps\" import {}\n\n", STEPS.join(", "));
        text.push_str(&format!("flow Flow{k}() {{\n"));
        for &s in &f.calls {
            text.push_str(&format!("    let _{} = {}()\n", s, STEPS[s]));
        }
        text.push_str("}\n");
        for (e, bound) in &f.binds {
            text.push_str(&format!("\nbindings {} {{\n", ENVS[*e]));
            for &s in bound {
                text.push_str(&format!("    {} = sim {{ duration: 1s }}\n", STEPS[s]));
            }
            text.push_str("}\n");
        }
        let name = format!("f{k}.eflow");
        std::fs::write(dir.join(&name), text).expect("write");
        names.push(name);
    }
    names
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Checking files together never gives a `W0003` that checking each alone
    /// does not: another file can bind a step, never add an environment.
    #[test]
    fn checking_files_together_adds_no_missing_binding(
        files in proptest::collection::vec(project_file(), 1..4)
    ) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let names = write_project(dir.path(), &files);
        let mut alone = Vec::new();
        for n in &names {
            alone.extend(missing_bindings(dir.path(), &[n.as_str()]));
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for w in missing_bindings(dir.path(), &refs) {
            prop_assert!(alone.contains(&w), "{w:?} only when checked together");
        }
        // And a step of a file's environment that no file binds is still reported.
        for (k, f) in files.iter().enumerate() {
            for (e, _) in &f.binds {
                for &s in &f.calls {
                    let bound = files.iter().any(|g| {
                        g.binds.iter().any(|(ge, steps)| ge == e && steps.contains(&s))
                    });
                    let w = (
                        format!("f{k}.eflow"),
                        format!("`{}` has no binding in environment `{}`", STEPS[s], ENVS[*e]),
                    );
                    prop_assert_eq!(
                        missing_bindings(dir.path(), &refs).contains(&w),
                        !bound,
                        "{:?}", w
                    );
                }
            }
        }
    }
}

#[test]
fn a_misplaced_or_second_return_is_one_diagnostic() {
    let decls = "remote step Fit(epochs: Int) -> Float\n";
    // A second `return`, whatever it returns: E0209 alone.
    for second in ["b", "a", "b ?? a", "1.0"] {
        let program = format!(
            "{decls}flow F(p: Float) -> Float {{\n let a = Fit(epochs: 1)\n let b = Fit(epochs: 2)\n return a\n return {second}\n let _c = Fit(epochs: 3)\n}}\n"
        );
        let got = codes(&program);
        assert_eq!(errors(&program), vec![Code::MissingReturn], "in\n{program}");
        if second.contains('b') {
            assert!(!got.contains(&Code::UnusedOutput), "{got:?} in\n{program}");
        }
    }
    // A `return` inside a `when` (or its `else`), with or without a result
    // type: E0305 alone, not also a missing return or an unused value.
    for (result, branch) in [("-> Float", true), ("-> Float", false), ("-> Float?", true)] {
        let ret = " return c\n";
        let (then, otherwise) = if branch { (ret, "") } else { ("", ret) };
        let program = format!(
            "{decls}flow F(go: Bool) {result} {{\n let c = Fit(epochs: 3)\n when go {{\n{then} }} else {{\n{otherwise} }}\n}}\n"
        );
        assert_eq!(
            codes(&program),
            vec![Code::MisplacedStatement],
            "in\n{program}"
        );
    }
}

/// `text` with the first fix of its first diagnostic applied.
fn apply_first_fix(text: &str) -> String {
    let diags = check(text);
    let fix = diags.iter().find_map(|d| d.fixes.first()).expect("a fix");
    let mut edits: Vec<_> = fix.edits.iter().collect();
    edits.sort_by_key(|e| std::cmp::Reverse(e.span.start));
    let mut out = text.to_string();
    for e in edits {
        out.replace_range(e.span.start as usize..e.span.end as usize, &e.text);
    }
    out
}

#[test]
fn a_fallback_in_a_comparison_is_one_error_whose_fix_is_the_parentheses() {
    for op in [">=", ">", "<", "<=", "==", "!="] {
        for tail in ["", " and go", " or go"] {
            let program = format!(
                "record M {{ auc: Float? }}\nremote step Eval() -> M\n\nflow F(min: Float, go: Bool) -> Bool {{\n    let m = Eval()\n    return m.auc ?? 0.0 {op} min{tail}\n}}\n"
            );
            assert_eq!(errors(&program), vec![Code::TypeMismatch], "in\n{program}");
            let fixed = apply_first_fix(&program);
            assert_eq!(errors(&fixed), Vec::<Code>::new(), "in\n{fixed}");
        }
    }
}

#[test]
fn an_item_that_fails_to_parse_still_declares_its_name_and_uses_its_imports() {
    // Each declaration, broken: a missing `}`, a missing `->`; used as a type
    // (`T`) or called (`C`), and reading an import.
    let broken = [
        ("record Spec {\n    rate: Dataset,\n", "T"),
        ("enum Spec {\n    Dataset,\n    B\n", "T"),
        ("remote step Spec(rate: Dataset) Float\n", "C"),
        (
            "flow Spec(rate: Dataset) Float {\n    let x = Fit()\n    return x\n}\n",
            "C",
        ),
    ];
    for (item, used) in broken {
        let body = if used == "T" {
            "flow Other(s: Spec) -> Float {\n    let b = Fit()\n    return b\n}\n"
        } else {
            "flow Other() -> Float {\n    let b = Spec(rate: 1.0)\n    return b\n}\n"
        };
        let program = format!(
            "from \"std/ml\" import Dataset\n\n{item}\nremote step Fit() -> Float\n\n{body}"
        );
        let got = check(&program);
        let errors: Vec<Code> = got
            .iter()
            .filter(|d| d.is_error() || d.code == Code::UnusedImport)
            .map(|d| d.code)
            .collect();
        assert_eq!(errors, vec![Code::Syntax], "in\n{program}");
    }
}

#[test]
fn digit_separators_are_one_error_whose_fix_removes_them() {
    for (lit, param) in [
        ("1_000", "Int"),
        ("1_000_000", "Int"),
        ("10_000ms", "Duration"),
    ] {
        let program = format!(
            "remote step Fit(x: {param}) -> Float\n\nflow F() -> Float {{\n    let l = Fit(x: {lit})\n    return l\n}}\n"
        );
        assert_eq!(codes(&program), vec![Code::InvalidNumber], "in\n{program}");
        let fixed = apply_first_fix(&program);
        assert_eq!(codes(&fixed), Vec::<Code>::new(), "in\n{fixed}");
    }
}

/// The diagnostics of `main.eflow`, importing `other.eflow` whose bytes are given.
fn check_with_other(main: &str, other: &[u8]) -> Vec<(String, Code, u32, u32)> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("other.eflow"), other).expect("write");
    std::fs::write(dir.path().join("main.eflow"), main).expect("write");
    let a = Analysis::from_paths(&[dir.path().join("main.eflow")], &FsLoader).expect("readable");
    a.diagnostics()
        .iter()
        .map(|d| {
            let src = a.sources.get(d.primary.file);
            let lc = src.line_col(d.primary.span.start);
            let name = src.name.rsplit('/').next().unwrap_or_default().to_string();
            (name, d.code, lc.line, lc.col)
        })
        .collect()
}

#[test]
fn a_name_imported_from_a_declaration_that_failed_to_parse_counts_as_declared() {
    // The same broken declarations as in one file, now in the imported file: the
    // only diagnostic is that file's syntax error, none where they are imported
    // and used (on the old code: E0104 at the import, then unknown names).
    let broken = [
        ("record Spec {\n    rate: Float,\n", "T"),
        ("enum Spec {\n    A,\n    B\n", "T"),
        ("remote step Spec(rate: Float) Float\n", "C"),
        (
            "flow Spec(rate: Float) Float {\n    let x = Fit()\n    return x\n}\n",
            "C",
        ),
    ];
    for (item, used) in broken {
        let other = format!("{item}\nremote step Fit() -> Float\n");
        let body = if used == "T" {
            "flow Other(s: Spec) -> Float {\n    let b = Fit()\n    return b\n}\n"
        } else {
            "flow Other() -> Float {\n    let b = Spec(rate: 1.0)\n    return b\n}\n"
        };
        let fit = if used == "T" { ", Fit" } else { "" };
        for import in [format!("Spec{fit}"), format!("Spec as Renamed{fit}")] {
            let body = if import.contains("Renamed") {
                body.replace("Spec", "Renamed")
            } else {
                body.to_string()
            };
            let main = format!("from \"other\" import {import}\n\n{body}");
            let got = check_with_other(&main, other.as_bytes());
            // The flow leaves `s` unused (W0004): only errors and unused imports count.
            let codes: Vec<(&str, Code)> = got
                .iter()
                .filter(|(_, c, ..)| c.severity().as_str() == "error" || *c == Code::UnusedImport)
                .map(|(f, c, ..)| (f.as_str(), *c))
                .collect();
            assert_eq!(
                codes,
                vec![("other.eflow", Code::Syntax)],
                "in\n{main}\nimporting\n{other}"
            );
        }
    }
    // A name the other file does not mention at all is still not found.
    let got = check_with_other(
        "from \"other\" import Nothing\n",
        b"record Spec {\n    rate: Float,\n",
    );
    assert!(
        got.iter()
            .any(|(f, c, ..)| f == "main.eflow" && *c == Code::ImportNotFound),
        "{got:?}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_one_error_at_its_first_invalid_byte() {
    // Wherever the invalid byte is (a comment, a string, a name, the first or last
    // byte), whatever it is (Latin-1, a lone continuation byte, a truncated
    // sequence), the file is one E0005 at that byte, and what other files import
    // from it counts as declared.
    let cases: [(&[u8], u32, u32); 6] = [
        (b"// Mod\xe8le\nremote step Fit() -> Float\n", 1, 7),
        (b"remote step Fit() -> Float\n// \x80\n", 2, 4),
        (b"\xffremote step Fit() -> Float\n", 1, 1),
        (
            b"remote step Fit(p: String = \"caf\xe9\") -> Float\n",
            1,
            33,
        ),
        (b"remote step Fit() -> Float\n\xe2\x82", 2, 1),
        (b"remote step Fi\xc3t() -> Float\n", 1, 15),
    ];
    let main =
        "from \"other\" import Fit\n\nflow F() -> Float {\n    let x = Fit()\n    return x\n}\n";
    for (other, line, col) in cases {
        let got = check_with_other(main, other);
        assert_eq!(
            got,
            vec![("other.eflow".to_string(), Code::NotUtf8, line, col)],
            "for {other:?}"
        );
    }
}

proptest! {
    /// A `repeat`'s bound is checked when the flow is compiled: 1 to 100 is a
    /// bound, anything else is `E0306` and nothing else; and the loop's value has
    /// the call's output type, whatever the bound.
    #[test]
    fn a_repeat_bound_is_checked_at_compile_time(n in 0u64..1_000) {
        let text = format!(
            "remote step R(p: Int?) -> Int\n\nflow F() -> Int {{\n    let x = repeat p at_most {n} {{ R(p: p) }} until p > 3\n    return x\n}}\n"
        );
        let got = errors(&text);
        if (1..=u64::from(eflow_compiler::ir::MAX_REPEAT)).contains(&n) {
            prop_assert!(got.is_empty(), "{n}: {got:?}");
        } else {
            prop_assert_eq!(got, vec![Code::RepeatBound], "{}", n);
        }
    }
}
