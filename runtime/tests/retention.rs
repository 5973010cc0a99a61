//! Finished runs leave the engine's store once the history holds them, and
//! the history lets them go after their tenant's retention: over real HTTP,
//! counting rows in `eflow.db` and `history.db` opened read-only.

mod common;

use std::path::Path;
use std::time::Duration;

use common::binary::eflow;
use common::{ADMIN, Api, TestServer, poll_until};
use eflow_runtime::clock::{Clock, ManualClock};
use serde_json::{Value, json};

/// One approval: a run waits until a test decides it.
const GATE: &str = "from \"std/approval\" import Approve\n\nflow Gate(n: Int) -> Bool {\n    let d = Approve(subject: n, summary: \"Go on?\")\n    return d.approved\n}\n\nbindings test {\n    Approve = approval { channel: \"ui\" }\n}\n";

/// A fan-out over subflows whose results page outlives the engine's rows.
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

bindings test {
    Square = sim { duration: 10ms, failure_rate: 0.0 }
}
"#;

const DEADLINE: Duration = Duration::from_secs(60);

/// How many rows each table of the SQLite file at `path` holds that `sql`'s
/// condition selects, for the tables that have the condition's column.
async fn count(path: &Path, sql: &str) -> i64 {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("open the database read-only");
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    n
}

