//! The whole server on the distributed backends: its engine's inputs and
//! answers over NATS JetStream (the `engine::Input` wire form), its runs in
//! PostgreSQL, its history fed by the NATS event stream. Skipped with a
//! reason when either server is unreachable outside CI.

mod common;

use common::*;
use serde_json::{Value, json};

const SOURCE: &str = r#"
remote step Square(x: Int) -> Int

flow Double(x: Int) -> Int {
    let y = Square(x: x)
    let z = Square(x: y)
    return z
}

bindings dev {
    Square = sim { duration: 50ms, failure_rate: 0.0 }
}
"#;

/// Starts, timers (the simulated steps' completions), answers and the
/// history all cross the bus; a purge stops the tenant in every worker
/// through it and leaves nothing of it on the event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_finish_over_nats_and_postgres() {
    let Some(schema) = postgres::Schema::create("natseng").await else {
        return;
    };
    let Some(prefix) = nats::Prefix::create("natseng").await else {
        return;
    };
    let s = TestServer::start_with("nats-engine", |o| {
        o.store = schema.url.clone();
        o.bus = prefix.url.clone();
    })
    .await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("flows.eflow", SOURCE)]).await;
    let mut runs = Vec::new();
    for x in 0..12 {
        let run = api.start(&token, "Double", json!({ "x": x })).await;
        assert_eq!(run["status"], "running", "{run}");
        runs.push((x, run["id"].as_str().expect("an id").to_string()));
    }
    for (x, id) in &runs {
        let done = api.wait_finished(&token, id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["input"], json!({ "x": x }), "{done}");
        // The simulated step's output, through both steps.
        assert!(done["result"].is_i64(), "{done}");
    }
    // A start again of a chosen id answers the run it made (changed: false
    // crosses back), not a second one.
    let chosen = api
        .post(
            Some(&token),
            "/v1/runs",
            &json!({"flow": "Double", "input": {"x": 2}, "id": "again"}),
        )
        .await
        .ok("start");
    let twice = api
        .post(
            Some(&token),
            "/v1/runs",
            &json!({"flow": "Double", "input": {"x": 2}, "id": "again"}),
        )
        .await
        .ok("start again");
    assert_eq!(chosen["id"], twice["id"]);
    api.wait_finished(&token, "again").await;
    api.history_caught_up().await;
    let listed = api.all_runs(&token, "flow=Double").await;
    assert_eq!(listed.len(), runs.len() + 1, "{listed:?}");
    assert!(listed.iter().all(|r| r["status"] == "succeeded"));

    let js = prefix.jetstream().await;
    let mut events = js
        .get_stream(format!("{}_events", prefix.name))
        .await
        .expect("the event stream");
    assert!(events.info().await.expect("info").state.messages > 0);
    let purged: Value = api
        .delete(Some(ADMIN), "/v1/tenants/acme")
        .await
        .ok("purge");
    assert!(purged["rows_deleted"].as_u64() > Some(0), "{purged}");
    assert_eq!(
        events.info().await.expect("info").state.messages,
        0,
        "the purged tenant's events left the stream"
    );
    s.stop().await;
}

const FAN: &str = r#"
remote step Square(x: Int) -> Int

flow One(x: Int) -> Int {
    let y = Square(x: x)
    return y
}

flow Fan(xs: List<Int>) -> List<Int> {
    let r = for x in xs join all {
        One(x: x)
    }
    return r
}

bindings dev {
    Square = sim { duration: 50ms, failure_rate: 0.0 }
}
"#;

/// A read the worker needs to apply an input fails (the connection to
/// PostgreSQL ends as the fan-out's joined results are read): the batch is
/// given back and comes again, and the fan-out ends. Before, the input was
/// answered with the error and its batch committed without it: the timer
/// that collects the results was deleted with the batch, and the run
/// waited for good with every child done (the cluster fault suite's lost
/// replies found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_whose_reads_fail_comes_again() {
    use common::cut::{Cut, authority, cutter, through};
    let Some(schema) = postgres::Schema::create("natsread").await else {
        return;
    };
    let Some(prefix) = nats::Prefix::create("natsread").await else {
        return;
    };
    let cut = std::sync::Arc::new(std::sync::Mutex::new(None));
    let proxy = cutter(&authority(&schema.url), b"FROM fanout_results", cut.clone()).await;
    let s = TestServer::start_with("nats-read", |o| {
        o.store = through(&schema.url, &proxy);
        o.bus = prefix.url.clone();
    })
    .await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("fan.eflow", FAN)]).await;
    *cut.lock().unwrap() = Some(Cut::Before);
    let run = api.start(&token, "Fan", json!({ "xs": [1, 2, 3] })).await;
    let id = run["id"].as_str().expect("an id");
    let done = api.wait_finished(&token, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        cut.lock().unwrap().is_none(),
        "the read of the joined results was cut"
    );
    s.stop().await;
}
