//! The pure core of the eflow runtime: IR validation, run state, events, effects, `apply`,
//! and the decisions of the scheduler.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: the engine
//! around it loads a run, calls [`apply`] with the event and the time, and commits
//! the new state together with the effects. See `docs/design/0002-runtime-core.md`.

pub mod apply;
pub mod effect;
pub mod eval;
pub mod event;
pub mod hash;
pub mod input;
pub mod schedule;
pub mod state;
pub mod time;
pub mod validate;
pub mod value;

pub use apply::{Rejection, Transition, apply, backoff_ms};
pub use effect::{Effect, EffectKind, Timer, slot_id, step_label};
pub use event::{Event, EventKind, Outcome};
pub use state::{
    Child, FanOut, INLINE_BYTES, NodeState, Parent, Run, RunError, RunStatus, Slot, StepError,
    ValueRef, Values,
};
pub use validate::{Limits, ValidatedBundle, ValidationError, validate};
