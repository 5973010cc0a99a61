//! `eflow bench`: N runs of a flow of K sequential steps on the `sim`
//! connector (SIMULATED compute: nothing is computed, each step only waits
//! `--sim-duration`), across T tenants, through the HTTP API.
//!
//! By default it starts a fresh embedded server in a temporary directory;
//! `--server URL` measures a running one (with an admin token). It reports
//! step transitions per second (events applied by the engine), runs completed
//! per second, the start-to-first-invocation latency (a start returns when
//! the run's `Started` transition and its first step's invocation are
//! committed, so the start request's round trip is that latency), bytes
//! written per transition, and the server's resident memory (embedded, the server
//! and this client share one process, so the figure includes the client).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::api::model::{DeployResult, StartRun, TenantCreated};
use crate::cli::Output;
use crate::cli::client::Client;
use crate::server::{Options, Server};
use crate::store::Durability;

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
    /// Embedded: commit durability.
    #[arg(long, value_enum, default_value_t)]
    pub durability: Durability,
    /// Embedded: do not run the history consumer (measures the engine alone).
    #[arg(long)]
    pub no_history: bool,
    /// Embedded: keep the data directory here instead of a temporary one.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// `--schedules N`: the scheduler benchmark (`bench_schedules`).
    #[command(flatten)]
    pub schedule: crate::bench_schedules::ScheduleBenchArgs,
}

#[derive(Debug, Serialize)]
pub struct Report {
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
    pub runs_completed_per_sec: f64,
    pub starts_per_sec: f64,
    pub start_to_first_invocation_p50_ms: f64,
    pub start_to_first_invocation_p99_ms: f64,
    pub bytes_written_per_transition: Option<f64>,
    /// Events the history had not written when the last run finished.
    pub history_behind_at_finish: Option<u64>,
    /// Seconds from the start until the history had written every event, and
    /// the transitions per second over that span: the rate the whole server
    /// (engine and history) sustains.
    pub history_caught_up_seconds: Option<f64>,
    pub transitions_per_sec_with_history: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub rss_mb: Option<f64>,
    pub backend: String,
}

