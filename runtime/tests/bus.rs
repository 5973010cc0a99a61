//! The bus's conformance suite: what every backend's bus must do, written once
//! against the `Bus` handle. Each backend runs it (today the in-process bus;
//! the distributed backend adds its line).

use std::time::Duration;

use eflow_runtime::bus::Bus;
use eflow_runtime::engine::Input;
use eflow_runtime::store::{Commit, Durability, EventWrite, RunMeta, RunWrite, Store};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

/// The marker an input carries in this suite: one outbox position.
fn marker(input: Input) -> i64 {
    match input {
        Input::OutboxDone(v) => v[0],
        other => panic!("unexpected input {other:?}"),
    }
}

fn commit_of(run: &str, events: u64) -> Commit {
    let mut c = Commit::default();
    c.runs.push(RunWrite {
        meta: RunMeta {
            id: run.into(),
            tenant: "acme".into(),
            bundle: "b-1".into(),
            schedule: None,
            parent: None,
            created_at: 1,
        },
        status: "running",
        updated_at: 2,
        state: b"{}".to_vec(),
    });
    for seq in 0..events {
        c.events.push(EventWrite {
            run: run.into(),
            seq,
            id: format!("e{seq}"),
            at: 10 + seq,
            status: "running",
            body: serde_json::to_vec(&json!({ "type": "started", "n": seq })).unwrap(),
        });
    }
    c
}

/// Everything a bus must do. `store` is the store whose commits the bus
/// carries to consumers.
async fn suite(bus: Bus, store: Store) {
    let shards = bus.shards();
    assert!(shards >= 2, "the suite needs two shards to tell them apart");

    // Every shard's inbox is taken once: one worker per shard.
    let mut inboxes: Vec<_> = (0..shards).map(|s| bus.inbox(s).unwrap()).collect();
    assert!(bus.inbox(0).is_none(), "an inbox is handed out once");
    assert!(bus.inbox(shards).is_none(), "no inbox past the last shard");

    // A run's inputs reach its shard's inbox, in the order they were sent,
    // and no other inbox.
    let runs: Vec<String> = (0..20).map(|i| format!("run-{i}")).collect();
    for (i, run) in runs.iter().enumerate() {
        for k in 0..3 {
            bus.send(run, Input::OutboxDone(vec![(i * 10 + k) as i64]))
                .unwrap();
        }
    }
    let mut seen = vec![Vec::new(); runs.len()];
    for (shard, inbox) in inboxes.iter_mut().enumerate() {
        let mut first = true;
        loop {
            let input = if first {
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
            let m = marker(input);
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

    // Committed events reach a consumer from its cursor, in commit order; a
    // waiting consumer is woken by the commit signal.
    let before = bus.head().await.unwrap();
    let wake = bus.next_commit();
    store.commit(&commit_of("ev-1", 3)).await.unwrap();
    bus.committed();
    tokio::time::timeout(WAIT, wake)
        .await
        .expect("a consumer waiting for commits is woken");
    let events = bus.events_after(before, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(events.windows(2).all(|w| w[0].pos < w[1].pos));
    assert_eq!(bus.head().await.unwrap(), events[2].pos);
    // A cursor in the middle gives the rest; the limit is kept; at the head, nothing.
    assert_eq!(bus.events_after(events[0].pos, 10).await.unwrap().len(), 2);
    assert_eq!(bus.events_after(before, 1).await.unwrap().len(), 1);
    assert!(
        bus.events_after(events[2].pos, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Once a shard's worker is gone, sending to it is an error, not a loss in silence.
    let victim = runs
        .iter()
        .find(|r| bus.shard_of(r) == 0)
        .expect("a run on shard 0");
    drop(inboxes.remove(0));
    assert!(bus.send(victim, Input::OutboxDone(vec![1])).is_err());
}

#[tokio::test]
async fn local_bus_conforms() {
    let dir = std::env::temp_dir().join(format!("eflow-bus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}", dir.join("eflow.db").display());
    let store = Store::open(&url, Durability::Full).await.unwrap();
    suite(Bus::local(3, store.clone()), store.clone()).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
