//! The bus on NATS JetStream, for several processes on one PostgreSQL
//! database (`nats://HOST:PORT[?prefix=NAME]`; design in
//! `docs/design/0005-distributed-bus.md`).
//!
//! - **Inputs:** one work-queue stream per prefix (`PREFIX_in`), subject
//!   `PREFIX.in.SHARD`, and a durable pull consumer per shard (explicit ack,
//!   ack wait 5 s, a bounded number unacknowledged). A send returns once
//!   JetStream stored the input. A shard's inbox acknowledges its inputs only
//!   after the worker committed the batch they were in, marks what it holds
//!   in progress meanwhile so a long commit is not delivered again, and naks
//!   what it did not acknowledge when dropped, so the next inbox (here or in
//!   another process) gets it at once.
//! - **Request-reply:** the sender puts a core-NATS inbox subject in the
//!   `Eflow-Reply` header and awaits one answer there; the worker answers
//!   after its commit.
//! - **Events:** the store's log is the truth. A relay in each process
//!   publishes what the log holds past the stream's end to `PREFIX_events`
//!   (subject `PREFIX.events.TENANT`, message id `ev-POS`, so JetStream keeps
//!   one copy whichever relay sends it, and the previous position in a
//!   header), then tells every process (`PREFIX.committed`). A consumer reads
//!   the stream from its cursor; where the chain of previous positions
//!   breaks (data lost, a tenant purged) or the stream lacks what the store
//!   holds, it reads the store's log instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap, Subject};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Answer, Committed, Encoded, Error, Events, RunHead, Wire, read_log};
use crate::store::{EventRow, Store};

/// How long JetStream waits for an acknowledgement before it delivers an
/// input again.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How often an inbox tells JetStream it is still at work on what it holds.
const PROGRESS_EVERY: Duration = Duration::from_millis(1500);
/// Inputs of a shard delivered and not acknowledged, at most.
const MAX_ACK_PENDING: i64 = 4096;
/// Inputs an inbox asks for at once.
const PULL_BATCH: usize = 512;
/// How long a request for inputs waits at the server. Short: NATS 2.9 hands
/// an input given back (nak, ack wait) to a request whose inbox is gone and,
/// finding no one there, forgets that it delivered it once, so a dropped
/// inbox gives its inputs back only once its requests expired, and the count
/// of deliveries (what marks an input redelivered) stays true.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How long a sender waits for a worker's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Events the relay reads from the store's log at once.
const RELAY_BATCH: u32 = 512;
/// How long the event stream keeps an event: a consumer further behind reads
/// the store's log.
const EVENTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long an idle reader of the event stream is kept by the server.
const READER_IDLE: Duration = Duration::from_secs(300);
/// How long a consumer waits for the event stream before it reads the
/// store's log instead. A fetch whose server died (or stopped answering)
/// after the request was sent is never answered, and the client waits for
/// its end without a deadline of its own.
const READ_WAIT: Duration = Duration::from_secs(5);

const REPLY_HEADER: &str = "Eflow-Reply";
/// The bus handle a broadcast came from.
const FROM_HEADER: &str = "Eflow-From";
/// An event message's last position, and the position before its first event.
const POS_HEADER: &str = "Eflow-Pos";
const PREV_HEADER: &str = "Eflow-Prev";
/// How many events a message of the event stream holds; a message without
/// it (written by an older relay, one event a message) breaks the chain, and
/// the reader reads the store's log there.
const EVENTS_HEADER: &str = "Eflow-Events";
/// Bytes of events in one message of the event stream, at most (JetStream
/// refuses a message past its `max_payload`, 1 MiB by default). An event
/// larger than this alone is not relayed: readers find the chain broken
/// there and read it from the store's log.
const MESSAGE_BYTES: usize = 512 * 1024;

/// A `nats://` URL: the server, and the prefix of every stream and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Options {
    pub server: String,
    pub prefix: String,
}

impl Options {
    /// `nats://HOST:PORT[?prefix=NAME]`; the prefix (default `eflow`) is
    /// letters, digits, `-` and `_`: it names streams and subject tokens.
    pub(super) fn parse(url: &str) -> Result<Options, Error> {
        let bad = || Error::Url(url.to_string());
        let rest = url.strip_prefix("nats://").ok_or_else(bad)?;
        let (server, query) = match rest.split_once('?') {
            Some((s, q)) => (s, Some(q)),
            None => (rest, None),
        };
        if server.is_empty() || server.contains('/') {
            return Err(bad());
        }
        let mut prefix = "eflow".to_string();
        if let Some(query) = query {
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("prefix", p))
                        if !p.is_empty()
                            && p.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
                    {
                        prefix = p.to_string();
                    }
                    _ => return Err(bad()),
                }
            }
        }
        Ok(Options {
            server: server.to_string(),
            prefix,
        })
    }
}

