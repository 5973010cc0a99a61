//! The outbox executor: carries out effects committed with the state that go
//! outside the worker's transaction, then deletes their outbox rows.
//!
//! Every row is carried out at least once: on start, every row left by a crash
//! is carried out again. That is safe because every delivery is idempotent (the
//! core refuses an event it has applied), child runs have deterministic ids,
//! registry entries are keyed by the invocation's idempotency key, and remote
//! systems receive the same `Idempotency-Key` header on every retry.
//!
//! A child start takes a place in its tenant's quota of active runs first
//! ([`Ledger::admit_child`]); when the tenant has none free, the start waits
//! here, its outbox row kept, until a run of the tenant ends. Waiting starts
//! hold no place among the effects being carried out, and a parent's
//! cancellation of a child still waiting drops the start.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eflow_core::{Event, EventKind};
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
use crate::quota::{ChildStart, Ledger};

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

/// What a value URL names: one of a tenant's values kept by reference, until
/// a time (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueClaim {
    pub tenant: String,
    pub hash: String,
    pub until: u64,
}

impl Stored for ValueClaim {}

/// How long a value URL given to a remote system can be read: a week from
/// the invocation (a retry gets a new one).
pub const VALUE_URL_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Signed with a prefix of its own, so that no callback token is a value
/// token or the other way round.
const VALUE_DOMAIN: &[u8] = b"eflow value url\n";

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

    /// A token for a value URL.
    pub fn sign_value(&self, claim: &ValueClaim) -> String {
        let payload = stored_json(claim);
        let tag = self
            .mac(&[VALUE_DOMAIN, &payload].concat())
            .finalize()
            .into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// What a value URL's token names, if the server signed it (expired or not).
    pub fn verify_value(&self, token: &str) -> Option<ValueClaim> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(&[VALUE_DOMAIN, &payload].concat())
            .verify_slice(&tag)
            .ok()?;
        serde_json::from_slice(&payload).ok()
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
    ledger: Arc<Ledger>,
    /// Children being created, with the cancellations of them that came
    /// meanwhile: carried out once the child exists, never before it.
    creating: std::sync::Mutex<HashMap<String, Vec<Outbound>>>,
    /// Invocations of bindings with a `batch_url`, sent many to a request.
    batches: Arc<super::batches::Batches>,
}

/// Child starts waiting for a place in their tenant's quota: per tenant, the
/// parents with starts waiting, served in turn; per parent, its starts in
/// the order they came.
#[derive(Default)]
struct Waiting {
    tenants: HashMap<String, VecDeque<String>>,
    parents: HashMap<String, VecDeque<Outbound>>,
    /// Child id → its parent, to find a start whose child was cancelled.
    children: HashMap<String, String>,
}

impl Waiting {
    fn push(&mut self, tenant: &str, parent: &str, child: &str, o: Outbound) {
        let starts = self.parents.entry(parent.to_string()).or_default();
        if starts.is_empty() {
            self.tenants
                .entry(tenant.to_string())
                .or_default()
                .push_back(parent.to_string());
        }
        starts.push_back(o);
        self.children.insert(child.to_string(), parent.to_string());
    }

    fn has_tenant(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    /// Takes out the waiting start of `child`, if it waits.
    fn remove_child(&mut self, child: &str) -> Option<Outbound> {
        let parent = self.children.remove(child)?;
        let starts = self.parents.get_mut(&parent)?;
        let at = starts.iter().position(|o| child_of(o) == Some(child))?;
        let o = starts.remove(at);
        if starts.is_empty() {
            self.parents.remove(&parent);
            for parents in self.tenants.values_mut() {
                parents.retain(|p| *p != parent);
            }
            self.tenants.retain(|_, parents| !parents.is_empty());
        }
        o
    }

    /// Takes out every waiting start of a tenant.
    fn remove_tenant(&mut self, tenant: &str) -> Vec<Outbound> {
        let mut out = Vec::new();
        for parent in self.tenants.remove(tenant).unwrap_or_default() {
            for o in self.parents.remove(&parent).unwrap_or_default() {
                if let Some(child) = child_of(&o) {
                    self.children.remove(child);
                }
                out.push(o);
            }
        }
        out
    }
}

/// The child a start creates, and its tenant and parent.
fn child_start(o: &Outbound) -> Option<(&str, &str, &str)> {
    match &o.item {
        OutboxItem::Create { meta, parent, .. } => {
            Some((meta.tenant.as_str(), parent.run.as_str(), meta.id.as_str()))
        }
        _ => None,
    }
}

fn child_of(o: &Outbound) -> Option<&str> {
    child_start(o).map(|(_, _, child)| child)
}

/// Outbox rows left by a crash or by the shard's previous owner, as the
/// executor takes them; an unreadable row is reported and deleted.
pub(super) async fn pending(engine: &Engine, rows: Vec<(i64, String, Vec<u8>)>) -> Vec<Outbound> {
    let mut out = Vec::with_capacity(rows.len());
    for (pos, run, bytes) in rows {
        match serde_json::from_slice::<OutboxItem>(&bytes) {
            Ok(item) => out.push(Outbound { pos, run, item }),
            Err(e) => {
                tracing::error!(pos, error = %e, "unreadable outbox row dropped");
                let _ = engine.send(&run, Input::OutboxDone(vec![pos])).await;
            }
        }
    }
    out
}

impl Executor {
    pub fn new(
        engine: Engine,
        egress: Egress,
        keys: CallbackKeys,
        clock: SharedClock,
        public_url: String,
        ledger: Arc<Ledger>,
    ) -> Self {
        Self {
            engine,
            egress,
            keys,
            clock,
            public_url,
            ledger,
            creating: std::sync::Mutex::default(),
            batches: Arc::default(),
        }
    }

