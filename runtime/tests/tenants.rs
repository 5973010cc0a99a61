//! Tenants: isolation between tenants, quotas, purge, authentication.

mod common;

use common::*;
use serde_json::{Value, json};

fn id_of(run: &Value) -> String {
    run["id"].as_str().expect("a run id").to_string()
}

/// Everything a tenant has, as its own token sees it.
struct Fixture {
    token: String,
    /// A run waiting for its approval.
    pending: String,
    /// A run that registered a model.
    registered: String,
    /// A run of `Long`, running.
    long: String,
    schedule: String,
}

async fn wait_pending_approval(api: &Api, token: &str, run: &str) {
    poll_until(&format!("the approval of {run}"), DEADLINE, || async {
        let list = api.get(Some(token), "/v1/approvals").await.ok("approvals");
        list.as_array()?
            .iter()
            .any(|a| a["run"] == run)
            .then_some(())
    })
    .await;
}

async fn fixture(api: &Api, tenant: &str) -> Fixture {
    let token = api.create_tenant(tenant, json!({})).await;
    api.deploy_source(&token, &[("flows.eflow", SOURCE)]).await;
    let registered = id_of(
        &api.start(&token, "Pipeline", json!({"model_name": "churn"}))
            .await,
    );
    wait_pending_approval(api, &token, &registered).await;
    api.post(
        Some(&token),
        &format!("/v1/runs/{registered}/approvals/decision"),
        &json!({"approve": true}),
    )
    .await
    .ok("approve");
    let done = api.wait_finished(&token, &registered).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let pending = id_of(
        &api.start(&token, "Pipeline", json!({"model_name": "churn"}))
            .await,
    );
    wait_pending_approval(api, &token, &pending).await;
    let long = id_of(&api.start(&token, "Long", json!({"x": 1})).await);
    let schedules = api.get(Some(&token), "/v1/schedules").await.ok("schedules");
    let schedule = schedules[0]["id"].as_str().expect("a schedule").to_string();
    // History knows the three runs.
    poll_until(&format!("history of {tenant}"), DEADLINE, || async {
        (api.all_runs(&token, "limit=100").await.len() == 3).then_some(())
    })
    .await;
    Fixture {
        token,
        pending,
        registered,
        long,
        schedule,
    }
}

