//! The bus's conformance suite: what every backend's bus must do, written
//! once against the `Bus` handle, one test per operation. `bus_test_suite!`
//! expands it for a backend from the function that opens one (with the store
//! whose commits it carries); adding a backend is one more line.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use eflow_runtime::bus::{Bus, RunHead};
use eflow_runtime::store::{Commit, Durability, EventWrite, RunMeta, RunWrite, Store};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

/// The inputs of this suite: a marker, `run index * 10 + k`.
type Marker = i64;

macro_rules! bus_test_suite {
    ($backend:ident, $open:ident) => {
        bus_test_suite!(@tests $backend, $open, [
            open_refuses_an_unknown_url,
            inbox_is_handed_out_once,
            send_reaches_the_runs_shard_in_order,
            send_to_a_shard_without_a_worker_fails,
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
                    let (bus, store, dir) = super::$open().await;
                    super::$test(bus, &store).await;
                    store.close().await;
                    let _ = std::fs::remove_dir_all(dir);
                }
            )*
        }
    };
}

bus_test_suite!(local, open_local);

/// The in-process bus over three shards, its stream the log of a SQLite store.
async fn open_local() -> (Bus<Marker>, Store, PathBuf) {
    let dir = common::temp_dir("bus");
    let url = format!("sqlite://{}", dir.join("eflow.db").display());
    let store = Store::open(&url, Durability::Full).await.unwrap();
    let bus = Bus::open("local", 3, store.clone()).unwrap();
    (bus, store, dir)
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
    let err = Bus::<Marker>::open("kafka://localhost", 3, store.clone()).unwrap_err();
    assert!(err.to_string().contains("kafka://"), "{err}");
}

/// Every shard's inbox is taken once: one worker per shard.
async fn inbox_is_handed_out_once(bus: Bus<Marker>, _: &Store) {
    let shards = bus.shards();
    let _inboxes: Vec<_> = (0..shards).map(|s| bus.inbox(s).unwrap()).collect();
    assert!(bus.inbox(0).is_none(), "an inbox is handed out once");
    assert!(bus.inbox(shards).is_none(), "no inbox past the last shard");
}

/// A run's inputs reach its shard's inbox, in the order they were sent, and
/// no other inbox.
async fn send_reaches_the_runs_shard_in_order(bus: Bus<Marker>, _: &Store) {
    let shards = bus.shards();
    let mut inboxes: Vec<_> = (0..shards).map(|s| bus.inbox(s).unwrap()).collect();
    let runs: Vec<String> = (0..20).map(|i| format!("run-{i}")).collect();
    for (i, run) in runs.iter().enumerate() {
        for k in 0..3 {
            bus.send(run, (i * 10 + k) as Marker).unwrap();
        }
    }
    let mut seen = vec![Vec::new(); runs.len()];
    for (shard, inbox) in inboxes.iter_mut().enumerate() {
        let mut first = true;
        loop {
            let m = if first {
                first = false;
                match tokio::time::timeout(Duration::from_millis(200), inbox.recv()).await {
                    Ok(Some(x)) => x,
                    _ => break,
                }
            } else {
                match inbox.try_recv() {
                    Some(x) => x,
                    None => break,
                }
            };
            let run = (m / 10) as usize;
            assert_eq!(
                bus.shard_of(&runs[run]),
                shard as u32,
                "{} arrived at shard {shard}",
                runs[run]
            );
            seen[run].push(m % 10);
        }
    }
    for (run, got) in seen.iter().enumerate() {
        assert_eq!(got, &vec![0, 1, 2], "inputs of {} in order", runs[run]);
    }
    let used: std::collections::BTreeSet<u32> = runs.iter().map(|r| bus.shard_of(r)).collect();
    assert!(used.len() >= 2, "runs spread over shards: {used:?}");
}

/// Once a shard's worker is gone, sending to it is an error, not a loss in silence.
async fn send_to_a_shard_without_a_worker_fails(bus: Bus<Marker>, _: &Store) {
    let victim = (0..100)
        .map(|i| format!("run-{i}"))
        .find(|r| bus.shard_of(r) == 0)
        .expect("a run on shard 0");
    let inbox = bus.inbox(0).unwrap();
    bus.send(&victim, 1).unwrap();
    drop(inbox);
    assert!(bus.send(&victim, 2).is_err());
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
    store.purge_tenant("gone").await.unwrap();
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