fn nats(e: impl std::fmt::Display) -> Error {
    Error::Nats(e.to_string())
}

/// The inputs' [`Wire`] form with its codec, behind one object so the bus
/// handle needs no bound on its input type.
trait Codec<I>: Send + Sync {
    fn encode(&self, input: I) -> Result<Encoded, Error>;
    fn decode(&self, bytes: &[u8], answer: Option<Answer>, redelivered: bool) -> Result<I, Error>;
}

struct WireCodec<I: Wire>(I::Codec);

impl<I: Wire> Codec<I> for WireCodec<I> {
    fn encode(&self, input: I) -> Result<Encoded, Error> {
        input.encode(&self.0)
    }
    fn decode(&self, bytes: &[u8], answer: Option<Answer>, redelivered: bool) -> Result<I, Error> {
        I::decode(bytes, answer, redelivered, &self.0)
    }
}

pub struct NatsBus<I> {
    inner: Arc<Inner<I>>,
    events: Events,
}

impl<I> Clone for NatsBus<I> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            events: self.events.clone(),
        }
    }
}

impl<I> std::fmt::Debug for NatsBus<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("prefix", &self.inner.prefix)
            .field("shards", &self.inner.shards)
            .finish()
    }
}

struct Inner<I> {
    client: Client,
    js: jetstream::Context,
    prefix: String,
    shards: u32,
    codec: Arc<dyn Codec<I>>,
    /// Which shards' inboxes this handle has handed out.
    taken: Arc<Mutex<Vec<bool>>>,
    /// Held by a shard's pump until it gave back what its inbox held: the
    /// shard's next inbox here starts after, so it gets those first.
    pumps: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Names this handle's broadcasts, so its own listeners skip them.
    id: String,
}

