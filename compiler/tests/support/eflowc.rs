//! The `eflowc` binary as the tests run it: in a directory, without colour.

use std::path::Path;
use std::process::{Command, Output};

pub fn eflowc(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eflowc"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("eflowc runs")
}
