//! Schedules as data, over real HTTP against the in-process server: made,
//! changed, listed and deleted through the API, each with its own cron,
//! policies, input and key; firing with their input, surviving redeploys,
//! following the flow's head unless pinned, purged with their tenant, held
//! to the per-tenant limit; bad ones refused with what to do.

mod common;

use common::*;
use serde_json::{Value, json};

/// A model per customer: the schedule's input names the customer.
fn model_source(default_n: i64) -> String {
    format!(
        r#"
remote step Train(customer: String, n: Int) -> Int

flow Model(customer: String, n: Int = {default_n}) -> Int {{
    let t = Train(customer: customer, n: n)
    return t
}}

bindings dev {{
    Train = sim {{ duration: 0ms, failure_rate: 0.0 }}
}}
"#
    )
}

/// A flow with a declared schedule, which the deployment owns.
const DECLARED: &str = r#"
remote step Look(x: Int) -> Int

flow Nightly(x: Int = 1) -> Int {
    schedule "0 3 * * *"
    let l = Look(x: x)
    return l
}

bindings dev {
    Look = sim { duration: 0ms, failure_rate: 0.0 }
}
"#;

fn every_second(customer: &str) -> Value {
    json!({
        "flow": "Model",
        "cron": "* * * * * *",
        "overlap": "allow_all",
        "catchup": "skip",
        "key": customer,
        "input": {"customer": customer},
    })
}

async fn create(api: &Api, token: &str, body: &Value) -> Value {
    api.post(Some(token), "/v1/schedules", body)
        .await
        .ok("create a schedule")
}