/// The benchmark flow: K sequential remote steps, each fed the previous output.
pub fn flow_source(steps: u32, sim_ms: u64) -> String {
    let mut s = String::from(
        "// eflow bench: SIMULATED compute. Each step only waits on the `sim` connector.\n\n\
         /// One unit of simulated work.\nremote step Work(n: Int) -> Int\n\n\
         flow Bench(n: Int = 0) -> Int {\n",
    );
    let mut prev = "n".to_string();
    for i in 1..=steps.max(1) {
        s.push_str(&format!("    let s{i} = Work(n: {prev})\n"));
        prev = format!("s{i}");
    }
    s.push_str(&format!("    return {prev}\n}}\n\nbindings bench {{\n    Work = sim {{ duration: {sim_ms}ms }}\n}}\n"));
    s
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (server, temp) = match &args.server {
        Some(_) => (None, None),
        None => {
            let (dir, temp) = match &args.data {
                Some(d) => (d.clone(), None),
                None => {
                    let t = tempdir()?;
                    (t.clone(), Some(t))
                }
            };
            let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
            let mut o = Options::new(dir, "127.0.0.1:0".parse()?);
            o.durability = args.durability;
            o.shards = args.shards;
            o.admin_token = Some(token.clone());
            o.history = !args.no_history;
            let s = Server::start(o).await?;
            (Some((s, token)), temp)
        }
    };
    let (base, token) = match (&server, &args.server) {
        (Some((s, t)), _) => (format!("http://{}", s.addr), Some(t.clone())),
        (None, Some(url)) => (url.clone(), args.token.clone()),
        (None, None) => unreachable!(),
    };
    let client = Arc::new(Client::new(Some(base.clone()), token)?);
    let stamp = uuid::Uuid::now_v7().simple().to_string();
    let tenants: Vec<String> = (0..args.tenants.max(1))
        .map(|i| format!("bench-{}-{i}", &stamp[..12]))
        .collect();
    let source = flow_source(args.steps, args.sim_duration.as_millis() as u64);
    for t in &tenants {
        let _: TenantCreated = client
            .post(
                "/v1/tenants",
                &json!({ "id": t, "max_active_runs": 10_000_000, "max_starts_per_sec": 1_000_000.0 }),
            )
            .await
            .context("creating the benchmark's tenants (needs an admin token)")?;
        let _: DeployResult = client
            .post(
                "/v1/flows",
                &json!({ "tenant": t, "env": "bench", "source": { "bench.eflow": source } }),
            )
            .await?;
    }
    let stats0 = stats(&client).await?;
    let bar = indicatif::ProgressBar::new(args.runs);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>9} [{bar:40}] {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.output == Output::Json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_prefix("starting");
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
        let client = client.clone();
        let tenant = tenants[(i % tenants.len() as u64) as usize].clone();
        let errors = errors.clone();
        let latencies = latencies.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
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
            let s = stats(&client).await?;
            completed = s.finished - stats0.finished;
            bar.set_position(completed.min(started));
            if completed >= started {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let s1 = stats(&client).await?;
    // The history follows the engine's log; a rate it cannot keep up with is
    // not sustained, so the wait for it is measured too.
    let mut caught_up = None;
    if !args.no_wait && s1.history_behind.is_some() {
        bar.set_prefix("history");
        bar.set_position(0);
        bar.set_length(s1.history_behind.unwrap_or(0));
        loop {
            let behind = stats(&client).await?.history_behind.unwrap_or(0);
            bar.set_position(s1.history_behind.unwrap_or(0).saturating_sub(behind));
            if behind == 0 {
                caught_up = Some(began.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bar.finish_and_clear();
    let transitions = s1.transitions - stats0.transitions;
    let bytes = s1.bytes_written - stats0.bytes_written;
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(|a, b| a.total_cmp(b));
    let report = Report {
        runs: args.runs,
        steps: args.steps,
        tenants: args.tenants,
        sim_duration_ms: args.sim_duration.as_millis() as u64,
        started,
        start_errors: errors.load(Ordering::Relaxed),
        completed,
        seconds,
        transitions,
        transitions_per_sec: transitions as f64 / seconds,
        runs_completed_per_sec: completed as f64 / seconds,
        starts_per_sec: started as f64 / start_secs,
        start_to_first_invocation_p50_ms: percentile(&lat, 0.50),
        start_to_first_invocation_p99_ms: percentile(&lat, 0.99),
        bytes_written_per_transition: (transitions > 0).then(|| bytes as f64 / transitions as f64),
        history_behind_at_finish: s1.history_behind,
        history_caught_up_seconds: caught_up,
        transitions_per_sec_with_history: caught_up.map(|t| transitions as f64 / t),
        peak_rss_mb: s1.peak_rss_mb,
        rss_mb: s1.rss_mb,
        backend: match &args.server {
            Some(u) => format!("server {u}"),
            None => format!(
                "embedded SQLite ({:?} durability, {} shards{})",
                args.durability,
                args.shards,
                if args.no_history { ", no history" } else { "" }
            ),
        },
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", report_text(&report)),
    }
    if let Some((s, _)) = server {
        s.stop().await;
    }
    if let Some(t) = temp {
        let _ = std::fs::remove_dir_all(t);
    }
    Ok(())
}

fn report_text(r: &Report) -> String {
    let opt =
        |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |x| format!("{x:.1} {unit}"));
    let rows = [
        ("backend", r.backend.clone()),
        (
            "runs × steps, tenants",
            format!("{} × {}, {}", r.runs, r.steps, r.tenants),
        ),
        (
            "simulated step duration",
            format!("{} ms (SIMULATED compute)", r.sim_duration_ms),
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
        ("server peak RSS", opt(r.peak_rss_mb, "MB")),
        ("server RSS at end", opt(r.rss_mb, "MB")),
    ];
    let mut t = crate::cli::table::Table::new(vec!["MEASURE", "VALUE"]);
    for (k, v) in rows {
        t.row(vec![k.to_string(), v]);
    }
    t.render()
}

#[derive(Debug, serde::Deserialize)]
struct Stats {
    transitions: u64,
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
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
