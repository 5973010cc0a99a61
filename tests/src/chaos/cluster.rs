//! The fault suite on a cluster: two `eflow serve` processes with every role,
//! sharing a private PostgreSQL (store and history) and a private NATS
//! JetStream (`crate::instances`), under one fault at seeded moments; and
//! the checks only a cluster has: every shard held again at the end, each
//! process's fenced commits, and PostgreSQL scanned as the SQLite files are.

use super::load::after_restart;
use super::*;
use crate::instances::{Nats, PgCrash, Postgres, faketime};
use crate::proxy::Proxy;

/// Virtual shards: four for each of the two engines.
const SHARDS: usize = 8;
/// How far each process's clock is off under [`Fault::ClockSkew`]: the
/// first's ahead, the second's behind.
const SKEW: &str = "30s";
const SKEW_SECS: u64 = 30;
/// How many engines at most join the two under [`Fault::Churn`] (a third
/// and a fourth).
pub(super) const EXTRA_ENGINES: usize = 2;
/// The longest a wait of the `Sleep` flow (2 s) may end after its start
/// was answered under [`Fault::ClockSkew`]: 30 s (the skew; as long as a
/// killed process's claims on timers take to lapse, which is how late its
/// timers may be whatever the clocks), a lease (5 s) and 10 s for a loaded
/// 2-core machine running debug builds.
const WAIT_LATE_MAX: Duration = Duration::from_secs(2 + SKEW_SECS + 5 + 10);
/// How much sooner than its length after its start was first sent a wait
/// may end: the processes' clocks, as they judge time, agree this well.
const WAIT_EARLY_MAX: Duration = Duration::from_secs(1);

/// The private servers a cluster runs on. Dropped with the world: both are
/// killed by their process ids.
pub(super) struct Cluster {
    pg: tokio::sync::Mutex<Postgres>,
    nats: tokio::sync::Mutex<Nats>,
    store: String,
    bus: String,
    /// [`Fault::LostReply`]: process 0's way to PostgreSQL.
    proxy: Option<Proxy>,
    /// [`Fault::ClockSkew`]: libfaketime, preloaded into both processes.
    faketime: Option<PathBuf>,
    /// [`Fault::HeldTransaction`]: open from before the load to the end.
    held: tokio::sync::Mutex<Option<Held>>,
}

impl Cluster {
    /// A fresh PostgreSQL (`initdb`) and NATS in `dir`, both answering, and
    /// what `fault` needs besides.
    pub(super) async fn start(dir: &Path, fault: Fault, seed: u64) -> Result<Cluster, String> {
        let mut pg = tokio::task::block_in_place(|| Postgres::init(dir))?;
        pg.ready(Duration::from_secs(60)).await?;
        let mut nats = Nats::start_in(dir)?;
        nats.ready(Duration::from_secs(30)).await?;
        let proxy = match fault {
            Fault::LostReply => Some(Proxy::start(&format!("127.0.0.1:{}", pg.port), seed).await?),
            _ => None,
        };
        let faketime = match fault {
            Fault::ClockSkew => Some(faketime()?),
            _ => None,
        };
        Ok(Cluster {
            store: pg.url(),
            bus: format!("{}?prefix=chaos", nats.url()),
            pg: tokio::sync::Mutex::new(pg),
            nats: tokio::sync::Mutex::new(nats),
            proxy,
            faketime,
            held: tokio::sync::Mutex::new(None),
        })
    }

