//! `eflow bench --bulk N`: a bulk retry of N failed runs of one tenant
//! (`POST /v1/bulk`, `docs/design/0007-bulk-actions.md`), while another
//! tenant's requests are timed.
//!
//! On the bench's server it makes N runs of the first tenant fail at once
//! (one `sim` step with `failure_rate: 1.0`, no retries) and waits until the
//! history holds them all (timed apart, as the setup). Then it times the
//! other tenant's steady load alone (`--load-period`): at `--load-rate`
//! requests a second, half a page of its runs of one flow (`GET /v1/runs`),
//! half starts of a one-step flow that succeeds. It previews the bulk retry
//! five times (the median, and the count, which must be N up to the
//! preview's cap), starts the job at `--bulk-rate` with the same load going
//! on, follows it until it is done, and reports its runs acted on per second
//! and its counts (every run must be acted on), and the other tenant's
//! latency during the job beside the baseline. The retried runs fail again;
//! the report says when the last of them ended too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::baseline::Baseline;
use super::{BenchArgs, BenchConnector, Setup, opt, percentile, table};
use crate::api::model::{BulkJobView, BulkPreview, Page, RunSummary, StartRun};
use crate::cli::client::{Client, seg};
use crate::service::bulk::PREVIEW_COUNT_CAP;

/// The embedded server's retry window with `--bulk` at least: the failed
/// runs must stay retryable until the job is done.
pub const RETRY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The most runs a job may act on per second (`POST /v1/bulk`'s `rate`).
const MAX_BULK_RATE: u32 = 100_000;
/// How many times the preview is asked; its median is reported.
const PREVIEWS: usize = 5;
/// How often the job is read while it runs.
const POLL: Duration = Duration::from_millis(50);
/// The other tenant's requests in flight at most; past it the load waits
/// (and its latencies, measured from when each request was due, show it).
const LOAD_IN_FLIGHT: u32 = 1024;
/// Runs of the other tenant's flow a list request asks for: a console's page.
const LIST_PAGE: &str = "50";

#[derive(Debug, Args, Clone, Default)]
pub struct BulkBenchArgs {
    /// Measure a bulk action instead: a bulk retry of N failed runs of one
    /// tenant (`POST /v1/bulk`) while another tenant's requests are timed.
    /// Of the run benchmark's options, `--concurrency` (the N failing runs'
    /// starts), `--stall-after`, `--server`, `--token`, `--shards`,
    /// `--store`, `--history-store`, `--bus`, `--engines`, `--durability`,
    /// `--data`, `--sweep-after` and `--output` apply.
    #[arg(long, value_name = "N", conflicts_with_all = ["fanout", "schedules"])]
    pub bulk: Option<u64>,
    /// With `--bulk`: the job's rate, runs acted on per second at most (1
    /// to 100,000).
    #[arg(long, default_value_t = MAX_BULK_RATE)]
    pub bulk_rate: u32,
    /// With `--bulk`: the other tenant's requests per second, half run
    /// lists, half run starts.
    #[arg(long, default_value_t = 50.0)]
    pub load_rate: f64,
    /// With `--bulk`: how long the other tenant's latency is measured alone,
    /// before the job, as the baseline.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub load_period: Duration,
}

/// Refuses options `--bulk` cannot work with, before anything is started.
pub fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    let b = &args.bulk;
    if b.bulk == Some(0) {
        anyhow::bail!("--bulk 0 would retry nothing: give it the number of failed runs to make");
    }
    if !(1..=MAX_BULK_RATE).contains(&b.bulk_rate) {
        anyhow::bail!(
            "--bulk-rate is runs per second, from 1 to {MAX_BULK_RATE}: {} is not",
            b.bulk_rate
        );
    }
    if !(b.load_rate.is_finite() && b.load_rate > 0.0 && b.load_rate <= 100_000.0) {
        anyhow::bail!(
            "--load-rate is the other tenant's requests per second, above 0 and at most 100,000: {} is not",
            b.load_rate
        );
    }
    if b.load_period.is_zero() {
        anyhow::bail!(
            "--load-period must be longer than 0: it is how long the baseline latency is measured"
        );
    }
    if args.connector == BenchConnector::Http {
        anyhow::bail!(
            "--bulk runs its steps on `sim` (failing and succeeding at once): leave out --connector http"
        );
    }
    if args.no_history {
        anyhow::bail!(
            "--bulk needs the history (a job's query and its preview read it): leave out --no-history"
        );
    }
    Ok(())
}

