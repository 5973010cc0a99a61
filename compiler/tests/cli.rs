//! The `eflowc` binary, as CI and people run it: every command, output format and
//! exit code.

use std::path::{Path, PathBuf};
use std::process::Output;

#[path = "support/eflowc.rs"]
mod eflowc_bin;
use eflowc_bin::eflowc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const BROKEN: &str = "compiler/tests/corpus/err/types.eflow";

/// A file with one warning (an unused output) and no error.
fn warning_only(dir: &Path) -> PathBuf {
    let p = dir.join("warn.eflow");
    std::fs::write(
        &p,
        "remote step Fetch(source: String) -> String\n\nflow F(source: String) {\n    let unused = Fetch(source: source)\n}\n",
    )
    .expect("write");
    p
}

#[test]
fn check_clean_examples_exits_0_silently() {
    let o = eflowc(&["check", "examples"], &root());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn check_errors_exit_1_with_codes_and_help() {
    let o = eflowc(&["check", BROKEN], &root());
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("E0200"), "{err}");
    assert!(err.contains("help:"), "{err}");
    assert!(err.contains("types.eflow:"), "{err}");
    assert!(!err.contains('\u{1b}'), "NO_COLOR output has no escapes");
}

#[test]
fn json_format_is_machine_readable() {
    let o = eflowc(&["check", "--format", "json", BROKEN], &root());
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json on stdout");
    let diags = v["diagnostics"].as_array().expect("diagnostics array");
    assert!(
        diags
            .iter()
            .any(|d| d["code"] == "E0200" && d["line"].as_u64().is_some())
    );
}

#[test]
fn sarif_format_is_sarif_2_1_0_with_rule_ids() {
    let o = eflowc(&["check", "--format", "sarif", BROKEN], &root());
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("sarif json");
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().expect("results");
    assert!(results.iter().any(|r| r["ruleId"] == "E0200"));
    let rules = v["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules");
    assert!(rules.iter().any(|r| r["id"] == "E0200"));
}

#[test]
fn github_format_prints_workflow_commands_and_a_summary() {
    let o = eflowc(&["check", "--format", "github", BROKEN], &root());
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(
        out.lines().any(|l| l
            .starts_with("::error file=compiler/tests/corpus/err/types.eflow,line=")
            && l.contains("title=E0200::")),
        "{out}"
    );
    assert!(
        out.trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("eflowc: ")),
        "{out}"
    );
}

#[test]
fn warnings_pass_unless_denied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = warning_only(dir.path());
    let f = file.to_str().expect("utf-8 path");
    let o = eflowc(&["check", f], dir.path());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("W0001"));
    let o = eflowc(&["check", "--deny-warnings", f], dir.path());
    assert_eq!(code(&o), 1);
}

