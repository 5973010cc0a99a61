//! The standing fault suite: a mixed load against the real `eflow serve` (remote
//! `http` steps served by a remote system in this process that calls back,
//! approvals, waits, schedules, fan-outs, redeploys, tenant purges), the server
//! killed at seeded random moments (SIGKILL, sometimes SIGTERM) and started
//! again on the same data; after each restart and at the end the invariants are
//! checked: no run lost, none stuck, none completed twice, event logs gapless,
//! no row of a purged tenant left in either SQLite file.
//!
//! The same load runs against a cluster too (`Fault`, `cluster.rs`): two
//! `eflow serve` processes with every role on a private PostgreSQL and a
//! private NATS JetStream (`crate::instances`), under one fault each: an
//! engine killed with SIGKILL, PostgreSQL crashed, NATS crashed, an engine
//! paused past its lease, commits whose replies were lost (`crate::proxy`),
//! a transaction held open, clocks 30 s apart, engines joining and leaving;
//! the same checks, with PostgreSQL scanned instead of the SQLite files.
//!
//! A seed fixes every choice (what each load worker does, when and how the
//! server is killed); the machine's timing decides how they interleave.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use crate::{bin, free_port};

mod checks;
mod cluster;
mod load;
mod remote;

use checks::{finish, scan};
use cluster::Cluster;
use load::{driver, killer};
use remote::invoke;

const ADMIN: &str = "chaos-admin-token";
/// The tenants that live through the whole run; purged tenants are
/// `purged-SEED-N`, a name no other row can hold.
const STABLE: [&str; 3] = ["alpha", "beta", "gamma"];
const WORKERS: u64 = 3;
/// How long the runs may take to settle once the load stops.
const SETTLE: Duration = Duration::from_secs(120);

/// What to run: the seeds, and how long each one's load lasts.
#[derive(Debug, Clone)]
pub struct Config {
    pub seeds: Vec<u64>,
    pub seconds: u64,
}

impl Config {
    /// `EFLOW_CHAOS_SEEDS` (comma-separated, default `1,2`) and
    /// `EFLOW_CHAOS_SECONDS` (the load's length per seed, default 20).
    pub fn from_env() -> Result<Config, String> {
        Config::from_env_or("1,2")
    }

    /// [`Config::from_env`] with other default seeds.
    pub fn from_env_or(default_seeds: &str) -> Result<Config, String> {
        let seeds =
            std::env::var("EFLOW_CHAOS_SEEDS").unwrap_or_else(|_| default_seeds.to_string());
        let seeds = seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| format!("EFLOW_CHAOS_SEEDS: `{s}` is not a number"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let seconds = match std::env::var("EFLOW_CHAOS_SECONDS") {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("EFLOW_CHAOS_SECONDS: `{s}` is not a number of seconds"))?,
            Err(_) => 20,
        };
        if seeds.is_empty() {
            return Err("EFLOW_CHAOS_SEEDS names no seed".into());
        }
        Ok(Config { seeds, seconds })
    }
}

/// What goes wrong while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// The embedded server alone on its SQLite files, killed (SIGKILL,
    /// sometimes SIGTERM) and started again.
    #[default]
    Restart,
    /// A cluster of two; one engine process killed with SIGKILL and started
    /// again later.
    KillEngine,
    /// A cluster of two; its PostgreSQL crashed and started again.
    CrashPostgres,
    /// A cluster of two; its NATS server killed with SIGKILL and started
    /// again, losing what it had not written.
    CrashNats,
    /// A cluster of two; one engine process stopped (SIGSTOP) past its
    /// leases, then continued (SIGCONT).
    PauseEngine,
    /// A cluster of two; one process reaches PostgreSQL through a proxy
    /// that, at seeded moments, cuts its connections right after forwarding
    /// a message (aimed at `COMMIT`s): the server acts on it, and its reply
    /// is lost.
    LostReply,
    /// A cluster of two; a transaction (`REPEATABLE READ`, with an xid and
    /// a snapshot of the runs) held open on PostgreSQL from before the load
    /// until the runs settled and were checked.
    HeldTransaction,
    /// A cluster of two whose clocks disagree (libfaketime): one process
    /// 30 s ahead, the other 30 s behind; one of them killed with SIGKILL
    /// at seeded moments and started again, so shards change hands between
    /// the two clocks.
    ClockSkew,
    /// A cluster of two, and engine processes (`--role engine`) joining and
    /// leaving every few seconds: started, stopped with SIGTERM, killed
    /// with SIGKILL.
    Churn,
}

