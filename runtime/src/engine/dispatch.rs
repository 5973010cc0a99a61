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
use eflow_core::Event;
use eflow_ir::StepKind;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::route::{Outbound, OutboxItem, Outgoing};
use super::{Creation, Delivery, Engine, Error, Input, Stored, stored_json};
use crate::clock::SharedClock;
use crate::connectors::{Attempt, http, registry};
use crate::egress::Egress;

/// At most this many effects are carried out at once.
const CONCURRENCY: usize = 256;
/// And this many cancellations, besides.
const CANCEL_CONCURRENCY: usize = 32;

/// Places for effects being carried out.
struct Limits {
    effects: Arc<Semaphore>,
    cancels: Arc<Semaphore>,
}

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

impl Stored for CallbackClaim {}

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
        let payload = stored_json(claim);
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
    egress: Egress,
    keys: CallbackKeys,
    clock: SharedClock,
    public_url: String,
}

impl Executor {
    pub fn new(
        engine: Engine,
        egress: Egress,
        keys: CallbackKeys,
        clock: SharedClock,
        public_url: String,
    ) -> Self {
        Self {
            engine,
            egress,
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
        let tenant = match &o.item {
            OutboxItem::Invoke { tenant, .. } | OutboxItem::Cancel { tenant, .. } => {
                Some(tenant.as_str())
            }
            OutboxItem::Create { meta, .. } => Some(meta.tenant.as_str()),
            // Its run's worker refuses it if the run's tenant is being purged.
            OutboxItem::Deliver { .. } => None,
        };
        loop {
            // A purge deletes the row: nothing of the tenant is carried out.
            if tenant.is_some_and(|t| self.engine.is_stopped(t)) {
                return;
            }
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
            OutboxItem::Invoke {
                tenant,
                bundle,
                connector,
                node,
                index,
                attempt,
                contract,
                kind,
                inputs,
                key,
            } => {
                let a = Attempt {
                    run: &o.run,
                    tenant,
                    bundle,
                    node,
                    index: *index,
                    attempt: *attempt,
                    contract,
                    inputs,
                    key,
                };
                let event = match connector {
                    Outgoing::Http(config) => {
                        let way = self.egress.way(tenant).await?;
                        http::invoke(&way, config, *kind, &self.invocation(&a, *kind)).await
                    }
                    Outgoing::Registry(config) => {
                        Some(registry::invoke(&self.engine, config, &a, self.clock.now_ms()).await?)
                    }
                };
                match event {
                    Some(event) => self.complete(o, event).await,
                    // Accepted: the result comes by callback.
                    None => {
                        self.engine.send(&o.run, Input::OutboxDone(vec![o.pos]))?;
                        Ok(())
                    }
                }
            }
            OutboxItem::Cancel {
                tenant,
                http: config,
                node,
                index,
                attempt,
            } => {
                let c = http::Cancellation {
                    run: &o.run,
                    tenant,
                    step: node,
                    index: *index,
                    attempt: *attempt,
                };
                let way = self.egress.way(tenant).await?;
                http::cancel(&way, config, &c).await;
                self.engine.send(&o.run, Input::OutboxDone(vec![o.pos]))?;
                Ok(())
            }
        }
    }

    /// What an `http` remote system is sent for an attempt; a remote step's
    /// carries the signed URL its result comes back to.
    fn invocation<'a>(&self, a: &Attempt<'a>, kind: StepKind) -> http::Invocation<'a> {
        let callback_url = (kind != StepKind::Call).then(|| {
            let token = self.keys.sign(&CallbackClaim {
                run: a.run.to_string(),
                node: a.node.to_string(),
                index: a.index,
                attempt: a.attempt,
            });
            format!(
                "{}/v1/callbacks/{token}",
                self.public_url.trim_end_matches('/')
            )
        });
        http::Invocation {
            run: a.run,
            tenant: a.tenant,
            step: a.node,
            index: a.index,
            attempt: a.attempt,
            contract: a.contract,
            inputs: a.inputs,
            idempotency_key: a.key,
            callback_url,
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
