//! `eflow bench --console --server URL`: the web console's pages timed
//! against a server that already holds the runs to measure (issue 13's
//! targets at 1,000,000 runs and 10,000,000 events: fill one first with
//! `eflow bench --server URL --runs 1000000 --steps 3 --keys 10000`).
//!
//! It finds what to ask for from the server itself (a tenant, a flow, its
//! version, keys, runs), then asks each page `--samples` times, one request
//! at a time over loopback, logged in as the admin by the console's session
//! cookie: the overview; the run list with every filter (those that match
//! nothing included) and its next page; the population with its filters; a
//! run's page; a page of a run's events. Each time is from the request sent
//! to the whole body read, so it holds the server's time and loopback's.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::baseline::Baseline;
use super::{BenchArgs, percentile};
use crate::cli::Output;
use crate::cli::client::{seg, seg as enc};

#[derive(Debug, Args, Clone, Default)]
pub struct ConsoleBenchArgs {
    /// Time the web console's pages on `--server` instead (it must hold the
    /// runs to measure; `--token` an admin token).
    #[arg(long)]
    pub console: bool,
    /// With `--console`: requests per page.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
}

/// One page's times.
#[derive(Debug, Serialize)]
pub struct PageTimes {
    /// What was asked (the page and its filter).
    pub page: String,
    pub path: String,
    /// Which target of issue 13 it is held to, in ms (p99).
    pub target_p99_ms: f64,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Bytes of the answer (the last one).
    pub bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct ConsoleReport {
    pub server: String,
    /// With `--data` (the server's data directory, SQLite): the runs and
    /// events its history holds, counted.
    pub runs: Option<u64>,
    pub history_events: Option<u64>,
    pub pages: Vec<PageTimes>,
    /// Pages whose p99 is over their target.
    pub over_target: Vec<String>,
    pub baseline: Baseline,
}

/// What the pages ask for, found on the server.
struct Sample {
    tenant: String,
    flow: String,
    version: String,
    key: Option<String>,
    step: Option<String>,
    /// Runs to open, one per sample.
    runs: Vec<String>,
    since: String,
    until: String,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let Some(server) = args.server.clone() else {
        bail!(
            "`--console` times the pages of a server that holds the runs to measure: \
             fill one (`eflow bench --server URL --runs 1000000 --steps 3 --keys 10000`), \
             then pass it as --server with an admin --token"
        );
    };
    let Some(token) = args.token.clone() else {
        bail!("`--console` needs the server's admin token: --token or EFLOW_TOKEN");
    };
    let samples = args.console.samples.max(1);
    let base = server.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("making an HTTP client")?;
    let api = Api {
        http: &http,
        base: &base,
        token: &token,
    };
    let sample = api.sample(samples).await?;
    let held = match &args.data {
        Some(dir) => Some(history_rows(&dir.join("history.db")).await?),
        None => None,
    };
    let mut pages = Vec::new();
    let cookie = format!("eflow_session={}", session_value(&token));
    let ui = Ui {
        http: &http,
        base: &base,
        cookie: &cookie,
        token: &token,
        samples,
    };
    let t = &sample.tenant;
    let f = &sample.flow;
    let runs_with = |q: &str| format!("/ui/runs?tenant={}&{q}", enc(t));
    pages.push(ui.time("overview", "/ui", 100.0).await?);
    pages.push(
        ui.time("runs", &format!("/ui/runs?tenant={}", enc(t)), 200.0)
            .await?,
    );
    pages.push(ui.time("runs, every tenant", "/ui/runs", 200.0).await?);
    for (what, q) in [
        ("runs by flow", format!("flow={}", enc(f))),
        (
            "runs by version",
            format!("flow={}&version={}", enc(f), enc(&sample.version)),
        ),
        ("runs by status (succeeded)", "status=succeeded".to_string()),
        ("runs by status (failed)", "status=failed".to_string()),
        ("runs by status (cancelled)", "status=cancelled".to_string()),
        (
            "runs by error code (none match)",
            "error=Timeout".to_string(),
        ),
        (
            "runs by failed step",
            format!("step={}", enc(sample.step.as_deref().unwrap_or("Work"))),
        ),
        (
            "runs by time range",
            format!("since={}&until={}", enc(&sample.since), enc(&sample.until)),
        ),
    ] {
        pages.push(ui.time(what, &runs_with(&q), 200.0).await?);
    }
    if let Some(k) = &sample.key {
        pages.push(
            ui.time("runs by key", &runs_with(&format!("key={}", enc(k))), 200.0)
                .await?,
        );
    }
    let next = api
        .get_json(&format!("/v1/runs?tenant={}&limit=50", enc(t)))
        .await?["next"]
        .as_str()
        .map(str::to_string);
    if let Some(n) = next {
        pages.push(
            ui.time(
                "runs, next page",
                &runs_with(&format!("cursor={}", enc(&n))),
                200.0,
            )
            .await?,
        );
    }
    let population = |q: &str| format!("/ui/population?tenant={}&flow={}{q}", enc(t), enc(f));
    pages.push(ui.time("population", &population(""), 200.0).await?);
    pages.push(
        ui.time(
            "population by status",
            &population("&status=succeeded"),
            200.0,
        )
        .await?,
    );
    pages.push(
        ui.time(
            "population, failed twice in a row",
            &population("&failed_in_a_row=2"),
            200.0,
        )
        .await?,
    );
    pages.push(
        ui.time_each(
            "a run",
            &sample.runs,
            |id| format!("/ui/runs/{}", seg(id)),
            60.0,
        )
        .await?,
    );
    pages.push(
        ui.time_each(
            "a page of a run's events (API, 100)",
            &sample.runs,
            |id| format!("/v1/runs/{}/events?limit=100", seg(id)),
            20.0,
        )
        .await
        .map(|mut p| {
            p.page = "a page of a run's events (API, 100)".into();
            p
        })?,
    );
    let over_target = pages
        .iter()
        .filter(|p| p.p99_ms > p.target_p99_ms)
        .map(|p| p.page.clone())
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "eflow-bench-console-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).context("a directory for the machine's baseline")?;
    let baseline = Baseline::measure(&dir, args.durability).await;
    let _ = std::fs::remove_dir_all(&dir);
    let baseline = baseline?;
    let report = ConsoleReport {
        server: base.clone(),
        runs: held.map(|h| h.0),
        history_events: held.map(|h| h.1),
        pages,
        over_target,
        baseline,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", report_text(&report)),
    }
    Ok(())
}

/// Rows of `h_runs` and `h_events` in a history's SQLite file, read only.
async fn history_rows(file: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    use sqlx::ConnectOptions as _;
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .connect()
        .await
        .with_context(|| format!("opening {} to count its runs", file.display()))?;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM h_runs")
        .fetch_one(&mut c)
        .await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM h_events")
        .fetch_one(&mut c)
        .await?;
    Ok((runs as u64, events as u64))
}

struct Api<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
}

