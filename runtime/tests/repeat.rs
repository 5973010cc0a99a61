//! Bounded loops (`repeat`) end to end, against the real `eflow` binary over
//! HTTP with the `sim` connector: each iteration is an ordinary step (or child
//! run) in the run's events, with its iteration as the index; a loop whose
//! `until` holds stops there, one whose `until` never holds stops at its bound;
//! the loop's value is the last iteration's output, each iteration is given the
//! previous one's, and the run view shows the iteration that is out.

mod common;

use common::binary::eflow;
use common::{Api, DEADLINE, poll_until};
use serde_json::{Value, json};

const LOOPS: &str = r#"
record Score { value: Float }

remote step Refine(previous: Score?) -> Score

flow Round(previous: Score?) -> Score {
    let now = Refine(previous: previous)
    return now
}

/// `until` holds after the first iteration: simulated floats are in [0, 1].
flow Converges() -> Score {
    let best = repeat s at_most 5 {
        Refine(previous: s)
    } until s.value >= 0.0
    return best
}

/// `until` never holds: the loop stops at its bound.
flow Bounded() -> Score {
    let last = repeat p at_most 4 {
        Round(previous: p)
    } until p.value > 1.0
    return last
}

bindings dev {
    Refine = sim { duration: 200ms, failure_rate: 0.0, seed: 3 }
}
"#;

async fn events(api: &Api, token: &str, id: &str) -> Vec<Value> {
    let r = api
        .get(Some(token), &format!("/v1/runs/{id}/events"))
        .await
        .ok("events");
    r.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_stop_when_until_holds_or_at_their_bound() {
    let server = eflow("repeat", &[]).await;
    let api = Api::new(format!("http://{}", server.addr));
    let token = api.create_tenant("loops", json!({})).await;
    api.deploy_source(&token, &[("loops.eflow", LOOPS)]).await;

    // `until` holds at once: one iteration, index 0, and its output is the value.
    let id = api.start(&token, "Converges", json!({})).await["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let run = api.wait_finished(&token, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let done: Vec<Value> = events(&api, &token, &id)
        .await
        .into_iter()
        .filter(|e| e["event"]["type"] == "step_completed")
        .collect();
    assert_eq!(done.len(), 1, "one iteration: {done:?}");
    assert_eq!(done[0]["event"]["node"], "best");
    assert_eq!(done[0]["event"]["index"], 0);
    assert_eq!(run["result"], done[0]["event"]["output"], "{run}");

    // `until` never holds: four iterations, each a child run of its own, each
    // given the previous one's output; the value is the fourth's.
    let id = api.start(&token, "Bounded", json!({})).await["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let seen = poll_until(
        "the run view to show an iteration out",
        DEADLINE,
        || async {
            let r = api.run(&token, &id).await;
            let step = r["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["id"] == "last"))
                .cloned()?;
            if r["status"] != "running" {
                panic!("the loop finished before its iterations were seen: {r}");
            }
            step["iteration"].as_u64().map(|i| (i, step))
        },
    )
    .await;
    assert!(seen.0 < 4, "{seen:?}");
    assert_eq!(seen.1["status"], "running", "{seen:?}");
    let run = api.wait_finished(&token, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let finished: Vec<Value> = events(&api, &token, &id)
        .await
        .into_iter()
        .map(|e| e["event"].clone())
        .filter(|e| e["type"] == "child_finished")
        .collect();
    let indices: Vec<u64> = finished
        .iter()
        .filter_map(|e| e["index"].as_u64())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3], "stopped at the bound: {finished:?}");
    let outputs: Vec<&Value> = finished.iter().map(|e| &e["outcome"]["output"]).collect();
    assert_eq!(
        &run["result"], outputs[3],
        "the value is the last iteration's"
    );
    // Each iteration is a child run of its own, given the previous iteration's
    // output (none for the first).
    for (i, output) in outputs.iter().enumerate() {
        let child = api.run(&token, &format!("{id}.last.{i}.1")).await;
        assert_eq!(child["status"], "succeeded", "{child}");
        assert_eq!(child["result"], **output, "{child}");
        let given = &child["input"]["previous"];
        if i == 0 {
            assert_eq!(*given, Value::Null, "the first has no previous: {child}");
        } else {
            assert_eq!(given, outputs[i - 1], "iteration {i}: {child}");
        }
    }
    drop(server);
}
