//! Bulk actions over real HTTP (`/v1/bulk`): a bulk retry of a flow's failed
//! runs acts on exactly those, once each, and on no run started after it;
//! a job is paused, resumed and cancelled; another tenant neither sees nor
//! touches it; a bulk retry over a population's filter retries each
//! selected key's latest run and no other. On SQLite, and on PostgreSQL (engine and history) with NATS
//! JetStream where they are reachable; and the real binary killed with
//! SIGKILL part way through a job's page, then restarted: the job finishes
//! with every selected run retried exactly once.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const SOURCE: &str = r#"
from "std/time" import Wait

remote step Flip(x: Int) -> Int

flow Work(x: Int) -> Int {
    let y = Flip(x: x)
    return y
}

remote step Boom(x: Int) -> Int

flow Fails(x: Int) -> Int {
    let b = Boom(x: x)
    return b
}

flow Idle() -> Timestamp {
    let w = Wait(duration: 1h)
    return w
}

bindings dev {
    Flip = sim { duration: 10ms, failure_rate: 0.5 }
    Boom = sim { duration: 2s, failure_rate: 1.0 }
}
"#;

/// Every run of `query` once the history holds them all, waiting until
/// `n` of them are in one of `statuses`.
async fn runs_when(api: &Api, token: &str, query: &str, n: usize, statuses: &[&str]) -> Vec<Value> {
    poll_until(
        &format!("{n} runs of {query} in {statuses:?}"),
        Duration::from_secs(60),
        || async {
            let runs = api.all_runs(token, query).await;
            let done = runs
                .iter()
                .filter(|r| statuses.contains(&r["status"].as_str().unwrap_or_default()))
                .count();
            (runs.len() == n && done == n).then_some(runs)
        },
    )
    .await
}

