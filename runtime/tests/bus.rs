//! The bus's conformance suite: what every backend's bus must do, written
//! once against the `Bus` handle, one test per operation. `bus_test_suite!`
//! expands it for a backend from the function that opens one (with the store
//! whose commits it carries); adding a backend is one more line. The NATS
//! backend runs on the machine's NATS JetStream and PostgreSQL (a prefix and
//! a schema per test), and has tests of its own at the end: what only a bus
//! between processes does.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use eflow_runtime::bus::{self, Answer, Bus, Encoded, Fulfil, RunHead, Wire};
use eflow_runtime::store::{Commit, Durability, EventWrite, RunMeta, RunWrite, Store};
use serde_json::json;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(10);

/// The inputs of this suite: a marker, `run index * 10 + k`; with a reply
/// channel when the sender awaits an answer (the worker answers a number).
#[derive(Debug)]
struct Marker {
    n: i64,
    /// The bus delivered it before.
    redelivered: bool,
    reply: Option<oneshot::Sender<i64>>,
}

fn marker(n: i64) -> Marker {
    Marker {
        n,
        redelivered: false,
        reply: None,
    }
}

/// A marker is its number as text; its answer too.
impl Wire for Marker {
    type Codec = ();

    fn encode(self, _: &()) -> Result<Encoded, bus::Error> {
        let reply = self.reply.map(|tx| -> Fulfil {
            Box::new(move |answer| {
                Box::pin(async move {
                    let n = answer
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok()?.parse().ok());
                    if let Some(n) = n {
                        let _ = tx.send(n);
                    }
                })
            })
        });
        Ok(Encoded {
            bytes: self.n.to_string().into_bytes(),
            reply,
        })
    }

    fn decode(
        bytes: &[u8],
        answer: Option<Answer>,
        redelivered: bool,
        _: &(),
    ) -> Result<Self, bus::Error> {
        let n = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bus::Error::Wire("not a marker".into()))?;
        let reply = answer.map(|answer| {
            let (tx, rx) = oneshot::channel::<i64>();
            tokio::spawn(async move {
                if let Ok(n) = rx.await {
                    answer.send(n.to_string().into_bytes()).await;
                }
            });
            tx
        });
        Ok(Marker {
            n,
            redelivered,
            reply,
        })
    }
}

/// A bus with its store, and what to clean up after the test.
struct Fixture {
    bus: Bus<Marker>,
    store: Store,
    dir: Option<PathBuf>,
    _schema: Option<common::postgres::Schema>,
    nats: Option<common::nats::Prefix>,
}

impl Fixture {
    async fn close(self) {
        self.store.close().await;
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Another handle on the same bus and store: another process's.
    async fn second(&self) -> Bus<Marker> {
        let url = &self.nats.as_ref().expect("a NATS bus").url;
        Bus::open(url, 3, self.store.clone(), ()).await.unwrap()
    }
}

macro_rules! bus_test_suite {
    ($backend:ident, $open:ident) => {
        bus_test_suite!(@tests $backend, $open, [
            open_refuses_an_unknown_url,
            inbox_is_handed_out_once_at_a_time,
            send_reaches_the_runs_shard_in_order,
            an_input_waits_for_the_shards_next_worker,
            committed_wakes_a_waiting_consumer,
            events_after_a_cursor_in_commit_order,
            events_carry_the_run_head_on_first_and_final_events,
        ]);
    };
    (@tests $backend:ident, $open:ident, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(f) = super::$open().await else { return };
                    super::$test(f.bus.clone(), &f.store).await;
                    f.close().await;
                }
            )*
        }
    };
}

bus_test_suite!(local, open_local);
bus_test_suite!(nats, open_nats);

/// The in-process bus over three shards, its stream the log of a SQLite store.
async fn open_local() -> Option<Fixture> {
    let dir = common::temp_dir("bus");
    let url = format!("sqlite://{}", dir.join("eflow.db").display());
    let store = Store::open(&url, Durability::Full).await.unwrap();
    let bus = Bus::open("local", 3, store.clone(), ()).await.unwrap();
    Some(Fixture {
        bus,
        store,
        dir: Some(dir),
        _schema: None,
        nats: None,
    })
}

