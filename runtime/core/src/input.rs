//! A run's input checked against its flow's parameters: one check for a run
//! being started and for a schedule being made, so that a schedule whose
//! input would be refused at its first fire is refused when it is made.

use eflow_ir::{Flow, Type};
use serde_json::{Map, Value};

use crate::value;

/// Every problem of `input` as the input of `flow`, for a person: values of
/// the wrong type, parameters the flow lacks, parameters without a default
/// that are missing.
pub fn check_input(flow: &Flow, input: &Map<String, Value>) -> Result<(), Vec<String>> {
    check_params(flow, input.iter().map(|(k, v)| (k.as_str(), v)))
}

/// `check_input` over the parameters given, however they are held: inline,
/// or loaded from values kept by reference.
pub fn check_params<'a>(
    flow: &Flow,
    given: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (name, v) in given {
        names.insert(name);
        match flow.params.iter().find(|p| p.name == name) {
            Some(p) => {
                if let Err(es) = value::check(v, &p.ty, &flow.types, name) {
                    errors.extend(es);
                }
            }
            None => errors.push(format!(
                "`{}` has no parameter `{name}`; it takes {}",
                flow.name,
                flow.params
                    .iter()
                    .map(|p| format!("`{}`", p.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    for p in &flow.params {
        if p.default.is_none()
            && !names.contains(p.name.as_str())
            && !matches!(p.ty, Type::Optional { .. })
        {
            errors.push(format!(
                "the parameter `{}` has no default and must be given",
                p.name
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
