//! A shard worker: takes a batch of inputs, applies them, commits once, then
//! answers and hands on the effects.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use eflow_core::apply::{as_logged, refuse_oversized};
use eflow_core::{EffectKind, Event, EventKind, Rejection, Run, RunStatus, Values, apply};
use lru::LruCache;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Inbox;
use super::route::{After, Outbound, RouteCx};
use super::stored_json;
use super::{
    Applied, Creation, Delivery, Deployed, Engine, Error, Finished, Input, Options, Reply,
};
use crate::clock::SharedClock;
use crate::store::{self, Commit, EventWrite, RunMeta, RunWrite};

/// A run as the worker holds it, with the joined lists its state refers to
/// that a transition has needed so far. The state is shared with the
/// answers to callers ([`Applied`]), never copied for them.
struct Held {
    meta: RunMeta,
    deployed: Arc<Deployed>,
    run: Arc<Run>,
    values: Values,
    /// Changed by the batch being made (always false in the cache).
    dirty: bool,
}

pub struct Worker {
    shard: u32,
    lease: i64,
    batch: usize,
    engine: Engine,
    clock: SharedClock,
    cache: LruCache<String, Held>,
    /// The batch's runs, kept between batches for its allocation.
    spare: HashMap<String, Held>,
    finished: mpsc::UnboundedSender<Finished>,
    dispatch: mpsc::UnboundedSender<Outbound>,
}

pub fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Created => "created",
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// How a batch ended.
enum Outcome {
    Committed,
    /// Not written: its inputs come again (NATS redelivers them; local
    /// senders were told it failed).
    Failed,
    /// Refused: another process holds the shard's lease now.
    Fenced,
}

/// One batch in the making.
#[derive(Default)]
struct Batch {
    held: HashMap<String, Held>,
    /// Runs changed in this batch, in first-change order.
    dirty: Vec<String>,
    commit: Commit,
    after: Vec<After>,
    replies: Vec<(Reply, Result<Applied, Error>)>,
    /// Tenants to stop, answered once this batch is committed.
    stops: Vec<(String, tokio::sync::oneshot::Sender<()>)>,
    transitions: u64,
    rejected: u64,
    /// Why an input was neither applied nor refused (the store did not
    /// answer a read it needed): on a bus that delivers again, the whole
    /// batch is then given back to come again, as after a failed commit.
    /// Committed without it, the input would be acknowledged and lost, and
    /// its outbox row (a child's result for its parent) carried out again
    /// only by the shard's next owner.
    unsure: Option<String>,
}

impl Batch {
    /// An input could not be applied because of `e`: its sender is told;
    /// when the store failed to answer, the batch is given back.
    fn not_applied(&mut self, reply: Option<Reply>, e: Error) {
        if matches!(e, Error::Store(store::Error::Db(_))) && self.unsure.is_none() {
            self.unsure = Some(e.to_string());
        }
        if let Some(reply) = reply {
            self.replies.push((reply, Err(e)));
        }
    }
}

impl Worker {
    pub fn new(
        shard: u32,
        lease: i64,
        options: &Options,
        engine: Engine,
        clock: SharedClock,
        finished: mpsc::UnboundedSender<Finished>,
        dispatch: mpsc::UnboundedSender<Outbound>,
    ) -> Self {
        Self {
            shard,
            lease,
            batch: options.batch.max(1),
            engine,
            clock,
            cache: LruCache::new(
                NonZeroUsize::new(options.cache_runs.max(1)).unwrap_or(NonZeroUsize::MIN),
            ),
            spare: HashMap::new(),
            finished,
            dispatch,
        }
    }