/// Asserts a refusal: 403 or 404 with a JSON error, and none of `secrets` in the body.
fn refused(r: &Resp, what: &str, secrets: &[&str]) {
    assert!(
        r.status == 403 || r.status == 404,
        "{what}: expected 403 or 404, got {} {}",
        r.status,
        r.text
    );
    r.error_code(what);
    for s in secrets {
        // The id asked for may be echoed in the message; nothing else of B's may appear.
        assert!(
            !r.text.contains(s),
            "{what}: the answer leaks `{s}`: {}",
            r.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_can_neither_see_nor_touch_another() {
    let s = TestServer::start("isolation").await;
    let api = &s.api;
    let a = fixture(api, "alpha").await;
    let b = fixture(api, "bravo").await;
    let ta = Some(a.token.as_str());
    let leaks: Vec<&str> = vec!["bravo", &b.pending, &b.registered, &b.long, &b.schedule];

    // Lists show only A's own things.
    let flows = api.get(ta, "/v1/flows").await.ok("flows");
    assert!(
        flows
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["tenant"] == "alpha"),
        "{flows}"
    );
    let runs = api.all_runs(&a.token, "limit=100").await;
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r["tenant"] == "alpha"), "{runs:?}");
    for path in [
        "/v1/flows",
        "/v1/runs",
        "/v1/approvals",
        "/v1/schedules",
        "/v1/registry",
        "/v1/tenants",
    ] {
        let r = api.get(ta, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        for s in &leaks {
            assert!(!r.text.contains(s), "{path} leaks `{s}`: {}", r.text);
        }
    }
    let approvals = api.get(ta, "/v1/approvals?pending=false").await;
    assert!(!approvals.text.contains("bravo"), "{}", approvals.text);

    // Naming B is forbidden.
    for path in [
        "/v1/flows?tenant=bravo",
        "/v1/runs?tenant=bravo",
        "/v1/approvals?tenant=bravo",
        "/v1/schedules?tenant=bravo",
        "/v1/registry?tenant=bravo",
        "/v1/stats",
    ] {
        refused(&api.get(ta, path).await, path, &leaks[1..]);
    }

    // B's runs are absent for A.
    for id in [&b.pending, &b.registered, &b.long] {
        let secrets: Vec<&str> = leaks.iter().copied().filter(|x| x != id).collect();
        refused(
            &api.get(ta, &format!("/v1/runs/{id}")).await,
            "get B's run",
            &secrets,
        );
        refused(
            &api.get(ta, &format!("/v1/runs/{id}/events")).await,
            "B's events",
            &secrets,
        );
        refused(
            &api.post(ta, &format!("/v1/runs/{id}/cancel"), &json!({}))
                .await,
            "cancel B's run",
            &secrets,
        );
    }
    refused(
        &api.post(
            ta,
            &format!("/v1/runs/{}/approvals/decision", b.pending),
            &json!({"approve": false}),
        )
        .await,
        "decide B's approval",
        &[],
    );
    for action in ["pause", "resume"] {
        refused(
            &api.post(
                ta,
                &format!("/v1/schedules/{}/{action}", b.schedule),
                &json!({}),
            )
            .await,
            &format!("{action} B's schedule"),
            &[],
        );
    }
    refused(
        &api.post(
            ta,
            &format!("/v1/schedules/{}/backfill", b.schedule),
            &json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}),
        )
        .await,
        "backfill B's schedule",
        &[],
    );
    // Acting for B, or as an admin, is refused.
    refused(
        &api.post(ta, "/v1/runs", &json!({"flow": "Long", "tenant": "bravo"}))
            .await,
        "start a run for B",
        &[],
    );
    refused(
        &api.post(
            ta,
            "/v1/flows",
            &json!({"tenant": "bravo", "source": {"f.eflow": SOURCE}}),
        )
        .await,
        "deploy for B",
        &[],
    );
    refused(&api.delete(ta, "/v1/tenants/bravo").await, "purge B", &[]);
    refused(
        &api.post(ta, "/v1/tenants", &json!({"id": "charlie"})).await,
        "create a tenant",
        &[],
    );
    // B's things are as they were.
    let tb = Some(b.token.as_str());
    let long = api
        .get(tb, &format!("/v1/runs/{}", b.long))
        .await
        .ok("B's long run");
    assert_eq!(long["status"], "running", "{long}");
    let approvals = api.get(tb, "/v1/approvals").await.ok("B's approvals");
    assert!(
        approvals
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["run"] == b.pending.as_str()),
        "B's approval is still pending: {approvals}"
    );
    let schedules = api.get(tb, "/v1/schedules").await.ok("B's schedules");
    assert_eq!(schedules[0]["paused"], false, "{schedules}");
    let registry = api.get(tb, "/v1/registry").await.ok("B's registry");
    assert_eq!(registry.as_array().map(Vec::len), Some(1), "{registry}");
    assert_eq!(registry[0]["lineage"]["run"], b.registered.as_str());
    let _ = a.pending;
    s.stop().await;
}

