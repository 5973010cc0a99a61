//! Connectors: how a step's work is carried out. See `docs/connectors.md`.
//!
//! - `sim`: simulated compute (always labelled as simulation);
//! - `http`: a remote system that is POSTed the invocation and calls back
//!   (in `engine::dispatch`, which owns the outbox);
//! - `registry`: the built-in metadata registry;
//! - `approval`: people decide through the API and CLI (rows written with the
//!   transition; see `engine::route` and `service`).

pub mod registry;
pub mod sim;
