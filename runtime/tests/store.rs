//! The store's conformance suite: what every backend must do, written once
//! against the `Store` handle. Each backend runs it (today SQLite; the
//! distributed backend adds its line).

use eflow_runtime::store::{
    ApprovalWrite, Commit, Durability, EventWrite, NewEntry, RunMeta, RunWrite, ScheduleRow, Store,
    TenantRow, TimerWrite,
};
use serde_json::json;

fn meta(id: &str, tenant: &str) -> RunMeta {
    RunMeta {
        id: id.into(),
        tenant: tenant.into(),
        bundle: "b-1".into(),
        schedule: None,
        parent: None,
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

/// Everything a backend must do.
async fn suite(store: Store) {
    // Runs: an upsert keeps the run's routing data and replaces its state.
    let mut c = Commit::default();
    c.runs.push(run("r1", "acme", "running", "{\"v\":1}"));
    c.events.push(event("r1", 0));
    c.events.push(event("r1", 1));
    store.commit(&c).await.unwrap();
    let mut c = Commit::default();
    c.runs.push(run("r1", "acme", "succeeded", "{\"v\":2}"));
    c.events.push(event("r1", 2));
    store.commit(&c).await.unwrap();
    let (m, status, state) = store.load_run("r1").await.unwrap().unwrap();
    assert_eq!(
        (m, status.as_str(), state.as_slice()),
        (meta("r1", "acme"), "succeeded", &b"{\"v\":2}"[..])
    );
    assert!(store.load_run("nope").await.unwrap().is_none());

    // Many runs at once: more than one statement's worth, missing ids left out.
    let mut c = Commit::default();
    let many: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    for id in &many {
        c.runs.push(run(id, "bulk", "running", "{}"));
    }
    store.commit(&c).await.unwrap();
    let mut ask: Vec<&str> = many.iter().map(String::as_str).collect();
    ask.push("nope");
    ask.push("r1");
    let mut got: Vec<String> = store
        .load_runs(&ask)
        .await
        .unwrap()
        .into_iter()
        .map(|(m, _, _)| m.id)
        .collect();
    got.sort();
    let mut want: Vec<String> = many.clone();
    want.push("r1".into());
    want.sort();
    assert_eq!(got, want);

    // The event log: a run's events in order, all events in commit order.
    let evs = store.events_of("r1", None, 10).await.unwrap();
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(store.events_of("r1", Some(0), 10).await.unwrap().len(), 2);
    let all = store.events_after(0, 10).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].pos < w[1].pos));
    assert_eq!(store.events_after(all[1].pos, 10).await.unwrap().len(), 1);
    assert_eq!(store.max_event_pos().await.unwrap(), all[2].pos);

    // A second event with a run's sequence number is refused, and the whole
    // batch with it: nothing is half-written.
    let mut c = Commit::default();
    c.runs.push(run("r1", "acme", "failed", "{\"v\":3}"));
    c.events.push(event("r1", 2));
    assert!(store.commit(&c).await.is_err());
    let (_, status, _) = store.load_run("r1").await.unwrap().unwrap();
    assert_eq!(status, "succeeded");

    // Timers: due rows are claimed once; a claim expires; a deleted row is gone.
    let mut c = Commit::default();
    c.timers.push(timer("r1", "t-due", 100, 0));
    c.timers.push(timer("r1", "t-later", 5_000, 0));
    c.timers.push(timer("r1", "t-claimed", 100, 1_000));
    store.commit(&c).await.unwrap();
    let got = store.claim_timers(0, 200, 1_200, 2_000, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|t| t.timer.as_str()).collect::<Vec<_>>(),
        vec!["t-due"]
    );
    assert!(
        store
            .claim_timers(0, 300, 1_300, 2_000, 10)
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
    let mut c = Commit::default();
    c.timers_deleted.push(("r1".into(), "t-due".into()));
    c.timers_deleted.push(("r1".into(), "absent".into()));
    store.commit(&c).await.unwrap();
    assert!(
        store
            .claim_timers(0, 9_000, 9_000, 9_500, 10)
            .await
            .unwrap()
            .iter()
            .all(|t| t.timer != "t-due")
    );
    // Setting a timer twice is one row.
    let mut c = Commit::default();
    c.timers.push(timer("r1", "t-twice", 10, 0));
    c.timers.push(timer("r1", "t-twice-b", 10, 0));
    store.commit(&c).await.unwrap();
    let mut c = Commit::default();
    c.timers.push(timer("r1", "t-twice", 20, 0));
    store.commit(&c).await.unwrap();
    let twice = store
        .claim_timers(0, 10_000, 10_000, 10_500, 100)
        .await
        .unwrap();
    assert_eq!(twice.iter().filter(|t| t.timer == "t-twice").count(), 1);
    store.release_claims().await.unwrap();

    // The outbox: rows come back in position order until deleted.
    let mut c = Commit::default();
    c.outbox.push((7, "r1".into(), b"a".to_vec()));
    c.outbox.push((8, "r1".into(), b"b".to_vec()));
    store.commit(&c).await.unwrap();
    assert_eq!(store.max_outbox_pos().await.unwrap(), 8);
    let mut c = Commit::default();
    c.outbox_deleted.push(7);
    store.commit(&c).await.unwrap();
    assert_eq!(
        store.outbox().await.unwrap(),
        vec![(8, "r1".to_string(), b"b".to_vec())]
    );

    // Leases: a newer owner fences out the older one's commits.
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

    // Approvals are decided once.
    let mut c = Commit::default();
    c.approvals.push(ApprovalWrite {
        run: "r2".into(),
        step: "ok".into(),
        attempt: 1,
        tenant: "acme".into(),
        contract: "std/approval.Approve".into(),
        request: b"{}".to_vec(),
        requested_at: 5,
        expires_at: None,
    });
    store.commit(&c).await.unwrap();
    assert_eq!(store.approvals(Some("acme"), true).await.unwrap().len(), 1);
    assert!(
        store
            .decide_approval("r2", "ok", 1, &json!({"approved": true}), 6)
            .await
            .unwrap()
    );
    assert!(
        !store
            .decide_approval("r2", "ok", 1, &json!({"approved": false}), 7)
            .await
            .unwrap()
    );
    assert!(
        store
            .approvals(Some("acme"), true)
            .await
            .unwrap()
            .is_empty()
    );

    // The registry counts versions per name and is idempotent by key.
    let inputs = json!({"name": "churn"});
    let entry = |key: &'static str| NewEntry {
        key,
        tenant: "acme",
        kind: "model",
        name: "churn",
        run: "r2",
        step: "register",
        inputs: &inputs,
        now: 9,
    };
    let v1 = store
        .register(&entry("k1"), |v| json!({ "version": v }))
        .await
        .unwrap();
    let again = store
        .register(&entry("k1"), |v| json!({ "version": v }))
        .await
        .unwrap();
    let v2 = store
        .register(&entry("k2"), |v| json!({ "version": v }))
        .await
        .unwrap();
    assert_eq!((v1.version, again.version, v2.version), (1, 1, 2));

    // Purging a tenant removes its rows and only its rows.
    for t in ["acme", "other"] {
        assert!(
            store
                .create_tenant(&TenantRow {
                    id: t.into(),
                    created_at: 1,
                    max_active_runs: None,
                    max_starts_per_sec: None
                })
                .await
                .unwrap()
        );
    }
    let mut c = Commit::default();
    c.runs.push(run("o1", "other", "running", "{}"));
    c.events.push(event("o1", 0));
    store.commit(&c).await.unwrap();
    store.purge_tenant("acme").await.unwrap();
    assert!(store.load_run("r1").await.unwrap().is_none());
    assert!(store.events_of("r1", None, 10).await.unwrap().is_empty());
    assert!(store.registry("acme", None, None).await.unwrap().is_empty());
    assert!(store.tenant("acme").await.unwrap().is_none());
    assert!(store.load_run("o1").await.unwrap().is_some());
    assert_eq!(store.events_of("o1", None, 10).await.unwrap().len(), 1);

    // Schedules: a deploy replaces a flow's schedules; due ones are claimed
    // once; an update records the watermark and keeps the newest start.
    let sched = |id: &str, next_due: u64| ScheduleRow {
        id: id.into(),
        tenant: "sched".into(),
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
    };
    store
        .replace_schedules("sched", "F", &[sched("s1", 1_000), sched("s2", 9_000)])
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
        .update_schedule("s1", Some(2_600), Some(500), Some(3_000), None)
        .await
        .unwrap();
    let s1 = store.schedule("s1").await.unwrap().unwrap();
    assert_eq!(
        (s1.handled_through, s1.last_start, s1.next_due),
        (Some(2_600), Some(1_000), Some(3_000))
    );
    // A redeploy keeps what it is given and drops schedules no longer declared.
    let mut again = sched("s1", 4_000);
    again.last_start = s1.last_start;
    again.handled_through = s1.handled_through;
    store
        .replace_schedules("sched", "F", &[again])
        .await
        .unwrap();
    let all = store.schedules(Some("sched")).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].last_start, all[0].next_due),
        (Some(1_000), Some(4_000))
    );
    // Paused schedules are not claimed.
    assert!(
        store
            .set_schedule_paused("s1", true, 5_000, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_schedules(0, 10_000, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = std::env::temp_dir().join(format!("eflow-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}", dir.join("eflow.db").display());
    suite(Store::open(&url, Durability::Full).await.unwrap()).await;
    let _ = std::fs::remove_dir_all(&dir);
}