    /// The options process `i` of the cluster is started with: process 0
    /// reaches PostgreSQL through the proxy when there is one.
    pub(super) fn flags(&self, i: usize) -> Vec<String> {
        let store = match &self.proxy {
            Some(p) if i == 0 => format!("postgres://postgres@{}/postgres", p.addr),
            _ => self.store.clone(),
        };
        [
            "--shards",
            &SHARDS.to_string(),
            "--store",
            &store,
            "--history-store",
            &store,
            "--bus",
            &self.bus,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The environment of process `i`: under [`Fault::ClockSkew`] its clock
    /// shifted by libfaketime, the first's ahead and the second's behind
    /// (the monotonic clock left alone: only the time of day is off, as
    /// between two machines).
    pub(super) fn env(&self, i: usize) -> Vec<(String, String)> {
        let Some(lib) = &self.faketime else {
            return Vec::new();
        };
        let sign = if i == 0 { "+" } else { "-" };
        vec![
            ("LD_PRELOAD".into(), lib.display().to_string()),
            ("FAKETIME".into(), format!("{sign}{SKEW}")),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }
}

/// A transaction held open on the cluster's PostgreSQL, as a long report or
/// `pg_dump` holds one: `REPEATABLE READ`, with a transaction id (what
/// `eflow bench --hold-transaction` holds; this crate links no eflow
/// library, so it is written again here) and a snapshot that read `runs`
/// and `events` (so it also holds their share locks to the end).
struct Held {
    conn: sqlx::PgConnection,
    since: Instant,
    xid: i64,
    /// `runs` and `events` as the snapshot saw them.
    counts: (i64, i64),
}

impl Held {
    async fn open(url: &str) -> Result<Held, String> {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| format!("connecting to hold a transaction: {e}"))?;
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut conn)
            .await
            .map_err(|e| format!("BEGIN: {e}"))?;
        let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("txid_current(): {e}"))?;
        let counts = Held::counts(&mut conn).await?;
        Ok(Held {
            conn,
            since: Instant::now(),
            xid,
            counts,
        })
    }

    async fn counts(conn: &mut sqlx::PgConnection) -> Result<(i64, i64), String> {
        sqlx::query_as("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events)")
            .fetch_one(conn)
            .await
            .map_err(|e| format!("counting runs and events: {e}"))
    }

