//! A failed run retried (`RetryRequested`, `docs/design/0006-retrying-a-failed-run.md`):
//! it goes on from where it failed, the steps that succeeded kept, the failed
//! and cancelled ones started again as new attempts; and the retries `apply`
//! refuses, changing nothing.

mod common;

use std::sync::OnceLock;

use common::{Driver, compile};
use eflow_core::ValidatedBundle;
use expect_test::{Expect, expect};

const FLOWS: &str = r#"
from "std/approval" import Approve

record Data { uri: String }

remote step Fetch(name: String) -> Data raises NotFound
remote step Train(data: Data) -> Data raises OutOfMemory

flow Pipeline(name: String) -> Data {
    deadline 1h
    let a = Fetch(name: name)
    let b = Train(data: a)
        retry 3
        backoff exponential(1s, 3s)
        non_retryable OutOfMemory
    return b
}

flow Branches() -> Data {
    let a = Fetch(name: "a")
    let b = Fetch(name: "b")
    let c = Train(data: b)
        after a
    return c
}

flow Reviewed() -> Bool {
    let a = Fetch(name: "x")
    let d = Approve(subject: a, summary: "ok?")
        timeout 1h
    return d.approved
}

flow Child(name: String) -> Data {
    let a = Fetch(name: name)
    return a
}

flow CallOne() -> Data {
    let c = Child(name: "x")
    return c
}

flow FanAll(names: List<String>) -> List<Data> {
    let xs = for n in names join all {
        Fetch(name: n)
    }
        parallel 2
    return xs
}

flow FanAny(names: List<String>) -> Data {
    let x = for n in names join any {
        Fetch(name: n)
    }
    return x
}

flow FanBeside(names: List<String>) -> Data {
    let xs = for n in names join all {
        Fetch(name: n)
    }
    let a = Fetch(name: "solo")
    let b = Train(data: a)
        after xs
    return b
}
"#;

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
fn a_step_that_failed_after_its_retries_runs_again_and_the_run_succeeds() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"uri": "s3://a"}
        fail b 1 Flaky
        fire retry b 1
        fail b 2 Flaky
        fire retry b 2
        fail b 3 Flaky
        at 5000
        retry_run the cluster is back
        fail b 4 Flaky
        fire retry b 4
        ok b 5 {"uri": "s3://b"}
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > fail b 1 Flaky
              set_timer retry:b:1 at 2000
            > fire retry b 1
              invoke b#2 t.Train {"data":{"uri":"s3://a"}}
            > fail b 2 Flaky
              set_timer retry:b:2 at 3000
            > fire retry b 2
              invoke b#3 t.Train {"data":{"uri":"s3://a"}}
            > fail b 3 Flaky
              cancel_timer deadline
              finished "failed" {"code":"Flaky","message":"`b` failed with Flaky","node":"b"}
            > retry_run the cluster is back
              set_timer deadline at 3605000
              invoke b#4 t.Train {"data":{"uri":"s3://a"}}
            > fail b 4 Flaky
              set_timer retry:b:4 at 6000
            > fire retry b 4
              invoke b#5 t.Train {"data":{"uri":"s3://a"}}
            > ok b 5 {"uri": "s3://b"}
              cancel_timer deadline
              finished "succeeded"
            = {"attempt_base":{"b":3},"input":{"name":"n1"},"last_event":"e11","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}}],"result":{"uri":"s3://b"},"retries":1,"seq":11,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn a_step_after_the_failed_one_starts_only_after_the_retry() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        fail a 1 NotFound
        ok b 1 {"uri": "s3://b"}
        retry_run
        ok a 1 {"uri": "s3://a"}
        ok a 2 {"uri": "s3://a"}
        ok b 1 {"uri": "s3://b"}
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > fail a 1 NotFound
              cancel_timer deadline
              finished "failed" {"code":"NotFound","message":"`a` failed with NotFound","node":"a"}
            > ok b 1 {"uri": "s3://b"}
              rejected: the run has finished
            > retry_run
              set_timer deadline at 3601000
              invoke a#2 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              rejected: stale event: attempt 1 is over; attempt 2 is running
            > ok a 2 {"uri": "s3://a"}
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > ok b 1 {"uri": "s3://b"}
              cancel_timer deadline
              finished "succeeded"
            = {"attempt_base":{"a":1},"input":{"name":"n1"},"last_event":"e7","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}}],"result":{"uri":"s3://b"},"retries":1,"seq":5,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn a_run_retried_twice_numbers_its_attempts_on() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        fail a 1 NotFound
        retry_run
        fail a 2 NotFound
        retry_run second try
        again
        ok a 3 {"uri": "s3://a"}
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > fail a 1 NotFound
              cancel_timer deadline
              finished "failed" {"code":"NotFound","message":"`a` failed with NotFound","node":"a"}
            > retry_run
              set_timer deadline at 3601000
              invoke a#2 t.Fetch {"name":"n1"}
            > fail a 2 NotFound
              cancel_timer deadline
              finished "failed" {"code":"NotFound","message":"`a` failed with NotFound","node":"a"}
            > retry_run second try
              set_timer deadline at 3601000
              invoke a#3 t.Fetch {"name":"n1"}
            > again
              rejected: duplicate event
            > ok a 3 {"uri": "s3://a"}
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            = {"attempt_base":{"a":2},"deadline":3601000,"input":{"name":"n1"},"last_event":"e6","nodes":[{"succeeded":{"uri":"s3://a"}},{"running":1}],"retries":2,"seq":6,"started_at":1000,"status":"running"}
        "#]],
    );
}

