//! The history store's conformance suite: what every backend must do,
//! written once against the `HistoryStore` handle, one test per operation.
//! `history_store_test_suite!` expands it for a backend from the function
//! that opens one (`None`: skipped); adding a backend is one more line.

mod common;

use std::path::PathBuf;

use eflow_runtime::history::{
    EventRecord, HistoryStore, HistoryWrite, Member, PopulationQuery, RunQuery, RunRecord,
};

macro_rules! history_store_test_suite {
    ($backend:ident, $open:ident) => {
        history_store_test_suite!(@tests $backend, $open, [
            open_refuses_an_unknown_scheme,
            write_moves_the_cursor,
            write_refuses_a_batch_behind_the_cursor,
            write_keeps_what_a_run_was_first_written_with,
            write_clears_the_error_of_a_retried_run,
            write_keeps_an_event_once,
            runs_of,
            runs_filters,
            runs_pages_newest_first,
            runs_refuses_a_cursor_it_did_not_give,
            explain_runs,
            purge,
            final_run,
            events_of,
            expired_and_forget,
            tenants,
            version_runs,
            sync,
            runs_filter_by_key,
            population_keeps_each_keys_latest_run,
            population_counts_failures_in_a_row,
            population_filters_and_pages,
            population_after_purge_and_forget,
        ]);
    };
    (@tests $backend:ident, $open:ident, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some((store, scratch)) = super::$open().await else {
                        return;
                    };
                    super::$test(&store).await;
                    store.close().await;
                    drop(scratch);
                }
            )*
        }
    };
}

history_store_test_suite!(sqlite, open_sqlite);
history_store_test_suite!(postgres, open_postgres);

