//! Values by reference over real HTTP: a client uploads a large input and
//! starts a run with it by reference, and a remote system reads it through
//! the signed URL its invocation carries, a page at a time, then calls back.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use common::{ADMIN, TestServer};
use serde_json::{Value, json};

/// What the remote system saw: each invocation's body, and the pages it read.
#[derive(Default)]
struct Seen {
    invocations: Vec<Value>,
    pages: usize,
}

/// A remote system that sums a list it reads through `input_urls.xs.url`,
/// page by page, and calls back with the sum.
async fn summing_remote() -> (Arc<Mutex<Seen>>, String) {
    async fn sum(
        State(seen): State<Arc<Mutex<Seen>>>,
        axum::Json(b): axum::Json<Value>,
    ) -> &'static str {
        seen.lock().unwrap().invocations.push(b.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = b.pointer("/input_urls/xs/url").and_then(Value::as_str);
            let callback = b["callback_url"].as_str().unwrap_or_default().to_string();
            let mut total: i64 = 0;
            let outcome = match url {
                None => {
                    json!({"error": {"code": "NoUrl", "message": "xs came inline"}, "retryable": false})
                }
                Some(url) => {
                    let mut after: Option<u64> = None;
                    loop {
                        let page_url = match after {
                            Some(a) => format!("{url}?after={a}&limit=5000"),
                            None => format!("{url}?limit=5000"),
                        };
                        let page: Value = http
                            .get(&page_url)
                            .send()
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        seen.lock().unwrap().pages += 1;
                        for x in page["items"].as_array().unwrap() {
                            total += x.as_i64().unwrap();
                        }
                        match page["next"].as_u64() {
                            Some(n) => after = Some(n),
                            None => break,
                        }
                    }
                    json!({"output": total})
                }
            };
            http.post(&callback).json(&outcome).send().await.unwrap();
        });
        "accepted"
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let app = axum::Router::new()
        .route("/sum", post(sum))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (seen, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_input_uploaded_by_reference_is_read_by_the_remote_system_in_pages() {
    let (seen, base) = summing_remote().await;
    let s = TestServer::start("values-by-url").await;
    let api = &s.api;
    let acme = api.create_tenant("acme", json!({})).await;
    let source = format!(
        r#"
remote step Sum(xs: List<Int>) -> Int

flow Total(xs: List<Int>) -> Int {{
    let s = Sum(xs: xs)
    return s
}}

bindings dev {{
    Sum = http {{ url: "{base}/sum", max_inline: 10000 }}
}}
"#
    );
    api.deploy_source(&acme, &[("total.eflow", &source)]).await;

    // 20,000 elements: about 110 KB, more than a run's state holds inline
    // and than the binding sends inline.
    let xs: Vec<i64> = (0..20_000).collect();
    let expected: i64 = xs.iter().sum();
    let up = api
        .post(Some(&acme), "/v1/tenants/acme/values", &json!(xs))
        .await
        .ok("upload");
    let hash = up["hash"].as_str().expect("a hash").to_string();
    assert!(
        hash.starts_with("sha256:") && up["bytes"].as_u64() > Some(100_000),
        "{up}"
    );
    // The same value again is the same value.
    let again = api
        .post(Some(&acme), "/v1/tenants/acme/values", &json!(xs))
        .await
        .ok("upload again");
    assert_eq!(again, up);
    // Another tenant cannot use it: it is not theirs.
    let other = api.create_tenant("other", json!({})).await;
    api.deploy_source(&other, &[("total.eflow", &source)]).await;
    let r = api
        .post(
            Some(&other),
            "/v1/runs",
            &json!({"flow": "Total", "input_refs": {"xs": hash}}),
        )
        .await;
    assert_eq!(
        r.expect_error(400, "another tenant's value"),
        "unknown_value"
    );
    let r = api
        .post(Some(&other), "/v1/tenants/acme/values", &json!([1]))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    let run = api
        .post(
            Some(&acme),
            "/v1/runs",
            &json!({"flow": "Total", "input_refs": {"xs": hash}}),
        )
        .await
        .ok("start by reference");
    let id = run["id"].as_str().expect("id").to_string();
    assert_eq!(run["input_refs"]["xs"]["hash"], hash.as_str(), "{run}");
    let done = api.wait_finished(&acme, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"],
        json!(expected),
        "the remote system read every element"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.invocations.len(), 1);
        let inv = &seen.invocations[0];
        assert!(
            inv["inputs"].get("xs").is_none(),
            "not inline: {}",
            inv["inputs"]
        );
        assert_eq!(inv["input_urls"]["xs"]["items"], 20_000);
        assert_eq!(inv["input_urls"]["xs"]["hash"], hash.as_str());
        assert_eq!(seen.pages, 4, "20,000 elements in pages of 5,000");
    }
    // The client pages through it as well; a forged token is refused.
    let page = api
        .get(
            Some(&acme),
            &format!("/v1/runs/{id}/values/{hash}?after=19997"),
        )
        .await
        .ok("the last page");
    assert_eq!(page["items"], json!([19998, 19999]));
    assert!(page.get("next").is_none(), "{page}");
    assert_eq!(page["total"], 20_000);
    let r = api
        .get(Some(&other), &format!("/v1/runs/{id}/values/{hash}"))
        .await;
    assert_eq!(r.status, 404, "another tenant sees nothing: {}", r.text);
    let url = seen.lock().unwrap().invocations[0]["input_urls"]["xs"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let token = url.rsplit('/').next().unwrap();
    let (claim, tag) = token.split_once('.').unwrap();
    let forged = format!("{claim}.{}", tag.chars().rev().collect::<String>());
    let r = api.get(None, &format!("/v1/values/{forged}")).await;
    assert_eq!(
        r.expect_error(401, "a forged value token"),
        "invalid_value_token"
    );

    // The event log names the input by reference, not by value.
    let events = api
        .get(Some(&acme), &format!("/v1/runs/{id}/events"))
        .await
        .ok("events");
    let started = &events[0]["event"];
    assert_eq!(
        started["input_refs"]["xs"]["hash"],
        hash.as_str(),
        "{started}"
    );
    assert!(
        events.to_string().len() < 5_000,
        "no copy of the list in the log"
    );

    // A purge takes the tenant's values with it.
    let TestServer { server, dir, .. } = s;
    let purge = reqwest::Client::new()
        .delete(format!("http://{}/v1/tenants/acme", server.addr))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(purge.status().is_success(), "{}", purge.status());
    server.stop().await;
    for table in ["stored_values", "run_values"] {
        assert!(
            !common::rows_holding(&dir.join("eflow.db"), "acme")
                .await
                .iter()
                .any(|(t, _)| t == table),
            "{table} holds none of the purged tenant's rows"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
