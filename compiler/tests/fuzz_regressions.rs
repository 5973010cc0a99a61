//! Inputs the fuzzer (`fuzz/`) found crashes with, kept so they stay fixed: each
//! file under `tests/fuzz_regressions/` goes through parse, check, emit, render and
//! format without a panic.

use std::path::{Path, PathBuf};

use eflow_compiler::analysis::{Analysis, Loader};
use eflow_compiler::diagnostics::render::{Format, RenderOptions, render};

struct NoFiles;

impl Loader for NoFiles {
    fn read(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
}

#[test]
fn fuzz_findings_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("regression dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let a = Analysis::from_texts(
            vec![(PathBuf::from("/fuzz/input.eflow"), text.clone())],
            &NoFiles,
        );
        let diags = a.diagnostics();
        if !a.has_errors() {
            let _ = eflow_compiler::lower::emit(&a, None);
        }
        for format in [Format::Human, Format::Json, Format::Sarif, Format::Github] {
            let _ = render(format, &diags, &a.sources, &RenderOptions::default());
        }
        if let Ok(formatted) = eflow_compiler::fmt::format_source(&text) {
            assert_eq!(
                eflow_compiler::fmt::format_source(&formatted),
                Ok(formatted.clone()),
                "{}: formatting is idempotent",
                f.display()
            );
        }
    }
}