#[test]
fn compile_writes_canonical_ir_to_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bundle.json");
    let o = eflowc(
        &["compile", "examples", "-o", out.to_str().expect("path")],
        &root(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let first = std::fs::read(&out).expect("written");
    let bundle: eflow_compiler::ir::Bundle = serde_json::from_slice(&first).expect("IR");
    assert!(bundle.flows.iter().any(|f| f.name == "Retrain"));
    let o = eflowc(
        &["compile", "examples", "-o", out.to_str().expect("path")],
        &root(),
    );
    assert_eq!(code(&o), 0);
    assert_eq!(
        std::fs::read(&out).expect("written"),
        first,
        "same sources, same bytes"
    );
}

#[test]
fn the_ir_does_not_depend_on_the_working_directory() {
    // Module names are part of contract names and of flow versions: the same
    // sources must give the same IR wherever the compiler runs.
    let from_root = eflowc(&["compile", "examples"], &root());
    assert_eq!(code(&from_root), 0, "{}", stderr(&from_root));
    let from_inside = eflowc(&["compile", "."], &root().join("examples"));
    assert_eq!(code(&from_inside), 0, "{}", stderr(&from_inside));
    let from_elsewhere = eflowc(
        &["compile", root().join("examples").to_str().expect("path")],
        &std::env::temp_dir(),
    );
    assert_eq!(code(&from_elsewhere), 0, "{}", stderr(&from_elsewhere));
    assert_eq!(stdout(&from_root), stdout(&from_inside));
    assert_eq!(stdout(&from_root), stdout(&from_elsewhere));
    let bundle: eflow_compiler::ir::Bundle = serde_json::from_str(&stdout(&from_root)).expect("IR");
    let retrain = bundle
        .flows
        .iter()
        .find(|f| f.name == "Retrain")
        .expect("Retrain");
    assert_eq!(
        retrain.module, "retraining",
        "named from the compiled directory"
    );
    // A file given alone is named from its directory, as in the directory.
    let alone = eflowc(&["compile", "examples/retraining.eflow"], &root());
    let alone: eflow_compiler::ir::Bundle = serde_json::from_str(&stdout(&alone)).expect("IR");
    let r = alone
        .flows
        .iter()
        .find(|f| f.name == "Retrain")
        .expect("Retrain");
    assert_eq!(r.module, "retraining");
    assert_eq!(
        r.source_map.flow.as_ref().map(|l| l.file.as_str()),
        Some("retraining.eflow")
    );
    // And it is the same version: its own file's bindings win over those
    // other files give the same standard step.
    assert_eq!(r.hash, retrain.hash, "compiled alone or with its directory");
    let features = &retrain.bindings["dev"]["std/ml.BuildFeatures"];
    assert_eq!(
        features.config.get("duration"),
        Some(&serde_json::json!(20_000)),
        "retraining.eflow's own binding: {features:?}"
    );
}

#[test]
fn compile_to_stdout_and_to_a_directory() {
    let o = eflowc(&["compile", "examples/retraining.eflow"], &root());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let bundle: eflow_compiler::ir::Bundle =
        serde_json::from_str(&stdout(&o)).expect("IR on stdout");
    assert!(bundle.flows.iter().all(|f| f.hash.starts_with("sha256:")));

    let dir = tempfile::tempdir().expect("tempdir");
    let o = eflowc(
        &[
            "compile",
            "examples",
            "--out-dir",
            dir.path().to_str().expect("path"),
        ],
        &root(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let retrain =
        std::fs::read_to_string(dir.path().join("Retrain.json")).expect("one file per flow");
    let b: eflow_compiler::ir::Bundle = serde_json::from_str(&retrain).expect("IR");
    assert_eq!(b.flows.iter().filter(|f| f.name == "Retrain").count(), 1);
    // Each file holds the flow and the subflows it calls, as in the whole bundle.
    let o = eflowc(&["compile", "examples"], &root());
    let all: eflow_compiler::ir::Bundle = serde_json::from_str(&stdout(&o)).expect("IR");
    for f in &b.flows {
        assert!(
            all.flows.contains(f),
            "{} is as in the whole bundle",
            f.name
        );
    }
    for n in b.flows.iter().flat_map(|f| &f.nodes) {
        if let eflow_compiler::ir::Call::Flow { name } = &n.call {
            assert!(
                b.flows.iter().any(|f| &f.name == name),
                "{name} is included"
            );
        }
    }
}

#[test]
fn compile_writes_compact_ir_and_pretty_ir_on_request() {
    let o = eflowc(&["compile", "examples"], &root());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let compact = stdout(&o);
    assert_eq!(compact.lines().count(), 1, "one line");
    let bundle: eflow_compiler::ir::Bundle = serde_json::from_str(&compact).expect("IR");
    assert_eq!(
        compact,
        format!("{}\n", serde_json::to_string(&bundle).expect("json"))
    );
    let o = eflowc(&["compile", "--pretty", "examples"], &root());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), bundle.to_pretty_json());

    // One file per flow: the same IR, compact or pretty.
    let compact = tempfile::tempdir().expect("tempdir");
    let pretty = tempfile::tempdir().expect("tempdir");
    for (dir, extra) in [(&compact, None), (&pretty, Some("--pretty"))] {
        let mut args = vec!["compile", "examples", "--out-dir"];
        args.push(dir.path().to_str().expect("path"));
        args.extend(extra);
        let o = eflowc(&args, &root());
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    for f in &bundle.flows {
        let file = format!("{}.json", f.name);
        let read = |dir: &tempfile::TempDir| {
            std::fs::read_to_string(dir.path().join(&file)).expect("one file per flow")
        };
        let b: eflow_compiler::ir::Bundle = serde_json::from_str(&read(&compact)).expect("IR");
        assert_eq!(read(&pretty), b.to_pretty_json());
        assert_eq!(read(&compact).lines().count(), 1);
    }
}

#[test]
fn compile_with_errors_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bundle.json");
    let o = eflowc(
        &["compile", BROKEN, "-o", out.to_str().expect("path")],
        &root(),
    );
    assert_eq!(code(&o), 1);
    assert!(!out.exists());
    assert!(stdout(&o).is_empty());
}

#[test]
fn explain_prints_every_code() {
    for c in eflow_compiler::diagnostics::Code::ALL {
        let o = eflowc(&["explain", c.as_str()], &root());
        assert_eq!(code(&o), 0);
        assert!(stdout(&o).starts_with(c.as_str()), "{}", stdout(&o));
    }
    let o = eflowc(&["explain", "e0200"], &root());
    assert_eq!(code(&o), 0, "codes are case-insensitive");
    let o = eflowc(&["explain", "E9999"], &root());
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown diagnostic code"));
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(code(&eflowc(&[], &root())), 2);
    assert_eq!(code(&eflowc(&["check"], &root())), 2);
    assert_eq!(
        code(&eflowc(&["check", "--format", "xml", "examples"], &root())),
        2
    );
    let o = eflowc(&["check", "no/such/file.eflow"], &root());
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no/such/file.eflow"));
    let dir = tempfile::tempdir().expect("tempdir");
    let o = eflowc(&["check", "."], dir.path());
    assert_eq!(code(&o), 2, "an empty directory is a usage error");
    assert!(stderr(&o).contains("no `.eflow` files"));
}

#[test]
fn schema_is_the_committed_schema() {
    let o = eflowc(&["schema"], &root());
    assert_eq!(code(&o), 0);
    let committed =
        std::fs::read_to_string(root().join("ir/schema/ir.schema.json")).expect("schema");
    assert_eq!(stdout(&o), committed);
}

#[test]
fn binary_garbage_is_a_clean_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("garbage.eflow");
    std::fs::write(&p, [0xff, 0xfe, 0x00, b'f', b'l', b'o', b'w']).expect("write");
    let o = eflowc(&["check", p.to_str().expect("path")], dir.path());
    assert_eq!(code(&o), 1, "not UTF-8 is an error in the file (E0005)");
    assert!(stderr(&o).contains("E0005"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    std::fs::write(&p, "flow ((((((((((((( { let = }}}} \"").expect("write");
    let o = eflowc(&["check", p.to_str().expect("path")], dir.path());
    assert_eq!(code(&o), 1);
    assert!(!stderr(&o).contains("panicked"));
}

/// A folder of flows where one file was saved as Latin-1.
fn folder_with_latin1(dir: &Path) {
    std::fs::create_dir(dir.join("flows")).expect("mkdir");
    std::fs::write(
        dir.join("flows/ok.eflow"),
        "remote step Fit() -> Float\n\nflow F() -> Float {\n    let x = Fit()\n    return x\n}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("flows/latin1.eflow"),
        b"remote step Score() -> Float\n// Mod\xe8le\n",
    )
    .expect("write");
}

#[test]
fn a_file_that_is_not_utf8_is_e0005_in_every_format_with_exit_1() {
    // On the old code: exit 2 and nothing on stdout, so `> eflow.sarif` was empty.
    let dir = tempfile::tempdir().expect("tempdir");
    folder_with_latin1(dir.path());
    for format in ["human", "json", "sarif", "github"] {
        let o = eflowc(&["check", "--format", format, "flows"], dir.path());
        assert_eq!(code(&o), 1, "{format}: {}", stderr(&o));
        let out = if format == "human" {
            stderr(&o)
        } else {
            stdout(&o)
        };
        match format {
            "human" => assert!(
                out.contains("E0005") && out.contains("latin1.eflow:2:7"),
                "{out}"
            ),
            "json" => {
                let v: serde_json::Value = serde_json::from_str(&out).expect("json");
                let d = &v["diagnostics"][0];
                assert_eq!(
                    (&d["code"], &d["file"], &d["line"], &d["column"]),
                    (
                        &serde_json::json!("E0005"),
                        &serde_json::json!("flows/latin1.eflow"),
                        &serde_json::json!(2),
                        &serde_json::json!(7)
                    ),
                    "{out}"
                );
            }
            "sarif" => {
                let v: serde_json::Value = serde_json::from_str(&out).expect("sarif");
                let r = &v["runs"][0]["results"][0];
                assert_eq!(r["ruleId"], "E0005", "{out}");
                let region = &r["locations"][0]["physicalLocation"]["region"];
                assert_eq!(
                    (&region["startLine"], &region["startColumn"]),
                    (&serde_json::json!(2), &serde_json::json!(7))
                );
            }
            _ => assert!(
                out.lines().any(
                    |l| l.starts_with("::error file=flows/latin1.eflow,line=2,col=7,")
                        && l.contains("title=E0005::")
                ),
                "{out}"
            ),
        }
    }
    // `fmt` formats the others, leaves it as it is and says why.
    let before = std::fs::read(dir.path().join("flows/latin1.eflow")).expect("read");
    let o = eflowc(&["fmt", "flows"], dir.path());
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("latin1.eflow` is not UTF-8"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(dir.path().join("flows/latin1.eflow")).expect("read"),
        before
    );
}

/// Each flow's version in the bundle `eflowc compile DIR` prints.
fn versions_of(dir: &Path) -> Vec<(String, String)> {
    let o = eflowc(&["compile", "."], dir);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let b: eflow_compiler::ir::Bundle = serde_json::from_str(&stdout(&o)).expect("IR");
    b.flows.into_iter().map(|f| (f.name, f.hash)).collect()
}

#[test]
fn comments_blank_lines_and_eflowc_fmt_keep_every_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    eflow_compiler::analysis::collect_eflow_files(&root().join("examples"), &mut files)
        .expect("examples");
    for f in &files {
        let rel = f
            .strip_prefix(root().join("examples"))
            .expect("under examples");
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(f, &to).expect("copy");
    }
    let before = versions_of(dir.path());
    assert!(before.len() > 5, "{before:?}");
    // Every line of every file moved down, comments and blank lines added.
    for f in &files {
        let to = dir
            .path()
            .join(f.strip_prefix(root().join("examples")).expect("rel"));
        let text = std::fs::read_to_string(&to).expect("read");
        let moved: String = text
            .lines()
            .map(|l| match l {
                "" => "\n// a comment\n\n".to_string(),
                l if l.starts_with("    ") => format!("\n{l}   // why\n"),
                l => format!("{l}\n"),
            })
            .collect();
        std::fs::write(&to, format!("// A new header.\n\n\n{moved}")).expect("write");
    }
    assert_eq!(versions_of(dir.path()), before, "comments and blank lines");
    let o = eflowc(&["fmt", "."], dir.path());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(versions_of(dir.path()), before, "after eflowc fmt");
    // A retry count is behaviour: that flow alone has a new version.
    let retraining = dir.path().join("retraining.eflow");
    let text = std::fs::read_to_string(&retraining).expect("read");
    assert!(text.contains("retry 3"), "{text}");
    std::fs::write(&retraining, text.replacen("retry 3", "retry 4", 1)).expect("write");
    let after = versions_of(dir.path());
    let changed: Vec<&str> = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0.as_str())
        .collect();
    assert_eq!(changed, ["Retrain"]);
}
