//! A failed run retried through the API (`POST /v1/runs/{id}/retry`) and the
//! CLI, against a real remote system over HTTP: it goes on from its failed
//! step, the steps that succeeded are not called again, and everything that
//! follows a run's status (the history, the quota, the sweeper's retry
//! window) follows it back to running. On SQLite, and on PostgreSQL with
//! NATS JetStream where they are reachable.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use eflow_runtime::server::Options;
use serde_json::{Value, json};

/// A remote system of synchronous calls: `/prepare` and `/publish` always
/// answer, `/lookup` fails (500, `Unavailable`) until it is made healthy,
/// but for `x` 100 and 200.
#[derive(Clone, Default)]
struct Remote {
    healthy: Arc<AtomicBool>,
    /// Each call: the path's last segment and the request's attempt.
    calls: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Remote {
    fn calls(&self, what: &str) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == what)
            .map(|(_, a)| *a)
            .collect()
    }
}

async fn call(
    State(r): State<Remote>,
    UrlPath(what): UrlPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let attempt = body["attempt"].as_u64().unwrap_or(0);
    r.calls.lock().unwrap().push((what.clone(), attempt));
    let x = body["inputs"]["x"].as_i64().unwrap_or(0);
    match what.as_str() {
        "lookup" if !r.healthy.load(Ordering::SeqCst) && x != 100 && x != 200 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"code": "Unavailable", "message": "the index is down"}})),
        ),
        "lookup" => (StatusCode::OK, Json(json!(x * 10))),
        _ => (StatusCode::OK, Json(json!(x + 1))),
    }
}

