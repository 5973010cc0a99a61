//! The callback contract over real HTTP: what a remote system learns from the
//! answer to its callback (applied, already applied, stale, invalid output),
//! bodies that report nothing or nonsense are refused whole, and the token is
//! checked before the body is read.

mod common;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The invocations a test's remote system received.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// A tenant with `Works(x) -> Int` deployed, a run of it waiting for its
/// callback: (server, token, run id, callback url).
async fn waiting_run(name: &str) -> (TestServer, String, String, String) {
    let (s, token, calls) = works_deployed(name).await;
    let (id, url) = start_waiting(&s, &token, &calls, 4).await;
    (s, token, id, url)
}

/// A server with a tenant that has `Works(x) -> Int` deployed, its remote
/// step bound to a remote system that accepts every invocation: (server,
/// token, the invocations it received).
async fn works_deployed(name: &str) -> (TestServer, String, Calls) {
    let (calls, base) = accepting_remote().await;
    let s = TestServer::start(name).await;
    let token = s.api.create_tenant("acme", json!({})).await;
    let src = format!(
        r#"
remote step Work(x: Int) -> Int

flow Works(x: Int) -> Int {{
    let w = Work(x: x)
    return w
}}

bindings dev {{
    Work = http {{ url: "{base}/work" }}
}}
"#
    );
    s.api.deploy_source(&token, &[("works.eflow", &src)]).await;
    (s, token, calls)
}

/// Starts a run of `Works` and waits for its invocation: (run id, callback url).
async fn start_waiting(s: &TestServer, token: &str, calls: &Calls, x: i64) -> (String, String) {
    let run = s.api.start(token, "Works", json!({ "x": x })).await;
    let id = run["id"].as_str().expect("id").to_string();
    let url = poll_until("the invocation of Work", DEADLINE, || async {
        let calls = calls.lock().unwrap();
        calls
            .iter()
            .find(|c| c["run"] == id.as_str())
            .and_then(|c| c["callback_url"].as_str())
            .map(str::to_string)
    })
    .await;
    (id, url)
}

