//! `http`: a remote system that is POSTed each invocation and, for a remote
//! step, calls back with the result; told of cancellations at `cancel_url`.
//! The protocol is written in `docs/connectors.md`.
//!
//! The outbox executor (`engine::dispatch`) calls these once per outbox row;
//! every retry carries the same `Idempotency-Key`.

use std::collections::BTreeMap;
use std::time::Duration;

use eflow_core::{Event, EventKind, StepError, slot_id};
use eflow_ir::StepKind;
use eflow_ir::connector::HttpConfig;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::egress::{self, Way};

/// Tries to tell a remote system of a cancellation before giving up.
const CANCEL_TRIES: u32 = 4;
/// The longest a cancellation request may take, whatever the binding's `timeout`.
const CANCEL_TIMEOUT_MS: u64 = 5_000;

/// One attempt of a step, as the remote system is told of it.
#[derive(Debug, Serialize)]
pub struct Invocation<'a> {
    pub run: &'a str,
    pub tenant: &'a str,
    pub step: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub attempt: u32,
    pub contract: &'a str,
    pub inputs: &'a Map<String, Value>,
    /// Inputs larger than the binding's `max_inline`, by URL.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub input_urls: BTreeMap<String, ValueUrl>,
    pub idempotency_key: &'a str,
    /// Absent for a synchronous call: the response is the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// Where a remote system reads an input too large to send inline: a GET of
/// `url` (`?after=&limit=` pages a list) answers the value.
#[derive(Debug, Clone, Serialize)]
pub struct ValueUrl {
    pub url: String,
    pub hash: String,
    /// The length of the value's JSON.
    pub bytes: u64,
    /// For a list: its number of elements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
}

/// POSTs the invocation. Returns the attempt's result when the answer is one
/// (a call step's output, or a failure), `None` when a remote step was
/// accepted and its result will come by callback.
///
/// The call goes out only where the egress policy allows (else the attempt
/// fails with `EgressRefused`, not retried), redirects are not followed, and
/// no more than `way.max_answer_bytes` of the answer is read (else the attempt
/// fails with `AnswerTooLarge`, not retried).
pub async fn invoke(
    way: &Way,
    config: &HttpConfig,
    kind: StepKind,
    body: &Invocation<'_>,
) -> Option<Event> {
    let url = config.url.as_str();
    let id = format!("http:{}", slot_id(body.step, body.index, body.attempt));
    let failed = |error: StepError, retryable: bool| {
        Event::new(
            id.clone(),
            EventKind::StepFailed {
                node: body.step.to_string(),
                index: body.index,
                attempt: body.attempt,
                error,
                retryable,
            },
        )
    };
    if let Err(refused) = way.policy.check_url(url) {
        return Some(failed(
            StepError::new(egress::REFUSED, format!("POST {url}: {refused}")),
            false,
        ));
    }
    let req = with_headers(
        way.client
            .post(url)
            .timeout(Duration::from_millis(config.timeout_ms))
            .header("Idempotency-Key", body.idempotency_key)
            .json(body),
        config,
    );
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(refused) = egress::refusal(&e) {
                return Some(failed(
                    StepError::new(egress::REFUSED, format!("POST {url}: {refused}")),
                    false,
                ));
            }
            let code = if e.is_timeout() {
                "Timeout"
            } else {
                "Unreachable"
            };
            return Some(failed(
                StepError::new(code, format!("POST {url}: {e}")),
                true,
            ));
        }
    };
    let status = resp.status();
    if status.is_redirection() {
        let to = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nowhere")
            .to_string();
        return Some(failed(
            StepError::new(
                format!("Http{}", status.as_u16()),
                format!(
                    "POST {url}: {status}: redirects are not followed (this one to {to}): bind the step to the URL that answers"
                ),
            ),
            false,
        ));
    }
    let text = match read_bounded(resp, way.max_answer_bytes).await {
        Ok(bytes) => bytes,
        Err(Read::TooLarge(size)) => {
            let size = match size {
                Some(n) => format!("{n} bytes"),
                None => format!("more than {} bytes", way.max_answer_bytes),
            };
            return Some(failed(
                StepError::new(
                    ANSWER_TOO_LARGE,
                    format!(
                        "POST {url}: the answer is {size}, larger than the limit of {} bytes (`eflow serve --max-answer-bytes`): return references (URIs), not data",
                        way.max_answer_bytes
                    ),
                ),
                false,
            ));
        }
        Err(Read::Failed(e)) => {
            let code = if e.is_timeout() {
                "Timeout"
            } else {
                "Unreachable"
            };
            return Some(failed(
                StepError::new(code, format!("POST {url}: reading the answer: {e}")),
                true,
            ));
        }
    };
    if status.is_success() {
        return (kind == StepKind::Call).then(|| {
            let output = serde_json::from_slice::<Value>(&text)
                .map(|v| match v {
                    Value::Object(mut m) if m.contains_key("output") => {
                        m.remove("output").unwrap_or(Value::Null)
                    }
                    v => v,
                })
                .unwrap_or(Value::Null);
            Event::new(
                id.clone(),
                EventKind::StepCompleted {
                    node: body.step.to_string(),
                    index: body.index,
                    attempt: body.attempt,
                    output,
                    output_ref: None,
                },
            )
        });
    }
    let text = String::from_utf8_lossy(&text);
    let (code, message) = remote_error(&text).unwrap_or_else(|| {
        (
            format!("Http{}", status.as_u16()),
            text.chars().take(300).collect(),
        )
    });
    let retryable = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
    Some(failed(
        StepError::new(code, format!("POST {url}: {status}: {message}")),
        retryable,
    ))
}