fn id_set(runs: &[Value]) -> BTreeSet<String> {
    runs.iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

/// The events of run `id` that are a cancel or retry, with their reasons.
async fn actions_on(api: &Api, token: &str, id: &str) -> Vec<(String, String)> {
    let events = api
        .get(Some(token), &format!("/v1/runs/{id}/events?limit=1000"))
        .await
        .ok("events");
    events
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| {
            let kind = e["event"]["type"].as_str()?;
            matches!(kind, "retry_requested" | "cancel_requested").then(|| {
                (
                    kind.to_string(),
                    e["event"]["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
        })
        .collect()
}

async fn job(api: &Api, token: &str, id: &str) -> Value {
    api.get(Some(token), &format!("/v1/bulk/{id}"))
        .await
        .ok("the job")
}

async fn job_when(api: &Api, token: &str, id: &str, state: &str) -> Value {
    poll_until(
        &format!("bulk job {id} to be {state}"),
        Duration::from_secs(60),
        || async {
            let j = job(api, token, id).await;
            (j["state"] == state).then_some(j)
        },
    )
    .await
}

/// A bulk retry of the failed runs of a flow retries exactly those, each
/// once, with the job named in its event; runs started after the job are
/// not touched; pause holds it still; another tenant cannot see or touch it.
async fn a_bulk_retry_acts_on_exactly_the_failed_runs(s: &TestServer) {
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let other = api.create_tenant("other", json!({})).await;
    api.deploy_source(&token, &[("bulk.eflow", SOURCE)]).await;
    api.deploy_source(&other, &[("bulk.eflow", SOURCE)]).await;
    for x in 0..200 {
        api.start(&token, "Work", json!({"x": x})).await;
    }
    // Another tenant's failed runs of the same flow are not acme's job's.
    for x in 0..10 {
        api.start(&other, "Fails", json!({"x": x})).await;
    }
    let all = runs_when(
        api,
        &token,
        "flow=Work&limit=1000",
        200,
        &["succeeded", "failed"],
    )
    .await;
    let failed: BTreeSet<String> = all
        .iter()
        .filter(|r| r["status"] == "failed")
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert!(
        !failed.is_empty() && failed.len() < 200,
        "about half fail: {}",
        failed.len()
    );

    let request = json!({
        "action": "retry",
        "query": {"runs": {"flow": "Work", "status": "failed"}},
        "reason": "flaky index",
        "rate": 20,
    });
    let preview = api
        .post(Some(&token), "/v1/bulk/preview", &request)
        .await
        .ok("preview");
    assert_eq!(preview["runs"], failed.len() as u64, "{preview}");
    assert_eq!(preview["more"], false);
    let first = preview["first"].as_array().expect("first");
    assert_eq!(first.len(), failed.len().min(10));
    assert!(first.iter().all(|r| r["status"] == "failed"), "{preview}");

    // Another tenant may not aim at acme's runs.
    let mut theirs = request.clone();
    theirs["query"]["runs"]["tenant"] = json!("acme");
    let r = api.post(Some(&other), "/v1/bulk", &theirs).await;
    assert_eq!(r.expect_error(403, "another tenant's query"), "forbidden");
    let r = api.post(Some(ADMIN), "/v1/bulk/preview", &request).await;
    assert_eq!(
        r.expect_error(400, "the admin names no tenant"),
        "tenant_required"
    );
    let mut bad = request.clone();
    bad["rate"] = json!(0);
    let r = api.post(Some(&token), "/v1/bulk", &bad).await;
    assert_eq!(r.expect_error(400, "a rate of 0"), "invalid_rate");
    let mut bad = request.clone();
    bad["query"]["runs"]["status"] = json!("broken");
    let r = api.post(Some(&token), "/v1/bulk", &bad).await;
    assert_eq!(r.expect_error(400, "an unknown status"), "invalid_status");

    let started = api
        .post(Some(&token), "/v1/bulk", &request)
        .await
        .ok("start the job");
    let id = started["id"].as_str().expect("job id").to_string();
    assert_eq!(started["state"], "running");
    assert_eq!(started["action"], "retry");
    // Paused, it acts on no more runs (a page in hand is finished first).
    let paused = api
        .post(Some(&token), &format!("/v1/bulk/{id}/pause"), &json!({}))
        .await
        .ok("pause");
    assert_eq!(paused["state"], "paused");
    // Runs started after the job are not its, though they fail the same.
    let mut later = BTreeSet::new();
    for x in 0..20 {
        let r = api.start(&token, "Work", json!({"x": 1000 + x})).await;
        later.insert(r["id"].as_str().expect("id").to_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = job(api, &token, &id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = job(api, &token, &id).await;
    assert_eq!(a["acted"], b["acted"], "paused: {a} then {b}");
    assert!(
        b["acted"].as_u64() < Some(failed.len() as u64),
        "paused before the end: {b}"
    );
    assert_eq!(b["state"], "paused");
    // Pausing again changes nothing; a paused job cannot be paused into running.
    let again = api
        .post(Some(&token), &format!("/v1/bulk/{id}/pause"), &json!({}))
        .await
        .ok("pause again");
    assert_eq!(again["state"], "paused");

    // Another tenant neither sees nor touches it.
    for path in [format!("/v1/bulk/{id}")] {
        let r = api.get(Some(&other), &path).await;
        assert_eq!(r.expect_error(404, "another tenant's job"), "not_found");
    }
    for verb in ["pause", "resume", "cancel"] {
        let r = api
            .post(Some(&other), &format!("/v1/bulk/{id}/{verb}"), &json!({}))
            .await;
        assert_eq!(r.expect_error(404, "another tenant's job"), "not_found");
    }
    let theirs = api.get(Some(&other), "/v1/bulk").await.ok("their list");
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let r = api.get(Some(&other), "/v1/bulk?tenant=acme").await;
    assert_eq!(r.expect_error(403, "another tenant's list"), "forbidden");

    let resumed = api
        .post(Some(&token), &format!("/v1/bulk/{id}/resume"), &json!({}))
        .await
        .ok("resume");
    assert_eq!(resumed["state"], "running");
    let done = job_when(api, &token, &id, "done").await;
    assert_eq!(done["selected"], failed.len() as u64, "{done}");
    assert_eq!(done["acted"], failed.len() as u64, "{done}");
    assert_eq!(done["skipped"], 0, "{done}");
    assert_eq!(done["errors"], 0, "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
    let r = api
        .post(Some(&token), &format!("/v1/bulk/{id}/resume"), &json!({}))
        .await;
    assert_eq!(
        r.expect_error(409, "resume a finished job"),
        "bulk_job_state"
    );

    // Exactly the failed runs, each once, naming the job.
    let reason = format!("bulk {id}: flaky index");
    for run in &failed {
        let acts = actions_on(api, &token, run).await;
        assert_eq!(
            acts,
            vec![("retry_requested".to_string(), reason.clone())],
            "run {run}"
        );
    }
    for run in id_set(&all).difference(&failed).chain(later.iter()) {
        assert_eq!(actions_on(api, &token, run).await, vec![], "run {run}");
    }
    // The other tenant's failed runs were not touched.
    let theirs = api.all_runs(&other, "flow=Fails").await;
    for run in id_set(&theirs) {
        assert_eq!(actions_on(api, &other, &run).await, vec![], "run {run}");
    }

    // Listed for its tenant and the admin, newest first, a page at a time.
    let list = api.get(Some(&token), "/v1/bulk").await.ok("list");
    assert_eq!(list["items"][0]["id"], id.as_str(), "{list}");
    let admin = api
        .get(Some(ADMIN), "/v1/bulk?limit=1")
        .await
        .ok("admin list");
    assert_eq!(admin["items"][0]["id"], id.as_str(), "{admin}");
    assert_eq!(admin["items"][0]["tenant"], "acme");
    let r = api.get(Some(ADMIN), "/v1/bulk?cursor=nope").await;
    assert_eq!(r.expect_error(400, "a bad cursor"), "invalid_cursor");
}

/// A bulk cancel of running runs, cancelled part way: it acts on no run
/// after, and the runs it cancelled are exactly as many as it says.
async fn a_bulk_cancel_stops_when_cancelled(s: &TestServer) {
    let api = &s.api;
    let token = api.create_tenant("calm", json!({})).await;
    api.deploy_source(&token, &[("bulk.eflow", SOURCE)]).await;
    for _ in 0..30 {
        api.start(&token, "Idle", json!({})).await;
    }
    runs_when(api, &token, "flow=Idle", 30, &["running"]).await;
    let started = api
        .post(
            Some(&token),
            "/v1/bulk",
            &json!({
                "action": "cancel",
                "query": {"runs": {"flow": "Idle", "status": "running"}},
                "rate": 5,
            }),
        )
        .await
        .ok("start");
    let id = started["id"].as_str().expect("id").to_string();
    poll_until("the job to act", Duration::from_secs(30), || async {
        let j = job(api, &token, &id).await;
        (j["acted"].as_u64() >= Some(5)).then_some(())
    })
    .await;
    let cancelled = api
        .post(Some(&token), &format!("/v1/bulk/{id}/cancel"), &json!({}))
        .await
        .ok("cancel the job");
    assert_eq!(cancelled["state"], "cancelled");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = job(api, &token, &id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = job(api, &token, &id).await;
    assert_eq!(a["acted"], b["acted"], "cancelled: {a} then {b}");
    let acted = b["acted"].as_u64().expect("acted") as usize;
    assert!(acted < 30, "stopped part way: {b}");
    let r = api
        .post(Some(&token), &format!("/v1/bulk/{id}/resume"), &json!({}))
        .await;
    assert_eq!(
        r.expect_error(409, "resume a cancelled job"),
        "bulk_job_state"
    );

    api.history_caught_up().await;
    let runs = api.all_runs(&token, "flow=Idle").await;
    let gone: Vec<&Value> = runs.iter().filter(|r| r["status"] == "cancelled").collect();
    assert_eq!(gone.len(), acted, "{b}");
    for r in &gone {
        let acts = actions_on(api, &token, r["id"].as_str().expect("id")).await;
        assert_eq!(
            acts,
            vec![("cancel_requested".to_string(), format!("bulk {id}"))]
        );
    }
}

/// Starts `Fails` for `key`; its run's id.
async fn start_keyed(api: &Api, token: &str, key: &str) -> String {
    let r = api
        .post(
            Some(token),
            "/v1/runs",
            &json!({"flow": "Fails", "input": {"x": 1}, "key": key}),
        )
        .await
        .ok("start a keyed run");
    r["id"].as_str().expect("id").to_string()
}

/// A bulk retry over a filtered population ("failed twice in a row")
/// retries each selected key's latest run once, and no other run: not the
/// keys' earlier runs, not the keys that failed once, not another flow's.
async fn a_bulk_retry_over_a_population_acts_on_each_keys_latest_run(s: &TestServer) {
    let api = &s.api;
    let token = api.create_tenant("keys", json!({})).await;
    api.deploy_source(&token, &[("bulk.eflow", SOURCE)]).await;
    let twice: Vec<String> = (0..5).map(|i| format!("twice-{i}")).collect();
    let once: Vec<String> = (0..3).map(|i| format!("once-{i}")).collect();
    let mut first = BTreeSet::new();
    for k in twice.iter().chain(&once) {
        first.insert(start_keyed(api, &token, k).await);
    }
    runs_when(api, &token, "flow=Fails", 8, &["failed"]).await;
    let mut latest = BTreeSet::new();
    for k in &twice {
        latest.insert(start_keyed(api, &token, k).await);
    }
    runs_when(api, &token, "flow=Fails", 13, &["failed"]).await;

    let request = json!({
        "action": "retry",
        "query": {"population": {"flow": "Fails", "failed_in_a_row": 2}},
    });
    let preview = api
        .post(Some(&token), "/v1/bulk/preview", &request)
        .await
        .ok("preview");
    assert_eq!(preview["runs"], 5, "{preview}");
    let shown: BTreeSet<String> = id_set(preview["first"].as_array().expect("first"));
    assert_eq!(shown, latest, "{preview}");
    assert!(
        preview["first"]
            .as_array()
            .expect("first")
            .iter()
            .all(|r| r["key"].as_str().is_some_and(|k| k.starts_with("twice-"))),
        "{preview}"
    );
    // A population names its flow; a streak of 0 is no filter.
    let r = api
        .post(
            Some(&token),
            "/v1/bulk/preview",
            &json!({"action": "retry", "query": {"population": {"flow": "Fails", "failed_in_a_row": 0}}}),
        )
        .await;
    assert_eq!(
        r.expect_error(400, "a streak of 0"),
        "invalid_failed_in_a_row"
    );
    let r = api
        .post(
            Some(&token),
            "/v1/bulk",
            &json!({"action": "retry", "query": {"population": {"status": "failed"}}}),
        )
        .await;
    r.expect_error(400, "a population without its flow");

    let started = api
        .post(Some(&token), "/v1/bulk", &request)
        .await
        .ok("start the job");
    let id = started["id"].as_str().expect("job id").to_string();
    let mut stored = request["query"].clone();
    stored["population"]["tenant"] = json!("keys");
    assert_eq!(started["query"], stored, "{started}");
    let done = job_when(api, &token, &id, "done").await;
    assert_eq!(done["selected"], 5, "{done}");
    assert_eq!(done["acted"], 5, "{done}");
    assert_eq!(done["skipped"], 0, "{done}");
    for run in &latest {
        assert_eq!(
            actions_on(api, &token, run).await,
            vec![("retry_requested".to_string(), format!("bulk {id}"))],
            "run {run}"
        );
    }
    for run in &first {
        assert_eq!(actions_on(api, &token, run).await, vec![], "run {run}");
    }
    // The retried keys are running or failed again: none is acted on twice
    // by a second walk of the same job (it is done).
    let again = job(api, &token, &id).await;
    assert_eq!(again["acted"], 5, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_on_sqlite() {
    let s = TestServer::start("bulk").await;
    a_bulk_retry_acts_on_exactly_the_failed_runs(&s).await;
    a_bulk_cancel_stops_when_cancelled(&s).await;
    a_bulk_retry_over_a_population_acts_on_each_keys_latest_run(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_on_postgres_and_nats() {
    let Some(schema) = postgres::Schema::create("bulk").await else {
        return;
    };
    let Some(prefix) = nats::Prefix::create("bulk").await else {
        return;
    };
    let s = TestServer::start_with("bulk-pg", |o| {
        o.store = schema.url.clone();
        o.history_store = schema.url.clone();
        o.bus = prefix.url.clone();
    })
    .await;
    a_bulk_retry_acts_on_exactly_the_failed_runs(&s).await;
    a_bulk_cancel_stops_when_cancelled(&s).await;
    a_bulk_retry_over_a_population_acts_on_each_keys_latest_run(&s).await;
    s.stop().await;
}

/// The real server, killed when dropped; its data directory is the test's.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &std::path::Path, addr: SocketAddr) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_eflow"))
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", &addr.to_string(), "--admin-token", ADMIN])
            .env("EFLOW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start eflow serve"),
    )
}

async fn up(api: &Api) {
    let url = format!("{}/v1/health", api.base);
    poll_until("eflow to answer", Duration::from_secs(60), || async {
        let r = reqwest::get(&url).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// `kill -9` while a bulk retry is part way through a page (some of its
/// runs retried, its progress not stored yet), then a restart: the job
/// finishes, and every selected run has exactly one retry (a run retried
/// before the kill is failing again, 2 s later, and would be retried twice
/// if the page done again did not recognise the job's own retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_bulk_retry_acts_on_every_run_once() {
    let data = temp_dir("bulk-kill");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let api = Api::new(format!("http://{addr}"));
    let mut server = serve(&data, addr);
    up(&api).await;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("bulk.eflow", SOURCE)]).await;
    const N: usize = 300;
    for x in 0..N {
        api.start(&token, "Fails", json!({"x": x})).await;
    }
    let failed = id_set(&runs_when(&api, &token, "flow=Fails&limit=1000", N, &["failed"]).await);
    let started = api
        .post(
            Some(&token),
            "/v1/bulk",
            &json!({
                "action": "retry",
                "query": {"runs": {"flow": "Fails", "status": "failed"}},
                "rate": 300,
            }),
        )
        .await
        .ok("start");
    let id = started["id"].as_str().expect("id").to_string();
    // Kill as soon as the first retried run shows: the job's first page is
    // in progress, nothing of it stored.
    poll_until("a run retried", Duration::from_secs(30), || async {
        let r = api
            .get(Some(&token), "/v1/runs?flow=Fails&status=running&limit=1")
            .await;
        (r.status == 200 && r.body["items"].as_array().is_some_and(|a| !a.is_empty())).then_some(())
    })
    .await;
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();
    drop(server);
    // Where the kill landed: a page held (acted on in part, nothing of it
    // counted) is what the restart has to do again.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}?mode=ro",
        data.join("history.db").display()
    ))
    .await
    .expect("open the history");
    let (held, acted): (bool, i64) =
        sqlx::query_as("SELECT page IS NOT NULL, acted FROM h_bulk_jobs WHERE id = ?1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .expect("the job's row");
    pool.close().await;
    println!("killed with a page held: {held}, {acted} runs counted as acted");

    let _server = serve(&data, addr);
    up(&api).await;
    let done = job_when(&api, &token, &id, "done").await;
    assert_eq!(done["selected"], N as u64, "{done}");
    assert_eq!(done["acted"], N as u64, "{done}");
    assert_eq!(done["skipped"], 0, "{done}");
    assert_eq!(done["errors"], 0, "{done}");
    // Each run failed again after its retry; none is retried a second time.
    runs_when(&api, &token, "flow=Fails&limit=1000", N, &["failed"]).await;
    let reason = format!("bulk {id}");
    for run in &failed {
        assert_eq!(
            actions_on(&api, &token, run).await,
            vec![("retry_requested".to_string(), reason.clone())],
            "run {run}"
        );
    }
    drop(_server);
    let _ = std::fs::remove_dir_all(&data);
}
