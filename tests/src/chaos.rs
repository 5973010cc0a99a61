//! The standing fault suite: a mixed load against the real `eflow serve` (remote
//! `http` steps served by a remote system in this process that calls back,
//! approvals, waits, schedules, fan-outs, redeploys, tenant purges), the server
//! killed at seeded random moments (SIGKILL, sometimes SIGTERM) and started
//! again on the same data; after each restart and at the end the invariants are
//! checked: no run lost, none stuck, none completed twice, event logs gapless,
//! no row of a purged tenant left in either SQLite file.
//!
//! A seed fixes every choice (what each load worker does, when and how the
//! server is killed); the machine's timing decides how they interleave.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use sqlx::{Connection, Row};

use crate::{bin, free_port};

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
        let seeds = std::env::var("EFLOW_CHAOS_SEEDS").unwrap_or_else(|_| "1,2".into());
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

/// What one seed did and found.
#[derive(Debug, Default)]
pub struct Report {
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
    pub violations: Vec<String>,
    /// The server's data directory and log, kept when something was found.
    pub dir: PathBuf,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} s of load, {} runs started ({} acknowledged), {} runs checked, \
             {} kills ({} SIGKILL, {} SIGTERM), {} restarts, {} decisions, {} deploys, \
             {} purges, {} remote invocations, {} violations",
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
    // Built (when stale) before the clock of the load starts.
    bin("eflow");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(seed_async(seed, seconds));
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
    version: Option<String>,
    decided: bool,
}

// ---- the remote system -------------------------------------------------------------

/// The remote system the `http` steps call: it accepts an invocation, remembers
/// each attempt's idempotency key, and calls back a little later with `n + 1`,
/// again until the eflow server takes it, as a real remote system does.
/// An attempt as the remote system is told it: run, step, attempt, index.
type Attempt = (String, String, u64, Option<u64>);

#[derive(Default)]
struct Remote {
    /// (run, step, attempt, index) → the keys it was invoked with.
    keys: Mutex<HashMap<Attempt, BTreeSet<String>>>,
    invocations: AtomicU64,
    /// Callbacks of live tenants' runs the server refused.
    refused: Mutex<Vec<String>>,
}

async fn invoke(
    State(remote): State<Arc<Remote>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let key = headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = |k: &str| body[k].as_str().unwrap_or("").to_string();
    let attempt = (
        text("run"),
        text("step"),
        body["attempt"].as_u64().unwrap_or(0),
        body["index"].as_u64(),
    );
    lock(&remote.keys)
        .entry(attempt.clone())
        .or_default()
        .insert(key.clone());
    remote.invocations.fetch_add(1, Ordering::Relaxed);
    let tenant = text("tenant");
    let callback = text("callback_url");
    let output = body["inputs"]["n"].as_i64().unwrap_or(0) + 1;
    // The delay comes from the key: a redelivery answers as late as the first.
    let delay = key
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b))
        % 200;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10 + delay)).await;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            let sent = client
                .post(&callback)
                .json(&json!({ "output": output }))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(r) = sent {
                let status = r.status().as_u16();
                if r.status().is_success() {
                    return;
                }
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    if !tenant.starts_with("purged-") {
                        let body = r.text().await.unwrap_or_default();
                        lock(&remote.refused).push(format!(
                            "the callback of {attempt:?} was refused: {status} {body}"
                        ));
                    }
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Json(json!({ "accepted": true }))
}

// ---- the server process ------------------------------------------------------------

/// `eflow serve` on a fixed address and data directory, across restarts (the
/// callback addresses handed out name the address). Killed when dropped.
struct Node {
    data: PathBuf,
    log: PathBuf,
    addr: String,
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
            .args(["--shards", "3"])
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
    decisions: AtomicU64,
    deploys: AtomicU64,
    purges: AtomicU64,
}

struct World {
    seed: u64,
    began: Instant,
    base: String,
    remote_url: String,
    http: reqwest::Client,
    node: Mutex<Node>,
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
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
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

