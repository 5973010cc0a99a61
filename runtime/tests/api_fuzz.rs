//! Fuzzing the API with malformed requests: every one gets a 4xx with a JSON
//! error body `{"error": {"code", "message"}}`, never a 5xx, and changes
//! nothing. Inputs come from a seeded generator, so every run sends the same
//! requests; a failure names the request.

mod common;

use common::*;
use serde_json::{Map, Value, json};

/// splitmix64: deterministic test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn string(&mut self, len: usize) -> String {
        const CHARS: &[char] = &[
            'a', 'Z', '0', ' ', '"', '\\', '/', '{', '}', '\n', '\u{0}', 'é', '😀', '\u{202e}',
            '%', '.',
        ];
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize])
            .collect()
    }
    /// A random JSON value, at most `depth` deep.
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth == 0 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 0),
            2 => json!(self.next() as i64),
            3 => json!((self.next() as f64) / 7.0 * if self.below(2) == 0 { 1.0 } else { -1e300 }),
            4 => {
                let n = self.below(40) as usize;
                Value::String(self.string(n))
            }
            5 => json!(u64::MAX),
            6 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
            _ => {
                let mut m = Map::new();
                for _ in 0..self.below(4) {
                    let n = self.below(8) as usize;
                    let k = self.string(n);
                    m.insert(k, self.value(depth - 1));
                }
                Value::Object(m)
            }
        }
    }
}

/// A POST endpoint under test, with the field names its body takes.
struct Endpoint {
    path: String,
    fields: &'static [&'static str],
}

struct Fixture {
    server: TestServer,
    token: String,
    /// A run waiting for an approval.
    pending: String,
    /// A run of a long step.
    long: String,
    schedule: String,
}

