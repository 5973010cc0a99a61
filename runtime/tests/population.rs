//! Run keys and the population over HTTP: a run started with a `key` shows
//! it and is found by it, a bad key is refused, and `GET /v1/population`
//! lists a flow's keys with their latest runs (failed twice in a row, a
//! retry back to running, every filter, pages) and their kept counts,
//! scoped to tenants like the run list. On SQLite, and on PostgreSQL with
//! NATS JetStream where they are reachable.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use serde_json::{Value, json};

/// A remote system whose `Lookup` fails (`Unavailable`) for negative
/// inputs until it is made healthy.
async fn start_remote() -> (Arc<AtomicBool>, String, tokio::task::JoinHandle<()>) {
    let healthy = Arc::new(AtomicBool::new(false));
    async fn lookup(
        State(healthy): State<Arc<AtomicBool>>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let x = body["inputs"]["x"].as_i64().unwrap_or(0);
        if x < 0 && !healthy.load(Ordering::SeqCst) {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"code": "Unavailable", "message": "down"}})),
            );
        }
        (StatusCode::OK, Json(json!(x * 10)))
    }
    let app = Router::new()
        .route("/lookup", post(lookup))
        .with_state(healthy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the remote system");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (healthy, format!("http://{addr}"), task)
}

fn source(base: &str) -> String {
    format!(
        r#"
call step Lookup(x: Int) -> Int raises Unavailable

flow Retrain(x: Int) -> Int {{
    let y = Lookup(x: x)
    return y
}}

bindings dev {{
    Lookup = http {{ url: "{base}/lookup" }}
}}
"#
    )
}

/// Starts `Retrain` with `x` for `key` and waits until it finished.
async fn finished(api: &Api, token: &str, key: Option<&str>, x: i64) -> Value {
    let mut body = json!({"flow": "Retrain", "input": {"x": x}});
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    let run = api.post(Some(token), "/v1/runs", &body).await.ok("start");
    if let Some(k) = key {
        assert_eq!(run["key"], k, "{run}");
    }
    let id = run["id"].as_str().expect("id").to_string();
    api.wait_finished(token, &id).await
}

