//! The eflow runtime: engine, scheduler, history, stores, connectors, HTTP API
//! and the `eflow` CLI. See `ARCHITECTURE.md` and `docs/design/0002-runtime-core.md`.

pub mod api;
pub mod bench;
pub mod bulk;
pub mod bus;
pub mod byte_lru;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod connectors;
pub mod egress;
pub mod engine;
pub mod history;
pub mod metrics;
pub mod quota;
pub mod retention;
pub mod scheduler;
pub mod schema;
pub mod server;
pub mod service;
pub mod store;
pub mod ui;
