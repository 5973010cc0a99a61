//! Shared helpers of the end-to-end tests: a server on a temp data dir and
//! `127.0.0.1:0`, a JSON client, and polling with a deadline.

#![allow(dead_code)]

pub mod binary;
pub mod cut;
pub mod nats;
pub mod postgres;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use eflow_runtime::clock::{Clock, ManualClock, SystemClock};
use eflow_runtime::server::{Options, Server};
use eflow_runtime::service::Quotas;
use serde_json::{Value, json};

pub const ADMIN: &str = "test-admin-token";
pub const DEADLINE: Duration = Duration::from_secs(30);
pub const POLL: Duration = Duration::from_millis(50);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, unique directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemClock.now_ms();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "eflow-test-{name}-{}-{nanos}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A response: status and body (JSON when it parses, else the text as a string).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: Option<String>,
}

impl Resp {
    /// Panics unless the status is 2xx; returns the body.
    pub fn ok(self, what: &str) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "{what}: expected success, got {} {}",
            self.status,
            self.text
        );
        self.body
    }

    /// The `error.code` of an error body (panics when the body is not `{"error": {"code", "message"}}`).
    pub fn error_code(&self, what: &str) -> String {
        let code = self.body.pointer("/error/code").and_then(Value::as_str);
        let message = self.body.pointer("/error/message").and_then(Value::as_str);
        match (code, message) {
            (Some(c), Some(_)) => c.to_string(),
            _ => panic!(
                "{what}: expected a JSON error body {{\"error\": {{\"code\", \"message\"}}}}, got {} (content-type {:?}): {:?}",
                self.status, self.content_type, self.text
            ),
        }
    }

    /// Asserts the status and a JSON error body; returns the error code.
    pub fn expect_error(&self, status: u16, what: &str) -> String {
        assert_eq!(
            self.status, status,
            "{what}: expected {status}, got {} {}",
            self.status, self.text
        );
        self.error_code(what)
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        try_send(req)
            .await
            .expect("the request reaches the server and its answer is read")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, token: Option<&str>, path: &str) -> Resp {
        self.send(bearer(self.http.get(self.url(path)), token))
            .await
    }

    pub async fn post(&self, token: Option<&str>, path: &str, body: &Value) -> Resp {
        self.send(bearer(self.http.post(self.url(path)).json(body), token))
            .await
    }

    pub async fn post_raw(
        &self,
        token: Option<&str>,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut r = self.http.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            r = r.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.send(bearer(r, token)).await
    }

    /// Like [`Api::post_raw`], but a transport error (a server that answers
    /// and closes the connection before reading all of a huge body) is an `Err`.
    pub async fn try_post_raw(
        &self,
        token: Option<&str>,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Resp, String> {
        // A connection of its own, never pooled: the server may close it
        // without reading the whole body, and no later request may reuse it.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let mut r = http.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            r = r.header(reqwest::header::CONTENT_TYPE, ct);
        }
        try_send(bearer(r, token)).await
    }

    pub async fn patch(&self, token: Option<&str>, path: &str, body: &Value) -> Resp {
        self.send(bearer(self.http.patch(self.url(path)).json(body), token))
            .await
    }

    pub async fn delete(&self, token: Option<&str>, path: &str) -> Resp {
        self.send(bearer(self.http.delete(self.url(path)), token))
            .await
    }

    // ---- conveniences ----------------------------------------------------

    /// Creates a tenant with the admin token; returns its token.
    pub async fn create_tenant(&self, id: &str, limits: Value) -> String {
        let mut body = json!({ "id": id });
        if let (Some(b), Some(l)) = (body.as_object_mut(), limits.as_object()) {
            for (k, v) in l {
                b.insert(k.clone(), v.clone());
            }
        }
        let r = self
            .post(Some(ADMIN), "/v1/tenants", &body)
            .await
            .ok("create tenant");
        r["token"].as_str().expect("a token").to_string()
    }

    /// Deploys `.eflow` sources (file name → text) with `token`.
    pub async fn deploy_source(&self, token: &str, files: &[(&str, &str)]) -> Value {
        let source: BTreeMap<String, String> = files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        self.post(Some(token), "/v1/flows", &json!({ "source": source }))
            .await
            .ok("deploy")
    }

    pub async fn start(&self, token: &str, flow: &str, input: Value) -> Value {
        self.post(
            Some(token),
            "/v1/runs",
            &json!({ "flow": flow, "input": input }),
        )
        .await
        .ok(&format!("start {flow}"))
    }

    pub async fn run(&self, token: &str, id: &str) -> Value {
        self.get(Some(token), &format!("/v1/runs/{id}"))
            .await
            .ok(&format!("get run {id}"))
    }

    /// Waits until the run's status is one of `statuses`; returns the run.
    pub async fn wait_status(&self, token: &str, id: &str, statuses: &[&str]) -> Value {
        let what = format!("run {id} to reach {statuses:?}");
        let start = Instant::now();
        loop {
            let r = self.get(Some(token), &format!("/v1/runs/{id}")).await;
            if r.status == 200 {
                let s = r.body["status"].as_str().unwrap_or_default();
                if statuses.contains(&s) {
                    return r.body;
                }
            }
            if start.elapsed() > DEADLINE {
                let last = format!("{} {}", r.status, r.text);
                panic!("timed out after {DEADLINE:?} waiting for {what}; last answer: {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the run finished (succeeded, failed or cancelled).
    pub async fn wait_finished(&self, token: &str, id: &str) -> Value {
        self.wait_status(token, id, &["succeeded", "failed", "cancelled"])
            .await
    }

    /// Waits until the history has written every event the engine committed
    /// (the admin's `/v1/stats`), so that a query sees all of it.
    pub async fn history_caught_up(&self) {
        poll_until("the history to catch up", DEADLINE, || async {
            let stats = self.get(Some(ADMIN), "/v1/stats").await;
            (stats.body["history_behind"] == 0).then_some(())
        })
        .await;
    }

    /// Every run of a history query, following `next`.
    pub async fn all_runs(&self, token: &str, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut path = format!("/v1/runs?{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(Some(token), &path).await.ok(&path);
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page.get("next").and_then(Value::as_str) {
                Some(n) => cursor = Some(n.to_string()),
                None => return out,
            }
        }
        panic!("pagination of {query} did not end");
    }
}

/// Moves `clock` on by a second and waits until the scheduler has handled
/// that time for schedule `id`: its next fire time is past the new now. (A
/// paused schedule is not handled: pass an unpaused one in the same partition.)
pub async fn next_second(api: &Api, token: &str, clock: &ManualClock, id: &str) {
    clock.advance(1000);
    let now = clock.now_ms() as i64;
    poll_until(
        &format!("schedule {id} to handle {now}"),
        DEADLINE,
        || async {
            let list = api.get(Some(token), "/v1/schedules").await.ok("schedules");
            let s = list.as_array()?.iter().find(|s| s["id"] == id)?.clone();
            s["next_fire"]
                .as_str()
                .and_then(eflow_core::time::parse_rfc3339)
                .is_some_and(|next| next > now)
                .then_some(())
        },
    )
    .await;
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `deadline`
/// with `what` in the message.
pub async fn poll_until<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A server of its own, in its own temp dir.
pub struct TestServer {
    pub server: Server,
    pub api: Api,
    pub dir: PathBuf,
}

impl TestServer {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, |_| {}).await
    }

    pub async fn start_with(name: &str, tweak: impl FnOnce(&mut Options)) -> Self {
        let dir = temp_dir(name);
        let mut o = Options::new(dir.clone(), "127.0.0.1:0".parse().expect("addr"));
        o.admin_token = Some(ADMIN.to_string());
        o.quotas = Quotas::default();
        // Several shards, so runs, their children and deliveries cross workers.
        o.shards = 3;
        // The tests' remote systems listen on loopback, which the egress
        // policy refuses unless allowed (`eflow serve --allow-egress 127.0.0.1`).
        o.allow_egress = vec!["127.0.0.1".into()];
        tweak(&mut o);
        let server = Server::start(o).await.expect("the server starts");
        let api = Api::new(format!("http://{}", server.addr));
        Self { server, api, dir }
    }

    /// A server whose time moves only when the test moves `clock`: it
    /// starts at the current second and a half, so that a fire time of a
    /// schedule is never the start time itself.
    pub async fn start_with_manual_clock(
        name: &str,
        tweak: impl FnOnce(&mut Options),
    ) -> (Self, ManualClock) {
        let clock = ManualClock::new(SystemClock.now_ms() / 1000 * 1000 + 500);
        let shared = Arc::new(clock.clone());
        let server = Self::start_with(name, |o| {
            o.clock = shared;
            tweak(o)
        })
        .await;
        (server, clock)
    }

    pub fn addr(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub async fn stop(self) {
        self.server.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn ms(t: &Value) -> i64 {
    let s = t
        .as_str()
        .unwrap_or_else(|| panic!("{t} is not a time string"));
    eflow_core::time::parse_rfc3339(s).unwrap_or_else(|| panic!("{s} is not RFC 3339"))
}

/// The ids of runs in a list of summaries.
pub fn ids(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A flow with an approval and a registry step, a long one, and a schedule
/// that does not fire during a test.
pub const SOURCE: &str = r#"
from "std/ml" import Model, Evaluation, ModelVersion, RegisterModel, Stage
from "std/approval" import Approve

remote step TrainIt(name: String) -> Model
remote step EvalIt(model: Model) -> Evaluation
remote step Slow(x: Int) -> Int

flow Pipeline(model_name: String) -> ModelVersion? {
    let model = TrainIt(name: model_name)
    let eval = EvalIt(model: model)
    let decision = Approve(subject: eval, summary: "Register the model?")
    when decision.approved {
        let version = RegisterModel(name: model_name, model: model, evaluation: eval, stage: Stage.Staging)
    }
    return version
}

flow Long(x: Int = 1) -> Int {
    schedule "0 0 1 1 *"
        input(x: 2)
    let s = Slow(x: x)
    return s
}

bindings dev {
    TrainIt = sim { duration: 50ms, failure_rate: 0.0 }
    EvalIt = sim { duration: 50ms, failure_rate: 0.0 }
    Slow = sim { duration: 1h, failure_rate: 0.0 }
    Approve = approval { channel: "ui" }
    RegisterModel = registry { kind: "model" }
}
"#;

/// The request with the token as its bearer credential, if there is one.
fn bearer(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// Sends the request and reads the whole answer; a transport error is an `Err`.
async fn try_send(req: reqwest::RequestBuilder) -> Result<Resp, String> {
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.map_err(|e| format!("{e:?}"))?;
    let text = String::from_utf8_lossy(&bytes).to_string();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::String(text.clone()));
    Ok(Resp {
        status,
        body,
        text,
        content_type,
    })
}

/// A remote system that accepts every invocation (`POST /work`), records its
/// body and never calls back by itself: the test sends the callbacks. Its
/// calls and its base URL.
pub async fn accepting_remote() -> (Arc<std::sync::Mutex<Vec<Value>>>, String) {
    use axum::extract::State;
    async fn work(
        State(calls): State<Arc<std::sync::Mutex<Vec<Value>>>>,
        axum::Json(b): axum::Json<Value>,
    ) -> axum::Json<Value> {
        calls.lock().unwrap().push(b);
        axum::Json(json!({"accepted": true}))
    }
    let calls: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route("/work", axum::routing::post(work))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the remote system");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (calls, format!("http://{addr}"))
}

/// Rows of every table of the SQLite database at `path` in which any column
/// holds `marker`: (table, count).
pub async fn rows_holding(path: &std::path::Path, marker: &str) -> Vec<(String, i64)> {
    use sqlx::Row;
    let url = format!("sqlite://{}?mode=ro", path.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the database");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for t in tables {
        let columns: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{t}\")"))
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(1))
            .collect();
        let test = columns
            .iter()
            .map(|c| format!("instr(CAST(\"{c}\" AS TEXT), ?1) > 0"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{t}\" WHERE {test}"))
            .bind(marker)
            .fetch_one(&pool)
            .await
            .unwrap();
        if n > 0 {
            found.push((t, n));
        }
    }
    pool.close().await;
    found
}

/// A service a test needs (`what` at `server`) cannot be reached: with `CI`
/// set the test fails, naming how to start it (`start`) or where to point
/// `env`; otherwise it is skipped with that reason printed.
pub fn service_unreachable<T>(
    what: &str,
    server: &str,
    why: &str,
    start: &str,
    env: &str,
) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} at {server} is unreachable and CI is set: {why} ({start}, or point {env} at one)"
        );
    }
    eprintln!(
        "skipped: {what} at {server} is unreachable ({why}); \
         {start} or set {env}, and set CI=1 to fail instead of skipping"
    );
    None
}

/// Purges `tenant` from `store` as a process holding its purge does: begins
/// it (held by `test` until time 1,000) and deletes its rows; how many.
#[allow(dead_code)]
pub async fn purge(store: &eflow_runtime::store::Store, tenant: &str) -> u64 {
    let hold = eflow_runtime::store::PurgeHold {
        owner: "test".into(),
        now: 0,
        until: 1_000,
    };
    assert_eq!(
        store.begin_purge(tenant, &hold).await.unwrap(),
        eflow_runtime::store::PurgeBegun::Held
    );
    store
        .purge_tenant(tenant, "test")
        .await
        .unwrap()
        .expect("the purge is held")
}
