//! The outbox executor: carries out effects committed with the state that go
//! outside the worker's transaction, then deletes their outbox rows.
//!
//! Every row is carried out at least once: on start, every row left by a crash
//! is carried out again. That is safe because every delivery is idempotent (the
//! core refuses an event it has applied), child runs have deterministic ids,
//! registry entries are keyed by the invocation's idempotency key, and remote
//! systems receive the same `Idempotency-Key` header on every retry.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eflow_core::{Event, EventKind, StepError, slot_id};
use eflow_ir::StepKind;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::route::{Outbound, OutboxItem};
use super::{Creation, Delivery, Engine, Error, Input};
use crate::clock::SharedClock;
use crate::connectors::registry;

/// At most this many effects are carried out at once.
const CONCURRENCY: usize = 256;
/// And this many cancellations, besides.
const CANCEL_CONCURRENCY: usize = 32;

/// Places for effects being carried out.
struct Limits {
    effects: Arc<Semaphore>,
    cancels: Arc<Semaphore>,
}
const DEFAULT_HTTP_TIMEOUT_MS: u64 = 30_000;
/// Tries to tell a remote system of a cancellation before giving up.
const CANCEL_TRIES: u32 = 4;
/// The longest a cancellation request may take, whatever the binding's `timeout`.
const CANCEL_TIMEOUT_MS: u64 = 5_000;

/// What a callback token names: one attempt of one step of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackClaim {
    pub run: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub attempt: u32,
}

/// Signs and checks callback tokens (HMAC-SHA256 with the server's key), so a
/// callback is verified without a lookup and cannot name another attempt.
#[derive(Clone)]
pub struct CallbackKeys {
    key: Arc<Vec<u8>>,
}

impl std::fmt::Debug for CallbackKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackKeys(..)")
    }
}

impl CallbackKeys {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key: Arc::new(key) }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| {
            <Hmac<Sha256> as Mac>::new_from_slice(b"eflow").expect("any key length is accepted")
        });
        m.update(payload);
        m
    }

    pub fn sign(&self, claim: &CallbackClaim) -> String {
        let payload = serde_json::to_vec(claim).unwrap_or_default();
        let tag = self.mac(&payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    pub fn verify(&self, token: &str) -> Option<CallbackClaim> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(&payload).verify_slice(&tag).ok()?;
        serde_json::from_slice(&payload).ok()
    }
}

pub struct Executor {
    engine: Engine,
    http: reqwest::Client,
    keys: CallbackKeys,
    clock: SharedClock,
    public_url: String,
}

/// What was sent to a remote system.
#[derive(Debug, Serialize)]
struct Invocation<'a> {
    run: &'a str,
    tenant: &'a str,
    step: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    attempt: u32,
    contract: &'a str,
    inputs: &'a serde_json::Map<String, Value>,
    idempotency_key: &'a str,
    /// Absent for a synchronous call: the response is the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<String>,
}

impl Executor {
    pub fn new(
        engine: Engine,
        http: reqwest::Client,
        keys: CallbackKeys,
        clock: SharedClock,
        public_url: String,
    ) -> Self {
        Self {
            engine,
            http,
            keys,
            clock,
            public_url,
        }
    }

    pub async fn run(
        self,
        pending: Vec<(i64, String, Vec<u8>)>,
        mut rx: mpsc::UnboundedReceiver<Outbound>,
        shutdown: CancellationToken,
    ) {
        let me = Arc::new(self);
        let limit = Limits {
            effects: Arc::new(Semaphore::new(CONCURRENCY)),
            cancels: Arc::new(Semaphore::new(CANCEL_CONCURRENCY)),
        };
        if !pending.is_empty() {
            tracing::info!(
                effects = pending.len(),
                "carrying out effects left in the outbox"
            );
        }
        for (pos, run, bytes) in pending {
            match serde_json::from_slice::<OutboxItem>(&bytes) {
                Ok(item) => me.clone().spawn(&limit, Outbound { pos, run, item }).await,
                Err(e) => {
                    tracing::error!(pos, error = %e, "unreadable outbox row dropped");
                    let _ = me.engine.send(&run, Input::OutboxDone(vec![pos]));
                }
            }
        }
        loop {
            let next = tokio::select! {
                x = rx.recv() => x,
                () = shutdown.cancelled() => None,
            };
            let Some(o) = next else { break };
            me.clone().spawn(&limit, o).await;
        }
    }

