//! Check + compile of generated workspaces of 2,000 flows (51,000 lines) and 4,000
//! flows (104,000 lines), as `eflowc compile` does them (the IR's JSON written to a
//! sink instead of a file), and re-checking one edited 2,000-line file.
//!
//! `cargo bench -p eflow-compiler --bench check`

use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use eflow_compiler::analysis::{Analysis, FsLoader};
use eflow_compiler::ir;

#[path = "support/workload.rs"]
mod workload;

/// Writes the workspace once; returns its directory and the big file's path.
fn workspace(modules: usize) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("eflow-bench-{}-{modules}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("shared.eflow"), workload::SHARED).expect("write");
    let mut lines = 0;
    for i in 0..modules {
        let text = workload::module(i);
        lines += text.lines().count();
        std::fs::write(dir.join(format!("m{i:05}.eflow")), text).expect("write");
    }
    let big = dir.join("big.eflow");
    let text = workload::big_module(40);
    std::fs::write(&big, &text).expect("write");
    eprintln!(
        "workspace: {modules} modules, {} flows, {lines} lines in modules + {} in big.eflow",
        modules * 2,
        text.lines().count()
    );
    (dir, big)
}

/// What `eflowc compile DIR -o FILE` does, but for writing the file. The analysis
/// and the IR are returned, to be freed outside the measurement: `eflowc` exits
/// without freeing them.
fn compile(dir: &Path) -> (Analysis, ir::SealedBundle) {
    let a = Analysis::from_paths(&[dir.to_path_buf()], &FsLoader).expect("analyse");
    assert!(!a.has_errors(), "{:?}", a.diagnostics().first());
    let ir = eflow_compiler::lower::emit_sealed(&a, None).expect("emit");
    ir.write_json(&mut std::io::sink()).expect("write");
    (a, ir)
}

fn bench(c: &mut Criterion) {
    // 1,000 modules of two flows each: 2,000 flows.
    let (dir, big) = workspace(1000);
    let (dir_2000, _) = workspace(2000);
    let mut g = c.benchmark_group("compiler");
    g.sample_size(10);
    g.bench_function("check+compile 2,000 flows", |b| {
        b.iter_batched(|| (), |()| compile(&dir), BatchSize::PerIteration)
    });
    g.bench_function("check+compile 4,000 flows", |b| {
        b.iter_batched(|| (), |()| compile(&dir_2000), BatchSize::PerIteration)
    });
    let _ = std::fs::remove_dir_all(&dir_2000);
    let mut a = Analysis::from_paths(std::slice::from_ref(&dir), &FsLoader).expect("analyse");
    let file = a
        .sources
        .find_path(&std::fs::canonicalize(&big).expect("path"))
        .expect("big file loaded");
    let original = a.sources.get(file).text.clone();
    let mut n = 0u64;
    g.sample_size(50);
    g.bench_function("re-check one edited 2,000-line file", |b| {
        b.iter(|| {
            // An edit inside a flow body: a different threshold default.
            n += 1;
            let edited = original.replacen(
                "threshold: Float = 0.8",
                &format!("threshold: Float = 0.{}", n % 9 + 1),
                1,
            );
            a.update(file, edited, &FsLoader);
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