/// Every run a schedule started, with their views.
async fn runs_of(api: &Api, token: &str, schedule: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for r in api.all_runs(token, "flow=Model").await {
        let run = api.run(token, r["id"].as_str().unwrap()).await;
        if run["schedule"] == schedule {
            out.push(run);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_made_by_the_api_fires_with_its_input_and_follows_the_head() {
    let (s, clock) =
        TestServer::start_with_manual_clock("schedules-api", |o| o.partitions = 1).await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let v1 = api
        .deploy_source(&token, &[("model.eflow", &model_source(1))])
        .await;
    let v1_version = v1["flows"][0]["version"].as_str().unwrap().to_string();

    let follows = create(api, &token, &every_second("cust-1")).await;
    let fid = follows["id"].as_str().expect("an id").to_string();
    assert!(fid.starts_with("s-"), "{follows}");
    assert_eq!(follows["declared"], false, "{follows}");
    assert_eq!(follows["key"], "cust-1", "{follows}");
    assert_eq!(follows["input"], json!({"customer": "cust-1"}), "{follows}");
    assert!(follows.get("version").is_none(), "not pinned: {follows}");
    let mut pinned = every_second("cust-2");
    pinned["version"] = json!(v1_version);
    let pinned = create(api, &token, &pinned).await;
    let pid = pinned["id"].as_str().unwrap().to_string();
    assert_eq!(pinned["version"], v1_version.as_str(), "{pinned}");

    // It fires, and its run has its input and its key.
    next_second(api, &token, &clock, &fid).await;
    let runs = poll_until("a run of the schedule", DEADLINE, || async {
        let runs = runs_of(api, &token, &fid).await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(
        runs[0]["input"],
        json!({"customer": "cust-1"}),
        "{}",
        runs[0]
    );
    assert_eq!(runs[0]["version"], v1_version.as_str());
    // The run belongs to the schedule's key: the population groups by it.
    assert_eq!(runs[0]["key"], "cust-1", "{}", runs[0]);

    // A new version of the flow: both schedules survive the deploy; the
    // one not pinned starts runs on the new head, the pinned one on v1.
    let v2 = api
        .deploy_source(&token, &[("model.eflow", &model_source(2))])
        .await;
    let v2_version = v2["flows"][0]["version"].as_str().unwrap().to_string();
    assert_ne!(v1_version, v2_version);
    let listed = api
        .get(Some(&token), "/v1/schedules?flow=Model")
        .await
        .ok("list");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&fid.as_str()) && ids.contains(&pid.as_str()),
        "{listed}"
    );
    let after_deploy = {
        use eflow_runtime::clock::Clock;
        clock.now_ms()
    };
    next_second(api, &token, &clock, &fid).await;
    next_second(api, &token, &clock, &pid).await;
    let on = |runs: &[Value], version: &str| {
        runs.iter()
            .any(|r| r["version"] == version && ms(&r["created_at"]) >= after_deploy as i64)
    };
    poll_until("runs after the deploy", DEADLINE, || async {
        let f = runs_of(api, &token, &fid).await;
        let p = runs_of(api, &token, &pid).await;
        (on(&f, &v2_version) && on(&p, &v1_version)).then_some(())
    })
    .await;

    // Unpinned by an update: it follows the head from then on.
    let r = api
        .patch(
            Some(&token),
            &format!("/v1/schedules/{pid}"),
            &json!({"version": "head"}),
        )
        .await
        .ok("unpin");
    assert!(r.get("version").is_none(), "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_changed_deleted_and_listed_by_key_and_flow_a_page_at_a_time() {
    let s = TestServer::start("schedules-list").await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    let other = api.create_tenant("other", json!({})).await;
    api.deploy_source(&token, &[("model.eflow", &model_source(1))])
        .await;
    api.deploy_source(&token, &[("nightly.eflow", DECLARED)])
        .await;
    api.deploy_source(&other, &[("model.eflow", &model_source(1))])
        .await;
    let mut made = Vec::new();
    for i in 0..5 {
        let mut body = every_second(&format!("cust-{i}"));
        body["key"] = json!("team-a");
        body["cron"] = json!("0 0 * * * *");
        made.push(
            create(api, &token, &body).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for i in 0..3 {
        create(api, &token, &every_second(&format!("solo-{i}"))).await;
    }
    create(api, &other, &every_second("theirs")).await;

    // By key, two at a time: every one once, in id order.
    let mut got = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .get(
                Some(&token),
                &format!("/v1/schedules?key=team-a&limit=2{cursor}"),
            )
            .await
            .ok("a page");
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 2, "{page:?}");
        for s in &page {
            assert_eq!(s["key"], "team-a", "{s}");
            got.push(s["id"].as_str().unwrap().to_string());
        }
        match page.last() {
            Some(last) if page.len() == 2 => {
                cursor = format!("&cursor={}", last["id"].as_str().unwrap())
            }
            _ => break,
        }
    }
    made.sort();
    assert_eq!(got, made);
    // By flow: the API-made ones of Model; the declared one of Nightly.
    let model = api
        .get(Some(&token), "/v1/schedules?flow=Model")
        .await
        .ok("by flow");
    assert_eq!(model.as_array().unwrap().len(), 8, "{model}");
    let nightly = api
        .get(Some(&token), "/v1/schedules?flow=Nightly")
        .await
        .ok("by flow");
    assert_eq!(nightly.as_array().unwrap().len(), 1, "{nightly}");
    assert_eq!(nightly[0]["declared"], true, "{nightly}");
    let declared = nightly[0]["id"].as_str().unwrap();
    // Another tenant's are not seen, nor changed, nor deleted.
    let theirs = api
        .get(Some(&token), "/v1/schedules?key=theirs")
        .await
        .ok("another tenant's key");
    assert_eq!(theirs, json!([]));
    let r = api.get(Some(&token), "/v1/schedules?tenant=other").await;
    assert_eq!(r.expect_error(403, "another tenant's list"), "forbidden");
    let r = api
        .patch(
            Some(&other),
            &format!("/v1/schedules/{}", made[0]),
            &json!({"cron": "@daily"}),
        )
        .await;
    assert_eq!(
        r.expect_error(404, "another tenant's schedule"),
        "not_found"
    );
    let r = api
        .delete(Some(&other), &format!("/v1/schedules/{}", made[0]))
        .await;
    assert_eq!(
        r.expect_error(404, "another tenant's schedule"),
        "not_found"
    );

    // Changed: the fields given replace its own.
    let changed = api
        .patch(
            Some(&token),
            &format!("/v1/schedules/{}", made[0]),
            &json!({"cron": "0 30 4 * * *", "timezone": "Europe/Berlin", "key": "team-b", "paused": true}),
        )
        .await
        .ok("update");
    assert_eq!(changed["cron"], "0 30 4 * * *", "{changed}");
    assert_eq!(changed["timezone"], "Europe/Berlin", "{changed}");
    assert_eq!(changed["key"], "team-b", "{changed}");
    assert_eq!(changed["paused"], true, "{changed}");
    assert_eq!(
        changed["input"],
        json!({"customer": "cust-0"}),
        "kept: {changed}"
    );
    assert_eq!(changed["overlap"], "allow_all", "kept: {changed}");
    let b = api
        .get(Some(&token), "/v1/schedules?key=team-b")
        .await
        .ok("by the new key");
    assert_eq!(b.as_array().unwrap().len(), 1, "{b}");
    let r = api
        .patch(
            Some(&token),
            &format!("/v1/schedules/{}", made[0]),
            &json!({"input": {"customer": 7}}),
        )
        .await;
    assert_eq!(
        r.expect_error(400, "an input of the wrong type"),
        "invalid_input"
    );
    // A declared schedule belongs to its deployment.
    for r in [
        api.patch(
            Some(&token),
            &format!("/v1/schedules/{declared}"),
            &json!({"cron": "@daily"}),
        )
        .await,
        api.delete(Some(&token), &format!("/v1/schedules/{declared}"))
            .await,
    ] {
        let code = r.expect_error(409, "a declared schedule");
        assert_eq!(code, "declared_schedule");
        assert!(r.text.contains("deploy"), "says what to do: {}", r.text);
    }

    // Deleted: gone from every list.
    let d = api
        .delete(Some(&token), &format!("/v1/schedules/{}", made[1]))
        .await
        .ok("delete");
    assert_eq!(d["id"], made[1].as_str());
    let r = api
        .delete(Some(&token), &format!("/v1/schedules/{}", made[1]))
        .await;
    assert_eq!(r.expect_error(404, "deleted twice"), "not_found");
    let a = api
        .get(Some(&token), "/v1/schedules?key=team-a")
        .await
        .ok("by key");
    assert_eq!(a.as_array().unwrap().len(), 3, "{a}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_with_what_to_do() {
    let s = TestServer::start_with("schedules-bad", |o| o.quotas.max_schedules = 3).await;
    let api = &s.api;
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("model.eflow", &model_source(1))])
        .await;
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"cron": "61 * * * *"}),
            400,
            "invalid_schedule",
            "outside 0–59",
        ),
        (
            json!({"cron": "* * *"}),
            400,
            "invalid_schedule",
            "expected 5, 6 or 7 fields",
        ),
        (
            json!({"timezone": "Europe/Berln"}),
            400,
            "invalid_schedule",
            "did you mean `Europe/Berlin`?",
        ),
        (
            json!({"timezone": "PST"}),
            400,
            "invalid_schedule",
            "abbreviation",
        ),
        (
            json!({"overlap": "alow_all"}),
            400,
            "invalid_schedule",
            "did you mean `allow_all`?",
        ),
        (
            json!({"catchup": "all"}),
            400,
            "invalid_schedule",
            "catchup_within",
        ),
        (
            json!({"jitter": "soon"}),
            400,
            "invalid_schedule",
            "is not a duration",
        ),
        (
            json!({"input": {"customer": 1}}),
            400,
            "invalid_input",
            "customer",
        ),
        (
            json!({"input": {}}),
            400,
            "invalid_input",
            "has no default and must be given",
        ),
        (
            json!({"input": {"customer": "c", "m": 1}}),
            400,
            "invalid_input",
            "has no parameter `m`",
        ),
        (json!({"input": [1]}), 400, "invalid_input", "JSON object"),
        (json!({"flow": "Nope"}), 404, "not_found", "`Nope`"),
        (json!({"version": "0000"}), 404, "not_found", "Model@0000"),
        (
            json!({"cron": null}),
            400,
            "invalid_schedule",
            "needs `flow`",
        ),
        (json!({"key": ""}), 400, "invalid_key", "key"),
        (json!({"when": "soon"}), 400, "invalid_json", "when"),
    ];
    for (change, status, code, says) in cases {
        let mut body = every_second("c");
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let r = api.post(Some(&token), "/v1/schedules", &body).await;
        let got = r.expect_error(status, &format!("{change}"));
        assert_eq!(got, code, "{change}: {}", r.text);
        assert!(
            r.text.contains(says),
            "{change}: {} should say {says:?}",
            r.text
        );
    }
    // An admin names the tenant.
    let r = api
        .post(Some(ADMIN), "/v1/schedules", &every_second("c"))
        .await;
    assert_eq!(r.expect_error(400, "no tenant"), "tenant_required");
    let mut body = every_second("c");
    body["tenant"] = json!("acme");
    create(api, ADMIN, &body).await;
    // The per-tenant limit.
    for _ in 0..2 {
        create(api, &token, &every_second("c")).await;
    }
    let r = api
        .post(Some(&token), "/v1/schedules", &every_second("c"))
        .await;
    assert_eq!(r.expect_error(429, "past the limit"), "quota_schedules");
    assert!(r.text.contains("--max-schedules-per-tenant"), "{}", r.text);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_purge_deletes_its_schedules() {
    let s = TestServer::start("schedules-purge").await;
    let api = &s.api;
    let gone = api.create_tenant("gone", json!({})).await;
    let kept = api.create_tenant("kept", json!({})).await;
    for t in [&gone, &kept] {
        api.deploy_source(t, &[("model.eflow", &model_source(1))])
            .await;
        create(api, t, &every_second("c")).await;
    }
    api.delete(Some(ADMIN), "/v1/tenants/gone")
        .await
        .ok("purge");
    let all = api.get(Some(ADMIN), "/v1/schedules").await.ok("all");
    let tenants: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["kept"], "{all}");
    s.stop().await;
}
