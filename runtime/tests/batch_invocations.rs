//! An `http` binding with a `batch_url`, over real HTTP: the server POSTs
//! many invocations in one request and reads one result per invocation, in
//! order (docs/connectors.md, "Many invocations a request"); an answer that
//! is not one result per invocation fails each of them, and a remote step
//! accepted in a batch goes on by its callback as without batches.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// What the remote system answers for a batch.
#[derive(Clone, Copy)]
enum Answers {
    /// Even `x`: 200 with `x + 1`; odd: 422 `Odd`, not retryable.
    ByParity,
    /// One result fewer than invocations.
    OneShort,
    /// 202 for each: results come by callback.
    Accepted,
}

/// The batches the remote system received, each as its invocations.
type Batches = Arc<Mutex<Vec<Vec<Value>>>>;

/// A remote system serving `POST /batch` slowly (50 ms a request), so that
/// invocations that come meanwhile wait for a batch; and `POST /one`, which
/// must not be called.
async fn remote(answers: Answers) -> (Batches, String) {
    use axum::extract::State;
    async fn batch(
        State((batches, answers)): State<(Batches, Answers)>,
        axum::Json(b): axum::Json<Value>,
    ) -> axum::Json<Value> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let invocations = b["invocations"].as_array().cloned().unwrap_or_default();
        batches.lock().unwrap().push(invocations.clone());
        let mut results: Vec<Value> = invocations
            .iter()
            .map(|inv| {
                let x = inv["inputs"]["x"].as_i64().unwrap_or(0);
                match answers {
                    Answers::Accepted => json!({ "status": 202 }),
                    _ if x % 2 == 0 => json!({ "status": 200, "output": x + 1 }),
                    _ => json!({ "status": 422, "error": { "code": "Odd", "message": format!("{x} is odd") } }),
                }
            })
            .collect();
        if matches!(answers, Answers::OneShort) {
            results.pop();
        }
        axum::Json(json!({ "results": results }))
    }
    async fn one() -> (axum::http::StatusCode, &'static str) {
        (axum::http::StatusCode::IM_A_TEAPOT, "not this one")
    }
    let batches: Batches = Arc::default();
    let app = axum::Router::new()
        .route("/batch", axum::routing::post(batch))
        .route("/one", axum::routing::post(one))
        .with_state((batches.clone(), answers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the remote system");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (batches, format!("http://{addr}"))
}

async fn deployed(name: &str, kind: &str, base: &str) -> (TestServer, String) {
    let s = TestServer::start(name).await;
    let token = s.api.create_tenant("acme", json!({})).await;
    let src = format!(
        r#"
{kind} step Add(x: Int) -> Int

flow Adds(x: Int) -> Int {{
    let y = Add(x: x)
    return y
}}

bindings dev {{
    Add = http {{ url: "{base}/one", batch_url: "{base}/batch" }}
}}
"#
    );
    s.api.deploy_source(&token, &[("adds.eflow", &src)]).await;
    (s, token)
}

/// Starts `n` runs at once, x = 0..n: their ids by x.
async fn start_many(s: &TestServer, token: &str, n: i64) -> Vec<String> {
    let starts = (0..n).map(|x| s.api.start(token, "Adds", json!({ "x": x })));
    futures_util::future::join_all(starts)
        .await
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_invocations_go_in_one_request_and_each_gets_its_own_result() {
    let (batches, base) = remote(Answers::ByParity).await;
    let (s, token) = deployed("batch-parity", "call", &base).await;
    let ids = start_many(&s, &token, 40).await;
    for (x, id) in ids.iter().enumerate() {
        let run = s.api.wait_finished(&token, id).await;
        if x % 2 == 0 {
            assert_eq!(run["status"], "succeeded", "{run}");
            assert_eq!(run["result"], json!(x as i64 + 1), "{run}");
        } else {
            assert_eq!(run["status"], "failed", "{run}");
            assert_eq!(run["error"]["code"], "Odd", "{run}");
            let message = run["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(&format!("{x} is odd")), "{run}");
        }
    }
    let batches = batches.lock().unwrap().clone();
    let sent: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(sent, 40, "each invocation sent once: {batches:?}");
    assert!(
        batches.iter().any(|b| b.len() > 1),
        "invocations that came while requests were out went together: sizes {:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    for inv in batches.iter().flatten() {
        assert!(inv["idempotency_key"].is_string(), "{inv}");
        assert_eq!(inv["step"], "y");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_one_result_per_invocation_fails_each() {
    let (_batches, base) = remote(Answers::OneShort).await;
    let (s, token) = deployed("batch-short", "call", &base).await;
    let ids = start_many(&s, &token, 3).await;
    for id in &ids {
        let run = s.api.wait_finished(&token, id).await;
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["error"]["code"], "BadBatchAnswer", "{run}");
        let message = run["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("one result per invocation"),
            "the message says what to do: {run}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_step_accepted_in_a_batch_goes_on_by_its_callback() {
    let (batches, base) = remote(Answers::Accepted).await;
    let (s, token) = deployed("batch-accepted", "remote", &base).await;
    let ids = start_many(&s, &token, 5).await;
    let invocations: Vec<Value> = poll_until("five invocations", DEADLINE, || async {
        let all: Vec<Value> = batches.lock().unwrap().iter().flatten().cloned().collect();
        (all.len() == 5).then_some(all)
    })
    .await;
    for inv in &invocations {
        let x = inv["inputs"]["x"].as_i64().expect("x");
        let url = inv["callback_url"].as_str().expect("callback_url");
        s.api
            .send(s.api.http.post(url).json(&json!({ "output": x * 10 })))
            .await
            .ok("callback");
    }
    for (x, id) in ids.iter().enumerate() {
        let run = s.api.wait_finished(&token, id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["result"], json!(x as i64 * 10), "{run}");
    }
    s.stop().await;
}
