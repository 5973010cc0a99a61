//! The PostgreSQL store's own tests, beside the conformance suite
//! (`tests/store.rs`): the loaders' queries are index range scans over many
//! rows, and a reader of the event log never passes a position that a commit
//! still in flight holds.

mod common;

use std::time::Duration;

use common::cut::{Cut, authority, cutter, through};
use common::postgres::Schema;
use eflow_runtime::store::{
    Commit, Durability, EventWrite, PostgresStore, RunMeta, RunWrite, Store,
};
use sqlx::postgres::PgPoolOptions;

/// Rows in each big table: `EFLOW_PLAN_ROWS`, a million unless told (the
/// issue's figure is 10,000,000; the plans are the same, the fill is slower).
fn plan_rows() -> i64 {
    std::env::var("EFLOW_PLAN_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// Every loader's query, with a million timers, schedules, runs and events
/// (their statistics analysed), is an index range scan: no sequential scan
/// of a big table.
#[tokio::test]
async fn every_loaders_query_is_an_index_range_scan() {
    let Some(schema) = Schema::create("plans").await else {
        return;
    };
    let store = Store::open(&schema.url, Durability::Normal).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&schema.url)
        .await
        .unwrap();
    let n = plan_rows();
    // Filled in the server: 64 partitions; due times spread over n seconds,
    // so a loader's "due by now" is a thin slice; a tenth of the runs
    // finished, each with one event.
    for fill in [
        "INSERT INTO timers (run, timer, partition, due_at, claimed_until, event) \
         SELECT 'r-' || i, 't', i % 64, i * 1000, 0, '\\x7b7d' FROM generate_series(1, $1) i",
        "INSERT INTO schedules (id, tenant, flow, bundle, position, spec, paused, next_due, partition, declared) \
         SELECT 's-' || i, 't' || (i % 100), 'F', 'b', 0, '\\x7b7d', i % 17 = 0, i * 1000, i % 64, false \
         FROM generate_series(1, $1) i",
        "INSERT INTO runs (id, tenant, bundle, status, created_at, updated_at, finished_at, state) \
         SELECT 'r-' || i, 't' || (i % 100), 'b', CASE WHEN i % 10 = 0 THEN 'succeeded' ELSE 'running' END, \
         i, i * 1000, CASE WHEN i % 10 = 0 THEN i * 1000 END, '\\x7b7d' FROM generate_series(1, $1) i",
        "INSERT INTO events (run, seq, id, at, status, body) \
         SELECT 'r-' || i, 0, 'e0', i, 'running', '\\x7b7d' FROM generate_series(1, $1) i",
    ] {
        sqlx::query(fill).bind(n).execute(&pool).await.unwrap();
    }
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    let now = n / 100 * 1000;
    for (name, sql) in PostgresStore::PLANNED_QUERIES {
        let (index, params): (&str, Vec<i64>) = match name {
            "claim_timers" => ("timers_due", vec![now + 60_000, 7, now, now, 100]),
            "claim_schedules" => ("schedules_due", vec![now + 60_000, 7, now, 100]),
            "next_schedule_due" => ("schedules_due", vec![7, now]),
            "sweep_candidates" => ("runs_finished", vec![now, n, 100]),
            "sweep_failed_candidates" => ("runs_failed", vec![now, n, 100]),
            other => panic!("no parameters for the query `{other}`: add them here"),
        };
        let explain = format!("EXPLAIN {sql}");
        let mut q = sqlx::query_scalar::<_, String>(&explain);
        for p in &params {
            q = q.bind(*p);
        }
        let plan = q.fetch_all(&pool).await.unwrap().join("\n");
        eprintln!("{name} at {n} rows:\n{plan}\n");
        assert!(
            plan.contains(&format!("Index Scan using {index}"))
                || plan.contains(&format!("Index Only Scan using {index}")),
            "{name}: a range scan of {index} expected:\n{plan}"
        );
        for table in ["timers", "schedules", "runs", "events"] {
            assert!(
                !plan.contains(&format!("Seq Scan on {table}")),
                "{name}: a sequential scan of {table}:\n{plan}"
            );
        }
    }
    // And the claims take what the plans say: partition 7's due rows, each
    // once, a thousand at a time (at 10,000,000 rows more than one claim's worth).
    let due = (1..=n / 100).filter(|i| i % 64 == 7).count();
    let mut claimed = std::collections::HashSet::new();
    loop {
        let timers = store
            .claim_timers(7, now as u64, now as u64, now as u64 + 60_000, 1_000)
            .await
            .unwrap();
        if timers.is_empty() {
            break;
        }
        assert!(timers.iter().all(|t| t.due_at <= now as u64));
        for t in timers {
            assert!(claimed.insert(t.run.clone()), "{} claimed twice", t.run);
        }
    }
    assert_eq!(claimed.len(), due, "every due row of the partition, once");
    let schedules = store
        .claim_schedules(7, now as u64, now as u64 + 60_000, 1_000)
        .await
        .unwrap();
    assert!(!schedules.is_empty());
    assert!(
        schedules
            .iter()
            .all(|s| s.partition == 7 && !s.paused && s.next_due <= Some(now as u64))
    );
    pool.close().await;
    store.close().await;
}

fn event(run: &str, seq: u64) -> EventWrite {
    EventWrite {
        run: run.into(),
        seq,
        id: format!("e{seq}"),
        at: seq,
        status: "running",
        body: b"{}".to_vec(),
    }
}

fn run(id: &str) -> RunWrite {
    RunWrite {
        meta: RunMeta {
            id: id.into(),
            tenant: "acme".into(),
            bundle: "b".into(),
            schedule: None,
            parent: None,
            key: None,
            created_at: 1,
        },
        status: "running",
        updated_at: 2,
        state: b"{}".to_vec(),
    }
}

/// A commit that took its position and is held up (a row it writes is
/// locked by another transaction) holds the reader back: a later commit's
/// event, committed first, is not read before it, and once it commits the
/// reader gets both in position order. Reading the later event first would
/// move the cursor past the held one, which would never be read.
#[tokio::test]
async fn a_reader_never_passes_a_commit_in_flight() {
    let Some(schema) = Schema::create("horizon").await else {
        return;
    };
    let store = Store::open(&schema.url, Durability::Full).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&schema.url)
        .await
        .unwrap();
    let mut c = Commit::default();
    c.runs.push(run("held"));
    store.commit(&c).await.unwrap();

    // Another transaction locks the run's row.
    let mut blocker = pool.begin().await.unwrap();
    let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *blocker)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM runs WHERE id = 'held' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // The held commit takes its event's position, then waits for the row.
    let held = tokio::spawn({
        let store = store.clone();
        async move {
            let mut c = Commit::default();
            c.events.push(event("held", 0));
            c.runs.push(run("held"));
            store.commit(&c).await
        }
    });
    common::poll_until(
        "the commit waits for the row",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                )
                .bind(blocker_pid)
                .fetch_one(&pool)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    // A later commit takes the next position and commits first.
    let mut c = Commit::default();
    c.events.push(event("later", 0));
    store.commit(&c).await.unwrap();
    assert_eq!(
        store.max_event_pos().await.unwrap(),
        2,
        "the later commit's position is committed"
    );
    let early = store.events_after(0, 10).await.unwrap();
    assert!(
        early.is_empty(),
        "nothing is read past the commit in flight: {early:?}"
    );
    blocker.rollback().await.unwrap();
    held.await.unwrap().unwrap();
    // Once the held commit ends, both are read (after the reader's backoff
    // from its wait that timed out).
    let all = common::poll_until("the reader reads both", Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let got = store.events_after(0, 10).await.unwrap();
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert_eq!(
        all.iter()
            .map(|e| (e.pos, e.run.as_str()))
            .collect::<Vec<_>>(),
        [(1, "held"), (2, "later")]
    );
    pool.close().await;
    store.close().await;
}