async fn fixture(name: &str) -> Fixture {
    let server = TestServer::start(name).await;
    let api = &server.api;
    let token = api.create_tenant("fz", json!({})).await;
    api.deploy_source(&token, &[("flows.eflow", SOURCE)]).await;
    let pending = api
        .start(&token, "Pipeline", json!({"model_name": "m"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    poll_until("the approval", DEADLINE, || async {
        let l = api.get(Some(&token), "/v1/approvals").await.ok("approvals");
        l.as_array()?
            .iter()
            .any(|a| a["run"] == pending.as_str())
            .then_some(())
    })
    .await;
    let long = api.start(&token, "Long", json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.wait_status(&token, &long, &["running"]).await;
    let schedule = api.get(Some(&token), "/v1/schedules").await.ok("schedules")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    poll_until("history of both runs", DEADLINE, || async {
        (api.all_runs(ADMIN, "limit=100").await.len() == 2).then_some(())
    })
    .await;
    Fixture {
        server,
        token,
        pending,
        long,
        schedule,
    }
}

impl Fixture {
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![
            Endpoint {
                path: "/v1/tenants".into(),
                fields: &["id", "max_active_runs", "max_starts_per_sec"],
            },
            Endpoint {
                path: "/v1/flows".into(),
                fields: &["tenant", "env", "ir", "source"],
            },
            Endpoint {
                path: "/v1/runs".into(),
                fields: &["flow", "tenant", "version", "input", "id"],
            },
            Endpoint {
                path: format!("/v1/runs/{}/cancel", self.long),
                fields: &["reason"],
            },
            Endpoint {
                path: format!("/v1/runs/{}/approvals/decision", self.pending),
                fields: &["approve", "comment"],
            },
            Endpoint {
                path: "/v1/callbacks/eyJydW4iOiJ4In0.AAAA".into(),
                fields: &["output", "error", "retryable"],
            },
            Endpoint {
                path: "/v1/callbacks".into(),
                fields: &["callbacks"],
            },
            Endpoint {
                path: format!("/v1/schedules/{}/backfill", self.schedule),
                fields: &["from", "to"],
            },
            Endpoint {
                path: "/v1/bulk/preview".into(),
                fields: &["action", "query", "reason", "rate"],
            },
            Endpoint {
                path: "/v1/bulk".into(),
                fields: &["action", "query", "reason", "rate"],
            },
        ]
    }

    /// What must not change, as the API shows it.
    async fn snapshot(&self) -> Value {
        let api = &self.server.api;
        let get = |p: String| async move { api.get(Some(ADMIN), &p).await.ok(&p) };
        let mut long = get(format!("/v1/runs/{}", self.long)).await;
        let mut pending = get(format!("/v1/runs/{}", self.pending)).await;
        for r in [&mut long, &mut pending] {
            r.as_object_mut().unwrap().remove("updated_at");
        }
        let stats = get("/v1/stats".into()).await;
        json!({
            "tenants": get("/v1/tenants".into()).await,
            "flows": get("/v1/flows".into()).await,
            "long": long,
            "pending": pending,
            "long_events": get(format!("/v1/runs/{}/events", self.long)).await.as_array().map(Vec::len),
            "pending_events": get(format!("/v1/runs/{}/events", self.pending)).await.as_array().map(Vec::len),
            "approvals": get("/v1/approvals?pending=false".into()).await,
            "schedules": get("/v1/schedules".into()).await,
            "registry": get("/v1/registry?tenant=fz".into()).await,
            "transitions": stats["transitions"],
            "finished": stats["finished"],
            "runs": api.all_runs(ADMIN, "limit=100").await.len(),
        })
    }
}

/// Asserts a 4xx with a JSON error body.
fn client_error(r: &Resp, what: &str) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: expected a 4xx, got {} {}",
        r.status,
        r.text.chars().take(500).collect::<String>()
    );
    r.error_code(what);
}

fn describe(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    if s.len() > 200 {
        format!(
            "{}… ({} bytes)",
            s.chars().take(200).collect::<String>(),
            body.len()
        )
    } else {
        format!("{s:?}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_4xx_json_and_change_nothing() {
    let f = fixture("fuzz").await;
    let api = &f.server.api;
    let before = f.snapshot().await;
    let mut rng = Rng(0x5eed_e710);
    let tokens = [ADMIN.to_string(), f.token.clone()];
    let mut sent = 0;
    for ep in f.endpoints() {
        for round in 0..60 {
            let token = &tokens[round % 2];
            let (ct, body): (Option<&str>, Vec<u8>) = match round % 6 {
                // Random bytes that cannot start a JSON value (and are rarely UTF-8).
                0 => {
                    let n = 1 + rng.below(512) as usize;
                    let mut b = rng.bytes(n);
                    b[0] |= 0x80;
                    (Some("application/json"), b)
                }
                // A random object with the endpoint's fields and one field it does not take.
                1 | 2 => {
                    let mut m = Map::new();
                    for k in ep.fields {
                        if rng.below(2) == 0 {
                            m.insert((*k).to_string(), rng.value(3));
                        }
                    }
                    m.insert(format!("zz_{}", rng.below(1000)), rng.value(2));
                    (
                        Some("application/json"),
                        serde_json::to_vec(&Value::Object(m)).unwrap(),
                    )
                }
                // A value of the wrong type for a body.
                3 => {
                    let v = match rng.below(6) {
                        0 => Value::Null,
                        1 => json!(rng.next() as i64),
                        2 => Value::String(rng.string(20)),
                        3 => Value::Bool(true),
                        4 => json!([{"x": 1}]),
                        _ => json!(1.5),
                    };
                    (Some("application/json"), serde_json::to_vec(&v).unwrap())
                }
                // Each field of the wrong type (and an unknown one, so that no
                // accidental success is possible).
                4 => {
                    let k = ep.fields[rng.below(ep.fields.len() as u64) as usize];
                    let wrong = match rng.below(4) {
                        0 => json!([1, 2]),
                        1 => json!({"nested": {"deep": [null]}}),
                        2 => json!(-1e308),
                        _ => json!(12345),
                    };
                    let body = json!({ k: wrong, "zz_unknown": true });
                    (Some("application/json"), serde_json::to_vec(&body).unwrap())
                }
                // Truncated JSON, or JSON with invalid UTF-8 inside a string.
                _ => {
                    let k = ep.fields[rng.below(ep.fields.len() as u64) as usize];
                    let mut b = format!("{{\"{k}\": \"").into_bytes();
                    let n = 1 + rng.below(64) as usize;
                    b.extend(rng.bytes(n).into_iter().map(|x| x | 0x80));
                    if rng.below(2) == 0 {
                        b.extend(b"\"}");
                    }
                    (Some("application/json"), b)
                }
            };
            let what = format!("POST {} with {} ({ct:?})", ep.path, describe(&body));
            let r = api.post_raw(Some(token), &ep.path, ct, body).await;
            client_error(&r, &what);
            sent += 1;
        }
    }
    assert!(sent > 300);
    let after = f.snapshot().await;
    assert_eq!(before, after, "malformed requests changed something");
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bodies_wrong_content_types_and_unknown_fields() {
    let f = fixture("fuzz-fixed").await;
    let api = &f.server.api;
    let before = f.snapshot().await;
    let big = "x".repeat(1 << 20);
    let huge = "y".repeat(3 << 20);
    let t = f.token.as_str();
    let decide = format!("/v1/runs/{}/approvals/decision", f.pending);
    let cancel = format!("/v1/runs/{}/cancel", f.long);
    let backfill = format!("/v1/schedules/{}/backfill", f.schedule);
    let callback = "/v1/callbacks/eyJydW4iOiJ4In0.AAAA".to_string();
    let cases: Vec<(&str, String, Value)> = vec![
        // Unknown fields next to valid ones.
        (
            ADMIN,
            "/v1/tenants".into(),
            json!({"id": "newbie", "admin": true}),
        ),
        (
            t,
            "/v1/flows".into(),
            json!({"source": {"a.eflow": SOURCE}, "force": true}),
        ),
        (t, "/v1/runs".into(), json!({"flow": "Long", "priority": 1})),
        (t, cancel.clone(), json!({"reason": "x", "force": true})),
        (t, decide.clone(), json!({"approve": true, "as": "admin"})),
        (
            t,
            backfill.clone(),
            json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "x": 1}),
        ),
        (t, callback.clone(), json!({"output": 1, "extra": 1})),
        (
            t,
            "/v1/callbacks".into(),
            json!({"callbacks": [{"token": "eyJydW4iOiJ4In0.AAAA", "output": 1}], "extra": 1}),
        ),
        // Huge strings.
        (ADMIN, "/v1/tenants".into(), json!({"id": big})),
        (t, "/v1/runs".into(), json!({"flow": big})),
        (t, "/v1/runs".into(), json!({"flow": "Long", "id": big})),
        (
            t,
            "/v1/runs".into(),
            json!({"flow": "Long", "input": {"x": big}}),
        ),
        (
            t,
            "/v1/runs".into(),
            json!({"flow": "Long", "version": big}),
        ),
        (
            t,
            "/v1/flows".into(),
            json!({"source": {"a.eflow": "flow ".repeat(20_000)}}),
        ),
        (t, "/v1/flows".into(), json!({"ir": big})),
        (
            t,
            "/v1/flows".into(),
            json!({"env": big, "source": {"a.eflow": SOURCE}}),
        ),
        (t, decide.clone(), json!({"approve": "yes", "comment": big})),
        (t, backfill.clone(), json!({"from": big, "to": big})),
        (
            ADMIN,
            "/v1/tenants".into(),
            json!({"id": "ok", "pad": huge}),
        ),
        (t, decide.clone(), json!({"approve": true, "comment": huge})),
        // (A huge body to `cancel` is in `path_and_method_errors_are_json`.)
        // Semantically invalid values.
        (ADMIN, "/v1/tenants".into(), json!({"id": ""})),
        (ADMIN, "/v1/tenants".into(), json!({"id": "a/b"})),
        (ADMIN, "/v1/tenants".into(), json!({"id": "fz"})),
        (t, "/v1/runs".into(), json!({"flow": "Long", "input": [1]})),
        (
            t,
            "/v1/runs".into(),
            json!({"flow": "Long", "input": {"x": "one"}}),
        ),
        (
            t,
            "/v1/runs".into(),
            json!({"flow": "Long", "id": "has space"}),
        ),
        (t, "/v1/runs".into(), json!({"flow": "Nope"})),
        (ADMIN, "/v1/runs".into(), json!({"flow": "Long"})),
        (t, "/v1/flows".into(), json!({})),
        (t, "/v1/flows".into(), json!({"source": {}})),
        (
            t,
            "/v1/flows".into(),
            json!({"ir": {}, "source": {"a.eflow": SOURCE}}),
        ),
        (t, "/v1/flows".into(), json!({"ir": {"flows": "no"}})),
        (
            t,
            "/v1/flows".into(),
            json!({"source": {"a.eflow": "flow Broken( {"}}),
        ),
        (
            t,
            backfill.clone(),
            json!({"from": "yesterday", "to": "2026-01-01T00:00:00Z"}),
        ),
        (
            t,
            callback.clone(),
            json!({"output": 1, "error": {"code": "X"}}),
        ),
        (
            t,
            "/v1/runs/nope/approvals/decision".into(),
            json!({"approve": true}),
        ),
        (
            t,
            format!("/v1/runs/{}/approvals/nope", f.pending),
            json!({"approve": true}),
        ),
        (t, "/v1/schedules/nope/pause".into(), json!({})),
        (t, "/v1/schedules/nope/resume".into(), json!({})),
        (t, "/v1/runs/nope/cancel".into(), json!({})),
    ];
    for (token, path, body) in &cases {
        let bytes = serde_json::to_vec(body).unwrap();
        let what = format!("POST {path} with {}", describe(&bytes));
        // A body over the limit may be refused before it is read: the server
        // answers 413 and closes, and the client may see the connection close
        // while it is still sending. Try a few times to read the answer.
        let mut answer = None;
        for _ in 0..5 {
            match api
                .try_post_raw(Some(token), path, Some("application/json"), bytes.clone())
                .await
            {
                Ok(r) => {
                    answer = Some(r);
                    break;
                }
                Err(e) if bytes.len() > 2 << 20 => {
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{what}: the request failed: {e}"),
            }
        }
        if let Some(r) = answer {
            client_error(&r, &what);
        }
    }
    // Wrong content types, for bodies that would otherwise be valid.
    let valid: Vec<(&str, String, Value)> = vec![
        (ADMIN, "/v1/tenants".into(), json!({"id": "by-text"})),
        (
            t,
            "/v1/flows".into(),
            json!({"source": {"b.eflow": SOURCE.replace("Long", "Longer")}}),
        ),
        (t, "/v1/runs".into(), json!({"flow": "Long"})),
        (t, decide.clone(), json!({"approve": false})),
        (
            t,
            backfill.clone(),
            json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        ),
    ];
    for (token, path, body) in &valid {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/xml"),
        ] {
            let bytes = serde_json::to_vec(body).unwrap();
            let what = format!("POST {path} with content type {ct:?}");
            let r = api.post_raw(Some(token), path, ct, bytes).await;
            client_error(&r, &what);
        }
    }
    let after = f.snapshot().await;
    assert_eq!(before, after, "malformed requests changed something");
    f.server.stop().await;
}

/// A JSON array is not an object, whatever serde makes of it: `["x"]` must not
/// be read as `{"id": "x"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_bodies_are_not_objects() {
    let f = fixture("fuzz-arrays").await;
    let api = &f.server.api;
    let before = f.snapshot().await;
    let decide = format!("/v1/runs/{}/approvals/decision", f.pending);
    let cases: Vec<(&str, String, Value)> = vec![
        (ADMIN, "/v1/tenants".into(), json!(["sneaky"])),
        (f.token.as_str(), "/v1/runs".into(), json!(["Long"])),
        (f.token.as_str(), decide, json!([false])),
        (
            f.token.as_str(),
            format!("/v1/runs/{}/cancel", f.long),
            json!(["positional"]),
        ),
    ];
    let mut failures = Vec::new();
    for (token, path, body) in &cases {
        let r = api.post(Some(token), path, body).await;
        if !(400..500).contains(&r.status) || r.body.pointer("/error/code").is_none() {
            failures.push(format!("POST {path} {body} → {} {}", r.status, r.text));
        }
    }
    let after = f.snapshot().await;
    assert!(
        failures.is_empty(),
        "array bodies were accepted:\n{}",
        failures.join("\n")
    );
    assert_eq!(before, after, "array bodies changed something");
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_4xx_json() {
    let f = fixture("fuzz-query").await;
    let api = &f.server.api;
    let t = Some(f.token.as_str());
    for path in [
        "/v1/runs?limit=abc",
        "/v1/runs?limit=-1",
        "/v1/runs?limit=99999999999",
        "/v1/runs?since=yesterday",
        "/v1/runs?until=2026-13-45T00:00:00Z",
        "/v1/runs?cursor=%%%",
        "/v1/runs?cursor=bm90IGEgY3Vyc29y",
        "/v1/runs?bogus=1",
        "/v1/flows?bogus=1",
        "/v1/approvals?pending=maybe",
        "/v1/registry?bogus=1",
        "/v1/schedules?tenant=other",
        "/v1/population",
        "/v1/population?flow=Long&failed_in_a_row=0",
        "/v1/population?flow=Long&failed_in_a_row=x",
        "/v1/population?flow=Long&status=broken",
        "/v1/population?flow=Long&cursor=%%%",
        "/v1/population?flow=Long&cursor=bm90IGEgY3Vyc29y",
        "/v1/population?flow=Long&bogus=1",
        "/v1/population/counts",
        "/v1/bulk?cursor=nope",
        "/v1/bulk?limit=abc",
        "/v1/bulk/nope",
        "/v1/runs/nope",
        "/v1/runs/nope/events",
        "/v1/runs/x/events?after=-5",
        "/v1/nothing-here",
        "/v2/runs",
    ] {
        let r = api.get(t, path).await;
        client_error(&r, &format!("GET {path}"));
    }
    f.server.stop().await;
}

/// Every error is JSON, including a path parameter that is not UTF-8, a
/// method the route does not take, and a body over the limit to `cancel`
/// (which reads its body as bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_method_errors_are_json() {
    let f = fixture("fuzz-path").await;
    let api = &f.server.api;
    let mut failures = Vec::new();
    let base = f.server.addr();
    use reqwest::Method;
    let reqs = [
        (Method::GET, "/v1/runs/%FF%FE".to_string()),
        (Method::POST, "/v1/runs/%C0/cancel".to_string()),
        (Method::PUT, "/v1/runs".to_string()),
        (Method::DELETE, format!("/v1/runs/{}", f.long)),
        (Method::PATCH, "/v1/flows".to_string()),
        (Method::GET, format!("/v1/runs/{}/cancel", f.long)),
    ];
    for (method, path) in reqs {
        let label = format!("{method} {path}");
        let r = api
            .send(
                api.http
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(&f.token),
            )
            .await;
        if !(400..500).contains(&r.status) || r.body.pointer("/error/code").is_none() {
            failures.push(format!(
                "{label} → {} {:?} {:?}",
                r.status, r.content_type, r.text
            ));
        }
    }
    // `cancel` reads its body as bytes: a body over the limit.
    let huge = serde_json::to_vec(&json!({"reason": "y".repeat(3 << 20)})).unwrap();
    let path = format!("/v1/runs/{}/cancel", f.long);
    for _ in 0..5 {
        let Ok(r) = api
            .try_post_raw(
                Some(&f.token),
                &path,
                Some("application/json"),
                huge.clone(),
            )
            .await
        else {
            continue;
        };
        if !(400..500).contains(&r.status) || r.body.pointer("/error/code").is_none() {
            failures.push(format!(
                "POST {path} with a 3 MB body → {} {:?} {:?}",
                r.status, r.content_type, r.text
            ));
        }
        break;
    }
    let run = api.run(&f.token, &f.long).await;
    assert_eq!(run["status"], "running", "{run}");
    f.server.stop().await;
    assert!(
        failures.is_empty(),
        "errors that are not JSON:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let s = TestServer::start("openapi").await;
    let r = s.api.get(None, "/v1/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = &r.body;
    assert!(doc.is_object(), "the document is JSON: {}", r.text);
    let version = doc["openapi"].as_str().expect("an `openapi` field");
    assert!(version.starts_with("3."), "OpenAPI 3.x: {version}");
    let paths = doc["paths"].as_object().expect("paths");
    let routes: &[(&str, &[&str])] = &[
        ("/v1/health", &["get"]),
        ("/v1/tenants", &["get", "post"]),
        ("/v1/tenants/{id}", &["delete", "patch"]),
        ("/v1/flows", &["get", "post"]),
        ("/v1/runs", &["get", "post"]),
        ("/v1/runs/{id}", &["get"]),
        ("/v1/runs/{id}/events", &["get"]),
        ("/v1/runs/{id}/steps/{step}/results", &["get"]),
        ("/v1/runs/{id}/values/{hash}", &["get"]),
        ("/v1/tenants/{id}/values", &["post"]),
        ("/v1/values/{token}", &["get"]),
        ("/v1/runs/{id}/cancel", &["post"]),
        ("/v1/runs/{id}/retry", &["post"]),
        ("/v1/runs/{id}/approvals/{step}", &["post"]),
        ("/v1/approvals", &["get"]),
        ("/v1/callbacks", &["post"]),
        ("/v1/callbacks/{token}", &["post"]),
        ("/v1/schedules", &["get", "post"]),
        ("/v1/schedules/{id}", &["delete", "patch"]),
        ("/v1/schedules/{id}/pause", &["post"]),
        ("/v1/schedules/{id}/resume", &["post"]),
        ("/v1/schedules/{id}/backfill", &["post"]),
        ("/v1/registry", &["get"]),
        ("/v1/population", &["get"]),
        ("/v1/population/counts", &["get"]),
        ("/v1/bulk", &["get", "post"]),
        ("/v1/bulk/preview", &["post"]),
        ("/v1/bulk/{id}", &["get"]),
        ("/v1/bulk/{id}/pause", &["post"]),
        ("/v1/bulk/{id}/resume", &["post"]),
        ("/v1/bulk/{id}/cancel", &["post"]),
        ("/v1/stats", &["get"]),
        ("/v1/cluster", &["get"]),
        ("/v1/whoami", &["get"]),
        ("/v1/tenants/{id}/tokens", &["get", "post"]),
        ("/v1/tenants/{id}/tokens/{token}", &["delete"]),
        ("/v1/tenants/{id}/tokens/{token}/rotate", &["post"]),
        ("/v1/admin/tokens", &["get", "post"]),
        ("/v1/admin/tokens/{token}", &["delete"]),
        ("/v1/admin/tokens/{token}/rotate", &["post"]),
    ];
    for (path, methods) in routes {
        let p = paths.get(*path).unwrap_or_else(|| {
            panic!(
                "the document lacks {path}; it has {:?}",
                paths.keys().collect::<Vec<_>>()
            )
        });
        for m in *methods {
            assert!(p.get(*m).is_some(), "{path} lacks {m}: {p}");
        }
    }
    assert_eq!(
        paths.len(),
        routes.len(),
        "no other paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    assert!(
        doc.pointer("/components/schemas/ErrorBody").is_some(),
        "ErrorBody schema"
    );
    assert!(
        doc.pointer("/components/securitySchemes/bearer").is_some(),
        "bearer security scheme"
    );
    s.stop().await;
}
