//! `eflowc diff OLD NEW`: each class of change is found and classified, whether
//! the sides are sources or compiled IR; a bundle against itself, or against its
//! own layout changed, has no change; the real binary prints every format and
//! exits 1 exactly when a change is breaking.

use std::path::{Path, PathBuf};

#[path = "support/eflowc.rs"]
mod eflowc_bin;
use eflowc_bin::eflowc;

use eflow_compiler::diagnostics::Code;
use eflow_compiler::diff::{Side, report};

const BASE: &str = r#"remote step Refresh(table: String) -> Int

record Options {
    table: String,
}

enum Mode {
    Full,
    Delta,
}

record Window {
    days: Int,
}

flow Nightly(options: Options, mode: Mode, limit: Int?, depth: Float = 3.0) -> Int {
    schedule "0 2 * * *"
        input(options: Options { table: "events" }, mode: Mode.Full)
    let rows = Refresh(table: options.table)
    return rows
}

flow Caller() -> Int {
    let n = Nightly(options: Options { table: "x" }, mode: Mode.Delta)
    return n
}

flow Other(n: Int = 1, window: Window?) -> Int {
    let rows = Refresh(table: "x")
    return rows
}

bindings prod {
    Refresh = sim { duration: 1s }
}
"#;

/// Writes `text` as the one file of a new folder.
fn folder(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("flows.eflow"), text).expect("write");
    dir
}

fn codes_between(old: &str, new: &str) -> Vec<(Code, String)> {
    let (a, b) = (folder(old), folder(new));
    let old = Side::read(a.path()).unwrap_or_else(|e| panic!("{e}"));
    let new = Side::read(b.path()).unwrap_or_else(|e| match e {
        eflow_compiler::bundles::Error::Diagnostics(d) => panic!("{d:?}\n{new}"),
        e => panic!("{e}"),
    });
    report(&old, &new)
        .0
        .into_iter()
        .map(|d| (d.code, d.message))
        .collect()
}

/// The codes of the changes `edit` makes to [`BASE`].
fn codes_of(edits: &[(&str, &str)]) -> Vec<Code> {
    let mut new = BASE.to_string();
    for (from, to) in edits {
        assert!(new.contains(from), "{from}");
        new = new.replacen(from, to, 1);
    }
    let changes = codes_between(BASE, &new);
    eprintln!("{edits:?}: {changes:?}");
    changes.into_iter().map(|(c, _)| c).collect()
}

/// Replacements made to [`BASE`], in order.
type Edits<'a> = &'a [(&'a str, &'a str)];

#[test]
fn each_class_of_change_is_classified() {
    use Code::*;
    let cases: &[(Edits, &[Code])] = &[
        // Inputs narrowed: a required parameter added, a type narrowed, a default
        // removed, a parameter removed, a required record field added.
        (
            &[("n: Int = 1,", "n: Int = 1, region: String,")],
            &[InputNarrowed],
        ),
        (
            &[("depth: Float = 3.0", "depth: Int = 3")],
            &[InputNarrowed],
        ),
        (&[("n: Int = 1,", "n: Int,")], &[InputNarrowed]),
        (&[(", limit: Int?", "")], &[InputNarrowed]),
        (
            &[("    days: Int,\n}", "    days: Int,\n    hours: Int,\n}")],
            &[InputNarrowed],
        ),
        // Compatible: a parameter with a default, a wider type, an optional field,
        // a new enum variant on an input, a step's input, a new flow.
        (
            &[("n: Int = 1,", "n: Int = 1, region: String = \"eu\",")],
            &[Compatible],
        ),
        (&[("limit: Int?", "limit: Float?")], &[Compatible]),
        (
            &[("    days: Int,\n}", "    days: Int,\n    hours: Int?,\n}")],
            &[Compatible],
        ),
        (
            &[("    Delta,\n", "    Delta,\n    Replay,\n")],
            &[Compatible],
        ),
        (
            &[(
                "    let rows = Refresh(table: \"x\")\n    return rows\n}\n\nbindings",
                "    let rows = Refresh(table: \"y\")\n    return rows\n}\n\nbindings",
            )],
            &[Compatible],
        ),
        // A body turned into a bounded loop: a new version, nothing callers see.
        (
            &[(
                "    let rows = Refresh(table: \"x\")\n    return rows\n}\n\nbindings",
                "    let rows = repeat r at_most 3 {\n        Refresh(table: \"x\")\n    } until r > 10\n    return rows\n}\n\nbindings",
            )],
            &[Compatible],
        ),
        (
            &[(
                "bindings prod",
                "flow New() -> Int {\n    let rows = Refresh(table: \"n\")\n    return rows\n}\n\nbindings prod",
            )],
            &[Compatible],
        ),
        // A flow removed; a result changed; a contract changed; a binding moved.
        (
            &[(
                "flow Other(n: Int = 1, window: Window?) -> Int {\n    let rows = Refresh(table: \"x\")\n    return rows\n}\n",
                "",
            )],
            &[FlowRemoved],
        ),
        (
            &[
                ("-> Int {\n    schedule", "-> Int? {\n    schedule"),
                ("flow Caller() -> Int {", "flow Caller() -> Int? {"),
            ],
            &[ResultChanged, ResultChanged],
        ),
        (
            &[
                (
                    "Refresh(table: String)",
                    "Refresh(table: String, since: String)",
                ),
                (
                    "Refresh(table: options.table)",
                    "Refresh(table: options.table, since: \"s\")",
                ),
                (
                    "Refresh(table: \"x\")\n    return rows\n}\n\nbindings",
                    "Refresh(table: \"x\", since: \"s\")\n    return rows\n}\n\nbindings",
                ),
            ],
            &[ContractChanged, ContractChanged],
        ),
        (
            &[(
                "Refresh = sim { duration: 1s }",
                "Refresh = http { url: \"https://r.example.com\" }",
            )],
            &[BindingMoved, BindingMoved],
        ),
    ];
    for (edits, want) in cases {
        let got = codes_of(edits);
        assert_eq!(&got, want, "{edits:?}");
    }
}