impl Fault {
    pub fn clustered(self) -> bool {
        self != Fault::Restart
    }

    /// What the machine must have for it (`crate::instances::missing`).
    pub fn needs(self) -> &'static [&'static str] {
        match self {
            Fault::Restart => &[],
            Fault::ClockSkew => &["postgres", "nats", "faketime"],
            _ => &["postgres", "nats"],
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Restart => "embedded server killed and restarted",
            Fault::KillEngine => "kill -9 of an engine",
            Fault::CrashPostgres => "PostgreSQL crashed",
            Fault::CrashNats => "NATS crashed",
            Fault::PauseEngine => "an engine paused past its lease",
            Fault::LostReply => "commit replies lost",
            Fault::HeldTransaction => "a transaction held open",
            Fault::ClockSkew => "clocks 30 s ahead and 30 s behind",
            Fault::Churn => "engines joining and leaving",
        })
    }
}

/// What one seed did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub fault: Fault,
    pub seed: u64,
    pub seconds: u64,
    /// Starts sent (distinct run ids) and those answered 2xx.
    pub starts: u64,
    pub acknowledged: u64,
    /// Runs whose logs were checked at the end: the started ones, their
    /// fan-out children and the schedules' runs.
    pub runs_checked: u64,
    pub sigkills: u64,
    pub sigterms: u64,
    pub restarts: u64,
    pub decisions: u64,
    pub deploys: u64,
    pub purges: u64,
    pub invocations: u64,
    pub failed_attempts: u64,
    /// On a cluster: the faults made (kills, crashes, pauses).
    pub faults: u64,
    /// On a cluster: each process's `eflow_fenced_commits_total` at the end
    /// (since its last start).
    pub fenced_commits: Vec<u64>,
    /// On a cluster: what the fault itself did and saw (cuts made, how long
    /// the transaction was held, how late the waits ended, who joined).
    pub notes: Vec<String>,
    pub violations: Vec<String>,
    /// The server's data directory and log, kept when something was found.
    pub dir: PathBuf,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fault.clustered() {
            return write!(
                f,
                "cluster, {}, seed {}: {} s of load, {} faults, {} runs started ({} acknowledged), \
                 {} runs checked, {} decisions, {} deploys, {} purges, {} remote invocations, \
                 {} failed attempts retried, fenced commits per process {:?}, {} violations{}",
                self.fault,
                self.seed,
                self.seconds,
                self.faults,
                self.starts,
                self.acknowledged,
                self.runs_checked,
                self.decisions,
                self.deploys,
                self.purges,
                self.invocations,
                self.failed_attempts,
                self.fenced_commits,
                self.violations.len(),
                self.notes
                    .iter()
                    .map(|n| format!("; {n}"))
                    .collect::<String>()
            );
        }
        write!(
            f,
            "seed {}: {} s of load, {} runs started ({} acknowledged), {} runs checked, \
             {} kills ({} SIGKILL, {} SIGTERM), {} restarts, {} decisions, {} deploys, \
             {} purges, {} remote invocations, {} failed attempts retried, {} violations",
            self.seed,
            self.seconds,
            self.starts,
            self.acknowledged,
            self.runs_checked,
            self.sigkills + self.sigterms,
            self.sigkills,
            self.sigterms,
            self.restarts,
            self.decisions,
            self.deploys,
            self.purges,
            self.invocations,
            self.failed_attempts,
            self.violations.len()
        )
    }
}