/// Run ids a client chooses are its tenant's own: tenant B may use an id
/// tenant A uses, gets a run of its own (no refusal that would say A's run
/// exists), and each tenant sees, cancels and reads the events of only its
/// own run under that id. An admin names them `TENANT:ID`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_run_ids_are_per_tenant() {
    let s = TestServer::start("run-id-per-tenant").await;
    let api = &s.api;
    let ta = api.create_tenant("alpha", json!({})).await;
    let tb = api.create_tenant("bravo", json!({})).await;
    api.deploy_source(&ta, &[("flows.eflow", SOURCE)]).await;
    api.deploy_source(&tb, &[("flows.eflow", SOURCE)]).await;
    let start = |token: &str, id: &str, x: i64| {
        let token = token.to_string();
        let body = json!({"flow": "Long", "id": id, "input": {"x": x}});
        async move { api.post(Some(&token), "/v1/runs", &body).await }
    };
    let a = start(&ta, "nightly-1", 1)
        .await
        .ok("alpha starts nightly-1");
    let b = start(&tb, "nightly-1", 2)
        .await
        .ok("bravo starts nightly-1");
    assert_eq!(
        (a["id"].as_str(), a["tenant"].as_str()),
        (Some("nightly-1"), Some("alpha"))
    );
    assert_eq!(
        (b["id"].as_str(), b["tenant"].as_str()),
        (Some("nightly-1"), Some("bravo"))
    );
    assert_eq!(b["input"]["x"], 2, "bravo got its own run: {b}");
    // Starting the same id again is the same run, per tenant.
    let again = start(&tb, "nightly-1", 99).await.ok("bravo again");
    assert_eq!(again["input"]["x"], 2, "{again}");
    // Each sees its own under the id.
    assert_eq!(api.run(&ta, "nightly-1").await["input"]["x"], 1);
    assert_eq!(api.run(&tb, "nightly-1").await["input"]["x"], 2);

    // An id another tenant's run got from the server is free too.
    let theirs = id_of(&api.start(&tb, "Long", json!({"x": 7})).await);
    let mine = start(&ta, &theirs, 3)
        .await
        .ok("alpha takes bravo's generated id");
    assert_eq!(mine["tenant"], "alpha", "{mine}");
    assert_eq!(mine["id"], theirs.as_str(), "{mine}");
    assert_eq!(mine["input"]["x"], 3, "{mine}");
    let b = api.run(&tb, &theirs).await;
    assert_eq!(
        (b["tenant"].as_str(), b["input"]["x"].as_i64()),
        (Some("bravo"), Some(7))
    );

    // Cancelling and events touch the caller's own run only.
    api.post(Some(&ta), "/v1/runs/nightly-1/cancel", &json!({}))
        .await
        .ok("alpha cancels its nightly-1");
    api.wait_status(&ta, "nightly-1", &["cancelled"]).await;
    assert_eq!(api.run(&tb, "nightly-1").await["status"], "running");
    let events = api
        .get(Some(&tb), "/v1/runs/nightly-1/events")
        .await
        .ok("bravo's events");
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"]["type"] != "cancel_requested"),
        "{events}"
    );

    // History lists each tenant's run under the id it chose.
    api.history_caught_up().await;
    for (token, tenant) in [(&ta, "alpha"), (&tb, "bravo")] {
        let runs = api.all_runs(token, "limit=100").await;
        assert!(ids(&runs).contains(&"nightly-1".to_string()), "{runs:?}");
        assert!(runs.iter().all(|r| r["tenant"] == tenant), "{runs:?}");
    }
    // The admin sees both, qualified by tenant, and names them so.
    let runs = api.all_runs(ADMIN, "limit=100").await;
    let all = ids(&runs);
    for id in ["alpha:nightly-1", "bravo:nightly-1"] {
        assert!(all.contains(&id.to_string()), "{all:?}");
    }
    assert_eq!(api.run(ADMIN, "bravo:nightly-1").await["input"]["x"], 2);
    // A tenant cannot reach another's through the qualified form.
    let r = api.get(Some(&ta), "/v1/runs/bravo:nightly-1").await;
    refused(&r, "alpha names bravo's qualified id", &["\"x\": 2"]);
    s.stop().await;
}