async fn start_remote() -> (Remote, String, tokio::task::JoinHandle<()>) {
    let remote = Remote::default();
    let app = Router::new()
        .route("/{what}", post(call))
        .with_state(remote.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the remote system");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (remote, format!("http://{addr}"), task)
}

fn source(base: &str) -> String {
    format!(
        r#"
from "std/time" import Wait

call step Prepare(x: Int) -> Int
call step Lookup(x: Int) -> Int raises Unavailable
call step Publish(x: Int) -> Int

flow Chain(x: Int) -> Int {{
    let a = Prepare(x: x)
    let b = Lookup(x: a)
    let c = Publish(x: b)
    return c
}}

flow Outer(x: Int) -> Int {{
    let c = Chain(x: x)
    return c
}}

flow Each(xs: List<Int>) -> List<Int> {{
    let ys = for x in xs join all {{
        Lookup(x: x)
    }}
        parallel 1
    return ys
}}

flow Idle() -> Timestamp {{
    let w = Wait(duration: 1h)
    return w
}}

bindings dev {{
    Prepare = http {{ url: "{base}/prepare" }}
    Lookup = http {{ url: "{base}/lookup" }}
    Publish = http {{ url: "{base}/publish" }}
}}
"#
    )
}

async fn retry(api: &Api, token: &str, id: &str, body: Value) -> Resp {
    api.post(Some(token), &format!("/v1/runs/{id}/retry"), &body)
        .await
}

/// A run whose `Lookup` failed goes on from it once retried: `Prepare`
/// is not called again, `Lookup` is, as attempt 2, then `Publish`; the run's
/// view counts the retry, its events say who asked and why, and the
/// history's lists follow it from failed to running to succeeded. Another
/// tenant cannot retry it; a run that has not failed is refused.
async fn a_failed_run_goes_on_from_its_failed_step(s: &TestServer) {
    let (remote, base, task) = start_remote().await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let other = api.create_tenant("other", json!({})).await;
    api.deploy_source(&token, &[("chain.eflow", &source(&base))])
        .await;
    let run = api.start(&token, "Chain", json!({"x": 4})).await;
    let id = run["id"].as_str().expect("id").to_string();
    let failed = api.wait_finished(&token, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "Unavailable", "{failed}");
    assert_eq!(failed["error"]["step"], "b", "{failed}");
    assert!(failed.get("retries").is_none(), "{failed}");
    assert_eq!(remote.calls("prepare"), vec![1]);
    assert_eq!(remote.calls("lookup"), vec![1]);
    assert!(remote.calls("publish").is_empty());
    api.history_caught_up().await;
    let failed_ids = ids(&api.all_runs(&token, "status=failed").await);
    assert_eq!(failed_ids, vec![id.clone()]);

    // Another tenant does not see it, so cannot retry it.
    let r = retry(api, &other, &id, json!({})).await;
    assert_eq!(r.expect_error(404, "another tenant's retry"), "not_found");

    remote.healthy.store(true, Ordering::SeqCst);
    let r = retry(api, &token, &id, json!({"reason": "the index is back"})).await;
    let retried = r.ok("retry");
    assert_eq!(retried["id"], id.as_str(), "{retried}");
    assert_eq!(retried["retries"], 1, "{retried}");
    assert!(retried.get("error").is_none(), "{retried}");
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], 51, "(4 + 1) * 10 + 1: {done}");
    assert_eq!(done["retries"], 1, "{done}");
    assert_eq!(remote.calls("prepare"), vec![1], "Prepare kept its output");
    assert_eq!(remote.calls("lookup"), vec![1, 2], "a new attempt");
    assert_eq!(remote.calls("publish"), vec![1]);

    // The event log says who retried it and why.
    let events = api
        .get(Some(&token), &format!("/v1/runs/{id}/events"))
        .await
        .ok("events");
    let asked: Vec<&Value> = events
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["event"]["type"] == "retry_requested")
        .collect();
    assert_eq!(asked.len(), 1, "{events}");
    assert_eq!(asked[0]["event"]["reason"], "the index is back", "{events}");
    assert_eq!(asked[0]["status"], "running", "{events}");
    let me = api.get(Some(&token), "/v1/whoami").await.ok("whoami");
    assert_eq!(asked[0]["event"]["by"], me["name"], "{events} {me}");

    // A run that has not failed (any more) is refused, saying its status.
    let r = retry(api, &token, &id, json!({})).await;
    assert_eq!(r.expect_error(409, "a retry of a success"), "not_failed");
    assert!(r.text.contains("has succeeded"), "{}", r.text);

    // The history follows it: succeeded now, with no error left.
    api.history_caught_up().await;
    assert!(api.all_runs(&token, "status=failed").await.is_empty());
    assert!(
        api.all_runs(&token, "error=Unavailable").await.is_empty(),
        "the failure's error is no longer the run's"
    );
    let listed = api.all_runs(&token, "status=succeeded").await;
    assert_eq!(ids(&listed), vec![id.clone()], "{listed:?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_goes_on_from_its_failed_step_on_sqlite() {
    let s = TestServer::start("retry").await;
    a_failed_run_goes_on_from_its_failed_step(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_goes_on_from_its_failed_step_on_postgres_and_nats() {
    let Some(schema) = postgres::Schema::create("retry").await else {
        return;
    };
    let Some(prefix) = nats::Prefix::create("retry").await else {
        return;
    };
    let s = TestServer::start_with("retry-pg", |o| {
        o.store = schema.url.clone();
        o.bus = prefix.url.clone();
    })
    .await;
    a_failed_run_goes_on_from_its_failed_step(&s).await;
    s.stop().await;
}

/// A subflow child is not retried alone (its parent learnt of its failure);
/// the parent's retry starts a new child, attempt 2 of its call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_retried_starts_a_new_child() {
    let (remote, base, task) = start_remote().await;
    let s = TestServer::start("retry-child").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("chain.eflow", &source(&base))])
        .await;
    let run = api.start(&token, "Outer", json!({"x": 1})).await;
    let id = run["id"].as_str().expect("id").to_string();
    let failed = api.wait_finished(&token, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let child = format!("{id}.c.1");
    let child_run = api.wait_finished(&token, &child).await;
    assert_eq!(child_run["status"], "failed", "{child_run}");

    let r = retry(api, &token, &child, json!({})).await;
    assert_eq!(r.expect_error(409, "a child's retry"), "not_retryable");
    assert!(r.text.contains(&id), "names the parent: {}", r.text);

    remote.healthy.store(true, Ordering::SeqCst);
    // The admin may retry any tenant's run.
    retry(api, ADMIN, &id, json!({}))
        .await
        .ok("retry the parent");
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], 21, "{done}");
    let second = api.run(&token, &format!("{id}.c.2")).await;
    assert_eq!(second["status"], "succeeded", "a new child: {second}");
    let first = api.run(&token, &child).await;
    assert_eq!(first["status"], "failed", "the old child stays: {first}");
    assert_eq!(remote.calls("lookup"), vec![1, 1], "each child's attempt 1");
    s.stop().await;
    task.abort();
}

/// A retried run counts among its tenant's active runs again: at its
/// quota the retry is refused (429) and changes nothing; once a place is
/// free it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_takes_a_place_in_the_quota() {
    let (remote, base, task) = start_remote().await;
    let s = TestServer::start("retry-quota").await;
    let api = &s.api;
    let token = api
        .create_tenant("small", json!({"max_active_runs": 1}))
        .await;
    api.deploy_source(&token, &[("chain.eflow", &source(&base))])
        .await;
    let run = api.start(&token, "Chain", json!({"x": 2})).await;
    let id = run["id"].as_str().expect("id").to_string();
    assert_eq!(api.wait_finished(&token, &id).await["status"], "failed");
    let idle = api.start(&token, "Idle", json!({})).await;
    let idle_id = idle["id"].as_str().expect("id").to_string();

    remote.healthy.store(true, Ordering::SeqCst);
    let r = retry(api, &token, &id, json!({})).await;
    assert_eq!(
        r.expect_error(429, "a retry past the quota"),
        "quota_active_runs"
    );
    assert_eq!(api.run(&token, &id).await["status"], "failed");
    assert_eq!(remote.calls("lookup"), vec![1]);

    api.post(
        Some(&token),
        &format!("/v1/runs/{idle_id}/cancel"),
        &json!({}),
    )
    .await
    .ok("cancel");
    api.wait_finished(&token, &idle_id).await;
    // The quota's count follows the cancel as its run ends.
    poll_until("the place to be free", DEADLINE, || async {
        let t = api.get(Some(ADMIN), "/v1/tenants").await.ok("tenants");
        t.as_array()
            .and_then(|a| a.iter().find(|t| t["id"] == "small").cloned())
            .filter(|t| t["active_runs"] == 0)
    })
    .await;
    retry(api, &token, &id, json!({})).await.ok("retry");
    assert_eq!(api.wait_finished(&token, &id).await["status"], "succeeded");
    poll_until("the place to be given back", DEADLINE, || async {
        let t = api.get(Some(ADMIN), "/v1/tenants").await.ok("tenants");
        t.as_array()
            .and_then(|a| a.iter().find(|t| t["id"] == "small").cloned())
            .filter(|t| t["active_runs"] == 0)
    })
    .await;
    s.stop().await;
    task.abort();
}