/// A small seeded generator (xorshift64*, seeded through splitmix64): each
/// worker and the killer get a stream of their own from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed
            .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }
}

/// Runs one seed: a server of its own in a fresh directory, the load for
/// `seconds` with kills, then the settling and the checks.
pub fn run_seed(seed: u64, seconds: u64) -> Report {
    run(Fault::Restart, seed, seconds)
}

/// Runs one seed under `fault`: on a cluster of its own (two processes, a
/// private PostgreSQL and NATS) for the cluster's faults.
pub fn run(fault: Fault, seed: u64, seconds: u64) -> Report {
    // Built (when stale) before the clock of the load starts.
    bin("eflow");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(seed_async(fault, seed, seconds));
    // The remote system's callbacks still retrying end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    report
}

// ---- the flows ---------------------------------------------------------------------

/// The tenants' flows; `generation` changes the `Remote` flow (a redeploy
/// makes a new version of it, and runs keep the version they started on).
fn source(remote: &str, generation: u32) -> String {
    format!(
        r#"from "std/approval" import Approve
from "std/time" import Wait

remote step Work(n: Int) -> Int

flow Remote(n: Int) -> Int {{
    let a = Work(n: n)
        retry 5
        backoff fixed({backoff}ms)
    let b = Work(n: a)
        retry 5
        backoff fixed(100ms)
    return b
}}

flow Gate(n: Int) -> Bool {{
    let d = Approve(subject: n, summary: "Go on?")
    return d.approved
}}

flow Sleep(n: Int) -> Int {{
    let w = Wait(duration: 2s)
    let a = Work(n: n)
        after w
    return a
}}

flow Child(n: Int) -> Int {{
    let a = Work(n: n)
        retry 5
        backoff fixed(100ms)
    return a
}}

flow Fan(xs: List<Int>) -> List<Int> {{
    let r = for x in xs join all {{
        Child(n: x)
    }}
    return r
}}

flow Tick(n: Int = 0) -> Int {{
    schedule "* * * * * *"
        overlap allow_all
        catchup skip
    let a = Work(n: n)
    return a
}}

bindings test {{
    Work = http {{ url: "{remote}/work", timeout: 5s }}
    Approve = approval {{ channel: "ui" }}
}}
"#,
        backoff = 100 + generation
    )
}

/// What a started run was asked to do, and so how it must end.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Remote(i64),
    Gate(i64),
    Sleep(i64),
    Fan(Vec<i64>),
}

/// How the test decides a gate on `n`: never (it must still wait at the
/// end), approve or reject.
fn decision(n: i64) -> Option<bool> {
    if n % 4 == 0 { None } else { Some(n % 2 == 0) }
}

impl Kind {
    fn flow(&self) -> &'static str {
        match self {
            Kind::Remote(_) => "Remote",
            Kind::Gate(_) => "Gate",
            Kind::Sleep(_) => "Sleep",
            Kind::Fan(_) => "Fan",
        }
    }

    fn input(&self) -> Value {
        match self {
            Kind::Remote(n) | Kind::Gate(n) | Kind::Sleep(n) => json!({ "n": n }),
            Kind::Fan(xs) => json!({ "xs": xs }),
        }
    }

    /// The result it must end with; `None` for a gate nobody decides.
    fn result(&self) -> Option<Value> {
        match self {
            Kind::Remote(n) => Some(json!(n + 2)),
            Kind::Sleep(n) => Some(json!(n + 1)),
            Kind::Fan(xs) => Some(json!(xs.iter().map(|x| x + 1).collect::<Vec<_>>())),
            Kind::Gate(n) => decision(*n).map(Value::Bool),
        }
    }
}

