//! `eflow bench --fanout N`: one run fanning out (`join all`) over N subflows
//! of one step each. Reports children finished per second, the parent's state
//! size as the store holds it (embedded only: sampled while it runs, largest
//! and last), the server's peak memory; and when the fan-out does not
//! complete (refused at the start, failed, or no child finishing for
//! `--stall-after`) what failed and how many children had finished.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::baseline::Baseline;
use super::{BenchArgs, Setup, opt, table};
use crate::api::model::{ErrorView, RunView, StartRun};
use crate::cli::client::seg;

/// How often the parent is read while the fan-out runs.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub connector: String,
    pub fanout: u64,
    pub run: Option<String>,
    /// `succeeded`, `failed`, `cancelled`, `refused` (the start was refused)
    /// or `stalled` (no child finished for `--stall-after`).
    pub status: String,
    /// What failed, in words: empty when the fan-out completed.
    pub failure: Option<String>,
    /// The run's error (or the start's) as the server gave it.
    pub error: Option<ErrorView>,
    /// Subflow children that ended (succeeded, failed or cancelled), from
    /// the server's count of finished runs.
    pub children_finished: u64,
    /// The fan-out's children per status, as the parent's view last showed
    /// them while it ran (`GET /v1/runs/{id}`, step `rs`).
    pub children_by_status: BTreeMap<String, u32>,
    /// Length of the joined list on success (must equal `fanout`).
    pub result_len: Option<u64>,
    pub seconds: f64,
    pub children_per_sec: f64,
    pub transitions: u64,
    /// The parent's state in the engine's store, largest seen and last seen.
    pub parent_state_bytes_max: Option<u64>,
    pub parent_state_bytes_last: Option<u64>,
    pub server_cpu_ms_per_child: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub backend: String,
    pub baseline: Baseline,
    pub children_per_sec_per_1000_baseline_rows: f64,
}

pub fn flow_source(binding: &str) -> String {
    format!(
        "// eflow bench --fanout: one run, one subflow of one step per element.

remote step Work(n: Int) -> Int

flow Child(n: Int) -> Int {{
    let a = Work(n: n)
    return a
}}

flow Fan(xs: List<Int>) -> List<Int> {{
    let rs = for x in xs join all {{
        Child(n: x)
    }}
    return rs
}}

bindings bench {{
    Work = {binding}
}}
"
    )
}

