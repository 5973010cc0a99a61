//! The crash test: `kill -9` the server while thousands of runs are in
//! flight, start it again on the same data, and check that every run finishes,
//! that no event was lost or applied twice, and that the remote system never
//! saw one attempt invoked under two idempotency keys.
//!
//! The remote system is a real HTTP server in this test process (it outlives
//! the killed one): it accepts invocations, remembers each attempt's key, and
//! calls back a little later, retrying its callback until the eflow server
//! takes it, as a real remote system does.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

const RUNS: usize = 2_000;
const STEPS: usize = 3;
const ADMIN: &str = "crash-test-admin-token";

#[derive(Default)]
struct Remote {
    /// (run, step, attempt) → the idempotency keys it was invoked with.
    keys: Mutex<HashMap<(String, String, u64), HashSet<String>>>,
    invocations: Mutex<u64>,
}

async fn invoke(
    State(remote): State<Arc<Remote>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let key = headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let attempt = (
        body["run"].as_str().unwrap_or("").to_string(),
        body["step"].as_str().unwrap_or("").to_string(),
        body["attempt"].as_u64().unwrap_or(0),
    );
    let first = {
        let mut keys = remote.keys.lock().unwrap();
        let set = keys.entry(attempt).or_default();
        let first = set.is_empty();
        set.insert(key);
        first
    };
    *remote.invocations.lock().unwrap() += 1;
    // Idempotent: a redelivered invocation starts no new work, but the result
    // is reported again (the first report may have hit the dead server).
    let _ = first;
    let callback = body["callback_url"].as_str().unwrap_or("").to_string();
    let n = body["inputs"]["n"].as_i64().unwrap_or(0);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let sent = client
                .post(&callback)
                .json(&json!({ "output": n + 1 }))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(r) = sent
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Json(json!({ "accepted": true }))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed when dropped, so a failing test leaves none behind.
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &std::path::Path, addr: SocketAddr) -> Proc {
    serve_logging(data, addr, "warn", Stdio::inherit())
}

fn serve_logging(data: &std::path::Path, addr: SocketAddr, level: &str, log: Stdio) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", &addr.to_string(), "--admin-token", ADMIN])
        // The remote system of these tests listens on loopback.
        .args(["--allow-egress", "127.0.0.1"])
        // Several shards, so runs and their deliveries cross workers.
        .args(["--shards", "3"])
        .env("EFLOW_LOG", level)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start eflow serve");
    Proc(child)
}

/// Starts a server whose log (at `info`) goes to `log`.
fn serve_logged(data: &std::path::Path, addr: SocketAddr, log: &std::path::Path) -> Proc {
    std::fs::create_dir_all(data).unwrap();
    let file = std::fs::File::create(log).expect("create the log file");
    serve_logging(data, addr, "info", Stdio::from(file))
}

