//! Evaluation of IR expressions over a run's values, with the language's semantics.
//!
//! Values are borrowed from the run and the IR where possible: most expressions
//! are a parameter or a node output with a path, and copying whole records for
//! each lookup would dominate `apply`. Every failure is an `EvalError` value;
//! the IR was validated, but the values come from outside.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use eflow_ir::{BinOp, Expr, Flow};
use serde_json::{Map, Value};

use crate::state::{NodeState, Run, Slot, ValueRef, Values};
use crate::time::{format_rfc3339, parse_rfc3339};
use crate::value::kind_of;

/// What an expression can see.
pub struct Scope<'a> {
    pub flow: &'a Flow,
    /// Node id → position in `flow.nodes` and `run.nodes`.
    pub nodes: &'a HashMap<String, usize>,
    pub run: &'a Run,
    /// The current element, inside a fan-out; a `repeat`'s latest output
    /// (`null` before its first iteration).
    pub item: Option<&'a Value>,
    /// What the state refers to but does not hold (joined lists).
    pub values: &'a Values,
    /// Values the transition in the making kept by reference, by hash.
    pub kept: &'a HashMap<String, Arc<Value>>,
    /// What an expression read that `values` lacks: the caller loads it and
    /// evaluates again.
    pub needs: &'a RefCell<BTreeSet<Need>>,
}

/// Something the state refers to that an evaluation needed and `Values` lacked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The joined list of a decided fan-out, by node id.
    Results(String),
    /// A value kept by reference, by hash.
    Value(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub String);

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Res<'a> = Result<Cow<'a, Value>, EvalError>;

fn err<T>(msg: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(msg.into()))
}

static NULL: Value = Value::Null;
static NO_RESULTS: Value = Value::Array(Vec::new());

/// A value kept by reference, from `values`, or a `Need` for it.
fn stored<'a>(scope: &Scope<'a>, r: &ValueRef, name: &str) -> Result<&'a Value, EvalError> {
    match scope
        .values
        .stored
        .get(&r.hash)
        .or_else(|| scope.kept.get(&r.hash))
    {
        Some(v) => Ok(&**v),
        None => {
            scope.needs.borrow_mut().insert(Need::Value(r.hash.clone()));
            err(format!("the value of `{name}` is not loaded"))
        }
    }
}

pub fn eval<'a>(expr: &'a Expr, scope: &Scope<'a>) -> Res<'a> {
    match expr {
        Expr::Literal(v) => Ok(Cow::Borrowed(v)),
        Expr::Param { name, path } => {
            let v = match scope.run.input.get(name) {
                Some(v) => v,
                None => match scope.run.input_refs.get(name) {
                    Some(r) => stored(scope, r, name)?,
                    None => match scope.flow.params.iter().find(|p| &p.name == name) {
                        Some(p) => p.default.as_ref().unwrap_or(&NULL),
                        None => return err(format!("the flow has no parameter `{name}`")),
                    },
                },
            };
            follow(Cow::Borrowed(v), path, name)
        }
        Expr::Node { id, path } => {
            let Some(&i) = scope.nodes.get(id) else {
                return err(format!("the flow has no step `{id}`"));
            };
            let v = match scope.run.nodes.get(i) {
                Some(NodeState::Single(Slot::Succeeded(v))) => &**v,
                Some(NodeState::Single(Slot::Stored(r))) => stored(scope, r, id)?,
                Some(NodeState::Single(Slot::Results(0))) => &NO_RESULTS,
                Some(NodeState::Single(Slot::Results(_))) => match scope.values.results.get(id) {
                    Some(v) => &**v,
                    None => {
                        scope.needs.borrow_mut().insert(Need::Results(id.clone()));
                        return err(format!("the results of `{id}` are not loaded"));
                    }
                },
                Some(NodeState::Skipped) => &NULL,
                _ => return err(format!("`{id}` has not finished")),
            };
            follow(Cow::Borrowed(v), path, id)
        }
        Expr::Item { path } => match scope.item {
            Some(v) => follow(Cow::Borrowed(v), path, "the fan-out item"),
            None => err("the fan-out item is used outside a fan-out"),
        },
        Expr::Run { field } => {
            let r = scope.run;
            let s = match field.as_str() {
                "id" => r.id.clone(),
                "tenant" => r.tenant.clone(),
                "flow" => r.flow.clone(),
                "version" => r.version.clone(),
                "started_at" => format_rfc3339(r.started_at),
                other => return err(format!("`run` has no field `{other}`")),
            };
            Ok(Cow::Owned(Value::String(s)))
        }
        Expr::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for x in items {
                out.push(eval(x, scope)?.into_owned());
            }
            Ok(Cow::Owned(Value::Array(out)))
        }
        Expr::Map(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let key = match eval(k, scope)?.as_ref() {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return err(format!("a map key cannot be {}", kind_of(other))),
                };
                out.insert(key, eval(v, scope)?.into_owned());
            }
            Ok(Cow::Owned(Value::Object(out)))
        }
        Expr::Record { fields, .. } => {
            let mut out = Map::new();
            for (k, v) in fields {
                out.insert(k.clone(), eval(v, scope)?.into_owned());
            }
            Ok(Cow::Owned(Value::Object(out)))
        }
        Expr::Not(e) => match eval(e, scope)?.as_ref() {
            Value::Bool(b) => Ok(Cow::Owned(Value::Bool(!b))),
            other => err(format!("`not` needs a Bool, got {}", kind_of(other))),
        },
        Expr::Neg(e) => {
            let v = eval(e, scope)?;
            let n = match v.as_ref() {
                Value::Number(n) => n,
                other => return err(format!("`-` needs a number, got {}", kind_of(other))),
            };
            let out = if let Some(i) = n.as_i64().and_then(i64::checked_neg) {
                Value::from(i)
            } else if let Some(f) = n.as_f64() {
                Value::from(-f)
            } else {
                return err("`-` overflowed");
            };
            Ok(Cow::Owned(out))
        }
        Expr::Binary { op, left, right } => binary(*op, left, right, scope),
    }
}

