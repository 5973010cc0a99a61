//! `eflow bench --schedules N`: the scheduler under N per-second schedules.
//!
//! On a fresh embedded server it makes N schedules through the API, each
//! `* * * * * *` (every second) with `overlap allow_all`, of a flow that
//! returns at once (so what is measured is starting runs, not steps), made
//! paused and then resumed, and measured after 3 s of all of them firing; with
//! `--stored M` it first puts M more schedules straight into the store
//! (daily ones, of another tenant, not due during the bench), then restarts
//! the server and times it until it answers. Over `--seconds` it counts the
//! runs the schedules start (fires per second) and how late each start was
//! committed after its fire time (p50, p99, max), as the scheduler records
//! them.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::api::model::{DeployResult, ScheduleView, TenantCreated};
use crate::bench::BenchArgs;
use crate::cli::Output;
use crate::cli::client::Client;
use crate::server::{Options, Server};
use crate::store::ScheduleRow;

#[derive(Debug, Args, Clone, Default)]
pub struct ScheduleBenchArgs {
    /// Measure the scheduler instead: this many per-second schedules, made
    /// through the API (the options of the run benchmark but `--durability`,
    /// `--no-history`, `--data` and `--output` do not apply).
    #[arg(long)]
    pub schedules: Option<u64>,
    /// With `--schedules`: how long to measure.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// With `--schedules`: also store this many daily schedules (straight
    /// into the store), and time a restart with them.
    #[arg(long, default_value_t = 0)]
    pub stored: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schedules: u64,
    pub stored: u64,
    pub seconds: u64,
    /// Seconds to make the schedules (paused) through the API.
    pub create_seconds: f64,
    /// Seconds to resume them all through the API.
    pub resume_seconds: f64,
    pub stored_insert_seconds: Option<f64>,
    /// From the start of a restart until the server answered.
    pub restart_to_ready_ms: Option<f64>,
    /// Runs the schedules started in the measured seconds.
    pub fires: u64,
    pub fires_per_sec: f64,
    /// Per-second schedules fire `schedules` runs a second.
    pub expected_fires_per_sec: u64,
    pub lateness_p50_ms: Option<u64>,
    pub lateness_p99_ms: Option<u64>,
    pub lateness_max_ms: Option<u64>,
    pub backend: String,
}

/// How long every schedule fires before the measured seconds begin.
const WARM_UP_MS: u64 = 3_000;

/// The flow every schedule starts: it returns at once.
const FLOW: &str = "// eflow bench --schedules: a flow that returns at once.\n\n\
flow Tick(n: Int = 0) -> Int {\n    return n\n}\n";

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let sched = &args.schedule;
    let n = sched.schedules.unwrap_or(0);
    if args.server.is_some() {
        anyhow::bail!(
            "`--schedules` measures an embedded server it starts and restarts: leave out --server"
        );
    }
    let (dir, temp) = match &args.data {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "eflow-bench-schedules-{}",
                uuid::Uuid::now_v7().simple()
            )),
            true,
        ),
    };
    // Readable by its owner only, as `eflow serve` wants its data directory.
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir)?;
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let options = || -> anyhow::Result<Options> {
        let mut o = Options::new(dir.clone(), "127.0.0.1:0".parse()?);
        o.durability = args.durability;
        o.shards = args.shards;
        o.admin_token = Some(token.clone());
        o.roles.history = !args.no_history;
        o.quotas.max_schedules = u64::MAX;
        Ok(o)
    };
    let mut server = Server::start(options()?).await?;
    let client = |s: &Server| Client::new(Some(format!("http://{}", s.addr)), Some(token.clone()));
    let c = client(&server)?;
    let stamp = uuid::Uuid::now_v7().simple().to_string();
    let tenant = format!("bench-{}", &stamp[..12]);
    let stored_tenant = format!("{tenant}-stored");
    for t in [&tenant, &stored_tenant] {
        let _: TenantCreated = c
            .post(
                "/v1/tenants",
                &json!({ "id": t, "max_active_runs": 10_000_000, "max_starts_per_sec": 10_000_000.0 }),
            )
            .await
            .context("creating the benchmark's tenants")?;
        let _: DeployResult = c
            .post(
                "/v1/flows",
                &json!({ "tenant": t, "env": "bench", "source": { "tick.eflow": FLOW } }),
            )
            .await?;
    }

    let mut stored_insert_seconds = None;
    let mut restart_to_ready_ms = None;
    if sched.stored > 0 {
        let began = Instant::now();
        store_daily(&server, &stored_tenant, sched.stored).await?;
        stored_insert_seconds = Some(began.elapsed().as_secs_f64());
    }

    // Made paused, then resumed: the fires ramp up while they are resumed
    // instead of piling up behind the making of the rest.
    let began = Instant::now();
    let ids = make_schedules(&c, &tenant, n, args.concurrency.max(1)).await?;
    let create_seconds = began.elapsed().as_secs_f64();

    if sched.stored > 0 {
        server.stop().await;
        let began = Instant::now();
        server = Server::start(options()?).await?;
        let _: serde_json::Value = client(&server)?.get("/v1/health", &[]).await?;
        restart_to_ready_ms = Some(began.elapsed().as_secs_f64() * 1000.0);
    }

    let began = Instant::now();
    resume(&client(&server)?, &ids, args.concurrency.max(1)).await?;
    let resume_seconds = began.elapsed().as_secs_f64();
    // Measured after a few seconds of every schedule firing, from a whole
    // second on, so that every second counted is a whole second of fires.
    let lateness = server.service.scheduler().lateness();
    let wait = 1000 - (crate::clock::Clock::now_ms(&crate::clock::SystemClock) % 1000);
    tokio::time::sleep(Duration::from_millis(WARM_UP_MS + wait + 200)).await;
    let before = lateness.snapshot();
    tokio::time::sleep(Duration::from_secs(sched.seconds.max(1))).await;
    let at = |p| lateness.percentile_since(&before, p);
    let fires = at(1.0).map_or(0, |(_, n)| n);
    let report = Report {
        schedules: n,
        stored: sched.stored,
        seconds: sched.seconds.max(1),
        create_seconds,
        resume_seconds,
        stored_insert_seconds,
        restart_to_ready_ms,
        fires,
        fires_per_sec: fires as f64 / sched.seconds.max(1) as f64,
        expected_fires_per_sec: n,
        lateness_p50_ms: at(0.50).map(|(ms, _)| ms),
        lateness_p99_ms: at(0.99).map(|(ms, _)| ms),
        lateness_max_ms: at(1.0).map(|(ms, _)| ms),
        backend: format!(
            "embedded SQLite ({:?} durability, {} shards{})",
            args.durability,
            args.shards,
            if args.no_history { ", no history" } else { "" }
        ),
    };
    server.stop().await;
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", report_text(&report)),
    }
    Ok(())
}

