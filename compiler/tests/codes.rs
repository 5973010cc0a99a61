//! Every diagnostic code is real: a program in the corpus triggers it, and the
//! example in its explanation produces exactly that code while the fixed version
//! does not.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use eflow_compiler::diagnostics::Code;
use eflow_compiler::diagnostics::explain::explanation;
use eflow_compiler::{Analysis, FsLoader};

#[path = "support/blocks.rs"]
mod blocks;
use blocks::eflow_blocks;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Codes printed in the corpus's `.diagnostics` snapshots (`error[E0200] …`).
fn codes_in_snapshots() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for dir in ["err", "ok"] {
        let Ok(entries) = std::fs::read_dir(corpus().join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "diagnostics") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for line in text.lines() {
                    if let (Some(open), Some(close)) = (line.find('['), line.find(']'))
                        && open < close
                        && !line.starts_with(' ')
                    {
                        codes.insert(line[open + 1..close].to_owned());
                    }
                }
            }
        }
    }
    codes
}

#[test]
fn every_code_is_triggered_by_a_program_in_the_corpus() {
    let seen = codes_in_snapshots();
    // Changes between bundles are triggered by `eflowc diff`, in `diff.rs`.
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !c.is_change())
        .map(|c| c.as_str())
        .filter(|c| !seen.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "no program in compiler/tests/corpus/err triggers {missing:?}: add one (EFLOW_BLESS=1 writes its snapshot)"
    );
}

/// The module the explanations' import examples import from.
const SHARED_FEATURES: &str = "remote step Refresh() -> Int\nremote step Backfill() -> Int\n";

/// The codes `source` gets, compiled as `example.eflow` beside `shared/features.eflow`.
fn codes_of(source: &str) -> Vec<Code> {
    codes_of_bytes(source.as_bytes())
}

/// The example of E0005 is text saved as Latin-1: every character one byte.
fn latin1(source: &str) -> Vec<u8> {
    source
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("the example is Latin-1"))
        .collect()
}

fn codes_of_bytes(source: &[u8]) -> Vec<Code> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::create_dir(dir.path().join("shared")).expect("mkdir");
    std::fs::write(dir.path().join("shared/features.eflow"), SHARED_FEATURES).expect("write");
    let example = dir.path().join("example.eflow");
    std::fs::write(&example, source).expect("write");
    let a = Analysis::from_paths(&[example], &FsLoader).expect("the example is readable");
    a.diagnostics().iter().map(|d| d.code).collect()
}

/// The codes `eflowc diff` gives from `old` to `new`, each compiled alone.
fn changes(old: &str, new: &str) -> Vec<Code> {
    let side = |text: &str| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("example.eflow"), text).expect("write");
        let side =
            eflow_compiler::diff::Side::read(dir.path()).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        (dir, side)
    };
    let ((_a, old), (_b, new)) = (side(old), side(new));
    eflow_compiler::diff::report(&old, &new)
        .0
        .iter()
        .map(|d| d.code)
        .collect()
}

#[test]
fn every_explanation_example_produces_its_code_and_its_fix_does_not() {
    let mut wrong = Vec::new();
    for &code in Code::ALL {
        let blocks = eflow_blocks(explanation(code));
        let [example, fixed] = blocks.as_slice() else {
            wrong.push(format!("{code}: expected an example and a fixed version"));
            continue;
        };
        if code.is_change() {
            // The old version, then the new one: `eflowc diff` reports the code.
            let got = changes(example, fixed);
            if !got.contains(&code) {
                wrong.push(format!("{code}: the two versions give {got:?}"));
            }
            if changes(fixed, fixed).contains(&code) {
                wrong.push(format!("{code}: a version against itself gives it"));
            }
            continue;
        }
        let got = if code == Code::NotUtf8 {
            codes_of_bytes(&latin1(example))
        } else {
            codes_of(example)
        };
        if !got.contains(&code) {
            wrong.push(format!("{code}: the example gives {got:?}"));
        }
        let after = codes_of(fixed);
        if after.contains(&code) {
            wrong.push(format!(
                "{code}: the fixed version still gives it ({after:?})"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "explanations out of step with the compiler:\n{}",
        wrong.join("\n")
    );
}
