//! `registry`: the built-in metadata registry of models and datasets.
//!
//! A `call` step bound to it does one of four things, read from its inputs:
//! - **register** (`name` plus the thing, e.g. `RegisterModel(name, model, …)`):
//!   stores the next version of `name`, with its lineage: the run and step that
//!   registered it and every input it was given. The output record is built
//!   from the inputs by field name, plus `version` (the new number) and
//!   `registered_at`;
//! - **promote** (`version` record plus `stage`): moves that version to the stage;
//! - **retire** (`version` record, no `stage`): moves it to `Archived`;
//! - **look up** (`name`, optionally `stage`, nothing else): the newest version
//!   in that stage, or the error `NotFound`.
//!
//! A promote, retire or look-up records that its run and step used the
//! version (`registry_uses`): the version's lineage after its registration.
//!
//! Registration is idempotent by the invocation's idempotency key: a
//! redelivered call returns the version it registered the first time.

use std::collections::BTreeMap;

use eflow_core::{Event, StepError};
use eflow_ir::connector::RegistryConfig;
use eflow_ir::{Type, TypeDef};
use serde_json::{Map, Value};

use super::Attempt;
use crate::engine::{self, Engine};
use crate::store::{self, Store};

/// Carries out one attempt bound to the registry: its result, as the event to
/// deliver to the run. The error is the engine's (the store failed, the bundle
/// is gone); the step's own failures are in the event.
pub async fn invoke(
    engine: &Engine,
    config: &RegistryConfig,
    a: &Attempt<'_>,
    now: u64,
) -> Result<Event, engine::Error> {
    let deployed = engine.deployments().get(a.bundle).await?;
    // The contract's output type, and the types it names, from the flow that calls it.
    let flow = deployed
        .bundle
        .bundle()
        .flows
        .iter()
        .find(|f| f.contracts.contains_key(a.contract));
    let output = flow.and_then(|f| f.contracts.get(a.contract)?.output.as_ref());
    let no_types = BTreeMap::new();
    let types = flow.map_or(&no_types, |f| &f.types);
    let result = register(
        engine.store(),
        Request {
            key: a.key,
            tenant: a.tenant,
            kind: config.kind.as_str(),
            run: a.run,
            step: a.node,
            inputs: a.inputs,
            output,
            types,
            now,
        },
    )
    .await?;
    let id = format!("registry:{}", a.key);
    let (node, index, attempt) = (a.node.to_string(), a.index, a.attempt);
    Ok(super::result_event(id, node, index, attempt, result, false))
}

pub struct Request<'a> {
    pub key: &'a str,
    pub tenant: &'a str,
    pub kind: &'a str,
    pub run: &'a str,
    pub step: &'a str,
    pub inputs: &'a Map<String, Value>,
    pub output: Option<&'a Type>,
    pub types: &'a BTreeMap<String, TypeDef>,
    pub now: u64,
}

/// Records that this call used version `version` of `name` (its lineage).
async fn record_use(
    db: &Store,
    r: &Request<'_>,
    name: &str,
    version: i64,
    action: &str,
) -> store::Result<()> {
    db.record_registry_use(&store::RegistryUse {
        key: r.key,
        tenant: r.tenant,
        kind: r.kind,
        name,
        version,
        run: r.run,
        step: r.step,
        action,
        at: r.now,
    })
    .await
}

/// Carries out one registry call; the outer error is the store's, the inner the step's.
pub async fn register(store: &Store, r: Request<'_>) -> store::Result<Result<Value, StepError>> {
    let db = store;
    if let Some(Value::Object(version)) = r.inputs.get("version") {
        let (Some(name), Some(number)) = (
            version.get("name").and_then(Value::as_str),
            version.get("version").and_then(Value::as_i64),
        ) else {
            return Ok(Err(StepError::new(
                "InvalidInput",
                "`version` must be a registered version with `name` and `version`",
            )));
        };
        let stage = r.inputs.get("stage").and_then(Value::as_str);
        return Ok(
            match db
                .registry_set_stage(r.tenant, r.kind, name, number, stage.unwrap_or("Archived"))
                .await?
            {
                Some(entry) => {
                    let action = if stage.is_some() { "promote" } else { "retire" };
                    record_use(db, &r, name, number, action).await?;
                    Ok(if r.output.is_some() {
                        entry
                    } else {
                        Value::Null
                    })
                }
                None => Err(StepError::new(
                    "NotFound",
                    format!("{} `{name}` has no version {number}", r.kind),
                )),
            },
        );
    }
    let Some(name) = r.inputs.get("name").and_then(Value::as_str) else {
        return Ok(Err(StepError::new(
            "InvalidInput",
            "a registry step needs a `name` (or a `version` to change)",
        )));
    };
    let is_lookup = r.inputs.keys().all(|k| k == "name" || k == "stage");
    if is_lookup {
        let stage = r.inputs.get("stage").and_then(Value::as_str);
        let rows = db.registry(r.tenant, Some(r.kind), Some(name)).await?;
        let found = rows
            .into_iter()
            .rev()
            .find(|row| stage.is_none() || row.entry.get("stage").and_then(Value::as_str) == stage);
        return Ok(match found {
            Some(row) => {
                record_use(db, &r, name, row.version, "look_up").await?;
                Ok(row.entry)
            }
            None => Err(StepError::new(
                "NotFound",
                format!(
                    "{} `{name}` has no version{}",
                    r.kind,
                    stage.map(|s| format!(" in stage {s}")).unwrap_or_default()
                ),
            )),
        });
    }
    let fields = match r.output {
        Some(Type::Record { name, .. }) => match r.types.get(name) {
            Some(TypeDef::Record { fields, .. }) => fields.clone(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let now_text = eflow_core::time::format_rfc3339(r.now);
    let make = |version: i64| {
        let mut entry = Map::new();
        for f in &fields {
            let v = match f.name.as_str() {
                "version" => Value::from(version),
                "registered_at" => Value::String(now_text.clone()),
                other => r.inputs.get(other).cloned().unwrap_or(match &f.ty {
                    Type::Optional { .. } => Value::Null,
                    _ => Value::Null,
                }),
            };
            entry.insert(f.name.clone(), v);
        }
        Value::Object(entry)
    };
    let inputs = Value::Object(r.inputs.clone());
    let entry = store::NewEntry {
        key: r.key,
        tenant: r.tenant,
        kind: r.kind,
        name,
        run: r.run,
        step: r.step,
        inputs: &inputs,
        now: r.now,
    };
    let row = db.register(&entry, make).await?;
    Ok(Ok(row.entry))
}
