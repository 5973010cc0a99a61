//! Fuzzes the whole front end: parse, check, emit and format arbitrary text.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run check` in `fuzz/` (see fuzz/README.md).
#![no_main]

use std::path::PathBuf;

use eflow_compiler::analysis::{Analysis, Loader};
use libfuzzer_sys::fuzz_target;

/// Imports resolve to nothing: the fuzzer must not read the disk.
struct NoFiles;

impl Loader for NoFiles {
    fn read(&self, _: &std::path::Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let a = Analysis::from_texts(vec![(PathBuf::from("/fuzz/input.eflow"), text.to_string())], &NoFiles);
    let diags = a.diagnostics();
    if !a.has_errors() {
        let _ = eflow_compiler::lower::emit(&a, None);
    }
    let _ = eflow_compiler::diagnostics::render::render(
        eflow_compiler::diagnostics::render::Format::Human,
        &diags,
        &a.sources,
        &Default::default(),
    );
    if let Ok(formatted) = eflow_compiler::fmt::format_source(text) {
        // Formatting is idempotent and keeps the text parseable.
        let again = eflow_compiler::fmt::format_source(&formatted).expect("formatted text parses");
        assert_eq!(again, formatted, "formatting is idempotent");
    }
});
