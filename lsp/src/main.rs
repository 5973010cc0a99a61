//! `eflow-lsp`: the eflow language server, speaking LSP over stdin and stdout.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("eflow-lsp {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match eflow_lsp::run_stdio() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eflow-lsp: {e}");
            ExitCode::FAILURE
        }
    }
}