/// The flows: one that fails at once (the runs the job retries), one that
/// succeeds at once (the other tenant's starts).
pub fn flow_source() -> String {
    "// eflow bench --bulk: SIMULATED compute (each step only waits 0 ms).
// `Fails` fails at once, with no retry; `Works` succeeds at once.

remote step Boom(n: Int) -> Int
remote step Work(n: Int) -> Int

flow Fails(n: Int = 0) -> Int {
    let b = Boom(n: n)
    return b
}

flow Works(n: Int = 0) -> Int {
    let w = Work(n: n)
    return w
}

bindings bench {
    Boom = sim { duration: 0ms, failure_rate: 1.0 }
    Work = sim { duration: 0ms, failure_rate: 0.0 }
}
"
    .to_string()
}

#[derive(Debug, Serialize)]
pub struct BulkReport {
    /// Failed runs made and retried in bulk.
    pub runs: u64,
    /// The tenant whose runs the job retries.
    pub tenant: String,
    /// The tenant whose requests are timed.
    pub other_tenant: String,
    pub backend: String,
    /// Making the N failed runs: their starts, then until the history held
    /// every one of them.
    pub setup: SetupReport,
    /// The preview's round trip (`POST /v1/bulk/preview`): the median of 5
    /// calls, and each.
    pub preview_ms: f64,
    pub preview_ms_each: Vec<f64>,
    /// The runs the preview counted (at most its cap) and whether it
    /// counted more.
    pub preview_runs: Option<u64>,
    pub preview_more: Option<bool>,
    pub preview_cap: u32,
    /// The job's id and the rate it was given (runs/s at most).
    pub job: Option<String>,
    pub bulk_rate: u32,
    /// `done`, or the state it was last seen in.
    pub job_state: Option<String>,
    /// From `POST /v1/bulk` until the job was seen done.
    pub seconds: f64,
    /// From the job's `created_at` to its `finished_at`, by the server.
    pub server_seconds: Option<f64>,
    /// `acted / seconds`.
    pub acted_per_sec: f64,
    pub selected: u64,
    pub acted: u64,
    pub skipped: u64,
    pub skipped_by: BTreeMap<String, u64>,
    pub errors: u64,
    pub last_error: Option<String>,
    /// From `POST /v1/bulk` until the history held none of the tenant's
    /// runs running: every retried run had failed again.
    pub retried_runs_ended_seconds: Option<f64>,
    /// The embedded server's CPU from the job's start until it was done,
    /// per run acted on (the other tenant's load and the retried runs'
    /// own steps included).
    pub server_cpu_ms_per_acted_run: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    /// The other tenant's requests per second asked.
    pub load_rate: f64,
    /// The other tenant's latency alone, before the job.
    pub load_baseline: Option<LoadReport>,
    /// The same load while the job ran.
    pub load_during_job: Option<LoadReport>,
    /// During the job over the baseline (1.0: no worse).
    pub load_p50_ratio: Option<f64>,
    pub load_p99_ratio: Option<f64>,
    pub baseline: Baseline,
    pub acted_per_sec_per_1000_baseline_rows: f64,
    /// What went wrong, in words: none when every check held.
    pub failure: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SetupReport {
    pub seconds: f64,
    pub started: u64,
    pub start_errors: u64,
    pub starts_per_sec: f64,
}

/// One tenant's timed requests over a period.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub seconds: f64,
    /// Requests sent, and of them those that failed (not in the latencies).
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub requests_per_sec: f64,
    /// Each request's latency, from when it was due to its answer.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// A page of the tenant's runs of one flow (`GET /v1/runs`).
    pub list_p50_ms: f64,
    pub list_p99_ms: f64,
    /// A start of a one-step run (`POST /v1/runs`).
    pub start_p50_ms: f64,
    pub start_p99_ms: f64,
}

