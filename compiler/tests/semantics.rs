//! The semantic model: every name resolves to the declaration the checker used.

use std::path::{Path, PathBuf};

use eflow_compiler::analysis::FileId;
use eflow_compiler::analysis::{Analysis, FsLoader};
use eflow_compiler::semantics::Def;

const SOURCE: &str = r#"from "std/ml" import Model

record Batch {
    rows: Int,
    label: String?,
}

enum Tier {
    Gold,
    Bronze,
}

remote step Load(uri: String) -> List<Batch>
remote step Score(batch: Batch, tier: Tier = Tier.Gold) -> Int raises Throttled

flow Nightly(uri: String, m: Model) -> Int {
    let batches = Load(uri: uri)
    let scores = for b in batches join all {
        Score(batch: b, tier: Tier.Bronze)
    } non_retryable Throttled
    let last = Score(batch: Batch { rows: 1, label: run.id }, tier: Tier.Gold) after scores
    return last
}
"#;

fn analyse(text: &str) -> Analysis {
    Analysis::from_texts(
        vec![(PathBuf::from("/w/main.eflow"), text.to_string())],
        &FsLoader,
    )
}

/// The offset of the `nth` (from 0) occurrence of `needle` in `SOURCE`.
fn at(needle: &str, nth: usize) -> usize {
    SOURCE
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {nth}th `{needle}`"))
        .0
}

#[test]
fn uses_resolve_to_their_declarations() {
    let a = analyse(SOURCE);
    assert!(!a.has_errors(), "{:?}", a.diagnostics());
    let model = a.semantics();
    let main = FileId(0);
    let def_at = |needle, nth| {
        model
            .definition_at(main, at(needle, nth))
            .unwrap_or_else(|| panic!("nothing at the {nth}th `{needle}`"))
            .clone()
    };
    // (a use, its declaration), each as (text, which occurrence).
    let cases = [
        (("uri", 3), ("uri", 1)),                  // a flow parameter
        (("uri: uri", 0), ("uri", 0)),             // an argument names the step's parameter
        (("batches join", 0), ("batches", 0)),     // a `let`
        (("b, tier", 0), ("b in", 0)),             // the fan-out variable
        (("Bronze", 1), ("Bronze", 0)),            // an enum value
        (("Tier.Gold", 1), ("Tier", 0)),           // an enum
        (("rows: 1", 0), ("rows", 0)),             // a record literal's field
        (("Throttled\n", 1), ("Throttled", 0)),    // an error name
        (("scores\n", 0), ("scores", 0)),          // `after`
        (("Score(batch: Batch", 1), ("Score", 0)), // a step
        (("Batch {", 1), ("Batch", 0)),            // a record
    ];
    for ((use_text, use_nth), (decl_text, decl_nth)) in cases {
        let used = def_at(use_text, use_nth);
        let declared = def_at(decl_text, decl_nth);
        assert!(!used.decl, "`{use_text}` is a use");
        assert!(declared.decl, "`{decl_text}` is a declaration");
        assert_eq!(used.def, declared.def, "`{use_text}`");
        let refs = model.references_to(&used.def);
        assert!(
            refs.iter()
                .any(|(f, r)| *f == main && r.span == declared.span && r.decl)
        );
        assert!(
            refs.iter()
                .any(|(f, r)| *f == main && r.span == used.span && !r.decl)
        );
    }
    // Names the checker typed carry their types.
    assert_eq!(
        def_at("batches join", 0).ty.map(|t| t.to_string()),
        Some("List<Batch>".into())
    );
    assert_eq!(
        def_at("b, tier", 0).ty.map(|t| t.to_string()),
        Some("Batch".into())
    );
    assert_eq!(
        def_at("last\n", 0).ty.map(|t| t.to_string()),
        Some("Int".into())
    );
    assert_eq!(def_at("id }", 0).def, Def::RunField("id".into()));
    // An import resolves to the standard library's declaration.
    let Def::Item(model_def) = def_at("Model", 1).def else {
        panic!("`Model` is an item")
    };
    assert!(a.module(model_def.file).is_std);
}

fn eflow_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            eflow_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "eflow") {
            out.push(p);
        }
    }
}

/// Rename and go to definition rely on it: in code without errors, every name
/// the user can rename has its declaration in the model.
#[test]
fn every_renamable_use_has_a_declaration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    eflow_files(&root.join("../examples"), &mut files);
    eflow_files(&root.join("tests/corpus/ok"), &mut files);
    let mut checked = 0;
    for f in files {
        let a = Analysis::from_paths(std::slice::from_ref(&f), &FsLoader).expect("readable");
        let model = a.semantics();
        for m in &a.modules {
            for r in model.resolutions(m.file) {
                if r.decl || !r.def.renamable() {
                    continue;
                }
                assert!(
                    model.references_to(&r.def).iter().any(|(_, d)| d.decl),
                    "{}: {:?} at {:?} has no declaration",
                    f.display(),
                    r.def,
                    r.span
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "only {checked} uses checked");
}