/// Both schemes open the store.
#[tokio::test]
async fn postgresql_urls_open_the_store_too() {
    let Some(schema) = Schema::create("scheme").await else {
        return;
    };
    let url = schema.url.replacen("postgres://", "postgresql://", 1);
    assert!(url.starts_with("postgresql://"));
    let store = Store::open(&url, Durability::Full).await.unwrap();
    assert!(matches!(store, Store::Postgres(_)));
    assert_eq!(store.max_event_pos().await.unwrap(), 0);
    store.close().await;
}

/// Fencing with a commit in flight: a takeover of the shard waits for the
/// commit made under the old token (it holds the lease row), and once the
/// takeover is committed the old token's next commit is refused.
#[tokio::test]
async fn a_takeover_waits_for_the_commit_in_flight_then_fences_it() {
    let Some(schema) = Schema::create("fencing").await else {
        return;
    };
    let store = Store::open(&schema.url, Durability::Full).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&schema.url)
        .await
        .unwrap();
    let old = store.acquire_lease(3, "one", u64::MAX / 2).await.unwrap();
    let mut c = Commit::default();
    c.runs.push(run("r1"));
    store.commit(&c).await.unwrap();

    let mut blocker = pool.begin().await.unwrap();
    let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *blocker)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM runs WHERE id = 'r1' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // The old owner's commit checks its lease, then waits for the row.
    let in_flight = tokio::spawn({
        let store = store.clone();
        async move {
            let mut c = Commit {
                lease: Some((3, old)),
                ..Commit::default()
            };
            c.runs.push(run("r1"));
            store.commit(&c).await
        }
    });
    // The sessions another one holds up, found by that one's backend.
    let held_up_by = |holder: i32| {
        let pool = pool.clone();
        move || {
            let pool = pool.clone();
            async move {
                let pid: Option<i32> = sqlx::query_scalar(
                    "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) LIMIT 1",
                )
                .bind(holder)
                .fetch_optional(&pool)
                .await
                .unwrap();
                pid
            }
        }
    };
    let commit_pid = common::poll_until(
        "the commit waits for the row",
        Duration::from_secs(30),
        held_up_by(blocker_pid),
    )
    .await;
    // A takeover waits for it.
    let takeover = tokio::spawn({
        let store = store.clone();
        async move { store.acquire_lease(3, "two", u64::MAX / 2).await }
    });
    common::poll_until(
        "the takeover waits for the commit",
        Duration::from_secs(30),
        held_up_by(commit_pid),
    )
    .await;
    assert!(!takeover.is_finished());
    blocker.rollback().await.unwrap();
    in_flight
        .await
        .unwrap()
        .expect("a commit made while its lease was held");
    let new = takeover.await.unwrap().unwrap();
    assert!(new > old);
    let stale = Commit {
        lease: Some((3, old)),
        runs: vec![run("r2")],
        ..Commit::default()
    };
    let err = store.commit(&stale).await.unwrap_err();
    assert!(
        matches!(err, eflow_runtime::store::Error::LeaseLost { shard: 3 }),
        "{err}"
    );
    assert!(store.load_run("r2").await.unwrap().is_none());
    pool.close().await;
    store.close().await;
}

