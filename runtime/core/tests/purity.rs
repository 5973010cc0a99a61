//! The core stays pure: no async runtime, database, HTTP server or client among its dependencies.

use std::process::Command;

/// Crates that mean I/O; the engine around the core may use them, the core may not.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "sqlx",
    "axum",
    "hyper",
    "reqwest",
    "async-nats",
    "mio",
];

#[test]
fn no_io_crates_in_the_normal_dependency_tree() {
    // `cargo test` sets CARGO; outside cargo there is nothing to check against.
    let Ok(cargo) = std::env::var("CARGO") else {
        eprintln!("CARGO is not set: skipping the dependency check");
        return;
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "eflow-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("eflow-core"),
        "unexpected cargo tree output: {tree}"
    );
    let bad: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            FORBIDDEN
                .iter()
                .any(|f| name == f || name.starts_with(&format!("{f}-")))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "eflow-core must stay pure, but depends on {bad:?}"
    );
}
