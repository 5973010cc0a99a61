//! Invariants the code base writes down, checked (rust-analyzer's `tidy` is the
//! model): what a newcomer reads in STYLE and ARCHITECTURE stays true.
//!
//! - every Rust source file opens with a `//!` line saying what it holds;
//! - every keyword of the language reaches both editor grammars;
//! - nothing stored or sent is serialised with `unwrap_or_default()`, which would
//!   silently write an empty body instead of failing;
//! - the web console (`runtime/src/ui/`) reads no store: it calls `Service`.
//!
//! (That every diagnostic code is triggered by a test and explained by an example
//! that produces it is checked beside the codes, in `compiler/tests/codes.rs`.)

use std::path::{Path, PathBuf};

use eflow_tests::repo;

/// The folders of Rust code, from the repository's root.
const RUST_ROOTS: &[&str] = &["ir", "compiler", "lsp", "runtime", "tests", "fuzz"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            // Build output and fuzzing corpora hold no source of ours.
            if name != "target" && name != "corpus" && name != "artifacts" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for root in RUST_ROOTS {
        rust_files(&repo().join(root), &mut files);
    }
    files.sort();
    assert!(files.len() > 50, "found the sources: {}", files.len());
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_source_file_says_what_it_holds() {
    let missing: Vec<String> = all_rust_files()
        .iter()
        .filter(|p| !read(p).starts_with("//!"))
        .map(|p| relative(p))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` line saying what they hold: {missing:#?}"
    );
}

/// The language's keywords, as the lexer's `KEYWORDS` list gives them.
fn keywords() -> Vec<String> {
    let lexer = read(&repo().join("compiler/src/syntax/lexer.rs"));
    let start = lexer
        .find("pub const KEYWORDS: &[&str] = &[")
        .expect("the lexer's KEYWORDS list");
    let body = &lexer[start..];
    let end = body.find("];").expect("the end of KEYWORDS");
    let words: Vec<String> = body[..end]
        .lines()
        .skip(1)
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            l.strip_prefix('"')?.strip_suffix('"').map(str::to_owned)
        })
        .collect();
    assert!(words.len() > 30, "read the keywords: {words:?}");
    words
}

/// Whether `word` appears in `text` as a whole word.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

#[test]
fn every_keyword_reaches_the_editor_grammars() {
    let grammars = [
        "editors/vscode/syntaxes/eflow.tmLanguage.json",
        "editors/nvim/syntax/eflow.vim",
    ];
    let mut missing = Vec::new();
    for grammar in grammars {
        let text = read(&repo().join(grammar));
        for word in keywords() {
            if !has_word(&text, &word) {
                missing.push(format!("{grammar}: `{word}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keywords missing from the editor grammars: {missing:#?}"
    );
}

#[test]
fn nothing_stored_is_serialised_with_unwrap_or_default() {
    let mut found = Vec::new();
    for path in all_rust_files() {
        let rel = relative(&path);
        // The runtime stores and sends; the compiler and the tests do neither.
        if !(rel.starts_with("runtime/src") || rel.starts_with("runtime/core/src")) {
            continue;
        }
        let text = read(&path);
        // A module's unit tests read what they wrote; only the code above them counts.
        let text = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        // Join a statement's lines so a chain split over several lines is seen.
        let flat = text.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        for (at, _) in flat.match_indices(".unwrap_or_default()") {
            let before = &flat[flat[..at].rfind(';').map_or(0, |i| i + 1)..at];
            if [
                "to_vec(",
                "to_string(",
                "to_writer(",
                "from_slice(",
                "from_str(",
                "from_value(",
            ]
            .iter()
            .any(|f| before.contains(&format!("serde_json::{f}")))
            {
                let tail = before.char_indices().rev().nth(80).map_or(0, |(i, _)| i);
                found.push(format!("{rel}: …{}", before[tail..].trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "serde_json results dropped with unwrap_or_default() (an empty body written or read \
         instead of an error): {found:#?}"
    );
}

/// The web console shows what the API would answer, authorized the same way:
/// it calls `Service`, never a store, the engine or the history directly.
#[test]
fn the_console_reads_no_store() {
    let mut found = Vec::new();
    for path in all_rust_files() {
        let rel = relative(&path);
        if !rel.starts_with("runtime/src/ui/") {
            continue;
        }
        let text = read(&path);
        for needle in [
            "crate::store",
            "crate::engine",
            ".store()",
            ".engine()",
            ".history()",
            "sqlx",
        ] {
            if text.contains(needle) {
                found.push(format!("{rel}: {needle}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the console must go through `Service`, as the API does: {found:#?}"
    );
}