/// Runs the bulk benchmark; an `Err` only when the bench itself could not
/// work (the server unreachable), never for a check that failed.
pub(super) async fn run(
    args: &BenchArgs,
    setup: &Setup,
    load: &tokio::runtime::Handle,
    n: u64,
) -> anyhow::Result<BulkReport> {
    let (tenant, other) = match setup.tenants.as_slice() {
        [a, b, ..] => (a.clone(), b.clone()),
        _ => anyhow::bail!("the bulk bench needs two tenants"),
    };
    setup.deploy(&[("bulk.eflow", flow_source())]).await?;
    let b = &args.bulk;
    let mut report = BulkReport {
        runs: n,
        tenant: tenant.clone(),
        other_tenant: other.clone(),
        backend: setup.backend(args),
        setup: SetupReport {
            seconds: 0.0,
            started: 0,
            start_errors: 0,
            starts_per_sec: 0.0,
        },
        preview_ms: 0.0,
        preview_ms_each: Vec::new(),
        preview_runs: None,
        preview_more: None,
        preview_cap: PREVIEW_COUNT_CAP,
        job: None,
        bulk_rate: b.bulk_rate,
        job_state: None,
        seconds: 0.0,
        server_seconds: None,
        acted_per_sec: 0.0,
        selected: 0,
        acted: 0,
        skipped: 0,
        skipped_by: BTreeMap::new(),
        errors: 0,
        last_error: None,
        retried_runs_ended_seconds: None,
        server_cpu_ms_per_acted_run: None,
        peak_rss_mb: None,
        load_rate: b.load_rate,
        load_baseline: None,
        load_during_job: None,
        load_p50_ratio: None,
        load_p99_ratio: None,
        baseline: setup.baseline.clone(),
        acted_per_sec_per_1000_baseline_rows: 0.0,
        failure: None,
    };
    let mut failures = Vec::new();

    // 1. N failed runs, and the history holding them all.
    report.setup = fail_runs(args, setup, load, &tenant, n).await?;
    if report.setup.start_errors > 0 {
        failures.push(format!(
            "{} of the {n} failing runs could not be started",
            report.setup.start_errors
        ));
    }
    let started = report.setup.started;
    let loader = Arc::new(Client::new(Some(setup.base.clone()), setup.token.clone())?);

    // 2. The other tenant's latency alone.
    let baseline_load = Load::start(load, loader.clone(), &other, b.load_rate);
    tokio::time::sleep(b.load_period).await;
    let baseline_load = baseline_load.stop().await?;

    // 3. The preview, which counts from the history's index.
    let request = json!({
        "action": "retry",
        "query": {"runs": {"tenant": tenant, "status": "failed"}},
        "reason": "eflow bench --bulk",
        "rate": b.bulk_rate,
    });
    let mut preview = None;
    for _ in 0..PREVIEWS {
        let t0 = Instant::now();
        let p: BulkPreview = setup
            .client
            .post("/v1/bulk/preview", &request)
            .await
            .context("previewing the bulk retry")?;
        report
            .preview_ms_each
            .push(t0.elapsed().as_secs_f64() * 1000.0);
        preview = Some(p);
    }
    let mut sorted = report.preview_ms_each.clone();
    sorted.sort_by(f64::total_cmp);
    report.preview_ms = percentile(&sorted, 0.5);
    if let Some(p) = &preview {
        report.preview_runs = Some(p.runs);
        report.preview_more = Some(p.more);
        let cap = u64::from(PREVIEW_COUNT_CAP);
        let expected = (started.min(cap), started > cap);
        if (p.runs, p.more) != expected {
            failures.push(format!(
                "the preview counted {}{} failed runs of {tenant}, not the {started} made",
                if p.more { "at least " } else { "" },
                p.runs
            ));
        }
    }

    // 4. The job, with the same load going on.
    let cpu0 = setup.server_cpu();
    let during = Load::start(load, loader.clone(), &other, b.load_rate);
    let began = Instant::now();
    let followed = follow_job(args, setup, &request, started, &mut report).await;
    report.seconds = began.elapsed().as_secs_f64();
    let cpu1 = setup.server_cpu();
    let during = during.stop().await?;
    if let Some(f) = followed? {
        failures.push(f);
    }
    report.acted_per_sec = report.acted as f64 / report.seconds.max(f64::MIN_POSITIVE);
    report.acted_per_sec_per_1000_baseline_rows = setup.baseline.ratio(report.acted_per_sec);
    report.server_cpu_ms_per_acted_run = cpu0
        .zip(cpu1)
        .filter(|_| report.acted > 0)
        .map(|(a, b)| (b - a) * 1000.0 / report.acted as f64);
    if report.job_state.as_deref() == Some("done") {
        if report.acted != n {
            failures.push(format!(
                "the job acted on {} runs, not {n} (selected {}, skipped {} {:?}, errors {}{})",
                report.acted,
                report.selected,
                report.skipped,
                report.skipped_by,
                report.errors,
                report
                    .last_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(": {e}"))
            ));
        }
        report.retried_runs_ended_seconds = retried_runs_ended(args, setup, &tenant, began).await?;
    }
    report.peak_rss_mb = setup.stats().await?.peak_rss_mb;
    let ratio = |during: f64, alone: f64| (alone > 0.0).then(|| during / alone);
    report.load_p50_ratio = ratio(during.p50_ms, baseline_load.p50_ms);
    report.load_p99_ratio = ratio(during.p99_ms, baseline_load.p99_ms);
    report.load_baseline = Some(baseline_load);
    report.load_during_job = Some(during);
    report.failure = (!failures.is_empty()).then(|| failures.join("; "));
    Ok(report)
}

