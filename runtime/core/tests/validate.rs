//! Validation of hand-edited and hostile bundles: each mistake is reported with its path.

#![allow(clippy::unwrap_used)] // test scaffolding: the compiled bundle is known to be well formed

mod common;

use common::{FLOWS, compile_bundle, examples};
use eflow_core::validate;
use eflow_ir::Bundle;
use expect_test::{Expect, expect};
use serde_json::{Value, json};

/// Edits the named flow's JSON, reseals its hash, and renders the validation errors.
fn check(edit: impl FnOnce(&mut Value), flow: &str, reseal: bool, expect: Expect) {
    let bundle = compile_bundle(FLOWS);
    let mut v = serde_json::to_value(&bundle).unwrap();
    let flows = v["flows"].as_array_mut().unwrap();
    let f = flows.iter_mut().find(|f| f["name"] == flow).unwrap();
    edit(f);
    let mut bundle: Bundle = serde_json::from_value(v).unwrap();
    if reseal {
        for f in &mut bundle.flows {
            f.seal();
        }
    }
    let got = match validate(&bundle) {
        Ok(_) => "ok\n".to_string(),
        Err(es) => es.iter().map(|e| format!("{e}\n")).collect(),
    };
    expect.assert_eq(&got);
}

#[test]
fn compiled_bundles_and_the_examples_validate() {
    assert!(validate(&compile_bundle(FLOWS)).is_ok());
    let ex = examples();
    assert_eq!(ex.bundle().flows.len(), 13);
}