/// What a test's store leaves behind: removed when dropped.
enum Scratch {
    Dir(PathBuf),
    Schema(#[allow(dead_code)] common::postgres::Schema),
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Scratch::Dir(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn open_sqlite() -> Option<(HistoryStore, Scratch)> {
    let dir = common::temp_dir("history-store");
    let url = format!("sqlite://{}", dir.join("history.db").display());
    Some((HistoryStore::open(&url).await.unwrap(), Scratch::Dir(dir)))
}

/// A history store in a schema of its own on the machine's PostgreSQL.
async fn open_postgres() -> Option<(HistoryStore, Scratch)> {
    let schema = common::postgres::Schema::create("history").await?;
    let store = HistoryStore::open(&schema.url).await.unwrap();
    Some((store, Scratch::Schema(schema)))
}

// ---- fixtures ----------------------------------------------------------------

fn record(id: &str, tenant: &str, status: &str, created_at: u64) -> RunRecord {
    RunRecord {
        id: id.into(),
        tenant: tenant.into(),
        flow: "Train".into(),
        version: "v1".into(),
        status: status.into(),
        parent: None,
        created_at,
        updated_at: created_at + 1,
        error_code: None,
        failed_step: None,
        bundle: Some("b1".into()),
        schedule: None,
        key: None,
        state: None,
    }
}

/// A top-level run of `key` of flow Train.
fn keyed(id: &str, tenant: &str, key: &str, status: &str, created_at: u64) -> RunRecord {
    RunRecord {
        key: Some(key.into()),
        ..record(id, tenant, status, created_at)
    }
}

fn event(pos: i64, run: &str, tenant: &str) -> EventRecord {
    EventRecord {
        pos,
        run: run.into(),
        seq: pos as u64,
        tenant: tenant.into(),
        at: 100 + pos as u64,
        kind: "started".into(),
        step: None,
        status: "running".into(),
        body: format!("{{\"type\":\"started\",\"pos\":{pos}}}").into_bytes(),
    }
}

async fn write(store: &HistoryStore, runs: Vec<RunRecord>, events: Vec<EventRecord>, cursor: i64) {
    store
        .write(&HistoryWrite {
            runs,
            events,
            cursor,
            from: store.cursor().await.unwrap(),
            retried: Vec::new(),
        })
        .await
        .unwrap();
}

fn query(f: impl FnOnce(&mut RunQuery)) -> RunQuery {
    let mut q = RunQuery {
        limit: 100,
        ..RunQuery::default()
    };
    f(&mut q);
    q
}

async fn ids(store: &HistoryStore, q: RunQuery) -> Vec<String> {
    store
        .runs(&q)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.id)
        .collect()
}

// ---- the suite ---------------------------------------------------------------

async fn open_refuses_an_unknown_scheme(_: &HistoryStore) {
    let err = HistoryStore::open("postgres-but-misspelt://x")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("postgres-but-misspelt://"),
        "{err}"
    );
}

async fn write_moves_the_cursor(store: &HistoryStore) {
    assert_eq!(store.cursor().await.unwrap(), 0);
    write(
        store,
        vec![record("r1", "acme", "running", 1)],
        vec![event(1, "r1", "acme")],
        1,
    )
    .await;
    assert_eq!(store.cursor().await.unwrap(), 1);
    // A batch of events the history keeps none of still moves it.
    write(store, vec![], vec![], 5).await;
    assert_eq!(store.cursor().await.unwrap(), 5);
}

/// A batch read from another cursor than the stored one (by a consumer
/// that was paused while another wrote) is refused whole, whether it ends
/// before the stored cursor or past it: a run's status never goes back, and
/// nothing read before a purge lands after it.
async fn write_refuses_a_batch_behind_the_cursor(store: &HistoryStore) {
    write(
        store,
        vec![record("r1", "acme", "succeeded", 1)],
        vec![event(1, "r1", "acme"), event(2, "r1", "acme")],
        2,
    )
    .await;
    for (from, cursor) in [(0, 1), (1, 2), (0, 3)] {
        let stale = store
            .write(&HistoryWrite {
                runs: vec![record("r1", "acme", "running", 1)],
                events: vec![event(1, "r1", "acme"), event(3, "r2", "acme")],
                cursor,
                from,
                retried: Vec::new(),
            })
            .await;
        assert!(
            matches!(
                stale,
                Err(eflow_runtime::history::store::Error::Overtaken { stored: 2, from: f }) if f == from
            ),
            "{stale:?}"
        );
    }
    assert_eq!(store.cursor().await.unwrap(), 2);
    let runs = store.runs_of(&["r1"]).await.unwrap();
    assert_eq!(runs[0].status, "succeeded");
}

/// A run retried (`HistoryWrite::retried`) loses the error its failure
/// wrote: running again, then succeeded, it is found by neither its old
/// error nor its old failed step; failing again, by its new ones.
async fn write_clears_the_error_of_a_retried_run(store: &HistoryStore) {
    let failed = |code: &str, step: &str| RunRecord {
        error_code: Some(code.into()),
        failed_step: Some(step.into()),
        ..record("r1", "acme", "failed", 1)
    };
    write(
        store,
        vec![failed("Timeout", "train")],
        vec![event(1, "r1", "acme")],
        1,
    )
    .await;
    let by_error = |code: &'static str| {
        query(move |q| {
            q.tenant = Some("acme".into());
            q.error = Some(code.into());
        })
    };
    assert_eq!(ids(store, by_error("Timeout")).await, vec!["r1"]);
    let retried = |runs: Vec<RunRecord>, pos: i64| HistoryWrite {
        runs,
        events: vec![event(pos, "r1", "acme")],
        cursor: pos,
        from: pos - 1,
        retried: vec!["r1".into()],
    };
    store
        .write(&retried(vec![record("r1", "acme", "running", 1)], 2))
        .await
        .unwrap();
    assert!(ids(store, by_error("Timeout")).await.is_empty());
    let step = query(|q| {
        q.tenant = Some("acme".into());
        q.step = Some("train".into());
    });
    assert!(ids(store, step).await.is_empty());
    let running = store.runs_of(&["r1"]).await.unwrap();
    assert_eq!(running[0].status, "running");
    assert_eq!(running[0].error_code, None);
    // Retried and failed again in one batch: the new error is kept.
    store
        .write(&retried(vec![failed("OutOfMemory", "fit")], 3))
        .await
        .unwrap();
    assert!(ids(store, by_error("Timeout")).await.is_empty());
    assert_eq!(ids(store, by_error("OutOfMemory")).await, vec!["r1"]);
}