/// Starts `n` runs of `Fails` for `tenant` and waits until the history
/// holds every one of them, failed.
async fn fail_runs(
    args: &BenchArgs,
    setup: &Setup,
    load: &tokio::runtime::Handle,
    tenant: &str,
    n: u64,
) -> anyhow::Result<SetupReport> {
    let starter = Arc::new(Client::new(Some(setup.base.clone()), setup.token.clone())?);
    let stats0 = setup.stats().await?;
    let bar = super::progress_bar(n, args.output);
    bar.set_prefix("failing");
    let began = Instant::now();
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let errors = Arc::new(AtomicU64::new(0));
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await?;
        let (client, errors, bar) = (starter.clone(), errors.clone(), bar.clone());
        let tenant = tenant.to_string();
        load.spawn(async move {
            let r: anyhow::Result<IgnoredAny> =
                client.post("/v1/runs", &start("Fails", &tenant, i)).await;
            if let Err(e) = r
                && errors.fetch_add(1, Ordering::Relaxed) < 3
            {
                eprintln!("start failed: {e:#}");
            }
            bar.inc(1);
            drop(permit);
        });
    }
    let _all = limit.acquire_many(args.concurrency.max(1) as u32).await?;
    let start_secs = began.elapsed().as_secs_f64();
    let start_errors = errors.load(Ordering::Relaxed);
    let started = n - start_errors;
    // Every started run ended (failed) in the engine, then the history
    // wrote every event: the preview and the job read the history.
    bar.set_prefix("history");
    bar.set_position(0);
    bar.set_length(started);
    let mut last_move = (0u64, Instant::now());
    loop {
        let s = setup.stats().await?;
        let ended = s.finished.saturating_sub(stats0.finished);
        bar.set_position(ended.min(started));
        if ended >= started && s.history_behind.unwrap_or(0) == 0 {
            break;
        }
        if ended != last_move.0 {
            last_move = (ended, Instant::now());
        } else if last_move.1.elapsed() >= args.stall_after {
            bar.finish_and_clear();
            anyhow::bail!(
                "making the failed runs stalled: {ended} of {started} ended, none more for {}, the history {} events behind",
                humantime::format_duration(args.stall_after),
                s.history_behind.unwrap_or(0)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    Ok(SetupReport {
        seconds: began.elapsed().as_secs_f64(),
        started,
        start_errors,
        starts_per_sec: started as f64 / start_secs.max(f64::MIN_POSITIVE),
    })
}

fn start(flow: &str, tenant: &str, n: u64) -> StartRun {
    StartRun {
        flow: flow.into(),
        tenant: Some(tenant.into()),
        version: None,
        input: Some(json!({ "n": n })),
        id: None,
        input_refs: None,
        key: None,
    }
}

/// Starts the job and reads it until it is done (its figures into
/// `report`); `Some` of what went wrong if it did not finish.
async fn follow_job(
    args: &BenchArgs,
    setup: &Setup,
    request: &serde_json::Value,
    expected: u64,
    report: &mut BulkReport,
) -> anyhow::Result<Option<String>> {
    let job: BulkJobView = setup
        .client
        .post("/v1/bulk", request)
        .await
        .context("starting the bulk retry")?;
    let id = job.id.clone();
    report.job = Some(id.clone());
    let bar = super::progress_bar(expected, args.output);
    bar.set_prefix("retrying");
    let mut last_move = (0u64, Instant::now());
    let mut job = job;
    let failure = loop {
        bar.set_position(job.selected.min(expected));
        match job.state.as_str() {
            "done" => break None,
            "running" | "paused" => {}
            other => break Some(format!("the bulk job {id} ended {other}, not done")),
        }
        if job.selected != last_move.0 {
            last_move = (job.selected, Instant::now());
        } else if last_move.1.elapsed() >= args.stall_after {
            break Some(format!(
                "the bulk job {id} acted on no run for {}: {} of {expected} selected, {}",
                humantime::format_duration(args.stall_after),
                job.selected,
                job.state
            ));
        }
        tokio::time::sleep(POLL).await;
        job = setup
            .client
            .get(&format!("/v1/bulk/{}", seg(&id)), &[])
            .await
            .context("reading the bulk job")?;
    };
    bar.finish_and_clear();
    let time = |t: &str| eflow_core::time::parse_rfc3339(t);
    report.server_seconds = job
        .finished_at
        .as_deref()
        .and_then(time)
        .zip(time(&job.created_at))
        .map(|(end, start)| (end - start) as f64 / 1000.0);
    report.job_state = Some(job.state);
    report.selected = job.selected;
    report.acted = job.acted;
    report.skipped = job.skipped;
    report.skipped_by = job.skipped_by;
    report.errors = job.errors;
    report.last_error = job.last_error;
    Ok(failure)
}

/// Seconds from `began` until the history holds none of `tenant`'s runs
/// running (every retried run failed again), or `None` if that did not
/// come within `--stall-after` of the job's end.
async fn retried_runs_ended(
    args: &BenchArgs,
    setup: &Setup,
    tenant: &str,
    began: Instant,
) -> anyhow::Result<Option<f64>> {
    let deadline = Instant::now() + args.stall_after;
    let query = [
        ("tenant", tenant.to_string()),
        ("status", "running".to_string()),
        ("limit", "1".to_string()),
    ];
    loop {
        let page: Page<RunSummary> = setup
            .client
            .get("/v1/runs", &query)
            .await
            .context("listing the retried runs still running")?;
        if page.items.is_empty() {
            return Ok(Some(began.elapsed().as_secs_f64()));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the other tenant asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    List,
    Start,
}

/// One timed request.
struct Sample {
    request: Request,
    ms: f64,
    error: Option<String>,
}

/// The other tenant's requests, sent at a fixed rate whatever the answers
/// take (each on its own task), until stopped.
struct Load {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(f64, Vec<Sample>)>,
}

impl Load {
    fn start(load: &tokio::runtime::Handle, client: Arc<Client>, tenant: &str, rate: f64) -> Load {
        let stop = CancellationToken::new();
        let task = load.spawn(generate(client, tenant.to_string(), rate, stop.clone()));
        Load { stop, task }
    }

    /// Stops sending, waits for the requests in flight, and reports.
    async fn stop(self) -> anyhow::Result<LoadReport> {
        self.stop.cancel();
        let (seconds, samples) = self.task.await.context("the other tenant's load stopped")?;
        Ok(load_report(seconds, &samples))
    }
}

async fn generate(
    client: Arc<Client>,
    tenant: String,
    rate: f64,
    stop: CancellationToken,
) -> (f64, Vec<Sample>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(Semaphore::new(LOAD_IN_FLIGHT as usize));
    let began = Instant::now();
    let mut i = 0u64;
    loop {
        let due = began + Duration::from_secs_f64(i as f64 / rate);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(due.into()) => {}
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (client, tenant, samples) = (client.clone(), tenant.clone(), samples.clone());
        let request = if i.is_multiple_of(2) {
            Request::List
        } else {
            Request::Start
        };
        tokio::spawn(async move {
            let r: anyhow::Result<IgnoredAny> = match request {
                Request::List => {
                    let q = [
                        ("tenant", tenant),
                        ("flow", "Works".to_string()),
                        ("limit", LIST_PAGE.to_string()),
                    ];
                    client.get("/v1/runs", &q).await
                }
                Request::Start => client.post("/v1/runs", &start("Works", &tenant, i)).await,
            };
            let sample = Sample {
                request,
                ms: due.elapsed().as_secs_f64() * 1000.0,
                error: r.err().map(|e| format!("{e:#}")),
            };
            if let Ok(mut s) = samples.lock() {
                s.push(sample);
            }
            drop(permit);
        });
        i += 1;
    }
    let seconds = began.elapsed().as_secs_f64();
    // Every request has its answer when every permit is back.
    let _all = in_flight.acquire_many(LOAD_IN_FLIGHT).await;
    let samples = samples.lock().map(|mut s| std::mem::take(&mut *s));
    (seconds, samples.unwrap_or_default())
}

fn load_report(seconds: f64, samples: &[Sample]) -> LoadReport {
    let sorted = |of: Option<Request>| {
        let mut ms: Vec<f64> = samples
            .iter()
            .filter(|s| s.error.is_none() && of.is_none_or(|r| s.request == r))
            .map(|s| s.ms)
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let all = sorted(None);
    let list = sorted(Some(Request::List));
    let starts = sorted(Some(Request::Start));
    let errors = samples.iter().filter(|s| s.error.is_some()).count() as u64;
    LoadReport {
        seconds,
        requests: samples.len() as u64,
        errors,
        first_error: samples.iter().find_map(|s| s.error.clone()),
        requests_per_sec: samples.len() as f64 / seconds.max(f64::MIN_POSITIVE),
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        max_ms: all.last().copied().unwrap_or(0.0),
        list_p50_ms: percentile(&list, 0.50),
        list_p99_ms: percentile(&list, 0.99),
        start_p50_ms: percentile(&starts, 0.50),
        start_p99_ms: percentile(&starts, 0.99),
    }
}

pub fn report_text(r: &BulkReport) -> String {
    let ms = |v: f64| format!("{v:.1} ms");
    let mut rows = vec![
        ("backend", r.backend.clone()),
        (
            "bulk retry",
            format!(
                "{} failed runs of {} (one sim step failing at once), rate {} runs/s",
                r.runs, r.tenant, r.bulk_rate
            ),
        ),
    ];
    if let Some(f) = &r.failure {
        rows.push(("failure", f.clone()));
    }
    rows.extend([
        (
            "setup: failed runs made",
            format!(
                "{} in {:.1} s ({} failed to start; {:.0} starts/s), history included",
                r.setup.started, r.setup.seconds, r.setup.start_errors, r.setup.starts_per_sec
            ),
        ),
        (
            "preview (median of 5)",
            format!(
                "{} ({}): {}{} runs",
                ms(r.preview_ms),
                r.preview_ms_each
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if r.preview_more == Some(true) {
                    "at least "
                } else {
                    ""
                },
                r.preview_runs.map_or("n/a".to_string(), |n| n.to_string())
            ),
        ),
        (
            "job",
            format!(
                "{} {}",
                r.job.as_deref().unwrap_or("n/a"),
                r.job_state.as_deref().unwrap_or("")
            ),
        ),
        (
            "job elapsed",
            format!(
                "{:.2} s (by the server: {})",
                r.seconds,
                r.server_seconds
                    .map_or("n/a".to_string(), |s| format!("{s:.2} s"))
            ),
        ),
        ("runs acted on/s", format!("{:.0}", r.acted_per_sec)),
        (
            "selected / acted / skipped / errors",
            format!(
                "{} / {} / {} / {}",
                r.selected, r.acted, r.skipped, r.errors
            ),
        ),
        (
            "retried runs all ended after",
            r.retried_runs_ended_seconds
                .map_or("n/a".to_string(), |s| format!("{s:.2} s")),
        ),
        (
            "server CPU/acted run",
            r.server_cpu_ms_per_acted_run
                .map_or("n/a".to_string(), |x| format!("{x:.3} ms")),
        ),
        ("server peak RSS", opt(r.peak_rss_mb, "MB")),
    ]);
    if !r.skipped_by.is_empty() {
        rows.push(("skipped by reason", format!("{:?}", r.skipped_by)));
    }
    if let Some(e) = &r.last_error {
        rows.push(("last error", e.clone()));
    }
    let load = |l: &Option<LoadReport>| {
        l.as_ref().map_or("n/a".to_string(), |l| {
            format!(
                "p50 {} / p99 {} (lists {:.1} / {:.1}, starts {:.1} / {:.1}); {} requests in {:.1} s, {} failed",
                ms(l.p50_ms),
                ms(l.p99_ms),
                l.list_p50_ms,
                l.list_p99_ms,
                l.start_p50_ms,
                l.start_p99_ms,
                l.requests,
                l.seconds,
                l.errors
            )
        })
    };
    rows.extend([
        (
            "other tenant alone",
            format!(
                "{} at {} req/s: {}",
                r.other_tenant,
                r.load_rate,
                load(&r.load_baseline)
            ),
        ),
        ("other tenant during job", load(&r.load_during_job)),
        (
            "other tenant p50 / p99 ratio",
            format!(
                "{} / {}",
                r.load_p50_ratio
                    .map_or("n/a".to_string(), |x| format!("{x:.2}")),
                r.load_p99_ratio
                    .map_or("n/a".to_string(), |x| format!("{x:.2}"))
            ),
        ),
    ]);
    for l in [&r.load_baseline, &r.load_during_job].into_iter().flatten() {
        if let Some(e) = &l.first_error {
            rows.push(("other tenant's first error", e.clone()));
        }
    }
    rows.extend(super::baseline_rows(
        &r.baseline,
        "runs acted on",
        r.acted_per_sec_per_1000_baseline_rows,
    ));
    table(rows)
}