    pub async fn run(mut self, mut rx: Inbox, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                x = rx.recv() => x,
                () = shutdown.cancelled() => None,
            };
            let Some(first) = first else { break };
            let mut inputs = vec![first];
            while inputs.len() < self.batch {
                match rx.try_recv() {
                    Some(x) => inputs.push(x),
                    None => break,
                }
            }
            match self.process(inputs, rx.redelivers()).await {
                Outcome::Committed => rx.committed().await,
                Outcome::Failed => {}
                Outcome::Fenced => {
                    tracing::warn!(
                        shard = self.shard,
                        "this process no longer holds the shard's lease: its worker stops"
                    );
                    break;
                }
            }
        }
        tracing::debug!(shard = self.shard, "worker stopped");
    }

    async fn load(&mut self, b: &mut Batch, id: &str) -> Result<Option<()>, Error> {
        if b.held.contains_key(id) {
            return Ok(Some(()));
        }
        // Taken out of the cache, not copied: it goes back once the batch
        // is committed, and a batch that fails leaves it to be read again.
        if let Some(h) = self.cache.pop(id) {
            if self.engine.is_stopped(&h.meta.tenant) {
                return Ok(None);
            }
            b.held.insert(id.to_string(), h);
            return Ok(Some(()));
        }
        let Some((meta, _status, state)) = self.engine.store().load_run(id).await? else {
            return Ok(None);
        };
        // A run of a tenant being purged is gone already, as far as inputs go.
        if self.engine.is_stopped(&meta.tenant) {
            return Ok(None);
        }
        let run: Run = serde_json::from_slice(&state).map_err(|e| {
            Error::Store(crate::store::Error::Corrupt {
                table: "runs",
                message: format!("run {id}: {e}"),
            })
        })?;
        let deployed = self.engine.deployments().get(&meta.bundle).await?;
        b.held.insert(
            id.to_string(),
            Held {
                meta,
                deployed,
                run: Arc::new(run),
                values: Values::default(),
                dirty: false,
            },
        );
        Ok(Some(()))
    }

    /// Applies and commits one batch. `redelivers`: the inputs of a batch
    /// given back come again.
    async fn process(&mut self, inputs: Vec<Input>, redelivers: bool) -> Outcome {
        if let Err(e) = self.engine.stop_gone_tenants(&inputs).await {
            // Unsure whether a start's tenant still exists: the batch comes
            // again, as after a failed commit.
            tracing::error!(shard = self.shard, error = %e, "cannot read the tenants of a batch's starts; the batch is retried by its senders");
            return Outcome::Failed;
        }
        let now = self.clock.now_ms();
        let mut b = Batch {
            held: std::mem::take(&mut self.spare),
            ..Batch::default()
        };
        b.held.reserve(inputs.len());
        for input in inputs {
            match input {
                Input::OutboxDone(v) => b.commit.outbox_deleted.extend(v),
                Input::StopTenant { tenant, reply } => {
                    // In this process too (the purge may be another's):
                    // from here on nothing of the tenant is applied here.
                    self.engine.mark_stopped(&tenant, true);
                    b.stops.push((tenant, reply));
                }
                Input::ResumeTenant { tenant, reply } => {
                    self.engine.mark_stopped(&tenant, false);
                    let _ = reply.send(());
                }
                Input::Create(c) => self.create(&mut b, c, now).await,
                Input::Deliver(d) => self.deliver(&mut b, d, now).await,
            }
        }
        if let Some(msg) = b.unsure.take().filter(|_| redelivers) {
            tracing::error!(shard = self.shard, error = %msg, "cannot read the store to apply an input; the batch is retried by its senders");
            self.give_back(b, &msg);
            return Outcome::Failed;
        }
        for id in &b.dirty {
            let h = &b.held[id];
            b.commit.runs.push(RunWrite {
                meta: h.meta.clone(),
                status: status_name(h.run.status),
                updated_at: now,
                state: h.run.encode(),
            });
        }
        if !b.commit.is_empty() {
            b.commit.lease = Some((self.shard, self.lease));
            let bytes: usize = b.commit.runs.iter().map(|r| r.state.len()).sum::<usize>()
                + b.commit.events.iter().map(|e| e.body.len()).sum::<usize>()
                + b.commit.timers.iter().map(|t| t.event.len()).sum::<usize>()
                + b.commit.outbox.iter().map(|o| o.2.len()).sum::<usize>();
            let began = std::time::Instant::now();
            let committed = self.engine.store().commit(&b.commit).await;
            self.engine.stats().commit_seconds.observe(began.elapsed());
            if let Err(e) = committed {
                tracing::error!(shard = self.shard, error = %e, "commit failed; the batch is retried by its senders");
                self.give_back(b, &e.to_string());
                // Another worker owns this shard now: stop applying its inputs.
                let fenced = matches!(e, crate::store::Error::LeaseLost { .. });
                if fenced {
                    let stats = self.engine.stats();
                    stats.fenced_commits.fetch_add(1, Ordering::Relaxed);
                }
                return if fenced {
                    Outcome::Fenced
                } else {
                    Outcome::Failed
                };
            }
            let stats = self.engine.stats();
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .bytes_written
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        let stats = self.engine.stats();
        stats
            .transitions
            .fetch_add(b.transitions, Ordering::Relaxed);
        stats.rejected.fetch_add(b.rejected, Ordering::Relaxed);
        for (id, mut h) in b.held.drain() {
            if !h.run.status.is_finished() {
                h.dirty = false;
                self.cache.put(id, h);
            }
        }
        self.spare = b.held;
        for (reply, result) in b.replies {
            let _ = reply.send(result);
        }
        self.stop(b.stops);
        self.engine.bus().committed();
        for a in b.after {
            match a {
                After::Inject {
                    run,
                    timer,
                    due_at,
                    event,
                } => {
                    let delivery = Input::Deliver(Delivery {
                        run: run.clone(),
                        event,
                        timer: Some(timer),
                        outbox: None,
                        reply: None,
                    });
                    if due_at <= now {
                        let _ = self.engine.send(&run, delivery).await;
                    } else {
                        let engine = self.engine.clone();
                        let wait = self.clock.sleep_until(due_at);
                        tokio::spawn(async move {
                            wait.await;
                            let _ = engine.send(&run, delivery).await;
                        });
                    }
                }
                After::Dispatch(o) => {
                    let _ = self.dispatch.send(o);
                }
                After::Finished(f) => {
                    self.engine.stats().finished.fetch_add(1, Ordering::Relaxed);
                    let _ = self.finished.send(f);
                }
                After::TimerSet { partition } => self.engine.timers_changed(partition),
            }
        }
        Outcome::Committed
    }

    /// Writes nothing of batch `b`: its runs are read again from the store
    /// next time, and every sender is told it failed (`msg`); its inputs
    /// come again (NATS redelivers what the inbox did not acknowledge).
    fn give_back(&mut self, mut b: Batch, msg: &str) {
        // The batch's runs are out of the cache: read again next time.
        b.held.clear();
        self.spare = std::mem::take(&mut b.held);
        for (reply, _) in b.replies {
            let _ = reply.send(Err(Error::Store(crate::store::Error::Conflict(
                msg.to_string(),
            ))));
        }
        self.stop(b.stops);
    }

    /// Drops the stopped tenants' runs from the cache and answers each stop:
    /// everything applied before it is committed (or was not written at all).
    fn stop(&mut self, stops: Vec<(String, tokio::sync::oneshot::Sender<()>)>) {
        for (tenant, reply) in stops {
            let gone: Vec<String> = self
                .cache
                .iter()
                .filter(|(_, h)| h.meta.tenant == tenant)
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                self.cache.pop(&id);
            }
            let _ = reply.send(());
        }
    }

    async fn create(&mut self, b: &mut Batch, c: Creation, now: u64) {
        let id = c.meta.id.clone();
        if self.engine.is_stopped(&c.meta.tenant) {
            if let Some(pos) = c.outbox {
                b.commit.outbox_deleted.push(pos);
            }
            if let Some(reply) = c.reply {
                b.replies
                    .push((reply, Err(Error::TenantStopped(c.meta.tenant.clone()))));
            }
            return;
        }
        let found = if c.fresh && !b.held.contains_key(&id) {
            Ok(None)
        } else {
            self.load(b, &id).await
        };
        match found {
            Ok(Some(())) => {
                // Created before (a redelivered start): nothing to do.
                if let Some(pos) = c.outbox {
                    b.commit.outbox_deleted.push(pos);
                }
                if let Some(reply) = c.reply {
                    let h = &b.held[&id];
                    b.replies.push((
                        reply,
                        Ok(Applied {
                            changed: false,
                            meta: h.meta.clone(),
                            state: Arc::clone(&h.run),
                            deployed: h.deployed.clone(),
                        }),
                    ));
                }
                return;
            }
            Ok(None) if c.fresh || store::is_fresh_id(&id) => {}
            Ok(None) => {
                // Finished and swept from the store since: a start again
                // (a client's retry, a schedule's or a child's redelivery)
                // starts nothing.
                match self.engine.store().swept_run(&id).await {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        if let Some(pos) = c.outbox {
                            b.commit.outbox_deleted.push(pos);
                        }
                        if let Some(reply) = c.reply {
                            b.replies.push((reply, Err(Error::Swept(id))));
                        }
                        return;
                    }
                    Err(e) => {
                        b.not_applied(c.reply, e.into());
                        return;
                    }
                }
            }
            Err(e) => {
                b.not_applied(c.reply, e);
                return;
            }
        }
        let deployed = match self.engine.deployments().get(&c.meta.bundle).await {
            Ok(d) => d,
            Err(e) => {
                b.not_applied(c.reply, e);
                return;
            }
        };
        let Some(flow) = deployed.bundle.flow(&c.flow) else {
            if let Some(reply) = c.reply {
                b.replies.push((
                    reply,
                    Err(Error::Bundle(
                        deployed.id.clone(),
                        format!("it has no flow `{}`", c.flow),
                    )),
                ));
            }
            return;
        };
        let run = Run::new(id.clone(), c.meta.tenant.clone(), flow.flow, c.parent);
        let event = Event::new(
            "start",
            EventKind::Started {
                input: c.input,
                input_refs: c.input_refs,
            },
        );
        let held = Held {
            meta: c.meta,
            deployed,
            run: Arc::new(run),
            values: Values::default(),
            dirty: false,
        };
        b.held.insert(id.clone(), held);
        self.apply_to(b, &id, event, None, c.outbox, c.reply, now)
            .await;
    }

    async fn deliver(&mut self, b: &mut Batch, d: Delivery, now: u64) {
        match self.load(b, &d.run).await {
            Ok(Some(())) => {
                self.apply_to(b, &d.run, d.event, d.timer, d.outbox, d.reply, now)
                    .await;
            }
            Ok(None) => {
                // The run is gone (purged): drop what pointed at it.
                if let Some(t) = d.timer {
                    b.commit.timers_deleted.push((d.run.clone(), t));
                }
                if let Some(pos) = d.outbox {
                    b.commit.outbox_deleted.push(pos);
                }
                if let Some(reply) = d.reply {
                    b.replies.push((reply, Err(Error::NoSuchRun(d.run))));
                }
            }
            Err(e) => b.not_applied(d.reply, e),
        }
    }

    /// Loads the joined lists of fan-outs `nodes` of run `id` into its `Held`.
    async fn load_results(&self, b: &mut Batch, id: &str, nodes: &[String]) -> Result<(), Error> {
        for node in nodes {
            let rows = self
                .engine
                .store()
                .fanout_results(id, node, None, u32::MAX)
                .await?;
            let list: Vec<serde_json::Value> = rows.into_iter().map(|(_, v)| v).collect();
            if let Some(h) = b.held.get_mut(id) {
                h.values
                    .results
                    .insert(node.clone(), Arc::new(serde_json::Value::Array(list)));
            }
        }
        Ok(())
    }

    /// Loads the values kept by reference with these hashes into run `id`'s
    /// `Held`. One its state names and the store lacks is corrupt data.
    async fn load_values(&self, b: &mut Batch, id: &str, hashes: &[String]) -> Result<(), Error> {
        if hashes.is_empty() {
            return Ok(());
        }
        let Some(tenant) = b.held.get(id).map(|h| h.meta.tenant.clone()) else {
            return Ok(());
        };
        let found = self.engine.store().values(&tenant, hashes).await?;
        if found.len() < hashes.len() {
            let missing: Vec<&String> = hashes
                .iter()
                .filter(|h| !found.iter().any(|(f, _)| f == *h))
                .collect();
            return Err(Error::Store(crate::store::Error::Corrupt {
                table: "stored_values",
                message: format!("run {id} refers to values the store lacks: {missing:?}"),
            }));
        }
        if let Some(h) = b.held.get_mut(id) {
            for (hash, v) in found {
                h.values.stored.insert(hash, Arc::new(v));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_to(
        &mut self,
        b: &mut Batch,
        id: &str,
        event: Event,
        timer: Option<String>,
        outbox: Option<i64>,
        reply: Option<Reply>,
        now: u64,
    ) {
        let Some(held) = b.held.get(id) else { return };
        // An output the state cannot hold is refused before any log holds it.
        let event = refuse_oversized(&held.deployed.bundle, &held.run, &event).unwrap_or(event);
        let mut result = apply(&held.deployed.bundle, &held.run, &event, now, &held.values);
        // A transition that reads joined lists not loaded yet: load them, then
        // apply the same event again (they never change once written). Each
        // round loads at least one more, so this ends.
        while let Err(Rejection::Needs { results, values }) = &result {
            let (results, values) = (results.clone(), values.clone());
            let loaded = match self.load_results(b, id, &results).await {
                Ok(()) => self.load_values(b, id, &values).await,
                Err(e) => Err(e),
            };
            if let Err(e) = loaded {
                b.not_applied(reply, e);
                return;
            }
            let Some(h) = b.held.get(id) else { return };
            result = apply(&h.deployed.bundle, &h.run, &event, now, &h.values);
        }
        // Applied or refused: what delivered the event is done with. (One
        // not applied keeps its timer row, fired again once its claim
        // lapses, and its outbox row.)
        if let Some(t) = timer {
            b.commit.timers_deleted.push((id.to_string(), t));
        }
        if let Some(pos) = outbox {
            b.commit.outbox_deleted.push(pos);
        }
        let Some(held) = b.held.get(id) else { return };
        match result {
            Ok(t) => {
                b.transitions += 1;
                let seq = held.run.seq;
                // Large values the run now keeps by reference are logged as
                // their references: stored once.
                let logged = stored_json(&*as_logged(&event, &t));
                let kept: Vec<(String, Arc<serde_json::Value>)> = t
                    .effects
                    .iter()
                    .filter_map(|e| match &e.kind {
                        EffectKind::StoreValue { value_ref, value } => {
                            Some((value_ref.hash.clone(), value.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                // `apply` found the flow, so this always does.
                if let Some(flow) = held.deployed.bundle.flow(&t.run.flow) {
                    let cx = RouteCx {
                        engine: &self.engine,
                        deployed: &held.deployed,
                        flow,
                        meta: &held.meta,
                        now,
                    };
                    cx.applied(&event, &mut b.commit);
                    for effect in t.effects {
                        cx.route(effect, &mut b.commit, &mut b.after);
                    }
                }
                b.commit.events.push(EventWrite {
                    run: id.to_string(),
                    seq,
                    id: event.id.clone(),
                    at: now,
                    status: status_name(t.run.status),
                    body: logged,
                });
                if let Some(h) = b.held.get_mut(id) {
                    h.run = Arc::new(t.run);
                    // What the transition kept by reference stays with the
                    // cached run: the next transitions read it without a load.
                    for v in &kept {
                        h.values.stored.insert(v.0.clone(), v.1.clone());
                    }
                }
                if let Some(h) = b.held.get_mut(id)
                    && !h.dirty
                {
                    h.dirty = true;
                    b.dirty.push(id.to_string());
                }
                if let (Some(reply), Some(h)) = (reply, b.held.get(id)) {
                    b.replies.push((
                        reply,
                        Ok(Applied {
                            changed: true,
                            meta: h.meta.clone(),
                            state: Arc::clone(&h.run),
                            deployed: h.deployed.clone(),
                        }),
                    ));
                }
            }
            Err(rejection) => {
                b.rejected += 1;
                tracing::debug!(run = %id, event = %event.id, %rejection, "event not applied");
                if held.run.status == RunStatus::Created && held.run.seq == 0 {
                    // A start that was refused: nothing of the run is kept.
                    b.held.remove(id);
                }
                if let Some(reply) = reply {
                    b.replies.push((reply, Err(Error::Rejected(rejection))));
                }
            }
        }
    }
}