/// A run with a chosen id is decided, listed and registered under that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_run_id_is_the_one_approvals_and_the_registry_show() {
    let s = TestServer::start("run-id-approvals").await;
    let api = &s.api;
    let ta = api.create_tenant("alpha", json!({})).await;
    api.deploy_source(&ta, &[("flows.eflow", SOURCE)]).await;
    api.post(
        Some(&ta),
        "/v1/runs",
        &json!({"flow": "Pipeline", "id": "churn-1", "input": {"model_name": "churn"}}),
    )
    .await
    .ok("start churn-1");
    wait_pending_approval(api, &ta, "churn-1").await;
    let decided = api
        .post(
            Some(&ta),
            "/v1/runs/churn-1/approvals/decision",
            &json!({"approve": true}),
        )
        .await
        .ok("decide");
    assert_eq!(decided["run"], "churn-1", "{decided}");
    let done = api.wait_finished(&ta, "churn-1").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let reg = api.get(Some(&ta), "/v1/registry").await.ok("registry");
    assert_eq!(reg[0]["lineage"]["run"], "churn-1", "{reg}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_on_active_runs() {
    let s = TestServer::start("quota-active").await;
    let api = &s.api;
    let token = api
        .create_tenant("small", json!({"max_active_runs": 2}))
        .await;
    api.deploy_source(&token, &[("flows.eflow", SOURCE)]).await;
    let r1 = id_of(&api.start(&token, "Long", json!({})).await);
    let _r2 = id_of(&api.start(&token, "Long", json!({})).await);
    let third = api
        .post(Some(&token), "/v1/runs", &json!({"flow": "Long"}))
        .await;
    assert_eq!(third.expect_error(429, "a third run"), "quota_active_runs");
    // Restarting an existing id is not a new run and is not refused for being one... but a new one still is.
    let fourth = api
        .post(
            Some(&token),
            "/v1/runs",
            &json!({"flow": "Long", "id": "mine-1"}),
        )
        .await;
    assert_eq!(
        fourth.expect_error(429, "a fourth run"),
        "quota_active_runs"
    );
    // A run that ends frees its place.
    api.post(Some(&token), &format!("/v1/runs/{r1}/cancel"), &json!({}))
        .await
        .ok("cancel");
    api.wait_finished(&token, &r1).await;
    let again = poll_until("a place to be free", DEADLINE, || async {
        let r = api
            .post(Some(&token), "/v1/runs", &json!({"flow": "Long"}))
            .await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(again.body["status"], "running", "{}", again.text);
    let refused = api
        .post(Some(&token), "/v1/runs", &json!({"flow": "Long"}))
        .await;
    assert_eq!(
        refused.expect_error(429, "over the limit again"),
        "quota_active_runs"
    );
    // Another tenant is not limited by this one's quota.
    let other = api.create_tenant("big", json!({})).await;
    api.deploy_source(&other, &[("flows.eflow", SOURCE)]).await;
    for _ in 0..3 {
        api.start(&other, "Long", json!({})).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilled_runs_count_against_the_quota_and_a_backfill_is_refused_whole() {
    let s = TestServer::start("quota-backfill").await;
    let api = &s.api;
    let token = api
        .create_tenant("small", json!({"max_active_runs": 3}))
        .await;
    api.deploy_source(&token, &[("flows.eflow", SOURCE)]).await;
    let first = id_of(&api.start(&token, "Long", json!({})).await);
    let schedules = api.get(Some(&token), "/v1/schedules").await.ok("schedules");
    let sid = schedules[0]["id"]
        .as_str()
        .expect("schedule id")
        .to_string();
    let path = format!("/v1/schedules/{sid}/backfill");
    let (path, tok) = (path.as_str(), token.as_str());
    let backfill = |from: &'static str, to: &'static str| async move {
        api.post(Some(tok), path, &json!({"from": from, "to": to}))
            .await
    };
    // "0 0 1 1 *": three fire times from 2020 to 2022; with one run in
    // progress, three more pass the limit of three: nothing starts.
    let refused = backfill("2020-01-01T00:00:00Z", "2022-01-01T00:00:00Z").await;
    assert_eq!(
        refused.expect_error(429, "a backfill past the limit"),
        "quota_active_runs"
    );
    assert!(refused.text.contains("3 more"), "{}", refused.text);
    for year in [2020, 2021, 2022] {
        let nominal = eflow_core::time::parse_rfc3339(&format!("{year}-01-01T00:00:00Z")).unwrap();
        let rid = eflow_core::schedule::run_id(&sid, nominal as u64);
        let r = api.get(Some(&token), &format!("/v1/runs/{rid}")).await;
        assert_eq!(
            r.status, 404,
            "a refused backfill started {rid}: {}",
            r.text
        );
    }
    // Two fit, and then they hold their places.
    let ok = backfill("2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z")
        .await
        .ok("a backfill within the limit");
    let runs: Vec<String> = ok["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(runs.len(), 2, "{ok}");
    let over = api
        .post(Some(&token), "/v1/runs", &json!({"flow": "Long"}))
        .await;
    assert_eq!(
        over.expect_error(429, "a start after the backfill filled the quota"),
        "quota_active_runs"
    );
    // The same range again starts nothing new, so it needs no room.
    let again = backfill("2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z")
        .await
        .ok("the same backfill again");
    assert_eq!(again["runs"], ok["runs"]);
    // A backfilled run that ends frees its place.
    api.post(
        Some(&token),
        &format!("/v1/runs/{}/cancel", runs[0]),
        &json!({}),
    )
    .await
    .ok("cancel");
    api.wait_finished(&token, &runs[0]).await;
    poll_until("a place to be free", DEADLINE, || async {
        let r = api
            .post(Some(&token), "/v1/runs", &json!({"flow": "Long"}))
            .await;
        (r.status == 200).then_some(())
    })
    .await;
    assert_eq!(api.run(&token, &first).await["status"], "running");
    s.stop().await;
}

/// A schedule that fires every second, each run holding its place for an hour.
const EVERY_SECOND: &str = r#"
remote step Hold(x: Int) -> Int

flow Every(x: Int = 1) -> Int {
    schedule "* * * * * *"
        overlap allow_all
        catchup skip
    let h = Hold(x: x)
    return h
}

bindings dev {
    Hold = sim { duration: 1h, failure_rate: 0.0 }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_count_against_the_quota_and_fires_past_it_are_skipped() {
    let (s, clock) = TestServer::start_with_manual_clock("quota-schedule", |_| {}).await;
    let api = &s.api;
    let token = api
        .create_tenant("small", json!({"max_active_runs": 2}))
        .await;
    api.deploy_source(&token, &[("every.eflow", EVERY_SECOND)])
        .await;
    let sid = "small.Every.0";
    // One fire a second: two fill the quota.
    for _ in 0..2 {
        next_second(api, &token, &clock, sid).await;
    }
    api.history_caught_up().await;
    assert_eq!(api.all_runs(&token, "flow=Every").await.len(), 2);
    // Fires keep coming every second; none may pass the limit.
    for _ in 0..3 {
        next_second(api, &token, &clock, sid).await;
    }
    api.history_caught_up().await;
    let runs = api.all_runs(&token, "flow=Every").await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let refused = api
        .post(Some(&token), "/v1/runs", &json!({"flow": "Every"}))
        .await;
    assert_eq!(
        refused.expect_error(429, "a start while scheduled runs fill the quota"),
        "quota_active_runs"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_on_start_rate() {
    let (s, clock) = TestServer::start_with_manual_clock("quota-rate", |_| {}).await;
    let api = &s.api;
    let token = api
        .create_tenant("slow", json!({"max_starts_per_sec": 1.0}))
        .await;
    api.deploy_source(&token, &[("flows.eflow", SOURCE)]).await;
    api.start(&token, "Long", json!({})).await;
    let second = api
        .post(Some(&token), "/v1/runs", &json!({"flow": "Long"}))
        .await;
    assert_eq!(
        second.expect_error(429, "a second start within a second"),
        "quota_start_rate"
    );
    // The bucket refills with time: not before a second, then at once.
    clock.advance(900);
    let early = api
        .post(Some(&token), "/v1/runs", &json!({"flow": "Long"}))
        .await;
    assert_eq!(
        early.expect_error(429, "a start before the bucket refilled"),
        "quota_start_rate"
    );
    clock.advance(100);
    api.start(&token, "Long", json!({})).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_every_row_of_a_tenant_only() {
    let s = TestServer::start("purge").await;
    let api = &s.api;
    let gone = fixture(api, "gone").await;
    let kept = fixture(api, "kept").await;
    let before = |t: &str| format!("/v1/runs?tenant={t}&limit=100");
    let kept_runs = api.get(Some(ADMIN), &before("kept")).await.ok("kept runs");

    let r = api
        .delete(Some(ADMIN), "/v1/tenants/gone")
        .await
        .ok("purge");
    assert_eq!(r["tenant"], "gone");
    assert!(r["rows_deleted"].as_u64().unwrap_or(0) > 0, "{r}");

    for id in [&gone.pending, &gone.registered, &gone.long] {
        let r = api.get(Some(ADMIN), &format!("/v1/runs/{id}")).await;
        assert_eq!(r.expect_error(404, "a purged run"), "not_found");
        let r = api.get(Some(ADMIN), &format!("/v1/runs/{id}/events")).await;
        assert_eq!(r.expect_error(404, "a purged run's events"), "not_found");
    }
    // Nothing of it is left anywhere, and nothing comes back.
    for _ in 0..3 {
        for path in [
            "/v1/flows?tenant=gone",
            "/v1/approvals?tenant=gone&pending=false",
            "/v1/schedules?tenant=gone",
            "/v1/registry?tenant=gone",
        ] {
            let r = api.get(Some(ADMIN), path).await.ok(path);
            assert_eq!(r, json!([]), "{path} after the purge");
        }
        let runs = api.get(Some(ADMIN), &before("gone")).await.ok("runs");
        assert_eq!(runs["items"], json!([]), "history after the purge: {runs}");
        // Whatever the engine committed since is in the history before the next look.
        api.history_caught_up().await;
    }
    let tenants = api.get(Some(ADMIN), "/v1/tenants").await.ok("tenants");
    assert!(
        tenants
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"] != "gone"),
        "{tenants}"
    );
    // Its token no longer works.
    let r = api.get(Some(&gone.token), "/v1/flows").await;
    assert_eq!(
        r.expect_error(401, "a purged tenant's token"),
        "unauthenticated"
    );
    // Purging twice: the tenant is gone.
    let r = api.delete(Some(ADMIN), "/v1/tenants/gone").await;
    assert_eq!(r.expect_error(404, "purge twice"), "not_found");

    // The other tenant is untouched.
    let tk = Some(kept.token.as_str());
    assert_eq!(
        api.get(Some(ADMIN), &before("kept")).await.ok("kept runs")["items"],
        kept_runs["items"]
    );
    let long = api
        .get(tk, &format!("/v1/runs/{}", kept.long))
        .await
        .ok("kept long");
    assert_eq!(long["status"], "running");
    let approvals = api.get(tk, "/v1/approvals").await.ok("kept approvals");
    assert!(
        approvals
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["run"] == kept.pending.as_str())
    );
    assert_eq!(
        api.get(tk, "/v1/registry")
            .await
            .ok("registry")
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        api.get(tk, "/v1/schedules")
            .await
            .ok("schedules")
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(
        !api.get(tk, "/v1/flows")
            .await
            .ok("flows")
            .as_array()
            .unwrap()
            .is_empty()
    );
    api.post(
        tk,
        &format!("/v1/runs/{}/approvals/decision", kept.pending),
        &json!({"approve": true}),
    )
    .await
    .ok("the kept tenant decides");
    let done = api.wait_finished(&kept.token, &kept.pending).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // The id can be used again, from scratch.
    let token = api.create_tenant("gone", json!({})).await;
    assert_eq!(
        api.get(Some(&token), "/v1/flows").await.ok("flows"),
        json!([])
    );
    assert_eq!(
        api.get(Some(&token), "/v1/registry").await.ok("registry"),
        json!([])
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_get_401_json() {
    let s = TestServer::start("unauth").await;
    let api = &s.api;
    api.create_tenant("acme", json!({})).await;
    let gets = [
        "/v1/tenants",
        "/v1/flows",
        "/v1/runs",
        "/v1/runs/x",
        "/v1/runs/x/events",
        "/v1/approvals",
        "/v1/schedules",
        "/v1/registry",
        "/v1/stats",
    ];
    let posts = [
        ("/v1/tenants", json!({"id": "evil"})),
        ("/v1/flows", json!({"source": {"a.eflow": "flow F() {}"}})),
        ("/v1/runs", json!({"flow": "F"})),
        ("/v1/runs/x/cancel", json!({})),
        ("/v1/runs/x/approvals/y", json!({"approve": true})),
        ("/v1/schedules/x/pause", json!({})),
        ("/v1/schedules/x/resume", json!({})),
        (
            "/v1/schedules/x/backfill",
            json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        ),
    ];
    for token in [
        None,
        Some("not-a-token"),
        Some(""),
        Some("eflow_admin_forged"),
    ] {
        for path in gets {
            let r = api.get(token, path).await;
            assert_eq!(
                r.expect_error(401, &format!("GET {path} with {token:?}")),
                "unauthenticated"
            );
        }
        for (path, body) in &posts {
            let r = api.post(token, path, body).await;
            assert_eq!(
                r.expect_error(401, &format!("POST {path} with {token:?}")),
                "unauthenticated"
            );
        }
        let r = api.delete(token, "/v1/tenants/acme").await;
        assert_eq!(r.expect_error(401, "DELETE a tenant"), "unauthenticated");
    }
    // Another scheme than Bearer is not a token.
    let r = api
        .send(
            api.http
                .get(format!("{}/v1/flows", s.addr()))
                .basic_auth("admin", Some(ADMIN)),
        )
        .await;
    assert_eq!(r.expect_error(401, "basic auth"), "unauthenticated");
    // Nothing was done.
    let tenants = api.get(Some(ADMIN), "/v1/tenants").await.ok("tenants");
    assert_eq!(tenants.as_array().map(Vec::len), Some(1), "{tenants}");
    // Health needs no token.
    assert_eq!(
        api.get(None, "/v1/health").await.ok("health")["status"],
        "ok"
    );
    s.stop().await;
}

/// The data directory holds the admin token and the stores with the
/// callback-signing key and token hashes: on first start it is created for its
/// owner only, and so is every file in it.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_its_secrets_are_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let root = temp_dir("secrets");
    let data = root.join("data");
    let o = eflow_runtime::server::Options::new(data.clone(), "127.0.0.1:0".parse().expect("addr"));
    let server = eflow_runtime::server::Server::start(o)
        .await
        .expect("the server starts");
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "the data directory");
    let mut files: Vec<_> = std::fs::read_dir(&data)
        .expect("readable")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for name in ["admin-token", "eflow.db", "history.db"] {
        assert!(files.contains(&data.join(name)), "{name} in {files:?}");
    }
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(root);
}

/// The children of a run with a chosen id carry that id, as the tenant sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subflows_of_a_chosen_run_id_are_named_after_it() {
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
    Square = sim { duration: 50ms, failure_rate: 0.0 }
}
"#;
    let s = TestServer::start("run-id-children").await;
    let api = &s.api;
    let ta = api.create_tenant("alpha", json!({})).await;
    let tb = api.create_tenant("bravo", json!({})).await;
    for t in [&ta, &tb] {
        api.deploy_source(t, &[("fan.eflow", FAN)]).await;
        api.post(
            Some(t),
            "/v1/runs",
            &json!({"flow": "Fan", "id": "fan", "input": {"xs": [1, 2]}}),
        )
        .await
        .ok("start fan");
    }
    for (t, tenant) in [(&ta, "alpha"), (&tb, "bravo")] {
        let done = api.wait_finished(t, "fan").await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let child = api.run(t, "fan.ys.1.1").await;
        assert_eq!(child["parent"], "fan", "{child}");
        assert_eq!(child["tenant"], tenant, "{child}");
        assert_eq!(child["input"]["x"], 2, "{child}");
        let events = api.get(Some(t), "/v1/runs/fan/events").await.ok("events");
        let finished: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["type"] == "child_finished")
            .filter_map(|e| e["id"].as_str())
            .collect();
        assert!(finished.contains(&"child:fan.ys.0.1"), "{events}");
        let subs = poll_until("history to list the children", DEADLINE, || async {
            let runs = api.all_runs(t, "flow=Sub").await;
            (runs.len() == 2).then_some(runs)
        })
        .await;
        assert!(subs.iter().all(|r| r["parent"] == "fan"), "{subs:?}");
    }
    s.stop().await;
}
