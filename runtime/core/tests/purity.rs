//! The core stays pure and small: no async runtime, database, HTTP server or client,
//! and none of the compiler's front end, among its dependencies; the IR crate it
//! stands on has no front end either.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates that mean I/O; the engine around the core may use them, the core may not.
const IO: &[&str] = &[
    "tokio",
    "sqlx",
    "axum",
    "hyper",
    "reqwest",
    "async-nats",
    "mio",
];

/// The compiler and what only a front end needs: editing a diagnostic or the grammar
/// must not rebuild the core.
const FRONT_END: &[&str] = &[
    "eflow-compiler",
    "eflow-lsp",
    "pest",
    "pest_derive",
    "miette",
    "clap",
    "petgraph",
    "lsp-server",
    "lsp-types",
];

/// The core's whole normal dependency tree, packages counted once. It was 123 when
/// the core depended on the compiler; half of that is the budget.
const CORE_BUDGET: usize = 62;

/// The packages in `package`'s normal dependency tree, or `None` outside cargo.
fn tree(package: &str) -> Option<BTreeSet<String>> {
    // `cargo test` sets CARGO; outside cargo there is nothing to check against.
    let Ok(cargo) = std::env::var("CARGO") else {
        eprintln!("CARGO is not set: skipping the dependency check");
        return None;
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", package, "-e", "normal"])
        .args(["--prefix", "none", "--no-dedupe", "--format", "{p}"])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        names.contains(package),
        "unexpected cargo tree output: {names:?}"
    );
    Some(names)
}

fn forbidden<'a>(names: &'a BTreeSet<String>, list: &[&str]) -> Vec<&'a str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|name| {
            list.iter()
                .any(|f| name == f || name.starts_with(&format!("{f}-")))
        })
        .collect()
}

#[test]
fn no_io_crates_in_the_normal_dependency_tree() {
    let Some(names) = tree("eflow-core") else {
        return;
    };
    let bad = forbidden(&names, IO);
    assert!(
        bad.is_empty(),
        "eflow-core must stay pure, but depends on {bad:?}"
    );
}

#[test]
fn no_front_end_in_the_core_or_the_ir() {
    for package in ["eflow-core", "eflow-ir"] {
        let Some(names) = tree(package) else {
            return;
        };
        let bad = forbidden(&names, FRONT_END);
        assert!(
            bad.is_empty(),
            "{package} must not depend on the compiler's front end, but depends on {bad:?}"
        );
    }
}

#[test]
fn the_core_tree_stays_within_its_budget() {
    let Some(names) = tree("eflow-core") else {
        return;
    };
    assert!(
        names.len() <= CORE_BUDGET,
        "eflow-core's dependency tree has {} packages, over its budget of {CORE_BUDGET}: {names:?}",
        names.len()
    );
}