    /// Carries out what arrives on `rx` until `shutdown`: effects committed
    /// by the workers, and those a shard's worker found in the outbox when
    /// its process took the shard ([`pending`]).
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<Outbound>, shutdown: CancellationToken) {
        let me = Arc::new(self);
        let limit = Limits {
            effects: Arc::new(Semaphore::new(CONCURRENCY)),
            cancels: Arc::new(Semaphore::new(CANCEL_CONCURRENCY)),
        };
        let mut waiting = Waiting::default();
        let ledger = me.ledger.clone();
        loop {
            // Rows in hand first: a cancellation of a waiting child, committed
            // with its parent's end, is seen before the places that end frees.
            tokio::select! {
                biased;
                x = rx.recv() => match x {
                    Some(o) => me.take(&limit, &mut waiting, o).await,
                    None => break,
                },
                () = ledger.freed().notified() => {
                    let tenants: Vec<String> = waiting.tenants.keys().cloned().collect();
                    for tenant in tenants {
                        me.start_waiting(&limit, &mut waiting, &tenant).await;
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// Carries out an outbox row, or keeps a child start waiting for a place
    /// in its tenant's quota.
    async fn take(self: &Arc<Self>, limit: &Limits, waiting: &mut Waiting, o: Outbound) {
        if let OutboxItem::Deliver { run, event } = &o.item
            && matches!(event.kind, EventKind::CancelRequested { .. })
            && let Some(start) = waiting.remove_child(run)
        {
            // The parent no longer needs a child that never started: neither
            // the start nor the cancellation is carried out.
            tracing::debug!(child = %run, "a waiting child start was cancelled");
            let _ = self
                .engine
                .send(&start.run, Input::OutboxDone(vec![start.pos]))
                .await;
            let _ = self
                .engine
                .send(&o.run, Input::OutboxDone(vec![o.pos]))
                .await;
            return;
        }
        let o = match self.defer_cancel(o) {
            Some(o) => o,
            None => return,
        };
        let Some((tenant, parent, child)) = child_start(&o) else {
            self.clone().spawn(limit, o).await;
            return;
        };
        let (tenant, parent, child) = (tenant.to_string(), parent.to_string(), child.to_string());
        // Behind the starts already waiting, in turn.
        waiting.push(&tenant, &parent, &child, o);
        self.start_waiting(limit, waiting, &tenant).await;
    }

    /// Starts the tenant's waiting children while it has places, one parent
    /// after the other.
    async fn start_waiting(self: &Arc<Self>, limit: &Limits, waiting: &mut Waiting, tenant: &str) {
        if !waiting.has_tenant(tenant) || !self.knows(tenant).await {
            // The tenant is gone (purged with its runs and outbox rows).
            for o in waiting.remove_tenant(tenant) {
                let _ = self
                    .engine
                    .send(&o.run, Input::OutboxDone(vec![o.pos]))
                    .await;
            }
            return;
        }
        loop {
            let Some(parents) = waiting.tenants.get_mut(tenant) else {
                return;
            };
            let mut admitted = None;
            for _ in 0..parents.len() {
                let Some(parent) = parents.pop_front() else {
                    break;
                };
                if self.ledger.admit_child(tenant, &parent) == ChildStart::Admitted {
                    admitted = Some(parent);
                    break;
                }
                parents.push_back(parent);
            }
            let Some(parent) = admitted else { return };
            let Some(starts) = waiting.parents.get_mut(&parent) else {
                continue;
            };
            let start = starts.pop_front();
            if starts.is_empty() {
                waiting.parents.remove(&parent);
                if waiting.tenants.get(tenant).is_some_and(VecDeque::is_empty) {
                    waiting.tenants.remove(tenant);
                }
            } else if let Some(parents) = waiting.tenants.get_mut(tenant) {
                parents.push_back(parent);
            }
            if let Some(o) = start {
                if let Some(child) = child_of(&o) {
                    waiting.children.remove(child);
                    self.creating().insert(child.to_string(), Vec::new());
                }
                self.clone().spawn(limit, o).await;
            }
        }
    }

    /// Whether the ledger knows the tenant's limit, reading its row if it
    /// does not yet; false when the tenant does not exist.
    async fn knows(&self, tenant: &str) -> bool {
        if self.ledger.knows(tenant) {
            return true;
        }
        loop {
            match self.engine.store().tenant(tenant).await {
                Ok(Some(row)) => {
                    self.ledger.learn(&row);
                    return true;
                }
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "cannot read a tenant's quota; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
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

    fn creating(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Outbound>>> {
        self.creating.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a cancellation of a child being created until it exists
    /// (else it would find no run and be dropped, and the child would run
    /// on); gives back every other row.
    fn defer_cancel(&self, o: Outbound) -> Option<Outbound> {
        if let OutboxItem::Deliver { run, event } = &o.item
            && matches!(event.kind, EventKind::CancelRequested { .. })
            && let Some(deferred) = self.creating().get_mut(run)
        {
            deferred.push(o);
            return None;
        }
        Some(o)
    }

    /// Carries out a row, then, for a child's creation, the cancellations
    /// of the child that came meanwhile.
    async fn carry_out(&self, o: Outbound) {
        let child = child_of(&o).map(str::to_string);
        self.carry_out_one(o).await;
        if let Some(child) = child {
            let deferred = self.creating().remove(&child).unwrap_or_default();
            for cancel in deferred {
                self.carry_out_one(cancel).await;
            }
        }
    }

    async fn carry_out_one(&self, o: Outbound) {
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
        self.engine.send(run, make(tx)).await?;
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
                let (reply, answer) = oneshot::channel();
                self.engine
                    .send(
                        &meta.id,
                        Input::Create(Creation {
                            meta: meta.clone(),
                            fresh: false,
                            flow: flow.clone(),
                            parent: Some(parent.clone()),
                            input: input.clone(),
                            input_refs: Default::default(),
                            outbox: pos,
                            reply: Some(reply),
                        }),
                    )
                    .await?;
                match answer.await.map_err(|_| Error::Stopped)? {
                    // A new child: its place is given back when it ends.
                    Ok(a) if a.changed => Ok(()),
                    // Created before, or refused: no new run took the place.
                    Ok(_)
                    | Err(Error::Rejected(_))
                    | Err(Error::NoSuchRun(_))
                    | Err(Error::Swept(_)) => {
                        self.ledger.finished(&meta.tenant, Some(&parent.run));
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
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
                        let (inputs, input_urls) = self.by_url(&a, config.max_inline_bytes).await?;
                        let mut body = self.invocation(&a, *kind);
                        body.inputs = &inputs;
                        body.input_urls = input_urls;
                        if config.batch_url.is_some() {
                            match http::prepare(*kind, &body) {
                                Ok(item) => self
                                    .batches
                                    .invoke(way, tenant, config, item)
                                    .await
                                    .map_err(|_| Error::Stopped)?,
                                Err(failed) => Some(*failed),
                            }
                        } else {
                            http::invoke(&way, config, *kind, &body).await
                        }
                    }
                    Outgoing::Registry(config) => {
                        Some(registry::invoke(&self.engine, config, &a, self.clock.now_ms()).await?)
                    }
                };
                match event {
                    Some(event) => self.complete(o, event).await,
                    // Accepted: the result comes by callback.
                    None => {
                        self.engine
                            .send(&o.run, Input::OutboxDone(vec![o.pos]))
                            .await?;
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
                self.engine
                    .send(&o.run, Input::OutboxDone(vec![o.pos]))
                    .await?;
                Ok(())
            }
        }
    }

    /// The attempt's inputs larger than `max_inline` bytes of JSON, kept as
    /// values of the run and given as signed URLs the remote system reads a
    /// page at a time; the others inline.
    async fn by_url<'a>(
        &self,
        a: &Attempt<'a>,
        max_inline: u64,
    ) -> Result<
        (
            Cow<'a, serde_json::Map<String, serde_json::Value>>,
            BTreeMap<String, http::ValueUrl>,
        ),
        Error,
    > {
        let large: Vec<&String> = a
            .inputs
            .iter()
            .filter(|(_, v)| eflow_core::state::encoded_size(*v) as u64 > max_inline)
            .map(|(k, _)| k)
            .collect();
        if large.is_empty() {
            return Ok((Cow::Borrowed(a.inputs), BTreeMap::new()));
        }
        let mut inline = a.inputs.clone();
        let mut urls = BTreeMap::new();
        for name in large {
            let Some(v) = inline.remove(name) else {
                continue;
            };
            let v = &v;
            let (r, body) = eflow_core::ValueRef::of(v);
            let now = self.clock.now_ms();
            self.engine
                .store()
                .put_value(a.tenant, Some(a.run), &r.hash, &body, now)
                .await?;
            let token = self.keys.sign_value(&ValueClaim {
                tenant: a.tenant.to_string(),
                hash: r.hash.clone(),
                until: now.saturating_add(VALUE_URL_TTL_MS),
            });
            urls.insert(
                name.clone(),
                http::ValueUrl {
                    url: format!(
                        "{}/v1/values/{token}",
                        self.public_url.trim_end_matches('/')
                    ),
                    hash: r.hash,
                    bytes: r.bytes,
                    items: v.as_array().map(|l| l.len() as u64),
                },
            );
        }
        Ok((Cow::Owned(inline), urls))
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
            input_urls: BTreeMap::new(),
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
