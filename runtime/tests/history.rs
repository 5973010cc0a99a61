//! The history consumer against the real bus and stores: what it keeps of
//! runs and events comes from the bus's stream alone, a batch at a time, and
//! a run purged from the engine before it was read is not kept.

mod common;

use eflow_runtime::bus::Bus;
use eflow_runtime::history::{History, HistoryStore, RunQuery};
use eflow_runtime::store::{Commit, Durability, EventWrite, RunMeta, RunWrite, Store, TenantRow};
use serde_json::json;

fn commit(run: &str, tenant: &str, seqs: std::ops::Range<u64>, status: &'static str) -> Commit {
    let mut state = json!({"flow": "Train", "version": "v1"});
    if status == "failed" {
        state["error"] = json!({"code": "Timeout", "message": "late", "node": "train"});
    }
    let mut c = Commit::default();
    c.runs.push(RunWrite {
        meta: RunMeta {
            id: run.into(),
            tenant: tenant.into(),
            bundle: "b-1".into(),
            schedule: None,
            parent: None,
            key: None,
            created_at: 5,
        },
        status,
        updated_at: 6,
        state: serde_json::to_vec(&state).unwrap(),
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
            body: serde_json::to_vec(&json!({"type": "step_failed", "node": "train"})).unwrap(),
        });
    }
    c
}

#[tokio::test]
async fn the_history_keeps_what_the_stream_carries() {
    let dir = common::temp_dir("history");
    let store = Store::open(
        &format!("sqlite://{}", dir.join("eflow.db").display()),
        Durability::Full,
    )
    .await
    .unwrap();
    let bus: Bus<()> = Bus::local(1, store.clone());
    let history_store =
        HistoryStore::open(&format!("sqlite://{}", dir.join("history.db").display()))
            .await
            .unwrap();
    let history = History::new(history_store.clone()).await.unwrap();

    store
        .commit(&commit("r1", "acme", 0..2, "running"))
        .await
        .unwrap();
    store
        .commit(&commit("r2", "acme", 0..1, "running"))
        .await
        .unwrap();
    assert_eq!(history.catch_up(bus.events()).await.unwrap(), 3);
    assert_eq!(
        history.catch_up(bus.events()).await.unwrap(),
        0,
        "caught up"
    );
    // r1 fails in a later batch: its error comes with its final event.
    store
        .commit(&commit("r1", "acme", 2..3, "failed"))
        .await
        .unwrap();
    // r3's tenant is purged from the engine before the history reads it (r4,
    // committed after it, keeps the log's tail in place).
    store
        .create_tenant(&TenantRow {
            id: "gone".into(),
            created_at: 1,
            max_active_runs: None,
            max_starts_per_sec: None,
            allow_egress: Vec::new(),
            history_retention_ms: None,
        })
        .await
        .unwrap();
    store
        .commit(&commit("r3", "gone", 0..2, "running"))
        .await
        .unwrap();
    store
        .commit(&commit("r4", "acme", 0..1, "running"))
        .await
        .unwrap();
    common::purge(&store, "gone").await;
    assert_eq!(history.catch_up(bus.events()).await.unwrap(), 2);

    let page = history
        .runs(&RunQuery {
            limit: 10,
            ..RunQuery::default()
        })
        .await
        .unwrap();
    let mut runs = page.items;
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    let summary: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.tenant.as_str(),
                r.flow.as_str(),
                r.version.as_str(),
                r.status.as_str(),
                r.error_code.as_deref(),
                r.failed_step.as_deref(),
                r.created_at,
                r.updated_at,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "r1",
                "acme",
                "Train",
                "v1",
                "failed",
                Some("Timeout"),
                Some("train"),
                5,
                12
            ),
            ("r2", "acme", "Train", "v1", "running", None, None, 5, 10),
            ("r4", "acme", "Train", "v1", "running", None, None, 5, 10),
        ]
    );
    assert_eq!(
        history_store.cursor().await.unwrap(),
        bus.events().head().await.unwrap()
    );
    // Every event of the kept runs, each once: purging counts them and their runs.
    assert_eq!(history.purge("acme").await.unwrap(), 5 + 3);
    history.close().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
