//! End-to-end tests of the runtime: a whole server per test (store, engine,
//! scheduler, history, API) on a temp data dir, driven over HTTP.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use serde_json::{Value, json};

// ---- a remote system over HTTP ----------------------------------------------

/// One invocation the remote system received.
#[derive(Debug, Clone)]
struct Invocation {
    path: String,
    header_key: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct Remote {
    calls: Arc<Mutex<Vec<Invocation>>>,
    /// What the runtime answered to each callback.
    callbacks: Arc<Mutex<Vec<(u16, Value)>>>,
    http: reqwest::Client,
}

impl Remote {
    fn record(&self, path: &str, headers: &HeaderMap, body: &Value) {
        self.calls.lock().unwrap().push(Invocation {
            path: path.to_string(),
            header_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: body.clone(),
        });
    }

    fn calls(&self, path: &str) -> Vec<Invocation> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// Calls back on `url` with `body` after a short delay, in the background.
    fn call_back_later(&self, url: String, body: Value) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let resp = me.http.post(&url).json(&body).send().await;
            let entry = match resp {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.json::<Value>().await.unwrap_or(Value::Null))
                }
                Err(e) => (0, Value::String(e.to_string())),
            };
            me.callbacks.lock().unwrap().push(entry);
        });
    }
}

/// `/work`: attempt 1 answers 500; attempt 2 accepts and calls back with a
/// retryable error; attempt 3 accepts and calls back with `x * 10`.
async fn work(
    State(r): State<Remote>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    r.record("/work", &headers, &body);
    let attempt = body["attempt"].as_u64().unwrap_or(0);
    let url = body["callback_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match attempt {
        1 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"code": "Overloaded", "message": "too busy"}})),
        ),
        2 => {
            r.call_back_later(
                url,
                json!({"error": {"code": "Flaky", "message": "lost a node"}, "retryable": true}),
            );
            (StatusCode::ACCEPTED, Json(json!({"accepted": true})))
        }
        _ => {
            let x = body["inputs"]["x"].as_i64().unwrap_or(0);
            r.call_back_later(url, json!({"output": x * 10}));
            (StatusCode::ACCEPTED, Json(json!({"accepted": true})))
        }
    }
}

/// `/lookup`: a synchronous call; the response body is the output.
async fn lookup(
    State(r): State<Remote>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    r.record("/lookup", &headers, &body);
    let x = body["inputs"]["x"].as_i64().unwrap_or(0);
    (StatusCode::OK, Json(json!(x + 1)))
}

/// `/hang`: accepts and never calls back.
async fn hang(
    State(r): State<Remote>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    r.record("/hang", &headers, &body);
    (StatusCode::ACCEPTED, Json(json!({"accepted": true})))
}

/// `/cancel`: takes notice that an attempt is no longer wanted.
async fn cancel(
    State(r): State<Remote>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    r.record("/cancel", &headers, &body);
    StatusCode::NO_CONTENT
}

/// The attempts of `run` the remote system was told are cancelled, in order.
fn cancels_of(remote: &Remote, run: &str) -> Vec<u64> {
    let mut got: Vec<u64> = remote
        .calls("/cancel")
        .iter()
        .filter(|c| c.body["run"] == run)
        .map(|c| {
            assert_eq!(c.body["step"], "h", "{}", c.body);
            assert_eq!(c.body["tenant"], "acme", "{}", c.body);
            c.body["attempt"].as_u64().expect("attempt")
        })
        .collect();
    got.sort();
    got
}

