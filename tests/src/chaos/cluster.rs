//! The fault suite on a cluster: two `eflow serve` processes with every role,
//! sharing a private PostgreSQL (store and history) and a private NATS
//! JetStream (`crate::instances`), under one fault at seeded moments; and
//! the checks only a cluster has: every shard held again at the end, each
//! process's fenced commits, and PostgreSQL scanned as the SQLite files are.

use super::load::after_restart;
use super::*;
use crate::instances::{Nats, PgCrash, Postgres};

/// Virtual shards: four for each of the two engines.
const SHARDS: usize = 8;

/// The private servers a cluster runs on. Dropped with the world: both are
/// killed by their process ids.
pub(super) struct Cluster {
    pg: tokio::sync::Mutex<Postgres>,
    nats: tokio::sync::Mutex<Nats>,
    store: String,
    bus: String,
}

impl Cluster {
    /// A fresh PostgreSQL (`initdb`) and NATS in `dir`, both answering.
    pub(super) async fn start(dir: &Path) -> Result<Cluster, String> {
        let mut pg = tokio::task::block_in_place(|| Postgres::init(dir))?;
        pg.ready(Duration::from_secs(60)).await?;
        let mut nats = Nats::start_in(dir)?;
        nats.ready(Duration::from_secs(30)).await?;
        Ok(Cluster {
            store: pg.url(),
            bus: format!("{}?prefix=chaos", nats.url()),
            pg: tokio::sync::Mutex::new(pg),
            nats: tokio::sync::Mutex::new(nats),
        })
    }

