//! Snapshot tests: every `.eflow` file under `tests/corpus/` is checked; its
//! diagnostics are compared with `<file>.diagnostics`, and for files under `ok/`
//! (which must have no errors) the IR with `<file>.ir.json`. Run with
//! `EFLOW_BLESS=1` to write the snapshots after reviewing a change.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use eflow_compiler::analysis::{Analysis, FsLoader};
use eflow_compiler::diagnostics::{Code, Diagnostic, Fix};
use eflow_compiler::ir;

fn corpus_files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eflow"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {}", root.display());
    files
}

/// A plain, stable rendering: one block per diagnostic.
fn plain(a: &Analysis, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let src = a.sources.get(d.primary.file);
        let lc = src.line_col(d.primary.span.start);
        let _ = writeln!(
            out,
            "{}[{}] {}:{}:{}: {}",
            d.severity.as_str(),
            d.code,
            file_name(&src.name),
            lc.line,
            lc.col,
            d.message
        );
        if !d.primary.message.is_empty() {
            let _ = writeln!(
                out,
                "  label: {} `{}`",
                d.primary.message,
                src.snippet(d.primary.span)
            );
        }
        for s in &d.secondary {
            let ss = a.sources.get(s.file);
            let lc = ss.line_col(s.span.start);
            let _ = writeln!(
                out,
                "  note {}:{}:{}: {}",
                file_name(&ss.name),
                lc.line,
                lc.col,
                s.message
            );
        }
        if let Some(h) = &d.help {
            let _ = writeln!(out, "  help: {h}");
        }
        for f in &d.fixes {
            let _ = writeln!(out, "  fix: {}", f.title);
        }
    }
    out
}

fn file_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn compare(path: &Path, actual: &str) {
    if std::env::var_os("EFLOW_BLESS").is_some() {
        std::fs::write(path, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        panic!(
            "snapshot {} differs (EFLOW_BLESS=1 to update)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

fn analyze(path: &Path) -> Analysis {
    Analysis::from_paths(&[path.to_path_buf()], &FsLoader).expect("corpus file is readable")
}

#[test]
fn invalid_files_report_the_expected_diagnostics() {
    for file in corpus_files("err") {
        let a = analyze(&file);
        let diags = a.diagnostics();
        assert!(
            diags.iter().any(Diagnostic::is_error),
            "{} should have errors",
            file.display()
        );
        compare(&file.with_extension("diagnostics"), &plain(&a, &diags));
    }
}

#[test]
fn valid_files_compile_to_the_expected_ir() {
    for file in corpus_files("ok") {
        let a = analyze(&file);
        let diags = a.diagnostics();
        assert!(
            !diags.iter().any(Diagnostic::is_error),
            "{} should compile:\n{}",
            file.display(),
            plain(&a, &diags)
        );
        compare(&file.with_extension("diagnostics"), &plain(&a, &diags));
        let sealed = eflow_compiler::lower::emit_sealed(&a, None).expect("emits");
        let bundle = &eflow_compiler::lower::emit(&a, None).expect("emits");
        // Every flow's hash matches its content.
        for f in &bundle.flows {
            assert_eq!(f.hash, f.compute_hash());
        }
        // The compact JSON kept from sealing is the bundle's canonical JSON, and
        // reads back as the same value.
        let mut compact = Vec::new();
        sealed.write_json(&mut compact).expect("writes to a Vec");
        let mut expected = serde_json::to_vec(bundle).expect("serializes");
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(&compact),
            String::from_utf8_lossy(&expected)
        );
        let back: ir::Bundle = serde_json::from_slice(&compact).expect("IR parses back");
        assert_eq!(&back, bundle);
        // The snapshot is the pretty form, to be read in review.
        let json = bundle.to_pretty_json();
        let back: ir::Bundle = serde_json::from_str(&json).expect("IR parses back");
        assert_eq!(&back, bundle);
        compare(&file.with_extension("ir.json"), &json);
    }
}

#[test]
fn examples_compile_without_diagnostics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let a = Analysis::from_paths(&[root], &FsLoader).expect("examples are readable");
    let diags = a.diagnostics();
    assert!(
        diags.is_empty(),
        "examples have diagnostics:\n{}",
        plain(&a, &diags)
    );
    let json = |a: &Analysis| {
        let mut out = Vec::new();
        let sealed = eflow_compiler::lower::emit_sealed(a, None).expect("emits");
        sealed.write_json(&mut out).expect("writes to a Vec");
        out
    };
    assert_eq!(json(&a), json(&a), "IR is canonical");
}

/// `text` with a fix's edits applied (they are disjoint: apply from the end).
fn apply(text: &str, fix: &Fix) -> String {
    let mut edits: Vec<_> = fix.edits.iter().collect();
    edits.sort_by_key(|e| std::cmp::Reverse(e.span.start));
    let mut out = text.to_string();
    for e in edits {
        out.replace_range(e.span.start as usize..e.span.end as usize, &e.text);
    }
    out
}

#[test]
fn every_fix_makes_its_diagnostic_go_away() {
    let mut fixed: Vec<Code> = Vec::new();
    for file in corpus_files("err").into_iter().chain(corpus_files("ok")) {
        let a = analyze(&file);
        for d in a.diagnostics() {
            // A did-you-mean names its replacement: it comes with the fix that
            // writes it, so the property below covers it.
            assert!(
                !d.help
                    .as_deref()
                    .is_some_and(|h| h.contains("did you mean"))
                    || !d.fixes.is_empty(),
                "{}: `{}` ({}) suggests without a fix: {:?}",
                file.display(),
                d.message,
                d.code,
                d.help
            );
            let same = |x: &Diagnostic| x.code == d.code && x.message == d.message;
            for fix in &d.fixes {
                assert!(
                    fix.edits.iter().all(|e| e.file == d.primary.file),
                    "{}: `{}` edits another file",
                    file.display(),
                    fix.title
                );
                let src = a.sources.get(d.primary.file);
                let path = src.path.clone().expect("corpus files are on disk");
                let after = Analysis::from_texts(vec![(path, apply(&src.text, fix))], &FsLoader);
                let before = a.diagnostics().iter().filter(|x| same(x)).count();
                let now = after.diagnostics().iter().filter(|x| same(x)).count();
                assert!(
                    now < before,
                    "{}: `{}` leaves `{}` ({}):\n{}",
                    file.display(),
                    fix.title,
                    d.message,
                    d.code,
                    plain(&after, &after.diagnostics())
                );
                fixed.push(d.code);
            }
        }
    }
    fixed.sort();
    fixed.dedup();
    // Every kind of fix the compiler makes is exercised.
    for code in [
        Code::Syntax,
        Code::UnknownName,
        Code::UnknownType,
        Code::UnknownCallee,
        Code::UnknownField,
        Code::MissingArgument,
        Code::UnusedImport,
    ] {
        assert!(fixed.contains(&code), "no fix for {code} in the corpus");
    }
}