#[test]
fn version_and_hash_are_checked() {
    let mut b = compile_bundle(FLOWS);
    b.ir_version = 99;
    let errs = validate(&b).unwrap_err();
    expect![[r#"ir_version: this runtime reads IR version 2, the bundle is version 99: compile it with a matching eflowc"#]]
        .assert_eq(&errs[0].to_string());
    check(
        |f| f["params"][0]["name"] = json!("renamed"),
        "Pipeline",
        false,
        expect![[r#"
            flows[10].hash: the hash of `Pipeline` does not match its content: the IR was edited after compiling; recompile it with eflowc
            flows[10].nodes[0].inputs.name: `name` is not a parameter of `Pipeline`
        "#]],
    );
}

#[test]
fn references_must_exist() {
    check(
        |f| {
            f["nodes"][1]["depends_on"] = json!(["a", "ghost"]);
            f["nodes"][1]["inputs"]["data"] = json!({"node": {"id": "phantom"}});
            f["nodes"][0]["call"] = json!({"step": {"contract": "t.Missing"}});
        },
        "Pipeline",
        true,
        expect![[r#"
            flows[10].nodes[1].depends_on[1]: `b` depends on `ghost`, which is not a node of `Pipeline`
            flows[10].nodes[0].call: the contract `t.Missing` is not in the flow's `contracts`: recompile the bundle
            flows[10].nodes[1].inputs.data: `phantom` is not a node of `Pipeline`
        "#]],
    );
    check(
        |f| f["nodes"][0]["call"] = json!({"flow": {"name": "Nowhere"}}),
        "Parent",
        true,
        expect![[r#"
            flows[9].nodes[0].call: the subflow `Nowhere` is not in the bundle: compile the bundle with every flow it calls
        "#]],
    );
    check(
        |f| {
            f["nodes"][2]["guards"] = json!([{"condition": 7, "value": true}]);
            f["result"] = json!({"param": {"name": "nope"}});
        },
        "Guarded",
        true,
        expect![[r#"
            flows[8].nodes[2].guards[0].condition: there is no condition 7 (the flow has 1)
            flows[8].result: `nope` is not a parameter of `Guarded`
        "#]],
    );
}

#[test]
fn structure_is_checked() {
    check(
        |f| {
            f["nodes"][0]["depends_on"] = json!(["b"]);
            f["nodes"][0]["id"] = json!("a");
        },
        "Pipeline",
        true,
        expect![[r#"
            flows[10].nodes: dependency cycle among a, b: a step cannot wait for itself
        "#]],
    );
    check(
        |f| f["nodes"][1]["id"] = json!("a"),
        "Pipeline",
        true,
        expect![[r#"
            flows[10].nodes[1].id: the node id `a` is used twice: ids must be unique in a flow
            flows[10].nodes[1].depends_on[0]: `a` depends on itself
            flows[10].nodes[1].inputs.data: uses `a` without depending on it: add `a` to `depends_on`
            flows[10].result: `b` is not a node of `Pipeline`
        "#]],
    );
    check(
        |f| {
            f["nodes"][0]["fan_out"]["join"] = json!({"policy": "at_least", "k": {"literal": 0}});
            f["nodes"][0]["fan_out"]["parallel"] = json!(0);
            f["nodes"][0]["retry"] = json!({"max_attempts": 0, "backoff": {"kind": "exponential", "initial_ms": 10, "max_ms": 1}});
            f["nodes"][0]["timeout_ms"] = json!(0);
        },
        "FanAtLeast",
        true,
        expect![[r#"
            flows[5].nodes[0].fan_out.join.k: `join at_least k` needs k ≥ 1; use `join all` on an empty requirement
            flows[5].nodes[0].fan_out.parallel: `parallel` must be at least 1
            flows[5].nodes[0].retry.max_attempts: `retry N` counts all attempts and needs N ≥ 1
            flows[5].nodes[0].retry.backoff: the exponential backoff starts above its maximum: swap the two durations
            flows[5].nodes[0].timeout_ms: a step timeout must be longer than 0 ms
        "#]],
    );
    check(
        |f| f["nodes"][0]["inputs"]["name"] = json!({"item": {}}),
        "Pipeline",
        true,
        expect![[r#"
            flows[10].nodes[0].inputs.name: the item is only available in the inputs of a fan-out or a `repeat` and in its `until`
        "#]],
    );
    check(
        |f| f["params"][0]["default"] = json!(42),
        "Pipeline",
        true,
        expect![[r#"
            flows[10].params[0].default: the default does not fit its type: name: expected a String, got a number
        "#]],
    );
}

#[test]
fn subflow_recursion_is_rejected() {
    check(
        |f| {
            f["nodes"][0]["call"] = json!({"flow": {"name": "CallOne"}});
        },
        "Child",
        true,
        expect![[r#"
            flows[2].nodes[0].inputs.name: `a` takes no input `name`
            flows[1]: `CallOne` calls itself through its subflows: a run would never finish
        "#]],
    );
}

#[test]
fn schedules_are_checked() {
    let schedule = |cron: &str, tz: &str| json!([{"cron": cron, "timezone": tz, "overlap": "skip", "catchup": "once", "input": {}}]);
    check(
        |f| f["schedules"] = schedule("0 3 * * *", "Europe/Berlin"),
        "Fixed",
        true,
        expect![[r#"
            ok
        "#]],
    );
    check(
        |f| f["schedules"] = schedule("0 3 * * MOO", "Mars/Olympus"),
        "Fixed",
        true,
        expect![[r#"
            flows[7].schedules[0]: invalid cron expression `0 3 * * MOO`: the day-of-week field `MOO` has `MOO`: use 0–7 (0 and 7 are Sunday) or SUN–SAT
        "#]],
    );
}

/// Binds the flow's contract `name` (by its unqualified name) in `dev`.
fn bind(f: &mut Value, name: &str, binding: Value) {
    let contract = f["contracts"]
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.rsplit('.').next() == Some(name))
        .unwrap()
        .clone();
    f["bindings"]["dev"][contract] = binding;
}

#[test]
fn bindings_name_a_known_connector_with_a_valid_configuration() {
    check(
        |f| {
            bind(
                f,
                "Fetch",
                json!({"connector": "http", "config": {"url": "https://fetch.example.com", "headers": {"X-Team": "ml"}}}),
            );
            bind(
                f,
                "Train",
                json!({"connector": "sim", "config": {"duration": 10}}),
            );
        },
        "Pipeline",
        true,
        expect![[r#"
            ok
        "#]],
    );
    check(
        |f| {
            bind(
                f,
                "Fetch",
                json!({"connector": "htp", "config": {"url": "https://fetch.example.com"}}),
            );
            bind(f, "Train", json!({"connector": "kafka", "config": {}}));
        },
        "Pipeline",
        true,
        expect![[r#"
            flows[10].bindings.dev.t.Fetch: unknown connector `htp`: did you mean `http`?
            flows[10].bindings.dev.t.Train: unknown connector `kafka`: the connectors are `http`, `sim`, `registry`, `approval`
        "#]],
    );
    check(
        |f| {
            bind(f, "Fetch", json!({"connector": "http", "config": {}}));
            bind(
                f,
                "Train",
                json!({"connector": "http", "config": {"url": "https://train.example.com", "timeout": "30s"}}),
            );
        },
        "Pipeline",
        true,
        expect![[r#"
            flows[10].bindings.dev.t.Fetch: connector `http` needs `url` (where to POST the invocation)
            flows[10].bindings.dev.t.Train: `timeout` of connector `http` expects a `Duration`, found a string
        "#]],
    );
    check(
        |f| {
            bind(
                f,
                "Fetch",
                json!({"connector": "sim", "config": {"sed": 3}}),
            );
            bind(
                f,
                "Train",
                json!({"connector": "sim", "config": {"failure_rate": 1.5}}),
            );
        },
        "Pipeline",
        true,
        expect![[r#"
            flows[10].bindings.dev.t.Fetch: connector `sim` has no setting `sed`: did you mean `seed`?
            flows[10].bindings.dev.t.Train: invalid `failure_rate` of connector `sim`: 1.5 is not a probability between 0 and 1
        "#]],
    );
    check(
        |f| {
            bind(
                f,
                "Train",
                json!({"connector": "registry", "config": {"kind": "model"}}),
            )
        },
        "Pipeline",
        true,
        expect![[r#"
            flows[10].bindings.dev.t.Train: connector `registry` cannot carry out `t.Train`, a remote step: use `http` or `sim`
        "#]],
    );
}
