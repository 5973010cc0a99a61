//! `eflow bench`: N runs of a flow of K sequential steps across T tenants,
//! through the HTTP API, or (`--fanout N`) one run fanning out over N
//! subflows of one step, or (`--bulk N`) a bulk retry of N failed runs
//! while another tenant's requests are timed (`bulk.rs`). Steps run on the `sim` connector (SIMULATED
//! compute: nothing is computed, each step only waits `--sim-duration`) or,
//! with `--connector http`, on a remote system the bench starts in a child
//! process (`remote.rs`) that is invoked and calls back over real HTTP on
//! loopback.
//!
//! Every run first measures the machine's baseline in its data directory
//! (`baseline.rs`) and reports eflow's figures beside it and as a ratio.
//!
//! By default it starts a fresh embedded server in a temporary directory;
//! `--server URL` measures a running one (with an admin token). It reports
//! step transitions per second (events applied by the engine), runs completed
//! per second, the start-to-first-invocation latency (a start returns when
//! the run's `Started` transition and its first step's invocation are
//! committed, so the start request's round trip is that latency), bytes
//! written per transition, the server's CPU per step (embedded: the process's
//! CPU less the bench's own load-generating threads, `cpu.rs`), and the
//! server's resident memory (embedded, the server and this client share one
//! process, so the figure includes the client).

pub mod baseline;
pub mod bulk;
pub mod console;
pub mod cpu;
mod engines;
mod fanout;
pub mod postgres;
pub mod remote;
pub mod schedules;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::api::model::{DeployResult, StartRun, TenantCreated};
use crate::cli::Output;
use crate::cli::client::Client;
use crate::server::{Options, Server};
use crate::store::{Durability, is_postgres};
use baseline::Baseline;
use postgres::{HeldTransaction, PgBaseline, PgCounters, PgReport};
use remote::{RemoteProcess, RemoteStats};

/// Names the threads that start runs, so their CPU is not counted as the
/// embedded server's (15 bytes at most: the kernel cuts thread names there).
const LOAD_THREADS: &str = "bench-load";

