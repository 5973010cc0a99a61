//! Runtime values and how they are checked against IR types.
//!
//! A value is a `serde_json::Value`: the IR's literals, the API's inputs and the
//! connectors' outputs are all JSON already, so the core stores them as given and
//! never converts. Records are objects, enums their variant's name, durations
//! integer milliseconds, timestamps RFC 3339 text, `none` and the output of a
//! skipped step `null`. Because the runtime never trusts a client, inputs and
//! outputs are checked against their declared type before they enter a run.

use std::collections::BTreeMap;

use eflow_ir::{Type, TypeDef};
use serde_json::Value;

use crate::time::parse_rfc3339;

/// The record and enum definitions a flow's values use, by qualified name.
pub type Types = BTreeMap<String, TypeDef>;

/// Checks `value` against `ty`; each mismatch is a message prefixed with the path
/// into the value (`spec.seed`), at most a handful so a hostile input stays cheap.
pub fn check(value: &Value, ty: &Type, types: &Types, path: &str) -> Result<(), Vec<String>> {
    let mut c = Checker {
        types,
        errors: Vec::new(),
    };
    c.check(value, ty, &Path::Root(path), 0);
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(c.errors)
    }
}

/// Enough to say what is wrong without echoing a huge hostile input back.
const MAX_ERRORS: usize = 8;
/// Deeper than any real metadata; keeps recursion bounded on hand-written IR.
const MAX_DEPTH: usize = 64;

/// Where a value sits, rendered only for an error message: checking a valid
/// value allocates nothing.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(&'a str),
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(r) => f.write_str(r),
            Path::Field(p, name) => {
                let parent = p.to_string();
                if parent.is_empty() {
                    f.write_str(name)
                } else {
                    write!(f, "{parent}.{name}")
                }
            }
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
            Path::Key(p, k) => write!(f, "{p}[{k:?}]"),
        }
    }
}

struct Checker<'a> {
    types: &'a Types,
    errors: Vec<String>,
}

impl Checker<'_> {
    fn fail(&mut self, path: &Path<'_>, msg: String) {
        if self.errors.len() < MAX_ERRORS {
            let path = path.to_string();
            let at = if path.is_empty() { "value" } else { &path };
            self.errors.push(format!("{at}: {msg}"));
        }
    }

    fn check(&mut self, v: &Value, ty: &Type, path: &Path<'_>, depth: usize) {
        if self.errors.len() >= MAX_ERRORS {
            return;
        }
        if depth > MAX_DEPTH {
            self.fail(path, "value is nested too deeply".into());
            return;
        }
        let ok = match ty {
            Type::Bool => v.is_boolean(),
            Type::Int => v.is_i64() || v.is_u64(),
            Type::Float => v.is_number(),
            Type::String => v.is_string(),
            Type::Duration => v.is_u64(),
            Type::Timestamp => v.as_str().and_then(parse_rfc3339).is_some(),
            Type::Param { .. } => true,
            Type::Optional { inner } => {
                if !v.is_null() {
                    self.check(v, inner, path, depth + 1);
                }
                true
            }
            Type::List { item } => match v.as_array() {
                Some(items) => {
                    for (i, x) in items.iter().enumerate() {
                        self.check(x, item, &Path::Index(path, i), depth + 1);
                    }
                    true
                }
                None => false,
            },
            Type::Map { key, value } => match v.as_object() {
                Some(entries) => {
                    for (k, x) in entries {
                        self.check_key(k, key, path);
                        self.check(x, value, &Path::Key(path, k), depth + 1);
                    }
                    true
                }
                None => false,
            },
            Type::Enum { name } => {
                match (self.types.get(name), v.as_str()) {
                    (Some(TypeDef::Enum { variants }), Some(s)) => {
                        if !variants.iter().any(|x| x == s) {
                            self.fail(
                            path,
                            format!("`{s}` is not a variant of `{name}`; expected one of {variants:?}"),
                        );
                        }
                        true
                    }
                    (Some(TypeDef::Enum { .. }), None) => false,
                    _ => {
                        self.fail(
                            path,
                            format!("the type `{name}` is not defined in the flow"),
                        );
                        true
                    }
                }
            }
            Type::Record { name, args } => {
                self.check_record(v, name, args, path, depth);
                true
            }
        };
        if !ok {
            self.fail(
                path,
                format!("expected {}, got {}", describe(ty), kind_of(v)),
            );
        }
    }

    fn check_key(&mut self, k: &str, ty: &Type, path: &Path<'_>) {
        let ok = match ty {
            Type::String | Type::Param { .. } => true,
            Type::Int => k.parse::<i64>().is_ok(),
            Type::Enum { name } => matches!(
                self.types.get(name),
                Some(TypeDef::Enum { variants }) if variants.iter().any(|x| x == k)
            ),
            _ => false,
        };
        if !ok {
            self.fail(
                path,
                format!("the key {k:?} is not a valid {}", describe(ty)),
            );
        }
    }

    fn check_record(
        &mut self,
        v: &Value,
        name: &str,
        args: &[Type],
        path: &Path<'_>,
        depth: usize,
    ) {
        let Some(TypeDef::Record { generics, fields }) = self.types.get(name) else {
            self.fail(
                path,
                format!("the record type `{name}` is not defined in the flow"),
            );
            return;
        };
        let Some(obj) = v.as_object() else {
            self.fail(
                path,
                format!("expected a `{name}` record, got {}", kind_of(v)),
            );
            return;
        };
        for key in obj.keys() {
            if !fields.iter().any(|f| &f.name == key) {
                self.fail(path, format!("`{name}` has no field `{key}`"));
            }
        }
        for f in fields {
            let sub = Path::Field(path, &f.name);
            let fv = obj.get(&f.name).unwrap_or(&Value::Null);
            if generics.is_empty() {
                self.check(fv, &f.ty, &sub, depth + 1);
            } else {
                let ty = substitute(&f.ty, generics, args);
                self.check(fv, &ty, &sub, depth + 1);
            }
        }
    }
}