/// A run written again takes the new status and time, keeps its tenant,
/// flow, version, parent and creation time, and keeps an error it has
/// unless the new write brings one.
async fn write_keeps_what_a_run_was_first_written_with(store: &HistoryStore) {
    let mut first = record("r1", "acme", "running", 1);
    first.parent = Some("p".into());
    write(store, vec![first.clone()], vec![], 1).await;
    let mut failed = record("r1", "else", "failed", 99);
    failed.flow = "Other".into();
    failed.updated_at = 50;
    failed.error_code = Some("Timeout".into());
    failed.failed_step = Some("train".into());
    write(store, vec![failed], vec![], 2).await;
    let mut later = record("r1", "acme", "failed", 1);
    later.updated_at = 60;
    write(store, vec![later], vec![], 3).await;
    let got = store.runs_of(&["r1"]).await.unwrap();
    let want = RunRecord {
        status: "failed".into(),
        updated_at: 60,
        error_code: Some("Timeout".into()),
        failed_step: Some("train".into()),
        ..first
    };
    assert_eq!(got, vec![want]);
}

/// An event is kept once by its stream position: written again, it stays as it was.
async fn write_keeps_an_event_once(store: &HistoryStore) {
    write(
        store,
        vec![record("r1", "acme", "running", 1)],
        vec![event(1, "r1", "acme")],
        1,
    )
    .await;
    let mut again = event(1, "r1", "acme");
    again.kind = "changed".into();
    write(store, vec![], vec![again, event(2, "r1", "acme")], 2).await;
    // The events go with their tenant: purging counts each once.
    assert_eq!(store.purge("acme").await.unwrap(), 3);
}

async fn runs_of(store: &HistoryStore) {
    let many: Vec<RunRecord> = (0..300)
        .map(|i| record(&format!("m{i:03}"), "acme", "running", i))
        .collect();
    write(store, many.clone(), vec![], 1).await;
    let mut ask: Vec<String> = many.iter().map(|r| r.id.clone()).collect();
    ask.push("nope".into());
    let ask: Vec<&str> = ask.iter().map(String::as_str).collect();
    let mut got = store.runs_of(&ask).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got, many);
    assert!(store.runs_of(&[]).await.unwrap().is_empty());
}

/// Each filter of `GET /v1/runs` keeps only the runs it names.
async fn runs_filters(store: &HistoryStore) {
    let mut failed = record("f1", "acme", "failed", 30);
    failed.error_code = Some("Timeout".into());
    failed.failed_step = Some("train".into());
    let mut v2 = record("v2", "acme", "succeeded", 20);
    v2.version = "v2".into();
    let mut other_flow = record("o1", "acme", "running", 10);
    other_flow.flow = "Serve".into();
    write(
        store,
        vec![failed, v2, other_flow, record("x1", "else", "failed", 40)],
        vec![],
        1,
    )
    .await;
    let acme = |f: fn(&mut RunQuery)| {
        query(|q| {
            q.tenant = Some("acme".into());
            f(q)
        })
    };
    assert_eq!(ids(store, acme(|_| {})).await, ["f1", "v2", "o1"]);
    assert_eq!(ids(store, query(|_| {})).await, ["x1", "f1", "v2", "o1"]);
    assert_eq!(
        ids(store, acme(|q| q.flow = Some("Train".into()))).await,
        ["f1", "v2"]
    );
    assert_eq!(
        ids(store, acme(|q| q.version = Some("v2".into()))).await,
        ["v2"]
    );
    assert_eq!(
        ids(store, acme(|q| q.status = Some("failed".into()))).await,
        ["f1"]
    );
    assert_eq!(
        ids(store, query(|q| q.status = Some("failed".into()))).await,
        ["x1", "f1"]
    );
    assert_eq!(
        ids(store, acme(|q| q.error = Some("Timeout".into()))).await,
        ["f1"]
    );
    assert_eq!(
        ids(store, acme(|q| q.step = Some("train".into()))).await,
        ["f1"]
    );
    assert_eq!(
        ids(
            store,
            acme(|q| {
                q.since = Some(10);
                q.until = Some(30);
            })
        )
        .await,
        ["v2", "o1"]
    );
}