impl<I: Send + 'static> NatsBus<I> {
    pub(super) async fn open(
        options: &Options,
        shards: u32,
        store: Store,
        codec: I::Codec,
    ) -> Result<NatsBus<I>, Error>
    where
        I: Wire,
    {
        let shards = shards.max(1);
        let client = async_nats::ConnectOptions::new()
            .name("eflow")
            .connection_timeout(Duration::from_secs(5))
            .connect(format!("nats://{}", options.server))
            .await
            .map_err(|e| Error::Nats(format!("cannot connect to {}: {e}", options.server)))?;
        let js = jetstream::new(client.clone());
        let prefix = options.prefix.clone();
        js.get_or_create_stream(stream::Config {
            name: format!("{prefix}_in"),
            subjects: vec![format!("{prefix}.in.*")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(nats)?;
        let events = NatsEvents::open(client.clone(), js.clone(), prefix.clone(), store).await?;
        Ok(NatsBus {
            inner: Arc::new(Inner {
                client,
                js,
                prefix,
                shards,
                codec: Arc::new(WireCodec::<I>(codec)),
                taken: Arc::new(Mutex::new(vec![false; shards as usize])),
                pumps: (0..shards).map(|_| Arc::default()).collect(),
                id: uuid::Uuid::new_v4().simple().to_string(),
            }),
            events: Events::Nats(events),
        })
    }

    pub(super) async fn broadcast(&self, topic: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let mut headers = HeaderMap::new();
        headers.insert(FROM_HEADER, self.inner.id.as_str());
        self.inner
            .client
            .publish_with_headers(
                format!("{}.broadcast.{topic}", self.inner.prefix),
                headers,
                bytes.into(),
            )
            .await
            .map_err(nats)
    }

    pub(super) async fn listen(&self, topic: &str) -> Result<mpsc::Receiver<Vec<u8>>, Error> {
        let mut sub = self
            .inner
            .client
            .subscribe(format!("{}.broadcast.{topic}", self.inner.prefix))
            .await
            .map_err(nats)?;
        let (tx, rx) = mpsc::channel(1024);
        let me = self.inner.id.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let from = m.headers.as_ref().and_then(|h| h.get(FROM_HEADER));
                if from.is_some_and(|f| f.as_str() == me) {
                    continue;
                }
                if tx.send(m.payload.to_vec()).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    pub(super) fn shards(&self) -> u32 {
        self.inner.shards
    }

    pub(super) fn events(&self) -> &Events {
        &self.events
    }

    pub(super) async fn send_to(&self, shard: u32, input: I) -> Result<(), Error> {
        if shard >= self.inner.shards {
            return Err(Error::NoShard(shard));
        }
        let Encoded { bytes, reply } = self.inner.codec.encode(input)?;
        let client = &self.inner.client;
        let mut headers = HeaderMap::new();
        let mut waiting = None;
        if let Some(fulfil) = reply {
            let inbox = client.new_inbox();
            let answers = client.subscribe(inbox.clone()).await.map_err(nats)?;
            headers.insert(REPLY_HEADER, inbox.as_str());
            waiting = Some((answers, fulfil));
        }
        let subject = format!("{}.in.{shard}", self.inner.prefix);
        self.inner
            .js
            .publish_with_headers(subject, headers, bytes.into())
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        if let Some((mut answers, fulfil)) = waiting {
            tokio::spawn(async move {
                let answer = match tokio::time::timeout(ANSWER_WAIT, answers.next()).await {
                    Ok(Some(m)) => Ok(m.payload.to_vec()),
                    Ok(None) => Err(Error::Nats(
                        "the connection closed before the answer came".into(),
                    )),
                    Err(_) => Err(Error::NoAnswer {
                        shard,
                        secs: ANSWER_WAIT.as_secs(),
                    }),
                };
                let _ = answers.unsubscribe().await;
                fulfil(answer).await;
            });
        }
        Ok(())
    }

    pub(super) async fn inbox(&self, shard: u32) -> Result<NatsInbox<I>, Error> {
        if shard >= self.inner.shards {
            return Err(Error::NoShard(shard));
        }
        let slot = Slot::take(self.inner.taken.clone(), shard)?;
        let pump = self.inner.pumps[shard as usize].clone().lock_owned().await;
        let prefix = &self.inner.prefix;
        let inputs = self
            .inner
            .js
            .get_stream(format!("{prefix}_in"))
            .await
            .map_err(nats)?;
        let name = format!("shard-{shard}");
        let consumer: PullConsumer = inputs
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{prefix}.in.{shard}"),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats)?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(nats)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let held = Held::default();
        let stop = CancellationToken::new();
        tokio::spawn(
            Pump {
                shard,
                client: self.inner.client.clone(),
                codec: self.inner.codec.clone(),
                held: held.clone(),
                tx,
            }
            .run(messages, stop.clone(), pump),
        );
        Ok(NatsInbox {
            rx,
            batch: Vec::new(),
            held,
            client: self.inner.client.clone(),
            stop,
            _slot: slot,
        })
    }
}

/// A shard's inbox handed out by one bus handle; free again on drop.
#[derive(Debug)]
struct Slot {
    taken: Arc<Mutex<Vec<bool>>>,
    shard: u32,
}

impl Slot {
    fn take(taken: Arc<Mutex<Vec<bool>>>, shard: u32) -> Result<Slot, Error> {
        {
            let mut t = taken.lock().unwrap_or_else(|p| p.into_inner());
            let slot = t.get_mut(shard as usize).ok_or(Error::NoShard(shard))?;
            if *slot {
                return Err(Error::Taken(shard));
            }
            *slot = true;
        }
        Ok(Slot { taken, shard })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = t.get_mut(self.shard as usize) {
            *slot = false;
        }
    }
}

/// The inputs an inbox holds and has not acknowledged (received, or handed
/// to the worker), by stream sequence, with the subject their ack goes to.
type Held = Arc<Mutex<HashMap<u64, Subject>>>;

fn lock(held: &Held) -> std::sync::MutexGuard<'_, HashMap<u64, Subject>> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where one shard's worker takes its inputs from, on NATS.
pub struct NatsInbox<I> {
    rx: mpsc::UnboundedReceiver<(u64, I)>,
    /// Handed to the worker since its last commit.
    batch: Vec<u64>,
    held: Held,
    client: Client,
    stop: CancellationToken,
    _slot: Slot,
}

impl<I> std::fmt::Debug for NatsInbox<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsInbox")
            .field("shard", &self._slot.shard)
            .field("batch", &self.batch.len())
            .finish()
    }
}

impl<I> NatsInbox<I> {
    pub(super) async fn recv(&mut self) -> Option<I> {
        if !self.batch.is_empty() {
            // The worker asks for a new batch: the last one was not committed.
            self.give_back().await;
        }
        let (seq, input) = self.rx.recv().await?;
        self.batch.push(seq);
        Some(input)
    }

    pub(super) fn try_recv(&mut self) -> Option<I> {
        let (seq, input) = self.rx.try_recv().ok()?;
        self.batch.push(seq);
        Some(input)
    }

    pub(super) async fn committed(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let subjects: Vec<Subject> = {
            let mut held = lock(&self.held);
            self.batch
                .drain(..)
                .filter_map(|s| held.remove(&s))
                .collect()
        };
        for s in subjects {
            // A lost ack is a redelivery, which the worker refuses or
            // repeats idempotently.
            let _ = self.client.publish(s, "+ACK".into()).await;
        }
        let _ = self.client.flush().await;
    }

    /// Gives back the uncommitted batch and what waits behind it, in stream
    /// order, so they come again in the order they were sent. The inputs
    /// waiting are dropped unanswered: their senders get the answer of
    /// their delivery to come.
    async fn give_back(&mut self) {
        let mut seqs = std::mem::take(&mut self.batch);
        while let Ok((seq, _)) = self.rx.try_recv() {
            seqs.push(seq);
        }
        seqs.sort_unstable();
        let subjects: Vec<Subject> = {
            let mut held = lock(&self.held);
            seqs.iter().filter_map(|s| held.remove(s)).collect()
        };
        for s in subjects {
            let _ = self.client.publish(s, "-NAK".into()).await;
        }
        let _ = self.client.flush().await;
    }
}

impl<I> Drop for NatsInbox<I> {
    fn drop(&mut self) {
        // The pump naks what is held, so another inbox gets it at once.
        self.stop.cancel();
    }
}

/// Takes a shard's inputs from its consumer into the inbox, and keeps what
/// the inbox holds marked in progress.
struct Pump<I> {
    shard: u32,
    client: Client,
    codec: Arc<dyn Codec<I>>,
    held: Held,
    tx: mpsc::UnboundedSender<(u64, I)>,
}

impl<I: Send + 'static> Pump<I> {
    async fn run(
        self,
        mut messages: pull::Stream,
        stop: CancellationToken,
        _pump: tokio::sync::OwnedMutexGuard<()>,
    ) {
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = progress.tick() => {
                    let subjects: Vec<Subject> = lock(&self.held).values().cloned().collect();
                    for s in subjects {
                        let _ = self.client.publish(s, "+WPI".into()).await;
                    }
                }
                m = messages.next() => match m {
                    None => break,
                    Some(Err(e)) => {
                        tracing::warn!(shard = self.shard, error = %e, "reading the shard's inputs from NATS failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some(Ok(m)) => {
                        if !self.take(m).await {
                            break;
                        }
                    }
                },
            }
        }
        drop(messages);
        let mut held: Vec<(u64, Subject)> = lock(&self.held).drain().collect();
        if held.is_empty() {
            return;
        }
        // Given back once this inbox's requests expired (see `PULL_EXPIRES`),
        // within the ack wait, in stream order: JetStream delivers what it
        // was given back first, in the order it got it.
        tokio::time::sleep(PULL_EXPIRES + Duration::from_millis(200)).await;
        held.sort_unstable_by_key(|(seq, _)| *seq);
        for (_, s) in held {
            let _ = self.client.publish(s, "-NAK".into()).await;
        }
        let _ = self.client.flush().await;
    }

    /// Decodes one input and hands it to the inbox; false once the inbox is gone.
    async fn take(&self, m: jetstream::Message) -> bool {
        let Some(ack) = m.reply.clone() else {
            return true;
        };
        let Ok((delivered, seq)) = m.info().map(|i| (i.delivered, i.stream_sequence)) else {
            return true;
        };
        let answer = m
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLY_HEADER))
            .map(|v| {
                let subject = v.as_str().to_string();
                let client = self.client.clone();
                Answer::new(move |bytes| {
                    Box::pin(async move {
                        let _ = client.publish(subject, bytes.into()).await;
                    })
                })
            });
        match self.codec.decode(&m.payload, answer, delivered > 1) {
            Ok(input) => {
                lock(&self.held).insert(seq, ack);
                self.tx.send((seq, input)).is_ok()
            }
            Err(e) => {
                // Never valid: delivering it again would not help.
                tracing::warn!(shard = self.shard, seq, error = %e, "an input on the bus cannot be decoded; dropped");
                let _ = self.client.publish(ack, "+TERM".into()).await;
                true
            }
        }
    }
}