/// Reads `path` from `v`: fields of objects; reading through `null` gives `null`,
/// which is how the language's optional values (and skipped steps) behave.
fn follow<'a>(mut v: Cow<'a, Value>, path: &[String], what: &str) -> Res<'a> {
    for field in path {
        v = match v {
            Cow::Borrowed(Value::Object(m)) => Cow::Borrowed(m.get(field).unwrap_or(&NULL)),
            Cow::Borrowed(Value::Null) => return Ok(Cow::Borrowed(&NULL)),
            Cow::Owned(Value::Object(mut m)) => Cow::Owned(m.remove(field).unwrap_or(Value::Null)),
            Cow::Owned(Value::Null) => return Ok(Cow::Owned(Value::Null)),
            other => {
                return err(format!(
                    "cannot read `.{field}` of {what}: it is {}",
                    kind_of(&other)
                ));
            }
        };
    }
    Ok(v)
}

fn as_bool(v: &Value, op: &str) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => err(format!("`{op}` needs Bools, got {}", kind_of(other))),
    }
}

fn binary<'a>(op: BinOp, left: &'a Expr, right: &'a Expr, scope: &Scope<'a>) -> Res<'a> {
    let b = |x: bool| Ok(Cow::Owned(Value::Bool(x)));
    match op {
        BinOp::Coalesce => {
            let l = eval(left, scope)?;
            if l.is_null() {
                eval(right, scope)
            } else {
                Ok(l)
            }
        }
        BinOp::Or => {
            if as_bool(eval(left, scope)?.as_ref(), "or")? {
                return b(true);
            }
            b(as_bool(eval(right, scope)?.as_ref(), "or")?)
        }
        BinOp::And => {
            if !as_bool(eval(left, scope)?.as_ref(), "and")? {
                return b(false);
            }
            b(as_bool(eval(right, scope)?.as_ref(), "and")?)
        }
        BinOp::Eq => b(equal(
            eval(left, scope)?.as_ref(),
            eval(right, scope)?.as_ref(),
        )),
        BinOp::Ne => b(!equal(
            eval(left, scope)?.as_ref(),
            eval(right, scope)?.as_ref(),
        )),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let l = eval(left, scope)?;
            let r = eval(right, scope)?;
            let ord = compare(&l, &r)?;
            b(match op {
                BinOp::Lt => ord == Ordering::Less,
                BinOp::Le => ord != Ordering::Greater,
                BinOp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            })
        }
    }
}

