//! Bounded loops (`repeat`, `docs/design/0004-bounded-loops.md`): each iteration is
//! an ordinary indexed step, the state keeps only the previous iteration's output,
//! and the loop ends when `until` holds or at its bound, with the last output.

mod common;

use std::sync::OnceLock;

use common::{Driver, compile};
use eflow_core::ValidatedBundle;
use expect_test::{Expect, expect};

const LOOPS: &str = r#"
record Score { value: Float }

remote step Refine(previous: Score?, start: Float) -> Score raises Diverged

flow Tune(target: Float = 0.9) -> Score {
    let best = repeat s at_most 3 {
        Refine(previous: s, start: 0.5)
    } until s.value >= target
        retry 2
        backoff fixed(1s)
        timeout 10s
    return best
}

flow Always() -> Score {
    let r = repeat s at_most 2 {
        Refine(previous: s, start: 0.1)
    }
    return r
}

record Blob { data: String }

remote step Grow(previous: Blob?) -> Blob

flow Big() -> Blob {
    let b = repeat g at_most 4 {
        Grow(previous: g)
    }
    return b
}

flow Round(previous: Score?) -> Score {
    let x = Refine(previous: previous, start: 0.2)
    return x
}

flow Rounds() -> Score {
    let r = repeat s at_most 2 {
        Round(previous: s)
    } until s.value > 1.0
    return r
}
"#;

fn bundle() -> &'static ValidatedBundle {
    static B: OnceLock<ValidatedBundle> = OnceLock::new();
    B.get_or_init(|| compile(LOOPS))
}

fn check(flow: &str, script: &str, expect: Expect) {
    let mut d = Driver::new(bundle(), flow);
    d.script(script);
    expect.assert_eq(&d.finish());
}