/// A fresh data directory and a free address for a server of this test.
fn scratch(name: &str) -> (std::path::PathBuf, SocketAddr) {
    let data = std::env::temp_dir().join(format!(
        "eflow-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&data);
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    (data, addr)
}

/// GET with the admin token; the body as JSON.
async fn get_json<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &str) -> T {
    client
        .get(url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POST a JSON body with the admin token.
async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    client
        .post(url)
        .bearer_auth(ADMIN)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn wait_up(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/v1/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not come up at {base}");
}

fn flow(remote: SocketAddr) -> String {
    let mut s = String::from("remote step Work(n: Int) -> Int\n\nflow Chain(n: Int) -> Int {\n");
    let mut prev = "n".to_string();
    for i in 1..=STEPS {
        s.push_str(&format!(
            "    let s{i} = Work(n: {prev})\n        retry 5\n        backoff fixed(100ms)\n"
        ));
        prev = format!("s{i}");
    }
    s.push_str(&format!(
        "    return {prev}\n}}\n\nbindings test {{\n    Work = http {{ url: \"http://{remote}/work\", timeout: 5s }}\n}}\n"
    ));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_loses_nothing_and_doubles_nothing() {
    let remote = Arc::new(Remote::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote_addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/work", post(invoke))
        .with_state(remote.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (data, addr) = scratch("crash");
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut server = serve(&data, addr);
    wait_up(&client, &base).await;

    let auth = format!("Bearer {ADMIN}");
    let r = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        &json!({ "id": "crash", "max_active_runs": 100000, "max_starts_per_sec": 100000.0 }),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = post_json(&client, &format!("{base}/v1/flows"), &json!({ "tenant": "crash", "env": "test", "source": { "chain.eflow": flow(remote_addr) } })).await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // Start the runs from several tasks; kill the server part way through.
    let started = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        let base = base.clone();
        let auth = auth.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..RUNS).step_by(8) {
                let id = format!("run-{i}");
                let r = client
                    .post(format!("{base}/v1/runs"))
                    .header("Authorization", &auth)
                    .json(&json!({ "tenant": "crash", "flow": "Chain", "input": { "n": i }, "id": id }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => started.lock().unwrap().push(id),
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while started.lock().unwrap().len() < RUNS / 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().expect("kill -9 the server");
    server.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let acknowledged: Vec<String> = started.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= RUNS / 2,
        "only {} runs started before the kill",
        acknowledged.len()
    );

    // Start again on the same data; start the runs that were never acknowledged
    // (a start is idempotent by id).
    let mut server = serve(&data, addr);
    wait_up(&client, &base).await;
    for i in 0..RUNS {
        let id = format!("run-{i}");
        let r = post_json(
            &client,
            &format!("{base}/v1/runs"),
            &json!({ "tenant": "crash", "flow": "Chain", "input": { "n": i }, "id": id }),
        )
        .await;
        assert!(
            r.status().is_success(),
            "restart {id}: {}",
            r.text().await.unwrap()
        );
    }

    // Every run finishes.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pending: Vec<String> = (0..RUNS).map(|i| format!("run-{i}")).collect();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in pending {
            let v: Value = get_json(&client, &format!("{base}/v1/runs/crash:{id}")).await;
            match v["status"].as_str() {
                Some("succeeded") => {}
                Some("failed") | Some("cancelled") => panic!("run {id} ended {v}"),
                _ => still.push(id),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        pending.is_empty(),
        "{} runs never finished, e.g. {:?}",
        pending.len(),
        &pending[..pending.len().min(5)]
    );

    // No event lost or applied twice: every run's log is Started and one
    // completion per step, with sequence numbers 0.., and the result is right.
    for i in 0..RUNS {
        let id = format!("run-{i}");
        let run: Value = get_json(&client, &format!("{base}/v1/runs/crash:{id}")).await;
        assert_eq!(run["result"], json!(i + STEPS), "result of {id}");
        let events: Vec<Value> =
            get_json(&client, &format!("{base}/v1/runs/crash:{id}/events")).await;
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "gap in {id}'s log"
        );
        let completions: Vec<&str> = events
            .iter()
            .filter(|e| e["event"]["type"] == "step_completed")
            .map(|e| e["event"]["node"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (1..=STEPS).map(|s| format!("s{s}")).collect();
        assert_eq!(completions, expected, "completions of {id}");
        assert_eq!(events[0]["event"]["type"], "started", "{id}");
    }

    // The remote system never saw one attempt under two keys.
    let keys = remote.keys.lock().unwrap();
    for ((run, step, attempt), set) in keys.iter() {
        assert_eq!(
            set.len(),
            1,
            "{run} {step} attempt {attempt} was invoked with keys {set:?}"
        );
    }
    assert!(
        keys.len() >= RUNS * STEPS,
        "{} attempts invoked",
        keys.len()
    );
    drop(keys);

    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_and_keeps_every_run() {
    stops_cleanly_and_keeps_every_run("INT").await;
}

/// systemd, Docker and Kubernetes stop a service with SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_keeps_every_run() {
    stops_cleanly_and_keeps_every_run("TERM").await;
}

async fn stops_cleanly_and_keeps_every_run(signal: &str) {
    let (data, addr) = scratch(&format!("sig{}", signal.to_lowercase()));
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let first_log = data.with_extension("first.log");
    let mut server = serve_logged(&data, addr, &first_log);
    wait_up(&client, &base).await;
    let source = "remote step Work(n: Int) -> Int\n\nflow Slow(n: Int) -> Int {\n    let a = Work(n: n)\n    return a\n}\n\nbindings test {\n    Work = sim { duration: 1h }\n}\n";
    for (path, body) in [
        ("/v1/tenants", json!({ "id": "quiet" })),
        (
            "/v1/flows",
            json!({ "tenant": "quiet", "env": "test", "source": { "slow.eflow": source } }),
        ),
    ] {
        let r = post_json(&client, &format!("{base}{path}"), &body).await;
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    for i in 0..50 {
        let r = post_json(&client, &format!("{base}/v1/runs"), &json!({ "tenant": "quiet", "flow": "Slow", "input": { "n": i }, "id": format!("slow-{i}") })).await;
        assert!(r.status().is_success());
    }
    // SIGINT, as Ctrl-C sends it, or SIGTERM, as a service manager does.
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = server.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop within 20 s of SIG{signal}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        code.success(),
        "the server exited with {code} after SIG{signal}"
    );
    // The log says what happened, for an operator.
    let log = std::fs::read_to_string(&first_log).unwrap();
    let received = format!("SIG{signal} received");
    for line in [
        "engine started",
        "eflow is serving",
        "tenant created tenant=quiet",
        "deployed tenant=quiet env=test",
        received.as_str(),
        "stopping: finishing the work in hand",
        "eflow: stopped",
    ] {
        assert!(log.contains(line), "the log lacks `{line}`:\n{log}");
    }
    // Everything is still there after a restart: the runs wait in their step.
    let second_log = data.with_extension("second.log");
    let mut server = serve_logged(&data, addr, &second_log);
    wait_up(&client, &base).await;
    let log = std::fs::read_to_string(&second_log).unwrap();
    assert!(
        log.contains("runs in progress runs=50 tenants=1"),
        "the restart's log counts the runs it found:\n{log}"
    );
    for i in 0..50 {
        let v: Value = get_json(&client, &format!("{base}/v1/runs/quiet:slow-{i}")).await;
        assert_eq!(v["status"], "running", "slow-{i}: {v}");
        assert_eq!(v["steps"][0]["status"], "running", "slow-{i}: {v}");
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&first_log);
    let _ = std::fs::remove_file(&second_log);
}

/// Creates a tenant and deploys `source` in it with the admin token.
async fn tenant_with(client: &reqwest::Client, base: &str, tenant: &str, source: &str) {
    for (path, body) in [
        (
            "/v1/tenants",
            json!({ "id": tenant, "max_active_runs": 100000, "max_starts_per_sec": 100000.0 }),
        ),
        (
            "/v1/flows",
            json!({ "tenant": tenant, "env": "test", "source": { "flow.eflow": source } }),
        ),
    ] {
        let r = post_json(client, &format!("{base}{path}"), &body).await;
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
}

/// Waits until every run in `ids` has `status` (or fails the test).
async fn wait_all(client: &reqwest::Client, base: &str, ids: &[String], status: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<String> = ids.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let v: Value = get_json(client, &format!("{base}/v1/runs/{id}")).await;
            if v["status"] != status {
                still.push(id);
            }
        }
        pending = still;
        assert!(
            pending.is_empty() || Instant::now() < deadline,
            "{} runs never became {status}, e.g. {:?}",
            pending.len(),
            &pending[..pending.len().min(5)]
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

const GATE: &str = "from \"std/approval\" import Approve\n\nflow Gate(n: Int) -> Bool {\n    let d = Approve(subject: n, summary: \"Go on?\")\n    return d.approved\n}\n\nbindings test {\n    Approve = approval { channel: \"ui\" }\n}\n";

/// A decision answered 200 has moved its run on, whenever the server dies:
/// the decision and the transition it makes are one commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_decisions_loses_no_decision() {
    const N: usize = 300;
    let (data, addr) = scratch("decisions");
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut server = serve(&data, addr);
    wait_up(&client, &base).await;
    tenant_with(&client, &base, "gate", GATE).await;
    let ids: Vec<String> = (0..N).map(|i| format!("gate-{i}")).collect();
    // The admin names a chosen id by its tenant: `gate:gate-0`.
    let stored: Vec<String> = ids.iter().map(|id| format!("gate:{id}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let r = post_json(
            &client,
            &format!("{base}/v1/runs"),
            &json!({ "tenant": "gate", "flow": "Gate", "input": { "n": i }, "id": id }),
        )
        .await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    // Every run waits for its decision.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: Vec<Value> =
            get_json(&client, &format!("{base}/v1/approvals?tenant=gate")).await;
        if pending.len() == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} approvals pending",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Decide from several tasks (approve the even runs, reject the odd ones);
    // kill the server part way through.
    let decided = Arc::new(Mutex::new(Vec::<usize>::new()));
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (client, base, decided) = (client.clone(), base.clone(), decided.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..N).step_by(6) {
                let r = client
                    .post(format!("{base}/v1/runs/gate:gate-{i}/approvals/d"))
                    .bearer_auth(ADMIN)
                    .json(&json!({ "approve": i % 2 == 0 }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => decided.lock().unwrap().push(i),
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while decided.lock().unwrap().len() < N / 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill().expect("kill -9 the server");
    server.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let answered: Vec<usize> = decided.lock().unwrap().clone();
    assert!(answered.len() >= N / 3, "only {} decided", answered.len());

    let mut server = serve(&data, addr);
    wait_up(&client, &base).await;
    // Every decision answered before the kill moved its run on.
    let answered_ids: Vec<String> = answered.iter().map(|i| format!("gate:gate-{i}")).collect();
    wait_all(&client, &base, &answered_ids, "succeeded").await;
    for &i in &answered {
        let v: Value = get_json(&client, &format!("{base}/v1/runs/gate:gate-{i}")).await;
        assert_eq!(v["result"], json!(i % 2 == 0), "gate-{i}: {v}");
    }
    // Each other approval is either still pending, and can be decided now, or
    // was decided (its answer lost in the kill) and its run moved on: none is
    // stored as decided with its run still waiting.
    let pending: Vec<Value> = get_json(&client, &format!("{base}/v1/approvals?tenant=gate")).await;
    let pending: HashSet<String> = pending
        .iter()
        .map(|a| a["run"].as_str().unwrap().to_string())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let v: Value = get_json(&client, &format!("{base}/v1/runs/gate:{id}")).await;
        if pending.contains(&format!("gate:{id}")) {
            assert_eq!(v["status"], "running", "{id} is pending: {v}");
            let r = post_json(
                &client,
                &format!("{base}/v1/runs/gate:{id}/approvals/d"),
                &json!({ "approve": i % 2 == 0 }),
            )
            .await;
            assert!(r.status().is_success(), "{id}: {}", r.text().await.unwrap());
        } else {
            assert_ne!(
                v["status"], "running",
                "{id} left the pending list but waits: {v}"
            );
        }
    }
    wait_all(&client, &base, &stored, "succeeded").await;
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

/// The `i`th schedule of version `k`: a cron of its own for every version.
fn cron_of(k: usize, i: usize) -> String {
    format!("{} {i} {} {} *", k % 60, k / 60 % 28 + 1, k / 1680 % 12 + 1)
}

/// Version `k` of a bundle of three scheduled flows: every schedule of
/// version `k` has a cron of that version's, and flow `A` has `k % 3 + 1`
/// schedules.
fn versioned(k: usize) -> String {
    let mut s = String::from("remote step Work(n: Int) -> Int\n\n");
    for f in ["A", "B", "C"] {
        s.push_str(&format!("flow {f}(n: Int = {k}) -> Int {{\n"));
        let count = if f == "A" { k % 3 + 1 } else { 1 };
        for i in 0..count {
            s.push_str(&format!("    schedule \"{}\"\n", cron_of(k, i)));
        }
        s.push_str("    let w = Work(n: n)\n    return w\n}\n\n");
    }
    s.push_str("bindings test {\n    Work = sim { duration: 1s }\n}\n");
    s
}

/// A deploy is all or nothing: after a kill -9 during a stream of deploys,
/// every flow's head is one version and its schedules are that version's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_deploys_leaves_one_whole_deployment() {
    let (data, addr) = scratch("deploys");
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut version = 1;
    // bundle id → version, for every deploy that was answered.
    let mut bundles: HashMap<String, usize> = HashMap::new();
    let mut server = serve(&data, addr);
    wait_up(&client, &base).await;
    tenant_with(&client, &base, "dep", &versioned(0)).await;
    for round in 0..4 {
        // Deploy new versions back to back; kill the server part way through.
        let deploying = {
            let (client, base) = (client.clone(), base.clone());
            let first = version;
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for k in first..first + 1000 {
                    let body = json!({ "tenant": "dep", "env": "test", "source": { "flow.eflow": versioned(k) } });
                    match client
                        .post(format!("{base}/v1/flows"))
                        .bearer_auth(ADMIN)
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            let v: Value = r.json().await.unwrap();
                            answered.push((v["bundle"].as_str().unwrap().to_string(), k));
                        }
                        Ok(r) => panic!("deploy {k}: {}", r.text().await.unwrap()),
                        Err(_) => return (answered, k),
                    }
                }
                (answered, first + 1000)
            })
        };
        tokio::time::sleep(Duration::from_millis(300 + 170 * round)).await;
        server.kill().expect("kill -9 the server");
        server.wait().unwrap();
        let (answered, in_flight) = deploying.await.unwrap();
        assert!(
            !answered.is_empty(),
            "round {round}: no deploy was answered"
        );
        bundles.extend(answered);
        version = in_flight + 1;

        server = serve(&data, addr);
        wait_up(&client, &base).await;
        let flows: Vec<Value> = get_json(&client, &format!("{base}/v1/flows?tenant=dep")).await;
        let heads: Vec<&Value> = flows.iter().filter(|f| f["head"] == true).collect();
        assert_eq!(heads.len(), 3, "round {round}: heads {heads:?}");
        let bundle = heads[0]["bundle"].as_str().unwrap();
        assert!(
            heads.iter().all(|h| h["bundle"] == bundle),
            "round {round}: the flows' heads are in different bundles: {heads:?}"
        );
        // The head is an answered deploy's, or the one the kill cut short.
        let k = bundles.get(bundle).copied().unwrap_or(in_flight);
        let schedules: Vec<Value> =
            get_json(&client, &format!("{base}/v1/schedules?tenant=dep")).await;
        let mut got: Vec<(String, String)> = schedules
            .iter()
            .map(|s| {
                (
                    s["flow"].as_str().unwrap().to_string(),
                    s["cron"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        let mut want: Vec<(String, String)> = Vec::new();
        for f in ["A", "B", "C"] {
            let count = if f == "A" { k % 3 + 1 } else { 1 };
            for i in 0..count {
                want.push((f.to_string(), cron_of(k, i)));
            }
        }
        want.sort();
        assert_eq!(
            got, want,
            "round {round}: the schedules are not version {k}'s"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

fn doomed_source(remote: SocketAddr) -> String {
    format!(
        r#"from "std/approval" import Approve

remote step Work(n: Int) -> Int
remote step Quick(n: Int) -> Int

flow Child(n: Int) -> Int {{
    let q = Quick(n: n)
    return q
}}

flow Mixed(n: Int) -> Int {{
    let a = Work(n: n)
        retry 3
        backoff fixed(100ms)
    let q = Quick(n: a)
    let b = Work(n: q)
    let c = Quick(n: b)
    let d = Work(n: c)
    let e = Quick(n: d)
    return e
}}

flow Fan(xs: List<Int>) -> List<Int> {{
    let ys = for x in xs join all {{
        Child(n: x)
    }}
        parallel 5
    return ys
}}

flow Gate(n: Int = 1) -> Bool {{
    schedule "* * * * * *"
        overlap allow_all
    let d = Approve(subject: n, summary: "Go on?")
    return d.approved
}}

bindings test {{
    Work = http {{ url: "http://{remote}/work", timeout: 5s }}
    Quick = sim {{ duration: 300ms }}
    Approve = approval {{ channel: "ui" }}
}}
"#
    )
}

/// A purge with runs in flight (remote calls out and calling back, timers
/// due, children running, approvals waiting, a schedule firing every second)
/// leaves nothing of the tenant in any table of either database, after it
/// answers and after a kill -9 right after; the tenant id created again sees
/// nothing of the old one, and the other tenant keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_with_runs_in_flight_leaves_nothing_even_after_kill_9() {
    const DOOMED: &str = "zq-doomed";
    let remote = Arc::new(Remote::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote_addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/work", post(invoke))
        .with_state(remote.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (data, addr) = scratch("purge");
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut server = serve(&data, addr);
    wait_up(&client, &base).await;
    for t in [DOOMED, "kept"] {
        tenant_with(&client, &base, t, &doomed_source(remote_addr)).await;
    }
    let start = |tenant: &str, flow: &str, id: String, input: Value| {
        let (client, base) = (client.clone(), base.clone());
        let body = json!({ "tenant": tenant, "flow": flow, "id": id, "input": input });
        async move {
            let r = client
                .post(format!("{base}/v1/runs"))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    };
    for t in [DOOMED, "kept"] {
        for i in 0..60 {
            start(t, "Mixed", format!("m-{i}"), json!({ "n": i })).await;
        }
        for i in 0..10 {
            start(
                t,
                "Fan",
                format!("f-{i}"),
                json!({ "xs": (0..30).collect::<Vec<_>>() }),
            )
            .await;
        }
        for i in 0..20 {
            start(t, "Gate", format!("g-{i}"), json!({ "n": i })).await;
        }
    }
    // Let work get going: calls out, callbacks coming in, children starting,
    // the schedule firing.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let r = client
        .delete(format!("{base}/v1/tenants/{DOOMED}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "purge: {}",
        r.text().await.unwrap()
    );
    server
        .kill()
        .expect("kill -9 right after the purge answered");
    server.wait().unwrap();
    for db in ["eflow.db", "history.db"] {
        let left = common::rows_holding(&data.join(db), DOOMED).await;
        assert!(left.is_empty(), "after the purge, {db} holds {left:?}");
    }

    // Again, on a server that keeps running: remote systems still call back
    // for the purged runs, the schedule would fire, timers come due.
    let mut server = serve(&data, addr);
    wait_up(&client, &base).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let r = client
        .delete(format!("{base}/v1/tenants/{DOOMED}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a second purge: {}",
        r.text().await.unwrap()
    );
    // The id created again sees nothing of the old tenant.
    let r = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        &json!({ "id": DOOMED }),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let created: Value = r.json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    for path in ["/v1/runs/m-1", "/v1/runs/m-1/events", "/v1/runs/f-1"] {
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}: {}", r.text().await.unwrap());
    }
    for path in [
        "/v1/runs",
        "/v1/approvals",
        "/v1/flows",
        "/v1/schedules",
        "/v1/registry",
    ] {
        let v: Value = client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = v.get("items").unwrap_or(&v);
        assert_eq!(items, &json!([]), "{path} of the new tenant: {v}");
    }
    // The id runs again, and is purged with runs in flight on a server that
    // keeps running: nothing of it is written back afterwards.
    let r = post_json(
        &client,
        &format!("{base}/v1/flows"),
        &json!({ "tenant": DOOMED, "env": "test", "source": { "flow.eflow": doomed_source(remote_addr) } }),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    for i in 0..60 {
        start(DOOMED, "Mixed", format!("m-{i}"), json!({ "n": i })).await;
    }
    for i in 0..10 {
        start(
            DOOMED,
            "Fan",
            format!("f-{i}"),
            json!({ "xs": (0..30).collect::<Vec<_>>() }),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let r = client
        .delete(format!("{base}/v1/tenants/{DOOMED}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "purge: {}",
        r.text().await.unwrap()
    );
    // Remote systems call back, timers come due, children finish: none of it
    // lands.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for id in ["m-1", "f-1", "f-1.ys.1"] {
        let r = client
            .get(format!("{base}/v1/runs/{DOOMED}:{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            404,
            "{id} after the purge: {}",
            r.text().await.unwrap()
        );
    }
    let r = client
        .delete(format!("{base}/v1/tenants/{DOOMED}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a purge after the purge: {}",
        r.text().await.unwrap()
    );

    // The other tenant lost nothing: its runs finish.
    let kept: Vec<String> = (0..60)
        .map(|i| format!("kept:m-{i}"))
        .chain((0..10).map(|i| format!("kept:f-{i}")))
        .collect();
    wait_all(&client, &base, &kept, "succeeded").await;
    server.kill().unwrap();
    server.wait().unwrap();
    for db in ["eflow.db", "history.db"] {
        let left = common::rows_holding(&data.join(db), DOOMED).await;
        assert!(
            left.is_empty(),
            "after the second purge, {db} holds {left:?}"
        );
        assert!(
            !common::rows_holding(&data.join(db), "kept")
                .await
                .is_empty(),
            "{db} lost the other tenant"
        );
    }
    let _ = std::fs::remove_dir_all(&data);
}

/// A data directory made before with a mode others may read is kept (it is
/// the operator's), and the server says so.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_others_may_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (data, addr) = scratch("open-dir");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = data.with_extension("log");
    let client = reqwest::Client::new();
    let mut server = serve_logged(&data, addr, &log);
    wait_up(&client, &format!("http://{addr}")).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the data directory may be read by other users") && text.contains("mode=755"),
        "no warning about the data directory's mode:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&log);
}

const WIDE: &str = "remote step Tick(n: Int) -> Int\n\nflow Echo(x: Int) -> Int {\n    let _t = Tick(n: x)\n    return x\n}\n\nflow Wide(xs: List<Int>) -> Int {\n    let ys = for x in xs join all {\n        Echo(x: x)\n    }\n        parallel 100\n    return 0\n}\n\nbindings test {\n    Tick = sim { duration: 50ms, failure_rate: 0.0 }\n}\n";

/// A fan-out wider than a batch of starts, killed three times while its
/// children run: it finishes with exactly one child per element, each on its
/// first attempt, and every result stored once, in input order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_fan_out_leaves_one_child_per_element() {
    const N: usize = 2_000;
    let (data, addr) = scratch("fanout-crash");
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut server = serve(&data, addr);
    wait_up(&client, &base).await;
    tenant_with(&client, &base, "wide", WIDE).await;
    let xs: Vec<usize> = (0..N).map(|i| (i * 7919) % N).collect();
    let r = post_json(
        &client,
        &format!("{base}/v1/runs"),
        &json!({ "tenant": "wide", "flow": "Wide", "id": "w", "input": { "xs": xs } }),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let id = "wide:w".to_string();
    let mut killed_while_running = 0;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(400 + 300 * round)).await;
        let run: Value = get_json(&client, &format!("{base}/v1/runs/{id}")).await;
        if run["status"] == "running" {
            killed_while_running += 1;
        }
        server.kill().unwrap();
        server.wait().unwrap();
        server = serve(&data, addr);
        wait_up(&client, &base).await;
    }
    assert!(
        killed_while_running > 0,
        "the fan-out ended before any kill"
    );
    wait_all(&client, &base, std::slice::from_ref(&id), "succeeded").await;

    let mut got: Vec<Value> = Vec::new();
    loop {
        let after = got
            .last()
            .map(|r| format!("&after={}", r["index"]))
            .unwrap_or_default();
        let page: Vec<Value> = get_json(
            &client,
            &format!("{base}/v1/runs/{id}/steps/ys/results?limit=1000{after}"),
        )
        .await;
        if page.is_empty() {
            break;
        }
        got.extend(page);
    }
    assert_eq!(got.len(), N, "one result per element");
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r["index"], i, "{r}");
        assert_eq!(r["output"], xs[i], "element {i}");
    }
    // Children are named by parent, node, index and attempt: every element has
    // its first attempt, finished, and none a second.
    for i in 0..N {
        let first: Value = get_json(&client, &format!("{base}/v1/runs/{id}.ys.{i}.1")).await;
        assert_eq!(first["status"], "succeeded", "child {i}: {first}");
        let r = client
            .get(format!("{base}/v1/runs/{id}.ys.{i}.2"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "child {i} ran twice");
    }
    // Another tenant cannot read them; a purge leaves none behind.
    let r = post_json(
        &client,
        &format!("{base}/v1/tenants"),
        &json!({ "id": "nosy" }),
    )
    .await;
    let nosy: Value = r.json().await.unwrap();
    let r = client
        .get(format!("{base}/v1/runs/w/steps/ys/results"))
        .bearer_auth(nosy["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another tenant's fan-out is not there");
    let r = client
        .delete(format!("{base}/v1/tenants/wide"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "purge: {}",
        r.text().await.unwrap()
    );
    server.kill().unwrap();
    server.wait().unwrap();
    let left = common::rows_holding(&data.join("eflow.db"), "wide:w").await;
    assert!(left.is_empty(), "after the purge, eflow.db holds {left:?}");
    let _ = std::fs::remove_dir_all(&data);
}
