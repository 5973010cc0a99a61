//! Times the compiler's phases on a directory, for profiling:
//! `cargo run --release -p eflow-compiler --example phases -- DIR`.

use std::time::Instant;

use eflow_compiler::analysis::FileId;
use eflow_compiler::analysis::{Analysis, FsLoader};

fn main() {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/genws".into()),
    );
    let mut files = Vec::new();
    eflow_compiler::analysis::collect_eflow_files(&dir, &mut files).expect("files");
    let t = Instant::now();
    let texts: Vec<(std::path::PathBuf, String)> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(f).expect("read")))
        .collect();
    eprintln!("read      {:?}", t.elapsed());
    let t = Instant::now();
    let mut n = 0;
    for (_, text) in &texts {
        n += eflow_compiler::syntax::parse(FileId(0), text).0.items.len();
    }
    eprintln!("parse     {:?} ({n} items)", t.elapsed());
    let t = Instant::now();
    let a = Analysis::from_texts(texts, &FsLoader);
    eprintln!("analyse   {:?} (parse included)", t.elapsed());
    let mut a = a;
    // Re-check the largest file after an edit, as an editor would.
    let (file, _) = a
        .sources
        .iter()
        .max_by_key(|(_, f)| f.text.len())
        .map(|(id, f)| (id, f.text.len()))
        .expect("files");
    let text = a.sources.get(file).text.clone();
    let t = Instant::now();
    for i in 0..20 {
        a.update(file, format!("{text}\n// edit {i}\n"), &FsLoader);
    }
    eprintln!(
        "update    {:?} per edit of {} ({} lines)",
        t.elapsed() / 20,
        a.sources.get(file).name,
        text.lines().count()
    );
    let t = Instant::now();
    let b = eflow_compiler::lower::emit_sealed(&a, None).expect("emit");
    eprintln!("emit      {:?} (sealing included)", t.elapsed());
    let t = Instant::now();
    let mut json = Vec::new();
    b.write_json(&mut json).expect("write to a Vec");
    eprintln!("json      {:?} ({} bytes)", t.elapsed(), json.len());
    let t = Instant::now();
    let pretty = eflow_compiler::lower::emit(&a, None)
        .expect("emit")
        .to_pretty_json();
    eprintln!("emit+pretty {:?} ({} bytes)", t.elapsed(), pretty.len());
}
