//! The OpenAPI document is exact: every route is exercised over real HTTP
//! (its success and the errors it can cheaply be made to answer), and each
//! real answer's status must be documented for that route and method and its
//! body must match the documented schema (refs into `#/components/schemas`
//! resolved); every declared parameter is read from where it is declared.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

/// The document and what the answers checked against it showed.
struct Spec {
    doc: Value,
    failures: Vec<String>,
    /// (method, route, status) of every answer checked.
    seen: BTreeSet<(String, String, u16)>,
}

impl Spec {
    /// Checks one real answer of `method route` against the document.
    fn check(&mut self, method: &str, route: &str, r: &Resp) {
        self.seen
            .insert((method.to_string(), route.to_string(), r.status));
        let what = format!(
            "{} {route} → {} {}",
            method.to_uppercase(),
            r.status,
            r.text
        );
        let Some(op) = self.doc["paths"][route].get(method) else {
            self.failures
                .push(format!("{what}: the route is not documented"));
            return;
        };
        let Some(resp) = op["responses"].get(r.status.to_string()) else {
            self.failures.push(format!(
                "{what}: status {} is not documented (documented: {:?})",
                r.status,
                op["responses"]
                    .as_object()
                    .map(|o| o.keys().collect::<Vec<_>>())
            ));
            return;
        };
        let Some(schema) = resp.pointer("/content/application~1json/schema") else {
            self.failures
                .push(format!("{what}: the documented answer has no JSON body"));
            return;
        };
        if r.content_type.as_deref() != Some("application/json") {
            self.failures
                .push(format!("{what}: content type {:?}", r.content_type));
        }
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": self.doc["components"],
        });
        let validator = match jsonschema::validator_for(&root) {
            Ok(v) => v,
            Err(e) => {
                self.failures.push(format!(
                    "{what}: the documented schema does not compile: {e}"
                ));
                return;
            }
        };
        let errors: Vec<String> = validator
            .iter_errors(&r.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            self.failures.push(format!(
                "{what}: the body does not match the documented schema: {}",
                errors.join("; ")
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document() {
    let (calls, base) = accepting_remote().await;
    let s = TestServer::start_with("openapi-exact", |o| {
        o.http.body_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let api = &s.api;
    let doc = api.get(None, "/v1/openapi.json").await.ok("the document");
    let mut spec = Spec {
        doc,
        failures: Vec::new(),
        seen: BTreeSet::new(),
    };
    let admin = Some(ADMIN);
    let works = format!(
        r#"
remote step Work(x: Int) -> Int

flow Works(x: Int) -> Int {{
    let w = Work(x: x)
    return w
}}

remote step Sum(xs: List<Int>) -> Int

flow Sums(xs: List<Int>) -> Int {{
    let s = Sum(xs: xs)
    return s
}}

remote step Boom(x: Int) -> Int

flow Fails(x: Int) -> Int {{
    let b = Boom(x: x)
    return b
}}

bindings dev {{
    Boom = sim {{ duration: 10ms, failure_rate: 1.0 }}
    Work = http {{ url: "{base}/work" }}
    Sum = http {{ url: "{base}/work", max_inline: 100 }}
}}
"#
    );

    // ---- tenants ----
    let r = api.post(admin, "/v1/tenants", &json!({"id": "acme"})).await;
    let token = r.body["token"].as_str().expect("a token").to_string();
    spec.check("post", "/v1/tenants", &r);
    let t = Some(token.as_str());
    for (tok, body) in [
        (admin, json!({"id": "acme"})),          // 409
        (t, json!({"id": "other"})),             // 403
        (None, json!({"id": "other"})),          // 401
        (admin, json!({"id": "x", "bogus": 1})), // 400
    ] {
        let r = api.post(tok, "/v1/tenants", &body).await;
        spec.check("post", "/v1/tenants", &r);
    }
    let r = api
        .post_raw(admin, "/v1/tenants", Some("text/plain"), b"id=x".to_vec())
        .await;
    spec.check("post", "/v1/tenants", &r); // 415
    let r = api
        .try_post_raw(
            admin,
            "/v1/tenants",
            Some("application/json"),
            vec![b' '; 3 << 20],
        )
        .await
        .expect("an answer to a huge body");
    spec.check("post", "/v1/tenants", &r); // 413
    let r = api.get(admin, "/v1/tenants").await;
    spec.check("get", "/v1/tenants", &r);
    let r = api.get(t, "/v1/tenants").await;
    spec.check("get", "/v1/tenants", &r);
    let r = api.get(Some("nope"), "/v1/tenants").await;
    spec.check("get", "/v1/tenants", &r); // 401
    api.create_tenant("doomed", json!({})).await;
    for (tok, id) in [(t, "doomed"), (admin, "nobody"), (admin, "doomed")] {
        let r = api.delete(tok, &format!("/v1/tenants/{id}")).await;
        spec.check("delete", "/v1/tenants/{id}", &r);
    }

    // ---- flows ----
    let r = api
        .post(
            t,
            "/v1/flows",
            &json!({"source": {"pipeline.eflow": SOURCE}}),
        )
        .await;
    spec.check("post", "/v1/flows", &r);
    let r = api
        .post(t, "/v1/flows", &json!({"source": {"works.eflow": works}}))
        .await;
    spec.check("post", "/v1/flows", &r);
    let r = api
        .post(t, "/v1/flows", &json!({"ir": {"ir_version": "nope"}}))
        .await;
    spec.check("post", "/v1/flows", &r); // 400
    for path in [
        "/v1/flows",
        "/v1/flows?tenant=acme",
        "/v1/flows?tenant=other",
    ] {
        let r = api.get(t, path).await;
        spec.check("get", "/v1/flows", &r);
    }

    // ---- runs ----
    let r = api
        .post(t, "/v1/runs", &json!({"flow": "Long", "id": "long-1"}))
        .await;
    spec.check("post", "/v1/runs", &r);
    let long = r.body["id"].as_str().expect("run id").to_string();
    let r = api.post(t, "/v1/runs", &json!({"flow": "Nope"})).await;
    spec.check("post", "/v1/runs", &r); // 404
    let r = api
        .post(
            t,
            "/v1/runs",
            &json!({"flow": "Long", "input": {"x": "one"}}),
        )
        .await;
    spec.check("post", "/v1/runs", &r); // 400
    let other = api.create_tenant("other", json!({})).await;
    api.post(
        Some(&other),
        "/v1/flows",
        &json!({"source": {"pipeline.eflow": SOURCE}}),
    )
    .await
    .ok("deploy for other");
    let r = api
        .post(
            Some(&other),
            "/v1/runs",
            &json!({"flow": "Long", "id": "long-1"}),
        )
        .await;
    spec.check("post", "/v1/runs", &r); // 409 run_id_taken
    // A quota: the second start within the second is a 429 with Retry-After.
    let slow = api
        .create_tenant("slow", json!({"max_starts_per_sec": 0.5}))
        .await;
    api.post(
        Some(&slow),
        "/v1/flows",
        &json!({"source": {"pipeline.eflow": SOURCE}}),
    )
    .await
    .ok("deploy for slow");
    let mut retry_after = None;
    for _ in 0..3 {
        let resp = api
            .http
            .post(format!("{}/v1/runs", api.base))
            .bearer_auth(&slow)
            .json(&json!({"flow": "Long"}))
            .send()
            .await
            .expect("start");
        if resp.status() == 429 {
            retry_after = Some(
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            );
            let text = resp.text().await.unwrap_or_default();
            let r = Resp {
                status: 429,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
                content_type: Some("application/json".into()),
            };
            spec.check("post", "/v1/runs", &r);
            break;
        }
    }
    let retry_after = retry_after.expect("a 429 from the start rate");
    assert!(
        retry_after
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1),
        "a 429 carries Retry-After in seconds: {retry_after:?}"
    );

    let mut queries = vec!["/v1/runs".to_string(), "/v1/runs?status=nope".into()];
    for p in op_params(&spec.doc, "/v1/runs", "get") {
        queries.push(format!("/v1/runs?{p}"));
    }
    for q in &queries {
        let r = api.get(t, q).await;
        spec.check("get", "/v1/runs", &r);
    }
    for id in [long.as_str(), "nope"] {
        let r = api.get(t, &format!("/v1/runs/{id}")).await;
        spec.check("get", "/v1/runs/{id}", &r);
        let r = api
            .get(t, &format!("/v1/runs/{id}/events?after=0&limit=5"))
            .await;
        spec.check("get", "/v1/runs/{id}/events", &r);
    }
    let r = api.get(t, &format!("/v1/runs/{long}/events?after=x")).await;
    spec.check("get", "/v1/runs/{id}/events", &r); // 400
    // A fan-out's results, a page at a time.
    api.post(
        t,
        "/v1/flows",
        &json!({"source": {"fan.eflow": "flow Echo(x: Int) -> Int {\n    return x\n}\n\nflow Fan(xs: List<Int>) -> List<Int> {\n    let ys = for x in xs join all {\n        Echo(x: x)\n    }\n    return ys\n}\n"}}),
    )
    .await
    .ok("deploy a fan-out");
    let r = api
        .post(
            t,
            "/v1/runs",
            &json!({"flow": "Fan", "input": {"xs": [3, 1, 2]}}),
        )
        .await;
    let fan = r.body["id"].as_str().expect("run id").to_string();
    api.wait_finished(&token, &fan).await;
    for path in [
        format!("/v1/runs/{fan}/steps/ys/results"),
        format!("/v1/runs/{fan}/steps/ys/results?after=0&limit=1"),
        format!("/v1/runs/{fan}/steps/nope/results"), // 404
        format!("/v1/runs/{long}/steps/s/results"),   // 400: not a fan-out
        format!("/v1/runs/{fan}/steps/ys/results?after=x"), // 400
    ] {
        let r = api.get(t, &path).await;
        spec.check("get", "/v1/runs/{id}/steps/{step}/results", &r);
    }
    // Values by reference: an upload, a start that names it, the run's view
    // and its values a page at a time.
    let xs: Vec<u64> = (0..3_000).collect();
    let r = api.post(t, "/v1/tenants/acme/values", &json!(xs)).await;
    spec.check("post", "/v1/tenants/{id}/values", &r);
    let hash = r.body["hash"]
        .as_str()
        .unwrap_or_else(|| panic!("a hash: {}", r.text))
        .to_string();
    let r = api.post(t, "/v1/tenants/nobody/values", &json!(1)).await;
    spec.check("post", "/v1/tenants/{id}/values", &r); // 403: not its tenant
    let r = api
        .post(admin, "/v1/tenants/nobody/values", &json!(1))
        .await;
    spec.check("post", "/v1/tenants/{id}/values", &r); // 404
    let r = api
        .post(
            t,
            "/v1/runs",
            &json!({"flow": "Fan", "input_refs": {"xs": "sha256:0000"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    spec.check("post", "/v1/runs", &r); // 400 unknown_value
    let r = api
        .post(
            t,
            "/v1/runs",
            &json!({"flow": "Fan", "input_refs": {"xs": hash}}),
        )
        .await;
    spec.check("post", "/v1/runs", &r);
    let big = r.body["id"].as_str().expect("run id").to_string();
    api.wait_finished(&token, &big).await;
    let r = api.get(t, &format!("/v1/runs/{big}")).await;
    spec.check("get", "/v1/runs/{id}", &r);
    let result = r.body["result_ref"]["hash"]
        .as_str()
        .expect("the joined list is kept by reference")
        .to_string();
    for path in [
        format!("/v1/runs/{big}/values/{hash}"),
        format!("/v1/runs/{big}/values/{result}?after=99&limit=10"),
        format!("/v1/runs/{fan}/values/{hash}"), // 404: not this run's
        format!("/v1/runs/{big}/values/{hash}?after=x"), // 400
    ] {
        let r = api.get(t, &path).await;
        spec.check("get", "/v1/runs/{id}/values/{hash}", &r);
    }
    let r = api.get(None, "/v1/values/not-a-token").await;
    assert_eq!(r.status, 401, "{}", r.text);
    spec.check("get", "/v1/values/{token}", &r);
    // 414: a request target over the limit.
    let r = api
        .get(t, &format!("/v1/runs?flow={}", "a".repeat(9000)))
        .await;
    assert_eq!(r.status, 414, "{}", r.text);
    spec.check("get", "/v1/runs", &r);
    // 408: a body that does not arrive in time.
    let r = slow_body(&s, &token).await;
    spec.check("post", "/v1/runs", &r);

    // ---- callbacks ----
    let r = api
        .post(t, "/v1/runs", &json!({"flow": "Works", "input": {"x": 1}}))
        .await;
    spec.check("post", "/v1/runs", &r);
    let works_run = r.body["id"].as_str().expect("id").to_string();
    let url = poll_until("the invocation of Work", DEADLINE, || async {
        let calls = calls.lock().unwrap();
        calls
            .iter()
            .find(|c| c["run"] == works_run.as_str())
            .and_then(|c| c["callback_url"].as_str())
            .map(str::to_string)
    })
    .await;
    let path = url.replace(&api.base, "");
    for body in [
        json!({}),
        json!({"output": 1}),
        json!({"output": 1}),
        json!({"output": 2}),
    ] {
        let r = api.post(None, &path, &body).await;
        spec.check("post", "/v1/callbacks/{token}", &r);
    }
    let r = api
        .post(
            None,
            "/v1/callbacks/eyJydW4iOiJ4In0.AAAA",
            &json!({"output": 1}),
        )
        .await;
    spec.check("post", "/v1/callbacks/{token}", &r); // 401
    let r = api
        .post(
            None,
            "/v1/callbacks",
            &json!({"callbacks": [
                {"token": url.rsplit_once('/').map_or("", |(_, t)| t), "output": 1},
                {"token": "eyJydW4iOiJ4In0.AAAA", "output": 1},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    spec.check("post", "/v1/callbacks", &r);
    let r = api
        .post(None, "/v1/callbacks", &json!({"callbacks": []}))
        .await;
    spec.check("post", "/v1/callbacks", &r); // 400

    // ---- an input larger than the binding's max_inline goes by URL ----
    let xs: Vec<u64> = (0..50).collect();
    let r = api
        .post(t, "/v1/runs", &json!({"flow": "Sums", "input": {"xs": xs}}))
        .await;
    spec.check("post", "/v1/runs", &r);
    let sums_run = r.body["id"].as_str().expect("id").to_string();
    let value_url = poll_until("the invocation of Sum", DEADLINE, || async {
        let calls = calls.lock().unwrap();
        calls
            .iter()
            .find(|c| c["run"] == sums_run.as_str())
            .and_then(|c| c.pointer("/input_urls/xs/url")?.as_str())
            .map(str::to_string)
    })
    .await;
    let path = value_url.replace(&api.base, "");
    for q in ["", "?after=9&limit=10"] {
        let r = api.get(None, &format!("{path}{q}")).await;
        spec.check("get", "/v1/values/{token}", &r);
    }

    // ---- approvals ----
    let r = api
        .post(
            t,
            "/v1/runs",
            &json!({"flow": "Pipeline", "input": {"model_name": "m"}}),
        )
        .await;
    spec.check("post", "/v1/runs", &r);
    let pipeline = r.body["id"].as_str().expect("id").to_string();
    let step = poll_until("the approval", DEADLINE, || async {
        let list = api.get(t, "/v1/approvals").await.ok("approvals");
        list.as_array()?
            .iter()
            .find(|a| a["run"] == pipeline.as_str())
            .map(|a| a["step"].as_str().unwrap_or_default().to_string())
    })
    .await;
    for q in [
        "/v1/approvals",
        "/v1/approvals?pending=false&tenant=acme",
        "/v1/approvals?pending=maybe",
    ] {
        let r = api.get(t, q).await;
        spec.check("get", "/v1/approvals", &r);
    }
    let decide = format!("/v1/runs/{pipeline}/approvals/{step}");
    for _ in 0..2 {
        let r = api.post(t, &decide, &json!({"approve": true})).await;
        spec.check("post", "/v1/runs/{id}/approvals/{step}", &r); // 200, then 409
    }
    let r = api
        .post(
            t,
            &format!("/v1/runs/{pipeline}/approvals/nope"),
            &json!({"approve": true}),
        )
        .await;
    spec.check("post", "/v1/runs/{id}/approvals/{step}", &r); // 404
    api.wait_finished(&token, &pipeline).await;

    // ---- cancel ----
    for _ in 0..2 {
        let r = api
            .post(
                t,
                &format!("/v1/runs/{long}/cancel"),
                &json!({"reason": "done"}),
            )
            .await;
        spec.check("post", "/v1/runs/{id}/cancel", &r); // 200, then 409
    }
    let r = api.post(t, "/v1/runs/nope/cancel", &json!({})).await;
    spec.check("post", "/v1/runs/{id}/cancel", &r); // 404

    // ---- retry ----
    let r = api
        .post(t, "/v1/runs", &json!({"flow": "Fails", "input": {"x": 1}}))
        .await;
    let fails = r.body["id"].as_str().expect("id").to_string();
    api.wait_finished(&token, &fails).await;
    let r = api
        .post(
            t,
            &format!("/v1/runs/{fails}/retry"),
            &json!({"reason": "again"}),
        )
        .await;
    spec.check("post", "/v1/runs/{id}/retry", &r); // 200
    for path in [
        format!("/v1/runs/{long}/retry"),
        "/v1/runs/nope/retry".into(),
    ] {
        let r = api.post(t, &path, &json!({})).await;
        spec.check("post", "/v1/runs/{id}/retry", &r); // 409, 404
    }

    // ---- bulk actions ----
    let bulk = json!({
        "action": "retry",
        "query": {"runs": {"flow": "Fails", "status": "failed"}},
        "reason": "again",
    });
    for (tok, body) in [
        (t, bulk.clone()),
        (admin, bulk.clone()),                          // 400: no tenant named
        (t, json!({"action": "explode", "query": {}})), // 400
    ] {
        let r = api.post(tok, "/v1/bulk/preview", &body).await;
        spec.check("post", "/v1/bulk/preview", &r);
    }
    let r = api.post(t, "/v1/bulk", &bulk).await;
    spec.check("post", "/v1/bulk", &r);
    let job = r.body["id"].as_str().expect("a bulk job").to_string();
    let r = api.post(t, "/v1/bulk", &json!({"action": "retry"})).await;
    spec.check("post", "/v1/bulk", &r); // 400
    for q in [
        "/v1/bulk",
        "/v1/bulk?limit=1&tenant=acme",
        "/v1/bulk?cursor=nope",
    ] {
        let r = api.get(t, q).await;
        spec.check("get", "/v1/bulk", &r); // 200, 200, 400
    }
    for id in [job.as_str(), "nope"] {
        let r = api.get(t, &format!("/v1/bulk/{id}")).await;
        spec.check("get", "/v1/bulk/{id}", &r); // 200, 404
    }
    // Paused at once or done already: each change is a success or a 409.
    for action in ["pause", "resume", "pause", "cancel", "cancel"] {
        for id in [job.as_str(), "nope"] {
            let r = api
                .post(t, &format!("/v1/bulk/{id}/{action}"), &json!({}))
                .await;
            spec.check("post", &format!("/v1/bulk/{{id}}/{action}"), &r);
        }
    }
    // A job that is certainly running (two runs to skip, one a second),
    // to see each change succeed.
    for x in 0..2 {
        let r = api
            .post(t, "/v1/runs", &json!({"flow": "Fails", "input": {"x": x}}))
            .await;
        let id = r.body["id"].as_str().expect("id").to_string();
        api.wait_finished(&token, &id).await;
    }
    let r = api
        .post(
            t,
            "/v1/bulk",
            &json!({
                "action": "cancel",
                "query": {"runs": {"flow": "Fails", "status": "failed"}},
                "rate": 1,
            }),
        )
        .await;
    spec.check("post", "/v1/bulk", &r);
    let slow = r.body["id"].as_str().expect("a bulk job").to_string();
    for action in ["pause", "resume", "cancel"] {
        let r = api
            .post(t, &format!("/v1/bulk/{slow}/{action}"), &json!({}))
            .await;
        spec.check("post", &format!("/v1/bulk/{{id}}/{action}"), &r);
        assert_eq!(r.status, 200, "{action}: {}", r.text);
    }

    // ---- schedules ----
    let r = api.get(t, "/v1/schedules").await;
    spec.check("get", "/v1/schedules", &r);
    let schedule = r.body[0]["id"].as_str().expect("a schedule").to_string();
    for action in ["pause", "resume"] {
        for id in [schedule.as_str(), "nope"] {
            let r = api
                .post(t, &format!("/v1/schedules/{id}/{action}"), &json!({}))
                .await;
            spec.check("post", &format!("/v1/schedules/{{id}}/{action}"), &r);
        }
    }
    for body in [
        json!({"from": "2030-01-01T00:00:00Z", "to": "2030-12-31T00:00:00Z"}),
        json!({"from": "then", "to": "now"}),
    ] {
        let r = api
            .post(t, &format!("/v1/schedules/{schedule}/backfill"), &body)
            .await;
        spec.check("post", "/v1/schedules/{id}/backfill", &r);
    }

    // ---- schedules made through the API ----
    let r = api
        .post(
            t,
            "/v1/schedules",
            &json!({"flow": "Works", "cron": "@daily", "key": "cust-1", "input": {"x": 1}}),
        )
        .await;
    spec.check("post", "/v1/schedules", &r); // 200
    let made = r.body["id"].as_str().expect("a schedule id").to_string();
    for body in [
        json!({"flow": "Works", "cron": "61 * * * *", "input": {"x": 1}}), // 400
        json!({"flow": "Nope", "cron": "@daily"}),                         // 404
    ] {
        let r = api.post(t, "/v1/schedules", &body).await;
        spec.check("post", "/v1/schedules", &r);
    }
    let r = api.get(t, "/v1/schedules?key=cust-1&limit=1").await;
    spec.check("get", "/v1/schedules", &r);
    for (id, body) in [
        (made.as_str(), json!({"cron": "@hourly"})), // 200
        (made.as_str(), json!({"timezone": "Mars/Olympus"})), // 400
        ("nope", json!({"cron": "@hourly"})),        // 404
        (schedule.as_str(), json!({"cron": "@hourly"})), // 409: declared
    ] {
        let r = api.patch(t, &format!("/v1/schedules/{id}"), &body).await;
        spec.check("patch", "/v1/schedules/{id}", &r);
    }
    for id in [schedule.as_str(), made.as_str(), made.as_str()] {
        let r = api.delete(t, &format!("/v1/schedules/{id}")).await;
        spec.check("delete", "/v1/schedules/{id}", &r); // 409, 200, 404
    }

    // ---- egress rules, tokens, whoami ----
    for (tok, id, body) in [
        (admin, "acme", json!({"allow_egress": ["10.0.0.0/8"]})), // 200
        (t, "acme", json!({"allow_egress": []})),                 // 403
        (admin, "nobody", json!({"allow_egress": []})),           // 404
        (admin, "acme", json!({"allow_egress": ["not a rule"]})), // 400
    ] {
        let r = api
            .send(
                api.http
                    .patch(format!("{}/v1/tenants/{id}", api.base))
                    .bearer_auth(tok.unwrap_or_default())
                    .json(&body),
            )
            .await;
        spec.check("patch", "/v1/tenants/{id}", &r);
    }
    for tok in [admin, t, None] {
        let r = api.get(tok, "/v1/whoami").await;
        spec.check("get", "/v1/whoami", &r); // 200, 401
    }
    let tokens = "/v1/tenants/{id}/tokens";
    for (tok, body) in [
        (
            admin,
            json!({"name": "alice@example.com", "expires_in": "30d"}),
        ), // 200
        (t, json!({"name": "mallory"})), // 403
        (admin, json!({"name": ""})),    // 400
    ] {
        let r = api.post(tok, "/v1/tenants/acme/tokens", &body).await;
        spec.check("post", tokens, &r);
    }
    let r = api
        .post(admin, "/v1/tenants/acme/tokens", &json!({"name": "bob"}))
        .await;
    spec.check("post", tokens, &r);
    let bob = r.body["token"]["id"]
        .as_str()
        .expect("a token id")
        .to_string();
    for tok in [admin, t] {
        let r = api.get(tok, "/v1/tenants/acme/tokens").await;
        spec.check("get", tokens, &r);
    }
    let r = api.get(admin, "/v1/tenants/nobody/tokens").await;
    spec.check("get", tokens, &r); // 404
    let rotate = "/v1/tenants/{id}/tokens/{token}/rotate";
    for (tok, id) in [(admin, bob.as_str()), (admin, "t-nope"), (t, bob.as_str())] {
        let r = api
            .post(
                tok,
                &format!("/v1/tenants/acme/tokens/{id}/rotate"),
                &json!({}),
            )
            .await;
        spec.check("post", rotate, &r);
    }
    let r = api.get(admin, "/v1/tenants/acme/tokens").await;
    let rotated = r
        .body
        .as_array()
        .expect("tokens")
        .iter()
        .find(|x| x["name"] == "bob")
        .and_then(|x| x["id"].as_str())
        .expect("bob's new token")
        .to_string();
    let revoke = "/v1/tenants/{id}/tokens/{token}";
    for (tok, id) in [
        (t, rotated.as_str()),
        (admin, rotated.as_str()),
        (admin, rotated.as_str()),
    ] {
        let r = api
            .delete(tok, &format!("/v1/tenants/acme/tokens/{id}"))
            .await;
        spec.check("delete", revoke, &r); // 403, 200, 404
    }
    let r = api
        .post(admin, "/v1/admin/tokens", &json!({"name": "ops"}))
        .await;
    spec.check("post", "/v1/admin/tokens", &r);
    let ops = r.body["token"]["id"]
        .as_str()
        .expect("an admin token id")
        .to_string();
    for tok in [admin, t] {
        let r = api.get(tok, "/v1/admin/tokens").await;
        spec.check("get", "/v1/admin/tokens", &r); // 200, 403
    }
    let r = api
        .post(admin, &format!("/v1/admin/tokens/{ops}/rotate"), &json!({}))
        .await;
    spec.check("post", "/v1/admin/tokens/{token}/rotate", &r);
    let ops = r.body["token"]["id"]
        .as_str()
        .expect("the rotated id")
        .to_string();
    for (tok, id) in [(t, ops.as_str()), (admin, ops.as_str()), (admin, "t-nope")] {
        let r = api.delete(tok, &format!("/v1/admin/tokens/{id}")).await;
        spec.check("delete", "/v1/admin/tokens/{token}", &r); // 403, 200, 404
    }

    // ---- registry, stats, health ----
    for q in ["/v1/registry", "/v1/registry?kind=model&name=m&tenant=acme"] {
        let r = api.get(t, q).await;
        spec.check("get", "/v1/registry", &r);
    }
    // ---- the population ----
    for q in [
        "/v1/population?flow=Chain",
        "/v1/population?flow=Chain&status=failed&version=v&failed_in_a_row=2&limit=5",
        "/v1/population?flow=Chain&failed_in_a_row=0",
        "/v1/population?flow=Chain&tenant=nobody",
    ] {
        let r = api.get(t, q).await;
        spec.check("get", "/v1/population", &r); // 200, 200, 400, 403
    }
    for q in ["/v1/population/counts?flow=Chain", "/v1/population/counts"] {
        let r = api.get(t, q).await;
        spec.check("get", "/v1/population/counts", &r); // 200, 400
    }
    for tok in [admin, t] {
        let r = api.get(tok, "/v1/stats").await;
        spec.check("get", "/v1/stats", &r); // 200, 403
        let r = api.get(tok, "/v1/cluster").await;
        spec.check("get", "/v1/cluster", &r); // 200, 403
    }
    let r = api.get(None, "/v1/health").await;
    spec.check("get", "/v1/health", &r);

    // ---- every declared parameter is where the route reads it ----
    let doc = spec.doc.clone();
    for (route, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                match p["in"].as_str() {
                    Some("path") => assert!(
                        route.contains(&format!("{{{name}}}")),
                        "{method} {route}: `{name}` is declared in the path but is not in it"
                    ),
                    Some("query") => {
                        assert_eq!(method, "get", "{route}: a query parameter on {method}");
                        let value = sample(&p["schema"]);
                        let concrete = route.replace("{id}", &long);
                        let r = api.get(admin, &format!("{concrete}?{name}={value}")).await;
                        assert_ne!(
                            r.body.pointer("/error/code").and_then(Value::as_str),
                            Some("invalid_query"),
                            "{method} {route}: `{name}` is declared in the query but the route does not read it there: {}",
                            r.text
                        );
                        spec.check(method, route, &r);
                    }
                    other => panic!("{method} {route}: `{name}` is in {other:?}"),
                }
            }
        }
    }

    // Every route was exercised, and every error status the document promises
    // came up at least once.
    for (route, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            assert!(
                spec.seen
                    .iter()
                    .any(|(m, r, st)| m == method && r == route && *st == 200),
                "{method} {route} was never answered with success"
            );
        }
    }
    let statuses: BTreeSet<u16> = spec.seen.iter().map(|(_, _, s)| *s).collect();
    for st in [400, 401, 403, 404, 408, 409, 413, 414, 415, 429] {
        assert!(statuses.contains(&st), "no answer was {st}: {statuses:?}");
    }
    s.stop().await;
    assert!(
        spec.failures.is_empty(),
        "answers that the document does not describe:\n{}",
        spec.failures.join("\n")
    );
}

/// One `name=value` per declared query parameter of an operation.
fn op_params(doc: &Value, route: &str, method: &str) -> Vec<String> {
    doc["paths"][route][method]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == "query")
        .map(|p| {
            format!(
                "{}={}",
                p["name"].as_str().unwrap_or_default(),
                sample(&p["schema"])
            )
        })
        .collect()
}

/// A value of a parameter's schema type, as a query string value.
fn sample(schema: &Value) -> &'static str {
    let ty = match &schema["type"] {
        Value::Array(ts) => ts
            .iter()
            .find(|t| *t != "null")
            .cloned()
            .unwrap_or_default(),
        t => t.clone(),
    };
    match ty.as_str() {
        Some("integer") => "1",
        Some("boolean") => "true",
        _ => "x",
    }
}

/// A start whose body stops halfway: the server answers 408 after its body
/// timeout.
async fn slow_body(s: &TestServer, token: &str) -> Resp {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(s.server.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"flow\": ",
        s.server.addr
    );
    conn.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-type: ")
            .map(str::to_string)
    });
    assert_eq!(status, 408, "{text}");
    Resp {
        status,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        text: body.to_string(),
        content_type,
    }
}