/// The NATS bus over three shards, with a prefix of its own, its stream
/// relayed from a PostgreSQL store in a schema of its own; `None` when either
/// server is unreachable outside CI.
async fn open_nats() -> Option<Fixture> {
    let schema = common::postgres::Schema::create("bus").await?;
    let prefix = common::nats::Prefix::create("bus").await?;
    let store = Store::open(&schema.url, Durability::Full).await.unwrap();
    let bus = Bus::open(&prefix.url, 3, store.clone(), ()).await.unwrap();
    Some(Fixture {
        bus,
        store,
        dir: None,
        _schema: Some(schema),
        nats: Some(prefix),
    })
}

async fn recv(inbox: &mut bus::Inbox<Marker>) -> Marker {
    tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("an input arrives")
        .expect("the bus is open")
}

fn state(error: Option<(&str, &str)>) -> Vec<u8> {
    let mut s = json!({"flow": "Train", "version": "sha256:01", "extra": [1, 2, 3]});
    if let Some((code, node)) = error {
        s["error"] = json!({"code": code, "message": "it broke", "node": node});
    }
    serde_json::to_vec(&s).unwrap()
}

fn commit_of(
    run: &str,
    seqs: std::ops::Range<u64>,
    status: &'static str,
    state: Vec<u8>,
) -> Commit {
    let mut c = Commit::default();
    c.runs.push(RunWrite {
        meta: RunMeta {
            id: run.into(),
            tenant: "acme".into(),
            bundle: "b-1".into(),
            schedule: None,
            parent: Some("p-1".into()),
            key: Some("model-7".into()),
            created_at: 7,
        },
        status,
        updated_at: 2,
        state,
    });
    for seq in seqs.clone() {
        c.events.push(EventWrite {
            run: run.into(),
            seq,
            id: format!("e{seq}"),
            at: 10 + seq,
            status: if seq + 1 == seqs.end {
                status
            } else {
                "running"
            },
            body: serde_json::to_vec(&json!({ "type": "started", "n": seq })).unwrap(),
        });
    }
    c
}

// ---- the suite ---------------------------------------------------------------

async fn open_refuses_an_unknown_url(bus: Bus<Marker>, store: &Store) {
    assert_eq!(bus.shards(), 3);
    for url in ["kafka://localhost", "nats://h:1?prefix=a.b", "nats:/h:1"] {
        let err = Bus::<Marker>::open(url, 3, store.clone(), ())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(url), "{text}");
        assert!(
            text.contains("local") && text.contains("nats://HOST:PORT[?prefix=NAME]"),
            "names both forms: {text}"
        );
    }
}

/// Every shard's inbox is held by one worker at a time, and handed out again
/// once dropped (an engine that lost a shard's lease and took it back).
async fn inbox_is_handed_out_once_at_a_time(bus: Bus<Marker>, _: &Store) {
    let shards = bus.shards();
    let mut inboxes = Vec::new();
    for s in 0..shards {
        inboxes.push(bus.inbox(s).await.unwrap());
    }
    assert!(
        matches!(bus.inbox(0).await, Err(bus::Error::Taken(0))),
        "an inbox is held by one worker at a time"
    );
    assert!(
        matches!(bus.inbox(shards).await, Err(bus::Error::NoShard(_))),
        "no inbox past the last shard"
    );
    drop(inboxes);
    bus.inbox(0).await.expect("handed out again once dropped");
}