/// (key, status, failed in a row) of every member of a population query,
/// following `next` a page of `limit` at a time.
async fn members(api: &Api, token: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/population?flow=Retrain&limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api.get(Some(token), &path).await.ok(&path);
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page.get("next").and_then(Value::as_str) {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
    panic!("pagination of {query} did not end");
}

fn lines(m: &[Value]) -> Vec<(String, String, u64)> {
    m.iter()
        .map(|m| {
            (
                m["key"].as_str().unwrap_or_default().to_string(),
                m["status"].as_str().unwrap_or_default().to_string(),
                m["failed_in_a_row"].as_u64().unwrap_or(99),
            )
        })
        .collect()
}

fn line(key: &str, status: &str, failed: u64) -> (String, String, u64) {
    (key.into(), status.into(), failed)
}

async fn keys_and_the_population(s: &TestServer) {
    let (healthy, base, task) = start_remote().await;
    let api = &s.api;
    let acme = api.create_tenant("acme", json!({})).await;
    let other = api.create_tenant("other", json!({})).await;
    for t in [&acme, &other] {
        api.deploy_source(t, &[("retrain.eflow", &source(&base))])
            .await;
    }

    // Bad keys are refused, saying what a key is.
    for bad in [json!(""), json!("a\nb"), json!("x".repeat(300))] {
        let r = api
            .post(
                Some(&acme),
                "/v1/runs",
                &json!({"flow": "Retrain", "input": {"x": 1}, "key": bad}),
            )
            .await;
        assert_eq!(r.expect_error(400, "a bad key"), "invalid_key");
        assert!(r.text.contains("printable"), "{}", r.text);
    }

    // model-a fails twice, model-b succeeds, model-c fails once; one run
    // has no key; the other tenant has a model-a of its own.
    let a1 = finished(api, &acme, Some("model-a"), -1).await;
    assert_eq!(a1["status"], "failed", "{a1}");
    let a2 = finished(api, &acme, Some("model-a"), -2).await;
    let a2_id = a2["id"].as_str().expect("id").to_string();
    assert_eq!(a2["key"], "model-a", "{a2}");
    finished(api, &acme, Some("model-b"), 1).await;
    finished(api, &acme, Some("model-c"), -3).await;
    let unkeyed = finished(api, &acme, None, 2).await;
    assert!(unkeyed.get("key").is_none(), "{unkeyed}");
    finished(api, &other, Some("model-a"), 5).await;
    api.history_caught_up().await;

    // The run list by key: a tenant's own runs of that key, newest first.
    let by_key = api.all_runs(&acme, "key=model-a").await;
    assert_eq!(
        ids(&by_key),
        vec![a2_id.clone(), a1["id"].as_str().unwrap().to_string()]
    );
    assert!(by_key.iter().all(|r| r["key"] == "model-a"), "{by_key:?}");
    assert_eq!(api.all_runs(&other, "key=model-a").await.len(), 1);

    // The population, by key, a page of one at a time.
    let all = members(api, &acme, "", 1).await;
    assert_eq!(
        lines(&all),
        [
            line("model-a", "failed", 2),
            line("model-b", "succeeded", 0),
            line("model-c", "failed", 1)
        ]
    );
    assert_eq!(all[0]["run"], a2_id.as_str(), "{all:?}");
    assert_eq!(all[0]["error_code"], "Unavailable", "{all:?}");
    assert_eq!(all[0]["tenant"], "acme", "{all:?}");
    let version = all[0]["version"].as_str().expect("a version").to_string();
    // Each filter.
    assert_eq!(
        lines(&members(api, &acme, "&failed_in_a_row=2", 100).await),
        [line("model-a", "failed", 2)]
    );
    assert_eq!(
        lines(&members(api, &acme, "&failed_in_a_row=1", 100).await),
        [line("model-a", "failed", 2), line("model-c", "failed", 1)]
    );
    assert_eq!(
        lines(&members(api, &acme, "&status=succeeded", 100).await),
        [line("model-b", "succeeded", 0)]
    );
    assert_eq!(
        members(api, &acme, &format!("&version={version}"), 100)
            .await
            .len(),
        3
    );
    assert!(
        members(api, &acme, "&version=sha256:00", 100)
            .await
            .is_empty()
    );
    // The counts, kept as runs changed.
    let counts = api
        .get(Some(&acme), "/v1/population/counts?flow=Retrain")
        .await
        .ok("counts");
    assert_eq!(counts["keys"], 3, "{counts}");
    assert_eq!(
        counts["by_status"],
        json!({"failed": 2, "succeeded": 1}),
        "{counts}"
    );
    assert_eq!(counts["by_version"][&version], 3, "{counts}");

    // Tenants: each sees its own keys; an admin every tenant's, or one's.
    assert_eq!(
        lines(&members(api, &other, "", 100).await),
        [line("model-a", "succeeded", 0)]
    );
    let r = api
        .get(Some(&other), "/v1/population?flow=Retrain&tenant=acme")
        .await;
    assert_eq!(
        r.expect_error(403, "another tenant's population"),
        "forbidden"
    );
    let r = api
        .get(
            Some(&other),
            "/v1/population/counts?flow=Retrain&tenant=acme",
        )
        .await;
    assert_eq!(r.expect_error(403, "another tenant's counts"), "forbidden");
    let everyone = members(api, ADMIN, "", 2).await;
    assert_eq!(
        everyone
            .iter()
            .map(|m| format!(
                "{}/{}",
                m["key"].as_str().unwrap(),
                m["tenant"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [
            "model-a/acme",
            "model-a/other",
            "model-b/acme",
            "model-c/acme"
        ]
    );
    assert_eq!(members(api, ADMIN, "&tenant=other", 100).await.len(), 1);
    let counts = api
        .get(Some(ADMIN), "/v1/population/counts?flow=Retrain")
        .await
        .ok("counts");
    assert_eq!(
        counts["by_status"],
        json!({"failed": 2, "succeeded": 2}),
        "{counts}"
    );

    // Bad questions get clear answers.
    for (path, code) in [
        ("/v1/population", "flow_required"),
        ("/v1/population?flow=", "flow_required"),
        (
            "/v1/population?flow=Retrain&status=broken",
            "invalid_status",
        ),
        (
            "/v1/population?flow=Retrain&failed_in_a_row=0",
            "invalid_failed_in_a_row",
        ),
        ("/v1/population?flow=Retrain&cursor=nope", "invalid_cursor"),
        ("/v1/population?flow=Retrain&colour=red", "invalid_query"),
        ("/v1/population/counts", "flow_required"),
    ] {
        let r = api.get(Some(&acme), path).await;
        assert_eq!(r.expect_error(400, path), code, "{path}");
    }

    // A retry of model-a's latest run takes its key back to running, then
    // to succeeded: no longer failed, nor in a row.
    healthy.store(true, Ordering::SeqCst);
    api.post(Some(&acme), &format!("/v1/runs/{a2_id}/retry"), &json!({}))
        .await
        .ok("retry");
    let done = api.wait_finished(&acme, &a2_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    api.history_caught_up().await;
    assert_eq!(
        lines(&members(api, &acme, "", 100).await),
        [
            line("model-a", "succeeded", 0),
            line("model-b", "succeeded", 0),
            line("model-c", "failed", 1)
        ]
    );
    assert!(
        members(api, &acme, "&failed_in_a_row=2", 100)
            .await
            .is_empty()
    );
    let counts = api
        .get(Some(&acme), "/v1/population/counts?flow=Retrain")
        .await
        .ok("counts");
    assert_eq!(
        counts["by_status"],
        json!({"failed": 1, "succeeded": 2}),
        "{counts}"
    );

    // A purge of a tenant leaves none of its population.
    api.delete(Some(ADMIN), "/v1/tenants/other")
        .await
        .ok("purge");
    assert!(
        members(api, ADMIN, "&tenant=other", 100).await.is_empty(),
        "a purged tenant's keys are gone"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_the_population_on_sqlite() {
    let s = TestServer::start("population").await;
    keys_and_the_population(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_the_population_on_postgres_and_nats() {
    let Some(schema) = postgres::Schema::create("population").await else {
        return;
    };
    let Some(prefix) = nats::Prefix::create("population").await else {
        return;
    };
    let s = TestServer::start_with("population-pg", |o| {
        o.store = schema.url.clone();
        o.bus = prefix.url.clone();
    })
    .await;
    keys_and_the_population(&s).await;
    s.stop().await;
}