    /// Whether it is still the same transaction with the same snapshot.
    async fn intact(&mut self) -> Result<(), String> {
        let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| format!("the transaction held open was ended: {e}"))?;
        let counts = Held::counts(&mut self.conn).await?;
        if xid != self.xid || counts != self.counts {
            return Err(format!(
                "the transaction held open changed: xid {} then {xid}, runs and events {:?} then {counts:?}",
                self.xid, self.counts
            ));
        }
        Ok(())
    }

    async fn end(mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

/// What the fault needs in place before the load starts: the transaction
/// held open; both processes' clocks checked to be shifted. False (with a
/// violation) when it cannot be had.
pub(super) async fn before_load(world: &World, fault: Fault) -> bool {
    let Some(cluster) = world.cluster.as_ref() else {
        return true;
    };
    match fault {
        Fault::HeldTransaction => match Held::open(&cluster.store).await {
            Ok(h) => {
                world.say(&format!(
                    "holding transaction {} open (a snapshot of {} runs)",
                    h.xid, h.counts.0
                ));
                *cluster.held.lock().await = Some(h);
                world.counters.faults.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                world.violation(format!("harness: {e}"));
                false
            }
        },
        Fault::ClockSkew => {
            for i in 0..world.nodes.len() {
                if let Err(e) = shifted(&world.nodes[i]) {
                    world.violation(format!("harness: process {i}: {e}"));
                    return false;
                }
            }
            true
        }
        _ => true,
    }
}

/// Whether a process runs with libfaketime mapped in and `FAKETIME` in its
/// environment.
fn shifted(node: &Mutex<Node>) -> Result<(), String> {
    let n = lock(node);
    let pid = n.child.as_ref().map(Child::id).ok_or("not running")?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    if !maps.contains("libfaketime") {
        return Err("libfaketime is not loaded: its clock is not shifted".into());
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("/proc/{pid}/environ: {e}"))?;
    if !environ
        .split(|b| *b == 0)
        .any(|v| v.starts_with(b"FAKETIME="))
    {
        return Err("FAKETIME is not in its environment: its clock is not shifted".into());
    }
    Ok(())
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
    // Joining and leaving is every few seconds; the other faults come
    // further apart, so the cluster works between them.
    let (lo, hi) = if fault == Fault::Churn {
        (1000, 3000)
    } else {
        (3000, 7000)
    };
    let mut churn = Churn::default();
    'faults: loop {
        let until = Instant::now() + Duration::from_millis(rng.range(lo, hi));
        while Instant::now() < until && !world.stopped() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if world.stopped() {
            break 'faults;
        }
        let went_on = match fault {
            Fault::KillEngine | Fault::ClockSkew => kill_engine(&world, &mut rng).await,
            Fault::CrashPostgres => crash_postgres(&world, &mut rng).await,
            Fault::CrashNats => crash_nats(&world, &mut rng).await,
            Fault::PauseEngine => pause_engine(&world, &mut rng).await,
            Fault::LostReply => lose_replies(&world, &mut rng).await,
            Fault::HeldTransaction => still_held(&world).await,
            Fault::Churn => churn.step(&world, &mut rng).await,
            Fault::Restart => unreachable!("the embedded server's kills are load::killer"),
        };
        let Some(before) = went_on else {
            world.stop.store(true, Ordering::Relaxed);
            break 'faults;
        };
        // Both processes were started again if they died: both must answer.
        for i in 0..world.nodes.len() {
            if !world.wait_up(i).await {
                world.stop.store(true, Ordering::Relaxed);
                break 'faults;
            }
        }
        after_restart(&world, before, &mut rng).await;
    }
    if fault == Fault::Churn {
        churn.leave_all(&world).await;
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

/// Process 0's connections to PostgreSQL cut for 1–3 s, each right after
/// the proxy forwarded one of its messages (aimed at `COMMIT`s, see
/// `crate::proxy`); then it must still be running.
async fn lose_replies(world: &World, rng: &mut Rng) -> Option<u32> {
    let proxy = world.cluster.as_ref()?.proxy.as_ref()?;
    let cuts = || proxy.cuts().all.load(Ordering::Relaxed);
    let before_cuts = cuts();
    proxy.cutting(true);
    tokio::time::sleep(Duration::from_millis(rng.range(1000, 3000))).await;
    proxy.cutting(false);
    let made_now = cuts() - before_cuts;
    let before = made(
        world,
        &format!("{made_now} connections of process 0 cut after a message"),
    );
    survivors(world, "its replies were lost")
        .await
        .then_some(before)
}

/// The transaction is still open, with its snapshot.
async fn still_held(world: &World) -> Option<u32> {
    let cluster = world.cluster.as_ref()?;
    let mut held = cluster.held.lock().await;
    if let Err(e) = held.as_mut()?.intact().await {
        world.violation(format!("harness: {e}"));
        return None;
    }
    Some(world.life.load(Ordering::Relaxed))
}

/// The engines that join and leave the two, in slots of `World::extra`.
#[derive(Default)]
struct Churn {
    joins: u64,
    stops: u64,
    kills: u64,
}

impl Churn {
    /// One engine joins (a free slot's started, and answers), or one
    /// leaves: stopped with SIGTERM (it must exit 0, giving its shards up)
    /// or killed with SIGKILL (its leases lapse).
    async fn step(&mut self, world: &World, rng: &mut Rng) -> Option<u32> {
        let mut running = Vec::new();
        for (i, node) in world.extra.iter().enumerate() {
            let exited = lock(node)
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                world.violation(format!(
                    "crash: joining engine {i} exited by itself ({status}); see its log"
                ));
                lock(node).child = None;
            }
            if lock(node).child.is_some() {
                running.push(i);
            }
        }
        let free: Vec<usize> = (0..world.extra.len())
            .filter(|i| !running.contains(i))
            .collect();
        if !free.is_empty() && (running.is_empty() || rng.below(2) == 0) {
            let i = free[rng.below(free.len() as u64) as usize];
            let spawned = lock(&world.extra[i]).spawn();
            if let Err(e) = spawned {
                world.violation(format!("harness: joining engine {i}: {e}"));
                return None;
            }
            if !world.wait_node_up(&world.extra[i]).await {
                return None;
            }
            self.joins += 1;
            return Some(made(world, &format!("engine {i} joined")));
        }
        let i = running[rng.below(running.len() as u64) as usize];
        if rng.below(2) == 0 {
            world.sigterm_node(&world.extra[i]).await;
            self.stops += 1;
            Some(made(world, &format!("engine {i} stopped (SIGTERM)")))
        } else {
            if let Some(mut c) = lock(&world.extra[i]).child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            self.kills += 1;
            Some(made(world, &format!("engine {i} killed (SIGKILL)")))
        }
    }

    /// At the load's end the joined engines leave cleanly, so the two hold
    /// every shard again for the checks.
    async fn leave_all(&self, world: &World) {
        for node in &world.extra {
            world.sigterm_node(node).await;
        }
        lock(&world.notes).push(format!(
            "{} joins, {} stops (SIGTERM), {} kills (SIGKILL) of joining engines",
            self.joins, self.stops, self.kills
        ));
    }
}

/// After the checks: what the fault leaves to check or to tell.
pub(super) async fn wind_up(world: &World, fault: Fault) {
    let Some(cluster) = world.cluster.as_ref() else {
        return;
    };
    match fault {
        Fault::LostReply => {
            if let Some(p) = &cluster.proxy {
                let c = p.cuts();
                // Each cut is a fault made, not each window of cuts.
                let all = c.all.load(Ordering::Relaxed);
                world.counters.faults.store(all, Ordering::Relaxed);
                lock(&world.notes).push(format!(
                    "{} connections of process 0 cut after a message ({} after a COMMIT), of {} made",
                    c.all.load(Ordering::Relaxed),
                    c.commits.load(Ordering::Relaxed),
                    c.connections.load(Ordering::Relaxed)
                ));
            }
        }
        Fault::HeldTransaction => {
            let held = cluster.held.lock().await.take();
            match held {
                Some(mut h) => {
                    if let Err(e) = h.intact().await {
                        world.violation(format!("harness: {e}"));
                    }
                    lock(&world.notes).push(format!(
                        "transaction {} held open for {:.0} s, to after the checks",
                        h.xid,
                        h.since.elapsed().as_secs_f64()
                    ));
                    h.end().await;
                }
                None => world.violation("harness: no transaction was held open".into()),
            }
        }
        Fault::ClockSkew => waits(world),
        _ => {}
    }
}

/// Every `Sleep` run's 2 s wait ended (its `Work` was invoked) no sooner
/// than 2 s after its start was first sent, give or take how well the
/// processes agree on the time, and no later than [`WAIT_LATE_MAX`] after
/// its start was answered.
fn waits(world: &World) {
    let calls = lock(&world.remote.first_call).clone();
    let mut spans = Vec::new();
    for (stored, t) in lock(&world.runs).iter() {
        if !matches!(t.kind, Kind::Sleep(_)) {
            continue;
        }
        let (Some(acked), Some(&called)) = (t.acked_at, calls.get(stored)) else {
            continue;
        };
        let after_sent = called.saturating_duration_since(t.sent_at);
        let after_acked = called.saturating_duration_since(acked);
        if after_sent + WAIT_EARLY_MAX < Duration::from_secs(2) {
            world.violation(format!(
                "timer: {stored}'s wait of 2 s ended {:.2} s after its start was sent",
                after_sent.as_secs_f64()
            ));
        }
        if after_acked > WAIT_LATE_MAX {
            world.violation(format!(
                "timer: {stored}'s wait of 2 s ended {:.1} s after its start was answered (at most {} s)",
                after_acked.as_secs_f64(),
                WAIT_LATE_MAX.as_secs()
            ));
        }
        spans.push((after_sent.as_secs_f64(), after_acked.as_secs_f64()));
    }
    let soonest = spans.iter().map(|s| s.0).min_by(f64::total_cmp);
    let latest = spans.iter().map(|s| s.1).max_by(f64::total_cmp);
    match (soonest, latest) {
        (Some(soonest), Some(latest)) => lock(&world.notes).push(format!(
            "{} waits of 2 s ended {soonest:.2} s after their start was sent at the soonest, \
             {latest:.2} s after it was answered at the latest",
            spans.len()
        )),
        _ => world.violation("timer: no `Sleep` run's wait ended".into()),
    }
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