/// `ty` with the record's type parameters replaced by its arguments; a parameter
/// without an argument stays a parameter and accepts anything.
fn substitute(ty: &Type, generics: &[String], args: &[Type]) -> Type {
    let s = |t: &Type| Box::new(substitute(t, generics, args));
    match ty {
        Type::Param { name } => generics
            .iter()
            .position(|g| g == name)
            .and_then(|i| args.get(i))
            .cloned()
            .unwrap_or_else(|| ty.clone()),
        Type::List { item } => Type::List { item: s(item) },
        Type::Map { key, value } => Type::Map {
            key: s(key),
            value: s(value),
        },
        Type::Optional { inner } => Type::Optional { inner: s(inner) },
        Type::Record { name, args: a } => Type::Record {
            name: name.clone(),
            args: a.iter().map(|t| substitute(t, generics, args)).collect(),
        },
        other => other.clone(),
    }
}

/// How a type is named in messages, close to the language's syntax.
pub fn describe(ty: &Type) -> String {
    match ty {
        Type::Bool => "a Bool".into(),
        Type::Int => "an Int".into(),
        Type::Float => "a Float (a number)".into(),
        Type::String => "a String".into(),
        Type::Duration => "a Duration (integer milliseconds)".into(),
        Type::Timestamp => "a Timestamp (RFC 3339 text)".into(),
        Type::List { item } => format!("a list of {}", strip_article(&describe(item))),
        Type::Map { key, value } => format!(
            "a map from {} to {}",
            strip_article(&describe(key)),
            strip_article(&describe(value))
        ),
        Type::Optional { inner } => format!("{} or null", describe(inner)),
        Type::Record { name, .. } => format!("a `{name}` record"),
        Type::Enum { name } => format!("a `{name}` variant name"),
        Type::Param { name } => format!("a `{name}`"),
    }
}

fn strip_article(s: &str) -> &str {
    s.strip_prefix("an ")
        .or_else(|| s.strip_prefix("a "))
        .unwrap_or(s)
}

/// The JSON kind of a value, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(n) if n.is_i64() && n.as_i64().is_some_and(|x| x < 0) => "a negative number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eflow_ir::Field;
    use serde_json::json;

    fn types() -> Types {
        let mut t = Types::new();
        t.insert(
            "m.Stage".into(),
            TypeDef::Enum {
                variants: vec!["Staging".into(), "Production".into()],
            },
        );
        t.insert(
            "m.Scored".into(),
            TypeDef::Record {
                generics: vec!["T".into()],
                fields: vec![
                    Field {
                        name: "subject".into(),
                        ty: Type::Param { name: "T".into() },
                    },
                    Field {
                        name: "note".into(),
                        ty: Type::Optional {
                            inner: Box::new(Type::String),
                        },
                    },
                ],
            },
        );
        t
    }

    #[test]
    fn records_enums_generics_and_optionals() {
        let t = types();
        let scored_stage = Type::Record {
            name: "m.Scored".into(),
            args: vec![Type::Enum {
                name: "m.Stage".into(),
            }],
        };
        assert!(check(&json!({"subject": "Staging"}), &scored_stage, &t, "x").is_ok());
        let errs = check(
            &json!({"subject": "Gone", "extra": 1}),
            &scored_stage,
            &t,
            "x",
        )
        .unwrap_err();
        assert_eq!(
            errs,
            vec![
                "x: `m.Scored` has no field `extra`",
                "x.subject: `Gone` is not a variant of `m.Stage`; expected one of [\"Staging\", \"Production\"]",
            ]
        );
        let dur_list = Type::List {
            item: Box::new(Type::Duration),
        };
        assert_eq!(
            check(&json!([1, -2]), &dur_list, &t, "d").unwrap_err(),
            vec!["d[1]: expected a Duration (integer milliseconds), got a negative number"]
        );
        assert!(check(&json!(3), &Type::Float, &t, "").is_ok());
        assert!(check(&json!(3.5), &Type::Int, &t, "").is_err());
    }
}