/// A run's inputs reach its shard's inbox, in the order they were sent, and
/// no other inbox.
async fn send_reaches_the_runs_shard_in_order(bus: Bus<Marker>, _: &Store) {
    let shards = bus.shards();
    let mut inboxes = Vec::new();
    for s in 0..shards {
        inboxes.push(bus.inbox(s).await.unwrap());
    }
    let runs: Vec<String> = (0..20).map(|i| format!("run-{i}")).collect();
    for (i, run) in runs.iter().enumerate() {
        for k in 0..3 {
            bus.send(run, marker((i * 10 + k) as i64)).await.unwrap();
        }
    }
    let mut seen = vec![Vec::new(); runs.len()];
    for (shard, inbox) in inboxes.iter_mut().enumerate() {
        let expected = 3 * runs
            .iter()
            .filter(|r| bus.shard_of(r) == shard as u32)
            .count();
        for _ in 0..expected {
            let m = recv(inbox).await;
            let run = (m.n / 10) as usize;
            assert_eq!(
                bus.shard_of(&runs[run]),
                shard as u32,
                "{} arrived at shard {shard}",
                runs[run]
            );
            seen[run].push(m.n % 10);
            // A batch of one: the next `recv` begins the next batch.
            inbox.committed().await;
        }
    }
    for (run, got) in seen.iter().enumerate() {
        assert_eq!(got, &vec![0, 1, 2], "inputs of {} in order", runs[run]);
    }
    let used: std::collections::BTreeSet<u32> = runs.iter().map(|r| bus.shard_of(r)).collect();
    assert!(used.len() >= 2, "runs spread over shards: {used:?}");
}

/// An input sent while no worker holds its shard waits for the next one,
/// not lost in silence; one its worker committed is not given again; a
/// shard that does not exist is an error.
async fn an_input_waits_for_the_shards_next_worker(bus: Bus<Marker>, _: &Store) {
    let victim = (0..100)
        .map(|i| format!("run-{i}"))
        .find(|r| bus.shard_of(r) == 0)
        .expect("a run on shard 0");
    let mut inbox = bus.inbox(0).await.unwrap();
    bus.send(&victim, marker(1)).await.unwrap();
    assert_eq!(recv(&mut inbox).await.n, 1);
    inbox.committed().await;
    drop(inbox);
    bus.send(&victim, marker(2)).await.unwrap();
    let mut inbox = bus.inbox(0).await.unwrap();
    let m = recv(&mut inbox).await;
    assert_eq!(
        (m.n, m.redelivered),
        (2, false),
        "the committed input is not given again"
    );
    inbox.committed().await;
    assert!(matches!(
        bus.send_to(bus.shards(), marker(3)).await,
        Err(bus::Error::NoShard(_))
    ));
}

/// A consumer waiting for commits is woken by the commit signal, through the
/// bus or its stream.
async fn committed_wakes_a_waiting_consumer(bus: Bus<Marker>, store: &Store) {
    let events = bus.events().clone();
    let wake = events.next_commit();
    store
        .commit(&commit_of("ev-1", 0..1, "running", state(None)))
        .await
        .unwrap();
    bus.committed();
    tokio::time::timeout(WAIT, wake)
        .await
        .expect("a consumer waiting for commits is woken");
    let wake = events.next_commit();
    events.committed();
    tokio::time::timeout(WAIT, wake)
        .await
        .expect("woken by the stream's own signal");
}

/// Committed events reach a consumer from its cursor, in commit order.
async fn events_after_a_cursor_in_commit_order(bus: Bus<Marker>, store: &Store) {
    let events = bus.events();
    let before = events.head().await.unwrap();
    store
        .commit(&commit_of("ev-1", 0..3, "running", state(None)))
        .await
        .unwrap();
    let got = events.after(before, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|c| c.event.seq).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(got.windows(2).all(|w| w[0].event.pos < w[1].event.pos));
    assert_eq!(events.head().await.unwrap(), got[2].event.pos);
    // A cursor in the middle gives the rest; the limit is kept; at the head, nothing.
    assert_eq!(events.after(got[0].event.pos, 10).await.unwrap().len(), 2);
    assert_eq!(events.after(before, 1).await.unwrap().len(), 1);
    assert!(events.after(got[2].event.pos, 10).await.unwrap().is_empty());
}