/// The stream of committed events on NATS.
#[derive(Clone)]
pub struct NatsEvents {
    inner: Arc<EventsInner>,
}

impl std::fmt::Debug for NatsEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEvents")
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

struct EventsInner {
    store: Store,
    js: jetstream::Context,
    prefix: String,
    /// Woken at every commit any process announces.
    notify: Arc<Notify>,
    /// Wakes this process's relay.
    relay: Arc<Notify>,
    /// Where the last read ended, to go on from there.
    reader: tokio::sync::Mutex<Option<Reader>>,
    /// Stops the relay and the listener with the last handle.
    _tasks: DropGuard,
}

/// A reader of the event stream and the position of the last event it gave.
struct Reader {
    pos: i64,
    consumer: PullConsumer,
}

impl NatsEvents {
    async fn open(
        client: Client,
        js: jetstream::Context,
        prefix: String,
        store: Store,
    ) -> Result<NatsEvents, Error> {
        js.get_or_create_stream(stream::Config {
            name: format!("{prefix}_events"),
            subjects: vec![format!("{prefix}.events.>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: EVENTS_MAX_AGE,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(nats)?;
        let notify = Arc::new(Notify::new());
        let relay = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let mut notices = client
            .subscribe(format!("{prefix}.committed"))
            .await
            .map_err(nats)?;
        {
            let (notify, stop) = (notify.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        m = notices.next() => match m {
                            Some(_) => notify.notify_waiters(),
                            None => break,
                        },
                    }
                }
            });
        }
        // Events committed before this process started are the stream's or
        // the store's to give, not this relay's.
        let cursor = store.max_event_pos().await?;
        tokio::spawn(
            Relay {
                client,
                js: js.clone(),
                prefix: prefix.clone(),
                store: store.clone(),
                cursor,
                last_seq: None,
            }
            .run(relay.clone(), stop.clone()),
        );
        Ok(NatsEvents {
            inner: Arc::new(EventsInner {
                store,
                js,
                prefix,
                notify,
                relay,
                reader: tokio::sync::Mutex::new(None),
                _tasks: stop.drop_guard(),
            }),
        })
    }

    pub(super) fn committed(&self) {
        self.inner.notify.notify_waiters();
        self.inner.relay.notify_one();
    }

    pub(super) fn notify(&self) -> &Notify {
        &self.inner.notify
    }

    pub(super) fn store(&self) -> &Store {
        &self.inner.store
    }

    fn stream_name(&self) -> String {
        format!("{}_events", self.inner.prefix)
    }

    fn filter(&self) -> String {
        format!("{}.events.>", self.inner.prefix)
    }

    /// Drops every event from the stream (it holds no tenant's apart: its
    /// messages carry several runs' events each). Readers find the chain
    /// broken and read the store's log, which no longer holds the tenant's.
    pub(super) async fn forget_tenant(&self, _tenant: &str) -> Result<(), Error> {
        let stream = self
            .inner
            .js
            .get_stream(self.stream_name())
            .await
            .map_err(nats)?;
        stream.purge().await.map_err(nats)?;
        Ok(())
    }

    pub(super) async fn after(&self, cursor: i64, limit: u32) -> Result<Vec<Committed>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut reader = self.inner.reader.lock().await;
        let read = tokio::time::timeout(READ_WAIT, self.read_stream(&mut reader, cursor, limit))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Nats(format!(
                    "no answer from NATS in {} s",
                    READ_WAIT.as_secs()
                )))
            });
        match read {
            Ok(Some(batch)) if !batch.is_empty() => return Ok(batch),
            Ok(Some(_)) => {
                // Nothing new on the stream: is the store ahead of it (a
                // commit not relayed yet, or lost by NATS)? The reader stays
                // where it is: what the store gives now, it skips later.
                if self.inner.store.max_event_pos().await? <= cursor {
                    return Ok(Vec::new());
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event stream; reading the store's log");
                self.drop_reader(&mut reader).await;
            }
        }
        // The stream lacks what follows the cursor: the store's log has it.
        read_log(&self.inner.store, cursor, limit).await
    }

    /// Up to `limit` events after `cursor` from the stream; `None` where the
    /// stream's chain breaks right after the cursor.
    async fn read_stream(
        &self,
        reader: &mut Option<Reader>,
        cursor: i64,
        limit: u32,
    ) -> Result<Option<Vec<Committed>>, Error> {
        // A reader at or before the cursor goes on (skipping what the
        // consumer has); one past it, or none, starts at the cursor.
        if reader.as_ref().is_none_or(|r| r.pos > cursor) {
            self.drop_reader(reader).await;
            let start = self.locate(cursor).await?;
            let stream = self
                .inner
                .js
                .get_stream(self.stream_name())
                .await
                .map_err(nats)?;
            let consumer = stream
                .create_consumer(pull::Config {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    ack_policy: AckPolicy::None,
                    filter_subject: self.filter(),
                    inactive_threshold: READER_IDLE,
                    ..Default::default()
                })
                .await
                .map_err(nats)?;
            *reader = Some(Reader {
                pos: cursor,
                consumer,
            });
        }
        let Some(r) = reader.as_mut() else {
            return Ok(Some(Vec::new()));
        };
        // A message holds up to `RELAY_BATCH` events: a few messages are
        // enough for `limit` events under load.
        let mut messages = r
            .consumer
            .fetch()
            .max_messages((limit as usize).div_ceil(16).clamp(1, 64))
            .messages()
            .await
            .map_err(nats)?;
        let mut out = Vec::new();
        let mut expected = cursor;
        let mut broken = false;
        'messages: while let Some(m) = messages.next().await {
            let m = m.map_err(nats)?;
            let (pos, prev) = positions(m.headers.as_ref())?;
            r.pos = r.pos.max(pos);
            if pos <= expected {
                // Given already (from the store's log).
                continue;
            }
            let count = m
                .headers
                .as_ref()
                .and_then(|h| h.get(EVENTS_HEADER))
                .and_then(|v| v.as_str().parse::<usize>().ok());
            let Some(count) = count.filter(|_| prev <= expected) else {
                broken = true;
                break;
            };
            let events = decode_events(&m.payload)?;
            if events.len() != count {
                return Err(Error::Wire(format!(
                    "an event message holds {} events where its header says {count}",
                    events.len()
                )));
            }
            // The message holds every event of the log in (prev, pos]; what
            // is at or before the cursor was given already.
            for c in events {
                if c.event.pos <= expected {
                    continue;
                }
                if out.len() >= limit as usize {
                    // The reader is past the cursor now: the next read
                    // starts again at the cursor.
                    break 'messages;
                }
                expected = c.event.pos;
                out.push(c);
            }
            expected = pos;
        }
        if broken {
            // The reader went past the break: start again from the cursor next time.
            self.drop_reader(reader).await;
            return Ok(if out.is_empty() { None } else { Some(out) });
        }
        Ok(Some(out))
    }

    /// Deletes the reader's consumer, rather than leave it to the server's
    /// idle timeout.
    async fn drop_reader(&self, reader: &mut Option<Reader>) {
        if let Some(r) = reader.take() {
            let name = r.consumer.cached_info().name.clone();
            if let Ok(stream) = self.inner.js.get_stream_no_info(self.stream_name()).await {
                let _ = stream.delete_consumer(&name).await;
            }
        }
    }

    /// The stream sequence to read from for the events after `cursor`: the
    /// first message past it (positions grow with sequences), or the next
    /// sequence to come.
    async fn locate(&self, cursor: i64) -> Result<u64, Error> {
        let stream = self
            .inner
            .js
            .get_stream(self.stream_name())
            .await
            .map_err(nats)?;
        let state = stream.cached_info().state.clone();
        if state.messages == 0 {
            return Ok(state.last_sequence + 1);
        }
        let filter = self.filter();
        let (mut lo, mut hi) = (state.first_sequence, state.last_sequence + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match stream
                .raw_message_builder()
                .sequence(mid)
                .next_by_subject(filter.clone())
                .send()
                .await
            {
                Ok(m) => {
                    let (pos, _) = positions(Some(&m.headers))?;
                    if pos > cursor {
                        hi = mid;
                    } else {
                        lo = m.sequence + 1;
                    }
                }
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                    hi = mid;
                }
                Err(e) => return Err(nats(e)),
            }
        }
        Ok(lo)
    }
}