/// Runs the fan-out and reports it; an `Err` only when the bench itself
/// could not work (the server unreachable), never for the fan-out's failure.
pub async fn run(args: &BenchArgs, setup: &Setup, n: u64) -> anyhow::Result<FanoutReport> {
    setup
        .deploy(&[("fan.eflow", flow_source(&setup.binding(args)))])
        .await?;
    let client = &setup.client;
    let store = setup
        .server
        .as_ref()
        .map(|(s, _)| s.engine().store().clone());
    let stats0 = setup.stats().await?;
    let cpu0 = setup.server_cpu();
    let began = Instant::now();
    // The list is uploaded and the run started with it by reference, as a
    // user starts one over more customers than a request holds.
    let tenant = setup.tenants[0].clone();
    let uploaded: anyhow::Result<crate::api::model::ValueRefView> = client
        .post(
            &format!("/v1/tenants/{tenant}/values"),
            &json!((0..n).collect::<Vec<u64>>()),
        )
        .await;
    let start = StartRun {
        flow: "Fan".into(),
        tenant: Some(tenant),
        version: None,
        input: None,
        id: None,
        input_refs: Some(BTreeMap::from([(
            "xs".to_string(),
            uploaded.map(|r| r.hash).unwrap_or_default(),
        )])),
        key: None,
    };
    let mut report = FanoutReport {
        connector: format!("{:?}", args.connector).to_lowercase(),
        fanout: n,
        run: None,
        status: String::new(),
        failure: None,
        error: None,
        children_finished: 0,
        children_by_status: BTreeMap::new(),
        result_len: None,
        seconds: 0.0,
        children_per_sec: 0.0,
        transitions: 0,
        parent_state_bytes_max: None,
        parent_state_bytes_last: None,
        server_cpu_ms_per_child: None,
        peak_rss_mb: None,
        backend: setup.backend(args),
        baseline: setup.baseline.clone(),
        children_per_sec_per_1000_baseline_rows: 0.0,
    };
    let started: anyhow::Result<RunView> = client.post("/v1/runs", &start).await;
    let view = match started {
        Ok(v) => Some(v),
        Err(e) => {
            report.status = "refused".into();
            report.failure = Some(format!(
                "the server refused to start the fan-out over {n} children: {e:#}"
            ));
            None
        }
    };
    if let Some(view) = view {
        let id = view.id.clone();
        report.run = Some(id.clone());
        let bar = super::progress_bar(n, args.output);
        bar.set_prefix("children");
        let mut last_move = (0u64, Instant::now());
        let view = loop {
            let s = setup.stats().await?;
            let view: RunView = client.get(&format!("/v1/runs/{}", seg(&id)), &[]).await?;
            let done = matches!(view.status.as_str(), "succeeded" | "failed" | "cancelled");
            // `finished` counts the parent too once it ends.
            let children = (s.finished - stats0.finished).saturating_sub(u64::from(done));
            report.children_finished = children;
            bar.set_position(children.min(n));
            if let Some(c) = view
                .steps
                .iter()
                .find(|st| st.id == "rs")
                .and_then(|st| st.children.clone())
            {
                report.children_by_status = c;
            }
            if let Some(store) = &store
                && let Ok(Some((_, _, state))) = store.load_run(&id).await
            {
                let len = state.len() as u64;
                report.parent_state_bytes_last = Some(len);
                report.parent_state_bytes_max =
                    Some(report.parent_state_bytes_max.unwrap_or(0).max(len));
            }
            if done {
                break view;
            }
            if children != last_move.0 {
                last_move = (children, Instant::now());
            } else if last_move.1.elapsed() >= args.stall_after {
                report.status = "stalled".into();
                report.failure = Some(format!(
                    "no child ended for {}: {children} of {n} children ended, the run is {}",
                    humantime::format_duration(args.stall_after),
                    view.status
                ));
                break view;
            }
            tokio::time::sleep(POLL).await;
        };
        bar.finish_and_clear();
        if report.status.is_empty() {
            report.status = view.status.clone();
        }
        report.result_len = view
            .result
            .as_ref()
            .and_then(Value::as_array)
            .map(|l| l.len() as u64);
        report.error = view.error.clone();
        if report.status != "succeeded" && report.failure.is_none() {
            let why = view.error.as_ref().map_or_else(
                || "no error given".to_string(),
                |e| {
                    format!(
                        "{} at {}: {}",
                        e.code,
                        e.step.as_deref().unwrap_or("the run"),
                        e.message
                    )
                },
            );
            report.failure = Some(format!(
                "the fan-out {} after {} of {n} children ended (last seen running: {}): {why}",
                report.status,
                report.children_finished,
                by_status(&report.children_by_status)
            ));
        }
    }
    report.seconds = began.elapsed().as_secs_f64();
    let s1 = setup.stats().await?;
    let cpu1 = setup.server_cpu();
    report.transitions = s1.transitions - stats0.transitions;
    if report.run.is_some() && report.status != "stalled" {
        // The server counts a finished run a moment after its view shows it
        // ended; a `join all` that succeeded had every child succeed.
        let ended = (s1.finished - stats0.finished).saturating_sub(1);
        let joined = report.result_len.filter(|_| report.status == "succeeded");
        report.children_finished = ended.max(joined.unwrap_or(0));
    }
    report.peak_rss_mb = s1.peak_rss_mb;
    report.children_per_sec = report.children_finished as f64 / report.seconds;
    report.children_per_sec_per_1000_baseline_rows = setup.baseline.ratio(report.children_per_sec);
    report.server_cpu_ms_per_child = cpu0
        .zip(cpu1)
        .filter(|_| report.children_finished > 0)
        .map(|(a, b)| (b - a) * 1000.0 / report.children_finished as f64);
    Ok(report)
}

/// `succeeded 539, running 3` (or `n/a`).
fn by_status(children: &BTreeMap<String, u32>) -> String {
    if children.is_empty() {
        return "n/a".into();
    }
    children
        .iter()
        .map(|(status, k)| format!("{status} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn report_text(r: &FanoutReport) -> String {
    let bytes = |v: Option<u64>| v.map_or("n/a".to_string(), |b| format!("{b} B"));
    let mut rows = vec![
        ("backend", r.backend.clone()),
        ("connector", r.connector.clone()),
        (
            "fan-out",
            format!("{} subflows of one step, join all", r.fanout),
        ),
        ("status", r.status.clone()),
    ];
    if let Some(f) = &r.failure {
        rows.push(("failure", f.clone()));
    }
    rows.extend([
        (
            "children ended",
            format!("{} of {}", r.children_finished, r.fanout),
        ),
        ("children last seen", by_status(&r.children_by_status)),
        (
            "joined list length",
            r.result_len.map_or("n/a".to_string(), |l| l.to_string()),
        ),
        ("elapsed", format!("{:.2} s", r.seconds)),
        ("children/s", format!("{:.0}", r.children_per_sec)),
        ("step transitions", r.transitions.to_string()),
        ("parent state (largest)", bytes(r.parent_state_bytes_max)),
        ("parent state (last)", bytes(r.parent_state_bytes_last)),
        (
            "server CPU/child",
            r.server_cpu_ms_per_child
                .map_or("n/a".to_string(), |x| format!("{x:.3} ms")),
        ),
        ("server peak RSS", opt(r.peak_rss_mb, "MB")),
    ]);
    rows.extend(super::baseline_rows(
        &r.baseline,
        "children",
        r.children_per_sec_per_1000_baseline_rows,
    ));
    table(rows)
}