#[derive(Debug, Clone)]
struct Tracked {
    tenant: String,
    /// The id the tenant chose; the admin names it `tenant:id`.
    id: String,
    kind: Kind,
    /// The server life (restarts before it) in which a start was answered 2xx.
    acked_in: Option<u32>,
    /// When its start was first answered 2xx.
    acked_at: Option<Instant>,
    /// When its start was first sent: a wait it begins with cannot end
    /// before this and the wait's length (`cluster::waits`).
    sent_at: Instant,
    version: Option<String>,
    decided: bool,
}

// ---- the remote system -------------------------------------------------------------

/// An attempt as the remote system is told it: run, step, attempt, index.
type Attempt = (String, String, u64, Option<u64>);

/// What the remote system the `http` steps call (`remote.rs`) saw: each
/// attempt's idempotency keys, and callbacks the server refused.
#[derive(Default)]
struct Remote {
    /// (run, step, attempt, index) → the keys it was invoked with.
    keys: Mutex<HashMap<Attempt, BTreeSet<String>>>,
    invocations: AtomicU64,
    /// When each run's first invocation came.
    first_call: Mutex<HashMap<String, Instant>>,
    /// Callbacks of live tenants' runs the server refused.
    refused: Mutex<Vec<String>>,
}

// ---- the server process ------------------------------------------------------------

/// `eflow serve` on a fixed address and data directory, across restarts (the
/// callback addresses handed out name the address). Killed when dropped.
struct Node {
    data: PathBuf,
    log: PathBuf,
    addr: String,
    /// What it runs on: its shards, and a cluster's store and bus.
    flags: Vec<String>,
    /// Its environment besides the test's (a clock shifted by libfaketime).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = Command::new(bin("eflow"))
            .arg("serve")
            .arg("--data")
            .arg(&self.data)
            .args(["--listen", &self.addr, "--admin-token", ADMIN])
            // The remote system listens on loopback.
            .args(["--allow-egress", "127.0.0.1"])
            // Several shards, so runs, children and deliveries cross workers.
            .args(&self.flags)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("EFLOW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("eflow serve did not start: {e}"))?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- the world a seed runs in ----------------------------------------------------

struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// The lifecycle of the tenant being purged: created and loaded, purged
/// with its runs in flight, created again under the same id (which must see
/// nothing of the old one), loaded again, purged for good.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    Created,
    Loaded { reborn: bool, since: Instant },
    Purged,
    Recreated { token: String },
}

struct Purge {
    n: u32,
    phase: Phase,
}

#[derive(Default)]
struct Counters {
    starts: AtomicU64,
    sigkills: AtomicU64,
    sigterms: AtomicU64,
    /// A cluster's faults: kills, crashes, pauses.
    faults: AtomicU64,
    decisions: AtomicU64,
    deploys: AtomicU64,
    purges: AtomicU64,
    /// Failed attempts in the checked logs (retried after).
    failed_attempts: AtomicU64,
}

struct World {
    seed: u64,
    began: Instant,
    /// Each process's API; requests go to them in turn.
    bases: Vec<String>,
    next: AtomicUsize,
    remote_url: String,
    http: reqwest::Client,
    nodes: Vec<Mutex<Node>>,
    /// Engine processes that join and leave (`Fault::Churn`): no API, no
    /// entry in `bases`.
    extra: Vec<Mutex<Node>>,
    /// The private PostgreSQL and NATS of a cluster.
    cluster: Option<Cluster>,
    stop: AtomicBool,
    /// Restarts so far: the server's life.
    life: AtomicU32,
    tokens: Mutex<HashMap<String, String>>,
    generations: Mutex<HashMap<String, u32>>,
    /// Runs started in the stable tenants, by stored id (`tenant:id`).
    runs: Mutex<BTreeMap<String, Tracked>>,
    purge: tokio::sync::Mutex<Purge>,
    counters: Counters,
    violations: Mutex<Vec<String>>,
    /// What a cluster's fault reports besides the counts (`Report::notes`).
    notes: Mutex<Vec<String>>,
    remote: Arc<Remote>,
}

impl World {
    /// A progress line, so a long run shows where it is.
    fn say(&self, what: &str) {
        let t = self.began.elapsed().as_secs_f64();
        eprintln!("chaos seed {} at {t:.1} s: {what}", self.seed);
    }

