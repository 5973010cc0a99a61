//! `approval`: a person decides. An approval step costs one row, written with
//! the transition that asks for it, until a reviewer decides through the API or
//! CLI (`service`), or its `expires_after` passes: then a timer row completes
//! it with outcome `Expired`.
//!
//! Who may decide is fixed when the approval is asked for: the binding's
//! `approvers` and the step's own `approvers` input, stored with the request
//! (the service checks the deciding token's name against them). The binding's
//! `channel` is shown to reviewers.

use eflow_core::{Event, EventKind, slot_id, step_label};
use serde_json::{Value, json};

use eflow_ir::connector::ApprovalConfig;

use super::Attempt;
use crate::engine::stored_json;
use crate::store::ApprovalWrite;

/// The timer that ends an undecided approval.
#[derive(Debug)]
pub struct Expiry {
    pub timer: String,
    pub due_at: u64,
    pub event: Event,
}

/// Who may decide: the binding's approvers, then the step's own, each once.
/// Empty: anyone with a token of the tenant.
pub fn approvers(
    config: Option<&ApprovalConfig>,
    inputs: &serde_json::Map<String, Value>,
) -> Vec<String> {
    let mut all: Vec<String> = config.map(|c| c.approvers.clone()).unwrap_or_default();
    for a in inputs
        .get("approvers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !all.iter().any(|x| x == a) {
            all.push(a.to_string());
        }
    }
    all
}

/// The approval row for an attempt, and its expiry if the step has one.
pub fn request(
    a: &Attempt<'_>,
    config: Option<&ApprovalConfig>,
    now: u64,
) -> (ApprovalWrite, Option<Expiry>) {
    let expires_at = a
        .inputs
        .get("expires_after")
        .and_then(Value::as_u64)
        .map(|ms| now.saturating_add(ms));
    let request = json!({
        "inputs": a.inputs,
        "key": a.key,
        "approvers": approvers(config, a.inputs),
        "channel": config.and_then(|c| c.channel.clone()),
    });
    let write = ApprovalWrite {
        run: a.run.to_string(),
        step: step_label(a.node, a.index),
        attempt: a.attempt,
        tenant: a.tenant.to_string(),
        contract: a.contract.to_string(),
        request: stored_json(&request),
        requested_at: now,
        expires_at,
    };
    let expiry = expires_at.map(|at| {
        let slot = slot_id(a.node, a.index, a.attempt);
        let output = json!({
            "approved": false,
            "outcome": "Expired",
            "reviewer": null,
            "comment": null,
            "decided_at": eflow_core::time::format_rfc3339(at),
        });
        Expiry {
            timer: format!("approval:{slot}"),
            due_at: at,
            event: Event::new(
                format!("expired:{slot}"),
                EventKind::StepCompleted {
                    node: a.node.to_string(),
                    index: a.index,
                    attempt: a.attempt,
                    output,
                    output_ref: None,
                },
            ),
        }
    });
    (write, expiry)
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    /// The inputs an approval request stores.
    fn stored_inputs(w: &ApprovalWrite) -> Map<String, Value> {
        let v: Value = serde_json::from_slice(&w.request).unwrap_or_default();
        v["inputs"].as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn approvers_are_the_bindings_then_the_steps_each_once() {
        let config = ApprovalConfig {
            approvers: vec!["lead@x".into(), "ops@x".into()],
            channel: None,
        };
        let mut inputs = Map::new();
        inputs.insert("approvers".into(), json!(["ops@x", "me@x"]));
        assert_eq!(
            approvers(Some(&config), &inputs),
            ["lead@x", "ops@x", "me@x"]
        );
        assert!(approvers(None, &Map::new()).is_empty());
    }

    #[test]
    fn a_request_with_expires_after_gets_its_expiry() {
        let mut inputs = Map::new();
        inputs.insert("summary".into(), json!("Register?"));
        inputs.insert("expires_after".into(), json!(60_000));
        let a = Attempt {
            run: "r1",
            tenant: "acme",
            bundle: "b1",
            node: "approve",
            index: None,
            attempt: 1,
            contract: "std/approval.Approve",
            inputs: &inputs,
            key: "r1:4:0",
        };
        let (write, expiry) = request(&a, None, 1_000);
        assert_eq!(write.expires_at, Some(61_000));
        assert_eq!(stored_inputs(&write), inputs);
        let expiry = expiry.expect("an expiry");
        assert_eq!(expiry.due_at, 61_000);
        assert_eq!(
            expiry.timer,
            format!("approval:{}", slot_id("approve", None, 1))
        );
        let mut without = inputs.clone();
        without.remove("expires_after");
        let (write, expiry) = request(
            &Attempt {
                inputs: &without,
                ..a
            },
            None,
            1_000,
        );
        assert_eq!(write.expires_at, None);
        assert!(expiry.is_none());
    }
}