/// A run's first event and the event that finishes it carry what a consumer
/// keeps of the run; the events between carry nothing; a purged run's carry nothing.
async fn events_carry_the_run_head_on_first_and_final_events(bus: Bus<Marker>, store: &Store) {
    let events = bus.events();
    store
        .commit(&commit_of("r-ok", 0..2, "running", state(None)))
        .await
        .unwrap();
    let mut c = commit_of("r-ok", 2..3, "failed", state(Some(("Timeout", "train"))));
    c.runs.clear();
    c.runs
        .extend(commit_of("r-ok", 0..0, "failed", state(Some(("Timeout", "train")))).runs);
    store.commit(&c).await.unwrap();
    let got = events.after(0, 10).await.unwrap();
    let head = RunHead {
        tenant: "acme".into(),
        flow: "Train".into(),
        version: "sha256:01".into(),
        parent: Some("p-1".into()),
        bundle: "b-1".into(),
        schedule: None,
        key: Some("model-7".into()),
        created_at: 7,
        state: None,
        error_code: Some("Timeout".into()),
        failed_step: Some("train".into()),
    };
    // The event that finishes the run carries its final state too.
    let last = RunHead {
        state: Some(state(Some(("Timeout", "train")))),
        ..head.clone()
    };
    assert_eq!(
        got.iter().map(|c| c.run.clone()).collect::<Vec<_>>(),
        vec![Some(head), None, Some(last)]
    );
    assert_eq!(got[2].event.status, "failed");

    // Purged from the engine before it was read: nothing to carry.
    store
        .create_tenant(&eflow_runtime::store::TenantRow {
            id: "gone".into(),
            created_at: 1,
            max_active_runs: None,
            max_starts_per_sec: None,
            allow_egress: Vec::new(),
            history_retention_ms: None,
        })
        .await
        .unwrap();
    let last = got[2].event.pos;
    let mut gone = commit_of("r-gone", 0..2, "running", state(None));
    gone.runs[0].meta.tenant = "gone".into();
    store.commit(&gone).await.unwrap();
    // The last event is not the tenant's: its positions are not reused.
    store
        .commit(&commit_of("r-ok-2", 0..1, "running", state(None)))
        .await
        .unwrap();
    common::purge(store, "gone").await;
    let after = events.after(last, 10).await.unwrap();
    assert_eq!(
        after
            .iter()
            .map(|c| c.event.run.as_str())
            .collect::<Vec<_>>(),
        ["r-ok-2"],
        "the purged run's events went with it"
    );
    let last = after[0].event.pos;
    // A run whose state cannot be read is an error, not an empty head.
    store
        .commit(&commit_of("r-bad", 0..1, "running", b"not json".to_vec()))
        .await
        .unwrap();
    assert!(events.after(last, 10).await.is_err());
}

// ---- NATS only: a bus between processes --------------------------------------

mod nats_only {
    use super::*;

    /// The test's event stream, once the relay (woken by a commit) put `n`
    /// events on it.
    async fn relayed(f: &Fixture, n: u64) -> async_nats::jetstream::stream::Stream {
        let prefix = f.nats.as_ref().unwrap();
        let js = prefix.jetstream().await;
        let mut stream = js
            .get_stream(format!("{}_events", prefix.name))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while stream.info().await.unwrap().state.messages < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay published"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stream.info().await.unwrap().state.messages, n);
        stream
    }

    /// A run on `shard` of a bus of three shards.
    fn run_on(bus: &Bus<Marker>, shard: u32) -> String {
        (0..100)
            .map(|i| format!("run-{i}"))
            .find(|r| bus.shard_of(r) == shard)
            .expect("a run on the shard")
    }

    /// Sent before any worker took the shard (its consumer does not exist
    /// yet): kept by JetStream and delivered to the first inbox.
    #[tokio::test]
    async fn an_input_sent_before_any_worker_is_delivered_to_the_first() {
        let Some(f) = open_nats().await else { return };
        f.bus.send(&run_on(&f.bus, 1), marker(7)).await.unwrap();
        let mut inbox = f.bus.inbox(1).await.unwrap();
        let m = recv(&mut inbox).await;
        assert_eq!((m.n, m.redelivered), (7, false));
        inbox.committed().await;
        drop(inbox);
        f.close().await;
    }