async fn call_back(api: &Api, url: &str, body: &Value) -> Resp {
    api.send(api.http.post(url).json(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_callback_is_already_applied_and_a_different_one_stale() {
    let (s, token, id, url) = waiting_run("callback-status").await;
    let api = &s.api;

    let r = call_back(api, &url, &json!({"output": 40})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "applied", "{}", r.body);
    assert_eq!(r.body["applied"], true, "{}", r.body);
    assert_eq!(r.body["run"], id.as_str(), "{}", r.body);
    assert_eq!(r.body["step"], "w", "{}", r.body);
    assert_eq!(r.body["attempt"], 1, "{}", r.body);
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["result"], 40, "{done}");

    // The same callback again (the remote system lost the first answer):
    // idempotent success.
    let r = call_back(api, &url, &json!({"output": 40})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "already_applied", "{}", r.body);
    assert_eq!(r.body["applied"], true, "{}", r.body);

    // A different result for the same attempt came too late: stale, not applied.
    for body in [
        json!({"output": 41}),
        json!({"error": {"code": "Boom", "message": "late"}}),
    ] {
        let r = call_back(api, &url, &body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text);
        assert_eq!(r.body["status"], "stale", "{body}: {}", r.body);
        assert_eq!(r.body["applied"], false, "{body}: {}", r.body);
        assert!(r.body["reason"].is_string(), "{body}: {}", r.body);
    }
    let after = api.run(&token, &id).await;
    assert_eq!(after["result"], 40, "nothing changed: {after}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_of_the_wrong_type_is_not_applied() {
    let (s, token, id, url) = waiting_run("callback-invalid-output").await;
    let api = &s.api;
    let r = call_back(api, &url, &json!({"output": "forty"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "invalid_output", "{}", r.body);
    assert_eq!(r.body["applied"], false, "{}", r.body);
    assert!(
        r.body["reason"].as_str().is_some_and(|m| !m.is_empty()),
        "says why: {}",
        r.body
    );
    let done = api.wait_finished(&token, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "InvalidOutput", "{done}");
    // Sent again, it is answered the same way, not as applied.
    let r = call_back(api, &url, &json!({"output": "forty"})).await;
    assert_eq!(r.body["status"], "invalid_output", "{}", r.body);
    assert_eq!(r.body["applied"], false, "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_malformed_callbacks_are_400_and_change_nothing() {
    let (s, token, id, url) = waiting_run("callback-malformed").await;
    let api = &s.api;
    let long_code = "E".repeat(129);
    let bodies: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("an empty body", Some("application/json"), vec![]),
        ("no content type", None, vec![]),
        ("an empty object", Some("application/json"), b"{}".to_vec()),
        (
            "only retryable",
            Some("application/json"),
            br#"{"retryable": false}"#.to_vec(),
        ),
        ("not JSON", Some("application/json"), b"{output: 1".to_vec()),
        (
            "output and error",
            Some("application/json"),
            br#"{"output": 1, "error": {"code": "X"}}"#.to_vec(),
        ),
        (
            "retryable with an output",
            Some("application/json"),
            br#"{"output": 1, "retryable": true}"#.to_vec(),
        ),
        (
            "an empty error code",
            Some("application/json"),
            br#"{"error": {"code": ""}}"#.to_vec(),
        ),
        (
            "a 129-byte error code",
            Some("application/json"),
            serde_json::to_vec(&json!({"error": {"code": long_code}})).unwrap(),
        ),
        (
            "a control character in the code",
            Some("application/json"),
            br#"{"error": {"code": "a\nb"}}"#.to_vec(),
        ),
        (
            "an unknown field",
            Some("application/json"),
            br#"{"output": 1, "status": "ok"}"#.to_vec(),
        ),
    ];
    for (what, ct, body) in bodies {
        let r = api
            .post_raw(None, &url.replace(&api.base, ""), ct, body)
            .await;
        r.expect_error(400, what);
    }
    let run = api.run(&token, &id).await;
    assert_eq!(run["status"], "running", "nothing changed: {run}");
    assert_eq!(run["steps"][0]["status"], "running", "{run}");
    assert_eq!(run["steps"][0]["attempt"], 1, "{run}");

    // An error message is kept to 512 bytes, whatever was sent.
    let r = call_back(
        api,
        &url,
        &json!({"error": {"code": "Boom", "message": "x".repeat(100_000)}, "retryable": false}),
    )
    .await;
    assert_eq!(r.body["status"], "applied", "{}", r.body);
    let done = api.wait_finished(&token, &id).await;
    let message = done["steps"][0]["error"]["message"]
        .as_str()
        .expect("the step's error message");
    assert!(message.len() <= 512 + '…'.len_utf8(), "{}", message.len());
    assert_eq!(done["error"]["code"], "Boom", "{done}");
    s.stop().await;
}

/// A callback with a forged token is refused before its body is read: the
/// server answers 401 while the client has sent only the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_body_is_read() {
    let s = TestServer::start("callback-token-first").await;
    let mut conn = tokio::net::TcpStream::connect(s.server.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/callbacks/eyJydW4iOiJ4In0.AAAA HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
        s.server.addr
    );
    conn.write_all(head.as_bytes())
        .await
        .expect("send the head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(DEADLINE, async {
        loop {
            let n = conn.read(&mut buf).await.expect("read");
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if n == 0 || text.contains("invalid_callback_token") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(
        read.is_ok(),
        "no answer before the body was sent: the server waits for the body of an unauthenticated callback ({text:?})"
    );
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("invalid_callback_token"), "{text}");
    s.stop().await;
}

/// The token of a callback URL: its last path segment.
fn token_of(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, t)| t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_callbacks_is_answered_one_by_one_in_order() {
    let (s, token, calls) = works_deployed("callback-batch").await;
    let api = &s.api;
    let (ok, ok_url) = start_waiting(&s, &token, &calls, 1).await;
    let (wrong, wrong_url) = start_waiting(&s, &token, &calls, 2).await;
    let (failing, failing_url) = start_waiting(&s, &token, &calls, 3).await;
    let batch = format!("{}/v1/callbacks", api.base);
    let r = api
        .send(api.http.post(&batch).json(&json!({"callbacks": [
            {"token": token_of(&ok_url), "output": 10},
            {"token": "eyJydW4iOiJ4In0.AAAA", "output": 1},
            {"token": token_of(&wrong_url), "output": "ten"},
            {"token": token_of(&failing_url), "error": {"code": "OutOfMemory"}, "retryable": false},
            {"token": token_of(&ok_url), "output": 10},
            {"token": token_of(&ok_url)},
        ]})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 6, "one answer per callback: {}", r.body);
    assert_eq!(results[0]["status"], "applied", "{}", results[0]);
    assert_eq!(results[0]["run"], ok.as_str(), "{}", results[0]);
    assert_eq!(
        results[1]["error"]["code"], "invalid_callback_token",
        "a forged token fails its own report: {}",
        results[1]
    );
    assert_eq!(results[2]["status"], "invalid_output", "{}", results[2]);
    assert_eq!(results[3]["status"], "applied", "{}", results[3]);
    assert_eq!(
        results[4]["status"], "already_applied",
        "the same report twice in a batch: {}",
        results[4]
    );
    assert_eq!(
        results[5]["error"]["code"], "invalid_callback",
        "a report of nothing: {}",
        results[5]
    );

    let done = api.wait_finished(&token, &ok).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"], 10, "{done}");
    let done = api.wait_finished(&token, &wrong).await;
    assert_eq!(done["error"]["code"], "InvalidOutput", "{done}");
    let done = api.wait_finished(&token, &failing).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "OutOfMemory", "{done}");

    // A batch is 1 to 1,000 reports of known fields, or refused whole.
    for (body, why) in [
        (json!({"callbacks": []}), "an empty batch"),
        (
            json!({"callbacks": vec![json!({"token": "t", "output": 1}); 1001]}),
            "more than 1,000",
        ),
        (
            json!({"callbacks": [{"token": "t", "output": 1, "extra": 1}]}),
            "an unknown field",
        ),
        (json!({"results": []}), "no `callbacks`"),
    ] {
        let r = api.send(api.http.post(&batch).json(&body)).await;
        assert_eq!(r.status, 400, "{why}: {}", r.text);
    }
    s.stop().await;
}
