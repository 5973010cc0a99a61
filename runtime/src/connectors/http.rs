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
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
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
    let item = match prepare(kind, body) {
        Ok(item) => item,
        Err(event) => return Some(*event),
    };
    let key = Some(body.idempotency_key);
    match post(way, config, url, key, item.json, way.max_answer_bytes).await {
        Ok((status, text)) => outcome(url, &item.slot, status, Body::Bytes(text)),
        Err(f) => Some(f.event(&item.slot)),
    }
}

/// The attempt an invocation is for, and its step's kind: what its result
/// is reported for.
#[derive(Debug, Clone)]
pub struct Slot {
    pub step: String,
    pub index: Option<u32>,
    pub attempt: u32,
    pub kind: StepKind,
}

/// An invocation written out, ready to be sent alone or in a batch.
#[derive(Debug)]
pub struct Prepared {
    pub slot: Slot,
    pub json: Vec<u8>,
}

/// Writes out an invocation; an invocation that cannot be written (never
/// for values the engine holds) is the attempt's failure.
pub fn prepare(kind: StepKind, body: &Invocation<'_>) -> Result<Prepared, Box<Event>> {
    let slot = Slot {
        step: body.step.to_string(),
        index: body.index,
        attempt: body.attempt,
        kind,
    };
    match serde_json::to_vec(body) {
        Ok(json) => Ok(Prepared { slot, json }),
        Err(e) => Err(Box::new(failed(
            &slot,
            StepError::new(
                "BadInvocation",
                format!("the invocation cannot be written: {e}"),
            ),
            false,
        ))),
    }
}

/// POSTs `items` in one request to the binding's `batch_url`, as
/// `{"invocations": [...]}`; the answer gives one result per invocation, in
/// order: `{"results": [{"status": 202}, {"status": 200, "output": …},
/// {"status": 503, "error": {"code", "message"}}, …]}`, each read as the
/// answer to that invocation alone would be. A failure of the whole request
/// (refused, unreachable, a timeout, a non-2xx answer, an answer that is not
/// one result per invocation) is each invocation's failure.
pub async fn invoke_batch(
    way: &Way,
    config: &HttpConfig,
    batch_url: &str,
    items: &[Prepared],
) -> Vec<Option<Event>> {
    let size: usize = items.iter().map(|i| i.json.len() + 1).sum();
    let mut bytes = Vec::with_capacity(size + 20);
    bytes.extend_from_slice(b"{\"invocations\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        bytes.extend_from_slice(&item.json);
    }
    bytes.extend_from_slice(b"]}");
    let limit = way.max_answer_bytes.saturating_mul(items.len() as u64);
    let answer = post(way, config, batch_url, None, bytes, limit).await;
    let whole = |f: Failure| items.iter().map(|i| Some(f.event(&i.slot))).collect();
    let (status, text) = match answer {
        Ok(a) => a,
        Err(f) => return whole(f),
    };
    if !status.is_success() {
        return items
            .iter()
            .map(|i| outcome(batch_url, &i.slot, status, Body::Bytes(text.clone())))
            .collect();
    }
    let results = match serde_json::from_slice::<BatchAnswer>(&text) {
        Ok(a) if a.results.len() == items.len() => a.results,
        Ok(a) => {
            return whole(Failure::new(
                BAD_BATCH_ANSWER,
                format!(
                    "POST {batch_url}: {} results for {} invocations: answer one result per invocation, in order",
                    a.results.len(),
                    items.len()
                ),
                false,
            ));
        }
        Err(e) => {
            return whole(Failure::new(
                BAD_BATCH_ANSWER,
                format!("POST {batch_url}: the answer is not {{\"results\": [...]}}: {e}"),
                false,
            ));
        }
    };
    items
        .iter()
        .zip(results)
        .map(|(i, r)| match StatusCode::from_u16(r.status) {
            Ok(status) => {
                let body = Body::Read {
                    output: r.output,
                    error: r.error,
                };
                outcome(batch_url, &i.slot, status, body)
            }
            Err(_) => Some(
                Failure::new(
                    BAD_BATCH_ANSWER,
                    format!("POST {batch_url}: {} is not an HTTP status", r.status),
                    false,
                )
                .event(&i.slot),
            ),
        })
        .collect()
}

/// The step error code of a batch answer that is not one result per invocation.
pub const BAD_BATCH_ANSWER: &str = "BadBatchAnswer";

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<ItemAnswer>,
}

/// One invocation's result in a batch answer.
#[derive(Deserialize)]
struct ItemAnswer {
    status: u16,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// Why a request brought no answer to read.
struct Failure {
    error: StepError,
    retryable: bool,
}

impl Failure {
    fn new(code: &str, message: String, retryable: bool) -> Self {
        Self {
            error: StepError::new(code, message),
            retryable,
        }
    }