    fn violation(&self, what: String) {
        eprintln!("chaos seed {}: VIOLATION {what}", self.seed);
        lock(&self.violations).push(what);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let base = &self.bases[self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len()];
        self.send_to(base, method, path, token, body).await
    }

    /// [`World::send`] to one process.
    async fn send_to(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Answer { status, body })
    }

    async fn get(&self, path: &str, token: &str) -> Result<Answer, String> {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Result<Answer, String> {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// `get`, retried through a restart (transport errors and 5xx) for up to a minute.
    async fn get_steady(&self, path: &str, token: &str) -> Result<Answer, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(path, token).await;
            match &r {
                Ok(a) if a.status < 500 => return r,
                _ if Instant::now() > deadline => return r,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Waits until process `i` answers; a violation if it does not within a minute.
    async fn wait_up(&self, i: usize) -> bool {
        self.wait_node_up(&self.nodes[i]).await
    }

    /// [`World::wait_up`] for any process, an API's or not.
    async fn wait_node_up(&self, node: &Mutex<Node>) -> bool {
        let base = format!("http://{}", lock(node).addr);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(a) = self
                .send_to(&base, reqwest::Method::GET, "/v1/health", ADMIN, None)
                .await
                && a.ok()
            {
                return true;
            }
            let exited = lock(node)
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.violation(format!(
                    "restart: the server exited on start ({status}); see its log"
                ));
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.violation("restart: the server did not answer within 60 s of its start".into());
        false
    }

    /// Stops process `i` with SIGTERM, as a service manager does: it must
    /// exit 0 within 20 s.
    async fn sigterm(&self, i: usize) {
        self.sigterm_node(&self.nodes[i]).await;
    }

    /// [`World::sigterm`] for any process.
    async fn sigterm_node(&self, node: &Mutex<Node>) {
        let child = lock(node).child.take();
        let Some(mut child) = child else { return };
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            self.violation(format!("stop: could not send SIGTERM to {pid}"));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        self.violation(format!(
                            "stop: the server exited with {status} after SIGTERM"
                        ));
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => {
                    self.violation("stop: the server did not stop within 20 s of SIGTERM".into());
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    fn sigkill(&self, i: usize) {
        if let Some(mut c) = lock(&self.nodes[i]).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn start_server(&self, i: usize) -> bool {
        let spawned = lock(&self.nodes[i]).spawn();
        if let Err(e) = spawned {
            self.violation(format!("restart: {e}"));
            return false;
        }
        self.wait_up(i).await
    }

    fn token(&self, tenant: &str) -> String {
        lock(&self.tokens).get(tenant).cloned().unwrap_or_default()
    }

    async fn deploy(&self, tenant: &str, token: &str, generation: u32) -> Result<Answer, String> {
        let body = json!({
            "tenant": if token == ADMIN { Some(tenant) } else { None },
            "env": "test",
            "source": { "chaos.eflow": source(&self.remote_url, generation) },
        });
        self.post("/v1/flows", token, &body).await
    }

    /// Creates a tenant (admin); its token, minted anew when the tenant
    /// exists already (its creation answered, but the answer was lost in a kill).
    async fn create_tenant(&self, id: &str) -> Result<String, String> {
        let body =
            json!({ "id": id, "max_active_runs": 1_000_000, "max_starts_per_sec": 1_000_000.0 });
        let a = self.post("/v1/tenants", ADMIN, &body).await?;
        if a.ok() {
            return a.body["token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("a tenant created without a token: {}", a.body));
        }
        // `purge_in_progress`: a purge a kill interrupted is still finishing.
        if a.status != 409 || a.code() != "tenant_exists" {
            return Err(format!("creating tenant {id}: {} {}", a.status, a.body));
        }
        let minted = self
            .post(
                &format!("/v1/tenants/{id}/tokens"),
                ADMIN,
                &json!({ "name": "chaos" }),
            )
            .await?;
        if !minted.ok() {
            return Err(format!(
                "a token for {id}: {} {}",
                minted.status, minted.body
            ));
        }
        minted.body["secret"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("a token without its secret: {}", minted.body))
    }
}

// ---- one seed ------------------------------------------------------------------------

async fn seed_async(fault: Fault, seed: u64, seconds: u64) -> Report {
    let dir = std::env::temp_dir().join(format!(
        "eflow-chaos-{}-{seed}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = Report {
        fault,
        seed,
        seconds,
        dir: dir.clone(),
        ..Report::default()
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        report
            .violations
            .push(format!("setup: {}: {e}", dir.display()));
        return report;
    }

    let remote = Arc::new(Remote::default());
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            report
                .violations
                .push(format!("setup: the remote system's port: {e}"));
            return report;
        }
    };
    let remote_url = match listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => {
            report.violations.push(format!("setup: {e}"));
            return report;
        }
    };
    let app = Router::new()
        .route("/work", post(invoke))
        .with_state(remote.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The embedded server alone; or two processes of a cluster on a
    // private PostgreSQL and NATS.
    let cluster = if fault.clustered() {
        match Cluster::start(&dir, fault, seed).await {
            Ok(c) => Some(c),
            Err(e) => {
                report.violations.push(format!("setup: {e}"));
                return report;
            }
        }
    } else {
        None
    };
    let count = if cluster.is_some() { 2 } else { 1 };
    let mut nodes = Vec::new();
    let mut bases = Vec::new();
    for i in 0..count {
        let addr = format!("127.0.0.1:{}", free_port());
        bases.push(format!("http://{addr}"));
        // The embedded server's paths are as they always were.
        let (data, log, flags, env) = match &cluster {
            Some(c) => (
                dir.join(format!("data-{i}")),
                dir.join(format!("server-{i}.log")),
                c.flags(i),
                c.env(i),
            ),
            None => (
                dir.join("data"),
                dir.join("server.log"),
                vec!["--shards".to_string(), "3".to_string()],
                Vec::new(),
            ),
        };
        nodes.push(Mutex::new(Node {
            data,
            log,
            addr,
            flags,
            env,
            child: None,
        }));
    }
    // Engines that join and leave: their callbacks go to an API process.
    let mut extra = Vec::new();
    if let Some(c) = cluster.as_ref().filter(|_| fault == Fault::Churn) {
        for i in 0..cluster::EXTRA_ENGINES {
            let mut flags = c.flags(0);
            flags.extend(["--role".to_string(), "engine".to_string()]);
            flags.extend(["--public-url".to_string(), bases[i % bases.len()].clone()]);
            extra.push(Mutex::new(Node {
                data: dir.join(format!("data-extra-{i}")),
                log: dir.join(format!("server-extra-{i}.log")),
                addr: format!("127.0.0.1:{}", free_port()),
                flags,
                env: Vec::new(),
                child: None,
            }));
        }
    }
    let world = Arc::new(World {
        seed,
        began: Instant::now(),
        bases,
        next: AtomicUsize::new(0),
        remote_url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client"),
        nodes,
        extra,
        cluster,
        stop: AtomicBool::new(false),
        life: AtomicU32::new(0),
        tokens: Mutex::new(HashMap::new()),
        generations: Mutex::new(HashMap::new()),
        runs: Mutex::new(BTreeMap::new()),
        purge: tokio::sync::Mutex::new(Purge {
            n: 0,
            phase: Phase::Idle,
        }),
        counters: Counters::default(),
        violations: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
        remote: remote.clone(),
    });

    // One after the other: the first makes the cluster's tables.
    let mut up = true;
    for i in 0..count {
        up = up && world.start_server(i).await;
    }
    if up && setup(&world).await && cluster::before_load(&world, fault).await {
        let load = Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let world = world.clone();
            tasks.push(tokio::spawn(driver(world, w, Rng::new(seed, w + 1))));
        }
        let killer = if fault.clustered() {
            tokio::spawn(cluster::faults(world.clone(), fault, Rng::new(seed, 0)))
        } else {
            tokio::spawn(killer(world.clone(), Rng::new(seed, 0)))
        };
        tokio::time::sleep(load).await;
        world.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            if let Err(e) = t.await {
                world.violation(format!("harness: a load worker panicked: {e}"));
            }
        }
        if let Err(e) = killer.await {
            world.violation(format!("harness: the killer panicked: {e}"));
        }
        world.say("load stopped; finishing");
        report.runs_checked = finish(&world).await;
    }

    if fault.clustered() {
        report.fenced_commits = cluster::at_end(&world).await;
        cluster::wind_up(&world, fault).await;
    }
    // The last stop is a clean one; then the files are read.
    for i in 0..count {
        world.sigterm(i).await;
    }
    match &world.cluster {
        Some(c) => {
            world.say("stopped; scanning PostgreSQL");
            cluster::scan(&world, c).await;
        }
        None => {
            let data = lock(&world.nodes[0]).data.clone();
            world.say("stopped; scanning the SQLite files");
            scan(&world, &data).await;
        }
    }

    world.say("scanned");
    report.starts = world.counters.starts.load(Ordering::Relaxed);
    report.acknowledged = lock(&world.runs)
        .values()
        .filter(|t| t.acked_in.is_some())
        .count() as u64;
    report.sigkills = world.counters.sigkills.load(Ordering::Relaxed);
    report.sigterms = world.counters.sigterms.load(Ordering::Relaxed);
    report.restarts = u64::from(world.life.load(Ordering::Relaxed));
    report.faults = world.counters.faults.load(Ordering::Relaxed);
    report.decisions = world.counters.decisions.load(Ordering::Relaxed);
    report.deploys = world.counters.deploys.load(Ordering::Relaxed);
    report.purges = world.counters.purges.load(Ordering::Relaxed);
    report.invocations = remote.invocations.load(Ordering::Relaxed);
    report.failed_attempts = world.counters.failed_attempts.load(Ordering::Relaxed);
    report.notes = lock(&world.notes).clone();
    report.violations = lock(&world.violations).clone();
    if report.violations.is_empty() {
        drop(world);
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        let _ = std::fs::write(
            dir.join("violations.txt"),
            format!("{report}\n{}\n", report.violations.join("\n")),
        );
    }
    report
}

/// The stable tenants, their token and their flows.
async fn setup(world: &World) -> bool {
    for tenant in STABLE {
        let token = match world.create_tenant(tenant).await {
            Ok(t) => t,
            Err(e) => {
                world.violation(format!("setup: {e}"));
                return false;
            }
        };
        match world.deploy(tenant, &token, 0).await {
            Ok(a) if a.ok() => {}
            other => {
                world.violation(format!("setup: deploying in {tenant}: {}", show(&other)));
                return false;
            }
        }
        lock(&world.tokens).insert(tenant.to_string(), token);
        lock(&world.generations).insert(tenant.to_string(), 0);
    }
    true
}

fn show(a: &Result<Answer, String>) -> String {
    match a {
        Ok(a) => format!("{} {}", a.status, a.body),
        Err(e) => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_choices_and_streams_differ() {
        let draw = |seed, stream| {
            let mut r = Rng::new(seed, stream);
            (0..8).map(|_| r.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1, 0), draw(1, 0));
        assert_ne!(draw(1, 0), draw(1, 1));
        assert_ne!(draw(1, 0), draw(2, 0));
    }
}