/// Pages are newest first; `next` continues after the last run of a page,
/// also among runs created at the same time.
async fn runs_pages_newest_first(store: &HistoryStore) {
    let runs: Vec<RunRecord> = (0..7)
        .map(|i| record(&format!("r{i}"), "acme", "running", 100 + i / 2))
        .collect();
    write(store, runs, vec![], 1).await;
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .runs(&query(|q| {
                q.limit = 3;
                q.cursor = cursor.clone();
            }))
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|r| r.id));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]);
}

async fn runs_refuses_a_cursor_it_did_not_give(store: &HistoryStore) {
    let err = store
        .runs(&query(|q| q.cursor = Some("not a cursor".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, eflow_runtime::history::store::Error::BadCursor),
        "{err}"
    );
}

/// The backend says how it answers a query (the plans themselves are the
/// SQLite backend's concern: `tests/history_plans.rs`).
async fn explain_runs(store: &HistoryStore) {
    let plan = store
        .explain_runs(&query(|q| q.tenant = Some("acme".into())))
        .await
        .unwrap();
    assert!(!plan.is_empty());
}

/// Purging a tenant removes its runs and events, and only its.
async fn purge(store: &HistoryStore) {
    write(
        store,
        vec![
            record("a1", "acme", "running", 1),
            record("o1", "else", "running", 2),
        ],
        vec![
            event(1, "a1", "acme"),
            event(2, "a1", "acme"),
            event(3, "o1", "else"),
        ],
        3,
    )
    .await;
    assert_eq!(store.purge("acme").await.unwrap(), 3);
    assert_eq!(ids(store, query(|_| {})).await, ["o1"]);
    assert_eq!(store.purge("acme").await.unwrap(), 0);
    assert_eq!(store.purge("else").await.unwrap(), 2);
    assert_eq!(
        store.cursor().await.unwrap(),
        3,
        "purging does not move the cursor"
    );
}

/// A finished run's final state is kept from the write that finishes it
/// (a later write without one keeps it); lists and `runs_of` leave it out.
async fn final_run(store: &HistoryStore) {
    write(store, vec![record("r1", "acme", "running", 1)], vec![], 1).await;
    let got = store.final_run("r1").await.unwrap().unwrap();
    assert_eq!((got.state, got.bundle.as_deref()), (None, Some("b1")));
    let mut done = record("r1", "acme", "succeeded", 1);
    done.state = Some(b"{\"v\":1}".to_vec());
    done.schedule = Some("s-1".into());
    write(store, vec![done], vec![], 2).await;
    let mut again = record("r1", "acme", "succeeded", 1);
    again.bundle = Some("b2".into());
    write(store, vec![again], vec![], 3).await;
    let got = store.final_run("r1").await.unwrap().unwrap();
    assert_eq!(got.state.as_deref(), Some(&b"{\"v\":1}"[..]));
    assert_eq!(
        got.bundle.as_deref(),
        Some("b1"),
        "kept from the first write"
    );
    assert_eq!(got.schedule.as_deref(), Some("s-1"));
    assert_eq!(store.runs_of(&["r1"]).await.unwrap()[0].state, None);
    assert!(store.final_run("r2").await.unwrap().is_none());
}

async fn events_of(store: &HistoryStore) {
    let events: Vec<EventRecord> = (1..=5).map(|p| event(p, "r1", "acme")).collect();
    write(
        store,
        vec![record("r1", "acme", "running", 1)],
        [events, vec![event(6, "r2", "acme")]].concat(),
        6,
    )
    .await;
    let seqs = |es: Vec<EventRecord>| es.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.events_of("r1", None, 10).await.unwrap()),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        seqs(store.events_of("r1", Some(2), 2).await.unwrap()),
        vec![3, 4]
    );
    let first = store.events_of("r1", None, 1).await.unwrap();
    assert_eq!(first, vec![event(1, "r1", "acme")]);
    assert!(store.events_of("r3", None, 10).await.unwrap().is_empty());
}

