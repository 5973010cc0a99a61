//! `sim`: SIMULATED compute, for demos, tests and benchmarks. Nothing is read,
//! trained or written anywhere: an attempt waits `duration`, then fails with
//! probability `failure_rate` or succeeds with a made-up output of the step's
//! output type (URIs under `sim://`). Outcomes are a pure function of the
//! binding's `seed` and the invocation's idempotency key, so a redelivered
//! invocation has the same outcome.

use std::collections::BTreeMap;

use eflow_core::StepError;
use eflow_core::hash::{fnv1a, mix64};
use eflow_ir::connector::SimConfig;
use eflow_ir::{Type, TypeDef};
use serde_json::{Map, Value, json};

/// What a simulated attempt does.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub duration_ms: u64,
    pub result: Result<Value, StepError>,
}

/// The outcome of the attempt with idempotency key `key`.
pub fn outcome(
    config: &SimConfig,
    key: &str,
    output: Option<&Type>,
    types: &BTreeMap<String, TypeDef>,
    now_ms: u64,
) -> Outcome {
    let duration_ms = config.duration_ms;
    let rate = config.failure_rate;
    let seed = config.seed as u64;
    let mut rng = Rng(fnv1a(key.bytes()) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let failed = rate > 0.0 && rng.unit() < rate;
    let result = if failed {
        Err(StepError::new(
            "SimulatedFailure",
            format!("simulated failure (failure_rate {rate})"),
        ))
    } else {
        let at = now_ms + duration_ms;
        Ok(output.map_or(Value::Null, |ty| {
            fabricate(ty, types, &mut rng, key, at, &BTreeMap::new(), 0)
        }))
    };
    Outcome {
        duration_ms,
        result,
    }
}

/// A value of type `ty`: small, plausible, labelled as simulated.
fn fabricate(
    ty: &Type,
    types: &BTreeMap<String, TypeDef>,
    rng: &mut Rng,
    key: &str,
    at_ms: u64,
    params: &BTreeMap<String, Type>,
    depth: u32,
) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    match ty {
        Type::Bool => Value::Bool(rng.next().is_multiple_of(2)),
        Type::Int => json!(rng.next() % 1000),
        Type::Float => json!((rng.unit() * 1000.0).round() / 1000.0),
        Type::String => Value::String(format!("sim://{}", key.replace(':', "/"))),
        Type::Duration => json!(1000 * (1 + rng.next() % 60)),
        Type::Timestamp => Value::String(eflow_core::time::format_rfc3339(at_ms)),
        Type::List { item } => Value::Array(
            (0..2)
                .map(|_| fabricate(item, types, rng, key, at_ms, params, depth + 1))
                .collect(),
        ),
        Type::Map { value, .. } => {
            let mut m = Map::new();
            for k in ["a", "b"] {
                m.insert(
                    k.into(),
                    fabricate(value, types, rng, key, at_ms, params, depth + 1),
                );
            }
            Value::Object(m)
        }
        Type::Optional { inner } => fabricate(inner, types, rng, key, at_ms, params, depth + 1),
        Type::Param { name } => match params.get(name) {
            Some(t) => fabricate(t, types, rng, key, at_ms, params, depth + 1),
            None => Value::Null,
        },
        Type::Enum { name } => match types.get(name) {
            Some(TypeDef::Enum { variants }) if !variants.is_empty() => {
                Value::String(variants[0].clone())
            }
            _ => Value::Null,
        },
        Type::Record { name, args } => match types.get(name) {
            Some(TypeDef::Record { generics, fields }) => {
                let bound: BTreeMap<String, Type> =
                    generics.iter().cloned().zip(args.iter().cloned()).collect();
                let mut m = Map::new();
                for f in fields {
                    m.insert(
                        f.name.clone(),
                        fabricate(&f.ty, types, rng, key, at_ms, &bound, depth + 1),
                    );
                }
                Value::Object(m)
            }
            _ => Value::Null,
        },
    }
}

/// splitmix64: a deterministic stream from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_reproducible_and_follow_the_rate() {
        let config = SimConfig {
            duration_ms: 50,
            failure_rate: 0.3,
            seed: 0,
        };
        let types = BTreeMap::new();
        let a = outcome(&config, "r:1:0", Some(&Type::Int), &types, 0);
        let b = outcome(&config, "r:1:0", Some(&Type::Int), &types, 0);
        assert_eq!(a, b);
        assert_eq!(a.duration_ms, 50);
        let failures = (0..2000)
            .filter(|i| {
                outcome(&config, &format!("r:{i}:0"), None, &types, 0)
                    .result
                    .is_err()
            })
            .count();
        assert!((450..750).contains(&failures), "{failures} of 2000 failed");
    }
}