/// Structural equality where `1 == 1.0`, as `Int` flows into `Float`.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// Numbers (durations are integer milliseconds) and timestamps (as instants) are ordered.
fn compare(a: &Value, b: &Value) -> Result<Ordering, EvalError> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(i), Some(j)) = (x.as_i64(), y.as_i64()) {
                return Ok(i.cmp(&j));
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => match p.partial_cmp(&q) {
                    Some(o) => Ok(o),
                    None => err("cannot order NaN"),
                },
                _ => err("cannot compare these numbers"),
            }
        }
        (Value::String(x), Value::String(y)) => match (parse_rfc3339(x), parse_rfc3339(y)) {
            (Some(p), Some(q)) => Ok(p.cmp(&q)),
            _ => err(format!(
                "only numbers, durations and timestamps are ordered; cannot order {x:?} and {y:?}"
            )),
        },
        _ => err(format!("cannot order {} and {}", kind_of(a), kind_of(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn e(v: Value) -> Expr {
        serde_json::from_value(v).unwrap()
    }

    fn empty_flow() -> Flow {
        serde_json::from_value(json!({
            "name": "F", "module": "m", "hash": "", "params": [
                {"name": "t", "type": {"kind": "float"}, "default": 0.8}
            ],
            "nodes": [], "conditions": [], "types": {}, "contracts": {}, "bindings": {},
            "source_map": {"flow": {"file": "f", "line": 1, "column": 1}}
        }))
        .unwrap()
    }

    fn run_eval(x: Value) -> Result<Value, EvalError> {
        let flow = empty_flow();
        let mut run = Run::new("r1", "acme", &flow, None);
        std::sync::Arc::make_mut(&mut run.input)
            .insert("p".into(), json!({"a": {"b": 3}, "n": null}));
        run.started_at = 1_700_000_000_000;
        let nodes = HashMap::new();
        let values = Values::default();
        let needs = RefCell::default();
        let scope = Scope {
            flow: &flow,
            nodes: &nodes,
            run: &run,
            item: None,
            values: &values,
            kept: &HashMap::new(),
            needs: &needs,
        };
        eval(&e(x), &scope).map(Cow::into_owned)
    }

    #[test]
    fn semantics() {
        let ok = |x: Value| run_eval(x).unwrap();
        assert_eq!(
            ok(json!({"param": {"name": "p", "path": ["a", "b"]}})),
            json!(3)
        );
        assert_eq!(
            ok(json!({"param": {"name": "p", "path": ["n", "x"]}})),
            json!(null)
        );
        assert_eq!(ok(json!({"param": {"name": "t"}})), json!(0.8));
        assert_eq!(
            ok(
                json!({"binary": {"op": "coalesce", "left": {"param": {"name": "p", "path": ["n"]}}, "right": {"literal": "x"}}})
            ),
            json!("x")
        );
        assert_eq!(
            ok(
                json!({"binary": {"op": "ge", "left": {"literal": 1}, "right": {"param": {"name": "t"}}}})
            ),
            json!(true)
        );
        assert_eq!(
            ok(json!({"binary": {"op": "eq", "left": {"literal": 1}, "right": {"literal": 1.0}}})),
            json!(true)
        );
        assert_eq!(
            ok(
                json!({"binary": {"op": "lt", "left": {"run": {"field": "started_at"}}, "right": {"literal": "2030-01-01T00:00:00+02:00"}}})
            ),
            json!(true)
        );
        assert_eq!(
            ok(
                json!({"map": [[{"literal": "Champion"}, {"literal": 90}], [{"literal": 2}, {"literal": 10}]]})
            ),
            json!({"Champion": 90, "2": 10})
        );
        assert_eq!(
            ok(
                json!({"binary": {"op": "and", "left": {"literal": false}, "right": {"literal": 7}}})
            ),
            json!(false)
        );
        assert!(
            run_eval(
                json!({"binary": {"op": "or", "left": {"literal": false}, "right": {"literal": 7}}})
            )
            .is_err()
        );
        assert!(run_eval(json!({"param": {"name": "p", "path": ["a", "b", "c"]}})).is_err());
        assert!(run_eval(json!({"node": {"id": "nope"}})).is_err());
        assert!(run_eval(json!({"item": {}})).is_err());
        assert!(
            run_eval(
                json!({"binary": {"op": "lt", "left": {"literal": "a"}, "right": {"literal": "b"}}})
            )
            .is_err()
        );
    }
}