/// A message's position and the position before it, from its headers.
fn positions(headers: Option<&HeaderMap>) -> Result<(i64, i64), Error> {
    let get = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .and_then(|v| v.as_str().parse::<i64>().ok())
            .ok_or_else(|| Error::Wire(format!("an event on the stream lacks its {name} header")))
    };
    Ok((get(POS_HEADER)?, get(PREV_HEADER)?))
}

/// Publishes what the store's log holds past the stream's end, many events
/// to a message. Each process's relay publishes with the stream's last
/// sequence it knows as the expected one, so when two relays race, one
/// message lands and the other relay reads the stream's end and goes on after
/// it: no event goes to the stream twice.
struct Relay {
    client: Client,
    js: jetstream::Context,
    prefix: String,
    store: Store,
    /// The position of the last event on the stream, as far as this relay knows.
    cursor: i64,
    /// The stream's last sequence, as far as this relay knows; `None` until
    /// read from the stream (at the start, and after another relay published).
    last_seq: Option<u64>,
}

impl Relay {
    async fn run(mut self, wake: Arc<Notify>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = wake.notified() => {}
            }
            if let Err(e) = self.publish().await {
                self.last_seq = None;
                tracing::warn!(error = %e, "the event relay could not publish; it tries again at the next commit");
            }
            // Every process's consumers read again: from the stream, or
            // from the store where the stream lacks something.
            let _ = self
                .client
                .publish(format!("{}.committed", self.prefix), "".into())
                .await;
        }
    }

    /// Reads the stream's end: its last sequence and the last position on it.
    async fn sync(&mut self) -> Result<u64, Error> {
        let stream = self
            .js
            .get_stream(format!("{}_events", self.prefix))
            .await
            .map_err(nats)?;
        let state = stream.cached_info().state.clone();
        if state.messages > 0 {
            let m = stream
                .get_raw_message(state.last_sequence)
                .await
                .map_err(nats)?;
            if let Ok((pos, _)) = positions(Some(&m.headers)) {
                self.cursor = self.cursor.max(pos);
            }
        }
        self.last_seq = Some(state.last_sequence);
        Ok(state.last_sequence)
    }

    async fn publish(&mut self) -> Result<(), Error> {
        loop {
            let mut expected = match self.last_seq {
                Some(seq) => seq,
                None => self.sync().await?,
            };
            let batch = read_log(&self.store, self.cursor, RELAY_BATCH).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let full = batch.len() == RELAY_BATCH as usize;
            let mut raced = false;
            for chunk in chunks(self.cursor, &batch)? {
                let Some(bytes) = chunk.bytes else {
                    // Too large for a message: readers read it from the log.
                    self.cursor = chunk.last;
                    continue;
                };
                let mut headers = HeaderMap::new();
                headers.insert(POS_HEADER, chunk.last.to_string().as_str());
                headers.insert(PREV_HEADER, chunk.prev.to_string().as_str());
                headers.insert(EVENTS_HEADER, chunk.events.to_string().as_str());
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                    expected.to_string().as_str(),
                );
                let ack = self
                    .js
                    .publish_with_headers(
                        format!("{}.events.all", self.prefix),
                        headers,
                        bytes.into(),
                    )
                    .await
                    .map_err(nats)?;
                match ack.await {
                    Ok(ack) => {
                        expected = ack.sequence;
                        self.last_seq = Some(ack.sequence);
                        self.cursor = chunk.last;
                    }
                    Err(e)
                        if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                    {
                        // Another relay published: read the stream's end again.
                        self.last_seq = None;
                        raced = true;
                        break;
                    }
                    Err(e) => return Err(nats(e)),
                }
            }
            if !full && !raced {
                return Ok(());
            }
        }
    }
}

