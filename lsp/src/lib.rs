//! The eflow language server: the compiler's diagnostics, types, completion and
//! navigation in editors, over the Language Server Protocol.
//!
//! [`server`] runs the main loop; [`workspace`] keeps buffers and the analysis;
//! [`ide`] answers questions about the analysis; [`handlers`] and [`convert`]
//! translate to and from the protocol.

pub mod convert;
pub mod handlers;
pub mod ide;
pub mod server;
pub mod workspace;

/// Serve over stdin and stdout until the client exits.
pub fn run_stdio() -> Result<(), String> {
    let (connection, threads) = lsp_server::Connection::stdio();
    server::run(connection)?;
    threads
        .join()
        .map_err(|e| format!("i/o thread failed: {e}"))
}
