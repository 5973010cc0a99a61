//! The fault suite's load (starts, decisions, redeploys, the purged tenant's
//! lifecycle) and its kills, with the checks cheap enough after each restart.

use super::checks::log_violations;
use super::*;

/// One load worker. Each turn is a seeded choice: start a run (30 % `Remote`,
/// 15 % `Gate`, 8 % `Sleep`, 10 % `Fan`, in a stable tenant, under an id of
/// its own), decide a gate (20 %), send an unanswered start again (7 %),
/// redeploy a tenant's flows changed (4 %), or move the purged tenant's
/// lifecycle on (6 %); then a pause of 10–60 ms.
pub(super) async fn driver(world: Arc<World>, w: u64, mut rng: Rng) {
    let mut k = 0u64;
    while !world.stopped() {
        let roll = rng.below(100);
        let n = rng.below(1000) as i64;
        let kind = match roll {
            0..30 => Some(Kind::Remote(n)),
            30..45 => Some(Kind::Gate(n)),
            45..53 => Some(Kind::Sleep(n)),
            53..63 => {
                let len = rng.range(1, 5);
                Some(Kind::Fan((0..len).map(|i| n + i as i64).collect()))
            }
            _ => None,
        };
        if let Some(kind) = kind {
            let tenant = STABLE[rng.below(STABLE.len() as u64) as usize];
            let id = format!("{}-{w}-{k}", kind.flow().to_lowercase());
            k += 1;
            let stored = format!("{tenant}:{id}");
            lock(&world.runs).insert(
                stored.clone(),
                Tracked {
                    tenant: tenant.to_string(),
                    id,
                    kind,
                    acked_in: None,
                    acked_at: None,
                    sent_at: Instant::now(),
                    version: None,
                    decided: false,
                },
            );
            world.counters.starts.fetch_add(1, Ordering::Relaxed);
            start(&world, &stored).await;
        } else {
            match roll {
                63..83 => decide_one(&world, &mut rng).await,
                83..90 => {
                    let unacked: Vec<String> = lock(&world.runs)
                        .iter()
                        .filter(|(_, t)| t.acked_in.is_none())
                        .map(|(s, _)| s.clone())
                        .collect();
                    if !unacked.is_empty() {
                        let pick = rng.below(unacked.len() as u64) as usize;
                        start(&world, &unacked[pick]).await;
                    }
                }
                90..94 => redeploy(&world, &mut rng).await,
                _ => {
                    if let Ok(mut p) = world.purge.try_lock() {
                        purge_step(&world, &mut p, false).await;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(10, 60))).await;
    }
}

/// Sends the start of a tracked run (again: a start is idempotent by id).
pub(super) async fn start(world: &World, stored: &str) {
    let Some(t) = lock(&world.runs).get(stored).cloned() else {
        return;
    };
    let life = world.life.load(Ordering::Relaxed);
    let body = json!({ "flow": t.kind.flow(), "input": t.kind.input(), "id": t.id });
    let answer = world.post("/v1/runs", &world.token(&t.tenant), &body).await;
    match answer {
        Ok(a) if a.ok() => {
            if a.body["id"] != json!(t.id) || a.body["input"] != t.kind.input() {
                world.violation(format!(
                    "answer: the start of {stored} answered another run: {}",
                    a.body
                ));
            }
            if let Some(r) = lock(&world.runs).get_mut(stored)
                && r.acked_in.is_none()
            {
                r.acked_in = Some(life);
                r.acked_at = Some(Instant::now());
                r.version = a.body["version"].as_str().map(str::to_string);
            }
        }
        Ok(a) if a.status < 500 => world.violation(format!(
            "answer: the start of {stored} was refused: {} {}",
            a.status, a.body
        )),
        // Unknown: the start may be committed or not; it is sent again later.
        _ => {}
    }
}

/// Decides one gate the test decides (the admin token may always decide),
/// always the same way for a run.
async fn decide_one(world: &World, rng: &mut Rng) {
    let open: Vec<(String, bool)> = lock(&world.runs)
        .iter()
        .filter(|(_, t)| t.acked_in.is_some() && !t.decided)
        .filter_map(|(s, t)| match t.kind {
            Kind::Gate(n) => decision(n).map(|d| (s.clone(), d)),
            _ => None,
        })
        .collect();
    if open.is_empty() {
        return;
    }
    let (stored, approve) = open[rng.below(open.len() as u64) as usize].clone();
    decide(world, &stored, approve).await;
}

/// True when the gate is decided (now or before).
pub(super) async fn decide(world: &World, stored: &str, approve: bool) -> bool {
    let answer = world
        .post(
            &format!("/v1/runs/{stored}/approvals/d"),
            ADMIN,
            &json!({ "approve": approve, "comment": "chaos" }),
        )
        .await;
    let decided = match &answer {
        Ok(a) if a.ok() => {
            world.counters.decisions.fetch_add(1, Ordering::Relaxed);
            true
        }
        // Decided before, the answer lost in a kill.
        Ok(a) if a.status == 409 && a.code() == "already_decided" => true,
        // Not asked yet: the run has not reached its gate.
        Ok(a) if a.status == 404 => false,
        Ok(a) if a.status < 500 => {
            world.violation(format!(
                "answer: deciding {stored}: {} {}",
                a.status, a.body
            ));
            false
        }
        _ => false,
    };
    if decided && let Some(r) = lock(&world.runs).get_mut(stored) {
        r.decided = true;
    }
    decided
}

async fn redeploy(world: &World, rng: &mut Rng) {
    let tenant = STABLE[rng.below(STABLE.len() as u64) as usize];
    let generation = {
        let mut g = lock(&world.generations);
        let e = g.entry(tenant.to_string()).or_default();
        *e += 1;
        *e
    };
    match world.deploy(tenant, &world.token(tenant), generation).await {
        Ok(a) if a.ok() => {
            world.counters.deploys.fetch_add(1, Ordering::Relaxed);
        }
        Ok(a) if a.status < 500 => world.violation(format!(
            "answer: redeploying in {tenant}: {} {}",
            a.status, a.body
        )),
        _ => {}
    }
}

/// The ids the purged tenant's runs are started under, in both of its lives.
const PURGED_RUNS: [&str; 4] = ["old-remote", "old-gate", "old-sleep", "old-fan"];

fn purged_kinds(base: i64) -> [Kind; 4] {
    [
        Kind::Remote(base),
        Kind::Gate(base + 1),
        Kind::Sleep(base),
        Kind::Fan(vec![base, base + 1, base + 2]),
    ]
}

/// Moves the purged tenant's lifecycle on by one step. `now` skips the wait
/// for its runs to get going (at the end).
pub(super) async fn purge_step(world: &World, p: &mut Purge, now: bool) {
    let id = format!("purged-{}-{}", world.seed, p.n);
    match p.phase.clone() {
        Phase::Idle => {
            if world.create_tenant(&id).await.is_ok() {
                p.phase = Phase::Created;
            }
        }
        Phase::Created => {
            if load_purged(world, &id, 0).await {
                p.phase = Phase::Loaded {
                    reborn: false,
                    since: Instant::now(),
                };
            }
        }
        Phase::Loaded { reborn, since } => {
            if !now && since.elapsed() < Duration::from_secs(1) {
                return;
            }
            match world
                .send(
                    reqwest::Method::DELETE,
                    &format!("/v1/tenants/{id}"),
                    ADMIN,
                    None,
                )
                .await
            {
                // 404: purged before, the answer lost in a kill.
                Ok(a) if a.ok() || a.status == 404 => {
                    if a.ok() {
                        world.counters.purges.fetch_add(1, Ordering::Relaxed);
                    }
                    if reborn {
                        p.n += 1;
                        p.phase = Phase::Idle;
                    } else {
                        p.phase = Phase::Purged;
                    }
                }
                Ok(a) if a.status < 500 => {
                    world.violation(format!("answer: purging {id}: {} {}", a.status, a.body));
                }
                _ => {}
            }
        }
        Phase::Purged => {
            let Ok(token) = world.create_tenant(&id).await else {
                return;
            };
            sees_nothing_old(world, &id, &token).await;
            p.phase = Phase::Recreated { token };
        }
        Phase::Recreated { token } => {
            // The same ids again, with other inputs: new runs, not the old ones.
            if load_purged(world, &id, 5000).await {
                for (rid, kind) in PURGED_RUNS.iter().zip(purged_kinds(5000)) {
                    if let Ok(a) = world.get(&format!("/v1/runs/{rid}"), &token).await
                        && a.ok()
                        && a.body["input"] != kind.input()
                    {
                        world.violation(format!(
                            "purge: {id} created again shows run {rid} with the purged run's input: {}",
                            a.body
                        ));
                    }
                }
                p.phase = Phase::Loaded {
                    reborn: true,
                    since: Instant::now(),
                };
            }
        }
    }
}

/// Deploys in the purged tenant and starts its runs (admin); true when all
/// were answered 2xx.
async fn load_purged(world: &World, id: &str, base: i64) -> bool {
    match world.deploy(id, ADMIN, 0).await {
        Ok(a) if a.ok() => {}
        Ok(a) if a.status < 500 => {
            world.violation(format!(
                "answer: deploying in {id}: {} {}",
                a.status, a.body
            ));
            return false;
        }
        _ => return false,
    }
    let mut all = true;
    for (rid, kind) in PURGED_RUNS.iter().zip(purged_kinds(base)) {
        let body = json!({ "tenant": id, "flow": kind.flow(), "input": kind.input(), "id": rid });
        match world.post("/v1/runs", ADMIN, &body).await {
            Ok(a) if a.ok() => {}
            Ok(a) if a.status < 500 => {
                world.violation(format!(
                    "answer: starting {id}:{rid}: {} {}",
                    a.status, a.body
                ));
                all = false;
            }
            _ => all = false,
        }
    }
    all
}

/// A tenant created again under a purged id sees nothing of the purged one.
async fn sees_nothing_old(world: &World, id: &str, token: &str) {
    for path in [
        "/v1/flows",
        "/v1/approvals?pending=false",
        "/v1/schedules",
        "/v1/registry",
    ] {
        match world.get_steady(path, token).await {
            Ok(a) if a.ok() && a.body == json!([]) => {}
            other => world.violation(format!(
                "purge: {id} created again sees {path}: {}",
                show(&other)
            )),
        }
    }
    match world.get_steady("/v1/runs?limit=1000", token).await {
        Ok(a) if a.ok() && a.body["items"] == json!([]) => {}
        other => world.violation(format!(
            "purge: {id} created again lists runs: {}",
            show(&other)
        )),
    }
    for rid in PURGED_RUNS {
        for (path, tok) in [
            (format!("/v1/runs/{rid}"), token),
            (format!("/v1/runs/{rid}/events"), token),
            (format!("/v1/runs/{id}:{rid}"), ADMIN),
        ] {
            match world.get_steady(&path, tok).await {
                Ok(a) if a.status == 404 => {}
                other => world.violation(format!(
                    "purge: {id} created again: GET {path} answered {}",
                    show(&other)
                )),
            }
        }
    }
}

// ---- the kills ---------------------------------------------------------------------

/// Kills the server every 1.5–5 s (seeded) and starts it again on the same
/// data and address, then checks what is cheap to check.
pub(super) async fn killer(world: Arc<World>, mut rng: Rng) {
    loop {
        let until = Instant::now() + Duration::from_millis(rng.range(1500, 5000));
        while Instant::now() < until && !world.stopped() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if world.stopped() {
            return;
        }
        // The second stop of each seed, and one in five of the others, is a
        // SIGTERM: the clean stop must keep everything too.
        let kills = world.counters.sigkills.load(Ordering::Relaxed)
            + world.counters.sigterms.load(Ordering::Relaxed);
        if kills == 1 || rng.below(5) == 0 {
            world.counters.sigterms.fetch_add(1, Ordering::Relaxed);
            world.sigterm(0).await;
            world.say("SIGTERM");
        } else {
            world.counters.sigkills.fetch_add(1, Ordering::Relaxed);
            world.sigkill(0);
            world.say("SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        let before = world.life.fetch_add(1, Ordering::Relaxed);
        if !world.start_server(0).await {
            world.stop.store(true, Ordering::Relaxed);
            return;
        }
        after_restart(&world, before, &mut rng).await;
    }
}

/// What is cheap to check after a restart: every start answered 2xx in the
/// life that ended still exists, and a sample of logs is gapless.
pub(super) async fn after_restart(world: &World, ended: u32, rng: &mut Rng) {
    let runs: Vec<(String, Option<u32>)> = lock(&world.runs)
        .iter()
        .map(|(s, t)| (s.clone(), t.acked_in))
        .collect();
    for (stored, acked_in) in &runs {
        if *acked_in == Some(ended) {
            match world.get_steady(&format!("/v1/runs/{stored}"), ADMIN).await {
                Ok(a) if a.ok() => {}
                Ok(a) if a.status == 404 => world.violation(format!(
                    "lost: {stored} was answered 2xx before restart {} and is gone after it",
                    ended + 1
                )),
                _ => {}
            }
        }
    }
    let acked: Vec<&String> = runs
        .iter()
        .filter(|(_, a)| a.is_some())
        .map(|(s, _)| s)
        .collect();
    for _ in 0..10.min(acked.len()) {
        let stored = acked[rng.below(acked.len() as u64) as usize];
        if let Ok(a) = world
            .get_steady(&format!("/v1/runs/{stored}/events"), ADMIN)
            .await
            && a.ok()
        {
            for v in log_violations(stored, &a.body) {
                world.violation(format!("after restart {}: {v}", ended + 1));
            }
        }
    }
}