#[test]
fn each_iteration_gets_the_previous_output_and_until_ends_the_loop() {
    check(
        "Tune",
        r#"
        start {}
        ok best[0] 1 {"value": 0.5}
        ok best[1] 1 {"value": 0.95}
        "#,
        expect![[r#"
            > start {}
              set_timer timeout:best[0]:1 at 11000
              invoke best[0]#1 t.Refine {"previous":null,"start":0.5}
            > ok best[0] 1 {"value": 0.5}
              cancel_timer timeout:best[0]:1
              set_timer timeout:best[1]:1 at 11000
              invoke best[1]#1 t.Refine {"previous":{"value":0.5},"start":0.5}
            > ok best[1] 1 {"value": 0.95}
              cancel_timer timeout:best[1]:1
              finished "succeeded"
            = {"last_event":"e3","nodes":[{"succeeded":{"value":0.95}}],"result":{"value":0.95},"seq":3,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn at_the_bound_the_loop_has_the_last_iterations_output() {
    check(
        "Tune",
        r#"
        start {}
        ok best[0] 1 {"value": 0.1}
        ok best[1] 1 {"value": 0.2}
        ok best[2] 1 {"value": 0.3}
        "#,
        expect![[r#"
            > start {}
              set_timer timeout:best[0]:1 at 11000
              invoke best[0]#1 t.Refine {"previous":null,"start":0.5}
            > ok best[0] 1 {"value": 0.1}
              cancel_timer timeout:best[0]:1
              set_timer timeout:best[1]:1 at 11000
              invoke best[1]#1 t.Refine {"previous":{"value":0.1},"start":0.5}
            > ok best[1] 1 {"value": 0.2}
              cancel_timer timeout:best[1]:1
              set_timer timeout:best[2]:1 at 11000
              invoke best[2]#1 t.Refine {"previous":{"value":0.2},"start":0.5}
            > ok best[2] 1 {"value": 0.3}
              cancel_timer timeout:best[2]:1
              finished "succeeded"
            = {"last_event":"e4","nodes":[{"succeeded":{"value":0.3}}],"result":{"value":0.3},"seq":4,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn the_state_keeps_only_the_previous_output() {
    check(
        "Tune",
        r#"
        start {}
        ok best[0] 1 {"value": 0.1}
        ok best[1] 1 {"value": 0.2}
        "#,
        expect![[r#"
            > start {}
              set_timer timeout:best[0]:1 at 11000
              invoke best[0]#1 t.Refine {"previous":null,"start":0.5}
            > ok best[0] 1 {"value": 0.1}
              cancel_timer timeout:best[0]:1
              set_timer timeout:best[1]:1 at 11000
              invoke best[1]#1 t.Refine {"previous":{"value":0.1},"start":0.5}
            > ok best[1] 1 {"value": 0.2}
              cancel_timer timeout:best[1]:1
              set_timer timeout:best[2]:1 at 11000
              invoke best[2]#1 t.Refine {"previous":{"value":0.2},"start":0.5}
            = {"last_event":"e3","nodes":[{"repeat":{"iteration":2,"last":{"value":0.2},"slot":{"running":1}}}],"seq":3,"started_at":1000,"status":"running"}
        "#]],
    );
}

#[test]
fn retries_and_timeouts_are_per_iteration_and_old_iterations_are_stale() {
    check(
        "Tune",
        r#"
        start {}
        ok best[0] 1 {"value": 0.1}
        fail best[1] 1 Lost
        fire retry best[1] 1
        ok best[0] 1 {"value": 0.7}
        fire timeout best[1] 2
        "#,
        expect![[r#"
            > start {}
              set_timer timeout:best[0]:1 at 11000
              invoke best[0]#1 t.Refine {"previous":null,"start":0.5}
            > ok best[0] 1 {"value": 0.1}
              cancel_timer timeout:best[0]:1
              set_timer timeout:best[1]:1 at 11000
              invoke best[1]#1 t.Refine {"previous":{"value":0.1},"start":0.5}
            > fail best[1] 1 Lost
              cancel_timer timeout:best[1]:1
              set_timer retry:best[1]:1 at 2000
            > fire retry best[1] 1
              set_timer timeout:best[1]:2 at 11000
              invoke best[1]#2 t.Refine {"previous":{"value":0.1},"start":0.5}
            > ok best[0] 1 {"value": 0.7}
              rejected: stale event: that iteration of the `repeat` is not the one that is out
            > fire timeout best[1] 2
              cancel_step best[1]#2
              finished "failed" {"code":"Timeout","message":"`best` failed with Timeout: attempt 2 took longer than 10000 ms","node":"best"}
            = {"error":{"code":"Timeout","message":"`best` failed with Timeout: attempt 2 took longer than 10000 ms","node":"best"},"last_event":"e6","nodes":[{"failed":{"code":"Timeout","message":"attempt 2 took longer than 10000 ms"}}],"seq":5,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn an_event_without_the_iteration_is_invalid() {
    check(
        "Tune",
        r#"
        start {}
        ok best 1 {"value": 0.1}
        ok best[2] 1 {"value": 0.1}
        "#,
        expect![[r#"
            > start {}
              set_timer timeout:best[0]:1 at 11000
              invoke best[0]#1 t.Refine {"previous":null,"start":0.5}
            > ok best 1 {"value": 0.1}
              rejected: invalid event: `best` is a `repeat`: the event needs the iteration as its index
            > ok best[2] 1 {"value": 0.1}
              rejected: stale event: that iteration of the `repeat` is not the one that is out
            = {"last_event":"e1","nodes":[{"repeat":{"iteration":0,"slot":{"running":1}}}],"seq":1,"started_at":1000,"status":"running"}
        "#]],
    );
}

#[test]
fn without_until_the_loop_runs_its_bound() {
    check(
        "Always",
        r#"
        start {}
        ok r[0] 1 {"value": 1.0}
        ok r[1] 1 {"value": 2.0}
        "#,
        expect![[r#"
            > start {}
              invoke r[0]#1 t.Refine {"previous":null,"start":0.1}
            > ok r[0] 1 {"value": 1.0}
              invoke r[1]#1 t.Refine {"previous":{"value":1.0},"start":0.1}
            > ok r[1] 1 {"value": 2.0}
              finished "succeeded"
            = {"last_event":"e3","nodes":[{"succeeded":{"value":2.0}}],"result":{"value":2.0},"seq":3,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn a_subflow_iteration_is_a_child_run_of_its_own() {
    check(
        "Rounds",
        r#"
        start {}
        child r[0] 1 ok {"value": 0.3}
        child r[1] 1 fail Diverged
        "#,
        expect![[r#"
            > start {}
              start_child r1.r.0.1 Round {"previous":null}
            > child r[0] 1 ok {"value": 0.3}
              start_child r1.r.1.1 Round {"previous":{"value":0.3}}
            > child r[1] 1 fail Diverged
              finished "failed" {"code":"Diverged","message":"`r` failed with Diverged","node":"r"}
            = {"error":{"code":"Diverged","message":"`r` failed with Diverged","node":"r"},"last_event":"e3","nodes":[{"failed":{"code":"Diverged"}}],"seq":3,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn cancelling_the_run_cancels_the_iteration_that_is_out() {
    check(
        "Rounds",
        r#"
        start {}
        child r[0] 1 ok {"value": 0.3}
        cancel enough
        "#,
        expect![[r#"
            > start {}
              start_child r1.r.0.1 Round {"previous":null}
            > child r[0] 1 ok {"value": 0.3}
              start_child r1.r.1.1 Round {"previous":{"value":0.3}}
            > cancel enough
              cancel_child r1.r.1.1
              finished "cancelled" {"code":"Cancelled","message":"enough"}
            = {"error":{"code":"Cancelled","message":"enough"},"last_event":"e3","nodes":[{"repeat":{"iteration":1,"last":{"value":0.3},"slot":"cancelled"}}],"seq":3,"started_at":1000,"status":"cancelled"}
        "#]],
    );
}

#[test]
fn an_iteration_that_fails_for_good_fails_the_loop() {
    check(
        "Tune",
        r#"
        start {}
        fail best[0] 1 Diverged fatal
        "#,
        expect![[r#"
            > start {}
              set_timer timeout:best[0]:1 at 11000
              invoke best[0]#1 t.Refine {"previous":null,"start":0.5}
            > fail best[0] 1 Diverged fatal
              cancel_timer timeout:best[0]:1
              finished "failed" {"code":"Diverged","message":"`best` failed with Diverged","node":"best"}
            = {"error":{"code":"Diverged","message":"`best` failed with Diverged","node":"best"},"last_event":"e2","nodes":[{"failed":{"code":"Diverged"}}],"seq":2,"started_at":1000,"status":"failed"}
        "#]],
    );
}

/// Four outputs of 40 KB each: together far over the run's 64 KB state limit,
/// but the state holds one of them at a time, so the loop finishes.
#[test]
fn outputs_larger_together_than_the_state_limit_pass_through_a_loop() {
    let mut d = Driver::new(bundle(), "Big");
    d.script("start {}");
    let blob = "x".repeat(40_000);
    for i in 0..4 {
        d.step(&format!(r#"ok b[{i}] 1 {{"data": "{blob}{i}"}}"#));
        // While the loop runs (the finished run holds its result besides).
        if i < 3 {
            assert!(
                d.run.encoded_size() < 2 * 40_000,
                "iteration {i}: the state holds {} bytes",
                d.run.encoded_size()
            );
        }
    }
    assert_eq!(d.run.status, eflow_core::RunStatus::Succeeded, "{}", d.log);
    // The loop's value and the run's result are over `INLINE_BYTES`: kept by
    // reference, the same value once.
    let expected = serde_json::json!({ "data": format!("{blob}3") });
    let r = d
        .run
        .result_ref
        .clone()
        .expect("the result is kept by reference");
    assert_eq!(d.stored.get(&r.hash), Some(&expected));
    assert!(d.run.result.is_none());
}

/// Edits the named flow's JSON, reseals it, and renders what validation says.
fn validation(edit: impl FnOnce(&mut serde_json::Value), flow: &str, expect: Expect) {
    let bundle = common::compile_bundle(LOOPS);
    let mut v = serde_json::to_value(&bundle).unwrap_or_default();
    if let Some(f) = v["flows"]
        .as_array_mut()
        .and_then(|fs| fs.iter_mut().find(|f| f["name"] == flow))
    {
        edit(f);
    }
    let mut bundle: eflow_ir::Bundle = serde_json::from_value(v).expect("still a bundle");
    for f in &mut bundle.flows {
        f.seal();
    }
    let got = match eflow_core::validate(&bundle) {
        Ok(_) => "ok\n".to_string(),
        Err(es) => es.iter().map(|e| format!("{e}\n")).collect(),
    };
    expect.assert_eq(&got);
}

#[test]
fn a_hand_edited_repeat_is_refused_with_the_reason() {
    use serde_json::json;
    validation(
        |_| {},
        "Tune",
        expect![[r#"
        ok
    "#]],
    );
    validation(
        |f| f["nodes"][0]["repeat"]["max"] = json!(0),
        "Tune",
        expect![[r#"
            flows[4].nodes[0].repeat.max: a `repeat` takes 1 to 100 iterations, not 0
        "#]],
    );
    validation(
        |f| {
            f["nodes"][0]["repeat"]["max"] = json!(101);
            f["nodes"][0]["repeat"]["until"] = json!({"node": {"id": "ghost"}});
            f["nodes"][0]["fan_out"] =
                json!({"over": {"literal": []}, "item": "x", "join": {"policy": "all"}});
        },
        "Tune",
        expect![[r#"
            flows[4].nodes[0].repeat: `best` both fans out and repeats: a node does one or the other
            flows[4].nodes[0].repeat.max: a `repeat` takes 1 to 100 iterations, not 101
            flows[4].nodes[0].repeat.until: `ghost` is not a node of `Tune`
        "#]],
    );
    validation(
        |f| {
            f["nodes"][0]
                .as_object_mut()
                .map(|n| n.remove("output"))
                .map(drop)
                .unwrap_or(())
        },
        "Always",
        expect![[r#"
            flows[0].nodes[0].repeat: `r` repeats a call without an output: there is nothing to carry to the next iteration
        "#]],
    );
}