    fn event(&self, slot: &Slot) -> Event {
        failed(slot, self.error.clone(), self.retryable)
    }
}

/// The attempt's failure, as the event that reports it.
fn failed(slot: &Slot, error: StepError, retryable: bool) -> Event {
    Event::new(
        format!("http:{}", slot_id(&slot.step, slot.index, slot.attempt)),
        EventKind::StepFailed {
            node: slot.step.clone(),
            index: slot.index,
            attempt: slot.attempt,
            error,
            retryable,
        },
    )
}

/// POSTs `bytes` of JSON to `url` with the binding's headers and timeout,
/// where the egress policy allows; the answer's status and body, read up to
/// `max_answer` bytes, redirects not followed.
async fn post(
    way: &Way,
    config: &HttpConfig,
    url: &str,
    idempotency_key: Option<&str>,
    bytes: Vec<u8>,
    max_answer: u64,
) -> Result<(StatusCode, Vec<u8>), Failure> {
    if let Err(refused) = way.policy.check_url(url) {
        return Err(Failure::new(
            egress::REFUSED,
            format!("POST {url}: {refused}"),
            false,
        ));
    }
    let mut req = way
        .client
        .post(url)
        .timeout(Duration::from_millis(config.timeout_ms))
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(key) = idempotency_key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = match with_headers(req.body(bytes), config).send().await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(refused) = egress::refusal(&e) {
                return Err(Failure::new(
                    egress::REFUSED,
                    format!("POST {url}: {refused}"),
                    false,
                ));
            }
            let code = if e.is_timeout() {
                "Timeout"
            } else {
                "Unreachable"
            };
            return Err(Failure::new(code, format!("POST {url}: {e}"), true));
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
        return Err(Failure::new(
            &format!("Http{}", status.as_u16()),
            format!(
                "POST {url}: {status}: redirects are not followed (this one to {to}): bind the step to the URL that answers"
            ),
            false,
        ));
    }
    match read_bounded(resp, max_answer).await {
        Ok(text) => Ok((status, text)),
        Err(Read::TooLarge(size)) => {
            let size = match size {
                Some(n) => format!("{n} bytes"),
                None => format!("more than {max_answer} bytes"),
            };
            Err(Failure::new(
                ANSWER_TOO_LARGE,
                format!(
                    "POST {url}: the answer is {size}, larger than the limit of {max_answer} bytes (`eflow serve --max-answer-bytes`): return references (URIs), not data"
                ),
                false,
            ))
        }
        Err(Read::Failed(e)) => {
            let code = if e.is_timeout() {
                "Timeout"
            } else {
                "Unreachable"
            };
            Err(Failure::new(
                code,
                format!("POST {url}: reading the answer: {e}"),
                true,
            ))
        }
    }
}

/// The body of an answer to one invocation: its bytes, or, for one result
/// of a batch answer, its fields as the batch answer was read.
enum Body {
    Bytes(Vec<u8>),
    Read {
        output: Option<Value>,
        error: Option<Value>,
    },
}

impl Body {
    /// A call step's output: the body's `output` if it has one, else the
    /// whole body (null if it is not JSON).
    fn output(self) -> Value {
        match self {
            Body::Bytes(text) => match serde_json::from_slice::<Value>(&text) {
                Ok(Value::Object(mut m)) if m.contains_key("output") => {
                    m.remove("output").unwrap_or(Value::Null)
                }
                Ok(v) => v,
                Err(_) => Value::Null,
            },
            Body::Read { output, .. } => output.unwrap_or(Value::Null),
        }
    }

    /// A failure's code and message: the remote system's `error` if it gave
    /// one with a code, else `Http<status>` and the start of the body.
    fn error(&self, status: StatusCode) -> (String, String) {
        let given = match self {
            Body::Bytes(text) => serde_json::from_slice::<Value>(text)
                .ok()
                .and_then(|v| remote_error(v.get("error")?)),
            Body::Read { error, .. } => error.as_ref().and_then(remote_error),
        };
        given.unwrap_or_else(|| {
            let text = match self {
                Body::Bytes(text) => String::from_utf8_lossy(text).into_owned(),
                Body::Read { error: Some(e), .. } => e.to_string(),
                Body::Read { error: None, .. } => String::new(),
            };
            (
                format!("Http{}", status.as_u16()),
                text.chars().take(300).collect(),
            )
        })
    }
}

/// What an answer to one invocation means: `None` for a remote step
/// accepted (its result comes by callback), else the attempt's result.
fn outcome(url: &str, slot: &Slot, status: StatusCode, body: Body) -> Option<Event> {
    if status.is_success() {
        return (slot.kind == StepKind::Call).then(|| {
            Event::new(
                format!("http:{}", slot_id(&slot.step, slot.index, slot.attempt)),
                EventKind::StepCompleted {
                    node: slot.step.clone(),
                    index: slot.index,
                    attempt: slot.attempt,
                    output: body.output(),
                    output_ref: None,
                },
            )
        });
    }
    let (code, message) = body.error(status);
    let retryable = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
    Some(failed(
        slot,
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
fn remote_error(e: &Value) -> Option<(String, String)> {
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
        let bytes = |t: &str| Body::Bytes(t.as_bytes().to_vec());
        let status = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            bytes(r#"{"error": {"code": "OutOfMemory", "message": "48 GB"}}"#).error(status),
            ("OutOfMemory".into(), "48 GB".into())
        );
        assert_eq!(
            bytes(r#"{"error": {"code": "Busy"}}"#).error(status),
            ("Busy".into(), String::new())
        );
        assert_eq!(
            bytes("<html>bad gateway</html>").error(status),
            ("Http503".into(), "<html>bad gateway</html>".into())
        );
        let read = |e: Value| Body::Read {
            output: None,
            error: Some(e),
        };
        assert_eq!(
            read(json!({"code": "Busy", "message": "later"})).error(status),
            ("Busy".into(), "later".into())
        );
        assert_eq!(
            read(json!("no code")).error(status),
            ("Http503".into(), "\"no code\"".into())
        );
    }

    #[test]
    fn a_call_steps_output_is_its_outputs_field_or_the_whole_body() {
        let bytes = |t: &str| Body::Bytes(t.as_bytes().to_vec());
        assert_eq!(bytes(r#"{"output": 3}"#).output(), json!(3));
        assert_eq!(bytes(r#"{"auc": 0.9}"#).output(), json!({"auc": 0.9}));
        assert_eq!(bytes("not json").output(), Value::Null);
        let read = Body::Read {
            output: Some(json!([1])),
            error: None,
        };
        assert_eq!(read.output(), json!([1]));
    }
}