#[test]
fn the_flow_removed_names_its_schedules_and_callers() {
    let new = BASE
        .replace("flow Caller() -> Int {\n    let n = Nightly(options: Options { table: \"x\" }, mode: Mode.Delta)\n    return n\n}\n", "")
        .replace(
            "flow Nightly(",
            "flow Renamed(",
        );
    let (a, b) = (folder(BASE), folder(&new));
    let (old, new) = (
        Side::read(a.path()).expect("old"),
        Side::read(b.path()).expect("new"),
    );
    let (diags, _) = report(&old, &new);
    let removed = diags
        .iter()
        .find(|d| d.message.contains("`Nightly` was removed"))
        .expect("Nightly removed");
    let help = removed.help.clone().unwrap_or_default();
    assert!(
        help.contains("1 schedule") && help.contains("`Caller`"),
        "{help}"
    );
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn a_bundle_against_itself_its_ir_or_its_layout_changed_has_no_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ir = dir.path().join("ir");
    let o = eflowc(
        &["compile", ".", "--out-dir", ir.to_str().expect("utf-8")],
        &examples(),
    );
    assert!(o.status.success());
    let sources = Side::read(&examples()).expect("examples");
    let compiled = Side::read(&ir).expect("IR");
    assert!(report(&sources, &sources).0.is_empty());
    assert!(report(&compiled, &sources).0.is_empty());
    assert!(report(&sources, &compiled).0.is_empty());
    // Every file reformatted with comments and blank lines: still no change.
    let moved = dir.path().join("moved");
    let mut files = Vec::new();
    eflow_compiler::analysis::collect_eflow_files(&examples(), &mut files).expect("files");
    for f in files {
        let to = moved.join(f.strip_prefix(examples()).expect("under examples"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        let text = std::fs::read_to_string(&f).expect("read");
        std::fs::write(
            &to,
            format!("// moved\n\n\n{}", text.replace("\n\n", "\n\n// gap\n\n")),
        )
        .expect("write");
    }
    assert!(
        report(&compiled, &Side::read(&moved).expect("moved"))
            .0
            .is_empty()
    );
}

#[test]
fn the_binary_prints_every_format_and_exits_1_on_breaking_changes() {
    let old = folder(BASE);
    let breaking = folder(&BASE.replace("depth: Float = 3.0", "depth: Int = 3"));
    let compatible = folder(&BASE.replace("Refresh(table: \"x\")", "Refresh(table: \"y\")"));
    let path = |d: &tempfile::TempDir| d.path().to_str().expect("utf-8").to_string();
    let here = old.path().parent().expect("tmp").to_path_buf();

    let o = eflowc(&["diff", &path(&old), &path(&breaking)], &here);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("B0002"));

    let o = eflowc(&["diff", &path(&old), &path(&compatible)], &here);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("C0001"));

    let o = eflowc(
        &["diff", &path(&old), &path(&breaking), "--format", "json"],
        &here,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["diagnostics"][0]["code"], "B0002", "{v}");
    assert!(
        v["diagnostics"][0]["help"]
            .as_str()
            .unwrap_or("")
            .contains("API callers")
    );

    let o = eflowc(
        &["diff", &path(&old), &path(&breaking), "--format", "sarif"],
        &here,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("SARIF");
    assert_eq!(v["runs"][0]["results"][0]["ruleId"], "B0002", "{v}");

    let o = eflowc(
        &["diff", &path(&old), &path(&breaking), "--format", "github"],
        &here,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("::error file=") && out.contains("title=B0002"),
        "{out}"
    );

    // A side with errors is refused, exit 2.
    let broken = folder("flow {");
    let o = eflowc(&["diff", &path(&old), &path(&broken)], &here);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("eflowc check"));
}
