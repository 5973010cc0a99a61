//! What `http` bindings may reach and how much of an answer is read: the
//! egress policy (loopback, link-local and private addresses refused unless
//! the admin allows them, server-wide or per tenant; names checked on the
//! address they resolve to; redirects not followed) and the bounds on a
//! remote system's answer (read up to `max_answer_bytes`; an output the run's
//! state cannot hold is refused before any log holds it). Real servers on
//! port 0, a real remote system on loopback.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{ADMIN, TestServer, poll_until};
use serde_json::{Value, json};

/// A marker no log may hold: it starts every oversized output.
const MARKER: &str = "OVERSIZED-OUTPUT-MARKER";

/// The remote system: records the paths it was called on.
#[derive(Clone, Default)]
struct Remote {
    calls: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl Remote {
    fn count(&self, path: &str) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.as_str() == path).count()
    }
}

/// `/lookup`: a call step's answer, `x + 1`.
async fn lookup(State(r): State<Remote>, axum::Json(body): axum::Json<Value>) -> Response {
    r.calls.lock().unwrap().push("/lookup".into());
    let x = body["inputs"]["x"].as_i64().unwrap_or(0);
    axum::Json(json!({ "output": x + 1 })).into_response()
}

/// `/big/{n}`: a call step's answer whose output is a string of `n` bytes.
async fn big(State(r): State<Remote>, Path(n): Path<usize>) -> Response {
    r.calls.lock().unwrap().push("/big".into());
    axum::Json(json!({ "output": oversized(n) })).into_response()
}

/// `/redirect`: sends the call on to `/lookup`, method and body kept.
async fn redirect(State(r): State<Remote>) -> Response {
    r.calls.lock().unwrap().push("/redirect".into());
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, "/lookup")],
    )
        .into_response()
}

/// `/work/{n}`: a remote step, accepted; its callback carries an output of `n` bytes.
async fn work(
    State(r): State<Remote>,
    Path(n): Path<usize>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    r.calls.lock().unwrap().push("/work".into());
    let url = body["callback_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let http = r.http.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let _ = http
            .post(url)
            .json(&json!({ "output": oversized(n) }))
            .send()
            .await;
    });
    (StatusCode::ACCEPTED, axum::Json(json!({"accepted": true}))).into_response()
}

fn oversized(n: usize) -> String {
    let mut s = String::with_capacity(n);
    s.push_str(MARKER);
    while s.len() < n {
        s.push('x');
    }
    s
}