#[test]
fn a_branch_cancelled_by_the_failure_starts_again_and_a_finished_one_does_not() {
    check(
        "Branches",
        r#"
        start
        ok b 1 {"uri": "s3://b"}
        fail a 1 NotFound
        retry_run
        ok a 2 {"uri": "s3://a"}
        ok c 2 {"uri": "s3://c"}
        "#,
        expect![[r#"
            > start
              invoke a#1 t.Fetch {"name":"a"}
              invoke b#1 t.Fetch {"name":"b"}
            > ok b 1 {"uri": "s3://b"}
            > fail a 1 NotFound
              finished "failed" {"code":"NotFound","message":"`a` failed with NotFound","node":"a"}
            > retry_run
              invoke a#2 t.Fetch {"name":"a"}
            > ok a 2 {"uri": "s3://a"}
              invoke c#1 t.Train {"data":{"uri":"s3://b"}}
            > ok c 2 {"uri": "s3://c"}
              rejected: stale event: attempt 2 is over; attempt 1 is running
            = {"attempt_base":{"a":1},"last_event":"e5","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}},{"running":1}],"retries":1,"seq":5,"started_at":1000,"status":"running"}
        "#]],
    );
    check(
        "Branches",
        r#"
        start
        fail a 1 NotFound
        retry_run
        ok a 2 {"uri": "s3://a"}
        ok b 1 {"uri": "s3://b"}
        ok b 2 {"uri": "s3://b"}
        ok c 1 {"uri": "s3://c"}
        "#,
        expect![[r#"
            > start
              invoke a#1 t.Fetch {"name":"a"}
              invoke b#1 t.Fetch {"name":"b"}
            > fail a 1 NotFound
              cancel_step b#1
              finished "failed" {"code":"NotFound","message":"`a` failed with NotFound","node":"a"}
            > retry_run
              invoke a#2 t.Fetch {"name":"a"}
              invoke b#2 t.Fetch {"name":"b"}
            > ok a 2 {"uri": "s3://a"}
            > ok b 1 {"uri": "s3://b"}
              rejected: stale event: attempt 1 is over; attempt 2 is running
            > ok b 2 {"uri": "s3://b"}
              invoke c#1 t.Train {"data":{"uri":"s3://b"}}
            > ok c 1 {"uri": "s3://c"}
              finished "succeeded"
            = {"attempt_base":{"a":1,"b":1},"last_event":"e7","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}},{"succeeded":{"uri":"s3://c"}}],"result":{"uri":"s3://c"},"retries":1,"seq":6,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn an_approval_that_timed_out_is_asked_again() {
    check(
        "Reviewed",
        r#"
        start
        ok a 1 {"uri": "s3://a"}
        at 3601000
        fire timeout d 1
        retry_run
        ok d 2 {"approved": true, "outcome": "Approved", "reviewer": "ann", "comment": null, "decided_at": "2025-01-01T00:00:00Z"}
        "#,
        expect![[r#"
            > start
              invoke a#1 t.Fetch {"name":"x"}
            > ok a 1 {"uri": "s3://a"}
              set_timer timeout:d:1 at 3601000
              request_approval d#1 {"approvers":[],"expires_after":604800000,"subject":{"uri":"s3://a"},"summary":"ok?"}
            > fire timeout d 1
              cancel_step d#1
              finished "failed" {"code":"Timeout","message":"`d` failed with Timeout: attempt 1 took longer than 3600000 ms","node":"d"}
            > retry_run
              set_timer timeout:d:2 at 7201000
              request_approval d#2 {"approvers":[],"expires_after":604800000,"subject":{"uri":"s3://a"},"summary":"ok?"}
            > ok d 2 {"approved": true, "outcome": "Approved", "reviewer": "ann", "comment": null, "decided_at": "2025-01-01T00:00:00Z"}
              cancel_timer timeout:d:2
              finished "succeeded"
            = {"attempt_base":{"d":1},"last_event":"e5","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"approved":true,"comment":null,"decided_at":"2025-01-01T00:00:00Z","outcome":"Approved","reviewer":"ann"}}],"result":true,"retries":1,"seq":5,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn a_subflow_call_that_failed_starts_a_new_child() {
    check(
        "CallOne",
        r#"
        start
        child c 1 fail NotFound
        retry_run
        child c 1 ok {"uri": "s3://late"}
        child c 2 ok {"uri": "s3://c"}
        "#,
        expect![[r#"
            > start
              start_child r1.c.1 Child {"name":"x"}
            > child c 1 fail NotFound
              finished "failed" {"code":"NotFound","message":"`c` failed with NotFound","node":"c"}
            > retry_run
              start_child r1.c.2 Child {"name":"x"}
            > child c 1 ok {"uri": "s3://late"}
              rejected: stale event: attempt 1 is over; attempt 2 is running
            > child c 2 ok {"uri": "s3://c"}
              finished "succeeded"
            = {"attempt_base":{"c":1},"last_event":"e5","nodes":[{"succeeded":{"uri":"s3://c"}}],"result":{"uri":"s3://c"},"retries":1,"seq":4,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn a_child_run_is_not_retried_alone() {
    let mut d = Driver::new(bundle(), "Child").child(eflow_core::Parent {
        run: "p1".into(),
        node: "c".into(),
        index: None,
        attempt: 1,
    });
    d.script(
        r#"
        start {"name": "x"}
        fail a 1 NotFound
        retry_run
        "#,
    );
    expect![[r#"
        > start {"name": "x"}
          invoke a#1 t.Fetch {"name":"x"}
        > fail a 1 NotFound
          finished "failed" {"code":"NotFound","message":"`a` failed with NotFound","node":"a"}
          notify_parent p1/c#1 {"status":"failed","error":{"code":"NotFound","message":"`a` failed with NotFound"}}
        > retry_run
          rejected: the run cannot be retried: it is a subflow child of run p1, which has learnt that it failed; retry that run instead: it starts a new child
        = {"error":{"code":"NotFound","message":"`a` failed with NotFound","node":"a"},"input":{"name":"x"},"last_event":"e2","nodes":[{"failed":{"code":"NotFound"}}],"parent":{"attempt":1,"node":"c","run":"p1"},"seq":2,"started_at":1000,"status":"failed"}
    "#]].assert_eq(&d.finish());
}

#[test]
fn a_run_past_its_deadline_goes_on_with_a_new_one() {
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        ok a 1 {"uri": "s3://a"}
        at 3601000
        fire deadline
        retry_run
        ok b 4 {"uri": "s3://b"}
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > ok a 1 {"uri": "s3://a"}
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > fire deadline
              cancel_step b#1
              finished "failed" {"code":"DeadlineExceeded","message":"the run did not finish within its timeout of 3600000 ms"}
            > retry_run
              set_timer deadline at 7201000
              invoke b#4 t.Train {"data":{"uri":"s3://a"}}
            > ok b 4 {"uri": "s3://b"}
              cancel_timer deadline
              finished "succeeded"
            = {"attempt_base":{"b":3},"input":{"name":"n1"},"last_event":"e5","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}}],"result":{"uri":"s3://b"},"retries":1,"seq":5,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn only_a_failed_run_is_retried() {
    check(
        "Pipeline",
        r#"
        retry_run not started
        start {"name": "n1"}
        retry_run running
        ok a 1 {"uri": "s3://a"}
        ok b 1 {"uri": "s3://b"}
        retry_run succeeded
        "#,
        expect![[r#"
            > retry_run not started
              rejected: the run has not started: only a failed run can be retried
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > retry_run running
              rejected: the run is running: only a failed run can be retried
            > ok a 1 {"uri": "s3://a"}
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > ok b 1 {"uri": "s3://b"}
              cancel_timer deadline
              finished "succeeded"
            > retry_run succeeded
              rejected: the run has succeeded: only a failed run can be retried
            = {"input":{"name":"n1"},"last_event":"e5","nodes":[{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}}],"result":{"uri":"s3://b"},"seq":3,"started_at":1000,"status":"succeeded"}
        "#]],
    );
    check(
        "Pipeline",
        r#"
        start {"name": "n1"}
        cancel no longer needed
        retry_run cancelled
        "#,
        expect![[r#"
            > start {"name": "n1"}
              set_timer deadline at 3601000
              invoke a#1 t.Fetch {"name":"n1"}
            > cancel no longer needed
              cancel_step a#1
              cancel_timer deadline
              finished "cancelled" {"code":"Cancelled","message":"no longer needed"}
            > retry_run cancelled
              rejected: the run was cancelled: only a failed run can be retried
            = {"error":{"code":"Cancelled","message":"no longer needed"},"input":{"name":"n1"},"last_event":"e2","nodes":["cancelled","pending"],"seq":2,"started_at":1000,"status":"cancelled"}
        "#]],
    );
}

#[test]
fn a_failed_join_all_starts_only_its_failed_and_stopped_children_again() {
    check(
        "FanAll",
        r#"
        start {"names": ["x", "y", "z", "w"]}
        ok xs[0] 1 {"uri": "s3://x"}
        fail xs[1] 1 NotFound
        retry_run
        ok xs[2] 1 {"uri": "s3://late"}
        ok xs[1] 2 {"uri": "s3://y"}
        ok xs[2] 2 {"uri": "s3://z"}
        ok xs[3] 2 {"uri": "s3://w"}
        "#,
        expect![[r#"
            > start {"names": ["x", "y", "z", "w"]}
              invoke xs[0]#1 t.Fetch {"name":"x"}
              invoke xs[1]#1 t.Fetch {"name":"y"}
            > ok xs[0] 1 {"uri": "s3://x"}
              store_result xs[0] {"uri":"s3://x"}
              invoke xs[2]#1 t.Fetch {"name":"z"}
            > fail xs[1] 1 NotFound
              cancel_step xs[2]#1
              finished "failed" {"code":"NotFound","message":"`xs` failed with NotFound: child 1 failed","node":"xs"}
            > retry_run
              invoke xs[1]#2 t.Fetch {"name":"y"}
              invoke xs[2]#2 t.Fetch {"name":"z"}
            > ok xs[2] 1 {"uri": "s3://late"}
              rejected: stale event: attempt 1 is over; attempt 2 is running
            > ok xs[1] 2 {"uri": "s3://y"}
              store_result xs[1] {"uri":"s3://y"}
              invoke xs[3]#2 t.Fetch {"name":"w"}
            > ok xs[2] 2 {"uri": "s3://z"}
              store_result xs[2] {"uri":"s3://z"}
            > ok xs[3] 2 {"uri": "s3://w"}
              store_result xs[3] {"uri":"s3://w"}
              set_timer fan_out:xs:6 at 1000
            > (fires fan_out:xs:6)
              (loads the results of xs)
              finished "succeeded"
            = {"attempt_base":{"xs":1},"input":{"names":["x","y","z","w"]},"last_event":"e9","nodes":[{"results":4}],"result":[{"uri":"s3://x"},{"uri":"s3://y"},{"uri":"s3://z"},{"uri":"s3://w"}],"retries":1,"seq":8,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn a_join_all_stopped_by_another_failure_goes_on_too() {
    check(
        "FanBeside",
        r#"
        start {"names": ["x", "y"]}
        ok xs[0] 1 {"uri": "s3://x"}
        fail a 1 NotFound
        retry_run
        ok xs[1] 2 {"uri": "s3://y"}
        ok a 2 {"uri": "s3://a"}
        ok b 1 {"uri": "s3://b"}
        "#,
        expect![[r#"
            > start {"names": ["x", "y"]}
              invoke xs[0]#1 t.Fetch {"name":"x"}
              invoke xs[1]#1 t.Fetch {"name":"y"}
              invoke a#1 t.Fetch {"name":"solo"}
            > ok xs[0] 1 {"uri": "s3://x"}
              store_result xs[0] {"uri":"s3://x"}
            > fail a 1 NotFound
              cancel_step xs[1]#1
              finished "failed" {"code":"NotFound","message":"`a` failed with NotFound","node":"a"}
            > retry_run
              invoke xs[1]#2 t.Fetch {"name":"y"}
              invoke a#2 t.Fetch {"name":"solo"}
            > ok xs[1] 2 {"uri": "s3://y"}
              store_result xs[1] {"uri":"s3://y"}
              set_timer fan_out:xs:4 at 1000
            > (fires fan_out:xs:4)
            > ok a 2 {"uri": "s3://a"}
              invoke b#1 t.Train {"data":{"uri":"s3://a"}}
            > ok b 1 {"uri": "s3://b"}
              finished "succeeded"
            = {"attempt_base":{"a":1,"xs":1},"input":{"names":["x","y"]},"last_event":"e8","nodes":[{"results":2},{"succeeded":{"uri":"s3://a"}},{"succeeded":{"uri":"s3://b"}}],"result":{"uri":"s3://b"},"retries":1,"seq":8,"started_at":1000,"status":"succeeded"}
        "#]],
    );
}

#[test]
fn a_failed_join_any_is_not_retried() {
    check(
        "FanAny",
        r#"
        start {"names": ["x", "y"]}
        fail x[0] 1 NotFound
        fail x[1] 1 NotFound
        retry_run
        "#,
        expect![[r#"
            > start {"names": ["x", "y"]}
              invoke x[0]#1 t.Fetch {"name":"x"}
              invoke x[1]#1 t.Fetch {"name":"y"}
            > fail x[0] 1 NotFound
            > fail x[1] 1 NotFound
              finished "failed" {"code":"JoinFailed","message":"`x` failed with JoinFailed: every child failed; child 1 with NotFound","node":"x"}
            > retry_run
              rejected: the run cannot be retried: the fan-out `x` failed or was stopped, and a retry starts a fan-out's failed children again only for `join all` (the counters of `join any` and `join at_least` do not say which children failed); start a new run
            = {"error":{"code":"JoinFailed","message":"`x` failed with JoinFailed: every child failed; child 1 with NotFound","node":"x"},"input":{"names":["x","y"]},"last_event":"e3","nodes":[{"failed":{"code":"JoinFailed","message":"every child failed; child 1 with NotFound"}}],"seq":3,"started_at":1000,"status":"failed"}
        "#]],
    );
}

/// The API names a run's N-th retry `retry:N`: that retry coming again after
/// the run failed once more is a duplicate, and the next one (`retry:N+1`)
/// goes on.
#[test]
fn a_retry_that_comes_again_after_the_run_failed_again_is_a_duplicate() {
    use eflow_core::{Event, EventKind, Rejection, RunStatus, apply};
    let retry = |n: u32| {
        Event::new(
            format!("retry:{n}"),
            EventKind::RetryRequested {
                by: "ops".into(),
                reason: "again".into(),
            },
        )
    };
    let mut d = common::Driver::new(bundle(), "Branches");
    d.script(
        r#"
        start {}
        ok a 1 {"uri": "s3://a"}
        ok b 1 {"uri": "s3://b"}
        fail c 1 Flaky fatal
        "#,
    );
    assert_eq!(d.run.status, RunStatus::Failed);
    let first = apply(d.bundle, &d.run, &retry(1), d.now, &d.values).expect("the first retry");
    d.run = first.run;
    assert_eq!((d.run.status, d.run.retries), (RunStatus::Running, 1));
    d.script("fail c 2 Flaky fatal");
    assert_eq!(d.run.status, RunStatus::Failed);
    assert_eq!(
        apply(d.bundle, &d.run, &retry(1), d.now, &d.values).err(),
        Some(Rejection::Duplicate),
        "retry:1 again changes nothing"
    );
    let second = apply(d.bundle, &d.run, &retry(2), d.now, &d.values).expect("the second retry");
    assert_eq!(
        (second.run.status, second.run.retries),
        (RunStatus::Running, 2)
    );
}