/// What the bench's steps are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum BenchConnector {
    /// SIMULATED compute: each step only waits `--sim-duration`, in the server.
    #[default]
    Sim,
    /// A remote system (`eflow bench-remote`, a child process) invoked and
    /// calling back over real HTTP on loopback.
    Http,
}

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Runs to start.
    #[arg(long, default_value_t = 10_000)]
    pub runs: u64,
    /// Sequential steps per run.
    #[arg(long, default_value_t = 5)]
    pub steps: u32,
    /// Tenants the runs are spread over.
    #[arg(long, default_value_t = 10)]
    pub tenants: u32,
    /// What the steps are bound to: `sim` (simulated) or `http` (a remote
    /// system on loopback, in a child process; the server must allow egress
    /// to 127.0.0.1, which the bench grants the tenants it creates).
    #[arg(long, value_enum, default_value_t)]
    pub connector: BenchConnector,
    /// With `--connector http`: the most results the remote system reports
    /// in one request (`POST /v1/callbacks`, as many as are waiting); 1
    /// sends each to its own `callback_url`.
    #[arg(long, default_value_t = 256)]
    pub callback_batch: usize,
    /// With `--connector http`: bind the step without a `batch_url`, so the
    /// server POSTs each invocation in a request of its own.
    #[arg(long)]
    pub no_invocation_batch: bool,
    /// Instead of `--runs`: one run fanning out over N subflows of one step
    /// each (`join all`); reports children/s and the parent's state size.
    #[arg(long)]
    pub fanout: Option<u64>,
    /// With `--fanout`: give up when no child has finished for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub stall_after: Duration,
    /// How long each simulated step takes.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub sim_duration: Duration,
    /// Starts per second (default: as fast as the server takes them).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Start requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Do not wait for runs to finish (to measure many waiting runs).
    #[arg(long)]
    pub no_wait: bool,
    /// Measure this server instead of a fresh embedded one.
    #[arg(long, env = "EFLOW_SERVER")]
    pub server: Option<String>,
    /// An admin token of `--server`.
    #[arg(long, env = "EFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Embedded: engine shards.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Embedded: the engine's store, as `eflow serve --store` takes it
    /// (`postgres://USER@HOST/DATABASE`) [default: SQLite in the data directory].
    /// With PostgreSQL the bench also measures pgbench's limit first.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Embedded: the history's store, as `eflow serve --history-store` takes
    /// it [default: SQLite in the data directory].
    #[arg(long, value_name = "URL")]
    pub history_store: Option<String>,
    /// Embedded: the bus, as `eflow serve --bus` takes it (`nats://HOST:PORT`).
    #[arg(long, value_name = "URL", default_value = "local")]
    pub bus: String,
    /// Embedded: engine processes sharing the shards: the bench's server and
    /// N - 1 more `eflow serve --role engine` processes on the same store and
    /// bus (needs `--store postgres://…` and `--bus nats://…`).
    #[arg(long, default_value_t = 1)]
    pub engines: usize,
    /// With `--store postgres://…`: hold a transaction open on the store's
    /// database from before the first start to the end (it has a
    /// transaction id and a snapshot, so vacuum cleans up nothing deleted
    /// or updated meanwhile), to measure throughput under a long transaction.
    #[arg(long)]
    pub hold_transaction: bool,
    /// Embedded: commit durability (also the baseline's SQLite `synchronous`).
    #[arg(long, value_enum, default_value_t)]
    pub durability: Durability,
    /// Embedded: do not run the history consumer (measures the engine alone).
    #[arg(long)]
    pub no_history: bool,
    /// Embedded: keep the data directory here instead of a temporary one.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Embedded: the server's `--sweep-after` (and `--retry-window`: failed
    /// runs leave with the others). With `0s` the bench waits, once the
    /// history caught up, until every finished run left the engine's store,
    /// so the disk figures show the store of live runs only.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub sweep_after: Duration,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// `--bulk N`: the bulk action benchmark (`bulk.rs`).
    #[command(flatten)]
    pub bulk: bulk::BulkBenchArgs,
    /// `--schedules N`: the scheduler benchmark (`schedules.rs`).
    #[command(flatten)]
    pub schedule: schedules::ScheduleBenchArgs,
    /// `--console`: the web console's pages timed (`console.rs`).
    #[command(flatten)]
    pub console: console::ConsoleBenchArgs,
    /// Give the runs keys, `k0` to `k{N-1}` in turn (as a model per customer
    /// would), so the history keeps a population of N keys.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub connector: String,
    /// With `http`: the most results the remote system reported in one request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_batch: Option<usize>,
    /// With `http`: whether the step's binding has a `batch_url` (the server
    /// sends many invocations a request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_batch: Option<bool>,
    pub runs: u64,
    pub steps: u32,
    pub tenants: u32,
    pub sim_duration_ms: u64,
    pub started: u64,
    pub start_errors: u64,
    pub completed: u64,
    pub seconds: f64,
    pub transitions: u64,
    pub transitions_per_sec: f64,
    /// Steps of the runs that completed, per second.
    pub steps_per_sec: f64,
    pub runs_completed_per_sec: f64,
    pub starts_per_sec: f64,
    pub start_to_first_invocation_p50_ms: f64,
    pub start_to_first_invocation_p99_ms: f64,
    pub bytes_written_per_transition: Option<f64>,
    /// Transitions the engine applied per store commit.
    pub transitions_per_commit: Option<f64>,
    /// Events the history had not written when the last run finished.
    pub history_behind_at_finish: Option<u64>,
    /// Seconds from the start until the history had written every event, and
    /// the transitions per second over that span: the rate the whole server
    /// (engine and history) sustains.
    pub history_caught_up_seconds: Option<f64>,
    pub transitions_per_sec_with_history: Option<f64>,
    /// Embedded: the server's CPU (the process's, less the bench's
    /// load-generating threads) from the first start to the end.
    pub server_cpu_seconds: Option<f64>,
    pub server_cpu_ms_per_step: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub rss_mb: Option<f64>,
    pub backend: String,
    /// With `--connector http`: what the remote system saw and spent.
    pub remote: Option<RemoteReport>,
    pub baseline: Baseline,
    /// `transitions_per_sec` (with history when measured) for each 1,000
    /// baseline SQLite rows per second.
    pub transitions_per_sec_per_1000_baseline_rows: f64,
    /// `steps_per_sec` for each 1,000 baseline SQLite rows per second.
    pub steps_per_sec_per_1000_baseline_rows: f64,
    /// Embedded, with the history: each store's size at the end.
    pub disk: Option<DiskReport>,
    /// With `--store postgres://…`: pgbench's limit and the workload's cost
    /// to PostgreSQL.
    pub postgres: Option<PgReport>,
}

/// The stores' sizes at the end of a bench, after a checkpoint: the file
/// (with its write-ahead log) and the pages in use (SQLite reuses the pages
/// of deleted rows, so the file is the largest the store has been).
#[derive(Debug, Serialize)]
pub struct DiskReport {
    pub engine_store_file_bytes: u64,
    pub engine_store_used_bytes: u64,
    pub history_store_file_bytes: u64,
    pub history_store_used_bytes: u64,
    /// Pages in use of each store over the runs finished.
    pub engine_bytes_per_finished_run: f64,
    pub history_bytes_per_finished_run: f64,
    /// Runs (finished or not) still in the engine's store at the end.
    pub runs_in_engine_store: i64,
    /// With `--sweep-after 0s`: how long after the history caught up the
    /// last finished run left the engine's store.
    pub swept_after_seconds: Option<f64>,
}