    /// An input whose batch was not committed is delivered again, marked so:
    /// to the next inbox when its inbox is dropped, and to the same inbox
    /// when the worker asks for the next batch without committing.
    #[tokio::test]
    async fn an_input_not_committed_is_delivered_again_marked_redelivered() {
        let Some(f) = open_nats().await else { return };
        let run = run_on(&f.bus, 0);
        let mut inbox = f.bus.inbox(0).await.unwrap();
        f.bus.send(&run, marker(1)).await.unwrap();
        let m = recv(&mut inbox).await;
        assert_eq!((m.n, m.redelivered), (1, false));
        drop(inbox);
        let mut inbox = f.bus.inbox(0).await.unwrap();
        let m = recv(&mut inbox).await;
        assert_eq!((m.n, m.redelivered), (1, true), "to the next inbox");
        // A commit that failed: the next batch begins with it again.
        let m = recv(&mut inbox).await;
        assert_eq!((m.n, m.redelivered), (1, true), "to the same inbox");
        inbox.committed().await;
        f.bus.send(&run, marker(2)).await.unwrap();
        let m = recv(&mut inbox).await;
        assert_eq!(
            (m.n, m.redelivered),
            (2, false),
            "the committed one is gone"
        );
        inbox.committed().await;
        drop(inbox);
        f.close().await;
    }