impl Api<'_> {
    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = r.status();
        let body: Value = r
            .json()
            .await
            .with_context(|| format!("GET {path}: the body"))?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {body}");
        }
        Ok(body)
    }

    /// A tenant with runs, its newest run's flow and version, a key of the
    /// flow if its runs have keys, and `n` runs to open.
    async fn sample(&self, n: usize) -> anyhow::Result<Sample> {
        let newest = self.get_json("/v1/runs?limit=1").await?;
        let Some(run) = newest["items"].get(0) else {
            bail!(
                "the server holds no run: fill it first (`eflow bench --server URL --runs 1000000 --steps 3 --keys 10000`)"
            );
        };
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        let tenant = text(run, "tenant");
        let flow = text(run, "flow");
        let version = text(run, "version");
        let key = run["key"].as_str().map(str::to_string);
        let until = text(run, "created_at");
        let mut runs = Vec::with_capacity(n);
        let mut cursor: Option<String> = None;
        let mut oldest = until.clone();
        // Runs spread over the list: a page of 100 at a time, one of every
        // ten taken, so the runs opened are not all in one cache page.
        while runs.len() < n {
            let mut path = format!("/v1/runs?tenant={}&limit=100", enc(&tenant));
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", enc(c)));
            }
            let page = self.get_json(&path).await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            for (i, r) in items.iter().enumerate() {
                if i % 10 == 0 && runs.len() < n {
                    runs.push(text(r, "id"));
                }
                oldest = text(r, "created_at");
            }
            match page["next"].as_str() {
                Some(c) if !items.is_empty() => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        if runs.is_empty() {
            bail!("tenant {tenant} lists no run");
        }
        let step = self
            .get_json(&format!("/v1/runs/{}", seg(&runs[0])))
            .await
            .ok()
            .and_then(|v| {
                v["steps"]
                    .as_object()
                    .and_then(|s| s.keys().next().cloned())
            });
        Ok(Sample {
            tenant,
            flow,
            version,
            key,
            step,
            runs,
            since: oldest,
            until,
        })
    }
}