/// A tenant's runs that finished before a time, oldest first; runs in
/// progress and other tenants' are not; `forget` deletes runs and events.
async fn expired_and_forget(store: &HistoryStore) {
    let mut runs = Vec::new();
    for (id, tenant, status, at) in [
        ("old-1", "acme", "succeeded", 10),
        ("old-2", "acme", "failed", 5),
        ("live", "acme", "running", 1),
        ("new", "acme", "cancelled", 500),
        ("other", "beta", "succeeded", 1),
    ] {
        let mut r = record(id, tenant, status, 0);
        r.updated_at = at;
        runs.push(r);
    }
    let events = vec![
        event(1, "old-1", "acme"),
        event(2, "old-2", "acme"),
        event(3, "live", "acme"),
    ];
    write(store, runs, events, 3).await;
    assert_eq!(
        store.expired("acme", 100, 10).await.unwrap(),
        vec!["old-2", "old-1"]
    );
    assert_eq!(store.expired("acme", 100, 1).await.unwrap(), vec!["old-2"]);
    assert_eq!(store.forget(&["old-2", "old-1"]).await.unwrap(), 4);
    assert!(store.expired("acme", 100, 10).await.unwrap().is_empty());
    assert!(store.runs_of(&["old-1", "old-2"]).await.unwrap().is_empty());
    assert!(store.events_of("old-1", None, 10).await.unwrap().is_empty());
    assert_eq!(store.events_of("live", None, 10).await.unwrap().len(), 1);
    assert_eq!(store.expired("beta", 100, 10).await.unwrap(), vec!["other"]);
}

async fn tenants(store: &HistoryStore) {
    assert!(store.tenants().await.unwrap().is_empty());
    write(
        store,
        vec![
            record("r1", "beta", "running", 1),
            record("r2", "acme", "running", 1),
            record("r3", "acme", "running", 2),
        ],
        vec![],
        1,
    )
    .await;
    assert_eq!(store.tenants().await.unwrap(), vec!["acme", "beta"]);
}

/// Runs of a tenant's flow on one version, counted up to a bound, through
/// the index `h_runs_version` (not one of the other versions' rows).
async fn version_runs(store: &HistoryStore) {
    let on = |id: &str, tenant: &str, flow: &str, version: &str, at: u64| RunRecord {
        flow: flow.into(),
        version: version.into(),
        ..record(id, tenant, "running", at)
    };
    let mut runs: Vec<RunRecord> = (0..5)
        .map(|i| on(&format!("a{i}"), "acme", "Train", "v1", i))
        .collect();
    runs.extend([
        on("b1", "acme", "Train", "v2", 10),
        on("c1", "acme", "Score", "v1", 11),
        on("d1", "beta", "Train", "v1", 12),
    ]);
    write(store, runs, vec![], 1).await;
    let n = |t: &'static str, f: &'static str, v: &'static str, at_most: u32| async move {
        store.version_runs(t, f, v, at_most).await.unwrap()
    };
    assert_eq!(n("acme", "Train", "v1", 100).await, 5);
    assert_eq!(n("acme", "Train", "v1", 3).await, 3);
    assert_eq!(n("acme", "Train", "v2", 100).await, 1);
    assert_eq!(n("acme", "Score", "v1", 100).await, 1);
    assert_eq!(n("beta", "Train", "v1", 100).await, 1);
    assert_eq!(n("beta", "Train", "v2", 100).await, 0);
    let plan = store.explain_version_runs().await.unwrap().join(" | ");
    assert!(plan.contains("h_runs_version"), "{plan}");
}

/// What was written stays written and readable after a sync.
async fn sync(store: &HistoryStore) {
    write(
        store,
        vec![record("r1", "acme", "running", 1)],
        vec![event(1, "r1", "acme")],
        1,
    )
    .await;
    store.sync().await.unwrap();
    assert_eq!(store.cursor().await.unwrap(), 1);
    assert_eq!(store.runs_of(&["r1"]).await.unwrap().len(), 1);
}

/// `key` finds a tenant's runs of that key, and only top-level ones are
/// given keys by the engine; the key is kept as first written.
async fn runs_filter_by_key(store: &HistoryStore) {
    write(
        store,
        vec![
            keyed("a1", "acme", "model-a", "running", 1),
            keyed("b1", "acme", "model-b", "running", 2),
            keyed("a2", "acme", "model-a", "failed", 3),
            keyed("x1", "else", "model-a", "running", 4),
        ],
        vec![],
        1,
    )
    .await;
    let by_key = |tenant: Option<&str>| {
        let tenant = tenant.map(str::to_string);
        query(move |q| {
            q.tenant = tenant;
            q.key = Some("model-a".into());
        })
    };
    assert_eq!(ids(store, by_key(Some("acme"))).await, ["a2", "a1"]);
    assert_eq!(ids(store, by_key(None)).await, ["x1", "a2", "a1"]);
    // Written again without its key (a later event of the run): kept.
    write(store, vec![record("a1", "acme", "succeeded", 1)], vec![], 2).await;
    assert_eq!(
        store.runs_of(&["a1"]).await.unwrap()[0].key.as_deref(),
        Some("model-a")
    );
}