/// The remote system of `--connector http`, from its own `/stats` and `/proc`.
#[derive(Debug, Serialize)]
pub struct RemoteReport {
    #[serde(flatten)]
    pub stats: RemoteStats,
    pub cpu_ms_per_step: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

/// The binding of the bench's `Work` step.
fn binding(
    connector: BenchConnector,
    sim_ms: u64,
    remote: Option<&RemoteProcess>,
    invocation_batch: bool,
) -> String {
    match (connector, remote) {
        (BenchConnector::Http, Some(r)) if invocation_batch => format!(
            "http {{ url: \"http://{0}/invoke\", batch_url: \"http://{0}/batch\" }}",
            r.addr
        ),
        (BenchConnector::Http, Some(r)) => {
            format!("http {{ url: \"http://{}/invoke\" }}", r.addr)
        }
        _ => format!("sim {{ duration: {sim_ms}ms }}"),
    }
}

/// The benchmark flow: K sequential remote steps, each fed the previous output.
pub fn flow_source(steps: u32, binding: &str) -> String {
    let mut s = String::from(
        "// eflow bench: with `sim`, SIMULATED compute (each step only waits);\n\
         // with `http`, the bench's remote system answers n + 1.\n\n\
         /// One unit of work.\nremote step Work(n: Int) -> Int\n\n\
         flow Bench(n: Int = 0) -> Int {\n",
    );
    let mut prev = "n".to_string();
    for i in 1..=steps.max(1) {
        s.push_str(&format!("    let s{i} = Work(n: {prev})\n"));
        prev = format!("s{i}");
    }
    s.push_str(&format!(
        "    return {prev}\n}}\n\nbindings bench {{\n    Work = {binding}\n}}\n"
    ));
    s
}

/// Refuses options that cannot work together, before anything is started.
fn check_cluster_args(args: &BenchArgs) -> anyhow::Result<()> {
    let embedded_only = args.store.is_some()
        || args.history_store.is_some()
        || args.bus != "local"
        || args.engines != 1;
    if args.server.is_some() && embedded_only {
        anyhow::bail!(
            "--store, --history-store, --bus and --engines set up the bench's own server; with --server, the running server's options apply: drop them"
        );
    }
    if args.hold_transaction && !args.store.as_deref().is_some_and(is_postgres) {
        anyhow::bail!(
            "--hold-transaction holds a PostgreSQL transaction open: add --store postgres://…"
        );
    }
    if args.engines == 0 {
        anyhow::bail!("--engines must be at least 1 (the bench's own server)");
    }
    if args.engines > 1 {
        let shared_store = args.store.as_deref().is_some_and(is_postgres);
        if args.bus == "local" || !shared_store {
            anyhow::bail!(
                "--engines {} needs a store and a bus the processes share: add --store postgres://… and --bus nats://…",
                args.engines
            );
        }
        if u64::from(args.shards) < args.engines as u64 {
            anyhow::bail!(
                "--engines {} with --shards {} would leave an engine without a shard: give --shards at least {}",
                args.engines,
                args.shards,
                args.engines
            );
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    percentile_by(sorted, p).copied().unwrap_or(0.0)
}

/// The `p` quantile (0..=1) of sorted values, nearest rank.
fn percentile_by<T>(sorted: &[T], p: f64) -> Option<&T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i.min(sorted.len() - 1))
}

/// What a bench run set up: the server, its tenants, the remote system.
struct Setup {
    server: Option<(Server, String)>,
    /// Where the embedded server keeps its stores.
    dir: std::path::PathBuf,
    temp: Option<std::path::PathBuf>,
    base: String,
    token: Option<String>,
    /// For the bench's own reads (`/v1/stats`); starts use their own client.
    client: Arc<Client>,
    tenants: Vec<String>,
    remote: Option<RemoteProcess>,
    baseline: Baseline,
    /// With `--engines N`: the N - 1 engine processes beside the embedded server.
    engines: Vec<engines::EngineProcess>,
    /// With `--store postgres://…`: its URL and pgbench's baseline.
    postgres: Option<(String, PgBaseline)>,
    /// Embedded: the engine's and the history's store URLs.
    stores: Option<(String, String)>,
}

impl Setup {
    async fn new(args: &BenchArgs) -> anyhow::Result<Setup> {
        let (dir, temp) = match &args.data {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("creating the data directory {}", d.display()))?;
                (d.clone(), None)
            }
            None => {
                let t = tempdir()?;
                (t.clone(), Some(t))
            }
        };
        let started = Setup::start(args, dir, temp.clone()).await;
        if let (Err(_), Some(t)) = (&started, temp) {
            let _ = std::fs::remove_dir_all(t);
        }
        started
    }

    async fn start(
        args: &BenchArgs,
        dir: std::path::PathBuf,
        temp: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Setup> {
        // Before anything else runs, on the disk the server writes to (with
        // `--server`: this machine's temporary directory).
        check_cluster_args(args)?;
        let baseline = Baseline::measure(&dir, args.durability)
            .await
            .context("measuring the machine's baseline")?;
        let postgres = match args.store.as_deref().filter(|u| is_postgres(u)) {
            Some(url) if args.server.is_none() => Some((
                url.to_string(),
                PgBaseline::measure(url)
                    .await
                    .context("measuring PostgreSQL's baseline with pgbench")?,
            )),
            _ => None,
        };
        let remote = match args.connector {
            BenchConnector::Http => Some(RemoteProcess::spawn(args.callback_batch)?),
            BenchConnector::Sim => None,
        };
        let mut stores = None;
        let server = match &args.server {
            Some(_) => None,
            None => {
                let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
                let mut o = Options::new(dir.clone(), "127.0.0.1:0".parse()?);
                o.retention.sweep_after = args.sweep_after;
                // The bench retries nothing (but `--bulk`, whose failed runs
                // must stay retryable to its end): a failed run leaves with
                // the others, so `--sweep-after 0s` measures live runs only.
                o.retention.retry_window = match args.bulk.bulk {
                    Some(_) => args.sweep_after.max(bulk::RETRY_WINDOW),
                    None => args.sweep_after,
                };
                o.durability = args.durability;
                o.shards = args.shards;
                o.admin_token = Some(token.clone());
                o.roles.history = !args.no_history;
                if let Some(url) = &args.store {
                    o.store = url.clone();
                }
                if let Some(url) = &args.history_store {
                    o.history_store = url.clone();
                }
                o.bus = args.bus.clone();
                stores = Some((o.store.clone(), o.history_store.clone()));
                Some((Server::start(o).await?, token))
            }
        };
        let mut extra = Vec::new();
        if let (Some((s, _)), Some((store, history_store))) = (&server, &stores) {
            let public_url = format!("http://{}", s.addr);
            let config = engines::EngineConfig {
                store,
                history_store,
                bus: &args.bus,
                shards: args.shards,
                public_url: &public_url,
            };
            for i in 1..args.engines {
                match engines::EngineProcess::spawn(&config, &dir, i).await {
                    Ok(e) => extra.push(e),
                    Err(e) => {
                        drop(extra);
                        if let Some((s, _)) = server {
                            s.stop().await;
                        }
                        return Err(e);
                    }
                }
            }
        }
        let (base, token) = match (&server, &args.server) {
            (Some((s, t)), _) => (format!("http://{}", s.addr), Some(t.clone())),
            (_, Some(url)) => (url.clone(), args.token.clone()),
            (None, None) => unreachable!("embedded unless --server"),
        };
        let client = Arc::new(Client::new(Some(base.clone()), token.clone())?);
        let stamp = uuid::Uuid::now_v7().simple().to_string();
        let count = if args.fanout.is_some() {
            1
        } else if args.bulk.bulk.is_some() {
            // The tenant whose runs the job retries, and the other one.
            2
        } else {
            args.tenants.max(1)
        };
        let tenants: Vec<String> = (0..count)
            .map(|i| format!("bench-{}-{i}", &stamp[..12]))
            .collect();
        let setup = Setup {
            server,
            dir,
            temp,
            base,
            token,
            client,
            tenants,
            remote,
            baseline,
            engines: extra,
            postgres,
            stores,
        };
        // Tenants of an embedded server are stopped with it, whatever happens.
        let ready = async {
            setup.shards_shared(args).await?;
            setup.create_tenants(args).await
        };
        if let Err(e) = ready.await {
            setup.finish().await;
            return Err(e);
        }
        Ok(setup)
    }

    async fn create_tenants(&self, args: &BenchArgs) -> anyhow::Result<()> {
        // The remote system listens on loopback, which `http` steps may not
        // reach unless allowed.
        let egress: Vec<&str> = match args.connector {
            BenchConnector::Http => vec!["127.0.0.1"],
            BenchConnector::Sim => vec![],
        };
        for t in &self.tenants {
            let _: TenantCreated = self
                .client
                .post(
                    "/v1/tenants",
                    &json!({
                        "id": t,
                        "max_active_runs": 10_000_000,
                        "max_starts_per_sec": 1_000_000.0,
                        "allow_egress": egress,
                    }),
                )
                .await
                .context("creating the benchmark's tenants (needs an admin token)")?;
        }
        Ok(())
    }

    async fn deploy(&self, files: &[(&str, String)]) -> anyhow::Result<()> {
        let source: serde_json::Map<String, serde_json::Value> = files
            .iter()
            .map(|(name, text)| (name.to_string(), json!(text)))
            .collect();
        for t in &self.tenants {
            let _: DeployResult = self
                .client
                .post(
                    "/v1/flows",
                    &json!({ "tenant": t, "env": "bench", "source": source }),
                )
                .await
                .context("deploying the benchmark's flow")?;
        }
        Ok(())
    }

    fn binding(&self, args: &BenchArgs) -> String {
        binding(
            args.connector,
            args.sim_duration.as_millis() as u64,
            self.remote.as_ref(),
            !args.no_invocation_batch,
        )
    }

    fn backend(&self, args: &BenchArgs) -> String {
        let Some((store, history_store)) = &self.stores else {
            return format!("server {}", args.server.as_deref().unwrap_or(""));
        };
        let sqlite = |url: &str| url.starts_with("sqlite://");
        let store = if sqlite(store) {
            format!("SQLite ({:?} durability)", args.durability)
        } else {
            format!("{} store", crate::schema::redact(store))
        };
        let history = if args.no_history {
            ", no history".to_string()
        } else if sqlite(history_store) {
            String::new()
        } else {
            format!(", history in {}", crate::schema::redact(history_store))
        };
        format!(
            "embedded {store}, {} bus, {} shards, {} engine process{}{history}",
            args.bus,
            args.shards,
            args.engines,
            if args.engines == 1 { "" } else { "es" },
        )
    }

    /// The embedded server's CPU seconds so far: the process's, less the
    /// bench's load-generating threads (the remote system has its own
    /// process), plus the other engine processes'.
    fn server_cpu(&self) -> Option<f64> {
        self.server.as_ref()?;
        let own = cpu::seconds("self")? - cpu::threads_seconds(LOAD_THREADS)?;
        let others: Option<f64> = self
            .engines
            .iter()
            .map(|e| cpu::seconds(&e.pid().to_string()))
            .sum();
        Some(own + others?)
    }

    /// The figures of the server, with every engine process's counters added.
    async fn stats(&self) -> anyhow::Result<Stats> {
        let mut s = stats(&self.client).await?;
        let http = reqwest::Client::new();
        for e in &self.engines {
            let c = e
                .counters(&http)
                .await
                .context("reading an engine's /metrics")?;
            s.transitions += c.transitions;
            s.commits += c.commits;
            s.finished += c.finished;
            s.bytes_written += c.bytes_written;
        }
        Ok(s)
    }

    /// Both embedded stores are SQLite files in the data directory.
    fn on_sqlite(&self) -> bool {
        self.stores.as_ref().is_some_and(|(engine, history)| {
            engine.starts_with("sqlite://") && history.starts_with("sqlite://")
        })
    }

    /// With more than one engine: waits until every engine process holds
    /// its share of the shards, so the workload runs on all of them.
    async fn shards_shared(&self, args: &BenchArgs) -> anyhow::Result<()> {
        let Some((server, _)) = &self.server else {
            return Ok(());
        };
        if self.engines.is_empty() {
            return Ok(());
        }
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut held = vec![server.engine().stats().shards_held.load(Ordering::Relaxed)];
            for e in &self.engines {
                held.push(e.counters(&http).await?.shards_held);
            }
            if held.iter().all(|&n| n > 0) && held.iter().sum::<u64>() == u64::from(args.shards) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the {} engine processes did not share the {} shards within 60 s (they hold {held:?})",
                    args.engines,
                    args.shards
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn finish(self) {
        drop(self.engines);
        if let Some((s, _)) = self.server {
            s.stop().await;
        }
        drop(self.remote);
        if let Some(t) = self.temp {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

/// The remote system's figures after a workload of `steps` steps.
async fn remote_report(
    remote: Option<&RemoteProcess>,
    cpu_before: Option<f64>,
    steps: u64,
) -> anyhow::Result<Option<RemoteReport>> {
    let Some(r) = remote else {
        return Ok(None);
    };
    let stats = r
        .stats(&reqwest::Client::new())
        .await
        .context("reading the remote system's stats")?;
    let pid = r.pid().to_string();
    let cpu = cpu::seconds(&pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    Ok(Some(RemoteReport {
        stats,
        cpu_ms_per_step: cpu.filter(|_| steps > 0).map(|c| c * 1000.0 / steps as f64),
        peak_rss_mb: crate::service::process_status_mb(&pid, "VmHWM:"),
    }))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.bulk.bulk.is_some() {
        bulk::check_args(&args)?;
    }
    let setup = Setup::new(&args).await?;
    // A separate runtime for starting runs: its threads are named, so their
    // CPU is taken out of the embedded server's.
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(LOAD_THREADS)
        .enable_all()
        .build()
        .context("starting the bench's load threads")?;
    let result = match (args.fanout, args.bulk.bulk) {
        (None, Some(n)) => bulk::run(&args, &setup, load.handle(), n)
            .await
            .and_then(|r| {
                match args.output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                    Output::Table => print!("{}", bulk::report_text(&r)),
                }
                // Reported above; the exit status says it too.
                match r.failure {
                    Some(f) => Err(anyhow::anyhow!(f)),
                    None => Ok(()),
                }
            }),
        (Some(n), _) => fanout::run(&args, &setup, n).await.and_then(|r| {
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Output::Table => print!("{}", fanout::report_text(&r)),
            }
            // Reported above; the exit status says it too.
            match r.failure {
                Some(f) => Err(anyhow::anyhow!(f)),
                None => Ok(()),
            }
        }),
        (None, None) => runs(&args, &setup, load.handle()).await.and_then(|r| {
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Output::Table => print!("{}", report_text(&r)),
            }
            Ok(())
        }),
    };
    load.shutdown_background();
    setup.finish().await;
    result
}

/// `--runs N`: N runs of K sequential steps.
async fn runs(
    args: &BenchArgs,
    setup: &Setup,
    load: &tokio::runtime::Handle,
) -> anyhow::Result<Report> {
    setup
        .deploy(&[("bench.eflow", flow_source(args.steps, &setup.binding(args)))])
        .await?;
    let starter = Arc::new(Client::new(Some(setup.base.clone()), setup.token.clone())?);
    let tenants = &setup.tenants;
    let stats0 = setup.stats().await?;
    let pg0 = match &setup.postgres {
        Some((url, _)) => Some(PgCounters::read(url).await?),
        None => None,
    };
    let mut held = match (&setup.postgres, args.hold_transaction) {
        (Some((url, _)), true) => Some(HeldTransaction::open(url).await?),
        _ => None,
    };
    let bar = progress_bar(args.runs, args.output);
    bar.set_prefix("starting");
    let cpu0 = setup.server_cpu();
    let remote_cpu0 = setup
        .remote
        .as_ref()
        .and_then(|r| cpu::seconds(&r.pid().to_string()));
    let began = Instant::now();
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        args.runs as usize,
    )));
    // Tasks are not kept: a finished task's handle would hold its memory, and
    // the benchmark must not grow with the number of runs it starts.
    for i in 0..args.runs {
        if let Some(rate) = args.rate {
            let due = began + Duration::from_secs_f64(i as f64 / rate.max(0.001));
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = limit.clone().acquire_owned().await?;
        let client = starter.clone();
        let tenant = tenants[(i % tenants.len() as u64) as usize].clone();
        let keys = args.keys;
        let errors = errors.clone();
        let latencies = latencies.clone();
        let bar = bar.clone();
        load.spawn(async move {
            let t0 = Instant::now();
            let r: anyhow::Result<serde_json::Value> = client
                .post(
                    "/v1/runs",
                    &StartRun {
                        flow: "Bench".into(),
                        tenant: Some(tenant),
                        version: None,
                        input: Some(json!({ "n": i })),
                        id: None,
                        input_refs: None,
                        key: (keys > 0).then(|| format!("k{}", i % keys)),
                    },
                )
                .await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            match r {
                Ok(_) => {
                    if let Ok(mut l) = latencies.lock() {
                        l.push(ms);
                    }
                }
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("start failed: {e}");
                    }
                }
            }
            bar.inc(1);
            drop(permit);
        });
    }
    // Every start has finished when every permit is back.
    let _all = limit.acquire_many(args.concurrency.max(1) as u32).await?;
    let start_secs = began.elapsed().as_secs_f64();
    let started = args.runs - errors.load(Ordering::Relaxed);
    let mut completed = 0;
    if !args.no_wait {
        bar.set_prefix("finishing");
        bar.set_position(0);
        bar.set_length(started);
        loop {
            let s = setup.stats().await?;
            completed = s.finished - stats0.finished;
            bar.set_position(completed.min(started));
            if completed >= started {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let cpu1 = setup.server_cpu();
    let s1 = setup.stats().await?;
    let steps_done = completed * u64::from(args.steps.max(1));
    let remote = remote_report(setup.remote.as_ref(), remote_cpu0, steps_done).await?;
    // The history follows the engine's log; a rate it cannot keep up with is
    // not sustained, so the wait for it is measured too.
    let mut caught_up = None;
    if !args.no_wait && s1.history_behind.is_some() {
        bar.set_prefix("history");
        bar.set_position(0);
        bar.set_length(s1.history_behind.unwrap_or(0));
        loop {
            let behind = setup.stats().await?.history_behind.unwrap_or(0);
            bar.set_position(s1.history_behind.unwrap_or(0).saturating_sub(behind));
            if behind == 0 {
                caught_up = Some(began.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let disk = match (&setup.server, caught_up) {
        (Some((server, _)), Some(at)) if setup.on_sqlite() => {
            bar.set_prefix("sweeping");
            Some(disk_report(server, &setup.dir, args, completed, at, began).await?)
        }
        _ => None,
    };
    bar.finish_and_clear();
    let transitions = s1.transitions - stats0.transitions;
    let held_seconds = match held.as_mut() {
        Some(h) => Some(h.check().await?),
        None => None,
    };
    if let Some(h) = held {
        h.end().await;
    }
    let postgres = match (&setup.postgres, pg0) {
        (Some((url, baseline)), Some(before)) => {
            // Backends report to `pg_stat_database` about once a second.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let after = PgCounters::read(url).await?;
            let span = caught_up.unwrap_or_else(|| began.elapsed().as_secs_f64());
            Some(PgReport::new(
                baseline.clone(),
                before,
                after,
                transitions,
                span,
                held_seconds,
            ))
        }
        _ => None,
    };
    let bytes = s1.bytes_written - stats0.bytes_written;
    let commits = s1.commits - stats0.commits;
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(|a, b| a.total_cmp(b));
    let server_cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let transitions_per_sec = transitions as f64 / seconds;
    let with_history = caught_up.map(|t| transitions as f64 / t);
    let steps_per_sec = steps_done as f64 / seconds;
    Ok(Report {
        connector: format!("{:?}", args.connector).to_lowercase(),
        callback_batch: (args.connector == BenchConnector::Http).then_some(args.callback_batch),
        invocation_batch: (args.connector == BenchConnector::Http)
            .then_some(!args.no_invocation_batch),
        runs: args.runs,
        steps: args.steps,
        tenants: args.tenants,
        sim_duration_ms: args.sim_duration.as_millis() as u64,
        started,
        start_errors: errors.load(Ordering::Relaxed),
        completed,
        seconds,
        transitions,
        transitions_per_sec,
        steps_per_sec,
        runs_completed_per_sec: completed as f64 / seconds,
        starts_per_sec: started as f64 / start_secs,
        start_to_first_invocation_p50_ms: percentile(&lat, 0.50),
        start_to_first_invocation_p99_ms: percentile(&lat, 0.99),
        bytes_written_per_transition: (transitions > 0).then(|| bytes as f64 / transitions as f64),
        transitions_per_commit: (commits > 0).then(|| transitions as f64 / commits as f64),
        history_behind_at_finish: s1.history_behind,
        history_caught_up_seconds: caught_up,
        transitions_per_sec_with_history: with_history,
        server_cpu_seconds: server_cpu,
        server_cpu_ms_per_step: server_cpu
            .filter(|_| steps_done > 0)
            .map(|c| c * 1000.0 / steps_done as f64),
        peak_rss_mb: s1.peak_rss_mb,
        rss_mb: s1.rss_mb,
        backend: setup.backend(args),
        remote,
        transitions_per_sec_per_1000_baseline_rows: setup
            .baseline
            .ratio(with_history.unwrap_or(transitions_per_sec)),
        steps_per_sec_per_1000_baseline_rows: setup.baseline.ratio(steps_per_sec),
        baseline: setup.baseline.clone(),
        disk,
        postgres,
    })
}

/// The stores' sizes once the history holds every run (and, with
/// `--sweep-after 0s`, once every finished run left the engine's store).
async fn disk_report(
    server: &Server,
    dir: &std::path::Path,
    args: &BenchArgs,
    finished: u64,
    caught_up: f64,
    began: Instant,
) -> anyhow::Result<DiskReport> {
    let store = server.engine().store();
    let runs_left = || async {
        let rows = store.per_run_rows().await?;
        anyhow::Ok(
            rows.iter()
                .find(|(t, _)| *t == "runs")
                .map_or(0, |(_, n)| *n),
        )
    };
    let mut swept_after = None;
    if args.sweep_after.is_zero() {
        while runs_left().await? > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        swept_after = Some(began.elapsed().as_secs_f64() - caught_up);
    }
    let (engine_file, engine_used) = sqlite_size(&dir.join("eflow.db")).await?;
    let (history_file, history_used) = sqlite_size(&dir.join("history.db")).await?;
    let per_run = |bytes: u64| bytes as f64 / finished.max(1) as f64;
    Ok(DiskReport {
        engine_store_file_bytes: engine_file,
        engine_store_used_bytes: engine_used,
        history_store_file_bytes: history_file,
        history_store_used_bytes: history_used,
        engine_bytes_per_finished_run: per_run(engine_used),
        history_bytes_per_finished_run: per_run(history_used),
        runs_in_engine_store: runs_left().await?,
        swept_after_seconds: swept_after,
    })
}

/// An SQLite file's size after a checkpoint of its write-ahead log: the
/// file with its log, and the bytes of the pages in use.
async fn sqlite_size(path: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    // PASSIVE: the server keeps writing; what is checkpointed is in the file.
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(&mut c)
        .await?;
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut c)
        .await?;
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&mut c)
        .await?;
    let size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut c)
        .await?;
    c.close().await?;
    let file = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    Ok((
        file(path.to_path_buf()) + file(wal.into()),
        ((pages - free).max(0) * size) as u64,
    ))
}

fn progress_bar(len: u64, output: Output) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>9} [{bar:40}] {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if output == Output::Json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.1} {unit}"))
}

/// The machine's baseline rows of every report, and eflow's figure as a ratio.
fn baseline_rows(b: &Baseline, what: &str, ratio: f64) -> Vec<(&'static str, String)> {
    vec![
        (
            "baseline: fsync/s (data dir)",
            format!(
                "{:.0} (windows {:.0}–{:.0})",
                b.fsync_per_sec, b.fsync_per_sec_range[0], b.fsync_per_sec_range[1]
            ),
        ),
        (
            "baseline: SQLite rows/s",
            format!(
                "{:.0} (windows {:.0}–{:.0}; {} B rows, {} a commit, synchronous={})",
                b.sqlite_rows_per_sec,
                b.sqlite_rows_per_sec_range[0],
                b.sqlite_rows_per_sec_range[1],
                b.sqlite_row_bytes,
                b.sqlite_batch_rows,
                b.sqlite_synchronous
            ),
        ),
        ("per 1,000 baseline rows/s", format!("{ratio:.1} {what}/s")),
    ]
}

fn table(rows: Vec<(&str, String)>) -> String {
    let mut t = crate::cli::table::Table::new(vec!["MEASURE", "VALUE"]);
    for (k, v) in rows {
        t.row(vec![k.to_string(), v]);
    }
    t.render()
}

fn report_text(r: &Report) -> String {
    let mut rows = vec![
        ("backend", r.backend.clone()),
        (
            "connector",
            match r.connector.as_str() {
                "sim" => format!("sim, {} ms a step (SIMULATED compute)", r.sim_duration_ms),
                _ => {
                    let callbacks = match r.callback_batch {
                        Some(n) if n > 1 => format!("up to {n} results a callback request"),
                        _ => "one callback request a result".to_string(),
                    };
                    let invocations = match r.invocation_batch {
                        Some(true) => "many invocations a request (batch_url)",
                        _ => "one invocation a request",
                    };
                    format!(
                        "http, remote system on loopback (bench-remote), {invocations}, {callbacks}"
                    )
                }
            },
        ),
        (
            "runs × steps, tenants",
            format!("{} × {}, {}", r.runs, r.steps, r.tenants),
        ),
        (
            "started / failed to start",
            format!("{} / {}", r.started, r.start_errors),
        ),
        ("completed", r.completed.to_string()),
        ("elapsed", format!("{:.2} s", r.seconds)),
        (
            "step transitions/s",
            format!("{:.0}", r.transitions_per_sec),
        ),
        ("steps/s", format!("{:.0}", r.steps_per_sec)),
        (
            "history behind at finish",
            r.history_behind_at_finish
                .map_or("n/a".to_string(), |n| format!("{n} events")),
        ),
        (
            "history caught up after",
            r.history_caught_up_seconds
                .map_or("n/a".to_string(), |t| format!("{t:.2} s")),
        ),
        (
            "transitions/s incl. history",
            r.transitions_per_sec_with_history
                .map_or("n/a".to_string(), |x| format!("{x:.0}")),
        ),
        (
            "runs completed/s",
            format!("{:.0}", r.runs_completed_per_sec),
        ),
        ("starts/s", format!("{:.0}", r.starts_per_sec)),
        (
            "start→first invocation p50",
            format!("{:.2} ms", r.start_to_first_invocation_p50_ms),
        ),
        (
            "start→first invocation p99",
            format!("{:.2} ms", r.start_to_first_invocation_p99_ms),
        ),
        (
            "bytes written/transition",
            opt(r.bytes_written_per_transition, "B"),
        ),
        ("transitions/commit", opt(r.transitions_per_commit, "")),
        (
            "server CPU/step",
            r.server_cpu_ms_per_step
                .map_or("n/a".to_string(), |x| format!("{x:.3} ms")),
        ),
        ("server peak RSS", opt(r.peak_rss_mb, "MB")),
        ("server RSS at end", opt(r.rss_mb, "MB")),
    ];
    if let Some(remote) = &r.remote {
        let s = &remote.stats;
        rows.extend([
            (
                "remote: invocations / callbacks",
                format!(
                    "{} / {} ({} failed)",
                    s.invocations, s.callbacks, s.callbacks_failed
                ),
            ),
            (
                "callback→next invocation p50",
                format!("{:.2} ms", s.callback_to_next_invocation_p50_ms),
            ),
            (
                "callback→next invocation p99",
                format!("{:.2} ms", s.callback_to_next_invocation_p99_ms),
            ),
            (
                "remote: CPU/step",
                remote
                    .cpu_ms_per_step
                    .map_or("n/a".to_string(), |x| format!("{x:.3} ms")),
            ),
            ("remote: peak RSS", opt(remote.peak_rss_mb, "MB")),
        ]);
    }
    if let Some(d) = &r.disk {
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        rows.extend([
            (
                "engine store (eflow.db)",
                format!(
                    "{} in use, {} file; {:.0} B/finished run; {} runs left",
                    mb(d.engine_store_used_bytes),
                    mb(d.engine_store_file_bytes),
                    d.engine_bytes_per_finished_run,
                    d.runs_in_engine_store
                ),
            ),
            (
                "history store (history.db)",
                format!(
                    "{} in use, {} file; {:.0} B/finished run",
                    mb(d.history_store_used_bytes),
                    mb(d.history_store_file_bytes),
                    d.history_bytes_per_finished_run
                ),
            ),
            (
                "finished runs swept after",
                d.swept_after_seconds
                    .map_or("n/a (--sweep-after > 0)".to_string(), |t| {
                        format!("{t:.2} s past the history")
                    }),
            ),
        ]);
    }
    if let Some(p) = &r.postgres {
        rows.extend(postgres_rows(p));
    }
    rows.extend(baseline_rows(
        &r.baseline,
        "transitions",
        r.transitions_per_sec_per_1000_baseline_rows,
    ));
    table(rows)
}

/// What the workload cost PostgreSQL, and pgbench's limit beside it.
fn postgres_rows(p: &PgReport) -> Vec<(&'static str, String)> {
    let b = &p.baseline;
    vec![
        (
            "PostgreSQL commits/s",
            format!(
                "{:.0} ({:.0} % of pgbench's one-row commits/s)",
                p.commits_per_sec,
                p.commits_of_pgbench_limit * 100.0
            ),
        ),
        (
            "PostgreSQL transitions/commit",
            format!("{:.1}", p.transitions_per_commit),
        ),
        (
            "PostgreSQL rows written/transition",
            format!("{:.2}", p.rows_written_per_transition),
        ),
        (
            "PostgreSQL WAL bytes/transition",
            format!("{:.0} B", p.wal_bytes_per_transition),
        ),
        (
            "PostgreSQL transaction held open",
            p.held_transaction_seconds
                .map_or("no".to_string(), |t| format!("for {t:.0} s, to the end")),
        ),
        (
            "baseline: pgbench commits/s",
            format!(
                "{:.0} (windows {:.0}–{:.0}; one {} B row a commit, {} clients, synchronous_commit={})",
                b.commits_per_sec,
                b.commits_per_sec_range[0],
                b.commits_per_sec_range[1],
                b.row_bytes,
                b.commit_clients,
                b.synchronous_commit
            ),
        ),
        (
            "baseline: pgbench rows/s",
            format!(
                "{:.0} (windows {:.0}–{:.0}; {} rows a commit, {} clients)",
                b.rows_per_sec,
                b.rows_per_sec_range[0],
                b.rows_per_sec_range[1],
                b.batch_rows,
                b.batch_clients
            ),
        ),
    ]
}

#[derive(Debug, serde::Deserialize)]
struct Stats {
    transitions: u64,
    commits: u64,
    finished: u64,
    bytes_written: u64,
    history_behind: Option<u64>,
    rss_mb: Option<f64>,
    peak_rss_mb: Option<f64>,
}

async fn stats(client: &Client) -> anyhow::Result<Stats> {
    client.get("/v1/stats", &[]).await
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("eflow-bench-{}", uuid::Uuid::now_v7().simple()));
    let mut builder = std::fs::DirBuilder::new();
    // The server keeps its admin token and signing key here: the owner's alone.
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.recursive(true).create(&dir)?;
    Ok(dir)
}