/// Starts the remote system on loopback; returns it and its port.
async fn start_remote() -> (Remote, u16) {
    let remote = Remote::default();
    let app = Router::new()
        .route("/lookup", post(lookup))
        .route("/big/{n}", post(big))
        .route("/redirect", post(redirect))
        .route("/work/{n}", post(work))
        .with_state(remote.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the remote system");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (remote, port)
}

/// A flow of one call step bound to `url`, retried on retryable errors.
fn call_flow(url: &str) -> String {
    format!(
        r#"
call step Lookup(x: Int) -> Int

flow Look(x: Int) -> Int {{
    let a = Lookup(x: x)
        retry 3
        backoff fixed(100ms)
    return a
}}

bindings dev {{
    Lookup = http {{ url: "{url}", timeout: 2s }}
}}
"#
    )
}

/// A flow whose call step answers a string (`Fetch`) and whose remote step
/// calls back with one (`Work`).
fn big_flow(fetch: &str, work: &str) -> String {
    format!(
        r#"
call step Fetch(x: Int) -> String
remote step Work(x: Int) -> String

flow Big(x: Int) -> String {{
    let a = Fetch(x: x)
        retry 3
        backoff fixed(100ms)
    return a
}}

flow Async(x: Int) -> String {{
    let a = Work(x: x)
        retry 3
        backoff fixed(100ms)
    return a
}}

bindings dev {{
    Fetch = http {{ url: "{fetch}", timeout: 5s }}
    Work = http {{ url: "{work}", timeout: 5s }}
}}
"#
    )
}

/// Starts `flow` and waits for its end; returns the run.
async fn run_to_end(s: &TestServer, token: &str, flow: &str) -> Value {
    let run = s.api.start(token, flow, json!({"x": 1})).await;
    let id = run["id"].as_str().expect("id").to_string();
    s.api.wait_finished(token, &id).await
}

fn error_of(run: &Value) -> (String, String) {
    let code = run["error"]["code"].as_str().unwrap_or_default();
    let message = run["error"]["message"].as_str().unwrap_or_default();
    (code.to_string(), message.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_until_the_admin_allows_it_for_the_tenant() {
    let (remote, port) = start_remote().await;
    // The server's default policy: nothing but the public internet.
    let s = TestServer::start_with("egress-tenant", |o| o.allow_egress.clear()).await;
    let api = &s.api;
    let acme = api.create_tenant("acme", json!({})).await;
    let other = api.create_tenant("other", json!({})).await;
    let source = call_flow(&format!("http://127.0.0.1:{port}/lookup"));
    api.deploy_source(&acme, &[("look.eflow", &source)]).await;
    api.deploy_source(&other, &[("look.eflow", &source)]).await;

    let done = run_to_end(&s, &acme, "Look").await;
    assert_eq!(done["status"], "failed", "{done}");
    let (code, message) = error_of(&done);
    assert_eq!(code, "EgressRefused", "{done}");
    assert!(
        message.contains("127.0.0.1 (loopback)") && message.contains("--allow-egress 127.0.0.1"),
        "the message names the address and how to allow it: {message}"
    );
    assert_eq!(
        remote.count("/lookup"),
        0,
        "nothing reached the remote system"
    );

    // Only an admin sets a tenant's egress rules.
    let denied = api
        .send(
            api.http
                .patch(format!("{}/v1/tenants/acme", api.base))
                .bearer_auth(&acme)
                .json(&json!({"allow_egress": ["127.0.0.1"]})),
        )
        .await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    denied.error_code("a tenant sets its own egress");

    let set = api
        .send(
            api.http
                .patch(format!("{}/v1/tenants/acme", api.base))
                .bearer_auth(ADMIN)
                .json(&json!({"allow_egress": ["127.0.0.1/32"]})),
        )
        .await
        .ok("the admin allows loopback for acme");
    assert_eq!(set["allow_egress"], json!(["127.0.0.1"]), "{set}");
    let listed = api.get(Some(&acme), "/v1/tenants").await.ok("tenants");
    assert_eq!(listed[0]["allow_egress"], json!(["127.0.0.1"]), "{listed}");

    let done = run_to_end(&s, &acme, "Look").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], 2, "{done}");
    assert_eq!(remote.count("/lookup"), 1);

    // Another tenant's rules are its own.
    let done = run_to_end(&s, &other, "Look").await;
    let (code, _) = error_of(&done);
    assert_eq!(code, "EgressRefused", "{done}");
    assert_eq!(remote.count("/lookup"), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_mapped_addresses_are_checked_on_the_address_reached() {
    let (remote, port) = start_remote().await;
    let s = TestServer::start_with("egress-names", |o| o.allow_egress.clear()).await;
    let api = &s.api;
    let acme = api.create_tenant("acme", json!({})).await;

    // A name that resolves to loopback is refused: the check is on the address.
    api.deploy_source(
        &acme,
        &[(
            "look.eflow",
            &call_flow(&format!("http://localhost:{port}/lookup")),
        )],
    )
    .await;
    let done = run_to_end(&s, &acme, "Look").await;
    let (code, message) = error_of(&done);
    assert_eq!(code, "EgressRefused", "{done}");
    assert!(
        message.contains("`localhost`, which resolves to"),
        "{message}"
    );

    // So is loopback written as an IPv4-mapped IPv6 address.
    api.deploy_source(
        &acme,
        &[(
            "look.eflow",
            &call_flow(&format!("http://[::ffff:127.0.0.1]:{port}/lookup")),
        )],
    )
    .await;
    let done = run_to_end(&s, &acme, "Look").await;
    let (code, _) = error_of(&done);
    assert_eq!(code, "EgressRefused", "{done}");

    // And the cloud metadata address, without waiting for a connection.
    api.deploy_source(
        &acme,
        &[(
            "look.eflow",
            &call_flow("http://169.254.169.254/latest/meta-data"),
        )],
    )
    .await;
    let done = run_to_end(&s, &acme, "Look").await;
    let (code, message) = error_of(&done);
    assert_eq!(code, "EgressRefused", "{done}");
    assert!(
        message.contains("169.254.169.254 (link-local)"),
        "{message}"
    );
    assert_eq!(remote.count("/lookup"), 0);

    // Allowing the address lets the name through to it.
    api.send(
        api.http
            .patch(format!("{}/v1/tenants/acme", api.base))
            .bearer_auth(ADMIN)
            .json(&json!({"allow_egress": ["127.0.0.1"]})),
    )
    .await
    .ok("allow loopback");
    api.deploy_source(
        &acme,
        &[(
            "look.eflow",
            &call_flow(&format!("http://localhost:{port}/lookup")),
        )],
    )
    .await;
    let done = run_to_end(&s, &acme, "Look").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(remote.count("/lookup"), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rules_apply_to_every_tenant_and_redirects_are_not_followed() {
    let (remote, port) = start_remote().await;
    // The harness's own rule: `--allow-egress 127.0.0.1` for every tenant.
    let s = TestServer::start("egress-redirect").await;
    let api = &s.api;
    let acme = api.create_tenant("acme", json!({})).await;
    api.deploy_source(
        &acme,
        &[(
            "look.eflow",
            &call_flow(&format!("http://127.0.0.1:{port}/lookup")),
        )],
    )
    .await;
    let done = run_to_end(&s, &acme, "Look").await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // A redirect could lead anywhere, a literal address among them: it
    // fails the attempt, not retried, and is not followed.
    api.deploy_source(
        &acme,
        &[(
            "look.eflow",
            &call_flow(&format!("http://127.0.0.1:{port}/redirect")),
        )],
    )
    .await;
    let done = run_to_end(&s, &acme, "Look").await;
    assert_eq!(done["status"], "failed", "{done}");
    let (code, message) = error_of(&done);
    assert_eq!(code, "Http307", "{done}");
    assert!(message.contains("redirects are not followed"), "{message}");
    assert_eq!(remote.count("/redirect"), 1, "not retried");
    assert_eq!(remote.count("/lookup"), 1, "the redirect was not followed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_egress_rules_are_refused_and_change_nothing() {
    let s = TestServer::start("egress-bad").await;
    let api = &s.api;
    let r = api
        .post(
            Some(ADMIN),
            "/v1/tenants",
            &json!({"id": "acme", "allow_egress": ["10.0.0.0/33"]}),
        )
        .await;
    assert_eq!(r.expect_error(400, "a bad rule"), "invalid_egress_rule");
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("10.0.0.0/33") && message.contains("*.internal"),
        "{message}"
    );
    let tenants = api.get(Some(ADMIN), "/v1/tenants").await.ok("tenants");
    assert_eq!(tenants, json!([]), "no tenant was created");

    let created = api
        .post(
            Some(ADMIN),
            "/v1/tenants",
            &json!({"id": "acme", "allow_egress": ["*.Models.Internal", "fd00::/8"]}),
        )
        .await
        .ok("create with rules");
    assert_eq!(
        created["tenant"]["allow_egress"],
        json!(["fd00::/8", "*.models.internal"]),
        "{created}"
    );
    let patch = |id: &str, body: Value| {
        api.send(
            api.http
                .patch(format!("{}/v1/tenants/{id}", api.base))
                .bearer_auth(ADMIN)
                .json(&body),
        )
    };
    let r = patch("acme", json!({"allow_egress": ["http://x"]})).await;
    assert_eq!(
        r.expect_error(400, "a URL is not a rule"),
        "invalid_egress_rule"
    );
    let r = patch("ghost", json!({"allow_egress": []})).await;
    r.expect_error(404, "no such tenant");
    let r = patch("acme", json!({"allow_egres": []})).await;
    r.expect_error(400, "an unknown field");
    let tenants = api.get(Some(ADMIN), "/v1/tenants").await.ok("tenants");
    assert_eq!(
        tenants[0]["allow_egress"],
        json!(["fd00::/8", "*.models.internal"]),
        "unchanged by the refused updates: {tenants}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_the_limit_fails_the_attempt_unread() {
    let (remote, port) = start_remote().await;
    let s = TestServer::start_with("egress-answer", |o| o.max_answer_bytes = 100_000).await;
    let api = &s.api;
    let acme = api.create_tenant("acme", json!({})).await;
    let base = format!("http://127.0.0.1:{port}");
    api.deploy_source(
        &acme,
        &[(
            "big.eflow",
            &big_flow(&format!("{base}/big/1000000"), &format!("{base}/work/10")),
        )],
    )
    .await;
    let done = run_to_end(&s, &acme, "Big").await;
    assert_eq!(done["status"], "failed", "{done}");
    let (code, message) = error_of(&done);
    assert_eq!(code, "AnswerTooLarge", "{done}");
    assert!(
        message.contains("larger than the limit of 100000 bytes"),
        "the message names the limit: {message}"
    );
    assert_eq!(remote.count("/big"), 1, "not retried");
    s.stop().await;
}

/// An output larger than a run's state may hold inline (here 200 kB) is kept
/// by reference: the run goes on, its view names the value, and the value is
/// stored once: in the value table, not in either event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_is_kept_once_by_reference_and_no_log_holds_it() {
    let (remote, port) = start_remote().await;
    let s = TestServer::start("egress-state").await;
    let api = &s.api;
    let acme = api.create_tenant("acme", json!({})).await;
    let base = format!("http://127.0.0.1:{port}");
    // 200 kB: read (under the 4 MiB answer limit), more than the 64 KiB a
    // run's state holds inline.
    api.deploy_source(
        &acme,
        &[(
            "big.eflow",
            &big_flow(
                &format!("{base}/big/200000"),
                &format!("{base}/work/200000"),
            ),
        )],
    )
    .await;
    for (flow, path) in [("Big", "/big"), ("Async", "/work")] {
        let run = api.start(&acme, flow, json!({"x": 1})).await;
        let id = run["id"].as_str().expect("id").to_string();
        let done = api.wait_finished(&acme, &id).await;
        assert_eq!(done["status"], "succeeded", "{flow}: {done}");
        assert_eq!(remote.count(path), 1, "{flow}: once");
        let step = &done["steps"][0];
        let r = &step["output_ref"];
        assert!(
            r["bytes"].as_u64().is_some_and(|b| b > 200_000),
            "{flow}: the step's output is kept by reference: {}",
            &step.to_string()[..300.min(step.to_string().len())]
        );
        assert!(
            step["output"].as_str().is_some_and(|o| o.contains(MARKER)),
            "{flow}: and shown, as it is under 1 MiB"
        );
        let events = api
            .get(Some(&acme), &format!("/v1/runs/{id}/events"))
            .await
            .ok("events");
        assert!(
            !events.to_string().contains(MARKER),
            "{flow}: the run's log names the output by reference"
        );
        let logged = events.as_array().and_then(|e| {
            e.iter()
                .find(|e| e["event"]["type"] == "step_completed")
                .cloned()
        });
        assert_eq!(
            logged.as_ref().map(|e| &e["event"]["output_ref"]),
            Some(r),
            "{flow}: the log records the completion with the reference: {events}"
        );
        let hash = r["hash"].as_str().expect("a hash");
        let page = api
            .get(Some(&acme), &format!("/v1/runs/{id}/values/{hash}"))
            .await
            .ok("the value");
        assert!(page["value"].as_str().is_some_and(|v| v.contains(MARKER)));
    }
    api.history_caught_up().await;
    poll_until(
        "the history to list both runs",
        common::DEADLINE,
        || async {
            let runs = api.all_runs(&acme, "status=succeeded").await;
            (runs.len() == 2).then_some(())
        },
    )
    .await;
    let TestServer { server, dir, .. } = s;
    server.stop().await;
    // Both runs got the same 200 kB: one value, one row.
    assert_eq!(
        common::rows_holding(&dir.join("eflow.db"), MARKER).await,
        [("stored_values".to_string(), 1)],
        "the engine's store holds the output once, as a value"
    );
    assert!(
        common::rows_holding(&dir.join("history.db"), MARKER)
            .await
            .is_empty(),
        "the history holds no copy"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