fn population_query(f: impl FnOnce(&mut PopulationQuery)) -> PopulationQuery {
    let mut q = PopulationQuery {
        flow: "Train".into(),
        limit: 100,
        ..PopulationQuery::default()
    };
    f(&mut q);
    q
}

async fn members(store: &HistoryStore, q: PopulationQuery) -> Vec<Member> {
    store.population(&q).await.unwrap().items
}

/// (key, run, status, failed in a row) of each member of a page.
async fn lines(store: &HistoryStore, q: PopulationQuery) -> Vec<(String, String, String, u32)> {
    members(store, q)
        .await
        .into_iter()
        .map(|m| (m.key, m.run, m.status, m.failed_in_a_row))
        .collect()
}

fn line(key: &str, run: &str, status: &str, failed: u32) -> (String, String, String, u32) {
    (key.into(), run.into(), status.into(), failed)
}

/// Each key's row is its latest top-level run, whatever order the writes
/// come in; children and unkeyed runs are no members; the counts follow
/// the rows.
async fn population_keeps_each_keys_latest_run(store: &HistoryStore) {
    let child = RunRecord {
        parent: Some("a2".into()),
        ..keyed("a2.c.0", "acme", "model-a", "failed", 9)
    };
    write(
        store,
        vec![
            keyed("a1", "acme", "model-a", "succeeded", 1),
            keyed("a2", "acme", "model-a", "running", 5),
            keyed("b1", "acme", "model-b", "running", 2),
            record("u1", "acme", "failed", 3),
            child,
        ],
        vec![],
        1,
    )
    .await;
    // An older run of model-a finishing late changes nothing.
    write(
        store,
        vec![keyed("a0", "acme", "model-a", "failed", 0)],
        vec![],
        2,
    )
    .await;
    let acme = || population_query(|q| q.tenant = Some("acme".into()));
    assert_eq!(
        lines(store, acme()).await,
        [
            line("model-a", "a2", "running", 0),
            line("model-b", "b1", "running", 0)
        ]
    );
    let m = &members(store, acme()).await[0];
    assert_eq!(
        (m.tenant.as_str(), m.version.as_str(), m.created_at),
        ("acme", "v1", 5)
    );
    let counts = store
        .population_counts("Train", Some("acme"))
        .await
        .unwrap();
    assert_eq!(counts.by_status, [("running".to_string(), 2)]);
    assert_eq!(counts.by_version, [("v1".to_string(), 2)]);
    // The latest finishes with an error; a new version starts for model-b.
    let mut failed = keyed("a2", "acme", "model-a", "failed", 5);
    failed.error_code = Some("Timeout".into());
    let mut b2 = keyed("b2", "acme", "model-b", "running", 6);
    b2.version = "v2".into();
    write(store, vec![failed, b2], vec![], 3).await;
    let got = members(store, acme()).await;
    assert_eq!(got[0].error_code.as_deref(), Some("Timeout"));
    assert_eq!((got[1].run.as_str(), got[1].version.as_str()), ("b2", "v2"));
    let counts = store
        .population_counts("Train", Some("acme"))
        .await
        .unwrap();
    assert_eq!(
        counts.by_status,
        [("failed".to_string(), 1), ("running".to_string(), 1)]
    );
    assert_eq!(
        counts.by_version,
        [("v1".to_string(), 1), ("v2".to_string(), 1)]
    );
    assert!(
        store
            .population_counts("Other", Some("acme"))
            .await
            .unwrap()
            .by_status
            .is_empty()
    );
}

