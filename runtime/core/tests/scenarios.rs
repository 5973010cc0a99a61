//! Scenario tests: a script of events in, a transcript of effects and the final state out.
//!
//! Snapshots are inline (`expect-test`): the script and what it produced sit side
//! by side, and `UPDATE_EXPECT=1 cargo test -p eflow-core` blesses a change.

mod common;

use std::sync::OnceLock;

use common::{Driver, FLOWS, compile};
use eflow_core::{NodeState, Slot, ValidatedBundle};
use expect_test::{Expect, expect};

fn bundle() -> &'static ValidatedBundle {
    static B: OnceLock<ValidatedBundle> = OnceLock::new();
    B.get_or_init(|| compile(FLOWS))
}

fn check(flow: &str, script: &str, expect: Expect) {
    let mut d = Driver::new(bundle(), flow);
    d.script(script);
    expect.assert_eq(&d.finish());
}

#[test]
fn start_fills_defaults_and_sets_the_deadline() {
    check(
        "Pipeline",
        r#"start {"name": "n1"}"#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            = {"deadline":3601000,"input":{"name":"n1"},"last_event":"e1","nodes":[{"running":1},"pending"],"seq":1,"started_at":1000,"status":"running"}
        "#]],
    );
}

#[test]
fn start_rejects_bad_input_and_changes_nothing() {
    check(
        "Pipeline",
        r#"
        start {"name": 3, "extra": true}
        start {}
        "#,
        expect![[r#"
            > start {"name": 3, "extra": true}
              rejected: invalid input: `Pipeline` has no parameter `extra`; it takes `name`, `label`; name: expected a String, got a number
            > start {}
              rejected: invalid input: the parameter `name` has no default and must be given
            = {"nodes":["pending","pending"],"seq":0,"started_at":0,"status":"created"}
        "#]],
    );
}

#[test]
fn steps_run_in_dependency_order_and_the_result_is_evaluated() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"uri": "s3://a"}
        ok b 1 {"uri": "s3://b"}
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              set_timer timeout:b:1 at 11000
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > ok b 1 {"uri": "s3://b"}
              cancel_timer timeout:b:1
              cancel_timer deadline
              finished "succeeded"
            = {"input":{"name":"n1"},"last_event":"e3","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}}],"result":{"uri":"s3://b"},"seq":3,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn exponential_backoff_doubles_up_to_the_cap_and_attempts_run_out() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"uri": "s3://a"}
        at 2000
        fail b 1 Lost
        fire retry b 1
        at 5000
        fail b 2 Lost
        fire retry b 2
        fail b 3 Lost
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              set_timer timeout:b:1 at 11000
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > fail b 1 Lost
              cancel_timer timeout:b:1
              set_timer retry:b:1 at 3000
            > fire retry b 1
              set_timer timeout:b:2 at 12000
              invoke b#2 t.Train {"data":{"uri":"s3://a"}}
            > fail b 2 Lost
              cancel_timer timeout:b:2
              set_timer retry:b:2 at 7000
            > fire retry b 2
              set_timer timeout:b:3 at 15000
              invoke b#3 t.Train {"data":{"uri":"s3://a"}}
            > fail b 3 Lost
              cancel_timer timeout:b:3
              cancel_timer deadline
              finished "failed" {"code":"Lost","message":"`b` failed with Lost","node":"b"}
            = {"error":{"code":"Lost","message":"`b` failed with Lost","node":"b"},"input":{"name":"n1"},"last_event":"e7","nodes":[{"succeeded":{"uri":"s3://a"}},{"failed":{"code":"Lost"}}],"seq":7,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn fixed_backoff_waits_the_same_each_time() {
    check(
        "Fixed",
        r#"
        start
        fail a 1 Lost
        fire retry a 1
        at 7000
        fail a 2 Lost
        fire retry a 2
        ok a 3 {"uri": "u"}
        "#,
        expect![[r#"
            > start
              invoke a#1 t.Fetch {"name":"x"}
            > fail a 1 Lost
              set_timer retry:a:1 at 6000
            > fire retry a 1
              invoke a#2 t.Fetch {"name":"x"}
            > fail a 2 Lost
              set_timer retry:a:2 at 12000
            > fire retry a 2
              invoke a#3 t.Fetch {"name":"x"}
            > ok a 3 {"uri": "u"}
              finished "succeeded"
            = {"last_event":"e6","nodes":[{"succeeded":{"uri":"u"}}],"result":{"uri":"u"},"seq":6,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn non_retryable_errors_and_fatal_failures_fail_at_once() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"uri": "s3://a"}
        fail b 1 OutOfMemory
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              set_timer timeout:b:1 at 11000
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > fail b 1 OutOfMemory
              cancel_timer timeout:b:1
              cancel_timer deadline
              finished "failed" {"code":"OutOfMemory","message":"`b` failed with OutOfMemory","node":"b"}
            = {"error":{"code":"OutOfMemory","message":"`b` failed with OutOfMemory","node":"b"},"input":{"name":"n1"},"last_event":"e3","nodes":[{"succeeded":{"uri":"s3://a"}},{"failed":{"code":"OutOfMemory"}}],"seq":3,"started_at":1000,"status":"failed"}
        "#]],
    );
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"uri": "s3://a"}
        fail b 1 Lost fatal
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              set_timer timeout:b:1 at 11000
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > fail b 1 Lost fatal
              cancel_timer timeout:b:1
              cancel_timer deadline
              finished "failed" {"code":"Lost","message":"`b` failed with Lost","node":"b"}
            = {"error":{"code":"Lost","message":"`b` failed with Lost","node":"b"},"input":{"name":"n1"},"last_event":"e3","nodes":[{"succeeded":{"uri":"s3://a"}},{"failed":{"code":"Lost"}}],"seq":3,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn a_timed_out_attempt_is_retried_and_its_late_completion_rejected() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"uri": "s3://a"}
        at 11000
        fire timeout b 1
        ok b 1 {"uri": "late"}
        fire retry b 1
        ok b 2 {"uri": "s3://b"}
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              set_timer timeout:b:1 at 11000
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > fire timeout b 1
              cancel_step b#1
              set_timer retry:b:1 at 12000
            > ok b 1 {"uri": "late"}
              rejected: stale event: no attempt is running (waiting to retry)
            > fire retry b 1
              set_timer timeout:b:2 at 21000
              invoke b#2 t.Train {"data":{"uri":"s3://a"}}
            > ok b 2 {"uri": "s3://b"}
              cancel_timer timeout:b:2
              cancel_timer deadline
              finished "succeeded"
            = {"input":{"name":"n1"},"last_event":"e6","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}}],"result":{"uri":"s3://b"},"seq":5,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn the_flow_deadline_fails_the_run_and_cancels_what_runs() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"uri": "s3://a"}
        at 3601000
        fire deadline
        ok b 1 {"uri": "s3://b"}
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              set_timer timeout:b:1 at 11000
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > fire deadline
              cancel_timer timeout:b:1
              cancel_step b#1
              finished "failed" {"code":"DeadlineExceeded","message":"the run did not finish within its timeout of 3600000 ms"}
            > ok b 1 {"uri": "s3://b"}
              rejected: the run has finished
            = {"error":{"code":"DeadlineExceeded","message":"the run did not finish within its timeout of 3600000 ms"},"input":{"name":"n1"},"last_event":"e3","nodes":[{"succeeded":{"uri":"s3://a"}},"cancelled"],"seq":3,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn duplicates_stale_and_invalid_events_are_rejected() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        again
        ok a 1 {"uri": "s3://a"}
        again
        ok a 1 {"uri": "s3://a"}
        ok b 2 {"uri": "s3://b"}
        ok nope 1 {}
        ok b[0] 1 {}
        fire retry b 1
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > again
              rejected: duplicate event
            > ok a 1 {"uri": "s3://a"}
              set_timer timeout:b:1 at 11000
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > again
              rejected: duplicate event
            > ok a 1 {"uri": "s3://a"}
              rejected: stale event: no attempt is running (succeeded)
            > ok b 2 {"uri": "s3://b"}
              rejected: stale event: attempt 2 is over; attempt 1 is running
            > ok nope 1 {}
              rejected: invalid event: `Pipeline` has no node `nope`
            > ok b[0] 1 {}
              rejected: invalid event: `b` is not a fan-out: the event has an index
            > fire retry b 1
              rejected: stale event: `retry:b:1` is not waiting to retry attempt 1
            = {"deadline":3601000,"input":{"name":"n1"},"last_event":"e2","nodes":[{"succeeded":{"uri":"s3://a"}},{"running":1}],"seq":2,"started_at":1000,"status":"running"}
        "#]],
    );
}

#[test]
fn outputs_of_the_wrong_type_fail_the_step() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"url": "s3://a"}
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"url": "s3://a"}
              cancel_timer deadline
              finished "failed" {"code":"InvalidOutput","message":"`a` failed with InvalidOutput: output: `t.Data` has no field `url`; output.uri: expected a String, got null","node":"a"}
            = {"error":{"code":"InvalidOutput","message":"`a` failed with InvalidOutput: output: `t.Data` has no field `url`; output.uri: expected a String, got null","node":"a"},"input":{"name":"n1"},"last_event":"e2","nodes":[{"failed":{"code":"InvalidOutput","message":"output: `t.Data` has no field `url`; output.uri: expected a String, got null"}},"pending"],"seq":2,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn guards_start_one_branch_and_skip_the_other() {
    check(
        "Guarded",
        r#"
        start
        ok a 1 {"uri": "u"}
        ok s 1 {"value": 0.9}
        ok p 1 {"uri": "p"}
        "#,
        expect![[r#"
            > start
              invoke a#1 t.Fetch {"name":"x"}
            > ok a 1 {"uri": "u"}
              invoke s#1 t.Eval {"data":{"uri":"u"}}
            > ok s 1 {"value": 0.9}
              invoke p#1 t.Train {"data":{"uri":"u"}}
            > ok p 1 {"uri": "p"}
              finished "succeeded"
            = {"last_event":"e4","nodes":[{"succeeded":{"uri":"u"}},{"succeeded":{"value":0.9}},{"succeeded":{"uri":"p"}},"skipped"],"result":{"uri":"p"},"seq":4,"started_at":1000,"status":"succeeded"}
        "#]],
    );
    check(
        "Guarded",
        r#"
        start
        ok a 1 {"uri": "u"}
        ok s 1 {"value": 0.1}
        ok q 1
        "#,
        expect![[r#"
            > start
              invoke a#1 t.Fetch {"name":"x"}
            > ok a 1 {"uri": "u"}
              invoke s#1 t.Eval {"data":{"uri":"u"}}
            > ok s 1 {"value": 0.1}
              invoke q#1 t.Publish {"data":{"uri":"u"}}
            > ok q 1
              finished "succeeded"
            = {"last_event":"e4","nodes":[{"succeeded":{"uri":"u"}},{"succeeded":{"value":0.1}},"skipped",{"succeeded":null}],"seq":4,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn approvals_are_requested_and_decided() {
    check(
        "Approved",
        r#"
        start
        ok a 1 {"uri": "u"}
        ok d 1 {"approved": true, "outcome": "Approved", "reviewer": "ann", "decided_at": "2025-01-01T00:00:00Z"}
        "#,
        expect![[r#"
            > start
              invoke a#1 t.Fetch {"name":"x"}
            > ok a 1 {"uri": "u"}
              request_approval d#1 {"approvers":[],"expires_after":604800000,"subject":{"uri":"u"},"summary":"ok?"}
            > ok d 1 {"approved": true, "outcome": "Approved", "reviewer": "ann", "decided_at": "2025-01-01T00:00:00Z"}
              finished "succeeded"
            = {"last_event":"e3","nodes":[{"succeeded":{"uri":"u"}},{"succeeded":{"approved":true,"decided_at":"2025-01-01T00:00:00Z","outcome":"Approved","reviewer":"ann"}}],"result":true,"seq":3,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn waits_set_a_timer_and_wake_with_the_time() {
    check(
        "Waiting",
        r#"
        start {"d": 60000}
        ok w 1 "2025-01-01T00:00:00Z"
        at 61000
        fire wait w 1
        "#,
        expect![[r#"
            > start {"d": 60000}
              set_timer wait:w:1 at 61000
            > ok w 1 "2025-01-01T00:00:00Z"
              rejected: invalid event: `w` is a wait step: it completes when its timer fires
            > fire wait w 1
              finished "succeeded"
            = {"input":{"d":60000},"last_event":"e3","nodes":[{"succeeded":"1970-01-01T00:01:01Z"}],"result":"1970-01-01T00:01:01Z","seq":2,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn waiting_until_wakes_at_the_moment_or_at_once_when_past() {
    check(
        "WaitingUntil",
        r#"start {"t": "1970-01-01T00:00:00.500Z"}"#,
        expect![[r#"
            > start {"t": "1970-01-01T00:00:00.500Z"}
              finished "succeeded"
            = {"input":{"t":"1970-01-01T00:00:00.500Z"},"last_event":"e1","nodes":[{"succeeded":"1970-01-01T00:00:01Z"}],"result":"1970-01-01T00:00:01Z","seq":1,"started_at":1000,"status":"succeeded"}
        "#]],
    );
    check(
        "WaitingUntil",
        r#"
        start {"t": "1970-01-01T02:00:00+01:00"}
        at 3600000
        fire wait w 1
        "#,
        expect![[r#"
            > start {"t": "1970-01-01T02:00:00+01:00"}
              set_timer wait:w:1 at 3600000
            > fire wait w 1
              finished "succeeded"
            = {"input":{"t":"1970-01-01T02:00:00+01:00"},"last_event":"e2","nodes":[{"succeeded":"1970-01-01T01:00:00Z"}],"result":"1970-01-01T01:00:00Z","seq":2,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn fan_out_all_respects_parallel_and_keeps_input_order() {
    check(
        "FanAll",
        r#"
        start {"names": ["x", "y", "z"]}
        ok xs[1] 1 {"uri": "y"}
        ok xs[2] 1 {"uri": "z"}
        ok xs[0] 1 {"uri": "x"}
        "#,
        expect![[r#"
            > start {"names": ["x", "y", "z"]}
              invoke xs[0]#1 t.Fetch {"name":"x"}
              invoke xs[1]#1 t.Fetch {"name":"y"}
            > ok xs[1] 1 {"uri": "y"}
              store_result xs[1] {"uri":"y"}
              invoke xs[2]#1 t.Fetch {"name":"z"}
            > ok xs[2] 1 {"uri": "z"}
              store_result xs[2] {"uri":"z"}
            > ok xs[0] 1 {"uri": "x"}
              store_result xs[0] {"uri":"x"}
              set_timer fan_out:xs:3 at 1000
            > (fires fan_out:xs:3)
              (loads the results of xs)
              finished "succeeded"
            = {"input":{"names":["x","y","z"]},"last_event":"e5","nodes":[{"results":3}],"result":[{"uri":"x"},{"uri":"y"},{"uri":"z"}],"seq":5,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn fan_out_all_fails_on_the_first_failure_and_cancels_the_rest() {
    check(
        "FanAll",
        r#"
        start {"names": ["x", "y", "z"]}
        fail xs[1] 1 NotFound
        "#,
        expect![[r#"
            > start {"names": ["x", "y", "z"]}
              invoke xs[0]#1 t.Fetch {"name":"x"}
              invoke xs[1]#1 t.Fetch {"name":"y"}
            > fail xs[1] 1 NotFound
              cancel_step xs[0]#1
              finished "failed" {"code":"NotFound","message":"`xs` failed with NotFound: child 1 failed","node":"xs"}
            = {"error":{"code":"NotFound","message":"`xs` failed with NotFound: child 1 failed","node":"xs"},"input":{"names":["x","y","z"]},"last_event":"e2","nodes":[{"failed":{"code":"NotFound","message":"child 1 failed"}}],"seq":2,"started_at":1000,"status":"failed","stopped":{"xs":{"failed":0,"len":3,"low":0,"next":2,"succeeded":0}}}
        "#]],
    );
}

#[test]
fn fan_out_over_an_empty_list_succeeds_at_once_for_all() {
    check(
        "FanAll",
        r#"start {"names": []}"#,
        expect![[r#"
            > start {"names": []}
              finished "succeeded"
            = {"input":{"names":[]},"last_event":"e1","nodes":[{"results":0}],"result":[],"seq":1,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn fan_out_any_takes_the_first_success_and_cancels_the_rest() {
    check(
        "FanAny",
        r#"
        start {"names": ["x", "y", "z"]}
        fail x[0] 1 NotFound
        ok x[2] 1 {"uri": "z"}
        ok x[1] 1 {"uri": "y"}
        "#,
        expect![[r#"
            > start {"names": ["x", "y", "z"]}
              invoke x[0]#1 t.Fetch {"name":"x"}
              invoke x[1]#1 t.Fetch {"name":"y"}
              invoke x[2]#1 t.Fetch {"name":"z"}
            > fail x[0] 1 NotFound
            > ok x[2] 1 {"uri": "z"}
              cancel_step x[1]#1
              finished "succeeded"
            > ok x[1] 1 {"uri": "y"}
              rejected: the run has finished
            = {"input":{"names":["x","y","z"]},"last_event":"e3","nodes":[{"succeeded":{"uri":"z"}}],"result":{"uri":"z"},"seq":3,"started_at":1000,"status":"succeeded"}
        "#]],
    );
    check(
        "FanAny",
        r#"
        start {"names": ["x", "y"]}
        fail x[0] 1 NotFound
        fail x[1] 1 NotFound
        "#,
        expect![[r#"
            > start {"names": ["x", "y"]}
              invoke x[0]#1 t.Fetch {"name":"x"}
              invoke x[1]#1 t.Fetch {"name":"y"}
            > fail x[0] 1 NotFound
            > fail x[1] 1 NotFound
              finished "failed" {"code":"JoinFailed","message":"`x` failed with JoinFailed: every child failed; child 1 with NotFound","node":"x"}
            = {"error":{"code":"JoinFailed","message":"`x` failed with JoinFailed: every child failed; child 1 with NotFound","node":"x"},"input":{"names":["x","y"]},"last_event":"e3","nodes":[{"failed":{"code":"JoinFailed","message":"every child failed; child 1 with NotFound"}}],"seq":3,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn fan_out_at_least_fails_when_k_is_unreachable() {
    check(
        "FanAtLeast",
        r#"
        start {"names": ["x", "y", "z"]}
        fail xs[0] 1 NotFound fatal
        fail xs[1] 1 Lost
        fire retry xs[1] 1
        fail xs[1] 2 Lost
        "#,
        expect![[r#"
            > start {"names": ["x", "y", "z"]}
              invoke xs[0]#1 t.Fetch {"name":"x"}
              invoke xs[1]#1 t.Fetch {"name":"y"}
              invoke xs[2]#1 t.Fetch {"name":"z"}
            > fail xs[0] 1 NotFound fatal
            > fail xs[1] 1 Lost
              set_timer retry:xs[1]:1 at 2000
            > fire retry xs[1] 1
              invoke xs[1]#2 t.Fetch {"name":"y"}
            > fail xs[1] 2 Lost
              cancel_step xs[2]#1
              finished "failed" {"code":"JoinFailed","message":"`xs` failed with JoinFailed: 2 of 3 children failed: at least 2 had to succeed","node":"xs"}
            = {"error":{"code":"JoinFailed","message":"`xs` failed with JoinFailed: 2 of 3 children failed: at least 2 had to succeed","node":"xs"},"input":{"names":["x","y","z"]},"last_event":"e5","nodes":[{"failed":{"code":"JoinFailed","message":"2 of 3 children failed: at least 2 had to succeed"}}],"seq":5,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn fan_out_at_least_succeeds_with_the_successful_outputs_in_order() {
    check(
        "FanAtLeast",
        r#"
        start {"names": ["x", "y", "z"]}
        ok xs[2] 1 {"uri": "z"}
        fail xs[1] 1 NotFound fatal
        ok xs[0] 1 {"uri": "x"}
        "#,
        expect![[r#"
            > start {"names": ["x", "y", "z"]}
              invoke xs[0]#1 t.Fetch {"name":"x"}
              invoke xs[1]#1 t.Fetch {"name":"y"}
              invoke xs[2]#1 t.Fetch {"name":"z"}
            > ok xs[2] 1 {"uri": "z"}
              store_result xs[2] {"uri":"z"}
            > fail xs[1] 1 NotFound fatal
            > ok xs[0] 1 {"uri": "x"}
              store_result xs[0] {"uri":"x"}
              set_timer fan_out:xs:3 at 1000
            > (fires fan_out:xs:3)
              (loads the results of xs)
              finished "succeeded"
            = {"input":{"names":["x","y","z"]},"last_event":"e5","nodes":[{"results":2}],"result":[{"uri":"x"},{"uri":"z"}],"seq":5,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn subflow_fan_out_starts_children_and_joins_their_results() {
    check(
        "Parent",
        r#"
        start {"names": ["x", "y"]}
        child xs[0] 1 ok {"uri": "x"}
        child xs[1] 1 ok {"uri": "y"}
        "#,
        expect![[r#"
            > start {"names": ["x", "y"]}
              start_child r1.xs.0.1 Child {"name":"x"}
              start_child r1.xs.1.1 Child {"name":"y"}
            > child xs[0] 1 ok {"uri": "x"}
              store_result xs[0] {"uri":"x"}
            > child xs[1] 1 ok {"uri": "y"}
              store_result xs[1] {"uri":"y"}
              set_timer fan_out:xs:2 at 1000
            > (fires fan_out:xs:2)
              (loads the results of xs)
              finished "succeeded"
            = {"input":{"names":["x","y"]},"last_event":"e4","nodes":[{"results":2}],"result":[{"uri":"x"},{"uri":"y"}],"seq":4,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn a_subflow_call_times_out_and_cancels_its_child() {
    check(
        "CallOne",
        r#"
        start
        at 61000
        fire timeout c 1
        child c 1 ok {"uri": "late"}
        "#,
        expect![[r#"
            > start
              set_timer timeout:c:1 at 61000
              start_child r1.c.1 Child {"name":"x"}
            > fire timeout c 1
              cancel_child r1.c.1
              finished "failed" {"code":"Timeout","message":"`c` failed with Timeout: attempt 1 took longer than 60000 ms","node":"c"}
            > child c 1 ok {"uri": "late"}
              rejected: the run has finished
            = {"error":{"code":"Timeout","message":"`c` failed with Timeout: attempt 1 took longer than 60000 ms","node":"c"},"last_event":"e2","nodes":[{"failed":{"code":"Timeout","message":"attempt 1 took longer than 60000 ms"}}],"seq":2,"started_at":1000,"status":"failed"}
        "#]],
    );
}

#[test]
fn a_child_run_notifies_its_parent() {
    let parent = eflow_core::Parent {
        run: "p1".into(),
        node: "xs".into(),
        index: Some(3),
        attempt: 1,
    };
    let mut d = Driver::new(bundle(), "Child").child(parent.clone());
    d.script(
        r#"
        start {"name": "n"}
        ok a 1 {"uri": "u"}
        "#,
    );
    expect![[r#"
        > start {"name": "n"}
          set_timer deadline at 86401000
          invoke a#1 t.Fetch {"name":"n"}
        > ok a 1 {"uri": "u"}
          cancel_timer deadline
          finished "succeeded"
          notify_parent p1/xs[3]#1 {"status":"succeeded","output":{"uri":"u"}}
        = {"input":{"name":"n"},"last_event":"e2","nodes":[{"succeeded":{"uri":"u"}}],"parent":{"attempt":1,"index":3,"node":"xs","run":"p1"},"result":{"uri":"u"},"seq":2,"started_at":1000,"status":"succeeded"}
    "#]].assert_eq(&d.finish());
    let mut d = Driver::new(bundle(), "Child").child(parent);
    d.script(r#"start {"name": 7}"#);
    expect![[r#"
        > start {"name": 7}
          finished "failed" {"code":"InvalidInput","message":"name: expected a String, got a number"}
          notify_parent p1/xs[3]#1 {"status":"failed","error":{"code":"InvalidInput","message":"name: expected a String, got a number"}}
        = {"error":{"code":"InvalidInput","message":"name: expected a String, got a number"},"last_event":"e1","nodes":["pending"],"parent":{"attempt":1,"index":3,"node":"xs","run":"p1"},"seq":1,"started_at":1000,"status":"failed"}
    "#]].assert_eq(&d.finish());
}

#[test]
fn cancellation_cancels_children_and_timers() {
    check(
        "Parent",
        r#"
        start {"names": ["x", "y"]}
        child xs[0] 1 ok {"uri": "x"}
        cancel by ann
        child xs[1] 1 ok {"uri": "y"}
        cancel again
        "#,
        expect![[r#"
            > start {"names": ["x", "y"]}
              start_child r1.xs.0.1 Child {"name":"x"}
              start_child r1.xs.1.1 Child {"name":"y"}
            > child xs[0] 1 ok {"uri": "x"}
              store_result xs[0] {"uri":"x"}
            > cancel by ann
              cancel_child r1.xs.1.1
              finished "cancelled" {"code":"Cancelled","message":"by ann"}
            > child xs[1] 1 ok {"uri": "y"}
              rejected: the run has finished
            > cancel again
              rejected: the run has finished
            = {"error":{"code":"Cancelled","message":"by ann"},"input":{"names":["x","y"]},"last_event":"e3","nodes":[{"fan_out":{"failed":1,"len":2,"low":2,"next":2,"succeeded":1}}],"seq":3,"started_at":1000,"status":"cancelled"}
        "#]],
    );
}

#[test]
fn an_output_larger_than_a_value_may_be_is_refused_before_it_is_logged() {
    use eflow_core::apply::refuse_oversized;
    use eflow_core::{Event, EventKind};
    use serde_json::json;

    let mut limited = bundle().clone();
    limited.limits.value_bytes = 10_000;
    let b = &limited;
    let limit = b.limits.value_bytes;
    let mut d = Driver::new(b, "Pipeline");
    d.script(r#"start {"name": "n1"}"#);
    let completed = |node: &str, output: serde_json::Value| {
        Event::new(
            "e2",
            EventKind::StepCompleted {
                node: node.into(),
                index: None,
                attempt: 1,
                output,
                output_ref: None,
            },
        )
    };
    let small = completed("a", json!({"uri": "s3://x"}));
    assert_eq!(refuse_oversized(b, &d.run, &small), None, "kept as it is");
    // Larger than the state limit is fine: it is kept by reference.
    let big = completed("a", json!({"uri": "x".repeat(b.limits.state_bytes)}));
    assert_eq!(
        refuse_oversized(
            &{
                let mut b = bundle().clone();
                b.limits.value_bytes = 1 << 20;
                b
            },
            &d.run,
            &big
        ),
        None,
        "kept, by reference"
    );

    let huge = completed("a", json!({"uri": "x".repeat(limit)}));
    let size = eflow_core::state::encoded_size(&json!({"uri": "x".repeat(limit)}));
    let refused = refuse_oversized(b, &d.run, &huge).expect("refused");
    assert_eq!(
        refused.id, "e2",
        "the same id, so a redelivery is a duplicate"
    );
    match refused.kind {
        EventKind::StepFailed {
            node,
            attempt,
            error,
            retryable,
            ..
        } => {
            assert_eq!((node.as_str(), attempt, retryable), ("a", 1, false));
            assert_eq!(error.code, "ValueTooLarge");
            assert!(
                error.message.contains(&format!("is {size} bytes"))
                    && error.message.contains(&format!("{limit} bytes")),
                "{}",
                error.message
            );
        }
        other => panic!("a failure, not {other:?}"),
    }

    // A step that declares no output keeps none: its huge answer becomes `null`.
    let mut g = Driver::new(b, "Guarded");
    g.script("start {}");
    let publish = completed("q", json!("x".repeat(limit + 1)));
    let kept = refuse_oversized(b, &g.run, &publish).expect("rewritten");
    assert!(
        matches!(&kept.kind, EventKind::StepCompleted { output, .. } if output.is_null()),
        "{kept:?}"
    );
}

/// The state limit is on what a run keeps inline: a large input and large
/// outputs are kept by reference and do not count; small outputs that add up
/// past it do, and the failure names the step.
#[test]
fn the_state_limit_counts_inline_outputs_not_values_kept_by_reference() {
    let mut limited = bundle().clone();
    limited.limits.state_bytes = 3_000;
    let mut d = Driver::new(&limited, "Pipeline");
    let name = "n".repeat(100_000);
    d.script(&format!(r#"start {{"name": "{name}"}}"#));
    let small = "u".repeat(1_800);
    d.script(&format!(
        r#"ok a 1 {{"uri": "{small}"}}
        ok b 1 {{"uri": "{small}"}}"#
    ));
    let log = d.finish();
    assert!(
        log.contains("StateTooLarge") && log.contains("the output of `b`"),
        "the second output passes the limit, the first alone did not: {}",
        &log[log.len().saturating_sub(600)..]
    );
    assert!(
        log.contains("invoke b#1") && log.contains("store_value"),
        "the first output was kept, and the 100 KB input by reference"
    );
}

/// Values past `INLINE_BYTES` leave the state: an input, an output and the
/// result are each stored once (`store_value`) and named by hash; a later
/// transition that reads one the engine has not loaded asks for it
/// (`Needs`), as after a restart, and gets the same value.
#[test]
fn large_values_are_kept_by_reference_and_loaded_when_read() {
    let b = bundle();
    let data = format!(r#"{{"uri": "{}"}}"#, "d".repeat(3_000));
    let mut d = Driver::new(b, "Guarded");
    d.script(&format!(
        r#"start {{}}
        ok a 1 {data}
        ok s 1 {{"value": 0.9}}
        ok p 1 {data}"#
    ));
    let log = d.finish();
    let lines: Vec<&str> = log.lines().collect();
    // `a`'s output is stored once, when it arrives; `Eval` reads it in that
    // same transition, so nothing is loaded then.
    let stores: Vec<&&str> = lines.iter().filter(|l| l.contains("store_value")).collect();
    // `p`'s output and the run's result are the same value: one hash, stored once.
    assert_eq!(stores.len(), 1, "{stores:?}");
    assert!(
        stores[0].contains("(3010 bytes, 1 fields)"),
        "{}",
        stores[0]
    );
    let NodeState::Single(Slot::Stored(a)) = &d.run.nodes[0] else {
        panic!("a is stored")
    };
    assert_eq!(
        d.run.result_ref.as_ref(),
        Some(a),
        "content-addressed: the same value, the same hash"
    );
    // `s` completes in a later transition: `Train` reads `a`, which the
    // driver has stored but not loaded, so the transition asks for it.
    let at_s = lines.iter().position(|l| l.starts_with("> ok s")).unwrap();
    assert!(
        lines[at_s + 1].starts_with("  (loads the value sha256:"),
        "{}",
        lines[at_s + 1]
    );
    assert!(
        lines[at_s..]
            .iter()
            .any(|l| l.starts_with("  invoke p#1") && l.contains(&"d".repeat(3_000))),
        "Train gets the loaded value itself"
    );
    // The final state names the values, and is small.
    assert!(matches!(d.run.nodes[0], NodeState::Single(Slot::Stored(_))));
    assert!(
        d.run.result.is_none() && d.run.result_ref.is_some(),
        "the result is kept by reference too"
    );
    assert!(
        d.run.encoded_size() < 1_000,
        "{} bytes",
        d.run.encoded_size()
    );
}

/// `join at_least k` with `k` from a parameter: read once, as the fan-out starts.
#[test]
fn at_least_reads_k_from_a_parameter() {
    check(
        "FanNeed",
        r#"start {"names": ["x", "y", "z"], "need": 2}
           ok xs[0] 1 {"uri": "x"}
           fail xs[1] 1 NotFound fatal
           ok xs[2] 1 {"uri": "z"}"#,
        expect![[r#"
            > start {"names": ["x", "y", "z"], "need": 2}
              invoke xs[0]#1 t.Fetch {"name":"x"}
              invoke xs[1]#1 t.Fetch {"name":"y"}
              invoke xs[2]#1 t.Fetch {"name":"z"}
            > ok xs[0] 1 {"uri": "x"}
              store_result xs[0] {"uri":"x"}
            > fail xs[1] 1 NotFound fatal
            > ok xs[2] 1 {"uri": "z"}
              store_result xs[2] {"uri":"z"}
              set_timer fan_out:xs:3 at 1000
            > (fires fan_out:xs:3)
              (loads the results of xs)
              finished "succeeded"
            = {"input":{"names":["x","y","z"],"need":2},"last_event":"e5","nodes":[{"results":2}],"result":[{"uri":"x"},{"uri":"z"}],"seq":5,"started_at":1000,"status":"succeeded"}
        "#]],
    );
    check(
        "FanNeed",
        r#"start {"names": ["x", "y"], "need": 3}"#,
        expect![[r#"
            > start {"names": ["x", "y"], "need": 3}
              finished "failed" {"code":"JoinFailed","message":"`xs` failed with JoinFailed: there are 2 children: at least 3 had to succeed","node":"xs"}
            = {"error":{"code":"JoinFailed","message":"`xs` failed with JoinFailed: there are 2 children: at least 3 had to succeed","node":"xs"},"input":{"names":["x","y"],"need":3},"last_event":"e1","nodes":[{"failed":{"code":"JoinFailed","message":"there are 2 children: at least 3 had to succeed"}}],"seq":1,"started_at":1000,"status":"failed"}
        "#]],
    );
    check(
        "FanNeed",
        r#"start {"names": ["x"], "need": 0}"#,
        expect![[r#"
            > start {"names": ["x"], "need": 0}
              finished "failed" {"code":"EvalError","message":"`xs` failed with EvalError: `join at_least k` needs k ≥ 1, got 0","node":"xs"}
            = {"error":{"code":"EvalError","message":"`xs` failed with EvalError: `join at_least k` needs k ≥ 1, got 0","node":"xs"},"input":{"names":["x"],"need":0},"last_event":"e1","nodes":[{"failed":{"code":"EvalError","message":"`join at_least k` needs k ≥ 1, got 0"}}],"seq":1,"started_at":1000,"status":"failed"}
        "#]],
    );
}

/// The log keeps a large value as its reference, and the logged event is a
/// faithful event: applied to the run as it was, with the value loaded, it
/// makes the same transition.
#[test]
fn a_logged_event_names_large_values_by_reference_and_applies_the_same() {
    use eflow_core::apply::as_logged;
    use eflow_core::{Event, EventKind, Values, apply};
    use serde_json::json;
    use std::sync::Arc;

    let b = bundle();
    let f = b.flow("Pipeline").unwrap();
    let run = eflow_core::Run::new("r1", "acme", f.flow, None);
    let big = "n".repeat(5_000);
    let start = Event::new(
        "s",
        EventKind::Started {
            input: json!({"name": big, "label": "small"})
                .as_object()
                .unwrap()
                .clone(),
            input_refs: Default::default(),
        },
    );
    let t = apply(b, &run, &start, 1_000, &Values::default()).unwrap();
    let logged = as_logged(&start, &t);
    let EventKind::Started { input, input_refs } = &logged.kind else {
        panic!("{logged:?}")
    };
    assert_eq!(
        input.keys().collect::<Vec<_>>(),
        ["label"],
        "the small one stays inline"
    );
    let r = input_refs
        .get("name")
        .expect("the large one by reference")
        .clone();
    assert!(serde_json::to_vec(&*logged).unwrap().len() < 500);
    // Applied again, with the value loaded: the same transition.
    let mut values = Values::default();
    assert!(matches!(
        apply(b, &run, &logged, 1_000, &values),
        Err(eflow_core::Rejection::Needs { values: v, .. }) if v == [r.hash.clone()]
    ));
    values.stored.insert(r.hash.clone(), Arc::new(json!(big)));
    let again = apply(b, &run, &logged, 1_000, &values).unwrap();
    assert_eq!(again.run, t.run);

    // A completion with a large output.
    let done = Event::new(
        "a1",
        EventKind::StepCompleted {
            node: "a".into(),
            index: None,
            attempt: 1,
            output: json!({"uri": "u".repeat(3_000)}),
            output_ref: None,
        },
    );
    let t2 = apply(b, &t.run, &done, 2_000, &values).unwrap();
    let logged = as_logged(&done, &t2);
    let EventKind::StepCompleted {
        output,
        output_ref: Some(o),
        ..
    } = &logged.kind
    else {
        panic!("{logged:?}")
    };
    assert!(output.is_null());
    values
        .stored
        .insert(o.hash.clone(), Arc::new(json!({"uri": "u".repeat(3_000)})));
    let again = apply(b, &t.run, &logged, 2_000, &values).unwrap();
    assert_eq!(again.run, t2.run);
    // A small output is logged as it came.
    let small = Event::new(
        "a1",
        EventKind::StepCompleted {
            node: "a".into(),
            index: None,
            attempt: 1,
            output: json!({"uri": "s3://x"}),
            output_ref: None,
        },
    );
    let t3 = apply(b, &t.run, &small, 2_000, &values).unwrap();
    assert_eq!(*as_logged(&small, &t3), small);
}