/// `n` paused per-second schedules of `tenant` through the API,
/// `concurrency` requests at once; returns their ids.
async fn make_schedules(
    c: &Client,
    tenant: &str,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let bodies = (0..n).map(|i| {
        let body = json!({
            "tenant": tenant,
            "flow": "Tick",
            "cron": "* * * * * *",
            "overlap": "allow_all",
            "catchup": "skip",
            "key": format!("customer-{i}"),
            "input": { "n": i },
            "paused": true,
        });
        ("/v1/schedules".to_string(), body)
    });
    let made = post_all(c, bodies, concurrency).await?;
    Ok(made.into_iter().map(|s| s.id).collect())
}

async fn resume(c: &Client, ids: &[String], concurrency: usize) -> anyhow::Result<()> {
    let posts = ids
        .iter()
        .map(|id| (format!("/v1/schedules/{id}/resume"), json!({})));
    post_all(c, posts, concurrency).await.map(|_| ())
}

/// Sends every POST, `concurrency` at once; every one must succeed.
async fn post_all(
    c: &Client,
    posts: impl Iterator<Item = (String, serde_json::Value)>,
    concurrency: usize,
) -> anyhow::Result<Vec<ScheduleView>> {
    let limit = std::sync::Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    for (path, body) in posts {
        let permit = limit.clone().acquire_owned().await?;
        let c = c.clone();
        tasks.spawn(async move {
            let r: anyhow::Result<ScheduleView> = c.post(&path, &body).await;
            drop(permit);
            r
        });
        while let Some(done) = tasks.try_join_next() {
            out.push(done??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        out.push(done??);
    }
    Ok(out)
}

/// `m` daily schedules of `tenant` straight into the store, 10,000 a transaction.
async fn store_daily(server: &Server, tenant: &str, m: u64) -> anyhow::Result<()> {
    let service = &server.service;
    let db = service.engine().store();
    let flow = db
        .flow(tenant, "Tick", None)
        .await?
        .context("the benchmark's flow is deployed")?;
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    let mut i = 0;
    while i < m {
        let mut rows = Vec::with_capacity(10_000);
        for j in i..(i + 10_000).min(m) {
            // Spread over the day, none due in the next hour.
            let spec = eflow_ir::Schedule {
                cron: format!("0 {} {} * * *", j % 60, (now / 3_600_000 + 2 + j % 20) % 24),
                timezone: "UTC".into(),
                overlap: eflow_ir::Overlap::Skip,
                catchup: eflow_ir::Catchup::Skip,
                catchup_window_ms: None,
                jitter_ms: None,
                input: [("n".to_string(), json!(j))].into_iter().collect(),
            };
            let row = service
                .scheduler()
                .made_row(
                    format!("s-stored-{j:09}"),
                    tenant,
                    "Tick",
                    flow.bundle.clone(),
                    &spec,
                    now,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            rows.push(ScheduleRow {
                key: Some(format!("stored-{j}")),
                ..row
            });
        }
        db.insert_schedules(&rows).await?;
        i += rows.len() as u64;
    }
    Ok(())
}

fn report_text(r: &Report) -> String {
    let ms = |v: Option<u64>| v.map_or("n/a".to_string(), |x| format!("{x} ms"));
    let secs = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.2} s"));
    let rows = [
        ("backend", r.backend.clone()),
        (
            "per-second schedules (made through the API)",
            r.schedules.to_string(),
        ),
        ("made (paused) in", format!("{:.2} s", r.create_seconds)),
        ("resumed in", format!("{:.2} s", r.resume_seconds)),
        ("daily schedules stored besides", r.stored.to_string()),
        ("stored in", secs(r.stored_insert_seconds)),
        (
            "restart to ready",
            r.restart_to_ready_ms
                .map_or("n/a".to_string(), |x| format!("{x:.0} ms")),
        ),
        ("measured", format!("{} s", r.seconds)),
        ("runs started", r.fires.to_string()),
        (
            "fires/s (expected)",
            format!("{:.0} ({})", r.fires_per_sec, r.expected_fires_per_sec),
        ),
        ("lateness p50", ms(r.lateness_p50_ms)),
        ("lateness p99", ms(r.lateness_p99_ms)),
        ("lateness max", ms(r.lateness_max_ms)),
    ];
    let mut t = crate::cli::table::Table::new(vec!["MEASURE", "VALUE"]);
    for (k, v) in rows {
        t.row(vec![k.to_string(), v]);
    }
    t.render()
}
