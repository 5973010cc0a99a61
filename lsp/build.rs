//! Tells the end-to-end tests which editor tools this machine has, so a test whose
//! tool is missing is reported as ignored with the reason (`cargo test` prints
//! "ignored, `nvim` is not installed …"; nextest counts it as skipped) instead of
//! passing without having run. `tests/tools.rs` fails in CI when one is missing.
//! The probes only spawn `nvim --version` and `python3 -m venv --help`.

use std::process::{Command, Stdio};

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(eflow_has_nvim)");
    println!("cargo::rustc-check-cfg=cfg(eflow_has_python_venv)");
    // Installing a tool usually changes nothing cargo watches; PATH and PYTHON do.
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=PYTHON");
    println!("cargo::rerun-if-changed=build.rs");
    if runs("nvim", &["--version"]) {
        println!("cargo::rustc-cfg=eflow_has_nvim");
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if runs(&python, &["-m", "venv", "--help"]) {
        println!("cargo::rustc-cfg=eflow_has_python_venv");
    }
}