    /// A batch held longer than JetStream's ack wait (a long commit) is not
    /// given to another process's inbox meanwhile: the inbox marks it in
    /// progress. Once committed, nobody gets it.
    #[tokio::test]
    async fn a_batch_held_past_the_ack_wait_is_not_given_to_another_process() {
        let Some(f) = open_nats().await else { return };
        let other = f.second().await;
        let run = run_on(&f.bus, 2);
        let mut inbox = f.bus.inbox(2).await.unwrap();
        f.bus.send(&run, marker(1)).await.unwrap();
        assert_eq!(recv(&mut inbox).await.n, 1);
        // A second process pulling the same shard (as during a lease's
        // handover) while the batch is held for twice the ack wait of 5 s.
        let mut theirs = other.inbox(2).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(11), theirs.recv()).await;
        assert!(got.is_err(), "a held input went to another inbox: {got:?}");
        inbox.committed().await;
        f.bus.send(&run, marker(2)).await.unwrap();
        // Whichever inbox JetStream picks, it gets the new input, not the old.
        let m = tokio::select! {
            m = inbox.recv() => m,
            m = theirs.recv() => m,
        };
        assert_eq!(m.map(|m| m.n), Some(2));
        drop((inbox, theirs));
        f.close().await;
    }

    /// One process sends and awaits the answer; another's worker answers.
    #[tokio::test]
    async fn request_reply_across_two_processes() {
        let Some(f) = open_nats().await else { return };
        let sender = f.second().await;
        let run = run_on(&f.bus, 1);
        let mut inbox = f.bus.inbox(1).await.unwrap();
        let worker = tokio::spawn(async move {
            for _ in 0..2 {
                let m = recv(&mut inbox).await;
                inbox.committed().await;
                // Answered after the commit, as the engine's worker does.
                if let Some(reply) = m.reply {
                    let _ = reply.send(m.n * 100);
                }
            }
        });
        for n in [3, 4] {
            let (tx, rx) = oneshot::channel();
            sender
                .send(
                    &run,
                    Marker {
                        n,
                        redelivered: false,
                        reply: Some(tx),
                    },
                )
                .await
                .unwrap();
            let answer = tokio::time::timeout(WAIT, rx).await.expect("an answer");
            assert_eq!(answer.unwrap(), n * 100);
        }
        worker.await.unwrap();
        f.close().await;
    }

    /// Commits another process announces wake this process's consumers, and
    /// the events they read (from the stream) carry the runs' heads as the
    /// store's log does.
    #[tokio::test]
    async fn commits_of_another_process_wake_consumers_here() {
        let Some(f) = open_nats().await else { return };
        let other = f.second().await;
        let events = f.bus.events().clone();
        let before = events.head().await.unwrap();
        let wake = events.next_commit();
        f.store
            .commit(&commit_of("r-1", 0..2, "running", state(None)))
            .await
            .unwrap();
        f.store
            .commit(&commit_of("r-1", 2..3, "succeeded", state(None)))
            .await
            .unwrap();
        other.committed();
        tokio::time::timeout(WAIT, wake)
            .await
            .expect("woken by the other process's commit");
        // The relay published before it announced.
        let js = f.nats.as_ref().unwrap().jetstream().await;
        let mut stream = js
            .get_stream(format!("{}_events", f.nats.as_ref().unwrap().name))
            .await
            .unwrap();
        // One relay woken once: the three events in one message.
        assert_eq!(stream.info().await.unwrap().state.messages, 1);
        let got = events.after(before, 10).await.unwrap();
        let log = Bus::<Marker>::local(1, f.store.clone())
            .events()
            .after(before, 10)
            .await
            .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got, log, "as the store's log has them");
        assert!(got[2].run.as_ref().is_some_and(|h| h.state.is_some()));
        f.close().await;
    }

    /// Events the stream lost (deleted here) are read from the store's log:
    /// a consumer gets every event, in order.
    #[tokio::test]
    async fn a_gap_in_the_event_stream_is_refilled_from_the_store() {
        let Some(f) = open_nats().await else { return };
        let events = f.bus.events().clone();
        let before = events.head().await.unwrap();
        // Four commits, each relayed before the next: four messages.
        let mut stream = None;
        for seq in 0..4 {
            let wake = events.next_commit();
            f.store
                .commit(&commit_of("r-1", seq..seq + 1, "running", state(None)))
                .await
                .unwrap();
            f.bus.committed();
            tokio::time::timeout(WAIT, wake).await.unwrap();
            stream = Some(relayed(&f, seq + 1).await);
        }
        let mut stream = stream.unwrap();
        let first = stream.info().await.unwrap().state.first_sequence;
        assert!(stream.delete_message(first + 1).await.unwrap());
        assert!(stream.delete_message(first + 3).await.unwrap());
        let log = Bus::<Marker>::local(1, f.store.clone())
            .events()
            .after(before, 10)
            .await
            .unwrap();
        // A fresh consumer in another process, reading a few at a time.
        let other = f.second().await;
        let mut got = Vec::new();
        let mut cursor = before;
        while got.len() < 4 {
            let batch = other.events().after(cursor, 10).await.unwrap();
            assert!(!batch.is_empty(), "events after {cursor}");
            cursor = batch.last().unwrap().event.pos;
            got.extend(batch);
        }
        assert_eq!(got, log);
        f.close().await;
    }

    /// A tenant purged from the store leaves the event stream too: the
    /// stream is emptied (its messages hold several tenants' events), and
    /// consumers read what the store still holds from its log.
    #[tokio::test]
    async fn a_purged_tenant_leaves_the_event_stream() {
        let Some(f) = open_nats().await else { return };
        let before = f.bus.events().head().await.unwrap();
        let wake = f.bus.events().next_commit();
        f.store
            .commit(&commit_of("r-1", 0..2, "running", state(None)))
            .await
            .unwrap();
        f.bus.committed();
        tokio::time::timeout(WAIT, wake).await.unwrap();
        let mut stream = relayed(&f, 1).await;
        f.bus.events().forget_tenant("acme").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 0);
        let other = f.second().await;
        let got = other.events().after(before, 10).await.unwrap();
        let log = Bus::<Marker>::local(1, f.store.clone())
            .events()
            .after(before, 10)
            .await
            .unwrap();
        assert_eq!(got, log);
        assert_eq!(got.len(), 2);
        // The relay goes on after the purge.
        let wake = f.bus.events().next_commit();
        f.store
            .commit(&commit_of("r-1", 2..3, "running", state(None)))
            .await
            .unwrap();
        f.bus.committed();
        tokio::time::timeout(WAIT, wake).await.unwrap();
        relayed(&f, 1).await;
        f.close().await;
    }

    /// Two processes' relays, woken together after every commit, put each
    /// event on the stream once, its messages chained position to position.
    #[tokio::test]
    async fn two_relays_put_each_event_on_the_stream_once() {
        let Some(f) = open_nats().await else { return };
        let other = f.second().await;
        let before = f.bus.events().head().await.unwrap();
        for seq in 0..20 {
            f.store
                .commit(&commit_of("r-1", seq..seq + 1, "running", state(None)))
                .await
                .unwrap();
            f.bus.committed();
            other.committed();
        }
        // The log shows a commit once no commit in flight can fall behind it.
        let local = Bus::<Marker>::local(1, f.store.clone());
        let deadline = tokio::time::Instant::now() + WAIT;
        let last = loop {
            let log = local.events().after(before, 100).await.unwrap();
            if log.len() == 20 {
                break log.last().unwrap().event.pos;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log shows 20 events"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // A relay publishes what the log shows when woken: wake both again.
        f.bus.committed();
        other.committed();
        // Read the whole stream, message by message.
        let prefix = f.nats.as_ref().unwrap();
        let js = prefix.jetstream().await;
        let stream = js
            .get_stream(format!("{}_events", prefix.name))
            .await
            .unwrap();
        let header = |m: &async_nats::jetstream::message::StreamMessage, name: &str| -> i64 {
            m.headers
                .get(name)
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut stream = stream.clone();
            let info = stream.info().await.unwrap().state.clone();
            let mut chain = before;
            let mut events = 0;
            for seq in info.first_sequence..=info.last_sequence {
                let m = stream.get_raw_message(seq).await.unwrap();
                assert_eq!(
                    header(&m, "Eflow-Prev"),
                    chain,
                    "message {seq} follows the last"
                );
                chain = header(&m, "Eflow-Pos");
                events += header(&m, "Eflow-Events");
            }
            if chain == last {
                assert_eq!(events, 20, "each event once");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relays published"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f.close().await;
    }

    /// A NATS server of the test's own (`nats-server -js` on a free port),
    /// to stop: killed when dropped.
    struct OwnNats {
        child: std::process::Child,
        dir: PathBuf,
        url: String,
    }

    impl OwnNats {
        fn start() -> Option<OwnNats> {
            const SERVER: &str = "/usr/sbin/nats-server";
            if !std::path::Path::new(SERVER).exists() {
                return common::service_unreachable(
                    "nats-server",
                    SERVER,
                    "not installed",
                    "install nats-server",
                    "PATH",
                );
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let dir = common::temp_dir("bus-own-nats");
            let child = std::process::Command::new(SERVER)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(&dir)
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start nats-server");
            Some(OwnNats {
                child,
                dir,
                url: format!("nats://127.0.0.1:{port}?prefix=own"),
            })
        }

        fn signal(&self, sig: &str) {
            let ok = std::process::Command::new("kill")
                .args([&format!("-{sig}"), &self.child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill -{sig}");
        }
    }

    impl Drop for OwnNats {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A consumer whose NATS server stops answering while it reads the
    /// event stream (a fetch sent, never answered: the server was stopped,
    /// or died and came back without it) reads the store's log instead,
    /// rather than wait forever.
    #[tokio::test]
    async fn a_reader_whose_server_stops_answering_reads_the_log() {
        let Some(nats) = OwnNats::start() else { return };
        let Some(schema) = common::postgres::Schema::create("bus_stopped").await else {
            return;
        };
        let store = Store::open(&schema.url, Durability::Full).await.unwrap();
        let bus: Bus<Marker> = common::poll_until("nats-server to start", WAIT, || async {
            Bus::open(&nats.url, 3, store.clone(), ()).await.ok()
        })
        .await;
        let events = bus.events().clone();
        let before = events.head().await.unwrap();
        let wake = events.next_commit();
        store
            .commit(&commit_of("r-1", 0..2, "running", state(None)))
            .await
            .unwrap();
        bus.committed();
        tokio::time::timeout(WAIT, wake).await.unwrap();
        // Read from the stream once the relay put both there: the reader
        // (a consumer on the server) is made, and kept for the next read.
        let first = common::poll_until("the relayed events", WAIT, || async {
            let got = events.after(before, 10).await.ok()?;
            (got.len() == 2).then_some(got)
        })
        .await;
        nats.signal("STOP");
        store
            .commit(&commit_of("r-1", 2..4, "running", state(None)))
            .await
            .unwrap();
        let cursor = first.last().unwrap().event.pos;
        let next = tokio::time::timeout(Duration::from_secs(40), events.after(cursor, 10)).await;
        nats.signal("CONT");
        let next = next
            .expect("the events after the cursor, from the log, within 40 s")
            .unwrap();
        let seqs: Vec<u64> = next.iter().map(|c| c.event.seq).collect();
        assert_eq!(seqs, [2, 3]);
        store.close().await;
    }
}