/// `failed_in_a_row` counts a key's latest runs that failed one after the
/// other; a retry running again is 0 and failing again is the same run's
/// failure (not one more); a success ends the streak.
async fn population_counts_failures_in_a_row(store: &HistoryStore) {
    let mut pos = 0;
    let mut step = |runs: Vec<RunRecord>, retried: Vec<String>| {
        pos += 1;
        HistoryWrite {
            runs,
            events: vec![],
            cursor: pos,
            from: pos - 1,
            retried,
        }
    };
    async fn streak(store: &HistoryStore) -> (String, String, String, u32) {
        let acme = population_query(|q| q.tenant = Some("acme".into()));
        lines(store, acme).await.remove(0)
    }
    store
        .write(&step(vec![keyed("r1", "acme", "m", "failed", 1)], vec![]))
        .await
        .unwrap();
    assert_eq!(streak(store).await, line("m", "r1", "failed", 1));
    store
        .write(&step(vec![keyed("r2", "acme", "m", "running", 2)], vec![]))
        .await
        .unwrap();
    assert_eq!(streak(store).await, line("m", "r2", "running", 0));
    store
        .write(&step(vec![keyed("r2", "acme", "m", "failed", 2)], vec![]))
        .await
        .unwrap();
    assert_eq!(streak(store).await, line("m", "r2", "failed", 2));
    // Retried: running again, its key's status with it.
    store
        .write(&step(
            vec![keyed("r2", "acme", "m", "running", 2)],
            vec!["r2".into()],
        ))
        .await
        .unwrap();
    assert_eq!(streak(store).await, line("m", "r2", "running", 0));
    let counts = store
        .population_counts("Train", Some("acme"))
        .await
        .unwrap();
    assert_eq!(counts.by_status, [("running".to_string(), 1)]);
    store
        .write(&step(vec![keyed("r2", "acme", "m", "failed", 2)], vec![]))
        .await
        .unwrap();
    assert_eq!(streak(store).await, line("m", "r2", "failed", 2));
    // Two more runs in one batch, both failed: four in a row.
    store
        .write(&step(
            vec![
                keyed("r4", "acme", "m", "failed", 4),
                keyed("r3", "acme", "m", "failed", 3),
            ],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(streak(store).await, line("m", "r4", "failed", 4));
    store
        .write(&step(
            vec![keyed("r5", "acme", "m", "succeeded", 5)],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(streak(store).await, line("m", "r5", "succeeded", 0));
}

/// Every filter of `GET /v1/population`, tenant scoping, and pages by key
/// (by streak first with the streak filter), continued by their cursor.
async fn population_filters_and_pages(store: &HistoryStore) {
    let mut runs = Vec::new();
    for (i, key) in ["k0", "k1", "k2", "k3", "k4", "k5"].iter().enumerate() {
        let i = i as u64;
        // k0, k2, k4 fail: k0 three times, k2 twice, k4 once.
        let fails = match *key {
            "k0" => 3,
            "k2" => 2,
            "k4" => 1,
            _ => 0,
        };
        for n in 0..fails {
            runs.push(keyed(
                &format!("{key}-f{n}"),
                "acme",
                key,
                "failed",
                10 * i + n,
            ));
        }
        if fails == 0 {
            let mut r = keyed(&format!("{key}-ok"), "acme", key, "succeeded", 10 * i);
            if i % 2 == 1 && i > 2 {
                r.version = "v2".into();
            }
            runs.push(r);
        }
    }
    runs.push(keyed("b-1", "else", "k1", "failed", 1));
    runs.push(keyed("b-2", "else", "k1", "failed", 2));
    write(store, runs, vec![], 1).await;
    let acme = |f: fn(&mut PopulationQuery)| {
        population_query(|q| {
            q.tenant = Some("acme".into());
            f(q)
        })
    };
    let keys = |m: Vec<Member>| -> Vec<String> { m.into_iter().map(|m| m.key).collect() };
    assert_eq!(
        keys(members(store, acme(|_| {})).await),
        ["k0", "k1", "k2", "k3", "k4", "k5"]
    );
    assert_eq!(
        keys(members(store, acme(|q| q.status = Some("failed".into()))).await),
        ["k0", "k2", "k4"]
    );
    assert_eq!(
        keys(members(store, acme(|q| q.version = Some("v2".into()))).await),
        ["k3", "k5"]
    );
    // At least twice in a row, the longest streak first.
    let twice = members(store, acme(|q| q.failed_in_a_row = Some(2))).await;
    assert_eq!(
        twice
            .iter()
            .map(|m| (m.key.as_str(), m.failed_in_a_row))
            .collect::<Vec<_>>(),
        [("k0", 3), ("k2", 2)]
    );
    assert!(
        members(store, acme(|q| q.failed_in_a_row = Some(9)))
            .await
            .is_empty()
    );
    assert!(
        members(store, acme(|q| q.status = Some("cancelled".into())))
            .await
            .is_empty()
    );
    // Another tenant's keys are its own; an admin over every tenant sees
    // both, by key then tenant.
    let b = members(store, population_query(|q| q.tenant = Some("else".into()))).await;
    assert_eq!(
        b.iter()
            .map(|m| (m.key.as_str(), m.run.as_str(), m.failed_in_a_row))
            .collect::<Vec<_>>(),
        [("k1", "b-2", 2)]
    );
    let all = members(store, population_query(|_| {})).await;
    assert_eq!(
        all.iter()
            .map(|m| (m.key.as_str(), m.tenant.as_str()))
            .collect::<Vec<_>>(),
        [
            ("k0", "acme"),
            ("k1", "acme"),
            ("k1", "else"),
            ("k2", "acme"),
            ("k3", "acme"),
            ("k4", "acme"),
            ("k5", "acme")
        ]
    );
    let all_twice = members(store, population_query(|q| q.failed_in_a_row = Some(2))).await;
    assert_eq!(
        all_twice
            .iter()
            .map(|m| (m.key.as_str(), m.tenant.as_str()))
            .collect::<Vec<_>>(),
        [("k0", "acme"), ("k1", "else"), ("k2", "acme")]
    );
    let counts = store.population_counts("Train", None).await.unwrap();
    assert_eq!(
        counts.by_status,
        [("failed".to_string(), 4), ("succeeded".to_string(), 3)]
    );
    // Pages of 2 cover every key once, in order, for each kind of query.
    for q in [
        acme(|_| {}),
        population_query(|_| {}),
        population_query(|q| q.failed_in_a_row = Some(1)),
        acme(|q| q.failed_in_a_row = Some(1)),
    ] {
        let whole = members(store, q.clone()).await;
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .population(&PopulationQuery {
                    limit: 2,
                    cursor: cursor.clone(),
                    ..q.clone()
                })
                .await
                .unwrap();
            assert!(page.items.len() <= 2);
            paged.extend(page.items);
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(paged, whole, "{q:?}");
    }
    let err = store
        .population(&population_query(|q| {
            q.cursor = Some("not a cursor".into())
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(err, eflow_runtime::history::store::Error::BadCursor),
        "{err}"
    );
    let plan = store
        .explain_population(&acme(|q| q.status = Some("failed".into())))
        .await
        .unwrap();
    assert!(!plan.is_empty());
}

/// A purge deletes the tenant's population and counts; retention's
/// `forget` leaves a key's row naming a run the history no longer holds.
async fn population_after_purge_and_forget(store: &HistoryStore) {
    write(
        store,
        vec![
            keyed("a1", "acme", "m", "succeeded", 1),
            keyed("o1", "else", "m", "running", 2),
        ],
        vec![event(1, "a1", "acme"), event(2, "o1", "else")],
        2,
    )
    .await;
    assert_eq!(store.forget(&["a1"]).await.unwrap(), 2);
    let acme = population_query(|q| q.tenant = Some("acme".into()));
    assert_eq!(
        lines(store, acme.clone()).await,
        [line("m", "a1", "succeeded", 0)]
    );
    write(
        store,
        vec![keyed("a2", "acme", "m", "running", 3)],
        vec![],
        3,
    )
    .await;
    // Its run, its population row and its counts' rows (succeeded, now 0;
    // running; v1).
    assert_eq!(store.purge("acme").await.unwrap(), 5);
    assert!(members(store, acme).await.is_empty());
    assert!(
        store
            .population_counts("Train", Some("acme"))
            .await
            .unwrap()
            .by_status
            .is_empty()
    );
    assert_eq!(
        store
            .population_counts("Train", None)
            .await
            .unwrap()
            .by_status,
        [("running".to_string(), 1)]
    );
}