/// Rows of runs `ids` in each per-run table of the engine's store.
async fn engine_rows(db: &Path, ids: &[String]) -> Vec<(&'static str, i64)> {
    let list = ids
        .iter()
        .map(|i| format!("'{}'", i.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = Vec::new();
    for (table, column) in eflow_runtime::store::PER_RUN_TABLES {
        let n = count(
            db,
            &format!("SELECT count(*) FROM {table} WHERE {column} IN ({list})"),
        )
        .await;
        out.push((table, n));
    }
    out
}

/// Decides run `id`'s approval (approve).
async fn approve(api: &Api, token: &str, id: &str) {
    api.post(
        Some(token),
        &format!("/v1/runs/{id}/approvals/d"),
        &json!({ "approve": true }),
    )
    .await
    .ok(&format!("decide {id}"));
}

/// Moves `clock` a second at a time until run `id` finished.
async fn finish_with_clock(api: &Api, token: &str, clock: &ManualClock, id: &str) -> Value {
    poll_until(&format!("run {id} to finish"), DEADLINE, || async {
        clock.advance(1000);
        let r = api.get(Some(token), &format!("/v1/runs/{id}")).await;
        let s = r.body["status"].as_str().unwrap_or_default().to_string();
        ["succeeded", "failed", "cancelled"]
            .contains(&s.as_str())
            .then_some(r.body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_leave_the_engine_store_and_are_served_from_the_history() {
    let (s, clock) = TestServer::start_with_manual_clock("sweep", |o| {
        o.retention.sweep_after = Duration::from_secs(3600);
    })
    .await;
    let api = &s.api;
    let db = s.dir.join("eflow.db");
    let token = api.create_tenant("keep", json!({})).await;
    api.deploy_source(&token, &[("gate.eflow", GATE), ("fan.eflow", FAN)])
        .await;

    // A run with the client's id, one with the server's, and a fan-out.
    let chosen = api
        .post(
            Some(&token),
            "/v1/runs",
            &json!({ "flow": "Gate", "input": { "n": 1 }, "id": "churn-1" }),
        )
        .await
        .ok("start churn-1");
    assert_eq!(chosen["id"], "churn-1");
    let fresh = api.start(&token, "Gate", json!({ "n": 2 })).await;
    let fresh_id = fresh["id"].as_str().unwrap().to_string();
    approve(api, &token, "churn-1").await;
    approve(api, &token, &fresh_id).await;
    api.wait_finished(&token, "churn-1").await;
    api.wait_finished(&token, &fresh_id).await;
    let fan = api.start(&token, "Fan", json!({ "xs": [1, 2, 3] })).await;
    let fan_id = fan["id"].as_str().unwrap().to_string();
    let fan_done = finish_with_clock(api, &token, &clock, &fan_id).await;
    assert_eq!(fan_done["status"], "succeeded", "{fan_done}");
    api.history_caught_up().await;

    // What a user reads of them while the engine's store holds them.
    let mut before = Vec::new();
    for id in ["churn-1", fresh_id.as_str(), fan_id.as_str()] {
        before.push((
            id.to_string(),
            api.run(&token, id).await,
            api.get(Some(&token), &format!("/v1/runs/{id}/events"))
                .await
                .ok("events"),
        ));
    }
    let results_before = api
        .get(Some(&token), &format!("/v1/runs/{fan_id}/steps/ys/results"))
        .await
        .ok("results");
    assert_eq!(results_before.as_array().map(Vec::len), Some(3));
    let stored: Vec<String> = vec![
        "keep:churn-1".into(),
        fresh_id.clone(),
        fan_id.clone(),
        format!("{fan_id}.ys.0.1"),
        format!("{fan_id}.ys.1.1"),
        format!("{fan_id}.ys.2.1"),
    ];
    let held = engine_rows(&db, &stored).await;
    assert!(
        held.iter().any(|(t, n)| *t == "runs" && *n == 6),
        "{held:?}"
    );
    assert!(
        held.iter().any(|(t, n)| *t == "events" && *n > 6),
        "{held:?}"
    );

    // Inside the grace period nothing leaves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(engine_rows(&db, &stored).await, held);

    // Past it every row of theirs leaves, but the fan-out's results.
    clock.advance(3_600_000);
    let want: Vec<(&str, i64)> = eflow_runtime::store::PER_RUN_TABLES
        .iter()
        .map(|(t, _)| (*t, if *t == "fanout_results" { 3 } else { 0 }))
        .collect();
    poll_until(
        "the finished runs to leave the engine's store",
        DEADLINE,
        || async { (engine_rows(&db, &stored).await == want).then_some(()) },
    )
    .await;
    // What is left to answer a start again: the ids a start may name.
    let swept: i64 = count(&db, "SELECT count(*) FROM swept_runs").await;
    assert_eq!(swept, 5, "churn-1, the fan-out parent and its 3 children");
    let left = count(
        &db,
        &format!("SELECT count(*) FROM swept_runs WHERE id = '{fresh_id}'"),
    )
    .await;
    assert_eq!(left, 0, "a server-made id is never started again");

    // Everything a user reads is the same, now from the history.
    for (id, run, events) in &before {
        assert_eq!(&api.run(&token, id).await, run, "{id}");
        let now = api
            .get(Some(&token), &format!("/v1/runs/{id}/events"))
            .await
            .ok("events");
        assert_eq!(&now, events, "{id}");
    }
    let after_events = api
        .get(Some(&token), "/v1/runs/churn-1/events?after=0&limit=1")
        .await
        .ok("events page");
    assert_eq!(after_events.as_array().map(Vec::len), Some(1));
    assert_eq!(after_events[0]["seq"], 1, "{after_events}");
    // An admin names it by its stored id, and sees that id.
    let mut as_admin = before[0].1.clone();
    as_admin["id"] = json!("keep:churn-1");
    assert_eq!(
        api.get(Some(ADMIN), "/v1/runs/keep:churn-1")
            .await
            .ok("admin get"),
        as_admin
    );
    let results = api
        .get(Some(&token), &format!("/v1/runs/{fan_id}/steps/ys/results"))
        .await
        .ok("results");
    assert_eq!(results, results_before);

    // Starting churn-1 again answers with the same run and starts none.
    let again = api
        .post(
            Some(&token),
            "/v1/runs",
            &json!({ "flow": "Gate", "input": { "n": 7 }, "id": "churn-1" }),
        )
        .await
        .ok("start churn-1 again");
    assert_eq!(again, before[0].1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM runs WHERE id = 'keep:churn-1'").await,
        0
    );
    // Its approval was decided: deciding again is refused the same way.
    let again = api
        .post(
            Some(&token),
            "/v1/runs/churn-1/approvals/d",
            &json!({ "approve": false }),
        )
        .await;
    assert_eq!(
        again.expect_error(409, "decide a swept run"),
        "already_decided"
    );
    // A finished run cannot be cancelled, wherever it is kept.
    let cancel = api
        .post(Some(&token), "/v1/runs/churn-1/cancel", &json!({}))
        .await;
    assert_eq!(cancel.error_code("cancel a swept run"), "run_finished");
    // Another tenant does not see it.
    let other = api.create_tenant("other", json!({})).await;
    api.get(Some(&other), "/v1/runs/churn-1")
        .await
        .expect_error(404, "another tenant's swept run");
    api.get(Some(&other), &format!("/v1/runs/{fresh_id}"))
        .await
        .expect_error(404, "another tenant's swept run");
    // The history still lists them, and finished runs count against no quota.
    api.history_caught_up().await;
    assert_eq!(api.all_runs(&token, "").await.len(), 6);
    let tenant = api.get(Some(ADMIN), "/v1/tenants").await.ok("tenants");
    let keep = tenant
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "keep")
        .unwrap();
    assert_eq!(keep["active_runs"], 0, "{keep}");
    assert_eq!(keep["history_retention"], "400d", "{keep}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_retention_deletes_old_runs_and_what_the_engine_kept_of_them() {
    let (s, clock) = TestServer::start_with_manual_clock("retention", |o| {
        o.retention.sweep_after = Duration::ZERO;
    })
    .await;
    let api = &s.api;
    let (db, hdb) = (s.dir.join("eflow.db"), s.dir.join("history.db"));
    let short = api.create_tenant("short", json!({})).await;
    let long = api.create_tenant("long", json!({})).await;
    for t in [&short, &long] {
        api.deploy_source(t, &[("gate.eflow", GATE), ("fan.eflow", FAN)])
            .await;
    }
    // A bad retention is refused, and changes nothing.
    let bad = api
        .patch(
            Some(ADMIN),
            "/v1/tenants/short",
            &json!({ "history_retention": "soon" }),
        )
        .await;
    assert_eq!(
        bad.expect_error(400, "a bad retention"),
        "invalid_retention"
    );
    let set = api
        .patch(
            Some(ADMIN),
            "/v1/tenants/short",
            &json!({ "history_retention": "1h" }),
        )
        .await
        .ok("set the retention");
    assert_eq!(set["history_retention"], "1h", "{set}");
    api.patch(
        Some(&short),
        "/v1/tenants/short",
        &json!({ "history_retention": "1d" }),
    )
    .await
    .expect_error(403, "a tenant sets its own retention");

    let mut runs = Vec::new();
    for (token, tenant) in [(&short, "short"), (&long, "long")] {
        api.post(
            Some(token),
            "/v1/runs",
            &json!({ "flow": "Gate", "input": { "n": 1 }, "id": "old" }),
        )
        .await
        .ok("start old");
        approve(api, token, "old").await;
        api.wait_finished(token, "old").await;
        let fan = api.start(token, "Fan", json!({ "xs": [1, 2] })).await;
        let fan_id = fan["id"].as_str().unwrap().to_string();
        finish_with_clock(api, token, &clock, &fan_id).await;
        runs.push((tenant, fan_id));
    }
    api.history_caught_up().await;
    // Swept at once (a grace of 0s), kept by the history.
    poll_until("every finished run to be swept", DEADLINE, || async {
        (count(&db, "SELECT count(*) FROM runs").await == 0).then_some(())
    })
    .await;
    let in_history = |tenant: &'static str| {
        let hdb = hdb.clone();
        async move {
            count(
                &hdb,
                &format!(
                    "SELECT (SELECT count(*) FROM h_runs WHERE tenant = '{tenant}') + \
                     (SELECT count(*) FROM h_events WHERE tenant = '{tenant}')"
                ),
            )
            .await
        }
    };
    assert!(in_history("short").await > 0);
    let long_rows = in_history("long").await;

    // Two hours later the short tenant's runs are past its retention; the
    // long one's (the server's 400 days) are not.
    clock.advance(2 * 3_600_000);
    poll_until(
        "the short tenant's runs to pass retention",
        DEADLINE,
        || async { (in_history("short").await == 0).then_some(()) },
    )
    .await;
    assert_eq!(in_history("long").await, long_rows);
    // What the engine kept of them (the fan-out's results, the chosen
    // id's record) went with them; the long tenant's stays.
    let (_, short_fan) = &runs[0];
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM fanout_results WHERE run = '{short_fan}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM swept_runs WHERE tenant = 'short'"
        )
        .await,
        0
    );
    assert!(count(&db, "SELECT count(*) FROM swept_runs WHERE tenant = 'long'").await > 0);
    api.get(Some(&short), "/v1/runs/old")
        .await
        .expect_error(404, "a run past retention");
    assert_eq!(api.run(&long, "old").await["status"], "succeeded");
    // Once the history forgot it, the id starts a new run.
    let new = api
        .post(
            Some(&short),
            "/v1/runs",
            &json!({ "flow": "Gate", "input": { "n": 3 }, "id": "old" }),
        )
        .await
        .ok("start old again");
    assert_eq!(new["status"], "running", "{new}");

    // A purge still leaves nothing of the long tenant, swept or not.
    let purged = api
        .delete(Some(ADMIN), "/v1/tenants/long")
        .await
        .ok("purge");
    assert!(purged["rows_deleted"].as_u64().unwrap() > 0);
    for (path, sql) in [
        (&db, "SELECT count(*) FROM swept_runs WHERE tenant = 'long'"),
        (
            &db,
            "SELECT count(*) FROM fanout_results WHERE run NOT IN (SELECT id FROM runs)",
        ),
        (&hdb, "SELECT count(*) FROM h_runs WHERE tenant = 'long'"),
        (&hdb, "SELECT count(*) FROM h_events WHERE tenant = 'long'"),
    ] {
        assert_eq!(count(path, sql).await, 0, "{sql}");
    }
    assert_eq!(clock.now_ms() % 1000, 500);
    s.stop().await;
}

/// SIGKILL while the sweeper works: every run is whole in one store or the
/// other at the kill, and after the restart each is served as it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_sweeping_loses_no_run() {
    const N: usize = 300;
    let server = eflow("sweep-kill", &["--sweep-after", "0s"]).await;
    let base = format!("http://{}", server.addr);
    let api = Api::new(base.clone());
    let token = api.create_tenant("gate", json!({})).await;
    api.deploy_source(&token, &[("gate.eflow", GATE)]).await;
    for i in 0..N {
        api.post(
            Some(&token),
            "/v1/runs",
            &json!({ "flow": "Gate", "input": { "n": i }, "id": format!("g-{i}") }),
        )
        .await
        .ok("start");
    }
    for i in 0..N {
        approve(&api, &token, &format!("g-{i}")).await;
    }
    let (db, hdb) = (server.data.join("eflow.db"), server.data.join("history.db"));
    // Kill once the sweeper is part way through.
    poll_until("the sweeper to start", DEADLINE, || async {
        let left = count(&db, "SELECT count(*) FROM runs").await;
        (left < N as i64).then_some(())
    })
    .await;
    let mut server = server;
    server.child.kill().expect("kill -9");
    server.child.wait().unwrap();
    // Every run the engine no longer holds is held, finished, by the history.
    let lost = count(
        &db,
        &format!(
            "SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
             SELECT 'gate:g-' || i AS id FROM n) AS want WHERE want.id NOT IN (SELECT id FROM runs)",
            N - 1
        ),
    )
    .await;
    let held = count(
        &hdb,
        "SELECT count(*) FROM h_runs WHERE tenant = 'gate' AND status = 'succeeded' AND state IS NOT NULL",
    )
    .await;
    assert!(lost > 0, "nothing was swept before the kill");
    assert!(
        held >= lost,
        "{lost} runs left the engine but the history holds {held} finished"
    );
    // The same data directory and address again: a new process on them.
    server.child = std::process::Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(["serve", "--data"])
        .arg(&server.data)
        .args(["--listen", &server.addr.to_string(), "--admin-token", ADMIN])
        .args(["--sweep-after", "0s"])
        .env("EFLOW_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("restart eflow serve");
    poll_until("eflow to answer again", DEADLINE, || async {
        let r = reqwest::get(format!("{base}/v1/health")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    poll_until("every run to be swept", DEADLINE, || async {
        (count(&db, "SELECT count(*) FROM runs").await == 0).then_some(())
    })
    .await;
    for i in 0..N {
        let id = format!("g-{i}");
        let run = api.run(&token, &id).await;
        assert_eq!(run["status"], "succeeded", "{id}: {run}");
        assert_eq!(run["result"], true, "{id}: {run}");
        let events = api
            .get(Some(&token), &format!("/v1/runs/{id}/events"))
            .await
            .ok("events");
        let seqs: Vec<u64> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert!(seqs.len() >= 2, "{id}: {events}");
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "{id}");
    }
    api.history_caught_up().await;
    assert_eq!(api.all_runs(&token, "").await.len(), N);
}