    /// Waits until the server answers; a violation if it does not within a minute.
    async fn wait_up(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(a) = self.get("/v1/health", ADMIN).await
                && a.ok()
            {
                return true;
            }
            let exited = lock(&self.node)
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

    /// Stops the server with SIGTERM, as a service manager does: it must
    /// exit 0 within 20 s.
    async fn sigterm(&self) {
        let child = lock(&self.node).child.take();
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

    fn sigkill(&self) {
        if let Some(mut c) = lock(&self.node).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn start_server(&self) -> bool {
        let spawned = lock(&self.node).spawn();
        if let Err(e) = spawned {
            self.violation(format!("restart: {e}"));
            return false;
        }
        self.wait_up().await
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
        if a.status != 409 {
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

async fn seed_async(seed: u64, seconds: u64) -> Report {
    let dir = std::env::temp_dir().join(format!(
        "eflow-chaos-{}-{seed}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = Report {
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

    let addr = format!("127.0.0.1:{}", free_port());
    let world = Arc::new(World {
        seed,
        began: Instant::now(),
        base: format!("http://{addr}"),
        remote_url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client"),
        node: Mutex::new(Node {
            data: dir.join("data"),
            log: dir.join("server.log"),
            addr,
            child: None,
        }),
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
        remote: remote.clone(),
    });

    if world.start_server().await && setup(&world).await {
        let load = Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let world = world.clone();
            tasks.push(tokio::spawn(driver(world, w, Rng::new(seed, w + 1))));
        }
        let killer = tokio::spawn(killer(world.clone(), Rng::new(seed, 0)));
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

    // The last stop is a clean one; then the files are read.
    world.sigterm().await;
    let data = lock(&world.node).data.clone();
    world.say("stopped; scanning the SQLite files");
    scan(&world, &data).await;

    world.say("scanned");
    report.starts = world.counters.starts.load(Ordering::Relaxed);
    report.acknowledged = lock(&world.runs)
        .values()
        .filter(|t| t.acked_in.is_some())
        .count() as u64;
    report.sigkills = world.counters.sigkills.load(Ordering::Relaxed);
    report.sigterms = world.counters.sigterms.load(Ordering::Relaxed);
    report.restarts = u64::from(world.life.load(Ordering::Relaxed));
    report.decisions = world.counters.decisions.load(Ordering::Relaxed);
    report.deploys = world.counters.deploys.load(Ordering::Relaxed);
    report.purges = world.counters.purges.load(Ordering::Relaxed);
    report.invocations = remote.invocations.load(Ordering::Relaxed);
    report.violations = lock(&world.violations).clone();
    if report.violations.is_empty() {
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

// ---- the load ----------------------------------------------------------------------

async fn driver(world: Arc<World>, w: u64, mut rng: Rng) {
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
async fn start(world: &World, stored: &str) {
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
async fn decide(world: &World, stored: &str, approve: bool) -> bool {
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
async fn purge_step(world: &World, p: &mut Purge, now: bool) {
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

async fn killer(world: Arc<World>, mut rng: Rng) {
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
            world.sigterm().await;
            world.say("SIGTERM");
        } else {
            world.counters.sigkills.fetch_add(1, Ordering::Relaxed);
            world.sigkill();
            world.say("SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        let before = world.life.fetch_add(1, Ordering::Relaxed);
        if !world.start_server().await {
            world.stop.store(true, Ordering::Relaxed);
            return;
        }
        after_restart(&world, before, &mut rng).await;
    }
}

/// What is cheap to check after a restart: every start answered 2xx in the
/// life that ended still exists, and a sample of logs is gapless.
async fn after_restart(world: &World, ended: u32, rng: &mut Rng) {
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

// ---- the end -------------------------------------------------------------------------

/// Stops the load cleanly (the purged tenant purged for good, every start
/// answered, schedules paused, gates decided), lets the runs settle and
/// checks every run. Returns how many runs were checked.
async fn finish(world: &World) -> u64 {
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
        if ids.is_empty() {
            world.violation(format!(
                "schedule: {tenant} has no schedule: {}",
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
    let mut all: BTreeMap<String, Value>;
    let mut unsettled: Vec<String>;
    loop {
        all = BTreeMap::new();
        unsettled = Vec::new();
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
        for stored in all.keys() {
            let run = match world.get_steady(&format!("/v1/runs/{stored}"), ADMIN).await {
                Ok(a) if a.ok() => a.body,
                other => {
                    unsettled.push(format!("{stored}: {}", show(&other)));
                    continue;
                }
            };
            if let Some(why) = unsettled_reason(tracked.get(stored), &run) {
                unsettled.push(format!("{stored}: {why}"));
            }
        }
        if unsettled.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for u in &unsettled {
        world.violation(format!("stuck: {u}"));
    }

    world.say(&format!("settled; checking {} runs", all.len()));
    check_runs(world, &tracked, &all).await;
    check_remote(world);
    all.len() as u64
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
fn log_violations(run: &str, events: &Value) -> Vec<String> {
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
async fn scan(world: &World, data: &Path) {
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