struct Ui<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    /// The console's session cookie; the API's pages take the token.
    cookie: &'a str,
    token: &'a str,
    samples: usize,
}

impl Ui<'_> {
    /// `path` asked `samples` times.
    async fn time(&self, page: &str, path: &str, target: f64) -> anyhow::Result<PageTimes> {
        let paths = vec![path.to_string(); self.samples];
        self.times(page, path, &paths, target).await
    }

    /// One page of each of `ids`, `samples` in all (round the list).
    async fn time_each(
        &self,
        page: &str,
        ids: &[String],
        path: impl Fn(&str) -> String,
        target: f64,
    ) -> anyhow::Result<PageTimes> {
        let paths: Vec<String> = ids
            .iter()
            .cycle()
            .take(self.samples)
            .map(|id| path(id))
            .collect();
        let shown = paths.first().cloned().unwrap_or_default();
        self.times(page, &shown, &paths, target).await
    }

    async fn times(
        &self,
        page: &str,
        shown: &str,
        paths: &[String],
        target: f64,
    ) -> anyhow::Result<PageTimes> {
        // One request first, not counted: the connection and what the
        // server caches on a first look.
        let mut bytes = self.get(&paths[0]).await?;
        let mut ms = Vec::with_capacity(paths.len());
        for p in paths {
            let t0 = Instant::now();
            bytes = self.get(p).await?;
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        Ok(PageTimes {
            page: page.to_string(),
            path: shown.to_string(),
            target_p99_ms: target,
            samples: ms.len(),
            p50_ms: percentile(&ms, 0.5),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
            bytes,
        })
    }

    /// The answer's length; an answer other than 200 is an error.
    async fn get(&self, path: &str) -> anyhow::Result<usize> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie)
            .bearer_auth(self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = r.status();
        let body = r
            .bytes()
            .await
            .with_context(|| format!("GET {path}: the body"))?;
        if status != reqwest::StatusCode::OK {
            bail!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(body.len())
    }
}

/// The console's session cookie holds the token, base64url without padding.
fn session_value(token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

pub fn report_text(r: &ConsoleReport) -> String {
    let mut s = format!(
        "eflow bench --console: {}{}\n\n",
        r.server,
        match (r.runs, r.history_events) {
            (Some(runs), Some(events)) => format!(" ({runs} runs, {events} events in the history)"),
            (Some(runs), None) => format!(" ({runs} runs)"),
            _ => String::new(),
        }
    );
    s.push_str(&format!(
        "{:<40} {:>8} {:>9} {:>9} {:>9} {:>10} {:>8}\n",
        "page", "samples", "p50 ms", "p99 ms", "max ms", "target ms", "bytes"
    ));
    for p in &r.pages {
        s.push_str(&format!(
            "{:<40} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>8}{}\n",
            p.page,
            p.samples,
            p.p50_ms,
            p.p99_ms,
            p.max_ms,
            p.target_p99_ms,
            p.bytes,
            if p.p99_ms > p.target_p99_ms {
                "  OVER"
            } else {
                ""
            }
        ));
    }
    s.push_str(&format!(
        "\nmachine baseline: {:.0} fsyncs/s, {:.0} SQLite rows/s (synchronous={})\n",
        r.baseline.fsync_per_sec, r.baseline.sqlite_rows_per_sec, r.baseline.sqlite_synchronous
    ));
    s
}