/// One message's worth of a relay batch: the events in (prev, last], encoded
/// (`None` for one event too large for a message).
struct Chunk {
    prev: i64,
    last: i64,
    events: usize,
    bytes: Option<Vec<u8>>,
}

/// Splits a batch read after `cursor` into messages of at most `MESSAGE_BYTES`.
fn chunks(cursor: i64, batch: &[Committed]) -> Result<Vec<Chunk>, Error> {
    let mut out = Vec::new();
    // The last position covered by the chunks so far.
    let mut prev = cursor;
    let mut open: Option<Chunk> = None;
    for c in batch {
        let event = encode_event(c)?;
        let framed = 4 + event.len();
        let fits = |ch: &Chunk| ch.bytes.as_ref().map_or(0, Vec::len) + framed <= MESSAGE_BYTES;
        if open.as_ref().is_some_and(|ch| !fits(ch)) {
            out.extend(open.take());
        }
        if framed > MESSAGE_BYTES {
            out.push(Chunk {
                prev,
                last: c.event.pos,
                events: 1,
                bytes: None,
            });
            prev = c.event.pos;
            continue;
        }
        let ch = open.get_or_insert_with(|| Chunk {
            prev,
            last: prev,
            events: 0,
            bytes: Some(Vec::new()),
        });
        let n = u32::try_from(event.len()).map_err(|e| Error::Wire(e.to_string()))?;
        let bytes = ch.bytes.get_or_insert_with(Vec::new);
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.extend_from_slice(&event);
        ch.events += 1;
        ch.last = c.event.pos;
        prev = c.event.pos;
    }
    out.extend(open);
    Ok(out)
}

