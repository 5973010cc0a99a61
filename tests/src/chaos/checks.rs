//! The fault suite's end: the load stopped cleanly, the runs settled, and
//! every invariant checked over the API and in the SQLite files.

use super::load::{decide, purge_step, start};
use super::*;

/// Stops the load cleanly (the purged tenant purged for good, every start
/// answered, schedules paused, gates decided), lets the runs settle and
/// checks every run. Returns how many runs were checked.
pub(super) async fn finish(world: &World) -> u64 {
    // The purged tenant's lifecycle, to its end.
    let deadline = Instant::now() + Duration::from_secs(120);
    {
        let mut p = world.purge.lock().await;
        while p.phase != Phase::Idle && Instant::now() < deadline {
            purge_step(world, &mut p, true).await;
            if p.phase != Phase::Idle {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if p.phase != Phase::Idle {
            world.violation(format!(
                "purge: the lifecycle of purged-{}-{} did not end: {:?}",
                world.seed, p.n, p.phase
            ));
        }
    }

    world.say("purged tenant done");
    // Every start answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unacked: Vec<String> = lock(&world.runs)
            .iter()
            .filter(|(_, t)| t.acked_in.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        if unacked.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            world.violation(format!(
                "answer: {} starts never answered 2xx, e.g. {:?}",
                unacked.len(),
                &unacked[..unacked.len().min(5)]
            ));
            break;
        }
        for s in &unacked {
            start(world, s).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The last deploy of each tenant is its head.
    for tenant in STABLE {
        last_deploy_is_head(world, tenant).await;
    }

    // No new scheduled runs from here on.
    for tenant in STABLE {
        let list = world
            .get_steady(&format!("/v1/schedules?tenant={tenant}"), ADMIN)
            .await;
        let ids: Vec<String> = match &list {
            Ok(a) if a.ok() => a
                .body
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect(),
            other => {
                world.violation(format!("answer: schedules of {tenant}: {}", show(other)));
                Vec::new()
            }
        };
        if ids.len() != 1 {
            world.violation(format!(
                "schedule: {tenant} has {} schedules, not its one: {}",
                ids.len(),
                show(&list)
            ));
        }
        for sid in ids {
            match world
                .post(&format!("/v1/schedules/{sid}/pause"), ADMIN, &json!({}))
                .await
            {
                Ok(a) if a.ok() => {}
                other => world.violation(format!("answer: pausing {sid}: {}", show(&other))),
            }
        }
    }

    // Every gate the test decides, decided.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open: Vec<(String, bool)> = lock(&world.runs)
            .iter()
            .filter(|(_, t)| t.acked_in.is_some() && !t.decided)
            .filter_map(|(s, t)| match t.kind {
                Kind::Gate(n) => decision(n).map(|d| (s.clone(), d)),
                _ => None,
            })
            .collect();
        if open.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            world.violation(format!(
                "stuck: {} gates never asked for their decision, e.g. {:?}",
                open.len(),
                &open[..open.len().min(5)]
            ));
            break;
        }
        for (stored, approve) in &open {
            decide(world, stored, *approve).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    world.say("gates decided; settling");
    // Settle: every run ends as it must, or waits where it must.
    let tracked: BTreeMap<String, Tracked> = lock(&world.runs).clone();
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut unsettled = 0;
        for (stored, _) in listed(world, &tracked).await {
            match world.get_steady(&format!("/v1/runs/{stored}"), ADMIN).await {
                Ok(a) if a.ok() && unsettled_reason(tracked.get(&stored), &a.body).is_none() => {}
                _ => unsettled += 1,
            }
        }
        if unsettled == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // What is checked is what the history shows once the runs settled (a
    // listing taken while they ran may show a run behind the engine).
    let all = listed(world, &tracked).await;
    world.say(&format!("settled; checking {} runs", all.len()));
    check_runs(world, &tracked, &all).await;
    check_remote(world);
    all.len() as u64
}

/// Deploys the tenant's flows changed once more, until it is answered: each
/// flow's one head is then the version that deploy answered.
async fn last_deploy_is_head(world: &World, tenant: &str) {
    let generation = {
        let mut g = lock(&world.generations);
        let e = g.entry(tenant.to_string()).or_default();
        *e += 1;
        *e
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let deployed = loop {
        match world.deploy(tenant, &world.token(tenant), generation).await {
            Ok(a) if a.ok() => break a.body,
            Ok(a) if a.status < 500 => {
                world.violation(format!(
                    "answer: the last deploy in {tenant}: {} {}",
                    a.status, a.body
                ));
                return;
            }
            _ if Instant::now() > deadline => {
                world.violation(format!(
                    "answer: the last deploy in {tenant} was never answered"
                ));
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let flows = match world
        .get_steady(&format!("/v1/flows?tenant={tenant}"), ADMIN)
        .await
    {
        Ok(a) if a.ok() => a.body,
        other => {
            world.violation(format!("answer: flows of {tenant}: {}", show(&other)));
            return;
        }
    };
    if deployed["flows"].as_array().is_none_or(|f| f.len() != 6) {
        world.violation(format!(
            "answer: the last deploy in {tenant} lists no six flows: {deployed}"
        ));
    }
    for f in deployed["flows"].as_array().into_iter().flatten() {
        let heads: Vec<&Value> = flows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["name"] == f["name"] && v["head"] == true)
            .collect();
        if heads.len() != 1 || heads[0]["version"] != f["version"] {
            world.violation(format!(
                "deploy: in {tenant}, {} was deployed last as {} and its heads are {heads:?}",
                f["name"], f["version"]
            ));
        }
    }
}

/// Every run of the stable tenants: the history's summary of each, once the
/// history caught up, and the runs the test started (`null` when the history
/// lacks one).
async fn listed(world: &World, tracked: &BTreeMap<String, Tracked>) -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    caught_up(world).await;
    for tenant in STABLE {
        for item in history(world, tenant).await {
            if let Some(id) = item["id"].as_str() {
                all.insert(id.to_string(), item.clone());
            }
        }
    }
    for stored in tracked.keys() {
        all.entry(stored.clone()).or_insert(Value::Null);
    }
    all
}

/// Why a run is not as it must be at the end, if it is not: a started run
/// ends with its result (a gate nobody decides waits at its approval); a
/// child or a scheduled run succeeds.
fn unsettled_reason(tracked: Option<&Tracked>, run: &Value) -> Option<String> {
    let status = run["status"].as_str().unwrap_or("");
    let expected = match tracked {
        Some(t) => t.kind.result(),
        None => match run["flow"].as_str() {
            Some("Child") => run["input"]["n"].as_i64().map(|n| json!(n + 1)),
            Some("Tick") => Some(json!(1)),
            other => return Some(format!("a run of {other:?} the test did not start: {run}")),
        },
    };
    match expected {
        Some(result) => (status != "succeeded" || run["result"] != result)
            .then(|| format!("expected to succeed with {result}, is {status}: {run}")),
        None => {
            let waiting = run["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["id"] == "d" && s["status"] == "running");
            (status != "running" || !waiting)
                .then(|| format!("expected to wait for its approval, is {status}: {run}"))
        }
    }
}

async fn caught_up(world: &World) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(a) = world.get("/v1/stats", ADMIN).await
            && a.body["history_behind"] == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world.violation("history: still behind the engine a minute after the load stopped".into());
}

/// Every run of a tenant in the history, following `next`.
async fn history(world: &World, tenant: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/runs?tenant={tenant}&limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        match world.get_steady(&path, ADMIN).await {
            Ok(a) if a.ok() => {
                out.extend(a.body["items"].as_array().cloned().unwrap_or_default());
                match a.body["next"].as_str() {
                    Some(n) => cursor = Some(n.to_string()),
                    None => return out,
                }
            }
            other => {
                world.violation(format!("answer: {path}: {}", show(&other)));
                return out;
            }
        }
    }
}

/// Every run's log and result, the history's view of it, and the approvals
/// still waiting.
async fn check_runs(
    world: &World,
    tracked: &BTreeMap<String, Tracked>,
    all: &BTreeMap<String, Value>,
) {
    for (stored, summary) in all {
        let t = tracked.get(stored);
        let run = match world.get_steady(&format!("/v1/runs/{stored}"), ADMIN).await {
            Ok(a) if a.ok() => a.body,
            Ok(a) if a.status == 404 && t.is_some_and(|t| t.acked_in.is_some()) => {
                world.violation(format!(
                    "lost: {stored} was answered 2xx and does not exist"
                ));
                continue;
            }
            other => {
                world.violation(format!("answer: GET {stored}: {}", show(&other)));
                continue;
            }
        };
        if let Some(why) = unsettled_reason(t, &run) {
            world.violation(format!(
                "stuck: {stored} (the runs had {} s to settle): {why}",
                SETTLE.as_secs()
            ));
        }
        if let Some(t) = t {
            if t.version.is_some() && run["version"].as_str() != t.version.as_deref() {
                world.violation(format!(
                    "version: {stored} started on {:?} and is on {}",
                    t.version, run["version"]
                ));
            }
            if *summary == Value::Null {
                world.violation(format!("history: {stored} is not in the history: {run}"));
            }
        }
        if *summary != Value::Null && summary["status"] != run["status"] {
            world.violation(format!(
                "history: {stored} is {} in the history and {} in the engine",
                summary["status"], run["status"]
            ));
        }
        match world
            .get_steady(&format!("/v1/runs/{stored}/events"), ADMIN)
            .await
        {
            Ok(a) if a.ok() => {
                for v in log_violations(stored, &a.body) {
                    world.violation(v);
                }
                let failed = a
                    .body
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["event"]["type"] == "step_failed")
                    .count();
                world
                    .counters
                    .failed_attempts
                    .fetch_add(failed as u64, Ordering::Relaxed);
            }
            other => world.violation(format!("answer: events of {stored}: {}", show(&other))),
        }
    }
    // A gate nobody decided waits in the approvals list.
    for tenant in STABLE {
        let pending: BTreeSet<String> = match world
            .get_steady(&format!("/v1/approvals?tenant={tenant}"), ADMIN)
            .await
        {
            Ok(a) if a.ok() => a
                .body
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x["run"].as_str().map(str::to_string))
                .collect(),
            other => {
                world.violation(format!("answer: approvals of {tenant}: {}", show(&other)));
                continue;
            }
        };
        for (stored, t) in tracked {
            let waits =
                t.tenant == tenant && matches!(t.kind, Kind::Gate(n) if decision(n).is_none());
            if waits != pending.contains(stored) {
                world.violation(format!(
                    "approval: {stored} is {}listed as pending and {}",
                    if pending.contains(stored) { "" } else { "not " },
                    if waits {
                        "nobody decided it"
                    } else {
                        "the test decided it"
                    }
                ));
            }
        }
        for p in &pending {
            if !tracked.contains_key(p) {
                world.violation(format!(
                    "approval: {p} is pending and no run of the test asks"
                ));
            }
        }
    }
}

/// What is wrong with a run's event log: a gap or a repeat in `seq`, an event
/// id twice, not `started` first, an attempt with two results, a timer fired
/// twice, an event after the run ended.
pub(super) fn log_violations(run: &str, events: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(events) = events.as_array() else {
        return vec![format!(
            "answer: the events of {run} are not a list: {events}"
        )];
    };
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    if seqs != (0..events.len() as u64).collect::<Vec<_>>() {
        out.push(format!("gap: {run}'s log has seq {seqs:?}"));
    }
    if events.first().map(|e| &e["event"]["type"]) != Some(&json!("started")) {
        out.push(format!(
            "log: {run}'s log does not open with started: {:?}",
            events.first()
        ));
    }
    let mut ids = BTreeSet::new();
    let mut results: BTreeMap<String, u64> = BTreeMap::new();
    let mut timers = BTreeSet::new();
    let mut ended: Option<u64> = None;
    for e in events {
        let seq = e["seq"].as_u64().unwrap_or(0);
        if let Some(end) = ended {
            out.push(format!(
                "twice: {run}'s event {seq} came after it ended at {end}: {e}"
            ));
        }
        if matches!(
            e["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            ended = Some(seq);
        }
        let ev = &e["event"];
        if !ids.insert(ev["id"].to_string()) {
            out.push(format!(
                "twice: {run}'s event id {} was applied twice",
                ev["id"]
            ));
        }
        match ev["type"].as_str() {
            Some("step_completed" | "step_failed" | "child_finished") => {
                let slot = format!("{}[{}]#{}", ev["node"], ev["index"], ev["attempt"]);
                if let Some(first) = results.insert(slot.clone(), seq) {
                    out.push(format!(
                        "twice: {run}'s attempt {slot} has results at seq {first} and {seq}"
                    ));
                }
            }
            Some("timer_fired") if !timers.insert(ev["timer"].to_string()) => {
                out.push(format!("twice: {run}'s timer {} fired twice", ev["timer"]));
            }
            _ => {}
        }
    }
    out
}

/// The remote system saw no attempt under two keys, and had no callback refused.
fn check_remote(world: &World) {
    for ((run, step, attempt, index), keys) in lock(&world.remote.keys).iter() {
        // A purged tenant created again reuses its run ids: its attempts may
        // repeat an old one's (run, step, attempt) under a new key.
        if run.starts_with("purged-") {
            continue;
        }
        if keys.len() > 1 {
            world.violation(format!(
                "twice: the remote system saw {run} {step} attempt {attempt} (index {index:?}) under keys {keys:?}"
            ));
        }
    }
    for r in lock(&world.remote.refused).iter() {
        world.violation(format!("callback: {r}"));
    }
}

/// Opens both SQLite files read-only after the last stop: no row of any table
/// holds a purged tenant's id, and every run's log in them is gapless.
pub(super) async fn scan(world: &World, data: &Path) {
    let needle = format!("purged-{}-", world.seed);
    for (file, events) in [("eflow.db", "events"), ("history.db", "h_events")] {
        let path = data.join(file);
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true);
        let mut conn = match sqlx::SqliteConnection::connect_with(&options).await {
            Ok(c) => c,
            Err(e) => {
                world.violation(format!("scan: opening {}: {e}", path.display()));
                continue;
            }
        };
        let tables: Vec<String> = match sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        {
            Ok(t) => t,
            Err(e) => {
                world.violation(format!("scan: the tables of {file}: {e}"));
                continue;
            }
        };
        for table in &tables {
            let columns: Vec<String> =
                match sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                    .bind(table)
                    .fetch_all(&mut conn)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        world.violation(format!("scan: the columns of {file}.{table}: {e}"));
                        continue;
                    }
                };
            for column in &columns {
                let q = format!(
                    "SELECT count(*), min(CAST(\"{column}\" AS TEXT)) FROM \"{table}\" \
                     WHERE instr(CAST(\"{column}\" AS BLOB), CAST(? AS BLOB)) > 0"
                );
                match sqlx::query(&q).bind(&needle).fetch_one(&mut conn).await {
                    Ok(row) => {
                        let count: i64 = row.try_get(0).unwrap_or(0);
                        if count > 0 {
                            let sample: String = row.try_get(1).unwrap_or_default();
                            let sample: String = sample.chars().take(300).collect();
                            world.violation(format!(
                                "purge: {count} rows of {file}.{table} hold a purged tenant's id in `{column}`, e.g. {sample}"
                            ));
                        }
                    }
                    Err(e) => world.violation(format!("scan: {file}.{table}.{column}: {e}")),
                }
            }
        }
        if tables.iter().any(|t| t == events) {
            let q = format!(
                "SELECT run, count(*), min(seq), max(seq), count(DISTINCT seq) FROM \"{events}\" \
                 GROUP BY run HAVING min(seq) != 0 OR max(seq) != count(*) - 1 \
                 OR count(DISTINCT seq) != count(*) LIMIT 20"
            );
            match sqlx::query(&q).fetch_all(&mut conn).await {
                Ok(rows) => {
                    for row in rows {
                        let run: String = row.try_get(0).unwrap_or_default();
                        let n: i64 = row.try_get(1).unwrap_or(0);
                        let max: i64 = row.try_get(3).unwrap_or(0);
                        world.violation(format!(
                            "gap: {file}.{events} holds {n} events of {run} with seq up to {max}"
                        ));
                    }
                }
                Err(e) => world.violation(format!("scan: {file}.{events}: {e}")),
            }
        } else {
            world.violation(format!("scan: {file} has no table `{events}`"));
        }
        let _ = conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, status: &str, event: Value) -> Value {
        json!({ "seq": seq, "id": event["id"], "at": "", "status": status, "event": event })
    }

    fn clean() -> Vec<Value> {
        vec![
            event(0, "running", json!({ "id": "start", "type": "started" })),
            event(
                1,
                "running",
                json!({ "id": "callback:a:1", "type": "step_completed", "node": "a", "attempt": 1, "output": 2 }),
            ),
            event(
                2,
                "running",
                json!({ "id": "timer:w", "type": "timer_fired", "timer": { "kind": "wait", "node": "w", "attempt": 1 } }),
            ),
            event(
                3,
                "succeeded",
                json!({ "id": "callback:b:1", "type": "step_completed", "node": "b", "attempt": 1, "output": 3 }),
            ),
        ]
    }

    #[test]
    fn a_clean_log_has_no_violation() {
        assert_eq!(log_violations("r", &json!(clean())), Vec::<String>::new());
    }

    #[test]
    fn each_broken_log_is_told() {
        let found = |events: Vec<Value>| log_violations("r", &json!(events));
        let mut gap = clean();
        gap.remove(1);
        assert!(found(gap).iter().any(|v| v.starts_with("gap:")));

        let mut twice = clean();
        let mut again = twice[1].clone();
        again["seq"] = json!(4);
        again["event"]["id"] = json!("decision:a:1");
        twice.push(again);
        let v = found(twice);
        assert!(
            v.iter().any(|v| v.contains("has results at seq 1 and 4")),
            "{v:?}"
        );
        assert!(v.iter().any(|v| v.contains("after it ended")), "{v:?}");

        let mut refired = clean();
        let mut timer = refired[2].clone();
        timer["seq"] = json!(3);
        timer["event"]["id"] = json!("timer:w:again");
        refired.insert(3, timer);
        refired[4]["seq"] = json!(4);
        assert!(found(refired).iter().any(|v| v.contains("fired twice")));

        let mut headless = clean();
        headless.remove(0);
        for (i, e) in headless.iter_mut().enumerate() {
            e["seq"] = json!(i);
        }
        assert!(
            found(headless)
                .iter()
                .any(|v| v.contains("does not open with started"))
        );
    }

    #[test]
    fn a_run_must_end_as_asked_or_wait_at_its_gate() {
        let tracked = |kind| Tracked {
            tenant: "alpha".into(),
            id: "x".into(),
            kind,
            acked_in: Some(0),
            acked_at: None,
            sent_at: Instant::now(),
            version: None,
            decided: false,
        };
        let ok = json!({ "status": "succeeded", "result": 7 });
        assert_eq!(unsettled_reason(Some(&tracked(Kind::Remote(5))), &ok), None);
        assert!(unsettled_reason(Some(&tracked(Kind::Remote(6))), &ok).is_some());
        let waiting = json!({ "status": "running", "steps": [{ "id": "d", "status": "running" }] });
        assert_eq!(
            unsettled_reason(Some(&tracked(Kind::Gate(8))), &waiting),
            None
        );
        assert!(unsettled_reason(Some(&tracked(Kind::Gate(2))), &waiting).is_some());
        let child =
            json!({ "flow": "Child", "input": { "n": 3 }, "status": "succeeded", "result": 4 });
        assert_eq!(unsettled_reason(None, &child), None);
        let stranger = json!({ "flow": "Other", "status": "succeeded" });
        assert!(unsettled_reason(None, &stranger).is_some());
    }
}