/// The step error code of an answer larger than the server reads.
pub const ANSWER_TOO_LARGE: &str = "AnswerTooLarge";

/// Why an answer was not read.
enum Read {
    /// Larger than the limit: its size when the remote system said it.
    TooLarge(Option<u64>),
    Failed(reqwest::Error),
}

/// The answer's body, read up to `max` bytes: a larger one is dropped
/// unread as soon as it is known to be larger, so its size never costs memory.
async fn read_bounded(mut resp: reqwest::Response, max: u64) -> Result<Vec<u8>, Read> {
    if let Some(n) = resp.content_length()
        && n > max
    {
        return Err(Read::TooLarge(Some(n)));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Read::Failed)? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(Read::TooLarge(None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The attempt a remote system is told it no longer has to carry out.
pub struct Cancellation<'a> {
    pub run: &'a str,
    pub tenant: &'a str,
    pub step: &'a str,
    pub index: Option<u32>,
    pub attempt: u32,
}

/// POSTs `{run, tenant, step, index, attempt}` to the binding's `cancel_url`.
/// Best effort: a few tries, then a warning; whatever the remote system does,
/// a result it still sends for the attempt is refused as stale.
pub async fn cancel(way: &Way, config: &HttpConfig, c: &Cancellation<'_>) {
    let Some(url) = config.cancel_url.as_deref() else {
        return;
    };
    if let Err(refused) = way.policy.check_url(url) {
        tracing::warn!(run = %c.run, step = %c.step, attempt = c.attempt, %refused, "the remote system was not told of the cancellation");
        return;
    }
    // Short: a remote system slow to take cancellations must not hold the
    // executor's places that invocations need.
    let timeout = config.timeout_ms.min(CANCEL_TIMEOUT_MS);
    let mut body = json!({
        "run": c.run,
        "tenant": c.tenant,
        "step": c.step,
        "attempt": c.attempt,
    });
    if let Some(i) = c.index {
        body["index"] = json!(i);
    }
    let mut delay = Duration::from_millis(200);
    for tries in 1..=CANCEL_TRIES {
        let req = with_headers(
            way.client
                .post(url)
                .timeout(Duration::from_millis(timeout))
                .json(&body),
            config,
        );
        let outcome = match req.send().await {
            Ok(r) if r.status().is_success() || r.status().is_client_error() => return,
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => match egress::refusal(&e) {
                Some(refused) => {
                    tracing::warn!(run = %c.run, step = %c.step, attempt = c.attempt, %refused, "the remote system was not told of the cancellation");
                    return;
                }
                None => e.to_string(),
            },
        };
        if tries == CANCEL_TRIES {
            tracing::warn!(run = %c.run, step = %c.step, attempt = c.attempt, %outcome, "the remote system was not told of the cancellation");
            return;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}

/// The binding's extra `headers` on a request to its remote system.
fn with_headers(mut req: reqwest::RequestBuilder, config: &HttpConfig) -> reqwest::RequestBuilder {
    for (k, v) in &config.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req
}

/// `{"error": {"code": "...", "message": "..."}}` from a remote system.
fn remote_error(text: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let e = v.get("error")?;
    let code = e.get("code")?.as_str()?.to_string();
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_errors_give_their_code() {
        assert_eq!(
            remote_error(r#"{"error": {"code": "OutOfMemory", "message": "48 GB"}}"#),
            Some(("OutOfMemory".into(), "48 GB".into()))
        );
        assert_eq!(
            remote_error(r#"{"error": {"code": "Busy"}}"#),
            Some(("Busy".into(), String::new()))
        );
        assert_eq!(remote_error("<html>bad gateway</html>"), None);
    }
}