/// The events of one message: each its length (4 bytes, big-endian) and
/// its encoding (`encode_event`).
fn decode_events(mut bytes: &[u8]) -> Result<Vec<Committed>, Error> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::Wire("an event message is cut short".into()))?;
        let (event, rest) = rest
            .split_at_checked(u32::from_be_bytes(*len) as usize)
            .ok_or_else(|| Error::Wire("an event message is cut short".into()))?;
        out.push(decode_event(event)?);
        bytes = rest;
    }
    Ok(out)
}

/// What an event's message holds before its body and its run's final state.
#[derive(serde::Serialize, serde::Deserialize)]
struct Frame {
    pos: i64,
    run: String,
    seq: u64,
    id: String,
    at: u64,
    status: String,
    body_len: usize,
    /// The run's head without its final state, which follows the body.
    head: Option<RunHead>,
    state_len: Option<usize>,
}

/// An event as a message: the frame's length (4 bytes, big-endian), the
/// frame (JSON), the body, the final state: bodies and states are JSON
/// already, carried as they are.
fn encode_event(c: &Committed) -> Result<Vec<u8>, Error> {
    let mut head = c.run.clone();
    let state = head.as_mut().and_then(|h| h.state.take());
    let e = &c.event;
    let frame = serde_json::to_vec(&Frame {
        pos: e.pos,
        run: e.run.clone(),
        seq: e.seq,
        id: e.id.clone(),
        at: e.at,
        status: e.status.clone(),
        body_len: e.body.len(),
        head,
        state_len: state.as_ref().map(Vec::len),
    })
    .map_err(|e| Error::Wire(e.to_string()))?;
    let frame_len = u32::try_from(frame.len()).map_err(|e| Error::Wire(e.to_string()))?;
    let mut out =
        Vec::with_capacity(4 + frame.len() + e.body.len() + state.as_ref().map_or(0, Vec::len));
    out.extend_from_slice(&frame_len.to_be_bytes());
    out.extend_from_slice(&frame);
    out.extend_from_slice(&e.body);
    if let Some(s) = &state {
        out.extend_from_slice(s);
    }
    Ok(out)
}

