//! Connectors: how a step's work is carried out, one file each. See
//! `docs/connectors.md`.
//!
//! The set is closed: `eflow_ir::connector::Connector` names every connector,
//! each binding is parsed into it once when its bundle is validated, and
//! routing (`engine::route`) and the outbox executor (`engine::dispatch`) match
//! on it exhaustively.
//!
//! - `http`: a remote system that is POSTed the invocation and calls back;
//! - `sim`: simulated compute (always labelled as simulation);
//! - `registry`: the built-in metadata registry;
//! - `approval`: people decide through the API and CLI: the row written with
//!   the transition and its expiry (decisions are taken in `service`).

use eflow_core::{Event, EventKind, StepError};
use serde_json::{Map, Value};

pub mod approval;
pub mod http;
pub mod registry;
pub mod sim;

/// One attempt of a step that a connector carries out through the outbox.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub run: &'a str,
    pub tenant: &'a str,
    /// The deployed bundle the run belongs to.
    pub bundle: &'a str,
    pub node: &'a str,
    pub index: Option<u32>,
    pub attempt: u32,
    /// Qualified contract name.
    pub contract: &'a str,
    pub inputs: &'a Map<String, Value>,
    /// The invocation's idempotency key.
    pub key: &'a str,
}

/// The event that reports an attempt's result: its output, or its error, which
/// the connector says is worth retrying or not.
pub fn result_event(
    id: String,
    node: String,
    index: Option<u32>,
    attempt: u32,
    result: Result<Value, StepError>,
    retryable: bool,
) -> Event {
    let kind = match result {
        Ok(output) => EventKind::StepCompleted {
            node,
            index,
            attempt,
            output,
            output_ref: None,
        },
        Err(error) => EventKind::StepFailed {
            node,
            index,
            attempt,
            error,
            retryable,
        },
    };
    Event::new(id, kind)
}
