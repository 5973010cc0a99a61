//! The store's conformance suite: what every backend must do, written once
//! against the `Store` handle, one test per operation. `store_test_suite!`
//! expands it for a backend from the function that opens one; adding a
//! backend is one more line at the bottom.

mod common;

use std::path::PathBuf;

use eflow_runtime::store::{
    ApprovalClose, ApprovalWrite, Commit, Deployment, Durability, EventWrite, MemberRow, NewEntry,
    PurgeBegun, PurgeHold, RegistryUse, RunMeta, RunWrite, ScheduleQuery, ScheduleRow,
    ScheduleUpdate, Store, TenantRow, TimerWrite, TokenRow,
};
use serde_json::json;

/// Expands to a module `$backend` with one `#[tokio::test]` per test of the
/// suite, each on a fresh store from `$open` (an `async fn() ->
/// Option<(Store, Scratch)>`: `None` skips the test, the scratch space is
/// removed afterwards).
macro_rules! store_test_suite {
    ($backend:ident, $open:ident) => {
        store_test_suite!(@tests $backend, $open, [
            open_refuses_an_unknown_scheme,
            commit_upserts_runs_and_appends_events,
            commit_is_all_or_nothing,
            load_run,
            load_runs,
            active_runs,
            active_runs_of_schedule,
            active_runs_of_bundle,
            events_of,
            event_by_id,
            events_after_and_max_event_pos,
            events_after_misses_no_concurrent_commit,
            event_positions_are_never_reused,
            claim_timers,
            timers_are_one_row_per_name,
            release_claims,
            outbox,
            acquire_lease_fences_older_owners,
            leases_are_taken_only_when_free_and_renewed_with_their_token,
            members_say_they_are_alive,
            bundles_and_flows,
            bundle_sources,
            registry_uses,
            tenants,
            set_tenant_egress,
            set_tenant_retention,
            sweep_finished,
            sweep_keeps_failed_runs_for_their_retry_window,
            a_retried_run_is_active_again,
            sweep_keeps_what_a_start_or_a_results_page_needs,
            purge_tenant_removes_what_swept_runs_left,
            purge_tenant,
            purges,
            a_purge_is_its_holders,
            tokens,
            tokens_by_owner,
            revoke_token,
            rotate_token,
            approvals,
            register,
            registry_set_stage,
            schedules,
            set_schedule_paused,
            schedules_made_through_the_api,
            schedule_pages,
            schedules_in_batches,
            setting_or_insert,
            values_kept_by_reference,
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

store_test_suite!(sqlite, open_sqlite);
store_test_suite!(postgres, open_postgres);

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

async fn open_sqlite() -> Option<(Store, Scratch)> {
    let dir = common::temp_dir("store");
    let url = format!("sqlite://{}", dir.join("eflow.db").display());
    let store = Store::open(&url, Durability::Full).await.unwrap();
    Some((store, Scratch::Dir(dir)))
}

/// A store in a schema of its own on the machine's PostgreSQL.
async fn open_postgres() -> Option<(Store, Scratch)> {
    let schema = common::postgres::Schema::create("store").await?;
    let store = Store::open(&schema.url, Durability::Full).await.unwrap();
    Some((store, Scratch::Schema(schema)))
}

// ---- fixtures ----------------------------------------------------------------

fn meta(id: &str, tenant: &str) -> RunMeta {
    RunMeta {
        id: id.into(),
        tenant: tenant.into(),
        bundle: "b-1".into(),
        schedule: None,
        parent: None,
        key: None,
        created_at: 1,
    }
}

fn run(id: &str, tenant: &str, status: &'static str, state: &str) -> RunWrite {
    RunWrite {
        meta: meta(id, tenant),
        status,
        updated_at: 2,
        state: state.as_bytes().to_vec(),
    }
}

fn event(run: &str, seq: u64) -> EventWrite {
    EventWrite {
        run: run.into(),
        seq,
        id: format!("e{seq}"),
        at: 10 + seq,
        status: "running",
        body: serde_json::to_vec(&json!({ "type": "started", "n": seq })).unwrap(),
    }
}

fn timer(run: &str, name: &str, due_at: u64, claimed_until: u64) -> TimerWrite {
    TimerWrite {
        run: run.into(),
        timer: name.into(),
        partition: 0,
        due_at,
        claimed_until,
        event: b"{}".to_vec(),
    }
}

fn tenant(id: &str) -> TenantRow {
    TenantRow {
        id: id.into(),
        created_at: 1,
        max_active_runs: Some(5),
        max_starts_per_sec: None,
        allow_egress: Vec::new(),
        history_retention_ms: None,
    }
}

fn approval(run: &str, tenant: &str, attempt: u32) -> ApprovalWrite {
    ApprovalWrite {
        run: run.into(),
        step: "ok".into(),
        attempt,
        tenant: tenant.into(),
        contract: "std/approval.Approve".into(),
        request: b"{\"q\":1}".to_vec(),
        requested_at: 5 + u64::from(attempt),
        expires_at: None,
    }
}

fn schedule(id: &str, tenant: &str, next_due: u64) -> ScheduleRow {
    ScheduleRow {
        id: id.into(),
        tenant: tenant.into(),
        flow: "F".into(),
        bundle: "b-1".into(),
        position: 0,
        spec: b"{}".to_vec(),
        paused: false,
        handled_through: Some(100),
        last_start: None,
        next_due: Some(next_due),
        buffered: None,
        partition: 0,
        declared: true,
        key: None,
        version: None,
        created_at: None,
    }
}

/// A schedule made through the API.
fn api_schedule(id: &str, tenant: &str, flow: &str, key: Option<&str>) -> ScheduleRow {
    ScheduleRow {
        flow: flow.into(),
        declared: false,
        key: key.map(str::to_string),
        created_at: Some(50),
        ..schedule(id, tenant, 5_000)
    }
}

async fn commit(store: &Store, f: impl FnOnce(&mut Commit)) {
    let mut c = Commit::default();
    f(&mut c);
    store.commit(&c).await.unwrap();
}

// ---- the suite ---------------------------------------------------------------

async fn open_refuses_an_unknown_scheme(_: &Store) {
    let err = Store::open("mysql://localhost/eflow", Durability::Full)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mysql://"), "{err}");
}

/// An upsert keeps the run's routing data and replaces its status and state.
async fn commit_upserts_runs_and_appends_events(store: &Store) {
    commit(store, |c| {
        c.runs.push(run("r1", "acme", "running", "{\"v\":1}"));
        c.events.push(event("r1", 0));
        c.events.push(event("r1", 1));
    })
    .await;
    commit(store, |c| {
        c.runs.push(run("r1", "acme", "succeeded", "{\"v\":2}"));
        c.events.push(event("r1", 2));
    })
    .await;
    let (m, status, state) = store.load_run("r1").await.unwrap().unwrap();
    assert_eq!(
        (m, status.as_str(), state.as_slice()),
        (meta("r1", "acme"), "succeeded", &b"{\"v\":2}"[..])
    );
    let evs = store.events_of("r1", None, 10).await.unwrap();
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
}

/// A second event with a run's sequence number is refused, and the whole
/// batch with it: nothing is half-written.
async fn commit_is_all_or_nothing(store: &Store) {
    commit(store, |c| {
        c.runs.push(run("r1", "acme", "succeeded", "{}"));
        c.events.push(event("r1", 0));
    })
    .await;
    let mut c = Commit::default();
    c.runs.push(run("r1", "acme", "failed", "{\"v\":3}"));
    c.runs.push(run("r9", "acme", "running", "{}"));
    c.events.push(event("r1", 0));
    c.timers.push(timer("r1", "t", 1, 0));
    assert!(store.commit(&c).await.is_err());
    let (_, status, _) = store.load_run("r1").await.unwrap().unwrap();
    assert_eq!(status, "succeeded");
    assert!(store.load_run("r9").await.unwrap().is_none());
    assert!(
        store
            .claim_timers(0, 100, 100, 200, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn load_run(store: &Store) {
    let mut m = meta("child", "acme");
    m.parent = Some("parent".into());
    m.schedule = Some("acme.F.0".into());
    commit(store, |c| {
        c.runs.push(RunWrite {
            meta: m.clone(),
            status: "running",
            updated_at: 3,
            state: b"{\"s\":1}".to_vec(),
        })
    })
    .await;
    let (got, status, state) = store.load_run("child").await.unwrap().unwrap();
    assert_eq!(
        (got, status.as_str(), state),
        (m, "running", b"{\"s\":1}".to_vec())
    );
    assert!(store.load_run("nope").await.unwrap().is_none());
}

/// More than one statement's worth; missing ids are left out.
async fn load_runs(store: &Store) {
    let many: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    commit(store, |c| {
        for id in &many {
            c.runs.push(run(id, "bulk", "running", "{}"));
        }
    })
    .await;
    let mut ask: Vec<&str> = many.iter().map(String::as_str).collect();
    ask.push("nope");
    let mut got: Vec<String> = store
        .load_runs(&ask)
        .await
        .unwrap()
        .into_iter()
        .map(|(m, _, _)| m.id)
        .collect();
    got.sort();
    let mut want = many.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(store.load_runs(&[]).await.unwrap().is_empty());
}

/// Runs not finished, per tenant and parent: finished runs do not count.
async fn active_runs(store: &Store) {
    let mut child = run("c1", "acme", "running", "{}");
    child.meta.parent = Some("a1".into());
    commit(store, |c| {
        c.runs.push(run("a1", "acme", "running", "{}"));
        c.runs.push(run("a2", "acme", "created", "{}"));
        c.runs.push(run("a3", "acme", "succeeded", "{}"));
        c.runs.push(child);
        c.runs.push(run("o1", "other", "running", "{}"));
    })
    .await;
    let mut got = store.active_runs().await.unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("acme".into(), None, 2),
            ("acme".into(), Some("a1".into()), 1),
            ("other".into(), None, 1)
        ]
    );
}

async fn active_runs_of_schedule(store: &Store) {
    let scheduled = |id: &str, status| {
        let mut r = run(id, "acme", status, "{}");
        r.meta.schedule = Some("acme.F.0".into());
        r
    };
    commit(store, |c| {
        c.runs.push(scheduled("s1", "running"));
        c.runs.push(scheduled("s2", "failed"));
        c.runs.push(run("plain", "acme", "running", "{}"));
    })
    .await;
    assert_eq!(
        store.active_runs_of_schedule("acme.F.0").await.unwrap(),
        vec!["s1".to_string()]
    );
    assert!(
        store
            .active_runs_of_schedule("acme.G.0")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn active_runs_of_bundle(store: &Store) {
    let on = |id: &str, tenant: &str, bundle: &str, status| {
        let mut r = run(id, tenant, status, "{}");
        r.meta.bundle = bundle.into();
        r
    };
    commit(store, |c| {
        c.runs.push(on("a1", "acme", "b-1", "running"));
        c.runs.push(on("a2", "acme", "b-1", "created"));
        c.runs.push(on("a3", "acme", "b-1", "succeeded"));
        c.runs.push(on("a4", "acme", "b-2", "running"));
        c.runs.push(on("o1", "other", "b-1", "running"));
    })
    .await;
    assert_eq!(store.active_runs_of_bundle("acme", "b-1").await.unwrap(), 2);
    assert_eq!(store.active_runs_of_bundle("acme", "b-3").await.unwrap(), 0);
}

/// One event of a run by its id; another run's event of that id is not it.
async fn event_by_id(store: &Store) {
    commit(store, |c| {
        c.runs.push(run("r1", "acme", "running", "{}"));
        c.runs.push(run("r2", "acme", "running", "{}"));
        c.events.push(event("r1", 0));
        c.events.push(event("r1", 1));
    })
    .await;
    let e = store
        .event("r1", "e1")
        .await
        .unwrap()
        .expect("r1's event e1");
    assert_eq!((e.run.as_str(), e.seq, e.id.as_str()), ("r1", 1, "e1"));
    assert!(store.event("r2", "e1").await.unwrap().is_none());
    assert!(store.event("r1", "e9").await.unwrap().is_none());
}

/// A run's events in order, after a sequence number, at most `limit`.
async fn events_of(store: &Store) {
    commit(store, |c| {
        c.runs.push(run("r1", "acme", "running", "{}"));
        c.runs.push(run("r2", "acme", "running", "{}"));
        for seq in 0..4 {
            c.events.push(event("r1", seq));
        }
        c.events.push(event("r2", 0));
    })
    .await;
    let seqs = |evs: Vec<eflow_runtime::store::EventRow>| -> Vec<u64> {
        evs.iter().map(|e| e.seq).collect()
    };
    assert_eq!(
        seqs(store.events_of("r1", None, 10).await.unwrap()),
        [0, 1, 2, 3]
    );
    assert_eq!(
        seqs(store.events_of("r1", Some(1), 10).await.unwrap()),
        [2, 3]
    );
    assert_eq!(seqs(store.events_of("r1", None, 2).await.unwrap()), [0, 1]);
    let e = &store.events_of("r2", None, 10).await.unwrap()[0];
    assert_eq!(
        (e.run.as_str(), e.id.as_str(), e.at, e.status.as_str()),
        ("r2", "e0", 10, "running")
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&e.body).unwrap(),
        json!({"type": "started", "n": 0})
    );
    assert!(store.events_of("nope", None, 10).await.unwrap().is_empty());
}

/// Every event in commit order after a position; the last position.
async fn events_after_and_max_event_pos(store: &Store) {
    assert_eq!(store.max_event_pos().await.unwrap(), 0);
    commit(store, |c| {
        c.runs.push(run("r1", "acme", "running", "{}"));
        c.events.push(event("r1", 0));
        c.events.push(event("r1", 1));
    })
    .await;
    commit(store, |c| c.events.push(event("r1", 2))).await;
    let all = store.events_after(0, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(all.windows(2).all(|w| w[0].pos < w[1].pos));
    assert_eq!(store.events_after(all[1].pos, 10).await.unwrap().len(), 1);
    assert_eq!(store.events_after(0, 2).await.unwrap().len(), 2);
    assert_eq!(store.max_event_pos().await.unwrap(), all[2].pos);
}

/// Many writers commit batches of events at once while a reader follows the
/// log from its cursor, the way the history consumer does: the reader gets
/// every event exactly once, in position order. A store whose positions can
/// become visible out of order (a commit of position 11 seen before the one
/// of 10) moves the reader's cursor past 10, and 10 is never read.
async fn events_after_misses_no_concurrent_commit(store: &Store) {
    const WRITERS: u64 = 8;
    const COMMITS: u64 = 80;
    const EVENTS: u64 = 10;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for c in 0..COMMITS {
                    let mut commit = Commit::default();
                    let run_id = format!("w{w}");
                    for k in 0..EVENTS {
                        commit.events.push(event(&run_id, c * EVENTS + k));
                    }
                    // Batches of different sizes: a commit that took its
                    // positions first is often the last to end.
                    commit.runs.push(run(&run_id, "acme", "running", "{}"));
                    for k in 0..(w * 20) {
                        commit
                            .timers
                            .push(timer(&run_id, &format!("t{c}.{k}"), 1, 0));
                    }
                    store.commit(&commit).await.unwrap();
                }
            })
        })
        .collect();
    let total = (WRITERS * COMMITS * EVENTS) as usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let (mut cursor, mut seen) = (0i64, Vec::with_capacity(total));
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let batch = store.events_after(cursor, 7).await.unwrap();
        for e in &batch {
            assert!(
                e.pos > cursor,
                "positions go forward: {} after {cursor}",
                e.pos
            );
            cursor = e.pos;
            seen.push((e.run.clone(), e.seq));
        }
        // Everything committed has been read: a skipped event is never read
        // (and the deadline says so). An empty batch after the writers are
        // done may still be a reader backing off from the log's lock.
        if batch.is_empty() && done && seen.len() >= total {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the reader is stuck");
        if batch.is_empty() {
            tokio::task::yield_now().await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut want: Vec<(String, u64)> = (0..WRITERS)
        .flat_map(|w| (0..COMMITS * EVENTS).map(move |s| (format!("w{w}"), s)))
        .collect();
    want.sort();
    let mut got = seen.clone();
    got.sort();
    let missing = want
        .iter()
        .filter(|e| got.binary_search(e).is_err())
        .count();
    assert_eq!(
        (seen.len(), missing),
        (total, 0),
        "every event read once, none skipped"
    );
}

/// A position is never handed out twice, even after the events at the end of the
/// log are purged: the history's cursor is past them, and would skip new events
/// that took them again.
async fn event_positions_are_never_reused(store: &Store) {
    store.create_tenant(&tenant("stays")).await.unwrap();
    store.create_tenant(&tenant("gone")).await.unwrap();
    commit(store, |c| {
        c.runs.push(run("kept", "stays", "running", "{}"));
        c.events.push(event("kept", 0));
    })
    .await;
    commit(store, |c| {
        c.runs.push(run("purged", "gone", "running", "{}"));
        c.events.push(event("purged", 0));
        c.events.push(event("purged", 1));
    })
    .await;
    let last = store.max_event_pos().await.unwrap();
    common::purge(store, "gone").await;
    commit(store, |c| c.events.push(event("kept", 1))).await;
    let after = store.events_after(last, 10).await.unwrap();
    assert_eq!(
        after
            .iter()
            .map(|e| (e.run.as_str(), e.seq))
            .collect::<Vec<_>>(),
        [("kept", 1)],
        "the new event comes after every position used before the purge"
    );
}

/// Due rows are claimed once; a claim expires; a deleted row is gone.
async fn claim_timers(store: &Store) {
    commit(store, |c| {
        c.timers.push(timer("r1", "t-due", 100, 0));
        c.timers.push(timer("r1", "t-later", 5_000, 0));
        c.timers.push(timer("r1", "t-claimed", 100, 1_000));
    })
    .await;
    let got = store.claim_timers(0, 200, 1_200, 2_000, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|t| t.timer.as_str()).collect::<Vec<_>>(),
        vec!["t-due"]
    );
    assert_eq!((got[0].run.as_str(), got[0].due_at), ("r1", 100));
    assert_eq!(got[0].event, b"{}".to_vec());
    assert!(
        store
            .claim_timers(0, 300, 1_300, 2_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Another partition's rows are not this loader's.
    assert!(
        store
            .claim_timers(1, 2_500, 3_500, 4_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_timers(0, 2_500, 3_500, 4_000, 10)
        .await
        .unwrap();
    let mut names: Vec<_> = again.iter().map(|t| t.timer.clone()).collect();
    names.sort();
    assert_eq!(names, vec!["t-claimed", "t-due"]);
    commit(store, |c| {
        c.timers_deleted.push(("r1".into(), "t-due".into()));
        c.timers_deleted.push(("r1".into(), "absent".into()));
    })
    .await;
    // Later, every row left is due and its claims have expired: all but the deleted one.
    let later = store
        .claim_timers(0, 9_000, 9_000, 9_500, 10)
        .await
        .unwrap();
    let mut names: Vec<_> = later.iter().map(|t| t.timer.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["t-claimed", "t-later"]);
}

/// Setting a timer twice is one row, with the later due time.
async fn timers_are_one_row_per_name(store: &Store) {
    commit(store, |c| {
        c.timers.push(timer("r1", "t-twice", 10, 0));
        c.timers.push(timer("r1", "t-twice-b", 10, 0));
    })
    .await;
    commit(store, |c| c.timers.push(timer("r1", "t-twice", 20, 0))).await;
    let twice = store
        .claim_timers(0, 10_000, 10_000, 10_500, 100)
        .await
        .unwrap();
    let ours: Vec<_> = twice.iter().filter(|t| t.timer == "t-twice").collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].due_at, 20);
}

/// At start every claim is released: claimed timers and schedules are taken again.
async fn release_claims(store: &Store) {
    commit(store, |c| c.timers.push(timer("r1", "t", 100, 0))).await;
    replace_schedules(store, "acme", "F", &[schedule("s1", "acme", 1_000)])
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_timers(0, 200, 200, 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .claim_schedules(0, 2_000, 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .claim_timers(0, 300, 300, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_schedules(0, 2_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.release_claims().await.unwrap();
    assert_eq!(
        store
            .claim_timers(0, 300, 300, 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .claim_schedules(0, 2_000, 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Rows come back in position order until deleted; a process's block of
/// positions is above every row, and never another process's.
async fn outbox(store: &Store) {
    let first = store.outbox_block().await.unwrap();
    assert!(first >= 1);
    commit(store, |c| {
        c.outbox.push((first + 1, "r1".into(), b"b".to_vec()));
        c.outbox.push((first, "r1".into(), b"a".to_vec()));
    })
    .await;
    let next = store.outbox_block().await.unwrap();
    assert!(next > first + 1, "{next} after {first}");
    if matches!(store, Store::Postgres(_)) {
        // Shared by processes: blocks apart by 2^32 even before a row is written.
        let again = store.outbox_block().await.unwrap();
        assert!(again >= next + (1 << 32), "{again} after {next}");
    }
    let (first, second) = (first, first + 1);
    assert_eq!(store.outbox_depth().await.unwrap(), 2);
    assert_eq!(
        store.outbox().await.unwrap(),
        vec![
            (first, "r1".to_string(), b"a".to_vec()),
            (second, "r1".to_string(), b"b".to_vec())
        ]
    );
    commit(store, |c| c.outbox_deleted.push(first)).await;
    assert_eq!(
        store.outbox().await.unwrap(),
        vec![(second, "r1".to_string(), b"b".to_vec())]
    );
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
}

/// A lease is taken when free or expired, kept with its token by its owner,
/// and given up at once.
async fn leases_are_taken_only_when_free_and_renewed_with_their_token(store: &Store) {
    let a = store
        .try_lease(3, "a", 100, 200)
        .await
        .unwrap()
        .expect("free");
    // Another owner waits while it runs.
    assert_eq!(store.try_lease(3, "b", 150, 300).await.unwrap(), None);
    // Its owner renews it with the same token: its commits go on.
    assert_eq!(store.try_lease(3, "a", 150, 400).await.unwrap(), Some(a));
    // Expired, another owner takes it with a new token, fencing the old one.
    let b = store
        .try_lease(3, "b", 400, 600)
        .await
        .unwrap()
        .expect("expired");
    assert!(b > a);
    let stale = Commit {
        lease: Some((3, a)),
        runs: vec![run("r-l", "acme", "running", "{}")],
        ..Commit::default()
    };
    assert!(matches!(
        store.commit(&stale).await,
        Err(eflow_runtime::store::Error::LeaseLost { shard: 3 })
    ));
    // Only its holder gives it up, and then it is free at once.
    assert!(!store.release_lease(3, "a", a).await.unwrap());
    assert!(store.release_lease(3, "b", b).await.unwrap());
    let c = store
        .try_lease(3, "a", 450, 700)
        .await
        .unwrap()
        .expect("released");
    assert!(c > b);
    store
        .try_lease(1, "b", 450, 700)
        .await
        .unwrap()
        .expect("free");
    let leases = store.leases().await.unwrap();
    assert_eq!(
        leases
            .iter()
            .map(|l| (l.shard, l.owner.as_str(), l.expires_at))
            .collect::<Vec<_>>(),
        [(1, "b", 700), (3, "a", 700)],
        "in shard order"
    );
}

/// Processes say they are alive; a stopped one leaves, and long-expired ones
/// go with it.
async fn members_say_they_are_alive(store: &Store) {
    let member = |id: &str, expires_at: u64| MemberRow {
        id: id.into(),
        roles: "api,engine".into(),
        started_at: 10,
        expires_at,
    };
    store.heartbeat(&member("b", 100)).await.unwrap();
    store.heartbeat(&member("a", 100)).await.unwrap();
    store.heartbeat(&member("c", 50)).await.unwrap();
    store.heartbeat(&member("a", 300)).await.unwrap();
    let ids = |ms: Vec<MemberRow>| {
        ms.into_iter()
            .map(|m| (m.id, m.expires_at))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.members().await.unwrap()),
        [("a".into(), 300), ("b".into(), 100), ("c".into(), 50)]
    );
    store.leave("b", 60).await.unwrap();
    assert_eq!(ids(store.members().await.unwrap()), [("a".into(), 300)]);
}

/// A newer owner fences out the older one's commits.
async fn acquire_lease_fences_older_owners(store: &Store) {
    let old = store.acquire_lease(0, "one", 1).await.unwrap();
    let new = store.acquire_lease(0, "two", 1).await.unwrap();
    assert!(new > old);
    let stale = Commit {
        lease: Some((0, old)),
        runs: vec![run("r2", "acme", "running", "{}")],
        ..Commit::default()
    };
    assert!(store.commit(&stale).await.is_err());
    assert!(store.load_run("r2").await.unwrap().is_none());
    let fresh = Commit {
        lease: Some((0, new)),
        runs: vec![run("r2", "acme", "running", "{}")],
        ..Commit::default()
    };
    store.commit(&fresh).await.unwrap();
    assert!(store.load_run("r2").await.unwrap().is_some());
    // Another shard's lease is its own.
    let other = store.acquire_lease(1, "one", 1).await.unwrap();
    let on_other = Commit {
        lease: Some((1, other)),
        runs: vec![run("r3", "acme", "running", "{}")],
        ..Commit::default()
    };
    store.commit(&on_other).await.unwrap();
}

/// A bundle keeps its IR; each flow it names becomes its name's head, and
/// older versions stay reachable by version.
/// Uses of a registered version: recorded once per key, paged in time
/// order per version, gone with their tenant.
async fn registry_uses(store: &Store) {
    store.create_tenant(&tenant("acme")).await.unwrap();
    let used = |key: &'static str, version: i64, at: u64| RegistryUse {
        key,
        tenant: "acme",
        kind: "model",
        name: "churn",
        version,
        run: "r1",
        step: key,
        action: "look_up",
        at,
    };
    for u in [
        used("k3", 1, 30),
        used("k1", 1, 10),
        used("k2", 1, 20),
        used("k4", 2, 5),
    ] {
        store.record_registry_use(&u).await.unwrap();
    }
    // A redelivered call records nothing new.
    store
        .record_registry_use(&RegistryUse {
            action: "promote",
            ..used("k1", 1, 99)
        })
        .await
        .unwrap();
    let page = |after: Option<(u64, String)>, limit| async move {
        store
            .registry_uses("acme", "model", "churn", 1, after, limit)
            .await
            .unwrap()
    };
    let first = page(None, 2).await;
    let keys: Vec<&str> = first.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["k1", "k2"]);
    assert_eq!(
        (first[0].action.as_str(), first[0].used_at),
        ("look_up", 10)
    );
    let last = &first[1];
    let rest = page(Some((last.used_at, last.key.clone())), 2).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].key, "k3");
    let v2 = store
        .registry_uses("acme", "model", "churn", 2, None, 10)
        .await
        .unwrap();
    assert_eq!(v2.len(), 1);
    assert!(
        store
            .registry_uses("beta", "model", "churn", 1, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    common::purge(store, "acme").await;
    assert!(page(None, 10).await.is_empty());
}

/// A bundle deployed as sources keeps them; one deployed as IR has none.
async fn bundle_sources(store: &Store) {
    let sources = br#"{"a.eflow":"flow F() {}"}"#;
    store
        .deploy(&Deployment {
            bundle: "b-src",
            tenant: "acme",
            env: "dev",
            ir: b"{}",
            sources: Some(sources),
            flows: &[],
            schedules: &[],
            now: 1,
        })
        .await
        .unwrap();
    insert_bundle(store, "b-ir", "acme", "dev", b"{}", &[], 2)
        .await
        .unwrap();
    assert_eq!(
        store.bundle_sources("b-src").await.unwrap().as_deref(),
        Some(&sources[..])
    );
    assert_eq!(store.bundle_sources("b-ir").await.unwrap(), None);
    assert_eq!(store.bundle_sources("nope").await.unwrap(), None);
}

async fn bundles_and_flows(store: &Store) {
    let flows = |v: &str| vec![("F".to_string(), v.to_string())];
    insert_bundle(store, "b-1", "acme", "dev", b"{\"ir\":1}", &flows("v1"), 10)
        .await
        .unwrap();
    insert_bundle(
        store,
        "b-2",
        "acme",
        "prod",
        b"{\"ir\":2}",
        &flows("v2"),
        20,
    )
    .await
    .unwrap();
    insert_bundle(store, "b-3", "other", "dev", b"{}", &flows("v1"), 30)
        .await
        .unwrap();
    assert_eq!(
        store.bundle("b-2").await.unwrap(),
        Some(("acme".into(), "prod".into(), b"{\"ir\":2}".to_vec()))
    );
    assert!(store.bundle("nope").await.unwrap().is_none());
    let head = store.flow("acme", "F", None).await.unwrap().unwrap();
    assert_eq!(
        (
            head.version.as_str(),
            head.bundle.as_str(),
            head.head,
            head.deployed_at
        ),
        ("v2", "b-2", true, 20)
    );
    let old = store.flow("acme", "F", Some("v1")).await.unwrap().unwrap();
    assert_eq!((old.bundle.as_str(), old.head), ("b-1", false));
    assert!(store.flow("acme", "G", None).await.unwrap().is_none());
    assert!(store.flow("acme", "F", Some("v9")).await.unwrap().is_none());
    let acme = store.flows(Some("acme")).await.unwrap();
    assert_eq!(
        acme.iter().map(|f| f.version.as_str()).collect::<Vec<_>>(),
        ["v1", "v2"]
    );
    assert_eq!(store.flows(None).await.unwrap().len(), 3);
    // Deploying the old version again makes it the head again.
    insert_bundle(store, "b-4", "acme", "dev", b"{}", &flows("v1"), 40)
        .await
        .unwrap();
    let head = store.flow("acme", "F", None).await.unwrap().unwrap();
    assert_eq!((head.version.as_str(), head.bundle.as_str()), ("v1", "b-4"));
}

/// A tenant is created once; tenants are listed by id.
async fn tenants(store: &Store) {
    assert!(store.create_tenant(&tenant("zeta")).await.unwrap());
    assert!(store.create_tenant(&tenant("acme")).await.unwrap());
    let mut again = tenant("acme");
    again.max_active_runs = None;
    assert!(!store.create_tenant(&again).await.unwrap());
    assert_eq!(store.tenant("acme").await.unwrap(), Some(tenant("acme")));
    assert!(store.tenant("nope").await.unwrap().is_none());
    assert_eq!(
        store.tenants().await.unwrap(),
        vec![tenant("acme"), tenant("zeta")]
    );
}

/// A tenant is created with its egress rules; setting them replaces them whole,
/// for that tenant only; an unknown tenant is told apart.
async fn set_tenant_egress(store: &Store) {
    let mut acme = tenant("acme");
    acme.allow_egress = vec!["127.0.0.1".into(), "*.internal".into()];
    assert!(store.create_tenant(&acme).await.unwrap());
    assert!(store.create_tenant(&tenant("other")).await.unwrap());
    assert_eq!(store.tenant("acme").await.unwrap(), Some(acme.clone()));

    let rules = vec!["10.0.0.0/8".to_string()];
    assert!(store.set_tenant_egress("acme", &rules).await.unwrap());
    let got = store.tenant("acme").await.unwrap().unwrap();
    assert_eq!(got.allow_egress, rules);
    assert_eq!(
        got.max_active_runs, acme.max_active_runs,
        "nothing else changes"
    );
    assert_eq!(store.tenant("other").await.unwrap(), Some(tenant("other")));

    assert!(store.set_tenant_egress("acme", &[]).await.unwrap());
    assert!(
        store
            .tenant("acme")
            .await
            .unwrap()
            .unwrap()
            .allow_egress
            .is_empty()
    );
    assert!(!store.set_tenant_egress("nope", &rules).await.unwrap());
    assert!(store.tenant("nope").await.unwrap().is_none());
}

async fn set_tenant_retention(store: &Store) {
    assert!(store.create_tenant(&tenant("acme")).await.unwrap());
    assert_eq!(
        store
            .tenant("acme")
            .await
            .unwrap()
            .unwrap()
            .history_retention_ms,
        None
    );
    assert!(
        store
            .set_tenant_retention("acme", Some(3_600_000))
            .await
            .unwrap()
    );
    let got = store.tenant("acme").await.unwrap().unwrap();
    assert_eq!(got.history_retention_ms, Some(3_600_000));
    assert_eq!(
        got.allow_egress,
        tenant("acme").allow_egress,
        "nothing else changes"
    );
    assert!(store.set_tenant_retention("acme", None).await.unwrap());
    assert_eq!(store.tenant("acme").await.unwrap(), Some(tenant("acme")));
    assert!(!store.set_tenant_retention("nope", Some(1)).await.unwrap());
}

/// Rows of `run` in each per-run table.
async fn rows_of(store: &Store, run: &str) -> i64 {
    let mut n = store.events_of(run, None, 1000).await.unwrap().len() as i64;
    n += i64::from(store.load_run(run).await.unwrap().is_some());
    n += store
        .fanout_results(run, "ys", None, 1000)
        .await
        .unwrap()
        .len() as i64;
    n += store
        .outbox()
        .await
        .unwrap()
        .iter()
        .filter(|(_, r, _)| r == run)
        .count() as i64;
    n += i64::from(store.approval(run, "ok").await.unwrap().is_some());
    n
}

/// A finished run leaves once it finished by the time given and the history
/// holds its every event; a run in progress, one with an event past the
/// history's cursor and one with an effect in the outbox stay.
async fn sweep_finished(store: &Store) {
    let done = |id: &str, status: &'static str, updated_at: u64| {
        let mut w = run(id, "acme", status, "{}");
        w.updated_at = updated_at;
        w
    };
    commit(store, |c| {
        c.runs.push(done("r-old", "succeeded", 2));
        c.runs.push(done("r-live", "running", 2));
        c.runs.push(done("r-new", "failed", 50));
        c.runs.push(done("r-unread", "cancelled", 2));
        c.runs.push(done("r-owes", "succeeded", 2));
        for r in ["r-old", "r-live", "r-new", "r-owes"] {
            c.events.push(event(r, 0));
        }
        c.timers.push(timer("r-old", "t", 1, 0));
        c.approvals.push(approval("r-old", "acme", 1));
        c.outbox.push((1, "r-owes".into(), b"{}".to_vec()));
    })
    .await;
    let held_through = store.max_event_pos().await.unwrap();
    commit(store, |c| c.events.push(event("r-unread", 0))).await;
    assert!(rows_of(store, "r-old").await >= 3);
    assert_eq!(
        store
            .sweep_finished(held_through, 10, 10, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(rows_of(store, "r-old").await, 0);
    assert!(
        store
            .claim_timers(0, 100, 100, 200, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for r in ["r-live", "r-new", "r-unread", "r-owes"] {
        assert!(store.load_run(r).await.unwrap().is_some(), "{r} stays");
    }
    // A server-made id leaves nothing behind.
    assert_eq!(store.swept_run("r-old").await.unwrap(), None);
    assert_eq!(
        store
            .sweep_finished(held_through, 10, 10, 100)
            .await
            .unwrap(),
        0
    );
    // Later, with the history further on, the others finished go too.
    let all = store.max_event_pos().await.unwrap();
    assert_eq!(store.sweep_finished(all, 100, 100, 100).await.unwrap(), 2);
    assert!(store.load_run("r-owes").await.unwrap().is_some());
    let mut c = Commit::default();
    c.outbox_deleted.push(1);
    store.commit(&c).await.unwrap();
    assert_eq!(store.sweep_finished(all, 100, 100, 1).await.unwrap(), 1);
    assert!(store.load_run("r-live").await.unwrap().is_some());
    assert_eq!(
        store.active_runs().await.unwrap(),
        vec![("acme".to_string(), None, 1)]
    );
}

/// Failed runs leave by their own time (`failed_before`, the retry
/// window), the others by theirs, oldest first within the batch's limit.
async fn sweep_keeps_failed_runs_for_their_retry_window(store: &Store) {
    let done = |id: &str, status: &'static str, updated_at: u64| {
        let mut w = run(id, "acme", status, "{}");
        w.updated_at = updated_at;
        w
    };
    commit(store, |c| {
        c.runs.push(done("r-ok", "succeeded", 5));
        c.runs.push(done("r-failed", "failed", 5));
        c.runs.push(done("r-failed-old", "failed", 1));
        c.runs.push(done("r-gone", "cancelled", 5));
    })
    .await;
    let all = store.max_event_pos().await.unwrap();
    // Past `sweep_after` for all, inside the retry window for the failed.
    assert_eq!(store.sweep_finished(all, 10, 0, 100).await.unwrap(), 2);
    for r in ["r-ok", "r-gone"] {
        assert!(store.load_run(r).await.unwrap().is_none(), "{r} left");
    }
    for r in ["r-failed", "r-failed-old"] {
        assert!(store.load_run(r).await.unwrap().is_some(), "{r} stays");
    }
    // The window passed for the older one only.
    assert_eq!(store.sweep_finished(all, 10, 2, 100).await.unwrap(), 1);
    assert!(store.load_run("r-failed-old").await.unwrap().is_none());
    assert!(store.load_run("r-failed").await.unwrap().is_some());
    assert_eq!(store.sweep_finished(all, 10, 10, 1).await.unwrap(), 1);
    assert!(store.load_run("r-failed").await.unwrap().is_none());
}

/// A failed run written as running again (a retry) is active again: in the
/// quota's count, its schedule's runs in progress and no longer the
/// sweeper's.
async fn a_retried_run_is_active_again(store: &Store) {
    let scheduled = |status| {
        let mut r = run("s1", "acme", status, "{}");
        r.meta.schedule = Some("acme.F.0".into());
        r.updated_at = 5;
        r
    };
    commit(store, |c| c.runs.push(scheduled("failed"))).await;
    assert!(store.active_runs().await.unwrap().is_empty());
    assert!(
        store
            .active_runs_of_schedule("acme.F.0")
            .await
            .unwrap()
            .is_empty()
    );
    commit(store, |c| c.runs.push(scheduled("running"))).await;
    assert_eq!(
        store.active_runs().await.unwrap(),
        vec![("acme".to_string(), None, 1)]
    );
    assert_eq!(
        store.active_runs_of_schedule("acme.F.0").await.unwrap(),
        vec!["s1".to_string()]
    );
    let all = store.max_event_pos().await.unwrap();
    assert_eq!(store.sweep_finished(all, 10, 10, 100).await.unwrap(), 0);
    assert!(store.load_run("s1").await.unwrap().is_some());
}

/// A swept run a start may name again leaves its id (a start finds it in
/// `existing_runs`), and a fan-out parent its results, until forgotten.
async fn sweep_keeps_what_a_start_or_a_results_page_needs(store: &Store) {
    commit(store, |c| {
        c.runs.push(run("acme:churn-1", "acme", "succeeded", "{}"));
        c.runs.push(run("r-fan", "acme", "succeeded", "{}"));
        c.runs.push(run("r-fan.ys.0.1", "acme", "succeeded", "{}"));
        c.results.push(eflow_runtime::store::ResultWrite {
            run: "r-fan".into(),
            node: "ys".into(),
            index: 0,
            output: b"4".to_vec(),
        });
    })
    .await;
    assert_eq!(store.sweep_finished(0, 10, 10, 100).await.unwrap(), 3);
    for r in ["acme:churn-1", "r-fan", "r-fan.ys.0.1"] {
        assert!(store.load_run(r).await.unwrap().is_none(), "{r}");
        assert_eq!(
            store.swept_run(r).await.unwrap().as_deref(),
            Some("acme"),
            "{r}"
        );
    }
    let mut found = store
        .existing_runs(&["acme:churn-1", "r-fan", "r-other"])
        .await
        .unwrap();
    found.sort();
    assert_eq!(found, vec!["acme:churn-1".to_string(), "r-fan".into()]);
    assert_eq!(
        store.fanout_results("r-fan", "ys", None, 10).await.unwrap(),
        vec![(0, json!(4))]
    );
    assert!(
        store
            .forget_swept(&["r-fan", "acme:churn-1"])
            .await
            .unwrap()
            >= 3
    );
    assert!(
        store
            .fanout_results("r-fan", "ys", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.swept_run("acme:churn-1").await.unwrap(), None);
    assert_eq!(
        store.swept_run("r-fan.ys.0.1").await.unwrap().as_deref(),
        Some("acme")
    );
    // By tenant and time: the run finished at 2, so `before` 2 keeps it.
    assert_eq!(store.expire_swept("acme", 2, 10).await.unwrap(), 0);
    assert_eq!(store.expire_swept("other", 3, 10).await.unwrap(), 0);
    assert_eq!(store.expire_swept("acme", 3, 10).await.unwrap(), 1);
    assert_eq!(store.swept_run("r-fan.ys.0.1").await.unwrap(), None);
}

async fn purge_tenant_removes_what_swept_runs_left(store: &Store) {
    assert!(store.create_tenant(&tenant("acme")).await.unwrap());
    commit(store, |c| {
        c.runs.push(run("r-fan", "acme", "succeeded", "{}"));
        c.runs.push(run("other:x", "other", "succeeded", "{}"));
        c.results.push(eflow_runtime::store::ResultWrite {
            run: "r-fan".into(),
            node: "ys".into(),
            index: 0,
            output: b"4".to_vec(),
        });
    })
    .await;
    assert_eq!(store.sweep_finished(0, 10, 10, 100).await.unwrap(), 2);
    assert!(common::purge(store, "acme").await >= 2);
    assert!(
        store
            .fanout_results("r-fan", "ys", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.swept_run("r-fan").await.unwrap(), None);
    assert_eq!(
        store.swept_run("other:x").await.unwrap().as_deref(),
        Some("other")
    );
}

/// Deploys a bundle and its flows, without schedules.
async fn insert_bundle(
    store: &Store,
    bundle: &str,
    tenant: &str,
    env: &str,
    ir: &[u8],
    flows: &[(String, String)],
    now: u64,
) -> Result<(), eflow_runtime::store::Error> {
    store
        .deploy(&Deployment {
            bundle,
            tenant,
            env,
            ir,
            sources: None,
            flows,
            schedules: &[],
            now,
        })
        .await
}

/// Deploys `rows` as the schedules of `flow` (with an empty bundle).
async fn replace_schedules(
    store: &Store,
    tenant: &str,
    flow: &str,
    rows: &[ScheduleRow],
) -> Result<(), eflow_runtime::store::Error> {
    store
        .deploy(&Deployment {
            bundle: &format!("b-{tenant}-schedules"),
            tenant,
            env: "dev",
            ir: b"{}",
            sources: None,
            flows: &[],
            schedules: &[(flow.to_string(), rows.to_vec())],
            now: 0,
        })
        .await
}

fn hold(owner: &str, now: u64) -> PurgeHold {
    PurgeHold {
        owner: owner.into(),
        now,
        until: now + 30,
    }
}

/// A purge is recorded from its beginning to its end; meanwhile the tenant
/// cannot be created again, and a tenant being purged registers nothing.
async fn purges(store: &Store) {
    assert_eq!(
        store.begin_purge("acme", &hold("a", 1)).await.unwrap(),
        PurgeBegun::NoTenant
    );
    store.create_tenant(&tenant("acme")).await.unwrap();
    store.create_tenant(&tenant("beta")).await.unwrap();
    let gone = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    assert_eq!(
        gone(
            store
                .gone_tenants(&["acme", "beta", "nobody"])
                .await
                .unwrap()
        ),
        ["nobody"],
        "a tenant that does not exist is gone"
    );
    assert!(store.gone_tenants(&[]).await.unwrap().is_empty());
    assert_eq!(
        store.begin_purge("acme", &hold("a", 2)).await.unwrap(),
        PurgeBegun::Held
    );
    assert_eq!(store.pending_purges().await.unwrap(), ["acme"]);
    assert_eq!(
        gone(
            store
                .gone_tenants(&["acme", "beta", "nobody"])
                .await
                .unwrap()
        ),
        ["acme", "nobody"],
        "a tenant being purged is gone"
    );
    let entry = NewEntry {
        key: "k1",
        tenant: "acme",
        kind: "model",
        name: "churn",
        run: "r1",
        step: "reg",
        inputs: &json!({}),
        now: 3,
    };
    assert!(store.register(&entry, |_| json!({})).await.is_err());
    assert!(store.purge_tenant("acme", "a").await.unwrap().is_some());
    // Until the purge ends the id is neither free nor a tenant; beginning it
    // again (a retried purge) is allowed to its holder.
    assert!(!store.create_tenant(&tenant("acme")).await.unwrap());
    assert!(store.tenant("acme").await.unwrap().is_none());
    assert_eq!(
        store.begin_purge("acme", &hold("a", 4)).await.unwrap(),
        PurgeBegun::Held
    );
    assert!(store.end_purge("acme", "a").await.unwrap());
    assert!(store.pending_purges().await.unwrap().is_empty());
    assert!(store.create_tenant(&tenant("acme")).await.unwrap());
}

/// A purge is its holder's while its lease lasts: another process neither
/// takes it over nor deletes, nor ends it; once the lease ran out (the
/// holder stopped) another takes it over, and the first, coming back, can
/// no longer delete anything, not even the tenant created again after the
/// purge ended. (The bug this guards: a process starting during another's
/// purge finished it after the tenant had been created again.)
async fn a_purge_is_its_holders(store: &Store) {
    store.create_tenant(&tenant("acme")).await.unwrap();
    assert_eq!(
        store.begin_purge("acme", &hold("a", 100)).await.unwrap(),
        PurgeBegun::Held
    );
    assert_eq!(
        store.begin_purge("acme", &hold("b", 110)).await.unwrap(),
        PurgeBegun::Busy {
            owner: "a".into(),
            until: 130
        },
        "a live holder's purge is not taken over"
    );
    assert_eq!(store.purge_tenant("acme", "b").await.unwrap(), None);
    assert!(!store.end_purge("acme", "b").await.unwrap());
    assert!(!store.hold_purge("acme", &hold("b", 110)).await.unwrap());
    assert!(
        store.tenant("acme").await.unwrap().is_some(),
        "b deleted nothing"
    );
    assert!(store.abandoned_purges(120).await.unwrap().is_empty());
    // a renews its hold, then stops past it.
    assert!(store.hold_purge("acme", &hold("a", 120)).await.unwrap());
    assert!(store.abandoned_purges(149).await.unwrap().is_empty());
    assert_eq!(store.abandoned_purges(151).await.unwrap(), ["acme"]);
    assert_eq!(
        store.begin_purge("acme", &hold("b", 151)).await.unwrap(),
        PurgeBegun::Held,
        "a stopped holder's purge is taken over"
    );
    assert!(store.abandoned_purges(151).await.unwrap().is_empty());
    assert_eq!(store.purge_tenant("acme", "a").await.unwrap(), None);
    assert!(!store.hold_purge("acme", &hold("a", 152)).await.unwrap());
    assert!(store.purge_tenant("acme", "b").await.unwrap().is_some());
    assert!(!store.end_purge("acme", "a").await.unwrap());
    assert_eq!(store.pending_purges().await.unwrap(), ["acme"]);
    assert!(store.end_purge("acme", "b").await.unwrap());
    // The tenant is created again: a, coming back, deletes nothing of it.
    assert!(store.create_tenant(&tenant("acme")).await.unwrap());
    assert_eq!(store.purge_tenant("acme", "a").await.unwrap(), None);
    assert_eq!(store.purge_tenant("acme", "b").await.unwrap(), None);
    assert!(!store.end_purge("acme", "a").await.unwrap());
    assert!(store.tenant("acme").await.unwrap().is_some());
}

/// Purging a tenant removes its rows in every table, and only its rows.
async fn purge_tenant(store: &Store) {
    for t in ["acme", "other"] {
        store.create_tenant(&tenant(t)).await.unwrap();
        insert_bundle(
            store,
            &format!("b-{t}"),
            t,
            "dev",
            b"{}",
            &[("F".into(), "v1".into())],
            1,
        )
        .await
        .unwrap();
        store
            .insert_token(&token(&format!("t-{t}"), Some(t), 1, None))
            .await
            .unwrap();
        replace_schedules(store, t, "F", &[schedule(&format!("{t}.F.0"), t, 1_000)])
            .await
            .unwrap();
        let r = format!("{t}-run");
        commit(store, |c| {
            c.runs.push(run(&r, t, "running", "{}"));
            c.events.push(event(&r, 0));
            c.timers.push(timer(&r, "t", 100, 0));
            c.approvals.push(approval(&r, t, 1));
        })
        .await;
    }
    let inputs = json!({});
    store
        .register(
            &NewEntry {
                key: "k",
                tenant: "acme",
                kind: "model",
                name: "churn",
                run: "acme-run",
                step: "register",
                inputs: &inputs,
                now: 1,
            },
            |v| json!({ "version": v }),
        )
        .await
        .unwrap();
    assert!(common::purge(store, "acme").await >= 9);
    assert!(store.load_run("acme-run").await.unwrap().is_none());
    assert!(
        store
            .events_of("acme-run", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.registry("acme", None, None).await.unwrap().is_empty());
    assert!(
        store
            .approvals(Some("acme"), false)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.schedules(Some("acme")).await.unwrap().is_empty());
    assert!(store.flows(Some("acme")).await.unwrap().is_empty());
    assert!(store.bundle("b-acme").await.unwrap().is_none());
    assert!(store.token("hash-t-acme").await.unwrap().is_none());
    assert!(store.tenant("acme").await.unwrap().is_none());
    let timers = store.claim_timers(0, 200, 200, 1_000, 10).await.unwrap();
    assert_eq!(
        timers.iter().map(|t| t.run.as_str()).collect::<Vec<_>>(),
        ["other-run"]
    );
    // The other tenant is untouched.
    assert!(store.load_run("other-run").await.unwrap().is_some());
    assert_eq!(
        store.events_of("other-run", None, 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.approvals(Some("other"), false).await.unwrap().len(),
        1
    );
    assert_eq!(store.schedules(Some("other")).await.unwrap().len(), 1);
    assert_eq!(store.flows(Some("other")).await.unwrap().len(), 1);
    assert!(store.bundle("b-other").await.unwrap().is_some());
    assert_eq!(
        store.token("hash-t-other").await.unwrap(),
        Some(token("t-other", Some("other"), 1, None))
    );
    assert!(store.tenant("other").await.unwrap().is_some());
}

/// A token row with id `id` and hash `hash-ID`.
fn token(id: &str, tenant: Option<&str>, created_at: u64, expires_at: Option<u64>) -> TokenRow {
    TokenRow {
        id: id.into(),
        hash: format!("hash-{id}"),
        tenant: tenant.map(str::to_string),
        name: format!("{id}@example.com"),
        last4: "wxyz".into(),
        created_at,
        expires_at,
    }
}

/// A token is found by its hash and by its id, names its tenant (none for an
/// admin), and only admin tokens not expired are counted.
async fn tokens(store: &Store) {
    assert_eq!(store.admin_token_count(10).await.unwrap(), 0);
    let admin = token("t-admin", None, 1, None);
    let acme = token("t-acme", Some("acme"), 2, Some(100));
    store.insert_token(&admin).await.unwrap();
    store.insert_token(&acme).await.unwrap();
    assert_eq!(
        store.token("hash-t-admin").await.unwrap(),
        Some(admin.clone())
    );
    assert_eq!(
        store.token("hash-t-acme").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(store.token("hash-nope").await.unwrap(), None);
    assert_eq!(store.token_by_id("t-acme").await.unwrap(), Some(acme));
    assert_eq!(store.token_by_id("t-nope").await.unwrap(), None);
    assert_eq!(store.admin_token_count(10).await.unwrap(), 1);
    store
        .insert_token(&token("t-admin2", None, 3, Some(50)))
        .await
        .unwrap();
    assert_eq!(store.admin_token_count(49).await.unwrap(), 2);
    assert_eq!(
        store.admin_token_count(50).await.unwrap(),
        1,
        "expired at 50"
    );
    // A hash is one token, and so is an id.
    let mut again = token("t-other", None, 3, None);
    again.hash = "hash-t-acme".into();
    assert!(store.insert_token(&again).await.is_err());
    let mut again = token("t-acme", None, 3, None);
    again.hash = "hash-fresh".into();
    assert!(store.insert_token(&again).await.is_err());
}

/// The tokens of a tenant, or the admin tokens, oldest first; nobody else's.
async fn tokens_by_owner(store: &Store) {
    for t in [
        token("t-b", Some("acme"), 2, None),
        token("t-a", Some("acme"), 1, Some(9)),
        token("t-c", Some("other"), 1, None),
        token("t-d", None, 1, None),
    ] {
        store.insert_token(&t).await.unwrap();
    }
    let ids = |rows: Vec<TokenRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.tokens(Some("acme")).await.unwrap()),
        ["t-a", "t-b"]
    );
    assert_eq!(ids(store.tokens(Some("other")).await.unwrap()), ["t-c"]);
    assert_eq!(ids(store.tokens(None).await.unwrap()), ["t-d"]);
    assert!(store.tokens(Some("nobody")).await.unwrap().is_empty());
}

/// Revoking deletes the token: it is found by neither hash nor id.
async fn revoke_token(store: &Store) {
    store
        .insert_token(&token("t-a", Some("acme"), 1, None))
        .await
        .unwrap();
    assert!(store.revoke_token("t-a").await.unwrap());
    assert!(!store.revoke_token("t-a").await.unwrap(), "gone already");
    assert_eq!(store.token("hash-t-a").await.unwrap(), None);
    assert_eq!(store.token_by_id("t-a").await.unwrap(), None);
}

/// Rotating adds the new token and deletes the old one, or lets it expire
/// (never later than it would have); nothing is added for an unknown token.
async fn rotate_token(store: &Store) {
    store
        .insert_token(&token("t-a", Some("acme"), 1, None))
        .await
        .unwrap();
    let b = token("t-b", Some("acme"), 5, None);
    assert!(store.rotate_token("t-a", None, &b).await.unwrap());
    assert_eq!(store.token_by_id("t-a").await.unwrap(), None);
    assert_eq!(store.token("hash-t-b").await.unwrap(), Some(b));
    // With a grace period the old one expires then.
    let c = token("t-c", Some("acme"), 6, None);
    assert!(store.rotate_token("t-b", Some(100), &c).await.unwrap());
    assert_eq!(
        store
            .token_by_id("t-b")
            .await
            .unwrap()
            .and_then(|r| r.expires_at),
        Some(100)
    );
    assert!(store.token_by_id("t-c").await.unwrap().is_some());
    // A grace period never makes a token live longer than it would have.
    let d = token("t-d", Some("acme"), 7, None);
    assert!(store.rotate_token("t-b", Some(500), &d).await.unwrap());
    assert_eq!(
        store
            .token_by_id("t-b")
            .await
            .unwrap()
            .and_then(|r| r.expires_at),
        Some(100)
    );
    // An unknown token: nothing is added.
    let e = token("t-e", Some("acme"), 8, None);
    assert!(!store.rotate_token("t-nope", None, &e).await.unwrap());
    assert_eq!(store.token_by_id("t-e").await.unwrap(), None);
}

/// Approvals are listed by tenant and state, the newest attempt is the one
/// a step awaits, and each is decided once.
async fn approvals(store: &Store) {
    commit(store, |c| {
        c.approvals.push(approval("r2", "acme", 1));
        c.approvals.push(approval("r2", "acme", 2));
        c.approvals.push(approval("o1", "other", 1));
    })
    .await;
    assert_eq!(store.approvals(Some("acme"), true).await.unwrap().len(), 2);
    assert_eq!(store.approvals(None, true).await.unwrap().len(), 3);
    let newest = store.approval("r2", "ok").await.unwrap().unwrap();
    assert_eq!(
        (newest.attempt, newest.tenant.as_str(), &newest.request),
        (2, "acme", &json!({"q": 1}))
    );
    assert!(store.approval("r2", "other-step").await.unwrap().is_none());
    // A decision is committed with the transition its step's completion makes;
    // the first close of a row wins.
    commit(store, |c| {
        c.approvals_closed
            .push(close("r2", 2, 6, Some(json!({"approved": true}))))
    })
    .await;
    commit(store, |c| {
        c.approvals_closed
            .push(close("r2", 2, 7, Some(json!({"approved": false}))))
    })
    .await;
    let decided = store.approval("r2", "ok").await.unwrap().unwrap();
    assert_eq!(
        (decided.decided_at, decided.decision),
        (Some(6), Some(json!({"approved": true})))
    );
    assert_eq!(store.approvals(Some("acme"), true).await.unwrap().len(), 1);
    assert_eq!(store.approvals(Some("acme"), false).await.unwrap().len(), 2);
    // Closing an approval no longer awaited takes it off the pending list.
    commit(store, |c| {
        c.approvals_closed.push(close("r2", 1, 8, None));
    })
    .await;
    assert!(
        store
            .approvals(Some("acme"), true)
            .await
            .unwrap()
            .is_empty()
    );
}

fn close(run: &str, attempt: u32, at: u64, decision: Option<serde_json::Value>) -> ApprovalClose {
    ApprovalClose {
        run: run.into(),
        step: "ok".into(),
        attempt,
        at,
        decision: decision.map(|d| serde_json::to_vec(&d).unwrap()),
    }
}

/// The registry counts versions per name and is idempotent by key.
async fn register(store: &Store) {
    // Only a live tenant registers.
    let early = NewEntry {
        key: "k0",
        tenant: "acme",
        kind: "model",
        name: "churn",
        run: "r1",
        step: "reg",
        inputs: &json!({}),
        now: 1,
    };
    assert!(store.register(&early, |_| json!({})).await.is_err());
    store.create_tenant(&tenant("acme")).await.unwrap();
    let inputs = json!({"name": "churn"});
    let entry = |key: &'static str, name: &'static str| NewEntry {
        key,
        tenant: "acme",
        kind: "model",
        name,
        run: "r2",
        step: "register",
        inputs: &inputs,
        now: 9,
    };
    let make = |v: i64| json!({ "version": v });
    let v1 = store.register(&entry("k1", "churn"), make).await.unwrap();
    let again = store.register(&entry("k1", "churn"), make).await.unwrap();
    let v2 = store.register(&entry("k2", "churn"), make).await.unwrap();
    let other = store.register(&entry("k3", "fraud"), make).await.unwrap();
    assert_eq!(
        (v1.version, again.version, v2.version, other.version),
        (1, 1, 2, 1)
    );
    assert_eq!(again, v1);
    assert_eq!(
        (v1.entry.clone(), v1.inputs.clone(), v1.registered_at),
        (json!({"version": 1}), inputs.clone(), 9)
    );
    assert_eq!(store.registry("acme", None, None).await.unwrap().len(), 3);
    assert_eq!(
        store
            .registry("acme", Some("model"), Some("churn"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        store
            .registry("acme", Some("dataset"), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .registry("other", None, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Moving a version to a stage rewrites its entry and only its entry.
async fn registry_set_stage(store: &Store) {
    store.create_tenant(&tenant("acme")).await.unwrap();
    let inputs = json!({});
    for key in ["k1", "k2"] {
        store
            .register(
                &NewEntry {
                    key,
                    tenant: "acme",
                    kind: "model",
                    name: "churn",
                    run: "r",
                    step: "register",
                    inputs: &inputs,
                    now: 1,
                },
                |v| json!({ "version": v, "stage": "staging" }),
            )
            .await
            .unwrap();
    }
    let moved = store
        .registry_set_stage("acme", "model", "churn", 1, "production")
        .await
        .unwrap();
    assert_eq!(moved, Some(json!({"version": 1, "stage": "production"})));
    let rows = store
        .registry("acme", Some("model"), Some("churn"))
        .await
        .unwrap();
    let stage = |v: i64| {
        rows.iter()
            .find(|r| r.version == v)
            .map(|r| r.entry["stage"].clone())
    };
    assert_eq!(stage(1), Some(json!("production")));
    assert_eq!(stage(2), Some(json!("staging")));
    assert!(
        store
            .registry_set_stage("acme", "model", "churn", 9, "production")
            .await
            .unwrap()
            .is_none()
    );
}

/// A deploy replaces a flow's schedules; due ones are claimed once; an
/// update records the watermark and keeps the newest start.
async fn schedules(store: &Store) {
    replace_schedules(
        store,
        "sched",
        "F",
        &[
            schedule("s1", "sched", 1_000),
            schedule("s2", "sched", 9_000),
        ],
    )
    .await
    .unwrap();
    replace_schedules(store, "else", "F", &[schedule("e1", "else", 9_000)])
        .await
        .unwrap();
    let due = store.claim_schedules(0, 2_000, 60_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s1"]
    );
    assert!(
        store
            .claim_schedules(0, 2_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .update_schedule("s1", Some(2_000), Some(1_000), Some(3_000), None)
        .await
        .unwrap();
    store
        .update_schedule("s1", Some(2_500), None, Some(3_000), None)
        .await
        .unwrap();
    store
        .update_schedule("s1", Some(2_600), Some(500), Some(3_000), Some(2))
        .await
        .unwrap();
    let s1 = store.schedule("s1").await.unwrap().unwrap();
    assert_eq!(
        (s1.handled_through, s1.last_start, s1.next_due, s1.buffered),
        (Some(2_600), Some(1_000), Some(3_000), Some(2))
    );
    assert!(store.schedule("nope").await.unwrap().is_none());
    // The update released the claim: due again at its next time.
    assert_eq!(
        store
            .claim_schedules(0, 3_000, 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // A redeploy keeps what it is given and drops schedules no longer declared.
    let mut again = schedule("s1", "sched", 4_000);
    again.last_start = s1.last_start;
    again.handled_through = s1.handled_through;
    replace_schedules(store, "sched", "F", &[again])
        .await
        .unwrap();
    let all = store.schedules(Some("sched")).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].last_start, all[0].next_due),
        (Some(1_000), Some(4_000))
    );
    assert_eq!(store.schedules(None).await.unwrap().len(), 2);
}

/// Paused schedules are not claimed; resuming moves the watermark to now.
async fn set_schedule_paused(store: &Store) {
    replace_schedules(store, "sched", "F", &[schedule("s1", "sched", 1_000)])
        .await
        .unwrap();
    assert!(
        store
            .set_schedule_paused("s1", true, 5_000, None)
            .await
            .unwrap()
    );
    assert!(store.schedule("s1").await.unwrap().unwrap().paused);
    assert!(
        store
            .claim_schedules(0, 10_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .set_schedule_paused("s1", false, 11_000, Some(12_000))
            .await
            .unwrap()
    );
    let s1 = store.schedule("s1").await.unwrap().unwrap();
    assert_eq!(
        (s1.paused, s1.handled_through, s1.next_due),
        (false, Some(11_000), Some(12_000))
    );
    assert_eq!(
        store
            .claim_schedules(0, 12_000, 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        !store
            .set_schedule_paused("nope", true, 1, None)
            .await
            .unwrap()
    );
}

/// The first value stored under a key stays.
async fn setting_or_insert(store: &Store) {
    assert_eq!(
        store.setting_or_insert("key", b"first").await.unwrap(),
        b"first".to_vec()
    );
    assert_eq!(
        store.setting_or_insert("key", b"second").await.unwrap(),
        b"first".to_vec()
    );
    assert_eq!(
        store.setting_or_insert("other", b"x").await.unwrap(),
        b"x".to_vec()
    );
}

/// Schedules made through the API: held to a per-tenant limit, redefined,
/// deleted; a deploy leaves them, and moves those not pinned to its bundle.
async fn schedules_made_through_the_api(store: &Store) {
    let a = api_schedule("s-a", "acme", "F", Some("cust-1"));
    let mut pinned = api_schedule("s-b", "acme", "F", None);
    pinned.version = Some("v1".into());
    assert!(store.insert_schedule(&a, 2).await.unwrap());
    assert!(store.insert_schedule(&pinned, 2).await.unwrap());
    assert!(
        !store
            .insert_schedule(&api_schedule("s-c", "acme", "F", None), 2)
            .await
            .unwrap(),
        "a third passes the limit of 2"
    );
    assert!(store.schedule("s-c").await.unwrap().is_none());
    assert!(
        store
            .insert_schedule(&api_schedule("s-c", "else", "F", None), 2)
            .await
            .unwrap(),
        "another tenant's count is its own"
    );
    assert_eq!(store.schedule("s-a").await.unwrap().unwrap(), a);

    // A deploy of F replaces its declared schedules only, and moves the
    // unpinned API-made ones to the new bundle.
    store
        .deploy(&Deployment {
            bundle: "b-2",
            tenant: "acme",
            env: "dev",
            ir: b"{}",
            sources: None,
            flows: &[("F".to_string(), "v2".to_string())],
            schedules: &[("F".to_string(), vec![schedule("acme.F.0", "acme", 1)])],
            now: 10,
        })
        .await
        .unwrap();
    let a2 = store.schedule("s-a").await.unwrap().unwrap();
    assert_eq!(a2.bundle, "b-2");
    let b2 = store.schedule("s-b").await.unwrap().unwrap();
    assert_eq!(b2.bundle, "b-1", "pinned to its version");
    assert_eq!(store.schedules(Some("acme")).await.unwrap().len(), 3);

    // Redefined: what it is and when it is next due; what it started stays.
    store
        .update_schedule("s-a", Some(4_000), Some(4_000), Some(5_000), Some(4_500))
        .await
        .unwrap();
    let mut changed = a2.clone();
    changed.spec = b"{\"changed\":1}".to_vec();
    changed.key = Some("cust-2".into());
    changed.version = Some("v2".into());
    changed.paused = true;
    changed.handled_through = Some(6_000);
    changed.next_due = Some(7_000);
    assert!(store.redefine_schedule(&changed).await.unwrap());
    let got = store.schedule("s-a").await.unwrap().unwrap();
    assert_eq!(
        got,
        ScheduleRow {
            last_start: Some(4_000),
            buffered: None,
            ..changed.clone()
        }
    );
    let mut nope = changed.clone();
    nope.id = "s-nope".into();
    assert!(!store.redefine_schedule(&nope).await.unwrap());

    assert!(store.delete_schedule("s-a").await.unwrap());
    assert!(!store.delete_schedule("s-a").await.unwrap());
    assert!(store.schedule("s-a").await.unwrap().is_none());
}

/// Pages in id order, filtered by tenant, key and flow, after a cursor.
async fn schedule_pages(store: &Store) {
    let mut rows = Vec::new();
    for i in 0..7 {
        let key = if i % 2 == 0 {
            Some("even")
        } else {
            Some("odd")
        };
        let flow = if i < 4 { "F" } else { "G" };
        rows.push(api_schedule(&format!("s-{i}"), "acme", flow, key));
    }
    rows.push(api_schedule("s-x", "else", "F", Some("even")));
    store.insert_schedules(&rows).await.unwrap();
    let page = |tenant: Option<&str>,
                key: Option<&str>,
                flow: Option<&str>,
                after: Option<&str>,
                limit| {
        let q = ScheduleQuery {
            tenant: tenant.map(str::to_string),
            key: key.map(str::to_string),
            flow: flow.map(str::to_string),
            after: after.map(str::to_string),
            limit,
        };
        async move {
            store
                .schedule_page(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page(Some("acme"), Some("even"), None, None, 2).await,
        ["s-0", "s-2"]
    );
    assert_eq!(
        page(Some("acme"), Some("even"), None, Some("s-2"), 2).await,
        ["s-4", "s-6"]
    );
    assert!(
        page(Some("acme"), Some("even"), None, Some("s-6"), 2)
            .await
            .is_empty()
    );
    assert_eq!(
        page(Some("acme"), None, Some("G"), None, 10).await,
        ["s-4", "s-5", "s-6"]
    );
    assert_eq!(
        page(None, Some("even"), Some("F"), None, 10).await,
        ["s-0", "s-2", "s-x"]
    );
    assert_eq!(page(None, None, None, Some("s-6"), 10).await, ["s-x"]);
}

/// A loader's batch: the runs of many schedules in one read, which runs
/// exist, many schedules recorded in one transaction, the next due time.
async fn schedules_in_batches(store: &Store) {
    store
        .insert_schedules(&[
            schedule("s1", "acme", 3_000),
            schedule("s2", "acme", 2_000),
            schedule("s3", "acme", 9_000),
        ])
        .await
        .unwrap();
    assert_eq!(store.next_schedule_due(0, 0).await.unwrap(), Some(2_000));
    assert_eq!(store.next_schedule_due(1, 0).await.unwrap(), None);
    let claimed = store.claim_schedules(0, 3_000, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        store.next_schedule_due(0, 3_000).await.unwrap(),
        Some(9_000),
        "claimed ones are not waited for"
    );
    let mut a = meta("r1", "acme");
    a.schedule = Some("s1".into());
    let mut b = meta("r2", "acme");
    b.schedule = Some("s2".into());
    let mut c = meta("r3", "acme");
    c.schedule = Some("s2".into());
    commit(store, |x| {
        x.runs.push(RunWrite {
            meta: a,
            ..run("r1", "acme", "running", "{}")
        });
        x.runs.push(RunWrite {
            meta: b,
            ..run("r2", "acme", "succeeded", "{}")
        });
        x.runs.push(RunWrite {
            meta: c,
            ..run("r3", "acme", "created", "{}")
        });
    })
    .await;
    let mut active = store
        .active_runs_of_schedules(&["s1", "s2", "s3"])
        .await
        .unwrap();
    active.sort();
    assert_eq!(
        active,
        [
            ("s1".to_string(), "r1".to_string()),
            ("s2".to_string(), "r3".to_string())
        ]
    );
    let mut existing = store.existing_runs(&["r1", "r2", "nope"]).await.unwrap();
    existing.sort();
    assert_eq!(existing, ["r1", "r2"]);
    store
        .update_schedules(&[
            ScheduleUpdate {
                id: "s1".into(),
                handled_through: Some(3_000),
                last_start: Some(3_000),
                next_due: Some(4_000),
                buffered: None,
            },
            ScheduleUpdate {
                id: "s2".into(),
                handled_through: Some(3_000),
                last_start: None,
                next_due: Some(5_000),
                buffered: Some(2_000),
            },
        ])
        .await
        .unwrap();
    let s1 = store.schedule("s1").await.unwrap().unwrap();
    assert_eq!(
        (s1.handled_through, s1.last_start, s1.next_due),
        (Some(3_000), Some(3_000), Some(4_000))
    );
    let s2 = store.schedule("s2").await.unwrap().unwrap();
    assert_eq!((s2.next_due, s2.buffered), (Some(5_000), Some(2_000)));
    // Recorded releases the claims.
    assert_eq!(
        store
            .claim_schedules(0, 5_000, 60_000, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Values kept by reference: stored once per tenant and hash, byte for byte,
/// with the runs that refer to them; one no run refers to is dropped once
/// old enough, and an upload is kept only for a tenant that exists.
async fn values_kept_by_reference(store: &Store) {
    use eflow_runtime::store::ValueWrite;
    store.create_tenant(&tenant("acme")).await.unwrap();
    let value = |run: &str, hash: &str, body: Option<&[u8]>| ValueWrite {
        tenant: "acme".into(),
        run: run.into(),
        hash: hash.into(),
        body: body.map(<[u8]>::to_vec),
        at: 5,
    };
    commit(store, |c| {
        c.runs.push(run("r1", "acme", "running", "{}"));
        c.runs.push(run("r2", "acme", "running", "{}"));
        c.values.push(value("r1", "h1", Some(b"[1, 2]")));
        // Kept again in the same batch, and referred to by another run.
        c.values.push(value("r1", "h1", Some(b"[1, 2]")));
        c.values.push(value("r2", "h1", None));
    })
    .await;
    assert_eq!(
        store
            .values("acme", &["nope".into(), "h1".into()])
            .await
            .unwrap(),
        vec![("h1".to_string(), json!([1, 2]))]
    );
    assert_eq!(
        store.value_body("acme", "h1").await.unwrap(),
        Some(b"[1, 2]".to_vec()),
        "byte for byte"
    );
    assert_eq!(store.value_size("acme", "h1").await.unwrap(), Some(6));
    assert_eq!(store.value_body("other", "h1").await.unwrap(), None);
    assert!(store.run_refers_to("r2", "h1").await.unwrap());
    assert!(!store.run_refers_to("r3", "h1").await.unwrap());

    // Uploads: once, for a tenant that exists; referred to by a run that exists.
    assert!(store.put_value("acme", None, "h2", b"3", 6).await.unwrap());
    assert!(!store.put_value("acme", None, "h2", b"3", 6).await.unwrap());
    assert!(!store.put_value("ghost", None, "h9", b"3", 6).await.unwrap());
    assert_eq!(store.value_body("ghost", "h9").await.unwrap(), None);
    assert!(
        store
            .put_value("acme", Some("r1"), "h3", b"4", 7)
            .await
            .unwrap()
    );
    assert!(store.run_refers_to("r1", "h3").await.unwrap());
    // A run that does not exist refers to nothing; the value is kept.
    assert!(
        store
            .put_value("acme", Some("r9"), "h4", b"5", 7)
            .await
            .unwrap()
    );
    assert!(
        !store.run_refers_to("r9", "h4").await.unwrap(),
        "no such run"
    );

    // Dropped: only what no run refers to, kept before the time given.
    assert_eq!(store.drop_unreferenced_values(6, 10).await.unwrap(), 0);
    assert_eq!(store.drop_unreferenced_values(100, 10).await.unwrap(), 2);
    assert_eq!(store.value_body("acme", "h2").await.unwrap(), None);
    assert_eq!(store.value_body("acme", "h4").await.unwrap(), None);
    for kept in ["h1", "h3"] {
        assert!(
            store.value_body("acme", kept).await.unwrap().is_some(),
            "{kept}"
        );
    }
    let rows = store.per_run_rows().await.unwrap();
    assert!(rows.contains(&("run_values", 3)), "{rows:?}");
    assert!(rows.contains(&("runs", 2)), "{rows:?}");
}