fn decode_event(bytes: &[u8]) -> Result<Committed, Error> {
    let bad = |what: &str| Error::Wire(format!("an event on the stream is malformed: {what}"));
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("too short"))?;
    let len = u32::from_be_bytes(*len) as usize;
    let (frame, rest) = rest.split_at_checked(len).ok_or_else(|| bad("frame"))?;
    let frame: Frame = serde_json::from_slice(frame).map_err(|e| bad(&e.to_string()))?;
    let (body, rest) = rest
        .split_at_checked(frame.body_len)
        .ok_or_else(|| bad("body"))?;
    let mut head = frame.head;
    match (frame.state_len, head.as_mut()) {
        (Some(n), Some(h)) if rest.len() == n => h.state = Some(rest.to_vec()),
        (None, _) if rest.is_empty() => {}
        _ => return Err(bad("state")),
    }
    Ok(Committed {
        event: EventRow {
            pos: frame.pos,
            run: frame.run,
            seq: frame.seq,
            id: frame.id,
            at: frame.at,
            status: frame.status,
            body: body.to_vec(),
        },
        run: head,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = Options::parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(
            (o.server.as_str(), o.prefix.as_str()),
            ("127.0.0.1:4222", "eflow")
        );
        let o = Options::parse("nats://h:1?prefix=t_1-a").unwrap();
        assert_eq!(o.prefix, "t_1-a");
        for bad in [
            "nats://",
            "nats://h:1?prefix=",
            "nats://h:1?prefix=a.b",
            "nats://h:1?prefix=a>",
            "nats://h:1?other=1",
            "nats://h:1/x",
        ] {
            assert!(Options::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_event_round_trips_as_a_message() {
        let head = RunHead {
            tenant: "acme".into(),
            flow: "Train".into(),
            version: "v1".into(),
            parent: None,
            bundle: "b".into(),
            schedule: Some("s".into()),
            key: Some("k".into()),
            created_at: 3,
            state: Some(br#"{"x":1}"#.to_vec()),
            error_code: None,
            failed_step: None,
        };
        let event = EventRow {
            pos: 9,
            run: "r".into(),
            seq: 0,
            id: "e".into(),
            at: 5,
            status: "succeeded".into(),
            body: br#"{"type":"started"}"#.to_vec(),
        };
        for run in [
            Some(head.clone()),
            Some(RunHead {
                state: None,
                ..head
            }),
            None,
        ] {
            let c = Committed {
                event: event.clone(),
                run,
            };
            assert_eq!(decode_event(&encode_event(&c).unwrap()).unwrap(), c);
        }
        let bytes = encode_event(&Committed { event, run: None }).unwrap();
        for n in 0..bytes.len() {
            assert!(decode_event(&bytes[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn a_batch_goes_in_messages_that_cover_the_log_without_holes() {
        let event = |pos: i64, body: usize| Committed {
            event: EventRow {
                pos,
                run: format!("r{pos}"),
                seq: 0,
                id: format!("e{pos}"),
                at: 1,
                status: "running".into(),
                body: vec![b'x'; body],
            },
            run: None,
        };
        let small: Vec<Committed> = [4, 7, 9].map(|p| event(p, 10)).into();
        let one = chunks(2, &small).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].prev, one[0].last, one[0].events), (2, 9, 3));
        assert_eq!(
            decode_events(one[0].bytes.as_ref().unwrap()).unwrap(),
            small
        );
        // An event too large for a message is left out, with its position
        // between the chunks' positions: a reader sees the chain break.
        let mixed = vec![event(4, 10), event(7, MESSAGE_BYTES), event(9, 10)];
        let three = chunks(2, &mixed).unwrap();
        let spans: Vec<_> = three
            .iter()
            .map(|c| (c.prev, c.last, c.events, c.bytes.is_some()))
            .collect();
        assert_eq!(spans, [(2, 4, 1, true), (4, 7, 1, false), (7, 9, 1, true)]);
        // Many middling events split by size, each message within the limit.
        let many: Vec<Committed> = (1..=40).map(|p| event(p, MESSAGE_BYTES / 8)).collect();
        let split = chunks(0, &many).unwrap();
        assert!(split.len() > 1);
        let mut prev = 0;
        let mut back = Vec::new();
        for c in &split {
            assert_eq!(c.prev, prev);
            let bytes = c.bytes.as_ref().unwrap();
            assert!(bytes.len() <= MESSAGE_BYTES);
            back.extend(decode_events(bytes).unwrap());
            prev = c.last;
        }
        assert_eq!(prev, 40);
        assert_eq!(back, many);
        let bytes = one[0].bytes.as_ref().unwrap();
        // A message cut short is refused, or (cut between two events) gives
        // fewer events than its `Eflow-Events` header says, which the reader checks.
        for n in 1..bytes.len() {
            assert!(
                decode_events(&bytes[..n]).map_or(true, |v| v.len() < 3),
                "cut at {n}"
            );
        }
    }
}