/// Loaders of one partition claiming at once (several processes) each get
/// their own rows: every due timer is claimed once.
#[tokio::test]
async fn concurrent_claims_take_each_due_timer_once() {
    let Some(schema) = Schema::create("claims").await else {
        return;
    };
    let store = Store::open(&schema.url, Durability::Normal).await.unwrap();
    let mut c = Commit::default();
    for i in 0..2_000u64 {
        c.timers.push(eflow_runtime::store::TimerWrite {
            run: format!("r{i}"),
            timer: "t".into(),
            partition: 0,
            due_at: i,
            claimed_until: 0,
            event: b"{}".to_vec(),
        });
    }
    store.commit(&c).await.unwrap();
    let loaders: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store
                        .claim_timers(0, 5_000, 5_000, 60_000, 37)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|t| t.run));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for l in loaders {
        all.extend(l.await.unwrap());
    }
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!((claimed, all.len()), (2_000, 2_000), "each claimed once");
    store.close().await;
}

/// A batch's `COMMIT` sent and its answer lost (the connection ended) is
/// reported as it ended: landed, as landed, so the worker hands its
/// effects on (before, it was reported failed: its outbox rows stayed with
/// nobody to carry them out, and its runs were stuck; the cluster fault
/// suite's lost replies found it); not landed, as failed.
#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_reported_as_it_ended() {
    let Some(schema) = Schema::create("lost_reply").await else {
        return;
    };
    let direct = Store::open(&schema.url, Durability::Full).await.unwrap();
    let token = direct.acquire_lease(0, "one", u64::MAX / 2).await.unwrap();
    // The same database through the proxy.
    let cut = std::sync::Arc::new(std::sync::Mutex::new(None));
    let proxy = cutter(&authority(&schema.url), b"COMMIT", cut.clone()).await;
    let proxied = Store::open(&through(&schema.url, &proxy), Durability::Full)
        .await
        .unwrap();
    let batch = |id: &str, pos: i64| Commit {
        lease: Some((0, token)),
        runs: vec![run(id)],
        outbox: vec![(pos, id.to_string(), b"{}".to_vec())],
        ..Commit::default()
    };

    *cut.lock().unwrap() = Some(Cut::After);
    proxied
        .commit(&batch("landed", 1))
        .await
        .expect("a commit that landed, its answer lost, is reported as landed");
    assert!(cut.lock().unwrap().is_none(), "the COMMIT was cut");
    assert!(direct.load_run("landed").await.unwrap().is_some());

    *cut.lock().unwrap() = Some(Cut::Before);
    proxied
        .commit(&batch("lost", 2))
        .await
        .expect_err("a commit the server never got is reported as failed");
    assert!(cut.lock().unwrap().is_none(), "the COMMIT was cut");
    assert!(direct.load_run("lost").await.unwrap().is_none());
    let outbox: Vec<i64> = direct
        .outbox()
        .await
        .unwrap()
        .into_iter()
        .map(|(pos, _, _)| pos)
        .collect();
    assert_eq!(outbox, [1], "the landed batch's effect only");

    // Answered again: both backends' sessions through the proxy are fine.
    proxied.commit(&batch("after", 3)).await.unwrap();
    proxied.close().await;
    direct.close().await;
}