async fn runs_in_engine(db: &Path, id: &str) -> i64 {
    let url = format!("sqlite://{}?mode=ro", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE id = ?")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    n
}

/// The sweeper lets a succeeded run go after `sweep_after` but keeps a
/// failed one for its retry window; past the window the failed run leaves
/// too, and its retry is refused: 410 `retry_window_passed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_stay_retryable_for_the_retry_window() {
    let (remote, base, task) = start_remote().await;
    let (s, clock) = TestServer::start_with_manual_clock("retry-window", |o: &mut Options| {
        o.retention.sweep_after = Duration::ZERO;
        o.retention.retry_window = Duration::from_secs(3600);
    })
    .await;
    let api = &s.api;
    let db = s.dir.join("eflow.db");
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("chain.eflow", &source(&base))])
        .await;
    let failed = api.start(&token, "Chain", json!({"x": 1})).await;
    let failed_id = failed["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_finished(&token, &failed_id).await["status"],
        "failed"
    );
    remote.healthy.store(true, Ordering::SeqCst);
    let ok = api.start(&token, "Chain", json!({"x": 2})).await;
    let ok_id = ok["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_finished(&token, &ok_id).await["status"],
        "succeeded"
    );
    poll_until("the succeeded run to be swept", DEADLINE, || async {
        (runs_in_engine(&db, &ok_id).await == 0).then_some(())
    })
    .await;
    assert_eq!(runs_in_engine(&db, &failed_id).await, 1, "kept to retry");

    // Inside the window: it goes on.
    retry(api, &token, &failed_id, json!({}))
        .await
        .ok("retry in the window");
    assert_eq!(
        api.wait_finished(&token, &failed_id).await["status"],
        "succeeded"
    );

    // Past it: a failed run leaves, and its retry is refused.
    remote.healthy.store(false, Ordering::SeqCst);
    let late = api.start(&token, "Chain", json!({"x": 3})).await;
    let late_id = late["id"].as_str().expect("id").to_string();
    assert_eq!(
        api.wait_finished(&token, &late_id).await["status"],
        "failed"
    );
    // A minute before the window ends it is refused already: the sweeper
    // may be at it.
    clock.advance(3_600_000 - 30_000);
    let r = retry(api, &token, &late_id, json!({})).await;
    assert_eq!(
        r.expect_error(410, "a retry at the window's end"),
        "retry_window_passed"
    );
    assert_eq!(runs_in_engine(&db, &late_id).await, 1, "not swept yet");
    clock.advance(30_001);
    poll_until("the failed run to be swept", DEADLINE, || async {
        (runs_in_engine(&db, &late_id).await == 0).then_some(())
    })
    .await;
    let r = retry(api, &token, &late_id, json!({})).await;
    assert_eq!(
        r.expect_error(410, "a retry past the window"),
        "retry_window_passed"
    );
    assert!(r.text.contains("1h"), "{}", r.text);
    let view = api.run(&token, &late_id).await;
    assert_eq!(view["status"], "failed", "still served: {view}");
    s.stop().await;
    task.abort();
}

/// A `join all` fan-out that failed goes on from where it stood: the
/// children that succeeded are not called again and keep their results, the
/// one that failed and those not started yet run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fan_out_starts_only_its_failed_children_again() {
    let (remote, base, task) = start_remote().await;
    let s = TestServer::start("retry-fan").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("chain.eflow", &source(&base))])
        .await;
    let run = api
        .start(&token, "Each", json!({"xs": [100, 200, 300, 400]}))
        .await;
    let id = run["id"].as_str().expect("id").to_string();
    let failed = api.wait_finished(&token, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(remote.calls("lookup"), vec![1, 1, 1], "400 never started");
    remote.healthy.store(true, Ordering::SeqCst);
    retry(api, &token, &id, json!({})).await.ok("retry");
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], json!([1000, 2000, 3000, 4000]), "{done}");
    assert_eq!(
        remote.calls("lookup"),
        vec![1, 1, 1, 2, 2],
        "children 0 and 1 kept; 2 again and 3 new, as attempt 2"
    );
    s.stop().await;
    task.abort();
}