    async fn spawn(self: Arc<Self>, limit: &Limits, o: Outbound) {
        if matches!(o.item, OutboxItem::Cancel { .. }) {
            // Cancellations wait for places of their own, in their own task:
            // never in the way of invocations.
            let cancels = limit.cancels.clone();
            tokio::spawn(async move {
                if let Ok(_permit) = cancels.acquire_owned().await {
                    self.carry_out(o).await;
                }
            });
            return;
        }
        let Ok(permit) = limit.effects.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            self.carry_out(o).await;
            drop(permit);
        });
    }

    async fn carry_out(&self, o: Outbound) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.try_once(&o).await {
                Ok(()) => return,
                Err(Error::Stopped) => return,
                Err(e) => {
                    tracing::warn!(run = %o.run, pos = o.pos, error = %e, "effect not carried out; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn send_and_wait(
        &self,
        run: &str,
        make: impl FnOnce(oneshot::Sender<Result<super::Applied, Error>>) -> Input,
    ) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.engine.send(run, make(tx))?;
        match rx.await.map_err(|_| Error::Stopped)? {
            Ok(_) | Err(Error::Rejected(_)) | Err(Error::NoSuchRun(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn try_once(&self, o: &Outbound) -> Result<(), Error> {
        let pos = Some(o.pos);
        match &o.item {
            OutboxItem::Create {
                meta,
                flow,
                parent,
                input,
            } => {
                self.send_and_wait(&meta.id, |reply| {
                    Input::Create(Creation {
                        meta: meta.clone(),
                        fresh: false,
                        flow: flow.clone(),
                        parent: Some(parent.clone()),
                        input: input.clone(),
                        outbox: pos,
                        reply: Some(reply),
                    })
                })
                .await
            }
            OutboxItem::Deliver { run, event } => {
                self.send_and_wait(run, |reply| {
                    Input::Deliver(Delivery {
                        run: run.clone(),
                        event: event.clone(),
                        timer: None,
                        outbox: pos,
                        reply: Some(reply),
                    })
                })
                .await
            }
            OutboxItem::Invoke { connector, .. } if connector == "registry" => {
                let event = self.register(o).await?;
                self.complete(o, event).await
            }
            OutboxItem::Invoke { .. } => self.invoke_http(o).await,
            OutboxItem::Cancel { .. } => {
                self.cancel_http(o).await;
                self.engine.send(&o.run, Input::OutboxDone(vec![o.pos]))?;
                Ok(())
            }
        }
    }

    /// POSTs `{run, tenant, step, index, attempt}` to the binding's
    /// `cancel_url`. Best effort: a few tries, then a warning; whatever the
    /// remote system does, a result it still sends for the attempt is refused
    /// as stale.
    async fn cancel_http(&self, o: &Outbound) {
        let OutboxItem::Cancel {
            tenant,
            config,
            node,
            index,
            attempt,
        } = &o.item
        else {
            return;
        };
        let Some(url) = config.get("cancel_url").and_then(Value::as_str) else {
            return;
        };
        // Short: a remote system slow to take cancellations must not hold the
        // executor's places that invocations need.
        let timeout = config
            .get("timeout")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_HTTP_TIMEOUT_MS)
            .min(CANCEL_TIMEOUT_MS);
        let mut body = json!({
            "run": o.run,
            "tenant": tenant,
            "step": node,
            "attempt": attempt,
        });
        if let Some(i) = index {
            body["index"] = json!(i);
        }
        let mut delay = Duration::from_millis(200);
        for tries in 1..=CANCEL_TRIES {
            let req = with_headers(
                self.http
                    .post(url)
                    .timeout(Duration::from_millis(timeout))
                    .json(&body),
                config,
            );
            let outcome = match req.send().await {
                Ok(r) if r.status().is_success() || r.status().is_client_error() => return,
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            if tries == CANCEL_TRIES {
                tracing::warn!(run = %o.run, step = %node, attempt, %outcome, "the remote system was not told of the cancellation");
                return;
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    async fn complete(&self, o: &Outbound, event: Event) -> Result<(), Error> {
        self.send_and_wait(&o.run, |reply| {
            Input::Deliver(Delivery {
                run: o.run.clone(),
                event,
                timer: None,
                outbox: Some(o.pos),
                reply: Some(reply),
            })
        })
        .await
    }

    async fn register(&self, o: &Outbound) -> Result<Event, Error> {
        let OutboxItem::Invoke {
            tenant,
            bundle,
            config,
            node,
            index,
            attempt,
            contract,
            inputs,
            key,
            ..
        } = &o.item
        else {
            return Err(Error::Stopped);
        };
        let deployed = self.engine.deployments().get(bundle).await?;
        let now = self.clock.now_ms();
        let kind = config
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("model")
            .to_string();
        // The contract's output type, and the types it names, from the flow that calls it.
        let flow = deployed
            .bundle
            .bundle()
            .flows
            .iter()
            .find(|f| f.contracts.contains_key(contract));
        let output_ty = flow.and_then(|f| f.contracts.get(contract)?.output.as_ref());
        let no_types = Default::default();
        let types = flow.map_or(&no_types, |f| &f.types);
        let result = registry::register(
            self.engine.store(),
            registry::Request {
                key,
                tenant,
                kind: &kind,
                run: &o.run,
                step: node,
                inputs,
                output: output_ty,
                types,
                now,
            },
        )
        .await?;
        let id = format!("registry:{key}");
        let event = match result {
            Ok(output) => Event::new(
                id,
                EventKind::StepCompleted {
                    node: node.clone(),
                    index: *index,
                    attempt: *attempt,
                    output,
                },
            ),
            Err(error) => Event::new(
                id,
                EventKind::StepFailed {
                    node: node.clone(),
                    index: *index,
                    attempt: *attempt,
                    error,
                    retryable: false,
                },
            ),
        };
        Ok(event)
    }

    async fn invoke_http(&self, o: &Outbound) -> Result<(), Error> {
        let OutboxItem::Invoke {
            tenant,
            config,
            node,
            index,
            attempt,
            contract,
            kind,
            inputs,
            key,
            ..
        } = &o.item
        else {
            return Err(Error::Stopped);
        };
        let url = config
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let timeout = config
            .get("timeout")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_HTTP_TIMEOUT_MS);
        let callback_url = (*kind != StepKind::Call).then(|| {
            let token = self.keys.sign(&CallbackClaim {
                run: o.run.clone(),
                node: node.clone(),
                index: *index,
                attempt: *attempt,
            });
            format!(
                "{}/v1/callbacks/{token}",
                self.public_url.trim_end_matches('/')
            )
        });
        let body = Invocation {
            run: &o.run,
            tenant,
            step: node,
            index: *index,
            attempt: *attempt,
            contract,
            inputs,
            idempotency_key: key,
            callback_url,
        };
        let req = with_headers(
            self.http
                .post(url)
                .timeout(Duration::from_millis(timeout))
                .header("Idempotency-Key", key.as_str())
                .json(&body),
            config,
        );
        let slot = slot_id(node, *index, *attempt);
        let failed = |error: StepError, retryable: bool| {
            Event::new(
                format!("http:{slot}"),
                EventKind::StepFailed {
                    node: node.clone(),
                    index: *index,
                    attempt: *attempt,
                    error,
                    retryable,
                },
            )
        };
        let event = match req.send().await {
            Err(e) => {
                let code = if e.is_timeout() {
                    "Timeout"
                } else {
                    "Unreachable"
                };
                Some(failed(
                    StepError::new(code, format!("POST {url}: {e}")),
                    true,
                ))
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    if *kind == StepKind::Call {
                        let output = serde_json::from_str::<Value>(&text)
                            .map(|v| match v {
                                Value::Object(mut m) if m.contains_key("output") => {
                                    m.remove("output").unwrap_or(Value::Null)
                                }
                                v => v,
                            })
                            .unwrap_or(Value::Null);
                        Some(Event::new(
                            format!("http:{slot}"),
                            EventKind::StepCompleted {
                                node: node.clone(),
                                index: *index,
                                attempt: *attempt,
                                output,
                            },
                        ))
                    } else {
                        None
                    }
                } else {
                    let (code, message) = remote_error(&text).unwrap_or_else(|| {
                        (
                            format!("Http{}", status.as_u16()),
                            text.chars().take(300).collect(),
                        )
                    });
                    let retryable = status.is_server_error()
                        || status.as_u16() == 429
                        || status.as_u16() == 408;
                    Some(failed(
                        StepError::new(code, format!("POST {url}: {status}: {message}")),
                        retryable,
                    ))
                }
            }
        };
        match event {
            Some(event) => self.complete(o, event).await,
            None => {
                self.engine.send(&o.run, Input::OutboxDone(vec![o.pos]))?;
                Ok(())
            }
        }
    }
}

/// The binding's extra `headers` on a request to its remote system.
fn with_headers(
    mut req: reqwest::RequestBuilder,
    config: &std::collections::BTreeMap<String, Value>,
) -> reqwest::RequestBuilder {
    if let Some(Value::Object(headers)) = config.get("headers") {
        for (k, v) in headers {
            if let Some(v) = v.as_str() {
                req = req.header(k.as_str(), v);
            }
        }
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
    fn callback_tokens_verify_only_unchanged() {
        let keys = CallbackKeys::new(b"secret".to_vec());
        let claim = CallbackClaim {
            run: "r1".into(),
            node: "train".into(),
            index: Some(2),
            attempt: 1,
        };
        let token = keys.sign(&claim);
        assert_eq!(keys.verify(&token), Some(claim));
        let other = CallbackKeys::new(b"other".to_vec());
        assert_eq!(other.verify(&token), None);
        let mut forged = token.clone();
        forged.replace_range(0..2, "ey");
        assert!(keys.verify(&forged).is_none() || forged == token);
        assert_eq!(keys.verify("garbage"), None);
    }
}