async fn start_remote() -> (Remote, String, tokio::task::JoinHandle<()>) {
    let remote = Remote {
        calls: Arc::default(),
        callbacks: Arc::default(),
        http: reqwest::Client::new(),
    };
    let app = Router::new()
        .route("/work", post(work))
        .route("/lookup", post(lookup))
        .route("/hang", post(hang))
        .route("/cancel", post(cancel))
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

// ---- approval and registry (the `Pipeline` flow of `common::SOURCE`) -----------

async fn wait_approval(api: &Api, token: &str, run: &str) -> Value {
    poll_until(&format!("the approval of run {run}"), DEADLINE, || async {
        let list = api
            .get(Some(token), "/v1/approvals")
            .await
            .ok("list approvals");
        list.as_array()
            .and_then(|a| a.iter().find(|x| x["run"] == run).cloned())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_then_registry_with_lineage() {
    let s = TestServer::start("approval").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    // Only `me@example.com` may decide.
    let source = SOURCE.replace(
        "approval { channel: \"ui\" }",
        "approval { approvers: [\"me@example.com\"], channel: \"ui\" }",
    );
    let d = api
        .deploy_source(&token, &[("pipeline.eflow", &source)])
        .await;
    assert_eq!(d["tenant"], "acme");
    assert_eq!(d["env"], "dev");

    // Approved: registered with lineage.
    let run = api
        .start(&token, "Pipeline", json!({"model_name": "churn"}))
        .await;
    let id = run["id"].as_str().expect("run id").to_string();
    let approval = wait_approval(api, &token, &id).await;
    assert_eq!(approval["step"], "decision", "approval: {approval}");
    assert_eq!(approval["tenant"], "acme");
    assert!(
        approval.get("decided_at").is_none(),
        "still pending: {approval}"
    );
    let running = api.run(&token, &id).await;
    assert_eq!(running["status"], "running", "{running}");

    // Who may decide is the binding's approvers: the tenant's default token
    // may not, a token made for an approver may, and is the reviewer recorded.
    assert_eq!(
        approval["approvers"],
        json!(["me@example.com"]),
        "{approval}"
    );
    let refused = api
        .post(
            Some(&token),
            &format!("/v1/runs/{id}/approvals/decision"),
            &json!({"approve": true}),
        )
        .await;
    assert_eq!(
        refused.expect_error(403, "not an approver"),
        "not_an_approver"
    );
    let impostor = api
        .post(
            Some(&token),
            &format!("/v1/runs/{id}/approvals/decision"),
            &json!({"approve": true, "reviewer": "me@example.com"}),
        )
        .await;
    assert_eq!(
        impostor.expect_error(400, "a reviewer named in the body"),
        "invalid_json"
    );
    let me = api
        .post(
            Some(ADMIN),
            "/v1/tenants/acme/tokens",
            &json!({"name": "me@example.com"}),
        )
        .await
        .ok("a token for an approver");
    let me = me["secret"].as_str().expect("a secret").to_string();
    let decided = api
        .post(
            Some(&me),
            &format!("/v1/runs/{id}/approvals/decision"),
            &json!({"approve": true, "comment": "looks good"}),
        )
        .await
        .ok("approve");
    assert!(decided.get("decided_at").is_some(), "{decided}");
    assert_eq!(
        decided["decision"]["reviewer"], "me@example.com",
        "{decided}"
    );
    // Deciding twice is refused.
    let again = api
        .post(
            Some(&me),
            &format!("/v1/runs/{id}/approvals/decision"),
            &json!({"approve": false}),
        )
        .await;
    assert_eq!(again.expect_error(409, "decide twice"), "already_decided");

    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "succeeded", "run: {done}");
    let result = &done["result"];
    assert_eq!(result["name"], "churn", "result: {result}");
    assert_eq!(result["version"], 1, "result: {result}");
    assert_eq!(result["stage"], "Staging", "result: {result}");

    let registry = api.get(Some(&token), "/v1/registry").await.ok("registry");
    let entries = registry.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "registry: {registry}");
    let e = &entries[0];
    assert_eq!(e["kind"], "model");
    assert_eq!(e["name"], "churn");
    assert_eq!(e["version"], 1);
    assert_eq!(e["lineage"]["run"], id.as_str(), "lineage: {e}");
    assert_eq!(e["lineage"]["step"], "version", "lineage: {e}");
    assert_eq!(e["lineage"]["inputs"]["name"], "churn", "lineage: {e}");

    // Rejected: the run succeeds with no version and registers nothing.
    let run = api
        .start(&token, "Pipeline", json!({"model_name": "churn"}))
        .await;
    let id2 = run["id"].as_str().expect("run id").to_string();
    wait_approval(api, &token, &id2).await;
    api.post(
        Some(&me),
        &format!("/v1/runs/{id2}/approvals/decision"),
        &json!({"approve": false, "comment": "no"}),
    )
    .await
    .ok("reject");
    let done = api.wait_finished(&token, &id2).await;
    assert_eq!(done["status"], "succeeded", "run: {done}");
    assert!(
        done.get("result").is_none_or(Value::is_null),
        "no version: {done}"
    );
    let registry = api.get(Some(&token), "/v1/registry").await.ok("registry");
    assert_eq!(
        registry.as_array().map(Vec::len),
        Some(1),
        "registry: {registry}"
    );

    s.stop().await;
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_the_retraining_example() {
    let s = TestServer::start("retraining").await;
    let api = &s.api;
    api.create_tenant("acme", json!({})).await;
    let ir =
        eflow_runtime::cli::load_ir(&[example("retraining.eflow")]).expect("the example compiles");
    let d = api
        .post(
            Some(ADMIN),
            "/v1/flows",
            &json!({"tenant": "acme", "env": "dev", "ir": ir}),
        )
        .await
        .ok("deploy the example");
    assert_eq!(d["env"], "dev");
    assert_eq!(d["schedules"], 1, "{d}");
    assert!(
        d["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .any(|f| f["name"] == "Retrain"),
        "{d}"
    );
    // Deploying the same IR again gives the same bundle.
    let d2 = api
        .post(
            Some(ADMIN),
            "/v1/flows",
            &json!({"tenant": "acme", "env": "dev", "ir": ir}),
        )
        .await
        .ok("deploy again");
    assert_eq!(d["bundle"], d2["bundle"]);
    // An environment with no bindings is refused.
    let r = api
        .post(
            Some(ADMIN),
            "/v1/flows",
            &json!({"tenant": "acme", "env": "staging", "ir": ir}),
        )
        .await;
    assert_eq!(
        r.expect_error(400, "deploy to an unbound env"),
        "missing_binding"
    );
    // It names the steps as bindings write them, with their module.
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`Train` (from `std/ml`, used by flow `Retrain`)"),
        "{message}"
    );

    let schedules = api
        .get(Some(ADMIN), "/v1/schedules?tenant=acme")
        .await
        .ok("schedules");
    let sch = &schedules.as_array().expect("a list")[0];
    assert_eq!(sch["cron"], "0 3 * * MON", "{sch}");
    assert_eq!(sch["timezone"], "Europe/Berlin", "{sch}");
    assert_eq!(sch["overlap"], "skip", "{sch}");
    assert_eq!(sch["catchup"], "once", "{sch}");
    assert_eq!(sch["paused"], false, "{sch}");
    assert!(sch.get("next_fire").is_some(), "{sch}");

    // A required parameter left out is refused.
    let r = api
        .post(
            Some(ADMIN),
            "/v1/runs",
            &json!({"flow": "Retrain", "tenant": "acme"}),
        )
        .await;
    assert_eq!(
        r.expect_error(400, "start without model_name"),
        "invalid_input"
    );

    let run = api
        .post(
            Some(ADMIN),
            "/v1/runs",
            &json!({"flow": "Retrain", "tenant": "acme", "input": {"model_name": "churn"}}),
        )
        .await
        .ok("start Retrain");
    let id = run["id"].as_str().expect("id").to_string();
    assert_eq!(run["flow"], "Retrain");
    assert_eq!(run["input"]["model_name"], "churn");
    let running = poll_until("the snapshot step to run", DEADLINE, || async {
        let r = api.run(ADMIN, &id).await;
        let snap = r["steps"]
            .as_array()?
            .iter()
            .find(|st| st["id"] == "snapshot")?
            .clone();
        (snap["status"] == "running" || snap["status"] == "succeeded").then_some(r)
    })
    .await;
    assert_eq!(running["status"], "running", "{running}");
    let cancelled = api
        .post(
            Some(ADMIN),
            &format!("/v1/runs/{id}/cancel"),
            &json!({"reason": "test over"}),
        )
        .await
        .ok("cancel");
    let _ = cancelled;
    let done = api.wait_finished(ADMIN, &id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    s.stop().await;
}

// ---- remote steps over HTTP ----------------------------------------------------

fn remote_source(base: &str) -> String {
    format!(
        r#"
remote step Work(x: Int) -> Int raises Flaky
call step Lookup(x: Int) -> Int

flow Remote(x: Int) -> Int {{
    let a = Work(x: x)
        retry 3
        backoff fixed(100ms)
    let b = Lookup(x: a)
    return b
}}

bindings dev {{
    Work = http {{ url: "{base}/work" }}
    Lookup = http {{ url: "{base}/lookup" }}
}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_remote_step_retries_then_succeeds() {
    let (remote, base, remote_task) = start_remote().await;
    let s = TestServer::start("http-remote").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("remote.eflow", &remote_source(&base))])
        .await;
    let run = api.start(&token, "Remote", json!({"x": 4})).await;
    let id = run["id"].as_str().expect("id").to_string();
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "succeeded", "run: {done}");
    assert_eq!(
        done["result"], 41,
        "Work gives 4 * 10, Lookup adds 1: {done}"
    );

    let work = remote.calls("/work");
    assert_eq!(work.len(), 3, "three attempts of Work: {work:?}");
    let mut keys: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for c in &work {
        let b = &c.body;
        assert_eq!(b["run"], id.as_str(), "{b}");
        assert_eq!(b["tenant"], "acme", "{b}");
        assert_eq!(b["step"], "a", "{b}");
        // The contract is named with its module: `remote.Work`.
        assert!(
            b["contract"]
                .as_str()
                .is_some_and(|c| c == "Work" || c.ends_with(".Work")),
            "{b}"
        );
        assert_eq!(b["inputs"], json!({"x": 4}), "{b}");
        let key = b["idempotency_key"]
            .as_str()
            .expect("idempotency_key")
            .to_string();
        assert_eq!(
            c.header_key.as_deref(),
            Some(key.as_str()),
            "header and body keys agree: {b}"
        );
        assert!(
            b["callback_url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&s.addr())),
            "a callback_url on this server: {b}"
        );
        keys.entry(b["attempt"].as_u64().expect("attempt"))
            .or_default()
            .insert(key);
    }
    assert_eq!(
        keys.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{keys:?}"
    );
    for (attempt, k) in &keys {
        assert_eq!(
            k.len(),
            1,
            "attempt {attempt} was invoked with different keys: {k:?}"
        );
    }
    let distinct: BTreeSet<&String> = keys.values().flatten().collect();
    assert_eq!(distinct.len(), 3, "each attempt has its own key: {keys:?}");

    // The call step: invoked once, without a callback_url, its response the output.
    let lookup = remote.calls("/lookup");
    assert_eq!(lookup.len(), 1, "{lookup:?}");
    assert_eq!(lookup[0].body["inputs"], json!({"x": 40}));
    assert!(
        lookup[0].body.get("callback_url").is_none(),
        "a call has no callback: {:?}",
        lookup[0].body
    );
    assert!(lookup[0].header_key.is_some());

    // Both callbacks were accepted and applied.
    let callbacks = poll_until("both callbacks answered", DEADLINE, || async {
        let c = remote.callbacks.lock().unwrap().clone();
        (c.len() >= 2).then_some(c)
    })
    .await;
    for (status, body) in &callbacks {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["applied"], true, "{body}");
    }
    // A callback sent twice is accepted but not applied.
    let url = work
        .iter()
        .find(|c| c.body["attempt"] == 3)
        .and_then(|c| c.body["callback_url"].as_str())
        .expect("attempt 3's callback_url")
        .to_string();
    let r = api
        .send(api.http.post(&url).json(&json!({"output": 1})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["applied"], false, "{}", r.body);
    let after = api.run(&token, &id).await;
    assert_eq!(
        after["result"], 41,
        "a late callback changes nothing: {after}"
    );
    // A forged callback token is refused.
    let forged = url.replace("/v1/callbacks/", "/v1/callbacks/x");
    let r = api
        .send(api.http.post(&forged).json(&json!({"output": 1})))
        .await;
    assert_eq!(
        r.expect_error(401, "forged callback"),
        "invalid_callback_token"
    );

    s.stop().await;
    remote_task.abort();
}

// ---- timers ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_step_completes_after_its_duration() {
    let (s, clock) = TestServer::start_with_manual_clock("wait", |_| {}).await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let src = r#"
from "std/time" import Wait

flow Sleepy() -> Timestamp {
    let woke = Wait(duration: 700ms)
    return woke
}
"#;
    api.deploy_source(&token, &[("sleepy.eflow", src)]).await;
    let run = api.start(&token, "Sleepy", json!({})).await;
    let id = run["id"].as_str().expect("id").to_string();
    // A millisecond short of its duration, the step still waits.
    clock.advance(699);
    api.wait_status(&token, &id, &["running"]).await;
    clock.advance(1);
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let started = ms(&done["started_at"]);
    let woke = ms(&done["result"]);
    assert_eq!(
        woke,
        started + 700,
        "woke when the clock read its time: {done}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_timeout_fails_attempts_then_the_run() {
    let (remote, base, remote_task) = start_remote().await;
    let s = TestServer::start("timeout").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let src = format!(
        r#"
remote step Hang(x: Int) -> Int

flow Hangs(x: Int) -> Int {{
    let h = Hang(x: x)
        retry 2
        backoff fixed(100ms)
        timeout 500ms
    return h
}}

bindings dev {{
    Hang = http {{ url: "{base}/hang", cancel_url: "{base}/cancel" }}
}}
"#
    );
    api.deploy_source(&token, &[("hang.eflow", &src)]).await;
    let run = api.start(&token, "Hangs", json!({"x": 1})).await;
    let id = run["id"].as_str().expect("id").to_string();
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "Timeout", "{done}");
    assert_eq!(done["error"]["step"], "h", "{done}");
    let calls = remote.calls("/hang");
    let attempts: Vec<u64> = calls
        .iter()
        .filter_map(|c| c.body["attempt"].as_u64())
        .collect();
    assert_eq!(
        attempts,
        vec![1, 2],
        "retry 2 means two attempts: {calls:?}"
    );
    let started = ms(&done["started_at"]);
    let _ = started;

    // A callback for a timed-out attempt comes too late: accepted, not applied.
    let url = calls[0].body["callback_url"]
        .as_str()
        .expect("callback_url")
        .to_string();
    let r = api
        .send(api.http.post(&url).json(&json!({"output": 5})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["applied"], false, "{}", r.body);
    let after = api.run(&token, &id).await;
    assert_eq!(after["status"], "failed", "{after}");

    // The remote system was told of each attempt that timed out.
    let told = poll_until("cancellations of both attempts", DEADLINE, || async {
        let got = cancels_of(&remote, &id);
        (got.len() >= 2).then_some(got)
    })
    .await;
    assert_eq!(told, vec![1, 2]);

    // Cancelling a run tells the remote system of its attempt in flight.
    let second = api.start(&token, "Hangs", json!({"x": 2})).await;
    let second = second["id"].as_str().expect("id").to_string();
    poll_until("the second run's invocation", DEADLINE, || async {
        remote
            .calls("/hang")
            .iter()
            .any(|c| c.body["run"] == second.as_str())
            .then_some(())
    })
    .await;
    api.post(
        Some(&token),
        &format!("/v1/runs/{second}/cancel"),
        &json!({}),
    )
    .await
    .ok("cancel");
    let told = poll_until(
        "the cancellation of the second run's attempt",
        DEADLINE,
        || async {
            let got = cancels_of(&remote, &second);
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(told, vec![1]);
    s.stop().await;
    remote_task.abort();
}

// ---- subflows ----------------------------------------------------------------------

const FAN: &str = r#"
remote step Square(x: Int) -> Int

flow Sub(x: Int) -> Int {
    let y = Square(x: x)
    return y
}

flow Fan(xs: List<Int>) -> List<Int> {
    let ys = for x in xs join all {
        Sub(x: x)
    }
    return ys
}

bindings dev {
    Square = sim { duration: 100ms, failure_rate: 0.0 }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_over_subflows_joins_all() {
    let s = TestServer::start("fanout").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("fan.eflow", FAN)]).await;
    let run = api.start(&token, "Fan", json!({"xs": [1, 2, 3]})).await;
    let id = run["id"].as_str().expect("id").to_string();
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let result = done["result"].as_array().expect("a list result").clone();
    assert_eq!(result.len(), 3, "{done}");
    for (i, r) in result.iter().enumerate() {
        let child_id = format!("{id}.ys.{i}.1");
        let child = api.run(&token, &child_id).await;
        assert_eq!(child["status"], "succeeded", "{child}");
        assert_eq!(child["flow"], "Sub");
        assert_eq!(child["parent"], id.as_str(), "{child}");
        assert_eq!(child["input"]["x"], i as i64 + 1, "{child}");
        assert_eq!(
            &child["result"], r,
            "child {i}'s result is element {i} of the join"
        );
    }
    // History knows the children, with their parent.
    let children = poll_until("history to list the children", DEADLINE, || async {
        let runs = api.all_runs(&token, "flow=Sub").await;
        (runs.len() == 3 && runs.iter().all(|r| r["status"] == "succeeded")).then_some(runs)
    })
    .await;
    for c in &children {
        assert_eq!(c["parent"], id.as_str(), "{c}");
    }
    s.stop().await;
}

const WIDE: &str = r#"
flow Echo(x: Int) -> Int {
    return x
}

flow Wide(xs: List<Int>) -> Int {
    let ys = for x in xs join all {
        Echo(x: x)
    }
    return 0
}
"#;

/// Wider than one batch of starts (1,000) and than the results a run's view
/// shows whole: every child's result is stored once, in input order, and read
/// back a page at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_fan_out_stores_every_result_in_input_order() {
    const N: i64 = 3_000;
    let s = TestServer::start("wide-fanout").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("wide.eflow", WIDE)]).await;
    // Distinct values in a scrambled order, so that input order is checkable.
    let xs: Vec<i64> = (0..N).map(|i| (i * 7919) % N).collect();
    let run = api.start(&token, "Wide", json!({ "xs": xs })).await;
    let id = run["id"].as_str().expect("id").to_string();
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let step = &done["steps"][0];
    assert_eq!(step["status"], "succeeded", "{step}");
    assert_eq!(step["children"]["succeeded"], N, "{step}");
    assert!(
        step.get("output").is_none(),
        "too long to show whole: {step}"
    );

    let mut got = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let path = match after {
            Some(a) => format!("/v1/runs/{id}/steps/ys/results?limit=700&after={a}"),
            None => format!("/v1/runs/{id}/steps/ys/results?limit=700"),
        };
        let page = api.get(Some(&token), &path).await.ok("a page of results");
        let items = page.as_array().expect("a list").clone();
        let Some(last) = items.last() else { break };
        after = last["index"].as_u64();
        got.extend(items);
    }
    assert_eq!(got.len(), N as usize);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r["index"], i as u64, "{r}");
        assert_eq!(
            r["output"], xs[i],
            "child {i}'s result is element {i} of the join"
        );
    }
    // Not a fan-out, not a step: clear answers.
    let other = api
        .get(Some(&token), &format!("/v1/runs/{id}/steps/nope/results"))
        .await;
    other.expect_error(404, "results of a step the flow does not have");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parent_cancels_its_children() {
    let s = TestServer::start("cancel-children").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let src = FAN.replace("duration: 100ms", "duration: 1h");
    api.deploy_source(&token, &[("fan.eflow", &src)]).await;
    let run = api.start(&token, "Fan", json!({"xs": [1, 2, 3]})).await;
    let id = run["id"].as_str().expect("id").to_string();
    let children: Vec<String> = (0..3).map(|i| format!("{id}.ys.{i}.1")).collect();
    for c in &children {
        api.wait_status(&token, c, &["running"]).await;
    }
    let r = api
        .post(
            Some(&token),
            &format!("/v1/runs/{id}/cancel"),
            &json!({"reason": "enough"}),
        )
        .await
        .ok("cancel the parent");
    let _ = r;
    let parent = api.wait_finished(&token, &id).await;
    assert_eq!(parent["status"], "cancelled", "{parent}");
    for c in &children {
        let child = api.wait_finished(&token, c).await;
        assert_eq!(child["status"], "cancelled", "child {c}: {child}");
    }
    // History sees them cancelled too.
    poll_until("history to show every run cancelled", DEADLINE, || async {
        let runs = api.all_runs(&token, "status=cancelled").await;
        (runs.len() == 4).then_some(())
    })
    .await;
    // Cancelling a finished run is refused.
    let again = api
        .post(Some(&token), &format!("/v1/runs/{id}/cancel"), &json!({}))
        .await;
    let code = again.expect_error(409, "cancel a cancelled run");
    assert!(
        code == "run_finished" || code == "rejected",
        "{}",
        again.text
    );
    s.stop().await;
}

// ---- history -------------------------------------------------------------------------

const MIXED: &str = r#"
remote step Quick(x: Int) -> Int
remote step Broken(x: Int) -> Int

flow Ok(x: Int) -> Int {
    let q = Quick(x: x)
    return q
}

flow Bad(x: Int) -> Int {
    let b = Broken(x: x)
    return b
}

bindings dev {
    Quick = sim { duration: 50ms, failure_rate: 0.0 }
    Broken = sim { duration: 50ms, failure_rate: 1.0 }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_run_is_listed_at_once() {
    let s = TestServer::start("read-your-writes").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("mixed.eflow", MIXED)]).await;
    // No polling: a list right after a start answers with what was committed before it.
    for i in 0..20 {
        let id = api.start(&token, "Ok", json!({"x": i})).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let listed = api.all_runs(&token, "limit=100").await;
        assert!(
            listed.iter().any(|r| r["id"] == id.as_str()),
            "run {id} is not in the list right after its start: {listed:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_and_pagination() {
    let s = TestServer::start("history").await;
    let api = &s.api;
    let token = api.create_tenant("hist", json!({})).await;
    let other = api.create_tenant("other", json!({})).await;
    api.deploy_source(&token, &[("mixed.eflow", MIXED)]).await;
    api.deploy_source(&other, &[("mixed.eflow", MIXED)]).await;
    let mut ok = BTreeSet::new();
    let mut bad = BTreeSet::new();
    for i in 0..3 {
        ok.insert(
            api.start(&token, "Ok", json!({"x": i})).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for i in 0..2 {
        bad.insert(
            api.start(&token, "Bad", json!({"x": i})).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let foreign = api.start(&other, "Bad", json!({"x": 9})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in ok.iter().chain(&bad) {
        api.wait_finished(&token, id).await;
    }
    api.wait_finished(&other, &foreign).await;
    let all: BTreeSet<String> = ok.union(&bad).cloned().collect();

    // History is eventually consistent: wait until it shows every run finished.
    poll_until("history to hold every run, finished", DEADLINE, || async {
        let runs = api.all_runs(&token, "limit=100").await;
        let done = runs.len() == 5
            && runs
                .iter()
                .all(|r| r["status"] == "succeeded" || r["status"] == "failed");
        done.then_some(())
    })
    .await;
    // Stats say when the history has written everything the engine committed.
    api.history_caught_up().await;

    let set = |runs: Vec<Value>| ids(&runs).into_iter().collect::<BTreeSet<_>>();
    for (query, code) in [
        ("status=bogus", "invalid_status"),
        ("since=yesterday", "invalid_time"),
    ] {
        let r = api.get(Some(&token), &format!("/v1/runs?{query}")).await;
        assert_eq!(r.expect_error(400, query), code);
    }
    let failed = api.all_runs(&token, "status=failed").await;
    assert_eq!(set(failed.clone()), bad, "status=failed: {failed:?}");
    for r in &failed {
        assert_eq!(r["error_code"], "SimulatedFailure", "{r}");
        assert_eq!(r["failed_step"], "b", "{r}");
        assert_eq!(r["flow"], "Bad", "{r}");
    }
    assert_eq!(
        set(api.all_runs(&token, "error=SimulatedFailure").await),
        bad
    );
    assert_eq!(set(api.all_runs(&token, "step=b").await), bad);
    assert_eq!(set(api.all_runs(&token, "status=succeeded").await), ok);
    assert_eq!(set(api.all_runs(&token, "flow=Ok").await), ok);
    assert_eq!(set(api.all_runs(&token, "flow=Bad").await), bad);
    assert!(
        api.all_runs(&token, "flow=Bad&status=succeeded")
            .await
            .is_empty()
    );
    assert!(api.all_runs(&token, "error=Timeout").await.is_empty());
    assert!(
        api.all_runs(&token, "until=1970-01-02T00:00:00Z")
            .await
            .is_empty(),
        "nothing was created before 1970-01-02"
    );
    assert_eq!(
        set(api.all_runs(&token, "since=1970-01-02T00:00:00Z").await),
        all
    );
    // An admin sees both tenants, or one when it names it.
    assert_eq!(api.all_runs(ADMIN, "limit=100").await.len(), 6);
    assert_eq!(set(api.all_runs(ADMIN, "tenant=hist").await), all);
    assert_eq!(
        set(api.all_runs(ADMIN, "tenant=other").await),
        BTreeSet::from([foreign.clone()])
    );

    // Cursor pagination visits every run exactly once, newest first.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    let mut last_created = i64::MAX;
    loop {
        let mut path = "/v1/runs?limit=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api.get(Some(&token), &path).await.ok("a page");
        pages += 1;
        let items = page["items"].as_array().expect("items").clone();
        assert!(items.len() <= 2, "limit=2: {page}");
        for it in &items {
            let c = ms(&it["created_at"]);
            assert!(c <= last_created, "newest first: {page}");
            last_created = c;
        }
        seen.extend(ids(&items));
        match page.get("next").and_then(Value::as_str) {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
        assert!(pages < 10, "too many pages");
    }
    assert_eq!(seen.len(), 5, "every run once: {seen:?}");
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        all,
        "{seen:?}"
    );
    assert_eq!(pages, 3, "5 runs, 2 a page");

    let bad_cursor = api.get(Some(&token), "/v1/runs?cursor=not-a-cursor").await;
    assert_eq!(
        bad_cursor.expect_error(400, "a cursor not given out"),
        "invalid_cursor"
    );
    s.stop().await;
}

// ---- schedules -------------------------------------------------------------------------

const TICKER: &str = r#"
remote step Tock(x: Int) -> Int

flow Ticker(x: Int = 1) -> Int {
    schedule "* * * * * *"
        overlap allow_all
        catchup skip
    let t = Tock(x: x)
    return t
}

bindings dev {
    Tock = sim { duration: 10ms, failure_rate: 0.0 }
}
"#;

/// A second schedule, deployed while the ticker is paused: the scheduler
/// handling its fire times shows it looked while the ticker was paused.
const WITNESS: &str = r#"
remote step Look(x: Int) -> Int

flow Witness(x: Int = 1) -> Int {
    schedule "* * * * * *"
        overlap allow_all
        catchup skip
    let l = Look(x: x)
    return l
}

bindings dev {
    Look = sim { duration: 10ms, failure_rate: 0.0 }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_start_runs_pause_and_backfill() {
    // One schedule partition: one loader looks at the ticker and the witness
    // in the same pass.
    let (s, clock) = TestServer::start_with_manual_clock("schedules", |o| o.partitions = 1).await;
    let now_ms = || {
        use eflow_runtime::clock::Clock;
        clock.now_ms() as i64
    };
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let d = api.deploy_source(&token, &[("ticker.eflow", TICKER)]).await;
    assert_eq!(d["schedules"], 1, "{d}");
    let schedules = api.get(Some(&token), "/v1/schedules").await.ok("schedules");
    let sch = schedules.as_array().expect("a list")[0].clone();
    let sid = sch["id"].as_str().expect("schedule id").to_string();
    assert_eq!(sch["cron"], "* * * * * *", "{sch}");
    assert_eq!(sch["overlap"], "allow_all", "{sch}");
    assert!(
        sch.get("last_fire").is_none(),
        "no run started yet, so no last fire: {sch}"
    );

    // The schedule starts runs, one a second, with ids derived from it.
    for _ in 0..2 {
        next_second(api, &token, &clock, &sid).await;
    }
    let started = poll_until("the schedule to start two runs", DEADLINE, || async {
        let runs = api.all_runs(&token, "flow=Ticker").await;
        (runs.len() >= 2).then_some(runs)
    })
    .await;
    let listed = api.get(Some(&token), "/v1/schedules").await.ok("schedules");
    let last = listed[0]["last_fire"]
        .as_str()
        .expect("a last fire once runs started");
    let last = eflow_core::time::parse_rfc3339(last).unwrap() as u64;
    assert_eq!(
        last % 1000,
        0,
        "a fire time of `* * * * * *` is a whole second: {last}"
    );
    assert!(
        last as i64 <= now_ms(),
        "the last fire is not in the future: {listed}"
    );
    for r in &started {
        let id = r["id"].as_str().unwrap();
        assert!(
            id.starts_with(&format!("{sid}.")),
            "a run id derived from the schedule: {id}"
        );
        let run = api.run(&token, id).await;
        assert_eq!(run["schedule"], sid.as_str(), "{run}");
    }

    // Paused: no new run.
    let paused = api
        .post(
            Some(&token),
            &format!("/v1/schedules/{sid}/pause"),
            &json!({}),
        )
        .await
        .ok("pause");
    assert_eq!(paused["paused"], true, "{paused}");
    let paused_at = now_ms();
    // The absence of runs shows once the scheduler has looked past their
    // fire times: the witness's fire times are handled in the same passes.
    api.deploy_source(&token, &[("witness.eflow", WITNESS)])
        .await;
    for _ in 0..3 {
        next_second(api, &token, &clock, "acme.Witness.0").await;
    }
    for later in [2000, 3000] {
        let nominal = ((paused_at + later) / 1000 * 1000) as u64;
        let rid = eflow_core::schedule::run_id(&sid, nominal);
        let r = api.get(Some(&token), &format!("/v1/runs/{rid}")).await;
        assert_eq!(
            r.status, 404,
            "run {rid} started while the schedule was paused: {}",
            r.text
        );
    }
    let runs = poll_until("history to settle", DEADLINE, || async {
        let runs = api.all_runs(&token, "flow=Ticker").await;
        runs.iter()
            .all(|r| r["status"] == "succeeded")
            .then_some(runs)
    })
    .await;
    for r in &runs {
        let created = ms(&r["created_at"]);
        assert!(
            created <= paused_at + 1500,
            "run {} created at {} after the pause at {paused_at}",
            r["id"],
            r["created_at"]
        );
    }
    let sch = api.get(Some(&token), "/v1/schedules").await.ok("schedules");
    assert_eq!(sch[0]["paused"], true, "{sch}");

    // Backfill: one run per fire time in the range, inclusive, with derived ids.
    let from = "2026-01-01T00:00:00Z";
    let to = "2026-01-01T00:00:02Z";
    let b = api
        .post(
            Some(&token),
            &format!("/v1/schedules/{sid}/backfill"),
            &json!({"from": from, "to": to}),
        )
        .await
        .ok("backfill");
    let t0 = eflow_core::time::parse_rfc3339(from).unwrap() as u64;
    let expected: Vec<String> = (0..3)
        .map(|i| eflow_core::schedule::run_id(&sid, t0 + i * 1000))
        .collect();
    let got: Vec<String> = b["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected, "{b}");
    // Their steps take 10 ms.
    clock.advance(10);
    for id in &got {
        let run = api.wait_finished(&token, id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["schedule"], sid.as_str(), "{run}");
    }
    // Backfilling the same range again starts nothing new.
    let b2 = api
        .post(
            Some(&token),
            &format!("/v1/schedules/{sid}/backfill"),
            &json!({"from": from, "to": to}),
        )
        .await
        .ok("backfill again");
    assert_eq!(b2["runs"], b["runs"]);
    let r = api
        .post(
            Some(&token),
            &format!("/v1/schedules/{sid}/backfill"),
            &json!({"from": to, "to": from}),
        )
        .await;
    assert_eq!(r.expect_error(400, "a reversed range"), "invalid_range");

    // Resumed: runs start again.
    let resumed_at = now_ms();
    let r = api
        .post(
            Some(&token),
            &format!("/v1/schedules/{sid}/resume"),
            &json!({}),
        )
        .await
        .ok("resume");
    assert_eq!(r["paused"], false, "{r}");
    next_second(api, &token, &clock, &sid).await;
    poll_until("a run after the resume", DEADLINE, || async {
        let runs = api.all_runs(&token, "flow=Ticker").await;
        runs.iter()
            .any(|r| ms(&r["created_at"]) >= resumed_at)
            .then_some(())
    })
    .await;
    s.stop().await;
}

/// IR naming a connector the runtime does not know, or configuring one wrongly,
/// is refused at deploy with the binding's path and changes nothing; it is never
/// sent as `http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_an_unknown_connector_or_a_bad_configuration_is_refused() {
    let s = TestServer::start("bad-connector").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let file = s.dir.join("pipeline.eflow");
    std::fs::write(&file, SOURCE).unwrap();
    let ir = eflow_runtime::cli::load_ir(&[file]).expect("SOURCE compiles");
    // Rebinds `TrainIt` in `Pipeline` and reseals the hash, as a hand edit would.
    let edited = |binding: Value| {
        let mut bundle: eflow_ir::Bundle = serde_json::from_value(ir.clone()).unwrap();
        let flow = bundle
            .flows
            .iter_mut()
            .find(|f| f.name == "Pipeline")
            .unwrap();
        let bindings = flow.bindings.get_mut("dev").unwrap();
        let contract = bindings
            .keys()
            .find(|k| k.ends_with(".TrainIt"))
            .unwrap()
            .clone();
        bindings.insert(contract, serde_json::from_value(binding).unwrap());
        flow.seal();
        serde_json::to_value(&bundle).unwrap()
    };
    let flows = |api: &Api| {
        let api = api.clone();
        let token = token.clone();
        async move { api.get(Some(&token), "/v1/flows").await.ok("list flows") }
    };
    assert_eq!(flows(api).await, json!([]));

    for (binding, expected) in [
        (
            json!({"connector": "htp", "config": {"url": "https://train.example.com"}}),
            "bindings.dev.pipeline.TrainIt: unknown connector `htp`: did you mean `http`?",
        ),
        (
            json!({"connector": "sim", "config": {"duration": 50, "failure_rate": 2.0}}),
            "bindings.dev.pipeline.TrainIt: invalid `failure_rate` of connector `sim`: 2 is not a probability between 0 and 1",
        ),
        (
            json!({"connector": "http", "config": {"timeout": 1000}}),
            "bindings.dev.pipeline.TrainIt: connector `http` needs `url` (where to POST the invocation)",
        ),
    ] {
        let r = api
            .post(Some(&token), "/v1/flows", &json!({"ir": edited(binding)}))
            .await;
        assert_eq!(r.expect_error(400, "deploy a bad binding"), "invalid_ir");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    // Nothing was deployed, so nothing can start.
    assert_eq!(flows(api).await, json!([]));
    let r = api
        .post(
            Some(&token),
            "/v1/runs",
            &json!({"flow": "Pipeline", "input": {"model_name": "m"}}),
        )
        .await;
    assert!(r.status >= 400, "{}", r.text);

    // The same IR unedited deploys.
    api.post(Some(&token), "/v1/flows", &json!({"ir": ir}))
        .await
        .ok("deploy the compiled IR");
    assert_ne!(flows(api).await, json!([]));
    s.stop().await;
}

/// A deploy larger than `--max-deploy-bytes` is refused whole (413), and one
/// under it is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_over_the_size_limit_is_413_and_deploys_nothing() {
    let s = TestServer::start_with("deploy-limit", |o| {
        o.http.max_deploy_bytes = 64 * 1024;
    })
    .await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    // The same flow, padded with a comment past the limit.
    let padded = format!("// {}\n{SOURCE}", "x".repeat(80 * 1024));
    let r = api
        .post(
            Some(&token),
            "/v1/flows",
            &json!({"source": {"pipeline.eflow": padded}}),
        )
        .await;
    assert_eq!(
        r.expect_error(413, "a deploy over the limit"),
        "body_too_large"
    );
    let flows = api.get(Some(&token), "/v1/flows").await.ok("flows");
    assert_eq!(flows, json!([]), "nothing was deployed");
    api.deploy_source(&token, &[("pipeline.eflow", SOURCE)])
        .await;
    let flows = api.get(Some(&token), "/v1/flows").await.ok("flows");
    assert!(!flows.as_array().unwrap().is_empty(), "{flows}");
}
