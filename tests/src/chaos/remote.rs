//! The remote system of the fault suite: it accepts the `http` steps'
//! invocations and calls back later, again until the server takes it. The
//! first attempt of one step in four of the `Remote` flow's runs fails
//! (retryably), so retries, their timers and second attempts are under the
//! kills too.

use super::*;

pub(super) async fn invoke(
    State(remote): State<Arc<Remote>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let key = headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = |k: &str| body[k].as_str().unwrap_or("").to_string();
    let attempt = (
        text("run"),
        text("step"),
        body["attempt"].as_u64().unwrap_or(0),
        body["index"].as_u64(),
    );
    lock(&remote.keys)
        .entry(attempt.clone())
        .or_default()
        .insert(key.clone());
    remote.invocations.fetch_add(1, Ordering::Relaxed);
    lock(&remote.first_call)
        .entry(attempt.0.clone())
        .or_insert_with(Instant::now);
    let tenant = text("tenant");
    let callback = text("callback_url");
    let output = body["inputs"]["n"].as_i64().unwrap_or(0) + 1;
    // The delay comes from the key: a redelivery answers as late as the first.
    let delay = key
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b))
        % 200;
    let report = if attempt.0.contains(":remote-") && attempt.2 == 1 && delay % 4 == 0 {
        json!({ "error": { "code": "Flaky", "message": "the chaos remote fails once" }, "retryable": true })
    } else {
        json!({ "output": output })
    };
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10 + delay)).await;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            let sent = client
                .post(&callback)
                .json(&report)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(r) = sent {
                let status = r.status().as_u16();
                if r.status().is_success() {
                    let answer: Value = r.json().await.unwrap_or_default();
                    if answer["status"] == "invalid_output" {
                        lock(&remote.refused)
                            .push(format!("the callback of {attempt:?} was answered {answer}"));
                    }
                    return;
                }
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    if !tenant.starts_with("purged-") {
                        let body = r.text().await.unwrap_or_default();
                        lock(&remote.refused).push(format!(
                            "the callback of {attempt:?} was refused: {status} {body}"
                        ));
                    }
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Json(json!({ "accepted": true }))
}