    /// The options every process of the cluster is started with.
    pub(super) fn flags(&self) -> Vec<String> {
        [
            "--shards",
            &SHARDS.to_string(),
            "--store",
            &self.store,
            "--history-store",
            &self.store,
            "--bus",
            &self.bus,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map_err(|e| format!("kill -{sig} {pid}: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("kill -{sig} {pid} failed ({status})"))
}

/// Makes `fault` at seeded moments until the load stops; after each, waits
/// for the cluster to answer again and checks what is cheap to check.
pub(super) async fn faults(world: Arc<World>, fault: Fault, mut rng: Rng) {
    loop {
        let until = Instant::now() + Duration::from_millis(rng.range(3000, 7000));
        while Instant::now() < until && !world.stopped() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if world.stopped() {
            return;
        }
        let went_on = match fault {
            Fault::KillEngine => kill_engine(&world, &mut rng).await,
            Fault::CrashPostgres => crash_postgres(&world, &mut rng).await,
            Fault::CrashNats => crash_nats(&world, &mut rng).await,
            Fault::PauseEngine => pause_engine(&world, &mut rng).await,
            Fault::Restart => unreachable!("the embedded server's kills are load::killer"),
        };
        let Some(before) = went_on else {
            world.stop.store(true, Ordering::Relaxed);
            return;
        };
        // Both processes were started again if they died: both must answer.
        for i in 0..world.nodes.len() {
            if !world.wait_up(i).await {
                world.stop.store(true, Ordering::Relaxed);
                return;
            }
        }
        after_restart(&world, before, &mut rng).await;
    }
}

/// Marks a fault made: the life that ended, for `after_restart`.
fn made(world: &World, what: &str) -> u32 {
    world.counters.faults.fetch_add(1, Ordering::Relaxed);
    world.say(what);
    world.life.fetch_add(1, Ordering::Relaxed)
}

/// SIGKILL of one process, started again 0–3 s later.
async fn kill_engine(world: &World, rng: &mut Rng) -> Option<u32> {
    let i = rng.below(world.nodes.len() as u64) as usize;
    world.sigkill(i);
    world.counters.sigkills.fetch_add(1, Ordering::Relaxed);
    let before = made(world, &format!("SIGKILL of process {i}"));
    tokio::time::sleep(Duration::from_millis(rng.range(0, 3000))).await;
    world.start_server(i).await.then_some(before)
}

/// A process that died while PostgreSQL or NATS was down is a violation:
/// it must wait for them. It is started again so the load can go on.
async fn survivors(world: &World, after: &str) -> bool {
    for i in 0..world.nodes.len() {
        let exited = lock(&world.nodes[i])
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            world.violation(format!(
                "crash: process {i} exited ({status}) when {after}; see its log"
            ));
            lock(&world.nodes[i]).child = None;
            if !world.start_server(i).await {
                return false;
            }
        }
    }
    true
}

/// PostgreSQL crashed (`-m immediate`, or SIGKILL of its postmaster), down
/// for 0.2–3 s, started again (it recovers from its WAL).
async fn crash_postgres(world: &World, rng: &mut Rng) -> Option<u32> {
    let cluster = world.cluster.as_ref()?;
    let mut pg = cluster.pg.lock().await;
    let how = if rng.below(3) == 0 {
        PgCrash::Kill
    } else {
        PgCrash::Immediate
    };
    if let Err(e) = tokio::task::block_in_place(|| pg.crash(how)) {
        world.violation(format!("harness: crashing PostgreSQL: {e}"));
        return None;
    }
    let before = made(world, &format!("PostgreSQL crashed ({how:?})"));
    tokio::time::sleep(Duration::from_millis(rng.range(200, 3000))).await;
    let started = match pg.start() {
        Ok(()) => pg.ready(Duration::from_secs(60)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        world.violation(format!("harness: PostgreSQL did not come back: {e}"));
        return None;
    }
    drop(pg);
    world.say("PostgreSQL back");
    survivors(world, "PostgreSQL crashed")
        .await
        .then_some(before)
}

/// NATS killed with SIGKILL, down for 0.2–3 s, started again on its store.
async fn crash_nats(world: &World, rng: &mut Rng) -> Option<u32> {
    let cluster = world.cluster.as_ref()?;
    let mut nats = cluster.nats.lock().await;
    if let Err(e) = nats.kill() {
        world.violation(format!("harness: killing NATS: {e}"));
        return None;
    }
    let before = made(world, "NATS killed");
    tokio::time::sleep(Duration::from_millis(rng.range(200, 3000))).await;
    let started = match nats.start() {
        Ok(()) => nats.ready(Duration::from_secs(60)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        world.violation(format!("harness: NATS did not come back: {e}"));
        return None;
    }
    drop(nats);
    world.say("NATS back");
    survivors(world, "NATS crashed").await.then_some(before)
}

/// One process stopped (SIGSTOP) for 6–9 s, past its leases (5 s) and the
/// other's next look (1 s), then continued: the other takes its shards
/// meanwhile, and its commits with the old leases must be refused.
async fn pause_engine(world: &World, rng: &mut Rng) -> Option<u32> {
    let i = rng.below(world.nodes.len() as u64) as usize;
    let pid = lock(&world.nodes[i]).child.as_ref().map(Child::id)?;
    if let Err(e) = signal(pid, "STOP") {
        world.violation(format!("harness: {e}"));
        return None;
    }
    let before = made(world, &format!("SIGSTOP of process {i}"));
    tokio::time::sleep(Duration::from_millis(rng.range(6000, 9000))).await;
    if let Err(e) = signal(pid, "CONT") {
        world.violation(format!("harness: {e}"));
        return None;
    }
    world.say(&format!("SIGCONT of process {i}"));
    Some(before)
}

/// At the end, before the processes stop: every shard is held again, by
/// both processes, within 30 s; and each process's fenced commits.
pub(super) async fn at_end(world: &World) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last;
    loop {
        match world.get("/v1/cluster", ADMIN).await {
            Ok(a) if a.ok() => {
                let mut by: BTreeMap<String, usize> = BTreeMap::new();
                let shards = a.body["shards"].as_array().cloned().unwrap_or_default();
                for s in &shards {
                    if s["held"] == true {
                        *by.entry(s["owner"].as_str().unwrap_or("").to_string())
                            .or_default() += 1;
                    }
                }
                let mut shares: Vec<usize> = by.values().copied().collect();
                shares.sort_unstable();
                if shares == [SHARDS / 2, SHARDS / 2] {
                    break;
                }
                last = format!("shares held {by:?}");
            }
            other => last = show(&other),
        }
        if Instant::now() > deadline {
            world.violation(format!(
                "shards: 30 s after the load, the two processes do not hold four shards each: {last}"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut fenced = Vec::new();
    for base in &world.bases {
        let text = match world.http.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => {
                world.violation(format!("metrics: {base}/metrics: {e}"));
                continue;
            }
        };
        match text
            .lines()
            .find_map(|l| l.strip_prefix("eflow_fenced_commits_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(n) => fenced.push(n),
            None => world.violation(format!(
                "metrics: no eflow_fenced_commits_total in {base}/metrics"
            )),
        }
    }
    fenced
}

/// Reads the cluster's PostgreSQL after the last stop: no column of any
/// table holds a purged tenant's id, and every run's events (the engine's
/// and the history's) are gapless.
pub(super) async fn scan(world: &World, cluster: &Cluster) {
    use sqlx::{Connection, Row};
    let needle = format!("purged-{}-", world.seed);
    let mut conn = match sqlx::PgConnection::connect(&cluster.store).await {
        Ok(c) => c,
        Err(e) => {
            world.violation(format!("scan: connecting to PostgreSQL: {e}"));
            return;
        }
    };
    let tables: Vec<String> = match sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    {
        Ok(t) => t,
        Err(e) => {
            world.violation(format!("scan: the tables: {e}"));
            return;
        }
    };
    for table in &tables {
        let columns: Vec<(String, String)> = match sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await
        {
            Ok(c) => c,
            Err(e) => {
                world.violation(format!("scan: the columns of {table}: {e}"));
                continue;
            }
        };
        for (column, ty) in &columns {
            // Bytes are searched as bytes, everything else as its text.
            let q = if ty == "bytea" {
                format!(
                    "SELECT count(*), min(encode(substr(\"{column}\", 1, 300), 'escape')) \
                     FROM \"{table}\" WHERE position(convert_to($1, 'UTF8') in \"{column}\") > 0"
                )
            } else {
                format!(
                    "SELECT count(*), min(CAST(\"{column}\" AS TEXT)) FROM \"{table}\" \
                     WHERE position($1 in CAST(\"{column}\" AS TEXT)) > 0"
                )
            };
            match sqlx::query(&q).bind(&needle).fetch_one(&mut conn).await {
                Ok(row) => {
                    let count: i64 = row.try_get(0).unwrap_or(0);
                    if count > 0 {
                        let sample: Option<String> = row.try_get(1).unwrap_or_default();
                        let sample: String = sample.unwrap_or_default().chars().take(300).collect();
                        world.violation(format!(
                            "purge: {count} rows of {table} hold a purged tenant's id in `{column}`, e.g. {sample}"
                        ));
                    }
                }
                Err(e) => world.violation(format!("scan: {table}.{column}: {e}")),
            }
        }
    }
    for events in ["events", "h_events"] {
        if !tables.iter().any(|t| t == events) {
            world.violation(format!("scan: PostgreSQL has no table `{events}`"));
            continue;
        }
        let q = format!(
            "SELECT run, count(*), max(seq) FROM \"{events}\" GROUP BY run \
             HAVING min(seq) <> 0 OR max(seq) <> count(*) - 1 \
             OR count(DISTINCT seq) <> count(*) LIMIT 20"
        );
        match sqlx::query(&q).fetch_all(&mut conn).await {
            Ok(rows) => {
                for row in rows {
                    let run: String = row.try_get(0).unwrap_or_default();
                    let n: i64 = row.try_get(1).unwrap_or(0);
                    let max: i64 = row.try_get(2).unwrap_or(0);
                    world.violation(format!(
                        "gap: PostgreSQL's {events} holds {n} events of {run} with seq up to {max}"
                    ));
                }
            }
            Err(e) => world.violation(format!("scan: {events}: {e}")),
        }
    }
    let _ = conn.close().await;
}
